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
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{self, Config};
use crate::host;
use crate::journal::{Journal, JournalError};
use crate::openstack::{self, BlockMigration, LiveMigrate, MigrationFilter, OpenStack};
use crate::paths::Paths;
use crate::plan::{
    self, Command, Drain, MigrationStatus, MigrationView, Millis, MoveKind, Observation, Plan,
    Policy, PreflightInput, PreflightParams, Report, ServerView, ServiceReport, StartResult,
};
use crate::time::{iso, now_ms, parse_iso};

/// Which action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Evacuate,
    MigrateVm,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Evacuate => "evacuate",
            Kind::MigrateVm => "migrate-vm",
        }
    }
}

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

/// Longest instance name, UUID or host name a parameter may carry (Nova
/// caps server and host names at 255 characters).
pub const MAX_NAME_PARAM: usize = 255;
/// Longest `exclude` list (about 880 UUIDs): a message that lists the
/// entries not found must still fit in one argv string.
pub const MAX_EXCLUDE_PARAM: usize = 32 * 1024;

/// Refuses a name parameter longer than any name can be, without quoting it.
pub fn bounded_name(k: &str, v: Option<String>, what: &str) -> Result<Option<String>, String> {
    match v {
        Some(s) if s.len() > MAX_NAME_PARAM => Err(format!(
            "{k} is {} bytes long, but {what} is at most {MAX_NAME_PARAM} characters",
            s.len()
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

/// The journal body: one evacuation or migrate-vm run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub kind: Kind,
    pub unit: String,
    pub task: Option<String>,
    pub host: String,
    pub started_at: Millis,
    pub block_migration: String,
    pub plan: Plan,
    /// The service as pre-flight found it.
    pub service_before: ServiceReport,
    /// The reason we disabled the service with (evacuate).
    pub disabled_reason: Option<String>,
    pub drain: Drain,
    pub ended_at: Option<Millis>,
    /// Ended by an abort (action or CLI).
    #[serde(default)]
    pub aborted: bool,
}

impl RunRecord {
    /// Still running or interrupted (killed): not ended.
    pub fn in_flight(&self) -> bool {
        self.ended_at.is_none()
    }

    /// `3/12 done, 2 in flight`.
    pub fn progress(&self) -> String {
        let total = self.drain.instances.len();
        let done = self
            .drain
            .instances
            .iter()
            .filter(|r| r.outcome().is_some())
            .count();
        format!("{done}/{total} done, {} in flight", self.drain.in_flight())
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

fn abort_request_path(paths: &Paths) -> PathBuf {
    paths.state_dir.join(crate::control::ABORT_REQUEST)
}

/// Reads the CLI's abort request (`control::write_abort_request`): when it
/// was made (ms) and which vm (`None`: all).
fn read_abort_request(paths: &Paths) -> Option<(Millis, Option<String>)> {
    let text = std::fs::read_to_string(abort_request_path(paths)).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let at = v.get("requested_at").and_then(Value::as_u64).unwrap_or(0) * 1000;
    Some((at, v.get("vm").and_then(Value::as_str).map(str::to_string)))
}

/// A request made before `since` (whole seconds, hence the 1 s allowance)
/// belongs to a run that ended without seeing it.
fn is_stale(at: Millis, since: Millis) -> bool {
    at + 1000 < since
}

/// Removes an abort request written before `since`; keeps a fresh one (made
/// during this run's pre-flight) for the first tick.
fn discard_stale_abort_request(paths: &Paths, since: Millis) {
    if read_abort_request(paths).is_none_or(|(at, _)| is_stale(at, since)) {
        let _ = std::fs::remove_file(abort_request_path(paths));
    }
}

/// Takes a pending abort request made since `since`, if any (`Some(None)`:
/// abort everything; `Some(Some(vm))`: only that instance).
fn take_abort_request(paths: &Paths, since: Millis) -> Option<Option<String>> {
    let (at, vm) = read_abort_request(paths)?;
    let _ = std::fs::remove_file(abort_request_path(paths));
    if is_stale(at, since) {
        tracing::info!("ignoring a stale abort request from {}", iso(at));
        return None;
    }
    Some(vm)
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
        vm_state: s.vm_state.clone().unwrap_or_default(),
        task_state: s.task_state.clone(),
        fault: s
            .fault
            .as_ref()
            .map(|f| f.message.clone())
            .filter(|m| !m.is_empty()),
    }
}

fn migration_view(m: &openstack::Migration) -> MigrationView {
    MigrationView {
        id: m.id.max(0) as u64,
        status: MigrationStatus::from(m.status.clone()),
        created_at: m.created_at.as_deref().and_then(parse_iso),
        dest_compute: m.dest_compute.clone(),
        memory_total_bytes: None,
        memory_processed_bytes: None,
        memory_remaining_bytes: None,
        disk_total_bytes: None,
        disk_processed_bytes: None,
        disk_remaining_bytes: None,
    }
}

/// Gathers pre-flight's input: the service, local units, servers with
/// their Placement allocations, candidate hosts with capacity, groups.
pub async fn gather(os: &OpenStack, host: &str) -> Result<PreflightInput, DrainError> {
    let compute = os.compute();
    let service = compute.compute_service(host).await?;
    let mut local_units = BTreeMap::new();
    for unit in ["nova-compute", "libvirtd"] {
        let active = match host::unit_active(unit) {
            Ok((active, state)) => {
                if !active {
                    tracing::warn!("local unit {unit} is {state}");
                }
                active
            }
            Err(e) => {
                tracing::warn!("cannot check {unit}: {e}");
                false
            }
        };
        local_units.insert(unit.to_string(), active);
    }
    let servers = compute.servers_on_host(host).await?;
    let placement = os.placement().await?;
    // The source provider: named after the hypervisor of this host's servers
    // (or the host name itself when it has none).
    let node = servers
        .iter()
        .find_map(|s| s.hypervisor_hostname.clone())
        .unwrap_or_else(|| host.to_string());
    let allocations = match placement.resource_provider_by_name(&node).await? {
        Some(rp) => placement.allocations(&rp.uuid).await?,
        None => BTreeMap::new(),
    };
    let infos: Vec<plan::ServerInfo> = servers
        .iter()
        .map(|s| plan::ServerInfo {
            id: s.id.clone(),
            name: s.name.clone(),
            status: s.status.clone(),
            vm_state: s.vm_state.clone().unwrap_or_default(),
            task_state: s.task_state.clone(),
            image_backed: !s.is_volume_backed(),
            volumes_attached: s.volumes_attached.len(),
            flavor: plan::Flavor {
                vcpus: s.flavor.vcpus,
                ram_mb: s.flavor.ram,
                disk_gb: s.flavor.disk,
                ephemeral_gb: s.flavor.ephemeral,
                swap_mb: s.flavor.swap,
            },
            allocation: allocations.get(&s.id).cloned(),
        })
        .collect();
    let mut hosts = Vec::new();
    for svc in compute.services(None, Some("nova-compute")).await? {
        if svc.host == host {
            continue;
        }
        // The provider is named after the hypervisor (hypervisor_hostname),
        // taken here to equal the service host, as it does where nova-compute
        // uses the FQDN for both (Charmed OpenStack). A host whose provider
        // is not found has no capacity in the plan, which errs on the safe side.
        let (inventories, usages) = match placement.resource_provider_by_name(&svc.host).await? {
            Some(rp) => {
                let inv = placement.inventories(&rp.uuid).await?;
                let usages = placement.usages(&rp.uuid).await?;
                let inv = inv
                    .into_iter()
                    .map(|(k, i)| {
                        (
                            k,
                            plan::Inventory {
                                total: i.total,
                                reserved: i.reserved,
                                min_unit: i.min_unit,
                                max_unit: i.max_unit,
                                step_size: i.step_size,
                                allocation_ratio: i.allocation_ratio,
                            },
                        )
                    })
                    .collect();
                (inv, usages)
            }
            None => (BTreeMap::new(), BTreeMap::new()),
        };
        hosts.push(plan::HostCandidate {
            enabled: !svc.is_disabled(),
            up: svc.is_up(),
            host: svc.host,
            inventories,
            usages,
        });
    }
    let ids: BTreeSet<&str> = servers.iter().map(|s| s.id.as_str()).collect();
    let mut groups = Vec::new();
    let mut member_hosts = BTreeMap::new();
    for g in compute.server_groups().await? {
        if !g.members.iter().any(|m| ids.contains(m.as_str())) {
            continue;
        }
        for m in g.members.iter().filter(|m| !ids.contains(m.as_str())) {
            if member_hosts.contains_key(m) {
                continue;
            }
            match compute.server(m).await {
                Ok(s) => {
                    member_hosts.insert(m.clone(), s.host.unwrap_or_default());
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        groups.push(plan::ServerGroup {
            policy: g.policy().unwrap_or_default().to_string(),
            max_server_per_host: g.rules.max_server_per_host.map(u64::from),
            id: g.id,
            name: g.name,
            members: g.members,
        });
    }
    Ok(PreflightInput {
        host: host.to_string(),
        service: service.map(|s| plan::ServiceView {
            status: s.status.clone(),
            state: s.state.clone(),
            disabled_reason: s.disabled_reason.clone(),
        }),
        local_units,
        servers: infos,
        hosts,
        groups,
        member_hosts,
    })
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
        ..Policy::default()
    }
}

/// Runs `evacuate` or `migrate-vm`.
pub async fn run(env: &Env<'_>, params: &Params) -> Result<Outcome, DrainError> {
    let journal = Journal::in_dir(&env.paths.state_dir);
    let existing: Option<RunRecord> = journal.load()?;
    if let Some(rec) = existing.filter(|r| r.in_flight()) {
        if params.dry_run {
            (env.log)(&format!(
                "note: the {} started at {} is still in flight ({}); this dry-run plans afresh",
                rec.kind.as_str(),
                iso(rec.started_at),
                rec.progress()
            ));
        } else if params.kind == Kind::Evacuate {
            return resume(env, &journal, rec).await;
        } else {
            return Err(DrainError::Refused(format!(
                "the {} started at {} is still in flight ({}); run evacuate to resume it, or abort to end it",
                rec.kind.as_str(),
                iso(rec.started_at),
                rec.progress()
            )));
        }
    }
    let t0 = now_ms();
    (env.log)(&format!(
        "pre-flight: {} on {} (compute API {})",
        params.kind.as_str(),
        env.host,
        env.os.compute().microversion()
    ));
    let input = gather(env.os, &env.host).await?;
    let pf = PreflightParams {
        target_host: params.target_host.clone(),
        include_stopped: params.include_stopped,
        exclude: params.exclude.clone(),
        force: params.force,
        only: params.vm.clone(),
    };
    let plan = plan::preflight(&input, &pf);
    let block = params.block_migration.unwrap_or(env.config.block_migration);
    let service_before = input
        .service
        .as_ref()
        .map(ServiceReport::from)
        .unwrap_or_default();
    for w in &plan.warnings {
        (env.log)(&format!("warning: {w}"));
    }
    let elapsed = |t0: Millis| now_ms().saturating_sub(t0) as f64 / 1000.0;
    if params.dry_run {
        let report = Report::from_plan(
            params.kind.as_str(),
            &plan,
            service_before,
            block.as_str(),
            elapsed(t0),
        );
        let failure = report
            .error
            .clone()
            .map(|e| format!("a real run would stop: {e}"));
        return Ok(Outcome { report, failure });
    }
    if !plan.can_proceed() {
        let report = Report::blocked(
            params.kind.as_str(),
            &plan,
            service_before,
            block.as_str(),
            elapsed(t0),
        );
        let msg = plan
            .stopping_failures()
            .iter()
            .map(|f| f.message.clone())
            .collect::<Vec<_>>()
            .join("; ");
        return Ok(Outcome {
            report,
            failure: Some(format!("pre-flight failed, nothing was changed: {msg}")),
        });
    }
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
        block_migration: block.as_str().to_string(),
        plan,
        service_before,
        disabled_reason: None,
        drain,
        ended_at: None,
        aborted: false,
    };
    // A stale CLI request must not abort this new run; one made since this
    // run began (during pre-flight) is kept for the first tick.
    discard_stale_abort_request(env.paths, t0);
    if params.kind == Kind::Evacuate {
        let reason = format!(
            "{} evacuate{} at {}",
            env.unit,
            env.task
                .as_ref()
                .map(|t| format!(" (task {t})"))
                .unwrap_or_default(),
            iso(t0)
        );
        rec.disabled_reason = Some(reason.clone());
        journal.store(&rec)?;
        disable(env, &reason).await?;
    } else {
        journal.store(&rec)?;
    }
    drive(env, &journal, rec).await
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
                .map(|m| plan::MigrationRecord {
                    id: m.id.max(0) as u64,
                    status: MigrationStatus::from(m.status.clone()),
                    created_at: m.created_at.as_deref().and_then(parse_iso).unwrap_or(0),
                    dest_compute: m.dest_compute.clone(),
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

/// The loop: step, persist, execute, observe, sleep.
async fn drive(
    env: &Env<'_>,
    journal: &Journal,
    mut rec: RunRecord,
) -> Result<Outcome, DrainError> {
    let compute = env.os.compute().clone();
    let block =
        config::BlockMigration::parse(&rec.block_migration).unwrap_or(config::BlockMigration::Auto);
    let poll = Duration::from_millis(rec.drain.policy.poll_interval_ms.max(100));
    let mut obs: Vec<Observation> = Vec::new();
    let stats0 = env.os.session().stats().snapshot();
    let mut ticks = 0u64;
    loop {
        if let Some(vm) = take_abort_request(env.paths, rec.started_at) {
            (env.log)(&format!(
                "abort requested{}: aborting in-flight migrations, starting no more",
                vm.as_ref().map(|v| format!(" for {v}")).unwrap_or_default()
            ));
            rec.aborted = vm.is_none();
            obs.push(Observation::AbortRequested { vm });
        }
        let now = now_ms();
        let commands = rec.drain.step(now, &obs);
        obs.clear();
        persist_then_execute(env, journal, &rec, &compute, block, commands, &mut obs).await?;
        if rec.drain.is_done() && obs.is_empty() {
            break;
        }
        if !obs.is_empty() {
            // Record the outcome of the calls at once (started after done).
            let now = now_ms();
            // A migration lookup right after the POST mostly finds nothing
            // yet (the conductor creates the record after the 202); the next
            // poll's list identifies it, and the planner asks again if not.
            let more: Vec<Command> = rec
                .drain
                .step(now, &obs)
                .into_iter()
                .filter(|c| !matches!(c, Command::FindMigration { .. }))
                .collect();
            obs.clear();
            persist_then_execute(env, journal, &rec, &compute, block, more, &mut obs).await?;
            if rec.drain.is_done() && obs.is_empty() {
                break;
            }
        }
        tokio::time::sleep(poll).await;
        ticks += 1;
        observe(env, &compute, &rec.drain, &mut obs).await;
    }
    rec.ended_at = Some(now_ms());
    journal.store(&rec)?;
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

/// Writes the state (the intent of any start about to be sent), then runs
/// the commands. Progress lines go out first, before the write: a kill
/// then never falls between the intent and its POST because of the time the
/// `action-log` calls take (an intent whose POST may not have been sent
/// makes a resumed run wait `QUIET_MS` before it can start it again).
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

async fn execute(
    env: &Env<'_>,
    compute: &openstack::Compute,
    block: config::BlockMigration,
    c: &Command,
    obs: &mut Vec<Observation>,
) {
    match c {
        Command::Progress { line, .. } => {
            tracing::info!("{line}");
            (env.log)(line);
        }
        Command::StartLive {
            instance,
            attempt,
            target,
        }
        | Command::StartCold {
            instance,
            attempt,
            target,
        } => {
            // Each migration starts with a token that has at least half its
            // lifetime left (Nova's later calls on its behalf need it).
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
            } else {
                compute.cold_migrate(instance, target.as_deref()).await
            };
            let result = match result {
                Ok(_) => StartResult::Accepted,
                Err(e) if e.is_conflict() => {
                    StartResult::Conflict(e.message().unwrap_or("409").to_string())
                }
                // The POST may have reached Nova: treat it as accepted and let
                // the migration lookup and the server state tell.
                Err(e) if e.is_ambiguous() => {
                    tracing::warn!("start of {instance} ambiguous ({e}); checking Nova's state");
                    StartResult::Accepted
                }
                // Refused for now (429/503: e.g. a load balancer with no API
                // worker up): transient, so not the instance's end. Taken the
                // same way: if no migration shows up, the attempt fails after
                // the idle grace and is retried per `retries`.
                Err(e) if matches!(e.status().map(|s| s.as_u16()), Some(429 | 503)) => {
                    tracing::warn!(
                        "start of {instance} refused for now ({e}); checking Nova's state"
                    );
                    StartResult::Accepted
                }
                Err(e) => StartResult::Rejected(e.to_string()),
            };
            obs.push(Observation::Started {
                instance: instance.clone(),
                attempt: *attempt,
                result,
            });
        }
        Command::FindMigration { instance, since } => {
            let filter = MigrationFilter {
                instance_uuid: Some(instance.clone()),
                max_results: Some(5),
                ..Default::default()
            };
            match compute.migrations(&filter).await {
                Ok(list) => {
                    // (The machine ignores an earlier attempt's migration.)
                    if let Some(m) = find_attempt(&list, instance, *since, &[]) {
                        obs.push(Observation::MigrationFound {
                            instance: instance.clone(),
                            migration_id: m.id.max(0) as u64,
                        });
                        obs.push(Observation::Migration {
                            instance: instance.clone(),
                            view: migration_view(m),
                        });
                    }
                }
                Err(e) => tracing::warn!("looking up the migration of {instance}: {e}"),
            }
        }
        Command::ConfirmResize { instance } => {
            if let Err(e) = compute.confirm_resize(instance).await {
                obs.push(Observation::CommandFailed {
                    instance: instance.clone(),
                    command: "confirm-resize".into(),
                    message: e.to_string(),
                });
            }
        }
        Command::ForceComplete {
            instance,
            migration_id,
            reason,
        } => {
            // The action log already has the planner's line with the name.
            tracing::info!("force-complete {instance} migration {migration_id}: {reason}");
            if let Err(e) = compute.force_complete(instance, *migration_id as i64).await {
                obs.push(Observation::CommandFailed {
                    instance: instance.clone(),
                    command: "force-complete".into(),
                    message: e.to_string(),
                });
            }
        }
        Command::Abort {
            instance,
            migration_id,
            reason,
        } => {
            // The action log already has the planner's line with the name.
            tracing::info!("abort {instance} migration {migration_id}: {reason}");
            if let Err(e) = compute
                .abort_migration(instance, *migration_id as i64)
                .await
            {
                obs.push(Observation::CommandFailed {
                    instance: instance.clone(),
                    command: "abort".into(),
                    message: e.to_string(),
                });
            }
        }
    }
}

/// The migration of `instance` created by the attempt started at `since`
/// (by Nova's clock, within `CLOCK_SKEW_MS`), other than earlier attempts'.
fn find_attempt<'a>(
    list: &'a [openstack::Migration],
    instance: &str,
    since: Millis,
    past: &[u64],
) -> Option<&'a openstack::Migration> {
    let skew = plan::resume::CLOCK_SKEW_MS;
    list.iter()
        .filter(|m| m.instance_uuid == instance && !past.contains(&(m.id.max(0) as u64)))
        .filter(|m| {
            m.created_at
                .as_deref()
                .and_then(parse_iso)
                .is_some_and(|t| t + skew >= since)
        })
        .max_by_key(|m| m.id)
}

/// One tick of observation.
async fn observe(
    _env: &Env<'_>,
    compute: &openstack::Compute,
    drain: &Drain,
    obs: &mut Vec<Observation>,
) {
    let in_flight: Vec<&plan::InstanceRecord> =
        drain.instances.iter().filter(|r| r.in_flight()).collect();
    if in_flight.is_empty() {
        return;
    }
    // Only migrations that can belong to an in-flight instance: updated at or
    // after the earliest start (or record creation) among them, less the
    // clock skew allowance. The list stays the size of the concurrency, not
    // of the whole drain's history.
    let floor = in_flight
        .iter()
        .filter_map(|r| match r.phase {
            plan::Phase::Starting { since, .. } | plan::Phase::Started { since, .. } => Some(
                r.track
                    .migration
                    .as_ref()
                    .and_then(|m| m.created_at)
                    .map_or(since, |c| c.min(since)),
            ),
            _ => None,
        })
        .min()
        .unwrap_or(drain.created_at);
    let changes_since = iso(floor.saturating_sub(plan::resume::CLOCK_SKEW_MS));
    let list = match compute
        .migrations(&MigrationFilter {
            source_compute: Some(drain.source.clone()),
            changes_since: Some(changes_since),
            ..Default::default()
        })
        .await
    {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("listing migrations: {e}");
            return;
        }
    };
    for r in in_flight {
        let (since, mut mid) = match r.phase {
            plan::Phase::Started {
                since,
                migration_id,
            } => (since, migration_id),
            _ => continue,
        };
        if mid.is_none() {
            // Not identified yet: the list shows it as soon as the conductor
            // has created it (saves a lookup per instance).
            if let Some(m) = find_attempt(&list, &r.id, since, &r.past_migrations) {
                let id = m.id.max(0) as u64;
                obs.push(Observation::MigrationFound {
                    instance: r.id.clone(),
                    migration_id: id,
                });
                mid = Some(id);
            }
        }
        let mut need_server = true;
        if let Some(mid) = mid
            && let Some(m) = list.iter().find(|m| m.id.max(0) as u64 == mid)
        {
            let mut view = migration_view(m);
            if view.status == MigrationStatus::Running && r.kind == MoveKind::Live {
                match compute.server_migration(&r.id, mid as i64).await {
                    Ok(sm) => {
                        view.memory_total_bytes = sm.memory_total_bytes;
                        view.memory_processed_bytes = sm.memory_processed_bytes;
                        view.memory_remaining_bytes = sm.memory_remaining_bytes;
                        view.disk_total_bytes = sm.disk_total_bytes;
                        view.disk_processed_bytes = sm.disk_processed_bytes;
                        view.disk_remaining_bytes = sm.disk_remaining_bytes;
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => tracing::debug!("progress of {}: {e}", r.id),
                }
            }
            // The server is read only when the migration has ended: to
            // verify where the instance is (a cold migration's `finished`
            // is the server's VERIFY_RESIZE, to be confirmed).
            need_server = view.status.is_terminal();
            obs.push(Observation::Migration {
                instance: r.id.clone(),
                view,
            });
        }
        if need_server {
            match compute.server(&r.id).await {
                Ok(s) => obs.push(Observation::Server {
                    instance: r.id.clone(),
                    view: server_view(&s),
                }),
                Err(e) => tracing::debug!("server {}: {e}", r.id),
            }
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
        &rec.block_migration,
        duration,
        None,
    );
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
                "an exclude entry is 300 bytes long",
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
