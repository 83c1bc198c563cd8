//! Pure planning and the migration state machine: no I/O, no clock.
//!
//! Everything here takes observations and `now` (milliseconds since the Unix
//! epoch, [`Millis`]) as parameters and returns decisions:
//!
//! * [`preflight`](mod@preflight) — classify the instances of this host, check the service,
//!   `target-host`, affinity and Placement capacity; produce a [`Plan`]
//!   (`dry-run` returns exactly it).
//! * [`policy`] — the per-instance policy (`nova-live-migration:policy`
//!   over `default-policy`), priority and `drain-order`.
//! * [`migratability`] — the checks that name what Nova cannot move live
//!   (SR-IOV ports, PCI passthrough, vTPM, vGPU) and migrations coming in.
//! * [`machine`] — the drain state machine ([`Drain::step`]): bounded
//!   concurrency, success verification, 409 back-off, stall / timeout /
//!   force-complete policy, retries, abort. Its state is the journal body.
//! * [`convergence`] — is a running live migration converging? The stall
//!   rule over the real progress series (passes, dirty memory per pass).
//! * [`resume`] — reconcile a journal loaded after a crash with fresh
//!   observations from Nova ([`reconcile`]), never migrating an instance twice.
//! * [`maintenance`] — the `disabled_reason` `evacuate` writes and the rule
//!   that tells whether a reason found in Nova is ours (`enable`).
//! * [`verify`](mod@verify) — proof of empty: judges what the driver saw of the node
//!   after an evacuation against the report (`verification`).
//! * [`report`] — the report model of SPEC §4 (`Report`, counts, summary,
//!   flattened `action-set` keys).
//!
//! The orchestrator's loop, in outline:
//!
//! ```text
//! plan = preflight(&input, &params)            // dry-run: Report::from_plan(plan)
//! if !plan.can_proceed() { Report::blocked(..); action-fail; return }
//! drain = journal.load()                       // after a crash:
//!     .map(|d| { reconcile(&mut d, now, &fresh_views); d })   // Recheck → again later
//!     .unwrap_or_else(|| Drain::new(host, plan.to_move(), policy, now))
//! loop {
//!     cmds = drain.step(now, &observations)
//!     journal.write(&drain)                    // fsync + rename, BEFORE executing
//!     execute(cmds) → observations             // Started, MigrationFound, CommandFailed
//!     if drain.is_done() { break }
//!     sleep(poll); observations += views of drain.in_flight_ids() (+ AbortRequested)
//! }
//! Report::from_drain(..)
//! ```

pub mod budget;
pub mod convergence;
pub mod machine;
pub mod maintenance;
pub mod migratability;
pub mod policy;
pub mod preflight;
pub mod report;
pub mod resume;
pub mod types;
pub mod verify;

#[cfg(test)]
mod props;

pub use machine::{
    AbortFact, Command, Control, Drain, GuestState, Handled, Ignored, InstanceRecord, MoveKind,
    Observation, Outcome, Phase, Policy, StartResult, TimeoutAction,
};
pub use maintenance::{disable_reason, written_by_us};
pub use migratability::{Check, ImageInfo, IncomingMigration, PortInfo};
pub use policy::{InstancePolicy, Order, PolicyChoice, PolicySource};
pub use preflight::{
    Action, Failure, FailureKind, Flavor, HostCandidate, Inventory, Plan, PlanEntry,
    PreflightInput, PreflightParams, ServerGroup, ServerInfo, ServiceView, Storage, parse_exclude,
    preflight,
};
pub use report::{
    Counts, InstanceReport, OwnerToContact, PlanSummary, Report, ResultKind, ServiceReport,
};
pub use resume::{MigrationRecord, ResumeAction, ResumeDecision, ResumeObservation, reconcile};
pub use types::{Destination, MigrationId, MigrationStatus, MigrationView, ServerView, VmState};
pub use verify::{NodeSeen, SeenMigration, SeenServer, Verification, verify};

/// Milliseconds since the Unix epoch (the orchestrator's clock, passed in).
pub type Millis = u64;

/// Nova server UUID.
pub type InstanceId = String;
