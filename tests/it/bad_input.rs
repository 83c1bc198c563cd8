//! Bad input across relation data, config and action parameters, through
//! the real dispatch (no cloud needed): keystone publishing a non-HTTP
//! `auth_protocol`, missing or empty keys, a port that is not one, a 1 MiB
//! password or host, bytes that are not UTF-8 in `relation-get`'s,
//! `config-get`'s and `action-get`'s output, negative and huge
//! `max-concurrent-migrations`, oversized action parameters.
//!
//! Every case ends in a `blocked` (or, for keys keystone has not published
//! yet, `waiting`) status or an `action-fail` whose message names the problem
//! and says what to do, with exit 0: no panic, no hook error for Juju to
//! retry (retrying cannot help: the data has to change, and a change runs
//! `config-changed` / `identity-credentials-relation-changed`, which read it
//! again), one `status-set` per hook and no `relation-set`, no argv longer
//! than a few KiB (a 1 MiB value is never echoed whole), no password in any
//! output, and the charm's state dir byte for byte as it was.
//!
//! `drain_bad_input.rs` covers the action inputs that need Nova (22 cases);
//! `hooks.rs` each config option's range (13 values) and what the controller
//! refuses from `actions.yaml`.
//!
//! The table of cases and messages is printed (`-- --nocapture`) and kept
//! under `$NLM_SUITE_OUT` when set.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::{Value, json};

use crate::juju::sim::to_hex;
use crate::juju::{SIM_PASSWORD, Sim, State, keystone_bag};

/// 1 MiB.
const MIB: usize = 1 << 20;

/// Tools a hook may call here: reading, and one status.
const HOOK_TOOLS: [&str; 6] = [
    "config-get",
    "relation-ids",
    "relation-list",
    "relation-get",
    "status-set",
    "juju-log",
];

/// Tools an action may call here: reading, results, failure.
const ACTION_TOOLS: [&str; 8] = [
    "config-get",
    "relation-ids",
    "relation-list",
    "relation-get",
    "action-get",
    "action-set",
    "action-fail",
    "juju-log",
];

/// Longest argv (all arguments of one call, plus stdin) a case may produce.
const MAX_CALL_BYTES: usize = 4096;

/// One row of the table.
struct Row {
    surface: &'static str,
    case: String,
    outcome: String,
    message: String,
}

/// A complete bag for a Keystone that nothing listens to (no case gets as
/// far as calling it).
fn bag() -> BTreeMap<String, String> {
    keystone_bag("127.0.0.1", "9")
}

fn with(key: &str, value: impl Into<String>) -> BTreeMap<String, String> {
    let mut b = bag();
    b.insert(key.into(), value.into());
    b
}

fn without(key: &str) -> BTreeMap<String, String> {
    let mut b = bag();
    b.remove(key);
    b
}

/// A unit related to keystone/0 with `bag`, its state dir holding one
/// file from an earlier run (which must stay as it is).
fn unit(bag: BTreeMap<String, String>) -> Sim {
    let sim = Sim::new().with_keystone(vec![("keystone/0", bag)]);
    let state = sim.path("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("journal.1700000000000.json"),
        br#"{"version":1,"state":"an earlier, archived run"}"#,
    )
    .unwrap();
    sim
}

/// `relation-get` prints keystone/0's bag with the password's middle bytes
/// replaced by 0xff 0xfe (not UTF-8).
fn relation_get_not_utf8(sim: &mut Sim) {
    let text = serde_json::to_string(&bag()).unwrap();
    let at = text.find(SIM_PASSWORD).unwrap() + 8;
    let mut raw = text.as_bytes().to_vec();
    raw.splice(at..at + 2, [0xff, 0xfe]);
    sim.state
        .tool_stdout_hex
        .insert("relation-get".into(), to_hex(&raw));
}

/// `config-get` prints the config with `nova-host` holding a 0xff byte.
fn config_get_not_utf8(sim: &mut Sim) {
    let mut raw = br#"{"log-level": "info", "nova-host": "node"#.to_vec();
    raw.extend_from_slice(b"\xff1.maas\"}");
    sim.state
        .tool_stdout_hex
        .insert("config-get".into(), to_hex(&raw));
}

/// Path → (mode, bytes) of every file under `dir`.
fn snapshot(dir: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let meta = e.metadata().unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        // Every hook keeps the operator hint (unit names only, 0644): not
        // a change bad input causes.
        if name == nlm::state::operator_hint::HINT_FILE {
            continue;
        }
        if meta.is_dir() {
            for (k, v) in snapshot(&e.path()) {
                out.insert(format!("{name}/{k}"), v);
            }
        } else {
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            out.insert(name, (meta.permissions().mode() & 0o7777, bytes));
        }
    }
    out
}

/// What every case must hold, hook or action.
fn common(case: &str, out: &State, allowed: &[&str], secrets: &[&str]) {
    assert_eq!(out.exit_code, Some(0), "{case}: stderr {}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{case}: {}", out.stderr);
    for c in &out.calls {
        assert!(
            allowed.contains(&c.argv[0].as_str()),
            "{case}: unexpected call {}",
            crate::juju::sim::Call::line(c)
                .chars()
                .take(200)
                .collect::<String>()
        );
        let size: usize =
            c.argv.iter().map(String::len).sum::<usize>() + c.stdin.as_ref().map_or(0, String::len);
        assert!(
            size <= MAX_CALL_BYTES,
            "{case}: {} called with {size} bytes",
            c.argv[0]
        );
    }
    let everything = out.everything();
    for s in secrets {
        assert!(
            !everything.contains(s),
            "{case}: a secret reached the output"
        );
    }
}

/// Runs a hook; checks the status and the invariants; returns the row.
fn hook(
    surface: &'static str,
    case: &str,
    mut sim: Sim,
    hook: &str,
    status: &str,
    needles: &[&str],
) -> Row {
    let state_dir = sim.path("state");
    let before = snapshot(&state_dir);
    let out = sim.hook(hook).clone();
    common(
        case,
        &out,
        &HOOK_TOOLS,
        &[SIM_PASSWORD, "sim-pass", "ppppppppppppppppp"],
    );
    let sets: Vec<_> = out
        .calls
        .iter()
        .filter(|c| c.argv[0] == "status-set")
        .collect();
    assert_eq!(sets.len(), 1, "{case}: {:?}", out.call_lines());
    let last = out.statuses.last().expect("a status");
    assert_eq!(last.status, status, "{case}: {}", last.message);
    for n in needles {
        assert!(
            last.message.contains(n),
            "{case}: {n:?} not in {:?}",
            last.message
        );
    }
    unchanged_row(
        &state_dir,
        before,
        surface,
        case,
        &last.status,
        &last.message,
    )
}

/// Runs an action; checks the failure and the invariants; returns the row.
fn action(
    surface: &'static str,
    case: &str,
    mut sim: Sim,
    action: &str,
    params: &[&str],
    needles: &[&str],
) -> Row {
    let state_dir = sim.path("state");
    let before = snapshot(&state_dir);
    let out = sim.action(action, params).clone();
    common(
        case,
        &out,
        &ACTION_TOOLS,
        &[
            SIM_PASSWORD,
            "sim-pass",
            "ppppppppppppppppp",
            "vvvvvvvvvvvvvvvvv",
        ],
    );
    let msg = out
        .action_failed
        .clone()
        .unwrap_or_else(|| panic!("{case}: not refused: {:?}", out.action_results));
    for n in needles {
        assert!(msg.contains(n), "{case}: {n:?} not in {msg:?}");
    }
    assert_eq!(out.action_results.get("summary"), Some(&msg), "{case}");
    let report: Value = serde_json::from_str(&out.action_results["report"]).unwrap();
    assert_eq!(report["action"], action, "{case}");
    unchanged_row(&state_dir, before, surface, case, "action-fail", &msg)
}

/// Checks the state dir is as it was before the case; the table row.
fn unchanged_row(
    state_dir: &Path,
    before: BTreeMap<String, (u32, Vec<u8>)>,
    surface: &'static str,
    case: &str,
    outcome: &str,
    message: &str,
) -> Row {
    assert_eq!(snapshot(state_dir), before, "{case}: the state dir changed");
    Row {
        surface,
        case: case.to_string(),
        outcome: outcome.to_string(),
        message: message.to_string(),
    }
}

/// An action the controller refuses against actions.yaml: dispatch never runs.
fn refused(surface: &'static str, case: &str, action: &str, params: &[&str], needle: &str) -> Row {
    let mut sim = unit(bag());
    let err = sim
        .run(&format!("actions/{action}"), params)
        .expect_err("refused by the controller");
    assert!(err.contains(needle), "{case}: {err}");
    assert!(sim.state.calls.is_empty(), "{case}: dispatch ran");
    Row {
        surface,
        case: case.to_string(),
        outcome: "refused".into(),
        message: format!("(by Juju, before the charm runs) {err}"),
    }
}

fn print_table(rows: &[Row]) {
    let mut text = format!(
        "{:<9} {:<46} {:<12} message\n",
        "surface", "case", "outcome"
    );
    for r in rows {
        text.push_str(&format!(
            "{:<9} {:<46} {:<12} {}\n",
            r.surface, r.case, r.outcome, r.message
        ));
    }
    eprintln!("\n{text}");
    crate::juju::sim::keep_output("bad-input table", &[("table.txt", text.as_bytes())]).unwrap();
}

const CHANGED: &str = "identity-credentials-relation-changed";
const FIX_KEYSTONE: &str = "fix what keystone publishes (juju config keystone)";
const FIX_CONFIG: &str = "juju config nova-live-migration";

#[test]
fn bad_input_across_relation_data_config_and_actions_is_refused_clearly() {
    let big = |c: char| c.to_string().repeat(MIB);
    let mut rows = Vec::new();

    // ---------------------------------------------------- relation data
    let r = "relation";
    for proto in ["ftp", "ldap"] {
        rows.push(hook(
            r,
            &format!("auth_protocol {proto}"),
            unit(with("auth_protocol", proto)),
            CHANGED,
            "blocked",
            &[
                &format!("keystone/0 publishes auth_protocol \"{proto}\""),
                "only http and https are supported",
                FIX_KEYSTONE,
            ],
        ));
    }
    rows.push(hook(
        r,
        "credentials_password missing",
        unit(without("credentials_password")),
        CHANGED,
        "waiting",
        &[
            "waiting for keystone to publish credentials",
            "missing credentials_password",
        ],
    ));
    rows.push(hook(
        r,
        "auth_host empty",
        unit(with("auth_host", "")),
        CHANGED,
        "waiting",
        &["missing auth_host"],
    ));
    rows.push(hook(
        r,
        "auth_port blank",
        unit(with("auth_port", "   ")),
        CHANGED,
        "waiting",
        &["missing auth_port"],
    ));
    for port in ["fivethousand", "0", "65536", "-1"] {
        rows.push(hook(
            r,
            &format!("auth_port {port}"),
            unit(with("auth_port", port)),
            CHANGED,
            "blocked",
            &[
                &format!(
                    "keystone/0 publishes auth_port \"{port}\", not a port number (1 to 65535)"
                ),
                FIX_KEYSTONE,
            ],
        ));
    }
    rows.push(hook(
        r,
        "credentials_password of 1 MiB",
        unit(with("credentials_password", big('p'))),
        CHANGED,
        "blocked",
        &[
            "keystone/0 publishes credentials_password of 1048576 bytes, more than the 4096 this charm accepts",
            FIX_KEYSTONE,
        ],
    ));
    rows.push(hook(
        r,
        "auth_host of 1 MiB",
        unit(with("auth_host", big('h'))),
        CHANGED,
        "blocked",
        &["keystone/0 publishes auth_host of 1048576 bytes"],
    ));
    rows.push(hook(
        r,
        "auth_host not a host name",
        unit(with("auth_host", "keystone/v3?x=1")),
        CHANGED,
        "blocked",
        &[
            "keystone/0 publishes auth_host \"keystone/v3?x=1\", not a host name or IP address",
            FIX_KEYSTONE,
        ],
    ));
    let mut sim = unit(bag());
    relation_get_not_utf8(&mut sim);
    rows.push(hook(
        r,
        "relation-get output not UTF-8",
        sim,
        CHANGED,
        "blocked",
        &[
            "identity-credentials: cannot read keystone/0's data: relation-get printed output that is not the JSON expected: not valid UTF-8 (byte 0xff at offset",
            "in the value of \"credentials_password\")",
            FIX_KEYSTONE,
        ],
    ));
    rows.push(action(
        r,
        "evacuate, auth_port fivethousand",
        unit(with("auth_port", "fivethousand")),
        "evacuate",
        &[],
        &["cannot run evacuate: identity-credentials: keystone/0 publishes auth_port \"fivethousand\""],
    ));
    let mut sim = unit(bag());
    relation_get_not_utf8(&mut sim);
    rows.push(action(
        r,
        "status, relation-get output not UTF-8",
        sim,
        "status",
        &[],
        &[
            "cannot run status: identity-credentials: cannot read keystone/0's data",
            "not valid UTF-8",
        ],
    ));

    // ----------------------------------------------------------- config
    let c = "config";
    let cfg = |k: &str, v: Value| unit(bag()).config(k, v);
    for (case, v, shown) in [
        ("max-concurrent-migrations -1", json!(-1), "-1"),
        (
            "max-concurrent-migrations i64::MAX",
            json!(i64::MAX),
            "9223372036854775807",
        ),
        (
            "max-concurrent-migrations u64::MAX",
            json!(u64::MAX),
            "18446744073709551615",
        ),
    ] {
        rows.push(hook(
            c,
            case,
            cfg("max-concurrent-migrations", v),
            "config-changed",
            "blocked",
            &[
                &format!("max-concurrent-migrations: {shown} is out of range, allowed 0 to 64"),
                FIX_CONFIG,
            ],
        ));
    }
    rows.push(hook(
        c,
        "nova-host of 1 MiB",
        cfg("nova-host", json!(big('n'))),
        "config-changed",
        "blocked",
        &[
            "nova-host: \"nnnn",
            "\"… (1048576 bytes) is not a host name",
            FIX_CONFIG,
        ],
    ));
    rows.push(hook(
        c,
        "region of 1 MiB",
        cfg("region", json!(big('r'))),
        "config-changed",
        "blocked",
        &[
            "region: \"rrrr",
            "\"… (1048576 bytes) is not a region name",
            FIX_CONFIG,
        ],
    ));
    rows.push(hook(
        c,
        "endpoint-interface of 1 MiB",
        cfg("endpoint-interface", json!(big('i'))),
        "config-changed",
        "blocked",
        &[
            "endpoint-interface: \"iiii",
            "is not one of internal, public, admin",
        ],
    ));
    let mut sim = unit(bag());
    config_get_not_utf8(&mut sim);
    rows.push(hook(
        c,
        "config-get output not UTF-8",
        sim,
        "config-changed",
        "blocked",
        &[
            "cannot read the charm config: config-get printed output that is not the JSON expected: not valid UTF-8 (byte 0xff at offset 40, in the value of \"nova-host\")",
            "set that option again to plain text with juju config nova-live-migration",
        ],
    ));
    rows.push(action(
        c,
        "evacuate, max-concurrent-migrations u64::MAX",
        cfg("max-concurrent-migrations", json!(u64::MAX)),
        "evacuate",
        &["dry-run=true"],
        &[
            "cannot run evacuate: invalid config: max-concurrent-migrations",
            FIX_CONFIG,
        ],
    ));
    let mut sim = unit(bag());
    config_get_not_utf8(&mut sim);
    rows.push(action(
        c,
        "evacuate, config-get output not UTF-8",
        sim,
        "evacuate",
        &[],
        &[
            "cannot run evacuate: cannot read the charm config",
            "\"nova-host\"",
            FIX_CONFIG,
        ],
    ));

    // ----------------------------------------------------------- action
    let a = "action";
    rows.push(refused(
        a,
        "evacuate max-concurrent=-1",
        "evacuate",
        &["max-concurrent=-1"],
        "(root).max-concurrent : must be greater than or equal to 1, given \"-1\"",
    ));
    // Past 2^53 the controller's JSON-schema check no longer sees an integer.
    rows.push(refused(
        a,
        "evacuate max-concurrent=i64::MAX",
        "evacuate",
        &["max-concurrent=9223372036854775807"],
        "(root).max-concurrent : must be of type integer, given 9223372036854775808",
    ));
    rows.push(action(
        a,
        "evacuate max-concurrent=65",
        unit(bag()),
        "evacuate",
        &["max-concurrent=65"],
        &[
            "max-concurrent must be a whole number from 1 to 64, got 65",
            "nothing was changed",
        ],
    ));
    let big_param = |k: &str| format!("{k}={}", big('v'));
    for (act, key, needle) in [
        (
            "migrate-vm",
            "vm",
            "vm is 1048576 bytes long, but an instance name or UUID is at most 255 characters",
        ),
        (
            "evacuate",
            "target-host",
            "target-host is 1048576 bytes long, but a host name is at most 255 characters",
        ),
        (
            "evacuate",
            "exclude",
            "exclude is 1048576 bytes long, more than the 32768 accepted",
        ),
        ("abort", "vm", "vm is 1048576 bytes long"),
        ("force-complete", "vm", "vm is 1048576 bytes long"),
    ] {
        let p = big_param(key);
        rows.push(action(
            a,
            &format!("{act} {key} of 1 MiB"),
            unit(bag()),
            act,
            &[p.as_str()],
            &[needle],
        ));
    }
    let mut sim = unit(bag());
    let mut raw = br#"{"dry-run": false, "exclude": "web"#.to_vec();
    raw.extend_from_slice(b"\xc3(\"}");
    sim.state
        .tool_stdout_hex
        .insert("action-get".into(), to_hex(&raw));
    rows.push(action(
        a,
        "action-get output not UTF-8",
        sim,
        "evacuate",
        &[],
        &[
            "evacuate could not run: action-get printed output that is not the JSON expected: not valid UTF-8 (byte 0xc3 at offset 34, in the value of \"exclude\")",
            "run it again with parameters that are plain text",
        ],
    ));

    print_table(&rows);
    assert!(rows.len() >= 20, "{} cases", rows.len());
}

#[test]
fn the_harness_can_print_bytes_that_are_not_utf8() {
    let mut sim = unit(bag());
    relation_get_not_utf8(&mut sim);
    let exe = crate::juju::sim_exe();
    let dir = tempfile::tempdir().unwrap();
    let tool = dir.path().join("relation-get");
    std::os::unix::fs::symlink(&exe, &tool).unwrap();
    let state = dir.path().join("state.json");
    crate::juju::sim::save(&state, &sim.state).unwrap();
    let out = std::process::Command::new(&tool)
        .args([
            "--format=json",
            "-r",
            "identity-credentials:5",
            "-",
            "keystone/0",
        ])
        .env("JUJU_SIM_STATE", &state)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(std::str::from_utf8(&out.stdout).is_err());
    assert!(out.stdout.windows(2).any(|w| w == [0xff, 0xfe]));
    // The call is recorded all the same.
    let after = crate::juju::sim::load(&state).unwrap();
    assert_eq!(after.calls.len(), 1);
}
