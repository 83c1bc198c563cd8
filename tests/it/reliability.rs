//! The reliability suite's cloud half (docs/RELIABILITY.md): SIGKILL at
//! random moments then resume, and a drain several times longer than the
//! Keystone token lifetime. Real `dispatch` through the harness, real
//! Keystone/Nova/Placement; every outcome is read back from Nova. The
//! figures go straight to stderr (past libtest's capture) so CI's log
//! carries them.

use std::io::Write;
use std::time::Instant;

use serde_json::{Value, json};

use crate::cloud::{CloudEnv, DEST, SOURCE};
use crate::drain_cloud::{
    Node, Timed, assert_journal, boot, cloud_bag, count, inst, log_has, migration_records, report,
    service, where_are,
};

/// A line for the record, not swallowed by libtest.
fn figure(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Seed of the kill moments: `NLM_KILL_SEED` to replay a run, else the clock.
fn kill_seed() -> u64 {
    std::env::var("NLM_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(nlm::time::now_ms)
}

/// What the killed run was doing: its last action-log line, shortened.
fn phase(log: &[String]) -> String {
    let last = log
        .last()
        .map(String::as_str)
        .unwrap_or("(nothing logged yet)");
    let mut s: String = last.chars().take(60).collect();
    if last.chars().count() > 60 {
        s.push('…');
    }
    s
}

/// Reliability 1: 20 evacuations of 5 instances, each SIGKILLed (as
/// `juju cancel-task` does) at its own point of the charm's work, then run
/// again: each instance migrated exactly once, none left MIGRATING or in
/// ERROR, the re-run reports every instance (the first run's outcome is
/// never lost), the journal valid and 0600, the service left disabled.
///
/// The kill points are hook-tool calls (juju-sim kills dispatch when it
/// makes its k-th call), stratified over the calls of a clean evacuation
/// measured first: the same points at any machine speed. One round kills at
/// the first `action-set`, after the journal says the run ended and before
/// its result reached Juju.
#[tokio::test]
async fn kill_anywhere_then_resume_twenty_times() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let cloud = &cloud;
    let _lock = cloud.lock();
    let _t = Timed::start("kill_anywhere_then_resume_twenty_times");
    cloud.reset().await;
    const ROUNDS: u32 = 20;
    const INSTANCES: usize = 5;
    let seed = kill_seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut node = Node::new(cloud);
    let meta: &[(&str, &str)] = &[("nlm_migration_seconds", "1")];
    let boot_round = |round: String| async move {
        let names: Vec<String> = (0..INSTANCES).map(|i| format!("k{round}-{i}")).collect();
        let specs: Vec<(&str, &[(&str, &str)])> =
            names.iter().map(|n| (n.as_str(), meta)).collect();
        boot(cloud, &specs).await
    };

    // The clean run the kill points are spread over.
    let ids = boot_round("base".into()).await;
    let base = node.run("evacuate", &[]);
    assert_eq!(base.action_failed, None, "{:#?}", base.action_log);
    assert_eq!(count(&base, "migrated"), INSTANCES as u32);
    let calls = base.calls.len();
    assert!(
        calls > 20,
        "a clean evacuation makes {calls} hook-tool calls"
    );
    assert_eq!(node.run("enable", &[]).action_failed, None);
    drop(ids);
    cloud.delete_all_servers().await;
    figure(&format!(
        "kill anywhere: {ROUNDS} rounds × {INSTANCES} instances, kill points over the {calls} hook-tool calls of a clean evacuation, seed {seed} (NLM_KILL_SEED to replay)"
    ));
    figure("| round | killed at | while | re-run | migrated | LM records | result |");
    figure("|---|---|---|---|---|---|---|");
    let mut passed = 0;
    let mut killed = 0;
    for round in 0..ROUNDS {
        let ids = boot_round(round.to_string()).await;
        // Round 0 at the first action-set; the others stratified over the
        // calls (the last stratum reaches the end of the run).
        let (tool, k) = if round == 0 {
            (Some("action-set".to_string()), 1)
        } else {
            let span = calls as u64;
            let r = u64::from(round - 1);
            let k = (r * span + rng.u64(0..span)) / u64::from(ROUNDS - 1) + 1;
            (None, k as usize)
        };
        node.sim.state.kill_at_call = Some(k);
        node.sim.state.kill_at_tool = tool.clone();
        let run = node.start("evacuate", &[]);
        let st = node.sim.finish(run).expect("state").clone();
        node.sim.state.kill_at_call = None;
        node.sim.state.kill_at_tool = None;
        let was_killed = st.exit_code == Some(128 + 9);
        let at = format!(
            "{} call {k}{}",
            tool.as_deref().unwrap_or("any"),
            st.calls
                .get(k.saturating_sub(1))
                .filter(|_| tool.is_none())
                .map(|c| format!(" ({})", c.argv[0]))
                .unwrap_or_default()
        );
        // Killed after its results were set (action-set values stay in the
        // task's result whatever the exit: facts/juju.md §0.5): that run
        // delivered its outcome itself.
        let reported_before_kill = was_killed && st.action_results.contains_key("report");
        let killed_report = reported_before_kill.then(|| report(&st));
        let what = if was_killed {
            node.assert_no_secrets(&st);
            killed += 1;
            phase(&st.action_log)
        } else {
            assert_eq!(st.action_failed, None, "{:#?}", st.action_log);
            "(ended before that call)".to_string()
        };

        let t = Instant::now();
        let st = node.run("evacuate", &[]);
        let rerun_s = t.elapsed().as_secs_f64();
        assert_eq!(
            st.action_failed, None,
            "round {round}: {:#?}",
            st.action_log
        );
        let rep = killed_report.unwrap_or_else(|| report(&st));
        let resumed = log_has(&st, "resuming the evacuate started at");
        let delivered = log_has(&st, "before its result could be delivered");
        let mut records = 0;
        for id in &ids {
            let lm = migration_records(cloud, id, "live-migration").await;
            assert_eq!(lm.len(), 1, "round {round} {id}: {lm:#?}");
            assert_eq!(lm[0]["status"], "completed", "round {round} {id}");
            records += lm.len();
            // Resumed, delivered late, or afresh because the kill came
            // before anything was journaled: the report has every instance,
            // migrated by one attempt. (Unless the first run ended before
            // its kill point and reported itself.)
            if was_killed {
                let i = inst(&rep, id);
                assert_eq!(i["result"], "migrated", "round {round}: {i:#}");
                assert_eq!(i["attempts"], 1, "round {round}: {i:#}");
            }
        }
        if round == 0 {
            assert!(
                was_killed && delivered,
                "round 0 must hit the undelivered result: {:#?}",
                st.action_log
            );
        }
        for (host, status, task) in where_are(cloud, &ids).await {
            assert_eq!(
                (host.as_str(), status.as_str()),
                (DEST, "ACTIVE"),
                "round {round}"
            );
            assert!(task.is_null(), "round {round}: task_state {task}");
        }
        let migrated = count(&st, "migrated");
        let j = assert_journal(&node, true);
        assert_eq!(j["state"]["kind"], "evacuate");
        let svc = service(cloud, SOURCE).await;
        assert_eq!(svc["status"], "disabled", "round {round}");

        // Ready for the next round: the unit re-enables its node (the
        // evacuation has ended, so no force), the servers go.
        let en = node.run("enable", &[]);
        assert_eq!(en.action_failed, None, "{:#?}", en.action_log);
        assert_eq!(service(cloud, SOURCE).await["status"], "enabled");
        cloud.delete_all_servers().await;
        passed += 1;
        figure(&format!(
            "| {round} | {at} | {what} | {rerun_s:.1} s{} | {migrated} | {records}/{INSTANCES} | ok |",
            if resumed {
                ", resumed"
            } else if delivered {
                ", delivered the killed run's result"
            } else if reported_before_kill {
                ", the killed run had reported"
            } else {
                ""
            }
        ));
    }
    figure(&format!(
        "kill anywhere: {passed}/{ROUNDS} rounds exactly once ({killed} killed mid-run)"
    ));
    // Kill points within the calls of a clean run: a run makes about as
    // many calls whatever the machine's speed (progress lines vary a little).
    assert!(killed >= ROUNDS * 3 / 4, "too few kills landed: {killed}");
    cloud.reset().await;
}

/// Port and lifetime of the short-token Keystone (`tests/cloud/cloud up`
/// writes `keystone-short.json`), if this cloud has one.
fn short_keystone(cloud: &CloudEnv) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(cloud.dir().join("keystone-short.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    Some((
        v["auth_port"].as_str()?.to_string(),
        v["token_expiration_s"].as_u64()?,
    ))
}

/// Reliability 2 (and issue 6's token freshness): a drain several times
/// longer than the token lifetime (30 s on the short Keystone), one
/// migration at a time so each start comes long after the first token:
/// every instance migrates and not one request is refused with 401.
#[tokio::test]
async fn drain_longer_than_the_token_lifetime_without_auth_failures() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let Some((port, lifetime_s)) = short_keystone(&cloud) else {
        figure("skipping: this cloud has no short-token Keystone (tests/cloud/cloud up again)");
        return;
    };
    let cloud = &cloud;
    let _lock = cloud.lock();
    let _t = Timed::start("drain_longer_than_the_token_lifetime_without_auth_failures");
    cloud.reset().await;
    let mut bag = cloud_bag(cloud);
    bag.insert("auth_port".into(), port.clone());
    bag.insert("credentials_port".into(), port);
    let mut node = Node::with_relation(Some(bag))
        .config("max-concurrent-migrations", json!(1))
        .config("log-level", json!("debug"));
    let secs = (lifetime_s * 2 / 3).max(5).to_string();
    let meta: &[(&str, &str)] = &[("nlm_migration_seconds", &secs)];
    let names: Vec<String> = (0..6).map(|i| format!("tok-{i}")).collect();
    let specs: Vec<(&str, &[(&str, &str)])> = names.iter().map(|n| (n.as_str(), meta)).collect();
    let ids = boot(cloud, &specs).await;

    let t = Instant::now();
    let st = node.run("evacuate", &[]);
    let took = t.elapsed().as_secs_f64();
    assert_eq!(st.action_failed, None, "{:#?}", st.action_log);
    assert_eq!(count(&st, "migrated"), 6, "{:?}", st.action_results);
    for (host, status, _) in where_are(cloud, &ids).await {
        assert_eq!((host.as_str(), status.as_str()), (DEST, "ACTIVE"));
    }
    assert!(
        took > 3.0 * lifetime_s as f64,
        "the drain ({took:.0} s) must outlast several token lifetimes ({lifetime_s} s)"
    );
    // The drain's own count of what it put on the wire.
    let line = st
        .juju_log
        .iter()
        .map(|l| l.message.as_str())
        .find(|m| m.starts_with("evacuate: ") && m.contains(" API calls ("))
        .unwrap_or_else(|| panic!("no API summary in {:#?}", st.juju_log))
        .to_string();
    let number_before = |what: &str| -> u64 {
        let i = line
            .find(what)
            .unwrap_or_else(|| panic!("{what:?} in {line}"));
        line[..i]
            .trim_end()
            .rsplit([' ', '('])
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("number before {what:?} in {line}"))
    };
    let auths = number_before(" authentications");
    let refused = number_before(" refused with 401");
    figure(&format!(
        "token expiry: token lifetime {lifetime_s} s, drain of 6 × {secs} s migrations took {took:.1} s; \
         {auths} authentications, {refused} requests refused with 401"
    ));
    assert_eq!(refused, 0, "{line}");
    // Renewed ahead of expiry, again and again (at half the lifetime).
    assert!(
        auths as f64 >= took / lifetime_s as f64,
        "{auths} authentications in {took:.0} s: {line}"
    );
    // The tokens really were short-lived ones (the debug line of each
    // authentication says the lifetime Keystone gave).
    let lifetimes: Vec<&str> = st
        .juju_log
        .iter()
        .map(|l| l.message.as_str())
        .filter(|m| m.starts_with("authenticated to Keystone"))
        .collect();
    assert!(!lifetimes.is_empty(), "{:#?}", st.juju_log);
    for l in &lifetimes {
        assert!(l.contains(&format!("lifetime_s={lifetime_s}")), "{l}");
    }
    let rep = report(&st);
    for id in &ids {
        assert_eq!(inst(&rep, id)["result"], "migrated");
        assert_eq!(
            migration_records(cloud, id, "live-migration").await.len(),
            1
        );
    }
    cloud.reset().await;
}
