//! The host CLI run by a user other than root, and the hint the hooks keep
//! so that it can say exactly what to run instead.
//!
//! `abort` and `status` need root: the credentials the hooks keep for the
//! CLI are root-only (0600), and so are the journal and the abort request.
//! `juju exec --machine N -- …` runs its command as the user `ubuntu`, not
//! root (Juju: internal/worker/machineactions/handleactions.go, `RunAsUser =
//! "ubuntu"`), so from there the CLI refuses with exit 2 and names the two
//! ways that work: `juju exec --unit <principal> -- …` (root, in the
//! principal's hook context; it takes the machine lock, which our
//! `parallel: true` evacuate does not hold, and it is the principal's
//! operation, not the one running the evacuation) and
//! `juju ssh <machine> -- sudo …`.
//!
//! To name the principal unit and the machine, every hook writes
//! `operator-hint.json` in the state dir, world-readable (0644), holding
//! only those names: no credential, no host detail
//! ([`crate::state::operator_hint`]).

use crate::juju::Context;
use crate::state::operator_hint::Hint;

/// Exit code of a CLI command refused for want of root.
pub const NOT_ROOT_EXIT: i32 = 2;

/// The hint of this hook's context.
pub fn from_context(ctx: &Context, machine: Option<String>) -> Hint {
    Hint {
        unit: ctx.unit.clone(),
        principal: ctx.principal_unit.clone(),
        machine: machine.filter(|m| !m.is_empty()),
    }
}

/// This process's effective uid (Linux: `/proc/self/status`), `None` if
/// unreadable.
pub fn effective_uid() -> Option<u32> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("Uid:"))?;
    // Uid: real effective saved filesystem
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Quotes one word for a shell command line when it needs it.
fn shell_word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if plain {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// The refusal for a non-root run of `nova-live-migration <args>`: why,
/// and the two commands that work, naming the principal unit and the
/// machine when the hooks left them.
pub fn not_root_message(args: &[String], uid: Option<u32>, hint: Option<&Hint>) -> String {
    let command = std::iter::once("nova-live-migration".to_string())
        .chain(args.iter().map(|a| shell_word(a)))
        .collect::<Vec<_>>()
        .join(" ");
    let who = match uid {
        Some(uid) => format!("uid {uid}"),
        None => "not root".to_string(),
    };
    let principal = hint
        .and_then(|h| h.principal.clone())
        .unwrap_or_else(|| "<the nova-compute unit on this machine>".into());
    let machine = hint
        .and_then(|h| h.machine.clone())
        .unwrap_or_else(|| "<this machine's number>".into());
    let sub = args.first().map(String::as_str).unwrap_or("this command");
    format!(
        "nova-live-migration {sub} needs root (the credentials, the journal and the abort request are root-only), and this runs as {who}; `juju exec --machine` runs commands as the user ubuntu, so it cannot be used.\n\
         Run it as root, beside a running evacuation, with one of:\n  \
         juju exec --unit {principal} -- {command}\n  \
         juju ssh {machine} -- sudo {command}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::operator_hint::example as hint;

    #[test]
    fn the_refusal_names_the_commands_that_work() {
        let args = vec!["abort".to_string(), "--vm".into(), "web 1".into()];
        let m = not_root_message(&args, Some(1000), Some(&hint()));
        assert!(m.starts_with("nova-live-migration abort needs root"), "{m}");
        assert!(m.contains("runs as uid 1000"), "{m}");
        assert!(
            m.contains(
                "  juju exec --unit nova-compute/3 -- nova-live-migration abort --vm 'web 1'\n"
            ),
            "{m}"
        );
        assert!(
            m.contains("  juju ssh 7 -- sudo nova-live-migration abort --vm 'web 1'\n"),
            "{m}"
        );
        // Without the hooks' hint: placeholders, still the same commands.
        let m = not_root_message(&["status".to_string()], None, None);
        assert!(
            m.contains("juju exec --unit <the nova-compute unit on this machine> -- nova-live-migration status"),
            "{m}"
        );
        assert!(m.contains("juju ssh <this machine's number> -- sudo nova-live-migration status"));
    }

    #[test]
    fn the_effective_uid_is_read() {
        assert!(effective_uid().is_some());
    }
}
