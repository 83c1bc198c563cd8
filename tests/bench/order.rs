//! `bench order N ROUNDS SECONDS`: which `drain-order` frees the node
//! fastest, on the local cloud. N instances of mixed sizes (many small, few
//! large: 64, 128, 256, 512 MB flavors), each migration taking SECONDS per
//! 64 MB in the fake driver (a live migration's time grows with the memory
//! it copies); evacuated by our `evacuate` (default config but
//! `drain-order`) once per order per round, alternating the direction.
//! Times are from the start of the action: until 50 % of the instances are
//! migrated, until 50 % of their memory is off the node, until empty.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nlm::config::Config;
use nlm::drain::{self, Kind, Params};
use nlm::openstack::{AuthConfig, Interface, OpenStack};
use serde_json::{Value, json};

use crate::drain::{
    HOSTS, IMAGE_ID, adminrc, cleanup, cloud_dir, nova_max_concurrent, unit_paths, wait_all_on,
};

const ORDERS: [&str; 3] = ["largest-first", "smallest-first", "nova"];

/// Size units (× 64 MB) of the instances, in boot order: Nova lists the
/// newest first, so its order is this one reversed (neither sorted way).
fn sizes(n: usize) -> Vec<u64> {
    const PATTERN: [u64; 8] = [1, 8, 1, 2, 1, 4, 1, 2];
    (0..n).map(|i| PATTERN[i % PATTERN.len()]).collect()
}

struct Run {
    order: &'static str,
    from: &'static str,
    half_instances_s: f64,
    half_memory_s: f64,
    empty_s: f64,
}

pub fn main(n: usize, rounds: usize, seconds: u64) -> Result<(), String> {
    crate::drain::fake_systemctl()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(run(n, rounds, seconds))
}

async fn flavors(admin: &OpenStack) -> Result<BTreeMap<u64, String>, String> {
    let c = admin.compute();
    let have = c.flavors().await.map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for units in [1u64, 2, 4, 8] {
        let name = format!("bench.o{units}");
        let id = match have.iter().find(|f| f.name == name) {
            Some(f) => f.id.clone(),
            None => {
                let body =
                    json!({"flavor": {"name": name, "ram": 64 * units, "vcpus": 1, "disk": 1}});
                let v = c
                    .raw(reqwest::Method::POST, "/flavors", Some(body))
                    .await
                    .map_err(|e| e.to_string())?;
                v["flavor"]["id"].as_str().unwrap_or_default().to_string()
            }
        };
        out.insert(units, id);
    }
    Ok(out)
}

async fn run(n: usize, rounds: usize, seconds: u64) -> Result<(), String> {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(cloud_dir().join("tests.lock"))
        .map_err(|e| e.to_string())?;
    lock.lock().map_err(|e| e.to_string())?;
    let admin =
        OpenStack::connect(AuthConfig::from_os_vars(&adminrc()?).map_err(|e| e.to_string())?)
            .await
            .map_err(|e| e.to_string())?;
    let bag: BTreeMap<String, String> = serde_json::from_str(
        &std::fs::read_to_string(cloud_dir().join("relation.json")).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let ours = OpenStack::connect(
        AuthConfig::from_relation(&bag, Interface::Internal, None, None)
            .map_err(|e| e.to_string())?,
    )
    .await
    .map_err(|e| e.to_string())?;
    cleanup(&admin).await?;
    let flavor = flavors(&admin).await?;
    let sizes = sizes(n);
    for (i, units) in sizes.iter().enumerate() {
        let body = json!({"server": {"name": format!("bench-o{units}-{i:03}"), "imageRef": IMAGE_ID,
            "flavorRef": flavor[units], "networks": "none", "host": HOSTS[0],
            "metadata": {"nlm_migration_seconds": (seconds * units).to_string()}}});
        admin
            .compute()
            .raw(reqwest::Method::POST, "/servers", Some(body))
            .await
            .map_err(|e| e.to_string())?;
    }
    wait_all_on(&admin, HOSTS[0], n, Duration::from_secs(180)).await?;
    let mut runs = Vec::new();
    for r in 0..rounds * ORDERS.len() {
        let order = ORDERS[r % ORDERS.len()];
        let from = HOSTS[r % 2];
        let run = evacuate(&ours, &admin, from, order, &sizes).await?;
        eprintln!(
            "{order} from {from}: 50% instances {:.1} s, 50% memory {:.1} s, empty {:.1} s",
            run.half_instances_s, run.half_memory_s, run.empty_s
        );
        runs.push(run);
    }
    cleanup(&admin).await?;
    print_table(n, seconds, &sizes, &runs);
    Ok(())
}

fn print_table(n: usize, seconds: u64, sizes: &[u64], runs: &[Run]) {
    let total: u64 = sizes.iter().sum::<u64>() * 64;
    println!(
        "drain order: {n} instances ({} MB in all: {}), fake-driver migration {seconds} s per 64 MB, nova max_concurrent_live_migrations {}; evacuate with the default config but drain-order; times from the action's start",
        total,
        sizes
            .iter()
            .map(|u| format!("{}", u * 64))
            .collect::<Vec<_>>()
            .join("/"),
        nova_max_concurrent()
    );
    println!();
    println!(
        "| drain-order | runs | 50 % of instances moved s (mean) | 50 % of memory off the node s (mean) | node empty s (mean) | runs (from: 50 % inst / 50 % mem / empty) |"
    );
    println!("|---|---:|---:|---:|---:|---|");
    for order in ORDERS {
        let rs: Vec<&Run> = runs.iter().filter(|r| r.order == order).collect();
        let mean =
            |f: &dyn Fn(&Run) -> f64| rs.iter().map(|r| f(r)).sum::<f64>() / rs.len().max(1) as f64;
        let each = rs
            .iter()
            .map(|r| {
                format!(
                    "{}: {:.1}/{:.1}/{:.1}",
                    r.from, r.half_instances_s, r.half_memory_s, r.empty_s
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        println!(
            "| {order} | {} | {:.1} | {:.1} | {:.1} | {each} |",
            rs.len(),
            mean(&|r| r.half_instances_s),
            mean(&|r| r.half_memory_s),
            mean(&|r| r.empty_s)
        );
    }
}

/// One evacuate of `from` with `drain-order=order`; the times come from its
/// action-log lines (`… migrated in …`) as they are written.
async fn evacuate(
    ours: &OpenStack,
    admin: &OpenStack,
    from: &'static str,
    order: &'static str,
    sizes: &[u64],
) -> Result<Run, String> {
    let (_state, paths) = unit_paths(from, Some(nova_max_concurrent()))?;
    let config = Config::from_values(&BTreeMap::from([("drain-order".to_string(), json!(order))]))
        .map_err(|e| e.to_string())?;
    let t = Instant::now();
    let done: Mutex<Vec<(f64, u64)>> = Mutex::new(Vec::new());
    let log = |line: &str| {
        if let Some(units) = migrated_units(line) {
            done.lock()
                .unwrap()
                .push((t.elapsed().as_secs_f64(), units));
        }
    };
    let env = drain::Env {
        os: ours,
        config: &config,
        paths: &paths,
        host: from.to_string(),
        unit: "nova-live-migration/0".into(),
        task: Some("bench-order".into()),
        log: &log,
        status: &|_: &str| {},
    };
    let params = Params::from_action(Kind::Evacuate, &BTreeMap::<String, Value>::new())?;
    let outcome = drain::run(&env, &params).await.map_err(|e| e.to_string())?;
    let empty_s = t.elapsed().as_secs_f64();
    if outcome.report.counts.migrated as usize != sizes.len() {
        return Err(format!(
            "evacuate migrated {} of {}: {:?}",
            outcome.report.counts.migrated,
            sizes.len(),
            outcome.failure
        ));
    }
    let c = admin.compute();
    if let Some(s) = c.compute_service(from).await.map_err(|e| e.to_string())? {
        c.enable_service(&s).await.map_err(|e| e.to_string())?;
    }
    let done = done.into_inner().unwrap();
    let total: u64 = sizes.iter().sum();
    let half_instances_s = done[sizes.len().div_ceil(2) - 1].0;
    let mut moved = 0;
    let half_memory_s = done
        .iter()
        .find(|(_, u)| {
            moved += u;
            2 * moved >= total
        })
        .map_or(empty_s, |(s, _)| *s);
    Ok(Run {
        order,
        from,
        half_instances_s,
        half_memory_s,
        empty_s,
    })
}

/// `[3/8] bench-o4-005 → node4.maas migrated in 6.4 s` → 4.
fn migrated_units(line: &str) -> Option<u64> {
    if !line.contains(" migrated in ") {
        return None;
    }
    let name = line.split_whitespace().nth(1)?;
    name.strip_prefix("bench-o")?
        .split('-')
        .next()?
        .parse()
        .ok()
}
