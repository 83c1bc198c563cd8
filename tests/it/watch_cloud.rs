//! `nova-live-migration status --watch` beside a real evacuation on the
//! local cloud, its stdout a pipe (not a terminal): plain lines, one per
//! change of an instance, no escape sequences, and it returns once the run
//! has ended.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cloud::{CloudEnv, DEST, SOURCE};
use crate::drain_cloud::Node;

const CLI: &str = env!("CARGO_BIN_EXE_nova-live-migration");

#[test]
fn cloud_status_watch_prints_plain_lines_until_the_run_ends() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let _lock = cloud.lock();
    let rt = crate::cloud::rt();
    rt.block_on(cloud.reset());
    rt.block_on(cloud.boot_on(
        SOURCE,
        &["watch-1", "watch-2"],
        &[("nlm_migration_seconds", "4")],
    ));
    let mut node = Node::new(&cloud);
    let env = node.sim.host_env();
    let running = node.start("evacuate", &[]);
    // The journal exists once the run has planned.
    let t0 = Instant::now();
    while node.journal().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(60), "no journal");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut watch = Command::new(CLI)
        .env_clear()
        .envs(env.iter().cloned())
        .args(["status", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let st = node.sim.finish(running).expect("evacuate ran").clone();
    assert_eq!(st.action_failed, None, "{:#?}", st.action_log);
    // The watch ends by itself once the run has ended.
    let t1 = Instant::now();
    while watch.try_wait().unwrap().is_none() {
        if t1.elapsed() > Duration::from_secs(30) {
            let _ = watch.kill();
            panic!("status --watch did not end with the run");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = watch.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    crate::juju::sim::keep_output(
        "cli status --watch",
        &[("stdout", &out.stdout), ("stderr", &out.stderr)],
    )
    .unwrap();
    eprintln!("status --watch:\n{stdout}");
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(!stdout.contains('\x1b'), "no escape sequences: {stdout:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    for name in ["watch-1", "watch-2"] {
        let mine: Vec<&&str> = lines
            .iter()
            .filter(|l| l.contains(&format!(" {name} ")))
            .collect();
        let last = mine
            .last()
            .unwrap_or_else(|| panic!("no line of {name}: {stdout}"));
        assert!(
            last.starts_with("[") && last.contains(&format!("] {name} migrated → {DEST} 100% ")),
            "{last}"
        );
        // One line per change, never the same line twice in a row.
        for w in mine.windows(2) {
            assert_ne!(w[0], w[1], "{stdout}");
        }
    }
    let end = lines.last().unwrap();
    assert!(
        end.starts_with("evacuate started ")
            && end.contains("2/2 done, 0 in flight")
            && end.ends_with("(ended)"),
        "{end}"
    );
    rt.block_on(cloud.reset());
}
