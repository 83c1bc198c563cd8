//! The orchestrator (`nlm::drain::run`) against the in-process fake of
//! Keystone, Nova and Placement (`tests/harness/fake_nova.rs`): no cloud
//! needed. Each test asserts the report, the journal and the calls the fake
//! saw. Polls are short (`poll-interval` 0.2 s) and the tests wait for
//! states, never for times, so they hold at any machine speed.

use std::collections::BTreeMap;
use std::sync::Once;
use std::time::Duration;

use nlm::config::Config;
use nlm::drain::{self, Kind, Params, RunRecord};
use nlm::openstack::{AuthConfig, Interface, OpenStack};
use nlm::paths::Paths;
use nlm::plan::ResultKind;
use nlm::state::Journal;
use serde_json::{Value, json};

use crate::fake_nova::{self, Fake, MStatus, Options};

/// Pre-flight requires `nova-compute` and `libvirtd` active (`systemctl
/// is-active`): a stand-in that says so, first on PATH, set once for the
/// process. Only in-process drains run systemctl from this process; the
/// hook tests' dispatch runs with juju-sim's own stand-in first on its PATH.
fn systemctl_says_active() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // One directory for every run (not one per process left behind);
        // written through a rename so concurrent runs never see half a file.
        let dir = std::env::temp_dir().join("nlm-it-fake-bin");
        std::fs::create_dir_all(&dir).expect("stand-in dir");
        let tmp = dir.join(format!(".systemctl.{}", std::process::id()));
        std::fs::write(&tmp, "#!/bin/sh\necho active\n").expect("stand-in");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .expect("chmod stand-in");
        std::fs::rename(&tmp, dir.join("systemctl")).expect("stand-in in place");
        let old = std::env::var("PATH").unwrap_or_default();
        // SAFETY: std's environment accesses hold its lock; nothing in this
        // process reads PATH through libc getenv concurrently (the clients
        // connect to IP literals).
        unsafe { std::env::set_var("PATH", format!("{}:{old}", dir.display())) };
    });
}

/// A fake cloud, our client of it, and a node's state directory.
struct Rig {
    fake: Fake,
    os: OpenStack,
    dir: tempfile::TempDir,
    paths: Paths,
    config: Config,
    host: String,
    log: std::sync::Mutex<Vec<String>>,
}

async fn rig(opts: Options, config: &[(&str, Value)]) -> Rig {
    systemctl_says_active();
    let host = opts.source.clone();
    let max_concurrent = opts.max_concurrent;
    let fake = Fake::start(opts).await;
    let cfg = AuthConfig::from_relation(
        &fake_nova::relation_bag(&fake.uri()),
        Interface::Internal,
        None,
        None,
    )
    .expect("auth config");
    let os = OpenStack::connect(cfg).await.expect("connect to the fake");
    let dir = tempfile::tempdir().expect("tempdir");
    let nova_conf = dir.path().join("nova.conf");
    std::fs::write(
        &nova_conf,
        format!("[DEFAULT]\nhost = {host}\nmax_concurrent_live_migrations = {max_concurrent}\n"),
    )
    .expect("nova.conf");
    let state_dir = dir.path().join("state");
    std::fs::create_dir_all(&state_dir).expect("state dir");
    let paths = Paths::from_env(|k| match k {
        "NLM_STATE_DIR" => Some(state_dir.display().to_string()),
        "NLM_NOVA_CONF" => Some(nova_conf.display().to_string()),
        "NLM_NOVA_COMPUTE_LOG" => Some(dir.path().join("none.log").display().to_string()),
        _ => None,
    });
    let mut values: BTreeMap<String, Value> =
        BTreeMap::from([("poll-interval".to_string(), json!(0.2))]);
    for (k, v) in config {
        values.insert(k.to_string(), v.clone());
    }
    let config = Config::from_values(&values).expect("config");
    Rig {
        fake,
        os,
        dir,
        paths,
        config,
        host,
        log: std::sync::Mutex::new(Vec::new()),
    }
}

impl Rig {
    async fn run(&self, kind: Kind, params: &[(&str, Value)]) -> drain::Outcome {
        let raw: BTreeMap<String, Value> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let params = Params::from_action(kind, &raw).expect("params");
        let log = |l: &str| self.log.lock().unwrap().push(l.to_string());
        let env = drain::Env {
            os: &self.os,
            config: &self.config,
            paths: &self.paths,
            host: self.host.clone(),
            unit: "nova-live-migration/0".into(),
            task: Some("42".into()),
            log: &log,
            status: &|_: &str| {},
        };
        drain::run(&env, &params).await.expect("drain::run")
    }

    fn journal(&self) -> RunRecord {
        Journal::in_dir(&self.paths.state_dir)
            .load::<RunRecord>()
            .expect("journal readable")
            .expect("a journal")
    }

    /// Waits (without a deadline of its own: the test harness's timeout
    /// bounds it) until the fake's state satisfies `f`.
    async fn until(&self, what: &str, f: impl Fn(&fake_nova::FakeNova) -> bool) {
        let t = std::time::Instant::now();
        loop {
            if f(&self.fake.state()) {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "waited 120 s for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn assert_no_unknown_calls(&self) {
        let s = self.fake.state();
        assert!(
            s.unknown.is_empty(),
            "requests the fake does not implement: {:?}",
            s.unknown
        );
    }
}

fn servers(n: usize) -> Options {
    Options {
        servers: n,
        migration_ms: 300,
        max_concurrent: 2,
        ..Options::default()
    }
}

#[tokio::test]
async fn evacuate_moves_every_instance_and_disables_the_service() {
    let rig = rig(servers(5), &[]).await;
    let out = rig.run(Kind::Evacuate, &[]).await;
    assert_eq!(out.failure, None, "report: {:?}", out.report);
    let r = &out.report;
    assert_eq!(r.counts.migrated, 5);
    assert_eq!(r.instances.len(), 5);
    let s = rig.fake.state();
    for i in &r.instances {
        let f = s.server(&i.id).expect("known server");
        assert_eq!(i.result, ResultKind::Migrated, "{}", i.name);
        assert_eq!(i.attempts, 1, "{}", i.name);
        assert_eq!(f.posts, 1, "{}: one os-migrateLive", i.name);
        assert_ne!(f.host, rig.host);
        assert_eq!(i.destination.as_deref(), Some(f.host.as_str()));
    }
    // The service: disabled with our reason, and so reported.
    assert_eq!(s.services[0].status, "disabled");
    let reason = s.services[0].disabled_reason.clone().unwrap_or_default();
    assert!(
        reason.contains("nova-live-migration/0 evacuate (task 42)"),
        "{reason}"
    );
    // The calls: five scheduler-chosen live migrations, the hypervisor
    // listing once for pre-flight and once for the proof of empty, no
    // route the fake lacks.
    assert_eq!(
        s.count("POST", "os-migrateLive"),
        5,
        "{:#?}",
        s.call_lines()
    );
    assert_eq!(s.count("GET", "/os-hypervisors/detail"), 2);
    assert!(
        s.migrations
            .iter()
            .all(|m| m.block_migration == json!("auto"))
    );
    assert!(s.migrations.iter().all(|m| m.status == MStatus::Completed));
    drop(s);
    rig.assert_no_unknown_calls();
    // The journal: ended, not aborted, every instance done.
    let j = rig.journal();
    assert!(!j.in_flight() && !j.aborted, "{}", j.progress());
    assert_eq!(j.progress(), "5/5 done, 0 in flight");
    assert_eq!(j.disabled_reason.as_deref(), Some(reason.as_str()));
    // No Masakari in this catalog: one info line, nothing else.
    let ha: Vec<String> = (rig.log.lock().unwrap().iter())
        .filter(|l| l.starts_with("instance-ha:"))
        .cloned()
        .collect();
    assert_eq!(
        ha,
        ["instance-ha: no Masakari in the catalog; on_maintenance not set"]
    );
    // No secret in the journal, the report or the action log.
    let journal = std::fs::read_to_string(rig.paths.state_dir.join("journal.json")).unwrap();
    let text = format!("{journal}{r:?}{:?}", rig.log.lock().unwrap());
    for secret in [fake_nova::PASSWORD, fake_nova::TOKEN] {
        assert!(
            !text.contains(secret),
            "a secret leaked into the journal, report or log"
        );
    }
}

#[tokio::test]
async fn short_service_hosts_find_their_fqdn_providers() {
    // A cloud without use_fqdn_hint: service host `node1`, hypervisor and
    // Placement provider `node1.maas`. Without the os-hypervisors mapping
    // every candidate has no capacity and pre-flight refuses.
    let opts = Options {
        source: "node1".into(),
        dests: vec!["node2".into(), "node3".into()],
        short_hosts: true,
        ..servers(3)
    };
    let rig = rig(opts, &[]).await;
    let dry = rig.run(Kind::Evacuate, &[("dry-run", json!(true))]).await;
    assert_eq!(dry.failure, None, "dry-run: {:?}", dry.report);
    assert_eq!(dry.report.counts.planned, 3);
    let out = rig.run(Kind::Evacuate, &[]).await;
    assert_eq!(out.failure, None, "report: {:?}", out.report);
    assert_eq!(out.report.counts.migrated, 3);
    let s = rig.fake.state();
    for i in &out.report.instances {
        let host = &s.server(&i.id).unwrap().host;
        assert!(host == "node2" || host == "node3", "{}: on {host}", i.name);
    }
    // Capacity was read from the FQDN-named providers.
    assert!(
        s.count("GET", "name=node2.maas") >= 1,
        "{:#?}",
        s.call_lines()
    );
    assert_eq!(s.count("GET", "name=node2&"), 0);
    drop(s);
    rig.assert_no_unknown_calls();
}

/// Issue 14: a cloud without a network service in the catalog (this
/// fake has none) still plans; the ports went unchecked and the log says so,
/// and this node's migrations were listed for the ones coming in. Likewise
/// without an image service (image properties) and below compute API 2.97
/// (this fake goes to 2.96: no `GET /servers/{id}/shares` is sent).
#[tokio::test]
async fn without_neutron_the_ports_go_unchecked_and_the_log_says_so() {
    let rig = rig(servers(2), &[]).await;
    let dry = rig.run(Kind::Evacuate, &[("dry-run", json!(true))]).await;
    assert_eq!(dry.failure, None, "dry-run: {:?}", dry.report);
    assert_eq!(dry.report.counts.planned, 2);
    let log = rig.log.lock().unwrap().join("\n");
    assert!(
        log.contains("warning: ports not checked for SR-IOV")
            && log.contains("would fail its live migration"),
        "{log}"
    );
    for words in [
        "warning: Manila shares not checked: the compute API here goes up to microversion 2.96, GET /servers/{id}/shares needs 2.97",
        "warning: image properties not checked for vTPM",
    ] {
        assert!(log.contains(words), "{words}: {log}");
    }
    let s = rig.fake.state();
    assert!(
        s.count("GET", "os-migrations?host=") >= 1,
        "{:#?}",
        s.call_lines()
    );
    assert_eq!(s.count("GET", "/shares"), 0, "{:#?}", s.call_lines());
    drop(s);
    rig.assert_no_unknown_calls();
}

/// Issue 14 (shares and images, their refusals): at compute API 2.97 with
/// an image service, a share or a vTPM image blocks its instance; a share
/// or image read refused (403) or gone (404) leaves a warning that names
/// what went unchecked, never a failure of the plan or of the run.
#[tokio::test]
async fn share_and_image_reads_refused_or_gone_are_named_and_nothing_fails() {
    let rig = rig(
        Options {
            shares_api: true,
            image_service: true,
            ..servers(0)
        },
        &[],
    )
    .await;
    let ids: Vec<String> = {
        let mut s = rig.fake.state();
        let ids: Vec<String> = [
            "with-share",
            "shares-403",
            "shares-404",
            "image-403",
            "image-gone",
            "vtpm-image",
        ]
        .iter()
        .map(|n| s.add_server(n, &rig.host, "active"))
        .collect();
        s.server_mut(&ids[0]).shares = vec!["share-0".into()];
        s.server_mut(&ids[3]).image = "img-403".into();
        s.server_mut(&ids[4]).image = "img-gone".into();
        s.server_mut(&ids[5]).image = "img-vtpm".into();
        s.images.insert("img-403".into(), json!({"id": "img-403"}));
        s.images.insert(
            "img-vtpm".into(),
            json!({"id": "img-vtpm", "hw_tpm_version": "2.0", "hw_tpm_model": "tpm-crb"}),
        );
        ids
    };
    let faults = |rig: &Rig| {
        let mut s = rig.fake.state();
        s.inject("GET", &format!("/servers/{}/shares", ids[1]), 403, 1);
        s.inject("GET", &format!("/servers/{}/shares", ids[2]), 404, 1);
        s.inject("GET", "/images/img-403", 403, 1);
    };
    faults(&rig);
    let dry = rig.run(Kind::Evacuate, &[("dry-run", json!(true))]).await;
    let refusal = dry.failure.clone().unwrap_or_default();
    assert!(
        refusal.starts_with(
            "a real run would stop: 2 instance(s) cannot be live-migrated: with-share"
        ) && refusal.contains("vtpm-image")
            && refusal.contains("run with force=true to drain the others"),
        "only the two blockers, not the refused reads: {refusal}"
    );
    let check = |name: &str| {
        let i = (dry.report.instances.iter())
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("{name} in {:#?}", dry.report.instances));
        (i.result, i.plan.as_ref().and_then(|p| p.check))
    };
    use nlm::plan::Check;
    assert_eq!(
        check("with-share"),
        (ResultKind::Skipped, Some(Check::Share))
    );
    assert_eq!(
        check("vtpm-image"),
        (ResultKind::Skipped, Some(Check::Vtpm))
    );
    for n in ["shares-403", "shares-404", "image-403", "image-gone"] {
        assert_eq!(check(n), (ResultKind::Planned, None), "{n}");
    }
    let log = rig.log.lock().unwrap().join("\n");
    for words in [
        format!(
            "warning: Manila shares not checked for shares-403 ({})",
            ids[1]
        ),
        "warning: image img-403 not readable".to_string(),
        "warning: image img-gone not readable".to_string(),
        "its hw_tpm_version (vTPM) not checked".to_string(),
    ] {
        assert!(log.contains(&words), "{words}: {log}");
    }
    // A share read that found the server gone is no warning: nothing to
    // check (it is listed and moved, or found gone, at its turn).
    assert!(!log.contains(&format!("shares-404 ({})", ids[2])), "{log}");
    {
        let s = rig.fake.state();
        assert_eq!(
            s.count("GET", "/shares"),
            6,
            "one per live candidate: {:#?}",
            s.call_lines()
        );
        assert_eq!(
            s.count("GET", "/image/v2/images/"),
            4,
            "one per image: {:#?}",
            s.call_lines()
        );
    }
    // The run with the same refusals: the two blocked stay, the rest move.
    faults(&rig);
    let out = rig.run(Kind::Evacuate, &[("force", json!(true))]).await;
    let s = rig.fake.state();
    for (k, id) in ids.iter().enumerate() {
        let f = s.server(id).unwrap();
        if k == 0 || k == 5 {
            assert_eq!(f.host, rig.host, "{}: stays", f.name);
            assert_eq!(f.posts, 0, "{}", f.name);
        } else {
            assert_ne!(f.host, rig.host, "{}: moved", f.name);
        }
    }
    assert_eq!(out.report.counts.migrated, 4, "{:?}", out.report);
    assert_eq!(out.report.counts.skipped, 2, "{:?}", out.report);
    drop(s);
    rig.assert_no_unknown_calls();
}

#[tokio::test]
async fn migrate_vm_to_a_target_host_moves_only_that_instance() {
    let rig = rig(servers(3), &[]).await;
    let out = rig
        .run(
            Kind::MigrateVm,
            &[
                ("vm", json!("fake-0001")),
                ("target-host", json!("node3.maas")),
                ("block-migration", json!("true")),
            ],
        )
        .await;
    assert_eq!(out.failure, None, "report: {:?}", out.report);
    assert_eq!(out.report.counts.migrated, 1);
    let s = rig.fake.state();
    let moved = s.server_named("fake-0001").unwrap();
    assert_eq!(moved.host, "node3.maas");
    assert_eq!(s.migrations.len(), 1);
    assert_eq!(s.migrations[0].dest, "node3.maas");
    assert_eq!(s.migrations[0].block_migration, json!(true));
    // The others stay; migrate-vm leaves the service enabled.
    assert_eq!(s.server_named("fake-0000").unwrap().host, rig.host);
    assert_eq!(s.services[0].status, "enabled");
    assert_eq!(s.count("PUT", "/os-services/"), 0);
    drop(s);
    rig.assert_no_unknown_calls();
    assert!(!rig.journal().in_flight());
}

#[tokio::test]
async fn include_stopped_cold_migrates_and_confirms_a_stopped_instance() {
    let rig = rig(servers(1), &[]).await;
    let stopped = rig
        .fake
        .state()
        .add_server("stopped-0", "node1.maas", "stopped");
    // Without include-stopped it is skipped with the reason.
    let dry = rig.run(Kind::Evacuate, &[("dry-run", json!(true))]).await;
    let d = dry
        .report
        .instances
        .iter()
        .find(|i| i.id == stopped)
        .unwrap();
    assert_eq!(d.result, ResultKind::Skipped);
    assert!(
        d.error
            .as_deref()
            .unwrap_or("")
            .contains("include-stopped=true"),
        "{d:?}"
    );
    let out = rig
        .run(Kind::Evacuate, &[("include-stopped", json!(true))])
        .await;
    assert_eq!(out.failure, None, "report: {:?}", out.report);
    assert_eq!(out.report.counts.migrated, 1, "{:?}", out.report);
    assert_eq!(out.report.counts.cold_migrated, 1, "{:?}", out.report);
    let s = rig.fake.state();
    let f = s.server(&stopped).unwrap();
    assert_ne!(f.host, rig.host);
    // Confirmed, and stopped again as before the move.
    assert_eq!(
        (f.status.as_str(), f.vm_state.as_str()),
        ("SHUTOFF", "stopped")
    );
    assert_eq!(s.count("POST", "migrate"), 1, "{:#?}", s.call_lines());
    assert_eq!(s.count("POST", "confirmResize"), 1, "{:#?}", s.call_lines());
    let cold = s.migrations.iter().find(|m| !m.live).unwrap();
    assert_eq!(cold.status, MStatus::Confirmed);
    drop(s);
    rig.assert_no_unknown_calls();
}

#[tokio::test]
async fn a_conflict_is_retried_and_a_stalled_migration_is_aborted() {
    let rig = rig(
        servers(3),
        &[("stall-timeout", json!(1)), ("retries", json!(1))],
    )
    .await;
    let (first, stalled) = {
        let mut s = rig.fake.state();
        let first = s.servers[0].id.clone();
        let stalled = s.servers[2].id.clone();
        // The first os-migrateLive of server 0 meets a 409 once.
        s.inject("POST", &format!("/servers/{first}/action"), 409, 1);
        s.stall(&stalled);
        (first, stalled)
    };
    let out = rig.run(Kind::Evacuate, &[]).await;
    let r = &out.report;
    let by_id = |id: &str| r.instances.iter().find(|i| i.id == id).unwrap();
    // The 409 is a refused start, retried after Nova's conflict back-off
    // (15 s, not configurable), not a failed attempt.
    let f = by_id(&first);
    assert_eq!(f.result, ResultKind::Migrated, "{r:?}");
    assert_eq!(f.attempts, 1, "{r:?}");
    assert!(
        f.decisions.iter().any(|d| d.contains("refused with 409")),
        "{:?}",
        f.decisions
    );
    let st = by_id(&stalled);
    assert_ne!(st.result, ResultKind::Migrated, "{r:?}");
    assert!(out.failure.is_some(), "a stalled instance fails the action");
    assert_eq!(st.result, ResultKind::Aborted, "{r:?}");
    assert!(
        st.error.as_deref().unwrap_or("").contains("stalled"),
        "{st:?}"
    );
    let s = rig.fake.state();
    assert_eq!(
        s.count("POST", &format!("/servers/{first}/action")),
        2,
        "{:#?}",
        s.call_lines()
    );
    assert_eq!(s.server(&first).unwrap().posts, 1);
    // The stalled migrations were aborted (DELETE) and it stayed home.
    assert!(
        s.count("DELETE", &format!("/servers/{stalled}/migrations/")) >= 1,
        "{:#?}",
        s.call_lines()
    );
    assert_eq!(s.server(&stalled).unwrap().host, rig.host);
    assert!(
        s.migrations
            .iter()
            .filter(|m| s.servers[m.server].id == stalled)
            .all(|m| m.status == MStatus::Cancelled)
    );
    drop(s);
    rig.assert_no_unknown_calls();
    assert!(!rig.journal().in_flight());
}

#[tokio::test]
async fn a_vanished_server_ends_without_stopping_the_others() {
    let rig = rig(servers(3), &[]).await;
    let gone = {
        let mut s = rig.fake.state();
        let gone = s.servers[1].id.clone();
        // Deleted between pre-flight and its move: its POST meets a 404.
        s.inject("POST", &format!("/servers/{gone}/action"), 404, 1);
        s.stall(&gone);
        gone
    };
    let out = rig.run(Kind::Evacuate, &[]).await;
    let r = &out.report;
    assert_eq!(r.counts.migrated, 2, "{r:?}");
    let g = r.instances.iter().find(|i| i.id == gone).unwrap();
    assert_ne!(g.result, ResultKind::Migrated);
    assert!(
        g.error.as_deref().is_some_and(|e| !e.is_empty()),
        "the vanished instance says why: {g:?}"
    );
    assert!(!rig.journal().in_flight());
    rig.assert_no_unknown_calls();
}

#[tokio::test]
async fn an_interrupted_evacuation_is_resumed_without_a_second_post() {
    let rig = rig(servers(4), &[]).await;
    // Freeze every migration so the run is surely mid-flight when killed.
    {
        let mut s = rig.fake.state();
        let ids: Vec<String> = s.servers.iter().map(|s| s.id.clone()).collect();
        for id in &ids {
            s.stall(id);
        }
    }
    // "Kill" the run (drop its future) once two migrations are running: the
    // journal is what a SIGKILL would leave.
    tokio::select! {
        _ = rig.run(Kind::Evacuate, &[]) => panic!("the run ended although every migration is stalled"),
        _ = rig.until("two running migrations", |s| {
            s.migrations.iter().filter(|m| m.status == MStatus::Running).count() >= 2
        }) => {}
    }
    let j = rig.journal();
    assert!(j.in_flight(), "the journal of a killed run is in flight");
    // Nova goes on: the stalled migrations finish.
    rig.fake.state().stalled.clear();
    let out = rig.run(Kind::Evacuate, &[]).await;
    assert_eq!(out.failure, None, "report: {:?}", out.report);
    assert_eq!(out.report.counts.migrated, 4, "{:?}", out.report);
    let s = rig.fake.state();
    for f in &s.servers {
        assert_eq!(f.posts, 1, "{}: exactly one os-migrateLive", f.name);
        assert_ne!(f.host, rig.host, "{}", f.name);
    }
    assert_eq!(s.services[0].status, "disabled");
    drop(s);
    rig.assert_no_unknown_calls();
    let j = rig.journal();
    assert!(!j.in_flight());
    assert_eq!(j.progress(), "4/4 done, 0 in flight");
}

#[tokio::test]
async fn an_abort_request_cancels_what_runs_and_ends_the_run() {
    let rig = rig(servers(4), &[]).await;
    {
        let mut s = rig.fake.state();
        let ids: Vec<String> = s.servers.iter().map(|s| s.id.clone()).collect();
        for id in &ids {
            s.stall(id);
        }
    }
    let request = async {
        rig.until("a running migration", |s| {
            s.migrations.iter().any(|m| m.status == MStatus::Running)
        })
        .await;
        nlm::state::AbortRequests::in_dir(&rig.paths.state_dir)
            .submit(None, nlm::time::now_ms())
            .expect("abort request");
        std::future::pending::<()>().await
    };
    let out = tokio::select! {
        out = rig.run(Kind::Evacuate, &[]) => out,
        _ = request => unreachable!(),
    };
    let r = &out.report;
    assert!(out.failure.is_some(), "an aborted run fails the action");
    assert_eq!(r.counts.migrated, 0, "{r:?}");
    assert!(r.counts.aborted >= 1, "{r:?}");
    let s = rig.fake.state();
    // Every migration that ran was cancelled; nothing moved.
    assert!(
        s.count("DELETE", "/migrations/") >= 1,
        "{:#?}",
        s.call_lines()
    );
    assert!(
        s.migrations.iter().all(|m| m.status == MStatus::Cancelled),
        "{:?}",
        s.migrations
    );
    assert!(s.servers.iter().all(|f| f.host == rig.host));
    drop(s);
    rig.assert_no_unknown_calls();
    let j = rig.journal();
    assert!(!j.in_flight() && j.aborted);
    let _ = &rig.dir;
}

#[tokio::test]
async fn a_refused_hypervisor_listing_falls_back_to_the_service_host_names() {
    // A policy that refuses os-hypervisors (403): providers are taken to be
    // named after the service hosts, which holds where both are the FQDN.
    let rig = rig(servers(2), &[]).await;
    rig.fake
        .state()
        .inject("GET", "/os-hypervisors/detail", 403, 1);
    let out = rig.run(Kind::Evacuate, &[]).await;
    assert_eq!(out.failure, None, "report: {:?}", out.report);
    assert_eq!(out.report.counts.migrated, 2);
    let s = rig.fake.state();
    // Refused for pre-flight; the proof of empty lists them again.
    assert_eq!(s.count("GET", "/os-hypervisors/detail"), 2);
    assert!(s.count("GET", "name=node2.maas") >= 1);
    drop(s);
    rig.assert_no_unknown_calls();
}

/// The same drain on the local cloud run with `NLM_CLOUD_SHORT_HOSTS=1`
/// (service hosts `node1`, `node4`; hypervisors and providers
/// `node1.maas`, `node4.maas`), when `NLM_SHORT_HOSTS_CLOUD_DIR` names its
/// state directory. Not the shared cloud: that one runs with FQDN service
/// hosts, so this test skips (with its marker) unless pointed at one.
#[tokio::test]
async fn short_service_hosts_on_a_real_cloud() {
    let Some(dir) = std::env::var_os("NLM_SHORT_HOSTS_CLOUD_DIR").map(std::path::PathBuf::from)
    else {
        crate::cloud::note_skipped("NLM_SHORT_HOSTS_CLOUD_DIR not set (no short-hosts cloud)");
        return;
    };
    systemctl_says_active();
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(f).display()))
    };
    let adminrc: BTreeMap<String, String> = read("adminrc")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches(['"', '\'']).to_string()))
        .collect();
    let admin = OpenStack::connect(AuthConfig::from_os_vars(&adminrc).expect("adminrc"))
        .await
        .expect("admin");
    let bag: BTreeMap<String, String> =
        serde_json::from_str(&read("relation.json")).expect("relation.json");
    let ours = OpenStack::connect(
        AuthConfig::from_relation(&bag, Interface::Internal, None, None).expect("relation"),
    )
    .await
    .expect("ours");
    let c = admin.compute();
    let flavor = c
        .flavors()
        .await
        .unwrap()
        .into_iter()
        .find(|f| f.name == "m1.tiny")
        .expect("m1.tiny")
        .id;
    for i in 0..2 {
        let body = json!({"server": {"name": format!("short-{i}"), "imageRef": fake_nova::IMAGE_ID,
            "flavorRef": flavor, "networks": "none", "host": "node1",
            "metadata": {"nlm_migration_seconds": "1"}}});
        c.raw(reqwest::Method::POST, "/servers", Some(body))
            .await
            .expect("boot");
    }
    let t = std::time::Instant::now();
    loop {
        let on = c.servers_on_host("node1").await.unwrap();
        if on
            .iter()
            .filter(|s| s.status == "ACTIVE" && s.task_state.is_none())
            .count()
            >= 2
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "servers did not boot on node1"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let state = tempfile::tempdir().unwrap();
    let paths = Paths::from_env(|k| match k {
        "NLM_STATE_DIR" => Some(state.path().join("state").display().to_string()),
        "NLM_NOVA_CONF" => Some(state.path().join("nova.conf").display().to_string()),
        "NLM_NOVA_COMPUTE_LOG" => Some(state.path().join("none.log").display().to_string()),
        _ => None,
    });
    let config =
        Config::from_values(&BTreeMap::from([("poll-interval".to_string(), json!(0.5))])).unwrap();
    let log = |_: &str| {};
    let env = drain::Env {
        os: &ours,
        config: &config,
        paths: &paths,
        host: "node1".into(),
        unit: "nova-live-migration/0".into(),
        task: None,
        log: &log,
        status: &|_: &str| {},
    };
    let params = Params::from_action(Kind::Evacuate, &BTreeMap::new()).unwrap();
    let out = drain::run(&env, &params).await.expect("drain::run");
    // Clean up before asserting: the servers go, the service comes back.
    for s in c
        .servers_on_host("node4")
        .await
        .unwrap()
        .into_iter()
        .chain(c.servers_on_host("node1").await.unwrap())
    {
        if s.name.starts_with("short-") {
            let _ = c
                .raw(reqwest::Method::DELETE, &format!("/servers/{}", s.id), None)
                .await;
        }
    }
    if let Some(s) = c.compute_service("node1").await.unwrap() {
        c.enable_service(&s).await.unwrap();
    }
    assert_eq!(out.failure, None, "report: {:?}", out.report);
    assert_eq!(out.report.counts.migrated, 2, "{:?}", out.report);
    for i in &out.report.instances {
        assert_eq!(i.destination.as_deref(), Some("node4"), "{i:?}");
    }
}
