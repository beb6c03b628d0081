//! For operators: the systemd unit is valid, `restock backup` copies a live SQLite
//! database, `restock secrets rotate` re-seals with a new key, and the LICENSE
//! matches Cargo.toml.

use std::process::{Command, Output};

fn restock(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_restock"));
    cmd.args(args).current_dir(dir).env(
        "RESTOCK_DATABASE__URL",
        format!("sqlite://{}/r.db", dir.display()),
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run restock")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

#[test]
fn backup_copies_a_sqlite_database_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().expect("temp dir");
    ok(&restock(
        dir.path(),
        &["store", "create", "--name", "Shop", "--slug", "shop"],
        &[],
    ));
    let to = dir.path().join("backup.db");
    let out = ok(&restock(
        dir.path(),
        &["backup", "--to", to.to_str().expect("utf8")],
        &[],
    ));
    assert!(out.contains("backup written"), "{out}");
    // The copy is a database of its own with the store in it.
    let listed = Command::new(env!("CARGO_BIN_EXE_restock"))
        .args(["store", "list"])
        .env(
            "RESTOCK_DATABASE__URL",
            format!("sqlite://{}", to.display()),
        )
        .output()
        .expect("run");
    assert!(ok(&listed).contains("shop"));
    let again = restock(
        dir.path(),
        &["backup", "--to", to.to_str().expect("utf8")],
        &[],
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
}

#[test]
fn secrets_rotate_reseals_with_the_new_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    ok(&restock(
        dir.path(),
        &[
            "store",
            "create",
            "--name",
            "Shop",
            "--slug",
            "shop",
            "--shopify-secret",
            "shpss_hush",
        ],
        &[("RESTOCK_SECRETS__KEY", KEY_A)],
    ));
    let db = std::fs::read(dir.path().join("r.db")).expect("db");
    let wal = std::fs::read(dir.path().join("r.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !String::from_utf8_lossy(bytes).contains("shpss_hush"),
            "secret in clear"
        );
    }
    // Rotating to the new key, the old one still listed to open what it sealed...
    let out = ok(&restock(
        dir.path(),
        &["secrets", "rotate"],
        &[
            ("RESTOCK_SECRETS__KEY", KEY_B),
            ("RESTOCK_SECRETS__PREVIOUS_KEYS", &format!("[\"{KEY_A}\"]")),
        ],
    ));
    // The Shopify secret (the CLI made no link-signing key yet; rotate creates it
    // sealed with the current key).
    assert!(out.contains("1 secret(s) re-sealed"), "{out}");
    // ...and after rotation nothing needs the old key.
    let out = ok(&restock(
        dir.path(),
        &["secrets", "rotate"],
        &[("RESTOCK_SECRETS__KEY", KEY_B)],
    ));
    assert!(out.contains("0 secret(s) re-sealed"), "{out}");
    let wrong = restock(
        dir.path(),
        &["secrets", "rotate"],
        &[("RESTOCK_SECRETS__KEY", KEY_A)],
    );
    assert!(
        !wrong.status.success(),
        "opening with a key that did not seal it fails"
    );
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../packaging/restock.service"
    ))
    .expect("unit");
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed; skipping the unit check");
        return;
    };
    assert!(probe.status.success());
    // Verify the unit as shipped, pointing ExecStart at the binary under test.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("restock.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/restock", env!("CARGO_BIN_EXE_restock")),
    )
    .expect("write");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("restock.service"))
        .collect();
    assert!(out.status.success() && problems.is_empty(), "{stderr}");
}

#[test]
fn license_matches_cargo_toml() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let cargo = std::fs::read_to_string(format!("{root}/Cargo.toml")).expect("Cargo.toml");
    assert!(cargo.contains("license = \"Apache-2.0\""));
    let license = std::fs::read_to_string(format!("{root}/LICENSE")).expect("LICENSE");
    assert!(license.contains("Apache License") && license.contains("Version 2.0, January 2004"));
}
