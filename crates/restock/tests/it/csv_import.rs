//! CSV imports of catalog, stock and sign-ups, through `POST /v1/imports/{kind}` and
//! through the real `restock import` binary against the test's database: lines are
//! checked by the same code as the API, refused lines are reported with their line
//! numbers and kept as dead letters of the `csv` source, the store's `csv` profile
//! governs unknown SKUs, and a large file streams.

use std::process::{Command, Output};

use crate::common;

use common::{Backend, StoreKeys, TEST_SECRETS_KEY, TestApp};
use serde_json::{Value, json};

/// Posts `body` as a CSV import; answers (status, JSON).
async fn import(t: &TestApp, store: &StoreKeys, kind: &str, body: &str) -> (u16, Value) {
    let resp = t
        .http
        .post(t.url(&format!("/v1/imports/{kind}")))
        .bearer_auth(&store.api_key)
        .header("content-type", "text/csv")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// (line, code) of each refused line in an import's answer.
fn refused(summary: &Value) -> Vec<(i64, String)> {
    summary["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            (
                e["line"].as_i64().expect("line"),
                e["code"].as_str().expect("code").to_string(),
            )
        })
        .collect()
}

async fn csv_rejections(t: &TestApp, store: &StoreKeys) -> Vec<Value> {
    let (status, r) = t
        .get("/v1/rejections?source=csv&limit=500", &store.api_key)
        .await;
    assert_eq!(status, 200, "{r}");
    r["items"].as_array().expect("items").clone()
}

/// Replays the store's csv dead letter with reason `code` by hand; the answer.
async fn replay_csv_rejection(t: &TestApp, store: &StoreKeys, code: &str) -> Value {
    let dead = csv_rejections(t, store).await;
    let id = dead
        .iter()
        .find(|d| d["reason_code"] == code)
        .expect("kept")["id"]
        .as_i64()
        .expect("id");
    let (status, out) = t
        .post(
            &format!("/v1/rejections/{id}/replay"),
            &store.api_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    out
}

async fn available(t: &TestApp, store: &StoreKeys, sku: &str) -> Option<i64> {
    let (status, v) = t.get(&format!("/v1/variants/{sku}"), &store.api_key).await;
    (status == 200).then(|| v["available"].as_i64().expect("available"))
}

/// Runs the real binary against the test's database.
fn restock(t: &TestApp, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_restock"))
        .args(args)
        .current_dir(t.db.dir.path())
        .env("RESTOCK_DATABASE__URL", &t.db.url)
        .env("RESTOCK_SECRETS__KEY", TEST_SECRETS_KEY)
        .env("RESTOCK_LOG", "warn")
        .output()
        .expect("run restock")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(t: &TestApp, name: &str, body: &str) -> String {
    let path = t.db.dir.path().join(name);
    std::fs::write(&path, body).expect("write file");
    path.display().to_string()
}

both_dbs!(
    stock_lines_apply_bad_lines_are_kept_and_a_restock_plans_alerts,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let s = t.create_store("csv-stock").await;
        t.seed_catalog(&s).await;
        let (status, body) = t
            .subscribe(&s, json!({"email": "ann@example.com", "sku": "S-42"}))
            .await;
        assert_eq!(status, 201, "{body}");

        // CRLF line ends, a BOM, a quoted field, a blank line.
        let csv = "\u{feff}sku,location,available\r\n\
                   S-42,wh-1,5\r\n\
                   S-43,wh-1,abc\r\n\
                   \r\n\
                   NEW-1,wh-1,3\r\n\
                   \"S-43\",wh-1,2,extra\r\n\
                   \"S-43\",\"wh-1\",4\r\n";
        let (status, r) = import(&t, &s, "stock", csv).await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["read"], 5, "{r}");
        assert_eq!(r["applied"], 2, "{r}");
        assert_eq!(r["rejected"], 3, "{r}");
        assert_eq!(
            refused(&r),
            vec![
                (3, "invalid_quantity".to_string()),
                (5, "unknown_sku".to_string()),
                (6, "invalid_line".to_string()),
            ],
            "{r}"
        );
        assert_eq!(r["errors"][0]["column"], "available", "{r}");
        assert_eq!(available(&t, &s, "S-42").await, Some(5));
        assert_eq!(available(&t, &s, "S-43").await, Some(4));
        // The intake log keeps the batch's lines as they were read.
        let (status, logged) = t.get("/v1/sources/csv/log", &s.api_key).await;
        assert_eq!(status, 200, "{logged}");
        let entry = &logged["items"][0];
        assert_eq!(entry["format"], "csv", "{logged}");
        let lines = entry["payload"].as_str().expect("payload");
        assert!(
            lines.contains("S-42,wh-1,5") && lines.contains("\"S-43\",wh-1,2,extra"),
            "{lines:?}"
        );
        let outcome: Value =
            serde_json::from_str(entry["outcome"].as_str().expect("outcome")).expect("json");
        assert_eq!(
            outcome,
            json!({"applied": 2, "stale": 0, "rejected": 3}),
            "{logged}"
        );

        // Both variants came back; S-42's restock plans the waiting shopper's alert.
        assert_eq!(r["restocks"], 2, "{r}");
        restock::planning::plan_due(&t.app).await.expect("plans");
        let (status, restocks) = t.get("/v1/restocks", &s.api_key).await;
        assert_eq!(status, 200, "{restocks}");
        let s42 = restocks
            .as_array()
            .expect("restocks")
            .iter()
            .find(|r| r["sku"] == "S-42")
            .cloned()
            .expect("S-42 restocked");
        assert_eq!(s42["planned"], 1, "{restocks}");

        // Every refused line is a dead letter of the csv source.
        let dead = csv_rejections(&t, &s).await;
        assert_eq!(dead.len(), 3, "{dead:?}");
        let bad_qty = dead
            .iter()
            .find(|d| d["reason_code"] == "invalid_quantity")
            .expect("invalid quantity kept");
        let payload: Value = serde_json::from_str(bad_qty["payload"].as_str().expect("payload"))
            .expect("payload is JSON");
        assert_eq!(payload["line"], 3);
        assert_eq!(payload["raw"], "S-43,wh-1,abc");
        assert!(
            dead.iter().any(|d| d["reason_code"] == "invalid_line"
                && d["payload"].as_str().unwrap_or("").contains("\"line\":6")),
            "{dead:?}"
        );

        let parked = dead
            .iter()
            .find(|d| d["reason_code"] == "unknown_sku")
            .expect("unknown SKU kept");
        assert!(
            parked["reason"]
                .as_str()
                .unwrap_or("")
                .starts_with("line 5 (NEW-1,wh-1,3): "),
            "{parked}"
        );

        // The default profile parks the unknown SKU: it applies once the catalog
        // names it.
        assert_eq!(available(&t, &s, "NEW-1").await, None);
        let mut product = common::shoe_product();
        product["variants"] = json!([{"sku": "NEW-1"}]);
        let (status, body) = t.put("/v1/products/new", &s.api_key, &product).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(available(&t, &s, "NEW-1").await, Some(3));

        // A refused line replays through the same path (and is refused again while
        // its cause stands).
        let id = bad_qty["id"].as_i64().expect("id");
        let (status, out) = t
            .post(
                &format!("/v1/rejections/{id}/replay"),
                &s.api_key,
                &json!({}),
            )
            .await;
        assert_eq!(status, 200, "{out}");
        assert_eq!(out["result"], "rejected", "{out}");
        t.stop().await;
    }
);

both_dbs!(
    the_csv_profile_governs_unknown_skus_and_duplicates,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let s = t.create_store("csv-profile").await;
        t.seed_catalog(&s).await;
        let profile = |p: Value| json!({"kind": "csv", "profile": p});

        let (status, body) = t
            .put(
                "/v1/sources/csv",
                &s.api_key,
                &profile(json!({"unknown_sku": "placeholder"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, r) = import(&t, &s, "stock", "sku,available\nPH-1,7\n").await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(
            (r["applied"].as_i64(), r["rejected"].as_i64()),
            (Some(1), Some(0)),
            "{r}"
        );
        assert_eq!(available(&t, &s, "PH-1").await, Some(7));

        let (status, body) = t
            .put(
                "/v1/sources/csv",
                &s.api_key,
                &profile(json!({"unknown_sku": "reject", "duplicate_lines": "reject", "negative_quantity": "reject"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, r) = import(
            &t,
            &s,
            "stock",
            "sku,location,available\nRJ-1,a,2\nS-42,a,1\nS-42,a,3\nS-43,a,-1\nS-43,b,6\n",
        )
        .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(
            refused(&r),
            vec![
                (2, "unknown_sku".to_string()),
                (3, "duplicate_line".to_string()),
                (4, "duplicate_line".to_string()),
                (5, "negative_quantity".to_string()),
            ],
            "{r}"
        );
        assert_eq!(r["applied"], 1, "{r}");
        assert_eq!(available(&t, &s, "S-42").await, Some(0));
        assert_eq!(available(&t, &s, "S-43").await, Some(6));
        // Rejected, not parked: adding the SKU does not apply it.
        let mut product = common::shoe_product();
        product["variants"] = json!([{"sku": "RJ-1"}]);
        let (status, body) = t.put("/v1/products/rj", &s.api_key, &product).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(available(&t, &s, "RJ-1").await, Some(0));
        // By hand, it applies.
        let out = replay_csv_rejection(&t, &s, "unknown_sku").await;
        assert_eq!(out["result"], "applied", "{out}");
        assert_eq!(available(&t, &s, "RJ-1").await, Some(2));
        t.stop().await;
    }
);

both_dbs!(
    catalog_lines_go_through_the_product_api_checks,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let s = t.create_store("csv-catalog").await;
        t.seed_catalog(&s).await;
        let csv = "product_id,title,url,price,currency,category,sku,variant_title,options,variant_price\n\
                   tee,Tee,https://shop.example/tee,1500,EUR,shirts,TEE-S,Small,size=S;colour=Red,\n\
                   tee,Tee,https://shop.example/tee,1500,EUR,shirts,TEE-M,Medium,size=M,1600\n\
                   cap,Cap,not a url,900,EUR,,CAP-1,,,\n\
                   mug,Mug,https://shop.example/mug,lots,EUR,,MUG-1,,,\n\
                   sock,Sock,https://shop.example/sock,300,EURO,,SOCK-1,,,\n\
                   other,Other,https://shop.example/other,300,EUR,,S-42,,,\n\
                   \"bag\",\"Bag, large\",https://shop.example/bag,2500,USD,,BAG-1,,,\n";
        let (status, r) = import(&t, &s, "catalog", csv).await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(
            (r["read"].as_i64(), r["applied"].as_i64()),
            (Some(7), Some(3)),
            "{r}"
        );
        assert_eq!(
            refused(&r),
            vec![
                (4, "invalid_value".to_string()),
                (5, "invalid_value".to_string()),
                (6, "invalid_value".to_string()),
                (7, "sku_taken".to_string()),
            ],
            "{r}"
        );
        assert_eq!(r["errors"][1]["column"], "price", "{r}");
        let (status, tee) = t.get("/v1/products/tee", &s.api_key).await;
        assert_eq!(status, 200, "{tee}");
        assert_eq!(tee["category"], "shirts");
        let variants = tee["variants"].as_array().expect("variants");
        assert_eq!(variants.len(), 2, "{tee}");
        assert_eq!(
            variants[0]["options"],
            json!({"size": "S", "colour": "Red"})
        );
        assert_eq!(variants[1]["price"], 1600);
        let (_, bag) = t.get("/v1/products/bag", &s.api_key).await;
        assert_eq!(bag["title"], "Bag, large", "{bag}");
        assert_eq!(t.get("/v1/products/cap", &s.api_key).await.0, 404);
        // The shoe kept its SKU.
        let (_, shoe) = t.get("/v1/variants/S-42", &s.api_key).await;
        assert_eq!(shoe["title"], "42", "{shoe}");
        let dead = csv_rejections(&t, &s).await;
        assert_eq!(dead.len(), 4, "{dead:?}");
        assert!(dead.iter().all(|d| {
            d["payload"]
                .as_str()
                .unwrap_or("")
                .contains("\"import\":\"catalog\"")
        }));
        t.stop().await;
    }
);

both_dbs!(
    signup_lines_go_through_the_signup_checks,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let s = t.create_store("csv-signups").await;
        t.seed_catalog(&s).await;
        // An address that opted out of everything.
        let (status, body) = t
            .subscribe(&s, json!({"email": "gone@example.com", "sku": "S-43"}))
            .await;
        assert_eq!(status, 201, "{body}");
        let (status, gone) = t
            .get("/v1/shoppers?email=gone@example.com", &s.api_key)
            .await;
        assert_eq!(status, 200, "{gone}");
        let (status, body) = t
            .put(
                &format!("/v1/shoppers/{}/preferences", gone["id"]),
                &s.api_key,
                &json!({"all": false}),
            )
            .await;
        assert_eq!(status, 200, "{body}");

        let (tr, sr) = (&t, &s);
        let waiting = move || async move {
            let (status, subs) = tr
                .get("/v1/subscriptions?status=waiting", &sr.api_key)
                .await;
            assert_eq!(status, 200, "{subs}");
            subs["items"].as_array().map(Vec::len).unwrap_or(0)
        };
        let before = waiting().await;
        let csv = "email,sku,product,consent_text\n\
                   ann@example.com,S-42,,Tell me when it is back\n\
                   not-an-email,S-42,,\n\
                   bob@example.com,NOPE-1,,\n\
                   ann@example.com,S-42,,again\n\
                   gone@example.com,S-42,,\n\
                   cat@example.com,,shoe,\n";
        let (status, r) = import(&t, &s, "signups", csv).await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(
            (r["read"].as_i64(), r["applied"].as_i64()),
            (Some(6), Some(3)),
            "{r}"
        );
        assert_eq!(
            refused(&r),
            vec![
                (3, "invalid_email".to_string()),
                (4, "unknown_sku".to_string()),
                (6, "confirmation_required".to_string()),
            ],
            "{r}"
        );
        assert_eq!(r["errors"][0]["column"], "email", "{r}");
        // Ann's two lines are one sign-up; Cat's is the other.
        assert_eq!(waiting().await, before + 2);
        // The unknown SKU's line replays once the catalog names it.
        let mut product = common::shoe_product();
        product["variants"] = json!([{"sku": "NOPE-1"}]);
        let (status, body) = t.put("/v1/products/nope", &s.api_key, &product).await;
        assert_eq!(status, 200, "{body}");
        let out = replay_csv_rejection(&t, &s, "unknown_sku").await;
        assert_eq!(out["result"], "applied", "{out}");
        assert_eq!(waiting().await, before + 3);
        t.stop().await;
    }
);

both_dbs!(
    a_bad_header_auth_and_store_isolation,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let a = t.create_store("csv-a").await;
        let b = t.create_store("csv-b").await;
        t.seed_catalog(&a).await;
        t.seed_catalog(&b).await;

        for (body, needle) in [
            ("sku,available,colour\nS-42,1,red\n", "colour"),
            ("sku,location\nS-42,a\n", "available"),
            ("sku,sku,available\n", "twice"),
            ("", "header"),
            ("sku,available\n\"S-42,1\n", "unclosed"),
        ] {
            let (status, r) = import(&t, &a, "stock", body).await;
            if needle == "unclosed" {
                // A quote never closed swallows the rest: a record, refused per line.
                assert_eq!(status, 200, "{r}");
                assert_eq!(r["rejected"], 1, "{r}");
                continue;
            }
            assert_eq!(status, 422, "{body:?}: {r}");
            assert_eq!(r["code"], "invalid_csv", "{r}");
            assert!(r["message"].as_str().unwrap_or("").contains(needle), "{r}");
        }
        // A NUL byte refuses its line only.
        let (status, r) = import(&t, &a, "stock", "sku,available\nS-42,1\0\nS-43,2\n").await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(refused(&r), vec![(2, "invalid_line".to_string())], "{r}");
        assert_eq!(available(&t, &a, "S-43").await, Some(2));

        let (status, r) = import(&t, &a, "orders", "x\n").await;
        assert_eq!(status, 404, "{r}");
        assert_eq!(r["code"], "not_found", "{r}");
        for key in [None, Some("rk_forged"), Some(b.publishable_key.as_str())] {
            let mut req = t
                .http
                .post(t.url("/v1/imports/stock"))
                .body("sku,available\nS-42,9\n");
            if let Some(k) = key {
                req = req.bearer_auth(k);
            }
            let resp = req.send().await.expect("request");
            assert_eq!(resp.status(), 401);
            let body: Value = resp.json().await.expect("json");
            assert_eq!(body["code"], "unauthorized", "{body}");
        }
        assert_eq!(available(&t, &a, "S-42").await, Some(0));

        // Store a's import touches store a only; b's own SKU is unknown to a.
        let mut product = common::shoe_product();
        product["variants"] = json!([{"sku": "B-ONLY"}]);
        let (status, body) = t.put("/v1/products/b", &b.api_key, &product).await;
        assert_eq!(status, 200, "{body}");
        let (status, r) = import(&t, &a, "stock", "sku,available\nS-42,8\nB-ONLY,5\n").await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(refused(&r), vec![(3, "unknown_sku".to_string())], "{r}");
        assert_eq!(available(&t, &a, "S-42").await, Some(8));
        assert_eq!(available(&t, &b, "S-42").await, Some(0));
        assert_eq!(available(&t, &b, "B-ONLY").await, Some(0));
        assert!(csv_rejections(&t, &b).await.is_empty());
        t.stop().await;
    }
);

both_dbs!(
    each_kind_imports_through_the_binary,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let s = t.create_store("csv-cli").await;

        let catalog = write(
            &t,
            "catalog.csv",
            "product_id,title,url,price,currency,sku\n\
             shoe,Shoe,https://shop.example/shoe,100,EUR,S-42\n\
             shoe,Shoe,https://shop.example/shoe,100,EUR,S-43\n\
             bad,Bad,https://shop.example/bad,-1,EUR,B-1\n",
        );
        let out = restock(&t, &["import", "catalog", &catalog, "--store", "csv-cli"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("line 4 column price: invalid_value"),
            "{stdout}"
        );
        assert!(
            stdout.contains("3 lines read: 2 applied, 0 stale, 1 rejected"),
            "{stdout}"
        );
        let (status, shoe) = t.get("/v1/products/shoe", &s.api_key).await;
        assert_eq!(status, 200, "{shoe}");
        assert_eq!(shoe["variants"].as_array().map(Vec::len), Some(2));

        let signups = write(
            &t,
            "signups.csv",
            "email,sku\nann@example.com,S-42\nbob@,S-42\n",
        );
        let out = restock(&t, &["import", "signups", &signups, "--store", "csv-cli"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("line 3 column email: invalid_email"),
            "{stdout}"
        );
        let (_, subs) = t.get("/v1/subscriptions", &s.api_key).await;
        assert_eq!(subs["items"].as_array().map(Vec::len), Some(1), "{subs}");

        let stock = write(
            &t,
            "stock.csv",
            "sku,location,available\nS-42,wh,4\nS-43,wh,x\nZZ-9,wh,1\n",
        );
        let report = t.db.dir.path().join("report.csv");
        let out = restock(
            &t,
            &[
                "import",
                "stock",
                &stock,
                "--store",
                "csv-cli",
                "--report",
                &report.display().to_string(),
                "--strict",
            ],
        );
        // --strict: refused lines make the exit status 2; the good lines applied.
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert_eq!(available(&t, &s, "S-42").await, Some(4));
        let report = std::fs::read_to_string(&report).expect("report written");
        let rows: Vec<&str> = report.lines().collect();
        assert_eq!(rows[0], "line,column,code,reason,rejection_id");
        assert!(
            rows[1].starts_with("3,available,invalid_quantity,"),
            "{report}"
        );
        assert!(rows[2].starts_with("4,sku,unknown_sku,"), "{report}");
        assert_eq!(rows.len(), 3, "{report}");
        // One refused line of each earlier file, and these two.
        assert_eq!(csv_rejections(&t, &s).await.len(), 4);

        let out = restock(&t, &["import", "stock", &catalog, "--store", "csv-cli"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("invalid_csv"),
            "{}",
            text(&out.stderr)
        );
        let out = restock(&t, &["import", "stock", &stock, "--store", "nope"]);
        assert!(!out.status.success());
        t.stop().await;
    }
);

/// `lines` stock lines over 100 SKUs at 10 locations, each line newer than the last,
/// padded so each is about 60 bytes.
fn stock_file(lines: usize) -> String {
    let mut csv = String::from("sku,location,available,sequence,observed_at\n");
    for i in 0..lines {
        csv.push_str(&format!(
            "BULK-{},warehouse-{},{},{},2026-03-01T11:00:00.000Z\n",
            i % 100,
            (i / 100) % 10,
            i % 7,
            i + 1
        ));
    }
    csv
}

async fn bulk_catalog(t: &TestApp, s: &StoreKeys) {
    let mut product = common::shoe_product();
    product["variants"] = (0..100)
        .map(|i| json!({"sku": format!("BULK-{i}")}))
        .collect();
    let (status, body) = t.put("/v1/products/bulk", &s.api_key, &product).await;
    assert_eq!(status, 200, "{body}");
}

both_dbs!(
    a_large_stock_file_streams_in_batches,
    |backend: Backend| async move {
        let t = TestApp::spawn(backend).await;
        let s = t.create_store("csv-large").await;
        bulk_catalog(&t, &s).await;
        let csv = stock_file(100_000);
        // Larger than any JSON request the API takes.
        assert!(
            csv.len() > restock::http::limits::STOCK_BATCH,
            "{}",
            csv.len()
        );

        // The first 5,000 lines go out, then the body pauses until the server has
        // applied them: a server that buffered the body before applying would wait
        // for the rest and this would time out.
        let split = csv
            .match_indices('\n')
            .nth(5_000)
            .map(|(i, _)| i + 1)
            .expect("5,000 lines");
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
        tx.unbounded_send(Ok(csv.as_bytes()[..split].to_vec()))
            .expect("send");
        let request = t
            .http
            .post(t.url("/v1/imports/stock"))
            .bearer_auth(&s.api_key)
            .header("content-type", "text/csv")
            .body(reqwest::Body::wrap_stream(rx))
            .send();
        let answer = tokio::spawn(request);
        let applied_early = async {
            loop {
                let (_, v) = t.get("/v1/variants/BULK-0", &s.api_key).await;
                if v["levels"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|l| l["location"] == "warehouse-4"))
                {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(60), applied_early)
            .await
            .expect("the first lines were applied before the body ended");
        for part in csv.as_bytes()[split..].chunks(256 * 1024) {
            tx.unbounded_send(Ok(part.to_vec())).expect("send");
        }
        drop(tx);
        let resp = answer.await.expect("task").expect("request");
        assert_eq!(resp.status(), 200);
        let r: Value = resp.json().await.expect("json");
        assert_eq!(r["read"], 100_000, "{r}");
        assert_eq!(r["rejected"], 0, "{r}");
        assert_eq!(
            r["applied"].as_u64().unwrap_or(0) + r["stale"].as_u64().unwrap_or(0),
            100_000,
            "{r}"
        );
        assert_eq!(r["batches"], 100, "{r}");
        // The last line for BULK-99 at warehouse-9 is line 100,000 of the data.
        let (_, v) = t.get("/v1/variants/BULK-99", &s.api_key).await;
        let level = v["levels"]
            .as_array()
            .expect("levels")
            .iter()
            .find(|l| l["location"] == "warehouse-9")
            .cloned()
            .expect("level");
        assert_eq!(level["sequence"], 100_000, "{v}");
        assert_eq!(level["source"], "csv", "{v}");

        // The binary reports progress as it goes, not only at the end.
        let file = write(&t, "bulk.csv", &stock_file(30_000));
        let out = restock(&t, &["import", "stock", &file, "--store", "csv-large"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        let progress: Vec<u64> = stderr
            .lines()
            .filter_map(|l| l.split_once(" lines read:"))
            .map(|(n, _)| n.parse().expect("a count"))
            .collect();
        assert!(progress.len() >= 3, "{stderr}");
        assert!(progress.windows(2).all(|w| w[0] < w[1]), "{stderr}");
        assert_eq!(progress.last(), Some(&30_000), "{stderr}");
        t.stop().await;
    }
);
