//! Control actions (`abort`, `force-complete`, `enable`, `status`) and the
//! Nova side of the host CLI.
//!
//! Coordination with a running `evacuate`/`migrate-vm` goes only through
//! files in the state dir:
//!
//! - `run.lock`: the drain action holds an exclusive lock on it for as long
//!   as it runs (taken in `actions.rs`); the kernel drops it when the process
//!   dies, so "journal in flight + lock free" means *interrupted* (killed),
//!   "lock held" means *running*.
//! - `abort-request.json`: `{"vm": null|"<name or id>", "requested_at": s}`,
//!   polled by the running drain each tick (`drain::take_abort_request`).
//! - `cli-credentials.json`: a root-only (0600) copy of the
//!   identity-credentials bag and the config, kept by the hooks so the host
//!   CLI can talk to Nova outside a hook. Never logged, never in a result.
//! - `journal.json`: the drain's journal; `abort` ends an interrupted one.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::charm::{Ready, Unit};
use crate::config::Config;
use crate::credentials::RelationData;
use crate::drain::RunRecord;
use crate::journal::Journal;
use crate::juju::{ActionResults, ToolError};
use crate::openstack::{self, MigrationFilter, OpenStack, Server};
use crate::paths::Paths;
use crate::plan::{Outcome, Phase};
use crate::time::{iso, now_ms};

pub const RUN_LOCK: &str = "run.lock";
pub const ABORT_REQUEST: &str = "abort-request.json";
pub const CLI_CREDENTIALS: &str = "cli-credentials.json";

/// Live-migration statuses that mean "in progress" in `/os-migrations`.
const IN_PROGRESS: [&str; 7] = [
    "accepted",
    "pre-migrating",
    "queued",
    "preparing",
    "running",
    "running (post-copy)",
    "post-migrating",
];

// ---------------------------------------------------------------- the lock

/// The exclusive run lock; released on drop (or when the process dies).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock without waiting: `Ok(None)` when another process holds it.
    pub fn try_acquire(state_dir: &Path) -> std::io::Result<Option<RunLock>> {
        std::fs::create_dir_all(state_dir)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(state_dir.join(RUN_LOCK))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(RunLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Takes the lock, retrying for up to `patience` (a status probe may hold
    /// it for an instant): `Ok(None)` when another process still holds it.
    pub fn acquire(state_dir: &Path, patience: Duration) -> std::io::Result<Option<RunLock>> {
        let t0 = std::time::Instant::now();
        loop {
            if let Some(l) = RunLock::try_acquire(state_dir)? {
                return Ok(Some(l));
            }
            if t0.elapsed() >= patience {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// True when an evacuate/migrate-vm process holds the run lock right now.
pub fn drain_running(state_dir: &Path) -> bool {
    if !state_dir.join(RUN_LOCK).exists() {
        return false;
    }
    matches!(RunLock::try_acquire(state_dir), Ok(None))
}

// ------------------------------------------------------------ the journal

/// The last run in the journal and whether its process is alive.
pub struct LastRun {
    pub record: RunRecord,
    pub running: bool,
}

impl LastRun {
    /// `running`, `interrupted` or `ended`/`aborted`.
    pub fn state(&self) -> &'static str {
        if self.record.in_flight() {
            if self.running {
                "running"
            } else {
                "interrupted"
            }
        } else if self.record.aborted {
            "aborted"
        } else {
            "ended"
        }
    }

    /// The journal summary as the status report carries it.
    pub fn summary_json(&self) -> Value {
        let r = &self.record;
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for i in &r.drain.instances {
            let k = match i.outcome() {
                Some(Outcome::Migrated) => "migrated",
                Some(Outcome::ColdMigrated) => "cold_migrated",
                Some(Outcome::Failed) => "failed",
                Some(Outcome::Aborted) => "aborted",
                Some(Outcome::Pending) => "pending",
                None if i.in_flight() => "in_flight",
                None => "not_started",
            };
            *counts.entry(k).or_default() += 1;
        }
        json!({
            "kind": r.kind.as_str(),
            "state": self.state(),
            "task": r.task,
            "started_at": iso(r.started_at),
            "ended_at": r.ended_at.map(iso),
            "aborted": r.aborted,
            "progress": r.progress(),
            "instances": r.drain.instances.len(),
            "counts": counts,
        })
    }

    /// `evacuate started 2026-…: 3/12 done, 2 in flight (running)`.
    pub fn line(&self) -> String {
        let r = &self.record;
        let end = match r.ended_at {
            Some(t) => format!(", ended {}", iso(t)),
            None => String::new(),
        };
        format!(
            "{} started {}: {}{end} ({})",
            r.kind.as_str(),
            iso(r.started_at),
            r.progress(),
            self.state()
        )
    }
}

/// Loads the journal (`None` when there is none).
pub fn last_run(paths: &Paths) -> Result<Option<LastRun>, String> {
    let journal = Journal::in_dir(&paths.state_dir);
    match journal.load::<RunRecord>() {
        Ok(Some(record)) => Ok(Some(LastRun {
            running: record.in_flight() && drain_running(&paths.state_dir),
            record,
        })),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

// ------------------------------------------------------ the abort request

/// Writes `abort-request.json` (0600, atomically) for the running drain.
pub fn write_abort_request(paths: &Paths, vm: Option<&str>) -> std::io::Result<PathBuf> {
    let body = json!({"vm": vm, "requested_at": now_ms() / 1000});
    let path = paths.state_dir.join(ABORT_REQUEST);
    crate::journal::write_private(&path, body.to_string().as_bytes())?;
    Ok(path)
}

/// Asks the running drain to abort and waits (up to `wait`) until it has
/// taken the request. Returns the outcome for the action or the CLI.
pub fn request_abort_of_running(paths: &Paths, vm: Option<&str>, wait: Duration) -> Done {
    let what = vm.map(|v| format!(" of {v}")).unwrap_or_default();
    let path = match write_abort_request(paths, vm) {
        Ok(p) => p,
        Err(e) => {
            return Done::failed(
                "abort",
                format!(
                    "an evacuation is running but the abort request could not be written to {}: {e} (run as root)",
                    paths.state_dir.join(ABORT_REQUEST).display()
                ),
            );
        }
    };
    let t0 = std::time::Instant::now();
    while path.exists() && t0.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(200));
    }
    let taken = !path.exists();
    let run = last_run(paths).ok().flatten();
    let summary = if taken {
        format!(
            "abort{what} requested: the running evacuation took the request; it aborts its in-flight migrations{} and ends with result aborted",
            if vm.is_none() { ", starts no more" } else { "" }
        )
    } else {
        format!(
            "abort{what} requested: the running evacuation has not taken the request yet (it polls once per poll-interval); it will on its next poll"
        )
    };
    Done {
        summary,
        report: json!({
            "action": "abort",
            "vm": vm,
            "requested_from_running_evacuation": true,
            "taken": taken,
            "evacuation": run.map(|r| r.summary_json()),
        }),
        flat: vec![],
        failure: None,
    }
}

// ------------------------------------------------- credentials for the CLI

/// Keeps `cli-credentials.json` in step with the hooks' view: written (0600)
/// when the credentials are complete, removed otherwise.
pub fn sync_cli_credentials(
    paths: &Paths,
    ready: Option<(&BTreeMap<String, Value>, &RelationData)>,
) {
    let path = paths.state_dir.join(CLI_CREDENTIALS);
    match ready {
        Some((config, creds)) => {
            let body = json!({
                "relation_id": creds.relation_id,
                "unit": creds.unit,
                "data": creds.data,
                "config": config,
            })
            .to_string();
            let same = std::fs::read(&path).is_ok_and(|b| b == body.as_bytes());
            if !same && let Err(e) = crate::journal::write_private(&path, body.as_bytes()) {
                tracing::warn!("could not keep the host CLI's credentials file: {e}");
            }
        }
        None => remove_cli_credentials(paths),
    }
}

pub fn remove_cli_credentials(paths: &Paths) {
    let path = paths.state_dir.join(CLI_CREDENTIALS);
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::info!("removed the host CLI's credentials file"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("could not remove the host CLI's credentials file: {e}"),
    }
}

/// The credentials and config the hooks last saw, for the host CLI.
pub fn load_cli_credentials(paths: &Paths) -> Result<Ready, String> {
    let path = paths.state_dir.join(CLI_CREDENTIALS);
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "no credentials for the host CLI at {}: the charm writes them once the identity-credentials relation is complete",
            path.display()
        ),
        std::io::ErrorKind::PermissionDenied => {
            format!("cannot read {}: run as root", path.display())
        }
        _ => format!("cannot read {}: {e}", path.display()),
    })?;
    let v: Value =
        serde_json::from_str(&text).map_err(|_| format!("{} is not valid JSON", path.display()))?;
    let data: BTreeMap<String, String> = v
        .get("data")
        .and_then(|d| serde_json::from_value(d.clone()).ok())
        .ok_or_else(|| format!("{} has no credentials", path.display()))?;
    let config: BTreeMap<String, Value> = v
        .get("config")
        .and_then(|d| serde_json::from_value(d.clone()).ok())
        .unwrap_or_default();
    let config = Config::from_values(&config)
        .map_err(|e| format!("{e} (fix with juju config nova-live-migration)"))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Ok(Ready {
        config,
        credentials: RelationData {
            relation_id: s("relation_id"),
            unit: s("unit"),
            data,
        },
    })
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
}

impl Done {
    fn failed(action: &str, message: String) -> Done {
        Done {
            summary: message.clone(),
            report: json!({"action": action, "error": message}),
            flat: vec![],
            failure: Some(message),
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
    Abort { vm: Option<String> },
    ForceComplete { vm: String },
    Enable { force: bool },
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

    fn from_action(name: &str, p: &BTreeMap<String, Value>) -> Result<Op, String> {
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
            "enable" => Op::Enable { force },
            "status" => Op::Status,
            other => return Err(format!("{other} is not a control action")),
        })
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
        Op::Enable { force: false } => match last_run(paths) {
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
                && let Ok(Some(run)) = last_run(paths)
            {
                d.report["evacuation"] = run.summary_json();
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
        Op::Enable { force } => enable(&ctl, *force).await,
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
        .filter(|m| IN_PROGRESS.contains(&m.status.as_str()))
        .collect())
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
        Some(vm) => {
            // The instance may be known only from its migration record.
            let id = match resolve_vm(&servers, vm, &ctl.host) {
                Ok(s) => s.id.clone(),
                Err(msg) => {
                    if migrations.iter().any(|m| m.instance_uuid == vm) {
                        vm.to_string()
                    } else {
                        return Ok(Done::failed("abort", msg));
                    }
                }
            };
            migrations.retain(|m| m.instance_uuid == id);
            Some(id)
        }
        None => None,
    };
    let queued_ok = compute.can_abort_queued();
    let mut aborted = Vec::new();
    let mut not_aborted = Vec::new();
    for m in &migrations {
        let entry = json!({
            "instance_id": m.instance_uuid,
            "name": name_of(&servers, &m.instance_uuid),
            "migration_id": m.id,
            "status": m.status,
            "dest_compute": m.dest_compute,
        });
        let refuse = abort_refusal(&m.status, queued_ok, &compute.microversion().to_string());
        if let Some(reason) = refuse {
            not_aborted.push(with(entry, "reason", reason));
            continue;
        }
        match compute.abort_migration(&m.instance_uuid, m.id).await {
            Ok(_) => aborted.push(entry),
            Err(e) if e.is_bad_request() || e.is_conflict() || e.is_not_found() => {
                not_aborted.push(with(
                    entry,
                    "reason",
                    format!(
                        "Nova refused: {} (the migration changed state meanwhile: run status)",
                        e.message().unwrap_or("no message")
                    ),
                ));
            }
            Err(e) => not_aborted.push(with(entry, "reason", e.to_string())),
        }
    }
    let journal = end_interrupted(ctl, &servers, only.as_deref(), &aborted, &not_aborted).await;
    let on = match vm {
        Some(v) => format!("{v} on {}", ctl.host),
        None => ctl.host.clone(),
    };
    let mut summary = if migrations.is_empty() {
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
    let failure = (!not_aborted.is_empty()).then(|| {
        format!(
            "{summary}: {}",
            not_aborted
                .iter()
                .map(|n| format!(
                    "{} ({}): {}",
                    n["name"].as_str().unwrap_or(""),
                    n["instance_id"].as_str().unwrap_or(""),
                    n["reason"].as_str().unwrap_or("")
                ))
                .collect::<Vec<_>>()
                .join("; ")
        )
    });
    Ok(Done {
        summary,
        report: json!({
            "action": "abort",
            "host": ctl.host,
            "vm": vm,
            "aborted": aborted,
            "not_aborted": not_aborted,
            "journal": journal,
        }),
        flat: vec![
            ("aborted".into(), aborted.len().to_string()),
            ("not-aborted".into(), not_aborted.len().to_string()),
        ],
        failure,
    })
}

/// Why a migration in `status` cannot be aborted (`None`: it can).
fn abort_refusal(status: &str, queued_ok: bool, microversion: &str) -> Option<String> {
    match status {
        "running" => None,
        "queued" | "preparing" if queued_ok => None,
        "queued" | "preparing" => Some(format!(
            "{status} migrations can be aborted only from compute API 2.65 (this cloud: {microversion}); it can be aborted once running"
        )),
        "running (post-copy)" => Some(
            "in post-copy: the guest already runs on the destination; it cannot be aborted and completes on its own".to_string(),
        ),
        "post-migrating" => {
            Some("already finishing on the destination; cannot be aborted".to_string())
        }
        other => Some(format!(
            "status {other}: not abortable yet; run abort again in a few seconds"
        )),
    }
}

fn with(mut v: Value, k: &str, s: String) -> Value {
    v[k] = Value::String(s);
    v
}

/// Marks an interrupted run in the journal as ended (or, with `only`, that
/// instance as aborted) so nothing resumes it by surprise.
async fn end_interrupted(
    ctl: &Ctl<'_>,
    servers: &[Server],
    only: Option<&str>,
    aborted: &[Value],
    not_aborted: &[Value],
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
    let was_aborted = |id: &str| aborted.iter().any(|a| a["instance_id"] == id);
    let mut changed = Vec::new();
    let mut still_moving = Vec::new();
    for r in rec.drain.instances.iter_mut() {
        if only.is_some_and(|o| o != r.id) {
            continue;
        }
        if not_aborted
            .iter()
            .any(|a| a["instance_id"] == r.id.as_str())
        {
            // Post-copy or finishing: it ends on its own; leave it tracked.
            still_moving.push(r.name.clone());
            continue;
        }
        let outcome = match r.phase {
            Phase::Pending | Phase::Waiting { .. } => {
                if only.is_some() {
                    Outcome::Aborted
                } else {
                    Outcome::Pending
                }
            }
            Phase::Starting { .. } | Phase::Started { .. } => {
                if was_aborted(&r.id) {
                    Outcome::Aborted
                } else {
                    // Not migrating any more: where is it?
                    let host = match servers.iter().find(|s| s.id == r.id) {
                        Some(s) => s.host.clone(),
                        None => ctl
                            .os
                            .compute()
                            .server(&r.id)
                            .await
                            .ok()
                            .and_then(|s| s.host),
                    };
                    match host {
                        Some(h) if h != ctl.host => {
                            r.destination = Some(h);
                            Outcome::Migrated
                        }
                        _ => {
                            r.error =
                                Some("run ended by abort; no migration was in progress".into());
                            Outcome::Aborted
                        }
                    }
                }
            }
            Phase::Done { .. } => continue,
        };
        if outcome == Outcome::Aborted {
            r.abort_requested = true;
        }
        r.phase = Phase::Done { outcome };
        r.ended_at = Some(now);
        let result = match outcome {
            Outcome::Migrated => "migrated",
            Outcome::Aborted => "aborted",
            _ => "pending",
        };
        changed.push(json!({"id": r.id, "name": r.name, "result": result}));
    }
    let note;
    if only.is_none() && !still_moving.is_empty() {
        rec.drain.stop_starting = true;
        note = format!(
            "the interrupted {} started {} stays in flight because {} could not be aborted; run abort again once {} ended (or evacuate to track them)",
            rec.kind.as_str(),
            iso(rec.started_at),
            still_moving.join(", "),
            if still_moving.len() == 1 {
                "it has"
            } else {
                "they have"
            }
        );
    } else if only.is_none() {
        rec.drain.stop_starting = true;
        rec.ended_at = Some(now);
        rec.aborted = true;
        note = format!(
            "the interrupted {} started {} is marked ended (aborted); evacuate will not resume it",
            rec.kind.as_str(),
            iso(rec.started_at)
        );
    } else if rec.drain.is_done() {
        rec.ended_at = Some(now);
        note = format!(
            "the interrupted {} started {} had nothing else left and is marked ended",
            rec.kind.as_str(),
            iso(rec.started_at)
        );
    } else {
        note = format!(
            "the interrupted {} started {} stays in flight ({}): run abort without vm to end it",
            rec.kind.as_str(),
            iso(rec.started_at),
            rec.progress()
        );
    }
    if let Err(e) = journal.store(&rec) {
        return Some(json!({"note": format!("journal not updated: {e}")}));
    }
    Some(json!({"note": note, "instances": changed, "ended": rec.ended_at.is_some()}))
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
    if m.status != "running" {
        let why = match m.status.as_str() {
            "running (post-copy)" => "it is already in post-copy and completes on its own".to_string(),
            "queued" | "preparing" | "accepted" => {
                "it has not started copying yet; wait until it is running (status action) or abort it".to_string()
            }
            other => format!("force-complete needs status running, not {other}"),
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

async fn enable(ctl: &Ctl<'_>, force: bool) -> openstack::Result<Done> {
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
    let before = json!({"status": service.status, "disabled_reason": service.disabled_reason});
    let in_flight = last_run(ctl.paths)
        .ok()
        .flatten()
        .filter(|r| r.record.in_flight());
    let warning = match (&in_flight, force) {
        (Some(r), true) => Some(format!(
            "enabled although the {} is in flight (force)",
            r.line()
        )),
        _ => None,
    };
    if !service.is_disabled() {
        return Ok(Done {
            summary: format!(
                "nova-compute on {} is already enabled; nothing to do",
                ctl.host
            ),
            report: json!({"action": "enable", "host": ctl.host, "service_before": before,
                           "service": before, "changed": false}),
            flat: vec![],
            failure: None,
        });
    }
    let after = compute.enable_service(&service).await?;
    let mut summary = format!(
        "enabled nova-compute on {} (was disabled: {})",
        ctl.host,
        service.disabled_reason.as_deref().unwrap_or("no reason")
    );
    if let Some(w) = &warning {
        summary.push_str(&format!("; {w}"));
    }
    Ok(Done {
        summary,
        report: json!({"action": "enable", "host": ctl.host, "service_before": before,
                       "service": {"status": after.status, "disabled_reason": after.disabled_reason},
                       "changed": true, "warning": warning}),
        flat: vec![],
        failure: None,
    })
}

async fn status(ctl: &Ctl<'_>) -> openstack::Result<Done> {
    let compute = ctl.os.compute();
    let service = compute.compute_service(&ctl.host).await?;
    let servers = compute.servers_on_host(&ctl.host).await?;
    let migrations = in_progress(ctl).await?;
    let mut migs = Vec::new();
    for m in &migrations {
        let mut v = json!({
            "id": m.id,
            "instance_id": m.instance_uuid,
            "name": name_of(&servers, &m.instance_uuid),
            "status": m.status,
            "dest_compute": m.dest_compute,
            "created_at": m.created_at,
        });
        if m.status.starts_with("running") {
            match compute.server_migration(&m.instance_uuid, m.id).await {
                Ok(sm) => {
                    v["percent"] = json!(sm.memory_percent().map(|p| p.round()));
                    v["memory_total_bytes"] = json!(sm.memory_total_bytes);
                    v["memory_remaining_bytes"] = json!(sm.memory_remaining_bytes);
                    v["disk_total_bytes"] = json!(sm.disk_total_bytes);
                    v["disk_remaining_bytes"] = json!(sm.disk_remaining_bytes);
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => tracing::debug!("progress of migration {}: {e}", m.id),
            }
        }
        migs.push(v);
    }
    let run = last_run(ctl.paths);
    let instances: Vec<Value> = servers
        .iter()
        .map(
            |s| json!({"id": s.id, "name": s.name, "status": s.status, "task_state": s.task_state}),
        )
        .collect();
    let svc = service.as_ref().map(
        |s| json!({"status": s.status, "state": s.state, "disabled_reason": s.disabled_reason}),
    );
    let svc_line = match &service {
        Some(s) if s.is_disabled() => format!(
            "disabled ({}), {}",
            s.disabled_reason.as_deref().unwrap_or("no reason"),
            s.state
        ),
        Some(s) => format!("{}, {}", s.status, s.state),
        None => "no nova-compute service".to_string(),
    };
    let mut summary = format!(
        "{}: {svc_line}; {} instance{}, {} migration{} in flight",
        ctl.host,
        servers.len(),
        if servers.len() == 1 { "" } else { "s" },
        migs.len(),
        if migs.len() == 1 { "" } else { "s" },
    );
    let evacuation = match &run {
        Ok(Some(r)) => {
            summary.push_str(&format!("; last {}", r.line()));
            r.summary_json()
        }
        Ok(None) => Value::Null,
        Err(e) => {
            summary.push_str(&format!("; journal: {e}"));
            json!({"error": e})
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
    Ok(Done {
        summary,
        report: json!({
            "action": "status",
            "host": ctl.host,
            "service": svc,
            "instances": instances,
            "migrations": migs,
            "evacuation": evacuation,
        }),
        flat,
        failure: None,
    })
}

// ------------------------------------------------------ the Juju action

/// Runs one control action.
pub async fn run(
    unit: &Unit<'_>,
    ready: &Ready,
    name: &str,
    params: &BTreeMap<String, Value>,
) -> Result<(), ToolError> {
    let op = match Op::from_action(name, params) {
        Ok(op) => op,
        Err(e) => return crate::actions::fail(unit, name, &e),
    };
    let done = execute(ready, unit.paths, &op).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_can_be_aborted() {
        assert_eq!(abort_refusal("running", false, "2.60"), None);
        assert_eq!(abort_refusal("queued", true, "2.96"), None);
        assert_eq!(abort_refusal("preparing", true, "2.96"), None);
        let q = abort_refusal("queued", false, "2.60").unwrap();
        assert!(q.contains("2.65") && q.contains("2.60"), "{q}");
        let pc = abort_refusal("running (post-copy)", true, "2.96").unwrap();
        assert!(
            pc.contains("post-copy") && pc.contains("completes on its own"),
            "{pc}"
        );
        assert!(abort_refusal("post-migrating", true, "2.96").is_some());
        assert!(
            abort_refusal("accepted", true, "2.96")
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
    fn an_oversized_vm_is_refused_without_being_quoted() {
        let big: BTreeMap<String, Value> = [("vm".to_string(), Value::from("v".repeat(1 << 20)))]
            .into_iter()
            .collect();
        for action in ["abort", "force-complete"] {
            let e = Op::from_action(action, &big).unwrap_err();
            assert_eq!(
                e,
                "vm is 1048576 bytes long, but an instance name or UUID is at most 255 characters"
            );
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
    fn credentials_file_is_private_and_follows_the_relation() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::from_env(|k| {
            (k == "NLM_STATE_DIR").then(|| dir.path().to_string_lossy().into_owned())
        });
        let mut data = BTreeMap::new();
        for (k, v) in [
            ("auth_host", "127.0.0.1"),
            ("auth_port", "5000"),
            ("auth_protocol", "http"),
            ("credentials_username", "nova_live_migration"),
            ("credentials_password", "pw-123"),
        ] {
            data.insert(k.to_string(), v.to_string());
        }
        let creds = RelationData {
            relation_id: "identity-credentials:5".into(),
            unit: "keystone/0".into(),
            data,
        };
        let config: BTreeMap<String, Value> = [("nova-host".to_string(), json!("node1.maas"))]
            .into_iter()
            .collect();
        sync_cli_credentials(&paths, Some((&config, &creds)));
        let file = dir.path().join(CLI_CREDENTIALS);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let ready = load_cli_credentials(&paths).unwrap();
        assert_eq!(ready.credentials.unit, "keystone/0");
        assert_eq!(ready.config.nova_host.as_deref(), Some("node1.maas"));
        // Debug of what the CLI holds never shows the password.
        assert!(!format!("{:?}", ready.credentials).contains("pw-123"));
        sync_cli_credentials(&paths, None);
        assert!(!file.exists());
        let e = load_cli_credentials(&paths).err().unwrap();
        assert!(e.contains("no credentials for the host CLI"), "{e}");
    }
}
