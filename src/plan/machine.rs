//! The drain state machine.
//!
//! [`Drain`] is constructed from the plan entries to move, a [`Policy`] and
//! `now`; the orchestrator then calls [`Drain::step`] once per poll with what
//! it saw since the previous step and executes the returned [`Command`]s.
//!
//! Contract with the orchestrator:
//! 1. After every `step`, **persist the state first** (it is the journal body,
//!    `serde`), then execute the commands. A `StartLive`/`StartCold` is only
//!    returned after the instance was put in [`Phase::Starting`] (the intent,
//!    with its time), so a crash between the two leaves the intent on disk and
//!    [`crate::plan::reconcile`] decides whether the POST happened.
//! 2. Report every start as [`Observation::Started`] (202 → `Accepted`, 409 →
//!    `Conflict`, other 4xx → `Rejected`; a timeout or broken connection,
//!    429 and 500/502/503/504 → `Accepted`, Nova's state then tells); for
//!    `FindMigration` report [`Observation::MigrationFound`] when
//!    `/os-migrations?instance_uuid=` shows a live migration (or cold
//!    `migration`) created at or after `since`.
//! 3. Each tick, for every in-flight instance ([`Drain::in_flight_ids`]),
//!    report the server view and the view of its migration (the record's
//!    `migration_id`, learnt from `MigrationFound`, or one whose
//!    `created_at` is at or after the intent; other views are ignored).
//!
//! Decisions (all carry the numbers that triggered them, stored in the
//! instance's `decisions` and echoed as a `Progress` line):
//! * **Stall**: while the migration is `running`, the lowest
//!   `memory_remaining_bytes` seen so far is tracked; when it has not gone
//!   down for `stall_timeout_s` (0 = off) the `timeout_action` is taken —
//!   except that a migration at or past `force_complete_at` percent
//!   (`100 - remaining*100/total`, Nova's own progress formula) is
//!   force-completed even when the action is `abort`.
//! * **Hard limit**: `migration_timeout_s` (0 = off) after the migration was
//!   first seen `running` → `timeout_action`.
//! * **Nova's timer**: Nova aborts (by default) after
//!   `live_migration_completion_timeout` (800 s) × data GiB. We estimate it
//!   conservatively (RAM only, floored at 2 GiB: the real timer also counts
//!   block-migrated disks, so it can only be later) from the first time the
//!   migration is seen running. When our decision would be force-complete
//!   (`timeout_action = force-complete`, or progress ≥ `force_complete_at`) we
//!   take it at the latest `2 × poll interval + 10 s` before that estimate,
//!   so Nova's abort never pre-empts it. When our decision would be abort,
//!   we leave it to Nova (SPEC: `migration-timeout 0 = leave it to Nova`).
//! * **409 on start** (`task_state` conflict): retried after
//!   `conflict_backoff_ms × 2^(n-1)` capped at 120 s, at most
//!   `conflict_retries` times, then `failed`.
//! * **Retries**: an attempt that ends with the server idle on the source
//!   (migration `failed`/`error`/`cancelled`, or `completed` while the server
//!   is still on the source — a known Nova failure mode) is retried up to
//!   `retries` times; an instance left in ERROR is `failed`, never retried.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::preflight::{Action, PlanEntry};
use super::{InstanceId, Millis};

/// `timeout-action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeoutAction {
    Abort,
    ForceComplete,
}

/// Execution policy, from config and action parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Migrations in flight at once (≥ 1; 0 is treated as 1).
    pub max_concurrent: u32,
    /// Extra attempts after a failed migration.
    pub retries: u32,
    /// Seconds without the remaining memory shrinking; 0 = off.
    pub stall_timeout_s: u64,
    /// Seconds a migration may run; 0 = off (Nova's own timer).
    pub migration_timeout_s: u64,
    pub timeout_action: TimeoutAction,
    /// Percent (1–100) at or past which a stalled migration is
    /// force-completed; 0 = never.
    pub force_complete_at: u8,
    pub poll_interval_ms: u64,
    /// Microversion ≥ 2.65: queued/preparing migrations can be aborted.
    pub can_abort_queued: bool,
    /// Nova's `live_migration_completion_timeout` (s per GiB); 0 = disabled.
    pub nova_completion_timeout_s_per_gib: u64,
    /// How many 409 conflicts on start are retried.
    pub conflict_retries: u32,
    /// First back-off after a 409 (doubles, capped at 120 s).
    pub conflict_backoff_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_concurrent: 1,
            retries: 1,
            stall_timeout_s: 300,
            migration_timeout_s: 0,
            timeout_action: TimeoutAction::Abort,
            force_complete_at: 0,
            poll_interval_ms: 2000,
            can_abort_queued: true,
            nova_completion_timeout_s_per_gib: 800,
            conflict_retries: 5,
            conflict_backoff_ms: 15_000,
        }
    }
}

impl Policy {
    /// SPEC `max-concurrent-migrations`: an explicit value (≥ 1) wins; 0 =
    /// this node's `max_concurrent_live_migrations` (1 when unset) plus one
    /// waiting in Nova's queue — only where queued migrations can be aborted
    /// (microversion ≥ 2.65).
    pub fn resolve_max_concurrent(
        configured: u32,
        nova_max_concurrent: Option<u32>,
        can_abort_queued: bool,
    ) -> u32 {
        if configured >= 1 {
            return configured;
        }
        let nova = nova_max_concurrent.filter(|n| *n >= 1).unwrap_or(1);
        nova + u32::from(can_abort_queued)
    }

    fn max_concurrent(&self) -> usize {
        self.max_concurrent.max(1) as usize
    }
    /// Grace before concluding that an accepted start led nowhere.
    fn idle_grace_ms(&self) -> u64 {
        (3 * self.poll_interval_ms).max(30_000)
    }
    /// How long before Nova's estimated timer a force-complete is taken.
    pub fn nova_margin_ms(&self) -> u64 {
        2 * self.poll_interval_ms + 10_000
    }
    /// Back-off after the `n`-th consecutive 409 (n ≥ 1).
    pub fn conflict_backoff(&self, n: u32) -> u64 {
        let shift = n.saturating_sub(1).min(16);
        self.conflict_backoff_ms
            .saturating_mul(1u64 << shift)
            .min(120_000)
    }
    /// Nova's completion timeout estimate (ms) for an instance with `ram_mb`.
    pub fn nova_timeout_ms(&self, ram_mb: u64) -> Option<u64> {
        if self.nova_completion_timeout_s_per_gib == 0 {
            return None;
        }
        let gib = (ram_mb as f64 / 1024.0).max(2.0);
        Some((self.nova_completion_timeout_s_per_gib as f64 * gib * 1000.0) as u64)
    }
}

/// Live or cold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MoveKind {
    Live,
    Cold,
}

/// Final result of one instance in the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Migrated,
    ColdMigrated,
    Failed,
    Aborted,
    /// Not started because the run stopped.
    Pending,
}

/// Where one instance is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum Phase {
    /// Not started yet.
    Pending,
    /// Not started; may start at or after `until` (409 back-off, retry).
    Waiting {
        until: Millis,
    },
    /// Intent: a start command was issued at `since`; the POST may or may
    /// not have reached Nova.
    Starting {
        since: Millis,
        attempt: u32,
    },
    /// Nova accepted the start at `since` (202); migration id when known.
    Started {
        since: Millis,
        migration_id: Option<u64>,
    },
    Done {
        outcome: Outcome,
    },
}

/// Nova's migration status (live and cold).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum MigrationStatus {
    Accepted,
    /// `pre-migrating`: listed by Nova among the in-progress live-migration states.
    PreMigrating,
    Queued,
    Preparing,
    Running,
    RunningPostCopy,
    PostMigrating,
    Completed,
    Failed,
    Error,
    Cancelled,
    /// Anything else (cold-migration statuses such as `migrating`,
    /// `finished`, `confirmed`, `reverted`…).
    Other(String),
}

impl From<String> for MigrationStatus {
    fn from(s: String) -> Self {
        match s.as_str() {
            "accepted" => Self::Accepted,
            "pre-migrating" => Self::PreMigrating,
            "queued" => Self::Queued,
            "preparing" => Self::Preparing,
            "running" => Self::Running,
            "running (post-copy)" => Self::RunningPostCopy,
            "post-migrating" => Self::PostMigrating,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "error" => Self::Error,
            "cancelled" => Self::Cancelled,
            _ => Self::Other(s),
        }
    }
}

impl From<MigrationStatus> for String {
    fn from(s: MigrationStatus) -> String {
        s.as_str().to_string()
    }
}

impl MigrationStatus {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Accepted => "accepted",
            Self::PreMigrating => "pre-migrating",
            Self::Queued => "queued",
            Self::Preparing => "preparing",
            Self::Running => "running",
            Self::RunningPostCopy => "running (post-copy)",
            Self::PostMigrating => "post-migrating",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Error => "error",
            Self::Cancelled => "cancelled",
            Self::Other(s) => s,
        }
    }
    /// No further change will happen to this migration.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Error | Self::Cancelled
        ) || matches!(self, Self::Other(s) if matches!(s.as_str(), "confirmed" | "reverted" | "finished" | "done"))
    }
    /// Ended without moving the instance.
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Failed | Self::Error | Self::Cancelled)
            || matches!(self, Self::Other(s) if s == "reverted")
    }
}

/// What the server looks like now (`GET /servers/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerView {
    pub host: String,
    pub status: String,
    pub vm_state: String,
    pub task_state: Option<String>,
    /// Instance fault message (shown when status is ERROR).
    pub fault: Option<String>,
}

impl ServerView {
    fn idle(&self) -> bool {
        self.task_state.is_none()
    }
}

/// The latest migration record of the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationView {
    pub id: u64,
    pub status: MigrationStatus,
    /// `created_at` (ms since the epoch) when known: a view of a not yet
    /// identified migration is taken as this attempt's only when created at
    /// or after the start intent.
    #[serde(default)]
    pub created_at: Option<Millis>,
    pub dest_compute: Option<String>,
    pub memory_total_bytes: Option<u64>,
    pub memory_processed_bytes: Option<u64>,
    pub memory_remaining_bytes: Option<u64>,
    pub disk_total_bytes: Option<u64>,
    pub disk_processed_bytes: Option<u64>,
    pub disk_remaining_bytes: Option<u64>,
}

impl MigrationView {
    /// Nova's progress: `100 - round(remaining*100/total)` (memory only).
    pub fn percent(&self) -> Option<u8> {
        let total = self.memory_total_bytes.filter(|t| *t > 0)?;
        let rem = self.memory_remaining_bytes?.min(total);
        let p = 100.0 - (rem as f64 * 100.0 / total as f64).round();
        Some(p.clamp(0.0, 100.0) as u8)
    }
}

/// Result of a start command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "lowercase")]
pub enum StartResult {
    /// 202.
    Accepted,
    /// 409 (task_state / vm_state conflict): retried with back-off.
    Conflict(String),
    /// Any other refusal (400, 403, 404…): the instance fails.
    Rejected(String),
}

/// What the orchestrator saw since the last step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Observation {
    Started {
        instance: InstanceId,
        attempt: u32,
        result: StartResult,
    },
    MigrationFound {
        instance: InstanceId,
        migration_id: u64,
    },
    Server {
        instance: InstanceId,
        view: ServerView,
    },
    Migration {
        instance: InstanceId,
        view: MigrationView,
    },
    /// A `ForceComplete`, `Abort` or `ConfirmResize` was refused.
    CommandFailed {
        instance: InstanceId,
        command: String,
        message: String,
    },
    /// `nova-live-migration abort [--vm X]`: abort in-flight migrations (or
    /// only X), start no more.
    AbortRequested { vm: Option<String> },
}

/// What the orchestrator must do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Command {
    StartLive {
        instance: InstanceId,
        attempt: u32,
        target: Option<String>,
    },
    StartCold {
        instance: InstanceId,
        attempt: u32,
        target: Option<String>,
    },
    /// Find the migration created at or after `since` via
    /// `/os-migrations?instance_uuid=`.
    FindMigration {
        instance: InstanceId,
        since: Millis,
    },
    ConfirmResize {
        instance: InstanceId,
    },
    ForceComplete {
        instance: InstanceId,
        migration_id: u64,
        reason: String,
    },
    Abort {
        instance: InstanceId,
        migration_id: u64,
        reason: String,
    },
    /// One `action-log` line (emitted only when it changed).
    Progress {
        instance: InstanceId,
        line: String,
    },
}

/// Per-attempt monitoring state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Track {
    pub server: Option<ServerView>,
    pub migration: Option<MigrationView>,
    pub running_since: Option<Millis>,
    pub best_remaining: Option<u64>,
    pub progress_at: Option<Millis>,
    pub idle_since: Option<Millis>,
    pub force_completed: bool,
    pub abort_sent: bool,
    pub confirm_sent: bool,
    pub confirm_failures: u32,
    /// One-shot notes already emitted.
    pub noted: BTreeSet<String>,
}

/// One instance of the drain (also its journal record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub id: InstanceId,
    pub name: String,
    pub kind: MoveKind,
    /// 1-based position for `[i/n]` progress lines.
    pub index: usize,
    pub ram_mb: u64,
    /// `target-host`, or `None` for the scheduler.
    pub target: Option<String>,
    pub phase: Phase,
    /// Starts accepted by Nova.
    pub attempts: u32,
    /// Consecutive 409s on start.
    pub conflicts: u32,
    pub first_started_at: Option<Millis>,
    pub ended_at: Option<Millis>,
    pub destination: Option<String>,
    pub migration_id: Option<u64>,
    /// Migrations of earlier, failed attempts (ignored when seen again).
    pub past_migrations: Vec<u64>,
    pub error: Option<String>,
    /// Every decision taken, with the numbers behind it.
    pub decisions: Vec<String>,
    pub abort_requested: bool,
    #[serde(default)]
    pub track: Track,
    #[serde(default)]
    pub last_line: Option<String>,
}

impl InstanceRecord {
    pub fn outcome(&self) -> Option<Outcome> {
        match self.phase {
            Phase::Done { outcome } => Some(outcome),
            _ => None,
        }
    }
    /// A migration of it may be in flight (intent written or accepted).
    pub fn in_flight(&self) -> bool {
        matches!(self.phase, Phase::Starting { .. } | Phase::Started { .. })
    }
    /// Seconds from the first accepted start to the end.
    pub fn duration_s(&self) -> Option<f64> {
        Some((self.ended_at?.saturating_sub(self.first_started_at?)) as f64 / 1000.0)
    }
}

/// The drain: serialisable state of one evacuation / migrate-vm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    pub source: String,
    pub policy: Policy,
    pub created_at: Millis,
    pub instances: Vec<InstanceRecord>,
    /// Abort requested: start no more.
    pub stop_starting: bool,
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

/// `done/total` with one unit: GiB with one decimal from 1 GiB up, else
/// whole MiB (`12/64 MiB`, not `0.0/0.1 GiB`).
fn transferred(done: u64, total: u64) -> String {
    if total as f64 >= GIB {
        format!("{:.1}/{:.1} GiB", done as f64 / GIB, total as f64 / GIB)
    } else {
        format!("{:.0}/{:.0} MiB", done as f64 / MIB, total as f64 / MIB)
    }
}
fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / MIB)
}

impl Drain {
    /// A drain of `entries` (the moving ones are kept, in order).
    pub fn new<'a>(
        source: &str,
        entries: impl IntoIterator<Item = &'a PlanEntry>,
        policy: Policy,
        now: Millis,
    ) -> Self {
        let instances: Vec<InstanceRecord> = entries
            .into_iter()
            .filter(|e| e.moves())
            .enumerate()
            .map(|(i, e)| InstanceRecord {
                id: e.id.clone(),
                name: e.name.clone(),
                kind: if e.action == Action::Cold {
                    MoveKind::Cold
                } else {
                    MoveKind::Live
                },
                index: i + 1,
                ram_mb: e.ram_mb,
                target: (e.destination != "scheduler").then(|| e.destination.clone()),
                phase: Phase::Pending,
                attempts: 0,
                conflicts: 0,
                first_started_at: None,
                ended_at: None,
                destination: None,
                migration_id: None,
                past_migrations: vec![],
                error: None,
                decisions: vec![],
                abort_requested: false,
                track: Track::default(),
                last_line: None,
            })
            .collect();
        Drain {
            source: source.to_string(),
            policy,
            created_at: now,
            instances,
            stop_starting: false,
        }
    }

    pub fn is_done(&self) -> bool {
        self.instances.iter().all(|r| r.outcome().is_some())
    }

    pub fn in_flight(&self) -> usize {
        self.instances.iter().filter(|r| r.in_flight()).count()
    }

    /// Instances whose server and migration the orchestrator must watch.
    pub fn in_flight_ids(&self) -> Vec<InstanceId> {
        self.instances
            .iter()
            .filter(|r| r.in_flight())
            .map(|r| r.id.clone())
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<&InstanceRecord> {
        self.instances.iter().find(|r| r.id == id)
    }

    fn total(&self) -> usize {
        self.instances.len()
    }

    /// Advance: apply `obs`, then decide. Persist the state, then execute
    /// the commands.
    pub fn step(&mut self, now: Millis, obs: &[Observation]) -> Vec<Command> {
        let mut out = Vec::new();
        for o in obs {
            self.apply(now, o, &mut out);
        }
        let total = self.total();
        let source = self.source.clone();
        let policy = self.policy.clone();
        for r in &mut self.instances {
            if matches!(r.phase, Phase::Started { .. }) {
                evaluate(r, &source, &policy, total, now, &mut out);
            }
        }
        if self.stop_starting {
            for r in &mut self.instances {
                if matches!(r.phase, Phase::Pending | Phase::Waiting { .. }) {
                    r.decisions
                        .push("not started: the run was aborted".to_string());
                    if r.error.is_none() {
                        r.error = Some("not started: the run was aborted".into());
                    }
                    r.phase = Phase::Done {
                        outcome: Outcome::Pending,
                    };
                    r.ended_at = Some(now);
                }
            }
        } else {
            self.start_next(now, &mut out);
        }
        out
    }

    fn start_next(&mut self, now: Millis, out: &mut Vec<Command>) {
        let total = self.total();
        while self.in_flight() < self.policy.max_concurrent() {
            let Some(r) = self.instances.iter_mut().find(|r| match r.phase {
                Phase::Pending => true,
                Phase::Waiting { until } => until <= now,
                _ => false,
            }) else {
                break;
            };
            let attempt = r.attempts + 1;
            r.phase = Phase::Starting {
                since: now,
                attempt,
            };
            r.track = Track::default();
            let dest = r.target.clone().unwrap_or_else(|| "scheduler".into());
            let what = match r.kind {
                MoveKind::Live => "starting live migration",
                MoveKind::Cold => "starting cold migration",
            };
            let line = format!(
                "[{}/{}] {} → {} {} (attempt {attempt})",
                r.index, total, r.name, dest, what
            );
            progress(r, line, out);
            out.push(match r.kind {
                MoveKind::Live => Command::StartLive {
                    instance: r.id.clone(),
                    attempt,
                    target: r.target.clone(),
                },
                MoveKind::Cold => Command::StartCold {
                    instance: r.id.clone(),
                    attempt,
                    target: r.target.clone(),
                },
            });
        }
    }

    fn apply(&mut self, now: Millis, o: &Observation, out: &mut Vec<Command>) {
        let total = self.total();
        let policy = self.policy.clone();
        let find = |d: &mut Drain, id: &str| d.instances.iter().position(|r| r.id == id);
        match o {
            Observation::AbortRequested { vm } => {
                self.stop_starting = true;
                for r in &mut self.instances {
                    let hit = vm.as_ref().is_none_or(|v| v == &r.id || v == &r.name);
                    if hit && r.outcome().is_none() && !r.abort_requested {
                        r.abort_requested = true;
                        r.decisions.push("abort requested by the operator".into());
                    }
                }
            }
            Observation::Started {
                instance,
                attempt,
                result,
            } => {
                let Some(i) = find(self, instance) else {
                    return;
                };
                let r = &mut self.instances[i];
                let Phase::Starting { since, attempt: a } = r.phase else {
                    return;
                };
                if a != *attempt {
                    return;
                }
                match result {
                    StartResult::Accepted => {
                        r.attempts = a;
                        r.conflicts = 0;
                        r.first_started_at.get_or_insert(since);
                        r.phase = Phase::Started {
                            since,
                            migration_id: None,
                        };
                        r.migration_id = None;
                    }
                    StartResult::Conflict(msg) => {
                        r.conflicts += 1;
                        if r.conflicts > policy.conflict_retries {
                            let e = format!(
                                "start refused with 409 {} time(s) in a row, giving up: {msg}",
                                r.conflicts
                            );
                            finish(r, Outcome::Failed, now, Some(e), total, out);
                        } else {
                            let wait = policy.conflict_backoff(r.conflicts);
                            let d = format!(
                                "start refused with 409 ({msg}); retry {} of {} in {} s",
                                r.conflicts,
                                policy.conflict_retries,
                                wait / 1000
                            );
                            decide(r, d, total, out);
                            r.phase = Phase::Waiting { until: now + wait };
                        }
                    }
                    StartResult::Rejected(msg) => {
                        let e = format!("start rejected: {msg}");
                        finish(r, Outcome::Failed, now, Some(e), total, out);
                    }
                }
            }
            Observation::MigrationFound {
                instance,
                migration_id,
            } => {
                let Some(i) = find(self, instance) else {
                    return;
                };
                let r = &mut self.instances[i];
                if r.past_migrations.contains(migration_id) {
                    return;
                }
                if let Phase::Started {
                    migration_id: m @ None,
                    ..
                } = &mut r.phase
                {
                    *m = Some(*migration_id);
                    r.migration_id = Some(*migration_id);
                }
            }
            Observation::Server { instance, view } => {
                let Some(i) = find(self, instance) else {
                    return;
                };
                let r = &mut self.instances[i];
                if matches!(r.phase, Phase::Started { .. }) {
                    r.track.server = Some(view.clone());
                }
            }
            Observation::Migration { instance, view } => {
                let Some(i) = find(self, instance) else {
                    return;
                };
                let r = &mut self.instances[i];
                if r.past_migrations.contains(&view.id) {
                    return;
                }
                // Only the migration of this attempt: identified through
                // `FindMigration`, or created at or after the intent (a view
                // of an unknown id may belong to an earlier attempt).
                match r.phase {
                    Phase::Started {
                        migration_id: Some(m),
                        ..
                    } if m == view.id => r.track.migration = Some(view.clone()),
                    Phase::Started {
                        since,
                        migration_id: None,
                    } if view.created_at.is_some_and(|c| c >= since) => {
                        r.phase = Phase::Started {
                            since,
                            migration_id: Some(view.id),
                        };
                        r.migration_id = Some(view.id);
                        r.track.migration = Some(view.clone());
                    }
                    _ => {}
                }
            }
            Observation::CommandFailed {
                instance,
                command,
                message,
            } => {
                let Some(i) = find(self, instance) else {
                    return;
                };
                let r = &mut self.instances[i];
                if command.eq_ignore_ascii_case("ConfirmResize") || command == "confirm-resize" {
                    r.track.confirm_failures += 1;
                    r.track.confirm_sent = r.track.confirm_failures >= 3;
                }
                decide(r, format!("{command} refused: {message}"), total, out);
            }
        }
    }
}

fn progress(r: &mut InstanceRecord, line: String, out: &mut Vec<Command>) {
    if r.last_line.as_deref() != Some(line.as_str()) {
        r.last_line = Some(line.clone());
        out.push(Command::Progress {
            instance: r.id.clone(),
            line,
        });
    }
}

/// Record a decision and echo it as a progress line.
fn decide(r: &mut InstanceRecord, d: String, total: usize, out: &mut Vec<Command>) {
    let line = format!("[{}/{}] {}: {d}", r.index, total, r.name);
    r.decisions.push(d);
    progress(r, line, out);
}

fn note(r: &mut InstanceRecord, key: &str, d: String, total: usize, out: &mut Vec<Command>) {
    if r.track.noted.insert(key.to_string()) {
        decide(r, d, total, out);
    }
}

fn finish(
    r: &mut InstanceRecord,
    outcome: Outcome,
    now: Millis,
    error: Option<String>,
    total: usize,
    out: &mut Vec<Command>,
) {
    r.phase = Phase::Done { outcome };
    r.ended_at = Some(now);
    if let Some(e) = &error {
        r.decisions.push(e.clone());
    }
    r.error = error.or_else(|| {
        matches!(outcome, Outcome::Failed | Outcome::Aborted)
            .then(|| r.error.clone())
            .flatten()
    });
    if matches!(outcome, Outcome::Migrated | Outcome::ColdMigrated) {
        r.error = None;
    }
    let dest = r
        .destination
        .clone()
        .or_else(|| r.target.clone())
        .unwrap_or_else(|| "scheduler".into());
    let what = match outcome {
        Outcome::Migrated => "migrated".to_string(),
        Outcome::ColdMigrated => "cold-migrated".to_string(),
        Outcome::Failed => format!("failed: {}", r.error.as_deref().unwrap_or("")),
        Outcome::Aborted => "aborted".to_string(),
        Outcome::Pending => "not started".to_string(),
    };
    let dur = r
        .duration_s()
        .map(|d| format!(" in {d:.1} s"))
        .unwrap_or_default();
    let line = match outcome {
        Outcome::Migrated | Outcome::ColdMigrated => {
            format!("[{}/{}] {} → {dest} {what}{dur}", r.index, total, r.name)
        }
        // Nothing went anywhere: no arrow to a destination.
        _ => format!("[{}/{}] {} {what}{dur}", r.index, total, r.name),
    };
    progress(r, line, out);
}

/// One attempt ended with the instance idle on the source.
fn attempt_failed(
    r: &mut InstanceRecord,
    why: String,
    policy: &Policy,
    now: Millis,
    total: usize,
    out: &mut Vec<Command>,
) {
    if let Some(m) = r.migration_id.take() {
        r.past_migrations.push(m);
    }
    if r.abort_requested || r.track.abort_sent {
        let e = match r.error.take() {
            Some(a) if a.starts_with("aborted") => format!("{a} ({why})"),
            _ => format!("aborted ({why})"),
        };
        finish(r, Outcome::Aborted, now, Some(e), total, out);
        return;
    }
    r.error = Some(why.clone());
    if r.attempts <= policy.retries {
        let d = format!(
            "attempt {} failed: {why}; retrying ({} of {} retries)",
            r.attempts, r.attempts, policy.retries
        );
        decide(r, d, total, out);
        r.phase = Phase::Waiting { until: now };
        r.track = Track::default();
    } else {
        let e = if policy.retries > 0 {
            format!("{why} (after {} attempts)", r.attempts)
        } else {
            why
        };
        finish(r, Outcome::Failed, now, Some(e), total, out);
    }
}

fn evaluate(
    r: &mut InstanceRecord,
    source: &str,
    policy: &Policy,
    total: usize,
    now: Millis,
    out: &mut Vec<Command>,
) {
    let Phase::Started {
        since,
        migration_id,
    } = r.phase.clone()
    else {
        return;
    };
    if migration_id.is_none() {
        out.push(Command::FindMigration {
            instance: r.id.clone(),
            since,
        });
    }
    let server = r.track.server.clone();
    let mig = r.track.migration.clone();

    if let Some(s) = &server {
        let moved = s.host != source && !s.host.is_empty();
        // Success, verified by the server itself.
        if r.kind == MoveKind::Live
            && moved
            && s.idle()
            && matches!(s.vm_state.as_str(), "active" | "paused")
        {
            r.destination = Some(s.host.clone());
            finish(r, Outcome::Migrated, now, None, total, out);
            return;
        }
        if r.kind == MoveKind::Cold {
            if s.status == "VERIFY_RESIZE" && s.idle() {
                r.destination = Some(s.host.clone());
                if !r.track.confirm_sent {
                    r.track.confirm_sent = true;
                    out.push(Command::ConfirmResize {
                        instance: r.id.clone(),
                    });
                    let line = format!(
                        "[{}/{}] {} → {} resized, confirming",
                        r.index, total, r.name, s.host
                    );
                    progress(r, line, out);
                }
                return;
            }
            if moved && s.idle() && s.vm_state == "stopped" {
                r.destination = Some(s.host.clone());
                finish(r, Outcome::ColdMigrated, now, None, total, out);
                return;
            }
        }
        if s.vm_state == "error"
            && (s.idle() || mig.as_ref().is_some_and(|m| m.status.is_terminal()))
        {
            let e = format!(
                "instance is in ERROR on {}{}; check the guest, then reset its state — not retried",
                s.host,
                s.fault
                    .as_ref()
                    .map(|f| format!(": {f}"))
                    .unwrap_or_default()
            );
            finish(r, Outcome::Failed, now, Some(e), total, out);
            return;
        }
        let idle_ok = match r.kind {
            MoveKind::Live => matches!(s.vm_state.as_str(), "active" | "paused"),
            MoveKind::Cold => s.vm_state == "stopped",
        };
        if !moved && s.idle() && idle_ok {
            let idle_since = *r.track.idle_since.get_or_insert(now);
            let why = match &mig {
                Some(m) if m.status == MigrationStatus::Completed => Some(format!(
                    "migration {} is completed but the server is still on {source} (Nova failure mode)",
                    m.id
                )),
                Some(m) if m.status.is_failure() => Some(format!(
                    "migration {} ended {} with the server still on {source}",
                    m.id,
                    m.status.as_str()
                )),
                _ if now.saturating_sub(idle_since) >= policy.idle_grace_ms() => Some(format!(
                    "the server is idle on {source} {} s after the start was accepted and no migration is in progress{}",
                    now.saturating_sub(since) / 1000,
                    mig.as_ref()
                        .map(|m| format!(" (migration {} {})", m.id, m.status.as_str()))
                        .unwrap_or_default()
                )),
                _ => None,
            };
            if let Some(why) = why {
                attempt_failed(r, why, policy, now, total, out);
            }
            return;
        }
        r.track.idle_since = None;
    }

    let Some(m) = mig else {
        if r.abort_requested && r.kind == MoveKind::Live {
            note(
                r,
                "abort-wait-id",
                "abort requested; waiting for the migration to appear".into(),
                total,
                out,
            );
        }
        return;
    };
    if r.kind == MoveKind::Cold {
        if r.abort_requested {
            note(
                r,
                "cold-no-abort",
                "abort requested, but a cold migration cannot be aborted; letting it finish".into(),
                total,
                out,
            );
        }
        let dest = m
            .dest_compute
            .clone()
            .or_else(|| r.target.clone())
            .unwrap_or_else(|| "scheduler".into());
        let line = format!(
            "[{}/{}] {} → {dest} cold migration {}",
            r.index,
            total,
            r.name,
            m.status.as_str()
        );
        progress(r, line, out);
        return;
    }
    monitor_live(r, &m, policy, total, now, out);
}

fn monitor_live(
    r: &mut InstanceRecord,
    m: &MigrationView,
    policy: &Policy,
    total: usize,
    now: Millis,
    out: &mut Vec<Command>,
) {
    let running = m.status == MigrationStatus::Running;
    let postcopy = m.status == MigrationStatus::RunningPostCopy;
    if running || postcopy {
        let start = *r.track.running_since.get_or_insert(now);
        r.track.progress_at.get_or_insert(start);
    }
    if running
        && let Some(rem) = m.memory_remaining_bytes
        && r.track.best_remaining.is_none_or(|b| rem < b)
    {
        r.track.best_remaining = Some(rem);
        r.track.progress_at = Some(now);
    }
    let pct = m.percent();
    let dest = m
        .dest_compute
        .clone()
        .or_else(|| r.target.clone())
        .unwrap_or_else(|| "scheduler".into());
    let mut line = format!(
        "[{}/{}] {} → {dest} {}",
        r.index,
        total,
        r.name,
        m.status.as_str()
    );
    if let (Some(p), Some(t), Some(rem)) = (pct, m.memory_total_bytes, m.memory_remaining_bytes) {
        line.push_str(&format!(
            " {p}% ({})",
            transferred(t.saturating_sub(rem.min(t)), t)
        ));
    }
    progress(r, line, out);

    let mid = m.id;
    // Operator abort.
    if r.abort_requested && !r.track.abort_sent {
        match &m.status {
            MigrationStatus::Running => {
                send_abort(r, mid, "abort requested by the operator".into(), total, out);
            }
            MigrationStatus::Queued | MigrationStatus::Preparing if policy.can_abort_queued => {
                send_abort(r, mid, "abort requested by the operator".into(), total, out);
            }
            MigrationStatus::Queued | MigrationStatus::Preparing => note(
                r,
                "abort-queued",
                format!(
                    "abort requested, but a {} migration cannot be aborted below microversion 2.65; will abort once it runs",
                    m.status.as_str()
                ),
                total,
                out,
            ),
            MigrationStatus::RunningPostCopy => note(
                r,
                "abort-postcopy",
                "abort requested, but the migration is in post-copy and cannot be aborted; letting it complete".into(),
                total,
                out,
            ),
            _ => {}
        }
        return;
    }
    if r.track.abort_sent || r.track.force_completed || !running {
        return;
    }

    // Timers (only while running).
    let Some(run_start) = r.track.running_since else {
        return;
    };
    let pct_s = pct
        .map(|p| format!("{p}%"))
        .unwrap_or_else(|| "unknown progress".into());
    let fca_hit =
        policy.force_complete_at > 0 && pct.is_some_and(|p| p >= policy.force_complete_at);
    let stalled_for = now.saturating_sub(r.track.progress_at.unwrap_or(run_start));
    let running_for = now.saturating_sub(run_start);

    let mut decision: Option<(TimeoutAction, String)> = None;
    if policy.stall_timeout_s > 0 && stalled_for >= policy.stall_timeout_s * 1000 {
        let rem = r
            .track
            .best_remaining
            .map(mib)
            .unwrap_or_else(|| "?".into());
        let tot = m.memory_total_bytes.map(mib).unwrap_or_else(|| "?".into());
        let mut why = format!(
            "stalled: remaining memory has not shrunk for {} s (stall-timeout {} s; {rem} of {tot} left, {pct_s})",
            stalled_for / 1000,
            policy.stall_timeout_s
        );
        let act = if fca_hit {
            if policy.timeout_action == TimeoutAction::Abort {
                why.push_str(&format!(
                    "; at or past force-complete-at {}%",
                    policy.force_complete_at
                ));
            }
            TimeoutAction::ForceComplete
        } else {
            policy.timeout_action
        };
        decision = Some((act, why));
    } else if policy.migration_timeout_s > 0 && running_for >= policy.migration_timeout_s * 1000 {
        decision = Some((
            policy.timeout_action,
            format!(
                "running for {} s, past migration-timeout {} s ({pct_s})",
                running_for / 1000,
                policy.migration_timeout_s
            ),
        ));
    } else if let Some(nova) = policy.nova_timeout_ms(r.ram_mb) {
        let wants_fc = policy.timeout_action == TimeoutAction::ForceComplete || fca_hit;
        let act_at = nova.saturating_sub(policy.nova_margin_ms());
        if wants_fc && running_for >= act_at {
            decision = Some((
                TimeoutAction::ForceComplete,
                format!(
                    "Nova's completion timer ({} s/GiB × {:.1} GiB = {} s) would fire in about {} s (running {} s, {pct_s}); force-completing before it aborts",
                    policy.nova_completion_timeout_s_per_gib,
                    (r.ram_mb as f64 / 1024.0).max(2.0),
                    nova / 1000,
                    nova.saturating_sub(running_for) / 1000,
                    running_for / 1000
                ),
            ));
        }
    }
    match decision {
        Some((TimeoutAction::ForceComplete, why)) => {
            r.track.force_completed = true;
            decide(r, format!("force-complete: {why}"), total, out);
            out.push(Command::ForceComplete {
                instance: r.id.clone(),
                migration_id: mid,
                reason: why,
            });
        }
        Some((TimeoutAction::Abort, why)) => send_abort(r, mid, why, total, out),
        None => {}
    }
}

fn send_abort(r: &mut InstanceRecord, mid: u64, why: String, total: usize, out: &mut Vec<Command>) {
    r.track.abort_sent = true;
    r.error = Some(format!("aborted: {why}"));
    decide(r, format!("abort: {why}"), total, out);
    out.push(Command::Abort {
        instance: r.id.clone(),
        migration_id: mid,
        reason: why,
    });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::plan::preflight::Storage;
    use std::collections::BTreeMap;

    pub(crate) fn entry(id: &str, action: Action, ram_mb: u64) -> PlanEntry {
        PlanEntry {
            id: id.into(),
            name: format!("vm-{id}"),
            action,
            storage: Storage::Local,
            vcpus: 1,
            ram_mb,
            disk_gb: 1,
            destination: "scheduler".into(),
            fits: true,
            estimated_host: None,
            demand: BTreeMap::new(),
        }
    }

    pub(crate) fn sv(host: &str, status: &str, vm: &str, task: Option<&str>) -> ServerView {
        ServerView {
            host: host.into(),
            status: status.into(),
            vm_state: vm.into(),
            task_state: task.map(Into::into),
            fault: None,
        }
    }

    pub(crate) fn mv(id: u64, status: &str, total: u64, rem: u64) -> MigrationView {
        MigrationView {
            id,
            status: MigrationStatus::from(status.to_string()),
            created_at: None,
            dest_compute: Some("node4".into()),
            memory_total_bytes: Some(total),
            memory_processed_bytes: Some(total - rem),
            memory_remaining_bytes: Some(rem),
            disk_total_bytes: None,
            disk_processed_bytes: None,
            disk_remaining_bytes: None,
        }
    }

    fn drain(n: usize, policy: Policy) -> Drain {
        let es: Vec<PlanEntry> = (0..n)
            .map(|i| entry(&format!("i{i}"), Action::Live, 4096))
            .collect();
        Drain::new("node1", &es, policy, 0)
    }

    fn starts(c: &[Command]) -> Vec<String> {
        c.iter()
            .filter_map(|c| match c {
                Command::StartLive { instance, .. } | Command::StartCold { instance, .. } => {
                    Some(instance.clone())
                }
                _ => None,
            })
            .collect()
    }

    fn accepted(id: &str, attempt: u32) -> Observation {
        Observation::Started {
            instance: id.into(),
            attempt,
            result: StartResult::Accepted,
        }
    }
    fn found(id: &str, m: u64) -> Observation {
        Observation::MigrationFound {
            instance: id.into(),
            migration_id: m,
        }
    }
    fn server(id: &str, v: ServerView) -> Observation {
        Observation::Server {
            instance: id.into(),
            view: v,
        }
    }
    fn migration(id: &str, v: MigrationView) -> Observation {
        Observation::Migration {
            instance: id.into(),
            view: v,
        }
    }
    const G: u64 = 1 << 30;

    #[test]
    fn concurrency_bound_and_next_starts_when_one_ends() {
        let mut d = drain(
            3,
            Policy {
                max_concurrent: 2,
                ..Policy::default()
            },
        );
        let c = d.step(0, &[]);
        assert_eq!(starts(&c), vec!["i0", "i1"]);
        assert!(matches!(
            d.instances[0].phase,
            Phase::Starting {
                since: 0,
                attempt: 1
            }
        ));
        let c = d.step(1000, &[accepted("i0", 1), accepted("i1", 1)]);
        assert!(starts(&c).is_empty());
        assert!(c.contains(&Command::FindMigration {
            instance: "i0".into(),
            since: 0
        }));
        let c = d.step(
            2000,
            &[
                server("i0", sv("node4", "ACTIVE", "active", None)),
                server("i1", sv("node1", "MIGRATING", "active", Some("migrating"))),
            ],
        );
        assert_eq!(d.get("i0").unwrap().outcome(), Some(Outcome::Migrated));
        assert_eq!(d.get("i0").unwrap().destination.as_deref(), Some("node4"));
        assert_eq!(starts(&c), vec!["i2"]);
        assert_eq!(d.in_flight(), 2);
    }

    #[test]
    fn completed_migration_on_source_is_not_success() {
        let mut d = drain(
            1,
            Policy {
                retries: 0,
                ..Policy::default()
            },
        );
        d.step(0, &[]);
        d.step(1, &[accepted("i0", 1), found("i0", 7)]);
        d.step(
            2000,
            &[
                migration("i0", mv(7, "completed", G, 0)),
                server("i0", sv("node1", "ACTIVE", "active", None)),
            ],
        );
        let r = d.get("i0").unwrap();
        assert_eq!(r.outcome(), Some(Outcome::Failed));
        assert!(
            r.error
                .as_ref()
                .unwrap()
                .contains("completed but the server is still on node1")
        );
        assert!(d.is_done());
    }

    #[test]
    fn failed_migration_is_retried_then_fails() {
        let mut d = drain(
            1,
            Policy {
                retries: 1,
                ..Policy::default()
            },
        );
        d.step(0, &[]);
        d.step(1, &[accepted("i0", 1), found("i0", 7)]);
        let c = d.step(
            2000,
            &[
                migration("i0", mv(7, "error", G, G)),
                server("i0", sv("node1", "ACTIVE", "active", None)),
            ],
        );
        // Retried at once (slot free): attempt 2.
        assert!(c.contains(&Command::StartLive {
            instance: "i0".into(),
            attempt: 2,
            target: None
        }));
        assert_eq!(d.get("i0").unwrap().past_migrations, vec![7]);
        d.step(3000, &[accepted("i0", 2), found("i0", 7), found("i0", 8)]);
        // The old migration 7 is ignored when seen again.
        d.step(
            4000,
            &[
                migration("i0", mv(7, "error", G, G)),
                server("i0", sv("node1", "MIGRATING", "active", Some("migrating"))),
            ],
        );
        assert!(d.get("i0").unwrap().outcome().is_none());
        d.step(
            5000,
            &[
                migration("i0", mv(8, "failed", G, G)),
                server("i0", sv("node1", "ACTIVE", "active", None)),
            ],
        );
        let r = d.get("i0").unwrap();
        assert_eq!(r.outcome(), Some(Outcome::Failed));
        assert_eq!(r.attempts, 2);
        assert!(
            r.error
                .as_ref()
                .unwrap()
                .contains("migration 8 ended failed")
        );
    }

    #[test]
    fn error_state_is_failed_never_retried() {
        let mut d = drain(
            1,
            Policy {
                retries: 3,
                ..Policy::default()
            },
        );
        d.step(0, &[]);
        d.step(1, &[accepted("i0", 1)]);
        let mut s = sv("node1", "ERROR", "error", None);
        s.fault = Some("Unexpected error".into());
        let c = d.step(
            2000,
            &[migration("i0", mv(7, "error", G, G)), server("i0", s)],
        );
        assert!(starts(&c).is_empty());
        let r = d.get("i0").unwrap();
        assert_eq!(r.outcome(), Some(Outcome::Failed));
        assert!(r.error.as_ref().unwrap().contains("Unexpected error"));
    }

    #[test]
    fn conflict_409_backoff_bounded() {
        let mut d = drain(
            1,
            Policy {
                conflict_retries: 2,
                conflict_backoff_ms: 10_000,
                ..Policy::default()
            },
        );
        d.step(0, &[]);
        let conflict = |a| Observation::Started {
            instance: "i0".into(),
            attempt: a,
            result: StartResult::Conflict("task_state migrating".into()),
        };
        let c = d.step(100, &[conflict(1)]);
        assert!(starts(&c).is_empty());
        assert_eq!(d.instances[0].phase, Phase::Waiting { until: 10_100 });
        assert!(starts(&d.step(10_000, &[])).is_empty());
        assert_eq!(starts(&d.step(10_100, &[])), vec!["i0"]);
        d.step(10_200, &[conflict(1)]);
        assert_eq!(d.instances[0].phase, Phase::Waiting { until: 30_200 });
        d.step(30_200, &[]);
        d.step(30_300, &[conflict(1)]);
        let r = d.get("i0").unwrap();
        assert_eq!(r.outcome(), Some(Outcome::Failed));
        assert!(r.error.as_ref().unwrap().contains("409 3 time(s)"));
    }

    #[test]
    fn rejected_start_fails() {
        let mut d = drain(1, Policy::default());
        d.step(0, &[]);
        d.step(
            1,
            &[Observation::Started {
                instance: "i0".into(),
                attempt: 1,
                result: StartResult::Rejected("Compute host x could not be found.".into()),
            }],
        );
        assert_eq!(d.get("i0").unwrap().outcome(), Some(Outcome::Failed));
    }

    fn running(d: &mut Drain) {
        d.step(0, &[]);
        d.step(0, &[accepted("i0", 1), found("i0", 5)]);
    }

    fn tick(d: &mut Drain, now: Millis, status: &str, rem: u64) -> Vec<Command> {
        d.step(
            now,
            &[
                migration("i0", mv(5, status, 4 * G, rem)),
                server("i0", sv("node1", "MIGRATING", "active", Some("migrating"))),
            ],
        )
    }

    #[test]
    fn progress_lines_only_on_change_and_format() {
        let mut d = drain(12, Policy::default());
        d.instances.truncate(1);
        running(&mut d);
        let c = tick(&mut d, 1000, "running", 2 * G + G / 5);
        let lines: Vec<&Command> = c
            .iter()
            .filter(|c| matches!(c, Command::Progress { .. }))
            .collect();
        assert_eq!(
            lines,
            vec![&Command::Progress {
                instance: "i0".into(),
                line: "[1/1] vm-i0 → node4 running 45% (1.8/4.0 GiB)".into()
            }]
        );
        let c = tick(&mut d, 3000, "running", 2 * G + G / 5);
        assert!(!c.iter().any(|c| matches!(c, Command::Progress { .. })));
    }

    #[test]
    fn small_guests_progress_in_mib() {
        assert_eq!(transferred(40 << 20, 64 << 20), "40/64 MiB");
        assert_eq!(transferred(0, 64 << 20), "0/64 MiB");
        assert_eq!(transferred(1023 << 20, 1023 << 20), "1023/1023 MiB");
        assert_eq!(transferred(512 << 20, 1 << 30), "0.5/1.0 GiB");
        let mut d = drain(12, Policy::default());
        d.instances.truncate(1);
        running(&mut d);
        d.step(
            500,
            &[migration("i0", mv(5, "running", 64 << 20, 24 << 20))],
        );
        let line = d.instances[0].last_line.clone().unwrap();
        assert_eq!(line, "[1/1] vm-i0 → node4 running 62% (40/64 MiB)");
    }

    #[test]
    fn stall_aborts_with_numbers() {
        let mut d = drain(
            1,
            Policy {
                stall_timeout_s: 60,
                ..Policy::default()
            },
        );
        running(&mut d);
        tick(&mut d, 1000, "running", 3 * G);
        tick(&mut d, 30_000, "running", 2 * G);
        // Bouncing up and down without a new minimum is no progress.
        tick(&mut d, 60_000, "running", 3 * G);
        let c = tick(&mut d, 89_000, "running", 2 * G);
        assert!(!c.iter().any(|c| matches!(c, Command::Abort { .. })));
        let c = tick(&mut d, 90_000, "running", 2 * G);
        let ab = c
            .iter()
            .find(|c| matches!(c, Command::Abort { .. }))
            .unwrap();
        let Command::Abort {
            migration_id,
            reason,
            ..
        } = ab
        else {
            unreachable!()
        };
        assert_eq!(*migration_id, 5);
        assert!(
            reason.contains("60 s")
                && reason.contains("2048 MiB of 4096 MiB")
                && reason.contains("50%"),
            "{reason}"
        );
        // Not sent twice.
        let c = tick(&mut d, 92_000, "running", 2 * G);
        assert!(!c.iter().any(|c| matches!(c, Command::Abort { .. })));
        // Cancelled → aborted.
        d.step(
            94_000,
            &[
                migration("i0", mv(5, "cancelled", 4 * G, 2 * G)),
                server("i0", sv("node1", "ACTIVE", "active", None)),
            ],
        );
        let r = d.get("i0").unwrap();
        assert_eq!(r.outcome(), Some(Outcome::Aborted));
        assert!(r.decisions.iter().any(|x| x.starts_with("abort: stalled")));
    }

    #[test]
    fn stall_past_force_complete_at_force_completes_even_with_abort() {
        let mut d = drain(
            1,
            Policy {
                stall_timeout_s: 60,
                force_complete_at: 80,
                ..Policy::default()
            },
        );
        running(&mut d);
        tick(&mut d, 1000, "running", G / 2); // 100 - round(12.5) = 87%
        let c = tick(&mut d, 61_000, "running", G / 2);
        let fc = c
            .iter()
            .find(|c| matches!(c, Command::ForceComplete { .. }));
        let Some(Command::ForceComplete { reason, .. }) = fc else {
            panic!("{c:?}")
        };
        assert!(
            reason.contains("force-complete-at 80%") && reason.contains("87%"),
            "{reason}"
        );
        // Below the threshold the action (abort) applies.
        let mut d = drain(
            1,
            Policy {
                stall_timeout_s: 60,
                force_complete_at: 95,
                ..Policy::default()
            },
        );
        running(&mut d);
        tick(&mut d, 1000, "running", G / 2);
        let c = tick(&mut d, 61_000, "running", G / 2);
        assert!(c.iter().any(|c| matches!(c, Command::Abort { .. })));
    }

    #[test]
    fn migration_timeout_applies_timeout_action() {
        let mut d = drain(
            1,
            Policy {
                stall_timeout_s: 0,
                migration_timeout_s: 100,
                timeout_action: TimeoutAction::ForceComplete,
                ..Policy::default()
            },
        );
        running(&mut d);
        // Queued time does not count.
        tick(&mut d, 1000, "queued", 4 * G);
        tick(&mut d, 50_000, "running", 4 * G);
        let c = tick(&mut d, 149_000, "running", G);
        assert!(!c.iter().any(|c| matches!(c, Command::ForceComplete { .. })));
        let c = tick(&mut d, 150_000, "running", G / 2);
        assert!(c.iter().any(|c| matches!(c, Command::ForceComplete { reason, .. } if reason.contains("past migration-timeout 100 s"))));
        // Then success is verified by the server.
        d.step(
            155_000,
            &[
                migration("i0", mv(5, "completed", 4 * G, 0)),
                server("i0", sv("node4", "ACTIVE", "active", None)),
            ],
        );
        assert_eq!(d.get("i0").unwrap().outcome(), Some(Outcome::Migrated));
        assert_eq!(d.get("i0").unwrap().duration_s(), Some(155.0));
    }

    #[test]
    fn force_complete_before_novas_timer() {
        // 4096 MiB → 800 × 4 = 3200 s; margin = 2×2 s + 10 s = 14 s → act at 3186 s.
        let p = Policy {
            stall_timeout_s: 0,
            timeout_action: TimeoutAction::ForceComplete,
            ..Policy::default()
        };
        assert_eq!(p.nova_timeout_ms(4096), Some(3_200_000));
        assert_eq!(p.nova_timeout_ms(512), Some(1_600_000), "floored at 2 GiB");
        let mut d = drain(1, p);
        running(&mut d);
        tick(&mut d, 1000, "running", 4 * G);
        let c = tick(&mut d, 1000 + 3_185_000, "running", G);
        assert!(!c.iter().any(|c| matches!(c, Command::ForceComplete { .. })));
        let c = tick(&mut d, 1000 + 3_186_000, "running", G - 1);
        assert!(c.iter().any(|c| matches!(c, Command::ForceComplete { reason, .. } if reason.contains("Nova's completion timer (800 s/GiB × 4.0 GiB = 3200 s)"))), "{c:?}");
        // With abort as the action it is left to Nova.
        let mut d = drain(
            1,
            Policy {
                stall_timeout_s: 0,
                ..Policy::default()
            },
        );
        running(&mut d);
        tick(&mut d, 1000, "running", 4 * G);
        let c = tick(&mut d, 1000 + 3_190_000, "running", G);
        assert!(
            !c.iter()
                .any(|c| matches!(c, Command::Abort { .. } | Command::ForceComplete { .. }))
        );
    }

    #[test]
    fn abort_requested_aborts_in_flight_starts_no_more() {
        let mut d = drain(
            3,
            Policy {
                max_concurrent: 1,
                ..Policy::default()
            },
        );
        running(&mut d);
        tick(&mut d, 1000, "running", 2 * G);
        let c = d.step(
            2000,
            &[
                Observation::AbortRequested { vm: None },
                migration("i0", mv(5, "running", 4 * G, 2 * G)),
            ],
        );
        assert!(c.iter().any(|c| matches!(
            c,
            Command::Abort {
                migration_id: 5,
                ..
            }
        )));
        assert!(starts(&c).is_empty());
        assert_eq!(d.get("i1").unwrap().outcome(), Some(Outcome::Pending));
        assert_eq!(d.get("i2").unwrap().outcome(), Some(Outcome::Pending));
        assert!(!d.is_done());
        d.step(
            4000,
            &[
                migration("i0", mv(5, "cancelled", 4 * G, 2 * G)),
                server("i0", sv("node1", "ACTIVE", "active", None)),
            ],
        );
        assert_eq!(d.get("i0").unwrap().outcome(), Some(Outcome::Aborted));
        assert!(d.is_done());
    }

    #[test]
    fn abort_queued_needs_2_65_and_postcopy_not_abortable() {
        let mut d = drain(
            1,
            Policy {
                can_abort_queued: false,
                ..Policy::default()
            },
        );
        running(&mut d);
        let c = d.step(
            1000,
            &[
                Observation::AbortRequested {
                    vm: Some("vm-i0".into()),
                },
                migration("i0", mv(5, "queued", 4 * G, 4 * G)),
            ],
        );
        assert!(!c.iter().any(|c| matches!(c, Command::Abort { .. })));
        assert!(
            d.get("i0")
                .unwrap()
                .decisions
                .iter()
                .any(|x| x.contains("2.65"))
        );
        let c = tick(&mut d, 3000, "running", 4 * G);
        assert!(c.iter().any(|c| matches!(c, Command::Abort { .. })));

        let mut d = drain(1, Policy::default());
        running(&mut d);
        let c = d.step(
            1000,
            &[
                Observation::AbortRequested { vm: None },
                migration("i0", mv(5, "running (post-copy)", 4 * G, G)),
            ],
        );
        assert!(!c.iter().any(|c| matches!(c, Command::Abort { .. })));
        assert!(
            d.get("i0")
                .unwrap()
                .decisions
                .iter()
                .any(|x| x.contains("post-copy"))
        );
        // It completes: migrated (Nova's truth wins).
        d.step(2000, &[server("i0", sv("node4", "ACTIVE", "active", None))]);
        assert_eq!(d.get("i0").unwrap().outcome(), Some(Outcome::Migrated));
    }

    #[test]
    fn cold_migration_confirms_resize() {
        let es = vec![entry("c", Action::Cold, 1024)];
        let mut d = Drain::new("node1", &es, Policy::default(), 0);
        let c = d.step(0, &[]);
        assert!(matches!(&c[1], Command::StartCold { attempt: 1, .. }));
        d.step(1, &[accepted("c", 1)]);
        d.step(
            2,
            &[server(
                "c",
                sv("node1", "RESIZE", "stopped", Some("resize_migrating")),
            )],
        );
        let c = d.step(
            3,
            &[server("c", sv("node5", "VERIFY_RESIZE", "resized", None))],
        );
        assert!(c.contains(&Command::ConfirmResize {
            instance: "c".into()
        }));
        let c = d.step(
            4,
            &[server("c", sv("node5", "VERIFY_RESIZE", "resized", None))],
        );
        assert!(!c.contains(&Command::ConfirmResize {
            instance: "c".into()
        }));
        d.step(5, &[server("c", sv("node5", "SHUTOFF", "stopped", None))]);
        let r = d.get("c").unwrap();
        assert_eq!(r.outcome(), Some(Outcome::ColdMigrated));
        assert_eq!(r.destination.as_deref(), Some("node5"));
    }

    #[test]
    fn accepted_but_nothing_happens_is_a_failed_attempt_after_grace() {
        let mut d = drain(
            1,
            Policy {
                retries: 0,
                ..Policy::default()
            },
        );
        d.step(0, &[]);
        d.step(0, &[accepted("i0", 1)]);
        d.step(1000, &[server("i0", sv("node1", "ACTIVE", "active", None))]);
        assert!(d.get("i0").unwrap().outcome().is_none());
        d.step(
            31_000,
            &[server("i0", sv("node1", "ACTIVE", "active", None))],
        );
        assert_eq!(d.get("i0").unwrap().outcome(), Some(Outcome::Failed));
    }

    #[test]
    fn paused_instance_success_and_zero_concurrency_is_one() {
        let mut d = drain(
            2,
            Policy {
                max_concurrent: 0,
                ..Policy::default()
            },
        );
        assert_eq!(starts(&d.step(0, &[])), vec!["i0"]);
        d.step(1, &[accepted("i0", 1)]);
        d.step(2, &[server("i0", sv("node3", "PAUSED", "paused", None))]);
        assert_eq!(d.get("i0").unwrap().outcome(), Some(Outcome::Migrated));
    }

    #[test]
    fn abort_before_the_start_is_accepted_then_aborts_once_running() {
        let mut d = drain(2, Policy::default());
        d.step(0, &[]);
        // The abort arrives while the start is in flight.
        let c = d.step(10, &[Observation::AbortRequested { vm: None }]);
        assert!(starts(&c).is_empty());
        assert_eq!(d.get("i1").unwrap().outcome(), Some(Outcome::Pending));
        d.step(20, &[accepted("i0", 1), found("i0", 5)]);
        let c = tick(&mut d, 30, "accepted", 4 * G);
        assert!(!c.iter().any(|c| matches!(c, Command::Abort { .. })));
        let c = tick(&mut d, 40, "running", 4 * G);
        assert!(c.iter().any(|c| matches!(
            c,
            Command::Abort {
                migration_id: 5,
                ..
            }
        )));
        d.step(
            50,
            &[
                migration("i0", mv(5, "cancelled", 4 * G, 4 * G)),
                server("i0", sv("node1", "ACTIVE", "active", None)),
            ],
        );
        let r = d.get("i0").unwrap();
        assert_eq!(r.outcome(), Some(Outcome::Aborted));
        assert!(
            r.error
                .as_ref()
                .unwrap()
                .starts_with("aborted: abort requested by the operator"),
            "{:?}",
            r.error
        );
        assert!(d.is_done());
    }

    #[test]
    fn abort_of_one_named_vm_lets_the_others_finish() {
        let mut d = drain(
            3,
            Policy {
                max_concurrent: 2,
                ..Policy::default()
            },
        );
        d.step(0, &[]);
        d.step(
            1,
            &[
                accepted("i0", 1),
                accepted("i1", 1),
                found("i0", 5),
                found("i1", 6),
            ],
        );
        let c = d.step(
            2,
            &[
                Observation::AbortRequested {
                    vm: Some("vm-i1".into()),
                },
                migration("i0", mv(5, "running", 4 * G, 2 * G)),
                migration("i1", mv(6, "running", 4 * G, 2 * G)),
            ],
        );
        let aborts: Vec<&Command> = c
            .iter()
            .filter(|c| matches!(c, Command::Abort { .. }))
            .collect();
        assert_eq!(aborts.len(), 1);
        assert!(matches!(
            aborts[0],
            Command::Abort {
                migration_id: 6,
                ..
            }
        ));
        assert!(starts(&c).is_empty(), "start no more");
        assert_eq!(d.get("i2").unwrap().outcome(), Some(Outcome::Pending));
        d.step(
            3,
            &[
                server("i0", sv("node4", "ACTIVE", "active", None)),
                server("i1", sv("node1", "ACTIVE", "active", None)),
                migration("i1", mv(6, "cancelled", 4 * G, 2 * G)),
            ],
        );
        assert_eq!(d.get("i0").unwrap().outcome(), Some(Outcome::Migrated));
        assert_eq!(d.get("i1").unwrap().outcome(), Some(Outcome::Aborted));
        assert!(d.is_done());
    }

    #[test]
    fn cold_migration_failure_is_retried() {
        let es = vec![entry("c", Action::Cold, 1024)];
        let mut d = Drain::new("node1", &es, Policy::default(), 0);
        d.step(0, &[]);
        d.step(1, &[accepted("c", 1), found("c", 3)]);
        let c = d.step(
            2,
            &[
                migration("c", mv(3, "error", 0, 0)),
                server("c", sv("node1", "SHUTOFF", "stopped", None)),
            ],
        );
        assert!(
            c.iter()
                .any(|c| matches!(c, Command::StartCold { attempt: 2, .. }))
        );
    }

    #[test]
    fn refused_confirm_is_retried_three_times() {
        let es = vec![entry("c", Action::Cold, 1024)];
        let mut d = Drain::new("node1", &es, Policy::default(), 0);
        d.step(0, &[]);
        d.step(1, &[accepted("c", 1)]);
        let verify = || server("c", sv("node5", "VERIFY_RESIZE", "resized", None));
        let refused = || Observation::CommandFailed {
            instance: "c".into(),
            command: "ConfirmResize".into(),
            message: "409".into(),
        };
        let confirms = |c: &[Command]| {
            c.iter()
                .filter(|c| matches!(c, Command::ConfirmResize { .. }))
                .count()
        };
        assert_eq!(confirms(&d.step(2, &[verify()])), 1);
        assert_eq!(confirms(&d.step(3, &[refused(), verify()])), 1);
        assert_eq!(confirms(&d.step(4, &[refused(), verify()])), 1);
        assert_eq!(confirms(&d.step(5, &[refused(), verify()])), 0);
        assert!(
            d.get("c")
                .unwrap()
                .decisions
                .iter()
                .any(|x| x.contains("ConfirmResize refused"))
        );
    }

    #[test]
    fn unknown_migration_view_taken_only_when_created_after_intent() {
        let mut d = drain(1, Policy::default());
        d.step(1000, &[]);
        d.step(1001, &[accepted("i0", 1)]);
        let mut old = mv(3, "error", G, G);
        old.created_at = Some(999);
        d.step(1002, &[migration("i0", old)]);
        assert_eq!(d.get("i0").unwrap().migration_id, None);
        let mut new = mv(4, "running", G, G);
        new.created_at = Some(1000);
        let c = d.step(1003, &[migration("i0", new)]);
        assert_eq!(d.get("i0").unwrap().migration_id, Some(4));
        assert!(!c.iter().any(|c| matches!(c, Command::FindMigration { .. })));
    }

    #[test]
    fn resolve_max_concurrent_follows_spec() {
        assert_eq!(Policy::resolve_max_concurrent(3, Some(1), true), 3);
        assert_eq!(Policy::resolve_max_concurrent(0, None, true), 2);
        assert_eq!(Policy::resolve_max_concurrent(0, Some(0), false), 1);
        assert_eq!(Policy::resolve_max_concurrent(0, Some(2), false), 2);
        assert_eq!(Policy::resolve_max_concurrent(0, Some(2), true), 3);
    }

    #[test]
    fn serde_round_trip() {
        let mut d = drain(2, Policy::default());
        running(&mut d);
        tick(&mut d, 1000, "running", 2 * G);
        let s = serde_json::to_string(&d).unwrap();
        assert!(s.contains("\"phase\":\"started\""));
        assert!(s.contains("\"status\":\"running\""));
        let back: Drain = serde_json::from_str(&s).unwrap();
        assert_eq!(back, d);
    }
}
