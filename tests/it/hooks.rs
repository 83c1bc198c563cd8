//! State in → event → state out, through the real dispatch binary.

use serde_json::json;

use crate::juju::{Sim, keystone_bag};

const NEEDS_RELATION: &str = "needs the identity-credentials relation to keystone";

#[test]
fn update_status_without_keystone_is_blocked_naming_the_relation() {
    let mut sim = Sim::new();
    let out = sim.hook("update-status");
    assert_eq!(out.exit_code, Some(0), "stderr: {}", out.stderr);
    let status = out.statuses.last().expect("a status");
    assert_eq!(status.status, "blocked");
    assert!(
        status.message.contains(NEEDS_RELATION),
        "{}",
        status.message
    );
    assert_eq!(
        out.call_lines(),
        vec![
            "config-get --format=json",
            "relation-ids identity-credentials --format=json",
            format!("status-set blocked -- {}", status.message).as_str(),
        ]
    );
}

#[test]
fn install_links_the_cli_and_remove_unlinks_it() {
    let mut sim = Sim::new();
    let link = sim.path("bin/nova-live-migration");
    let out = sim.hook("install");
    assert_eq!(out.exit_code, Some(0), "stderr: {}", out.stderr);
    let target = std::fs::read_link(&link).expect("CLI link");
    assert_eq!(target, crate::juju::charm_dir().join("dispatch"));
    assert_eq!(out.app_version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert!(
        out.juju_log
            .iter()
            .any(|l| l.level == "INFO" && l.message.contains("host CLI at")),
        "{:?}",
        out.juju_log
    );
    // The link runs the CLI.
    let help = std::process::Command::new(&link)
        .env_clear()
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("nova-live-migration abort [--vm X]"));

    let out = sim.hook("stop");
    assert_eq!(out.exit_code, Some(0));
    assert!(!link.exists() && std::fs::symlink_metadata(&link).is_err());
    sim.hook("install");
    assert!(std::fs::symlink_metadata(&link).is_ok());
    sim.hook("remove");
    assert!(std::fs::symlink_metadata(&link).is_err());
}

#[test]
fn remove_leaves_a_foreign_file_alone() {
    let mut sim = Sim::new();
    let link = sim.path("bin/nova-live-migration");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::fs::write(&link, "someone else's").unwrap();
    sim.hook("remove");
    assert_eq!(std::fs::read_to_string(&link).unwrap(), "someone else's");
}

#[test]
fn bad_config_blocks_naming_each_option_and_the_allowed_values() {
    let mut sim = Sim::new()
        .with_keystone(vec![("keystone/0", keystone_bag("127.0.0.1", "1"))])
        .config("endpoint-interface", json!("private"))
        .config("timeout-action", json!("kill"))
        .config("max-concurrent-migrations", json!(-2))
        .config("ssl-ca", json!("not base64!"));
    let out = sim.hook("config-changed");
    assert_eq!(out.exit_code, Some(0));
    let status = out.statuses.last().unwrap();
    assert_eq!(status.status, "blocked");
    for needle in [
        "endpoint-interface: \"private\" is not one of internal, public, admin",
        "timeout-action: \"kill\" is not one of abort, force-complete",
        "max-concurrent-migrations: -2 is out of range, allowed 0 to 64",
        "ssl-ca: is not valid base64",
    ] {
        assert!(
            status.message.contains(needle),
            "{needle} not in {}",
            status.message
        );
    }
    // Actions refuse to run and say why.
    let out = sim.action("evacuate", &["dry-run=true"]);
    let failed = out.action_failed.clone().expect("action-fail");
    assert!(failed.contains("endpoint-interface"), "{failed}");
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.action_results.get("summary"), Some(&failed));
}

#[test]
fn every_config_value_is_checked() {
    let cases = [
        ("endpoint-interface", json!("ADMIN")),
        ("block-migration", json!("maybe")),
        ("timeout-action", json!("")),
        ("force-complete-at", json!(101)),
        ("retries", json!(-1)),
        ("retries", json!(11)),
        ("stall-timeout", json!(-5)),
        ("migration-timeout", json!(-1)),
        ("poll-interval", json!(0.0)),
        ("poll-interval", json!(600.0)),
        ("log-level", json!("loud")),
        ("nova-host", json!("node 1;rm")),
        ("ssl-ca", json!("aGVsbG8=")),
    ];
    for (option, value) in cases {
        let mut sim = Sim::new()
            .with_keystone(vec![("keystone/0", keystone_bag("127.0.0.1", "1"))])
            .config(option, value.clone());
        let out = sim.hook("config-changed");
        let status = out.statuses.last().unwrap();
        assert_eq!(status.status, "blocked", "{option}={value}");
        assert!(
            status.message.contains(&format!("{option}:")),
            "{option}={value}: {}",
            status.message
        );
    }
}

#[test]
fn relation_joined_requests_the_user() {
    let mut sim = Sim::new().with_keystone(vec![]);
    let out = sim
        .run_env("hooks/identity-credentials-relation-joined", &[], vec![])
        .unwrap()
        .clone();
    assert_eq!(out.exit_code, Some(0), "{}", out.stderr);
    let rel = out
        .relations
        .iter()
        .find(|r| r.endpoint == "identity-credentials")
        .unwrap();
    assert_eq!(
        rel.local.get("username").map(String::as_str),
        Some("nova_live_migration")
    );
    let set = out
        .calls
        .iter()
        .find(|c| c.argv[0] == "relation-set")
        .expect("relation-set");
    assert_eq!(
        set.line(),
        "relation-set -r identity-credentials:5 --file -"
    );
    assert_eq!(
        set.stdin.as_deref(),
        Some(r#"{"username":"nova_live_migration"}"#)
    );
    // No keystone unit has answered yet.
    assert_eq!(out.statuses.last().unwrap().status, "waiting");
}

#[test]
fn credentials_states() {
    // Related, keystone's non-leader unit publishes nothing, the leader
    // only part of the data: waiting, naming what is missing.
    let mut partial = keystone_bag("127.0.0.1", "1");
    partial.remove("credentials_password");
    partial.remove("credentials_project_id");
    let mut sim = Sim::new().with_keystone(vec![
        (
            "keystone/0",
            [("private-address".to_string(), "10.0.0.8".to_string())].into(),
        ),
        ("keystone/1", partial),
    ]);
    let out = sim.hook("identity-credentials-relation-changed");
    let status = out.statuses.last().unwrap();
    assert_eq!(status.status, "waiting");
    assert!(
        status
            .message
            .contains("missing credentials_project_id, credentials_password")
            || status
                .message
                .contains("missing credentials_password, credentials_project_id"),
        "{}",
        status.message
    );
    assert!(status.message.contains("waiting for keystone"));

    // The leader publishes everything: active, naming the principal and the keystone unit.
    sim.state
        .relation_mut("identity-credentials")
        .unwrap()
        .remote_units
        .insert("keystone/1".into(), keystone_bag("127.0.0.1", "1"));
    let out = sim.hook("identity-credentials-relation-changed");
    let status = out.statuses.last().unwrap();
    assert_eq!(status.status, "active", "{}", status.message);
    assert!(
        status.message.starts_with("nova-compute/0 "),
        "{}",
        status.message
    );
    assert!(status.message.contains("keystone/1"), "{}", status.message);
    // The password never reaches a status, a log or a call's argv.
    let everything = serde_json::to_string(&(&out.statuses, &out.juju_log, &out.calls)).unwrap();
    assert!(!everything.contains("sim-password-7f3a9c"));

    // Keystone v2 data is refused with what to do.
    let mut v2 = keystone_bag("127.0.0.1", "1");
    v2.insert("api_version".into(), "2".into());
    sim.state
        .relation_mut("identity-credentials")
        .unwrap()
        .remote_units
        .insert("keystone/1".into(), v2);
    let out = sim.hook("update-status");
    let status = out.statuses.last().unwrap();
    assert_eq!(status.status, "blocked");
    assert!(status.message.contains("Keystone v3"), "{}", status.message);

    // A non-HTTP auth_protocol is refused.
    let mut ldap = keystone_bag("127.0.0.1", "1");
    ldap.insert("auth_protocol".into(), "ldap".into());
    sim.state
        .relation_mut("identity-credentials")
        .unwrap()
        .remote_units
        .insert("keystone/1".into(), ldap);
    let out = sim.hook("update-status");
    let status = out.statuses.last().unwrap();
    assert_eq!(status.status, "blocked");
    assert!(
        status.message.contains("auth_protocol"),
        "{}",
        status.message
    );

    // The relation goes away: blocked again.
    sim.state
        .relations
        .retain(|r| r.endpoint != "identity-credentials");
    let out = sim.hook("update-status");
    assert!(
        out.statuses
            .last()
            .unwrap()
            .message
            .contains(super::hooks::NEEDS_RELATION)
    );
}

#[test]
fn every_hook_exits_zero_and_unknown_hooks_do_nothing() {
    for hook in [
        "install",
        "leader-elected",
        "config-changed",
        "start",
        "update-status",
        "upgrade-charm",
        "juju-info-relation-joined",
        "juju-info-relation-changed",
        "identity-credentials-relation-departed",
        "identity-credentials-relation-broken",
        "stop",
        "remove",
        "leader-settings-changed",
        "pre-series-upgrade",
        "secret-changed",
    ] {
        let mut sim = Sim::new();
        let out = sim.hook(hook);
        assert_eq!(out.exit_code, Some(0), "{hook}: {}", out.stderr);
    }
    let mut sim = Sim::new();
    let out = sim.hook("some-future-hook");
    assert_eq!(out.exit_code, Some(0));
    assert!(out.statuses.is_empty());
    assert_eq!(out.call_lines(), vec!["config-get --format=json"]);
}

#[test]
fn a_failing_hook_tool_fails_the_hook_with_its_stderr() {
    let mut sim = Sim::new();
    sim.state.fail_tools.insert(
        "relation-ids".into(),
        "ERROR permission denied (sim)".into(),
    );
    let out = sim.hook("update-status");
    assert_eq!(out.exit_code, Some(1));
    assert!(
        out.stderr.contains("ERROR permission denied (sim)"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_controller_refuses_bad_action_parameters() {
    let mut sim = Sim::new();
    let cases: [(&str, &[&str], &str); 6] = [
        (
            "evacuate",
            &["dry_run=true"],
            "key \"dry_run\" must start and end with lowercase alphanumeric",
        ),
        (
            "evacuate",
            &["max-concurrent=0"],
            "validation failed: (root).max-concurrent : must be greater than or equal to 1, given \"0\"",
        ),
        (
            "evacuate",
            &["max-concurrent=two"],
            "validation failed: (root).max-concurrent : must be of type integer, given \"two\"",
        ),
        (
            "evacuate",
            &["block-migration=sometimes"],
            "(root).block-migration : must match one of the enum values [\"auto\",\"true\",\"false\",true,false], given \"sometimes\"",
        ),
        (
            "migrate-vm",
            &[],
            "validation failed: (root) : \"vm\" property is missing and required, given {}",
        ),
        (
            "force-complete",
            &["vm=x", "now=true"],
            "(root) : additional property \"now\" is not allowed, given {\"now\":true,\"vm\":\"x\"}",
        ),
    ];
    for (action, params, want) in cases {
        let err = sim
            .run(&format!("actions/{action}"), params)
            .expect_err("refused");
        assert!(err.contains(want), "{action} {params:?}: {err}");
        // Nothing ran.
        assert!(sim.state.calls.is_empty());
    }
    let err = sim.run("actions/reboot", &[]).expect_err("unknown action");
    assert!(err.contains("not defined"), "{err}");
}

#[test]
fn actions_without_credentials_fail_cleanly() {
    for action in ["evacuate", "abort", "enable", "status"] {
        let mut sim = Sim::new();
        let out = sim.action(action, &[]);
        assert_eq!(out.exit_code, Some(0), "{action}: {}", out.stderr);
        let msg = out.action_failed.clone().expect("failed");
        assert!(msg.contains(NEEDS_RELATION), "{action}: {msg}");
        assert_eq!(out.action_results.get("summary"), Some(&msg));
        let report: serde_json::Value =
            serde_json::from_str(&out.action_results["report"]).unwrap();
        assert_eq!(report["action"], action);
    }
}

#[test]
fn cli_outside_juju() {
    let bin = env!("CARGO_BIN_EXE_nova-live-migration");
    let out = std::process::Command::new(bin)
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage:"));
    let out = std::process::Command::new(bin)
        .env_clear()
        .arg("evacuate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--help"));
    // A Juju environment that is not complete is an error, not the CLI.
    let out = std::process::Command::new(bin)
        .env_clear()
        .env("JUJU_DISPATCH_PATH", "hooks/install")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("JUJU_UNIT_NAME"));
}
