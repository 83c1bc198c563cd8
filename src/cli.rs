//! The host CLI: `/usr/local/bin/nova-live-migration`, a link to the
//! charm's dispatch binary, run by root on the host (no Juju environment).
//!
//! It coordinates with a running action only through files in the state
//! dir (see `state`): with an evacuation running (its process holds the
//! run lock) `abort` writes the abort request the evacuation polls; with
//! none running it talks to Nova itself, with the credentials the hooks keep
//! in a root-only file.

use std::io::Write;

use crate::control::{self, Done, Evacuation, Op, StatusReport};
use crate::paths::Paths;
use crate::runtime::runtime;
use crate::state;

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
  nova-live-migration status --watch   the running evacuation as a live table
                                       (instance, state, destination, progress,
                                       elapsed; plain lines when not a terminal),
                                       from the journal, until it ends or Ctrl-C
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

/// Runs the CLI with `args` (without `argv[0]`); returns the exit code.
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
        let hint = crate::state::operator_hint::load(&paths.state_dir);
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
        ["status", "--watch"] | ["status", "-w"] => {
            let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
            crate::watch::watch(
                &paths.state_dir,
                terminal,
                std::time::Duration::from_secs(1),
                out,
                err,
            )
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

fn abort(paths: &Paths, vm: Option<String>, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    if state::drain_running(&paths.state_dir) {
        // No Nova call: the running evacuation does the aborting.
        let config = state::load_cli_credentials(&paths.state_dir)
            .ok()
            .map(|r| r.config);
        let done = control::request_abort_of_running(
            paths,
            vm.as_deref(),
            control::abort_wait(config.as_ref()),
        );
        return print_done(&done, false, out, err);
    }
    let ready = match state::load_cli_credentials(&paths.state_dir) {
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
    let ready = match state::load_cli_credentials(&paths.state_dir) {
        Ok(r) => r,
        Err(e) => {
            // Without Nova, the journal is still worth showing.
            match state::last_run(&paths.state_dir) {
                Ok(Some(run)) => {
                    if as_json {
                        let _ = writeln!(
                            out,
                            "{}",
                            serde_json::json!({"action": "status", "error": e,
                                               "evacuation": run.summary()})
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
    match &done.status {
        Some(report) => {
            let _ = out.write_all(render_status(report).as_bytes());
            0
        }
        None => print_done(&done, as_json, out, err),
    }
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

/// The status report as lines for a person.
pub fn render_status(r: &StatusReport) -> String {
    let mut o = String::new();
    let host = &r.host;
    match &r.service {
        Some(svc) => {
            let reason = svc
                .disabled_reason
                .as_deref()
                .map(|x| format!(" ({x})"))
                .unwrap_or_default();
            o.push_str(&format!(
                "{host}: nova-compute {}{reason}, {}\n",
                svc.status, svc.state
            ));
        }
        None => o.push_str(&format!("{host}: no nova-compute service in Nova\n")),
    }
    o.push_str(&format!("instances ({}):\n", r.instances.len()));
    for i in &r.instances {
        let task = i
            .task_state
            .as_deref()
            .map(|t| format!(" ({t})"))
            .unwrap_or_default();
        o.push_str(&format!("  {:<24} {} {}{task}\n", i.name, i.id, i.status));
    }
    o.push_str(&format!("migrations in flight ({}):\n", r.migrations.len()));
    for m in &r.migrations {
        let pct = m
            .progress
            .as_ref()
            .and_then(|p| p.percent)
            .map(|p| format!(" {p:.0}%"))
            .unwrap_or_default();
        o.push_str(&format!(
            "  {:<24} {} migration {} {}{pct} -> {}\n",
            m.name,
            m.instance_id,
            m.id,
            m.status.as_str(),
            m.dest_compute.as_deref().unwrap_or("?")
        ));
    }
    match &r.evacuation {
        Some(Evacuation::Summary(e)) => {
            let ended = e
                .ended_at
                .as_deref()
                .map(|t| format!(", ended {t}"))
                .unwrap_or_default();
            o.push_str(&format!(
                "last {} started {}: {}{ended} ({})\n",
                e.kind.as_str(),
                e.started_at,
                e.progress,
                e.state
            ));
            let parts: Vec<String> = e.counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
            o.push_str(&format!("  {}\n", parts.join(", ")));
        }
        _ => o.push_str("no evacuation in the journal\n"),
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::AbortRequests;
    use serde_json::Value;

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
        crate::state::operator_hint::keep(
            &paths.state_dir,
            &crate::state::operator_hint::Hint {
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
        assert!(
            crate::state::AbortRequests::in_dir(dir.path())
                .pending()
                .is_empty()
        );
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

    /// A running evacuation's journal (the v1 fixture of `state`, in
    /// flight) whose instances are `focal-1` and `focal-2`.
    fn running_journal(dir: &std::path::Path) -> state::RunRecord {
        let mut v: Value = serde_json::from_str(include_str!(
            "state/testdata/journal-v1-evacuate-ended.json"
        ))
        .unwrap();
        let st = &mut v["state"];
        st["ended_at"] = Value::Null;
        let instances = st["drain"]["instances"].as_array_mut().unwrap();
        instances.truncate(2);
        instances[0]["name"] = "focal-1".into();
        instances[1]["name"] = "focal-2".into();
        let rec: state::RunRecord = serde_json::from_value(st.clone()).unwrap();
        state::Journal::in_dir(dir).store(&rec).unwrap();
        rec
    }

    #[test]
    fn abort_with_a_running_drain_writes_the_request_and_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        running_journal(dir.path());
        let lock = state::RunLock::try_acquire(dir.path()).unwrap().unwrap();
        // The "drain": takes the request after a moment.
        let queue = AbortRequests::in_dir(dir.path());
        let taker = std::thread::spawn(move || {
            for _ in 0..100 {
                if let Some(r) = queue.take_next_since(0) {
                    return serde_json::to_string(&r).unwrap();
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
        // The requester collected the taken mark: nothing is left queued.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("abort-requests"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
        drop(lock);
    }

    #[test]
    fn abort_of_a_vm_the_running_drain_does_not_have_is_refused_naming_its_instances() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        let _lock = state::RunLock::try_acquire(dir.path()).unwrap().unwrap();
        // In pre-flight (no journal yet): no instance list to check against.
        let (code, out, err) = run(&["abort", "--vm", "focal-2"], &paths);
        assert_eq!(code, 1, "{out}{err}");
        assert!(out.contains("has not listed its instances yet"), "{out}");
        running_journal(dir.path());
        let (code, out, err) = run(&["abort", "--vm", "focal-9"], &paths);
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            out.contains("no instance \"focal-9\" in the running evacuate on node1.maas")
                && out.contains("its instances: focal-1, focal-2"),
            "{out}"
        );
        // Nothing reached the drain.
        assert!(AbortRequests::in_dir(dir.path()).pending().is_empty());
    }

    #[test]
    fn abort_says_not_taken_when_the_drain_ends_without_taking_it() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        running_journal(dir.path());
        let lock = state::RunLock::try_acquire(dir.path()).unwrap().unwrap();
        // The "drain" ends once the request is queued, without taking it.
        let queue = AbortRequests::in_dir(dir.path());
        let ender = std::thread::spawn(move || {
            while queue.pending().is_empty() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            drop(lock);
        });
        let (code, out, err) = run(&["abort"], &paths);
        ender.join().unwrap();
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            out.contains("ended before it took the request") && !out.contains("took the request;"),
            "{out}"
        );
        assert!(AbortRequests::in_dir(dir.path()).pending().is_empty());
    }

    #[test]
    fn abort_and_status_without_a_drain_or_credentials_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        let (code, _, err) = run(&["abort"], &paths);
        assert_eq!(code, 1);
        assert!(err.contains("no credentials for the host CLI"), "{err}");
        // No request is left for a later resume to pick up.
        assert!(AbortRequests::in_dir(dir.path()).pending().is_empty());
        let (code, out, err) = run(&["status"], &paths);
        assert_eq!(code, 1);
        assert!(out.contains("no evacuation in the journal"), "{out}");
        assert!(err.contains("cannot ask Nova"), "{err}");
    }

    #[test]
    fn the_typed_status_report_renders_for_a_person() {
        use crate::control::{InstanceState, MigrationState, Progress, ServiceState};
        use crate::plan::MigrationStatus;
        let mut r = StatusReport {
            action: "status".into(),
            host: "node1.maas".into(),
            service: Some(ServiceState {
                status: "disabled".into(),
                state: "up".into(),
                disabled_reason: Some("evacuate".into()),
            }),
            instances: vec![InstanceState {
                id: "u1".into(),
                name: "focal-1".into(),
                status: "MIGRATING".into(),
                task_state: Some("migrating".into()),
            }],
            migrations: vec![MigrationState {
                id: 29,
                instance_id: "u1".into(),
                name: "focal-1".into(),
                status: MigrationStatus::Running,
                dest_compute: Some("node4.maas".into()),
                created_at: None,
                progress: Some(Progress {
                    percent: Some(42.0),
                    memory_total_bytes: Some(100),
                    memory_remaining_bytes: Some(58),
                    disk_total_bytes: None,
                    disk_remaining_bytes: None,
                }),
            }],
            evacuation: None,
        };
        let text = render_status(&r);
        assert!(
            text.contains("node1.maas: nova-compute disabled (evacuate), up\n")
                && text.contains("focal-1")
                && text.contains("migration 29 running 42% -> node4.maas")
                && text.ends_with("no evacuation in the journal\n"),
            "{text}"
        );
        // The JSON keeps the shape the report had: progress fields beside
        // the others, and none at all without progress.
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["migrations"][0]["percent"], 42.0);
        assert_eq!(v["migrations"][0]["status"], "running");
        assert_eq!(v["evacuation"], Value::Null);
        r.migrations[0].progress = None;
        let v = serde_json::to_value(&r).unwrap();
        assert!(v["migrations"][0].get("percent").is_none(), "{v}");
    }
}
