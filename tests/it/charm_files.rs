//! metadata.yaml, actions.yaml and config.yaml held against the contract and the code.

use serde_json::Value;

use crate::juju::repo;

fn yaml(name: &str) -> Value {
    let text = std::fs::read_to_string(repo().join(name)).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn juju_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[test]
fn actions_yaml() {
    let actions = yaml("actions.yaml");
    let actions = actions.as_object().unwrap();
    let names: Vec<&str> = actions.keys().map(String::as_str).collect();
    let mut expected = nlm::actions::ACTIONS.to_vec();
    expected.sort();
    let mut got = names.clone();
    got.sort();
    assert_eq!(got, expected);
    for (name, spec) in actions {
        assert!(juju_name(name), "{name}");
        assert_eq!(
            spec["parallel"],
            Value::Bool(true),
            "{name} must be parallel"
        );
        assert_eq!(spec["additionalProperties"], Value::Bool(false), "{name}");
        assert!(
            spec["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{name}"
        );
        if let Some(params) = spec.get("params").and_then(Value::as_object) {
            for (p, schema) in params {
                assert!(juju_name(p), "{name}.{p} must be hyphenated lowercase");
                // A type, or a list of types (what `juju run` may send:
                // block-migration=true is a YAML boolean, vm=12345 an integer).
                let typed = schema["type"].is_string()
                    || schema["type"]
                        .as_array()
                        .is_some_and(|ts| !ts.is_empty() && ts.iter().all(Value::is_string));
                assert!(typed, "{name}.{p} needs a type");
                assert!(
                    schema["description"].is_string(),
                    "{name}.{p} needs a description"
                );
            }
        }
    }
    // Parameters whose default comes from config have no schema default.
    for (action, param) in [
        ("evacuate", "max-concurrent"),
        ("evacuate", "block-migration"),
        ("migrate-vm", "block-migration"),
    ] {
        assert!(
            actions[action]["params"][param].get("default").is_none(),
            "{action}.{param}"
        );
    }
    assert_eq!(actions["migrate-vm"]["required"], serde_json::json!(["vm"]));
    assert_eq!(
        actions["force-complete"]["required"],
        serde_json::json!(["vm"])
    );
    assert_eq!(
        actions["evacuate"]["params"]["max-concurrent"]["minimum"],
        1
    );
}

#[test]
fn config_yaml_defaults_are_valid_config() {
    let config = yaml("config.yaml");
    let options = config["options"].as_object().unwrap();
    let expected = [
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
        "reset-after-abort",
        "max-nodes-in-maintenance",
        "max-nodes-in-maintenance-per-az",
        "default-policy",
        "drain-order",
    ];
    let mut got: Vec<&str> = options.keys().map(String::as_str).collect();
    got.sort();
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(got, want);
    let defaults: std::collections::BTreeMap<String, Value> = options
        .iter()
        .map(|(k, v)| (k.clone(), v["default"].clone()))
        .collect();
    let cfg = nlm::config::Config::from_values(&defaults).expect("defaults validate");
    assert_eq!(cfg.stall_timeout, 300);
    for (k, v) in options {
        assert!(
            ["string", "int", "float", "boolean"].contains(&v["type"].as_str().unwrap()),
            "{k}"
        );
    }
}

#[test]
fn metadata_yaml() {
    let meta = yaml("metadata.yaml");
    assert_eq!(meta["name"], "nova-live-migration");
    assert_eq!(meta["subordinate"], true);
    assert_eq!(meta["requires"]["juju-info"]["scope"], "container");
    assert_eq!(meta["requires"]["juju-info"]["interface"], "juju-info");
    assert_eq!(
        meta["requires"]["identity-credentials"]["interface"],
        "keystone-credentials"
    );
    assert_eq!(meta["requires"]["identity-credentials"]["limit"], 1);
    assert!(meta["summary"].as_str().unwrap().len() <= 78);
}

/// charmcraft.yaml builds the same charm as charm/pack: checked with
/// charmcraft's own models (charm/check-charmcraft installs charmcraft from
/// PyPI) and, always, by hand against what a charmcraft build can see.
#[test]
fn charmcraft_yaml_builds_the_same_charm() {
    let cc = yaml("charmcraft.yaml");
    assert_eq!(cc["type"], "charm");
    // name, summary, description come from metadata.yaml; actions and
    // config from their files: charmcraft refuses them in both places.
    for k in [
        "name",
        "summary",
        "description",
        "actions",
        "config",
        "requires",
        "subordinate",
    ] {
        assert!(cc.get(k).is_none(), "charmcraft.yaml must not repeat {k}");
    }
    // The bases charm/pack lists in manifest.yaml, one platform each.
    let platforms: Vec<&str> = cc["platforms"]
        .as_object()
        .expect("platforms")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(platforms, vec!["ubuntu@22.04:amd64", "ubuntu@24.04:amd64"]);
    let pack = std::fs::read_to_string(repo().join("charm/pack")).unwrap();
    for channel in ["22.04", "24.04"] {
        assert!(pack.contains(&format!("channel: '{channel}'")), "{channel}");
    }
    // The binary from the crate in the project dir, with a pinned toolchain
    // at least Cargo.toml's rust-version, as dispatch.
    let d = &cc["parts"]["dispatch"];
    assert_eq!(d["plugin"], "rust");
    assert_eq!(
        d["source"], ".",
        "a build copies only the project directory"
    );
    let cargo = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let need = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("rust-version");
    let ver = |s: &str| -> Vec<u32> { s.split('.').map(|x| x.parse().unwrap()).collect() };
    let channel = d["rust-channel"].as_str().expect("rust-channel pinned");
    assert!(
        ver(channel) >= ver(&need),
        "rust-channel {channel} < {need}"
    );
    assert_eq!(d["organize"]["bin/nova-live-migration"], "dispatch");
    assert_eq!(d["prime"], serde_json::json!(["dispatch"]));
    assert_eq!(
        cc["parts"]["readme"]["prime"],
        serde_json::json!(["README.md"])
    );

    let out = std::process::Command::new(repo().join("charm/check-charmcraft"))
        .output()
        .expect("charm/check-charmcraft");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    match out.status.code() {
        Some(0) => eprintln!("{}", stdout.trim()),
        Some(3) => eprintln!(
            "charmcraft could not be installed from PyPI: charmcraft.yaml checked by hand only ({})",
            stderr.trim()
        ),
        _ => panic!("charmcraft refuses charmcraft.yaml:\n{stdout}{stderr}"),
    }
}
