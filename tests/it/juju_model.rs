//! juju-sim held to Juju's code: `juju run`'s YAML parsing of `k=v`, the
//! controller's JSON-schema check at enqueue (worded as Juju words it), one
//! operation at a time per unit, the machine lock, `juju exec --unit` and
//! `--machine`, cancel-task, the 60 s default wait and the result size
//! bound. Each modelled behaviour cites its Juju source in
//! tests/harness/sim.rs; these tests hold the harness and the charm to it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::juju::{Sim, charm_dir, keystone_bag, sim};
use nlm::config::BlockMigration;
use nlm::drain::{Kind, Params};

fn schema() -> sim::Schema {
    sim::Schema::load(charm_dir()).expect("the charm's YAML files")
}

/// What the controller enqueues for `juju run <unit> <action> args...`
/// (`--string-args` when `raw`).
fn enqueue(action: &str, args: &[&str], raw: bool) -> Result<Map<String, Value>, String> {
    let mut given = Map::new();
    for a in args {
        let (k, v) = if raw {
            sim::parse_param_string(a)?
        } else {
            sim::parse_param(a)?
        };
        given.insert(k, v);
    }
    schema().action_params("nova-live-migration/0", action, &given)
}

fn params(kind: Kind, args: &[&str]) -> Params {
    let action = match kind {
        Kind::Evacuate => "evacuate",
        Kind::MigrateVm => "migrate-vm",
    };
    let map = enqueue(action, args, false)
        .unwrap_or_else(|e| panic!("juju run … {action} {args:?} refused: {e}"));
    let p: BTreeMap<String, Value> = map.into_iter().collect();
    Params::from_action(kind, &p).unwrap_or_else(|e| panic!("{action} {args:?}: {e}"))
}

#[test]
fn juju_run_values_are_yaml_as_yaml_v2_reads_them() {
    let v = |s: &str| sim::yaml_v2_value(s).unwrap();
    for t in ["true", "True", "TRUE", "yes", "Yes", "y", "Y", "on", "ON"] {
        assert_eq!(v(t), json!(true), "{t}");
    }
    for f in ["false", "no", "n", "N", "off", "Off"] {
        assert_eq!(v(f), json!(false), "{f}");
    }
    assert_eq!(v("auto"), json!("auto"));
    assert_eq!(v("2"), json!(2));
    assert_eq!(v("-3"), json!(-3));
    assert_eq!(v("010"), json!(8), "YAML 1.1 octal");
    assert_eq!(v("0x1F"), json!(31));
    assert_eq!(v("1_000"), json!(1000));
    assert_eq!(v("1e3"), json!(1000.0));
    assert_eq!(v("08"), json!(8.0), "not octal, but a float");
    assert_eq!(v("a,b"), json!("a,b"));
    assert_eq!(v("node4.maas"), json!("node4.maas"));
    assert_eq!(
        v("2026-12-01"),
        json!("2026-12-01"),
        "timestamps stay strings"
    );
    assert_eq!(
        v("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"),
        json!("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
    );
    assert_eq!(v(""), json!(""), "an empty document leaves the raw string");
    assert_eq!(v("~"), Value::Null);
    assert_eq!(v("\"123\""), json!("123"), "quoted stays a string");
    assert_eq!(v("[a, b]"), json!(["a", "b"]));
    assert!(sim::yaml_v2_value(".nan").is_err());
    // Keys follow run.go's rule.
    let e = sim::parse_param("dry_run=true").unwrap_err();
    assert!(
        e.starts_with("key \"dry_run\" must start and end with lowercase alphanumeric"),
        "{e}"
    );
    let e = sim::parse_param("dry-run").unwrap_err();
    assert_eq!(
        e,
        "argument \"dry-run\" must be of the form key.key.key...=value"
    );
    // --string-args keeps the text.
    assert_eq!(
        sim::parse_param_string("block-migration=true").unwrap().1,
        json!("true")
    );
}

#[test]
fn the_controller_refuses_bad_parameters_in_its_own_words() {
    let e = enqueue("evacuate", &["max-concurrent=0"], false).unwrap_err();
    assert_eq!(
        e,
        "validation failed: (root).max-concurrent : must be greater than or equal to 1, given \"0\""
    );
    let e = enqueue("evacuate", &["dry-run=maybe"], false).unwrap_err();
    assert_eq!(
        e,
        "validation failed: (root).dry-run : must be of type boolean, given \"maybe\""
    );
    let e = enqueue("evacuate", &["nope=1"], false).unwrap_err();
    assert_eq!(
        e,
        "validation failed: (root) : additional property \"nope\" is not allowed, given {\"nope\":1}"
    );
    let e = enqueue("migrate-vm", &[], false).unwrap_err();
    assert_eq!(
        e,
        "validation failed: (root) : \"vm\" property is missing and required, given {}"
    );
    let e = enqueue("evacuate", &["block-migration=maybe"], false).unwrap_err();
    assert!(
        e.starts_with(
            "validation failed: (root).block-migration : must match one of the enum values ["
        ),
        "{e}"
    );
    let e = enqueue("evacuate", &["max-concurrent=1.5"], false).unwrap_err();
    assert!(
        e.contains("(root).max-concurrent : must be of type integer, given 1.5"),
        "{e}"
    );
    let e = enqueue("dance", &[], false).unwrap_err();
    assert_eq!(
        e,
        "action \"dance\" not defined on unit \"nova-live-migration/0\""
    );
}

/// SPEC §6: every form an operator types passes the controller and means
/// what it says.
#[test]
fn every_parameter_form_an_operator_types_passes_and_means_what_it_says() {
    let p = params(Kind::Evacuate, &["dry-run=true"]);
    assert!(p.dry_run);
    for (arg, want) in [
        ("block-migration=true", BlockMigration::True),
        ("block-migration=false", BlockMigration::False),
        ("block-migration=auto", BlockMigration::Auto),
        ("block-migration=yes", BlockMigration::True),
        ("block-migration=no", BlockMigration::False),
    ] {
        assert_eq!(
            params(Kind::Evacuate, &[arg]).block_migration,
            Some(want),
            "{arg}"
        );
        let vm = params(Kind::MigrateVm, &["vm=web-1", arg]);
        assert_eq!(vm.block_migration, Some(want), "migrate-vm {arg}");
    }
    // --string-args sends the same words as strings.
    for (arg, want) in [
        ("block-migration=true", BlockMigration::True),
        ("block-migration=false", BlockMigration::False),
        ("block-migration=auto", BlockMigration::Auto),
    ] {
        let map = enqueue("evacuate", &[arg], true).unwrap();
        let p = Params::from_action(Kind::Evacuate, &map.into_iter().collect()).unwrap();
        assert_eq!(p.block_migration, Some(want), "--string-args {arg}");
    }
    assert_eq!(
        params(Kind::Evacuate, &["max-concurrent=2"]).max_concurrent,
        Some(2)
    );
    assert_eq!(
        params(Kind::Evacuate, &["exclude=a,b"]).exclude,
        vec!["a".to_string(), "b".to_string()]
    );
    assert_eq!(
        params(Kind::Evacuate, &["target-host=node4.maas"]).target_host,
        Some("node4.maas".to_string())
    );
    let id = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    assert_eq!(
        params(Kind::MigrateVm, &[&format!("vm={id}")]).vm,
        Some(id.to_string())
    );
    // A numeric-looking name arrives as a YAML integer: accepted and meant.
    assert_eq!(
        params(Kind::MigrateVm, &["vm=12345"]).vm,
        Some("12345".to_string())
    );
    assert_eq!(
        params(Kind::Evacuate, &["exclude=4242"]).exclude,
        vec!["4242".to_string()]
    );
    // abort and force-complete take the same vm forms.
    for action in ["abort", "force-complete"] {
        let map = enqueue(action, &["vm=12345"], false)
            .unwrap_or_else(|e| panic!("{action} vm=12345: {e}"));
        assert_eq!(map["vm"], json!(12345));
    }
}

// ------------------------------------------------------------ the agent

fn sleeper_charm(parallel: bool) -> tempfile::TempDir {
    // A charm whose dispatch waits for a file, to hold an operation open
    // without a clock: the test removes the file's blocker when it is done.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("actions.yaml"),
        format!("long:\n  parallel: {parallel}\n  additionalProperties: false\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("config.yaml"), "options: {}\n").unwrap();
    std::fs::write(dir.path().join("metadata.yaml"), "name: sleeper\n").unwrap();
    let script = "#!/bin/bash\n\
        touch \"$JUJU_CHARM_DIR/started-${JUJU_DISPATCH_PATH//\\//-}\"\n\
        while [ ! -e \"$JUJU_CHARM_DIR/go\" ]; do sleep 0.02; done\n";
    std::fs::write(dir.path().join("dispatch"), script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("dispatch"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    dir
}

fn start(
    charm: &std::path::Path,
    work: &std::path::Path,
    event: &str,
) -> Result<sim::Running, String> {
    let state = work.join("state.json");
    if !state.exists() {
        sim::save(&state, &sim::State::subordinate("10.0.0.5")).unwrap();
    }
    let exe = crate::juju::sim_exe();
    sim::start_event(sim::Run {
        charm_dir: charm,
        state_path: &state,
        event,
        params: Map::new(),
        sim_exe: &exe,
        env: Vec::new(),
        echo: false,
    })
}

fn wait_file(path: &std::path::Path) {
    let t0 = std::time::Instant::now();
    while !path.exists() {
        assert!(t0.elapsed() < Duration::from_secs(30), "{}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn one_operation_at_a_time_per_unit_and_hooks_take_the_machine_lock() {
    let charm = sleeper_charm(true);
    let work = tempfile::tempdir().unwrap();
    let long = start(charm.path(), work.path(), "actions/long").unwrap();
    wait_file(&charm.path().join("started-actions-long"));
    // A second operation on the same unit waits: in one process that is a
    // wait forever, which the harness refuses with Juju's reason.
    let e = start(charm.path(), work.path(), "hooks/update-status")
        .err()
        .expect("a second operation on the unit is queued");
    assert!(e.contains("unit nova-live-migration/0 is busy"), "{e}");
    // The parallel action holds no machine lock: a principal's operation
    // (juju exec --unit nova-compute/0) runs beside it.
    let out = sim::exec_unit(
        sim::Exec {
            host: work.path(),
            command: "echo ran; echo \"$JUJU_UNIT_NAME ${JUJU_DISPATCH_PATH:-no-dispatch-path} $(id -u)\"",
            path: Vec::new(),
            env: Vec::new(),
        },
        "nova-compute/0",
        "0",
    )
    .unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "ran\nnova-compute/0 no-dispatch-path 0\n");
    std::fs::write(charm.path().join("go"), "").unwrap();
    let st = long.wait().unwrap();
    assert_eq!(st.exit_code, Some(0));

    // A hook holds the machine lock: the principal's exec waits for it.
    std::fs::remove_file(charm.path().join("go")).unwrap();
    let hook = start(charm.path(), work.path(), "hooks/update-status").unwrap();
    wait_file(&charm.path().join("started-hooks-update-status"));
    let e = sim::exec_unit(
        sim::Exec {
            host: work.path(),
            command: "true",
            path: Vec::new(),
            env: Vec::new(),
        },
        "nova-compute/0",
        "0",
    )
    .unwrap_err();
    assert!(e.contains("the machine-lock of machine 0 is busy"), "{e}");
    std::fs::write(charm.path().join("go"), "").unwrap();
    hook.wait().unwrap();
}

#[test]
fn a_non_parallel_action_holds_the_machine_lock() {
    let charm = sleeper_charm(false);
    let work = tempfile::tempdir().unwrap();
    let long = start(charm.path(), work.path(), "actions/long").unwrap();
    wait_file(&charm.path().join("started-actions-long"));
    let e = sim::exec_unit(
        sim::Exec {
            host: work.path(),
            command: "true",
            path: Vec::new(),
            env: Vec::new(),
        },
        "nova-compute/0",
        "0",
    )
    .unwrap_err();
    assert!(e.contains("machine-lock"), "{e}");
    std::fs::write(charm.path().join("go"), "").unwrap();
    long.wait().unwrap();
}

#[test]
fn juju_run_gives_up_after_its_wait_and_cancel_task_is_sigkill() {
    let charm = sleeper_charm(true);
    let work = tempfile::tempdir().unwrap();
    assert_eq!(sim::JUJU_RUN_DEFAULT_WAIT, Duration::from_secs(60));
    let long = start(charm.path(), work.path(), "actions/long").unwrap();
    wait_file(&charm.path().join("started-actions-long"));
    let (long, msg) = *long
        .wait_for(Duration::from_millis(50))
        .expect_err("still running after the client's wait");
    assert_eq!(
        msg,
        "timed out waiting for results from: unit nova-live-migration/0"
    );
    // The task runs on; juju cancel-task SIGKILLs dispatch.
    let st = long.cancel().unwrap();
    assert_eq!(st.exit_code, Some(128 + 9));
    // ... and the unit is free for the next operation.
    std::fs::write(charm.path().join("go"), "").unwrap();
    let next = start(charm.path(), work.path(), "hooks/update-status").unwrap();
    assert_eq!(next.wait().unwrap().exit_code, Some(0));
}

#[test]
fn exec_machine_runs_as_an_unprivileged_user_without_a_juju_context() {
    let work = tempfile::tempdir().unwrap();
    let out = sim::exec_machine(sim::Exec {
        host: work.path(),
        command: "id -u; echo \"${JUJU_UNIT_NAME:-no-unit}\"",
        path: Vec::new(),
        env: Vec::new(),
    })
    .unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, format!("{}\nno-unit\n", sim::EXEC_MACHINE_UID));
}

#[test]
fn the_charm_unit_is_one_operation_at_a_time_too() {
    // Two harness states on the same host paths are one unit on one
    // machine: the second waits (here: is refused with the reason).
    let mut a = Sim::new()
        .with_keystone(vec![("keystone/0", keystone_bag("127.0.0.1", "1"))])
        .config("nova-host", json!("node1.maas"));
    let env = a.host_env();
    let running = a.start_env("hooks/update-status", &[], Vec::new()).unwrap();
    let mut b = Sim::new();
    let e = b
        .start_env("hooks/update-status", &[], env)
        .err()
        .expect("queued behind a's hook");
    assert!(e.contains("unit nova-live-migration/0 is busy"), "{e}");
    a.finish(running).unwrap();
}

#[test]
fn a_task_result_past_one_controller_document_fails_the_task() {
    // stdout is part of a task's results (runner.go updateActionResults):
    // 17 MB of it is more than the 16 MiB document Juju stores them in.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("actions.yaml"),
        "big:\n  parallel: true\n  additionalProperties: false\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("config.yaml"), "options: {}\n").unwrap();
    std::fs::write(
        dir.path().join("dispatch"),
        "#!/bin/bash\nhead -c 17000000 /dev/zero | tr '\\0' x\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("dispatch"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let st = start(dir.path(), work.path(), "actions/big")
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(st.exit_code, Some(0));
    let failed = st.action_failed.expect("too large");
    assert!(
        failed.contains("more than the 16777216 one controller document holds"),
        "{failed}"
    );
}
