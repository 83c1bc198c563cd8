//! `evacuate` and `migrate-vm` end to end: the real `dispatch` run by the
//! Juju harness (`Sim`) against the local cloud (real Keystone, Nova and
//! Placement, fake virt driver). Every assertion reads the outcome back from
//! Nova (hosts, states, migration records, the service) besides the action's
//! results, action-log lines and journal. Skipped (one line) without the
//! cloud; each test holds `CloudEnv::lock()` for its whole duration.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::cloud::{CloudEnv, DEST, IMAGE_ID, SOURCE, host_of, wait_until};
use crate::juju::{Sim, State, keystone_bag};

const T: Duration = Duration::from_secs(90);

// ------------------------------------------------------------------ the unit

/// One nova-live-migration unit beside nova-compute on `node1.maas`: the
/// harness state, nova.conf, and `NLM_NOVA_COMPUTE_LOG` pointing at the
/// cloud's own nova-compute log of node1.
pub(crate) struct Node {
    pub sim: Sim,
    /// The relation's password (must never show up anywhere).
    pub password: String,
    extra_env: Vec<(String, String)>,
}

/// The cloud's identity-credentials bag, as strings.
pub(crate) fn cloud_bag(cloud: &CloudEnv) -> BTreeMap<String, String> {
    cloud
        .relation_data()
        .into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
        .collect()
}

impl Node {
    /// Related to the local cloud's Keystone.
    pub fn new(cloud: &CloudEnv) -> Node {
        let mut n = Node::with_relation(Some(cloud_bag(cloud)));
        n.extra_env.push((
            "NLM_NOVA_COMPUTE_LOG".into(),
            cloud.compute_log(SOURCE).display().to_string(),
        ));
        n
    }

    /// With this keystone bag (`None`: no identity-credentials relation).
    pub fn with_relation(bag: Option<BTreeMap<String, String>>) -> Node {
        let mut sim = Sim::new().config("poll-interval", json!(0.5));
        let password = bag
            .as_ref()
            .and_then(|b| b.get("credentials_password").cloned())
            .unwrap_or_else(|| keystone_bag("h", "1")["credentials_password"].clone());
        if let Some(bag) = bag {
            sim = sim.with_keystone(vec![("keystone/0", bag)]);
        }
        std::fs::write(
            sim.path("nova.conf"),
            format!("[DEFAULT]\nhost = {SOURCE}\nmax_concurrent_live_migrations = 1\n"),
        )
        .unwrap();
        Node {
            sim,
            password,
            extra_env: Vec::new(),
        }
    }

    pub fn config(mut self, key: &str, value: Value) -> Node {
        self.sim.state.config.insert(key.to_string(), value);
        self
    }

    /// An extra environment variable for every event this unit runs.
    pub fn env(mut self, key: &str, value: impl ToString) -> Node {
        self.extra_env.push((key.to_string(), value.to_string()));
        self
    }

    /// Runs an action to its end; returns the state out.
    pub fn run(&mut self, action: &str, params: &[&str]) -> State {
        let env = self.extra_env.clone();
        let t = Instant::now();
        let st = self
            .sim
            .run_env(&format!("actions/{action}"), params, env)
            .unwrap_or_else(|e| panic!("{action} {params:?}: {e}"))
            .clone();
        eprintln!(
            "{action} {params:?}: {:.1} s, {}",
            t.elapsed().as_secs_f64(),
            st.action_results
                .get("summary")
                .map(String::as_str)
                .unwrap_or("")
        );
        self.assert_no_secrets(&st);
        st
    }

    /// Starts an action without waiting.
    pub fn start(&mut self, action: &str, params: &[&str]) -> crate::juju::sim::Running {
        let env = self.extra_env.clone();
        self.sim
            .start_env(&format!("actions/{action}"), params, env)
            .unwrap_or_else(|e| panic!("{action}: {e}"))
    }

    /// SIGKILLs a started action (as `juju cancel-task` does).
    pub fn kill(&mut self, mut running: crate::juju::sim::Running) -> State {
        running.child.kill().expect("SIGKILL dispatch");
        let st = self.sim.finish(running).expect("state after kill").clone();
        assert_eq!(st.exit_code, Some(128 + 9), "killed by SIGKILL");
        st
    }

    pub fn journal_path(&self) -> PathBuf {
        self.sim.path("state").join("journal.json")
    }

    /// The journal document (`{"version": 1, "state": {...}}`), if any.
    pub fn journal(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.journal_path()).ok()?;
        Some(serde_json::from_str(&text).expect("journal is JSON"))
    }

    /// No password or token in anything the unit produced (the failure
    /// names what leaked, never the text that holds it).
    pub fn assert_no_secrets(&self, st: &State) {
        let mut all = st.everything();
        if let Ok(j) = std::fs::read_to_string(self.journal_path()) {
            all.push_str(&j);
        }
        assert!(
            !all.contains(&self.password),
            "the relation password leaked"
        );
        // Keystone Fernet tokens start so; no X-Auth-Token header either.
        assert!(!all.contains("gAAAAA"), "a token leaked");
        assert!(!all.contains("X-Auth-Token"), "an auth header leaked");
    }
}

/// The parsed `report` result.
pub(crate) fn report(st: &State) -> Value {
    let r = st
        .action_results
        .get("report")
        .unwrap_or_else(|| panic!("no report; results {:?}", st.action_results));
    serde_json::from_str(r).expect("report is JSON")
}

/// The report's instance `id`.
pub(crate) fn inst<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in report {report:#}"))
}

/// `instances.<id>.<field>` from action-set.
fn key<'a>(st: &'a State, id: &str, field: &str) -> Option<&'a str> {
    st.action_results
        .get(&format!("instances.{id}.{field}"))
        .map(String::as_str)
}

pub(crate) fn count(st: &State, result: &str) -> u32 {
    st.action_results
        .get(&format!("counts.{result}"))
        .unwrap_or_else(|| panic!("no counts.{result}: {:?}", st.action_results))
        .parse()
        .unwrap()
}

pub(crate) fn log_has(st: &State, needle: &str) -> bool {
    st.action_log.iter().any(|l| l.contains(needle))
}

// ------------------------------------------------------------- cloud helpers

/// Boots m1.tiny servers on node1 (all POSTs first, then waits until ACTIVE),
/// each `(name, metadata)`; returns their ids in order.
pub(crate) async fn boot(cloud: &CloudEnv, specs: &[(&str, &[(&str, &str)])]) -> Vec<String> {
    let flavor = cloud.flavor_id("m1.tiny").await;
    let mut ids = Vec::new();
    for (name, meta) in specs {
        let meta: serde_json::Map<String, Value> = meta
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let body = json!({"server": {"name": name, "imageRef": IMAGE_ID, "flavorRef": flavor,
            "networks": "none", "host": SOURCE, "metadata": meta}});
        let v = cloud
            .call(Method::POST, "/servers", Some(body), &[202])
            .await;
        ids.push(v["server"]["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        wait_status(cloud, id, "ACTIVE").await;
    }
    ids
}

pub(crate) async fn wait_status(cloud: &CloudEnv, id: &str, status: &str) -> Value {
    wait_until(
        || async move {
            let s = cloud.server(id).await;
            (s["status"] == status && s["OS-EXT-STS:task_state"].is_null()).then_some(s)
        },
        T,
    )
    .await
}

pub(crate) async fn server_action(cloud: &CloudEnv, id: &str, body: Value) {
    cloud
        .call(
            Method::POST,
            &format!("/servers/{id}/action"),
            Some(body),
            &[202],
        )
        .await;
}

pub(crate) async fn pause(cloud: &CloudEnv, id: &str) {
    server_action(cloud, id, json!({"pause": null})).await;
    wait_status(cloud, id, "PAUSED").await;
}

pub(crate) async fn stop(cloud: &CloudEnv, id: &str) {
    server_action(cloud, id, json!({"os-stop": null})).await;
    wait_status(cloud, id, "SHUTOFF").await;
}

/// Puts a server in ERROR (admin `os-resetState`).
pub(crate) async fn set_error(cloud: &CloudEnv, id: &str) {
    server_action(cloud, id, json!({"os-resetState": {"state": "error"}})).await;
    wait_status(cloud, id, "ERROR").await;
}

/// (host, status, task_state) of each server.
pub(crate) async fn where_are(cloud: &CloudEnv, ids: &[String]) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for id in ids {
        let s = cloud.server(id).await;
        out.push((
            host_of(&s).to_string(),
            s["status"].as_str().unwrap_or("").to_string(),
            s["OS-EXT-STS:task_state"].clone(),
        ));
    }
    out
}

/// The nova-compute service record of `host`.
pub(crate) async fn service(cloud: &CloudEnv, host: &str) -> Value {
    let v = cloud
        .get(&format!("/os-services?binary=nova-compute&host={host}"))
        .await;
    v["services"][0].clone()
}

pub(crate) async fn set_service(cloud: &CloudEnv, host: &str, enabled: bool) {
    let id = service(cloud, host).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let body = if enabled {
        json!({"status": "enabled"})
    } else {
        json!({"status": "disabled", "disabled_reason": "drain_cloud test"})
    };
    cloud
        .call(
            Method::PUT,
            &format!("/os-services/{id}"),
            Some(body),
            &[200],
        )
        .await;
}

/// Every migration record of a server (`/os-migrations`), of one type.
pub(crate) async fn migration_records(cloud: &CloudEnv, id: &str, kind: &str) -> Vec<Value> {
    let v = cloud
        .get(&format!("/os-migrations?instance_uuid={id}"))
        .await;
    v["migrations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["migration_type"] == kind)
        .cloned()
        .collect()
}

/// Every server's migration records, all of them.
async fn record_count(cloud: &CloudEnv, ids: &[String]) -> usize {
    let mut n = 0;
    for id in ids {
        n += cloud
            .get(&format!("/os-migrations?instance_uuid={id}"))
            .await["migrations"]
            .as_array()
            .map_or(0, Vec::len);
    }
    n
}

/// The reason names the unit, the action and a time within the run.
fn assert_reason(reason: &str, action: &str, t0: u64) {
    assert!(
        reason.starts_with(&format!("nova-live-migration/0 {action}")),
        "{reason}"
    );
    let at = reason.rsplit(" at ").next().unwrap();
    let ms = nlm::time::parse_iso(at).unwrap_or_else(|| panic!("no time in {reason:?}"));
    assert!(
        ms + 1000 >= t0 && ms <= nlm::time::now_ms(),
        "time of {reason:?}"
    );
}

/// The journal: mode 0600, ended, no secrets.
pub(crate) fn assert_journal(node: &Node, ended: bool) -> Value {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(node.journal_path()).expect("journal written");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "journal mode");
    let j = node.journal().unwrap();
    assert_eq!(j["version"], nlm::state::journal::VERSION);
    assert_eq!(!j["state"]["ended_at"].is_null(), ended, "ended_at: {j:#}");
    j
}

/// Prints how long a test held the cloud (the lock may wait for others).
pub(crate) struct Timed(&'static str, Instant);

impl Timed {
    pub fn start(name: &'static str) -> Timed {
        Timed(name, Instant::now())
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        eprintln!(
            "{}: {:.1} s on the cloud",
            self.0,
            self.1.elapsed().as_secs_f64()
        );
    }
}

// --------------------------------------------------------------------- tests

#[tokio::test]
async fn evacuate_mixed_states_then_include_stopped() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let cloud = &cloud;
    let _lock = cloud.lock();
    let _t = Timed::start("evacuate_mixed_states_then_include_stopped");
    cloud.reset().await;
    let slow: &[(&str, &str)] = &[("nlm_migration_seconds", "3")];
    let ids = boot(
        cloud,
        &[
            ("mix-a1", slow),
            ("mix-a2", slow),
            ("mix-a3", slow),
            ("mix-paused", &[]),
            ("mix-stopped", &[]),
            ("mix-error", &[]),
            ("mix-excluded", &[]),
        ],
    )
    .await;
    // Proof of empty below: no allocation leaked by an earlier test.
    cloud.delete_leaked_allocations(SOURCE).await;
    let [a1, a2, a3, paused, stopped, error, excluded]: [String; 7] =
        ids.clone().try_into().unwrap();
    pause(cloud, &paused).await;
    stop(cloud, &stopped).await;
    set_error(cloud, &error).await;

    let mut node = Node::new(cloud);
    let t0 = nlm::time::now_ms();
    let st = node.run("evacuate", &["exclude=mix-excluded"]);
    assert_eq!(st.action_failed, None, "log: {:#?}", st.action_log);
    assert_eq!(st.exit_code, Some(0));

    // Nova: the movable ones are on node4 in their state; the rest stayed.
    let now = where_are(cloud, &ids).await;
    for (i, want) in [
        (0, (DEST, "ACTIVE")),
        (1, (DEST, "ACTIVE")),
        (2, (DEST, "ACTIVE")),
        (3, (DEST, "PAUSED")),
        (4, (SOURCE, "SHUTOFF")),
        (5, (SOURCE, "ERROR")),
        (6, (SOURCE, "ACTIVE")),
    ] {
        assert_eq!(
            (now[i].0.as_str(), now[i].1.as_str()),
            want,
            "server {}",
            ids[i]
        );
        assert!(now[i].2.is_null(), "task_state of {}", ids[i]);
    }
    for id in [&a1, &a2, &a3, &paused] {
        let lm = migration_records(cloud, id, "live-migration").await;
        assert_eq!(lm.len(), 1, "one live migration of {id}: {lm:?}");
        assert_eq!(lm[0]["status"], "completed");
    }
    for id in [&stopped, &error, &excluded] {
        assert_eq!(record_count(cloud, std::slice::from_ref(id)).await, 0);
    }

    // The service: disabled with unit, action and time, and it stays so.
    let svc = service(cloud, SOURCE).await;
    assert_eq!(svc["status"], "disabled");
    let reason = svc["disabled_reason"].as_str().unwrap();
    assert_reason(reason, "evacuate", t0);

    // Results: counts.*, instances.*, the report.
    assert_eq!(count(&st, "migrated"), 4);
    assert_eq!(count(&st, "skipped"), 3);
    for k in ["planned", "cold-migrated", "failed", "aborted", "pending"] {
        assert_eq!(count(&st, k), 0, "counts.{k}");
    }
    let rep = report(&st);
    assert_eq!(rep["action"], "evacuate");
    assert_eq!(rep["host"], SOURCE);
    assert_eq!(rep["dry_run"], false);
    assert_eq!(rep["service"]["status"], "disabled");
    assert_eq!(rep["service"]["disabled_reason"], reason);
    assert_eq!(rep["counts"]["migrated"], 4);
    assert_eq!(rep["counts"]["skipped"], 3);
    assert!(rep["duration_s"].as_f64().unwrap() > 0.0);
    for id in [&a1, &a2, &a3, &paused] {
        let i = inst(&rep, id);
        assert_eq!(i["result"], "migrated", "{i}");
        assert_eq!(i["source"], SOURCE);
        assert_eq!(i["destination"], DEST);
        assert_eq!(i["block_migration"], "auto");
        assert_eq!(i["attempts"], 1);
        assert!(i["migration_id"].as_u64().is_some());
        assert!(i["duration_s"].as_f64().unwrap() > 0.0);
        assert!(i["error"].is_null());
        assert_eq!(key(&st, id, "result"), Some("migrated"));
        assert_eq!(key(&st, id, "destination"), Some(DEST));
        assert!(key(&st, id, "duration").is_some());
        assert_eq!(key(&st, id, "error"), None);
    }
    let why = |id: &str| inst(&rep, id)["error"].as_str().unwrap_or("").to_string();
    assert!(
        why(&stopped).contains("include-stopped=true"),
        "{}",
        why(&stopped)
    );
    assert!(why(&error).contains("ERROR"), "{}", why(&error));
    assert_eq!(why(&excluded), "excluded");
    for id in [&stopped, &error, &excluded] {
        assert_eq!(inst(&rep, id)["result"], "skipped");
        assert_eq!(key(&st, id, "result"), Some("skipped"));
        assert_eq!(key(&st, id, "error"), Some(why(id).as_str()));
    }
    assert_eq!(
        st.action_results["summary"],
        format!(
            "evacuate {SOURCE}: 4 migrated, 3 skipped in {:.1} s; verified: only the 3 instances reported left remain",
            rep["duration_s"].as_f64().unwrap()
        )
    );
    // Proof of empty: what stayed is what the report left, with its allocations.
    let v = &rep["verification"];
    assert_eq!(v["ok"], true, "{v}");
    let mut left: Vec<(&str, &str)> = v["instances_left"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap(), i["result"].as_str().unwrap()))
        .collect();
    left.sort();
    let mut want = vec![
        (stopped.as_str(), "skipped"),
        (error.as_str(), "skipped"),
        (excluded.as_str(), "skipped"),
    ];
    want.sort();
    assert_eq!(left, want, "{v}");
    assert_eq!(v["orphan_allocations"], json!([]), "{v}");

    // action-log: the disable, progress in MiB for these 64 MB guests, ends.
    assert!(log_has(
        &st,
        &format!("disabled nova-compute on {SOURCE}: {reason}")
    ));
    assert!(
        st.action_log
            .iter()
            .any(|l| l.contains("mix-a") && l.contains(" running ") && l.ends_with("/64 MiB)")),
        "{:#?}",
        st.action_log
    );
    assert!(!log_has(&st, "GiB"), "{:#?}", st.action_log);
    for name in ["mix-a1", "mix-a2", "mix-a3", "mix-paused"] {
        assert!(
            st.action_log
                .iter()
                .any(|l| l.contains(&format!("{name} → {DEST} migrated in "))),
            "{name}: {:#?}",
            st.action_log
        );
    }
    // The poll budget: one list per poll, one progress read per running
    // migration, server reads only when a migration is unknown or ended.
    assert_api_budget(&st, 4);
    assert_journal(&node, true);
    // Juju runs update-status only after the action (one operation at a
    // time per unit): the action kept the status itself — maintenance with
    // its progress, set on each change — and left a true one at its end.
    let during: Vec<&str> = st
        .statuses
        .iter()
        .filter(|s| s.status == "maintenance")
        .map(|s| s.message.as_str())
        .collect();
    assert!(
        during
            .iter()
            .any(|m| m.contains(&format!("evacuating {SOURCE}: 0/4 moved"))),
        "{during:#?}"
    );
    assert!(
        during
            .iter()
            .any(|m| m.contains(&format!("evacuating {SOURCE}: 2/4 moved"))),
        "{during:#?}"
    );
    // Once per change (a run shorter than the once-a-minute refresh repeats
    // no line).
    if rep["duration_s"].as_f64().unwrap() < 55.0 {
        let mut dedup = during.clone();
        dedup.dedup();
        assert_eq!(
            dedup.len(),
            during.len(),
            "at most once per change: {during:#?}"
        );
    }
    let last = st.statuses.last().expect("a status at the end");
    assert_eq!(last.status, "active", "{last:?}");
    assert!(
        last.message.contains(&format!("on {SOURCE}: disabled (")),
        "{last:?}"
    );

    // Again with include-stopped: the SHUTOFF one is cold-migrated (and
    // confirmed), the service stays disabled with the first reason.
    let t1 = nlm::time::now_ms();
    let st = node.run(
        "evacuate",
        &["include-stopped=true", "exclude=mix-excluded"],
    );
    assert_eq!(st.action_failed, None, "log: {:#?}", st.action_log);
    assert!(
        log_has(
            &st,
            &format!(
                "service nova-compute on {SOURCE} was already disabled ({reason}); leaving its reason"
            )
        ),
        "{:#?}",
        st.action_log
    );
    assert_eq!(count(&st, "cold-migrated"), 1);
    assert_eq!(count(&st, "skipped"), 2);
    assert_eq!(count(&st, "migrated"), 0);
    assert_eq!(key(&st, &stopped, "result"), Some("cold-migrated"));
    assert_eq!(key(&st, &stopped, "destination"), Some(DEST));
    assert!(log_has(&st, "mix-stopped → node4.maas resized, confirming"));
    let s = wait_status(cloud, &stopped, "SHUTOFF").await;
    assert_eq!(host_of(&s), DEST);
    let cm = migration_records(cloud, &stopped, "migration").await;
    assert_eq!(cm.len(), 1, "{cm:?}");
    assert_eq!(cm[0]["status"], "confirmed");
    let svc = service(cloud, SOURCE).await;
    assert_eq!(svc["status"], "disabled");
    assert_eq!(svc["disabled_reason"], reason, "the first reason stays");
    let now = where_are(cloud, &[error.clone(), excluded.clone()]).await;
    assert_eq!(now[0].0, SOURCE);
    assert_eq!(now[1].0, SOURCE);
    assert!(t1 > t0);
    cloud.reset().await;
}

/// Checks the `polls, API calls` juju-log line of a run of `n` instances.
fn assert_api_budget(st: &State, n: u64) {
    let line = st
        .juju_log
        .iter()
        .map(|l| l.message.as_str())
        .find(|m| m.contains(" polls, ") && m.contains("API calls"))
        .unwrap_or_else(|| panic!("no API call line in {:#?}", st.juju_log));
    // `evacuate: 24 polls, 78 API calls (0 authentications, …): GET … ×35, …`
    let (head, routes) = line
        .split_once(" API calls (")
        .and_then(|(head, rest)| Some((head, rest.split_once("): ")?.1)))
        .unwrap_or_else(|| panic!("{line}"));
    let polls: u64 = head
        .split(": ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    let counts: BTreeMap<&str, u64> = routes
        .split(", ")
        .filter_map(|p| p.rsplit_once(" ×"))
        .map(|(r, n)| (r, n.parse().unwrap()))
        .collect();
    let route = |r: &str| counts.get(r).copied().unwrap_or(0);
    let lists = route("GET /os-migrations");
    let progress = route("GET /servers/{id}/migrations/{mid}");
    let servers = route("GET /servers/{id}");
    eprintln!("{line}");
    // One list per poll, plus at most one lookup per start right after it.
    assert!(lists <= polls + 2 * n, "{line}");
    // At most one progress read per poll per running migration (≤ 2 at once).
    assert!(progress <= 2 * polls, "{line}");
    // Server reads: only for unknown or ended migrations, a few per instance.
    assert!(servers <= 4 * n + 2, "{line}");
}

#[tokio::test]
async fn dry_run_changes_nothing_and_plans_each_instance() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let cloud = &cloud;
    let _lock = cloud.lock();
    let _t = Timed::start("dry_run_changes_nothing_and_plans_each_instance");
    cloud.reset().await;
    let ids = boot(
        cloud,
        &[("dry-a", &[]), ("dry-b", &[]), ("dry-stopped", &[])],
    )
    .await;
    stop(cloud, &ids[2]).await;
    let before = where_are(cloud, &ids).await;
    let svc_before = service(cloud, SOURCE).await;

    let mut node = Node::new(cloud);
    for params in [
        vec!["dry-run=true"],
        vec![
            "dry-run=true",
            "include-stopped=true",
            "target-host=node4.maas",
        ],
    ] {
        let st = node.run("evacuate", &params);
        assert_eq!(st.action_failed, None, "{params:?}: {:#?}", st.action_log);
        let rep = report(&st);
        assert_eq!(rep["dry_run"], true);
        assert_eq!(rep["service"]["status"], "enabled");
        let cold = params.contains(&"include-stopped=true");
        let dest = if params.contains(&"target-host=node4.maas") {
            DEST
        } else {
            "scheduler"
        };
        assert_eq!(count(&st, "planned"), if cold { 3 } else { 2 });
        assert_eq!(count(&st, "skipped"), if cold { 0 } else { 1 });
        for (i, id) in ids.iter().enumerate() {
            let it = inst(&rep, id);
            let plan = &it["plan"];
            assert_eq!(plan["storage"], "local", "{it}");
            assert_eq!(plan["vcpus"], 1);
            assert_eq!(plan["ram_mb"], 64);
            assert_eq!(plan["disk_gb"], 1);
            if i < 2 || cold {
                assert_eq!(it["result"], "planned", "{it}");
                assert_eq!(plan["destination"], dest);
                assert_eq!(plan["fits"], true);
                assert_eq!(key(&st, id, "result"), Some("planned"));
            } else {
                assert_eq!(it["result"], "skipped", "{it}");
                assert_eq!(plan["fits"], false);
            }
        }
        assert!(st.action_results["summary"].contains("(dry-run)"));
    }
    // migrate-vm too.
    let st = node.run("migrate-vm", &["vm=dry-a", "dry-run=true"]);
    assert_eq!(st.action_failed, None);
    let rep = report(&st);
    assert_eq!(rep["instances"].as_array().unwrap().len(), 1);
    assert_eq!(inst(&rep, &ids[0])["result"], "planned");

    // Nothing changed: service, servers, no migration record, no journal.
    assert_eq!(where_are(cloud, &ids).await, before);
    let svc = service(cloud, SOURCE).await;
    assert_eq!(svc["status"], "enabled");
    assert_eq!(svc["disabled_reason"], svc_before["disabled_reason"]);
    assert_eq!(record_count(cloud, &ids).await, 0);
    assert!(node.journal().is_none(), "a dry-run writes no journal");
    cloud.reset().await;
}

#[tokio::test]
async fn migrate_vm_by_name_and_id_with_and_without_target() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let cloud = &cloud;
    let _lock = cloud.lock();
    let _t = Timed::start("migrate_vm_by_name_and_id_with_and_without_target");
    cloud.reset().await;
    let ids = boot(cloud, &[("one-a", &[]), ("one-b", &[])]).await;
    let mut node = Node::new(cloud);
    // By name to the scheduler's choice, by id to a target-host.
    let cases: [(&str, Vec<String>); 2] = [
        (&ids[0], vec!["vm=one-a".into()]),
        (
            &ids[1],
            vec![format!("vm={}", ids[1]), format!("target-host={DEST}")],
        ),
    ];
    for (n, (id, params)) in cases.iter().enumerate() {
        let params: Vec<&str> = params.iter().map(String::as_str).collect();
        let st = node.run("migrate-vm", &params);
        assert_eq!(st.action_failed, None, "{params:?}: {:#?}", st.action_log);
        let rep = report(&st);
        assert_eq!(rep["action"], "migrate-vm");
        assert_eq!(rep["instances"].as_array().unwrap().len(), 1, "{rep:#}");
        assert_eq!(inst(&rep, id)["result"], "migrated");
        assert_eq!(count(&st, "migrated"), 1);
        assert_eq!(key(&st, id, "destination"), Some(DEST));
        // Only this one moved.
        let now = where_are(cloud, &ids).await;
        for (k, (host, status, task)) in now.iter().enumerate() {
            let want = if k <= n { DEST } else { SOURCE };
            assert_eq!((host.as_str(), status.as_str()), (want, "ACTIVE"));
            assert!(task.is_null());
        }
        // The service is left enabled.
        let svc = service(cloud, SOURCE).await;
        assert_eq!(svc["status"], "enabled", "{svc}");
        assert_eq!(rep["service"]["status"], "enabled");
        assert!(!log_has(&st, "disabled nova-compute"));
        assert_journal(&node, true);
    }
    for id in &ids {
        assert_eq!(
            migration_records(cloud, id, "live-migration").await.len(),
            1
        );
    }
    cloud.reset().await;
}

// ------------------------------------------------------------ Placement

/// Placement as admin (token from the cloud's adminrc).
pub(crate) struct Placement {
    http: reqwest::Client,
    url: String,
    token: String,
}

/// A consumer that holds node4's spare memory while a test runs.
const HOG: &str = "6d0c7f3e-4b1a-4e59-9a8e-7c2b1d0e5f41";

impl Placement {
    pub async fn connect(cloud: &CloudEnv) -> Placement {
        let os = cloud.os_env();
        let get = |k: &str, d: &str| os.get(k).cloned().unwrap_or_else(|| d.to_string());
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": get("OS_USERNAME", "admin"),
                "domain": {"name": get("OS_USER_DOMAIN_NAME", "Default")},
                "password": get("OS_PASSWORD", "")}}},
            "scope": {"project": {"name": get("OS_PROJECT_NAME", "admin"),
                "domain": {"name": get("OS_PROJECT_DOMAIN_NAME", "Default")}}}}});
        let http = reqwest::Client::new();
        let r = http
            .post(format!(
                "{}/auth/tokens",
                get("OS_AUTH_URL", "").trim_end_matches('/')
            ))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let token = r.headers()["x-subject-token"].to_str().unwrap().to_string();
        let v: Value = r.json().await.unwrap();
        let url = v["token"]["catalog"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["type"] == "placement")
            .flat_map(|s| s["endpoints"].as_array().unwrap().iter())
            .find(|e| e["interface"] == "public")
            .and_then(|e| e["url"].as_str())
            .unwrap()
            .trim_end_matches('/')
            .to_string();
        Placement { http, url, token }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("X-Auth-Token", &self.token)
            .header("OpenStack-API-Version", "placement 1.28");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let s = r.status().as_u16();
        let t = r.text().await.unwrap_or_default();
        (s, serde_json::from_str(&t).unwrap_or(Value::Null))
    }

    pub async fn provider(&self, name: &str) -> String {
        let (_, v) = self
            .call(
                Method::GET,
                &format!("/resource_providers?name={name}"),
                None,
            )
            .await;
        v["resource_providers"][0]["uuid"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Allocates all but `leave_mb` of node4's memory to a consumer that is no
    /// instance (as another tenant's servers would).
    pub async fn hog_memory(&self, host: &str, leave_mb: u64) {
        self.release().await;
        let rp = self.provider(host).await;
        let (_, inv) = self
            .call(
                Method::GET,
                &format!("/resource_providers/{rp}/inventories/MEMORY_MB"),
                None,
            )
            .await;
        let (_, usage) = self
            .call(
                Method::GET,
                &format!("/resource_providers/{rp}/usages"),
                None,
            )
            .await;
        let cap = (inv["total"].as_f64().unwrap() - inv["reserved"].as_f64().unwrap())
            * inv["allocation_ratio"].as_f64().unwrap();
        let used = usage["usages"]["MEMORY_MB"].as_f64().unwrap();
        let amount = (cap - used) as u64 - leave_mb;
        assert!(amount <= inv["max_unit"].as_u64().unwrap());
        let body = json!({"allocations": {rp: {"resources": {"MEMORY_MB": amount}}},
            "project_id": "00000000-0000-4000-8000-00000000c0de",
            "user_id": "00000000-0000-4000-8000-00000000c0de",
            "consumer_generation": null});
        let (s, v) = self
            .call(Method::PUT, &format!("/allocations/{HOG}"), Some(body))
            .await;
        assert_eq!(s, 204, "hog allocation: {v}");
    }

    pub async fn release(&self) {
        let (s, _) = self
            .call(Method::DELETE, &format!("/allocations/{HOG}"), None)
            .await;
        assert!(s == 204 || s == 404, "release: {s}");
    }
}

#[tokio::test]
async fn capacity_shortfall_is_refused_with_nothing_changed() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let cloud = &cloud;
    let _lock = cloud.lock();
    let _t = Timed::start("capacity_shortfall_is_refused_with_nothing_changed");
    cloud.reset().await;
    let ids = boot(cloud, &[("cap-a", &[]), ("cap-b", &[])]).await;
    let before = where_are(cloud, &ids).await;
    let mut node = Node::new(cloud);

    // 1. No other enabled host.
    set_service(cloud, DEST, false).await;
    let st = node.run("evacuate", &[]);
    set_service(cloud, DEST, true).await;
    let msg = st.action_failed.clone().expect("refused");
    assert!(
        msg.starts_with("pre-flight failed, nothing was changed"),
        "{msg}"
    );
    assert!(msg.contains("no enabled, up candidate host"), "{msg}");
    assert!(msg.contains("free capacity, exclude instances, or run with force=true"));
    assert_eq!(count(&st, "pending"), 2);
    assert_eq!(report(&st)["service"]["status"], "enabled");

    // 2. Placement says node4 has 32 MB left: neither 64 MB guest fits.
    let placement = Placement::connect(cloud).await;
    placement.hog_memory(DEST, 32).await;
    let st = node.run("evacuate", &[]);
    let st_vm = node.run("migrate-vm", &["vm=cap-a", &format!("target-host={DEST}")]);
    placement.release().await;
    let msg = st.action_failed.clone().expect("refused");
    assert!(
        msg.contains(
            "not enough capacity on the other enabled, up compute hosts for 2 instance(s)"
        ),
        "{msg}"
    );
    assert!(msg.contains("MEMORY_MB short by 32"), "{msg}");
    assert!(msg.contains(&ids[0]) && msg.contains(&ids[1]), "{msg}");
    let msg = st_vm.action_failed.clone().expect("refused");
    assert!(
        msg.contains(&format!(
            "not enough capacity on target-host {DEST} for 1 instance(s)"
        )),
        "{msg}"
    );

    // Nothing changed.
    assert_eq!(where_are(cloud, &ids).await, before);
    assert_eq!(service(cloud, SOURCE).await["status"], "enabled");
    assert_eq!(record_count(cloud, &ids).await, 0);
    assert!(node.journal().is_none());
    cloud.reset().await;
}

#[tokio::test]
async fn failed_migrations_are_retried_reported_and_diagnosed() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let cloud = &cloud;
    let _lock = cloud.lock();
    let _t = Timed::start("failed_migrations_are_retried_reported_and_diagnosed");
    cloud.reset().await;
    let ids = boot(
        cloud,
        &[
            (
                "bad-fail",
                &[("nlm_failure", "fail"), ("nlm_migration_seconds", "2")],
            ),
            ("bad-precheck", &[("nlm_failure", "precheck")]),
            (
                "bad-error",
                &[("nlm_failure", "error"), ("nlm_migration_seconds", "2")],
            ),
            ("bad-ok", &[("nlm_migration_seconds", "1")]),
        ],
    )
    .await;
    let [fail, precheck, error, ok]: [String; 4] = ids.clone().try_into().unwrap();
    let mut node = Node::new(cloud);
    let st = node.run("evacuate", &[]);
    let msg = st.action_failed.clone().expect("action-fail");
    assert!(msg.starts_with("3 of 4 instances were not moved"), "{msg}");
    assert_eq!(count(&st, "failed"), 3);
    assert_eq!(count(&st, "migrated"), 1);
    let rep = report(&st);
    eprintln!("{}", serde_json::to_string_pretty(&rep).unwrap());

    // fail: retried once (retries=1), then failed; the server is fine on node1.
    let i = inst(&rep, &fail);
    assert_eq!(i["result"], "failed");
    assert_eq!(i["attempts"], 2, "{i:#}");
    let lm = migration_records(cloud, &fail, "live-migration").await;
    assert_eq!(lm.len(), 2, "{lm:?}");
    assert!(lm.iter().all(|m| m["status"] == "failed"));
    assert!(
        i["error"].as_str().unwrap().contains("after 2 attempts"),
        "{i:#}"
    );
    // precheck: the destination refused (Nova's message), retried, failed.
    let i = inst(&rep, &precheck);
    assert_eq!(i["result"], "failed");
    assert_eq!(i["attempts"], 2, "{i:#}");
    assert_eq!(
        migration_records(cloud, &precheck, "live-migration")
            .await
            .len(),
        2
    );
    // error: instance in ERROR, failed and never retried.
    let i = inst(&rep, &error);
    assert_eq!(i["result"], "failed");
    assert_eq!(i["attempts"], 1, "{i:#}");
    assert!(i["error"].as_str().unwrap().contains("ERROR"), "{i:#}");
    assert!(
        i["error"].as_str().unwrap().contains("not retried"),
        "{i:#}"
    );
    assert_eq!(
        migration_records(cloud, &error, "live-migration")
            .await
            .len(),
        1
    );
    assert_eq!(inst(&rep, &ok)["result"], "migrated");

    // Diagnostics: Nova's own words in `error` (the action's fault, else the
    // ERROR line of this node's nova-compute.log), and the log lines naming
    // the instance, without their request context.
    let error_of = |id: &str| inst(&rep, id)["error"].as_str().unwrap().to_string();
    assert!(
        error_of(&fail)
            .contains("; nova-compute.log: Migration operation has aborted (nlm_failure=fail)"),
        "{}",
        error_of(&fail)
    );
    assert!(
        error_of(&precheck).contains(
            "; nova: compute_check_can_live_migrate_destination: Migration pre-check error"
        ),
        "{}",
        error_of(&precheck)
    );
    assert!(
        error_of(&error)
            .contains("; nova-compute.log: Live migration failed.: nova.exception.MigrationError"),
        "{}",
        error_of(&error)
    );
    for id in [&fail, &precheck, &error] {
        assert_eq!(key(&st, id, "error"), Some(error_of(id).as_str()));
        let d: Vec<&str> = inst(&rep, id)["decisions"]
            .as_array()
            .unwrap_or_else(|| panic!("decisions of {id}"))
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let log_lines: Vec<&&str> = d
            .iter()
            .filter(|l| l.starts_with("nova-compute.log: "))
            .collect();
        assert!(!log_lines.is_empty(), "{id}: {d:#?}");
        for l in &log_lines {
            assert!(l.contains(&format!("[instance: {id}]")), "{l}");
            assert!(!l.contains("req-"), "request context left in {l}");
        }
        if *id != precheck {
            assert!(
                log_lines.iter().any(|l| l.contains(" ERROR ")),
                "{id}: {d:#?}"
            );
        }
    }
    let s = where_are(cloud, &ids).await;
    assert_eq!((s[0].0.as_str(), s[0].1.as_str()), (SOURCE, "ACTIVE"));
    assert_eq!((s[1].0.as_str(), s[1].1.as_str()), (SOURCE, "ACTIVE"));
    assert_eq!((s[2].0.as_str(), s[2].1.as_str()), (SOURCE, "ERROR"));
    assert_eq!((s[3].0.as_str(), s[3].1.as_str()), (DEST, "ACTIVE"));
    assert_eq!(service(cloud, SOURCE).await["status"], "disabled");
    assert_journal(&node, true);
    cloud.reset().await;
}

#[tokio::test]
async fn sigkill_at_several_points_then_evacuate_again() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let cloud = &cloud;
    let _lock = cloud.lock();
    let _t = Timed::start("sigkill_at_several_points_then_evacuate_again");
    cloud.reset().await;
    let slow: &[(&str, &str)] = &[("nlm_migration_seconds", "3")];
    let ids = boot(
        cloud,
        &[
            ("kill-1", slow),
            ("kill-2", slow),
            ("kill-3", slow),
            ("kill-4", slow),
        ],
    )
    .await;
    let mut node = Node::new(cloud);
    let t0 = nlm::time::now_ms();

    // 1. Right after the disable.
    let run = node.start("evacuate", &[]);
    wait_until(
        || async move { (service(cloud, SOURCE).await["status"] == "disabled").then_some(()) },
        T,
    )
    .await;
    let st = node.kill(run);
    eprintln!("killed after the disable: {:#?}", st.action_log);
    node.assert_no_secrets(&st);
    assert_journal(&node, false);

    // 2. Mid-migration: a migration is running with progress.
    let run = node.start("evacuate", &[]);
    let ids_ref = &ids;
    wait_until(
        || async move {
            for id in ids_ref {
                if cloud.running_migration(id).await.is_some() {
                    return Some(());
                }
            }
            None
        },
        T,
    )
    .await;
    let st = node.kill(run);
    eprintln!("killed mid-migration: {:#?}", st.action_log);
    assert!(
        log_has(&st, "resuming the evacuate started at"),
        "{:#?}",
        st.action_log
    );
    // The disable of the first run is recognised as ours (or done now).
    assert!(
        log_has(
            &st,
            &format!("nova-compute on {SOURCE} stays disabled: nova-live-migration/0 evacuate")
        ) || log_has(&st, &format!("disabled nova-compute on {SOURCE}: ")),
        "{:#?}",
        st.action_log
    );
    assert!(
        !log_has(&st, "was already disabled"),
        "{:#?}",
        st.action_log
    );
    assert_journal(&node, false);

    // 3. Between migrations: as soon as this run reports one migrated.
    let run = node.start("evacuate", &[]);
    let started = Instant::now();
    loop {
        let live = node.sim.live_state().unwrap_or_default();
        if live.action_log.iter().any(|l| l.contains(" migrated in ")) {
            break;
        }
        assert!(
            started.elapsed() < T,
            "no migration ended: {:#?}",
            live.action_log
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let st = node.kill(run);
    eprintln!("killed between migrations: {:#?}", st.action_log);
    assert_journal(&node, false);

    // 4. Run again to the end.
    let t = Instant::now();
    let st = node.run("evacuate", &[]);
    eprintln!(
        "final run ({:.1} s): {:#?}",
        t.elapsed().as_secs_f64(),
        st.action_log
    );
    assert_eq!(st.action_failed, None, "{:#?}", st.action_log);
    assert!(log_has(&st, "resuming the evacuate started at"));
    assert_eq!(count(&st, "migrated"), 4, "{:?}", st.action_results);
    let rep = report(&st);
    for id in &ids {
        let i = inst(&rep, id);
        assert_eq!(i["result"], "migrated", "{i:#}");
        assert_eq!(i["destination"], DEST);
        assert_eq!(i["attempts"], 1, "{i:#}");
        // Exactly one live migration per instance, none left running.
        let lm = migration_records(cloud, id, "live-migration").await;
        assert_eq!(lm.len(), 1, "{id}: {lm:?}");
        assert_eq!(lm[0]["status"], "completed");
    }
    for (host, status, task) in where_are(cloud, &ids).await {
        assert_eq!((host.as_str(), status.as_str()), (DEST, "ACTIVE"));
        assert!(task.is_null());
    }
    let svc = service(cloud, SOURCE).await;
    assert_eq!(svc["status"], "disabled");
    assert_reason(svc["disabled_reason"].as_str().unwrap(), "evacuate", t0);
    let j = assert_journal(&node, true);
    assert_eq!(j["state"]["kind"], "evacuate");
    // A later evacuate starts afresh (nothing left to move).
    let st = node.run("evacuate", &[]);
    assert_eq!(st.action_failed, None);
    assert!(!log_has(&st, "resuming"));
    assert_eq!(count(&st, "migrated"), 0);
    cloud.reset().await;
}
