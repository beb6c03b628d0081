//! Decisions per shopper, end to end through the HTTP API on both databases, with the
//! messages received by a real SMTP server (Postfix's smtp-sink): one person per
//! address, one message per restock whatever the mix of sign-ups, cancelling, opting
//! out between plan and send, orders, waves sized to stock, early access, markets,
//! pre-order stock, quiet hours in the shopper's time zone, the frequency cap,
//! holdouts, reminders and the interest window.

use crate::common;

use common::smtp::{Behaviour, SmtpSink};
use common::{Backend, StoreKeys, TestApp};
use serde_json::{Value, json};

const H: i64 = 3_600_000;

struct Shop {
    t: TestApp,
    sink: SmtpSink,
    store: StoreKeys,
}

/// A store with the shoe catalog, both variants sold out, email over SMTP.
async fn shop(backend: Backend, policy: Value) -> Shop {
    let sink = SmtpSink::start(Behaviour::Accept);
    let t = TestApp::spawn_with(
        backend,
        &format!(
            "[email]\ntransport = \"smtp\"\n[email.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\ntimeout_secs = 5\n",
            sink.port
        ),
    )
    .await;
    let store = t.create_store("shop").await;
    t.seed_catalog(&store).await;
    let (status, body) = t.put("/v1/store/policy", &store.api_key, &policy).await;
    assert_eq!(status, 200, "{body}");
    let s = Shop { t, sink, store };
    s.stock("S-42", 0).await;
    s.stock("S-43", 0).await;
    s
}

impl Shop {
    async fn stock(&self, sku: &str, available: i64) -> Value {
        self.stock_item(json!({"sku": sku, "available": available}))
            .await
    }

    async fn stock_item(&self, item: Value) -> Value {
        self.t.advance(1);
        self.t.stock(&self.store, json!([item])).await
    }

    async fn sign_up(&self, body: Value) -> (u16, Value) {
        self.t.subscribe(&self.store, body).await
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        self.t.call(method, path, &self.store.api_key, body).await
    }

    /// Plans and sends everything due now.
    async fn deliver(&self) -> usize {
        self.t.run_pending().await
    }

    /// Everyone who has received a message so far, sorted.
    fn received(&self) -> Vec<String> {
        let mut r: Vec<String> = self
            .sink
            .messages()
            .into_iter()
            .flat_map(|m| m.rcpt_to)
            .collect();
        r.sort();
        r
    }

    async fn shopper(&self, email: &str) -> Value {
        let (status, s) = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/shoppers?email={email}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{s}");
        s
    }

    async fn messages(&self, email: &str) -> Vec<Value> {
        let id = self.shopper(email).await["id"].clone();
        let (status, m) = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/shoppers/{id}/messages"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{m}");
        m["items"].as_array().expect("items").clone()
    }

    async fn restock(&self, id: &Value) -> Value {
        let (status, r) = self
            .call(reqwest::Method::GET, &format!("/v1/restocks/{id}"), None)
            .await;
        assert_eq!(status, 200, "{r}");
        r
    }

    async fn stop(self) {
        self.t.stop().await;
        self.sink.stop();
    }
}

fn default_policy() -> Value {
    json!({})
}

both_dbs!(
    one_person_per_address_whatever_its_case,
    |backend: Backend| async move {
        let s = shop(backend, default_policy()).await;
        let (status, first) = s.sign_up(json!({"email": "a@x.test", "sku": "S-42"})).await;
        assert_eq!(
            (status, first["status"].clone()),
            (201, json!("created")),
            "{first}"
        );
        let (status, second) = s.sign_up(json!({"email": "A@X.test", "sku": "S-42"})).await;
        assert_eq!(
            (status, second["status"].clone()),
            (200, json!("merged")),
            "{second}"
        );
        assert_eq!(first["subscription_id"], second["subscription_id"]);
        s.stock("S-42", 5).await;
        assert_eq!(s.deliver().await, 1);
        assert_eq!(
            s.received(),
            vec!["a@x.test"],
            "one message, to the spelling first given"
        );
        s.stop().await;
    }
);

both_dbs!(
    variant_and_product_sign_ups_get_one_message,
    |backend: Backend| async move {
        let s = shop(backend, default_policy()).await;
        assert_eq!(
            s.sign_up(json!({"email": "ann@x.test", "product": "shoe"}))
                .await
                .0,
            201
        );
        assert_eq!(
            s.sign_up(json!({"email": "ann@x.test", "sku": "S-42"}))
                .await
                .0,
            201
        );
        assert_eq!(
            s.sign_up(json!({"email": "bob@x.test", "product": "shoe"}))
                .await
                .0,
            201
        );
        s.stock("S-42", 5).await;
        assert_eq!(s.deliver().await, 2);
        assert_eq!(s.received(), vec!["ann@x.test", "bob@x.test"]);
        // Both of Ann's sign-ups were answered by the one message.
        let ann = s.shopper("ann@x.test").await;
        let (_, subs) = s
            .call(
                reqwest::Method::GET,
                &format!("/v1/shoppers/{}/subscriptions", ann["id"]),
                None,
            )
            .await;
        let statuses: Vec<Value> = subs["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|x| x["status"].clone())
            .collect();
        assert_eq!(statuses, vec![json!("notified"), json!("notified")]);
        // S-43 comes back too: nobody is waiting any more.
        s.stock("S-43", 5).await;
        assert_eq!(s.deliver().await, 0);
        assert_eq!(s.received().len(), 2);
        s.stop().await;
    }
);

both_dbs!(
    a_sign_up_cancelled_before_the_restock_sends_nothing,
    |backend: Backend| async move {
        let s = shop(backend, default_policy()).await;
        let (_, ann) = s
            .sign_up(json!({"email": "ann@x.test", "sku": "S-42"}))
            .await;
        let (_, bob) = s
            .sign_up(json!({"email": "bob@x.test", "sku": "S-42"}))
            .await;
        let (_, cat) = s
            .sign_up(json!({"email": "cat@x.test", "sku": "S-42"}))
            .await;
        // The merchant cancels Ann's.
        let (status, r) = s
            .call(
                reqwest::Method::DELETE,
                &format!("/v1/subscriptions/{}", ann["subscription_id"]),
                None,
            )
            .await;
        assert_eq!(
            (status, r["status"].clone()),
            (200, json!("cancelled")),
            "{r}"
        );
        // Bob cancels his through the signed link: the page asks, a POST cancels.
        let url = bob["cancel_url"].as_str().expect("cancel url");
        let page = s.t.http.get(url).send().await.expect("page");
        assert_eq!(page.status(), 200);
        assert!(
            page.text()
                .await
                .expect("html")
                .contains("Cancel this alert")
        );
        let done = s.t.http.post(url).send().await.expect("cancel");
        assert_eq!(done.status(), 200);
        assert!(
            done.text()
                .await
                .expect("html")
                .contains("This alert is cancelled")
        );
        // A forged link does nothing.
        let forged = url
            .rsplit_once('.')
            .map(|(a, _)| format!("{a}.AAAAAAAAAAAAAAAAAAAAAA"))
            .expect("token");
        assert_eq!(
            s.t.http
                .post(&forged)
                .send()
                .await
                .expect("forged")
                .status(),
            404
        );
        let _ = cat;
        s.stock("S-42", 5).await;
        assert_eq!(s.deliver().await, 1);
        assert_eq!(s.received(), vec!["cat@x.test"]);
        s.stop().await;
    }
);

both_dbs!(
    an_opt_out_between_plan_and_send_wins,
    |backend: Backend| async move {
        let s = shop(backend, default_policy()).await;
        for who in ["ann@x.test", "bob@x.test", "cat@x.test"] {
            assert_eq!(s.sign_up(json!({"email": who, "sku": "S-42"})).await.0, 201);
        }
        let body = s.stock("S-42", 5).await;
        assert_eq!(s.t.planned(&s.store, &body).await, 3, "all three planned");
        // After planning, before sending: Ann opts out of everything, Bob of the
        // category, Cat withdraws her consent to email.
        let ann = s.shopper("ann@x.test").await["id"].clone();
        let bob = s.shopper("bob@x.test").await["id"].clone();
        let cat = s.shopper("cat@x.test").await["id"].clone();
        let prefs_of = |id: &Value| format!("/v1/shoppers/{id}/preferences");
        assert_eq!(
            s.call(
                reqwest::Method::PUT,
                &prefs_of(&ann),
                Some(&json!({"all": false}))
            )
            .await
            .0,
            200
        );
        let (status, prefs) = s
            .call(
                reqwest::Method::PUT,
                &prefs_of(&bob),
                Some(&json!({"categories": [{"handle": "shoes", "opted_in": false}]})),
            )
            .await;
        assert_eq!(
            (status, prefs["categories_opted_out"].clone()),
            (200, json!(["shoes"]))
        );
        let (status, consents) = s
        .call(reqwest::Method::POST, &format!("/v1/shoppers/{cat}/consents"),
              Some(&json!({"channel": "email", "granted": false, "source": "chat_agent", "text": "Stop emailing me"})))
        .await;
        assert_eq!(status, 201, "{consents}");
        assert_eq!(consents["items"][0]["granted"], false);
        assert_eq!(s.deliver().await, 3);
        assert!(s.received().is_empty(), "{:?}", s.received());
        for (who, reason) in [
            ("ann@x.test", "opted_out"),
            ("bob@x.test", "opted_out"),
            ("cat@x.test", "no_consent"),
        ] {
            let m = s.messages(who).await;
            assert_eq!(
                (m[0]["status"].clone(), m[0]["reason"].clone()),
                (json!("skipped"), json!(reason)),
                "{who}: {m:?}"
            );
        }
        // An address that opted out of everything cannot be put back by an anonymous
        // storefront sign-up...
        s.stock("S-43", 0).await;
        let (status, r) = s
            .sign_up(json!({"email": "ann@x.test", "sku": "S-43"}))
            .await;
        assert_eq!(
            (status, r["code"].clone()),
            (409, json!("confirmation_required")),
            "{r}"
        );
        // ...but the merchant, with the consent the shopper gave them, can.
        let (status, r) = s
        .call(reqwest::Method::POST, "/v1/subscriptions",
              Some(&json!({"email": "ann@x.test", "sku": "S-43", "source": "chat_agent", "consent_text": "Tell me when it is back"})))
        .await;
        assert_eq!(status, 201, "{r}");
        s.stop().await;
    }
);

both_dbs!(
    orders_end_alerts_and_hold_back_recent_purchasers,
    |backend: Backend| async move {
        let s = shop(backend, json!({"recent_purchase_window_secs": 86400})).await;
        for who in ["ann@x.test", "bob@x.test"] {
            assert_eq!(s.sign_up(json!({"email": who, "sku": "S-42"})).await.0, 201);
        }
        assert_eq!(
            s.sign_up(json!({"email": "cat@x.test", "product": "shoe"}))
                .await
                .0,
            201
        );
        // Ann bought S-42 elsewhere (the shop's other channel): her alert ends.
        let order = json!({"order_id": "1001", "customer": {"email": "ANN@x.test"}, "lines": [{"sku": "S-42", "quantity": 1, "price": 12900}]});
        let (status, r) = s
            .call(reqwest::Method::POST, "/v1/orders", Some(&order))
            .await;
        assert_eq!(
            (status, r["status"].clone(), r["ended_alerts"].clone()),
            (201, json!("recorded"), json!(1)),
            "{r}"
        );
        // The same order again changes nothing.
        let (status, r) = s
            .call(reqwest::Method::POST, "/v1/orders", Some(&order))
            .await;
        assert_eq!((status, r["status"].clone()), (200, json!("duplicate")));
        // Cat bought S-43 through Shopify (signed orders/create): her any-size alert ends.
        let shopify = json!({"id": 820982911946154508u64, "email": "cat@x.test", "created_at": "2026-03-01T06:00:00-05:00",
        "currency": "EUR", "line_items": [{"sku": "S-43", "quantity": 1, "price": "119.00"}]}).to_string();
        let resp =
            s.t.http
                .post(s.t.url(&format!("/webhooks/shopify/{}", s.store.slug)))
                .header("x-shopify-topic", "orders/create")
                .header(
                    "x-shopify-hmac-sha256",
                    restock::intake::shopify::sign(
                        &format!("shpss_{}", s.store.slug),
                        shopify.as_bytes(),
                    ),
                )
                .body(shopify)
                .send()
                .await
                .expect("webhook");
        assert_eq!(resp.status(), 200);
        // Cat signs up again for S-42 after buying: she is a recent purchaser of the product.
        assert_eq!(
            s.sign_up(json!({"email": "cat@x.test", "sku": "S-42"}))
                .await
                .0,
            201
        );
        let invalid = json!({"order_id": "1002", "lines": [{"sku": "S-42", "quantity": -3}]});
        let (status, r) = s
            .call(reqwest::Method::POST, "/v1/orders", Some(&invalid))
            .await;
        assert_eq!(
            (status, r["code"].clone()),
            (422, json!("invalid_quantity")),
            "{r}"
        );
        let (_, rejections) = s.call(reqwest::Method::GET, "/v1/rejections", None).await;
        assert!(
            rejections.to_string().contains("invalid_quantity"),
            "kept for replay: {rejections}"
        );

        s.stock("S-42", 5).await;
        assert_eq!(s.deliver().await, 1);
        assert_eq!(s.received(), vec!["bob@x.test"]);
        let cat = s.messages("cat@x.test").await;
        assert_eq!(
            (cat[0]["status"].clone(), cat[0]["reason"].clone()),
            (json!("held"), json!("recent_purchase")),
            "{cat:?}"
        );
        s.stop().await;
    }
);

both_dbs!(
    waves_drain_as_orders_consume_stock,
    |backend: Backend| async move {
        let s = shop(
            backend,
            json!({"release": {"mode": "waves", "shoppers_per_unit": 1, "interval_secs": 60}}),
        )
        .await;
        let people = [
            "a1@x.test",
            "a2@x.test",
            "a3@x.test",
            "a4@x.test",
            "a5@x.test",
        ];
        for who in people {
            s.t.advance(1);
            assert_eq!(s.sign_up(json!({"email": who, "sku": "S-42"})).await.0, 201);
        }
        let body = s.stock("S-42", 2).await;
        let id = body["restocks"][0]["restock_id"].clone();
        assert_eq!(s.deliver().await, 2);
        assert_eq!(
            s.received(),
            vec!["a1@x.test", "a2@x.test"],
            "wave 1: one shopper per unit, first come"
        );
        // One unit sells before the next wave.
        s.t.advance(1_000);
        let (status, _) = s.call(reqwest::Method::POST, "/v1/orders",
        Some(&json!({"order_id": "o1", "customer": {"email": "a1@x.test"}, "lines": [{"sku": "S-42", "quantity": 1}]}))).await;
        assert_eq!(status, 201);
        s.t.advance(30_000);
        assert_eq!(s.deliver().await, 0, "no wave before the interval");
        s.t.advance(30_000);
        assert_eq!(s.deliver().await, 1);
        assert_eq!(
            s.received(),
            vec!["a1@x.test", "a2@x.test", "a3@x.test"],
            "wave 2 sized to the one unit left"
        );
        // The last unit sells: the waves stop, and the rest keep their place.
        s.call(
            reqwest::Method::POST,
            "/v1/orders",
            Some(&json!({"order_id": "o2", "lines": [{"sku": "S-42", "quantity": 1}]})),
        )
        .await;
        s.t.advance(60_000);
        assert_eq!(s.deliver().await, 0);
        let r = s.restock(&id).await;
        assert_eq!(r["plan_state"], "sold_out", "{r}");
        let waves: Vec<(Value, Value)> = r["wave_list"]
            .as_array()
            .expect("waves")
            .iter()
            .map(|w| (w["capacity"].clone(), w["planned"].clone()))
            .collect();
        assert_eq!(
            waves,
            vec![(json!(2), json!(2)), (json!(1), json!(1))],
            "{r}"
        );
        let (_, waiting) = s
            .call(
                reqwest::Method::GET,
                "/v1/subscriptions?status=waiting",
                None,
            )
            .await;
        let still: Vec<Value> = waiting["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|x| x["email"].clone())
            .collect();
        assert_eq!(still, vec![json!("a4@x.test"), json!("a5@x.test")]);
        // The next restock reaches them first.
        s.stock("S-42", 5).await;
        assert_eq!(s.deliver().await, 2);
        assert_eq!(s.received().len(), 5);
        s.stop().await;
    }
);

both_dbs!(
    vip_shoppers_are_told_first_and_alone_during_early_access,
    |backend: Backend| async move {
        let s = shop(
            backend,
            json!({"early_access": {"tiers": ["vip"], "window_secs": 3600}}),
        )
        .await;
        for who in ["early@x.test", "mid@x.test", "vip@x.test"] {
            s.t.advance(1);
            assert_eq!(s.sign_up(json!({"email": who, "sku": "S-42"})).await.0, 201);
        }
        let vip = s.shopper("vip@x.test").await["id"].clone();
        let (status, r) = s
            .call(
                reqwest::Method::PATCH,
                &format!("/v1/shoppers/{vip}"),
                Some(&json!({"tier": "VIP"})),
            )
            .await;
        assert_eq!((status, r["tier"].clone()), (200, json!("vip")), "{r}");
        s.stock("S-42", 50).await;
        assert_eq!(s.deliver().await, 1);
        assert_eq!(
            s.received(),
            vec!["vip@x.test"],
            "only the VIP inside the window, though there is room"
        );
        s.t.advance(H - 1_000);
        assert_eq!(s.deliver().await, 0);
        s.t.advance(1_000);
        assert_eq!(s.deliver().await, 2);
        assert_eq!(
            s.received(),
            vec!["early@x.test", "mid@x.test", "vip@x.test"]
        );
        s.stop().await;
    }
);

both_dbs!(
    a_market_with_no_stock_tells_nobody_there,
    |backend: Backend| async move {
        let s = shop(backend, default_policy()).await;
        for (market, loc) in [("eu", "berlin"), ("us", "newark")] {
            let (status, r) = s
                .call(
                    reqwest::Method::PUT,
                    &format!("/v1/markets/{market}"),
                    Some(&json!({"locations": [loc]})),
                )
                .await;
            assert_eq!(status, 200, "{r}");
        }
        assert_eq!(
            s.sign_up(json!({"email": "eu@x.test", "sku": "S-42", "market": "eu"}))
                .await
                .0,
            201
        );
        assert_eq!(
            s.sign_up(json!({"email": "us@x.test", "sku": "S-42", "market": "US"}))
                .await
                .0,
            201
        );
        assert_eq!(
            s.sign_up(json!({"email": "any@x.test", "sku": "S-42"}))
                .await
                .0,
            201
        );
        let (status, r) = s
            .sign_up(json!({"email": "x@x.test", "sku": "S-42", "market": "mars"}))
            .await;
        assert_eq!((status, r["code"].clone()), (422, json!("unknown_market")));
        // Stock arrives in Newark only.
        s.stock_item(json!({"sku": "S-42", "available": 4, "location": "newark"}))
            .await;
        assert_eq!(s.deliver().await, 2);
        assert_eq!(s.received(), vec!["any@x.test", "us@x.test"]);
        // Then in Berlin: the EU shopper's turn.
        s.stock_item(json!({"sku": "S-42", "available": 3, "location": "berlin"}))
            .await;
        assert_eq!(s.deliver().await, 1);
        assert_eq!(s.received(), vec!["any@x.test", "eu@x.test", "us@x.test"]);
        s.stop().await;
    }
);

both_dbs!(
    pre_order_reserved_and_incoming_stock_never_fire,
    |backend: Backend| async move {
        let s = shop(backend, default_policy()).await;
        let mut product = common::shoe_product();
        product["variants"][0]["inventory_policy"] = json!("preorder");
        let (status, body) =
            s.t.put("/v1/products/shoe", &s.store.api_key, &product)
                .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            s.sign_up(json!({"email": "pre@x.test", "sku": "S-42"}))
                .await
                .0,
            201
        );
        assert_eq!(
            s.sign_up(json!({"email": "res@x.test", "sku": "S-43"}))
                .await
                .0,
            201
        );
        let r = s.stock("S-42", 10).await;
        assert_eq!(r["restocks"], json!([]), "pre-order stock is not news: {r}");
        // S-43: every unit on hand is reserved, and more is only incoming.
        let r = s.stock_item(json!({"sku": "S-43", "available": 3, "reserved": 3, "incoming": 50, "incoming_at": "2026-03-10T00:00:00Z"})).await;
        assert_eq!(r["restocks"], json!([]), "{r}");
        assert_eq!(s.deliver().await, 0);
        assert!(s.received().is_empty());
        // One unit is released from the reservation: now it is back.
        s.stock_item(json!({"sku": "S-43", "available": 3, "reserved": 2}))
            .await;
        assert_eq!(s.deliver().await, 1);
        assert_eq!(s.received(), vec!["res@x.test"]);
        s.stop().await;
    }
);

both_dbs!(
    quiet_hours_cross_midnight_in_the_shoppers_time_zone,
    |backend: Backend| async move {
        let s = shop(
            backend,
            json!({"time_zone": "UTC", "quiet_hours": {"start": "21:00", "end": "08:00"}}),
        )
        .await;
        assert_eq!(
            s.sign_up(
                json!({"email": "ny@x.test", "sku": "S-42", "time_zone": "America/New_York"})
            )
            .await
            .0,
            201
        );
        assert_eq!(
            s.sign_up(json!({"email": "utc@x.test", "sku": "S-42"}))
                .await
                .0,
            201
        );
        assert_eq!(
            s.sign_up(json!({"email": "tokyo@x.test", "sku": "S-42", "time_zone": "Asia/Tokyo"}))
                .await
                .0,
            201
        );
        // 2026-03-02 03:30 UTC: 22:30 the evening before in New York, 03:30 in UTC, 12:30 in Tokyo.
        s.t.advance(15 * H + 30 * 60_000);
        s.stock("S-42", 5).await;
        assert_eq!(s.deliver().await, 1);
        assert_eq!(s.received(), vec!["tokyo@x.test"]);
        let ny = s.messages("ny@x.test").await;
        assert_eq!(
            (
                ny[0]["status"].clone(),
                ny[0]["reason"].clone(),
                ny[0]["due_at"].clone()
            ),
            (
                json!("deferred"),
                json!("quiet_hours"),
                json!("2026-03-02T13:00:00.000Z")
            ),
            "08:00 in New York: {ny:?}"
        );
        let utc = s.messages("utc@x.test").await;
        assert_eq!(
            utc[0]["due_at"],
            json!("2026-03-02T08:00:00.000Z"),
            "{utc:?}"
        );
        // 08:00 UTC: the UTC shopper; 13:00 UTC: New York's morning.
        s.t.advance(4 * H + 30 * 60_000);
        assert_eq!(s.deliver().await, 1);
        assert_eq!(s.received(), vec!["tokyo@x.test", "utc@x.test"]);
        s.t.advance(5 * H);
        assert_eq!(s.deliver().await, 1);
        assert_eq!(
            s.received(),
            vec!["ny@x.test", "tokyo@x.test", "utc@x.test"]
        );
        s.stop().await;
    }
);

both_dbs!(
    the_frequency_cap_defers_instead_of_dropping,
    |backend: Backend| async move {
        let s = shop(
            backend,
            json!({"frequency_cap": {"max_messages": 1, "window_secs": 86400}}),
        )
        .await;
        assert_eq!(
            s.sign_up(json!({"email": "ann@x.test", "sku": "S-42"}))
                .await
                .0,
            201
        );
        assert_eq!(
            s.sign_up(json!({"email": "ann@x.test", "sku": "S-43"}))
                .await
                .0,
            201
        );
        s.stock("S-42", 5).await;
        assert_eq!(s.deliver().await, 1);
        s.t.advance(H);
        s.stock("S-43", 5).await;
        s.deliver().await;
        assert_eq!(s.received().len(), 1, "capped");
        let m = s.messages("ann@x.test").await;
        assert_eq!(
            (m[0]["status"].clone(), m[0]["reason"].clone()),
            (json!("deferred"), json!("frequency_cap")),
            "{m:?}"
        );
        s.t.advance(23 * H);
        assert_eq!(s.deliver().await, 1);
        assert_eq!(s.received().len(), 2);
        s.stop().await;
    }
);

both_dbs!(
    the_frequency_cap_is_checked_again_at_send,
    |backend: Backend| async move {
        let s = shop(
            backend,
            json!({"frequency_cap": {"max_messages": 1, "window_secs": 86400}}),
        )
        .await;
        assert_eq!(
            s.sign_up(json!({"email": "ann@x.test", "sku": "S-42"}))
                .await
                .0,
            201
        );
        s.stock("S-42", 5).await;
        restock::planning::plan_due(&s.t.app).await.expect("plan");
        // After planning, another instance sends Ann a message (recorded as a sent
        // reminder of the same restock): the alert must now wait for the window.
        let sql = "INSERT INTO notifications (store_id, restock_event_id, shopper_id, subscription_id, \
                     extra_subscription_id, variant_id, purpose, channel, contact_point_id, recipient, wave, \
                     state, attempts, due_at, planned_at, updated_at, sent_at) \
                   SELECT store_id, restock_event_id, shopper_id, subscription_id, extra_subscription_id, variant_id, \
                     'reminder', channel, contact_point_id, recipient, wave, 'done', 1, due_at, planned_at, $1, $1 \
                   FROM notifications WHERE purpose = 'alert'";
        let now = s.t.app.now();
        let inserted = match &s.t.app.db {
            restock::storage::Db::Sqlite(p) => sqlx::query(sql)
                .bind(now)
                .execute(p)
                .await
                .map(|r| r.rows_affected()),
            restock::storage::Db::Postgres(p) => sqlx::query(sql)
                .bind(now)
                .execute(p)
                .await
                .map(|r| r.rows_affected()),
        }
        .expect("insert");
        assert_eq!(inserted, 1);
        s.deliver().await;
        assert_eq!(s.received().len(), 0, "capped at send");
        let m = s.messages("ann@x.test").await;
        assert!(
            m.iter()
                .any(|m| m["status"] == "deferred" && m["reason"] == "frequency_cap"),
            "{m:?}"
        );
        s.stop().await;
    }
);

both_dbs!(
    an_exact_share_is_held_out_to_measure_lift,
    |backend: Backend| async move {
        let s = shop(backend, json!({"holdout_percent": 10})).await;
        for i in 0..20 {
            assert_eq!(
                s.sign_up(json!({"email": format!("s{i}@x.test"), "sku": "S-42"}))
                    .await
                    .0,
                201
            );
        }
        let body = s.stock("S-42", 50).await;
        assert_eq!(s.deliver().await, 18);
        assert_eq!(s.received().len(), 18);
        let r = s.restock(&body["restocks"][0]["restock_id"]).await;
        assert_eq!(
            (r["planned"].clone(), r["held_out"].clone()),
            (json!(18), json!(2)),
            "{r}"
        );
        s.stop().await;
    }
);

both_dbs!(
    one_reminder_if_still_in_stock_and_not_acted_on,
    |backend: Backend| async move {
        let s = shop(backend, json!({"reminder_after_secs": 3600})).await;
        for who in ["ann@x.test", "bob@x.test", "cat@x.test"] {
            assert_eq!(s.sign_up(json!({"email": who, "sku": "S-42"})).await.0, 201);
        }
        s.stock("S-42", 5).await;
        assert_eq!(s.deliver().await, 3);
        // Ann clicks her alert's link; Bob buys.
        let ann_msg = s
            .sink
            .messages()
            .into_iter()
            .find(|m| m.rcpt_to == ["ann@x.test"])
            .expect("ann");
        let text = String::from_utf8_lossy(&ann_msg.message).to_string();
        let link = text
            .lines()
            .find_map(|l| l.strip_prefix("Buy it now: "))
            .expect("link")
            .trim()
            .to_string();
        let no_redirect = restock::tls::http_client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        assert_eq!(
            no_redirect.get(&link).send().await.expect("click").status(),
            303
        );
        s.call(reqwest::Method::POST, "/v1/orders",
        Some(&json!({"order_id": "b1", "customer": {"email": "bob@x.test"}, "lines": [{"sku": "S-42", "quantity": 1}]}))).await;
        s.t.advance(H);
        assert_eq!(s.deliver().await, 3);
        let reminders: Vec<String> = s
            .sink
            .messages()
            .into_iter()
            .filter(|m| String::from_utf8_lossy(&m.message).contains("Subject: Still in stock"))
            .flat_map(|m| m.rcpt_to)
            .collect();
        assert_eq!(
            reminders,
            vec!["cat@x.test"],
            "one reminder, to the one who did nothing"
        );
        s.t.advance(10 * H);
        assert_eq!(s.deliver().await, 0, "never a second reminder");
        s.stop().await;
    }
);

both_dbs!(
    sign_ups_expire_after_the_interest_window,
    |backend: Backend| async move {
        let s = shop(backend, json!({"interest_window_secs": 86400})).await;
        assert_eq!(
            s.sign_up(json!({"email": "old@x.test", "sku": "S-42"}))
                .await
                .0,
            201
        );
        s.t.advance(23 * H);
        assert_eq!(
            s.sign_up(json!({"email": "new@x.test", "sku": "S-42"}))
                .await
                .0,
            201
        );
        s.t.advance(2 * H);
        s.stock("S-42", 5).await;
        assert_eq!(s.deliver().await, 1);
        assert_eq!(s.received(), vec!["new@x.test"]);
        let (_, subs) = s
            .call(
                reqwest::Method::GET,
                "/v1/subscriptions?status=expired",
                None,
            )
            .await;
        assert_eq!(subs["items"][0]["email"], "old@x.test", "{subs}");
        s.stop().await;
    }
);
