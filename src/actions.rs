//! Action handlers. An action that cannot do what was asked calls
//! `action-fail` with a message that says what to do, sets `summary` and
//! `report`, and the process still exits 0.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::charm::Unit;
use crate::control::{self, Op};
use crate::drain::{self, Kind};
use crate::juju::results::key_segment;
use crate::juju::{ActionResults, ToolError};
use crate::plan::{Report, ResultKind};
use crate::ready::Ready;
use crate::state::RunLock;

/// Every action `actions.yaml` declares.
pub const ACTIONS: [&str; 6] = [
    "evacuate",
    "migrate-vm",
    "abort",
    "force-complete",
    "enable",
    "status",
];

/// Largest `report` value passed to `action-set` (one argv string; Linux
/// refuses a single argument over 128 KiB).
const MAX_REPORT_BYTES: usize = 120_000;

/// Fails the action with `message`, setting `summary` and a `report`.
pub fn fail(unit: &Unit, action: &str, message: &str) -> Result<(), ToolError> {
    let mut results = ActionResults::new();
    results.set("summary", message)?;
    let report = json!({"action": action, "error": message});
    results.set("report", report.to_string())?;
    unit.tools.action_set(&results)?;
    unit.tools.action_fail(message)
}

/// Runs one action.
pub fn run(unit: &Unit, name: &str) -> Result<(), ToolError> {
    if !ACTIONS.contains(&name) {
        return fail(
            unit,
            name,
            &format!(
                "unknown action {name:?}; this charm has {}",
                ACTIONS.join(", ")
            ),
        );
    }
    let params = unit.tools.action_get()?;
    let ready = match unit.readiness()? {
        Ok(ready) => ready,
        Err(not_ready) => {
            return fail(
                unit,
                name,
                &format!("cannot run {name}: {}", not_ready.message()),
            );
        }
    };
    let rt = match crate::runtime::runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(unit, name, &e),
    };
    let kind = match name {
        "evacuate" => Kind::Evacuate,
        "migrate-vm" => Kind::MigrateVm,
        other => return rt.block_on(run_control(unit, &ready, other, &params)),
    };
    let t0 = crate::time::now_ms();
    let done = rt.block_on(run_drain(unit, &ready, kind, &params));
    drop(rt);
    // The drain kept the status while it ran (update-status waits behind
    // the action); once a run it made or resumed is over, a true one: what
    // update-status says. (A refused or dry run changed nothing.)
    let ran = crate::state::last_run(&unit.paths.state_dir)
        .ok()
        .flatten()
        .is_some_and(|r| {
            let r = &r.record;
            r.started_at >= t0 || r.ended_at.is_some_and(|e| e >= t0)
        });
    if ran && let Err(e) = unit.update_status() {
        tracing::warn!("status after {name}: {e}");
    }
    done
}

/// Sets `summary`, `report` (compact JSON), `counts.*` and `instances.*`.
pub fn set_report(
    unit: &Unit,
    report: &crate::plan::Report,
    with_keys: bool,
) -> Result<(), ToolError> {
    let mut results = ActionResults::new();
    results.set("summary", report.summary())?;
    results.set("report", compact_report(report))?;
    if with_keys {
        for (k, v) in report_keys(report) {
            results.set(&k, v)?;
        }
    }
    unit.tools.action_set(&results)
}

/// The report's `action-set` keys (flattened for Juju here, not in the
/// core): `counts.<result>` for every result and
/// `instances.<uuid>.{name,result,destination,duration,error}`, and after
/// an evacuation `verification.{ok,instances-left,not-reported-left,
/// migrations-in-progress,orphan-allocations[,orphan-consumers]}`; keys
/// whose value is unknown (no destination, no error) are left out.
pub fn report_keys(report: &Report) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = ResultKind::ALL
        .iter()
        .map(|k| {
            (
                format!("counts.{}", k.as_str()),
                report.counts.get(*k).to_string(),
            )
        })
        .collect();
    for i in &report.instances {
        let key = key_segment(&i.id);
        let p = |f: &str| format!("instances.{key}.{f}");
        out.push((p("name"), i.name.clone()));
        out.push((p("result"), i.result.as_str().to_string()));
        if let Some(d) = &i.destination {
            out.push((p("destination"), d.clone()));
        }
        if let Some(d) = i.duration_s {
            out.push((p("duration"), format!("{d:.1}")));
        }
        if let Some(e) = &i.error {
            out.push((p("error"), e.clone()));
        }
    }
    if let Some(v) = &report.verification {
        let unexpected = v.instances_left.iter().filter(|i| !i.expected).count();
        let orphans: Vec<&str> = v
            .orphan_allocations
            .iter()
            .map(|o| o.consumer_id.as_str())
            .collect();
        out.extend([
            ("verification.ok".into(), v.ok.to_string()),
            (
                "verification.instances-left".into(),
                v.instances_left.len().to_string(),
            ),
            (
                "verification.not-reported-left".into(),
                unexpected.to_string(),
            ),
            (
                "verification.migrations-in-progress".into(),
                v.migrations_in_progress.len().to_string(),
            ),
            (
                "verification.orphan-allocations".into(),
                orphans.len().to_string(),
            ),
        ]);
        if !orphans.is_empty() {
            out.push(("verification.orphan-consumers".into(), orphans.join(",")));
        }
    }
    out
}

/// The report as compact JSON, shrunk to fit one `action-set` argument:
/// first without the per-instance decision logs, then with only the
/// instances that did not end migrated.
pub fn compact_report(report: &crate::plan::Report) -> String {
    let full = serde_json::to_string(report).unwrap_or_default();
    if full.len() <= MAX_REPORT_BYTES {
        return full;
    }
    let mut r = report.clone();
    for i in r.instances.iter_mut() {
        i.decisions.clear();
    }
    let lean = serde_json::to_string(&r).unwrap_or_default();
    if lean.len() <= MAX_REPORT_BYTES {
        return lean;
    }
    r.instances.retain(|i| {
        !matches!(
            i.result,
            crate::plan::ResultKind::Migrated | crate::plan::ResultKind::ColdMigrated
        )
    });
    r.error = Some(format!(
        "{}report shortened: only instances not moved are listed; the journal has all",
        r.error.map(|e| format!("{e}; ")).unwrap_or_default()
    ));
    let mut s = serde_json::to_string(&r).unwrap_or_default();
    if s.len() > MAX_REPORT_BYTES {
        s = json!({"action": r.action, "host": r.host, "counts": r.counts,
                   "error": "report too large for action results; see the journal"})
        .to_string();
    }
    s
}

/// Runs one control action: the operation, then its results for Juju.
async fn run_control(
    unit: &Unit<'_>,
    ready: &Ready,
    name: &str,
    params: &BTreeMap<String, Value>,
) -> Result<(), ToolError> {
    let op = match control_op(name, params, &unit.ctx.unit) {
        Ok(op) => op,
        Err(e) => return fail(unit, name, &e),
    };
    let done = control::execute(ready, unit.paths, &op).await;
    let mut results = ActionResults::new();
    results.set("summary", done.summary.as_str())?;
    results.set("report", done.report.to_string())?;
    for (k, v) in &done.flat {
        results.set(k, v.as_str())?;
    }
    unit.tools.action_set(&results)?;
    if let Some(msg) = &done.failure {
        unit.tools.action_fail(msg)?;
    }
    Ok(())
}

/// A control action's parameters as the operation to run.
fn control_op(name: &str, p: &BTreeMap<String, Value>, unit: &str) -> Result<Op, String> {
    let vm = match p.get("vm") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        // `juju run … vm=12345` sends a YAML integer: the name's text.
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        Some(other) => return Err(format!("parameter vm must be a string, got {other}")),
    };
    let vm = crate::drain::bounded_name("vm", vm, "an instance name or UUID")?;
    let force = match p.get("force") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(format!(
                "parameter force must be true or false, got {other}"
            ));
        }
    };
    Ok(match name {
        "abort" => Op::Abort { vm },
        "force-complete" => Op::ForceComplete {
            vm: vm.ok_or("force-complete needs vm=<name or UUID>")?,
        },
        "enable" => Op::Enable {
            force,
            unit: unit.to_string(),
        },
        "status" => Op::Status,
        other => return Err(format!("{other} is not a control action")),
    })
}

async fn run_drain(
    unit: &Unit<'_>,
    ready: &Ready,
    kind: Kind,
    raw: &BTreeMap<String, Value>,
) -> Result<(), ToolError> {
    let action = kind.as_str();
    let params = match drain::Params::from_action(kind, raw) {
        Ok(p) => p,
        Err(e) => return fail(unit, action, &format!("{e}; nothing was changed")),
    };
    // One drain at a time; the lock also tells the host CLI that a drain is
    // running (rather than interrupted). A dry-run changes nothing and takes
    // no lock.
    let _lock = match drain_lock(unit, params.dry_run) {
        Ok(lock) => lock,
        Err(msg) => return fail(unit, action, &msg),
    };
    let (host, source) = match ready.nova_host(unit.paths) {
        Ok(h) => h,
        Err(e) => return fail(unit, action, &e),
    };
    tracing::info!("{action}: nova host {host} (from {})", source.describe());
    let os = match ready.connect().await {
        Ok(os) => os,
        Err(e) => return fail(unit, action, &format!("{e}; nothing was changed")),
    };
    let log = |line: &str| {
        if let Err(e) = unit.tools.action_log(line) {
            tracing::warn!("action-log: {e}");
        }
    };
    let principal = unit.ctx.principal();
    let status = |line: &str| {
        let msg = format!("{principal}: {line}");
        if let Err(e) = unit
            .tools
            .status_set(crate::juju::Status::Maintenance, &msg)
        {
            tracing::warn!("status-set: {e}");
        }
    };
    let env = drain::Env {
        os: &os,
        config: &ready.config,
        paths: unit.paths,
        host: host.clone(),
        unit: unit.ctx.unit.clone(),
        task: unit.ctx.action_id.clone(),
        log: &log,
        status: &status,
    };
    let result = drain::run(&env, &params).await;
    deliver(unit, action, &params, result)
}

/// The run lock of a drain (none for a dry-run), or why it cannot be had.
fn drain_lock(unit: &Unit<'_>, dry_run: bool) -> Result<Option<RunLock>, String> {
    if dry_run {
        return Ok(None);
    }
    match RunLock::acquire(&unit.paths.state_dir, std::time::Duration::from_secs(1)) {
        Ok(Some(lock)) => Ok(Some(lock)),
        Ok(None) => Err("another evacuate, migrate-vm or abort is running on this unit; wait for it to end or stop it (juju exec --machine <N> -- nova-live-migration abort); nothing was changed".into()),
        Err(e) => Err(format!(
            "cannot take the run lock in {}: {e}; nothing was changed",
            unit.paths.state_dir.display()
        )),
    }
}

/// A drain's result to Juju: the report (and action-fail when it failed),
/// then the journal marked as reported.
fn deliver(
    unit: &Unit<'_>,
    action: &str,
    params: &drain::Params,
    result: Result<drain::Outcome, drain::DrainError>,
) -> Result<(), ToolError> {
    match result {
        Ok(outcome) => {
            set_report(unit, &outcome.report, true)?;
            if let Some(msg) = outcome.failure {
                unit.tools.action_fail(&msg)?;
            }
            if !params.dry_run
                && let Err(e) = drain::mark_reported(unit.paths)
            {
                tracing::warn!("journal: {e}");
            }
            Ok(())
        }
        Err(drain::DrainError::Refused(msg)) => fail(unit, action, &msg),
        Err(e) => fail(
            unit,
            action,
            &format!(
                "{action} stopped: {e}; migrations already started go on in Nova: run {action} again to adopt them, or abort"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_keys_are_juju_keys() {
        // The report of one migrated instance and one excluded (the core's
        // own test builds it from a drain; here it is its JSON).
        let inst = |id: &str, result: &str, dest: Option<&str>, d: Option<f64>, e: Option<&str>| {
            json!({"id": id, "name": id, "result": result, "source": "node1.maas",
                   "destination": dest, "block_migration": "auto", "migration_id": null,
                   "attempts": 1, "duration_s": d, "error": e})
        };
        let r: Report = serde_json::from_value(json!({
            "action": "evacuate", "host": "node1.maas", "dry_run": false,
            "service": {"status": "disabled", "disabled_reason": null},
            "instances": [
                inst("81df1304-aaaa", "migrated", Some("node4.maas"), Some(13.3), None),
                inst("s1", "skipped", None, None, Some("excluded")),
            ],
            "counts": {"planned": 0, "migrated": 1, "cold_migrated": 0, "failed": 0,
                       "aborted": 0, "skipped": 1, "pending": 0},
            "duration_s": 41.23, "error": null,
            "verification": {"ok": false,
                "instances_left": [{"id": "s1", "name": "s1", "status": "ACTIVE",
                                    "result": "skipped", "expected": true}],
                "migrations_in_progress": [],
                "orphan_allocations": [{"consumer_id": "c0ffee00-0000-4000-8000-000000000001",
                    "provider": "node1.maas", "resources": {"MEMORY_MB": 64}}]},
        }))
        .unwrap();
        let keys = report_keys(&r);
        let v = |k: &str| keys.iter().find(|(a, _)| a == k).map(|(_, b)| b.as_str());
        assert_eq!(v("verification.ok"), Some("false"));
        assert_eq!(v("verification.instances-left"), Some("1"));
        assert_eq!(v("verification.not-reported-left"), Some("0"));
        assert_eq!(v("verification.migrations-in-progress"), Some("0"));
        assert_eq!(v("verification.orphan-allocations"), Some("1"));
        assert_eq!(
            v("verification.orphan-consumers"),
            Some("c0ffee00-0000-4000-8000-000000000001")
        );
        let get = |k: &str| keys.iter().find(|(a, _)| a == k).map(|(_, b)| b.as_str());
        assert_eq!(get("counts.cold-migrated"), Some("0"));
        assert_eq!(get("counts.migrated"), Some("1"));
        assert_eq!(get("instances.81df1304-aaaa.result"), Some("migrated"));
        assert_eq!(
            get("instances.81df1304-aaaa.destination"),
            Some("node4.maas")
        );
        assert_eq!(get("instances.81df1304-aaaa.duration"), Some("13.3"));
        assert_eq!(get("instances.s1.error"), Some("excluded"));
        assert_eq!(get("instances.s1.destination"), None);
        for (k, _) in &keys {
            assert!(
                k.split('.').all(|seg| !seg.is_empty()
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')),
                "{k}"
            );
        }
    }

    #[test]
    fn an_oversized_vm_is_refused_without_being_quoted() {
        let big: BTreeMap<String, Value> = [("vm".to_string(), Value::from("v".repeat(1 << 20)))]
            .into_iter()
            .collect();
        for action in ["abort", "force-complete"] {
            let e = control_op(action, &big, "nova-live-migration/0").unwrap_err();
            assert_eq!(
                e,
                "vm is 1048576 bytes long, but an instance name or UUID is at most 255 characters (1020 bytes)"
            );
        }
    }
}
