//! The Nova control operations — `abort`, `force-complete`, `enable`,
//! `status` — for the actions (`actions.rs` is their Juju adapter) and the
//! host CLI (`cli.rs`).
//!
//! Coordination with a running `evacuate`/`migrate-vm` goes only through
//! the state directory (`state`): the run lock tells whether it runs, an
//! abort request asks it to abort, and `abort` of an interrupted run ends
//! it in the journal.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::Config;
use crate::openstack::{self, MigrationFilter, OpenStack, Server};
use crate::paths::Paths;
use crate::plan::{AbortFact, InstanceId, MigrationStatus, Millis};
use crate::ready::Ready;
use crate::state::{
    AbortRequests, EvacuationSummary, Journal, RequestState, RunLock, RunRecord, drain_running,
    last_run,
};
use crate::time::{iso, now_ms};

/// A live-migration status that means "in progress" in `/os-migrations`.
fn in_progress_status(s: &MigrationStatus) -> bool {
    use MigrationStatus as S;
    matches!(
        s,
        S::Accepted
            | S::PreMigrating
            | S::Queued
            | S::Preparing
            | S::Running
            | S::RunningPostCopy
            | S::PostMigrating
    )
}

// ------------------------------------------ asking the running drain

/// Asks the running drain to abort and waits (up to `wait`) until it has
/// taken the request. A `vm` the running evacuation does not have is
/// refused, naming its instances (the drain would otherwise stop starting
/// migrations for a typo). Returns the outcome for the action or the CLI.
pub fn request_abort_of_running(paths: &Paths, vm: Option<&str>, wait: Duration) -> Done {
    let what = vm.map(|v| format!(" of {v}")).unwrap_or_default();
    let state_dir = &paths.state_dir;
    if let Some(vm) = vm
        && let Err(msg) = check_running_has(state_dir, vm)
    {
        return Done::failed("abort", msg);
    }
    let queue = AbortRequests::in_dir(state_dir);
    let req = match queue.submit(vm, now_ms()) {
        Ok(r) => r,
        Err(e) => {
            return Done::failed(
                "abort",
                format!(
                    "an evacuation is running but the abort request could not be written to {}: {e} (run as root)",
                    queue.dir().display()
                ),
            );
        }
    };
    let t0 = std::time::Instant::now();
    let mut state = queue.state(&req.id);
    while state == RequestState::Pending && t0.elapsed() < wait {
        if !drain_running(state_dir) {
            // Ended meanwhile; it may have taken the request on its way out.
            state = queue.state(&req.id);
            if state == RequestState::Pending {
                queue.forget(&req.id);
                state = RequestState::Gone;
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        state = queue.state(&req.id);
    }
    let taken = state == RequestState::Taken;
    if taken {
        queue.forget(&req.id);
    }
    let run = last_run(state_dir).ok().flatten();
    let (summary, failure) = match state {
        RequestState::Taken => (
            format!(
                "abort{what} requested: the running evacuation took the request; it aborts its in-flight migrations{} and ends with result aborted",
                if vm.is_none() { ", starts no more" } else { "" }
            ),
            None,
        ),
        RequestState::Pending => (
            format!(
                "abort{what} requested: the running evacuation has not taken the request yet (it polls once per poll-interval); it will on its next poll"
            ),
            None,
        ),
        RequestState::Gone => {
            let msg = format!(
                "abort{what}: the evacuation ended before it took the request, so nothing was aborted by it; run status to see how it ended"
            );
            (msg.clone(), Some(msg))
        }
    };
    Done {
        summary,
        report: json!({
            "action": "abort",
            "vm": vm,
            "requested_from_running_evacuation": true,
            "request_id": req.id,
            "taken": taken,
            "evacuation": run.map(|r| r.summary()),
        }),
        flat: vec![],
        failure,
        status: None,
    }
}

/// `Ok` when the running evacuation has an instance named `vm` (or with
/// that UUID); else what to do instead.
fn check_running_has(state_dir: &std::path::Path, vm: &str) -> Result<(), String> {
    let run = last_run(state_dir)?.filter(|r| r.record.in_flight());
    let Some(run) = run else {
        return Err(format!(
            "the running evacuation has not listed its instances yet (it is in pre-flight): run abort for {vm} again in a few seconds, or abort without a vm to abort it all; nothing was changed"
        ));
    };
    let instances = &run.record.drain.instances;
    if instances.iter().any(|i| i.id == vm || i.name == vm) {
        return Ok(());
    }
    let mut names: Vec<&str> = instances.iter().map(|i| i.name.as_str()).collect();
    let more = names.len().saturating_sub(20);
    names.truncate(20);
    let mut list = if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    };
    if more > 0 {
        list.push_str(&format!(" and {more} more"));
    }
    Err(format!(
        "no instance {} in the running {} on {} (its instances: {list}); give a name or UUID of one of them, or abort without a vm to abort them all; nothing was changed",
        crate::text::quoted(vm, 80),
        run.record.kind.as_str(),
        run.record.host
    ))
}

// ------------------------------------------------------------ the outcome

/// What a control operation produced (for `action-set` or the CLI).
#[derive(Debug, Clone)]
pub struct Done {
    pub summary: String,
    pub report: Value,
    /// Extra flat result keys.
    pub flat: Vec<(String, String)>,
    /// `Some`: the operation could not do what was asked.
    pub failure: Option<String>,
    /// The typed report of `status` (what `report` holds as JSON).
    pub status: Option<StatusReport>,
}

impl Done {
    fn failed(action: &str, message: String) -> Done {
        Done {
            summary: message.clone(),
            report: json!({"action": action, "error": message}),
            flat: vec![],
            failure: Some(message),
            status: None,
        }
    }
}

/// Everything an operation needs.
pub struct Ctl<'a> {
    pub os: &'a OpenStack,
    pub host: String,
    pub paths: &'a Paths,
}

/// A control operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Abort {
        vm: Option<String>,
    },
    ForceComplete {
        vm: String,
    },
    /// `unit`: the unit asking; a `disabled_reason` its application wrote
    /// (`plan::written_by_us`) is ours to clear.
    Enable {
        force: bool,
        unit: String,
    },
    Status,
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Abort { .. } => "abort",
            Op::ForceComplete { .. } => "force-complete",
            Op::Enable { .. } => "enable",
            Op::Status => "status",
        }
    }
}

/// How long the CLI/action waits for a running drain to take an abort request.
pub fn abort_wait(config: Option<&Config>) -> Duration {
    let poll = config.map(|c| c.poll_interval).unwrap_or(2.0);
    Duration::from_secs_f64((poll * 3.0 + 5.0).min(120.0))
}

/// Runs one operation, from `ready` (hook credentials or the CLI's copy).
pub async fn execute(ready: &Ready, paths: &Paths, op: &Op) -> Done {
    let action = op.name();
    // Decisions that need no Nova call come first.
    match op {
        Op::Abort { vm } if drain_running(&paths.state_dir) => {
            // A short blocking wait: the runtime has nothing else to run.
            return request_abort_of_running(paths, vm.as_deref(), abort_wait(Some(&ready.config)));
        }
        Op::Enable { force: false, .. } => match last_run(&paths.state_dir) {
            Ok(Some(run)) if run.record.in_flight() => {
                let how = if run.running {
                    "abort it first (juju exec --machine <N> -- nova-live-migration abort) or wait for it to end"
                } else {
                    "end it first with the abort action (or run evacuate to finish it)"
                };
                return Done::failed(
                    action,
                    format!(
                        "refusing to enable nova-compute on {}: the {} is still in flight; {how}; or run enable force=true",
                        run.record.host,
                        run.line()
                    ),
                );
            }
            Err(e) => {
                return Done::failed(
                    action,
                    format!("{e}; or run enable force=true to enable anyway"),
                );
            }
            _ => {}
        },
        _ => {}
    }
    let (host, _) = match ready.nova_host(paths) {
        Ok(h) => h,
        Err(e) => return Done::failed(action, e),
    };
    let os = match ready.connect().await {
        Ok(os) => os,
        Err(e) => {
            let mut d = Done::failed(action, format!("{e}; nothing was changed"));
            if *op == Op::Status
                && let Ok(Some(run)) = last_run(&paths.state_dir)
            {
                d.report["evacuation"] = serde_json::to_value(run.summary()).unwrap_or_default();
            }
            return d;
        }
    };
    let ctl = Ctl {
        os: &os,
        host,
        paths,
    };
    let result = match op {
        Op::Abort { vm } => abort(&ctl, vm.as_deref()).await,
        Op::ForceComplete { vm } => force_complete(&ctl, vm).await,
        Op::Enable { force, unit } => enable(&ctl, *force, unit).await,
        Op::Status => status(&ctl).await,
    };
    result.unwrap_or_else(|e| Done::failed(action, explain(action, &e)))
}

/// An API error as a message that says what to do.
fn explain(action: &str, e: &openstack::Error) -> String {
    let hint = if e.is_auth() {
        "check the identity-credentials relation with keystone"
    } else if e.is_retryable() || e.is_ambiguous() {
        "check that Nova is reachable from this machine and run it again"
    } else {
        "run status to see the current state and try again"
    };
    format!("{action} stopped: {e} ({hint})")
}

// ------------------------------------------------------------ operations

/// Finds `vm` (name or UUID) among `servers`.
fn resolve_vm<'a>(servers: &'a [Server], vm: &str, host: &str) -> Result<&'a Server, String> {
    if let Some(s) = servers.iter().find(|s| s.id == vm) {
        return Ok(s);
    }
    let named: Vec<&Server> = servers.iter().filter(|s| s.name == vm).collect();
    match named.as_slice() {
        [one] => Ok(one),
        [] => {
            let mut names: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
            names.truncate(20);
            Err(format!(
                "no instance {vm:?} on {host} (instances here: {}); give a name or UUID of an instance on this node",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        }
        many => Err(format!(
            "{vm:?} names {} instances on {host} ({}); give the UUID",
            many.len(),
            many.iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn name_of(servers: &[Server], id: &str) -> String {
    servers
        .iter()
        .find(|s| s.id == id)
        .map(|s| s.name.clone())
        .unwrap_or_default()
}

/// In-progress live migrations from `host` (one paged list call).
async fn in_progress(ctl: &Ctl<'_>) -> openstack::Result<Vec<openstack::Migration>> {
    let all = ctl
        .os
        .compute()
        .migrations(&MigrationFilter {
            source_compute: Some(ctl.host.clone()),
            migration_type: Some("live-migration".into()),
            ..Default::default()
        })
        .await?;
    Ok(all
        .into_iter()
        .filter(|m| in_progress_status(&MigrationStatus::from(m.status.clone())))
        .collect())
}

/// The `abort` report (no drain running): what was aborted in Nova and
/// what could not be, and what became of an interrupted run's journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbortReport {
    /// `abort`.
    pub action: String,
    pub host: String,
    pub vm: Option<String>,
    pub aborted: Vec<AbortEntry>,
    pub not_aborted: Vec<AbortEntry>,
    /// `{"note", "instances", "ended"}` when an interrupted run was ended.
    pub journal: Option<Value>,
}

/// One migration `abort` acted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortEntry {
    pub instance_id: String,
    pub name: String,
    pub migration_id: i64,
    pub status: MigrationStatus,
    pub dest_compute: Option<String>,
    /// Why it was not aborted (only in `not_aborted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl AbortEntry {
    fn because(self, reason: String) -> AbortEntry {
        AbortEntry {
            reason: Some(reason),
            ..self
        }
    }
}

async fn abort(ctl: &Ctl<'_>, vm: Option<&str>) -> openstack::Result<Done> {
    // Hold the run lock: no drain may start (or resume) meanwhile.
    let _lock = match RunLock::acquire(&ctl.paths.state_dir, Duration::from_secs(1)) {
        Ok(Some(l)) => Some(l),
        Ok(None) => {
            return Ok(request_abort_of_running(ctl.paths, vm, abort_wait(None)));
        }
        Err(e) => {
            tracing::warn!("run lock: {e}");
            None
        }
    };
    let compute = ctl.os.compute();
    let servers = compute.servers_on_host(&ctl.host).await?;
    let mut migrations = in_progress(ctl).await?;
    let only = match vm {
        Some(vm) => match narrow_to_vm(&servers, &mut migrations, vm, &ctl.host) {
            Ok(id) => Some(id),
            Err(msg) => return Ok(Done::failed("abort", msg)),
        },
        None => None,
    };
    let (aborted, not_aborted) = abort_each(ctl, &servers, &migrations).await;
    let journal = end_interrupted(ctl, &servers, only.as_deref(), &aborted, &not_aborted).await;
    Ok(abort_done(
        ctl,
        vm,
        migrations.is_empty(),
        aborted,
        not_aborted,
        journal,
    ))
}

/// Keeps only the migrations of `vm` and returns its id; the instance may
/// be known only from its migration record.
fn narrow_to_vm(
    servers: &[Server],
    migrations: &mut Vec<openstack::Migration>,
    vm: &str,
    host: &str,
) -> Result<String, String> {
    let id = match resolve_vm(servers, vm, host) {
        Ok(s) => s.id.clone(),
        Err(msg) => {
            if migrations.iter().any(|m| m.instance_uuid == vm) {
                vm.to_string()
            } else {
                return Err(msg);
            }
        }
    };
    migrations.retain(|m| m.instance_uuid == id);
    Ok(id)
}

/// Asks Nova to abort each migration that can be aborted; returns the
/// aborted ones and the others, each with its reason.
async fn abort_each(
    ctl: &Ctl<'_>,
    servers: &[Server],
    migrations: &[openstack::Migration],
) -> (Vec<AbortEntry>, Vec<AbortEntry>) {
    let compute = ctl.os.compute();
    let queued_ok = compute.can_abort_queued();
    let mut aborted = Vec::new();
    let mut not_aborted = Vec::new();
    for m in migrations {
        let entry = AbortEntry {
            instance_id: m.instance_uuid.clone(),
            name: name_of(servers, &m.instance_uuid),
            migration_id: m.id,
            status: MigrationStatus::from(m.status.clone()),
            dest_compute: m.dest_compute.clone(),
            reason: None,
        };
        let refuse = abort_refusal(
            &entry.status,
            queued_ok,
            &compute.microversion().to_string(),
        );
        if let Some(reason) = refuse {
            not_aborted.push(entry.because(reason));
            continue;
        }
        match compute.abort_migration(&m.instance_uuid, m.id).await {
            Ok(_) => aborted.push(entry),
            Err(e) if e.is_bad_request() || e.is_conflict() || e.is_not_found() => {
                not_aborted.push(entry.because(format!(
                    "Nova refused: {} (the migration changed state meanwhile: run status)",
                    e.message().unwrap_or("no message")
                )));
            }
            Err(e) => not_aborted.push(entry.because(e.to_string())),
        }
    }
    (aborted, not_aborted)
}

/// The action's result: summary, report, flat keys and the failure that
/// names each migration not aborted.
fn abort_done(
    ctl: &Ctl<'_>,
    vm: Option<&str>,
    nothing_in_flight: bool,
    aborted: Vec<AbortEntry>,
    not_aborted: Vec<AbortEntry>,
    journal: Option<Value>,
) -> Done {
    let on = match vm {
        Some(v) => format!("{v} on {}", ctl.host),
        None => ctl.host.clone(),
    };
    let mut summary = if nothing_in_flight {
        format!("abort {on}: no migration in flight; nothing to abort")
    } else {
        format!(
            "abort {on}: {} aborted, {} could not be",
            aborted.len(),
            not_aborted.len()
        )
    };
    if let Some(j) = &journal {
        summary.push_str(&format!("; {}", j["note"].as_str().unwrap_or("")));
    }
    let flat = vec![
        ("aborted".into(), aborted.len().to_string()),
        ("not-aborted".into(), not_aborted.len().to_string()),
    ];
    let failure = (!not_aborted.is_empty()).then(|| {
        format!(
            "{summary}: {}",
            not_aborted
                .iter()
                .map(|n| format!(
                    "{} ({}): {}",
                    n.name,
                    n.instance_id,
                    n.reason.as_deref().unwrap_or("")
                ))
                .collect::<Vec<_>>()
                .join("; ")
        )
    });
    Done {
        summary,
        report: serde_json::to_value(AbortReport {
            action: "abort".into(),
            host: ctl.host.clone(),
            vm: vm.map(str::to_string),
            aborted,
            not_aborted,
            journal,
        })
        .unwrap_or_default(),
        flat,
        failure,
        status: None,
    }
}

/// Why a migration in `status` cannot be aborted (`None`: it can).
fn abort_refusal(status: &MigrationStatus, queued_ok: bool, microversion: &str) -> Option<String> {
    use MigrationStatus as S;
    match status {
        S::Running => None,
        S::Queued | S::Preparing if queued_ok => None,
        S::Queued | S::Preparing => Some(format!(
            "{} migrations can be aborted only from compute API 2.65 (this cloud: {microversion}); it can be aborted once running",
            status.as_str()
        )),
        S::RunningPostCopy => Some(
            "in post-copy: the guest already runs on the destination; it cannot be aborted and completes on its own".to_string(),
        ),
        S::PostMigrating => {
            Some("already finishing on the destination; cannot be aborted".to_string())
        }
        other => Some(format!(
            "status {}: not abortable yet; run abort again in a few seconds",
            other.as_str()
        )),
    }
}

/// Marks an interrupted run in the journal as ended (or, with `only`, that
/// instance as aborted) so nothing resumes it by surprise.
async fn end_interrupted(
    ctl: &Ctl<'_>,
    servers: &[Server],
    only: Option<&str>,
    aborted: &[AbortEntry],
    not_aborted: &[AbortEntry],
) -> Option<Value> {
    let journal = Journal::in_dir(&ctl.paths.state_dir);
    let mut rec: RunRecord = match journal.load() {
        Ok(Some(r)) => r,
        Ok(None) => return None,
        Err(e) => return Some(json!({"note": format!("journal not updated: {e}")})),
    };
    if !rec.in_flight() || rec.host != ctl.host {
        return None;
    }
    let now = now_ms();
    let (facts, still_moving) =
        interrupted_facts(ctl, &rec, servers, only, aborted, not_aborted).await;
    let changed: Vec<Value> = rec
        .drain
        .end_interrupted(now, only, &facts)
        .into_iter()
        .map(|(id, outcome)| {
            let name = rec.drain.get(&id).map(|r| r.name.clone()).unwrap_or_default();
            json!({"id": id, "name": name, "result": crate::plan::ResultKind::from(outcome).as_str()})
        })
        .collect();
    let note = end_interrupted_record(&mut rec, now, only, &still_moving);
    if let Err(e) = journal.store(&rec) {
        return Some(json!({"note": format!("journal not updated: {e}")}));
    }
    Some(json!({"note": note, "instances": changed, "ended": rec.ended_at.is_some()}))
}

/// What Nova says of each in-flight instance of the interrupted run (only
/// `only`, if given), for the core to end them; and the names of those
/// that could not be aborted and go on moving.
async fn interrupted_facts(
    ctl: &Ctl<'_>,
    rec: &RunRecord,
    servers: &[Server],
    only: Option<&str>,
    aborted: &[AbortEntry],
    not_aborted: &[AbortEntry],
) -> (Vec<(InstanceId, AbortFact)>, Vec<String>) {
    let mut facts = Vec::new();
    let mut still_moving = Vec::new();
    for r in rec.drain.instances.iter().filter(|r| r.in_flight()) {
        if only.is_some_and(|o| o != r.id) {
            continue;
        }
        let fact = if not_aborted.iter().any(|a| a.instance_id == r.id) {
            // Post-copy or finishing: it ends on its own; leave it tracked.
            still_moving.push(r.name.clone());
            AbortFact::StillMoving
        } else if aborted.iter().any(|a| a.instance_id == r.id) {
            AbortFact::Aborted
        } else {
            // Not migrating any more: where is it?
            AbortFact::At(host_now(ctl, servers, &r.id).await)
        };
        facts.push((r.id.clone(), fact));
    }
    (facts, still_moving)
}

/// Where an instance that no longer migrates is: from the listing of the
/// host, else from Nova (`None` if deleted; the source host if unknown).
async fn host_now(ctl: &Ctl<'_>, servers: &[Server], id: &str) -> Option<String> {
    match servers.iter().find(|s| s.id == id) {
        Some(s) => s.host.clone(),
        None => match ctl.os.compute().server(id).await {
            Ok(s) => s.host,
            Err(e) if e.is_not_found() => None,
            Err(_) => Some(ctl.host.clone()),
        },
    }
}

/// Ends the interrupted run's record as far as `only` and `still_moving`
/// allow, and says so in the note returned.
fn end_interrupted_record(
    rec: &mut RunRecord,
    now: Millis,
    only: Option<&str>,
    still_moving: &[String],
) -> String {
    if only.is_none() && !still_moving.is_empty() {
        rec.drain.stop_starting = true;
        format!(
            "the interrupted {} started {} stays in flight because {} could not be aborted; run abort again once {} ended (or evacuate to track them)",
            rec.kind.as_str(),
            iso(rec.started_at),
            still_moving.join(", "),
            if still_moving.len() == 1 {
                "it has"
            } else {
                "they have"
            }
        )
    } else if only.is_none() {
        rec.drain.stop_starting = true;
        rec.ended_at = Some(now);
        rec.aborted = true;
        format!(
            "the interrupted {} started {} is marked ended (aborted); evacuate will not resume it",
            rec.kind.as_str(),
            iso(rec.started_at)
        )
    } else if rec.drain.is_done() {
        rec.ended_at = Some(now);
        format!(
            "the interrupted {} started {} had nothing else left and is marked ended",
            rec.kind.as_str(),
            iso(rec.started_at)
        )
    } else {
        format!(
            "the interrupted {} started {} stays in flight ({}): run abort without vm to end it",
            rec.kind.as_str(),
            iso(rec.started_at),
            rec.progress()
        )
    }
}

async fn force_complete(ctl: &Ctl<'_>, vm: &str) -> openstack::Result<Done> {
    let compute = ctl.os.compute();
    let servers = compute.servers_on_host(&ctl.host).await?;
    let server = match resolve_vm(&servers, vm, &ctl.host) {
        Ok(s) => s,
        Err(msg) => return Ok(Done::failed("force-complete", msg)),
    };
    let label = format!("{} ({})", server.name, server.id);
    let migrations = compute.server_migrations(&server.id).await?;
    let Some(m) = migrations.iter().max_by_key(|m| m.id) else {
        return Ok(Done::failed(
            "force-complete",
            format!("{label} has no live migration in progress; nothing to force-complete"),
        ));
    };
    let report = |result: &str, error: Option<&str>| {
        json!({
            "action": "force-complete",
            "host": ctl.host,
            "instance_id": server.id,
            "name": server.name,
            "migration_id": m.id,
            "status": m.status,
            "dest_compute": m.dest_compute,
            "percent": m.memory_percent().map(|p| p.round()),
            "result": result,
            "error": error,
        })
    };
    let status = MigrationStatus::from(m.status.clone());
    if status != MigrationStatus::Running {
        use MigrationStatus as S;
        let why = match &status {
            S::RunningPostCopy => "it is already in post-copy and completes on its own".to_string(),
            S::Queued | S::Preparing | S::Accepted => {
                "it has not started copying yet; wait until it is running (status action) or abort it".to_string()
            }
            other => format!("force-complete needs status running, not {}", other.as_str()),
        };
        let msg = format!(
            "cannot force-complete {label}: its migration {} is {}: {why}",
            m.id, m.status
        );
        let mut d = Done::failed("force-complete", msg.clone());
        d.report = report("refused", Some(&msg));
        return Ok(d);
    }
    match compute.force_complete(&server.id, m.id).await {
        Ok(_) => {
            let pct = m
                .memory_percent()
                .map(|p| format!(" at {p:.0}%"))
                .unwrap_or_default();
            Ok(Done {
                summary: format!(
                    "force-complete {label}: requested for migration {} to {}{pct}; Nova pauses the guest (or switches to post-copy) until the copy ends",
                    m.id,
                    m.dest_compute.as_deref().unwrap_or("?")
                ),
                report: report("requested", None),
                flat: vec![("migration-id".into(), m.id.to_string())],
                failure: None,
                status: None,
            })
        }
        Err(e) if e.is_bad_request() || e.is_conflict() => {
            let msg = format!(
                "Nova refused to force-complete {label} migration {} ({}: {}): the migration is no longer running (it may have just completed, failed or entered post-copy); run status to see where it is",
                m.id,
                e.status().map(|s| s.as_u16()).unwrap_or(0),
                e.message().unwrap_or("no message")
            );
            let mut d = Done::failed("force-complete", msg.clone());
            d.report = report("refused", Some(&msg));
            Ok(d)
        }
        Err(e) => Err(e),
    }
}

/// The `enable` report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnableReport {
    /// `enable`.
    pub action: String,
    pub host: String,
    pub service_before: ServiceBrief,
    pub service: ServiceBrief,
    pub changed: bool,
    /// Enabled although an evacuation is in flight (force).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// A service's status and why it is disabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceBrief {
    pub status: String,
    pub disabled_reason: Option<String>,
}

/// Whose mark a disabled service carries, as `enable` judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// This charm's `evacuate` wrote the reason.
    Ours,
    /// Someone else disabled it (another operator, a tool, Nova itself).
    Theirs,
}

fn mark_of(service: &openstack::Service, unit: &str) -> Mark {
    match service.disabled_reason.as_deref() {
        Some(r) if crate::plan::written_by_us(r, unit) => Mark::Ours,
        _ => Mark::Theirs,
    }
}

/// Why `enable` refuses a service disabled by someone else.
fn not_ours(host: &str, reason: Option<&str>) -> String {
    let whose = match reason.filter(|r| !r.trim().is_empty()) {
        Some(r) => format!(
            "by someone else, not by this charm (disabled_reason {})",
            crate::text::quoted(r, 200)
        ),
        None => "without a reason, so not by this charm".to_string(),
    };
    format!(
        "refusing to enable nova-compute on {host}: it was disabled {whose}; whoever disabled it may still need it down (another operator's maintenance, a tool, Nova after failures): ask them, or run enable force=true to enable it anyway; nothing was changed"
    )
}

fn enable_report(
    ctl: &Ctl<'_>,
    before: ServiceBrief,
    after: ServiceBrief,
    changed: bool,
    warning: Option<String>,
) -> Value {
    serde_json::to_value(EnableReport {
        action: "enable".into(),
        host: ctl.host.clone(),
        service_before: before,
        service: after,
        changed,
        warning,
    })
    .unwrap_or_default()
}

async fn enable(ctl: &Ctl<'_>, force: bool, unit: &str) -> openstack::Result<Done> {
    let compute = ctl.os.compute();
    let Some(service) = compute.compute_service(&ctl.host).await? else {
        return Ok(Done::failed(
            "enable",
            format!(
                "Nova has no nova-compute service on host {}: check the nova-host config option",
                ctl.host
            ),
        ));
    };
    let before = ServiceBrief {
        status: service.status.clone(),
        disabled_reason: service.disabled_reason.clone(),
    };
    if !service.is_disabled() {
        return Ok(Done {
            summary: format!(
                "nova-compute on {} is already enabled; nothing to do",
                ctl.host
            ),
            report: enable_report(ctl, before.clone(), before, false, None),
            flat: vec![],
            failure: None,
            status: None,
        });
    }
    let mark = mark_of(&service, unit);
    if mark == Mark::Theirs && !force {
        let msg = not_ours(&ctl.host, service.disabled_reason.as_deref());
        let mut d = Done::failed("enable", msg);
        d.report = enable_report(ctl, before.clone(), before, false, None);
        d.report["error"] = json!(d.summary);
        return Ok(d);
    }
    let in_flight = last_run(&ctl.paths.state_dir)
        .ok()
        .flatten()
        .filter(|r| r.record.in_flight());
    let mut warnings = Vec::new();
    if let (Some(r), true) = (&in_flight, force) {
        warnings.push(format!(
            "enabled although the {} is in flight (force)",
            r.line()
        ));
    }
    if mark == Mark::Theirs {
        warnings
            .push("enabled although someone else disabled it, not this charm (force)".to_string());
    }
    let warning = (!warnings.is_empty()).then(|| warnings.join("; "));
    let after = compute.enable_service(&service).await?;
    let mut summary = format!(
        "enabled nova-compute on {} (was disabled: {})",
        ctl.host,
        service.disabled_reason.as_deref().unwrap_or("no reason")
    );
    match crate::fleet::instance_ha_maintenance(ctl.os, &ctl.host, false).await {
        crate::fleet::InstanceHaNote::Told(l) => summary.push_str(&format!("; {l}")),
        crate::fleet::InstanceHaNote::Absent(l) => tracing::info!("{l}"),
    }
    if let Some(w) = &warning {
        summary.push_str(&format!("; {w}"));
    }
    let after = ServiceBrief {
        status: after.status,
        disabled_reason: after.disabled_reason,
    };
    Ok(Done {
        summary,
        report: enable_report(ctl, before, after, true, warning),
        flat: vec![],
        failure: None,
        status: None,
    })
}

/// The `status` report: the service, the instances, the migrations in
/// flight and the last evacuation. The CLI renders it ([`crate::cli`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// `status`.
    pub action: String,
    pub host: String,
    /// `None`: Nova has no nova-compute service for the host.
    pub service: Option<ServiceState>,
    pub instances: Vec<InstanceState>,
    pub migrations: Vec<MigrationState>,
    /// `None`: no journal.
    pub evacuation: Option<Evacuation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    pub status: String,
    pub state: String,
    pub disabled_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceState {
    pub id: String,
    pub name: String,
    pub status: String,
    pub task_state: Option<String>,
}

/// A live migration in flight from this host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationState {
    pub id: i64,
    pub instance_id: String,
    pub name: String,
    pub status: MigrationStatus,
    pub dest_compute: Option<String>,
    pub created_at: Option<String>,
    /// Present for a running migration whose progress Nova gave.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Memory copied, percent, rounded.
    pub percent: Option<f64>,
    pub memory_total_bytes: Option<u64>,
    pub memory_remaining_bytes: Option<u64>,
    pub disk_total_bytes: Option<u64>,
    pub disk_remaining_bytes: Option<u64>,
}

/// The last evacuation: its summary, or why the journal could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Evacuation {
    Summary(EvacuationSummary),
    Error { error: String },
}

async fn status(ctl: &Ctl<'_>) -> openstack::Result<Done> {
    let compute = ctl.os.compute();
    let service = compute.compute_service(&ctl.host).await?;
    let servers = compute.servers_on_host(&ctl.host).await?;
    let migrations = in_progress(ctl).await?;
    let migs = migration_states(ctl, &servers, &migrations).await;
    let run = last_run(&ctl.paths.state_dir);
    let mut summary = format!(
        "{}: {}; {} instance{}, {} migration{} in flight",
        ctl.host,
        service_line(service.as_ref()),
        servers.len(),
        if servers.len() == 1 { "" } else { "s" },
        migs.len(),
        if migs.len() == 1 { "" } else { "s" },
    );
    let evacuation = match &run {
        Ok(Some(r)) => {
            summary.push_str(&format!("; last {}", r.line()));
            Some(Evacuation::Summary(r.summary()))
        }
        Ok(None) => None,
        Err(e) => {
            summary.push_str(&format!("; journal: {e}"));
            Some(Evacuation::Error { error: e.clone() })
        }
    };
    let mut flat = vec![
        ("instances".to_string(), servers.len().to_string()),
        ("migrations".to_string(), migs.len().to_string()),
    ];
    if let Some(s) = &service {
        flat.push(("service-status".into(), s.status.clone()));
        flat.push(("service-state".into(), s.state.clone()));
    }
    if let Ok(Some(r)) = &run {
        flat.push(("evacuation".into(), r.state().to_string()));
    }
    let report = StatusReport {
        action: "status".into(),
        host: ctl.host.clone(),
        service: service.as_ref().map(|s| ServiceState {
            status: s.status.clone(),
            state: s.state.clone(),
            disabled_reason: s.disabled_reason.clone(),
        }),
        instances: instance_states(&servers),
        migrations: migs,
        evacuation,
    };
    Ok(Done {
        summary,
        report: serde_json::to_value(&report).unwrap_or_default(),
        flat,
        failure: None,
        status: Some(report),
    })
}

/// Each migration in flight, with the progress of those running.
async fn migration_states(
    ctl: &Ctl<'_>,
    servers: &[Server],
    migrations: &[openstack::Migration],
) -> Vec<MigrationState> {
    let mut migs = Vec::new();
    for m in migrations {
        let status = MigrationStatus::from(m.status.clone());
        let mut progress = None;
        if matches!(
            status,
            MigrationStatus::Running | MigrationStatus::RunningPostCopy
        ) {
            progress = progress_of(ctl, m).await;
        }
        migs.push(MigrationState {
            id: m.id,
            instance_id: m.instance_uuid.clone(),
            name: name_of(servers, &m.instance_uuid),
            status,
            dest_compute: m.dest_compute.clone(),
            created_at: m.created_at.clone(),
            progress,
        });
    }
    migs
}

/// A running migration's progress; `None` when Nova has none to tell.
async fn progress_of(ctl: &Ctl<'_>, m: &openstack::Migration) -> Option<Progress> {
    match ctl
        .os
        .compute()
        .server_migration(&m.instance_uuid, m.id)
        .await
    {
        Ok(sm) => Some(Progress {
            percent: sm.memory_percent().map(|p| p.round()),
            memory_total_bytes: sm.memory_total_bytes,
            memory_remaining_bytes: sm.memory_remaining_bytes,
            disk_total_bytes: sm.disk_total_bytes,
            disk_remaining_bytes: sm.disk_remaining_bytes,
        }),
        Err(e) if e.is_not_found() => None,
        Err(e) => {
            tracing::debug!("progress of migration {}: {e}", m.id);
            None
        }
    }
}

fn instance_states(servers: &[Server]) -> Vec<InstanceState> {
    servers
        .iter()
        .map(|s| InstanceState {
            id: s.id.clone(),
            name: s.name.clone(),
            status: s.status.clone(),
            task_state: s.task_state.clone(),
        })
        .collect()
}

/// The nova-compute service as the summary tells it.
fn service_line(service: Option<&openstack::Service>) -> String {
    match service {
        Some(s) if s.is_disabled() => format!(
            "disabled ({}), {}",
            s.disabled_reason.as_deref().unwrap_or("no reason"),
            s.state
        ),
        Some(s) => format!("{}, {}", s.status, s.state),
        None => "no nova-compute service".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_can_be_aborted() {
        let st = |s: &str| MigrationStatus::from(s.to_string());
        assert_eq!(abort_refusal(&st("running"), false, "2.60"), None);
        assert_eq!(abort_refusal(&st("queued"), true, "2.96"), None);
        assert_eq!(abort_refusal(&st("preparing"), true, "2.96"), None);
        let q = abort_refusal(&st("queued"), false, "2.60").unwrap();
        assert!(q.contains("2.65") && q.contains("2.60"), "{q}");
        let pc = abort_refusal(&st("running (post-copy)"), true, "2.96").unwrap();
        assert!(
            pc.contains("post-copy") && pc.contains("completes on its own"),
            "{pc}"
        );
        assert!(abort_refusal(&st("post-migrating"), true, "2.96").is_some());
        assert!(
            abort_refusal(&st("accepted"), true, "2.96")
                .unwrap()
                .contains("again in a few seconds")
        );
    }

    fn server(id: &str, name: &str) -> Server {
        Server {
            id: id.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn vm_by_uuid_or_unique_name() {
        let servers = vec![server("u1", "web"), server("u2", "db"), server("u3", "db")];
        assert_eq!(resolve_vm(&servers, "u2", "n1").unwrap().id, "u2");
        assert_eq!(resolve_vm(&servers, "web", "n1").unwrap().id, "u1");
        let e = resolve_vm(&servers, "db", "n1").unwrap_err();
        assert!(e.contains("u2, u3") && e.contains("give the UUID"), "{e}");
        let e = resolve_vm(&servers, "mail", "n1").unwrap_err();
        assert!(
            e.contains("no instance \"mail\" on n1") && e.contains("web, db"),
            "{e}"
        );
    }

    #[test]
    fn abort_and_enable_reports_keep_their_json_shape() {
        let e = AbortEntry {
            instance_id: "u1".into(),
            name: "focal-1".into(),
            migration_id: 29,
            status: MigrationStatus::PreMigrating,
            dest_compute: None,
            reason: None,
        };
        let r = AbortReport {
            action: "abort".into(),
            host: "node1.maas".into(),
            vm: None,
            aborted: vec![e.clone()],
            not_aborted: vec![e.because("in post-copy".into())],
            journal: None,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["aborted"][0]["status"], "pre-migrating");
        assert_eq!(v["aborted"][0]["migration_id"], 29);
        assert!(v["aborted"][0].get("reason").is_none(), "{v}");
        assert_eq!(v["not_aborted"][0]["reason"], "in post-copy");
        assert_eq!(v["journal"], Value::Null);
        let b = ServiceBrief {
            status: "enabled".into(),
            disabled_reason: None,
        };
        let v = serde_json::to_value(EnableReport {
            action: "enable".into(),
            host: "node1.maas".into(),
            service_before: b.clone(),
            service: b,
            changed: false,
            warning: None,
        })
        .unwrap();
        assert_eq!(v["service"]["status"], "enabled");
        assert_eq!(v["changed"], false);
        assert!(in_progress_status(&MigrationStatus::PreMigrating));
        assert!(!in_progress_status(&MigrationStatus::Completed));
    }
}
