//! The stream sources against real servers: a WebSocket server run by the test
//! (tokio-tungstenite), and NATS JetStream at 127.0.0.1:4222 (a stream per test,
//! deleted at the end). Reconnects, redeliveries and replays apply nothing twice;
//! unreadable messages are dead letters; Restock's own events reach JetStream; two
//! `restock serve` processes share one durable consumer.

use crate::common;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer::pull};
use common::{Backend, StoreKeys, TestApp, eventually};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const NATS: &str = "nats://127.0.0.1:4222";

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        restock::util::random_token(8).replace(['-', '_'], "x")
    )
}

async fn level(t: &TestApp, s: &StoreKeys, sku: &str) -> i64 {
    let (status, v) = t.get(&format!("/v1/variants/{sku}"), &s.api_key).await;
    if status != 200 {
        return i64::MIN;
    }
    v["levels"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["location"] == "default"))
        .and_then(|l| l["available"].as_i64())
        .unwrap_or(0)
}

async fn source(t: &TestApp, s: &StoreKeys, name: &str) -> Value {
    let (status, r) = t.get(&format!("/v1/sources/{name}"), &s.api_key).await;
    assert_eq!(status, 200, "{r}");
    r
}

async fn rejections(t: &TestApp, s: &StoreKeys, query: &str) -> Vec<Value> {
    let (status, r) = t.get(&format!("/v1/rejections?{query}"), &s.api_key).await;
    assert_eq!(status, 200, "{r}");
    r["items"].as_array().expect("items").clone()
}

/// One counter's value in a Prometheus text page (0 when absent).
fn metric(page: &str, name_and_labels: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name_and_labels))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn metrics_page(http: &reqwest::Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body")
}

const APPLIED: &str = "restock_source_items_total{kind=\"jetstream\",outcome=\"applied\"}";
const STALE: &str = "restock_source_items_total{kind=\"jetstream\",outcome=\"stale\"}";
const REDELIVERED: &str = "restock_source_items_total{kind=\"jetstream\",outcome=\"redelivered\"}";

// ---------------------------------------------------------------- JetStream

struct Js {
    js: jetstream::Context,
    stream: String,
    subject: String,
}

impl Js {
    async fn new() -> Js {
        let client = async_nats::connect(NATS)
            .await
            .expect("NATS at 127.0.0.1:4222");
        let js = jetstream::new(client);
        let stream = unique("RS");
        let subject = stream.to_lowercase();
        js.create_stream(jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{subject}.>")],
            ..Default::default()
        })
        .await
        .expect("create stream");
        Js {
            js,
            stream,
            subject,
        }
    }

    async fn publish(&self, body: Value) {
        self.publish_raw(body.to_string()).await;
    }

    async fn publish_raw(&self, body: String) {
        self.js
            .publish(format!("{}.stock", self.subject), body.into())
            .await
            .expect("publish")
            .await
            .expect("publish ack");
    }

    async fn consumer(&self, durable: &str) -> jetstream::consumer::Consumer<pull::Config> {
        self.js
            .get_stream(&self.stream)
            .await
            .expect("stream")
            .get_consumer(durable)
            .await
            .expect("consumer")
    }

    /// Waits until the durable consumer has nothing pending and nothing awaiting
    /// an acknowledgement (each message is acknowledged once what came of it
    /// committed).
    async fn settled(&self, durable: &str, secs: u64) {
        eventually(secs, &format!("{durable}: all acknowledged"), || async {
            let mut c = self.consumer(durable).await;
            c.info()
                .await
                .is_ok_and(|i| i.num_ack_pending == 0 && i.num_pending == 0)
        })
        .await;
    }

    async fn drop_stream(self) {
        let _ = self.js.delete_stream(&self.stream).await;
    }
}

fn jetstream_source(js: &Js, durable: &str) -> Value {
    json!({
        "kind": "jetstream",
        "config": {
            "url": NATS,
            "stream": js.stream,
            "subject": format!("{}.>", js.subject),
            "durable": durable,
            "fields": {"sku": "sku", "available": "qty", "sequence": "seq"},
            "max_deliver": 3,
            "ack_wait_secs": 30
        }
    })
}

async fn spawn_streaming(backend: Backend, extra: &str) -> TestApp {
    TestApp::spawn_with(
        backend,
        &format!("[intake]\ntick_ms = 50\nretry_base_ms = 100\n{extra}"),
    )
    .await
}

both_dbs!(
    jetstream_updates_are_applied_acked_and_never_applied_twice,
    |backend: Backend| async move {
        let js = Js::new().await;
        let t = spawn_streaming(backend, "").await;
        let s = t.create_store("alpha").await;
        t.seed_catalog(&s).await;
        let (status, r) = t
            .subscribe(&s, json!({"email": "ann@example.com", "sku": "S-42"}))
            .await;
        assert_eq!(status, 201, "{r}");
        let (status, r) = t
            .put(
                "/v1/sources/inventory",
                &s.api_key,
                &jetstream_source(&js, "restock-a"),
            )
            .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["config"]["url"], NATS, "no credentials to mask: {r}");

        js.publish(json!({"sku": "S-42", "qty": 5, "seq": 1})).await;
        js.publish(json!({"sku": "S-43", "qty": 3, "seq": 1})).await;
        js.publish(json!({"sku": "S-43", "qty": 2, "seq": 2})).await;
        js.publish_raw("{not json".into()).await;
        eventually(20, "updates applied", || async {
            level(&t, &s, "S-42").await == 5 && level(&t, &s, "S-43").await == 2
        })
        .await;
        eventually(10, "the bad message kept", || async {
            !rejections(&t, &s, "reason_code=invalid_json")
                .await
                .is_empty()
        })
        .await;
        let dead = rejections(&t, &s, "reason_code=invalid_json").await;
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0]["source"], "inventory");
        assert_eq!(dead[0]["payload"], "{not json");
        // Everything acknowledged, the unreadable message too.
        js.settled("restock-a", 10).await;
        // The restock is planned once.
        restock::planning::plan_due(&t.app).await.expect("plans");
        let planned = t.outbox(&s).await["pending"].as_i64();
        assert_eq!(planned, Some(1), "{}", t.outbox(&s).await);
        let applied = source(&t, &s, "inventory").await["health"]["applied"].clone();
        assert_eq!(applied, 3, "{applied}");
        // The intake log holds the four messages as they arrived, the unreadable one
        // too, and the stream sequence reached.
        let (status, logged) = t.get("/v1/sources/inventory/log", &s.api_key).await;
        assert_eq!(status, 200, "{logged}");
        let entries = logged["items"].as_array().expect("items");
        let texts: Vec<String> = entries
            .iter()
            .flat_map(|e| {
                assert_eq!(e["format"], "messages", "{e}");
                serde_json::from_str::<Vec<String>>(e["payload"].as_str().expect("payload"))
                    .expect("a JSON array of the messages")
            })
            .collect();
        assert_eq!(texts.len(), 4, "{texts:?}");
        assert!(texts.iter().any(|m| m == "{not json"), "{texts:?}");
        assert_eq!(entries[0]["cursor"], "4", "{logged}");

        // A consumer that reads the stream again from the start (here: a new durable
        // name) gets every message again: none of them is applied twice.
        let before = metrics_page(&t.http, &t.base).await;
        assert_eq!(metric(&before, APPLIED), 3.0, "{before}");
        // (The runner restarts a source whose settings changed: time moves on.)
        t.advance(1_000);
        let (status, r) = t
            .put(
                "/v1/sources/inventory",
                &s.api_key,
                &jetstream_source(&js, "restock-b"),
            )
            .await;
        assert_eq!(status, 200, "{r}");
        eventually(20, "the stream read again", || async {
            match js
                .js
                .get_stream(&js.stream)
                .await
                .expect("stream")
                .get_consumer::<pull::Config>("restock-b")
                .await
            {
                Ok(mut c) => c.info().await.is_ok_and(|i| {
                    i.num_pending == 0 && i.num_ack_pending == 0 && i.delivered.stream_sequence == 4
                }),
                Err(_) => false,
            }
        })
        .await;
        let after = metrics_page(&t.http, &t.base).await;
        assert_eq!(
            metric(&after, APPLIED),
            3.0,
            "nothing applied twice: {after}"
        );
        assert_eq!(
            metric(&after, STALE) - metric(&before, STALE),
            3.0,
            "every message read again was found stale: {after}"
        );
        assert_eq!(level(&t, &s, "S-42").await, 5);
        assert_eq!(level(&t, &s, "S-43").await, 2, "the older seq stays stale");
        restock::planning::plan_due(&t.app).await.expect("plans");
        let planned = t.outbox(&s).await["pending"].as_i64();
        assert_eq!(planned, Some(1), "no second restock");
        t.stop().await;
        js.drop_stream().await;
    }
);

both_dbs!(
    a_jetstream_message_redelivered_after_a_nak_applies_once_and_one_hitting_max_deliver_is_a_dead_letter,
    |backend: Backend| async move {
        let js = Js::new().await;
        // The durable consumer as Restock binds it; this test takes deliveries from it
        // first, as an instance that fails would.
        let stream = js.js.get_stream(&js.stream).await.expect("stream");
        let consumer: jetstream::consumer::Consumer<pull::Config> = stream
            .get_or_create_consumer(
                "shared",
                pull::Config {
                    durable_name: Some("shared".into()),
                    filter_subject: format!("{}.>", js.subject),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    max_deliver: -1,
                    ..Default::default()
                },
            )
            .await
            .expect("consumer");
        // S-43 first: a message refused without delay comes back ahead of those not
        // yet delivered, so S-43 must have had its first delivery before S-42 is
        // refused.
        js.publish(json!({"sku": "S-43", "qty": 4, "seq": 1})).await;
        js.publish(json!({"sku": "S-42", "qty": 7, "seq": 1})).await;
        // S-42's message: delivered and refused twice (max_deliver is 3). S-43's:
        // delivered once and refused, to come back a little later.
        let (mut s42, mut s43) = (0, 0);
        while s42 < 2 || s43 < 1 {
            let mut batch = consumer
                .batch()
                .max_messages(1)
                .expires(Duration::from_secs(2))
                .messages()
                .await
                .expect("fetch");
            let m = batch
                .next()
                .await
                .expect("a delivery")
                .expect("message");
            let body: Value = serde_json::from_slice(&m.payload).expect("json");
            if body["sku"] == "S-42" {
                s42 += 1;
                m.ack_with(AckKind::Nak(None)).await.expect("nak");
            } else {
                s43 += 1;
                m.ack_with(AckKind::Nak(Some(Duration::from_secs(3))))
                    .await
                    .expect("nak");
            }
        }
        assert_eq!(s43, 1, "S-43 delivered once so far");

        let t = spawn_streaming(backend, "").await;
        let s = t.create_store("alpha").await;
        t.seed_catalog(&s).await;
        let (status, r) = t
            .put("/v1/sources/inventory", &s.api_key, &jetstream_source(&js, "shared"))
            .await;
        assert_eq!(status, 200, "{r}");
        // S-43's redelivery is applied (once); S-42's third delivery is a dead letter.
        eventually(20, "the redelivery applied", || async {
            level(&t, &s, "S-43").await == 4
        })
        .await;
        eventually(20, "the poison message kept", || async {
            !rejections(&t, &s, "reason_code=max_deliver").await.is_empty()
        })
        .await;
        let dead = rejections(&t, &s, "reason_code=max_deliver").await;
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert!(
            dead[0]["payload"].as_str().is_some_and(|p| p.contains("S-42")),
            "{dead:?}"
        );
        assert_eq!(level(&t, &s, "S-42").await, 0, "not applied");
        js.settled("shared", 10).await;
        let page = metrics_page(&t.http, &t.base).await;
        assert_eq!(metric(&page, APPLIED), 1.0, "{page}");
        // Replaying the dead letter applies it.
        let (status, r) = t
            .post(
                "/v1/rejections/replay",
                &s.api_key,
                &json!({"reason_code": "max_deliver"}),
            )
            .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["applied"], 1, "{r}");
        assert_eq!(level(&t, &s, "S-42").await, 7);
        t.stop().await;
        js.drop_stream().await;
    }
);

both_dbs!(
    restock_publishes_its_events_to_jetstream,
    |backend: Backend| async move {
        let client = async_nats::connect(NATS).await.expect("NATS");
        let js = jetstream::new(client);
        let stream = unique("EV");
        let prefix = stream.to_lowercase();
        let t = TestApp::spawn_with(
            backend,
            &format!(
                "[events]\njetstream_url = \"{NATS}\"\nstream = \"{stream}\"\nsubject_prefix = \"{prefix}\"\n"
            ),
        )
        .await;
        let s = t.create_store("alpha").await;
        t.seed_catalog(&s).await;
        let (status, r) = t
            .subscribe(&s, json!({"email": "ann@example.com", "sku": "S-42"}))
            .await;
        assert_eq!(status, 201, "{r}");
        t.stock(&s, json!([{"sku": "S-42", "available": 4}])).await;
        assert_eq!(t.run_pending().await, 1);
        assert_eq!(t.sent_recipients(), ["ann@example.com"]);

        let seen = read_events(&js, &stream, 2).await;
        let detected = seen
            .iter()
            .find(|e| e["subject"] == format!("{prefix}.restock.detected"))
            .unwrap_or_else(|| panic!("restock.detected in {seen:?}"));
        assert_eq!(detected["body"]["event"], "restock.detected");
        assert_eq!(detected["body"]["store_id"], s.id);
        assert_eq!(detected["body"]["data"]["sku"], "S-42");
        assert_eq!(detected["body"]["data"]["quantity"], 4);
        let sent = seen
            .iter()
            .find(|e| e["subject"] == format!("{prefix}.notification.sent"))
            .unwrap_or_else(|| panic!("notification.sent in {seen:?}"));
        assert_eq!(sent["body"]["data"]["channel"], "email");
        assert_eq!(
            sent["body"]["data"]["restock_id"],
            detected["body"]["data"]["restock_id"]
        );
        // Each event carries its own id, also as Nats-Msg-Id, so JetStream stores a
        // retried publish once.
        for e in [detected, sent] {
            assert!(
                e["body"]["id"].as_str().is_some_and(|id| id.len() >= 16),
                "{e}"
            );
            assert_eq!(e["msg_id"], e["body"]["id"], "{e}");
        }
        assert_ne!(detected["body"]["id"], sent["body"]["id"]);
        let page = metrics_page(&t.http, &t.base).await;
        assert_eq!(
            metric(
                &page,
                "restock_outbound_events_total{outcome=\"published\"}"
            ),
            2.0,
            "{page}"
        );
        t.stop().await;
        let _ = js.delete_stream(&stream).await;
    }
);

/// Every message in an event stream (subject and body), once it holds `want`.
async fn read_events(js: &jetstream::Context, stream: &str, want: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut seen = Vec::new();
        if let Ok(st) = js.get_stream(stream).await
            && let Ok(c) = st
                .create_consumer(pull::Config {
                    deliver_policy: jetstream::consumer::DeliverPolicy::All,
                    ack_policy: jetstream::consumer::AckPolicy::None,
                    ..Default::default()
                })
                .await
            && let Ok(mut batch) = c.fetch().max_messages(100).messages().await
        {
            while let Some(Ok(m)) = batch.next().await {
                let body: Value = serde_json::from_slice(&m.payload).expect("json event");
                let msg_id = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.as_str().to_string());
                seen.push(json!({"subject": m.subject.as_str(), "body": body, "msg_id": msg_id}));
            }
        }
        if seen.len() >= want {
            return seen;
        }
        assert!(Instant::now() < deadline, "events in the stream: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

both_dbs!(
    events_never_hold_up_the_main_path_when_nats_is_down,
    |backend: Backend| async move {
        // Nothing listens on port 1: every publish fails; the buffer holds one event.
        let t = TestApp::spawn_with(
            backend,
            "[events]\njetstream_url = \"nats://127.0.0.1:1\"\nbuffer = 1\n",
        )
        .await;
        let s = t.create_store("alpha").await;
        t.seed_catalog(&s).await;
        for (i, qty) in [0, 3, 0, 4, 0, 5].into_iter().enumerate() {
            let started = Instant::now();
            t.stock(
                &s,
                json!([{"sku": "S-42", "available": qty, "sequence": i}]),
            )
            .await;
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "answered at once"
            );
        }
        assert_eq!(level(&t, &s, "S-42").await, 5);
        let page = metrics_page(&t.http, &t.base).await;
        let dropped = metric(&page, "restock_outbound_events_total{outcome=\"dropped\"}");
        assert!(dropped >= 1.0, "three restocks, room for two: {page}");
        t.stop().await;
    }
);

// ---------------------------------------------------------------- WebSocket

/// What the test tells one server-side connection to do.
enum Cmd {
    Send(String),
    /// Drop the connection.
    Drop,
    /// Stop reading: pings go unanswered.
    Stall,
}

/// One connection the client opened: its request line and headers, and a handle.
struct Conn {
    uri: String,
    authorization: Option<String>,
    tx: mpsc::Sender<Cmd>,
}

impl Conn {
    async fn send(&self, v: Value) {
        self.send_raw(v.to_string()).await;
    }
    async fn send_raw(&self, s: String) {
        self.tx.send(Cmd::Send(s)).await.expect("connection open");
    }
}

/// A WebSocket stock feed the test drives.
struct WsServer {
    url: String,
    conns: mpsc::Receiver<Conn>,
}

impl WsServer {
    async fn start() -> WsServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("ws://{}/stock", listener.local_addr().expect("addr"));
        let (conn_tx, conns) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let conn_tx = conn_tx.clone();
                tokio::spawn(async move {
                    let mut seen = None;
                    // The handshake callback's signature is tungstenite's.
                    #[allow(clippy::result_large_err)]
                    let callback =
                        |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                            seen = Some((
                                req.uri().to_string(),
                                req.headers()
                                    .get("authorization")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_string),
                            ));
                            Ok(resp)
                        };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await
                    else {
                        return;
                    };
                    let (uri, authorization) = seen.unwrap_or_default();
                    let (tx, mut rx) = mpsc::channel(64);
                    if conn_tx
                        .send(Conn {
                            uri,
                            authorization,
                            tx,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let mut reading = true;
                    loop {
                        tokio::select! {
                            cmd = rx.recv() => match cmd {
                                Some(Cmd::Send(s)) => {
                                    if ws.send(Message::text(s)).await.is_err() {
                                        return;
                                    }
                                }
                                Some(Cmd::Stall) => reading = false,
                                Some(Cmd::Drop) | None => return,
                            },
                            frame = ws.next(), if reading => {
                                if !matches!(frame, Some(Ok(_))) {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        WsServer { url, conns }
    }

    async fn next_conn(&mut self) -> Conn {
        tokio::time::timeout(Duration::from_secs(20), self.conns.recv())
            .await
            .expect("the client connects")
            .expect("server running")
    }
}

fn websocket_source(url: &str, extra: Value) -> Value {
    let mut config = json!({
        "url": url,
        "headers": {"Authorization": "Bearer feed-secret"},
        "fields": {"sku": "sku", "available": "available", "sequence": "seq"},
    });
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    json!({"kind": "websocket", "config": config})
}

const WS_SKIPPED: &str = "restock_source_items_total{kind=\"websocket\",outcome=\"skipped\"}";
const WS_APPLIED: &str = "restock_source_items_total{kind=\"websocket\",outcome=\"applied\"}";

both_dbs!(
    websocket_updates_apply_and_a_reconnect_resumes_without_applying_twice,
    |backend: Backend| async move {
        let mut server = WsServer::start().await;
        let t = spawn_streaming(backend, "").await;
        let s = t.create_store("alpha").await;
        t.seed_catalog(&s).await;
        let (status, r) = t
            .subscribe(&s, json!({"email": "ann@example.com", "sku": "S-42"}))
            .await;
        assert_eq!(status, 201, "{r}");
        let (status, r) = t
            .put(
                "/v1/sources/feed",
                &s.api_key,
                &websocket_source(&server.url, json!({})),
            )
            .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(
            r["config"]["headers"], "********",
            "the auth header is not shown: {r}"
        );
        let c1 = server.next_conn().await;
        assert_eq!(c1.authorization.as_deref(), Some("Bearer feed-secret"));
        assert_eq!(c1.uri, "/stock", "nothing to resume from yet");
        c1.send(json!({"sku": "S-42", "available": 0, "seq": 1}))
            .await;
        c1.send(json!([{"sku": "S-42", "available": 5, "seq": 2}, {"sku": "S-43", "available": 3, "seq": 3}]))
            .await;
        eventually(20, "updates applied", || async {
            level(&t, &s, "S-42").await == 5 && level(&t, &s, "S-43").await == 3
        })
        .await;
        eventually(10, "cursor saved", || async {
            source(&t, &s, "feed").await["cursor"] == "3"
        })
        .await;
        let (status, logged) = t.get("/v1/sources/feed/log", &s.api_key).await;
        assert_eq!(status, 200, "{logged}");
        let entries = logged["items"].as_array().expect("items");
        let texts: Vec<Value> = entries
            .iter()
            .rev()
            .flat_map(|e| {
                serde_json::from_str::<Vec<String>>(e["payload"].as_str().expect("payload"))
                    .expect("messages")
            })
            .map(|m| serde_json::from_str(&m).expect("each message as sent"))
            .collect();
        assert_eq!(
            texts,
            [
                json!({"sku": "S-42", "available": 0, "seq": 1}),
                json!([{"sku": "S-42", "available": 5, "seq": 2}, {"sku": "S-43", "available": 3, "seq": 3}])
            ],
            "{logged}"
        );
        assert_eq!(entries[0]["cursor"], "3", "{logged}");
        restock::planning::plan_due(&t.app).await.expect("plans");
        assert_eq!(
            t.outbox(&s).await["pending"].as_i64(),
            Some(1),
            "the restock is planned"
        );

        // The server drops the connection; the client comes back asking for what
        // follows seq 3, and the server replays from 2 anyway.
        c1.tx.send(Cmd::Drop).await.expect("drop");
        let c2 = server.next_conn().await;
        assert_eq!(c2.uri, "/stock?since=3");
        assert_eq!(c2.authorization.as_deref(), Some("Bearer feed-secret"));
        c2.send(json!({"sku": "S-42", "available": 1, "seq": 2}))
            .await;
        c2.send(json!({"sku": "S-43", "available": 3, "seq": 3}))
            .await;
        c2.send(json!({"sku": "S-43", "available": 9, "seq": 4}))
            .await;
        eventually(20, "the new update applied", || async {
            level(&t, &s, "S-43").await == 9
        })
        .await;
        // The cursor is recorded once the chunk has committed, been logged and
        // counted: a moment after its levels can be read.
        eventually(10, "cursor saved", || async {
            source(&t, &s, "feed").await["cursor"] == "4"
        })
        .await;
        assert_eq!(level(&t, &s, "S-42").await, 5, "the replayed seq 2 skipped");
        let page = metrics_page(&t.http, &t.base).await;
        assert_eq!(metric(&page, WS_SKIPPED), 2.0, "{page}");
        assert_eq!(metric(&page, WS_APPLIED), 4.0, "{page}");
        // The replayed messages were skipped, and still logged as they arrived.
        let (status, logged) = t.get("/v1/sources/feed/log", &s.api_key).await;
        assert_eq!(status, 200, "{logged}");
        let arrived: usize = logged["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|e| {
                serde_json::from_str::<Vec<String>>(e["payload"].as_str().expect("payload"))
                    .expect("messages")
                    .len()
            })
            .sum();
        assert_eq!(arrived, 5, "{logged}");
        restock::planning::plan_due(&t.app).await.expect("plans");
        assert_eq!(
            t.outbox(&s).await["pending"].as_i64(),
            Some(1),
            "no second restock"
        );
        t.stop().await;
    }
);

both_dbs!(
    a_websocket_that_stops_answering_pings_is_reconnected,
    |backend: Backend| async move {
        let mut server = WsServer::start().await;
        let t = spawn_streaming(backend, "").await;
        let s = t.create_store("alpha").await;
        t.seed_catalog(&s).await;
        let (status, r) = t
            .put(
                "/v1/sources/feed",
                &s.api_key,
                &websocket_source(
                    &server.url,
                    json!({"ping_interval_ms": 200, "pong_timeout_ms": 300}),
                ),
            )
            .await;
        assert_eq!(status, 200, "{r}");
        let c1 = server.next_conn().await;
        c1.send(json!({"sku": "S-42", "available": 2, "seq": 10}))
            .await;
        eventually(20, "applied", || async { level(&t, &s, "S-42").await == 2 }).await;
        // Answered pings keep the connection: no reconnect while it answers.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(
            server.conns.try_recv().is_err(),
            "no reconnect while pongs come"
        );
        c1.tx.send(Cmd::Stall).await.expect("stall");
        let c2 = server.next_conn().await;
        assert_eq!(c2.uri, "/stock?since=10");
        let health = source(&t, &s, "feed").await["health"].clone();
        assert!(
            health["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("nothing heard")),
            "{health}"
        );
        c2.send(json!({"sku": "S-42", "available": 6, "seq": 11}))
            .await;
        eventually(20, "applied after the reconnect", || async {
            level(&t, &s, "S-42").await == 6
        })
        .await;
        t.stop().await;
    }
);

both_dbs!(
    unreadable_websocket_messages_are_dead_letters_replayed_after_a_mapping_fix,
    |backend: Backend| async move {
        let mut server = WsServer::start().await;
        let t = spawn_streaming(backend, "").await;
        let s = t.create_store("alpha").await;
        t.seed_catalog(&s).await;
        let (status, r) = t
            .put(
                "/v1/sources/feed",
                &s.api_key,
                &websocket_source(&server.url, json!({})),
            )
            .await;
        assert_eq!(status, 200, "{r}");
        let c1 = server.next_conn().await;
        c1.send_raw("{oops".into()).await;
        c1.send(json!({"code": "S-43", "available": 4, "seq": 1}))
            .await;
        c1.send(json!({"sku": "S-42", "available": "many", "seq": 2}))
            .await;
        eventually(20, "three dead letters", || async {
            rejections(&t, &s, "source=feed").await.len() == 3
        })
        .await;
        let dead = rejections(&t, &s, "source=feed").await;
        let mut codes: Vec<&str> = dead
            .iter()
            .filter_map(|d| d["reason_code"].as_str())
            .collect();
        codes.sort_unstable();
        assert_eq!(
            codes,
            ["invalid_field", "invalid_json", "missing_field"],
            "{dead:?}"
        );
        // The feed names the SKU `code`: fix the mapping, replay what was missing it.
        let (status, r) = t
            .put(
                "/v1/sources/feed",
                &s.api_key,
                &websocket_source(
                    &server.url,
                    json!({"fields": {"sku": "code", "available": "available", "sequence": "seq"}}),
                ),
            )
            .await;
        assert_eq!(status, 200, "{r}");
        let (status, r) = t
            .post(
                "/v1/rejections/replay",
                &s.api_key,
                &json!({"reason_code": "missing_field"}),
            )
            .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["applied"], 1, "{r}");
        assert_eq!(level(&t, &s, "S-43").await, 4);
        t.stop().await;
    }
);

// ---------------------------------------------------------------- two instances

/// A running `restock serve`; killed on drop so a failing test leaves nothing behind.
struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn serve(db: &common::TestDb, name: &str, http: &reqwest::Client) -> (Serve, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let config = db.dir.path().join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
             [database]\nurl = \"{}\"\n[dispatch]\nenabled = false\n\
             [intake]\ntick_ms = 100\nretry_base_ms = 100\n\
             [email]\ntransport = \"file\"\nfile_dir = \"{}\"\n",
            db.url,
            db.dir.path().join("outbox").display()
        ),
    )
    .expect("write config");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_restock"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env(
            "RESTOCK_LOG",
            std::env::var("RESTOCK_TEST_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .env("HOSTNAME", name)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start restock serve");
    let server = Serve(child);
    let base = format!("http://127.0.0.1:{port}");
    eventually(30, "restock serve up", || async {
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    (server, base)
}

/// A store on a fresh PostgreSQL schema and two `restock serve` processes on it,
/// both bound to one JetStream source's durable consumer (`shared`) and pulling.
/// Unknown SKUs become placeholders, so every update lands without a catalog.
async fn two_instances_sharing(
    js: &Js,
    settings: &[(&str, Value)],
) -> (
    common::TestDb,
    reqwest::Client,
    (Serve, String),
    (Serve, String),
) {
    let db = common::TestDb::new(Backend::Postgres).await;
    let created = db
        .db
        .create_store(restock::storage::stores::NewStore::plain("Two", "two"), 0)
        .await
        .expect("store");
    let http = restock::tls::http_client_builder()
        .build()
        .expect("HTTP client");
    let a = serve(&db, "instance-a", &http).await;
    let b = serve(&db, "instance-b", &http).await;
    let mut body = jetstream_source(js, "shared");
    body["config"]["batch"] = json!(10);
    for (key, value) in settings {
        body["config"][*key] = value.clone();
    }
    body["profile"] = json!({"unknown_sku": "placeholder"});
    let r = http
        .put(format!("{}/v1/sources/inventory", a.1))
        .bearer_auth(&created.api_key)
        .json(&body)
        .send()
        .await
        .expect("put source");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    eventually(30, "both instances pulling", || async {
        let Ok(st) = js.js.get_stream(&js.stream).await else {
            return false;
        };
        match st.get_consumer::<pull::Config>("shared").await {
            Ok(mut c) => c.info().await.is_ok_and(|i| i.num_waiting >= 2),
            Err(_) => false,
        }
    })
    .await;
    (db, http, a, b)
}

/// How many levels the SKUs matching `pattern` have, and their sum.
async fn levels_of(db: &common::TestDb, pattern: &str) -> (i64, i64) {
    let pool = sqlx::PgPool::connect(&db.url).await.expect("pg");
    let found = sqlx::query_as(
        "SELECT count(*), COALESCE(sum(l.available), 0)::bigint FROM stock_levels l \
         JOIN variants v ON v.id = l.variant_id WHERE v.sku LIKE $1",
    )
    .bind(pattern)
    .fetch_one(&pool)
    .await
    .expect("levels");
    pool.close().await;
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_on_one_postgres_share_a_jetstream_consumer() {
    const N: usize = 400;
    let js = Js::new().await;
    let (db, http, (_a, base_a), (_b, base_b)) = two_instances_sharing(&js, &[]).await;
    for i in 0..N {
        js.publish(json!({"sku": format!("P-{i}"), "qty": (i % 5 + 1) as i64, "seq": 1}))
            .await;
    }
    let applied = |base: String| {
        let http = http.clone();
        async move { metric(&metrics_page(&http, &base).await, APPLIED) as usize }
    };
    eventually(60, "every update applied", || async {
        applied(base_a.clone()).await + applied(base_b.clone()).await >= N
    })
    .await;
    // Settled: nothing pending, nothing applied twice.
    js.settled("shared", 10).await;
    let (a, b) = (applied(base_a.clone()).await, applied(base_b.clone()).await);
    assert_eq!(a + b, N, "each update applied once in total (a {a}, b {b})");
    assert!(
        a > 0 && b > 0,
        "both instances did some of the work: a {a}, b {b}"
    );
    let want: i64 = (0..N).map(|i| (i % 5 + 1) as i64).sum();
    assert_eq!(levels_of(&db, "P-%").await, (N as i64, want));
    drop(_a);
    drop(_b);
    db.cleanup().await;
    js.drop_stream().await;
}

fn signal(server: &Serve, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &server.0.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_held_by_a_frozen_instance_are_redelivered_to_the_other_and_applied_once() {
    const N: usize = 200;
    let js = Js::new().await;
    let (db, http, (a, base_a), (b, base_b)) =
        two_instances_sharing(&js, &[("ack_wait_secs", json!(2))]).await;
    // A freezes with its pull requests open: what the server hands it sits
    // unacknowledged until ack_wait lapses, then goes to B.
    signal(&a, "-STOP");
    for i in 0..N {
        js.publish(json!({"sku": format!("F-{i}"), "qty": (i % 3 + 1) as i64, "seq": 1}))
            .await;
    }
    let applied = |base: String| {
        let http = http.clone();
        async move { metric(&metrics_page(&http, &base).await, APPLIED) as usize }
    };
    eventually(60, "B applied everything", || async {
        applied(base_b.clone()).await >= N
    })
    .await;
    let page_b = metrics_page(&http, &base_b).await;
    assert!(
        metric(&page_b, REDELIVERED) >= 1.0,
        "A held some messages, redelivered to B: {page_b}"
    );
    // A wakes up and deals with what it held: B applied all of it already.
    signal(&a, "-CONT");
    js.settled("shared", 30).await;
    let (got_a, got_b) = (applied(base_a.clone()).await, applied(base_b.clone()).await);
    assert_eq!(got_a + got_b, N, "each applied once: a {got_a}, b {got_b}");
    let want: i64 = (0..N).map(|i| (i % 3 + 1) as i64).sum();
    assert_eq!(levels_of(&db, "F-%").await, (N as i64, want));
    drop(a);
    drop(b);
    db.cleanup().await;
    js.drop_stream().await;
}
