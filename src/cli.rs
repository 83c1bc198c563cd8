//! The host CLI: `/usr/local/bin/nova-live-migration`, a link to the
//! charm's dispatch binary, run by a person (no Juju environment).

use std::io::Write;

use crate::paths::Paths;

pub const USAGE: &str = "\
nova-live-migration: drain this OpenStack compute node by live migration.

This binary is the Juju charm's dispatch; on the host it is also a CLI that
works while an action runs (juju exec --machine N -- nova-live-migration ...).

Usage:
  nova-live-migration status          show the last evacuation's journal summary
  nova-live-migration abort [--vm X]  ask the running evacuation to abort its
                                      migrations (all, or only X's) and start no more
  nova-live-migration --help          this text
  nova-live-migration --version

Run the drain itself with the charm's actions, e.g.
  juju run --wait=2h nova-live-migration/0 evacuate
";

/// Runs the CLI with `args` (without argv[0]); returns the exit code.
pub fn main(args: &[String], paths: &Paths, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] | ["--help"] | ["-h"] | ["help"] => {
            let _ = out.write_all(USAGE.as_bytes());
            0
        }
        ["--version"] | ["version"] => {
            let _ = writeln!(out, "nova-live-migration {}", env!("CARGO_PKG_VERSION"));
            0
        }
        ["status"] => status(paths, out),
        ["abort", rest @ ..] => {
            let vm = match rest {
                [] => None,
                ["--vm", vm] if !vm.is_empty() => Some(vm.to_string()),
                _ => {
                    let _ = writeln!(err, "usage: nova-live-migration abort [--vm NAME-OR-UUID]");
                    return 2;
                }
            };
            request_abort(paths, vm.as_deref(), out, err)
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

fn status(paths: &Paths, out: &mut dyn Write) -> i32 {
    let journal = paths.state_dir.join("journal.json");
    match std::fs::read_to_string(&journal) {
        Ok(text) => {
            let _ = writeln!(out, "journal {}:", journal.display());
            let _ = writeln!(out, "{text}");
        }
        Err(_) => {
            let _ = writeln!(out, "no evacuation journal at {}", journal.display());
        }
    }
    0
}

fn request_abort(paths: &Paths, vm: Option<&str>, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let request = serde_json::json!({
        "vm": vm,
        "requested_at": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    });
    let path = paths.state_dir.join("abort-request.json");
    let result = std::fs::create_dir_all(&paths.state_dir)
        .and_then(|_| std::fs::write(&path, request.to_string()));
    match result {
        Ok(()) => {
            let _ = writeln!(
                out,
                "abort requested{}; a running evacuation sees it within one poll interval",
                vm.map(|v| format!(" for {v}")).unwrap_or_default()
            );
            0
        }
        Err(e) => {
            let _ = writeln!(err, "could not write {}: {e} (run as root)", path.display());
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], paths: &Paths) -> (i32, String, String) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = main(&args, paths, &mut out, &mut err);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn help_usage_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::from_env(|k| {
            (k == "NLM_STATE_DIR").then(|| dir.path().to_string_lossy().into_owned())
        });
        let (code, out, _) = run(&["--help"], &paths);
        assert_eq!(code, 0);
        assert!(out.contains("abort [--vm X]"));
        let (code, _, err) = run(&["frobnicate"], &paths);
        assert_eq!(code, 2);
        assert!(err.contains("--help"));
        let (code, _, _) = run(&["abort", "--vm"], &paths);
        assert_eq!(code, 2);
        let (code, out, _) = run(&["abort", "--vm", "focal-2"], &paths);
        assert_eq!(code, 0, "{out}");
        let req: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("abort-request.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(req["vm"], "focal-2");
    }
}
