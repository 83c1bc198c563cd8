//! The domain's small types: what Nova reports, typed once at the edge so
//! the core never compares strings to decide.

use serde::{Deserialize, Serialize};

use super::Millis;

/// A Nova migration id (`os-migrations` `id`). Nova's ids are positive; the
/// API's JSON number is turned into one only here ([`MigrationId::from_api`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MigrationId(pub u64);

impl MigrationId {
    /// From the API's signed id; `None` for a value no migration can have.
    pub fn from_api(id: i64) -> Option<MigrationId> {
        u64::try_from(id).ok().filter(|i| *i > 0).map(MigrationId)
    }
    /// For the API's paths (`/servers/{id}/migrations/{mid}`).
    pub fn as_api(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

impl std::fmt::Display for MigrationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where an instance is sent: Nova's scheduler picks, or one named host.
/// (A compute host may well be called `scheduler`: no string stands for the
/// scheduler.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Destination {
    Scheduler,
    Host(String),
}

impl Destination {
    pub fn from_target(target: Option<&str>) -> Destination {
        match target {
            Some(h) => Destination::Host(h.to_string()),
            None => Destination::Scheduler,
        }
    }
    /// The host asked for, `None` for the scheduler.
    pub fn host(&self) -> Option<&str> {
        match self {
            Destination::Scheduler => None,
            Destination::Host(h) => Some(h),
        }
    }
    /// As the report and progress lines show it (SPEC: `<host or scheduler>`).
    pub fn label(&self) -> &str {
        self.host().unwrap_or("scheduler")
    }
}

/// Nova's `OS-EXT-STS:vm_state`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum VmState {
    Active,
    Paused,
    Stopped,
    Suspended,
    Shelved,
    ShelvedOffloaded,
    Rescued,
    Resized,
    Building,
    Error,
    Deleted,
    SoftDeleted,
    /// Not reported (no admin view) or unknown to this charm.
    #[default]
    Unknown,
    Other(String),
}

impl From<String> for VmState {
    fn from(s: String) -> Self {
        VmState::parse(&s)
    }
}

impl From<VmState> for String {
    fn from(s: VmState) -> String {
        s.as_str().to_string()
    }
}

impl VmState {
    pub fn parse(s: &str) -> VmState {
        match s {
            "active" => Self::Active,
            "paused" => Self::Paused,
            "stopped" => Self::Stopped,
            "suspended" => Self::Suspended,
            "shelved" => Self::Shelved,
            "shelved_offloaded" => Self::ShelvedOffloaded,
            "rescued" => Self::Rescued,
            "resized" => Self::Resized,
            "building" => Self::Building,
            "error" => Self::Error,
            "deleted" => Self::Deleted,
            "soft-delete" => Self::SoftDeleted,
            "" => Self::Unknown,
            other => Self::Other(other.to_string()),
        }
    }
    pub fn as_str(&self) -> &str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
            Self::Suspended => "suspended",
            Self::Shelved => "shelved",
            Self::ShelvedOffloaded => "shelved_offloaded",
            Self::Rescued => "rescued",
            Self::Resized => "resized",
            Self::Building => "building",
            Self::Error => "error",
            Self::Deleted => "deleted",
            Self::SoftDeleted => "soft-delete",
            Self::Unknown => "",
            Self::Other(s) => s,
        }
    }
    /// Running or paused: what a live migration moves.
    pub fn is_live(&self) -> bool {
        matches!(self, Self::Active | Self::Paused)
    }
}

/// Nova's migration status (live and cold).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum MigrationStatus {
    Accepted,
    PreMigrating,
    Queued,
    Preparing,
    Running,
    RunningPostCopy,
    PostMigrating,
    /// Cold: the instance is being moved.
    Migrating,
    /// Cold: moved, awaiting confirm (the server is VERIFY_RESIZE).
    Finished,
    Confirmed,
    Reverted,
    Done,
    Completed,
    Failed,
    Error,
    Cancelled,
    /// Anything else.
    Other(String),
}

impl From<String> for MigrationStatus {
    fn from(s: String) -> Self {
        MigrationStatus::parse(&s)
    }
}

impl From<MigrationStatus> for String {
    fn from(s: MigrationStatus) -> String {
        s.as_str().to_string()
    }
}

impl MigrationStatus {
    pub fn parse(s: &str) -> MigrationStatus {
        match s {
            "accepted" => Self::Accepted,
            "pre-migrating" => Self::PreMigrating,
            "queued" => Self::Queued,
            "preparing" => Self::Preparing,
            "running" => Self::Running,
            "running (post-copy)" => Self::RunningPostCopy,
            "post-migrating" => Self::PostMigrating,
            "migrating" => Self::Migrating,
            "finished" => Self::Finished,
            "confirmed" => Self::Confirmed,
            "reverted" => Self::Reverted,
            "done" => Self::Done,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "error" => Self::Error,
            "cancelled" => Self::Cancelled,
            other => Self::Other(other.to_string()),
        }
    }
    pub fn as_str(&self) -> &str {
        match self {
            Self::Accepted => "accepted",
            Self::PreMigrating => "pre-migrating",
            Self::Queued => "queued",
            Self::Preparing => "preparing",
            Self::Running => "running",
            Self::RunningPostCopy => "running (post-copy)",
            Self::PostMigrating => "post-migrating",
            Self::Migrating => "migrating",
            Self::Finished => "finished",
            Self::Confirmed => "confirmed",
            Self::Reverted => "reverted",
            Self::Done => "done",
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
            Self::Completed
                | Self::Failed
                | Self::Error
                | Self::Cancelled
                | Self::Confirmed
                | Self::Reverted
                | Self::Finished
                | Self::Done
        )
    }
    /// Ended without moving the instance.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Self::Failed | Self::Error | Self::Cancelled | Self::Reverted
        )
    }
    /// Accepted but not yet copying memory: the time before it runs.
    pub fn is_before_running(&self) -> bool {
        matches!(
            self,
            Self::Accepted | Self::PreMigrating | Self::Queued | Self::Preparing
        )
    }
    /// In progress (the `os-migrations` notion, live or cold).
    pub fn in_progress(&self) -> bool {
        !self.is_terminal() && !matches!(self, Self::Other(_))
    }
}

/// What the server looks like now (`GET /servers/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerView {
    pub host: String,
    pub status: String,
    pub vm_state: VmState,
    pub task_state: Option<String>,
    /// Instance fault message (shown when status is ERROR).
    pub fault: Option<String>,
    /// Its metadata `nova-live-migration:policy` (unset: `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

impl ServerView {
    /// No task in progress (`task_state` null).
    pub fn idle(&self) -> bool {
        self.task_state.is_none()
    }
    /// A cold migration awaiting its confirm.
    pub fn awaits_confirm(&self) -> bool {
        self.status == "VERIFY_RESIZE"
    }
}

/// A migration record of the instance, with the live migration's progress
/// when it was read (`GET /servers/{id}/migrations/{mid}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationView {
    pub id: MigrationId,
    pub status: MigrationStatus,
    /// `created_at` (ms since the epoch, Nova's clock) when known.
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
    /// A record without progress fields.
    pub fn record(
        id: MigrationId,
        status: MigrationStatus,
        created_at: Option<Millis>,
        dest: Option<String>,
    ) -> MigrationView {
        MigrationView {
            id,
            status,
            created_at,
            dest_compute: dest,
            memory_total_bytes: None,
            memory_processed_bytes: None,
            memory_remaining_bytes: None,
            disk_total_bytes: None,
            disk_processed_bytes: None,
            disk_remaining_bytes: None,
        }
    }
    /// Nova's progress: `100 - round(remaining*100/total)` (memory only).
    pub fn percent(&self) -> Option<u8> {
        let total = self.memory_total_bytes.filter(|t| *t > 0)?;
        let rem = self.memory_remaining_bytes?.min(total);
        let p = 100.0 - (rem as f64 * 100.0 / total as f64).round();
        Some(p.clamp(0.0, 100.0) as u8)
    }
}

/// Nova's clock may run this far behind ours: a record created up to this
/// long before an attempt's intent (by Nova's clock) may be the attempt's.
pub const CLOCK_SKEW_MS: Millis = 120_000;

/// The one rule of attempt ownership (the loop and resume both use it): a
/// migration record belongs to the attempt whose intent was written at
/// `since` when it is none of the instance's earlier attempts' and was
/// created at or after `since` — or up to [`CLOCK_SKEW_MS`] before it (Nova's
/// clock behind ours) if it is still in progress: an instance has one
/// migration in progress at a time, and Nova refuses a start (409) while it
/// has one, so an in-progress record after an accepted start is the
/// start's. An ended record from before the intent is an earlier one's.
pub fn owned_by_attempt(
    created_at: Option<Millis>,
    since: Millis,
    id: MigrationId,
    past: &[MigrationId],
    status: &MigrationStatus,
) -> bool {
    if past.contains(&id) {
        return false;
    }
    match created_at {
        Some(c) if c >= since => true,
        Some(c) => c + CLOCK_SKEW_MS >= since && !status.is_terminal(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_named_scheduler_keeps_its_target() {
        let d = Destination::from_target(Some("scheduler"));
        assert_eq!(d.host(), Some("scheduler"));
        assert_ne!(d, Destination::Scheduler);
        let json = serde_json::to_string(&d).unwrap();
        let back: Destination = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn statuses_and_states_round_trip_as_novas_strings() {
        for s in [
            "accepted",
            "pre-migrating",
            "queued",
            "preparing",
            "running",
            "running (post-copy)",
            "post-migrating",
            "migrating",
            "finished",
            "confirmed",
            "reverted",
            "done",
            "completed",
            "failed",
            "error",
            "cancelled",
            "something-new",
        ] {
            assert_eq!(MigrationStatus::parse(s).as_str(), s);
        }
        for s in [
            "active",
            "paused",
            "stopped",
            "error",
            "shelved_offloaded",
            "odd",
        ] {
            assert_eq!(VmState::parse(s).as_str(), s);
        }
        assert!(
            MigrationStatus::Cancelled.is_failure() && MigrationStatus::Cancelled.is_terminal()
        );
        assert!(MigrationStatus::Queued.is_before_running());
        assert!(!MigrationStatus::Other("x".into()).in_progress());
    }

    #[test]
    fn migration_ids_from_the_api() {
        assert_eq!(MigrationId::from_api(7), Some(MigrationId(7)));
        assert_eq!(MigrationId::from_api(0), None);
        assert_eq!(MigrationId::from_api(-3), None);
        assert_eq!(MigrationId(9).as_api(), 9);
    }

    #[test]
    fn ownership_allows_clock_skew_but_never_an_earlier_attempt() {
        let since = 1_000_000;
        let run = MigrationStatus::Running;
        let err = MigrationStatus::Error;
        let m = MigrationId(1);
        assert!(owned_by_attempt(Some(since), since, m, &[], &err));
        assert!(owned_by_attempt(
            Some(since - CLOCK_SKEW_MS),
            since,
            m,
            &[],
            &run
        ));
        assert!(!owned_by_attempt(Some(since - 1), since, m, &[], &err));
        assert!(!owned_by_attempt(
            Some(since - CLOCK_SKEW_MS - 1),
            since,
            m,
            &[],
            &run
        ));
        assert!(!owned_by_attempt(Some(since), since, m, &[m], &run));
        assert!(!owned_by_attempt(None, since, m, &[], &run));
    }
}
