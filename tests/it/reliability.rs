//! The reliability suite's cloud half (docs/RELIABILITY.md): SIGKILL at
//! random moments then resume, and a drain several times longer than the
//! Keystone token lifetime. Real `dispatch` through the harness, real
//! Keystone/Nova/Placement; every outcome is read back from Nova. The
//! figures go straight to stderr (past libtest's capture) so CI's log
//! carries them.

use std::io::Write;
use std::time::{Duration, Instant};

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

/// Reliability 1: 20 evacuations of 5 instances, each SIGKILLed at its own
/// random moment (stratified over the time an evacuation takes), then run
/// again: each instance migrated exactly once, none left MIGRATING or in
/// ERROR, the journal valid and 0600, the service left disabled by us.
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
    // About how long one evacuation of 5 one-second migrations takes on a
    // 2-core machine (nova runs one at a time: 12–26 s measured): kill
    // moments spread over it, from before the disable to the report.
    const SPAN_MS: u64 = 16_000;
    let seed = kill_seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    figure(&format!(
        "kill anywhere: {ROUNDS} rounds × {INSTANCES} instances, seed {seed} (NLM_KILL_SEED to replay)"
    ));
    figure("| round | kill at | killed while | re-run | migrated | LM records | result |");
    figure("|---|---|---|---|---|---|---|");
    let mut node = Node::new(cloud);
    let mut passed = 0;
    let mut killed = 0;
    let meta: &[(&str, &str)] = &[("nlm_migration_seconds", "1")];
    for round in 0..ROUNDS {
        let names: Vec<String> = (0..INSTANCES).map(|i| format!("k{round}-{i}")).collect();
        let specs: Vec<(&str, &[(&str, &str)])> =
            names.iter().map(|n| (n.as_str(), meta)).collect();
        let ids = boot(cloud, &specs).await;
        let at_ms = (u64::from(round) * SPAN_MS + rng.u64(0..SPAN_MS)) / u64::from(ROUNDS);

        let mut run = node.start("evacuate", &[]);
        tokio::time::sleep(Duration::from_millis(at_ms)).await;
        let finished_first = run.child.try_wait().expect("try_wait").is_some();
        let what = if finished_first {
            let st = node.sim.finish(run).expect("state").clone();
            assert_eq!(st.action_failed, None, "{:#?}", st.action_log);
            "(ended before the kill)".to_string()
        } else {
            let st = node.kill(run);
            node.assert_no_secrets(&st);
            killed += 1;
            phase(&st.action_log)
        };

        let t = Instant::now();
        let st = node.run("evacuate", &[]);
        let rerun_s = t.elapsed().as_secs_f64();
        assert_eq!(
            st.action_failed, None,
            "round {round}: {:#?}",
            st.action_log
        );
        let rep = report(&st);
        // The re-run's report holds the whole evacuation when it resumed,
        // or only what was left when the first run had ended.
        let resumed = log_has(&st, "resuming the evacuate started at");
        let mut records = 0;
        for id in &ids {
            let lm = migration_records(cloud, id, "live-migration").await;
            assert_eq!(lm.len(), 1, "round {round} {id}: {lm:#?}");
            assert_eq!(lm[0]["status"], "completed", "round {round} {id}");
            records += lm.len();
            // Resumed, or afresh because the kill came before anything was
            // journaled: either way the report has every instance, migrated
            // by one attempt. (Unless the first run ended before the kill.)
            if !finished_first {
                let i = inst(&rep, id);
                assert_eq!(i["result"], "migrated", "round {round}: {i:#}");
                assert_eq!(i["attempts"], 1, "round {round}: {i:#}");
            }
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
            "| {round} | {:.2} s | {what} | {rerun_s:.1} s{} | {migrated} | {records}/{INSTANCES} | ok |",
            at_ms as f64 / 1000.0,
            if resumed { ", resumed" } else { "" }
        ));
    }
    figure(&format!(
        "kill anywhere: {passed}/{ROUNDS} rounds exactly once ({killed} killed mid-run)"
    ));
    // A fast machine may end a few runs before their late kill moment.
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
