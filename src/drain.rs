//! The drain orchestrator: `evacuate` and `migrate-vm`.
//!
//! A thin loop around the pure core: it gathers what pre-flight needs from
//! Nova, Placement and the host, runs `plan::preflight`, then drives
//! `plan::Drain` — each tick it persists the state (the journal), executes the
//! commands through the client, and turns what Nova answers into
//! observations. Per tick it makes one `os-migrations` list call, one
//! progress call per running migration, and a server read only for
//! instances whose migration is not yet known or has just ended.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::config::{self, Config};
use crate::host;
use crate::openstack::{self, BlockMigration, LiveMigrate, MigrationFilter, OpenStack};
use crate::paths::Paths;
use crate::plan::{
    self, Command, Drain, MigrationId, MigrationStatus, MigrationView, Millis, Observation, Policy,
    PreflightParams, Report, ServerView, ServiceReport, StartResult, VmState,
};
use crate::state::{AbortRequests, Journal, JournalError};
use crate::time::{iso, now_ms, parse_iso};

/// The journal's body and its kind live in the state directory's contract.
pub use crate::state::{Kind, RunParams, RunRecord};

/// The action's parameters, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub kind: Kind,
    pub vm: Option<String>,
    pub target_host: Option<String>,
    pub dry_run: bool,
    pub max_concurrent: Option<u32>,
    pub block_migration: Option<config::BlockMigration>,
    pub include_stopped: bool,
    pub exclude: Vec<String>,
    pub force: bool,
}

fn opt_string(p: &BTreeMap<String, Value>, k: &str) -> Result<Option<String>, String> {
    match p.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
        // `juju run … vm=12345` sends a YAML integer (actions.yaml allows
        // one for the name parameters): the name is its decimal text.
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        Some(other) => Err(format!("parameter {k} must be a string, got {other}")),
    }
}

/// Longest instance name, UUID or host name a parameter may carry, in
/// characters (Nova caps server and host names at 255 characters).
pub const MAX_NAME_PARAM: usize = 255;
/// The same limit in bytes (255 characters of at most 4 bytes each): checked
/// first, so a huge value is refused without counting its characters, and
/// every accepted name fits an argv string with room to spare.
pub const MAX_NAME_PARAM_BYTES: usize = 4 * MAX_NAME_PARAM;
/// Longest `exclude` list (about 880 UUIDs): a message that lists the
/// entries not found must still fit in one argv string.
pub const MAX_EXCLUDE_PARAM: usize = 32 * 1024;

/// Refuses a name parameter longer than any name can be, without quoting
/// it: more than [`MAX_NAME_PARAM_BYTES`] bytes, or more than
/// [`MAX_NAME_PARAM`] characters (the message says which).
pub fn bounded_name(k: &str, v: Option<String>, what: &str) -> Result<Option<String>, String> {
    match v {
        Some(s) if s.len() > MAX_NAME_PARAM_BYTES => Err(format!(
            "{k} is {} bytes long, but {what} is at most {MAX_NAME_PARAM} characters ({MAX_NAME_PARAM_BYTES} bytes)",
            s.len()
        )),
        Some(s) if s.chars().count() > MAX_NAME_PARAM => Err(format!(
            "{k} is {} characters long, but {what} is at most {MAX_NAME_PARAM} characters",
            s.chars().count()
        )),
        other => Ok(other),
    }
}

fn opt_bool(p: &BTreeMap<String, Value>, k: &str) -> Result<bool, String> {
    match p.get(k) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(format!("parameter {k} must be true or false, got {other}")),
    }
}

impl Params {
    /// Reads `action-get`'s answer (Juju has already checked it against
    /// actions.yaml; this is the second line of defence).
    pub fn from_action(kind: Kind, p: &BTreeMap<String, Value>) -> Result<Params, String> {
        let max_concurrent = match p.get("max-concurrent") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_i64() {
                Some(n) if (1..=config::MAX_CONCURRENT).contains(&n) => Some(n as u32),
                _ => {
                    return Err(format!(
                        "max-concurrent must be a whole number from 1 to {}, got {v}",
                        config::MAX_CONCURRENT
                    ));
                }
            },
        };
        // `juju run … block-migration=true` sends a YAML boolean, with
        // --string-args the string "true": the same choice.
        let block_migration = match p.get("block-migration") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(true)) => Some(config::BlockMigration::True),
            Some(Value::Bool(false)) => Some(config::BlockMigration::False),
            Some(Value::String(s)) => {
                Some(config::BlockMigration::parse(s.trim()).ok_or_else(|| {
                    format!(
                        "block-migration must be auto, true or false, got {}",
                        crate::text::quoted(s, 64)
                    )
                })?)
            }
            Some(other) => {
                return Err(format!(
                    "block-migration must be auto, true or false, got {}",
                    crate::text::quoted(&other.to_string(), 64)
                ));
            }
        };
        let vm = bounded_name("vm", opt_string(p, "vm")?, "an instance name or UUID")?;
        if kind == Kind::MigrateVm && vm.is_none() {
            return Err("migrate-vm needs vm=<name or UUID>".into());
        }
        let exclude = match p.get("exclude") {
            Some(Value::String(s)) if s.len() > MAX_EXCLUDE_PARAM => {
                return Err(format!(
                    "exclude is {} bytes long, more than the {MAX_EXCLUDE_PARAM} accepted; give comma-separated names or ids of the instances to leave",
                    s.len()
                ));
            }
            Some(Value::String(s)) if !s.trim().is_empty() => {
                let list = plan::preflight::parse_exclude(s);
                if list.is_empty() {
                    return Err(format!(
                        "exclude={} names no instance; give comma-separated names or ids, or leave it out",
                        crate::text::quoted(s, 64)
                    ));
                }
                for name in &list {
                    bounded_name(
                        "an exclude entry",
                        Some(name.clone()),
                        "an instance name or UUID",
                    )?;
                }
                list
            }
            _ => opt_string(p, "exclude")?
                .map(|s| plan::preflight::parse_exclude(&s))
                .unwrap_or_default(),
        };
        Ok(Params {
            kind,
            vm,
            target_host: bounded_name("target-host", opt_string(p, "target-host")?, "a host name")?,
            dry_run: opt_bool(p, "dry-run")?,
            max_concurrent,
            block_migration,
            include_stopped: opt_bool(p, "include-stopped")?,
            exclude,
            force: opt_bool(p, "force")?,
        })
    }
}

/// What the action reports.
pub struct Outcome {
    pub report: Report,
    /// `Some(message)`: the action could not do all that was asked (`action-fail`).
    pub failure: Option<String>,
}

/// Everything the orchestrator needs from its caller.
pub struct Env<'a> {
    pub os: &'a OpenStack,
    pub config: &'a Config,
    pub paths: &'a Paths,
    /// This node's nova service host.
    pub host: String,
    pub unit: String,
    pub task: Option<String>,
    /// One `action-log` line.
    pub log: &'a (dyn Fn(&str) + Sync),
    /// The unit's workload status (`maintenance`) while the run goes on.
    pub status: &'a (dyn Fn(&str) + Sync),
}

/// Errors that stop the action (everything else is an instance result).
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error(transparent)]
    Api(#[from] openstack::Error),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{0}")]
    Refused(String),
}

/// Removes abort requests made before `since` (the queue in `state`);
/// keeps a fresh one (made during this run's pre-flight) for the first tick.
fn discard_stale_abort_request(paths: &Paths, since: Millis) {
    AbortRequests::in_dir(&paths.state_dir).discard_before(since);
}

/// Every abort request made since `since`, oldest first (the queue in
/// `state`: none is lost when two arrive close together).
fn take_abort_requests(paths: &Paths, since: Millis) -> Vec<Option<String>> {
    AbortRequests::in_dir(&paths.state_dir)
        .take_since(since)
        .into_iter()
        .map(|r| r.vm)
        .collect()
}

fn api_block(b: config::BlockMigration) -> BlockMigration {
    match b {
        config::BlockMigration::Auto => BlockMigration::Auto,
        config::BlockMigration::True => BlockMigration::Yes,
        config::BlockMigration::False => BlockMigration::No,
    }
}

fn server_view(s: &openstack::Server) -> ServerView {
    ServerView {
        host: s.host.clone().unwrap_or_default(),
        status: s.status.clone(),
        vm_state: VmState::parse(s.vm_state.as_deref().unwrap_or_default()),
        task_state: s.task_state.clone(),
        fault: s
            .fault
            .as_ref()
            .map(|f| f.message.clone())
            .filter(|m| !m.is_empty()),
        policy: s.metadata.get(plan::policy::POLICY_KEY).cloned(),
    }
}

/// A record of the list, typed once here (`None`: an id no migration has).
fn migration_view(m: &openstack::Migration) -> Option<MigrationView> {
    Some(MigrationView::record(
        MigrationId::from_api(m.id)?,
        MigrationStatus::parse(&m.status),
        m.created_at.as_deref().and_then(parse_iso),
        m.dest_compute.clone(),
    ))
}

fn policy(env: &Env<'_>, params_max: Option<u32>) -> Policy {
    let c = env.config;
    let nova = host::read_nova_conf(&env.paths.nova_conf)
        .ok()
        .and_then(|n| n.max_concurrent_live_migrations);
    let can_abort_queued = env.os.compute().can_abort_queued();
    Policy {
        max_concurrent: Policy::resolve_max_concurrent(
            params_max.unwrap_or(c.max_concurrent_migrations),
            nova,
            can_abort_queued,
        ),
        retries: c.retries,
        stall_timeout_s: c.stall_timeout,
        migration_timeout_s: c.migration_timeout,
        timeout_action: match c.timeout_action {
            config::TimeoutAction::Abort => plan::TimeoutAction::Abort,
            config::TimeoutAction::ForceComplete => plan::TimeoutAction::ForceComplete,
        },
        force_complete_at: c.force_complete_at,
        poll_interval_ms: (c.poll_interval * 1000.0).round() as u64,
        can_abort_queued,
        reset_after_abort: c.reset_after_abort,
        ..Policy::default()
    }
}

/// Runs `evacuate` or `migrate-vm`.
pub async fn run(env: &Env<'_>, params: &Params) -> Result<Outcome, DrainError> {
    let journal = Journal::in_dir(&env.paths.state_dir);
    if let Some(outcome) = carry_on_existing(env, &journal, params).await? {
        return Ok(outcome);
    }
    let t0 = now_ms();
    (env.log)(&format!(
        "pre-flight: {} on {} (compute API {})",
        params.kind.as_str(),
        env.host,
        env.os.compute().microversion()
    ));
    let input = crate::gather::gather(env.os, &env.host).await?;
    let plan = plan::preflight(&input, &preflight_params(env, params));
    let block = params.block_migration.unwrap_or(env.config.block_migration);
    let service_before = input
        .service
        .as_ref()
        .map(ServiceReport::from)
        .unwrap_or_default();
    for w in &plan.warnings {
        (env.log)(&format!("warning: {w}"));
    }
    if let Some(outcome) = without_moving(params, &plan, &service_before, block, t0) {
        return Ok(outcome);
    }
    start_run(env, &journal, params, plan, block, service_before, t0).await
}

/// What a journal left by an earlier run means for this one: a run still in
/// flight is resumed (unless this is a dry-run), and a run that ended before
/// its result reached Juju is this action's result. `None`: plan afresh.
async fn carry_on_existing(
    env: &Env<'_>,
    journal: &Journal,
    params: &Params,
) -> Result<Option<Outcome>, DrainError> {
    let Some(rec): Option<RunRecord> = journal.load()? else {
        return Ok(None);
    };
    if params.dry_run {
        if rec.in_flight() {
            (env.log)(&format!(
                "note: the {} started at {} is still in flight ({}); this dry-run plans afresh",
                rec.kind.as_str(),
                iso(rec.started_at),
                rec.progress()
            ));
        }
    } else if rec.in_flight() {
        check_resumable(env, &rec, params)?;
        return resume(env, journal, rec).await.map(Some);
    } else if rec.reported_at.is_none() && rec.kind == params.kind && rec.host == env.host {
        // Killed after it ended and before its result reached Juju: that
        // result is this action's (the run already did the work).
        (env.log)(&format!(
            "the {} started at {} ended at {} before its result could be delivered (the action was killed); this is its result",
            rec.kind.as_str(),
            iso(rec.started_at),
            rec.ended_at.map(iso).unwrap_or_default()
        ));
        return finish(env, rec).await.map(Some);
    }
    Ok(None)
}

fn preflight_params(env: &Env<'_>, params: &Params) -> PreflightParams {
    PreflightParams {
        target_host: params.target_host.clone(),
        include_stopped: params.include_stopped,
        exclude: params.exclude.clone(),
        force: params.force,
        only: params.vm.clone(),
        budget: env.config.maintenance.clone(),
        default_policy: env.config.default_policy,
        order: env.config.drain_order,
    }
}

/// The outcome of a run that moves nothing: a dry-run's plan, or a
/// pre-flight that stops. `None`: the plan may proceed.
fn without_moving(
    params: &Params,
    plan: &plan::Plan,
    service_before: &ServiceReport,
    block: config::BlockMigration,
    t0: Millis,
) -> Option<Outcome> {
    let elapsed = now_ms().saturating_sub(t0) as f64 / 1000.0;
    if params.dry_run {
        let report = Report::from_plan(
            params.kind.as_str(),
            plan,
            service_before.clone(),
            block.as_str(),
            elapsed,
        );
        let failure = report
            .error
            .clone()
            .map(|e| format!("a real run would stop: {e}"));
        return Some(Outcome { report, failure });
    }
    if !plan.can_proceed() {
        let report = Report::blocked(
            params.kind.as_str(),
            plan,
            service_before.clone(),
            block.as_str(),
            elapsed,
        );
        let msg = plan
            .stopping_failures()
            .iter()
            .map(|f| f.message.clone())
            .collect::<Vec<_>>()
            .join("; ");
        return Some(Outcome {
            report,
            failure: Some(format!("pre-flight failed, nothing was changed: {msg}")),
        });
    }
    None
}

/// Journals the new run, disables the service (evacuate) and drives it.
async fn start_run(
    env: &Env<'_>,
    journal: &Journal,
    params: &Params,
    plan: plan::Plan,
    block: config::BlockMigration,
    service_before: ServiceReport,
    t0: Millis,
) -> Result<Outcome, DrainError> {
    let drain = Drain::new(
        &env.host,
        plan.to_move(),
        policy(env, params.max_concurrent),
        t0,
    );
    let mut rec = RunRecord {
        kind: params.kind,
        unit: env.unit.clone(),
        task: env.task.clone(),
        host: env.host.clone(),
        started_at: t0,
        block_migration: block,
        plan,
        service_before,
        disabled_reason: None,
        drain,
        ended_at: None,
        aborted: false,
        params: Some(run_params(params)),
        reported_at: None,
    };
    // A stale CLI request must not abort this new run; one made since this
    // run began (during pre-flight) is kept for the first tick.
    discard_stale_abort_request(env.paths, t0);
    if params.kind == Kind::Evacuate {
        let reason = plan::disable_reason(&env.unit, env.task.as_deref(), &iso(t0));
        rec.disabled_reason = Some(reason.clone());
        journal.store(&rec)?;
        disable(env, &reason).await?;
        if let Some(refused) = hold_budget(env, journal, &rec, &reason).await? {
            return Ok(refused);
        }
        tell_instance_ha(env).await;
    } else {
        journal.store(&rec)?;
    }
    drive(env, journal, rec).await
}

async fn disable(env: &Env<'_>, reason: &str) -> Result<(), DrainError> {
    let compute = env.os.compute();
    let Some(service) = compute.compute_service(&env.host).await? else {
        return Err(DrainError::Refused(format!(
            "the nova-compute service of {} vanished",
            env.host
        )));
    };
    if service.is_disabled() && service.disabled_reason.as_deref() == Some(reason) {
        // Disabled by this very run before it was killed.
        (env.log)(&format!(
            "nova-compute on {} stays disabled: {reason}",
            env.host
        ));
        return Ok(());
    }
    if service.is_disabled() {
        (env.log)(&format!(
            "service nova-compute on {} was already disabled ({}); leaving its reason",
            env.host,
            service.disabled_reason.as_deref().unwrap_or("no reason")
        ));
        return Ok(());
    }
    compute.disable_service(&service, reason).await?;
    (env.log)(&format!("disabled nova-compute on {}: {reason}", env.host));
    Ok(())
}

/// Masakari told to stand back while the node is drained (one line).
async fn tell_instance_ha(env: &Env<'_>) {
    let note = crate::fleet::instance_ha_maintenance(env.os, &env.host, true).await;
    (env.log)(note.line());
}

/// The maintenance budget counted again after the disable
/// (`fleet::hold_budget`): backed off, the service is enabled again, the
/// journal set aside (nothing started) and the run refused.
async fn hold_budget(
    env: &Env<'_>,
    journal: &Journal,
    rec: &RunRecord,
    reason: &str,
) -> Result<Option<Outcome>, DrainError> {
    let poll = Duration::from_secs_f64(env.config.poll_interval);
    let limits = &env.config.maintenance;
    let compute = env.os.compute();
    let Some(m) =
        crate::fleet::hold_budget(compute, &env.host, reason, limits, poll, env.log).await?
    else {
        return Ok(None);
    };
    journal.archive("budget-refused")?;
    let elapsed = now_ms().saturating_sub(rec.started_at) as f64 / 1000.0;
    let service = compute
        .compute_service(&env.host)
        .await?
        .map(|s| ServiceReport {
            status: s.status,
            disabled_reason: s.disabled_reason,
        })
        .unwrap_or_default();
    let mut report = Report::blocked(
        rec.kind.as_str(),
        &rec.plan,
        service,
        rec.block_migration.as_str(),
        elapsed,
    );
    report.error = Some(m.clone());
    Ok(Some(Outcome {
        report,
        failure: Some(format!("{m}; nothing was migrated")),
    }))
}

/// Records that the run's result reached Juju (after `action-set`): the
/// next run then starts afresh instead of delivering it again.
pub fn mark_reported(paths: &Paths) -> Result<(), JournalError> {
    let journal = Journal::in_dir(&paths.state_dir);
    if let Some(mut rec) = journal.load::<RunRecord>()?
        && rec.ended_at.is_some()
        && rec.reported_at.is_none()
    {
        rec.reported_at = Some(now_ms());
        journal.store(&rec)?;
    }
    Ok(())
}

/// The parameters as the journal keeps them.
fn run_params(p: &Params) -> RunParams {
    RunParams {
        vm: p.vm.clone(),
        target_host: p.target_host.clone(),
        max_concurrent: p.max_concurrent,
        block_migration: p.block_migration.map(|b| b.as_str().to_string()),
        include_stopped: p.include_stopped,
        exclude: p.exclude.clone(),
        force: p.force,
    }
}

/// An interrupted run is resumed only by the action that started it, on the
/// host it was started on, with its own parameters: anything else would
/// disable one host while another's migrations run, or change a run half
/// way. Refused with what to do, nothing changed.
fn check_resumable(env: &Env<'_>, rec: &RunRecord, params: &Params) -> Result<(), DrainError> {
    let what = format!(
        "the {} started at {} ({})",
        rec.kind.as_str(),
        iso(rec.started_at),
        rec.progress()
    );
    if rec.host != env.host {
        return Err(DrainError::Refused(format!(
            "{what} was on host {}, but this unit's nova host is now {} (the nova-host option or nova.conf changed); set nova-host back to {} to resume it, or run abort to end it; nothing was changed",
            rec.host, env.host, rec.host
        )));
    }
    let original = rec.params.clone().unwrap_or_default();
    if rec.kind != params.kind {
        let again = match rec.kind {
            Kind::Evacuate => "evacuate".to_string(),
            Kind::MigrateVm => format!(
                "migrate-vm vm={}",
                original.vm.clone().unwrap_or_else(|| "<its vm>".into())
            ),
        };
        return Err(DrainError::Refused(format!(
            "the {} started at {} is still in flight ({}); run {again} to resume it, or abort to end it",
            rec.kind.as_str(),
            iso(rec.started_at),
            rec.progress()
        )));
    }
    if rec.kind == Kind::MigrateVm
        && rec.params.is_some()
        && params.vm.is_some()
        && params.vm != original.vm
    {
        return Err(DrainError::Refused(format!(
            "{what} is for {} and still in flight; run migrate-vm vm={} to resume it, or abort to end it; nothing was changed",
            original.vm.clone().unwrap_or_default(),
            original.vm.clone().unwrap_or_default()
        )));
    }
    let conflicts = original.conflicts(&run_params(params));
    if rec.params.is_some() && !conflicts.is_empty() {
        return Err(DrainError::Refused(format!(
            "{what} is resumed with its own parameters, but this run gives other ones: {}; run {} without them to resume it, or abort it first to start afresh; nothing was changed",
            conflicts.join(", "),
            rec.kind.as_str()
        )));
    }
    Ok(())
}

/// Resumes an interrupted run: Nova is the truth.
async fn resume(
    env: &Env<'_>,
    journal: &Journal,
    mut rec: RunRecord,
) -> Result<Outcome, DrainError> {
    (env.log)(&format!(
        "resuming the {} started at {} ({})",
        rec.kind.as_str(),
        iso(rec.started_at),
        rec.progress()
    ));
    if let Some(reason) = rec.disabled_reason.clone() {
        // The kill may have come before the disable call.
        disable(env, &reason).await?;
        tell_instance_ha(env).await;
    }
    loop {
        let mut obs = Vec::new();
        for r in rec.drain.instances.iter().filter(|r| r.in_flight()) {
            let compute = env.os.compute();
            let server = match compute.server(&r.id).await {
                Ok(s) => Some(server_view(&s)),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e.into()),
            };
            let migrations = compute
                .migrations(&MigrationFilter {
                    instance_uuid: Some(r.id.clone()),
                    ..Default::default()
                })
                .await?
                .iter()
                .filter_map(migration_view)
                .map(|v| plan::MigrationRecord {
                    id: v.id,
                    status: v.status,
                    created_at: v.created_at.unwrap_or(0),
                    dest_compute: v.dest_compute,
                })
                .collect();
            obs.push(plan::ResumeObservation {
                instance: r.id.clone(),
                server,
                migrations,
            });
        }
        let now = now_ms();
        let decisions = plan::reconcile(&mut rec.drain, now, &obs);
        journal.store(&rec)?;
        let mut recheck_at = None;
        for d in &decisions {
            if !matches!(d.action, plan::ResumeAction::Unchanged) {
                let name = rec
                    .drain
                    .get(&d.instance)
                    .map(|r| r.name.clone())
                    .unwrap_or_else(|| d.instance.clone());
                (env.log)(&format!("resume: {name}: {}", d.reason));
            }
            if let plan::ResumeAction::Recheck { at } = d.action {
                recheck_at = Some(recheck_at.map_or(at, |x: Millis| x.max(at)));
            }
        }
        match recheck_at {
            Some(at) => tokio::time::sleep(Duration::from_millis(at.saturating_sub(now))).await,
            None => break,
        }
    }
    drive(env, journal, rec).await
}

/// The loop: hand the core what was seen, take its commands, persist, run
/// them; sleep only when the core has nothing to do before its next wake.
async fn drive(
    env: &Env<'_>,
    journal: &Journal,
    mut rec: RunRecord,
) -> Result<Outcome, DrainError> {
    let compute = env.os.compute().clone();
    let block = rec.block_migration;
    let tick = rec.drain.policy.interval_ms();
    let mut inputs: Vec<Observation> = Vec::new();
    let stats0 = env.os.session().stats().snapshot();
    let mut ticks = 0u64;
    let mut status = StatusPacer::default();
    loop {
        for vm in take_abort_requests(env.paths, rec.started_at) {
            (env.log)(&format!(
                "abort requested{}: aborting {}, starting no more{}",
                vm.as_ref().map(|v| format!(" for {v}")).unwrap_or_default(),
                if vm.is_some() {
                    "its migration"
                } else {
                    "in-flight migrations"
                },
                if vm.is_some() { " of it" } else { "" }
            ));
            inputs.push(Observation::AbortRequested { vm });
        }
        let now = now_ms();
        for o in inputs.drain(..) {
            match rec.drain.handle(now, &o) {
                plan::Handled::Applied => {}
                plan::Handled::Ignored(plan::Ignored::NoSuchVm(vm)) => (env.log)(&format!(
                    "abort request for {} matches no instance of this run; ignored",
                    crate::text::quoted(&vm, 64)
                )),
                plan::Handled::Ignored(why) => tracing::debug!("ignored {o:?}: {why:?}"),
            }
        }
        rec.aborted = rec.drain.abort_at.is_some();
        let commands = rec.drain.poll(now);
        status.update(env, &rec, now);
        if commands.is_empty() {
            if rec.drain.is_done() {
                break;
            }
            // Never spin (a wake due now that produced nothing waits a
            // little); never sleep past a tick (abort requests are read
            // once per loop).
            let at = rec.drain.poll_timeout(now).unwrap_or(now + tick);
            let wait = at.saturating_sub(now).clamp(20, tick);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            continue;
        }
        ticks += commands
            .iter()
            .filter(|c| matches!(c, Command::ListMigrations { .. }))
            .count() as u64;
        persist_then_execute(env, journal, &rec, &compute, block, commands, &mut inputs).await?;
    }
    rec.ended_at = Some(now_ms());
    journal.store(&rec)?;
    status.update(env, &rec, now_ms());
    let calls = env.os.session().stats().snapshot().since(&stats0);
    tracing::info!(
        "{}: {ticks} polls, {} API calls ({} authentications, {} refused with 401, {} retries): {}",
        rec.kind.as_str(),
        calls.total,
        calls.authentications,
        calls.unauthorized,
        calls.retries,
        calls
            .by_route
            .iter()
            .map(|(k, v)| format!("{k} ×{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    finish(env, rec).await
}

/// The workload status while the action runs (Juju runs one operation at
/// a time per unit, so update-status waits behind the action): set when
/// the summary changes, and at least once a minute.
#[derive(Default)]
struct StatusPacer {
    last: Option<(String, Millis)>,
}

impl StatusPacer {
    const EVERY_MS: Millis = 60_000;

    fn update(&mut self, env: &Env<'_>, rec: &RunRecord, now: Millis) {
        let line = if rec.ended_at.is_some() {
            format!(
                "{} {} ended: {}",
                rec.kind.as_str(),
                rec.host,
                rec.drain.summary()
            )
        } else {
            let verb = match rec.kind {
                Kind::Evacuate => "evacuating",
                Kind::MigrateVm => "migrating from",
            };
            format!("{verb} {}: {}", rec.host, rec.drain.summary())
        };
        let due = match &self.last {
            Some((l, at)) => *l != line || now.saturating_sub(*at) >= Self::EVERY_MS,
            None => true,
        };
        if due {
            (env.status)(&line);
            self.last = Some((line, now));
        }
    }
}

/// Writes the state (the intent of any start about to be sent), then runs
/// the commands, in order. Progress lines go out first, before the write:
/// a kill then never falls between the intent and its POST because of the
/// time the `action-log` calls take.
async fn persist_then_execute(
    env: &Env<'_>,
    journal: &Journal,
    rec: &RunRecord,
    compute: &openstack::Compute,
    block: config::BlockMigration,
    commands: Vec<Command>,
    obs: &mut Vec<Observation>,
) -> Result<(), DrainError> {
    let (lines, calls): (Vec<Command>, Vec<Command>) = commands
        .into_iter()
        .partition(|c| matches!(c, Command::Progress { .. }));
    for c in &lines {
        execute(env, compute, block, c, obs).await;
    }
    journal.store(rec)?;
    for c in &calls {
        execute(env, compute, block, c, obs).await;
    }
    Ok(())
}

/// A start's answer, as the core takes it (contract point 2).
fn start_result(instance: &str, e: openstack::Error) -> StartResult {
    if e.is_conflict() {
        return StartResult::Conflict(e.message().unwrap_or("409").to_string());
    }
    if e.never_reached() {
        // I5: provably not sent; the core retries it with back-off.
        tracing::warn!("start of {instance} never reached Nova ({e})");
        return StartResult::NotSent(e.to_string());
    }
    // The POST may have reached Nova (timeout, broken connection, 5xx), or
    // was refused for now (429/503: e.g. a load balancer with no API worker
    // up): Nova's state tells; if no migration shows up, the attempt fails
    // after the idle grace and is retried per `retries`.
    if e.is_ambiguous() || e.is_transient_refusal() {
        tracing::warn!("start of {instance} ambiguous ({e}); checking Nova's state");
        return StartResult::Accepted;
    }
    StartResult::Rejected(e.to_string())
}

/// Executes one command of the core, adding what it saw to `obs`: one arm
/// per `Command` variant, each a call of its own step.
async fn execute(
    env: &Env<'_>,
    compute: &openstack::Compute,
    block: config::BlockMigration,
    c: &Command,
    obs: &mut Vec<Observation>,
) {
    match c {
        Command::Progress { line, .. } => log_progress(env, line),
        Command::StartLive {
            instance, attempt, ..
        }
        | Command::StartCold {
            instance, attempt, ..
        } => obs.push(Observation::Started {
            instance: instance.clone(),
            attempt: *attempt,
            result: start(compute, block, c).await,
        }),
        Command::ListMigrations { source, since } => {
            list_migrations(compute, source, *since, obs).await
        }
        Command::ReadProgress {
            instance,
            migration_id,
        } => obs.extend(read_progress(compute, instance, *migration_id).await),
        Command::ReadServer { instance } => obs.extend(read_server(compute, instance).await),
        Command::ConfirmResize { instance } => obs.push(confirm_resize(compute, instance).await),
        Command::ForceComplete {
            instance,
            migration_id,
            reason,
        } => obs.push(force_complete(compute, instance, *migration_id, reason).await),
        Command::Abort {
            instance,
            migration_id,
            reason,
        } => obs.push(abort_migration(compute, instance, *migration_id, reason).await),
        Command::CheckGuest { instance } => obs.push(check_guest(env, compute, instance).await),
        Command::StopServer { instance, reason } => {
            obs.push(power(compute, instance, plan::Control::Stop, reason).await)
        }
        Command::StartServer { instance, reason } => {
            obs.push(power(compute, instance, plan::Control::Start, reason).await)
        }
        Command::ResetState { instance, reason } => {
            obs.push(reset_state(compute, instance, reason).await)
        }
    }
}

/// `Progress`: the planner's line, to the log and the action's log.
fn log_progress(env: &Env<'_>, line: &str) {
    tracing::info!("{line}");
    (env.log)(line);
}

/// `ReadServer`: the instance as Nova has it, or gone (nothing if Nova
/// could not be read: the core asks again).
async fn read_server(compute: &openstack::Compute, instance: &str) -> Option<Observation> {
    match compute.server(instance).await {
        Ok(s) => Some(Observation::Server {
            instance: instance.to_string(),
            view: server_view(&s),
        }),
        Err(e) if e.is_not_found() => Some(Observation::ServerGone {
            instance: instance.to_string(),
        }),
        Err(e) => {
            tracing::warn!("reading server {instance}: {e}");
            None
        }
    }
}

/// `ConfirmResize`: confirms a cold migration's resize.
async fn confirm_resize(compute: &openstack::Compute, instance: &str) -> Observation {
    let r = compute.confirm_resize(instance).await.map(|_| ());
    control(instance, plan::Control::ConfirmResize, r)
}

/// `ForceComplete`: forces the live migration to complete.
async fn force_complete(
    compute: &openstack::Compute,
    instance: &str,
    migration_id: MigrationId,
    reason: &str,
) -> Observation {
    // The action log already has the planner's line with the name.
    tracing::info!("force-complete {instance} migration {migration_id}: {reason}");
    let r = compute
        .force_complete(instance, migration_id.as_api())
        .await
        .map(|_| ());
    control(instance, plan::Control::ForceComplete, r)
}

/// `Abort`: aborts the live migration.
async fn abort_migration(
    compute: &openstack::Compute,
    instance: &str,
    migration_id: MigrationId,
    reason: &str,
) -> Observation {
    tracing::info!("abort {instance} migration {migration_id}: {reason}");
    let r = compute
        .abort_migration(instance, migration_id.as_api())
        .await
        .map(|_| ());
    control(instance, plan::Control::Abort, r)
}

/// `CheckGuest`: the guest's state on this host, as libvirt has it.
async fn check_guest(env: &Env<'_>, compute: &openstack::Compute, instance: &str) -> Observation {
    let state = match compute.server(instance).await {
        Ok(srv) => host::guest_state(
            &env.paths.virsh,
            srv.instance_name.as_deref().unwrap_or_default(),
        ),
        Err(e) => plan::GuestState::Unknown(format!("reading the server: {e}")),
    };
    Observation::Guest {
        instance: instance.to_string(),
        state,
    }
}

/// `ResetState`: resets the instance's state to active.
async fn reset_state(compute: &openstack::Compute, instance: &str, reason: &str) -> Observation {
    tracing::info!("reset-state {instance} to active: {reason}");
    let r = compute.reset_state_active(instance).await;
    control(instance, plan::Control::ResetState, r.map(|_| ()))
}

/// Policy cold: `os-stop` before the cold migration, `os-start` after.
async fn power(
    compute: &openstack::Compute,
    instance: &str,
    command: plan::Control,
    reason: &str,
) -> Observation {
    tracing::info!("{} {instance}: {reason}", command.as_str());
    let r = if command == plan::Control::Stop {
        compute.stop_server(instance).await
    } else {
        compute.start_server(instance).await
    };
    control(instance, command, r.map(|_| ()))
}

/// A control call's answer as the core takes it.
fn control(instance: &str, command: plan::Control, r: openstack::Result<()>) -> Observation {
    match r {
        Ok(()) => Observation::CommandDone {
            instance: instance.to_string(),
            command,
        },
        Err(e) => Observation::CommandFailed {
            instance: instance.to_string(),
            command,
            gone: e.is_not_found(),
            message: e.to_string(),
        },
    }
}

/// `StartLive` / `StartCold`: the POST, with a token that has at least half
/// its lifetime left (Nova's later calls on the migration's behalf need it).
async fn start(
    compute: &openstack::Compute,
    block: config::BlockMigration,
    c: &Command,
) -> StartResult {
    let (Command::StartLive {
        instance, target, ..
    }
    | Command::StartCold {
        instance, target, ..
    }) = c
    else {
        unreachable!("start() is only given starts");
    };
    if let Err(e) = compute.session().ensure_fresh(0.5).await {
        tracing::warn!("token renewal before starting {instance}: {e}");
    }
    let result = if matches!(c, Command::StartLive { .. }) {
        compute
            .live_migrate(
                instance,
                &LiveMigrate {
                    host: target.clone(),
                    block_migration: api_block(block),
                    force: false,
                },
            )
            .await
            .map(|_| ())
    } else {
        compute
            .cold_migrate(instance, target.as_deref())
            .await
            .map(|_| ())
    };
    match result {
        Ok(()) => StartResult::Accepted,
        Err(e) => start_result(instance, e),
    }
}

/// One list of the source's migrations changed since `since`: every record
/// as an observation (the core keeps what is its own), then `Listed`.
async fn list_migrations(
    compute: &openstack::Compute,
    source: &str,
    since: Millis,
    obs: &mut Vec<Observation>,
) {
    let filter = MigrationFilter {
        source_compute: Some(source.to_string()),
        changes_since: Some(iso(since)),
        ..Default::default()
    };
    let ok = match compute.migrations(&filter).await {
        Ok(list) => {
            obs.extend(list.iter().filter_map(|m| {
                Some(Observation::Migration {
                    instance: m.instance_uuid.clone(),
                    view: migration_view(m)?,
                })
            }));
            true
        }
        Err(e) => {
            tracing::warn!("listing migrations: {e}");
            false
        }
    };
    obs.push(Observation::Listed { ok });
}

/// A running live migration's progress (`GET /servers/{id}/migrations/{mid}`).
async fn read_progress(
    compute: &openstack::Compute,
    instance: &str,
    migration_id: MigrationId,
) -> Option<Observation> {
    match compute
        .server_migration(instance, migration_id.as_api())
        .await
    {
        Ok(sm) => Some(Observation::Migration {
            instance: instance.to_string(),
            view: MigrationView {
                id: migration_id,
                status: MigrationStatus::parse(&sm.status),
                created_at: sm.created_at.as_deref().and_then(parse_iso),
                dest_compute: sm.dest_compute.clone(),
                memory_total_bytes: sm.memory_total_bytes,
                memory_processed_bytes: sm.memory_processed_bytes,
                memory_remaining_bytes: sm.memory_remaining_bytes,
                disk_total_bytes: sm.disk_total_bytes,
                disk_processed_bytes: sm.disk_processed_bytes,
                disk_remaining_bytes: sm.disk_remaining_bytes,
            },
        }),
        // Ended since the list: the next list says how.
        Err(e) if e.is_not_found() => None,
        Err(e) => {
            tracing::debug!("progress of {instance}: {e}");
            None
        }
    }
}

/// Diagnostics for a failed instance: the fault of Nova's latest migration
/// action of it, and this node's nova-compute.log lines that name it
/// (errors and warnings first). Returns the lines for the report's
/// `decisions` and the one message worth adding to its `error`.
async fn diagnostics(env: &Env<'_>, id: &str) -> (Vec<String>, Option<String>) {
    let mut out = Vec::new();
    let mut headline = None;
    let compute = env.os.compute();
    if let Ok(actions) = compute.instance_actions(id).await
        && let Some(a) = actions
            .iter()
            .find(|a| matches!(a.action.as_str(), "live-migration" | "migrate"))
        && let Ok(full) = compute.instance_action(id, &a.request_id).await
        && let Some(f) = full.fault_summary()
    {
        out.push(format!("nova: {f}"));
        headline = Some(format!("nova: {f}"));
    }
    let lines = host::log_lines_naming(&env.paths.nova_compute_log, id, 200, 4 << 20);
    let picked = pick_log_lines(&lines, 6);
    if headline.is_none()
        && let Some(m) = picked.iter().rev().find_map(|l| l.error_message())
    {
        headline = Some(format!("nova-compute.log: {m}"));
    }
    out.extend(
        picked
            .iter()
            .map(|l| format!("nova-compute.log: {}", l.short)),
    );
    (out, headline)
}

/// One oslo.log line of nova-compute.log, without its request context.
#[derive(Debug, Clone, PartialEq)]
struct LogLine {
    level: String,
    /// `date time LEVEL logger [instance: …] message`
    short: String,
    /// The text after the `[instance: …]` tag.
    message: String,
}

impl LogLine {
    /// `2026-11-25 22:06:10.849 23151 ERROR nova.compute.manager [None req-… …] [instance: …] msg`;
    /// `None` for traceback continuation lines (no request context) and
    /// anything not in that format.
    fn parse(line: &str) -> Option<LogLine> {
        let mut it = line.splitn(6, ' ');
        let (date, time, _pid, level, logger) =
            (it.next()?, it.next()?, it.next()?, it.next()?, it.next()?);
        let rest = it.next()?;
        if !rest.starts_with('[') || rest.starts_with("[instance:") {
            return None;
        }
        let rest = rest.split_once("] ")?.1;
        let message = match rest.strip_prefix("[instance: ") {
            Some(r) => r.split_once("] ").map_or("", |x| x.1),
            None => rest,
        };
        Some(LogLine {
            level: level.to_string(),
            short: format!("{date} {time} {level} {logger} {rest}"),
            message: message.trim().to_string(),
        })
    }

    fn is_problem(&self) -> bool {
        matches!(self.level.as_str(), "ERROR" | "WARNING" | "CRITICAL")
    }

    fn error_message(&self) -> Option<&str> {
        (self.level != "WARNING" && self.is_problem() && !self.message.is_empty())
            .then_some(self.message.as_str())
    }
}

/// At most `max` lines: the last errors and warnings, then the last other
/// lines, in log order.
fn pick_log_lines(lines: &[String], max: usize) -> Vec<LogLine> {
    let parsed: Vec<LogLine> = lines.iter().filter_map(|l| LogLine::parse(l)).collect();
    let mut keep: BTreeSet<usize> = parsed
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, l)| l.is_problem())
        .take(max.saturating_sub(2).max(1))
        .map(|(i, _)| i)
        .collect();
    for i in (0..parsed.len()).rev() {
        if keep.len() >= max {
            break;
        }
        keep.insert(i);
    }
    keep.into_iter().map(|i| parsed[i].clone()).collect()
}

/// How long proof of empty waits for Nova to delete the allocations of
/// migrations it has just completed.
const NOVA_CLEANUP_WAIT: Duration = Duration::from_secs(30);

/// Proof of empty: observes the node and has the core judge it; looks again
/// (each poll interval, within [`NOVA_CLEANUP_WAIT`]) while Nova is still
/// deleting a completed migration's allocation.
async fn verify_empty(env: &Env<'_>, instances: &[plan::verify::Reported]) -> plan::Verification {
    let t0 = std::time::Instant::now();
    let pause = Duration::from_secs_f64(env.config.poll_interval.clamp(0.1, 5.0));
    loop {
        let seen = crate::gather::node_after_drain(env.os, &env.host).await;
        let v = plan::verify(&env.host, instances, &seen);
        if !v.awaits_nova() || t0.elapsed() >= NOVA_CLEANUP_WAIT {
            return v;
        }
        tokio::time::sleep(pause).await;
    }
}

async fn finish(env: &Env<'_>, rec: RunRecord) -> Result<Outcome, DrainError> {
    let service = match env.os.compute().compute_service(&env.host).await {
        Ok(Some(s)) => ServiceReport {
            status: s.status,
            disabled_reason: s.disabled_reason,
        },
        _ => rec.service_before.clone(),
    };
    let duration = rec
        .ended_at
        .unwrap_or_else(now_ms)
        .saturating_sub(rec.started_at) as f64
        / 1000.0;
    let mut report = Report::from_drain(
        rec.kind.as_str(),
        &rec.plan,
        &rec.drain,
        service,
        rec.block_migration.as_str(),
        duration,
        None,
    );
    if rec.kind == Kind::Evacuate {
        let v = verify_empty(env, &report.reported()).await;
        (env.log)(&v.line());
        report.verification = Some(v);
    }
    for i in report.instances.iter_mut() {
        if i.result == plan::ResultKind::Failed {
            let (lines, headline) = diagnostics(env, &i.id).await;
            i.decisions.extend(lines);
            if let (Some(e), Some(h)) = (i.error.as_mut(), headline) {
                e.push_str("; ");
                e.push_str(&h);
            }
        }
    }
    let c = &report.counts;
    let not_done = c.failed + c.aborted + c.pending;
    let failure = if rec.aborted {
        Some(format!("aborted: {}", report.summary()))
    } else if not_done > 0 {
        Some(format!(
            "{} of {} instances were not moved: {}",
            not_done,
            rec.drain.instances.len(),
            report.summary()
        ))
    } else {
        None
    };
    Ok(Outcome { report, failure })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "198847ca-3cda-447f-b110-bd041f626d75";

    #[test]
    fn oversized_parameters_are_refused_without_being_quoted() {
        let params = |k: &str, v: String| -> BTreeMap<String, Value> {
            [
                ("vm".to_string(), Value::from("x")),
                (k.to_string(), Value::from(v)),
            ]
            .into_iter()
            .collect()
        };
        let big = "v".repeat(1 << 20);
        for (kind, k, v, want) in [
            (
                Kind::MigrateVm,
                "vm",
                big.clone(),
                "vm is 1048576 bytes long, but an instance name or UUID is at most 255 characters",
            ),
            (
                Kind::Evacuate,
                "target-host",
                big.clone(),
                "target-host is 1048576 bytes long, but a host name is at most 255 characters",
            ),
            (
                Kind::Evacuate,
                "exclude",
                big.clone(),
                "exclude is 1048576 bytes long, more than the 32768 accepted",
            ),
            (
                Kind::Evacuate,
                "exclude",
                format!("a,{}", "w".repeat(300)),
                "an exclude entry is 300 characters long",
            ),
            (
                Kind::Evacuate,
                "exclude",
                ",".repeat(20_000),
                "exclude=\",,,,",
            ),
        ] {
            let e = Params::from_action(kind, &params(k, v)).unwrap_err();
            assert!(e.contains(want), "{k}: {e}");
            assert!(e.len() < 300, "{k}: {} bytes", e.len());
        }
        // 255 is fine.
        let p = Params::from_action(Kind::MigrateVm, &params("vm", "v".repeat(255))).unwrap();
        assert_eq!(p.vm.map(|v| v.len()), Some(255));
    }

    #[test]
    fn name_limits_count_characters() {
        let vm = |v: String| -> Result<Params, String> {
            let p: BTreeMap<String, Value> =
                [("vm".to_string(), Value::from(v))].into_iter().collect();
            Params::from_action(Kind::MigrateVm, &p)
        };
        // 90 CJK characters (270 bytes): a valid name.
        let cjk = "界".repeat(90);
        assert_eq!(vm(cjk.clone()).unwrap().vm, Some(cjk));
        // 255 characters of 4 bytes each: still valid.
        let wide = "😀".repeat(255);
        assert_eq!(vm(wide.clone()).unwrap().vm, Some(wide));
        // 256 characters: refused, counted in characters.
        assert_eq!(
            vm("界".repeat(256)).unwrap_err(),
            "vm is 256 characters long, but an instance name or UUID is at most 255 characters"
        );
        // Over the byte cap: refused, counted in bytes, both limits named.
        assert_eq!(
            vm("v".repeat(1021)).unwrap_err(),
            "vm is 1021 bytes long, but an instance name or UUID is at most 255 characters (1020 bytes)"
        );
        let e = Params::from_action(
            Kind::Evacuate,
            &[(
                "exclude".to_string(),
                Value::from(format!("a,{}", "界".repeat(100))),
            )]
            .into_iter()
            .collect(),
        )
        .unwrap();
        assert_eq!(e.exclude.len(), 2);
    }

    #[test]
    fn block_migration_takes_what_juju_run_sends() {
        use crate::config::BlockMigration;
        let bm = |v: Value| {
            let p: BTreeMap<String, Value> = [("block-migration".to_string(), v)].into();
            Params::from_action(Kind::Evacuate, &p).map(|p| p.block_migration)
        };
        // YAML booleans (juju run block-migration=true) and strings
        // (--string-args, or auto).
        assert_eq!(bm(Value::Bool(true)), Ok(Some(BlockMigration::True)));
        assert_eq!(bm(Value::Bool(false)), Ok(Some(BlockMigration::False)));
        assert_eq!(bm(Value::from("true")), Ok(Some(BlockMigration::True)));
        assert_eq!(bm(Value::from("false")), Ok(Some(BlockMigration::False)));
        assert_eq!(bm(Value::from("auto")), Ok(Some(BlockMigration::Auto)));
        assert_eq!(bm(Value::Null), Ok(None));
        let e = bm(Value::from(3)).unwrap_err();
        assert_eq!(e, "block-migration must be auto, true or false, got \"3\"");
        let e = bm(Value::from("x".repeat(1000))).unwrap_err();
        assert!(e.len() < 200, "{e}");
    }

    fn line(level: &str, ctx: bool, msg: &str) -> String {
        let ctx = if ctx {
            "[None req-a357fb8e dbb5f54b 034b2fbf - - 25ac1f49 25ac1f49] "
        } else {
            ""
        };
        format!(
            "2026-11-25 22:06:10.849 23151 {level} nova.compute.manager {ctx}[instance: {ID}] {msg}"
        )
    }

    #[test]
    fn log_lines_lose_their_context_and_tracebacks() {
        let l = LogLine::parse(&line("ERROR", true, "Live migration failed.: boom")).unwrap();
        assert_eq!(
            l.short,
            format!(
                "2026-11-25 22:06:10.849 ERROR nova.compute.manager [instance: {ID}] Live migration failed.: boom"
            )
        );
        assert_eq!(l.error_message(), Some("Live migration failed.: boom"));
        assert_eq!(
            LogLine::parse(&line("ERROR", false, "Traceback (most recent call last):")),
            None
        );
        assert_eq!(LogLine::parse("garbage"), None);
        let info = LogLine::parse(&line("INFO", true, "Took 0.2 seconds")).unwrap();
        assert_eq!(info.error_message(), None);
    }

    #[test]
    fn errors_are_picked_first_then_the_latest_lines() {
        let mut lines: Vec<String> = (0..10)
            .map(|i| line("INFO", true, &format!("info {i}")))
            .collect();
        lines.insert(2, line("ERROR", true, "early error"));
        lines.push(line("ERROR", false, "  File \"x.py\", line 1"));
        let picked = pick_log_lines(&lines, 4);
        let msgs: Vec<&str> = picked.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(msgs, vec!["early error", "info 7", "info 8", "info 9"]);
    }
}
