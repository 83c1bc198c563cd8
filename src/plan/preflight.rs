//! Pre-flight: classification of every instance on this host, service and
//! `target-host` checks, hard (anti-)affinity and a cumulative Placement
//! capacity plan. One pure function, [`preflight`], produces the [`Plan`];
//! `dry-run` returns exactly it.
//!
//! Capacity: the instances to move are placed **largest first** (by
//! MEMORY_MB, then VCPU+PCPU, then DISK_GB, then name for determinism) with
//! **first-fit** onto the candidate hosts in name order (the other enabled, up
//! hosts, or only `target-host`). Each placement is subtracted from the
//! host's free capacity, so the check is cumulative. Free capacity per
//! resource class is `(total - reserved) * allocation_ratio - used`; a single
//! instance's amount must also satisfy `min_unit <= amount <= max_unit` and
//! `amount % step_size == 0` (Placement's `_check_capacity_exceeded`). It is an
//! upper bound of what the scheduler would accept (NUMA, PCI, aggregates are
//! not modelled).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::InstanceId;
use super::migratability::{self, Check, ImageInfo, IncomingMigration, PortInfo};
use super::policy::{self, InstancePolicy, Order, PolicyChoice};
use super::types::Destination;

mod redundancy;

/// Resource class names used when deriving demand from a flavor.
pub const VCPU: &str = "VCPU";
pub const PCPU: &str = "PCPU";
pub const MEMORY_MB: &str = "MEMORY_MB";
pub const DISK_GB: &str = "DISK_GB";

/// The embedded flavor of a server (≥ 2.47).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flavor {
    pub vcpus: u64,
    pub ram_mb: u64,
    pub disk_gb: u64,
    pub ephemeral_gb: u64,
    pub swap_mb: u64,
}

/// One server on this host, as listed by `GET /servers/detail?host=`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub id: InstanceId,
    pub name: String,
    /// API status (`ACTIVE`, `SHUTOFF`, `ERROR`, …).
    pub status: String,
    /// `OS-EXT-STS:vm_state` (`active`, `paused`, `stopped`, …).
    pub vm_state: String,
    /// `OS-EXT-STS:task_state`; `None` when no task is in progress.
    pub task_state: Option<String>,
    /// `image` is not `""` (the instance boots from an image).
    pub image_backed: bool,
    /// Number of entries in `os-extended-volumes:volumes_attached`.
    pub volumes_attached: usize,
    pub flavor: Flavor,
    /// Its Placement allocation on the source provider (class → amount),
    /// when known; preferred over the flavor.
    pub allocation: Option<BTreeMap<String, u64>>,
    /// The embedded flavor's extra specs (admin view).
    #[serde(default)]
    pub extra_specs: BTreeMap<String, String>,
    /// Server metadata (the owner's policy and priority keys).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Its Neutron ports.
    #[serde(default)]
    pub ports: Vec<PortInfo>,
    /// The image it booted from with its `hw_*` properties, when read
    /// (live candidates booted from an image).
    #[serde(default)]
    pub image: Option<ImageInfo>,
    /// The ids of its attached Manila shares (live candidates, compute API
    /// ≥ 2.97).
    #[serde(default)]
    pub shares: Vec<String>,
    /// Owner (`tenant_id`, `user_id`): named for `notify`.
    #[serde(default)]
    pub project_id: String,
    #[serde(default)]
    pub user_id: String,
}

/// The nova-compute service of this host (`GET /os-services?binary=nova-compute&host=`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// `enabled` / `disabled`.
    pub status: String,
    /// `up` / `down`.
    pub state: String,
    pub disabled_reason: Option<String>,
}

/// One Placement inventory record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub total: u64,
    pub reserved: u64,
    pub min_unit: u64,
    pub max_unit: u64,
    pub step_size: u64,
    pub allocation_ratio: f64,
}

impl Inventory {
    /// `(total - reserved) * allocation_ratio`.
    pub fn capacity(&self) -> f64 {
        self.total.saturating_sub(self.reserved) as f64 * self.allocation_ratio
    }
    /// Why a single allocation of `amount` is not acceptable, if it is not.
    fn unit_violation(&self, amount: u64) -> Option<String> {
        if amount < self.min_unit {
            Some(format!("below min_unit {}", self.min_unit))
        } else if amount > self.max_unit {
            Some(format!("above max_unit {}", self.max_unit))
        } else if self.step_size > 1 && !amount.is_multiple_of(self.step_size) {
            Some(format!("not a multiple of step_size {}", self.step_size))
        } else {
            None
        }
    }
}

/// A possible destination: its compute service and Placement provider.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostCandidate {
    /// nova-compute service host (what `os-migrateLive` takes).
    pub host: String,
    /// service `status == enabled`.
    pub enabled: bool,
    /// service `state == up`.
    pub up: bool,
    pub inventories: BTreeMap<String, Inventory>,
    pub usages: BTreeMap<String, u64>,
}

/// A server group (≥ 2.64 shape). Soft policies never block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerGroup {
    pub id: String,
    pub name: String,
    /// `affinity`, `anti-affinity`, `soft-affinity`, `soft-anti-affinity`.
    pub policy: String,
    /// `rules.max_server_per_host` (anti-affinity; default 1).
    pub max_server_per_host: Option<u64>,
    pub members: Vec<InstanceId>,
}

/// Everything pre-flight looks at, gathered by the orchestrator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PreflightInput {
    /// This node's nova service host.
    pub host: String,
    /// This node's nova-compute service; `None` when it does not exist.
    pub service: Option<ServiceView>,
    /// Local units that must be active (e.g. `nova-compute`, `libvirtd`):
    /// name → active.
    pub local_units: BTreeMap<String, bool>,
    /// The servers on this host.
    pub servers: Vec<ServerInfo>,
    /// All compute hosts (this one included or not, it is ignored).
    pub hosts: Vec<HostCandidate>,
    /// Server groups that contain at least one of `servers`.
    pub groups: Vec<ServerGroup>,
    /// Host of group members that are not on this node (id → service host).
    pub member_hosts: BTreeMap<InstanceId, String>,
    /// Every compute service and aggregate (budget and redundancy checks).
    #[serde(default)]
    pub cloud: super::budget::Cloud,
    /// This node's recent migrations (`os-migrations?host=`), for the
    /// ones coming in.
    #[serde(default)]
    pub migrations: Vec<IncomingMigration>,
    /// Facts that could not be gathered (shown as warnings), e.g. no
    /// network service in the catalog: ports were not checked.
    #[serde(default)]
    pub unchecked: Vec<String>,
}

/// Action parameters that shape the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreflightParams {
    pub target_host: Option<String>,
    pub include_stopped: bool,
    /// Names or ids to leave (already split on commas).
    pub exclude: Vec<String>,
    pub force: bool,
    /// `migrate-vm`: only this instance (name or id).
    pub only: Option<String>,
    /// The maintenance budget (`evacuate` only; default: no limit).
    #[serde(default)]
    pub budget: super::budget::Limits,
    /// `default-policy`: the policy of an instance without its own.
    #[serde(default)]
    pub default_policy: InstancePolicy,
    /// `drain-order`, after the instances' priority.
    #[serde(default)]
    pub order: Order,
}

/// Where the instance's disks live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// Image-backed, no volumes.
    Local,
    /// Boot from volume.
    Volume,
    /// Image-backed with volumes attached.
    Mixed,
}

/// What the plan does with one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Action {
    Live,
    Cold,
    /// Policy `cold` on a running instance (its owner's opt-in): stop it,
    /// cold-migrate it, confirm, start it again.
    #[serde(rename = "cold-restart")]
    ColdRestart,
    Skip {
        reason: String,
    },
}

impl Action {
    /// How it moves, for the plan: `live`, `cold`, `stop, cold-migrate, start`.
    pub fn method(&self) -> Option<&'static str> {
        match self {
            Action::Live => Some("live"),
            Action::Cold => Some("cold"),
            Action::ColdRestart => Some("stop, cold-migrate, start"),
            Action::Skip { .. } => None,
        }
    }
}

/// One instance of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanEntry {
    pub id: InstanceId,
    pub name: String,
    pub action: Action,
    pub storage: Storage,
    pub vcpus: u64,
    pub ram_mb: u64,
    pub disk_gb: u64,
    /// Where it goes (`None`: it stays; the report shows `none`).
    pub destination: Option<Destination>,
    /// Fits in the capacity plan (false for skipped instances).
    pub fits: bool,
    /// The host first-fit placed it on (an estimate; the scheduler decides).
    pub estimated_host: Option<String>,
    /// The resource demand used for the capacity plan.
    pub demand: BTreeMap<String, u64>,
    /// Its policy and where it came from.
    #[serde(default, skip_serializing_if = "PolicyChoice::is_default")]
    pub policy: PolicyChoice,
    /// Its priority (1–10, higher first).
    #[serde(
        default = "default_priority",
        skip_serializing_if = "is_default_priority"
    )]
    pub priority: u8,
    /// The check that decided a skip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Check>,
    /// Owner (`project_id`, `user_id`), kept for `notify`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<(String, String)>,
}

fn default_priority() -> u8 {
    policy::DEFAULT_PRIORITY
}

fn is_default_priority(p: &u8) -> bool {
    *p == policy::DEFAULT_PRIORITY
}

impl PlanEntry {
    /// The `target-host` it is sent to, `None` for the scheduler.
    pub fn target_host(&self) -> Option<&str> {
        self.destination.as_ref().and_then(Destination::host)
    }
    pub fn moves(&self) -> bool {
        !matches!(self.action, Action::Skip { .. })
    }
}

/// Category of a failed pre-flight check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    Service,
    LocalUnit,
    TargetHost,
    Instance,
    Affinity,
    Capacity,
    Budget,
    /// Instances Nova cannot live-migrate ([`migratability`]).
    Migratability,
    /// Migrations coming to this node.
    Incoming,
}

/// A failed check with an operator-ready message (what is wrong, what to do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

/// The pre-flight result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub host: String,
    pub target_host: Option<String>,
    pub force: bool,
    pub entries: Vec<PlanEntry>,
    /// Failures `force` cannot override: nothing may change.
    pub blocking: Vec<Failure>,
    /// Failures `force` overrides (capacity shortfall, affinity on target-host).
    pub overridable: Vec<Failure>,
    /// Things the operator should know that stop nothing (e.g. a hard
    /// affinity group the scheduler cannot place elsewhere).
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl Plan {
    /// May the action go on (no blocking failure; overridable ones forced)?
    pub fn can_proceed(&self) -> bool {
        self.blocking.is_empty() && (self.force || self.overridable.is_empty())
    }
    /// The failures that stop the action, in order (blocking first).
    pub fn stopping_failures(&self) -> Vec<&Failure> {
        let mut v: Vec<&Failure> = self.blocking.iter().collect();
        if !self.force {
            v.extend(self.overridable.iter());
        }
        v
    }
    /// The entries that move (live or cold), in plan order.
    pub fn to_move(&self) -> impl Iterator<Item = &PlanEntry> {
        self.entries.iter().filter(|e| e.moves())
    }
}

/// Split the `exclude` parameter (comma-separated names or ids).
pub fn parse_exclude(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

fn storage_of(s: &ServerInfo) -> Storage {
    match (s.image_backed, s.volumes_attached) {
        (false, _) => Storage::Volume,
        (true, 0) => Storage::Local,
        (true, _) => Storage::Mixed,
    }
}

/// The instance's Placement demand: its allocation when known, else derived
/// from the flavor (`DISK_GB = disk + ephemeral + ceil(swap/1024)`, root disk
/// not counted when volume-backed). Zero amounts are dropped.
pub fn demand_of(s: &ServerInfo) -> BTreeMap<String, u64> {
    let mut d = match &s.allocation {
        Some(a) => a.clone(),
        None => {
            let f = &s.flavor;
            let root = if s.image_backed { f.disk_gb } else { 0 };
            BTreeMap::from([
                (VCPU.to_string(), f.vcpus),
                (MEMORY_MB.to_string(), f.ram_mb),
                (
                    DISK_GB.to_string(),
                    root + f.ephemeral_gb + f.swap_mb.div_ceil(1024),
                ),
            ])
        }
    };
    d.retain(|_, v| *v > 0);
    d
}

/// What to do with one instance and the check that decided a skip: the
/// operator's `exclude`, then the owner's policy, then the task and the
/// state, then (for a live migration) the devices Nova cannot move live.
fn classify(s: &ServerInfo, p: &PreflightParams, choice: &PolicyChoice) -> (Action, Option<Check>) {
    let skip = |check: Check, reason: String| (Action::Skip { reason }, Some(check));
    if p.exclude
        .iter()
        .any(|x| x.trim() == s.id || x.trim() == s.name)
    {
        return skip(Check::Excluded, "excluded".into());
    }
    if let Some(reason) = &choice.refused {
        return skip(Check::Policy, reason.clone());
    }
    match choice.policy {
        InstancePolicy::Live => {}
        InstancePolicy::Cold => return classify_cold(s, p),
        InstancePolicy::Skip => {
            return skip(
                Check::Policy,
                format!("policy {}: left alone", choice.describe()),
            );
        }
        InstancePolicy::Notify => {
            return skip(
                Check::Policy,
                format!(
                    "policy {}: left alone; its owner (project {}, user {}) is listed under owners_to_contact",
                    choice.describe(),
                    s.project_id,
                    s.user_id
                ),
            );
        }
    }
    if let Some(busy) = busy_skip(s) {
        return busy;
    }
    match s.vm_state.as_str() {
        "active" | "paused" => match migratability::live_blocker(&migratability::Facts {
            extra_specs: &s.extra_specs,
            ports: &s.ports,
            image: s.image.as_ref(),
            shares: &s.shares,
        }) {
            Some(b) => skip(b.check, b.reason),
            None => (Action::Live, None),
        },
        "stopped" if p.include_stopped => (Action::Cold, None),
        other => skip(Check::State, state_reason(s, other, p)),
    }
}

/// Someone's operation is in progress on it (`task_state` set): skipped,
/// whatever its policy.
fn busy_skip(s: &ServerInfo) -> Option<(Action, Option<Check>)> {
    let t = s.task_state.as_ref()?;
    let reason = format!(
        "a task is in progress (task_state {t}, status {}); wait for it to finish and run again",
        s.status
    );
    Some((Action::Skip { reason }, Some(Check::TaskState)))
}

/// Policy `cold` (the owner's opt-in): a running instance is stopped,
/// cold-migrated and started again; a stopped one is cold-migrated (no
/// `include-stopped` needed). Devices that only stop a live migration do
/// not stop a cold one. Nova stops only an `active` instance
/// (`nova/compute/api.py` `stop`: vm_state active or error).
fn classify_cold(s: &ServerInfo, p: &PreflightParams) -> (Action, Option<Check>) {
    let skip = |check: Check, reason: String| (Action::Skip { reason }, Some(check));
    if let Some(busy) = busy_skip(s) {
        return busy;
    }
    match s.vm_state.as_str() {
        "active" => (Action::ColdRestart, None),
        "stopped" => (Action::Cold, None),
        "paused" => skip(
            Check::State,
            format!(
                "status {} with policy cold: Nova stops only an active instance; unpause it (`openstack server unpause {}`) and run again, or set its policy to live",
                s.status, s.id
            ),
        ),
        other => skip(Check::State, state_reason(s, other, p)),
    }
}

/// Why an instance in `vm_state` (not active or paused) is not moved, and
/// what to do about it.
fn state_reason(s: &ServerInfo, vm_state: &str, p: &PreflightParams) -> String {
    let (status, id) = (&s.status, &s.id);
    match vm_state {
        "stopped" if p.only.is_some() => format!(
            "stopped (SHUTOFF): not live-migratable; cold-migrate it with `openstack server migrate {id}` (then confirm the resize), or with evacuate include-stopped=true"
        ),
        "stopped" => "stopped (SHUTOFF): not live-migratable; run with include-stopped=true to cold-migrate it".into(),
        "error" => format!(
            "status {status} (vm_state error) cannot be migrated; check the guest, then `openstack server set --state active {id}` and run again"
        ),
        "suspended" => format!(
            "status {status} cannot be migrated; resume it (`openstack server resume {id}`) and run again"
        ),
        "rescued" => format!(
            "status {status} (vm_state rescued) cannot be migrated; unrescue it (`openstack server unrescue {id}`) and run again"
        ),
        "resized" => format!(
            "status {status} (vm_state resized): a resize or cold migration awaits its confirm; confirm it (`openstack server resize confirm {id}`) or revert it, and run again"
        ),
        "shelved" | "shelved_offloaded" => format!(
            "status {status} (vm_state {vm_state}) cannot be migrated; unshelve it (`openstack server unshelve {id}`) to move it, or leave it"
        ),
        "building" => format!(
            "status {status} (vm_state building): still being built; wait for it to become ACTIVE and run again"
        ),
        other => format!("status {status} (vm_state {other}) cannot be migrated"),
    }
}

fn cpu(d: &BTreeMap<String, u64>) -> u64 {
    d.get(VCPU).copied().unwrap_or(0) + d.get(PCPU).copied().unwrap_or(0)
}

/// Free capacity per class of a candidate (mutable during the fill).
#[derive(Debug, Clone)]
struct Free {
    host: String,
    free: BTreeMap<String, f64>,
    inv: BTreeMap<String, Inventory>,
}

impl Free {
    fn new(h: &HostCandidate) -> Self {
        let free = h
            .inventories
            .iter()
            .map(|(rc, inv)| {
                let used = h.usages.get(rc).copied().unwrap_or(0) as f64;
                (rc.clone(), inv.capacity() - used)
            })
            .collect();
        Free {
            host: h.host.clone(),
            free,
            inv: h.inventories.clone(),
        }
    }
    /// Per-class problems placing `d` here (empty = fits).
    fn problems(&self, d: &BTreeMap<String, u64>) -> BTreeMap<String, Problem> {
        let mut out = BTreeMap::new();
        for (rc, &amt) in d {
            match self.inv.get(rc) {
                None => {
                    out.insert(rc.clone(), Problem::Missing);
                }
                Some(inv) => {
                    if let Some(v) = inv.unit_violation(amt) {
                        out.insert(rc.clone(), Problem::Unit(v));
                    } else {
                        let free = self.free.get(rc).copied().unwrap_or(0.0);
                        if amt as f64 > free {
                            out.insert(rc.clone(), Problem::Short(amt as f64 - free.max(0.0)));
                        }
                    }
                }
            }
        }
        out
    }
    fn take(&mut self, d: &BTreeMap<String, u64>) {
        for (rc, &amt) in d {
            *self.free.entry(rc.clone()).or_insert(0.0) -= amt as f64;
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Problem {
    Missing,
    Unit(String),
    Short(f64),
}

fn fmt_amount(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{}", x.round() as i64)
    } else {
        format!("{x:.1}")
    }
}

/// Pre-flight: the checks of SPEC §4, in its order, then the capacity
/// plan. Pure. (Credentials and Keystone are checked before: the caller's
/// client could not gather this input otherwise.)
pub fn preflight(input: &PreflightInput, params: &PreflightParams) -> Plan {
    let mut f = Findings::default();
    let target = params.target_host.as_ref();
    check_service(input, &mut f);
    check_local_units(input, &mut f);
    let servers = select_instances(input, params, &mut f);
    check_exclude(input, params, &mut f);
    let target_ok = check_target_host(input, target, &mut f);
    let mut entries = classify_all(&servers, params, target);
    warn_bad_priorities(&servers, &mut f);
    if target.is_none() {
        block_split_affinity(input, &mut entries);
    }
    if params.only.is_some() {
        check_chosen_is_movable(&entries, &mut f);
    } else {
        check_migratability(&entries, &mut f);
        if let Some(m) = migratability::incoming_failure(&input.host, &input.migrations) {
            f.overridable(FailureKind::Incoming, m);
        }
    }
    f.warnings.extend(input.unchecked.iter().cloned());
    plan_capacity(input, target, target_ok, &mut entries, &mut f);
    match target {
        None => warn_unplaceable_affinity(input, &entries, &mut f),
        Some(t) if target_ok => check_target_affinity(input, t, &entries, &mut f),
        Some(_) => {}
    }
    cloud_checks(input, params, &entries, &mut f);
    Plan {
        host: input.host.clone(),
        target_host: target.cloned(),
        force: params.force,
        entries,
        blocking: f.blocking,
        overridable: f.overridable,
        warnings: f.warnings,
    }
}

/// The checks that look beyond this node: the maintenance budget
/// (blocking, `plan::budget`) and the redundancy left (`plan::redundancy`).
fn cloud_checks(input: &PreflightInput, p: &PreflightParams, e: &[PlanEntry], f: &mut Findings) {
    if p.only.is_none()
        && let Err(m) = super::budget::admit(&input.cloud, &input.host, &p.budget)
    {
        f.block(FailureKind::Budget, m);
    }
    f.overridable.extend(redundancy::check(input, p, e));
}

/// What the checks found, in the order they ran.
#[derive(Default)]
struct Findings {
    blocking: Vec<Failure>,
    overridable: Vec<Failure>,
    warnings: Vec<String>,
}

impl Findings {
    fn block(&mut self, kind: FailureKind, message: String) {
        self.blocking.push(Failure { kind, message });
    }
    fn overridable(&mut self, kind: FailureKind, message: String) {
        self.overridable.push(Failure { kind, message });
    }
}

/// The nova-compute service for this host exists and is up.
fn check_service(input: &PreflightInput, f: &mut Findings) {
    let host = &input.host;
    match &input.service {
        None => f.block(
            FailureKind::Service,
            format!(
                "no nova-compute service is registered for host {host}; check the nova-host config option (it must equal [DEFAULT] host of nova.conf) and `openstack compute service list --service nova-compute`"
            ),
        ),
        Some(s) if s.state != "up" => f.block(
            FailureKind::Service,
            format!(
                "the nova-compute service of {host} is {} (live migration needs the source running); start nova-compute on this node and run again",
                s.state
            ),
        ),
        Some(_) => {}
    }
}

/// The local `nova-compute` and `libvirtd` services are active.
fn check_local_units(input: &PreflightInput, f: &mut Findings) {
    for (unit, active) in &input.local_units {
        if !active {
            f.block(
                FailureKind::LocalUnit,
                format!(
                    "local service {unit} is not active (live migration needs it); `systemctl start {unit}` and run again"
                ),
            );
        }
    }
}

/// The instances to plan: all of this host's, or for `migrate-vm` the one
/// named (by id first, then by name; none when missing or ambiguous).
fn select_instances<'a>(
    input: &'a PreflightInput,
    params: &PreflightParams,
    f: &mut Findings,
) -> Vec<&'a ServerInfo> {
    let servers: Vec<&ServerInfo> = input.servers.iter().collect();
    let Some(vm) = &params.only else {
        return servers;
    };
    let host = &input.host;
    let by_id: Vec<&ServerInfo> = servers.iter().copied().filter(|s| &s.id == vm).collect();
    let chosen: Vec<&ServerInfo> = if by_id.is_empty() {
        servers.iter().copied().filter(|s| &s.name == vm).collect()
    } else {
        by_id
    };
    match chosen.len() {
        0 => f.block(
            FailureKind::Instance,
            format!(
                "no instance named or with id {vm} on {host}; `openstack server list --all-projects --host {host}` lists them"
            ),
        ),
        1 => return chosen,
        _ => f.block(
            FailureKind::Instance,
            format!(
                "the name {vm} is ambiguous on {host}: {}; pass the id instead",
                chosen
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
    vec![]
}

/// `exclude` names only instances of this host: one that matches nothing is
/// most likely a typo, and going on would move the instance the operator
/// meant to leave.
fn check_exclude(input: &PreflightInput, params: &PreflightParams, f: &mut Findings) {
    let host = &input.host;
    let unknown: Vec<&str> = params
        .exclude
        .iter()
        .map(|x| x.trim())
        .filter(|x| !input.servers.iter().any(|s| s.id == *x || s.name == *x))
        .collect();
    if !unknown.is_empty() {
        f.block(
            FailureKind::Instance,
            format!(
                "exclude names {} that {} not on {host}; check the names or ids (`openstack server list --all-projects --host {host}`) and run again",
                unknown.join(", "),
                if unknown.len() == 1 { "is" } else { "are" }
            ),
        );
    }
}

/// `target-host` exists, is enabled and up, and is not this host. Returns
/// whether the target (if any) is usable.
fn check_target_host(input: &PreflightInput, target: Option<&String>, f: &mut Findings) -> bool {
    let Some(t) = target else {
        return true;
    };
    let message = if t == &input.host {
        Some(format!(
            "target-host {t} is this node; name another compute host or leave target-host empty"
        ))
    } else {
        match input.hosts.iter().find(|h| &h.host == t) {
            None => Some(format!(
                "target-host {t} is not a known compute host; check `openstack compute service list --service nova-compute`"
            )),
            Some(h) if !h.enabled => Some(format!(
                "target-host {t} is disabled; enable it (`openstack compute service set --enable {t} nova-compute`) or choose another"
            )),
            Some(h) if !h.up => Some(format!(
                "target-host {t} is down; choose another host or fix its nova-compute"
            )),
            Some(_) => None,
        }
    };
    match message {
        Some(m) => {
            f.block(FailureKind::TargetHost, m);
            false
        }
        None => true,
    }
}

/// Each instance classified (live / cold / skipped with the reason and
/// the check), with its demand, policy and priority, in start order
/// (priority, then `drain-order`); not yet placed.
fn classify_all(
    servers: &[&ServerInfo],
    params: &PreflightParams,
    target: Option<&String>,
) -> Vec<PlanEntry> {
    let mut entries: Vec<PlanEntry> = servers
        .iter()
        .map(|s| {
            let choice = policy::choose(&s.metadata, params.default_policy);
            let (action, check) = classify(s, params, &choice);
            let demand = demand_of(s);
            PlanEntry {
                id: s.id.clone(),
                name: s.name.clone(),
                storage: storage_of(s),
                vcpus: cpu(&demand),
                ram_mb: demand.get(MEMORY_MB).copied().unwrap_or(0),
                disk_gb: demand.get(DISK_GB).copied().unwrap_or(0),
                destination: destination(&action, target),
                fits: false,
                estimated_host: None,
                demand,
                owner: (choice.policy == InstancePolicy::Notify)
                    .then(|| (s.project_id.clone(), s.user_id.clone())),
                policy: choice,
                priority: policy::priority(&s.metadata).0,
                check,
                action,
            }
        })
        .collect();
    entries.sort_by_key(|e| {
        policy::sort_key(params.order, e.priority, (e.ram_mb, e.vcpus, e.disk_gb))
    });
    entries
}

/// Notes on metadata that was not followed (a priority out of range).
fn warn_bad_priorities(servers: &[&ServerInfo], f: &mut Findings) {
    for s in servers {
        if let (_, Some(note)) = policy::priority(&s.metadata) {
            f.warnings.push(format!("{} ({}): {note}", s.name, s.id));
        }
    }
}

/// Without `target-host`, a hard affinity group can only be placed beside
/// its own members: when a member on this node stays (and none runs
/// elsewhere), the others cannot move either. They are skipped, naming it.
fn block_split_affinity(input: &PreflightInput, entries: &mut [PlanEntry]) {
    for g in input.groups.iter().filter(|g| g.policy == "affinity") {
        let here: Vec<usize> = (0..entries.len())
            .filter(|&i| g.members.contains(&entries[i].id))
            .collect();
        let elsewhere = g
            .members
            .iter()
            .any(|m| input.member_hosts.get(m).is_some_and(|h| h != &input.host));
        let Some(stays) = here.iter().find(|&&i| !entries[i].moves()) else {
            continue;
        };
        if elsewhere {
            continue;
        }
        let why = format!(
            "not live-migratable: hard affinity group {} ({}) keeps it beside {} ({}), which stays here; Nova can place the group's members only together, so move or exclude them together (or set target-host)",
            g.name, g.id, entries[*stays].name, entries[*stays].id
        );
        for &i in &here {
            if entries[i].moves() {
                entries[i].action = Action::Skip {
                    reason: why.clone(),
                };
                entries[i].check = Some(Check::Affinity);
                entries[i].destination = None;
            }
        }
    }
}

/// Instances Nova cannot live-migrate: an overridable failure listing
/// them (force=true drains the others and leaves them, skipped).
fn check_migratability(entries: &[PlanEntry], f: &mut Findings) {
    let blocked: Vec<String> = entries
        .iter()
        .filter(|e| {
            matches!(
                e.check,
                Some(
                    Check::SriovPort
                        | Check::PciPassthrough
                        | Check::Vtpm
                        | Check::Vgpu
                        | Check::Share
                        | Check::Affinity
                )
            )
        })
        .filter_map(|e| match &e.action {
            Action::Skip { reason } => Some(format!("{} ({}): {reason}", e.name, e.id)),
            _ => None,
        })
        .collect();
    if !blocked.is_empty() {
        f.overridable(
            FailureKind::Migratability,
            format!(
                "{} instance(s) cannot be live-migrated: {}; exclude them, or run with force=true to drain the others and leave them",
                blocked.len(),
                blocked.join("; ")
            ),
        );
    }
}

/// The one place that sets [`PlanEntry::destination`]: `target-host`, else
/// the scheduler's choice; `None` for an instance that stays.
fn destination(action: &Action, target: Option<&String>) -> Option<Destination> {
    match action {
        Action::Skip { .. } => None,
        Action::Live | Action::Cold | Action::ColdRestart => {
            Some(Destination::from_target(target.map(String::as_str)))
        }
    }
}

/// `migrate-vm`: the one instance asked for must be movable.
fn check_chosen_is_movable(entries: &[PlanEntry], f: &mut Findings) {
    for e in entries {
        if let Action::Skip { reason } = &e.action {
            f.block(
                FailureKind::Instance,
                format!("{} ({}) cannot be moved: {reason}", e.name, e.id),
            );
        }
    }
}

/// Capacity for all moving instances on the other enabled, up hosts (or on
/// `target-host` only): largest first, first fit, cumulative. Marks each
/// entry's `fits` and `estimated_host`; a shortfall is an overridable
/// failure (not reported when the target itself is unusable).
fn plan_capacity(
    input: &PreflightInput,
    target: Option<&String>,
    target_ok: bool,
    entries: &mut [PlanEntry],
    f: &mut Findings,
) {
    let mut cands = candidates(input, target);
    let mut shortfalls = Vec::new();
    for i in largest_first(entries) {
        let d = &entries[i].demand;
        if let Some(c) = cands.iter_mut().find(|c| c.problems(d).is_empty()) {
            c.take(d);
            entries[i].fits = true;
            entries[i].estimated_host = Some(c.host.clone());
        } else {
            shortfalls.push(shortfall(&entries[i], &cands));
        }
    }
    if !shortfalls.is_empty() && target_ok {
        let whereto = match target {
            Some(t) => format!("on target-host {t}"),
            None => "on the other enabled, up compute hosts".into(),
        };
        f.overridable(
            FailureKind::Capacity,
            format!(
                "not enough capacity {whereto} for {} instance(s): {}; free capacity, exclude instances, or run with force=true to try anyway",
                shortfalls.len(),
                shortfalls.join("; ")
            ),
        );
    }
}

/// The candidate hosts' free capacity, in name order.
fn candidates(input: &PreflightInput, target: Option<&String>) -> Vec<Free> {
    let mut cands: Vec<Free> = input
        .hosts
        .iter()
        .filter(|h| h.host != input.host && h.enabled && h.up)
        .filter(|h| target.is_none_or(|t| &h.host == t))
        .map(Free::new)
        .collect();
    cands.sort_by(|a, b| a.host.cmp(&b.host));
    cands
}

/// Indices of the moving entries, largest first (MEMORY_MB, then CPU, then
/// DISK_GB; then name and id for determinism).
fn largest_first(entries: &[PlanEntry]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..entries.len()).filter(|&i| entries[i].moves()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&entries[a], &entries[b]);
        (y.ram_mb, y.vcpus, y.disk_gb)
            .cmp(&(x.ram_mb, x.vcpus, x.disk_gb))
            .then_with(|| x.name.cmp(&y.name))
            .then_with(|| x.id.cmp(&y.id))
    });
    order
}

/// Why `e` fits nowhere, by how much: per class, against the best
/// candidate for that class.
fn shortfall(e: &PlanEntry, cands: &[Free]) -> String {
    let d = &e.demand;
    let mut parts = Vec::new();
    for (rc, amt) in d {
        let per: Vec<Problem> = cands
            .iter()
            .filter_map(|c| c.problems(&BTreeMap::from([(rc.clone(), *amt)])).remove(rc))
            .collect();
        if per.len() < cands.len() {
            continue; // some host has room for this class alone
        }
        let short = per
            .iter()
            .filter_map(|p| match p {
                Problem::Short(x) => Some(*x),
                _ => None,
            })
            .fold(f64::INFINITY, f64::min);
        if short.is_finite() {
            parts.push(format!("{rc} short by {}", fmt_amount(short)));
        } else if let Some(Problem::Unit(u)) = per.iter().find(|p| matches!(p, Problem::Unit(_))) {
            parts.push(format!("{rc} {amt} {u}"));
        } else {
            parts.push(format!("{rc} {amt}: no candidate has {rc} inventory"));
        }
    }
    if cands.is_empty() {
        parts = vec!["no enabled, up candidate host".into()];
    } else if parts.is_empty() {
        parts.push("no single host has room for all of it at once".into());
    }
    let want = d
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(" ");
    format!("{} ({}) needs {want}: {}", e.name, e.id, parts.join(", "))
}

/// Without `target-host` the scheduler enforces the groups; warn about the
/// one it cannot satisfy: a hard affinity group entirely on this node.
fn warn_unplaceable_affinity(input: &PreflightInput, entries: &[PlanEntry], f: &mut Findings) {
    let host = &input.host;
    for g in input.groups.iter().filter(|g| g.policy == "affinity") {
        let moving: Vec<&str> = entries
            .iter()
            .filter(|e| e.moves() && g.members.contains(&e.id))
            .map(|e| e.name.as_str())
            .collect();
        let elsewhere = g
            .members
            .iter()
            .any(|m| input.member_hosts.get(m).is_some_and(|h| h != host));
        if !moving.is_empty() && !elsewhere {
            f.warnings.push(format!(
                "affinity group {} ({}) has all its members on {host}: the scheduler can only place {} on a host already holding members, so Nova will likely answer NoValidHost; set target-host to move them together",
                g.name,
                g.id,
                moving.join(", ")
            ));
        }
    }
}

/// `target-host` breaks no hard (anti-)affinity group of the moving
/// instances (overridable).
fn check_target_affinity(input: &PreflightInput, t: &str, entries: &[PlanEntry], f: &mut Findings) {
    let moving: BTreeSet<&str> = entries
        .iter()
        .filter(|e| e.moves())
        .map(|e| e.id.as_str())
        .collect();
    for g in &input.groups {
        let mine: Vec<&PlanEntry> = entries
            .iter()
            .filter(|e| e.moves() && g.members.contains(&e.id))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let failure = match g.policy.as_str() {
            "anti-affinity" => anti_affinity_on_target(input, g, t, &mine),
            "affinity" => affinity_on_target(input, g, t, &moving),
            _ => None,
        };
        if let Some(message) = failure {
            f.overridable(FailureKind::Affinity, message);
        }
    }
}

/// An anti-affinity group would hold more than `max_server_per_host` on `t`.
fn anti_affinity_on_target(
    input: &PreflightInput,
    g: &ServerGroup,
    t: &str,
    mine: &[&PlanEntry],
) -> Option<String> {
    let max = g.max_server_per_host.unwrap_or(1).max(1);
    let already = g
        .members
        .iter()
        .filter(|m| input.member_hosts.get(*m).is_some_and(|h| h == t))
        .count() as u64;
    let total = already + mine.len() as u64;
    (total > max).then(|| {
        format!(
            "anti-affinity group {} ({}) allows {max} member(s) per host; target-host {t} would hold {total} ({already} already there, {} moving: {}); choose another target-host, exclude members, or run with force=true",
            g.name,
            g.id,
            mine.len(),
            mine.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ")
        )
    })
}

/// An affinity group would have members left away from `t`.
fn affinity_on_target(
    input: &PreflightInput,
    g: &ServerGroup,
    t: &str,
    moving: &BTreeSet<&str>,
) -> Option<String> {
    let left: Vec<&str> = g
        .members
        .iter()
        .filter(|m| {
            !moving.contains(m.as_str()) && input.member_hosts.get(*m).is_none_or(|h| h != t)
        })
        .map(|m| m.as_str())
        .collect();
    (!left.is_empty()).then(|| {
        format!(
            "affinity group {} ({}) requires its members on one host; {} would stay away from target-host {t}; move the group together, or run with force=true",
            g.name,
            g.id,
            left.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(total: u64, reserved: u64, ratio: f64, max_unit: u64) -> Inventory {
        Inventory {
            total,
            reserved,
            min_unit: 1,
            max_unit,
            step_size: 1,
            allocation_ratio: ratio,
        }
    }

    fn host(name: &str, vcpu: u64, mem: u64, disk: u64) -> HostCandidate {
        HostCandidate {
            host: name.into(),
            enabled: true,
            up: true,
            inventories: BTreeMap::from([
                (VCPU.into(), inv(vcpu, 0, 1.0, vcpu)),
                (MEMORY_MB.into(), inv(mem, 0, 1.0, mem)),
                (DISK_GB.into(), inv(disk, 0, 1.0, disk)),
            ]),
            usages: BTreeMap::new(),
        }
    }

    fn server(id: &str, vm_state: &str, vcpus: u64, ram: u64, disk: u64) -> ServerInfo {
        ServerInfo {
            id: id.into(),
            name: format!("vm-{id}"),
            status: match vm_state {
                "active" => "ACTIVE",
                "paused" => "PAUSED",
                "stopped" => "SHUTOFF",
                "error" => "ERROR",
                "suspended" => "SUSPENDED",
                _ => "SHELVED_OFFLOADED",
            }
            .into(),
            vm_state: vm_state.into(),
            task_state: None,
            image_backed: true,
            volumes_attached: 0,
            flavor: Flavor {
                vcpus,
                ram_mb: ram,
                disk_gb: disk,
                ephemeral_gb: 0,
                swap_mb: 0,
            },
            allocation: None,
            ..ServerInfo::default()
        }
    }

    fn input(servers: Vec<ServerInfo>, hosts: Vec<HostCandidate>) -> PreflightInput {
        PreflightInput {
            host: "node1".into(),
            service: Some(ServiceView {
                status: "enabled".into(),
                state: "up".into(),
                disabled_reason: None,
            }),
            local_units: BTreeMap::new(),
            servers,
            hosts,
            groups: vec![],
            member_hosts: BTreeMap::new(),
            ..PreflightInput::default()
        }
    }

    #[test]
    fn classification_and_storage() {
        let mut busy = server("b", "active", 1, 512, 1);
        busy.task_state = Some("rebooting".into());
        let mut vol = server("v", "paused", 1, 512, 10);
        vol.image_backed = false;
        vol.volumes_attached = 1;
        let mut mixed = server("m", "active", 1, 512, 1);
        mixed.volumes_attached = 2;
        let servers = vec![
            server("a", "active", 1, 512, 1),
            busy,
            vol,
            mixed,
            server("s", "stopped", 1, 512, 1),
            server("e", "error", 1, 512, 1),
            server("u", "suspended", 1, 512, 1),
            server("h", "shelved_offloaded", 1, 512, 1),
            server("x", "active", 1, 512, 1),
        ];
        let p = preflight(
            &input(servers, vec![host("node2", 64, 65536, 1000)]),
            &PreflightParams {
                exclude: vec!["vm-x".into()],
                ..Default::default()
            },
        );
        let by = |id: &str| p.entries.iter().find(|e| e.id == id).unwrap();
        assert_eq!(by("a").action, Action::Live);
        assert_eq!(by("a").storage, Storage::Local);
        assert!(matches!(&by("b").action, Action::Skip{reason} if reason.contains("rebooting")));
        assert_eq!(by("v").action, Action::Live);
        assert_eq!(by("v").storage, Storage::Volume);
        assert_eq!(by("v").disk_gb, 0, "volume-backed root disk not counted");
        assert_eq!(by("m").storage, Storage::Mixed);
        assert!(
            matches!(&by("s").action, Action::Skip{reason} if reason.contains("include-stopped"))
        );
        assert!(matches!(&by("e").action, Action::Skip{reason} if reason.contains("ERROR")));
        assert!(matches!(&by("u").action, Action::Skip{reason} if reason.contains("resume")));
        assert!(matches!(&by("h").action, Action::Skip { .. }));
        assert_eq!(
            by("x").action,
            Action::Skip {
                reason: "excluded".into()
            }
        );
        assert_eq!(by("x").destination, None);
        assert_eq!(by("a").destination, Some(Destination::Scheduler));
        assert!(p.can_proceed(), "{:?}", p);

        let p2 = preflight(
            &input(
                vec![server("s", "stopped", 1, 512, 1)],
                vec![host("node2", 4, 4096, 10)],
            ),
            &PreflightParams {
                include_stopped: true,
                ..Default::default()
            },
        );
        assert_eq!(p2.entries[0].action, Action::Cold);
        assert!(p2.entries[0].fits);
    }

    #[test]
    fn demand_from_flavor_and_allocation() {
        let mut s = server("a", "active", 2, 2048, 20);
        s.flavor.ephemeral_gb = 5;
        s.flavor.swap_mb = 1500;
        let d = demand_of(&s);
        assert_eq!(d[DISK_GB], 20 + 5 + 2);
        assert_eq!(d[VCPU], 2);
        s.allocation = Some(BTreeMap::from([
            (PCPU.to_string(), 4),
            (MEMORY_MB.to_string(), 4096),
            (DISK_GB.to_string(), 0),
        ]));
        let d = demand_of(&s);
        assert_eq!(d.len(), 2, "zero amounts dropped, allocation preferred");
        assert_eq!(d[PCPU], 4);
    }

    #[test]
    fn capacity_is_cumulative_with_ratio_reserved_used() {
        // node2: (8-0)*2.0 = 16 VCPU, mem (8192-512)*1.0 - 4096 used = 3584 free.
        let mut h = host("node2", 8, 8192, 100);
        h.inventories.get_mut(VCPU).unwrap().allocation_ratio = 2.0;
        h.inventories.get_mut(VCPU).unwrap().max_unit = 8;
        h.inventories.get_mut(MEMORY_MB).unwrap().reserved = 512;
        h.usages.insert(MEMORY_MB.into(), 4096);
        let servers = vec![
            server("a", "active", 2, 1024, 1),
            server("b", "active", 2, 1024, 1),
            server("c", "active", 2, 2048, 1),
        ];
        let inp = input(servers, vec![h]);
        let p = preflight(&inp, &PreflightParams::default());
        // Largest first: c (2048) fits -> 1536 left; a (1024) -> 512; b short by 512.
        let by = |id: &str| p.entries.iter().find(|e| e.id == id).unwrap();
        assert!(by("c").fits && by("a").fits);
        assert!(!by("b").fits);
        assert_eq!(by("c").estimated_host.as_deref(), Some("node2"));
        assert_eq!(p.overridable.len(), 1);
        let m = &p.overridable[0].message;
        assert!(
            m.contains("vm-b") && m.contains("MEMORY_MB short by 512") && !m.contains("vm-c"),
            "{m}"
        );
        assert!(m.contains("force=true"));
        assert!(!p.can_proceed());
        let forced = preflight(
            &inp,
            &PreflightParams {
                force: true,
                ..Default::default()
            },
        );
        assert_eq!(forced.overridable.len(), 1, "still reported");
        assert!(
            forced.can_proceed(),
            "capacity shortfall overridable by force"
        );
    }

    #[test]
    fn max_unit_and_step_size_per_instance() {
        let mut h = host("node2", 64, 65536, 1000);
        h.inventories.get_mut(VCPU).unwrap().max_unit = 4;
        h.inventories.get_mut(MEMORY_MB).unwrap().step_size = 256;
        let p = preflight(
            &input(
                vec![
                    server("big", "active", 8, 1024, 1),
                    server("odd", "active", 1, 1000, 1),
                    server("ok", "active", 4, 1024, 1),
                ],
                vec![h],
            ),
            &PreflightParams::default(),
        );
        let by = |id: &str| p.entries.iter().find(|e| e.id == id).unwrap();
        assert!(!by("big").fits && !by("odd").fits && by("ok").fits);
        let m = &p.overridable[0].message;
        assert!(m.contains("above max_unit 4"), "{m}");
        assert!(m.contains("step_size 256"), "{m}");
    }

    #[test]
    fn first_fit_spreads_over_hosts_and_skips_disabled_down_and_self() {
        let mut down = host("node0", 64, 65536, 1000);
        down.up = false;
        let mut dis = host("node00", 64, 65536, 1000);
        dis.enabled = false;
        let me = host("node1", 64, 65536, 1000);
        let p = preflight(
            &input(
                vec![
                    server("a", "active", 1, 3000, 1),
                    server("b", "active", 1, 3000, 1),
                ],
                vec![
                    down,
                    dis,
                    me,
                    host("node2", 4, 4096, 100),
                    host("node3", 4, 4096, 100),
                ],
            ),
            &PreflightParams::default(),
        );
        let hosts: BTreeSet<_> = p
            .entries
            .iter()
            .map(|e| e.estimated_host.clone().unwrap())
            .collect();
        assert_eq!(hosts, BTreeSet::from(["node2".into(), "node3".into()]));
        assert!(p.can_proceed());
    }

    #[test]
    fn service_checks_are_blocking_even_with_force() {
        let mut i = input(vec![], vec![]);
        i.service = None;
        let p = preflight(
            &i,
            &PreflightParams {
                force: true,
                ..Default::default()
            },
        );
        assert!(!p.can_proceed());
        assert_eq!(p.blocking[0].kind, FailureKind::Service);
        i.service = Some(ServiceView {
            status: "enabled".into(),
            state: "down".into(),
            disabled_reason: None,
        });
        i.local_units.insert("libvirtd".into(), false);
        let p = preflight(&i, &PreflightParams::default());
        assert_eq!(p.blocking.len(), 2);
        assert!(p.blocking[0].message.contains("down"));
        assert!(p.blocking[1].message.contains("systemctl start libvirtd"));
    }

    #[test]
    fn target_host_checks() {
        let mut dis = host("node3", 64, 65536, 1000);
        dis.enabled = false;
        let mut down = host("node4", 64, 65536, 1000);
        down.up = false;
        let hosts = vec![host("node2", 64, 65536, 1000), dis, down];
        for (t, want) in [
            ("node1", "is this node"),
            ("nodeX", "not a known compute host"),
            ("node3", "disabled"),
            ("node4", "down"),
        ] {
            let p = preflight(
                &input(vec![server("a", "active", 1, 1, 1)], hosts.clone()),
                &PreflightParams {
                    target_host: Some(t.into()),
                    force: true,
                    ..Default::default()
                },
            );
            assert!(!p.can_proceed(), "{t}");
            assert_eq!(p.blocking[0].kind, FailureKind::TargetHost);
            assert!(p.blocking[0].message.contains(want), "{t}");
        }
        let p = preflight(
            &input(vec![server("a", "active", 1, 1, 1)], hosts.clone()),
            &PreflightParams {
                target_host: Some("node2".into()),
                ..Default::default()
            },
        );
        assert!(p.can_proceed());
        assert_eq!(
            p.entries[0].destination,
            Some(Destination::Host("node2".into()))
        );
        // A host may be called `scheduler`: it is still that host (the
        // drain sends it there, not to Nova's scheduler).
        let mut e = p.entries[0].clone();
        e.destination = Some(Destination::Host("scheduler".into()));
        assert_eq!(e.target_host(), Some("scheduler"));
        let d = crate::plan::Drain::new("node1", [&e], crate::plan::Policy::default(), 0);
        assert_eq!(d.instances[0].target.as_deref(), Some("scheduler"));
    }

    #[test]
    fn anti_affinity_counts_members_moving_in_same_plan() {
        let mut i = input(
            vec![
                server("a", "active", 1, 1, 1),
                server("b", "active", 1, 1, 1),
            ],
            vec![host("node2", 64, 65536, 1000)],
        );
        i.groups.push(ServerGroup {
            id: "g1".into(),
            name: "web".into(),
            policy: "anti-affinity".into(),
            max_server_per_host: None,
            members: vec!["a".into(), "b".into()],
        });
        let params = PreflightParams {
            target_host: Some("node2".into()),
            ..Default::default()
        };
        let p = preflight(&i, &params);
        assert_eq!(p.overridable.len(), 1);
        assert_eq!(p.overridable[0].kind, FailureKind::Affinity);
        assert!(p.overridable[0].message.contains("would hold 2"));
        // max_server_per_host 2 allows both.
        i.groups[0].max_server_per_host = Some(2);
        assert!(preflight(&i, &params).can_proceed());
        // A member already on the target counts.
        i.groups[0].members.push("c".into());
        i.member_hosts.insert("c".into(), "node2".into());
        let p = preflight(&i, &params);
        assert!(p.overridable[0].message.contains("1 already there"));
        // Soft policies never block; force overrides.
        assert!(
            preflight(
                &i,
                &PreflightParams {
                    force: true,
                    ..params.clone()
                }
            )
            .can_proceed()
        );
        i.groups[0].policy = "soft-anti-affinity".into();
        assert!(preflight(&i, &params).can_proceed());
    }

    #[test]
    fn affinity_requires_the_group_to_move_together() {
        let mut i = input(
            vec![
                server("a", "active", 1, 1, 1),
                server("b", "stopped", 1, 1, 1),
            ],
            vec![host("node2", 64, 65536, 1000)],
        );
        i.groups.push(ServerGroup {
            id: "g2".into(),
            name: "db".into(),
            policy: "affinity".into(),
            max_server_per_host: None,
            members: vec!["a".into(), "b".into()],
        });
        let params = PreflightParams {
            target_host: Some("node2".into()),
            ..Default::default()
        };
        // Without target-host, b stays (stopped) and the scheduler can only
        // place a beside it: a cannot move, named, refused unless forced.
        let sched = preflight(&i, &PreflightParams::default());
        assert!(sched.warnings.is_empty(), "{:?}", sched.warnings);
        assert_eq!(sched.overridable[0].kind, FailureKind::Migratability);
        assert!(sched.overridable[0].message.contains(
            "vm-a (a): not live-migratable: hard affinity group db (g2) keeps it beside vm-b (b)"
        ));
        assert!(!sched.can_proceed());
        // All of it moving (include-stopped): the warning that Nova cannot
        // place a group entirely on this node elsewhere.
        let all = preflight(
            &i,
            &PreflightParams {
                include_stopped: true,
                ..Default::default()
            },
        );
        assert_eq!(all.warnings.len(), 1, "group entirely on this node");
        assert!(all.warnings[0].contains("NoValidHost"));
        assert!(all.can_proceed());
        let p = preflight(&i, &params);
        assert!(p.warnings.is_empty());
        assert_eq!(
            p.overridable.len(),
            1,
            "b is skipped (stopped), a would leave it"
        );
        assert!(p.overridable[0].message.contains("b would stay away"));
        let p = preflight(
            &i,
            &PreflightParams {
                include_stopped: true,
                ..params
            },
        );
        assert!(p.can_proceed(), "{:?}", p.overridable);
    }

    #[test]
    fn only_one_vm_and_ambiguous_names() {
        let mut s2 = server("b", "active", 1, 1, 1);
        s2.name = "vm-a".into();
        let i = input(
            vec![server("a", "active", 1, 1, 1), s2],
            vec![host("node2", 64, 65536, 1000)],
        );
        let p = preflight(
            &i,
            &PreflightParams {
                only: Some("vm-a".into()),
                ..Default::default()
            },
        );
        assert!(!p.can_proceed());
        assert!(p.blocking[0].message.contains("a, b"));
        let p = preflight(
            &i,
            &PreflightParams {
                only: Some("b".into()),
                ..Default::default()
            },
        );
        assert!(p.can_proceed());
        assert_eq!(p.entries.len(), 1);
        assert_eq!(p.entries[0].id, "b");
        let p = preflight(
            &i,
            &PreflightParams {
                only: Some("nope".into()),
                ..Default::default()
            },
        );
        assert!(p.blocking[0].message.contains("no instance named"));
    }

    #[test]
    fn migrate_vm_of_an_unmovable_instance_blocks() {
        let servers = vec![
            server("a", "active", 1, 512, 1),
            server("s", "stopped", 1, 512, 1),
        ];
        let only = |vm: &str| PreflightParams {
            only: Some(vm.into()),
            ..Default::default()
        };
        let hosts = vec![host("node2", 64, 65536, 1000)];
        let p = preflight(&input(servers.clone(), hosts.clone()), &only("vm-s"));
        assert!(!p.can_proceed());
        assert_eq!(p.blocking.len(), 1, "{:?}", p.blocking);
        let m = &p.blocking[0].message;
        assert!(
            m.starts_with("vm-s (s) cannot be moved: stopped (SHUTOFF)"),
            "{m}"
        );
        assert!(m.contains("openstack server migrate s"), "{m}");
        assert!(!m.contains("run with include-stopped"), "{m}");
        let p = preflight(&input(servers, hosts), &only("vm-a"));
        assert!(p.can_proceed(), "{:?}", p.blocking);
    }

    #[test]
    fn exclude_naming_no_instance_blocks() {
        let servers = vec![
            server("a", "active", 1, 512, 1),
            server("b", "active", 1, 512, 1),
        ];
        let p = preflight(
            &input(servers, vec![host("node2", 64, 65536, 1000)]),
            &PreflightParams {
                exclude: vec!["vm-a".into(), "b".into(), "vm-typo".into()],
                ..Default::default()
            },
        );
        assert!(!p.can_proceed());
        assert_eq!(p.blocking.len(), 1, "{:?}", p.blocking);
        assert_eq!(p.blocking[0].kind, FailureKind::Instance);
        assert!(
            p.blocking[0]
                .message
                .starts_with("exclude names vm-typo that is not on node1"),
            "{}",
            p.blocking[0].message
        );
    }

    fn with_meta(mut s: ServerInfo, k: &str, v: &str) -> ServerInfo {
        s.metadata.insert(k.into(), v.into());
        s
    }

    #[test]
    fn policies_from_metadata_over_the_node_default_are_in_the_plan() {
        use crate::plan::policy::{POLICY_KEY, PRIORITY_KEY};
        let mut notify = with_meta(server("n", "active", 1, 512, 1), POLICY_KEY, "notify");
        notify.project_id = "proj-1".into();
        notify.user_id = "user-1".into();
        let servers = vec![
            with_meta(server("l", "active", 1, 512, 1), POLICY_KEY, "live"),
            with_meta(server("s", "active", 1, 512, 1), POLICY_KEY, "skip"),
            notify,
            with_meta(server("c", "active", 1, 512, 1), POLICY_KEY, "cold"),
            with_meta(server("cs", "stopped", 1, 512, 1), POLICY_KEY, "cold"),
            with_meta(server("cp", "paused", 1, 512, 1), POLICY_KEY, "cold"),
            with_meta(server("d", "active", 1, 512, 1), PRIORITY_KEY, "11"),
        ];
        let hosts = vec![host("node2", 64, 65536, 1000)];
        let skip_by_default = PreflightParams {
            default_policy: InstancePolicy::Skip,
            ..Default::default()
        };
        let p = preflight(&input(servers, hosts), &skip_by_default);
        let by = |id: &str| p.entries.iter().find(|e| e.id == id).unwrap();
        assert_eq!(by("l").action, Action::Live);
        assert_eq!(
            by("l").policy.describe(),
            "live (metadata nova-live-migration:policy)"
        );
        // cold: a running one is stopped and started again, a stopped one
        // moves without include-stopped; Nova stops only an active one.
        assert_eq!(by("c").action, Action::ColdRestart);
        assert_eq!(by("c").action.method(), Some("stop, cold-migrate, start"));
        assert_eq!(by("cs").action, Action::Cold);
        assert_eq!(by("c").destination, Some(Destination::Scheduler));
        assert!(
            matches!(&by("cp").action, Action::Skip { reason } if reason.contains("Nova stops only an active instance; unpause it")),
            "{:?}",
            by("cp").action
        );
        assert_eq!(by("cp").check, Some(Check::State));
        for (id, words) in [
            (
                "s",
                "policy skip (metadata nova-live-migration:policy): left alone",
            ),
            (
                "n",
                "its owner (project proj-1, user user-1) is listed under owners_to_contact",
            ),
            ("d", "policy skip (config default-policy): left alone"),
        ] {
            assert_eq!(by(id).check, Some(Check::Policy), "{id}");
            assert!(
                matches!(&by(id).action, Action::Skip { reason } if reason.contains(words)),
                "{id}: {:?}",
                by(id).action
            );
        }
        assert_eq!(by("n").owner, Some(("proj-1".into(), "user-1".into())));
        assert_eq!(by("s").owner, None);
        assert!(
            p.can_proceed(),
            "an owner's policy never stops the run: {:?}",
            p.overridable
        );
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("vm-d (d): nova-live-migration:priority=11 is not 1-10"))
        );
    }

    #[test]
    fn device_blockers_name_the_fact_and_refuse_unless_forced() {
        let mut sriov = server("sriov", "active", 1, 512, 1);
        sriov.ports = vec![PortInfo {
            id: "port-9".into(),
            vnic_type: "direct".into(),
        }];
        let mut tpm = server("tpm", "active", 1, 512, 1);
        tpm.extra_specs
            .insert("hw:tpm_version".into(), "2.0".into());
        let mut stopped_tpm = server("cold-tpm", "stopped", 1, 512, 1);
        stopped_tpm.extra_specs = tpm.extra_specs.clone();
        let servers = vec![sriov, tpm, stopped_tpm, server("ok", "active", 1, 512, 1)];
        let hosts = vec![host("node2", 64, 65536, 1000)];
        let params = PreflightParams {
            include_stopped: true,
            ..Default::default()
        };
        let p = preflight(&input(servers.clone(), hosts.clone()), &params);
        let by = |id: &str| p.entries.iter().find(|e| e.id == id).unwrap().clone();
        assert_eq!(by("sriov").check, Some(Check::SriovPort));
        assert_eq!(by("tpm").check, Some(Check::Vtpm));
        assert_eq!(
            by("cold-tpm").action,
            Action::Cold,
            "a cold migration moves a vTPM"
        );
        assert_eq!(by("ok").action, Action::Live);
        assert!(!p.can_proceed());
        let f = &p.overridable[0];
        assert_eq!(f.kind, FailureKind::Migratability);
        assert!(f.message.starts_with("2 instance(s) cannot be live-migrated: vm-sriov (sriov): not live-migratable: port port-9 has binding:vnic_type direct"), "{}", f.message);
        let forced = preflight(
            &input(servers, hosts),
            &PreflightParams {
                force: true,
                ..params
            },
        );
        assert!(forced.can_proceed());
        assert_eq!(forced.to_move().count(), 2);
    }

    #[test]
    fn a_share_and_an_image_vtpm_block_a_running_instance_not_a_stopped_one() {
        let mut shared = server("shared", "active", 1, 512, 1);
        shared.shares = vec!["share-1".into()];
        let mut stopped_shared = server("cold-shared", "stopped", 1, 512, 1);
        stopped_shared.shares = vec!["share-2".into()];
        let mut img = server("img-tpm", "active", 1, 512, 1);
        img.image = Some(ImageInfo {
            id: "image-7".into(),
            properties: BTreeMap::from([("hw_tpm_version".to_string(), "2.0".to_string())]),
        });
        let servers = vec![
            shared,
            stopped_shared,
            img,
            server("ok", "active", 1, 512, 1),
        ];
        let hosts = vec![host("node2", 64, 65536, 1000)];
        let params = PreflightParams {
            include_stopped: true,
            ..Default::default()
        };
        let p = preflight(&input(servers.clone(), hosts.clone()), &params);
        let by = |id: &str| p.entries.iter().find(|e| e.id == id).unwrap().clone();
        assert_eq!(by("shared").check, Some(Check::Share));
        assert_eq!(by("img-tpm").check, Some(Check::Vtpm));
        assert_eq!(by("cold-shared").action, Action::Cold);
        assert!(!p.can_proceed());
        let f = &p.overridable[0];
        assert_eq!(f.kind, FailureKind::Migratability);
        assert!(
            f.message
                .starts_with("2 instance(s) cannot be live-migrated"),
            "{}",
            f.message
        );
        assert!(
            f.message.contains(
                "vm-shared (shared): not live-migratable: Manila share(s) share-1 attached"
            ),
            "{}",
            f.message
        );
        assert!(
            f.message
                .contains("image image-7 property hw_tpm_version=2.0"),
            "{}",
            f.message
        );
        let forced = preflight(
            &input(servers, hosts),
            &PreflightParams {
                force: true,
                ..params
            },
        );
        assert!(forced.can_proceed());
        assert_eq!(forced.to_move().count(), 2);
    }

    #[test]
    fn states_that_cannot_move_now_are_named() {
        let servers: Vec<ServerInfo> = [
            "rescued",
            "resized",
            "shelved",
            "building",
            "suspended",
            "error",
        ]
        .iter()
        .map(|st| server(st, st, 1, 512, 1))
        .collect();
        let p = preflight(
            &input(servers, vec![host("node2", 64, 65536, 1000)]),
            &PreflightParams::default(),
        );
        for e in &p.entries {
            assert_eq!(e.check, Some(Check::State), "{}", e.id);
            let Action::Skip { reason } = &e.action else {
                panic!("{} moves", e.id)
            };
            assert!(
                reason.contains(&format!("vm_state {}", e.id)) || e.id == "suspended",
                "{reason}"
            );
        }
        assert!(p.can_proceed(), "a state skip stops nothing, as before");
    }

    #[test]
    fn a_hard_affinity_group_with_a_member_that_stays_cannot_move() {
        let mut stuck = server("a", "active", 1, 512, 1);
        stuck
            .extra_specs
            .insert("resources:VGPU".into(), "1".into());
        let servers = vec![
            stuck,
            server("b", "active", 1, 512, 1),
            server("c", "active", 1, 512, 1),
        ];
        let mut inp = input(servers, vec![host("node2", 64, 65536, 1000)]);
        inp.groups = vec![ServerGroup {
            id: "g1".into(),
            name: "db".into(),
            policy: "affinity".into(),
            max_server_per_host: None,
            members: vec!["a".into(), "b".into()],
        }];
        let p = preflight(
            &inp,
            &PreflightParams {
                force: true,
                ..Default::default()
            },
        );
        let by = |id: &str| p.entries.iter().find(|e| e.id == id).unwrap().clone();
        assert_eq!(by("a").check, Some(Check::Vgpu));
        assert_eq!(by("b").check, Some(Check::Affinity));
        assert!(
            matches!(&by("b").action, Action::Skip { reason } if reason.contains("hard affinity group db (g1) keeps it beside vm-a (a)"))
        );
        assert_eq!(by("c").action, Action::Live);
    }

    #[test]
    fn incoming_migrations_refuse_unless_forced() {
        let mut inp = input(
            vec![server("a", "active", 1, 512, 1)],
            vec![host("node2", 64, 65536, 1000)],
        );
        inp.migrations = vec![IncomingMigration {
            id: 7,
            instance: "x".into(),
            migration_type: "live-migration".into(),
            status: crate::plan::MigrationStatus::Running,
            source_compute: "node2".into(),
            dest_compute: "node1".into(),
        }];
        let p = preflight(&inp, &PreflightParams::default());
        assert_eq!(p.overridable[0].kind, FailureKind::Incoming);
        assert!(
            p.overridable[0]
                .message
                .contains("instance x (live-migration 7 from node2, status running)")
        );
        assert!(
            preflight(
                &inp,
                &PreflightParams {
                    force: true,
                    ..Default::default()
                }
            )
            .can_proceed()
        );
    }

    #[test]
    fn start_order_is_priority_then_drain_order() {
        use crate::plan::policy::PRIORITY_KEY;
        let servers = vec![
            server("small", "active", 1, 256, 1),
            server("big", "active", 4, 4096, 1),
            with_meta(server("urgent", "active", 1, 128, 1), PRIORITY_KEY, "9"),
            server("mid", "active", 2, 1024, 1),
        ];
        let hosts = vec![host("node2", 64, 65536, 1000)];
        let order = |o: Order| {
            let p = preflight(
                &input(servers.clone(), hosts.clone()),
                &PreflightParams {
                    order: o,
                    ..Default::default()
                },
            );
            p.entries.iter().map(|e| e.id.clone()).collect::<Vec<_>>()
        };
        assert_eq!(
            order(Order::LargestFirst),
            ["urgent", "big", "mid", "small"]
        );
        assert_eq!(
            order(Order::SmallestFirst),
            ["urgent", "small", "mid", "big"]
        );
        assert_eq!(order(Order::Nova), ["urgent", "small", "big", "mid"]);
    }

    #[test]
    fn exclude_parsing() {
        assert_eq!(parse_exclude(" a, b ,,c"), vec!["a", "b", "c"]);
        assert!(parse_exclude("").is_empty());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn hosts() -> impl Strategy<Value = Vec<HostCandidate>> {
            prop::collection::vec(
                (
                    1u64..16,
                    512u64..16384,
                    0u64..4096,
                    1u64..4,
                    any::<bool>(),
                    1u64..9,
                ),
                1..4,
            )
            .prop_map(|v| {
                v.into_iter()
                    .enumerate()
                    .map(|(i, (cpu, mem, used, ratio, up, max_cpu))| {
                        let mut h = host(&format!("node{}", i + 2), cpu, mem, 100);
                        h.up = up;
                        let vc = h.inventories.get_mut(VCPU).unwrap();
                        vc.allocation_ratio = ratio as f64;
                        vc.max_unit = max_cpu;
                        h.usages.insert(MEMORY_MB.into(), used.min(mem));
                        h
                    })
                    .collect()
            })
        }

        fn servers() -> impl Strategy<Value = Vec<ServerInfo>> {
            prop::collection::vec((1u64..8, 256u64..8192, 0u8..4), 0..10).prop_map(|v| {
                v.into_iter()
                    .enumerate()
                    .map(|(i, (cpu, mem, st))| {
                        let vm = ["active", "paused", "stopped", "error"][st as usize];
                        server(&format!("s{i}"), vm, cpu, mem, 1)
                    })
                    .collect()
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn capacity_plan_is_sound(hosts in hosts(), servers in servers(), stopped in any::<bool>()) {
                let n = servers.len();
                let inp = input(servers, hosts.clone());
                let p = preflight(&inp, &PreflightParams { include_stopped: stopped, ..Default::default() });
                prop_assert_eq!(p.entries.len(), n);
                // Every placement respects capacity and max_unit, cumulatively.
                for h in &hosts {
                    let placed: Vec<&PlanEntry> = p.entries.iter()
                        .filter(|e| e.estimated_host.as_deref() == Some(h.host.as_str()))
                        .collect();
                    prop_assert!(placed.is_empty() || (h.up && h.enabled));
                    for (rc, inv) in &h.inventories {
                        let sum: u64 = placed.iter().map(|e| e.demand.get(rc).copied().unwrap_or(0)).sum();
                        let used = h.usages.get(rc).copied().unwrap_or(0) as f64;
                        prop_assert!(sum as f64 + used <= inv.capacity() + 1e-9);
                        for e in &placed {
                            prop_assert!(e.demand.get(rc).copied().unwrap_or(0) <= inv.max_unit);
                        }
                    }
                }
                for e in &p.entries {
                    prop_assert_eq!(e.fits, e.estimated_host.is_some());
                    prop_assert!(!e.fits || e.moves(), "skipped entries never fit");
                }
                let short = p.entries.iter().any(|e| e.moves() && !e.fits);
                prop_assert_eq!(short, p.overridable.iter().any(|f| f.kind == FailureKind::Capacity));
                prop_assert!(p.blocking.is_empty());
            }
        }
    }
}
