//! SMTP relays as they are run for real: TLS (STARTTLS and implicit), logins, and
//! the difference between "this address does not exist" and "the relay refused us".

use crate::common;

use common::tls_smtp::{Tls, TlsSmtp};
use common::{Backend, StoreKeys, TestApp};
use serde_json::{Value, json};

fn relay_config(server: &TlsSmtp, tls: &str, user: &str, password: &str) -> String {
    format!(
        "[email]\ntransport = \"smtp\"\n[email.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"{tls}\"\n\
         ca_file = \"{}\"\nusername = \"{user}\"\npassword = \"{password}\"\ntimeout_secs = 5\n\
         [dispatch.retry]\nbase_delay_ms = 1000\nmax_delay_ms = 1000\nmax_attempts = 2\n",
        server.port,
        server.ca_file().display()
    )
}

async fn restock_for(t: &TestApp, emails: &[&str]) -> StoreKeys {
    let store = t.create_store("relay").await;
    t.seed_catalog(&store).await;
    t.stock(&store, json!([{"sku": "S-42", "available": 0}]))
        .await;
    for email in emails {
        assert_eq!(
            t.subscribe(&store, json!({"email": email, "sku": "S-42"}))
                .await
                .0,
            201
        );
    }
    t.advance(1_000);
    let body = t
        .stock(&store, json!([{"sku": "S-42", "available": 9}]))
        .await;
    assert_eq!(t.planned(&store, &body).await, emails.len() as i64);
    store
}

async fn states(t: &TestApp, store: &StoreKeys) -> Vec<(String, String, Option<String>)> {
    let (_, body) = t.get("/v1/notifications", &store.api_key).await;
    let mut v: Vec<_> = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|n: &Value| {
            (
                n["recipient"].as_str().unwrap_or_default().to_string(),
                n["state"].as_str().unwrap_or_default().to_string(),
                n["last_error"].as_str().map(str::to_string),
            )
        })
        .collect();
    v.sort();
    v
}

both_dbs!(
    starttls_with_login_delivers,
    |backend: Backend| async move {
        let server = TlsSmtp::start(Tls::Starttls, Some(("restock", "s3cret")), &[]);
        let t = TestApp::spawn_with(
            backend,
            &relay_config(&server, "starttls", "restock", "s3cret"),
        )
        .await;
        let store = restock_for(&t, &["ann@example.com"]).await;
        assert_eq!(t.run_pending().await, 1);
        let got = server.messages();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].envelope["tls"], true, "sent over TLS");
        assert_eq!(got[0].envelope["auth"], "restock", "logged in");
        assert_eq!(got[0].envelope["rcpt_to"], json!(["ann@example.com"]));
        let msg = mail_parser::MessageParser::default()
            .parse(&got[0].message)
            .expect("MIME");
        assert_eq!(msg.subject(), Some("Trail Shoe (42) is back in stock"));
        assert_eq!(states(&t, &store).await[0].1, "done");
        t.stop().await;
    }
);

both_dbs!(implicit_tls_delivers, |backend: Backend| async move {
    let server = TlsSmtp::start(Tls::Implicit, None, &[]);
    let t = TestApp::spawn_with(backend, &relay_config(&server, "tls", "", "")).await;
    restock_for(&t, &["bob@example.com"]).await;
    assert_eq!(t.run_pending().await, 1);
    let got = server.messages();
    assert_eq!(
        (got.len(), got[0].envelope["tls"].clone()),
        (1, json!(true))
    );
    t.stop().await;
});

both_dbs!(
    an_unknown_recipient_fails_and_is_suppressed_others_go_out,
    |backend: Backend| async move {
        let server = TlsSmtp::start(Tls::Starttls, None, &["gone@example.com"]);
        let t = TestApp::spawn_with(backend, &relay_config(&server, "starttls", "", "")).await;
        let store = restock_for(&t, &["gone@example.com", "here@example.com"]).await;
        assert_eq!(t.run_pending().await, 2);
        let s = states(&t, &store).await;
        assert_eq!(
            (s[0].0.as_str(), s[0].1.as_str()),
            ("gone@example.com", "failed")
        );
        assert!(
            s[0].2.as_deref().is_some_and(|e| e.contains("550")),
            "{s:?}"
        );
        assert_eq!(
            (s[1].0.as_str(), s[1].1.as_str()),
            ("here@example.com", "done")
        );
        let (status, body) = t
            .subscribe(&store, json!({"email": "gone@example.com", "sku": "S-43"}))
            .await;
        assert_eq!(
            (status, body["code"].clone()),
            (422, json!("address_suppressed"))
        );
        t.stop().await;
    }
);

both_dbs!(
    a_refused_login_is_retried_and_suppresses_nobody,
    |backend: Backend| async move {
        let server = TlsSmtp::start(Tls::Starttls, Some(("restock", "s3cret")), &[]);
        let t = TestApp::spawn_with(
            backend,
            &relay_config(&server, "starttls", "restock", "wrong"),
        )
        .await;
        let store = restock_for(&t, &["ann@example.com", "bob@example.com"]).await;
        assert_eq!(t.run_pending().await, 2);
        for (_, state, error) in states(&t, &store).await {
            assert_eq!(
                state, "pending",
                "a 535 is the relay's word about us, not about the address"
            );
            assert!(
                error.as_deref().is_some_and(|e| e.contains("535")),
                "{error:?}"
            );
        }
        t.advance(1_000);
        assert_eq!(t.run_pending().await, 2);
        let s = states(&t, &store).await;
        assert!(
            s.iter().all(|(_, state, _)| state == "dead"),
            "retries exhausted: {s:?}"
        );
        // Nobody was suppressed: once the password is fixed, a replay delivers.
        assert_eq!(
            t.subscribe(&store, json!({"email": "ann@example.com", "sku": "S-43"}))
                .await
                .0,
            201
        );
        assert!(server.messages().is_empty());
        t.stop().await;
    }
);

both_dbs!(
    a_relay_that_requires_tls_is_not_spoken_to_in_clear,
    |backend: Backend| async move {
        let server = TlsSmtp::start(Tls::Starttls, None, &[]);
        let t = TestApp::spawn_with(backend, &relay_config(&server, "none", "", "")).await;
        let store = restock_for(&t, &["ann@example.com"]).await;
        assert_eq!(t.run_pending().await, 1);
        let s = states(&t, &store).await;
        assert_eq!(s[0].1, "pending", "{s:?}");
        assert!(server.messages().is_empty());
        t.stop().await;
    }
);
