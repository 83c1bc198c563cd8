//! Benchmarks that print tables (issue: evidence). Run through
//! `tests/bench/run` or `cargo run --release --example bench -- <which>`.
//!
//!   bench hooks [N]   update-status latency of the packed dispatch vs the
//!                     smallest ops 3.9 charm doing the same, with the same
//!                     instant hook-tool stand-ins (juju-sim), alternated.
//!   bench drain N ROUNDS SECONDS
//!                     on the local cloud (tests/cloud): our evacuate vs the
//!                     anchor (every os-migrateLive fired at once with one
//!                     token, as `nova host-evacuate-live` does), alternated,
//!                     N instances whose migrations take SECONDS in the fake
//!                     driver; plus API calls per poll tick and per-migration
//!                     overhead against Nova's own migration times.
//!   bench order [N] [ROUNDS] [SECONDS]
//!                     on the local cloud: `drain-order` largest-first vs
//!                     smallest-first vs nova, N instances of mixed sizes
//!                     (8), migrations taking SECONDS per 64 MB (1): time
//!                     until 50 % of the instances are moved, until 50 % of
//!                     their memory is off the node, until it is empty.
//!   bench preflight [N] [ROUNDS]
//!                     on the local cloud: the time of a dry-run evacuate
//!                     (pre-flight: gather + plan) with N instances (20).
//!   bench scale [N]   a drain of N instances (default 500) through the
//!                     production orchestrator against an in-process fake
//!                     of Keystone, Nova and Placement: peak RSS, API calls
//!                     per tick, journal size; then `Drain::step` time per
//!                     tick for N = 100, 500, 2000. (`bench scale-fake N`
//!                     is its fake served alone, for the child-process run.)

#[path = "../harness/sim.rs"]
mod sim;

#[path = "../harness/fake_nova.rs"]
mod fake_nova;

mod drain;
mod order;
mod scale;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("hooks") => hooks(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(200)),
        Some("drain") => {
            let num = |i: usize, d: u64| args.get(i).and_then(|n| n.parse().ok()).unwrap_or(d);
            drain::main(num(1, 20) as usize, num(2, 2) as usize, num(3, 0))
        }
        Some("order") => {
            let num = |i: usize, d: u64| args.get(i).and_then(|n| n.parse().ok()).unwrap_or(d);
            order::main(num(1, 8) as usize, num(2, 2) as usize, num(3, 1))
        }
        Some("preflight") => {
            let num = |i: usize, d: usize| args.get(i).and_then(|n| n.parse().ok()).unwrap_or(d);
            drain::preflight_main(num(1, 20), num(2, 5))
        }
        Some("scale-fake") => scale::serve(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(500)),
        Some("scale") => scale::main(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(500)),
        _ => Err(
            "usage: bench hooks [N] | bench drain [N] [ROUNDS] [SECONDS] | bench order [N] [ROUNDS] [SECONDS] | bench preflight [N] [ROUNDS] | bench scale [N]"
                .to_string(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn work_dir() -> PathBuf {
    let d = std::env::var_os("NLM_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/nlm-bench"));
    std::fs::create_dir_all(&d).expect("bench dir");
    d
}

fn sh(cmd: &mut Command) -> Result<(), String> {
    let st = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
    st.success()
        .then_some(())
        .ok_or_else(|| format!("{cmd:?} failed"))
}

/// The smallest ops charm with the same update-status logic as ours
/// without credentials: read config, look for the identity-credentials
/// relation, set blocked.
const OPS_CHARM: &str = r#"#!/usr/bin/env python3
import ops

class Charm(ops.CharmBase):
    def __init__(self, framework):
        super().__init__(framework)
        framework.observe(self.on.update_status, self._on_update_status)

    def _on_update_status(self, event):
        level = self.config.get("log-level", "info")
        if level not in ("error", "warn", "info", "debug", "trace"):
            self.unit.status = ops.BlockedStatus("invalid config: log-level")
            return
        if self.model.get_relation("identity-credentials") is None:
            self.unit.status = ops.BlockedStatus(
                "needs the identity-credentials relation to keystone: juju integrate "
                "nova-live-migration:identity-credentials keystone:identity-credentials")
            return
        self.unit.status = ops.ActiveStatus()

if __name__ == "__main__":
    ops.main(Charm)
"#;

fn ops_charm(work: &Path) -> Result<PathBuf, String> {
    let venv = work.join("ops-venv");
    if !venv.join("bin/python").exists() || !venv.join(".ops-3.9.0").exists() {
        let python = if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        sh(Command::new(python).args(["-m", "venv"]).arg(&venv))?;
        sh(Command::new(venv.join("bin/pip")).args(["install", "-q", "ops==3.9.0"]))?;
        std::fs::write(venv.join(".ops-3.9.0"), "").map_err(|e| e.to_string())?;
    }
    let dir = work.join("ops-charm");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).map_err(|e| e.to_string())?;
    for f in ["metadata.yaml", "actions.yaml", "config.yaml"] {
        std::fs::copy(repo().join(f), dir.join(f)).map_err(|e| e.to_string())?;
    }
    std::fs::write(dir.join("src/charm.py"), OPS_CHARM).map_err(|e| e.to_string())?;
    let dispatch = format!(
        "#!/bin/sh\nJUJU_DISPATCH_PATH=\"${{JUJU_DISPATCH_PATH:-$0}}\" PYTHONPATH=lib:src exec {} ./src/charm.py\n",
        venv.join("bin/python").display()
    );
    let d = dir.join("dispatch");
    std::fs::write(&d, dispatch).map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    Ok(dir)
}

fn our_charm(work: &Path) -> Result<PathBuf, String> {
    let charm = repo().join("build/nova-live-migration.charm");
    if !charm.exists() {
        return Err("build/nova-live-migration.charm is missing: run charm/pack first".into());
    }
    let dir = work.join("our-charm");
    let _ = std::fs::remove_dir_all(&dir);
    sh(Command::new("unzip")
        .args(["-q", "-o"])
        .arg(&charm)
        .arg("-d")
        .arg(&dir))?;
    Ok(dir)
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    (pct(0.5), pct(0.9), mean, v[0])
}

fn hooks(n: usize) -> Result<(), String> {
    let work = work_dir();
    let ours = our_charm(&work)?;
    let ops = ops_charm(&work)?;
    let sim_exe = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .ok_or("exe dir")?
        .join("juju-sim");
    if !sim_exe.exists() {
        return Err(format!(
            "{} is missing: cargo build --release --example juju-sim",
            sim_exe.display()
        ));
    }
    let mut times = [Vec::new(), Vec::new()];
    let mut messages = [String::new(), String::new()];
    let mut calls = [0usize, 0usize];
    for i in 0..(2 * n + 4) {
        let which = i % 2;
        let charm = if which == 0 { &ours } else { &ops };
        let state_path = work.join(format!("state-{which}.json"));
        sim::save(&state_path, &sim::State::default())?;
        let out = sim::run_event(sim::Run {
            charm_dir: charm,
            state_path: &state_path,
            event: "hooks/update-status",
            params: Default::default(),
            sim_exe: &sim_exe,
            env: vec![],
            echo: false,
        })?;
        if out.exit_code != Some(0) {
            return Err(format!("charm {which} failed: {}", out.stderr));
        }
        // The first two rounds warm caches (page cache, pyc files).
        if i >= 4 {
            times[which].push(out.dispatch_ms);
        }
        messages[which] = out.last_status().unwrap_or_default();
        calls[which] = out.calls.len();
    }
    let (m0, p0, a0, b0) = stats(times[0].clone());
    let (m1, p1, a1, b1) = stats(times[1].clone());
    println!(
        "update-status, {n} runs each, alternated; dispatch wall time in ms (hook tools: juju-sim stand-ins)"
    );
    println!();
    println!("| charm | median | p90 | mean | best | hook-tool calls |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| nova-live-migration (packed dispatch) | {m0:.1} | {p0:.1} | {a0:.1} | {b0:.1} | {} |",
        calls[0]
    );
    println!(
        "| ops 3.9.0 minimal charm | {m1:.1} | {p1:.1} | {a1:.1} | {b1:.1} | {} |",
        calls[1]
    );
    println!();
    println!(
        "median ratio ops / ours: {:.1}x (goal ≥ 7x); our median {m0:.1} ms (goal ≤ 20 ms)",
        m1 / m0
    );
    println!("statuses: ours {:?}; ops {:?}", messages[0], messages[1]);
    Ok(())
}
