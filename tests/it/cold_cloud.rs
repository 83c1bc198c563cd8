//! Policy `cold` (issue 14 point 1) on the local cloud: an owner's
//! `nova-live-migration:policy=cold` on a running instance makes the
//! evacuation stop it, cold-migrate it, confirm and start it again; a
//! stopped one is cold-migrated and left stopped; nothing else is ever
//! stopped. What happens to an instance this run stopped when its
//! migration fails, when the operator aborts while it stops, and when its
//! owner deletes it meanwhile, is read back from real Nova (server state,
//! migration records, instance actions).
//!
//! The fake driver holds a power-off while the file named by the server's
//! metadata `nlm_power_off_hold` exists (tests/cloud/nlm_fake_driver.py),
//! so the window in which others act is opened and closed by the test,
//! never by the machine's speed.

use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::cloud::{CloudEnv, DEST, SOURCE, host_of, wait_until};
use crate::drain_cloud::{Node, Timed, boot, migration_records, report, stop, wait_status};
use crate::migratability_cloud::by_name;

const POLICY: &str = "nova-live-migration:policy";
const T: Duration = Duration::from_secs(90);
const CLI: &str = env!("CARGO_BIN_EXE_nova-live-migration");

fn decisions(i: &Value) -> String {
    i["decisions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The server's instance actions, oldest first (`stop`, `migrate`, …).
/// Nova lists them newest first, by `created_at` then id
/// (`nova/db/main/api.py` `actions_get`): reversed, that is the order they
/// were taken in, also within one second (`start_time` has no finer grain
/// on MySQL).
pub(crate) async fn actions(cloud: &CloudEnv, id: &str) -> Vec<String> {
    let v = cloud
        .get(&format!("/servers/{id}/os-instance-actions"))
        .await;
    let mut a: Vec<String> = v["instanceActions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a["action"].as_str().unwrap_or("").to_string())
        .collect();
    a.reverse();
    a
}

/// Waits until Nova shows the instance being powered off (our stop, held
/// by the fake driver).
async fn powering_off(cloud: &CloudEnv, id: &str) {
    wait_until(
        || async move {
            let s = cloud.server(id).await;
            (s["OS-EXT-STS:task_state"] == "powering-off").then_some(())
        },
        T,
    )
    .await
}

/// A file whose existence holds a power-off.
fn hold_file(node: &Node, name: &str) -> String {
    let p = node.sim.path(&format!("hold-{name}"));
    std::fs::write(&p, "held by the test\n").unwrap();
    p.display().to_string()
}

/// Boots `name` (policy cold, its power-off held) and `others` on node1,
/// starts `evacuate` and waits until Nova is powering it off: returns the
/// ids (`name` first), the running action and the hold file to remove.
async fn held_stop(
    cloud: &CloudEnv,
    node: &mut Node,
    name: &str,
    others: &[(&str, &[(&str, &str)])],
) -> (Vec<String>, crate::juju::sim::Running, String) {
    let hold = hold_file(node, name);
    let meta = [(POLICY, "cold"), ("nlm_power_off_hold", hold.as_str())];
    let mut specs: Vec<(&str, &[(&str, &str)])> = vec![(name, &meta)];
    specs.extend_from_slice(others);
    let ids = boot(cloud, &specs).await;
    let run = node.start("evacuate", &[]);
    powering_off(cloud, &ids[0]).await;
    (ids, run, hold)
}

#[tokio::test]
async fn policy_cold_stops_migrates_and_starts_again_only_what_its_owner_opted_in() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let _lock = cloud.lock();
    let _t =
        Timed::start("policy_cold_stops_migrates_and_starts_again_only_what_its_owner_opted_in");
    cloud.reset().await;
    let ids = boot(
        &cloud,
        &[
            ("cold-run", &[(POLICY, "cold")]),
            ("cold-off", &[(POLICY, "cold")]),
            ("live-1", &[]),
        ],
    )
    .await;
    stop(&cloud, &ids[1]).await;
    let mut node = Node::new(&cloud);

    let dry = report(&node.run("evacuate", &["dry-run=true"]));
    for (name, method) in [
        ("cold-run", "stop, cold-migrate, start"),
        ("cold-off", "cold"),
        ("live-1", "live"),
    ] {
        let i = by_name(&dry, name);
        assert_eq!(i["result"], "planned", "{name}: {i:#}");
        assert_eq!(i["plan"]["method"], method, "{name}: {i:#}");
    }
    assert_eq!(
        by_name(&dry, "cold-run")["plan"]["policy"],
        "cold (metadata nova-live-migration:policy)"
    );

    let st = node.run("evacuate", &[]);
    let rep = report(&st);
    eprintln!("evacuate log:\n  {}", st.action_log.join("\n  "));
    let run = by_name(&rep, "cold-run");
    assert_eq!(run["result"], "cold-migrated", "{run:#}");
    assert_eq!(run["error"], Value::Null, "{run:#}");
    assert!(
        decisions(run).contains(&format!("started again on {DEST} (policy cold)")),
        "{run:#}"
    );
    let s = cloud.server(&ids[0]).await;
    assert_eq!((host_of(&s), s["status"].as_str()), (DEST, Some("ACTIVE")));
    let a = actions(&cloud, &ids[0]).await;
    let tail: Vec<&str> = a.iter().map(String::as_str).skip(1).collect();
    assert_eq!(tail, ["stop", "migrate", "confirmResize", "start"], "{a:?}");
    assert!(
        st.action_log
            .iter()
            .any(|l| l.contains("cold-run stopping it for its cold migration")),
        "{:?}",
        st.action_log
    );

    // A stopped one moves and stays stopped; nobody else was stopped.
    let off = by_name(&rep, "cold-off");
    assert_eq!(off["result"], "cold-migrated", "{off:#}");
    let s = cloud.server(&ids[1]).await;
    assert_eq!((host_of(&s), s["status"].as_str()), (DEST, Some("SHUTOFF")));
    assert!(
        !actions(&cloud, &ids[1])
            .await
            .contains(&"start".to_string())
    );
    assert_eq!(by_name(&rep, "live-1")["result"], "migrated");
    let a = actions(&cloud, &ids[2]).await;
    assert!(!a.contains(&"stop".to_string()), "{a:?}");
    cloud.reset().await;
}

#[tokio::test]
async fn a_failed_cold_migration_leaves_it_running_again_on_the_source() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let _lock = cloud.lock();
    let _t = Timed::start("a_failed_cold_migration_leaves_it_running_again_on_the_source");
    cloud.reset().await;
    let ids = boot(
        &cloud,
        &[("cold-fail", &[(POLICY, "cold"), ("nlm_failure", "cold")])],
    )
    .await;
    let mut node = Node::new(&cloud).config("retries", json!(0));
    let st = node.run("evacuate", &[]);
    let rep = report(&st);
    eprintln!("evacuate log:\n  {}", st.action_log.join("\n  "));
    let i = by_name(&rep, "cold-fail");
    assert_eq!(i["result"], "failed", "{i:#}");
    assert!(
        decisions(i).contains(&format!("started again on {SOURCE} (policy cold)")),
        "{i:#}"
    );
    let s = wait_status(&cloud, &ids[0], "ACTIVE").await;
    assert_eq!(host_of(&s), SOURCE);
    let records = migration_records(&cloud, &ids[0], "migration").await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["status"], "error", "{records:#?}");
    let a = actions(&cloud, &ids[0]).await;
    assert_eq!(a.last().map(String::as_str), Some("start"), "{a:?}");
    cloud.reset().await;
}

/// The operator's `abort` (the host CLI, as the README says) while the
/// instance is being stopped: no migration starts, and it runs again.
#[tokio::test]
async fn an_abort_while_it_is_being_stopped_starts_it_again_and_migrates_nothing() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let _lock = cloud.lock();
    let _t =
        Timed::start("an_abort_while_it_is_being_stopped_starts_it_again_and_migrates_nothing");
    cloud.reset().await;
    let mut node = Node::new(&cloud);
    let (ids, run, hold) = held_stop(&cloud, &mut node, "cold-abort", &[]).await;
    let out = Command::new(CLI)
        .env_clear()
        .envs(node.sim.host_env())
        .arg("abort")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("took the request"), "{said}");
    // The run has the request: only now may the power-off end.
    std::fs::remove_file(&hold).unwrap();
    let st = node.sim.finish(run).expect("state").clone();
    node.assert_no_secrets(&st);
    let rep = report(&st);
    eprintln!("evacuate log:\n  {}", st.action_log.join("\n  "));
    let i = by_name(&rep, "cold-abort");
    assert_eq!(i["result"], "aborted", "{i:#}");
    assert!(
        i["error"]
            .as_str()
            .unwrap()
            .contains("aborted before its cold migration started"),
        "{i:#}"
    );
    let s = wait_status(&cloud, &ids[0], "ACTIVE").await;
    assert_eq!(host_of(&s), SOURCE);
    assert!(
        migration_records(&cloud, &ids[0], "migration")
            .await
            .is_empty()
    );
    let a = actions(&cloud, &ids[0]).await;
    let tail: Vec<&str> = a.iter().map(String::as_str).skip(1).collect();
    assert_eq!(tail, ["stop", "start"], "{a:?}");
    cloud.reset().await;
}

/// Another actor: its owner deletes it while this run stops it. The run
/// ends it skipped, and neither migrates nor starts anything.
#[tokio::test]
async fn deleted_by_its_owner_while_being_stopped_is_skipped_and_nothing_is_started() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let _lock = cloud.lock();
    let _t =
        Timed::start("deleted_by_its_owner_while_being_stopped_is_skipped_and_nothing_is_started");
    cloud.reset().await;
    let mut node = Node::new(&cloud);
    let (ids, run, hold) = held_stop(&cloud, &mut node, "cold-del", &[("live-2", &[])]).await;
    let path = format!("/servers/{}", ids[0]);
    cloud.call(Method::DELETE, &path, None, &[204]).await;
    std::fs::remove_file(&hold).unwrap();
    let st = node.sim.finish(run).expect("state").clone();
    node.assert_no_secrets(&st);
    let rep = report(&st);
    eprintln!("evacuate log:\n  {}", st.action_log.join("\n  "));
    let i = by_name(&rep, "cold-del");
    assert_eq!(i["result"], "skipped", "{i:#}");
    assert!(i["error"].as_str().unwrap().contains("deleted"), "{i:#}");
    assert!(
        !st.action_log
            .iter()
            .any(|l| l.contains("cold-del") && l.contains("starting")),
        "{:?}",
        st.action_log
    );
    assert_eq!(cloud.try_get(&path).await, Ok(404));
    assert_eq!(by_name(&rep, "live-2")["result"], "migrated");
    cloud.reset().await;
}

/// SIGKILL (`juju cancel-task`) while the instance is being stopped: the
/// next `evacuate` resumes from the journal and Nova's state, migrates it
/// and starts it again.
#[tokio::test]
async fn a_run_killed_while_it_stops_resumes_migrates_and_starts_it_again() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let _lock = cloud.lock();
    let _t = Timed::start("a_run_killed_while_it_stops_resumes_migrates_and_starts_it_again");
    cloud.reset().await;
    let mut node = Node::new(&cloud);
    let (ids, run, hold) = held_stop(&cloud, &mut node, "cold-kill", &[]).await;
    node.kill(run);
    let journal = node.journal().expect("journal");
    let phase = &journal["state"]["drain"]["instances"][0]["phase"]["phase"];
    assert_eq!(phase, "stopping", "{journal:#}");
    std::fs::remove_file(&hold).unwrap();
    wait_status(&cloud, &ids[0], "SHUTOFF").await;

    let st = node.run("evacuate", &[]);
    let rep = report(&st);
    eprintln!("evacuate log:\n  {}", st.action_log.join("\n  "));
    let i = by_name(&rep, "cold-kill");
    assert_eq!(i["result"], "cold-migrated", "{i:#}");
    assert!(
        decisions(i).contains("resume: being stopped for policy cold"),
        "{i:#}"
    );
    let s = wait_status(&cloud, &ids[0], "ACTIVE").await;
    assert_eq!(host_of(&s), DEST);
    let a = actions(&cloud, &ids[0]).await;
    let tail: Vec<&str> = a.iter().map(String::as_str).skip(1).collect();
    assert_eq!(tail, ["stop", "migrate", "confirmResize", "start"], "{a:?}");
    cloud.reset().await;
}
