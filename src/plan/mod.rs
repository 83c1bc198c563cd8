//! Pure planning and the migration state machine: no I/O, no clock.
//!
//! Everything here takes observations and `now` (milliseconds since the Unix
//! epoch, [`Millis`]) as parameters and returns decisions:
//!
//! * [`preflight`] — classify the instances of this host, check the service,
//!   `target-host`, affinity and Placement capacity; produce a [`Plan`]
//!   (`dry-run` returns exactly it).
//! * [`machine`] — the drain state machine ([`Drain::step`]): bounded
//!   concurrency, success verification, 409 back-off, stall / timeout /
//!   force-complete policy, retries, abort. Its state is the journal body.
//! * [`resume`] — reconcile a journal loaded after a crash with fresh
//!   observations from Nova ([`reconcile`]), never migrating an instance twice.
//! * [`report`] — the report model of SPEC §4 (`Report`, counts, summary,
//!   flattened `action-set` keys).

pub mod machine;
pub mod preflight;
pub mod report;
pub mod resume;

#[cfg(test)]
mod props;

pub use machine::{
    Command, Drain, InstanceRecord, MigrationStatus, MigrationView, MoveKind, Observation, Outcome,
    Phase, Policy, ServerView, StartResult, TimeoutAction,
};
pub use preflight::{
    Action, Failure, FailureKind, Flavor, HostCandidate, Inventory, Plan, PlanEntry,
    PreflightInput, PreflightParams, ServerGroup, ServerInfo, ServiceView, Storage, parse_exclude,
    preflight,
};
pub use report::{Counts, InstanceReport, PlanSummary, Report, ResultKind, ServiceReport};
pub use resume::{MigrationRecord, ResumeAction, ResumeDecision, ResumeObservation, reconcile};

/// Milliseconds since the Unix epoch (the orchestrator's clock, passed in).
pub type Millis = u64;

/// Nova server UUID.
pub type InstanceId = String;
