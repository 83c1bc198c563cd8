//! The stall / timeout / force-complete-at policy end to end: `evacuate`
//! through the harness on the local cloud, with the fake driver stalling a
//! migration (`nlm_stall_at`) or making it long (`nlm_migration_seconds`).
//! Outcomes are read back from Nova. Skipped (one line) without the cloud.

use serde_json::{Value, json};

use crate::cloud::{CloudEnv, DEST, SOURCE, host_of};
use crate::drain_cloud::{Node, Timed, boot, migration_records, report};

/// The report's only instance.
fn only(st: &crate::juju::State) -> Value {
    let rep = report(st);
    let list = rep["instances"].as_array().expect("instances").clone();
    assert_eq!(list.len(), 1, "{rep:#}");
    list[0].clone()
}

fn decisions(i: &Value) -> String {
    i["decisions"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .unwrap_or_default()
}

/// Runs evacuate with `config` on one instance booted with `meta`; returns
/// the instance's report entry, its server and its live-migration records.
async fn one(
    cloud: &CloudEnv,
    name: &str,
    meta: &[(&str, &str)],
    config: &[(&str, Value)],
) -> (Value, Value, Vec<Value>, crate::juju::State) {
    cloud.reset().await;
    let ids = boot(cloud, &[(name, meta)]).await;
    let mut node = Node::new(cloud);
    for (k, v) in config {
        node = node.config(k, v.clone());
    }
    let st = node.run("evacuate", &[]);
    let i = only(&st);
    // What an operator sees (README "Stalls, timeouts and retries" quotes it).
    eprintln!("{name}: action log:\n  {}", st.action_log.join("\n  "));
    eprintln!("{name}: summary: {:?}", st.action_results.get("summary"));
    eprintln!("{name}: report entry: {i}");
    let server = cloud.server(&ids[0]).await;
    let records = migration_records(cloud, &ids[0], "live-migration").await;
    (i, server, records, st)
}

#[tokio::test]
async fn stall_timeout_aborts_a_stalled_migration() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let _lock = cloud.lock();
    let _t = Timed::start("stall_timeout_aborts_a_stalled_migration");
    let (i, server, records, st) = one(
        &cloud,
        "stall-abort",
        &[("nlm_stall_at", "40"), ("nlm_migration_seconds", "20")],
        &[
            ("stall-timeout", json!(3)),
            ("timeout-action", json!("abort")),
            ("retries", json!(0)),
        ],
    )
    .await;
    assert_eq!(i["result"], "aborted", "{i:#}");
    let why = format!("{} | {}", i["error"], decisions(&i));
    assert!(why.contains("stalled"), "{why}");
    assert!(why.contains("stall-timeout 3 s"), "{why}");
    assert!(st.action_failed.is_some());
    assert_eq!(host_of(&server), SOURCE, "{server:#}");
    assert_eq!(server["status"], "ACTIVE");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["status"], "cancelled", "{records:?}");
    cloud.reset().await;
}

#[tokio::test]
async fn force_complete_at_finishes_a_stall_past_the_threshold() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let _lock = cloud.lock();
    let _t = Timed::start("force_complete_at_finishes_a_stall_past_the_threshold");
    let (i, server, records, st) = one(
        &cloud,
        "stall-force",
        &[("nlm_stall_at", "60"), ("nlm_migration_seconds", "20")],
        &[
            ("stall-timeout", json!(3)),
            ("timeout-action", json!("abort")),
            ("force-complete-at", json!(50)),
        ],
    )
    .await;
    assert_eq!(i["result"], "migrated", "{i:#}");
    let why = decisions(&i);
    assert!(why.contains("force-complete"), "{why}");
    assert!(st.action_failed.is_none(), "{:?}", st.action_failed);
    assert_eq!(host_of(&server), DEST, "{server:#}");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["status"], "completed");
    cloud.reset().await;
}

#[tokio::test]
async fn migration_timeout_aborts_or_force_completes() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let _lock = cloud.lock();
    let _t = Timed::start("migration_timeout_aborts_or_force_completes");
    let slow = [("nlm_migration_seconds", "60")];
    let (i, server, records, _) = one(
        &cloud,
        "slow-abort",
        &slow,
        &[
            ("migration-timeout", json!(3)),
            ("stall-timeout", json!(0)),
            ("timeout-action", json!("abort")),
            ("retries", json!(0)),
        ],
    )
    .await;
    assert_eq!(i["result"], "aborted", "{i:#}");
    let why = format!("{} | {}", i["error"], decisions(&i));
    assert!(why.contains("past migration-timeout 3 s"), "{why}");
    assert_eq!(host_of(&server), SOURCE);
    assert_eq!(records[0]["status"], "cancelled", "{records:?}");

    let (i, server, records, _) = one(
        &cloud,
        "slow-force",
        &slow,
        &[
            ("migration-timeout", json!(3)),
            ("stall-timeout", json!(0)),
            ("timeout-action", json!("force-complete")),
        ],
    )
    .await;
    assert_eq!(i["result"], "migrated", "{i:#}");
    assert!(
        decisions(&i).contains("past migration-timeout 3 s"),
        "{i:#}"
    );
    assert_eq!(host_of(&server), DEST);
    assert_eq!(records[0]["status"], "completed");
    cloud.reset().await;
}
