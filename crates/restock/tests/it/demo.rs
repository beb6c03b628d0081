//! The README's first command: `restock demo` runs the whole loop on SQLite with no
//! setup and leaves readable messages in ./outbox.

#[test]
fn demo_runs_the_loop_and_writes_readable_messages() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_restock"))
        .arg("demo")
        .current_dir(dir.path())
        .env_remove("RESTOCK_DATABASE__URL")
        .output()
        .expect("run restock demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "ana@example.com      notified about TR-42-RED",
        "ben@example.com      notified about TR-42-RED",
        "chloe@example.com    notified about RS-M-BLUE",
        "dev@example.com      notified about RS-M-BLUE",
        "finn@example.com     notified about RS-M-BLUE",
        "ANA@Example.com asked to be notified about TR-42-RED -> merged",
        "TR-42-RED is back (12 units): released to everyone at once",
        "RS-M-BLUE is back (2 units): released in waves of 1 shopper per unit",
        "wave 1 (early access: only VIPs, though there is room for 2): finn@example.com",
        "wave 2 (2 s later: 1 shopper per unit still available): chloe@example.com, dev@example.com",
        "erin@example.com keeps her place",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
    assert!(
        !stdout.contains("erin@example.com     notified"),
        "{stdout}"
    );
    let mut recipients: Vec<String> = std::fs::read_dir(dir.path().join("outbox"))
        .expect("outbox folder")
        .map(|e| std::fs::read(e.expect("entry").path()).expect("read"))
        .map(|raw| {
            let msg = mail_parser::MessageParser::default()
                .parse(&raw)
                .expect("valid MIME");
            assert!(msg.body_html(0).is_some() && msg.body_text(0).is_some());
            msg.to()
                .and_then(|a| a.first())
                .and_then(|a| a.address())
                .expect("to")
                .to_string()
        })
        .collect();
    recipients.sort();
    assert_eq!(
        recipients,
        [
            "ana@example.com",
            "ben@example.com",
            "chloe@example.com",
            "dev@example.com",
            "finn@example.com"
        ]
    );
    assert!(
        dir.path().join("restock-demo/restock.db").exists(),
        "the demo runs on a SQLite file"
    );
}
