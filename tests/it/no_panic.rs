//! Invariant I4 (issue 12): nothing from outside — argv, config, relation
//! data, action params, the journal on disk — can panic the binary. Each
//! parser is fed arbitrary input (proptest) and must return a value or an
//! error. The parsers of network input (HTTP headers, error and success
//! bodies) are covered by the unit property tests in `src/openstack/`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use nlm::paths::Paths;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Arbitrary JSON: scalars (odd numbers and strings included), nested
/// arrays and objects.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        Just(json!(u64::MAX)),
        Just(json!(-0.0)),
        Just(json!(1e308)),
        ".{0,40}".prop_map(Value::String),
        "[a-z0-9 ,.:\\-_\\[\\]]{0,30}".prop_map(Value::String),
        Just(Value::String("\u{0}\u{7f}\u{feff}\u{10ffff}".into())),
        Just(Value::String("界".repeat(300))),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A map whose keys are mostly the names a parser reads.
fn keyed(keys: &'static [&'static str]) -> impl Strategy<Value = BTreeMap<String, Value>> {
    let key = prop_oneof![
        4 => proptest::sample::select(keys).prop_map(str::to_string),
        1 => ".{0,16}",
    ];
    proptest::collection::btree_map(key, any_json(), 0..keys.len() + 2)
}

const CONFIG_KEYS: &[&str] = &[
    "endpoint-interface",
    "region",
    "ssl-ca",
    "nova-host",
    "max-concurrent-migrations",
    "block-migration",
    "migration-timeout",
    "stall-timeout",
    "timeout-action",
    "force-complete-at",
    "retries",
    "poll-interval",
    "log-level",
];

const PARAM_KEYS: &[&str] = &[
    "vm",
    "target-host",
    "dry-run",
    "max-concurrent",
    "block-migration",
    "include-stopped",
    "exclude",
    "force",
];

/// Strings of every kind: ASCII that looks like the expected values, any
/// Unicode, and very long ones.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9.:\\[\\]_\\-/ ]{0,40}",
        ".{0,60}",
        Just("x".repeat(5000)),
        Just("[".repeat(300)),
    ]
}

/// The journal reader under test (re-point here when it moves, e.g. to
/// `nlm::state`).
fn journal_load(dir: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    let path = dir.join("journal.json");
    std::fs::write(&path, bytes).unwrap();
    nlm::state::Journal::new(&path)
        .load::<nlm::drain::RunRecord>()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn config_from_any_values(raw in keyed(CONFIG_KEYS)) {
        match nlm::config::Config::from_values(&raw) {
            Ok(_) => {}
            Err(e) => prop_assert!(!e.0.is_empty() && e.to_string().len() < 8000, "{}", e),
        }
    }

    #[test]
    fn action_params_from_any_values(raw in keyed(PARAM_KEYS), migrate_vm in any::<bool>()) {
        let kind = if migrate_vm { nlm::drain::Kind::MigrateVm } else { nlm::drain::Kind::Evacuate };
        if let Err(e) = nlm::drain::Params::from_action(kind, &raw) {
            prop_assert!(!e.is_empty());
        }
    }

    #[test]
    fn relation_data_of_any_text(
        values in proptest::collection::btree_map(
            proptest::sample::select(
                nlm::credentials::REQUIRED
                    .iter()
                    .chain(nlm::credentials::OPTIONAL.iter())
                    .copied()
                    .collect::<Vec<_>>(),
            )
            .prop_map(str::to_string),
            any_text(),
            0..17,
        ),
    ) {
        let _ = nlm::credentials::missing_keys(&values);
        if let Err(e) = nlm::credentials::validate("keystone/0", &values) {
            prop_assert!(!e.is_empty() && e.len() < 2000, "{}", e);
        }
        // The client's reading of the same data.
        let _ = nlm::openstack::AuthConfig::from_relation(
            &values,
            nlm::openstack::Interface::Internal,
            None,
            None,
        );
    }

    #[test]
    fn journal_of_any_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        state in any_json(),
        version in prop_oneof![Just(json!(1)), any_json()],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let _ = journal_load(dir.path(), &bytes);
        let doc = serde_json::to_vec(&json!({"version": version, "state": state})).unwrap();
        let _ = journal_load(dir.path(), &doc);
    }

    #[test]
    fn cli_with_any_args(args in proptest::collection::vec(
        prop_oneof![
            proptest::sample::select(vec!["status", "abort", "--vm", "--json", "--help", "-h", "help", "--version", "version", ""]).prop_map(str::to_string),
            ".{0,20}",
        ],
        0..5,
    )) {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths_in(dir.path());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = nlm::cli::main(&args, &paths, &mut out, &mut err);
        prop_assert!((0..=255).contains(&code), "{}", code);
    }
}

fn paths_in(dir: &std::path::Path) -> Paths {
    Paths {
        cli_link: dir.join("cli"),
        state_dir: dir.join("state"),
        nova_conf: dir.join("nova.conf"),
        nova_compute_log: dir.join("nova-compute.log"),
        virsh: dir.join("virsh"),
    }
}

#[test]
fn deep_or_huge_journals_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    for doc in [
        format!(
            "{{\"version\":1,\"state\":{}1{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
        format!("{{\"version\":1,\"state\":{}}}", "{\"a\":".repeat(50_000)),
        "{\"version\":18446744073709551616,\"state\":{}}".to_string(),
        "{\"version\":-1}".to_string(),
        "\u{feff}{\"version\":1}".to_string(),
    ] {
        let e = journal_load(dir.path(), doc.as_bytes()).unwrap_err();
        assert!(e.contains("move it aside"), "{e}");
    }
    let e = journal_load(dir.path(), b"\xff\xfe{\"version\":1}").unwrap_err();
    assert!(e.contains("move it aside"), "{e}");
}

/// The binary itself, outside Juju, given an argument that is not UTF-8:
/// it refuses it (exit 2, saying what is wrong) instead of panicking in
/// `std::env::args`.
#[test]
fn a_non_utf8_argument_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec![OsStr::from_bytes(b"st\xffatus")],
        vec![
            OsStr::new("abort"),
            OsStr::new("--vm"),
            OsStr::from_bytes(b"vm-\xc3\x28"),
        ],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nova-live-migration"))
            .args(&args)
            .env_clear()
            .env("NLM_STATE_DIR", dir.path())
            .env("NLM_CLI_LINK", dir.path().join("cli"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stderr.contains("is not valid UTF-8"), "{stderr}");
        assert!(stderr.contains("--help"), "{stderr}");
    }
    // A valid one still works.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nova-live-migration"))
        .arg("--version")
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}
