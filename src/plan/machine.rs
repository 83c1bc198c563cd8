//! The drain state machine.
//!
//! [`Drain`] is constructed from the plan entries to move, a [`Policy`] and
//! `now`. Its surface is sans-I/O, in the manner of quinn-proto:
//!
//! * inputs go in through [`Drain::handle`] (one [`Observation`] at a time;
//!   each is applied or explicitly [`Handled::Ignored`] with the reason);
//! * [`Drain::poll`] takes every decision due at `now` and returns the
//!   [`Command`]s to execute — the starts, the control calls, and the
//!   look-ups it needs next (the migration list, a migration's progress, a
//!   server). The driver executes every command it is given, in order,
//!   and reports what came back as observations; it never filters them;
//! * [`Drain::poll_timeout`] says when the core next needs to be polled
//!   (the next tick, a back-off's end, or sooner when a running
//!   migration's remaining memory is about to reach zero).
//!
//! [`Drain::step`] is `handle` for each input, then `poll`.
//!
//! Contract with the driver:
//! 1. After every `poll`, **persist the state first** (it is the journal
//!    body, `serde`), then execute the commands. A `StartLive`/`StartCold`
//!    is only returned after the instance was put in [`Phase::Starting`]
//!    (the intent, with its time), so a crash between the two leaves the
//!    intent on disk and [`crate::plan::reconcile`] decides whether the POST
//!    happened.
//! 2. Report every start as [`Observation::Started`]: 202 → `Accepted`;
//!    409 → `Conflict`; a request that provably never reached Nova
//!    (connection refused, TLS handshake failed, no token) → `NotSent`; a
//!    timeout, a broken connection, 429 and 5xx → `Accepted` (Nova's state
//!    then tells); any other 4xx → `Rejected`.
//! 3. `ListMigrations` → one [`Observation::Migration`] per record listed,
//!    then [`Observation::Listed`] (also when the call failed).
//!    `ReadServer` → `Server`, or `ServerGone` on 404. `ReadProgress` →
//!    `Migration` with the progress fields. A control command (and
//!    `ResetState`) → `CommandDone` or `CommandFailed`. `CheckGuest` →
//!    `Guest` (a read-only libvirt query on this node).
//!
//! Invariants the machine owns (ARCHITECTURE.md, I1 and I2):
//! * **Bounded.** Every phase has a bound: a start waits at most its
//!   back-off; an accepted start with no migration and the server idle on
//!   the source fails the attempt after the idle grace; a migration that
//!   stays before `running` for [`STUCK_MS`] while none of ours runs is
//!   aborted (or, where it cannot be, failed); an abort or force-complete
//!   that Nova accepted and that does not end the migration within its
//!   grace ends the instance with what is known; an instance deleted,
//!   stopped or otherwise changed by someone else ends at once. An abort
//!   request ends the run once Nova honours the cancels (a poll or two),
//!   and at the latest [`ABORT_GRACE_MS`] after the request.
//! * **Only what is here.** No start is issued unless the latest view of
//!   the instance, at most one poll interval old (the plan's own listing,
//!   or a `ReadServer` the machine asks for), shows it on this node, idle,
//!   in the state and with the policy metadata it was planned with. An
//!   instance that left by other hands, was deleted, changed state, or
//!   whose owner changed its policy, ends `skipped` with the reason.
//!
//! Decisions (all carry the numbers that triggered them, stored in the
//! instance's `decisions` and echoed as a `Progress` line):
//! * **Stall**: while the migration is `running`, its progress samples go
//!   through [`super::convergence`] (passes from remaining's saw-tooth; the
//!   dirty memory left per pass must shrink); when it has made no progress
//!   for `stall_timeout_s` (0 = off) and a pass since failed to shrink the
//!   dirty memory (or nothing was copied at all), the `timeout_action` is
//!   taken —
//!   except that a migration at or past `force_complete_at` percent
//!   (`100 - remaining*100/total`, Nova's own progress formula) is
//!   force-completed even when the action is `abort`.
//! * **Hard limit**: `migration_timeout_s` (0 = off) after the migration was
//!   first seen `running` → `timeout_action`.
//! * **Nova's timer**: Nova aborts (by default) after
//!   `live_migration_completion_timeout` (800 s) × data GiB. We estimate it
//!   conservatively (RAM only, floored at 2 GiB) from the first time the
//!   migration is seen running. When our decision would be force-complete
//!   we take it at the latest `2 × poll interval + 10 s` before that
//!   estimate, so Nova's abort never pre-empts it. When our decision would
//!   be abort, we leave it to Nova (SPEC: `migration-timeout 0`).
//! * **409 on start, or a start that never reached Nova**: retried after
//!   `conflict_backoff_ms × 2^(n-1)` capped at 120 s — a 409 at most
//!   `conflict_retries` times; a start that never reached Nova within
//!   `retries` (it uses the same budget as a failed attempt, but is
//!   counted apart: `unsent`).
//! * **After our abort**: the instance is watched for [`SETTLE_MS`] more
//!   (Nova 34 flips the record to "error" and may put the instance in
//!   ERROR while its guest runs on). "error"/ERROR is the abort's end, not
//!   a failure; an instance in ERROR gets a `CheckGuest`, is reported as
//!   it is, and with `reset_after_abort` is reset (`ResetState`) only when
//!   its guest is `Running`.
//! * **Policy cold on a running instance** (its owner's opt-in, see
//!   `machine/power.rs`): `StopServer`, then the cold migration once Nova shows it
//!   stopped here, then — whatever the migration's end (moved, failed,
//!   aborted) — `StartServer` wherever Nova shows it stopped, so an
//!   instance this run stopped is running again at the end, or the report
//!   says why not and what to do.
//! * **Retries**: an attempt that ends with the server idle on the source
//!   (migration `failed`/`error`/`cancelled`, or `completed` while the
//!   server is still on the source — a known Nova failure mode) is retried
//!   up to `retries` times; an instance left in ERROR is `failed`, never
//!   retried.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::convergence::{self, Convergence, Sample, StallKind};
use super::policy::POLICY_KEY;
use super::preflight::{Action, PlanEntry};
pub use super::types::{
    CLOCK_SKEW_MS, Destination, MigrationId, MigrationStatus, MigrationView, ServerView, VmState,
    owned_by_attempt,
};
use super::{InstanceId, Millis};

pub(super) mod power;

/// A migration that stays accepted/queued/preparing this long, while none
/// of this drain's migrations is running, is stuck.
pub const STUCK_MS: Millis = 600_000;
/// How long an accepted abort, or an operator's abort request, may take to
/// end a migration before the instance is ended with what is known.
pub const ABORT_GRACE_MS: Millis = 30_000;
/// How long a force-completed migration may take to complete before it is
/// aborted (where it can be).
pub const FORCE_GRACE_MS: Millis = 120_000;
/// Refusals of an abort or a confirm before the machine stops asking.
pub const CONTROL_RETRIES: u32 = 3;
/// Soonest re-poll when a running migration is about to complete.
pub const MIN_WAKE_MS: Millis = 250;
/// The server of a migration that has not ended is read again when its
/// last view is this old: a record can stay "queued" for ever after its
/// server was deleted, stopped or moved by someone else, and only the
/// server says so.
pub const SERVER_RECHECK_MS: Millis = 10_000;
/// How long an instance whose migration this drain aborted is watched
/// after the abort ended it: Nova 34's libvirt driver flips the record to
/// "error" and may put the instance in vm_state ERROR seconds after
/// "cancelled" (tests/fixtures/qemu/dirty-8-200-abort.json: 3.5 s).
pub const SETTLE_MS: Millis = 10_000;

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
    /// Seconds without progress (the first pass's remaining shrinking, or a
    /// later pass leaving less dirty memory: [`super::convergence`]); 0 = off.
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
    /// `reset-after-abort`: an instance Nova left in ERROR after our abort
    /// is reset to active when its guest is confirmed running on this node.
    #[serde(default)]
    pub reset_after_abort: bool,
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
            reset_after_abort: false,
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
    /// The tick: how often the in-flight migrations are looked at.
    pub fn interval_ms(&self) -> u64 {
        self.poll_interval_ms.max(100)
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

impl MoveKind {
    /// The state the instance was planned in is still its state.
    fn planned_state(self, s: &VmState) -> bool {
        match self {
            MoveKind::Live => s.is_live(),
            MoveKind::Cold => *s == VmState::Stopped,
        }
    }
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
    /// Left alone because someone else deleted, moved or changed it (the
    /// record's `error` says what was seen).
    Skipped,
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
        migration_id: Option<MigrationId>,
    },
    /// Policy cold: Nova was asked at `since` to stop the running instance;
    /// its cold migration starts once Nova shows it stopped here.
    Stopping {
        since: Millis,
    },
    /// Its move ended with `outcome` (and `error`); this run had stopped
    /// it, so it is being started again (asked at `since`) before the end.
    Restarting {
        since: Millis,
        outcome: Outcome,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Done {
        outcome: Outcome,
    },
}

/// Result of a start command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "kebab-case")]
pub enum StartResult {
    /// 202 (or an answer that leaves it open: Nova's state tells).
    Accepted,
    /// 409 (task_state / vm_state conflict): retried with back-off.
    Conflict(String),
    /// Provably never reached Nova (I5): retried with back-off.
    NotSent(String),
    /// Any other refusal (400, 403, 404…): the instance fails.
    Rejected(String),
}

/// A control call on one instance's migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Control {
    ConfirmResize,
    ForceComplete,
    Abort,
    /// `os-resetState` to active (reset-after-abort).
    ResetState,
    /// `os-stop` (policy cold, before the migration).
    Stop,
    /// `os-start` (policy cold, after it).
    Start,
}

impl Control {
    pub fn as_str(self) -> &'static str {
        match self {
            Control::ConfirmResize => "confirm-resize",
            Control::ForceComplete => "force-complete",
            Control::Abort => "abort",
            Control::ResetState => "reset-state",
            Control::Stop => "stop",
            Control::Start => "start",
        }
    }
}

/// What the driver saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Observation {
    Started {
        instance: InstanceId,
        attempt: u32,
        result: StartResult,
    },
    /// The migration of the instance's current attempt is this one.
    MigrationFound {
        instance: InstanceId,
        migration_id: MigrationId,
    },
    Server {
        instance: InstanceId,
        view: ServerView,
    },
    /// `GET /servers/{id}` answered 404.
    ServerGone { instance: InstanceId },
    /// One migration record (from the list, or with progress).
    Migration {
        instance: InstanceId,
        view: MigrationView,
    },
    /// A `ListMigrations` was carried out (`ok: false`: the call failed).
    Listed { ok: bool },
    CommandDone {
        instance: InstanceId,
        command: Control,
    },
    /// A control command was refused (`gone`: its migration is no more, 404).
    CommandFailed {
        instance: InstanceId,
        command: Control,
        message: String,
        #[serde(default)]
        gone: bool,
    },
    /// `nova-live-migration abort [--vm X]`: abort the in-flight migrations
    /// and start no more (or only X: abort it, or leave it unstarted).
    AbortRequested { vm: Option<String> },
    /// What libvirt on this node says of the instance's guest (answer to
    /// [`Command::CheckGuest`]).
    Guest {
        instance: InstanceId,
        state: GuestState,
    },
}

/// The instance's guest on this node, from a read-only libvirt query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "detail", rename_all = "kebab-case")]
pub enum GuestState {
    Running,
    /// Defined here but not running (libvirt's word: "paused", "shut off"…).
    NotRunning(String),
    /// No such domain on this node.
    Absent,
    /// The query failed (why).
    Unknown(String),
}

impl GuestState {
    fn describe(&self) -> String {
        match self {
            GuestState::Running => "running".into(),
            GuestState::NotRunning(s) => s.clone(),
            GuestState::Absent => "not defined on this node".into(),
            GuestState::Unknown(e) => format!("unknown ({e})"),
        }
    }
}

impl Observation {
    fn instance(&self) -> Option<&str> {
        match self {
            Observation::Started { instance, .. }
            | Observation::MigrationFound { instance, .. }
            | Observation::Server { instance, .. }
            | Observation::ServerGone { instance }
            | Observation::Migration { instance, .. }
            | Observation::CommandDone { instance, .. }
            | Observation::CommandFailed { instance, .. }
            | Observation::Guest { instance, .. } => Some(instance),
            Observation::Listed { .. } | Observation::AbortRequested { .. } => None,
        }
    }
}

/// Why an observation changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// No instance of this drain has that id.
    UnknownInstance,
    /// The instance already has its result.
    Finished,
    /// A start result for another attempt than the one in flight.
    NotThisAttempt,
    /// A migration record of an earlier attempt, or not created by this one.
    NotThisMigration,
    /// The instance is not in a phase this input is about.
    WrongPhase,
    /// An abort request naming no instance of this run.
    NoSuchVm(String),
}

/// The outcome of [`Drain::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    Applied,
    Ignored(Ignored),
}

/// What the driver must do.
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
    /// `GET /os-migrations?source_compute=<source>&changes-since=<since>`
    /// (ms; the driver formats it).
    ListMigrations {
        source: String,
        since: Millis,
    },
    /// `GET /servers/{id}/migrations/{mid}` (progress of a live migration).
    ReadProgress {
        instance: InstanceId,
        migration_id: MigrationId,
    },
    /// `GET /servers/{id}`.
    ReadServer {
        instance: InstanceId,
    },
    ConfirmResize {
        instance: InstanceId,
    },
    ForceComplete {
        instance: InstanceId,
        migration_id: MigrationId,
        reason: String,
    },
    Abort {
        instance: InstanceId,
        migration_id: MigrationId,
        reason: String,
    },
    /// Ask libvirt on this node, read-only, for the state of the
    /// instance's guest (`virsh -r domstate <instance_name>`) →
    /// [`Observation::Guest`].
    CheckGuest {
        instance: InstanceId,
    },
    /// `os-resetState` to active → `CommandDone`/`CommandFailed` with
    /// [`Control::ResetState`].
    ResetState {
        instance: InstanceId,
        reason: String,
    },
    /// `os-stop` (policy cold) → `CommandDone`/`CommandFailed` with
    /// [`Control::Stop`].
    StopServer {
        instance: InstanceId,
        reason: String,
    },
    /// `os-start` (an instance this run stopped) → `CommandDone`/
    /// `CommandFailed` with [`Control::Start`].
    StartServer {
        instance: InstanceId,
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
    /// When `server` was read.
    #[serde(default)]
    pub server_at: Option<Millis>,
    /// A `ReadServer` was asked for at this time and not yet answered.
    #[serde(default)]
    pub server_asked: Option<Millis>,
    /// A `ReadProgress` was asked for at this time.
    #[serde(default)]
    pub progress_asked: Option<Millis>,
    pub migration: Option<MigrationView>,
    /// When the migration's status last changed.
    #[serde(default)]
    pub status_since: Option<Millis>,
    pub running_since: Option<Millis>,
    pub best_remaining: Option<u64>,
    pub progress_at: Option<Millis>,
    /// The previous progress sample: (time, remaining bytes).
    #[serde(default)]
    pub sample: Option<(Millis, u64)>,
    /// When the machine next wants a look (a migration about to complete).
    #[serde(default)]
    pub wake_at: Option<Millis>,
    /// Is the migration converging (passes, dirty memory per pass)?
    #[serde(default)]
    pub conv: Convergence,
    /// The last status line: when, for which status, at which percentage
    /// and pass (at most one per clear step, and one per 5 s of a status).
    #[serde(default)]
    pub line_at: Option<Millis>,
    #[serde(default)]
    pub line_status: Option<String>,
    #[serde(default)]
    pub line_pct: Option<u8>,
    #[serde(default)]
    pub line_pass: u32,
    pub idle_since: Option<Millis>,
    /// Force-complete asked (`force_completed`) and when Nova accepted it.
    pub force_completed: bool,
    #[serde(default)]
    pub force_accepted_at: Option<Millis>,
    /// An abort was sent and not yet answered.
    #[serde(default)]
    pub abort_pending: bool,
    /// Nova accepted the abort at this time.
    #[serde(default)]
    pub abort_accepted_at: Option<Millis>,
    #[serde(default)]
    pub abort_failures: u32,
    /// When Nova last refused the abort (sent again a tick later).
    #[serde(default)]
    pub abort_refused_at: Option<Millis>,
    /// A control call answered 404: the migration record is no more.
    #[serde(default)]
    pub migration_gone: bool,
    /// Why the abort was sent (the operator, a stall, a timeout…).
    #[serde(default)]
    pub abort_reason: Option<String>,
    pub confirm_sent: bool,
    pub confirm_failures: u32,
    /// Our abort ended the attempt at this time: watching how Nova leaves
    /// the instance ([`SETTLE_MS`]).
    #[serde(default)]
    pub settle_since: Option<Millis>,
    /// The guest check: asked at, and its answer.
    #[serde(default)]
    pub guest_asked: Option<Millis>,
    #[serde(default)]
    pub guest: Option<GuestState>,
    /// reset-after-abort: sent and not answered, accepted, refusals.
    #[serde(default)]
    pub reset_pending: bool,
    #[serde(default)]
    pub reset_accepted: bool,
    #[serde(default)]
    pub reset_failures: u32,
    /// Policy cold: the last stop/start sent (at), how many were sent, and
    /// Nova's last refusal of one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_sent_at: Option<Millis>,
    #[serde(default)]
    pub power_sends: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_refused: Option<String>,
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
    /// Starts that never reached Nova (I5), counted apart from attempts.
    #[serde(default)]
    pub unsent: u32,
    /// When the instance was last seen where and as the plan saw it (the
    /// plan's own listing at first): a start needs a view of the same
    /// instant (I2).
    #[serde(default)]
    pub seen_at: Option<Millis>,
    pub first_started_at: Option<Millis>,
    pub ended_at: Option<Millis>,
    pub destination: Option<String>,
    pub migration_id: Option<MigrationId>,
    /// Migrations of earlier, failed attempts (ignored when seen again).
    pub past_migrations: Vec<MigrationId>,
    pub error: Option<String>,
    /// Every decision taken, with the numbers behind it.
    pub decisions: Vec<String>,
    pub abort_requested: bool,
    /// When the operator's abort of it (or of the whole run) was taken.
    #[serde(default)]
    pub abort_requested_at: Option<Millis>,
    #[serde(default)]
    pub track: Track,
    #[serde(default)]
    pub last_line: Option<String>,
    /// Its metadata `nova-live-migration:policy` when planned: another
    /// value right before the start leaves it alone (the owner changed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_policy: Option<String>,
    /// Policy cold on a running instance: stopped before its cold
    /// migration, started again after.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop_first: bool,
    /// When this run first asked Nova to stop it: from then on the run
    /// ends only after starting it again wherever Nova shows it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<Millis>,
}

impl InstanceRecord {
    pub fn outcome(&self) -> Option<Outcome> {
        match self.phase {
            Phase::Done { outcome } => Some(outcome),
            _ => None,
        }
    }
    /// A migration of it may be in flight (intent written or accepted), or
    /// it is being stopped for one, or started again after one.
    pub fn in_flight(&self) -> bool {
        matches!(
            self.phase,
            Phase::Starting { .. }
                | Phase::Started { .. }
                | Phase::Stopping { .. }
                | Phase::Restarting { .. }
        )
    }
    /// Seconds from the first accepted start to the end.
    pub fn duration_s(&self) -> Option<f64> {
        Some((self.ended_at?.saturating_sub(self.first_started_at?)) as f64 / 1000.0)
    }
    /// Its migration is copying memory (or in post-copy).
    fn running(&self) -> bool {
        matches!(self.phase, Phase::Started { .. })
            && self.track.migration.as_ref().is_some_and(|m| {
                matches!(
                    m.status,
                    MigrationStatus::Running | MigrationStatus::RunningPostCopy
                )
            })
    }
    fn destination_label(&self) -> String {
        self.destination
            .clone()
            .or_else(|| self.target.clone())
            .unwrap_or_else(|| "scheduler".into())
    }
}

/// What an operator's abort of an interrupted run (no process watching it)
/// learnt about one in-flight instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbortFact {
    /// Its migration was aborted now.
    Aborted,
    /// It cannot be aborted (post-copy, finishing): it ends on its own.
    StillMoving,
    /// No migration in progress: the server is on this host (`None`: gone).
    At(Option<String>),
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
    /// When the operator's abort of the whole run was taken.
    #[serde(default)]
    pub abort_at: Option<Millis>,
    /// When the migrations were last listed (asked), and answered.
    #[serde(default)]
    pub list_asked: Option<Millis>,
    #[serde(default)]
    pub listed_at: Option<Millis>,
    /// When a list last succeeded (evidence for the "no record" bound).
    #[serde(default)]
    pub listed_ok_at: Option<Millis>,
    /// Lines produced by [`Drain::handle`], given out by the next poll.
    #[serde(skip)]
    pub held: Vec<Command>,
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

/// What `evaluate` needs of the drain beside the record.
struct Ctx<'a> {
    source: &'a str,
    policy: &'a Policy,
    total: usize,
    now: Millis,
    /// Another of this drain's migrations is running.
    others_running: bool,
    /// When the migrations were last listed successfully.
    listed_ok_at: Option<Millis>,
    /// When the operator's abort of the whole run was taken.
    run_abort_at: Option<Millis>,
}

impl Drain {
    /// A drain of `entries` (the moving ones are kept, in order). The plan's
    /// listing at `now` is the first view of each instance.
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
                kind: match e.action {
                    Action::Cold | Action::ColdRestart => MoveKind::Cold,
                    _ => MoveKind::Live,
                },
                index: i + 1,
                ram_mb: e.ram_mb,
                target: e.target_host().map(str::to_string),
                phase: Phase::Pending,
                attempts: 0,
                conflicts: 0,
                unsent: 0,
                seen_at: Some(now),
                first_started_at: None,
                ended_at: None,
                destination: None,
                migration_id: None,
                past_migrations: vec![],
                error: None,
                decisions: vec![],
                abort_requested: false,
                abort_requested_at: None,
                track: Track::default(),
                last_line: None,
                planned_policy: e.policy.metadata.clone(),
                stop_first: e.action == Action::ColdRestart,
                stopped_at: None,
            })
            .collect();
        Drain {
            source: source.to_string(),
            policy,
            created_at: now,
            instances,
            stop_starting: false,
            abort_at: None,
            list_asked: None,
            listed_at: None,
            listed_ok_at: None,
            held: Vec::new(),
        }
    }

    pub fn is_done(&self) -> bool {
        self.instances.iter().all(|r| r.outcome().is_some())
    }

    /// The instances holding one of the `max_concurrent` slots: a start
    /// intended or accepted, or a stop for one (starting one again after
    /// its move takes none: it may come at any end, e.g. a skip).
    pub fn in_flight(&self) -> usize {
        self.instances
            .iter()
            .filter(|r| r.in_flight() && !matches!(r.phase, Phase::Restarting { .. }))
            .count()
    }

    /// Instances whose migration may be in flight.
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

    /// `7/12 moved, 2 running, 1 failed` — the workload status of a drain.
    pub fn summary(&self) -> String {
        let (mut moved, mut failed, mut aborted, mut skipped) = (0, 0, 0, 0);
        for r in &self.instances {
            match r.outcome() {
                Some(Outcome::Migrated | Outcome::ColdMigrated) => moved += 1,
                Some(Outcome::Failed) => failed += 1,
                Some(Outcome::Aborted | Outcome::Pending) => aborted += 1,
                Some(Outcome::Skipped) => skipped += 1,
                None => {}
            }
        }
        let mut s = format!(
            "{moved}/{} moved, {} in flight",
            self.total(),
            self.in_flight()
        );
        for (n, what) in [
            (failed, "failed"),
            (aborted, "aborted"),
            (skipped, "skipped"),
        ] {
            if n > 0 {
                s.push_str(&format!(", {n} {what}"));
            }
        }
        s
    }

    /// Applies every input, then [`Drain::poll`].
    pub fn step(&mut self, now: Millis, obs: &[Observation]) -> Vec<Command> {
        let mut out = Vec::new();
        for o in obs {
            self.handle_into(now, o, &mut out);
        }
        out.extend(self.poll(now));
        out
    }

    /// Applies one input. Lines it produces (e.g. a 409's back-off) come
    /// out of the next [`Drain::poll`].
    pub fn handle(&mut self, now: Millis, o: &Observation) -> Handled {
        let mut out = Vec::new();
        let h = self.handle_into(now, o, &mut out);
        self.held.extend(out);
        h
    }

    fn handle_into(&mut self, now: Millis, o: &Observation, out: &mut Vec<Command>) -> Handled {
        use Handled::{Applied, Ignored as No};
        match o {
            Observation::AbortRequested { vm } => return self.abort_requested(now, vm.as_deref()),
            Observation::Listed { ok } => {
                self.listed_at = Some(now);
                if *ok {
                    self.listed_ok_at = Some(now);
                }
                return Applied;
            }
            _ => {}
        }
        let total = self.total();
        let policy = self.policy.clone();
        let source = self.source.clone();
        let id = o.instance().unwrap_or_default();
        let Some(r) = self.instances.iter_mut().find(|r| r.id == id) else {
            return No(Ignored::UnknownInstance);
        };
        if r.outcome().is_some() {
            return No(Ignored::Finished);
        }
        match o {
            Observation::AbortRequested { .. } | Observation::Listed { .. } => unreachable!(),
            Observation::Guest { state, .. } => {
                if r.track.settle_since.is_none() {
                    return No(Ignored::WrongPhase);
                }
                r.track.guest = Some(state.clone());
            }
            Observation::Started {
                attempt, result, ..
            } => {
                let Phase::Starting { since, attempt: a } = r.phase else {
                    return No(Ignored::WrongPhase);
                };
                if a != *attempt {
                    return No(Ignored::NotThisAttempt);
                }
                start_result(r, since, a, result, &policy, now, total, out);
                if matches!(result, StartResult::Accepted) && self.list_asked.is_none() {
                    // The record appears after the 202: list a tick later.
                    self.list_asked = Some(now);
                }
            }
            Observation::MigrationFound { migration_id, .. } => {
                return migration_found(r, *migration_id);
            }
            Observation::Server { view, .. } => {
                r.track.server = Some(view.clone());
                r.track.server_at = Some(now);
                r.track.server_asked = None;
                if matches!(r.phase, Phase::Pending | Phase::Waiting { .. }) {
                    // I2: still where and as the plan saw it?
                    check_before_start(r, view, &source, now, total, out);
                }
            }
            Observation::ServerGone { .. } => server_gone(r, now, total, out),
            Observation::Migration { view, .. } => return migration_seen(r, view, now),
            Observation::CommandDone { command, .. } => command_done(r, *command, now),
            Observation::CommandFailed {
                command,
                message,
                gone,
                ..
            } => command_failed(r, *command, message, *gone, now, total, out),
        }
        Applied
    }

    /// The operator's abort (all, or one instance by name or id).
    fn abort_requested(&mut self, now: Millis, vm: Option<&str>) -> Handled {
        let total = self.total();
        let hit = |r: &InstanceRecord| vm.is_none_or(|v| v == r.id || v == r.name);
        if !self.instances.iter().any(hit) {
            return Handled::Ignored(Ignored::NoSuchVm(vm.unwrap_or_default().to_string()));
        }
        if vm.is_none() {
            self.stop_starting = true;
            self.abort_at.get_or_insert(now);
        }
        let mut out = Vec::new();
        for r in self.instances.iter_mut().filter(|r| hit(r)) {
            if r.outcome().is_some() || r.abort_requested {
                continue;
            }
            r.abort_requested = true;
            r.abort_requested_at = Some(now);
            r.decisions.push("abort requested by the operator".into());
            if vm.is_some() && matches!(r.phase, Phase::Pending | Phase::Waiting { .. }) {
                let e = "not started: abort requested by the operator".to_string();
                finish(r, Outcome::Aborted, now, Some(e), total, &mut out);
            }
        }
        self.held.extend(out);
        Handled::Applied
    }

    /// Every decision due at `now`, then the look-ups the machine needs.
    pub fn poll(&mut self, now: Millis) -> Vec<Command> {
        let mut out = std::mem::take(&mut self.held);
        let total = self.total();
        let policy = self.policy.clone();
        let source = self.source.clone();
        let running: Vec<bool> = self.instances.iter().map(|r| r.running()).collect();
        for (i, r) in self.instances.iter_mut().enumerate() {
            if matches!(r.phase, Phase::Started { .. }) {
                let ctx = Ctx {
                    source: &source,
                    policy: &policy,
                    total,
                    now,
                    others_running: running.iter().enumerate().any(|(j, x)| *x && j != i),
                    listed_ok_at: self.listed_ok_at,
                    run_abort_at: self.abort_at,
                };
                evaluate(r, &ctx, &mut out);
            }
        }
        let stop_starting = self.stop_starting;
        for r in self.instances.iter_mut() {
            power::step(r, &source, stop_starting, now, total, &mut out);
        }
        if self.stop_starting {
            for r in &mut self.instances {
                if r.stopped_at.is_some()
                    && matches!(r.phase, Phase::Pending | Phase::Waiting { .. })
                {
                    // Stopped by this run for an attempt that failed: it
                    // is started again before the run ends.
                    let e = "not started again: the run was aborted".to_string();
                    finish(r, Outcome::Pending, now, Some(e), total, &mut out);
                    continue;
                }
                if matches!(r.phase, Phase::Pending | Phase::Waiting { .. }) {
                    let e = "not started: the run was aborted".to_string();
                    r.decisions.push(e.clone());
                    if r.error.is_none() {
                        r.error = Some(e);
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
        self.lookups(now, &mut out);
        for r in self.instances.iter_mut() {
            power::lookup(r, &policy, now, &mut out);
        }
        out
    }

    /// When the machine next needs [`Drain::poll`]: `None` when it is done.
    pub fn poll_timeout(&self, now: Millis) -> Option<Millis> {
        if self.is_done() {
            return None;
        }
        if !self.held.is_empty() {
            return Some(now);
        }
        let tick = self.policy.interval_ms();
        let mut at = Millis::MAX;
        if self
            .instances
            .iter()
            .any(|r| matches!(r.phase, Phase::Started { .. }))
        {
            at = at.min(self.list_asked.map_or(now, |t| t + tick));
        }
        // The starts, exactly as start_next takes them: in order, as many as
        // there are free slots.
        let mut free = if self.stop_starting {
            0
        } else {
            self.policy
                .max_concurrent()
                .saturating_sub(self.in_flight())
        };
        for r in &self.instances {
            match r.phase {
                Phase::Waiting { until } if until > now => at = at.min(until),
                Phase::Pending | Phase::Waiting { .. } if free > 0 => {
                    free -= 1;
                    // Startable now, or once its server read is answered
                    // (or asked again).
                    let fresh = r.seen_at == Some(now);
                    let asked = r
                        .track
                        .server_asked
                        .filter(|t| now.saturating_sub(*t) < tick);
                    at = at.min(match (fresh, asked) {
                        (false, Some(t)) => t + tick,
                        _ => now,
                    });
                }
                _ => {}
            }
        }
        for r in &self.instances {
            if let Some(w) = power::wake(r, &self.policy) {
                at = at.min(w);
            }
            if let Some(w) = r.track.wake_at {
                at = at.min(w);
            }
        }
        // Nothing scheduled (e.g. a start whose result is outstanding): the
        // next tick at the latest.
        Some(if at == Millis::MAX {
            now + tick
        } else {
            at.max(now)
        })
    }

    fn start_next(&mut self, now: Millis, out: &mut Vec<Command>) {
        let total = self.total();
        let fresh = self.policy.interval_ms();
        let mut free = self
            .policy
            .max_concurrent()
            .saturating_sub(self.in_flight());
        for r in self.instances.iter_mut() {
            if free == 0 {
                break;
            }
            let due = match r.phase {
                Phase::Pending => true,
                Phase::Waiting { until } => until <= now,
                _ => false,
            };
            if !due {
                continue;
            }
            // I2: only on a view of this very instant (a read answered in
            // this round of the driver) showing it here, idle, as planned
            // (check_before_start ended or delayed it otherwise).
            if r.seen_at != Some(now) {
                if r.track
                    .server_asked
                    .is_none_or(|t| now.saturating_sub(t) >= fresh)
                {
                    r.track.server_asked = Some(now);
                    out.push(Command::ReadServer {
                        instance: r.id.clone(),
                    });
                }
                free -= 1;
                continue;
            }
            free -= 1;
            if power::stop_first(r, now, total, out) {
                continue;
            }
            begin(r, now, total, out);
        }
    }

    /// The look-ups of this tick: one list of the source's migrations when
    /// anything is started; the progress of each running live migration;
    /// the server of each started instance whose migration is unknown or
    /// has ended (once per list).
    fn lookups(&mut self, now: Millis, out: &mut Vec<Command>) {
        let tick = self.policy.interval_ms();
        let started: Vec<usize> = (0..self.instances.len())
            .filter(|&i| matches!(self.instances[i].phase, Phase::Started { .. }))
            .collect();
        if started.is_empty() {
            return;
        }
        let woken = started
            .iter()
            .any(|&i| self.instances[i].track.wake_at.is_some_and(|w| w <= now));
        let due = self.list_asked.is_none_or(|t| now >= t + tick) || woken;
        if due {
            self.ask_list(&started, now, out);
            return;
        }
        // After the list came back: the servers whose migration is unknown
        // or ended, to verify where they are.
        let Some(listed) = self.listed_at else {
            return;
        };
        for &i in &started {
            Self::instance_lookups(&mut self.instances[i], listed, now, out);
        }
    }

    /// The list of the source's migrations, since the earliest start (or
    /// migration) of the `started` instances, less the clock skew; their
    /// wake-ups that are due are taken.
    fn ask_list(&mut self, started: &[usize], now: Millis, out: &mut Vec<Command>) {
        self.list_asked = Some(now);
        let floor = started
            .iter()
            .filter_map(|&i| match self.instances[i].phase {
                Phase::Started { since, .. } => Some(
                    self.instances[i]
                        .track
                        .migration
                        .as_ref()
                        .and_then(|m| m.created_at)
                        .map_or(since, |c| c.min(since)),
                ),
                _ => None,
            })
            .min()
            .unwrap_or(self.created_at);
        out.push(Command::ListMigrations {
            source: self.source.clone(),
            since: floor.saturating_sub(CLOCK_SKEW_MS),
        });
        for &i in started {
            let t = &mut self.instances[i].track;
            if t.wake_at.is_some_and(|w| w <= now) {
                t.wake_at = None;
            }
        }
    }

    /// One started instance's look-ups once the list came back: its server
    /// when its migration is unknown or ended (or not seen for a while),
    /// and the progress of its running live migration.
    fn instance_lookups(
        r: &mut InstanceRecord,
        listed: Millis,
        now: Millis,
        out: &mut Vec<Command>,
    ) {
        let ended_or_unknown = r
            .track
            .migration
            .as_ref()
            .is_none_or(|m| m.status.is_terminal());
        let stale = r.track.server_at.is_none_or(|t| t < listed);
        let asked = r.track.server_asked.is_some_and(|t| t >= listed);
        // Not ended: the record alone may never say the server is gone.
        let recheck = r
            .track
            .server_at
            .is_none_or(|t| now >= t + SERVER_RECHECK_MS);
        if (ended_or_unknown || recheck) && stale && !asked {
            r.track.server_asked = Some(now);
            out.push(Command::ReadServer {
                instance: r.id.clone(),
            });
        }
        let running_live = r.kind == MoveKind::Live
            && r.track
                .migration
                .as_ref()
                .is_some_and(|m| m.status == MigrationStatus::Running);
        if running_live && r.track.progress_asked.is_none_or(|t| t < listed) {
            r.track.progress_asked = Some(now);
            out.push(Command::ReadProgress {
                instance: r.id.clone(),
                migration_id: r
                    .track
                    .migration
                    .as_ref()
                    .map(|m| m.id)
                    .unwrap_or(MigrationId(0)),
            });
        }
    }

    /// The operator's `abort` of a run whose process is gone: ends the
    /// instances (all, or `only`) from what the control code found.
    /// Returns what changed.
    pub fn end_interrupted(
        &mut self,
        now: Millis,
        only: Option<&str>,
        facts: &[(InstanceId, AbortFact)],
    ) -> Vec<(InstanceId, Outcome)> {
        let total = self.total();
        let source = self.source.clone();
        let mut changed = Vec::new();
        let mut out = Vec::new();
        for r in self.instances.iter_mut() {
            if only.is_some_and(|o| o != r.id) || r.outcome().is_some() {
                continue;
            }
            let fact = facts.iter().find(|(i, _)| *i == r.id).map(|(_, f)| f);
            let (outcome, error) = match (&r.phase, fact) {
                // Its move had ended; only the start again was left.
                (Phase::Restarting { outcome, error, .. }, _) => {
                    (*outcome, error.clone().unwrap_or_default())
                }
                (Phase::Stopping { .. }, _) => (
                    Outcome::Aborted,
                    "aborted before its cold migration started".to_string(),
                ),
                (_, Some(AbortFact::StillMoving)) => continue,
                (Phase::Pending | Phase::Waiting { .. }, _) if only.is_some() => (
                    Outcome::Aborted,
                    "not started: abort requested by the operator".to_string(),
                ),
                (Phase::Pending | Phase::Waiting { .. }, _) => {
                    (Outcome::Pending, "not started: the run was aborted".into())
                }
                (_, Some(AbortFact::Aborted)) => (
                    Outcome::Aborted,
                    "aborted: abort requested by the operator".into(),
                ),
                (_, Some(AbortFact::At(Some(h)))) if *h != source => {
                    r.destination = Some(h.clone());
                    let o = if r.kind == MoveKind::Cold {
                        Outcome::ColdMigrated
                    } else {
                        Outcome::Migrated
                    };
                    (o, String::new())
                }
                (_, Some(AbortFact::At(None))) => (
                    Outcome::Skipped,
                    "the server was deleted during its migration".into(),
                ),
                _ => (
                    Outcome::Aborted,
                    "run ended by abort; no migration was in progress".into(),
                ),
            };
            if outcome == Outcome::Aborted {
                r.abort_requested = true;
            }
            let error = power::left_stopped(r, error);
            let error = (!error.is_empty()).then_some(error);
            // No process is left to start it again: the error says how.
            conclude(r, outcome, now, error, total, &mut out);
            changed.push((r.id.clone(), outcome));
        }
        if only.is_none() {
            self.stop_starting = true;
            self.abort_at.get_or_insert(now);
        }
        changed
    }
}

/// `GET /servers/{id}` answered 404: its owner deleted it; nothing is left
/// to move or to start again.
fn server_gone(r: &mut InstanceRecord, now: Millis, total: usize, out: &mut Vec<Command>) {
    let e = if matches!(r.phase, Phase::Stopping { .. }) {
        "the server was deleted while this run stopped it for its cold migration (GET /servers/{id} → 404)"
    } else if r.in_flight() {
        "the server was deleted during its migration (GET /servers/{id} → 404)"
    } else {
        "the server was deleted before its turn (GET /servers/{id} → 404)"
    };
    conclude(r, Outcome::Skipped, now, Some(e.into()), total, out);
}

/// A start: the intent (I1: [`Phase::Starting`] with its time, persisted
/// before the POST), its line, and the command.
fn begin(r: &mut InstanceRecord, now: Millis, total: usize, out: &mut Vec<Command>) {
    let attempt = r.attempts + r.unsent + 1;
    r.phase = Phase::Starting {
        since: now,
        attempt,
    };
    r.track = Track::default();
    let what = match r.kind {
        MoveKind::Live => "starting live migration",
        MoveKind::Cold => "starting cold migration",
    };
    let line = format!(
        "[{}/{}] {} → {} {} (attempt {attempt})",
        r.index,
        total,
        r.name,
        r.destination_label(),
        what
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

#[allow(clippy::too_many_arguments)]
fn start_result(
    r: &mut InstanceRecord,
    since: Millis,
    attempt: u32,
    result: &StartResult,
    policy: &Policy,
    now: Millis,
    total: usize,
    out: &mut Vec<Command>,
) {
    match result {
        StartResult::Accepted => {
            r.attempts = attempt.saturating_sub(r.unsent);
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
            r.seen_at = None;
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
        StartResult::NotSent(msg) => {
            r.unsent += 1;
            r.seen_at = None;
            if r.attempts + r.unsent > policy.retries {
                let e = format!(
                    "the start never reached Nova ({msg}); {} start(s) not delivered, no retries left",
                    r.unsent
                );
                finish(r, Outcome::Failed, now, Some(e), total, out);
            } else {
                let wait = policy.conflict_backoff(r.unsent);
                let d = format!(
                    "the start never reached Nova ({msg}); retrying in {} s (retry {} of {})",
                    wait / 1000,
                    r.attempts + r.unsent,
                    policy.retries
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

/// I2 before a start: the fresh view of a pending instance.
fn check_before_start(
    r: &mut InstanceRecord,
    s: &ServerView,
    source: &str,
    now: Millis,
    total: usize,
    out: &mut Vec<Command>,
) {
    if !s.host.is_empty() && s.host != source {
        let e = format!(
            "moved to {} by someone else before its turn; not migrated by this run",
            s.host
        );
        finish(r, Outcome::Skipped, now, Some(e), total, out);
        return;
    }
    if s.policy != r.planned_policy {
        let shown = |p: &Option<String>| {
            p.as_deref()
                .map_or("unset".to_string(), |v| crate::text::shown(v, 32))
        };
        let e = format!(
            "its policy changed since the plan ({POLICY_KEY} {} → {}); left alone: run again to plan with it",
            shown(&r.planned_policy),
            shown(&s.policy)
        );
        finish(r, Outcome::Skipped, now, Some(e), total, out);
        return;
    }
    if r.stop_first {
        if let Some(e) = power::not_as_planned(r, s) {
            finish(r, Outcome::Skipped, now, Some(e), total, out);
            return;
        }
    } else if !r.kind.planned_state(&s.vm_state) {
        let e = format!(
            "now {} ({}), not as planned ({}); left alone",
            s.vm_state.as_str(),
            s.status,
            match r.kind {
                MoveKind::Live => "active or paused, for a live migration",
                MoveKind::Cold => "stopped, for a cold migration",
            }
        );
        finish(r, Outcome::Skipped, now, Some(e), total, out);
        return;
    }
    if let Some(t) = &s.task_state {
        // Someone else's task (a migration by hand, a resize…): like a 409.
        r.seen_at = None;
        note(
            r,
            &format!("busy:{t}"),
            format!("task_state {t} (someone else's operation); waiting before starting"),
            total,
            out,
        );
        r.phase = Phase::Waiting { until: now + 5_000 };
        r.conflicts += 1;
        if r.conflicts > 20 {
            let e = format!("busy with task_state {t} for too long; left alone");
            finish(r, Outcome::Skipped, now, Some(e), total, out);
        }
        return;
    }
    r.seen_at = Some(now);
}

#[allow(clippy::too_many_arguments)]
fn command_failed(
    r: &mut InstanceRecord,
    command: Control,
    message: &str,
    gone: bool,
    now: Millis,
    total: usize,
    out: &mut Vec<Command>,
) {
    decide(
        r,
        format!("{} refused: {message}", command.as_str()),
        total,
        out,
    );
    match command {
        Control::ConfirmResize => {
            r.track.confirm_failures += 1;
            r.track.confirm_sent = false;
            if r.track.confirm_failures >= CONTROL_RETRIES {
                let e = format!(
                    "confirm-resize refused {} times ({message}); confirm it by hand: openstack server resize confirm {}",
                    r.track.confirm_failures, r.id
                );
                finish(r, Outcome::Failed, now, Some(e), total, out);
            }
        }
        Control::Abort => {
            r.track.abort_pending = false;
            r.track.abort_failures += 1;
            r.track.abort_refused_at = Some(now);
            if gone {
                // The record is no more: where the server is decides.
                r.track.migration = None;
                r.track.migration_gone = true;
                r.track.server_at = None;
            }
        }
        Control::ForceComplete => {}
        Control::ResetState => {
            r.track.reset_pending = false;
            r.track.reset_failures += 1;
        }
        Control::Stop | Control::Start => r.track.power_refused = Some(message.to_string()),
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
    if power::restart_instead(r, outcome, &error, now, total, out) {
        return;
    }
    conclude(r, outcome, now, error, total, out);
}

/// The end of the instance: `outcome`, its line.
fn conclude(
    r: &mut InstanceRecord,
    outcome: Outcome,
    now: Millis,
    error: Option<String>,
    total: usize,
    out: &mut Vec<Command>,
) {
    r.phase = Phase::Done { outcome };
    r.ended_at = Some(now);
    r.track.wake_at = None;
    if let Some(e) = &error {
        r.decisions.push(e.clone());
    }
    let moved = matches!(outcome, Outcome::Migrated | Outcome::ColdMigrated);
    // A move's own error is only what is left to do after it (an instance
    // stopped for it that could not be started again); earlier attempts'
    // errors are gone with their success.
    r.error = match error {
        Some(e) => Some(e),
        None if moved => None,
        None => matches!(outcome, Outcome::Failed | Outcome::Aborted)
            .then(|| r.error.clone())
            .flatten(),
    };
    let what = match outcome {
        Outcome::Migrated => "migrated".to_string(),
        Outcome::ColdMigrated => "cold-migrated".to_string(),
        Outcome::Failed => format!("failed: {}", r.error.as_deref().unwrap_or("")),
        Outcome::Aborted => "aborted".to_string(),
        Outcome::Pending => "not started".to_string(),
        Outcome::Skipped => format!("skipped: {}", r.error.as_deref().unwrap_or("")),
    };
    let dur = r
        .duration_s()
        .map(|d| format!(" in {d:.1} s"))
        .unwrap_or_default();
    let line = match outcome {
        Outcome::Migrated | Outcome::ColdMigrated => format!(
            "[{}/{}] {} → {} {what}{dur}",
            r.index,
            total,
            r.name,
            r.destination_label()
        ),
        // Nothing went anywhere: no arrow to a destination.
        _ => format!("[{}/{}] {} {what}{dur}", r.index, total, r.name),
    };
    progress(r, line, out);
}

/// One attempt ended with the instance idle on the source.
fn attempt_failed(r: &mut InstanceRecord, why: String, ctx: &Ctx<'_>, out: &mut Vec<Command>) {
    if let Some(m) = r.migration_id.take() {
        r.past_migrations.push(m);
    }
    if aborted_by_us(r) {
        let e = match r.error.take() {
            Some(a) if a.starts_with("aborted") => format!("{a} ({why})"),
            _ => format!("aborted ({why})"),
        };
        if r.kind == MoveKind::Live {
            // Not the end yet: watch how Nova leaves the instance.
            r.error = Some(e);
            r.track.settle_since.get_or_insert(ctx.now);
            after_abort(r, ctx, out);
        } else {
            finish(r, Outcome::Aborted, ctx.now, Some(e), ctx.total, out);
        }
        return;
    }
    r.error = Some(why.clone());
    if r.attempts + r.unsent <= ctx.policy.retries {
        let d = format!(
            "attempt {} failed: {why}; retrying ({} of {} retries)",
            r.attempts,
            r.attempts + r.unsent,
            ctx.policy.retries
        );
        decide(r, d, ctx.total, out);
        r.phase = Phase::Waiting { until: ctx.now };
        r.track = Track::default();
        r.seen_at = None;
    } else {
        let e = if ctx.policy.retries > 0 {
            format!("{why} (after {} attempts)", r.attempts)
        } else {
            why
        };
        finish(r, Outcome::Failed, ctx.now, Some(e), ctx.total, out);
    }
}

/// This drain sent (or was asked to send) an abort of the attempt.
fn aborted_by_us(r: &InstanceRecord) -> bool {
    r.abort_requested || r.track.abort_accepted_at.is_some() || r.track.abort_reason.is_some()
}

/// After our abort ended a live migration: Nova may yet flip the instance
/// to ERROR while its guest keeps running here. Watch it for [`SETTLE_MS`];
/// when it is in ERROR, ask libvirt on this node for the guest and report
/// exactly that (with `reset-after-abort`, reset it to active when — and
/// only when — its guest is confirmed running).
fn after_abort(r: &mut InstanceRecord, ctx: &Ctx<'_>, out: &mut Vec<Command>) {
    let (source, total, now) = (ctx.source, ctx.total, ctx.now);
    let t0 = *r.track.settle_since.get_or_insert(now);
    let waited = now.saturating_sub(t0);
    let base = r.error.clone().unwrap_or_else(|| "aborted".into());
    let Some(s) = r.track.server.clone() else {
        if waited >= SETTLE_MS {
            finish(r, Outcome::Aborted, now, Some(base), total, out);
        }
        return;
    };
    let moved = s.host != source && !s.host.is_empty();
    if moved && s.idle() && s.vm_state.is_live() {
        // The abort came too late: it completed.
        r.destination = Some(s.host.clone());
        finish(r, Outcome::Migrated, now, None, total, out);
        return;
    }
    if s.vm_state == VmState::Error && !moved {
        left_in_error(r, ctx, &base, waited, out);
        return;
    }
    if !moved && s.vm_state.is_live() && s.idle() {
        if r.track.reset_accepted {
            let e = format!(
                "{base}; Nova had left it in ERROR: reset to active (its guest was confirmed running on {source})"
            );
            finish(r, Outcome::Aborted, now, Some(e), total, out);
        } else if waited >= SETTLE_MS {
            finish(r, Outcome::Aborted, now, Some(base), total, out);
        }
        return;
    }
    if waited >= ABORT_GRACE_MS {
        let e = format!(
            "{base}; {} ({}) on {} {} s after the abort",
            s.vm_state.as_str(),
            s.status,
            s.host,
            waited / 1000
        );
        finish(r, Outcome::Aborted, now, Some(e), total, out);
    }
}

/// After our abort Nova left the instance in ERROR on this node: check its
/// guest here, then report exactly that, or (with `reset-after-abort`)
/// reset it to active when its guest is confirmed running.
fn left_in_error(
    r: &mut InstanceRecord,
    ctx: &Ctx<'_>,
    base: &str,
    waited: Millis,
    out: &mut Vec<Command>,
) {
    let (source, total, now) = (ctx.source, ctx.total, ctx.now);
    let Some(g) = r.track.guest.clone() else {
        check_guest_or_end(r, ctx, base, waited, out);
        return;
    };
    if let Some(e) = not_reset(r, ctx, base, waited, &g) {
        finish(r, Outcome::Aborted, now, Some(e), total, out);
        return;
    }
    if !r.track.reset_pending && !r.track.reset_accepted {
        r.track.reset_pending = true;
        let why = format!(
            "reset-after-abort: Nova left the instance in ERROR on {source} while its guest runs here (libvirt: running); resetting it to active"
        );
        decide(r, why.clone(), total, out);
        out.push(Command::ResetState {
            instance: r.id.clone(),
            reason: why,
        });
    }
}

/// No answer of libvirt yet: ask (once a tick), or end the instance when
/// the grace is over.
fn check_guest_or_end(
    r: &mut InstanceRecord,
    ctx: &Ctx<'_>,
    base: &str,
    waited: Millis,
    out: &mut Vec<Command>,
) {
    let (source, total, now, policy) = (ctx.source, ctx.total, ctx.now, ctx.policy);
    if waited >= ABORT_GRACE_MS {
        let e = format!(
            "{base}; Nova left the instance in ERROR on {source} and its guest could not be checked: check it (virsh domstate), then openstack server set --state active {}",
            r.id
        );
        finish(r, Outcome::Aborted, now, Some(e), total, out);
    } else if r
        .track
        .guest_asked
        .is_none_or(|t| now >= t + policy.interval_ms())
    {
        r.track.guest_asked = Some(now);
        note(
            r,
            "guest-check",
            format!(
                "Nova put the instance in ERROR on {source} after the abort; checking its guest on this node"
            ),
            total,
            out,
        );
        out.push(Command::CheckGuest {
            instance: r.id.clone(),
        });
    }
}

/// Why the instance Nova left in ERROR is not (or no longer) reset, given
/// what libvirt says of its guest `g`; `None`: reset it.
fn not_reset(
    r: &InstanceRecord,
    ctx: &Ctx<'_>,
    base: &str,
    waited: Millis,
    g: &GuestState,
) -> Option<String> {
    let source = ctx.source;
    let remedy = format!(
        "after checking the guest, openstack server set --state active {}",
        r.id
    );
    if let GuestState::Unknown(why) = g {
        return Some(format!(
            "{base}; Nova left the instance in ERROR on {source} and its guest could not be checked ({why}): not reset; check it (virsh domstate), then openstack server set --state active {}",
            r.id
        ));
    }
    if *g != GuestState::Running {
        return Some(format!(
            "{base}; Nova left the instance in ERROR on {source} and its guest is {} here: not reset; check the guest and nova-compute.log before anything else",
            g.describe()
        ));
    }
    if !ctx.policy.reset_after_abort {
        return Some(format!(
            "{base}; Nova left the instance in ERROR on {source} although its guest is running there: {remedy} (or set reset-after-abort=true)"
        ));
    }
    if r.track.reset_failures >= CONTROL_RETRIES || waited >= ABORT_GRACE_MS {
        return Some(format!(
            "{base}; Nova left the instance in ERROR on {source} although its guest is running there, and the reset to active did not take ({} refusals): {remedy}",
            r.track.reset_failures
        ));
    }
    None
}

fn evaluate(r: &mut InstanceRecord, ctx: &Ctx<'_>, out: &mut Vec<Command>) {
    let Phase::Started { since, .. } = r.phase.clone() else {
        return;
    };
    if r.track.settle_since.is_some() {
        after_abort(r, ctx, out);
        return;
    }
    let mig = r.track.migration.clone();
    if let Some(s) = r.track.server.clone() {
        if server_decides(r, &s, mig.as_ref(), since, ctx, out) {
            return;
        }
        r.track.idle_since = None;
    }
    if let Some(m) = &mig {
        if r.kind == MoveKind::Cold {
            monitor_cold(r, m, ctx.total, out);
        } else {
            monitor_live(r, m, ctx, out);
        }
    }
    if r.outcome().is_none() {
        bounds(r, mig.as_ref(), since, ctx, out);
    }
}

/// What the server itself shows, when it decides this round: arrived,
/// resized, in ERROR, or idle on the source. Returns whether it did.
fn server_decides(
    r: &mut InstanceRecord,
    s: &ServerView,
    mig: Option<&MigrationView>,
    since: Millis,
    ctx: &Ctx<'_>,
    out: &mut Vec<Command>,
) -> bool {
    let moved = s.host != ctx.source && !s.host.is_empty();
    // Success, verified by the server itself: elsewhere and idle after
    // our accepted start (its owner may have stopped it there since).
    if r.kind == MoveKind::Live && moved && s.idle() && s.vm_state != VmState::Error {
        r.destination = Some(s.host.clone());
        if !s.vm_state.is_live() {
            r.decisions.push(format!(
                "now {} on {} (changed by someone else after the move)",
                s.vm_state.as_str(),
                s.host
            ));
        }
        finish(r, Outcome::Migrated, ctx.now, None, ctx.total, out);
        return true;
    }
    if r.kind == MoveKind::Cold && cold_server_decides(r, s, moved, ctx, out) {
        return true;
    }
    let settled = s.idle() || mig.is_some_and(|m| m.status.is_terminal());
    if s.vm_state == VmState::Error && settled {
        settled_in_error(r, s, mig, moved, ctx, out);
        return true;
    }
    if !moved && s.idle() {
        idle_on_source(r, s, mig, since, ctx, out);
        return true;
    }
    false
}

/// A cold move's server: resized (confirm it, once) or arrived. Returns
/// whether it decided this round.
fn cold_server_decides(
    r: &mut InstanceRecord,
    s: &ServerView,
    moved: bool,
    ctx: &Ctx<'_>,
    out: &mut Vec<Command>,
) -> bool {
    if s.awaits_confirm() && s.idle() {
        r.destination = Some(s.host.clone());
        if !r.track.confirm_sent {
            r.track.confirm_sent = true;
            out.push(Command::ConfirmResize {
                instance: r.id.clone(),
            });
            let line = format!(
                "[{}/{}] {} → {} resized, confirming",
                r.index, ctx.total, r.name, s.host
            );
            progress(r, line, out);
        }
        return true;
    }
    if moved && s.idle() && matches!(s.vm_state, VmState::Stopped | VmState::Active) {
        r.destination = Some(s.host.clone());
        finish(r, Outcome::ColdMigrated, ctx.now, None, ctx.total, out);
        return true;
    }
    false
}

/// The server settled in ERROR: the end of our abort on the source (the
/// attempt failed), else a failure that is not retried.
fn settled_in_error(
    r: &mut InstanceRecord,
    s: &ServerView,
    mig: Option<&MigrationView>,
    moved: bool,
    ctx: &Ctx<'_>,
    out: &mut Vec<Command>,
) {
    if !moved && aborted_by_us(r) {
        // Our abort's end, not a failure (Nova 34 after an aborted job).
        let why = format!(
            "migration {} ended {} with the server in ERROR on {}",
            mig.map_or("?".into(), |m| m.id.to_string()),
            mig.map_or("?", |m| m.status.as_str()),
            ctx.source
        );
        attempt_failed(r, why, ctx, out);
        return;
    }
    let e = format!(
        "instance is in ERROR on {}{}; check the guest, then reset its state — not retried",
        s.host,
        s.fault
            .as_ref()
            .map(|f| format!(": {f}"))
            .unwrap_or_default()
    );
    finish(r, Outcome::Failed, ctx.now, Some(e), ctx.total, out);
}

/// The server is idle on the source after an accepted start.
fn idle_on_source(
    r: &mut InstanceRecord,
    s: &ServerView,
    mig: Option<&MigrationView>,
    since: Millis,
    ctx: &Ctx<'_>,
    out: &mut Vec<Command>,
) {
    let (source, now) = (ctx.source, ctx.now);
    let idle_since = *r.track.idle_since.get_or_insert(now);
    let grace_over = now.saturating_sub(idle_since) >= ctx.policy.idle_grace_ms();
    let ended = mig.is_some_and(|m| m.status.is_terminal()) || r.track.migration_gone;
    if !r.kind.planned_state(&s.vm_state) {
        // Changed by someone else (stopped, suspended, shelved…).
        if ended || mig.is_none() && grace_over {
            let e = format!(
                "now {} ({}) on {source}, changed by someone else; not moved",
                s.vm_state.as_str(),
                s.status
            );
            if let Some(m) = r.migration_id.take() {
                r.past_migrations.push(m);
            }
            finish(r, Outcome::Skipped, now, Some(e), ctx.total, out);
        }
        return;
    }
    let why = match mig {
        Some(m) if m.status == MigrationStatus::Completed => Some(format!(
            "migration {} is completed but the server is still on {source} (Nova failure mode)",
            m.id
        )),
        Some(m) if m.status.is_failure() => Some(format!(
            "migration {} ended {} with the server still on {source}",
            m.id,
            m.status.as_str()
        )),
        None if r.track.migration_gone => Some(format!(
            "migration {} is no more (404) and the server is idle on {source}",
            r.migration_id
                .map(|m| m.to_string())
                .unwrap_or_else(|| "?".into())
        )),
        _ if grace_over => Some(format!(
            "the server is idle on {source} {} s after the start was accepted and no migration is in progress{}",
            now.saturating_sub(since) / 1000,
            mig.map(|m| format!(" (migration {} {})", m.id, m.status.as_str()))
                .unwrap_or_default()
        )),
        _ => None,
    };
    if let Some(why) = why {
        attempt_failed(r, why, ctx, out);
    }
}

fn monitor_cold(r: &mut InstanceRecord, m: &MigrationView, total: usize, out: &mut Vec<Command>) {
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
        .unwrap_or_else(|| r.destination_label());
    let line = format!(
        "[{}/{}] {} → {dest} cold migration {}",
        r.index,
        total,
        r.name,
        m.status.as_str()
    );
    progress(r, line, out);
}

/// I1: the bounds of every phase of an accepted start.
fn bounds(
    r: &mut InstanceRecord,
    mig: Option<&MigrationView>,
    since: Millis,
    ctx: &Ctx<'_>,
    out: &mut Vec<Command>,
) {
    let now = ctx.now;
    let total = ctx.total;
    // The operator's abort of the run: it ends even when a migration
    // cannot be aborted (post-copy, cold, queued below 2.65) or never shows
    // up. (An abort of one instance does not end the run: its migration
    // keeps its place until Nova ends it.)
    if let Some(at) = ctx.run_abort_at
        && now.saturating_sub(at) >= ABORT_GRACE_MS
    {
        let e = format!(
            "abort requested {} s ago; migration {} was still {} when the run ended (it goes on in Nova)",
            now.saturating_sub(at) / 1000,
            r.migration_id
                .map(|m| m.to_string())
                .unwrap_or_else(|| "?".into()),
            mig.map(|m| m.status.as_str()).unwrap_or("not yet listed")
        );
        finish(r, Outcome::Aborted, now, Some(e), total, out);
        return;
    }
    // An abort Nova accepted but that did not end the migration.
    if let Some(at) = r.track.abort_accepted_at
        && now.saturating_sub(at) >= ABORT_GRACE_MS
    {
        let e = format!(
            "abort accepted {} s ago but migration {} is still {}; check `openstack server migration list --server {}`",
            now.saturating_sub(at) / 1000,
            r.migration_id
                .map(|m| m.to_string())
                .unwrap_or_else(|| "?".into()),
            mig.map(|m| m.status.as_str()).unwrap_or("unknown"),
            r.id
        );
        finish(r, Outcome::Failed, now, Some(e), total, out);
        return;
    }
    // A force-complete that does not complete.
    if let Some(at) = r.track.force_accepted_at
        && now.saturating_sub(at) >= FORCE_GRACE_MS
        && r.track.abort_reason.is_none()
        && let Some(m) = mig
        && m.status == MigrationStatus::Running
    {
        let why = format!(
            "force-complete accepted {} s ago but the migration is still running",
            now.saturating_sub(at) / 1000
        );
        send_abort(r, m.id, why, total, out);
        return;
    }
    stuck_before_running(r, mig, since, ctx, out);
}

/// I1: a migration stuck before running while none of ours runs (so not
/// queued behind one of ours), or no record at all, on evidence.
fn stuck_before_running(
    r: &mut InstanceRecord,
    mig: Option<&MigrationView>,
    since: Millis,
    ctx: &Ctx<'_>,
    out: &mut Vec<Command>,
) {
    let (now, total) = (ctx.now, ctx.total);
    let status_since = r.track.status_since.unwrap_or(since);
    let stuck = now.saturating_sub(status_since) >= STUCK_MS && !ctx.others_running;
    match mig {
        Some(m) if stuck && m.status.is_before_running() => {
            let why = format!(
                "migration {} has been {} for {} s with nothing of this run running",
                m.id,
                m.status.as_str(),
                now.saturating_sub(status_since) / 1000
            );
            if ctx.policy.can_abort_queued && r.track.abort_reason.is_none() {
                send_abort(r, m.id, why, total, out);
            } else if r.track.abort_reason.is_none() {
                let e = format!(
                    "{why}; it cannot be aborted here (microversion < 2.65): check it in Nova"
                );
                finish(r, Outcome::Failed, now, Some(e), total, out);
            }
        }
        // Only on evidence: a list and a server read, both after the
        // window, that show no record (an API that answers nothing proves
        // nothing; the operator's abort still ends it).
        None if now.saturating_sub(since) >= STUCK_MS
            && !ctx.others_running
            && ctx.listed_ok_at.is_some_and(|t| t >= since + STUCK_MS)
            && r.track.server_at.is_some_and(|t| t >= since + STUCK_MS) =>
        {
            let e = format!(
                "no migration record {} s after the start was accepted, the server is {}; check it in Nova",
                now.saturating_sub(since) / 1000,
                r.track
                    .server
                    .as_ref()
                    .map(|s| format!(
                        "{} (task_state {})",
                        s.status,
                        s.task_state.as_deref().unwrap_or("none")
                    ))
                    .unwrap_or_else(|| "unknown".into())
            );
            finish(r, Outcome::Failed, now, Some(e), total, out);
        }
        _ => {}
    }
}

/// Feeds a running migration's progress sample to the convergence rule
/// (and the wake-up estimate).
fn observe_progress(r: &mut InstanceRecord, m: &MigrationView, ctx: &Ctx<'_>) {
    let (policy, now) = (ctx.policy, ctx.now);
    let running = m.status == MigrationStatus::Running;
    let postcopy = m.status == MigrationStatus::RunningPostCopy;
    if running || postcopy {
        let start = *r.track.running_since.get_or_insert(now);
        let window = *r.track.progress_at.get_or_insert(start);
        // A resumed run's fresh window (resume sets `progress_at`).
        r.track.conv.start(window);
    }
    if running && let Some(rem) = m.memory_remaining_bytes {
        if r.track.best_remaining.is_none_or(|b| rem < b) {
            r.track.best_remaining = Some(rem);
        }
        let t = m.memory_total_bytes.unwrap_or(0);
        r.track.conv.observe(
            now,
            Sample {
                total: t,
                processed: m.memory_processed_bytes.unwrap_or(t.saturating_sub(rem)),
                remaining: rem,
            },
        );
        r.track.progress_at = r.track.conv.progress_at;
        r.track.wake_at = eta_wake(r.track.sample, now, rem, policy.interval_ms());
        r.track.sample = Some((now, rem));
    }
}

/// The operator's abort of a migration in flight: sent where Nova can
/// abort it, else said why not (yet).
fn operator_abort(
    r: &mut InstanceRecord,
    m: &MigrationView,
    policy: &Policy,
    total: usize,
    out: &mut Vec<Command>,
) {
    let mid = m.id;
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
}

fn monitor_live(r: &mut InstanceRecord, m: &MigrationView, ctx: &Ctx<'_>, out: &mut Vec<Command>) {
    let (policy, total, now) = (ctx.policy, ctx.total, ctx.now);
    let running = m.status == MigrationStatus::Running;
    observe_progress(r, m, ctx);
    let pct = m.percent();
    status_line(r, m, pct, now, total, out);

    let mid = m.id;
    // Sent and not answered, accepted, or refused less than a tick ago.
    let abort_busy = r.track.abort_pending
        || r.track.abort_accepted_at.is_some()
        || r.track
            .abort_refused_at
            .is_some_and(|t| now < t + policy.interval_ms());
    // Operator abort.
    if r.abort_requested {
        if abort_busy || r.track.abort_failures >= CONTROL_RETRIES {
            return;
        }
        operator_abort(r, m, policy, total, out);
        return;
    }
    // An abort decided: wait for Nova's answer, send it again a tick after
    // a refusal, give up after CONTROL_RETRIES refusals (Nova's own timer
    // still bounds the migration).
    if let Some(why) = r.track.abort_reason.clone() {
        if abort_busy || !running {
            return;
        }
        if r.track.abort_failures >= CONTROL_RETRIES {
            note(
                r,
                "abort-given-up",
                format!(
                    "abort refused {} times; letting the migration run (Nova's own timer ends it)",
                    r.track.abort_failures
                ),
                total,
                out,
            );
            return;
        }
        send_abort(r, mid, why, total, out);
        return;
    }
    if r.track.force_completed || !running {
        return;
    }
    if let Some((act, why)) = timeout_decision(r, m, policy, now, pct) {
        match act {
            TimeoutAction::ForceComplete => {
                r.track.force_completed = true;
                decide(r, format!("force-complete: {why}"), total, out);
                out.push(Command::ForceComplete {
                    instance: r.id.clone(),
                    migration_id: mid,
                    reason: why,
                });
            }
            TimeoutAction::Abort => send_abort(r, mid, why, total, out),
        }
    }
}

/// No two status lines of one status less than this apart.
pub const LINE_EVERY_MS: Millis = 5_000;

/// The status line of a live migration, when it says something new: a
/// status change at once; else, at most one per [`LINE_EVERY_MS`], a new pass
/// of a migration that is not converging, or +10 points of a converging one.
fn status_line(
    r: &mut InstanceRecord,
    m: &MigrationView,
    pct: Option<u8>,
    now: Millis,
    total: usize,
    out: &mut Vec<Command>,
) {
    let status = m.status.as_str().to_string();
    let conv = &r.track.conv;
    let cycling = m.status == MigrationStatus::Running && conv.cycling();
    let changed = r.track.line_status.as_deref() != Some(status.as_str());
    let due = r
        .track
        .line_at
        .is_none_or(|t| now.saturating_sub(t) >= LINE_EVERY_MS);
    let step = if cycling {
        conv.pass > r.track.line_pass
    } else {
        match (pct, r.track.line_pct) {
            (Some(p), Some(q)) => p >= q.saturating_add(10),
            (Some(_), None) => true,
            _ => false,
        }
    };
    // The first numbers of a migration are a clear step too: the line of
    // the status change ("running") came before its first progress read.
    let first_numbers = !cycling && pct.is_some() && r.track.line_pct.is_none();
    if !(changed || first_numbers || (due && step)) {
        return;
    }
    let dest = m
        .dest_compute
        .clone()
        .unwrap_or_else(|| r.destination_label());
    let mut line = format!("[{}/{}] {} → {dest} {status}", r.index, total, r.name);
    if let (Some(t), Some(rem)) = (m.memory_total_bytes, m.memory_remaining_bytes) {
        if cycling {
            line.push_str(&format!(", {}", pass_numbers(conv, m, now)));
        } else if let Some(p) = pct {
            line.push_str(&format!(
                " {p}% ({})",
                transferred(t.saturating_sub(rem.min(t)), t)
            ));
        }
    }
    r.track.line_at = Some(now);
    r.track.line_status = Some(status);
    r.track.line_pct = pct.or(r.track.line_pct);
    r.track.line_pass = conv.pass;
    progress(r, line, out);
}

/// What matters of a migration past its first pass: the pass, the dirty
/// memory the last pass left (and the best), what is left now, how many
/// times its memory was copied, and how long since progress.
fn pass_numbers(c: &Convergence, m: &MigrationView, now: Millis) -> String {
    let t = m.memory_total_bytes.unwrap_or(0);
    let dirty = c.dirty.map(convergence::mib).unwrap_or_else(|| "?".into());
    let best = c
        .best_dirty
        .map(|b| format!(" (best {} at pass {})", convergence::mib(b), c.best_pass))
        .unwrap_or_default();
    format!(
        "pass {}: the last pass left {dirty} dirty{best}, {} of {} left now, copied {} its memory, {} s since progress",
        c.pass,
        convergence::mib(m.memory_remaining_bytes.unwrap_or(0)),
        convergence::mib(t),
        convergence::copied_times(m.memory_processed_bytes.unwrap_or(0), t),
        c.since_progress_s(now)
    )
}

/// When to look again at a running migration: sooner than the tick when,
/// at the rate seen between two samples, its remaining memory reaches zero
/// before the next tick.
fn eta_wake(prev: Option<(Millis, u64)>, now: Millis, rem: u64, tick: Millis) -> Option<Millis> {
    let (t0, r0) = prev?;
    let dt = now.checked_sub(t0).filter(|d| *d > 0)?;
    let shrunk = r0.checked_sub(rem).filter(|d| *d > 0)?;
    let eta = (rem as u128 * dt as u128 / shrunk as u128).min(u64::MAX as u128) as u64;
    (eta < tick).then(|| now + eta.max(MIN_WAKE_MS))
}

/// Nova accepted a control call.
fn command_done(r: &mut InstanceRecord, command: Control, now: Millis) {
    match command {
        Control::Abort => {
            r.track.abort_pending = false;
            r.track.abort_accepted_at.get_or_insert(now);
        }
        Control::ForceComplete => {
            r.track.force_accepted_at.get_or_insert(now);
        }
        Control::ConfirmResize => {}
        Control::ResetState => {
            r.track.reset_pending = false;
            r.track.reset_accepted = true;
            // Read the server again before concluding.
            r.track.server_at = None;
        }
        Control::Stop | Control::Start => r.track.power_refused = None,
    }
}

/// The id of the migration record of this instance's start, as the driver
/// reports it.
fn migration_found(r: &mut InstanceRecord, migration_id: MigrationId) -> Handled {
    use Handled::{Applied, Ignored as No};
    if r.past_migrations.contains(&migration_id) {
        return No(Ignored::NotThisMigration);
    }
    let Phase::Started {
        migration_id: m @ None,
        ..
    } = &mut r.phase
    else {
        return No(Ignored::WrongPhase);
    };
    *m = Some(migration_id);
    r.migration_id = Some(migration_id);
    Applied
}

/// A migration record of Nova's listing for `r`: taken when it is this
/// attempt's (the one ownership rule, [`owned_by_attempt`]); a list entry
/// keeps the last progress sample of the same status.
fn migration_seen(r: &mut InstanceRecord, view: &MigrationView, now: Millis) -> Handled {
    use Handled::{Applied, Ignored as No};
    if r.past_migrations.contains(&view.id) {
        return No(Ignored::NotThisMigration);
    }
    let Phase::Started {
        since,
        migration_id,
    } = r.phase
    else {
        return No(Ignored::WrongPhase);
    };
    match migration_id {
        Some(m) if m == view.id => {}
        Some(_) => return No(Ignored::NotThisMigration),
        None if owned_by_attempt(
            view.created_at,
            since,
            view.id,
            &r.past_migrations,
            &view.status,
        ) =>
        {
            r.phase = Phase::Started {
                since,
                migration_id: Some(view.id),
            };
            r.migration_id = Some(view.id);
        }
        None => return No(Ignored::NotThisMigration),
    }
    let mut view = view.clone();
    // A list entry carries no progress: keep the last sample's.
    if let Some(prev) = &r.track.migration
        && prev.id == view.id
    {
        if prev.status != view.status {
            r.track.status_since = Some(now);
        }
        if view.memory_total_bytes.is_none() && prev.status == view.status {
            view.memory_total_bytes = prev.memory_total_bytes;
            view.memory_processed_bytes = prev.memory_processed_bytes;
            view.memory_remaining_bytes = prev.memory_remaining_bytes;
            view.disk_total_bytes = prev.disk_total_bytes;
            view.disk_processed_bytes = prev.disk_processed_bytes;
            view.disk_remaining_bytes = prev.disk_remaining_bytes;
        }
    } else {
        r.track.status_since = Some(now);
    }
    r.track.migration = Some(view);
    Applied
}

/// What a stall decision says: the kind and the real current numbers.
fn stall_reason(
    kind: StallKind,
    c: &Convergence,
    m: &MigrationView,
    policy: &Policy,
    now: Millis,
    pct_s: &str,
) -> String {
    let opt = |b: Option<u64>| b.map(convergence::mib).unwrap_or_else(|| "?".into());
    // The real current numbers, not the best ever seen.
    let now_s = format!(
        "now {} of {} left, {pct_s}",
        opt(m.memory_remaining_bytes),
        opt(m.memory_total_bytes)
    );
    match kind {
        StallKind::NotConverging => {
            let since = match c.best_dirty {
                Some(b) => format!("pass {} left {} dirty", c.best_pass, convergence::mib(b)),
                None => format!("the first pass copied {}", opt(m.memory_total_bytes)),
            };
            format!(
                "stalled: not converging: no progress for {} s (stall-timeout {} s): {since}, and {} {} since did not bring it below 3/4 of that (pass {} left {}); {now_s}, {} its memory copied",
                c.since_progress_s(now),
                policy.stall_timeout_s,
                c.failed_passes,
                if c.failed_passes == 1 {
                    "pass"
                } else {
                    "passes"
                },
                c.pass,
                opt(c.dirty),
                convergence::copied_times(
                    m.memory_processed_bytes.unwrap_or(0),
                    m.memory_total_bytes.unwrap_or(0)
                )
            )
        }
        StallKind::CopyingStopped => format!(
            "stalled: nothing copied and no progress for {} s (stall-timeout {} s; {now_s})",
            c.since_progress_s(now),
            policy.stall_timeout_s
        ),
        StallKind::NotShrinking => format!(
            "stalled: not converging: remaining has not fallen below {} for {} s while memory was copied again (stall-timeout {} s); {now_s}, {} its memory copied",
            convergence::mib(c.low),
            c.since_progress_s(now),
            policy.stall_timeout_s,
            convergence::copied_times(
                m.memory_processed_bytes.unwrap_or(0),
                m.memory_total_bytes.unwrap_or(0)
            )
        ),
    }
}

/// The stall / hard-limit / Nova-timer rules of a running migration.
fn timeout_decision(
    r: &InstanceRecord,
    m: &MigrationView,
    policy: &Policy,
    now: Millis,
    pct: Option<u8>,
) -> Option<(TimeoutAction, String)> {
    let run_start = r.track.running_since?;
    let pct_s = pct
        .map(|p| format!("{p}%"))
        .unwrap_or_else(|| "unknown progress".into());
    let fca_hit =
        policy.force_complete_at > 0 && pct.is_some_and(|p| p >= policy.force_complete_at);
    let running_for = now.saturating_sub(run_start);
    if let Some(kind) = r.track.conv.stalled(now, policy.stall_timeout_s * 1000) {
        let mut why = stall_reason(kind, &r.track.conv, m, policy, now, &pct_s);
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
        return Some((act, why));
    }
    if policy.migration_timeout_s > 0 && running_for >= policy.migration_timeout_s * 1000 {
        return Some((
            policy.timeout_action,
            format!(
                "running for {} s, past migration-timeout {} s ({pct_s})",
                running_for / 1000,
                policy.migration_timeout_s
            ),
        ));
    }
    let nova = policy.nova_timeout_ms(r.ram_mb)?;
    let wants_fc = policy.timeout_action == TimeoutAction::ForceComplete || fca_hit;
    let act_at = nova.saturating_sub(policy.nova_margin_ms());
    (wants_fc && running_for >= act_at).then(|| {
        (
            TimeoutAction::ForceComplete,
            format!(
                "Nova's completion timer ({} s/GiB × {:.1} GiB = {} s) would fire in about {} s (running {} s, {pct_s}); force-completing before it aborts",
                policy.nova_completion_timeout_s_per_gib,
                (r.ram_mb as f64 / 1024.0).max(2.0),
                nova / 1000,
                nova.saturating_sub(running_for) / 1000,
                running_for / 1000
            ),
        )
    })
}

fn send_abort(
    r: &mut InstanceRecord,
    mid: MigrationId,
    why: String,
    total: usize,
    out: &mut Vec<Command>,
) {
    r.track.abort_pending = true;
    if r.track.abort_reason.is_none() {
        r.error = Some(format!("aborted: {why}"));
        decide(r, format!("abort: {why}"), total, out);
        r.track.abort_reason = Some(why.clone());
    }
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
            destination: Some(Destination::Scheduler),
            fits: true,
            estimated_host: None,
            demand: BTreeMap::new(),
            policy: Default::default(),
            priority: 5,
            check: None,
            owner: None,
        }
    }

    pub(crate) fn sv(host: &str, status: &str, vm: &str, task: Option<&str>) -> ServerView {
        ServerView {
            host: host.into(),
            status: status.into(),
            vm_state: VmState::parse(vm),
            task_state: task.map(Into::into),
            fault: None,
            policy: None,
        }
    }

    pub(crate) fn mv(id: u64, status: &str, total: u64, rem: u64) -> MigrationView {
        MigrationView {
            id: MigrationId(id),
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
            migration_id: MigrationId(m),
        }
    }
    fn server(id: &str, v: ServerView) -> Observation {
        Observation::Server {
            instance: id.into(),
            view: v,
        }
    }
    /// Found while writing the other-actors run: stopped by its owner right after it
    /// arrived, the instance was never taken as migrated (a hang).
    #[test]
    fn stopped_by_its_owner_on_arrival_is_still_migrated() {
        let mut d = drain(1, Policy::default());
        running(&mut d);
        d.step(
            1000,
            &[
                migration("i0", mv(5, "completed", 4 * G, 0)),
                server("i0", sv("node4", "SHUTOFF", "stopped", None)),
            ],
        );
        let r = d.get("i0").unwrap();
        assert_eq!(r.outcome(), Some(Outcome::Migrated));
        assert!(
            r.decisions
                .iter()
                .any(|x| x.contains("now stopped on node4"))
        );
    }

    /// A fresh read of a pending instance: still here, idle, running.
    pub(crate) fn here(id: &str) -> Observation {
        server(id, sv("node1", "ACTIVE", "active", None))
    }
    fn here_stopped(id: &str) -> Observation {
        server(id, sv("node1", "SHUTOFF", "stopped", None))
    }
    /// After an abort ended the migration: Nova leaves it ACTIVE on node1
    /// for the whole settle window (SETTLE_MS).
    fn settle_active(d: &mut Drain, now: Millis, id: &str) -> Vec<Command> {
        d.step(
            now + SETTLE_MS,
            &[server(id, sv("node1", "ACTIVE", "active", None))],
        )
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
        // The records appear after the 202: the list comes a tick later.
        assert!(
            !c.iter()
                .any(|c| matches!(c, Command::ListMigrations { .. }))
        );
        assert_eq!(d.poll_timeout(1000), Some(3000), "the next tick");
        let c = d.step(
            2000,
            &[
                server("i0", sv("node4", "ACTIVE", "active", None)),
                server("i1", sv("node1", "MIGRATING", "active", Some("migrating"))),
            ],
        );
        assert_eq!(d.get("i0").unwrap().outcome(), Some(Outcome::Migrated));
        assert_eq!(d.get("i0").unwrap().destination.as_deref(), Some("node4"));
        // I2: the next one is read first, and started on that fresh view.
        assert!(starts(&c).is_empty());
        assert!(c.contains(&Command::ReadServer {
            instance: "i2".into()
        }));
        let c = d.step(2001, &[here("i2")]);
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
        // Retried at once (slot free), on a fresh read: attempt 2.
        assert!(c.contains(&Command::ReadServer {
            instance: "i0".into()
        }));
        let c = d.step(2001, &[here("i0")]);
        assert!(c.contains(&Command::StartLive {
            instance: "i0".into(),
            attempt: 2,
            target: None
        }));
        assert_eq!(d.get("i0").unwrap().past_migrations, vec![MigrationId(7)]);
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
        assert!(starts(&d.step(10_100, &[])).is_empty(), "read first");
        assert_eq!(starts(&d.step(10_150, &[here("i0")])), vec!["i0"]);
        d.step(10_200, &[conflict(1)]);
        assert_eq!(d.instances[0].phase, Phase::Waiting { until: 30_200 });
        d.step(30_200, &[here("i0")]);
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
        // A new pass (remaining rose) that left more than 3/4 of the memory
        // dirty is no progress (plan::convergence; the old rule's "no new
        // minimum" bounced between 3 and 2 GiB here).
        tick(&mut d, 60_000, "running", 3 * G + G / 2);
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
        assert_eq!(*migration_id, MigrationId(5));
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
        settle_active(&mut d, 94_000, "i0");
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
                migration_id: MigrationId(5),
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
        settle_active(&mut d, 4000, "i0");
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
                migration_id: MigrationId(5),
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
        settle_active(&mut d, 50, "i0");
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
                migration_id: MigrationId(6),
                ..
            }
        ));
        assert!(starts(&c).is_empty(), "no slot free yet");
        let c = d.step(
            3,
            &[
                server("i0", sv("node4", "ACTIVE", "active", None)),
                server("i1", sv("node1", "ACTIVE", "active", None)),
                migration("i1", mv(6, "cancelled", 4 * G, 2 * G)),
            ],
        );
        assert_eq!(d.get("i0").unwrap().outcome(), Some(Outcome::Migrated));
        // Aborted, watched for SETTLE_MS (Nova may yet put it in ERROR),
        // holding its slot meanwhile.
        assert_eq!(d.get("i1").unwrap().outcome(), None);
        assert!(starts(&c).is_empty(), "{c:?}");
        let c = settle_active(&mut d, 3, "i1");
        assert_eq!(d.get("i1").unwrap().outcome(), Some(Outcome::Aborted));
        // One named instance's abort is not the run's: the others go on.
        assert!(!d.stop_starting);
        assert!(c.contains(&Command::ReadServer {
            instance: "i2".into()
        }));
        assert_eq!(starts(&d.step(4 + SETTLE_MS, &[here("i2")])), vec!["i2"]);
        assert!(!d.is_done());
    }

    #[test]
    fn abort_of_a_name_that_matches_nothing_halts_nothing() {
        let mut d = drain(2, Policy::default());
        let h = d.handle(
            0,
            &Observation::AbortRequested {
                vm: Some("vm-typo".into()),
            },
        );
        assert_eq!(h, Handled::Ignored(Ignored::NoSuchVm("vm-typo".into())));
        assert!(!d.stop_starting);
        assert_eq!(starts(&d.poll(0)), vec!["i0"]);
        // And a named abort does not clear an earlier abort of the run.
        d.handle(1, &Observation::AbortRequested { vm: None });
        d.handle(
            2,
            &Observation::AbortRequested {
                vm: Some("vm-i0".into()),
            },
        );
        assert!(d.stop_starting);
        assert_eq!(d.abort_at, Some(1));
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
        assert!(starts(&c).is_empty(), "read first");
        let c = d.step(3, &[here_stopped("c")]);
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
            command: Control::ConfirmResize,
            message: "409".into(),
            gone: false,
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
                .any(|x| x.contains("confirm-resize refused"))
        );
        // I1: not left waiting for ever.
        let r = d.get("c").unwrap();
        assert_eq!(r.outcome(), Some(Outcome::Failed));
        assert!(r.error.as_deref().unwrap().contains("refused 3 times"));
    }

    #[test]
    fn unknown_migration_view_taken_only_when_created_after_intent() {
        let mut d = drain(1, Policy::default());
        d.step(1000, &[here("i0")]);
        d.step(1001, &[accepted("i0", 1)]);
        let mut old = mv(3, "error", G, G);
        old.created_at = Some(999);
        d.step(1002, &[migration("i0", old)]);
        assert_eq!(d.get("i0").unwrap().migration_id, None);
        let mut new = mv(4, "running", G, G);
        new.created_at = Some(1000);
        let c = d.step(1003, &[migration("i0", new)]);
        assert_eq!(d.get("i0").unwrap().migration_id, Some(MigrationId(4)));
        assert!(!c.iter().any(|c| matches!(c, Command::StartLive { .. })));
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

    fn gone(id: &str) -> Observation {
        Observation::ServerGone {
            instance: id.into(),
        }
    }

    /// Found at eac490e: a server deleted mid-migration (its record gone
    /// too) hung the drain for ever, with stall-timeout 0 at once.
    #[test]
    fn a_server_deleted_mid_migration_ends_skipped() {
        let mut d = drain(
            1,
            Policy {
                stall_timeout_s: 0,
                ..Policy::default()
            },
        );
        running(&mut d);
        tick(&mut d, 1000, "running", 2 * G);
        let c = d.step(3000, &[gone("i0")]);
        let r = d.get("i0").unwrap();
        assert_eq!(r.outcome(), Some(Outcome::Skipped));
        assert!(
            r.error
                .as_deref()
                .unwrap()
                .contains("deleted during its migration")
        );
        assert!(d.is_done());
        assert!(
            c.iter()
                .any(|c| matches!(c, Command::Progress { line, .. } if line.contains("skipped")))
        );
        assert_eq!(d.poll_timeout(3000), None);
    }

    /// Found by the other-actors test (seed 1796152173883): a server deleted
    /// while its migration was queued behind another left Nova's record
    /// "queued" for ever; the drain read only the record, and waited
    /// STUCK_MS (600 s) for an abort that was answered 404.
    #[test]
    fn a_server_deleted_while_its_migration_is_queued_is_seen_at_a_recheck() {
        let mut d = drain(1, Policy::default());
        running(&mut d);
        let mut asks = vec![];
        let mut now = 1000;
        while now <= 4 * SERVER_RECHECK_MS && asks.len() < 2 {
            let mut obs = vec![
                Observation::Listed { ok: true },
                migration("i0", mv(5, "queued", 0, 0)),
            ];
            if asks.len() == 1 && asks[0] == now - 1000 {
                // The first read: still here, migrating.
                obs.push(server(
                    "i0",
                    sv("node1", "MIGRATING", "active", Some("migrating")),
                ));
            }
            let c = d.step(now, &obs);
            if c.iter()
                .any(|c| matches!(c, Command::ReadServer { instance } if instance == "i0"))
            {
                asks.push(now);
            }
            now += 1000;
        }
        assert_eq!(
            asks.len(),
            2,
            "the server of a queued migration is read again: {asks:?}"
        );
        let gap = asks[1] - (asks[0] + 1000);
        assert!(gap >= SERVER_RECHECK_MS, "not at every tick: {asks:?}");
        assert!(gap <= SERVER_RECHECK_MS + 6000, "{asks:?}");
        d.step(asks[1], &[gone("i0")]);
        assert_eq!(d.get("i0").unwrap().outcome(), Some(Outcome::Skipped));
        assert!(d.is_done());
    }

    /// Found at eac490e: an abort answered 404 (the record vanished) set
    /// `abort_sent` and the instance was never looked at again.
    #[test]
    fn an_abort_of_a_vanished_migration_ends_from_the_server() {
        let mut d = drain(
            1,
            Policy {
                stall_timeout_s: 10,
                retries: 3,
                ..Policy::default()
            },
        );
        running(&mut d);
        tick(&mut d, 1000, "running", 2 * G);
        let c = tick(&mut d, 12_000, "running", 2 * G);
        assert!(c.iter().any(|c| matches!(c, Command::Abort { .. })));
        let c = d.step(
            12_001,
            &[Observation::CommandFailed {
                instance: "i0".into(),
                command: Control::Abort,
                message: "404 Not Found".into(),
                gone: true,
            }],
        );
        assert!(d.get("i0").unwrap().outcome().is_none());
        // The next tick reads the server (the record is gone), and the
        // server idle on the source ends the attempt as aborted, not retried.
        let c2 = d.step(14_001, &[Observation::Listed { ok: true }]);
        assert!(
            c.iter().chain(c2.iter()).any(|c| matches!(
                c,
                Command::ListMigrations { .. } | Command::ReadServer { .. }
            )),
            "{c:?} {c2:?}"
        );
        d.step(
            14_002,
            &[server("i0", sv("node1", "ACTIVE", "active", None))],
        );
        settle_active(&mut d, 14_002, "i0");
        let r = d.get("i0").unwrap();
        assert_eq!(r.outcome(), Some(Outcome::Aborted), "{r:#?}");
    }

    /// Found at eac490e: an abort refused once was never sent again.
    #[test]
    fn a_refused_abort_is_sent_again_then_given_up_bounded() {
        let mut d = drain(
            1,
            Policy {
                stall_timeout_s: 10,
                ..Policy::default()
            },
        );
        running(&mut d);
        tick(&mut d, 1000, "running", 2 * G);
        let aborts = |c: &[Command]| {
            c.iter()
                .filter(|c| matches!(c, Command::Abort { .. }))
                .count()
        };
        assert_eq!(aborts(&tick(&mut d, 12_000, "running", 2 * G)), 1);
        let refused = Observation::CommandFailed {
            instance: "i0".into(),
            command: Control::Abort,
            message: "409 Conflict".into(),
            gone: false,
        };
        d.step(12_001, std::slice::from_ref(&refused));
        assert_eq!(
            aborts(&tick(&mut d, 13_000, "running", 2 * G)),
            0,
            "a tick later"
        );
        assert_eq!(
            aborts(&tick(&mut d, 14_001, "running", 2 * G)),
            1,
            "sent again"
        );
        d.step(14_002, std::slice::from_ref(&refused));
        assert_eq!(aborts(&tick(&mut d, 16_002, "running", 2 * G)), 1);
        d.step(16_003, std::slice::from_ref(&refused));
        assert_eq!(
            aborts(&tick(&mut d, 18_003, "running", 2 * G)),
            0,
            "given up"
        );
    }

    /// Found at eac490e: a live attempt after which the owner stopped the
    /// instance (idle on the source, neither active nor paused) never ended.
    #[test]
    fn stopped_by_its_owner_during_the_attempt_ends_skipped() {
        let mut d = drain(1, Policy::default());
        running(&mut d);
        d.step(
            1000,
            &[
                migration("i0", mv(5, "failed", 4 * G, 4 * G)),
                server("i0", sv("node1", "SHUTOFF", "stopped", None)),
            ],
        );
        let r = d.get("i0").unwrap();
        assert_eq!(r.outcome(), Some(Outcome::Skipped));
        assert!(
            r.error.as_deref().unwrap().contains("now stopped"),
            "{:?}",
            r.error
        );
    }

    /// Found at eac490e: accepted/queued/preparing migrations had no deadline.
    #[test]
    fn a_migration_stuck_in_queued_is_aborted_when_nothing_else_runs() {
        let mut d = drain(1, Policy::default());
        running(&mut d);
        tick(&mut d, 1000, "queued", 4 * G);
        let c = tick(&mut d, 1000 + STUCK_MS - 1, "queued", 4 * G);
        assert!(!c.iter().any(|c| matches!(c, Command::Abort { .. })));
        let c = tick(&mut d, 1000 + STUCK_MS, "queued", 4 * G);
        assert!(
            c.iter().any(|c| matches!(c, Command::Abort { reason, .. } if reason.contains("has been queued for 600 s"))),
            "{c:?}"
        );
        // Where it cannot be aborted (< 2.65), it ends failed, saying so.
        let mut d = drain(
            1,
            Policy {
                can_abort_queued: false,
                ..Policy::default()
            },
        );
        running(&mut d);
        tick(&mut d, 1000, "queued", 4 * G);
        tick(&mut d, 1000 + STUCK_MS, "queued", 4 * G);
        let r = d.get("i0").unwrap();
        assert_eq!(r.outcome(), Some(Outcome::Failed));
        assert!(
            r.error
                .as_deref()
                .unwrap()
                .contains("cannot be aborted here")
        );
    }

    /// Found at eac490e: an instance moved off this node by someone else
    /// while it waited its turn was live-migrated again from wherever it
    /// was (I2) — also after a 409 back-off.
    #[test]
    fn moved_by_someone_else_before_its_turn_is_never_started() {
        let mut d = drain(2, Policy::default());
        assert_eq!(starts(&d.step(0, &[])), vec!["i0"]);
        d.step(1, &[accepted("i0", 1)]);
        let c = d.step(2000, &[server("i0", sv("node4", "ACTIVE", "active", None))]);
        assert!(c.contains(&Command::ReadServer {
            instance: "i1".into()
        }));
        let c = d.step(2001, &[server("i1", sv("node3", "ACTIVE", "active", None))]);
        assert!(starts(&c).is_empty());
        let r = d.get("i1").unwrap();
        assert_eq!(r.outcome(), Some(Outcome::Skipped));
        assert!(
            r.error
                .as_deref()
                .unwrap()
                .contains("moved to node3 by someone else")
        );
        // After a 409: read again before the retry.
        let mut d = drain(1, Policy::default());
        d.step(0, &[]);
        d.step(
            1,
            &[Observation::Started {
                instance: "i0".into(),
                attempt: 1,
                result: StartResult::Conflict("task_state migrating".into()),
            }],
        );
        let c = d.step(15_001, &[]);
        assert!(
            starts(&c).is_empty()
                && c.contains(&Command::ReadServer {
                    instance: "i0".into()
                })
        );
        let c = d.step(
            15_002,
            &[server("i0", sv("node3", "ACTIVE", "active", None))],
        );
        assert!(starts(&c).is_empty());
        assert_eq!(d.get("i0").unwrap().outcome(), Some(Outcome::Skipped));
    }

    /// Issue 14: an owner who sets (or changes) the policy after the plan
    /// is heard right before the start: the instance is left, saying so.
    #[test]
    fn a_policy_changed_since_the_plan_leaves_the_instance_alone() {
        let mut d = drain(2, Policy::default());
        assert_eq!(starts(&d.step(0, &[])), vec!["i0"]);
        d.step(1, &[accepted("i0", 1)]);
        let c = d.step(2000, &[server("i0", sv("node4", "ACTIVE", "active", None))]);
        assert!(c.contains(&Command::ReadServer {
            instance: "i1".into()
        }));
        let mut view = sv("node1", "ACTIVE", "active", None);
        view.policy = Some("skip".into());
        let c = d.step(2001, &[server("i1", view)]);
        assert!(starts(&c).is_empty());
        let r = d.get("i1").unwrap();
        assert_eq!(r.outcome(), Some(Outcome::Skipped));
        let e = r.error.as_deref().unwrap();
        assert!(
            e.contains(
                "its policy changed since the plan (nova-live-migration:policy unset → skip)"
            ),
            "{e}"
        );
    }

    /// Found at eac490e: a start that never reached Nova (connection
    /// refused) failed the instance at once, ignoring `retries` (I5).
    #[test]
    fn a_start_that_never_reached_nova_is_retried_with_backoff() {
        let mut d = drain(
            1,
            Policy {
                retries: 1,
                conflict_backoff_ms: 10_000,
                ..Policy::default()
            },
        );
        d.step(0, &[]);
        let not_sent = |a| Observation::Started {
            instance: "i0".into(),
            attempt: a,
            result: StartResult::NotSent("connection refused".into()),
        };
        d.step(1, &[not_sent(1)]);
        let r = d.get("i0").unwrap();
        assert_eq!(r.phase, Phase::Waiting { until: 10_001 });
        assert_eq!((r.attempts, r.unsent), (0, 1));
        assert!(r.decisions.iter().any(|x| x.contains("never reached Nova")));
        assert!(starts(&d.step(10_001, &[])).is_empty(), "read first");
        let c = d.step(10_002, &[here("i0")]);
        assert!(
            c.iter()
                .any(|c| matches!(c, Command::StartLive { attempt: 2, .. }))
        );
        d.step(10_003, &[accepted("i0", 2)]);
        let r = d.get("i0").unwrap();
        assert_eq!((r.attempts, r.unsent), (1, 1), "counted apart");
        // Once more never reached: no retries left.
        let mut d = drain(
            1,
            Policy {
                retries: 0,
                ..Policy::default()
            },
        );
        d.step(0, &[]);
        d.step(1, &[not_sent(1)]);
        assert_eq!(d.get("i0").unwrap().outcome(), Some(Outcome::Failed));
    }

    #[test]
    fn unexpected_input_is_an_explicit_outcome() {
        let mut d = drain(1, Policy::default());
        assert_eq!(
            d.handle(0, &here("nope")),
            Handled::Ignored(Ignored::UnknownInstance)
        );
        assert_eq!(
            d.handle(0, &accepted("i0", 1)),
            Handled::Ignored(Ignored::WrongPhase)
        );
        d.step(0, &[]);
        assert_eq!(
            d.handle(1, &accepted("i0", 7)),
            Handled::Ignored(Ignored::NotThisAttempt)
        );
        assert_eq!(d.handle(1, &accepted("i0", 1)), Handled::Applied);
        let mut old = mv(3, "error", G, G);
        old.created_at = Some(0);
        old.status = MigrationStatus::Error;
        let mut before = old.clone();
        before.created_at = None;
        assert_eq!(
            d.handle(2, &migration("i0", before)),
            Handled::Ignored(Ignored::NotThisMigration)
        );
    }

    /// The end of a migration is seen as soon as it is due, not a tick late.
    #[test]
    fn a_migration_about_to_complete_is_looked_at_sooner() {
        let mut d = drain(1, Policy::default());
        running(&mut d);
        tick(&mut d, 2000, "running", 4 * G);
        tick(&mut d, 4000, "running", 2 * G);
        // 2 GiB in 2 s: the rest takes 2 s → no sooner than the tick.
        assert_eq!(d.instances[0].track.wake_at, None);
        tick(&mut d, 6000, "running", G / 4);
        // 1.75 GiB in 2 s: 0.25 GiB left ≈ 0.29 s.
        let w = d.instances[0].track.wake_at.expect("sooner");
        assert!((6250..6400).contains(&w), "{w}");
        assert_eq!(d.poll_timeout(6000), Some(w));
    }
}

#[cfg(test)]
mod recorded {
    //! The drain fed the real QEMU series (`tests/fixtures/qemu/`), one
    //! sample per poll as Nova gave them.
    use super::tests::{entry, sv};
    use super::*;

    fn samples(text: &str) -> Vec<(Millis, MigrationView)> {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let end = v["action_at"].as_f64().unwrap_or(f64::MAX);
        v["samples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["t"].as_f64().unwrap() <= end)
            .map(|s| {
                let b = |k: &str| s[k].as_u64();
                (
                    (s["t"].as_f64().unwrap() * 1000.0).round() as Millis,
                    MigrationView {
                        id: MigrationId(7),
                        status: MigrationStatus::from(s["status"].as_str().unwrap().to_string()),
                        created_at: None,
                        dest_compute: Some("node4.maas".into()),
                        memory_total_bytes: b("memory_total_bytes"),
                        memory_processed_bytes: b("memory_processed_bytes"),
                        memory_remaining_bytes: b("memory_remaining_bytes"),
                        disk_total_bytes: None,
                        disk_processed_bytes: None,
                        disk_remaining_bytes: None,
                    },
                )
            })
            .collect()
    }

    /// Every command of the run, with its time.
    fn replay(text: &str, policy: Policy) -> Vec<(Millis, Command)> {
        let mut d = Drain::new("node1.maas", &[entry("i0", Action::Live, 128)], policy, 0);
        let mut all = vec![];
        d.step(0, &[]);
        d.step(
            0,
            &[
                Observation::Started {
                    instance: "i0".into(),
                    attempt: 1,
                    result: StartResult::Accepted,
                },
                Observation::MigrationFound {
                    instance: "i0".into(),
                    migration_id: MigrationId(7),
                },
            ],
        );
        for (t, m) in samples(text) {
            for c in d.step(
                t,
                &[
                    Observation::Migration {
                        instance: "i0".into(),
                        view: m,
                    },
                    Observation::Server {
                        instance: "i0".into(),
                        view: sv("node1.maas", "MIGRATING", "active", Some("migrating")),
                    },
                ],
            ) {
                all.push((t, c));
            }
        }
        all
    }

    fn lines(c: &[(Millis, Command)]) -> Vec<(Millis, String)> {
        c.iter()
            .filter_map(|(t, c)| match c {
                Command::Progress { line, .. } => Some((*t, line.clone())),
                _ => None,
            })
            .collect()
    }

    fn fc_policy(stall: u64) -> Policy {
        Policy {
            stall_timeout_s: stall,
            timeout_action: TimeoutAction::ForceComplete,
            poll_interval_ms: 1000,
            ..Policy::default()
        }
    }

    const IDLE: &str = include_str!("../../tests/fixtures/qemu/idle.json");
    const D2: &str = include_str!("../../tests/fixtures/qemu/dirty-2-200.json");
    const D4: &str = include_str!("../../tests/fixtures/qemu/dirty-4-200.json");
    const D8: &str = include_str!("../../tests/fixtures/qemu/dirty-8-200.json");
    const D16: &str = include_str!("../../tests/fixtures/qemu/dirty-16-200.json");

    #[test]
    fn converging_guests_get_no_decision_and_few_lines() {
        for text in [IDLE, D2, D4] {
            let c = replay(text, fc_policy(5));
            assert!(
                !c.iter().any(|(_, c)| matches!(
                    c,
                    Command::ForceComplete { .. } | Command::Abort { .. }
                )),
                "{c:?}"
            );
            let l = lines(&c);
            // preparing, running, its first numbers, then at most one per 5 s.
            assert!(l.len() <= 5, "{l:#?}");
            for w in l.windows(2) {
                let same = w[0].1.split(' ').nth(4) == w[1].1.split(' ').nth(4);
                let first_numbers = !w[0].1.contains('%') && w[1].1.contains('%');
                assert!(
                    !same || first_numbers || w[1].0 - w[0].0 >= LINE_EVERY_MS,
                    "{l:#?}"
                );
            }
        }
    }

    #[test]
    fn dirtying_guest_is_force_completed_with_its_real_numbers() {
        let c = replay(D8, fc_policy(10));
        let fc: Vec<_> = c
            .iter()
            .filter_map(|(t, c)| match c {
                Command::ForceComplete { reason, .. } => Some((*t, reason.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(fc.len(), 1, "{c:?}");
        let (at, why) = &fc[0];
        assert_eq!(*at, 23_220, "{why}");
        // At 23.22 s: 8.6 MiB of 128.5 MiB left, processed 397 MiB (3.1×).
        assert!(
            why.contains("not converging")
                && why.contains("pass 2 left 10.6 MiB dirty")
                && why.contains("pass 3 left 8.6 MiB")
                && why.contains("now 8.6 MiB of 129 MiB left")
                && why.contains("3.1× its memory copied"),
            "{why}"
        );
        let l = lines(&c);
        // 22 s of running samples: the lines stay few and say passes.
        assert!(l.len() <= 7, "{l:#?}");
        assert!(
            l.iter()
                .any(|(_, x)| x.contains("pass 3: the last pass left 8.6 MiB dirty")),
            "{l:#?}"
        );
    }

    #[test]
    fn the_16_mib_sawtooth_stalls_and_lines_follow_passes_not_percentages() {
        let c = replay(D16, fc_policy(20));
        let l = lines(&c);
        let fc = c
            .iter()
            .find(|(_, c)| matches!(c, Command::ForceComplete { .. }));
        // Passes began at 11.1 (progress), 19.1, 26.1 s: stalled at 31.1 s —
        // but the recording ends at the force-complete of 30.1 s.
        assert!(fc.is_none(), "{fc:?}");
        let c = replay(D16, fc_policy(10));
        let fc = c
            .iter()
            .find(|(_, c)| matches!(c, Command::ForceComplete { .. }))
            .unwrap();
        assert_eq!(fc.0, 21_120);
        // Not one line per sample (30 samples): one per pass or status.
        assert!(l.len() <= 8, "{l:#?}");
        assert!(!l.iter().any(|(_, x)| x.contains("100%")), "{l:#?}");
    }
}

#[cfg(test)]
mod after_abort {
    //! Nova 34 after an aborted live migration (tests/fixtures/qemu/
    //! dirty-8-200-abort.json): "cancelled", then the record "error" and the
    //! instance in vm_state ERROR while its guest keeps running on node1.
    use super::tests::{entry, mv, sv};
    use super::*;

    const G: u64 = 1 << 30;

    fn aborted(reset: bool) -> Drain {
        let mut d = Drain::new(
            "node1",
            &[entry("i0", Action::Live, 4096)],
            Policy {
                reset_after_abort: reset,
                ..Policy::default()
            },
            0,
        );
        d.step(0, &[]);
        d.step(
            0,
            &[
                Observation::Started {
                    instance: "i0".into(),
                    attempt: 1,
                    result: StartResult::Accepted,
                },
                Observation::MigrationFound {
                    instance: "i0".into(),
                    migration_id: MigrationId(5),
                },
            ],
        );
        d.step(1000, &[mig(mv(5, "running", 4 * G, 2 * G))]);
        let c = d.step(2000, &[Observation::AbortRequested { vm: None }]);
        assert!(
            c.iter().any(|c| matches!(c, Command::Abort { .. })),
            "{c:?}"
        );
        d.step(
            2100,
            &[Observation::CommandDone {
                instance: "i0".into(),
                command: Control::Abort,
            }],
        );
        d
    }
    fn mig(v: MigrationView) -> Observation {
        Observation::Migration {
            instance: "i0".into(),
            view: v,
        }
    }
    fn srv(status: &str, vm: &str) -> Observation {
        Observation::Server {
            instance: "i0".into(),
            view: sv("node1", status, vm, None),
        }
    }
    fn guest(state: GuestState) -> Observation {
        Observation::Guest {
            instance: "i0".into(),
            state,
        }
    }
    /// Cancelled and ACTIVE, then error, then ERROR: the real sequence.
    fn nova_flips(d: &mut Drain) -> Vec<Command> {
        d.step(
            3000,
            &[
                mig(mv(5, "cancelled", 4 * G, 2 * G)),
                srv("ACTIVE", "active"),
            ],
        );
        assert_eq!(d.get("i0").unwrap().outcome(), None, "watched, not ended");
        d.step(
            4000,
            &[mig(mv(5, "error", 4 * G, 2 * G)), srv("ACTIVE", "active")],
        );
        d.step(5500, &[srv("ERROR", "error")])
    }

    #[test]
    fn error_after_our_abort_is_the_aborts_end_and_is_reported_with_the_remedy() {
        let mut d = aborted(false);
        let c = nova_flips(&mut d);
        assert!(
            c.contains(&Command::CheckGuest {
                instance: "i0".into()
            }),
            "{c:?}"
        );
        let c = d.step(5600, &[guest(GuestState::Running)]);
        assert!(!c.iter().any(|c| matches!(c, Command::ResetState { .. })));
        let r = d.get("i0").unwrap();
        assert_eq!(
            r.outcome(),
            Some(Outcome::Aborted),
            "not a failure to retry"
        );
        let e = r.error.as_deref().unwrap();
        assert!(
            e.contains("Nova left the instance in ERROR on node1 although its guest is running")
                && e.contains("openstack server set --state active i0")
                && e.contains("reset-after-abort=true"),
            "{e}"
        );
        assert_eq!(r.attempts, 1);
    }

    #[test]
    fn reset_after_abort_resets_only_a_running_guest() {
        let mut d = aborted(true);
        nova_flips(&mut d);
        let c = d.step(5600, &[guest(GuestState::Running)]);
        assert!(
            c.iter()
                .any(|c| matches!(c, Command::ResetState { instance, .. } if instance == "i0")),
            "{c:?}"
        );
        // Sent once.
        let c = d.step(6000, &[srv("ERROR", "error")]);
        assert!(!c.iter().any(|c| matches!(c, Command::ResetState { .. })));
        d.step(
            6100,
            &[Observation::CommandDone {
                instance: "i0".into(),
                command: Control::ResetState,
            }],
        );
        d.step(7000, &[srv("ACTIVE", "active")]);
        let r = d.get("i0").unwrap();
        assert_eq!(r.outcome(), Some(Outcome::Aborted));
        assert!(
            r.error.as_deref().unwrap().contains("reset to active"),
            "{r:#?}"
        );
        assert!(
            r.decisions
                .iter()
                .any(|x| x.starts_with("reset-after-abort:"))
        );

        for g in [
            GuestState::NotRunning("paused".into()),
            GuestState::Absent,
            GuestState::Unknown("failed to connect".into()),
        ] {
            let mut d = aborted(true);
            nova_flips(&mut d);
            let c = d.step(5600, &[guest(g.clone())]);
            assert!(
                !c.iter().any(|c| matches!(c, Command::ResetState { .. })),
                "{g:?}: {c:?}"
            );
            let r = d.get("i0").unwrap();
            assert_eq!(r.outcome(), Some(Outcome::Aborted), "{g:?}");
            assert!(r.error.as_deref().unwrap().contains("not reset"), "{r:#?}");
            if let GuestState::Unknown(_) = g {
                assert!(
                    r.error.as_deref().unwrap().contains("could not be checked"),
                    "{r:#?}"
                );
            }
        }
    }

    #[test]
    fn a_refused_reset_is_bounded() {
        let mut d = aborted(true);
        nova_flips(&mut d);
        d.step(5600, &[guest(GuestState::Running)]);
        let mut t = 6000;
        for _ in 0..CONTROL_RETRIES {
            d.step(
                t,
                &[
                    Observation::CommandFailed {
                        instance: "i0".into(),
                        command: Control::ResetState,
                        message: "403".into(),
                        gone: false,
                    },
                    srv("ERROR", "error"),
                ],
            );
            t += 2000;
        }
        d.step(t, &[srv("ERROR", "error")]);
        let r = d.get("i0").unwrap();
        assert_eq!(r.outcome(), Some(Outcome::Aborted), "{r:#?}");
        assert!(r.error.as_deref().unwrap().contains("did not take"));
    }

    #[test]
    fn active_through_the_settle_window_ends_aborted_as_before() {
        let mut d = aborted(false);
        d.step(
            3000,
            &[
                mig(mv(5, "cancelled", 4 * G, 2 * G)),
                srv("ACTIVE", "active"),
            ],
        );
        let c = d.step(3000 + SETTLE_MS, &[srv("ACTIVE", "active")]);
        assert!(!c.iter().any(|c| matches!(c, Command::CheckGuest { .. })));
        assert_eq!(d.get("i0").unwrap().outcome(), Some(Outcome::Aborted));
        assert!(d.is_done());
    }

    #[test]
    fn error_seen_at_once_after_our_abort_is_not_failed() {
        // The instance already in ERROR at the first look after the abort.
        let mut d = aborted(false);
        let c = d.step(
            3000,
            &[mig(mv(5, "error", 4 * G, 2 * G)), srv("ERROR", "error")],
        );
        assert!(c.contains(&Command::CheckGuest {
            instance: "i0".into()
        }));
        d.step(3100, &[guest(GuestState::Running)]);
        assert_eq!(d.get("i0").unwrap().outcome(), Some(Outcome::Aborted));
    }
}
