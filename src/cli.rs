//! The host CLI: `/usr/local/bin/nova-live-migration`, a link to the
//! charm's dispatch binary, run by root on the host (no Juju environment).
//!
//! It coordinates with a running action only through files in the state
//! dir (see `control`): with an evacuation running (its process holds the
//! run lock) `abort` writes the abort request the evacuation polls; with
//! none running it talks to Nova itself, with the credentials the hooks keep
//! in a root-only file.

use std::io::Write;

use serde_json::Value;

use crate::control::{self, Done, Op};
use crate::paths::Paths;

pub const USAGE: &str = "\
nova-live-migration: drain this OpenStack compute node by live migration.

This binary is the Juju charm's dispatch; on the host it is also a CLI that
works while an action runs, as root:
  juju exec --unit nova-compute/K -- nova-live-migration ...
  juju ssh N -- sudo nova-live-migration ...
(not juju exec --machine N, which runs commands as the user ubuntu).

Usage:
  nova-live-migration status [--json]  the service state, the instances, the
                                       migrations in flight and the last
                                       evacuation (from the journal)
  nova-live-migration abort [--vm X]   with an evacuation running: ask it to
                                       abort its migrations (all, or only X's)
                                       and start no more; with none running:
                                       abort this node's in-flight migrations
                                       in Nova and end an interrupted evacuation
  nova-live-migration --help           this text
  nova-live-migration --version

Run it as root: it reads the credentials the charm keeps for it (mode 0600)
in the state directory. Run the drain itself with the charm's actions, e.g.
  juju run --wait=2h nova-live-migration/0 evacuate
";

/// Runs the CLI with `args` (without argv[0]); returns the exit code.
pub fn main(args: &[String], paths: &Paths, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    main_as(args, crate::hint::effective_uid(), paths, out, err)
}

/// [`main`] as the effective user `uid`: `abort` and `status` need root,
/// and refuse with exit 2 naming the commands that run them as root (see
/// `hint`).
pub fn main_as(
    raw: &[String],
    uid: Option<u32>,
    paths: &Paths,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let args: Vec<&str> = raw.iter().map(String::as_str).collect();
    if matches!(args.first(), Some(&"abort") | Some(&"status")) && uid != Some(0) {
        let hint = crate::hint::load(&paths.state_dir);
        let _ = err.write_all(crate::hint::not_root_message(raw, uid, hint.as_ref()).as_bytes());
        return crate::hint::NOT_ROOT_EXIT;
    }
    match args.as_slice() {
        [] | ["--help"] | ["-h"] | ["help"] => {
            let _ = out.write_all(USAGE.as_bytes());
            0
        }
        ["--version"] | ["version"] => {
            let _ = writeln!(out, "nova-live-migration {}", env!("CARGO_PKG_VERSION"));
            0
        }
        ["status"] => status(paths, false, out, err),
        ["status", "--json"] => status(paths, true, out, err),
        ["abort", rest @ ..] => {
            let vm = match rest {
                [] => None,
                ["--vm", vm] if !vm.trim().is_empty() => Some(vm.trim().to_string()),
                _ => {
                    let _ = writeln!(err, "usage: nova-live-migration abort [--vm NAME-OR-UUID]");
                    return 2;
                }
            };
            abort(paths, vm, out, err)
        }
        [other, ..] => {
            let _ = writeln!(
                err,
                "unknown command {other:?}; run nova-live-migration --help"
            );
            2
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn abort(paths: &Paths, vm: Option<String>, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    if control::drain_running(&paths.state_dir) {
        // No Nova call: the running evacuation does the aborting.
        let config = control::load_cli_credentials(paths).ok().map(|r| r.config);
        let done = control::request_abort_of_running(
            paths,
            vm.as_deref(),
            control::abort_wait(config.as_ref()),
        );
        return print_done(&done, false, out, err);
    }
    let ready = match control::load_cli_credentials(paths) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "nova-live-migration abort: {e}");
            return 1;
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(err, "{e}");
            return 1;
        }
    };
    let done = rt.block_on(control::execute(&ready, paths, &Op::Abort { vm }));
    print_done(&done, false, out, err)
}

fn status(paths: &Paths, as_json: bool, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let ready = match control::load_cli_credentials(paths) {
        Ok(r) => r,
        Err(e) => {
            // Without Nova, the journal is still worth showing.
            match control::last_run(paths) {
                Ok(Some(run)) => {
                    if as_json {
                        let _ = writeln!(
                            out,
                            "{}",
                            serde_json::json!({"action": "status", "error": e,
                                               "evacuation": run.summary_json()})
                        );
                    } else {
                        let _ = writeln!(out, "last {}", run.line());
                    }
                }
                Ok(None) => {
                    let _ = writeln!(out, "no evacuation in the journal");
                }
                Err(j) => {
                    let _ = writeln!(err, "{j}");
                }
            }
            let _ = writeln!(err, "cannot ask Nova: {e}");
            return 1;
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(err, "{e}");
            return 1;
        }
    };
    let done = rt.block_on(control::execute(&ready, paths, &Op::Status));
    if as_json || done.failure.is_some() {
        return print_done(&done, as_json, out, err);
    }
    let _ = out.write_all(render_status(&done.report).as_bytes());
    0
}

fn print_done(done: &Done, as_json: bool, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    if as_json {
        let _ = writeln!(out, "{}", done.report);
    } else {
        let _ = writeln!(out, "{}", done.summary);
        let _ = writeln!(out, "{}", done.report);
    }
    match &done.failure {
        Some(msg) => {
            if msg != &done.summary {
                let _ = writeln!(err, "{msg}");
            }
            1
        }
        None => 0,
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// The status report as lines for a person.
pub fn render_status(r: &Value) -> String {
    let mut o = String::new();
    let host = s(&r["host"]);
    match r["service"].as_object() {
        Some(svc) => {
            let reason = svc
                .get("disabled_reason")
                .and_then(Value::as_str)
                .map(|x| format!(" ({x})"))
                .unwrap_or_default();
            o.push_str(&format!(
                "{host}: nova-compute {}{reason}, {}\n",
                svc.get("status").and_then(Value::as_str).unwrap_or("?"),
                svc.get("state").and_then(Value::as_str).unwrap_or("?")
            ));
        }
        None => o.push_str(&format!("{host}: no nova-compute service in Nova\n")),
    }
    let instances = r["instances"].as_array().cloned().unwrap_or_default();
    o.push_str(&format!("instances ({}):\n", instances.len()));
    for i in &instances {
        let task = i["task_state"]
            .as_str()
            .map(|t| format!(" ({t})"))
            .unwrap_or_default();
        o.push_str(&format!(
            "  {:<24} {} {}{task}\n",
            s(&i["name"]),
            s(&i["id"]),
            s(&i["status"])
        ));
    }
    let migs = r["migrations"].as_array().cloned().unwrap_or_default();
    o.push_str(&format!("migrations in flight ({}):\n", migs.len()));
    for m in &migs {
        let pct = m["percent"]
            .as_f64()
            .map(|p| format!(" {p:.0}%"))
            .unwrap_or_default();
        o.push_str(&format!(
            "  {:<24} {} migration {} {}{pct} -> {}\n",
            s(&m["name"]),
            s(&m["instance_id"]),
            m["id"],
            s(&m["status"]),
            m["dest_compute"].as_str().unwrap_or("?")
        ));
    }
    let e = &r["evacuation"];
    if e.is_object() && e.get("kind").is_some() {
        let ended = e["ended_at"]
            .as_str()
            .map(|t| format!(", ended {t}"))
            .unwrap_or_default();
        o.push_str(&format!(
            "last {} started {}: {}{ended} ({})\n",
            s(&e["kind"]),
            s(&e["started_at"]),
            s(&e["progress"]),
            s(&e["state"])
        ));
        if let Some(c) = e["counts"].as_object() {
            let parts: Vec<String> = c.iter().map(|(k, v)| format!("{k} {v}")).collect();
            o.push_str(&format!("  {}\n", parts.join(", ")));
        }
    } else {
        o.push_str("no evacuation in the journal\n");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], paths: &Paths) -> (i32, String, String) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = main_as(&args, Some(0), paths, &mut out, &mut err);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    fn paths(dir: &std::path::Path) -> Paths {
        Paths::from_env(|k| (k == "NLM_STATE_DIR").then(|| dir.to_string_lossy().into_owned()))
    }

    #[test]
    fn abort_and_status_refuse_a_user_other_than_root_naming_what_works() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        crate::hint::keep(
            &paths,
            &crate::hint::Hint {
                unit: "nova-live-migration/2".into(),
                principal: Some("nova-compute/2".into()),
                machine: Some("5".into()),
            },
        );
        for cmd in [
            &["abort"][..],
            &["abort", "--vm", "x"],
            &["status", "--json"],
        ] {
            let args: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let code = main_as(&args, Some(1000), &paths, &mut out, &mut err);
            let err = String::from_utf8(err).unwrap();
            assert_eq!(code, 2, "{err}");
            assert!(out.is_empty());
            let line = cmd.join(" ");
            assert!(
                err.contains(&format!(
                    "juju exec --unit nova-compute/2 -- nova-live-migration {line}\n"
                )),
                "{err}"
            );
            assert!(
                err.contains(&format!("juju ssh 5 -- sudo nova-live-migration {line}\n")),
                "{err}"
            );
        }
        // Nothing was written by the refused abort.
        assert!(!dir.path().join(crate::control::ABORT_REQUEST).exists());
        // --help needs no root.
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(
            main_as(
                &["--help".to_string()],
                Some(1000),
                &paths,
                &mut out,
                &mut err
            ),
            0
        );
    }

    #[test]
    fn help_usage_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        let (code, out, _) = run(&["--help"], &paths);
        assert_eq!(code, 0);
        assert!(out.contains("abort [--vm X]"));
        let (code, _, err) = run(&["frobnicate"], &paths);
        assert_eq!(code, 2);
        assert!(err.contains("--help"));
        let (code, _, _) = run(&["abort", "--vm"], &paths);
        assert_eq!(code, 2);
        let (code, _, _) = run(&["status", "--yaml"], &paths);
        assert_eq!(code, 2);
    }

    #[test]
    fn abort_with_a_running_drain_writes_the_request_and_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        let lock = control::RunLock::try_acquire(dir.path()).unwrap().unwrap();
        // The "drain": takes the request after a moment.
        let req = dir.path().join(control::ABORT_REQUEST);
        let taker = std::thread::spawn(move || {
            for _ in 0..100 {
                if let Ok(text) = std::fs::read_to_string(&req) {
                    std::fs::remove_file(&req).unwrap();
                    return text;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            panic!("no request")
        });
        let (code, out, err) = run(&["abort", "--vm", "focal-2"], &paths);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("took the request"), "{out}");
        let text = taker.join().unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["vm"], "focal-2");
        assert!(v["requested_at"].as_u64().unwrap() > 1_700_000_000);
        drop(lock);
    }

    #[test]
    fn abort_and_status_without_a_drain_or_credentials_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        let (code, _, err) = run(&["abort"], &paths);
        assert_eq!(code, 1);
        assert!(err.contains("no credentials for the host CLI"), "{err}");
        // No request is left for a later resume to pick up.
        assert!(!dir.path().join(control::ABORT_REQUEST).exists());
        let (code, out, err) = run(&["status"], &paths);
        assert_eq!(code, 1);
        assert!(out.contains("no evacuation in the journal"), "{out}");
        assert!(err.contains("cannot ask Nova"), "{err}");
    }
}
