//! The suite-wide secrets scan: the harness keeps what each run produced
//! under `$NLM_SUITE_OUT`, and `tests/scan-secrets` (run by tests/run after
//! the tests) finds a secret planted there, naming the file, never the
//! secret. Also: every test password is on the scan's list, and the charm's
//! credentials copy for the CLI is 0600 after a real run through dispatch.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::juju::{SIM_PASSWORD, charm_dir, keystone_bag, repo, sim_exe};

fn scan(args: &[&Path]) -> (i32, String) {
    let out = Command::new(repo().join("tests/scan-secrets"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn the_scan_list_names_every_test_password() {
    let text = std::fs::read_to_string(repo().join("tests/secrets.txt")).unwrap();
    let listed: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for p in [
        SIM_PASSWORD,
        crate::openstack_fake::PASSWORD,
        crate::openstack_fake::WRONG_PASSWORD,
        crate::drain_bad_input::WRONG_PASSWORD,
    ] {
        assert!(
            listed.contains(&p),
            "tests/secrets.txt lacks a test password"
        );
    }
}

#[test]
fn the_scanner_checks_itself() {
    let (code, text) = scan(&[Path::new("--self-check")]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("secrets scan self-check: ok"), "{text}");
}

/// The one directory a run kept under `out/runs`.
fn kept_run(out: &Path) -> PathBuf {
    let runs: Vec<PathBuf> = std::fs::read_dir(out.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs.into_iter().next().unwrap()
}

#[test]
fn each_run_is_kept_without_its_credentials_and_a_planted_secret_is_found() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // A password of its own, as the secret to look for.
    let marker = format!("nlm-scan-test-{:016x}", fastrand::u64(..));
    let marker_file = t.join("marker");
    std::fs::write(&marker_file, format!("{marker}\n")).unwrap();
    let mut bag = keystone_bag("127.0.0.1", "9");
    bag.insert("credentials_password".into(), marker.clone());
    std::fs::write(t.join("rel.json"), serde_json::to_string(&bag).unwrap()).unwrap();
    let state = t.join("state.json");
    let sim = |args: &[&str]| {
        let out = Command::new(sim_exe())
            .args(args)
            .env("NLM_SUITE_OUT", t.join("out"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "juju-sim {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let s = |p: PathBuf| p.display().to_string();
    sim(&[
        "new",
        &s(state.clone()),
        "--credentials",
        &s(t.join("rel.json")),
    ]);
    let state_dir = t.join("state");
    sim(&[
        "run",
        "--charm-dir",
        &s(charm_dir().to_path_buf()),
        "--state",
        &s(state.clone()),
        "--env",
        &format!("NLM_STATE_DIR={}", s(state_dir.clone())),
        "--env",
        &format!("NLM_NOVA_CONF={}", s(t.join("nova.conf"))),
        "--env",
        &format!("NLM_CLI_LINK={}", s(t.join("bin/nova-live-migration"))),
        "hooks/identity-credentials-relation-changed",
    ]);

    // The charm kept the CLI's copy of the credentials, root-only.
    let creds = state_dir.join(nlm::state::CLI_CREDENTIALS);
    let mode = std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", creds.display());

    // What the run produced was kept; the credentials copy was not.
    let out = t.join("out");
    let run = kept_run(&out);
    for f in ["outputs.json", "calls.json", "stdout", "stderr"] {
        assert!(run.join(f).is_file(), "{f} not kept");
    }
    assert!(run.join("state").is_dir());
    assert!(!run.join("state").join(nlm::state::CLI_CREDENTIALS).exists());
    let outputs: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("outputs.json")).unwrap()).unwrap();
    assert_eq!(
        outputs["state_not_kept"],
        serde_json::json!([nlm::state::CLI_CREDENTIALS])
    );
    assert_eq!(outputs["statuses"][0]["status"], "active", "{outputs:#}");
    let calls = std::fs::read_to_string(run.join("calls.json")).unwrap();
    assert!(calls.contains("status-set"), "{calls}");

    // Clean: the scan says so.
    let flags = [
        Path::new("--no-default-secrets"),
        Path::new("--secrets-file"),
    ];
    let (code, text) = scan(&[flags[0], flags[1], &marker_file, &out]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(", 0 hits (1 secrets)"), "{text}");

    // The file the harness leaves out does hold the secret: a scan of the
    // state dir itself finds it.
    let (code, text) = scan(&[flags[0], flags[1], &marker_file, &state_dir]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(&s(creds.clone())), "{text}");
    assert!(!text.contains(&marker));

    // A leak planted in a kept stderr is found and named, the secret is not printed.
    let stderr = run.join("stderr");
    let mut bytes = std::fs::read(&stderr).unwrap();
    bytes.extend_from_slice(format!("\u{1b}[31mpassword={marker}\n").as_bytes());
    std::fs::write(&stderr, bytes).unwrap();
    let (code, text) = scan(&[flags[0], flags[1], &marker_file, &out]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!("appears in {}", s(stderr.clone()))),
        "{text}"
    );
    assert!(text.contains(", 1 hits (1 secrets)"), "{text}");
    assert!(!text.contains(&marker));
}
