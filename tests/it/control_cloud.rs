//! The control surface: `abort`, `force-complete`, `enable`, `status`, the
//! host CLI and `update-status`, through the harness. The first tests need
//! no cloud (journal fixtures, an unreachable keystone); the `cloud_*` ones
//! run on the local cloud (tests/cloud) and skip without it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nlm::drain::{Kind, RunRecord};
use nlm::plan::{Drain, InstanceRecord, MoveKind, Outcome, Phase, Plan, Policy, ServiceReport};
use nlm::time::now_ms;
use serde_json::{Value, json};

use crate::cloud::{CloudEnv, DEST, SOURCE, host_of, rt, wait_until};
use crate::juju::{SIM_PASSWORD, Sim, State, keystone_bag};

const CLI: &str = env!("CARGO_BIN_EXE_nova-live-migration");

fn instance(id: &str, name: &str, index: usize, phase: Phase) -> InstanceRecord {
    InstanceRecord {
        id: id.into(),
        name: name.into(),
        kind: MoveKind::Live,
        index,
        ram_mb: 64,
        target: None,
        phase,
        attempts: 1,
        conflicts: 0,
        unsent: 0,
        seen_at: None,
        first_started_at: None,
        ended_at: None,
        destination: None,
        migration_id: None,
        past_migrations: vec![],
        error: None,
        decisions: vec![],
        abort_requested: false,
        abort_requested_at: None,
        track: Default::default(),
        last_line: None,
        planned_policy: None,
        stop_first: false,
        stopped_at: None,
    }
}

/// An evacuation of `host` in the journal: `(id, name, phase)` per instance.
fn journal_fixture(state_dir: &Path, host: &str, instances: Vec<(&str, &str, Phase)>) {
    let t0 = now_ms() - 60_000;
    let rec = RunRecord {
        kind: Kind::Evacuate,
        unit: "nova-live-migration/0".into(),
        task: Some("7".into()),
        host: host.into(),
        started_at: t0,
        block_migration: nlm::config::BlockMigration::Auto,
        plan: Plan {
            host: host.into(),
            target_host: None,
            force: false,
            entries: vec![],
            blocking: vec![],
            overridable: vec![],
            warnings: vec![],
        },
        service_before: ServiceReport {
            status: "enabled".into(),
            disabled_reason: None,
        },
        disabled_reason: Some("nova-live-migration/0 evacuate (task 7)".into()),
        drain: Drain {
            source: host.into(),
            policy: Policy::default(),
            created_at: t0,
            instances: instances
                .into_iter()
                .enumerate()
                .map(|(i, (id, name, phase))| instance(id, name, i + 1, phase))
                .collect(),
            stop_starting: false,
            abort_at: None,
            list_asked: None,
            listed_at: None,
            listed_ok_at: None,
            held: vec![],
        },
        ended_at: None,
        aborted: false,
        params: None,
        reported_at: None,
    };
    nlm::state::Journal::in_dir(state_dir).store(&rec).unwrap();
}

fn load_journal(state_dir: &Path) -> RunRecord {
    nlm::state::Journal::in_dir(state_dir)
        .load::<RunRecord>()
        .unwrap()
        .expect("journal")
}

/// Three instances: one migrated, one started, one not started.
fn interrupted_fixture(state_dir: &Path) {
    journal_fixture(
        state_dir,
        "node1.maas",
        vec![
            (
                "11111111-0000-4000-8000-000000000001",
                "focal-1",
                Phase::Done {
                    outcome: Outcome::Migrated,
                },
            ),
            (
                "11111111-0000-4000-8000-000000000002",
                "focal-2",
                Phase::Started {
                    since: now_ms() - 30_000,
                    migration_id: Some(nlm::plan::MigrationId(29)),
                },
            ),
            (
                "11111111-0000-4000-8000-000000000003",
                "focal-3",
                Phase::Pending,
            ),
        ],
    );
}

fn unreachable_sim() -> Sim {
    // 127.0.0.1:1 is never contacted: every path tested here decides first.
    let sim = Sim::new()
        .with_keystone(vec![("keystone/0", keystone_bag("127.0.0.1", "1"))])
        .config("nova-host", json!("node1.maas"));
    std::fs::write(sim.path("nova.conf"), "[DEFAULT]\nhost = node1.maas\n").unwrap();
    sim
}

fn cli(sim_env: &[(String, String)], args: &[&str]) -> (i32, String, String) {
    let out = Command::new(CLI)
        .env_clear()
        .envs(sim_env.iter().cloned())
        .args(args)
        .output()
        .unwrap();
    crate::juju::sim::keep_output(
        &format!("cli {}", args.join(" ")),
        &[("stdout", &out.stdout), ("stderr", &out.stderr)],
    )
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn report(out: &State) -> Value {
    serde_json::from_str(out.action_results.get("report").expect("report")).expect("report JSON")
}

fn no_secret(out: &State, secret: &str) {
    assert!(!out.everything().contains(secret), "a secret leaked");
}

// ------------------------------------------------------------- no cloud

#[test]
fn enable_is_refused_while_an_evacuation_is_in_flight() {
    let mut sim = unreachable_sim();
    interrupted_fixture(&sim.path("state"));
    let out = sim.action("enable", &[]);
    assert_eq!(out.exit_code, Some(0), "{}", out.stderr);
    let msg = out.action_failed.clone().expect("refused");
    assert!(
        msg.contains("refusing to enable nova-compute on node1.maas"),
        "{msg}"
    );
    assert!(msg.contains("1/3 done, 1 in flight"), "{msg}");
    assert!(msg.contains("interrupted"), "{msg}");
    assert!(msg.contains("abort action"), "{msg}");
    assert!(msg.contains("force=true"), "{msg}");
    assert_eq!(report(out)["action"], "enable");
    no_secret(out, SIM_PASSWORD);
}

#[test]
fn update_status_shows_the_evacuation_from_the_journal_without_api_calls() {
    let mut sim = unreachable_sim();
    let state = sim.path("state");
    interrupted_fixture(&state);
    let out = sim.hook("update-status").clone();
    let status = out.statuses.last().unwrap();
    assert_eq!(status.status, "maintenance");
    assert_eq!(
        status.message,
        "nova-compute/0 on node1.maas: evacuate interrupted at 1/3 done, 1 in flight: run evacuate to resume or abort to end it"
    );
    assert_eq!(
        out.call_lines(),
        vec![
            "config-get --format=json",
            "relation-ids identity-credentials --format=json",
            "relation-list --format=json -r identity-credentials:5",
            "relation-get --format=json -r identity-credentials:5 - keystone/0",
            format!("status-set maintenance -- {}", status.message).as_str(),
        ]
    );
    // With the drain's process alive (it holds the run lock): running.
    let lock = nlm::state::RunLock::try_acquire(&state).unwrap().unwrap();
    let out = sim.hook("update-status");
    assert_eq!(
        out.statuses.last().unwrap().message,
        "nova-compute/0 on node1.maas: evacuate running, 1/3 done, 1 in flight"
    );
    drop(lock);
}

#[test]
fn hooks_keep_a_root_only_copy_of_the_credentials_for_the_cli() {
    use std::os::unix::fs::PermissionsExt;
    let mut sim = Sim::new()
        .with_keystone(vec![("keystone/0", keystone_bag("127.0.0.1", "1"))])
        .config("poll-interval", json!(0.5));
    let file = sim.path("state").join(nlm::state::CLI_CREDENTIALS);
    let out = sim.hook("identity-credentials-relation-changed").clone();
    no_secret(&out, SIM_PASSWORD);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(v["data"]["credentials_username"], "nova_live_migration");
    assert_eq!(v["config"]["poll-interval"], json!(0.5));
    // The CLI reads it (and never prints the password).
    let (code, out, err) = cli(&sim.host_env(), &["status"]);
    assert!(!out.contains(SIM_PASSWORD) && !err.contains(SIM_PASSWORD));
    assert_eq!(code, 1, "{out}{err}");
    // The relation goes: the copy goes too.
    sim.state
        .relations
        .retain(|r| r.endpoint != "identity-credentials");
    sim.hook("identity-credentials-relation-broken");
    assert!(!file.exists());
}

#[test]
fn cli_status_shows_the_journal_and_abort_requests_reach_a_running_drain() {
    let sim = unreachable_sim();
    let state = sim.path("state");
    interrupted_fixture(&state);
    let env = sim.host_env();
    let (code, out, err) = cli(&env, &["status"]);
    assert_eq!(code, 1, "no credentials file yet: {out}{err}");
    assert!(
        out.contains("last evacuate started")
            && out.contains("1/3 done, 1 in flight (interrupted)"),
        "{out}"
    );
    assert!(err.contains("cannot ask Nova"), "{err}");

    // A running drain (holding the lock) takes the request.
    let lock = nlm::state::RunLock::try_acquire(&state).unwrap().unwrap();
    let queue = nlm::state::AbortRequests::in_dir(&state);
    let taker = {
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                if let Some(r) = queue.take_next_since(0) {
                    return Some(serde_json::to_string(&r).unwrap());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            None
        })
    };
    let (code, out, err) = cli(&env, &["abort"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("took the request"), "{out}");
    let text = taker.join().unwrap().expect("request written");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["vm"], Value::Null);
    drop(lock);
}

/// The README's abort/status flows beside a running evacuation, as Juju
/// runs them (tests/harness/sim.rs `exec_unit`, `exec_machine`,
/// `ssh_sudo`): the evacuation is the subordinate's operation (its unit
/// busy, no machine lock: `parallel: true`) and its process holds the run
/// lock.
#[test]
fn abort_and_status_beside_a_running_evacuation_through_the_ways_juju_runs_them() {
    use crate::juju::sim;
    use std::os::unix::fs::PermissionsExt;
    let mut sim_unit = unreachable_sim();
    // A host's /tmp-like dirs are traversable; the test's temp dir is not
    // by default.
    std::fs::set_permissions(sim_unit.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = sim_unit.hook("install").clone();
    no_secret(&out, SIM_PASSWORD);
    let state = sim_unit.path("state");
    let hint_path = state.join(nlm::state::operator_hint::HINT_FILE);
    let mode = std::fs::metadata(&hint_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "the hint is world-readable");
    let hint = std::fs::read_to_string(&hint_path).unwrap();
    assert!(!hint.contains(SIM_PASSWORD), "no secret in the hint");
    let hint: Value = serde_json::from_str(&hint).unwrap();
    assert_eq!(hint["principal"], "nova-compute/0");
    assert_eq!(hint["machine"], "0");
    interrupted_fixture(&state);

    // The evacuation: the subordinate unit's running operation (parallel,
    // so no machine lock) whose process holds the run lock.
    let host = sim::host_dir(&sim_unit.path("state.json"), &sim_unit.host_env());
    let _evacuating = sim::take_lock(
        &sim::unit_lock_path(&host, "nova-live-migration/0"),
        "unit nova-live-migration/0",
    )
    .unwrap();
    let _run_lock = nlm::state::RunLock::try_acquire(&state).unwrap().unwrap();
    let env = sim_unit.host_env();
    let bin = vec![sim_unit.path("bin")];
    let exec = |command: &'static str| sim::Exec {
        host: &host,
        command,
        path: bin.clone(),
        env: env.clone(),
    };
    // The running drain's side: it takes the queued request.
    let took = |state: PathBuf| {
        std::thread::spawn(move || {
            let queue = nlm::state::AbortRequests::in_dir(&state);
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(20) {
                if let Some(r) = queue.take_next_since(0) {
                    return Some(serde_json::to_string(&r).unwrap());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            None
        })
    };
    let nothing_queued = || {
        nlm::state::AbortRequests::in_dir(&state)
            .pending()
            .is_empty()
    };

    // juju exec --machine 0: as the user ubuntu, refused with exit 2 and
    // exactly what to run instead.
    for (cmd, line) in [
        ("nova-live-migration abort", "nova-live-migration abort"),
        ("nova-live-migration status", "nova-live-migration status"),
        (
            "nova-live-migration abort --vm focal-2",
            "nova-live-migration abort --vm focal-2",
        ),
    ] {
        let out = sim::exec_machine(exec(cmd)).unwrap();
        assert_eq!(out.code, 2, "{out:?}");
        assert!(
            out.stderr
                .contains(&format!("  juju exec --unit nova-compute/0 -- {line}\n")),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr
                .contains(&format!("  juju ssh 0 -- sudo {line}\n")),
            "{}",
            out.stderr
        );
        assert!(nothing_queued(), "a refused abort writes nothing");
    }

    // juju exec --unit nova-live-migration/0 would queue behind the
    // evacuation: not a way to stop it.
    let e = sim::exec_unit(
        exec("nova-live-migration abort"),
        "nova-live-migration/0",
        "0",
    )
    .unwrap_err();
    assert!(e.contains("unit nova-live-migration/0 is busy"), "{e}");

    // juju exec --unit nova-compute/0: root, the principal's operation,
    // beside the evacuation.
    let taker = took(state.clone());
    let out = sim::exec_unit(
        exec("nova-live-migration abort --vm focal-2"),
        "nova-compute/0",
        "0",
    )
    .unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("took the request"), "{}", out.stdout);
    let v: Value = serde_json::from_str(&taker.join().unwrap().expect("request")).unwrap();
    assert_eq!(v["vm"], "focal-2");
    let out = sim::exec_unit(exec("nova-live-migration status"), "nova-compute/0", "0").unwrap();
    // The credentials are readable (root); Nova is not reachable here, so
    // status shows the journal and says why it could not ask Nova.
    assert!(!out.stderr.contains("needs root"), "{out:?}");
    assert!(!out.stdout.contains(SIM_PASSWORD) && !out.stderr.contains(SIM_PASSWORD));

    // juju ssh 0 -- sudo: root, outside Juju's agents.
    let taker = took(state.clone());
    let out = sim::ssh_sudo(exec("nova-live-migration abort")).unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("took the request"), "{}", out.stdout);
    let v: Value = serde_json::from_str(&taker.join().unwrap().expect("request")).unwrap();
    assert_eq!(v["vm"], Value::Null);
    sim::keep_output(
        "ssh sudo abort",
        &[
            ("stdout", out.stdout.as_bytes()),
            ("stderr", out.stderr.as_bytes()),
        ],
    )
    .unwrap();
}

#[test]
fn abort_action_asks_a_running_drain_and_a_second_drain_is_refused() {
    let mut sim = unreachable_sim().config("poll-interval", json!(0.2));
    let state = sim.path("state");
    interrupted_fixture(&state);
    let lock = nlm::state::RunLock::try_acquire(&state).unwrap().unwrap();
    // Nobody takes the request: the action says so and still succeeds.
    let out = sim.action("abort", &["vm=focal-2"]).clone();
    assert_eq!(out.action_failed, None, "{:?}", out.action_results);
    let summary = &out.action_results["summary"];
    assert!(
        summary.contains("has not taken the request yet"),
        "{summary}"
    );
    let queue = nlm::state::AbortRequests::in_dir(&state);
    let pending = queue.pending();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let req_path = queue.path_of(&pending[0].id);
    let req: Value = serde_json::from_str(&std::fs::read_to_string(&req_path).unwrap()).unwrap();
    assert_eq!(req["vm"], "focal-2");
    // Written by dispatch, root-only like every file of the state dir.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&req_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", req_path.display());
    assert_eq!(report(&out)["evacuation"]["state"], "running");

    let out = sim.action("evacuate", &[]);
    let msg = out.action_failed.clone().expect("refused");
    assert!(
        msg.contains("another evacuate, migrate-vm or abort is running"),
        "{msg}"
    );
    drop(lock);
}

// ---------------------------------------------------------------- cloud

/// A unit wired to the local cloud: credentials, nova host, its compute log.
fn cloud_sim(cloud: &CloudEnv) -> Sim {
    let bag: std::collections::BTreeMap<String, String> = cloud
        .relation_data()
        .into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
        .collect();
    let sim = Sim::new()
        .with_keystone(vec![("keystone/0", bag)])
        .config("nova-host", json!(SOURCE))
        .config("poll-interval", json!(0.5))
        .config("stall-timeout", json!(0));
    std::fs::write(
        sim.path("nova.conf"),
        format!("[DEFAULT]\nhost = {SOURCE}\n"),
    )
    .unwrap();
    sim
}

/// Host paths of `sim` with its compute log pointed at the cloud's.
fn shared_env(sim: &Sim, cloud: &CloudEnv) -> Vec<(String, String)> {
    let mut env = sim.host_env();
    env.retain(|(k, _)| k != "NLM_NOVA_COMPUTE_LOG");
    env.push((
        "NLM_NOVA_COMPUTE_LOG".into(),
        cloud.compute_log(SOURCE).display().to_string(),
    ));
    env
}

fn secret(cloud: &CloudEnv) -> String {
    cloud.relation_data()["credentials_password"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A second unit process view on the same host paths (its own harness state).
struct Beside {
    sim: Sim,
    env: Vec<(String, String)>,
}

impl Beside {
    fn new(cloud: &CloudEnv, env: Vec<(String, String)>) -> Beside {
        Beside {
            sim: cloud_sim(cloud),
            env,
        }
    }
    fn run(&mut self, event: &str, params: &[&str]) -> State {
        self.sim
            .run_env(event, params, self.env.clone())
            .unwrap_or_else(|e| panic!("{event}: {e}"))
            .clone()
    }
}

/// The server once it has no task and no migration in progress (it may never have had one).
async fn settled(cloud: &CloudEnv, id: &str) -> Value {
    wait_until(
        || async move {
            let s = cloud.server(id).await;
            if !s["OS-EXT-STS:task_state"].is_null() {
                return None;
            }
            match cloud.last_migration(id).await {
                Some(m)
                    if !["completed", "failed", "error", "cancelled"]
                        .contains(&m["status"].as_str().unwrap_or("")) =>
                {
                    None
                }
                _ => Some(s),
            }
        },
        Duration::from_secs(60),
    )
    .await
}

fn wait_journal(state_dir: &Path, what: &str, f: impl Fn(&RunRecord) -> bool) -> RunRecord {
    let t0 = Instant::now();
    loop {
        if let Ok(Some(r)) = nlm::state::Journal::in_dir(state_dir).load::<RunRecord>()
            && f(&r)
        {
            return r;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn cloud_cli_abort_stops_a_running_evacuation_and_enable_status_follow() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let _lock = cloud.lock();
    let t_start = Instant::now();
    let rt = rt();
    rt.block_on(cloud.reset());
    let names = ["ctl-a1", "ctl-a2", "ctl-a3"];
    let ids = rt.block_on(cloud.boot_on(SOURCE, &names, &[("nlm_migration_seconds", "40")]));
    let password = secret(&cloud);

    let sim = cloud_sim(&cloud);
    let env = shared_env(&sim, &cloud);
    let state_dir = PathBuf::from(&env.iter().find(|(k, _)| k == "NLM_STATE_DIR").unwrap().1);
    let mut beside = Beside::new(&cloud, env.clone());
    // The hooks write the CLI's credentials.
    // install links the host CLI; its update-status writes the CLI's credentials.
    beside.run("hooks/install", &[]);

    let evac_env = env.clone();
    let evacuation = std::thread::spawn(move || {
        let mut sim = sim;
        let out = sim.run_env("actions/evacuate", &[], evac_env).cloned();
        (sim, out)
    });
    let rec = wait_journal(&state_dir, "a migration in flight", |r| {
        r.drain.in_flight() > 0
            && r.drain.instances.iter().any(|i| {
                matches!(
                    i.phase,
                    Phase::Started {
                        migration_id: Some(_),
                        ..
                    }
                )
            })
    });
    assert!(rec.in_flight());
    // Progress reported by the driver.
    rt.block_on(wait_until(
        || async {
            for id in &ids {
                if cloud.running_migration(id).await.is_some() {
                    return Some(());
                }
            }
            None
        },
        Duration::from_secs(60),
    ));

    // During the run this unit's own operations (an action, update-status)
    // queue behind the evacuation, as in Juju: what runs beside it is the
    // host CLI as root in the principal's context (juju exec --unit
    // nova-compute/0), which takes the machine lock evacuate does not hold.
    let host = crate::juju::sim::host_dir(&state_dir.join("x"), &env);
    let bin = vec![
        PathBuf::from(&env.iter().find(|(k, _)| k == "NLM_CLI_LINK").unwrap().1)
            .parent()
            .unwrap()
            .to_path_buf(),
    ];
    let exec_unit = |command: &str| {
        let out = crate::juju::sim::exec_unit(
            crate::juju::sim::Exec {
                host: &host,
                command,
                path: bin.clone(),
                env: env.clone(),
            },
            "nova-compute/0",
            "0",
        )
        .unwrap_or_else(|e| panic!("juju exec --unit nova-compute/0 -- {command}: {e}"));
        crate::juju::sim::keep_output(
            &format!("exec-unit {command}"),
            &[
                ("stdout", out.stdout.as_bytes()),
                ("stderr", out.stderr.as_bytes()),
            ],
        )
        .unwrap();
        assert!(
            !out.stdout.contains(&password) && !out.stderr.contains(&password),
            "a secret leaked"
        );
        out
    };
    let again = beside
        .sim
        .start_env("actions/status", &[], beside.env.clone())
        .err()
        .expect("this unit's next operation waits for the evacuation");
    assert!(
        again.contains("unit nova-live-migration/0 is busy"),
        "{again}"
    );

    // status --json during the run: the status action's report.
    let out = exec_unit("nova-live-migration status --json");
    assert_eq!(out.code, 0, "{out:?}");
    let r: Value = serde_json::from_str(out.stdout.trim()).expect("status --json");
    assert_eq!(r["evacuation"]["state"], "running", "{r}");
    assert_eq!(r["service"]["status"], "disabled", "{r}");
    assert_eq!(r["instances"].as_array().unwrap().len(), 3, "{r}");
    let migs = r["migrations"].as_array().unwrap();
    assert!(!migs.is_empty(), "{r}");
    assert!(
        migs.iter()
            .any(|m| m["status"] == "running" && m["percent"].is_number()),
        "{r}"
    );

    // The CLI: status, then abort.
    let out = exec_unit("nova-live-migration status");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("migrations in flight") && out.stdout.contains("(running)"),
        "{}",
        out.stdout
    );
    let out = exec_unit("nova-live-migration abort");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("took the request"), "{}", out.stdout);

    let (_sim, result) = evacuation.join().unwrap();
    let out = result.expect("evacuate ran");
    assert_eq!(out.exit_code, Some(0), "{}", out.stderr);
    let failed = out.action_failed.clone().expect("evacuate ends aborted");
    assert!(failed.starts_with("aborted"), "{failed}");
    let r = report(&out);
    let results: Vec<&str> = r["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["result"].as_str().unwrap())
        .collect();
    assert!(
        results.iter().all(|x| *x == "aborted" || *x == "pending"),
        "{r}"
    );
    assert!(results.contains(&"aborted"), "{r}");
    assert!(
        out.action_log.iter().any(|l| l.contains("abort requested")),
        "{:?}",
        out.action_log
    );
    no_secret(&out, &password);

    // Nova: every instance still on the source, ACTIVE; the migrations cancelled.
    for id in &ids {
        let server = rt.block_on(settled(&cloud, id));
        assert_eq!(host_of(&server), SOURCE);
        assert_eq!(server["status"], "ACTIVE");
    }
    let cancelled = rt.block_on(async {
        let mut n = 0;
        for id in &ids {
            if let Some(m) = cloud.last_migration(id).await
                && m["status"] == "cancelled"
            {
                n += 1;
            }
        }
        n
    });
    assert!(cancelled >= 1, "no migration was cancelled");
    let rec = load_journal(&state_dir);
    assert!(rec.ended_at.is_some() && rec.aborted);

    // After: status, update-status (active, disabled), enable, update-status.
    let out = beside.run("actions/status", &[]);
    let r = report(&out);
    assert_eq!(r["evacuation"]["state"], "aborted", "{r}");
    assert_eq!(r["migrations"].as_array().unwrap().len(), 0, "{r}");
    let out = beside.run("hooks/update-status", &[]);
    let st = out.statuses.last().unwrap();
    assert_eq!(st.status, "active");
    assert!(
        st.message
            .starts_with(&format!("nova-compute/0 on {SOURCE}: disabled ("))
            && st.message.ends_with(", 3 instances"),
        "{}",
        st.message
    );
    let out = beside.run("actions/enable", &[]);
    assert_eq!(out.action_failed, None, "{:?}", out.action_results);
    assert!(
        out.action_results["summary"].starts_with(&format!("enabled nova-compute on {SOURCE}"))
    );
    let out = beside.run("actions/enable", &[]);
    assert!(out.action_results["summary"].contains("already enabled"));
    let out = beside.run("hooks/update-status", &[]);
    let st = out.statuses.last().unwrap();
    assert_eq!(st.status, "active");
    assert_eq!(
        st.message,
        format!("nova-compute/0 on {SOURCE}: enabled, 3 instances")
    );
    assert!(
        out.call_lines().len() <= 6,
        "update-status stays small: {:?}",
        out.call_lines()
    );
    no_secret(&out, &password);
    rt.block_on(cloud.reset());
    eprintln!("cloud_cli_abort…: {:.1} s", t_start.elapsed().as_secs_f64());
}

/// `enable` re-enables only what this charm disabled: a service someone
/// else disabled is refused, naming their reason, unless `force=true`; one
/// this charm's `evacuate` disabled (any run, any unit of the application)
/// is enabled.
#[test]
fn cloud_enable_re_enables_only_what_this_charm_disabled() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let _lock = cloud.lock();
    let rt = rt();
    rt.block_on(cloud.reset());
    let password = secret(&cloud);
    let mut sim = cloud_sim(&cloud);
    let status_of = |cloud: &CloudEnv| {
        let s = rt.block_on(cloud.compute_service(SOURCE));
        (
            s["status"].as_str().unwrap_or_default().to_string(),
            s["disabled_reason"].as_str().map(String::from),
        )
    };

    // Someone else's maintenance: refused, nothing changed.
    let theirs = "kernel upgrade by the storage team (ticket 4711)";
    rt.block_on(cloud.disable_service(SOURCE, Some(theirs)));
    let out = sim.action("enable", &[]).clone();
    assert_eq!(out.exit_code, Some(0), "{}", out.stderr);
    let msg = out.action_failed.clone().expect("enable refused");
    assert!(
        msg.contains(&format!("refusing to enable nova-compute on {SOURCE}"))
            && msg.contains("by someone else, not by this charm")
            && msg.contains(theirs)
            && msg.contains("force=true")
            && msg.contains("nothing was changed"),
        "{msg}"
    );
    let r = report(&out);
    assert_eq!(r["changed"], false, "{r}");
    assert_eq!(r["service"]["disabled_reason"], theirs, "{r}");
    assert_eq!(status_of(&cloud), ("disabled".into(), Some(theirs.into())));

    // force=true enables it, and says whose reason it overrode.
    let out = sim.action("enable", &["force=true"]).clone();
    assert_eq!(out.action_failed, None, "{:?}", out.action_results);
    let summary = &out.action_results["summary"];
    assert!(
        summary.starts_with(&format!(
            "enabled nova-compute on {SOURCE} (was disabled: {theirs})"
        )) && summary.contains("someone else disabled it"),
        "{summary}"
    );
    assert_eq!(report(&out)["changed"], true);
    assert_eq!(status_of(&cloud).0, "enabled");

    // Already enabled: said so, success.
    let out = sim.action("enable", &[]).clone();
    assert_eq!(out.action_failed, None, "{:?}", out.action_results);
    assert!(
        out.action_results["summary"].contains("already enabled"),
        "{:?}",
        out.action_results
    );

    // Ours, from another run and another unit of the application: enabled.
    let ours =
        nlm::plan::disable_reason("nova-live-migration/7", Some("42"), "2026-01-02T03:04:05Z");
    rt.block_on(cloud.disable_service(SOURCE, Some(&ours)));
    let out = sim.action("enable", &[]).clone();
    assert_eq!(out.action_failed, None, "{:?}", out.action_results);
    assert_eq!(
        out.action_results["summary"],
        format!("enabled nova-compute on {SOURCE} (was disabled: {ours})")
    );
    assert_eq!(status_of(&cloud).0, "enabled");

    // Disabled without a reason: not ours either.
    rt.block_on(cloud.disable_service(SOURCE, None));
    let out = sim.action("enable", &[]).clone();
    let msg = out.action_failed.clone().expect("enable refused");
    assert!(msg.contains("without a reason"), "{msg}");
    no_secret(&out, &password);
    rt.block_on(cloud.reset());
}

#[test]
fn cloud_abort_action_ends_an_interrupted_evacuation() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let _lock = cloud.lock();
    let t_start = Instant::now();
    let rt = rt();
    rt.block_on(cloud.reset());
    let names = ["ctl-b1", "ctl-b2", "ctl-b3"];
    let ids = rt.block_on(cloud.boot_on(SOURCE, &names, &[("nlm_migration_seconds", "60")]));
    // The killed evacuation: two migrations started in Nova, one not started.
    // Nova runs one at a time from a host here: ctl-b1 runs, then ctl-b2 is
    // queued behind it. The second starts only once the first runs: sent
    // together, Nova may take them in either order (the rehearsal of
    // 2026-12-01 waited 60 s for ctl-b1 while ctl-b2 held the slot).
    rt.block_on(cloud.live_migrate(&ids[0], None));
    rt.block_on(wait_until(
        || async { cloud.running_migration(&ids[0]).await },
        Duration::from_secs(60),
    ));
    rt.block_on(cloud.live_migrate(&ids[1], None));
    let mut sim = cloud_sim(&cloud);
    let env = shared_env(&sim, &cloud);
    let state_dir = sim.path("state");
    let since = now_ms();
    journal_fixture(
        &state_dir,
        SOURCE,
        vec![
            (
                &ids[0],
                names[0],
                Phase::Started {
                    since,
                    migration_id: None,
                },
            ),
            (
                &ids[1],
                names[1],
                Phase::Started {
                    since,
                    migration_id: None,
                },
            ),
            (&ids[2], names[2], Phase::Pending),
        ],
    );
    // force-complete of the queued one: refused, naming the state.
    rt.block_on(wait_until(
        || async {
            let m = cloud.migrations(&ids[1]).await;
            m.iter().any(|m| m["status"] == "queued").then_some(())
        },
        Duration::from_secs(30),
    ));
    let out = sim
        .run_env("actions/force-complete", &["vm=ctl-b2"], env.clone())
        .unwrap()
        .clone();
    let msg = out.action_failed.clone().expect("not running");
    assert!(
        msg.contains("cannot force-complete ctl-b2") && msg.contains("is queued"),
        "{msg}"
    );

    // Unknown vm: a clear failure, nothing changed.
    let out = sim
        .run_env("actions/abort", &["vm=no-such-vm"], env.clone())
        .unwrap()
        .clone();
    let msg = out.action_failed.clone().expect("unknown vm");
    assert!(
        msg.contains("no instance \"no-such-vm\" on node1.maas") && msg.contains("ctl-b1"),
        "{msg}"
    );
    assert!(load_journal(&state_dir).in_flight());

    // Only ctl-b1's migration.
    let out = sim
        .run_env("actions/abort", &["vm=ctl-b1"], env.clone())
        .unwrap()
        .clone();
    assert_eq!(out.action_failed, None, "{:?}", out.action_results);
    let r = report(&out);
    assert_eq!(r["aborted"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["aborted"][0]["instance_id"], ids[0].as_str());
    let rec = load_journal(&state_dir);
    assert!(rec.in_flight(), "a vm abort leaves the run in flight");
    assert_eq!(
        rec.drain.get(&ids[0]).unwrap().outcome(),
        Some(Outcome::Aborted)
    );
    let (s, m) = rt.block_on(cloud.wait_settled(&ids[0], Duration::from_secs(60)));
    assert_eq!(
        (host_of(&s), s["status"].as_str()),
        (SOURCE, Some("ACTIVE"))
    );
    assert_eq!(m["status"], "cancelled");
    // ctl-b2 goes on (it runs once ctl-b1's slot is free).
    rt.block_on(wait_until(
        || async { cloud.running_migration(&ids[1]).await },
        Duration::from_secs(60),
    ));

    // All of them: ends the interrupted evacuation.
    let out = sim
        .run_env("actions/abort", &[], env.clone())
        .unwrap()
        .clone();
    assert_eq!(out.action_failed, None, "{:?}", out.action_results);
    let r = report(&out);
    assert_eq!(r["aborted"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["aborted"][0]["name"], "ctl-b2");
    assert_eq!(r["journal"]["ended"], true, "{r}");
    assert!(out.action_results["summary"].contains("marked ended (aborted)"));
    let rec = load_journal(&state_dir);
    assert!(!rec.in_flight() && rec.aborted);
    assert_eq!(
        rec.drain.get(&ids[1]).unwrap().outcome(),
        Some(Outcome::Aborted)
    );
    assert_eq!(
        rec.drain.get(&ids[2]).unwrap().outcome(),
        Some(Outcome::Pending)
    );
    let (s, m) = rt.block_on(cloud.wait_settled(&ids[1], Duration::from_secs(60)));
    assert_eq!(
        (host_of(&s), s["status"].as_str()),
        (SOURCE, Some("ACTIVE"))
    );
    assert_eq!(m["status"], "cancelled");

    // Idempotent: nothing in flight.
    let out = sim
        .run_env("actions/abort", &[], env.clone())
        .unwrap()
        .clone();
    assert_eq!(out.action_failed, None);
    assert!(out.action_results["summary"].contains("no migration in flight"));
    // The service was left as it was (enabled).
    let out = sim.run_env("actions/status", &[], env).unwrap().clone();
    assert_eq!(report(&out)["service"]["status"], "enabled");
    no_secret(&out, &secret(&cloud));
    rt.block_on(cloud.reset());
    eprintln!(
        "cloud_abort_action…: {:.1} s",
        t_start.elapsed().as_secs_f64()
    );
}

#[test]
fn cloud_force_complete_finishes_a_stalled_migration() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let _lock = cloud.lock();
    let t_start = Instant::now();
    let rt = rt();
    rt.block_on(cloud.reset());
    let ids = rt.block_on(cloud.boot_on(
        SOURCE,
        &["ctl-c1", "ctl-c2"],
        &[("nlm_migration_seconds", "20"), ("nlm_stall_at", "40")],
    ));
    let mut sim = cloud_sim(&cloud);
    let env = shared_env(&sim, &cloud);

    // Not migrating: a clear failure.
    let out = sim
        .run_env("actions/force-complete", &["vm=ctl-c2"], env.clone())
        .unwrap()
        .clone();
    let msg = out
        .action_failed
        .clone()
        .expect("nothing to force-complete");
    assert!(
        msg.contains("ctl-c2") && msg.contains("no live migration in progress"),
        "{msg}"
    );

    rt.block_on(cloud.live_migrate(&ids[0], Some(DEST)));
    // Stalled: progress stops at 40 %.
    rt.block_on(wait_until(
        || async {
            let m = cloud.running_migration(&ids[0]).await?;
            let (t, r) = (
                m["memory_total_bytes"].as_u64()?,
                m["memory_remaining_bytes"].as_u64()?,
            );
            (t > 0 && (t - r) * 100 / t >= 39).then_some(())
        },
        Duration::from_secs(60),
    ));
    let out = sim
        .run_env("actions/force-complete", &["vm=ctl-c1"], env)
        .unwrap()
        .clone();
    assert_eq!(out.action_failed, None, "{:?}", out.action_results);
    let r = report(&out);
    assert_eq!(r["result"], "requested", "{r}");
    assert_eq!(r["status"], "running");
    assert!(out.action_results["summary"].contains("force-complete ctl-c1"));
    let (s, m) = rt.block_on(cloud.wait_settled(&ids[0], Duration::from_secs(30)));
    assert_eq!(host_of(&s), DEST);
    assert_eq!(m["status"], "completed");
    no_secret(&out, &secret(&cloud));
    rt.block_on(cloud.reset());
    eprintln!(
        "cloud_force_complete…: {:.1} s",
        t_start.elapsed().as_secs_f64()
    );
}

#[test]
fn update_status_stays_active_and_says_so_when_keystone_is_down() {
    // Nothing listens on 127.0.0.1:1: connection refused at once.
    let mut sim = Sim::new()
        .with_keystone(vec![("keystone/0", keystone_bag("127.0.0.1", "1"))])
        .config("nova-host", json!("node1.maas"));
    std::fs::write(sim.path("nova.conf"), "[DEFAULT]\nhost = node1.maas\n").unwrap();
    let t0 = Instant::now();
    let out = sim.hook("update-status").clone();
    assert!(
        t0.elapsed() < Duration::from_secs(25),
        "bounded by the 20 s budget"
    );
    let st = out.statuses.last().unwrap();
    assert_eq!(st.status, "active");
    assert!(
        st.message.starts_with(
            "nova-compute/0 on node1.maas: Nova not reachable (credentials from keystone/0)"
        ),
        "{}",
        st.message
    );
    no_secret(&out, SIM_PASSWORD);
}
