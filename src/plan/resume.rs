//! Resume reconciliation: the journal ([`Drain`]) loaded after a crash
//! (SIGKILL at any instant) plus fresh observations from Nova → per instance,
//! adopt, finish from Nova's truth, restart (only when provably not started),
//! or re-check later.
//!
//! "Provably not started" for an instance whose intent (`Starting{since}`)
//! was written: no migration record of it created at or after
//! `since - CLOCK_SKEW_MS` (other than the known failed attempts), its
//! `task_state` is not set (the API sets `migrating` before answering 202,
//! and `resize_prep` for a cold migration), it is still on the source, and
//! the intent is at least [`QUIET_MS`] old so a POST still in transit when
//! the process died has landed. Otherwise the instance is adopted (a
//! migration is or was in flight) — so an instance is never migrated twice;
//! the worst case of the conservative rule is a wasted attempt, never a
//! second migration.
//!
//! After `reconcile`, call [`Drain::step`] as usual: adopted instances carry
//! the observed server/migration views, so terminal failures go through the
//! normal retry rules at the first step.

use serde::{Deserialize, Serialize};

use super::machine::{Drain, InstanceRecord, MoveKind, Outcome, Phase, Track, power};
use super::types::{
    MigrationId, MigrationStatus, MigrationView, ServerView, VmState, owned_by_attempt,
};
use super::{InstanceId, Millis};

pub use super::types::CLOCK_SKEW_MS;
/// An intent younger than this is not yet conclusive.
pub const QUIET_MS: Millis = 30_000;

/// One item of `GET /os-migrations?instance_uuid=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationRecord {
    pub id: MigrationId,
    pub status: MigrationStatus,
    /// `created_at` in ms since the epoch.
    pub created_at: Millis,
    pub dest_compute: Option<String>,
}

/// What Nova says about one instance now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeObservation {
    pub instance: InstanceId,
    /// `None`: the server no longer exists (404).
    pub server: Option<ServerView>,
    pub migrations: Vec<MigrationRecord>,
}

/// What reconciliation did with one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ResumeAction {
    /// Already finished in the journal, or never started and nothing seen.
    Unchanged,
    /// A migration is (or was) in flight: continue monitoring it.
    Adopted { migration_id: Option<MigrationId> },
    /// Finished, from Nova's truth.
    Finished { outcome: Outcome },
    /// Provably not started: will be started again (same attempt number).
    Restart,
    /// Not conclusive yet: call `reconcile` again at or after `at`.
    Recheck { at: Millis },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeDecision {
    pub instance: InstanceId,
    pub action: ResumeAction,
    pub reason: String,
}

fn busy(s: &ServerView) -> bool {
    s.task_state.is_some() || matches!(s.status.as_str(), "MIGRATING" | "RESIZE")
}

fn done(r: &mut InstanceRecord, outcome: Outcome, now: Millis, error: Option<String>) {
    // An instance this run stopped (policy cold) is started again first.
    let error = match power::restart_on_resume(r, outcome, now, error.clone()) {
        Ok(()) => {
            if let Some(e) = &error {
                r.decisions.push(format!("resume: {e}"));
            }
            return;
        }
        Err(error) => error,
    };
    r.phase = Phase::Done { outcome };
    r.ended_at = Some(now);
    if let Some(e) = &error {
        r.decisions.push(format!("resume: {e}"));
    }
    r.error = match outcome {
        Outcome::Migrated | Outcome::ColdMigrated => None,
        _ => error.or(r.error.take()),
    };
}

fn view_of(m: &MigrationRecord) -> MigrationView {
    MigrationView::record(
        m.id,
        m.status.clone(),
        Some(m.created_at),
        m.dest_compute.clone(),
    )
}

/// Reconcile the journal `drain` with `obs` at `now`. Pure; mutates the
/// state and says per instance what it decided.
pub fn reconcile(drain: &mut Drain, now: Millis, obs: &[ResumeObservation]) -> Vec<ResumeDecision> {
    let source = drain.source.clone();
    let mut out = Vec::new();
    for r in &mut drain.instances {
        let o = obs.iter().find(|o| o.instance == r.id);
        let (action, reason) = reconcile_one(r, &source, now, o);
        if !matches!(action, ResumeAction::Unchanged) {
            r.decisions.push(format!("resume: {reason}"));
        }
        out.push(ResumeDecision {
            instance: r.id.clone(),
            action,
            reason,
        });
    }
    out
}

fn reconcile_one(
    r: &mut InstanceRecord,
    source: &str,
    now: Millis,
    o: Option<&ResumeObservation>,
) -> (ResumeAction, String) {
    if r.outcome().is_some() {
        return (
            ResumeAction::Unchanged,
            "finished before the restart".into(),
        );
    }
    let Some(o) = o else {
        return if r.in_flight() {
            (
                ResumeAction::Recheck { at: now },
                "no observation of an in-flight instance".into(),
            )
        } else {
            (ResumeAction::Unchanged, "not observed".into())
        };
    };
    let Some(s) = &o.server else {
        // Deleted by its owner: nothing to move (I2).
        let e = "the server was deleted (GET /servers/{id} → 404)".to_string();
        done(r, Outcome::Skipped, now, Some(e.clone()));
        return (
            ResumeAction::Finished {
                outcome: Outcome::Skipped,
            },
            e,
        );
    };
    if let Phase::Stopping { .. } | Phase::Restarting { .. } = r.phase {
        // Policy cold: the machine goes on from Nova's state (a stop or
        // start that never reached Nova is sent again).
        r.track.server = Some(s.clone());
        r.track.server_at = Some(now);
        // This view answers whatever read the dead process had asked.
        r.track.server_asked = None;
        return (
            ResumeAction::Adopted { migration_id: None },
            format!(
                "being {} for policy cold: continued from Nova's state ({}, on {})",
                if matches!(r.phase, Phase::Stopping { .. }) {
                    "stopped"
                } else {
                    "started again"
                },
                s.status,
                s.host
            ),
        );
    }
    let moved = s.host != source && !s.host.is_empty();
    let intent = match r.phase {
        Phase::Starting { since, .. } | Phase::Started { since, .. } => Some(since),
        _ => None,
    };
    let Some(since) = intent else {
        return not_started(r, s, moved, now);
    };
    let newest = newest_of_attempt(r, &o.migrations, since);
    if let Some(finished) = settled_while_away(r, s, newest, moved, since, now) {
        return finished;
    }
    in_flight_again(r, s, newest, moved, since, now, source)
}

/// Pending / Waiting: no POST was issued by this run.
fn not_started(
    r: &mut InstanceRecord,
    s: &ServerView,
    moved: bool,
    now: Millis,
) -> (ResumeAction, String) {
    if moved && !busy(s) {
        // Not by this run (it never started it): by someone else (I2).
        let why = format!(
            "moved to {} by someone else before its turn; not migrated by this run",
            s.host
        );
        done(r, Outcome::Skipped, now, Some(why.clone()));
        return (
            ResumeAction::Finished {
                outcome: Outcome::Skipped,
            },
            why,
        );
    }
    (ResumeAction::Unchanged, "not started yet".into())
}

/// The newest record possibly created by our start (the attempt's own
/// once known).
fn newest_of_attempt<'a>(
    r: &InstanceRecord,
    migrations: &'a [MigrationRecord],
    since: Millis,
) -> Option<&'a MigrationRecord> {
    migrations
        .iter()
        .filter(|m| {
            owned_by_attempt(
                Some(m.created_at),
                since,
                m.id,
                &r.past_migrations,
                &m.status,
            )
        })
        .filter(|m| match r.migration_id {
            Some(id) => m.id == id,
            None => true,
        })
        .max_by_key(|m| (m.created_at, m.id))
}

/// Nova's truth first: the attempt ended while we were away (in ERROR, or
/// moved as planned), else `None`.
fn settled_while_away(
    r: &mut InstanceRecord,
    s: &ServerView,
    newest: Option<&MigrationRecord>,
    moved: bool,
    since: Millis,
    now: Millis,
) -> Option<(ResumeAction, String)> {
    let settled = !busy(s) && newest.is_none_or(|m| m.status.is_terminal());
    if settled && s.vm_state == VmState::Error && (newest.is_some() || moved) {
        let e = format!(
            "instance is in ERROR on {}{} — not retried",
            s.host,
            s.fault
                .as_ref()
                .map(|f| format!(": {f}"))
                .unwrap_or_default()
        );
        r.migration_id = newest.map(|m| m.id).or(r.migration_id);
        done(r, Outcome::Failed, now, Some(e.clone()));
        return Some((
            ResumeAction::Finished {
                outcome: Outcome::Failed,
            },
            e,
        ));
    }
    if !(settled && moved) {
        return None;
    }
    let ok = match r.kind {
        MoveKind::Live => s.vm_state.is_live(),
        MoveKind::Cold => matches!(s.vm_state, VmState::Stopped | VmState::Active),
    };
    if !ok {
        return None;
    }
    let outcome = match r.kind {
        MoveKind::Live => Outcome::Migrated,
        MoveKind::Cold => Outcome::ColdMigrated,
    };
    if let Phase::Starting { attempt, .. } = r.phase {
        r.attempts = attempt.saturating_sub(r.unsent);
    }
    r.first_started_at.get_or_insert(since);
    r.destination = Some(s.host.clone());
    r.migration_id = newest.map(|m| m.id).or(r.migration_id);
    done(r, outcome, now, None);
    Some((
        ResumeAction::Finished { outcome },
        format!("finished while we were away: now on {}", s.host),
    ))
}

/// Takes the in-flight attempt up again with migration `mid` (if known).
fn adopt(
    r: &mut InstanceRecord,
    s: &ServerView,
    newest: Option<&MigrationRecord>,
    since: Millis,
    now: Millis,
    mid: Option<MigrationId>,
) {
    if let Phase::Starting { attempt, .. } = r.phase {
        r.attempts = attempt.saturating_sub(r.unsent);
        r.conflicts = 0;
    }
    r.first_started_at.get_or_insert(since);
    r.migration_id = mid;
    r.phase = Phase::Started {
        since,
        migration_id: mid,
    };
    // When we never saw it running, assume the earliest possible start
    // (the intent): Nova's completion timer is then never underestimated.
    let running_now = newest.is_some_and(|m| {
        matches!(
            m.status,
            MigrationStatus::Running | MigrationStatus::RunningPostCopy
        )
    });
    let running_since = r.track.running_since.or(running_now.then_some(since));
    r.track = Track {
        server: Some(s.clone()),
        server_at: Some(now),
        migration: newest.map(view_of),
        status_since: Some(now),
        running_since,
        // A fresh stall window: we could not watch while we were away.
        progress_at: Some(now),
        // Our abort survives the restart: its end is not a failure to
        // retry (and the watch after it goes on).
        abort_reason: r.track.abort_reason.clone(),
        abort_accepted_at: r.track.abort_accepted_at,
        settle_since: r.track.settle_since,
        ..Track::default()
    };
}

/// Not ended: adopt what Nova has, wait for a too recent intent, or start
/// again one that never reached Nova.
fn in_flight_again(
    r: &mut InstanceRecord,
    s: &ServerView,
    newest: Option<&MigrationRecord>,
    moved: bool,
    since: Millis,
    now: Millis,
    source: &str,
) -> (ResumeAction, String) {
    match (&r.phase, newest) {
        (_, Some(m)) => {
            let id = m.id;
            let why = format!(
                "migration {id} ({}) created after the start intent: adopting it",
                m.status.as_str()
            );
            adopt(r, s, newest, since, now, Some(id));
            (
                ResumeAction::Adopted {
                    migration_id: Some(id),
                },
                why,
            )
        }
        (Phase::Started { migration_id, .. }, None) => {
            let mid = *migration_id;
            adopt(r, s, newest, since, now, mid);
            (
                ResumeAction::Adopted { migration_id: mid },
                "start was accepted before the restart: continuing".into(),
            )
        }
        (_, None) if busy(s) || moved => {
            adopt(r, s, newest, since, now, None);
            (
                ResumeAction::Adopted { migration_id: None },
                format!(
                    "no migration record yet but the server is {} (task_state {}) on {}: the start reached Nova",
                    s.status,
                    s.task_state.as_deref().unwrap_or("none"),
                    s.host
                ),
            )
        }
        (_, None) if now < since + QUIET_MS => (
            ResumeAction::Recheck {
                at: since + QUIET_MS,
            },
            "start intent too recent to tell whether the request reached Nova".into(),
        ),
        (_, None) => {
            r.phase = Phase::Pending;
            r.track = Track::default();
            // Freshly read: it is here and idle.
            r.seen_at = Some(now);
            (
                ResumeAction::Restart,
                format!(
                    "start intent at {since} never reached Nova (no migration record since, task_state none, still on {source}): starting again"
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::machine::tests::{entry, sv};
    use crate::plan::machine::{Command, Observation, Policy, StartResult};
    use crate::plan::preflight::Action;

    fn drain_starting() -> Drain {
        let es = vec![entry("a", Action::Live, 4096)];
        let mut d = Drain::new("node1", &es, Policy::default(), 1_000_000);
        let c = d.step(1_000_000, &[]);
        assert!(matches!(
            c.last(),
            Some(Command::StartLive { attempt: 1, .. })
        ));
        // Simulated crash: the journal was written with the intent.
        let s = serde_json::to_string(&d).unwrap();
        serde_json::from_str(&s).unwrap()
    }

    fn rec(id: u64, status: &str, created_at: Millis) -> MigrationRecord {
        MigrationRecord {
            id: MigrationId(id),
            status: MigrationStatus::from(status.to_string()),
            created_at,
            dest_compute: Some("node4".into()),
        }
    }

    fn ob(server: Option<ServerView>, migrations: Vec<MigrationRecord>) -> Vec<ResumeObservation> {
        vec![ResumeObservation {
            instance: "a".into(),
            server,
            migrations,
        }]
    }

    fn starts(c: &[Command]) -> usize {
        c.iter()
            .filter(|c| matches!(c, Command::StartLive { .. } | Command::StartCold { .. }))
            .count()
    }

    #[test]
    fn intent_written_post_happened_record_exists_adopts() {
        let mut d = drain_starting();
        let dec = reconcile(
            &mut d,
            2_000_000,
            &ob(
                Some(sv("node1", "MIGRATING", "active", Some("migrating"))),
                vec![rec(3, "completed", 10_000), rec(9, "running", 1_000_500)],
            ),
        );
        assert_eq!(
            dec[0].action,
            ResumeAction::Adopted {
                migration_id: Some(MigrationId(9))
            }
        );
        let r = d.get("a").unwrap();
        assert_eq!(r.attempts, 1);
        assert_eq!(
            r.phase,
            Phase::Started {
                since: 1_000_000,
                migration_id: Some(MigrationId(9))
            }
        );
        assert_eq!(
            r.track.running_since,
            Some(1_000_000),
            "earliest possible start"
        );
        assert_eq!(r.track.progress_at, Some(2_000_000), "fresh stall window");
        assert_eq!(starts(&d.step(2_000_001, &[])), 0);
    }

    #[test]
    fn a_crash_after_our_abort_is_not_retried_after_the_restart() {
        // Our abort was accepted (the run was watching how Nova leaves the
        // instance) when the process died: after the restart the cancelled
        // migration is the abort's end, not a failure to retry.
        let mut d = drain_starting();
        d.step(
            1_000_100,
            &[Observation::Started {
                instance: "a".into(),
                attempt: 1,
                result: StartResult::Accepted,
            }],
        );
        let r = d.instances.iter_mut().find(|r| r.id == "a").unwrap();
        r.track.abort_reason = Some("stalled".into());
        r.track.abort_accepted_at = Some(1_000_200);
        r.error = Some("aborted: stalled".into());
        let s = serde_json::to_string(&d).unwrap();
        let mut d: Drain = serde_json::from_str(&s).unwrap();
        reconcile(
            &mut d,
            2_000_000,
            &ob(
                Some(sv("node1", "ACTIVE", "active", None)),
                vec![rec(9, "cancelled", 1_000_500)],
            ),
        );
        let mut t = 2_000_001;
        for _ in 0..20 {
            let c = d.step(
                t,
                &[Observation::Server {
                    instance: "a".into(),
                    view: sv("node1", "ACTIVE", "active", None),
                }],
            );
            assert_eq!(starts(&c), 0, "retried after our abort: {c:?}");
            t += 2_000;
        }
        assert_eq!(
            d.get("a").unwrap().outcome(),
            Some(crate::plan::Outcome::Aborted),
            "{:#?}",
            d.get("a")
        );
    }

    #[test]
    fn intent_written_post_happened_no_record_yet_but_task_state() {
        let mut d = drain_starting();
        let dec = reconcile(
            &mut d,
            1_000_500,
            &ob(
                Some(sv("node1", "MIGRATING", "active", Some("migrating"))),
                vec![],
            ),
        );
        assert_eq!(dec[0].action, ResumeAction::Adopted { migration_id: None });
        let c = d.step(1_000_600, &[]);
        assert_eq!(starts(&c), 0);
        // Adopted and watched: the list of the source's migrations, from
        // the intent less the clock-skew allowance.
        assert!(
            c.iter().any(|c| matches!(
                c,
                Command::ListMigrations { since, .. } if *since == 1_000_000 - CLOCK_SKEW_MS
            )),
            "{c:?}"
        );
    }

    #[test]
    fn intent_written_post_not_happened_restarts_after_quiet() {
        let mut d = drain_starting();
        let idle = || Some(sv("node1", "ACTIVE", "active", None));
        // Too early to tell: recheck, and the machine does not start it.
        let dec = reconcile(
            &mut d,
            1_010_000,
            &ob(idle(), vec![rec(3, "completed", 10_000)]),
        );
        assert_eq!(dec[0].action, ResumeAction::Recheck { at: 1_030_000 });
        assert_eq!(starts(&d.step(1_010_001, &[])), 0);
        // Later: provably not started (old record outside the skew window).
        let dec = reconcile(
            &mut d,
            1_030_000,
            &ob(idle(), vec![rec(3, "completed", 10_000)]),
        );
        assert_eq!(dec[0].action, ResumeAction::Restart);
        // The reconcile's fresh view of this instant lets it start (I2).
        let c = d.step(1_030_000, &[]);
        assert!(
            c.iter()
                .any(|c| matches!(c, Command::StartLive { attempt: 1, .. }))
        );
    }

    #[test]
    fn intent_written_post_happened_and_failed_goes_through_retry_rules() {
        let mut d = drain_starting();
        let dec = reconcile(
            &mut d,
            3_000_000,
            &ob(
                Some(sv("node1", "ACTIVE", "active", None)),
                vec![rec(11, "error", 1_000_200)],
            ),
        );
        assert_eq!(
            dec[0].action,
            ResumeAction::Adopted {
                migration_id: Some(MigrationId(11))
            }
        );
        // retries = 1 → one new attempt, numbered 2, once a fresh read
        // shows it still here and idle (I2).
        let c = d.step(3_000_001, &[]);
        assert!(
            c.contains(&Command::ReadServer {
                instance: "a".into()
            }),
            "{c:?}"
        );
        let here = Observation::Server {
            instance: "a".into(),
            view: sv("node1", "ACTIVE", "active", None),
        };
        let c = d.step(3_000_002, &[here]);
        assert!(
            c.iter()
                .any(|c| matches!(c, Command::StartLive { attempt: 2, .. })),
            "{c:?}"
        );
        assert_eq!(d.get("a").unwrap().past_migrations, vec![MigrationId(11)]);
    }

    #[test]
    fn record_within_clock_skew_is_treated_as_ours() {
        // In progress, created before the intent by Nova's (slower) clock:
        // ours (one rule: types::owned_by_attempt).
        let mut d = drain_starting();
        let dec = reconcile(
            &mut d,
            3_000_000,
            &ob(
                Some(sv("node1", "MIGRATING", "active", Some("migrating"))),
                vec![rec(4, "running", 1_000_000 - CLOCK_SKEW_MS)],
            ),
        );
        assert!(matches!(dec[0].action, ResumeAction::Adopted { .. }));
        // Ended before the intent: an earlier attempt's, not this one's.
        let mut d = drain_starting();
        let dec = reconcile(
            &mut d,
            3_000_000,
            &ob(
                Some(sv("node1", "ACTIVE", "active", None)),
                vec![rec(4, "failed", 1_000_000 - CLOCK_SKEW_MS)],
            ),
        );
        assert_eq!(dec[0].action, ResumeAction::Restart);
    }

    #[test]
    fn finished_while_away_is_marked_from_novas_truth() {
        let mut d = drain_starting();
        let dec = reconcile(
            &mut d,
            9_000_000,
            &ob(
                Some(sv("node7", "ACTIVE", "active", None)),
                vec![rec(12, "completed", 1_001_000)],
            ),
        );
        assert_eq!(
            dec[0].action,
            ResumeAction::Finished {
                outcome: Outcome::Migrated
            }
        );
        let r = d.get("a").unwrap();
        assert_eq!(r.destination.as_deref(), Some("node7"));
        assert_eq!(r.migration_id, Some(MigrationId(12)));
        assert_eq!(r.attempts, 1);
        assert!(d.is_done());
    }

    #[test]
    fn completed_record_but_still_on_source_is_not_success() {
        let mut d = drain_starting();
        let dec = reconcile(
            &mut d,
            9_000_000,
            &ob(
                Some(sv("node1", "ACTIVE", "active", None)),
                vec![rec(12, "completed", 1_001_000)],
            ),
        );
        assert!(matches!(dec[0].action, ResumeAction::Adopted { .. }));
        d.step(9_000_001, &[]);
        let r = d.get("a").unwrap();
        assert!(
            r.error
                .as_ref()
                .unwrap()
                .contains("completed but the server is still on node1")
        );
    }

    #[test]
    fn error_instance_is_failed() {
        let mut d = drain_starting();
        let dec = reconcile(
            &mut d,
            9_000_000,
            &ob(
                Some(sv("node1", "ERROR", "error", None)),
                vec![rec(12, "error", 1_001_000)],
            ),
        );
        assert_eq!(
            dec[0].action,
            ResumeAction::Finished {
                outcome: Outcome::Failed
            }
        );
    }

    #[test]
    fn started_without_id_finds_it_and_deleted_server_is_skipped() {
        let mut d = drain_starting();
        d.step(
            1_000_100,
            &[Observation::Started {
                instance: "a".into(),
                attempt: 1,
                result: StartResult::Accepted,
            }],
        );
        let mut d2 = d.clone();
        let dec = reconcile(
            &mut d,
            2_000_000,
            &ob(
                Some(sv("node1", "MIGRATING", "active", Some("migrating"))),
                vec![rec(21, "running", 1_000_300)],
            ),
        );
        assert_eq!(
            dec[0].action,
            ResumeAction::Adopted {
                migration_id: Some(MigrationId(21))
            }
        );
        // Deleted by its owner meanwhile: nothing to move, skipped (I2).
        let dec = reconcile(&mut d2, 2_000_000, &ob(None, vec![]));
        assert_eq!(
            dec[0].action,
            ResumeAction::Finished {
                outcome: Outcome::Skipped
            }
        );
        assert!(
            d2.instances[0]
                .error
                .as_deref()
                .unwrap()
                .contains("deleted")
        );
    }

    #[test]
    fn cold_migration_waiting_for_confirm_is_adopted_and_confirmed() {
        let es = vec![entry("a", Action::Cold, 1024)];
        let mut d = Drain::new("node1", &es, Policy::default(), 1_000_000);
        d.step(1_000_000, &[]);
        let dec = reconcile(
            &mut d,
            2_000_000,
            &ob(
                Some(sv("node5", "VERIFY_RESIZE", "resized", None)),
                vec![rec(30, "finished", 1_000_100)],
            ),
        );
        assert_eq!(
            dec[0].action,
            ResumeAction::Adopted {
                migration_id: Some(MigrationId(30))
            }
        );
        let c = d.step(2_000_001, &[]);
        assert!(c.contains(&Command::ConfirmResize {
            instance: "a".into()
        }));
        assert_eq!(starts(&c), 0);
    }

    #[test]
    fn pending_instance_found_moved_is_not_started() {
        let es = vec![entry("a", Action::Live, 1024)];
        let mut d = Drain::new("node1", &es, Policy::default(), 0);
        let dec = reconcile(
            &mut d,
            5,
            &ob(Some(sv("node9", "ACTIVE", "active", None)), vec![]),
        );
        // Moved by someone else (this run never started it): skipped (I2).
        assert_eq!(
            dec[0].action,
            ResumeAction::Finished {
                outcome: Outcome::Skipped
            }
        );
        assert_eq!(starts(&d.step(6, &[])), 0);
    }

    #[test]
    fn done_and_pending_instances_unchanged() {
        let es = vec![
            entry("a", Action::Live, 4096),
            entry("b", Action::Live, 1024),
        ];
        let mut d = Drain::new("node1", &es, Policy::default(), 0);
        d.instances[0].phase = Phase::Done {
            outcome: Outcome::Migrated,
        };
        let obs = vec![
            ResumeObservation {
                instance: "a".into(),
                server: Some(sv("node1", "ACTIVE", "active", None)),
                migrations: vec![],
            },
            ResumeObservation {
                instance: "b".into(),
                server: Some(sv("node1", "ACTIVE", "active", None)),
                migrations: vec![rec(1, "running", 5)],
            },
        ];
        let dec = reconcile(&mut d, 1000, &obs);
        assert_eq!(dec[0].action, ResumeAction::Unchanged);
        assert_eq!(dec[1].action, ResumeAction::Unchanged);
        assert_eq!(d.instances[0].outcome(), Some(Outcome::Migrated));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn server() -> impl Strategy<Value = Option<ServerView>> {
            prop_oneof![
                1 => Just(None),
                8 => (0u8..3, 0u8..4, any::<bool>()).prop_map(|(h, st, busy)| {
                    let host = ["node1", "node1", "node2"][h as usize];
                    let (status, vm) = [
                        ("ACTIVE", "active"),
                        ("PAUSED", "paused"),
                        ("ERROR", "error"),
                        ("MIGRATING", "active"),
                    ][st as usize];
                    let task = (busy || status == "MIGRATING").then_some("migrating");
                    Some(sv(host, status, vm, task))
                }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

            /// Intent written at `since`; the POST may or may not have
            /// happened. Restart only when provably not started; never
            /// leave an in-flight start unaccounted.
            #[test]
            fn restart_only_when_provably_not_started(
                server in server(),
                recs in prop::collection::vec((-400i64..400, 0u8..6), 0..4),
                delay in 0u64..120_000,
            ) {
                let since: Millis = 10_000_000;
                let es = vec![entry("a", Action::Live, 4096)];
                let mut d = Drain::new("node1", &es, Policy::default(), since);
                d.step(since, &[]);
                let statuses = ["accepted", "running", "completed", "error", "failed", "cancelled"];
                let migrations: Vec<MigrationRecord> = recs
                    .iter()
                    .enumerate()
                    .map(|(i, (dt, st))| rec(i as u64 + 1, statuses[*st as usize], (since as i64 + dt * 1000) as u64))
                    .collect();
                let now = since + delay;
                let dec = reconcile(&mut d, now, &ob(server.clone(), migrations.clone()));
                let recent = migrations.iter().any(|m| {
                    owned_by_attempt(Some(m.created_at), since, m.id, &[], &m.status)
                });
                let busy = server.as_ref().is_some_and(|s| s.task_state.is_some());
                let moved = server.as_ref().is_some_and(|s| s.host != "node1");
                match &dec[0].action {
                    ResumeAction::Restart => {
                        prop_assert!(!recent && !busy && !moved && server.is_some());
                        prop_assert!(delay >= QUIET_MS);
                        prop_assert_eq!(&d.instances[0].phase, &Phase::Pending);
                    }
                    ResumeAction::Recheck { at } => {
                        prop_assert!(!recent && !busy && !moved);
                        prop_assert_eq!(*at, since + QUIET_MS);
                        prop_assert!(matches!(d.instances[0].phase, Phase::Starting { .. }), "still starting");
                    }
                    ResumeAction::Adopted { .. } => {
                        prop_assert!(recent || busy || moved);
                        prop_assert!(matches!(d.instances[0].phase, Phase::Started { .. }), "started");
                        prop_assert_eq!(d.instances[0].attempts, 1);
                    }
                    ResumeAction::Finished { .. } => prop_assert!(d.is_done()),
                    ResumeAction::Unchanged => prop_assert!(false, "intent must be resolved"),
                }
                // The next step starts it again only after a Restart, or as a
                // retry of an adopted attempt that Nova shows ended with the
                // server idle on the source.
                let c = d.step(now, &[]);
                if starts(&c) > 0 && dec[0].action != ResumeAction::Restart {
                    let s = server.as_ref().unwrap();
                    prop_assert!(s.host == "node1" && s.task_state.is_none() && s.vm_state != VmState::Error);
                    prop_assert!(!d.instances[0].past_migrations.is_empty());
                    prop_assert!(c.iter().any(|c| matches!(c, Command::StartLive { attempt: 2, .. })), "retry");
                }
                if dec[0].action == ResumeAction::Restart {
                    prop_assert!(c.iter().any(|c| matches!(c, Command::StartLive { attempt: 1, .. })), "same attempt");
                }
            }
        }
    }
}
