//! `restock demo`: the whole loop on a SQLite file, through the same HTTP API a
//! merchant and a storefront use, with the real dispatch workers writing `.eml`
//! files to `./outbox`.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

const DEMO_DIR: &str = "restock-demo";

pub async fn run() -> anyhow::Result<()> {
    let started = std::time::SystemTime::now();
    // The demo owns restock-demo/; start it clean so every run tells the same story.
    let _ = std::fs::remove_dir_all(DEMO_DIR);
    let admin_token = crate::util::random_token(16);
    let config = Config::from_defaults_and(&format!(
        "admin_token = \"{admin_token}\"\n\
         [database]\nurl = \"sqlite://{DEMO_DIR}/restock.db\"\n\
         [email]\ntransport = \"file\"\nfile_dir = \"outbox\"\nfrom = \"Demo Outfitters <alerts@demo-outfitters.example>\"\n\
         [dispatch]\npoll_interval_ms = 200\n"
    ))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut config = config;
    config.public_url = format!("http://{addr}");
    let app = crate::build(config).await?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(crate::run(app, listener, shutdown.clone()));
    let base = format!("http://{addr}");
    let http = crate::tls::http_client_builder().build()?;
    let result = story(&http, &base, &admin_token, started).await;
    shutdown.cancel();
    server.await??;
    result
}

async fn call(req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let resp = req.send().await?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("HTTP {status}: {body}");
    }
    Ok(body)
}

async fn story(
    http: &reqwest::Client,
    base: &str,
    admin_token: &str,
    started: std::time::SystemTime,
) -> anyhow::Result<()> {
    println!("Restock demo — server at {base}, database {DEMO_DIR}/restock.db\n");
    let store = call(
        http.post(format!("{base}/admin/stores"))
            .bearer_auth(admin_token)
            .json(&json!({
                "name": "Demo Outfitters", "slug": "demo-outfitters",
                "allowed_origins": ["https://demo-outfitters.example"]
            })),
    )
    .await?;
    let key = store["api_key"].as_str().context("api key")?.to_string();
    let pk = store["publishable_key"]
        .as_str()
        .context("publishable key")?
        .to_string();
    println!(
        "1. Created store 'Demo Outfitters' (API key {}…)",
        &key[..10]
    );

    let products = [
        json!({"id": "trail-runner", "title": "Trail Runner", "description": "Light, grippy shoes for muddy trails.",
               "image_url": "https://demo-outfitters.example/img/trail-runner.jpg",
               "url": "https://demo-outfitters.example/products/trail-runner", "category": "shoes",
               "price": 12900, "currency": "EUR", "variants": [
                 {"sku": "TR-42-RED", "title": "42 / Red", "options": {"size": "42", "colour": "Red"},
                  "url": "https://demo-outfitters.example/products/trail-runner?variant=42-red"},
                 {"sku": "TR-43-RED", "title": "43 / Red", "options": {"size": "43", "colour": "Red"},
                  "url": "https://demo-outfitters.example/products/trail-runner?variant=43-red"}]}),
        // A scarce item: released in waves of one shopper per unit, members of the
        // "vip" tier first and alone for the first two seconds.
        json!({"id": "rain-shell", "title": "Rain Shell", "description": "Packable waterproof jacket.",
               "image_url": "https://demo-outfitters.example/img/rain-shell.jpg",
               "url": "https://demo-outfitters.example/products/rain-shell", "category": "jackets",
               "price": 8900, "currency": "EUR",
               "release": {"release": {"mode": "waves", "shoppers_per_unit": 1, "interval_secs": 2},
                           "early_access": {"tiers": ["vip"], "window_secs": 2}},
               "variants": [
                 {"sku": "RS-M-BLUE", "title": "M / Blue", "options": {"size": "M", "colour": "Blue"}, "price": 7900},
                 {"sku": "RS-L-BLUE", "title": "L / Blue", "options": {"size": "L", "colour": "Blue"}}]}),
        json!({"id": "wool-socks", "title": "Merino Socks", "description": "Warm and itch-free.",
               "url": "https://demo-outfitters.example/products/wool-socks", "category": "accessories",
               "price": 1900, "currency": "EUR", "variants": [{"sku": "WS-ONE", "title": "One size"}]}),
    ];
    for p in &products {
        let id = p["id"].as_str().context("id")?;
        let mut body = p.clone();
        if let Some(o) = body.as_object_mut() {
            o.remove("id");
        }
        call(
            http.put(format!("{base}/v1/products/{id}"))
                .bearer_auth(&key)
                .json(&body),
        )
        .await?;
    }
    println!("2. Loaded the catalog: 3 products, 5 variants");

    let stock = |items: Value| {
        http.post(format!("{base}/v1/stock"))
            .bearer_auth(&key)
            .json(&json!({ "items": items }))
    };
    call(stock(json!([
        {"sku": "TR-42-RED", "available": 4}, {"sku": "TR-43-RED", "available": 6},
        {"sku": "RS-M-BLUE", "available": 2}, {"sku": "RS-L-BLUE", "available": 5}, {"sku": "WS-ONE", "available": 30}
    ])))
    .await?;
    call(stock(
        json!([{"sku": "TR-42-RED", "available": 0}, {"sku": "RS-M-BLUE", "available": 0}]),
    ))
    .await?;
    println!(
        "3. Stock-out: TR-42-RED (Trail Runner 42 / Red) and RS-M-BLUE (Rain Shell M / Blue) sold out"
    );

    let signups = [
        ("ana@example.com", "TR-42-RED"),
        ("ben@example.com", "TR-42-RED"),
        ("chloe@example.com", "RS-M-BLUE"),
        ("dev@example.com", "RS-M-BLUE"),
        ("erin@example.com", "RS-M-BLUE"),
        ("finn@example.com", "RS-M-BLUE"),
        ("ANA@Example.com", "TR-42-RED"),
    ];
    println!(
        "4. Shoppers signed up on the storefront (one person per address, whatever its case):"
    );
    for (email, sku) in &signups {
        let r = call(
            http.post(format!("{base}/storefront/v1/{pk}/subscriptions"))
                .header("Origin", "https://demo-outfitters.example")
                .json(&json!({"email": email, "sku": sku})),
        )
        .await?;
        println!(
            "   {email} asked to be notified about {sku} -> {}",
            r["status"].as_str().unwrap_or("?")
        );
    }
    let finn = call(
        http.get(format!("{base}/v1/shoppers?email=finn@example.com"))
            .bearer_auth(&key),
    )
    .await?;
    call(
        http.patch(format!("{base}/v1/shoppers/{}", finn["id"]))
            .bearer_auth(&key)
            .json(&json!({"tier": "vip"})),
    )
    .await?;
    println!("   finn@example.com is a VIP (tier \"vip\", set through the API)");

    let r = call(stock(json!([
        {"sku": "TR-42-RED", "available": 12, "location": "warehouse-1"},
        {"sku": "RS-M-BLUE", "available": 2, "available_until": "2030-12-31T23:00:00Z"}
    ])))
    .await?;
    println!("5. Restock, pushed through the stock API (planning runs in the workers):");
    let mut rain = 0;
    for rs in r["restocks"].as_array().into_iter().flatten() {
        let sku = rs["sku"].as_str().unwrap_or("?");
        let how = if sku == "RS-M-BLUE" {
            rain = rs["restock_id"].as_i64().unwrap_or(0);
            "released in waves of 1 shopper per unit, VIPs alone for the first 2 s"
        } else {
            "released to everyone at once"
        };
        println!("   {sku} is back ({} units): {how}", rs["quantity"]);
    }

    // The rain shell's waves, as the workers release them.
    let wave_line = |n: i64, who: Vec<String>, note: &str| {
        println!("   wave {n}{note}: {}", who.join(", "));
    };
    let recipients_of_wave = |wave: i64| {
        let http = http.clone();
        let key = key.clone();
        let base = base.to_string();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            loop {
                let sent = call(
                    http.get(format!("{base}/v1/notifications?state=done"))
                        .bearer_auth(&key),
                )
                .await?;
                let mut who: Vec<String> = sent["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|n| n["sku"] == "RS-M-BLUE" && n["wave"] == wave)
                    .filter_map(|n| n["recipient"].as_str().map(str::to_string))
                    .collect();
                let e = call(
                    http.get(format!("{base}/v1/restocks/{rain}"))
                        .bearer_auth(&key),
                )
                .await?;
                let planned_in_wave = e["wave_list"]
                    .as_array()
                    .and_then(|w| w.iter().find(|w| w["wave"] == wave))
                    .and_then(|w| w["planned"].as_i64());
                if planned_in_wave.is_some_and(|p| p > 0 && who.len() as i64 == p) {
                    who.sort();
                    return Ok::<_, anyhow::Error>(who);
                }
                if tokio::time::Instant::now() > deadline {
                    bail!("wave {wave} was not released in 15 s: {e}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    println!("6. RS-M-BLUE, 2 units, 4 waiting:");
    wave_line(
        1,
        recipients_of_wave(1).await?,
        " (early access: only VIPs, though there is room for 2)",
    );
    wave_line(
        2,
        recipients_of_wave(2).await?,
        " (2 s later: 1 shopper per unit still available)",
    );
    call(stock(json!([{"sku": "RS-M-BLUE", "available": 0}]))).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let e = call(
            http.get(format!("{base}/v1/restocks/{rain}"))
                .bearer_auth(&key),
        )
        .await?;
        if e["plan_state"] == "sold_out" {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the sell-out did not stop the waves: {e}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "   then it sold out: the next wave stops, erin@example.com keeps her place for the next restock"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let o = call(http.get(format!("{base}/v1/outbox")).bearer_auth(&key)).await?;
        if o["pending"] == 0 && o["running"] == 0 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("delivery did not finish in 15 s: {o}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = call(
        http.get(format!("{base}/v1/notifications?state=done"))
            .bearer_auth(&key),
    )
    .await?;
    println!("7. Delivered by the dispatch workers:");
    for n in sent["items"].as_array().into_iter().flatten() {
        println!(
            "   {:<20} notified about {}",
            n["recipient"].as_str().unwrap_or("?"),
            n["sku"].as_str().unwrap_or("?")
        );
    }
    // This run's messages only; the folder keeps earlier runs' too.
    let mut files: Vec<_> = std::fs::read_dir("outbox")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .filter(|e| {
                    e.metadata()
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t >= started)
                })
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let cwd = std::env::current_dir()?;
    println!(
        "\nThe messages are readable .eml files in {}/outbox:",
        cwd.display()
    );
    for f in &files {
        println!("   {}", f.display());
    }
    println!("\nRun `restock serve` to run it for real; the API is described at /openapi.json.");
    Ok(())
}
