//! `bench scale [N]`: a drain of N instances (default 500) through the
//! production orchestrator (`nlm::drain::run`, same client, same planner)
//! against `FakeNova` (`tests/harness/fake_nova.rs`), an in-process fake of
//! Keystone, Nova and Placement served by wiremock.
//! Prints peak RSS, wall time, API requests per tick and the journal size;
//! then times `plan::Drain::step` alone for N = 100, 500, 2000.
//!
//! The fake is a small event simulation of one source host: each accepted
//! `os-migrateLive` creates a migration record that is `queued`, becomes
//! `running` when one of the source's `max_concurrent_live_migrations` slots
//! is free (Nova's per-compute semaphore) and `completed` after a fixed
//! duration, at which moment the server moves to a destination (round
//! robin over the other hosts). Unknown routes and unknown query parameters
//! are answered 404/400 and counted: the bench fails if any occurred.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::fake_nova::{Fake, FakeNova, Options};

use nlm::config::Config;
use nlm::drain::{self, Kind, Params};
use nlm::openstack::{AuthConfig, Interface, OpenStack};
use nlm::paths::Paths;
use nlm::plan::{self, Command, MigrationStatus, MigrationView, Observation, ServerView};
use serde_json::{Value, json};
use wiremock::MockServer;

const SOURCE: &str = "node1.maas";
const DESTS: [&str; 4] = ["node2.maas", "node3.maas", "node4.maas", "node5.maas"];
const RAM_MB: u64 = 2048;
/// Nova's `max_concurrent_live_migrations` on the source (and in its nova.conf).
const NOVA_MAX_CONCURRENT: usize = 4;
const POLL_INTERVAL_S: f64 = 0.2;

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn rss_kib() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets `VmHWM` to the current RSS (Linux ≥ 4.0); false when refused.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn main(n: usize) -> Result<(), String> {
    let fake_bin = std::env::temp_dir().join(format!("nlm-scale-bin-{}", std::process::id()));
    std::fs::create_dir_all(&fake_bin).map_err(|e| e.to_string())?;
    std::fs::write(fake_bin.join("systemctl"), "#!/bin/sh\necho active\n")
        .map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        fake_bin.join("systemctl"),
        std::fs::Permissions::from_mode(0o755),
    )
    .map_err(|e| e.to_string())?;
    let path = format!(
        "{}:{}",
        fake_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // SAFETY: single-threaded here, before any runtime starts.
    unsafe { std::env::set_var("PATH", path) };
    let migration_ms = migration_ms();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // The drain with the fake in a child process first (a clean process:
    // its peak is the drain's own), then the brief's setting, the fake in
    // this process (its memory counts in the peak).
    let result = rt
        .block_on(drain_run(n, migration_ms, true))
        .and_then(|a| Ok((a, rt.block_on(drain_run(n, migration_ms, false))?)));
    let _ = std::fs::remove_dir_all(&fake_bin);
    let (child, inproc) = result?;
    let planner: Vec<PlannerRow> = [100, 500, 2000].into_iter().map(planner_bench).collect();
    print_tables(&[child, inproc], &planner);
    Ok(())
}

struct RunRow {
    child: bool,
    n: usize,
    migration_ms: u64,
    wall_s: f64,
    rss_before_kib: u64,
    hwm_before_kib: u64,
    peak_kib: u64,
    peak_reset: bool,
    requests: u64,
    by_route: BTreeMap<String, u64>,
    ticks: u64,
    fake_requests: u64,
    fake_bytes: u64,
    journal_bytes: u64,
    conflicts: u64,
    max_limit: usize,
}

/// Serves the fake in this process (`bench scale-fake N`), for the run
/// that keeps it out of the measured process: prints the URI, serves until
/// killed.
pub fn serve(n: usize) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let (server, _cloud) = start_fake(n, migration_ms()).await;
        println!("{}", server.uri());
        use std::io::Write;
        let _ = std::io::stdout().flush();
        std::future::pending::<()>().await;
    });
    Ok(())
}

fn migration_ms() -> u64 {
    std::env::var("NLM_SCALE_MIGRATION_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

async fn start_fake(n: usize, migration_ms: u64) -> (MockServer, Arc<Mutex<FakeNova>>) {
    let max_limit = std::env::var("NLM_SCALE_MAX_LIMIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let fake = Fake::start(Options {
        source: SOURCE.into(),
        dests: DESTS.map(String::from).to_vec(),
        servers: n,
        name_prefix: "scale".into(),
        ram_mb: RAM_MB,
        migration_ms,
        max_concurrent: NOVA_MAX_CONCURRENT,
        max_limit,
        short_hosts: false,
        shares_api: false,
        image_service: false,
    })
    .await;
    // The bench measures memory: no call log.
    fake.state().record = false;
    (fake.server, fake.cloud)
}

/// Where the fake runs: in this process (the brief's setting: its memory
/// counts in the peak) or in a child process (the peak is the drain's own).
enum FakeAt {
    InProcess(MockServer, Arc<Mutex<FakeNova>>),
    Child(std::process::Child, String),
}

impl FakeAt {
    fn uri(&self) -> String {
        match self {
            FakeAt::InProcess(s, _) => s.uri(),
            FakeAt::Child(_, u) => u.clone(),
        }
    }
    async fn summary(&self) -> Result<Value, String> {
        match self {
            FakeAt::InProcess(_, c) => Ok(c.lock().unwrap_or_else(|e| e.into_inner()).summary()),
            FakeAt::Child(_, u) => reqwest::get(format!("{u}/_fake/report"))
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

impl Drop for FakeAt {
    fn drop(&mut self) {
        if let FakeAt::Child(child, _) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn drain_run(n: usize, migration_ms: u64, child: bool) -> Result<RunRow, String> {
    let fake = if child {
        use std::io::BufRead;
        let mut c = std::process::Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
            .args(["scale-fake", &n.to_string()])
            .env("NLM_SCALE_MIGRATION_MS", migration_ms.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        let out = c.stdout.take().ok_or("no stdout")?;
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        FakeAt::Child(c, line.trim().to_string())
    } else {
        let (s, c) = start_fake(n, migration_ms).await;
        FakeAt::InProcess(s, c)
    };
    let url = reqwest::Url::parse(&fake.uri()).map_err(|e| e.to_string())?;
    let bag: BTreeMap<String, String> = [
        ("auth_protocol", "http".to_string()),
        ("auth_host", url.host_str().unwrap_or_default().to_string()),
        ("auth_port", url.port().unwrap_or(80).to_string()),
        ("credentials_username", "nova_live_migration".into()),
        ("credentials_password", "bench-password".into()),
        ("credentials_project", "services".into()),
        ("credentials_user_domain_name", "service_domain".into()),
        ("credentials_project_domain_name", "service_domain".into()),
        ("region", "RegionOne".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let cfg = AuthConfig::from_relation(&bag, Interface::Internal, None, None)
        .map_err(|e| e.to_string())?;
    let os = OpenStack::connect(cfg).await.map_err(|e| e.to_string())?;

    let state = tempfile::tempdir().map_err(|e| e.to_string())?;
    let nova_conf = state.path().join("nova.conf");
    std::fs::write(
        &nova_conf,
        format!(
            "[DEFAULT]\nhost = {SOURCE}\nmax_concurrent_live_migrations = {NOVA_MAX_CONCURRENT}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let state_dir = state.path().join("state");
    let paths = Paths::from_env(|k| match k {
        "NLM_STATE_DIR" => Some(state_dir.display().to_string()),
        "NLM_NOVA_CONF" => Some(nova_conf.display().to_string()),
        "NLM_NOVA_COMPUTE_LOG" => Some(state.path().join("none.log").display().to_string()),
        _ => None,
    });
    let config = Config::from_values(&BTreeMap::from([(
        "poll-interval".to_string(),
        json!(POLL_INTERVAL_S),
    )]))
    .map_err(|e| e.to_string())?;
    let log = |_: &str| {};
    let env = drain::Env {
        os: &os,
        config: &config,
        paths: &paths,
        host: SOURCE.to_string(),
        unit: "nova-live-migration/0".into(),
        task: Some("scale".into()),
        log: &log,
        status: &|_: &str| {},
    };
    let params = Params::from_action(Kind::Evacuate, &BTreeMap::new())?;
    let before = os.request_stats();
    let (rss_before_kib, hwm_before_kib) = rss_kib();
    let peak_reset = reset_peak();
    let t = Instant::now();
    let outcome = drain::run(&env, &params).await.map_err(|e| e.to_string())?;
    let wall_s = t.elapsed().as_secs_f64();
    let (_, peak_kib) = rss_kib();
    let stats = os.request_stats().since(&before);

    if let Some(f) = &outcome.failure {
        return Err(format!("evacuate failed: {f}"));
    }
    let c = fake.summary().await?;
    let num = |k: &str| c[k].as_u64().unwrap_or(0);
    if c["unknown"].as_object().is_none_or(|u| !u.is_empty()) {
        return Err(format!(
            "the client made requests the fake does not implement: {}",
            c["unknown"]
        ));
    }
    let r = &outcome.report;
    if r.counts.migrated as usize != n || r.instances.len() != n {
        return Err(format!(
            "migrated {} of {n} ({} reported)",
            r.counts.migrated,
            r.instances.len()
        ));
    }
    for i in &r.instances {
        let s = &c["servers"][&i.id];
        if i.result != plan::ResultKind::Migrated || i.attempts != 1 {
            return Err(format!(
                "{}: {:?} after {} attempts",
                i.name, i.result, i.attempts
            ));
        }
        let host = s["host"].as_str().unwrap_or(SOURCE);
        if s["posts"] != 1 || host == SOURCE || i.destination.as_deref() != Some(host) {
            return Err(format!(
                "{}: {} os-migrateLive POSTs, now on {host}, reported {:?}",
                i.name, s["posts"], i.destination
            ));
        }
    }
    if num("migrations") != n as u64 || num("completed") != n as u64 {
        return Err(format!(
            "{} migration records, {} completed, not {n}",
            num("migrations"),
            num("completed")
        ));
    }
    if c["source_service"] != "disabled" {
        return Err("the source service was not disabled".into());
    }
    let journal_bytes = dir_bytes(&state_dir);
    Ok(RunRow {
        child,
        n,
        migration_ms,
        wall_s,
        rss_before_kib,
        hwm_before_kib,
        peak_kib,
        peak_reset,
        requests: stats.total,
        by_route: stats.by_route.clone(),
        ticks: num("list_ticks"),
        fake_requests: num("requests"),
        fake_bytes: num("bytes_out"),
        journal_bytes,
        conflicts: num("conflicts"),
        max_limit: num("max_limit") as usize,
    })
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Planner time per tick: `Drain::step` alone, on synthetic observations.

struct PlannerRow {
    n: usize,
    ticks: u64,
    calls: usize,
    median_us: f64,
    p99_us: f64,
    max_us: f64,
    raw_max_us: f64,
    preflight_ms: f64,
}

const REPLAYS: usize = 5;

fn planner_input(n: usize) -> plan::PreflightInput {
    let servers = (0..n)
        .map(|i| plan::ServerInfo {
            id: format!("00000000-0000-4000-8000-{i:012}"),
            name: format!("scale-{i:04}"),
            status: "ACTIVE".into(),
            vm_state: "active".into(),
            task_state: None,
            image_backed: true,
            volumes_attached: 0,
            flavor: plan::Flavor {
                vcpus: 1,
                ram_mb: RAM_MB,
                disk_gb: 10,
                ephemeral_gb: 0,
                swap_mb: 0,
            },
            allocation: Some(BTreeMap::from([
                ("VCPU".to_string(), 1),
                ("MEMORY_MB".to_string(), RAM_MB),
                ("DISK_GB".to_string(), 10),
            ])),
            ..Default::default()
        })
        .collect();
    let inv = |total: u64, ratio: f64| plan::Inventory {
        total,
        reserved: 0,
        min_unit: 1,
        max_unit: total,
        step_size: 1,
        allocation_ratio: ratio,
    };
    let hosts = DESTS
        .iter()
        .map(|h| plan::HostCandidate {
            host: h.to_string(),
            enabled: true,
            up: true,
            inventories: BTreeMap::from([
                ("VCPU".to_string(), inv(1024, 16.0)),
                ("MEMORY_MB".to_string(), inv(16 << 20, 1.0)),
                ("DISK_GB".to_string(), inv(1_000_000, 1.0)),
            ]),
            usages: BTreeMap::new(),
        })
        .collect();
    plan::PreflightInput {
        host: SOURCE.into(),
        service: Some(plan::ServiceView {
            status: "enabled".into(),
            state: "up".into(),
            disabled_reason: None,
        }),
        local_units: BTreeMap::from([
            ("nova-compute".to_string(), true),
            ("libvirtd".to_string(), true),
        ]),
        servers,
        hosts,
        groups: vec![],
        member_hosts: BTreeMap::new(),
        ..Default::default()
    }
}

/// Drives a `Drain` of `n` with what `drive`/`observe` would feed it from
/// a Nova where each migration runs for 2 ticks after it is found: each
/// tick a migration view (running with memory counters, then completed)
/// for every in-flight instance, and a server view when it has ended.
fn planner_bench(n: usize) -> PlannerRow {
    let runs: Vec<(Vec<f64>, u64, f64)> = (0..REPLAYS).map(|_| planner_once(n)).collect();
    let calls = runs[0].0.len();
    assert!(runs.iter().all(|r| r.0.len() == calls), "replays differ");
    let raw_max_us = runs
        .iter()
        .flat_map(|r| r.0.iter())
        .cloned()
        .fold(0.0, f64::max);
    let mut times: Vec<f64> = (0..calls)
        .map(|i| runs.iter().map(|r| r.0[i]).fold(f64::INFINITY, f64::min))
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    PlannerRow {
        n,
        ticks: runs[0].1,
        calls,
        median_us: pct(0.5),
        p99_us: pct(0.99),
        max_us: times[times.len() - 1],
        raw_max_us,
        preflight_ms: runs.iter().map(|r| r.2).fold(f64::INFINITY, f64::min),
    }
}

/// One synthetic drain: each step call's time (µs), ticks, pre-flight ms.
fn planner_once(n: usize) -> (Vec<f64>, u64, f64) {
    let t = Instant::now();
    let input = planner_input(n);
    let pf = plan::preflight(&input, &plan::PreflightParams::default());
    let preflight_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert!(pf.can_proceed(), "synthetic pre-flight refused");
    let policy = plan::Policy {
        max_concurrent: NOVA_MAX_CONCURRENT as u32 + 1,
        poll_interval_ms: (POLL_INTERVAL_S * 1000.0) as u64,
        ..plan::Policy::default()
    };
    let t0: u64 = 1_790_000_000_000;
    let mut d = plan::Drain::new(SOURCE, pf.to_move(), policy, t0);
    assert_eq!(d.instances.len(), n);
    let poll = (POLL_INTERVAL_S * 1000.0) as u64;
    let total = RAM_MB << 20;
    // instance → (migration id, tick it was found)
    let mut found: HashMap<String, (u64, u64)> = HashMap::new();
    let mut next_mid = 1u64;
    let mut times: Vec<f64> = Vec::new();
    let mut obs: Vec<Observation> = Vec::new();
    let mut tick = 0u64;
    let view = |id: u64, status: MigrationStatus, rem: Option<u64>, at: u64| MigrationView {
        id: plan::MigrationId(id),
        status,
        created_at: Some(at),
        dest_compute: Some(DESTS[0].into()),
        memory_total_bytes: rem.map(|_| total),
        memory_processed_bytes: rem.map(|r| total - r),
        memory_remaining_bytes: rem,
        disk_total_bytes: rem.map(|_| 0),
        disk_processed_bytes: rem.map(|_| 0),
        disk_remaining_bytes: rem.map(|_| 0),
    };
    let here = |host: &str| ServerView {
        host: host.into(),
        status: "ACTIVE".into(),
        vm_state: plan::VmState::Active,
        task_state: None,
        fault: None,
        policy: None,
    };
    loop {
        let now = t0 + tick * poll;
        // One round as `drive` does it: poll, execute every command, hand
        // back the results, poll again at the same instant until quiet.
        for _ in 0..8 {
            let s = Instant::now();
            let cmds = d.step(now, &obs);
            times.push(s.elapsed().as_secs_f64() * 1e6);
            obs.clear();
            for c in cmds {
                match c {
                    Command::StartLive {
                        instance, attempt, ..
                    } => {
                        found.entry(instance.clone()).or_insert_with(|| {
                            next_mid += 1;
                            (next_mid - 1, tick)
                        });
                        obs.push(Observation::Started {
                            instance,
                            attempt,
                            result: plan::StartResult::Accepted,
                        })
                    }
                    Command::ReadServer { instance } => {
                        let host = match found.get(&instance) {
                            Some(&(_, at)) if tick - at >= 3 => DESTS[0],
                            _ => SOURCE,
                        };
                        obs.push(Observation::Server {
                            instance,
                            view: here(host),
                        });
                    }
                    Command::ListMigrations { .. } => {
                        for r in d.instances.iter().filter(|r| r.in_flight()) {
                            let Some(&(mid, at)) = found.get(&r.id) else {
                                continue;
                            };
                            let st = if tick - at < 3 {
                                MigrationStatus::Running
                            } else {
                                MigrationStatus::Completed
                            };
                            obs.push(Observation::Migration {
                                instance: r.id.clone(),
                                view: view(mid, st, None, t0 + at * poll),
                            });
                        }
                        obs.push(Observation::Listed { ok: true });
                    }
                    Command::ReadProgress { instance, .. } => {
                        if let Some(&(mid, at)) = found.get(&instance) {
                            let age = tick - at;
                            let rem = total - total * age.min(3) / 3;
                            obs.push(Observation::Migration {
                                instance,
                                view: view(
                                    mid,
                                    MigrationStatus::Running,
                                    Some(rem),
                                    t0 + at * poll,
                                ),
                            });
                        }
                    }
                    _ => {}
                }
            }
            if obs.is_empty() {
                break;
            }
        }
        if d.is_done() {
            break;
        }
        tick += 1;
        assert!(tick < 100_000, "synthetic drain does not end");
    }
    let migrated = d
        .instances
        .iter()
        .filter(|r| r.outcome() == Some(plan::Outcome::Migrated))
        .count();
    assert_eq!(migrated, n, "synthetic drain: {migrated}/{n} migrated");
    (times, tick, preflight_ms)
}

fn print_tables(runs: &[RunRow], planner: &[PlannerRow]) {
    let r0 = &runs[0];
    println!(
        "scale: evacuate of {} instances through nlm::drain::run against the fake cloud \
         (migration {} ms each, nova max_concurrent_live_migrations {NOVA_MAX_CONCURRENT} on the source, \
         {} destinations, poll-interval {POLL_INTERVAL_S} s, Nova max_limit {})",
        r0.n,
        r0.migration_ms,
        DESTS.len(),
        r0.max_limit
    );
    println!();
    println!(
        "| fake runs | N | wall s | RSS before drain MiB | peak RSS during drain MiB (VmHWM) | API requests | poll ticks | requests per tick | response KiB per tick | journal KiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1}{} | {} | {} | {:.2} | {:.1} | {:.1} |",
            if r.child {
                "in a child process"
            } else {
                "in this process"
            },
            r.n,
            r.wall_s,
            mib(r.rss_before_kib),
            mib(r.peak_kib),
            if r.peak_reset { "" } else { " (since start)" },
            r.requests,
            r.ticks,
            r.requests as f64 / r.ticks.max(1) as f64,
            r.fake_bytes as f64 / 1024.0 / r.ticks.max(1) as f64,
            r.journal_bytes as f64 / 1024.0
        );
    }
    println!();
    for r in runs {
        println!(
            "fake {}: VmHWM before the drain {:.1} MiB; requests seen by the fake {} (client counted {}, + token and report calls); 409 conflicts {}",
            if r.child {
                "in a child process"
            } else {
                "in this process"
            },
            mib(r.hwm_before_kib),
            r.fake_requests,
            r.requests,
            r.conflicts
        );
        let routes: Vec<String> = r
            .by_route
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        println!("  by route: {}", routes.join("; "));
    }
    println!();
    println!(
        "planner: plan::Drain::step alone on synthetic observations for every in-flight instance each tick \
         (max-concurrent {}, each migration running 3 ticks; two step calls per tick as drive() does); \
         the drain is replayed {REPLAYS} times and each call's time is its minimum over the replays (filters preemption on a shared machine); raw max over all replays in the last column",
        NOVA_MAX_CONCURRENT + 1
    );
    println!();
    println!(
        "| N | pre-flight ms | ticks | step calls | median µs | p99 µs | max µs | raw max µs |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for p in planner {
        println!(
            "| {} | {:.2} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            p.n, p.preflight_ms, p.ticks, p.calls, p.median_us, p.p99_us, p.max_us, p.raw_max_us
        );
    }
}
