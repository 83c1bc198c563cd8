//! juju-sim: the unit agent in miniature (see sim.rs).
//!
//! As a hook tool (invoked under a tool's name through a link):
//!   action-get, action-set, ..., systemctl — reads and updates $JUJU_SIM_STATE.
//! As a command:
//!   juju-sim new STATE [--config KEY=VALUE]... [--credentials RELATION.json]
//!   juju-sim run --charm-dir DIR --state STATE [--echo] [--env K=V]...
//!                [--string-args] [--wait SECONDS] EVENT [KEY=VALUE]...
//!     KEY=VALUE as `juju run` takes them: YAML values unless --string-args;
//!     the controller's schema check first. --wait (default 60, as juju
//!     run): past it, prints `timed out waiting for results from: unit U`
//!     and exits 1; dispatch is still waited for (its locks stay held).
//!   juju-sim exec (--unit UNIT | --machine N) --host DIR [--env K=V]... -- COMMAND...
//!     `juju exec`: --unit as root in that unit's hook context, after its
//!     running operation and under the machine lock; --machine as an
//!     unprivileged user (Juju: ubuntu) with no Juju context.
//!   juju-sim unpack CHARM DIR

#[path = "sim.rs"]
mod sim;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Map, Value};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let name = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if sim::TOOLS.contains(&name.as_str()) {
        let code = sim::tool_main(&name, &argv[1..]);
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    match command(&argv[1..]) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("juju-sim: {e}");
            ExitCode::from(2)
        }
    }
}

fn command(args: &[String]) -> Result<u8, String> {
    match args.first().map(String::as_str) {
        Some("new") => new_state(&args[1..]),
        Some("run") => run(&args[1..]),
        Some("exec") => exec(&args[1..]),
        Some("unpack") => {
            let [charm, dir] = &args[1..] else {
                return Err("usage: juju-sim unpack CHARM DIR".into());
            };
            unpack(Path::new(charm), Path::new(dir))?;
            Ok(0)
        }
        _ => Err("usage: juju-sim new|run|unpack ... (see tests/harness/juju_sim.rs)".into()),
    }
}

/// Unzips a .charm with `unzip`, which keeps the mode bits.
pub fn unpack(charm: &Path, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let status = std::process::Command::new("unzip")
        .args(["-q", "-o"])
        .arg(charm)
        .arg("-d")
        .arg(dir)
        .status()
        .map_err(|e| format!("unzip: {e}"))?;
    if !status.success() {
        return Err(format!("unzip {} failed", charm.display()));
    }
    Ok(())
}

fn new_state(args: &[String]) -> Result<u8, String> {
    let path = args.first().ok_or("usage: juju-sim new STATE ...")?;
    let mut state = sim::State::subordinate("127.0.0.1");
    let mut i = 1;
    while i < args.len() {
        match (args[i].as_str(), args.get(i + 1)) {
            ("--config", Some(kv)) => {
                let (k, v) = sim::parse_param(kv)?;
                state.config.insert(k, v);
            }
            ("--credentials", Some(file)) => {
                let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
                let data: std::collections::BTreeMap<String, String> =
                    serde_json::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
                state.relations.push(sim::Relation {
                    id: "identity-credentials:2".into(),
                    endpoint: "identity-credentials".into(),
                    remote_app: "keystone".into(),
                    remote_units: [("keystone/0".to_string(), data)].into_iter().collect(),
                    local: [("username".to_string(), "nova_live_migration".to_string())]
                        .into_iter()
                        .collect(),
                });
            }
            (other, _) => return Err(format!("unexpected argument {other:?}")),
        }
        i += 2;
    }
    sim::save(Path::new(path), &state)?;
    Ok(0)
}

fn run(args: &[String]) -> Result<u8, String> {
    let mut charm_dir = None;
    let mut state = None;
    let mut echo = false;
    let mut string_args = false;
    let mut wait = sim::JUJU_RUN_DEFAULT_WAIT;
    let mut env = Vec::new();
    let mut rest = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--charm-dir" => {
                charm_dir = args.get(i + 1).map(PathBuf::from);
                i += 1;
            }
            "--state" => {
                state = args.get(i + 1).map(PathBuf::from);
                i += 1;
            }
            "--env" => {
                let kv = args.get(i + 1).ok_or("--env needs K=V")?;
                let (k, v) = kv.split_once('=').ok_or("--env needs K=V")?;
                env.push((k.to_string(), v.to_string()));
                i += 1;
            }
            "--echo" => echo = true,
            "--string-args" => string_args = true,
            "--wait" => {
                let secs: f64 = args
                    .get(i + 1)
                    .and_then(|v| v.trim_end_matches('s').parse().ok())
                    .ok_or("--wait needs a number of seconds")?;
                wait = std::time::Duration::from_secs_f64(secs);
                i += 1;
            }
            other => rest.push(other.to_string()),
        }
        i += 1;
    }
    let charm_dir = charm_dir.ok_or("--charm-dir is required")?;
    let state_path = state.ok_or("--state is required")?;
    let event = rest
        .first()
        .ok_or("an event (hooks/NAME or actions/NAME) is required")?;
    let mut params = Map::new();
    for kv in &rest[1..] {
        let (k, v) = if string_args {
            sim::parse_param_string(kv)?
        } else {
            sim::parse_param(kv)?
        };
        params.insert(k, v);
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let running = sim::start_event(sim::Run {
        charm_dir: &charm_dir,
        state_path: &state_path,
        event,
        params,
        sim_exe: &exe,
        env,
        echo,
    })?;
    let mut timed_out = false;
    let out = match running.wait_for(wait) {
        Ok(out) => out?,
        Err(timed_out_run) => {
            let (running, msg) = *timed_out_run;
            eprintln!("{msg}");
            timed_out = true;
            running.wait()?
        }
    };
    if timed_out {
        return Ok(1);
    }
    if let Some(msg) = &out.action_failed {
        eprintln!("action failed: {msg}");
    }
    let results: Value = serde_json::to_value(&out.action_results).map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?
    );
    Ok(if out.exit_code == Some(0) && out.action_failed.is_none() {
        0
    } else {
        1
    })
}

fn exec(args: &[String]) -> Result<u8, String> {
    let usage =
        "usage: juju-sim exec (--unit UNIT | --machine N) --host DIR [--env K=V]... -- COMMAND...";
    let mut unit = None;
    let mut machine = None;
    let mut host = None;
    let mut env = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let value = || args.get(i + 1).cloned().ok_or(usage);
        match args[i].as_str() {
            "--unit" => unit = Some(value()?),
            "--machine" => machine = Some(value()?),
            "--host" => host = Some(PathBuf::from(value()?)),
            "--env" => {
                let kv = value()?;
                let (k, v) = kv.split_once('=').ok_or("--env needs K=V")?;
                env.push((k.to_string(), v.to_string()));
            }
            "--" => break,
            other => return Err(format!("unexpected argument {other:?}; {usage}")),
        }
        i += 2;
    }
    let command = args.get(i + 1..).unwrap_or_default().join(" ");
    if command.is_empty() {
        return Err(usage.into());
    }
    let host = host.ok_or(usage)?;
    let e = sim::Exec {
        host: &host,
        command: &command,
        path: Vec::new(),
        env,
    };
    let out = match (unit, machine) {
        (Some(u), None) => sim::exec_unit(e, &u, "0")?,
        (None, Some(_)) => sim::exec_machine(e)?,
        _ => return Err(usage.into()),
    };
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    Ok(out.code.clamp(0, 255) as u8)
}
