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
                assert!(schema["type"].is_string(), "{name}.{p} needs a type");
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
