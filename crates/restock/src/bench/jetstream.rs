//! `restock bench --jetstream`: stock updates published to a JetStream stream, then
//! consumed and applied by Restock's JetStream source (the real runner, server and
//! database), beside a minimal async-nats pull consumer that only reads and acks
//! the same stream to the end, in the same run.

use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;

use super::intake::{VARIANTS, seed_catalog_keyed, sku};
use super::{BenchArgs, BenchServer, fresh_db};
use crate::channels::{EmailChannel, MemoryOutbox};
use crate::config::Config;
use crate::util::Clock;

pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let n = args.messages as usize;
    let client = async_nats::connect(args.jetstream_url.as_str())
        .await
        .with_context(|| format!("connecting to {}", args.jetstream_url))?;
    let js = jetstream::new(client);
    let name = format!(
        "BENCH_{}",
        crate::util::random_token(6).replace(['-', '_'], "x")
    );
    let subject = name.to_lowercase();
    js.create_stream(jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("{subject}.>")],
        ..Default::default()
    })
    .await?;
    let result = measure(args, &js, &name, &subject, n).await;
    let _ = js.delete_stream(&name).await;
    result
}

async fn measure(
    args: &BenchArgs,
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
    n: usize,
) -> anyhow::Result<()> {
    println!("\nJetStream: {n} stock updates over {VARIANTS} variants (sequence rising per SKU)");
    // Publish, a window of acknowledgements in flight.
    let start = Instant::now();
    let mut acks = futures::stream::FuturesUnordered::new();
    for i in 0..n {
        let body = serde_json::json!({
            "sku": sku(i % VARIANTS),
            "available": (i / VARIANTS) as i64 % 7,
            "sequence": i as i64,
        });
        let ack = js
            .publish(format!("{subject}.stock"), body.to_string().into())
            .await?;
        acks.push(std::future::IntoFuture::into_future(ack));
        if acks.len() >= 2_000 {
            acks.next().await.context("ack")??;
        }
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "  {:<38} {:>9.0} msg/s   ({secs:.2} s)",
        "publish (acked)",
        n as f64 / secs
    );

    // The floor: a minimal pull consumer that reads and acks every message.
    let st = js.get_stream(stream).await?;
    let raw = st
        .create_consumer(pull::Config {
            durable_name: Some("raw".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let start = Instant::now();
    let mut messages = raw
        .stream()
        .max_messages_per_batch(args.jetstream_batch)
        .messages()
        .await?;
    let mut seen = 0;
    while seen < n {
        let m = messages
            .next()
            .await
            .context("stream ended")?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        seen += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "  {:<38} {:>9.0} msg/s   ({secs:.2} s)",
        "raw async-nats consumer (read + ack)",
        n as f64 / secs
    );
    drop(messages);

    // Restock: the configured source, run by the intake runner of a real server.
    let mut b = fresh_db(&args.db).await?;
    let (_, api_key) = seed_catalog_keyed(&b.db, "jetstream").await?;
    let app = crate::App::new(
        Config::from_defaults_and("[dispatch]\nenabled = false\n[intake]\ntick_ms = 50")?,
        b.db.clone(),
        Clock::System,
        EmailChannel::Memory(MemoryOutbox::default()),
    )
    .await?;
    let server = BenchServer::start(&app, &mut b).await?;
    let addr = server.addr;
    let start = Instant::now();
    let resp = crate::tls::http_client_builder()
        .build()?
        .put(format!("http://{addr}/v1/sources/bench"))
        .bearer_auth(&api_key)
        .json(&serde_json::json!({
            "kind": "jetstream",
            "config": {
                "url": args.jetstream_url,
                "stream": stream,
                "durable": "restock",
                "batch": args.jetstream_batch,
            }
        }))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "PUT source: {}", resp.text().await?);
    let mut consumer: jetstream::consumer::Consumer<pull::Config> = loop {
        if let Ok(c) = st.get_consumer("restock").await {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    loop {
        let info = consumer.info().await?;
        if info.delivered.stream_sequence >= n as u64
            && info.num_ack_pending == 0
            && info.num_pending == 0
        {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(1800),
            "Restock did not finish within 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let count = |outcome: &str| {
        app.metrics
            .source_items
            .with_label_values(&["jetstream", outcome])
            .get()
    };
    let (applied, stale) = (count("applied"), count("stale"));
    println!(
        "  {:<38} {:>9.0} msg/s   ({secs:.2} s from PUT /v1/sources; {applied} applied, {stale} stale; batch {})",
        format!("Restock ({})", app.db.backend()),
        n as f64 / secs,
        args.jetstream_batch
    );
    server.stop().await?;
    b.drop_schema().await
}
