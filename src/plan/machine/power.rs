//! Policy `cold` on a running instance (its owner's opt-in): stop it, let
//! the machine cold-migrate it, and start it again, wherever Nova shows it
//! stopped, whatever the migration's end. Pure, like the rest of the
//! machine.
//!
//! * [`stop_first`]: instead of the start, `StopServer` → [`Phase::Stopping`].
//!   Nova stops only an `active` instance (`nova/compute/api.py` `stop`,
//!   vm_state active or error) and powers it off after the guest's
//!   `shutdown_timeout` (60 s by default, `nova/conf/compute.py`).
//! * [`step`] in `Stopping`: once a view newer than the stop shows it
//!   stopped here, the cold migration starts (or, when an abort came in the
//!   meantime, it ends `aborted` and is started again); a stop Nova did not
//!   act on is sent again, at most [`CONTROL_RETRIES`] times; bounded by
//!   [`STOP_WAIT_MS`].
//! * [`restart_instead`]: every end of an instance this run stopped
//!   (moved, failed, aborted, not started again) goes through
//!   [`Phase::Restarting`] first while Nova shows it stopped: `StartServer`,
//!   until a view shows it active (bounded by [`START_WAIT_MS`] and
//!   [`CONTROL_RETRIES`] starts); only then the outcome is taken. An
//!   instance Nova leaves in ERROR, or that cannot be started, ends with
//!   what to do in its error.

use super::{
    CONTROL_RETRIES, Command, InstanceRecord, Outcome, Phase, Policy, ServerView, VmState, begin,
    conclude, decide, finish, progress,
};
use crate::plan::Millis;

/// How long Nova may take to stop the instance: its `shutdown_timeout`
/// (60 s by default; an image's `os_shutdown_timeout` may ask for more)
/// and the power-off after it, with a wide margin.
pub const STOP_WAIT_MS: Millis = 600_000;
/// How long Nova may take to start it again.
pub const START_WAIT_MS: Millis = 300_000;
/// A stop or start that Nova shows no sign of acting on after this long is
/// sent again (it may never have reached Nova, or a crash came first).
pub const POWER_RESEND_MS: Millis = 30_000;

/// At its turn: a running instance with policy cold is stopped first
/// (true: the stop was issued instead of the start).
pub(super) fn stop_first(
    r: &mut InstanceRecord,
    now: Millis,
    total: usize,
    out: &mut Vec<Command>,
) -> bool {
    if !r.stop_first {
        return false;
    }
    // The plan's own listing (no view read yet) showed it active.
    let active = r
        .track
        .server
        .as_ref()
        .map_or(r.stopped_at.is_none(), |s| s.vm_state == VmState::Active);
    if !active {
        return false;
    }
    r.phase = Phase::Stopping { since: now };
    r.stopped_at.get_or_insert(now);
    r.track.power_sends = 0;
    r.track.power_refused = None;
    let line = format!(
        "[{}/{}] {} stopping it for its cold migration (policy cold, its owner's choice); it is started again afterwards",
        r.index, total, r.name
    );
    progress(r, line, out);
    send_stop(r, now, out);
    true
}

fn send_stop(r: &mut InstanceRecord, now: Millis, out: &mut Vec<Command>) {
    r.track.power_sent_at = Some(now);
    r.track.power_sends += 1;
    out.push(Command::StopServer {
        instance: r.id.clone(),
        reason: "policy cold: stopped for its cold migration".into(),
    });
}

fn send_start(r: &mut InstanceRecord, now: Millis, out: &mut Vec<Command>) {
    r.track.power_sent_at = Some(now);
    r.track.power_sends += 1;
    out.push(Command::StartServer {
        instance: r.id.clone(),
        reason: "policy cold: it was running before this run stopped it".into(),
    });
}

/// I2 for an instance with policy cold: active (it is stopped first) or
/// stopped; once this run stopped it, only stopped. `Some(why)` when it is
/// neither, and is left alone.
pub(super) fn not_as_planned(r: &InstanceRecord, s: &ServerView) -> Option<String> {
    match (&s.vm_state, r.stopped_at) {
        (VmState::Stopped, _) => None,
        (VmState::Active, None) => None,
        (VmState::Active, Some(_)) => Some(format!(
            "started again by someone else ({}) after this run stopped it for its cold migration; left alone",
            s.status
        )),
        (other, _) => Some(format!(
            "now {} ({}), not as planned (active or stopped, for policy cold); left alone",
            other.as_str(),
            s.status
        )),
    }
}

/// The latest view, when it was read after the last stop/start was sent.
fn fresh(r: &InstanceRecord) -> Option<ServerView> {
    let at = r.track.server_at?;
    if r.track.power_sent_at.is_some_and(|t| at <= t) {
        return None;
    }
    r.track.server.clone()
}

/// Past `deadline` with no fresh view: only once a read asked at or after
/// the deadline, and after the last stop/start was sent, is still
/// unanswered (a process that slept past the deadline first looks again;
/// a read asked before the last send says nothing of Nova acting on it;
/// Nova's silence is what ends it).
fn unanswered_since(r: &InstanceRecord, deadline: Millis) -> bool {
    r.track
        .server_asked
        .is_some_and(|t| t >= deadline && r.track.power_sent_at.is_none_or(|sent| t > sent))
}

/// Send again: Nova refused the last one, or shows no sign of it.
fn resend_due(r: &InstanceRecord, now: Millis) -> bool {
    r.track.power_refused.is_some()
        || r.track
            .power_sent_at
            .is_none_or(|t| now >= t + POWER_RESEND_MS)
}

/// The decisions due at `now` for an instance being stopped or started
/// again.
pub(super) fn step(
    r: &mut InstanceRecord,
    source: &str,
    stop_starting: bool,
    now: Millis,
    total: usize,
    out: &mut Vec<Command>,
) {
    match r.phase.clone() {
        Phase::Stopping { since } => stopping(r, source, stop_starting, since, now, total, out),
        Phase::Restarting {
            since,
            outcome,
            error,
        } => restarting(r, since, outcome, error, now, total, out),
        _ => {}
    }
}

fn stopping(
    r: &mut InstanceRecord,
    source: &str,
    stop_starting: bool,
    since: Millis,
    now: Millis,
    total: usize,
    out: &mut Vec<Command>,
) {
    let Some(s) = fresh(r) else {
        if unanswered_since(r, since + STOP_WAIT_MS) {
            let e = format!(
                "Nova did not stop it within {} s (policy cold); nothing was migrated: check `openstack server show {}`",
                STOP_WAIT_MS / 1000,
                r.id
            );
            finish(r, Outcome::Failed, now, Some(e), total, out);
        }
        return;
    };
    if !s.host.is_empty() && s.host != source {
        let e = format!(
            "moved to {} by someone else while this run stopped it; not migrated by this run",
            s.host
        );
        finish(r, Outcome::Skipped, now, Some(e), total, out);
        return;
    }
    match (&s.vm_state, s.idle()) {
        (VmState::Stopped, true) if stop_starting || r.abort_requested => {
            let e = "aborted before its cold migration started".to_string();
            finish(r, Outcome::Aborted, now, Some(e), total, out);
        }
        (VmState::Stopped, true) => {
            decide(r, format!("stopped on {source} (policy cold)"), total, out);
            begin(r, now, total, out);
        }
        (VmState::Active, true) if resend_due(r, now) => {
            if r.track.power_sends >= CONTROL_RETRIES {
                let e = format!(
                    "Nova did not stop it after {} stop requests{}; nothing was migrated, it runs on {source}",
                    r.track.power_sends,
                    last_refusal(r)
                );
                finish(r, Outcome::Failed, now, Some(e), total, out);
            } else {
                send_stop(r, now, out);
            }
        }
        (VmState::Error, true) => {
            let fault = s.fault.as_ref().map(|f| format!(": {f}"));
            let e = format!(
                "went to ERROR on {source} while being stopped for its cold migration{}; check it before anything else",
                fault.unwrap_or_default()
            );
            finish(r, Outcome::Failed, now, Some(e), total, out);
        }
        (VmState::Active, _) | (VmState::Stopped, false) if now >= since + STOP_WAIT_MS => {
            let e = format!(
                "Nova did not stop it within {} s (status {}, task_state {}); nothing was migrated: check `openstack server show {}`",
                STOP_WAIT_MS / 1000,
                s.status,
                s.task_state.as_deref().unwrap_or("none"),
                r.id
            );
            finish(r, Outcome::Failed, now, Some(e), total, out);
        }
        (VmState::Active, _) | (VmState::Stopped, false) => {}
        (other, _) => {
            let e = format!(
                "now {} ({}) on {source}, changed by someone else while being stopped; not migrated",
                other.as_str(),
                s.status
            );
            finish(r, Outcome::Skipped, now, Some(e), total, out);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn restarting(
    r: &mut InstanceRecord,
    since: Millis,
    outcome: Outcome,
    error: Option<String>,
    now: Millis,
    total: usize,
    out: &mut Vec<Command>,
) {
    let cmd = format!("openstack server start {}", r.id);
    let Some(s) = fresh(r) else {
        if r.track.power_sent_at.is_none() {
            // Resumed after a crash: the start was never asked by this
            // process; a fresh view decides (the lookup reads it).
            return;
        }
        if unanswered_since(r, since + START_WAIT_MS) {
            let e = join(
                error,
                format!(
                    "it was running before this run stopped it, and Nova did not start it again within {} s: {cmd}",
                    START_WAIT_MS / 1000
                ),
            );
            conclude(r, outcome, now, Some(e), total, out);
        }
        return;
    };
    match (&s.vm_state, s.idle()) {
        (VmState::Active, true) => {
            r.decisions
                .push(format!("started again on {} (policy cold)", s.host));
            conclude(r, outcome, now, error, total, out);
        }
        (VmState::Stopped, true) if resend_due(r, now) => {
            if r.track.power_sends >= CONTROL_RETRIES {
                let more = format!(
                    "it was running before this run stopped it, and Nova did not start it again after {} start requests{}: {cmd}",
                    r.track.power_sends,
                    last_refusal(r)
                );
                conclude(r, outcome, now, Some(join(error, more)), total, out);
            } else {
                send_start(r, now, out);
            }
        }
        (VmState::Stopped, _) | (VmState::Active, false) if now >= since + START_WAIT_MS => {
            let more = format!(
                "it was running before this run stopped it, and is not running yet after {} s (status {}): {cmd}",
                START_WAIT_MS / 1000,
                s.status
            );
            conclude(r, outcome, now, Some(join(error, more)), total, out);
        }
        (VmState::Stopped, _) | (VmState::Active, false) => {}
        (other, _) => {
            let e = join(
                error,
                format!(
                    "it was running before this run stopped it, and is now {} ({}) on {}: check it, then {cmd}",
                    other.as_str(),
                    s.status,
                    s.host
                ),
            );
            conclude(r, outcome, now, Some(e), total, out);
        }
    }
}

/// ` (last refusal: …)` when Nova refused the last stop or start.
fn last_refusal(r: &InstanceRecord) -> String {
    r.track
        .power_refused
        .as_ref()
        .map(|m| format!(" (last refusal: {m})"))
        .unwrap_or_default()
}

fn join(error: Option<String>, more: String) -> String {
    match error {
        Some(e) => format!("{e}; {more}"),
        None => more,
    }
}

/// The end of an instance this run stopped: start it again first (true),
/// unless Nova shows it running already, in ERROR, or it is being started
/// again now.
pub(super) fn restart_instead(
    r: &mut InstanceRecord,
    outcome: Outcome,
    error: &Option<String>,
    now: Millis,
    total: usize,
    out: &mut Vec<Command>,
) -> bool {
    if r.stopped_at.is_none() || matches!(r.phase, Phase::Restarting { .. }) {
        return false;
    }
    // No view (reset at a start): Nova's answer to the start tells.
    if r.track
        .server
        .as_ref()
        .is_some_and(|s| s.vm_state != VmState::Stopped)
    {
        return false;
    }
    r.phase = Phase::Restarting {
        since: now,
        outcome,
        error: error.clone(),
    };
    r.track.power_sends = 0;
    r.track.power_refused = None;
    r.track.wake_at = None;
    let line = format!(
        "[{}/{}] {} starting it again{} (it was running before this run stopped it)",
        r.index,
        total,
        r.name,
        r.destination
            .as_deref()
            .filter(|_| outcome == Outcome::ColdMigrated)
            .map(|h| format!(" on {h}"))
            .unwrap_or_default()
    );
    progress(r, line, out);
    send_start(r, now, out);
    true
}

/// After a crash, an instance this run stopped whose move ended while the
/// process was away: it is started again before its outcome is taken
/// (the machine sends the start on the first fresh view).
pub fn restart_on_resume(
    r: &mut InstanceRecord,
    outcome: Outcome,
    now: Millis,
    error: Option<String>,
) -> Result<(), Option<String>> {
    if r.stopped_at.is_none()
        || !matches!(
            outcome,
            Outcome::ColdMigrated | Outcome::Failed | Outcome::Aborted
        )
    {
        return Err(error);
    }
    r.phase = Phase::Restarting {
        since: now,
        outcome,
        error,
    };
    r.track.power_sent_at = None;
    r.track.power_sends = 0;
    r.track.power_refused = None;
    Ok(())
}

/// The server of an instance being stopped or started again is read every
/// tick.
pub(super) fn lookup(r: &mut InstanceRecord, policy: &Policy, now: Millis, out: &mut Vec<Command>) {
    if !matches!(r.phase, Phase::Stopping { .. } | Phase::Restarting { .. }) {
        return;
    }
    let tick = policy.interval_ms();
    let asked = r.track.server_asked.is_some_and(|t| now < t + tick);
    let read = r.track.server_at.is_some_and(|t| now < t + tick);
    if !asked && !read {
        r.track.server_asked = Some(now);
        out.push(Command::ReadServer {
            instance: r.id.clone(),
        });
    }
}

/// When an instance being stopped or started again next needs a look.
pub(super) fn wake(r: &InstanceRecord, policy: &Policy) -> Option<Millis> {
    if !matches!(r.phase, Phase::Stopping { .. } | Phase::Restarting { .. }) {
        return None;
    }
    let last = r.track.server_asked.max(r.track.server_at).unwrap_or(0);
    Some(last + policy.interval_ms())
}

/// The error of an instance this run stopped whose run an operator's abort
/// ends with no process left to start it again: how to.
pub(super) fn left_stopped(r: &InstanceRecord, error: String) -> String {
    if r.stopped_at.is_none() {
        return error;
    }
    let more = format!(
        "this run stopped it for its cold migration (policy cold) and no process is left to start it again: if it is not running, `openstack server start {}`",
        r.id
    );
    if error.is_empty() {
        more
    } else {
        format!("{error}; {more}")
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{entry, mv, sv};
    use super::super::{Control, Drain, Observation, StartResult};
    use super::*;
    use crate::plan::Action;

    fn drain(retries: u32) -> Drain {
        let es = vec![entry("c", Action::ColdRestart, 1024)];
        let policy = Policy {
            retries,
            ..Policy::default()
        };
        Drain::new("node1", &es, policy, 0)
    }
    fn server(v: ServerView) -> Observation {
        Observation::Server {
            instance: "c".into(),
            view: v,
        }
    }
    fn done(command: Control) -> Observation {
        Observation::CommandDone {
            instance: "c".into(),
            command,
        }
    }
    fn refused(command: Control) -> Observation {
        Observation::CommandFailed {
            instance: "c".into(),
            command,
            message:
                "409 Conflict: Cannot 'stop' instance c while it is in task_state powering-off"
                    .into(),
            gone: false,
        }
    }
    fn stops(c: &[Command]) -> usize {
        c.iter()
            .filter(|c| matches!(c, Command::StopServer { .. }))
            .count()
    }
    fn starts_again(c: &[Command]) -> usize {
        c.iter()
            .filter(|c| matches!(c, Command::StartServer { .. }))
            .count()
    }
    fn cold_starts(c: &[Command]) -> usize {
        c.iter()
            .filter(|c| matches!(c, Command::StartCold { .. }))
            .count()
    }
    /// Stopped on the source for its migration: the cold migration starts.
    fn stopped_here(d: &mut Drain) {
        let c = d.step(0, &[]);
        assert_eq!(stops(&c), 1, "{c:?}");
        assert_eq!(cold_starts(&c), 0, "never migrated before it is stopped");
        assert!(matches!(d.get("c").unwrap().phase, Phase::Stopping { .. }));
        d.step(100, &[done(Control::Stop)]);
        let c = d.step(
            2_000,
            &[server(sv(
                "node1",
                "ACTIVE",
                "active",
                Some("powering-off"),
            ))],
        );
        assert_eq!(cold_starts(&c) + stops(&c), 0, "{c:?}");
        let c = d.step(4_000, &[server(sv("node1", "SHUTOFF", "stopped", None))]);
        assert_eq!(cold_starts(&c), 1, "{c:?}");
        d.step(
            4_100,
            &[Observation::Started {
                instance: "c".into(),
                attempt: 1,
                result: StartResult::Accepted,
            }],
        );
    }

    /// SIGKILL (the journal round-trips), then resume at `now` with what
    /// Nova shows of `c`.
    fn crashed_and_resumed(
        d: &Drain,
        now: Millis,
        server: ServerView,
        migrations: Vec<crate::plan::MigrationRecord>,
    ) -> Drain {
        let text = serde_json::to_string(d).unwrap();
        let mut d: Drain = serde_json::from_str(&text).unwrap();
        crate::plan::reconcile(
            &mut d,
            now,
            &[crate::plan::ResumeObservation {
                instance: "c".into(),
                server: Some(server),
                migrations,
            }],
        );
        d
    }

    #[test]
    fn a_running_instance_is_stopped_migrated_confirmed_and_started_again() {
        let mut d = drain(1);
        stopped_here(&mut d);
        let c = d.step(
            6_000,
            &[server(sv("node5", "VERIFY_RESIZE", "resized", None))],
        );
        assert!(c.iter().any(|c| matches!(c, Command::ConfirmResize { .. })));
        let c = d.step(8_000, &[server(sv("node5", "SHUTOFF", "stopped", None))]);
        assert_eq!(starts_again(&c), 1, "{c:?}");
        let r = d.get("c").unwrap();
        assert!(
            matches!(
                r.phase,
                Phase::Restarting {
                    outcome: Outcome::ColdMigrated,
                    ..
                }
            ),
            "not ended before it runs again: {:?}",
            r.phase
        );
        assert!(!d.is_done());
        d.step(8_100, &[done(Control::Start)]);
        d.step(10_000, &[server(sv("node5", "ACTIVE", "active", None))]);
        let r = d.get("c").unwrap();
        assert_eq!(r.outcome(), Some(Outcome::ColdMigrated));
        assert_eq!(r.destination.as_deref(), Some("node5"));
        assert_eq!(r.error, None);
        assert!(
            r.decisions
                .iter()
                .any(|x| x == "started again on node5 (policy cold)"),
            "{:?}",
            r.decisions
        );
        assert!(d.is_done());
    }

    #[test]
    fn a_failed_cold_migration_leaves_it_running_on_the_source_again() {
        let mut d = drain(0);
        stopped_here(&mut d);
        d.step(
            5_000,
            &[Observation::MigrationFound {
                instance: "c".into(),
                migration_id: crate::plan::MigrationId(3),
            }],
        );
        let c = d.step(
            6_000,
            &[
                Observation::Migration {
                    instance: "c".into(),
                    view: mv(3, "error", 0, 0),
                },
                server(sv("node1", "SHUTOFF", "stopped", None)),
            ],
        );
        assert_eq!(starts_again(&c), 1, "{c:?}");
        d.step(8_000, &[server(sv("node1", "ACTIVE", "active", None))]);
        let r = d.get("c").unwrap();
        assert_eq!(r.outcome(), Some(Outcome::Failed));
        assert!(r.error.as_deref().unwrap().contains("migration 3"), "{r:?}");
        assert!(
            r.decisions
                .iter()
                .any(|x| x == "started again on node1 (policy cold)")
        );
    }

    #[test]
    fn an_abort_while_it_stops_ends_it_aborted_and_running_again() {
        let mut d = drain(1);
        d.step(0, &[]);
        d.step(500, &[Observation::AbortRequested { vm: None }]);
        let c = d.step(2_000, &[server(sv("node1", "SHUTOFF", "stopped", None))]);
        assert_eq!(cold_starts(&c), 0, "{c:?}");
        assert_eq!(starts_again(&c), 1, "{c:?}");
        d.step(4_000, &[server(sv("node1", "ACTIVE", "active", None))]);
        let r = d.get("c").unwrap();
        assert_eq!(r.outcome(), Some(Outcome::Aborted));
        assert!(
            r.error
                .as_deref()
                .unwrap()
                .contains("before its cold migration")
        );
    }

    #[test]
    fn a_stop_nova_refuses_is_sent_again_bounded_and_nothing_else_happens() {
        let mut d = drain(1);
        let mut sent = stops(&d.step(0, &[]));
        let mut t = 0;
        while d.get("c").unwrap().outcome().is_none() && t < 600_000 {
            t += 2_000;
            d.step(t - 1_000, &[refused(Control::Stop)]);
            let c = d.step(t, &[server(sv("node1", "ACTIVE", "active", None))]);
            assert_eq!(cold_starts(&c) + starts_again(&c), 0, "{c:?}");
            sent += stops(&c);
        }
        let r = d.get("c").unwrap();
        assert_eq!(sent, CONTROL_RETRIES as usize);
        assert_eq!(r.outcome(), Some(Outcome::Failed));
        let e = r.error.as_deref().unwrap();
        assert!(e.contains("did not stop it after 3 stop requests"), "{e}");
        assert!(e.contains("powering-off"), "{e}");
    }

    /// CI seed (props, stop 19): a read asked at the stop's deadline, then
    /// a crash; resume adopts Nova's view (active) and the stop is sent
    /// again. The read the dead process asked is not Nova's silence, nor is
    /// any read asked before the last stop: the deadline waits for a read
    /// asked after it.
    #[test]
    fn a_stop_sent_again_after_a_crash_past_the_deadline_is_waited_for() {
        let mut d = drain(1);
        assert_eq!(stops(&d.step(0, &[])), 1);
        d.step(1_000, &[refused(Control::Stop)]);
        let c = d.step(2_000, &[server(sv("node1", "ACTIVE", "active", None))]);
        assert_eq!(stops(&c), 1, "sent again on the refusal: {c:?}");
        let c = d.step(STOP_WAIT_MS, &[]);
        assert!(
            c.iter().any(|c| matches!(c, Command::ReadServer { .. })),
            "{c:?}"
        );
        // SIGKILL before the answer.
        let late = STOP_WAIT_MS + 58_000;
        let mut d = crashed_and_resumed(&d, late, sv("node1", "ACTIVE", "active", None), vec![]);
        let c = d.step(late, &[]);
        assert_eq!(stops(&c), 1, "the third stop: {c:?}");
        // The driver polls again in the same instant (held output, or a
        // poll_timeout of now): where the deadline was taken as passed.
        d.poll(late);
        let r = d.get("c").unwrap();
        assert!(
            matches!(r.phase, Phase::Stopping { .. }),
            "ended on a read asked before the stop: {:?} {:?}",
            r.phase,
            r.error
        );
        let c = d.step(
            late + 2_000,
            &[server(sv("node1", "SHUTOFF", "stopped", None))],
        );
        assert_eq!(cold_starts(&c), 1, "{c:?}");
    }

    /// Past the deadline with Nova silent after a stop it accepted: the stop
    /// may still land, so the error says how to start it again.
    #[test]
    fn a_stop_deadline_with_nova_silent_says_how_to_start_it_again() {
        let mut d = drain(1);
        d.step(0, &[]);
        d.step(100, &[done(Control::Stop)]);
        let mut t = 0;
        while d.get("c").unwrap().outcome().is_none() && t < 2 * STOP_WAIT_MS {
            t += 2_000;
            d.step(t, &[]);
        }
        let r = d.get("c").unwrap();
        assert_eq!(r.outcome(), Some(Outcome::Failed));
        let e = r.error.as_deref().unwrap();
        assert!(e.contains("did not stop it within 600 s"), "{e}");
        assert!(e.contains("openstack server start c"), "{e}");
    }

    #[test]
    fn started_by_someone_else_after_our_stop_is_left_alone() {
        let mut d = drain(1);
        stopped_here(&mut d);
        // The attempt fails; before the retry its owner starts it again.
        d.step(
            5_000,
            &[Observation::MigrationFound {
                instance: "c".into(),
                migration_id: crate::plan::MigrationId(3),
            }],
        );
        d.step(
            6_000,
            &[
                Observation::Migration {
                    instance: "c".into(),
                    view: mv(3, "error", 0, 0),
                },
                server(sv("node1", "SHUTOFF", "stopped", None)),
            ],
        );
        assert!(matches!(d.get("c").unwrap().phase, Phase::Waiting { .. }));
        let c = d.step(8_000, &[server(sv("node1", "ACTIVE", "active", None))]);
        assert_eq!(cold_starts(&c) + stops(&c) + starts_again(&c), 0, "{c:?}");
        let r = d.get("c").unwrap();
        assert_eq!(r.outcome(), Some(Outcome::Skipped));
        assert!(
            r.error
                .as_deref()
                .unwrap()
                .contains("started again by someone else")
        );
    }

    #[test]
    fn a_start_nova_refuses_ends_with_the_command_to_run() {
        let mut d = drain(1);
        stopped_here(&mut d);
        d.step(
            6_000,
            &[server(sv("node5", "VERIFY_RESIZE", "resized", None))],
        );
        let mut sent =
            starts_again(&d.step(8_000, &[server(sv("node5", "SHUTOFF", "stopped", None))]));
        let mut t = 8_000;
        while d.get("c").unwrap().outcome().is_none() && t < 400_000 {
            t += 2_000;
            d.step(t - 1_000, &[refused(Control::Start)]);
            sent += starts_again(&d.step(t, &[server(sv("node5", "SHUTOFF", "stopped", None))]));
        }
        assert_eq!(sent, CONTROL_RETRIES as usize);
        let r = d.get("c").unwrap();
        assert_eq!(r.outcome(), Some(Outcome::ColdMigrated));
        let e = r.error.as_deref().unwrap();
        assert!(e.contains("openstack server start c"), "{e}");
    }

    #[test]
    fn the_journal_of_a_stopping_instance_goes_on_after_a_crash() {
        let mut d = drain(1);
        d.step(0, &[]);
        // SIGKILL here: the intent (Stopping) is on disk, the stop may not
        // have reached Nova. The journal round-trips.
        let now = 60_000;
        let mut d = crashed_and_resumed(&d, now, sv("node1", "ACTIVE", "active", None), vec![]);
        let c = d.step(now, &[]);
        assert_eq!(stops(&c), 1, "sent again: {c:?}");
        let c = d.step(
            now + 2_000,
            &[server(sv("node1", "SHUTOFF", "stopped", None))],
        );
        assert_eq!(cold_starts(&c), 1, "{c:?}");
    }

    #[test]
    fn a_cold_migration_that_ended_while_away_is_started_again_after_a_crash() {
        let mut d = drain(1);
        stopped_here(&mut d);
        let now = 120_000;
        let confirmed = crate::plan::MigrationRecord {
            id: crate::plan::MigrationId(3),
            status: crate::plan::MigrationStatus::Confirmed,
            created_at: 4_200,
            dest_compute: Some("node5".into()),
        };
        let mut d = crashed_and_resumed(
            &d,
            now,
            sv("node5", "SHUTOFF", "stopped", None),
            vec![confirmed],
        );
        let r = d.get("c").unwrap();
        assert!(matches!(r.phase, Phase::Restarting { .. }), "{:?}", r.phase);
        let c = d.step(now, &[]);
        assert_eq!(starts_again(&c), 0, "not before a view of now: {c:?}");
        assert!(c.iter().any(|c| matches!(c, Command::ReadServer { .. })));
        let c = d.step(now + 10, &[server(sv("node5", "SHUTOFF", "stopped", None))]);
        assert_eq!(starts_again(&c), 1, "{c:?}");
        d.step(
            now + 2_000,
            &[server(sv("node5", "ACTIVE", "active", None))],
        );
        assert_eq!(d.get("c").unwrap().outcome(), Some(Outcome::ColdMigrated));
    }
}
