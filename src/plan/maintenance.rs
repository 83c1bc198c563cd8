//! The maintenance mark this charm leaves on a compute service: the
//! `disabled_reason` that `evacuate` writes, and the one rule that tells
//! whether a reason found in Nova is ours (so `enable` re-enables only what
//! this charm disabled).
//!
//! The reason is `<unit> evacuate[ (task <id>)] at <UTC time>`, e.g.
//! `nova-live-migration/0 evacuate (task 7) at 2026-11-25T21:35:30Z`. The
//! task id and the time differ on every run, and the unit number differs
//! when the subordinate was replaced, so the rule matches the shape and the
//! application name, not the text of one run.

/// The `disabled_reason` `evacuate` writes: the unit, the action (and its
/// task id when Juju gave one), the time (`at_iso`, ISO 8601 UTC).
pub fn disable_reason(unit: &str, task: Option<&str>, at_iso: &str) -> String {
    let task = task.map(|t| format!(" (task {t})")).unwrap_or_default();
    format!("{unit} evacuate{task} at {at_iso}")
}

/// A reason of [`disable_reason`]'s shape, split into the application of
/// the unit that wrote it and its time text; `None` for any other text.
/// The one parser of the mark: `enable` ([`written_by_us`]) and the
/// maintenance budget (`budget::reason_time`) both read it through here.
pub fn parse_reason(reason: &str) -> Option<(&str, &str)> {
    let (unit, rest) = reason.trim().split_once(' ')?;
    let app = application(unit)?;
    let rest = rest.strip_prefix("evacuate")?;
    let rest = match rest.strip_prefix(" (task ") {
        Some(t) => match t.split_once(')') {
            Some((id, after)) if !id.is_empty() && !id.contains(char::is_whitespace) => after,
            _ => return None,
        },
        None => rest,
    };
    let time = rest.strip_prefix(" at ")?;
    is_utc_time(time).then_some((app, time))
}

/// Whether `reason` is one this charm's application (that of `unit`, e.g.
/// `nova-live-migration` of `nova-live-migration/3`) wrote when its
/// `evacuate` disabled a service: [`disable_reason`]'s shape with any unit
/// number, task id and time.
pub fn written_by_us(reason: &str, unit: &str) -> bool {
    match (application(unit), parse_reason(reason)) {
        (Some(ours), Some((app, _))) => ours == app,
        _ => false,
    }
}

/// The application of a unit name (`app/N`).
fn application(unit: &str) -> Option<&str> {
    let (app, n) = unit.rsplit_once('/')?;
    (!app.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(app)
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z`, loosely: what `time::iso` writes.
fn is_utc_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b.len() <= 30
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && s.ends_with('Z')
        && [0..4, 5..7, 8..10, 11..13, 14..16, 17..19]
            .iter()
            .all(|r| b[r.clone()].iter().all(u8::is_ascii_digit))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: &str = "nova-live-migration/0";

    #[test]
    fn the_reason_we_write_is_ours_whatever_the_run() {
        for (task, at) in [
            (Some("1"), "2026-11-25T21:35:30Z"),
            (Some("scale"), "2026-12-01T16:14:49Z"),
            (None, "2026-12-01T16:14:49.123Z"),
        ] {
            let r = disable_reason(UNIT, task, at);
            assert!(written_by_us(&r, UNIT), "{r}");
        }
        assert_eq!(
            disable_reason(UNIT, Some("7"), "2026-11-25T21:35:30Z"),
            "nova-live-migration/0 evacuate (task 7) at 2026-11-25T21:35:30Z"
        );
        // Another unit of the same application (the subordinate replaced).
        let r = disable_reason("nova-live-migration/12", Some("3"), "2026-11-25T21:35:30Z");
        assert!(written_by_us(&r, UNIT), "{r}");
        // Deployed under another application name.
        let r = disable_reason("nlm/2", Some("3"), "2026-11-25T21:35:30Z");
        assert!(written_by_us(&r, "nlm/0"), "{r}");
        assert!(!written_by_us(&r, UNIT), "{r}");
    }

    #[test]
    fn anything_else_is_someone_elses() {
        for r in [
            "",
            "kernel upgrade (bob)",
            "nova-live-migration",
            "nova-live-migration/0",
            "nova-live-migration/0 evacuate",
            "nova-live-migration/0 evacuate at yesterday",
            "nova-live-migration/0 evacuate (task ) at 2026-11-25T21:35:30Z",
            "nova-live-migration/0 evacuate (task 1 at 2026-11-25T21:35:30Z",
            "nova-live-migration/x evacuate (task 1) at 2026-11-25T21:35:30Z",
            "nova-live-migration/0 migrate-vm (task 1) at 2026-11-25T21:35:30Z",
            "nova-live-migration-other/0 evacuate (task 1) at 2026-11-25T21:35:30Z",
            "nova-live-migration/0 evacuate (task 1) at 2026-11-25T21:35:30Z; and mine",
            "maintenance: nova-live-migration/0 evacuate (task 1) at 2026-11-25T21:35:30Z",
            "AUTO: Connection to libvirt lost: 1",
        ] {
            assert!(!written_by_us(r, UNIT), "{r:?} counted as ours");
        }
        // A unit name that is not one never owns anything.
        let r = disable_reason(UNIT, Some("1"), "2026-11-25T21:35:30Z");
        assert!(!written_by_us(&r, "nova-live-migration"));
        assert!(!written_by_us(&r, ""));
    }

    #[test]
    fn the_rule_never_panics_on_odd_text() {
        for r in [
            "nova-live-migration/0 evacuate at 2026-11-25T21:35:3€Z",
            "nova-live-migration/0 evacuate at €€€€€€€€€€€€€€€€€€€€",
            "nova-live-migration/0 evacuate (task €) at ",
        ] {
            assert!(!written_by_us(r, UNIT), "{r}");
        }
    }
}
