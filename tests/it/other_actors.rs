//! The other actors (issue 12): a cloud is shared. While the charm drains
//! node1 of 10 instances, a second client — seeded, printing its seed —
//! deletes one, stops one, live-migrates one by hand, pauses one, and
//! restarts nova-api once. Then I1–I3 are checked against Nova's own
//! records: the run ended (bounded), no migration left any host but this
//! one (nothing was moved twice), and each instance's final place agrees
//! with the report. Figures to stderr, past libtest's capture
//! (docs/RELIABILITY.md).

use std::io::Write;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::cloud::{CloudEnv, DEST, SOURCE, host_of};
use crate::drain_cloud::{Node, Timed, boot, inst, report};
use crate::juju::repo;

fn figure(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// `NLM_ACTORS_SEED` replays a run (the seed of its first round);
/// `NLM_ACTORS_DUMP=1` prints each round's report and action log.
fn base_seed() -> u64 {
    std::env::var("NLM_ACTORS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(nlm::time::now_ms)
}

/// What the other client did to one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Delete,
    Stop,
    MoveByHand,
    Pause,
}

impl Act {
    fn name(self) -> &'static str {
        match self {
            Act::Delete => "deleted",
            Act::Stop => "stopped",
            Act::MoveByHand => "live-migrated by hand",
            Act::Pause => "paused",
        }
    }
}

/// Names whose start the action log has shown so far.
fn started_names(node: &Node) -> Vec<String> {
    node.sim
        .live_state()
        .map(|st| {
            st.action_log
                .iter()
                .filter(|l| l.contains("starting live migration"))
                .filter_map(|l| {
                    l.split_once("] ")?
                        .1
                        .split(" → ")
                        .next()
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Does `act` as the admin; Nova may refuse it (409: the charm's migration
/// has the instance right now) — that is the race a shared cloud has.
async fn act(cloud: &CloudEnv, id: &str, a: Act) -> u16 {
    let (path, method, body) = match a {
        Act::Delete => (format!("/servers/{id}"), Method::DELETE, None),
        Act::Stop => (
            format!("/servers/{id}/action"),
            Method::POST,
            Some(json!({"os-stop": null})),
        ),
        Act::Pause => (
            format!("/servers/{id}/action"),
            Method::POST,
            Some(json!({"pause": null})),
        ),
        Act::MoveByHand => (
            format!("/servers/{id}/action"),
            Method::POST,
            Some(json!({"os-migrateLive": {"host": DEST, "block_migration": "auto"}})),
        ),
    };
    cloud.nova(method, &path, body).await.0
}

/// Restarts nova-api (`tests/cloud/cloud restart-api`) while the charm runs
/// on; returns how long the API was away.
fn restart_api(cloud: &CloudEnv) -> f64 {
    let t = Instant::now();
    let ok = std::process::Command::new(repo().join("tests/cloud/cloud"))
        .arg("restart-api")
        .env("NLM_CLOUD_DIR", cloud.dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "nova-api restart failed (see the cloud's log/nova-api.log)"
    );
    t.elapsed().as_secs_f64()
}

/// The test's own client kept connections to the old nova-api: each fails
/// once. Use them up on GETs before the next act (a POST is not retried).
async fn settle_our_client(cloud: &CloudEnv) {
    let mut ok = 0;
    for _ in 0..20 {
        match cloud.try_get("/os-services?binary=nova-compute").await {
            Ok(200) => ok += 1,
            _ => ok = 0,
        }
        if ok >= 4 {
            return;
        }
    }
    panic!("nova-api did not answer steadily after its restart");
}

/// Every live-migration record of `id` (any status) as Nova keeps them.
async fn records(cloud: &CloudEnv, id: &str) -> Vec<Value> {
    let v = cloud
        .get(&format!("/os-migrations?instance_uuid={id}"))
        .await;
    v["migrations"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_drain_beside_other_actors_over_ten_seeds() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let cloud = &cloud;
    let _lock = cloud.lock();
    let _t = Timed::start("a_drain_beside_other_actors_over_ten_seeds");
    cloud.reset().await;
    // NLM_ACTORS_ROUNDS for a shorter look by hand; CI runs ten.
    let rounds: u64 = std::env::var("NLM_ACTORS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    const INSTANCES: usize = 10;
    let base = base_seed();
    figure(&format!(
        "other actors: {rounds} rounds × {INSTANCES} instances, seeds {base}..{} (NLM_ACTORS_SEED={base} replays)",
        base + rounds - 1
    ));
    figure(
        "| seed | drain s | migrated | skipped | failed | acts (instance: act → its result) | nova-api restart | ok |",
    );
    figure("|---|---:|---:|---:|---:|---|---|---|");
    let meta: &[(&str, &str)] = &[("nlm_migration_seconds", "1")];
    for round in 0..rounds {
        let seed = base + round;
        let mut rng = fastrand::Rng::with_seed(seed);
        let names: Vec<String> = (0..INSTANCES).map(|i| format!("oa{round}-{i}")).collect();
        let specs: Vec<(&str, &[(&str, &str)])> =
            names.iter().map(|n| (n.as_str(), meta)).collect();
        let ids = boot(cloud, &specs).await;
        let id_of = |name: &str| ids[names.iter().position(|n| n == name).unwrap()].clone();
        let mut node = Node::new(cloud).config("poll-interval", json!(1.0));

        let t0 = Instant::now();
        let run = node.start("evacuate", &[]);
        // Mid-run, by the run's own progress (not a time): once a seeded
        // number of starts (1–3) has shown in the action log.
        let after = rng.usize(1..=3);
        let deadline = Instant::now() + Duration::from_secs(120);
        while started_names(&node).len() < after && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let started = started_names(&node);
        let mut pending: Vec<String> = names
            .iter()
            .filter(|n| !started.contains(n))
            .cloned()
            .collect();
        rng.shuffle(&mut pending);
        let mut acts = [Act::Delete, Act::Stop, Act::MoveByHand, Act::Pause];
        rng.shuffle(&mut acts);
        // The API restart comes at a seeded place among the acts (the test's
        // own calls wait it out; the charm's meet a closed port).
        let restart_at = rng.usize(0..=acts.len());
        let mut done: Vec<(String, Act, u16)> = Vec::new();
        let mut api_s = 0.0;
        for (k, a) in acts.iter().enumerate() {
            if k == restart_at {
                api_s = restart_api(cloud);
                settle_our_client(cloud).await;
            }
            let Some(name) = pending.pop() else { break };
            let status = act(cloud, &id_of(&name), *a).await;
            done.push((name, *a, status));
        }
        if restart_at == acts.len() {
            api_s = restart_api(cloud);
            settle_our_client(cloud).await;
        }

        // I1: the run ends by itself.
        let st = node.sim.finish(run).expect("state").clone();
        let drain_s = t0.elapsed().as_secs_f64();
        node.assert_no_secrets(&st);
        assert_eq!(st.exit_code, Some(0), "seed {seed}: {:#?}", st.action_log);
        let rep = report(&st);
        if std::env::var_os("NLM_ACTORS_DUMP").is_some() {
            eprintln!("REPORT {rep:#}");
            for l in &st.action_log {
                eprintln!("LOG {l:?}");
            }
        }
        assert_eq!(
            rep["instances"].as_array().map(Vec::len),
            Some(INSTANCES),
            "seed {seed}: {rep:#}"
        );

        // I2 against Nova's records: no migration from any host but this
        // one, except the other client's own move by hand: it picked an
        // instance not yet started, and the charm may have moved it to
        // node4 a moment before the hand move, which then starts there
        // (and fails: node1 is disabled). Seen in CI at seed 1796156966864.
        let mut row_acts = Vec::new();
        for (k, id) in ids.iter().enumerate() {
            let recs = records(cloud, id).await;
            let by_hand = done
                .iter()
                .any(|(n, a, _)| *n == names[k] && *a == Act::MoveByHand);
            let elsewhere: Vec<&Value> = recs
                .iter()
                .filter(|m| m["source_compute"] != SOURCE)
                .collect();
            assert!(
                elsewhere.len() <= usize::from(by_hand),
                "seed {seed} {}: a migration from elsewhere: {elsewhere:#?}",
                names[k]
            );
            let i = inst(&rep, id);
            let result = i["result"].as_str().unwrap_or_default().to_string();
            let (status, body) = cloud
                .nova(Method::GET, &format!("/servers/{id}"), None)
                .await;
            let server = body["server"].clone();
            let acted = done.iter().find(|(n, _, _)| *n == names[k]);
            // The report and Nova agree on where each instance is.
            match result.as_str() {
                // Its owner's delete may land just after our move of it
                // ended: the instance had been picked while not yet
                // started, and 1 s migrations are quick (seen in a
                // local rehearsal of CI at seed 1796171057189). Migrated, then deleted by its owner.
                "migrated" if status == 404 && acted.is_some_and(|(_, a, _)| *a == Act::Delete) => {
                }
                "migrated" => {
                    assert_eq!(status, 200, "seed {seed} {}: migrated but gone", names[k]);
                    assert_eq!(host_of(&server), DEST, "seed {seed} {}: {i:#}", names[k]);
                    // Moved by us, once: exactly one completed record, ours.
                    let lm: Vec<&Value> = recs
                        .iter()
                        .filter(|m| {
                            m["migration_type"] == "live-migration" && m["status"] == "completed"
                        })
                        .collect();
                    assert_eq!(lm.len(), 1, "seed {seed} {}: {recs:#?}", names[k]);
                }
                "skipped" => {
                    let (n, a, code) = acted.unwrap_or_else(|| {
                        panic!(
                            "seed {seed} {}: skipped but nobody touched it: {i:#}",
                            names[k]
                        )
                    });
                    assert!(
                        *code < 300,
                        "seed {seed} {n}: skipped though the {} was refused ({code})",
                        a.name()
                    );
                    let err = i["error"].as_str().unwrap_or_default();
                    match a {
                        Act::Delete => {
                            assert!(
                                status == 404 || err.contains("deleted"),
                                "seed {seed} {n}: {i:#}"
                            );
                            // Seen from the server, not by giving up on a
                            // record left "queued" (seed 1796152173883
                            // waited 600 s, then aborted into a 404).
                            let aborts: Vec<&String> = st
                                .action_log
                                .iter()
                                .filter(|l| l.contains(&format!("{n}: abort")))
                                .collect();
                            assert!(aborts.is_empty(), "seed {seed} {n}: {aborts:?}");
                        }
                        Act::MoveByHand => {
                            assert!(err.contains("by someone else"), "seed {seed} {n}: {i:#}");
                            assert_ne!(host_of(&server), SOURCE);
                        }
                        Act::Stop | Act::Pause => {
                            assert_eq!(
                                host_of(&server),
                                SOURCE,
                                "seed {seed} {n}: {i:#} GET → {status} {server:#}"
                            );
                        }
                    }
                }
                other => {
                    // failed / aborted / pending: still here (or deleted by
                    // the other client), never elsewhere by our hand.
                    assert!(
                        status == 404
                            || host_of(&server) == SOURCE
                            || acted.is_some_and(|(_, a, _)| *a == Act::MoveByHand),
                        "seed {seed} {} {other}: {i:#} {server:#}",
                        names[k]
                    );
                }
            }
            if let Some((n, a, code)) = acted {
                row_acts.push(format!(
                    "{n}: {}{} → {result}",
                    a.name(),
                    if *code >= 300 {
                        format!(" refused {code}")
                    } else {
                        String::new()
                    }
                ));
            }
            if result == "failed" {
                assert!(
                    acted.is_some(),
                    "seed {seed} {}: failed untouched: {i:#}",
                    names[k]
                );
            }
        }
        let c = |k: &str| rep["counts"][k].as_u64().unwrap_or(0);
        figure(&format!(
            "| {seed} | {drain_s:.1} | {} | {} | {} | {} | after {after} starts, {api_s:.1} s | ok |",
            c("migrated"),
            c("skipped"),
            c("failed"),
            row_acts.join("; ")
        ));
        // Every instance nobody touched was migrated (the API restart
        // cost no instance: I5).
        let touched = done.len() as u64;
        assert!(
            c("migrated") >= INSTANCES as u64 - touched,
            "seed {seed}: {} migrated of {INSTANCES} with {touched} touched: {rep:#}",
            c("migrated")
        );
        let en = node.run("enable", &[]);
        assert_eq!(en.action_failed, None, "{:#?}", en.action_log);
        cloud.delete_all_servers().await;
    }
    cloud.reset().await;
}
