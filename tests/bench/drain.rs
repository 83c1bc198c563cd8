//! `bench drain`: our evacuate vs the anchor on the local cloud.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nlm::config::Config;
use nlm::drain::{self, Kind, Params};
use nlm::openstack::{
    AuthConfig, BlockMigration, Interface, LiveMigrate, MigrationFilter, OpenStack,
};
use nlm::paths::Paths;
use serde_json::{Value, json};

pub(crate) const IMAGE_ID: &str = "3b6a1c2e-9d4f-4e8a-8c1b-6f0d2a7e5c01";
pub(crate) const HOSTS: [&str; 2] = ["node1.maas", "node4.maas"];

pub(crate) fn cloud_dir() -> PathBuf {
    std::env::var_os("NLM_CLOUD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/nlm-cloud"))
}

pub(crate) fn adminrc() -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(cloud_dir().join("adminrc"))
        .map_err(|e| format!("the local cloud is not up ({e}): tests/cloud/cloud up"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches(['"', '\'']).to_string()))
        .collect())
}

pub(crate) fn nova_max_concurrent() -> u32 {
    std::fs::read_to_string(cloud_dir().join("etc/nova/nova.conf"))
        .ok()
        .and_then(|t| nlm::host::parse_nova_conf(&t).max_concurrent_live_migrations)
        .unwrap_or(1)
}

/// A unit's host paths in a temporary directory: the state dir, a nova.conf
/// naming `host` with `max_concurrent` (none: no nova.conf written), no
/// nova-compute log.
pub(crate) fn unit_paths(
    host: &str,
    max_concurrent: Option<u32>,
) -> Result<(tempfile::TempDir, Paths), String> {
    let state = tempfile::tempdir().map_err(|e| e.to_string())?;
    let nova_conf = state.path().join("nova.conf");
    if let Some(mc) = max_concurrent {
        std::fs::write(
            &nova_conf,
            format!("[DEFAULT]\nhost = {host}\nmax_concurrent_live_migrations = {mc}\n"),
        )
        .map_err(|e| e.to_string())?;
    }
    let paths = Paths::from_env(|k| match k {
        "NLM_STATE_DIR" => Some(state.path().join("state").display().to_string()),
        "NLM_NOVA_CONF" => Some(nova_conf.display().to_string()),
        "NLM_NOVA_COMPUTE_LOG" => Some(state.path().join("none.log").display().to_string()),
        _ => None,
    });
    Ok((state, paths))
}

/// Pre-flight checks the local nova-compute and libvirtd units; on this
/// machine the computes are plain processes, so stand in for systemctl.
pub(crate) fn fake_systemctl() -> Result<(), String> {
    let fake = std::env::temp_dir().join(format!("nlm-bench-bin-{}", std::process::id()));
    std::fs::create_dir_all(&fake).map_err(|e| e.to_string())?;
    std::fs::write(fake.join("systemctl"), "#!/bin/sh\necho active\n")
        .map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        fake.join("systemctl"),
        std::fs::Permissions::from_mode(0o755),
    )
    .map_err(|e| e.to_string())?;
    let path = format!(
        "{}:{}",
        fake.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // SAFETY: single-threaded here, before the runtime starts.
    unsafe { std::env::set_var("PATH", path) };
    Ok(())
}

pub fn main(n: usize, rounds: usize, seconds: u64) -> Result<(), String> {
    fake_systemctl()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(run(n, rounds, seconds))
}

struct Run {
    tool: &'static str,
    from: &'static str,
    wall_s: f64,
    overhead_mean_s: f64,
    overhead_max_s: f64,
    ticks: u64,
    list_calls: u64,
    progress_calls: u64,
    server_reads: u64,
    total_calls: u64,
}

async fn run(n: usize, rounds: usize, seconds: u64) -> Result<(), String> {
    // The cloud is shared with the test suite: hold its lock throughout
    // (unless the caller holds it, e.g. `tests/bench/run drain-mc`, which
    // restarts the cloud around the run).
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(cloud_dir().join("tests.lock"))
        .map_err(|e| e.to_string())?;
    if std::env::var_os("NLM_CLOUD_LOCK_HELD").is_none() {
        lock.lock().map_err(|e| e.to_string())?;
    }
    let admin_cfg = AuthConfig::from_os_vars(&adminrc()?).map_err(|e| e.to_string())?;
    let admin = OpenStack::connect(admin_cfg)
        .await
        .map_err(|e| e.to_string())?;
    let bag: BTreeMap<String, String> = serde_json::from_str(
        &std::fs::read_to_string(cloud_dir().join("relation.json")).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let ours_cfg = AuthConfig::from_relation(&bag, Interface::Internal, None, None)
        .map_err(|e| e.to_string())?;
    let ours = OpenStack::connect(ours_cfg)
        .await
        .map_err(|e| e.to_string())?;
    let c = admin.compute();
    // Start clean: both services enabled, no servers.
    for h in HOSTS {
        if let Some(s) = c.compute_service(h).await.map_err(|e| e.to_string())?
            && s.is_disabled()
        {
            c.enable_service(&s).await.map_err(|e| e.to_string())?;
        }
    }
    cleanup(&admin).await?;
    // NLM_BENCH_IMAGE / NLM_BENCH_FLAVOR: real guests on the libvirt
    // cloud (e.g. its idle guest image and m1.small); the fake driver's
    // nlm_migration_seconds is then ignored.
    let image = std::env::var("NLM_BENCH_IMAGE").unwrap_or_else(|_| IMAGE_ID.to_string());
    let flavor_name = std::env::var("NLM_BENCH_FLAVOR").unwrap_or_else(|_| "m1.tiny".into());
    let flavor = c
        .flavors()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|f| f.name == flavor_name)
        .ok_or(format!("no flavor {flavor_name}"))?
        .id;
    let t = Instant::now();
    for i in 0..n {
        let body = json!({"server": {"name": format!("bench-{i:03}"), "imageRef": image,
            "flavorRef": flavor, "networks": "none", "host": HOSTS[0],
            "metadata": {"nlm_migration_seconds": seconds.to_string()}}});
        c.raw(reqwest::Method::POST, "/servers", Some(body))
            .await
            .map_err(|e| e.to_string())?;
    }
    wait_all_on(&admin, HOSTS[0], n, Duration::from_secs(180)).await?;
    eprintln!(
        "booted {n} servers on {} in {:.1} s",
        HOSTS[0],
        t.elapsed().as_secs_f64()
    );
    let mc = nova_max_concurrent();
    let mut runs = Vec::new();
    for r in 0..(2 * rounds) {
        let from = HOSTS[r % 2];
        let to = HOSTS[(r + 1) % 2];
        let run = if r % 2 == 0 {
            anchor(&admin, from, to, n).await?
        } else {
            evacuate(&ours, &admin, from, n).await?
        };
        eprintln!("{} {from} → {to}: {:.1} s", run.tool, run.wall_s);
        runs.push(run);
    }
    cleanup(&admin).await?;

    let what = if image == IMAGE_ID {
        format!("fake-driver migration {seconds} s")
    } else {
        format!("real guests (image {image}, flavor {flavor_name})")
    };
    println!(
        "drain wall time: {n} instances, {what}, nova max_concurrent_live_migrations {mc}; ours: evacuate with the default config (poll-interval 2 s, max-concurrent {} = nova's + 1 queued)",
        mc + 1
    );
    println!();
    println!("| round | anchor (all POSTs at once) s | ours (evacuate) s | ratio ours/anchor |");
    println!("|---:|---:|---:|---:|");
    let mut ratios = Vec::new();
    for (i, pair) in runs.chunks(2).enumerate() {
        let ratio = pair[1].wall_s / pair[0].wall_s;
        ratios.push(ratio);
        println!(
            "| {} | {:.1} | {:.1} | {:.3} |",
            i + 1,
            pair[0].wall_s,
            pair[1].wall_s,
            ratio
        );
    }
    let anchors: f64 = runs
        .iter()
        .filter(|r| r.tool == "anchor")
        .map(|r| r.wall_s)
        .sum();
    let oursum: f64 = runs
        .iter()
        .filter(|r| r.tool == "ours")
        .map(|r| r.wall_s)
        .sum();
    println!(
        "| all | {anchors:.1} | {oursum:.1} | {:.3} |",
        oursum / anchors
    );
    println!();
    println!(
        "ours, per run: per-migration overhead (our end-to-end minus Nova's own created→updated time) and API calls"
    );
    println!();
    println!(
        "| run | from | overhead mean s | overhead max s | poll ticks | list calls | progress calls | server reads | all calls | calls per tick |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, r) in runs.iter().filter(|r| r.tool == "ours").enumerate() {
        println!(
            "| {} | {} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {:.2} |",
            i + 1,
            r.from,
            r.overhead_mean_s,
            r.overhead_max_s,
            r.ticks,
            r.list_calls,
            r.progress_calls,
            r.server_reads,
            r.total_calls,
            r.total_calls as f64 / r.ticks.max(1) as f64
        );
    }
    Ok(())
}

pub(crate) async fn cleanup(admin: &OpenStack) -> Result<(), String> {
    let c = admin.compute();
    for h in HOSTS {
        for s in c.servers_on_host(h).await.map_err(|e| e.to_string())? {
            if s.name.starts_with("bench-") {
                let _ = c
                    .raw(reqwest::Method::DELETE, &format!("/servers/{}", s.id), None)
                    .await;
            }
        }
    }
    Ok(())
}

/// Waits until `n` bench servers are ACTIVE, idle, on `host`.
pub(crate) async fn wait_all_on(
    admin: &OpenStack,
    host: &str,
    n: usize,
    limit: Duration,
) -> Result<(), String> {
    let t = Instant::now();
    loop {
        let servers = admin
            .compute()
            .servers_on_host(host)
            .await
            .map_err(|e| e.to_string())?;
        let ready = servers
            .iter()
            .filter(|s| {
                s.name.starts_with("bench-") && s.status == "ACTIVE" && s.task_state.is_none()
            })
            .count();
        if let Some(bad) = servers.iter().find(|s| s.status == "ERROR") {
            return Err(format!("server {} is in ERROR", bad.name));
        }
        if ready >= n {
            return Ok(());
        }
        if t.elapsed() > limit {
            return Err(format!(
                "only {ready}/{n} servers ready on {host} after {limit:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What `nova host-evacuate-live` does: every POST at once, one token.
async fn anchor(admin: &OpenStack, from: &'static str, to: &str, n: usize) -> Result<Run, String> {
    let c = admin.compute().clone();
    let servers = c.servers_on_host(from).await.map_err(|e| e.to_string())?;
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for s in servers {
        let c = c.clone();
        set.spawn(async move {
            c.live_migrate(
                &s.id,
                &LiveMigrate {
                    host: None,
                    block_migration: BlockMigration::Auto,
                    force: false,
                },
            )
            .await
            .map_err(|e| e.to_string())
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    wait_all_on(admin, to, n, Duration::from_secs(900)).await?;
    Ok(Run {
        tool: "anchor",
        from,
        wall_s: t.elapsed().as_secs_f64(),
        overhead_mean_s: 0.0,
        overhead_max_s: 0.0,
        ticks: 0,
        list_calls: 0,
        progress_calls: 0,
        server_reads: 0,
        total_calls: 0,
    })
}

async fn evacuate(
    ours: &OpenStack,
    admin: &OpenStack,
    from: &'static str,
    n: usize,
) -> Result<Run, String> {
    let (_state, paths) = unit_paths(from, Some(nova_max_concurrent()))?;
    let config =
        Config::from_values(&BTreeMap::<String, Value>::new()).map_err(|e| e.to_string())?;
    let log = |_: &str| {};
    let env = drain::Env {
        os: ours,
        config: &config,
        paths: &paths,
        host: from.to_string(),
        unit: "nova-live-migration/0".into(),
        task: Some("bench".into()),
        log: &log,
        status: &|_: &str| {},
    };
    // Only the bench's servers move (the cloud may hold others).
    let others: Vec<String> = admin
        .compute()
        .servers_on_host(from)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|s| !s.name.starts_with("bench-"))
        .map(|s| s.id)
        .collect();
    let mut raw = BTreeMap::new();
    if !others.is_empty() {
        raw.insert("exclude".to_string(), Value::String(others.join(",")));
    }
    let params = Params::from_action(Kind::Evacuate, &raw)?;
    let before = ours.request_stats();
    let t = Instant::now();
    let outcome = drain::run(&env, &params).await.map_err(|e| e.to_string())?;
    let wall_s = t.elapsed().as_secs_f64();
    let calls = ours.request_stats().since(&before);
    if let Some(f) = outcome.failure {
        return Err(format!("evacuate failed: {f}"));
    }
    if outcome.report.counts.migrated as usize != n {
        return Err(format!(
            "evacuate migrated {} of {n}",
            outcome.report.counts.migrated
        ));
    }
    // Nova's own time per migration: created_at → updated_at of the record.
    let mut overheads = Vec::new();
    for i in &outcome.report.instances {
        let migs = admin
            .compute()
            .migrations(&MigrationFilter {
                instance_uuid: Some(i.id.clone()),
                max_results: Some(3),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        if let Some(m) = migs
            .iter()
            .find(|m| nlm::plan::MigrationId::from_api(m.id) == i.migration_id)
        {
            let created = m.created_at.as_deref().and_then(nlm::time::parse_iso);
            let updated = m.updated_at.as_deref().and_then(nlm::time::parse_iso);
            if let (Some(c), Some(u), Some(d)) = (created, updated, i.duration_s) {
                overheads.push(d - (u.saturating_sub(c)) as f64 / 1000.0);
            }
        }
    }
    // Re-enable the service for the next round.
    let c = admin.compute();
    if let Some(s) = c.compute_service(from).await.map_err(|e| e.to_string())? {
        c.enable_service(&s).await.map_err(|e| e.to_string())?;
    }
    let route = |r: &str| calls.route(r);
    let list_calls = route("GET /os-migrations");
    let ticks = (wall_s / config.poll_interval).round() as u64;
    Ok(Run {
        tool: "ours",
        from,
        wall_s,
        overhead_mean_s: overheads.iter().sum::<f64>() / overheads.len().max(1) as f64,
        overhead_max_s: overheads.iter().cloned().fold(0.0, f64::max),
        ticks,
        list_calls,
        progress_calls: route("GET /servers/{id}/migrations/{mid}"),
        server_reads: route("GET /servers/{id}"),
        total_calls: calls.total,
    })
}

/// `bench preflight N ROUNDS`: the time of pre-flight (a dry-run
/// `evacuate`: gather + plan, nothing changed) with N instances on the
/// source of the local cloud, ROUNDS times; prints each and the median.
pub fn preflight_main(n: usize, rounds: usize) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(preflight(n, rounds.max(1)))
}

async fn preflight(n: usize, rounds: usize) -> Result<(), String> {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(cloud_dir().join("tests.lock"))
        .map_err(|e| e.to_string())?;
    if std::env::var_os("NLM_CLOUD_LOCK_HELD").is_none() {
        lock.lock().map_err(|e| e.to_string())?;
    }
    let admin_cfg = AuthConfig::from_os_vars(&adminrc()?).map_err(|e| e.to_string())?;
    let admin = OpenStack::connect(admin_cfg)
        .await
        .map_err(|e| e.to_string())?;
    let bag: BTreeMap<String, String> = serde_json::from_str(
        &std::fs::read_to_string(cloud_dir().join("relation.json")).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let ours_cfg = AuthConfig::from_relation(&bag, Interface::Internal, None, None)
        .map_err(|e| e.to_string())?;
    let ours = OpenStack::connect(ours_cfg)
        .await
        .map_err(|e| e.to_string())?;
    let c = admin.compute();
    cleanup(&admin).await?;
    let flavor = c
        .flavors()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|f| f.name == "m1.tiny")
        .ok_or("no flavor m1.tiny")?
        .id;
    for i in 0..n {
        let body = json!({"server": {"name": format!("bench-{i:03}"), "imageRef": IMAGE_ID,
            "flavorRef": flavor, "networks": "none", "host": HOSTS[0]}});
        c.raw(reqwest::Method::POST, "/servers", Some(body))
            .await
            .map_err(|e| e.to_string())?;
    }
    wait_all_on(&admin, HOSTS[0], n, Duration::from_secs(180)).await?;
    let (_state, paths) = unit_paths(HOSTS[0], None)?;
    let config =
        Config::from_values(&BTreeMap::<String, Value>::new()).map_err(|e| e.to_string())?;
    let log = |_: &str| {};
    let env = drain::Env {
        os: &ours,
        config: &config,
        paths: &paths,
        host: HOSTS[0].to_string(),
        unit: "nova-live-migration/0".into(),
        task: Some("bench".into()),
        log: &log,
        status: &|_: &str| {},
    };
    let params = Params::from_action(
        Kind::Evacuate,
        &BTreeMap::from([("dry-run".to_string(), Value::Bool(true))]),
    )?;
    let mut times = Vec::new();
    for r in 0..rounds {
        let before = ours.request_stats();
        let t = Instant::now();
        let outcome = drain::run(&env, &params).await.map_err(|e| e.to_string())?;
        let s = t.elapsed().as_secs_f64();
        let calls = ours.request_stats().since(&before).total;
        let planned = outcome.report.instances.len();
        if planned < n {
            return Err(format!("the dry-run planned {planned} of {n} instances"));
        }
        eprintln!("round {}: pre-flight {s:.3} s, {calls} API calls", r + 1);
        times.push((s, calls));
    }
    cleanup(&admin).await?;
    times.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (median, calls) = times[times.len() / 2];
    println!(
        "pre-flight (dry-run evacuate) with {n} instances on {}: median {median:.3} s over {rounds} rounds (min {:.3}, max {:.3}), {calls} API calls",
        HOSTS[0],
        times[0].0,
        times[times.len() - 1].0
    );
    Ok(())
}
