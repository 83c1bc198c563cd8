//! `operator-hint.json`: the one world-readable file of the state dir
//! (0644). Every hook keeps the names of this unit, its principal and its
//! machine there, and nothing else (no credential, no host detail), so
//! that the host CLI run by a user other than root can name the commands
//! that work ([`crate::hint`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::fs::write_public;

/// The hint file in the state dir (0644).
pub const HINT_FILE: &str = "operator-hint.json";

/// What the hooks know and the CLI may tell anyone on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hint {
    /// This subordinate unit, e.g. `nova-live-migration/3`.
    pub unit: String,
    /// The principal beside it, e.g. `nova-compute/3`.
    pub principal: Option<String>,
    /// The Juju machine id, e.g. `3`.
    pub machine: Option<String>,
}

/// Writes the hint (atomically and durably, mode 0644) when it changed. A
/// failure is logged, never fatal: the CLI then names placeholders.
pub fn keep(state_dir: &Path, hint: &Hint) {
    let path = state_dir.join(HINT_FILE);
    let Ok(body) = serde_json::to_vec(hint) else {
        return;
    };
    if std::fs::read(&path).is_ok_and(|b| b == body) {
        return;
    }
    if let Err(e) = write_public(&path, &body) {
        tracing::warn!("could not keep the operator hint {}: {e}", path.display());
    }
}

/// Removes the hint (the unit is going away).
pub fn remove(state_dir: &Path) {
    let _ = std::fs::remove_file(state_dir.join(HINT_FILE));
}

/// The hint the hooks left, if any and readable.
pub fn load(state_dir: &Path) -> Option<Hint> {
    let text = std::fs::read_to_string(state_dir.join(HINT_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// A hint as the hooks of `nova-live-migration/3` on machine 7 keep it
/// (the tests of this module and of [`crate::hint`]).
#[cfg(test)]
pub(crate) fn example() -> Hint {
    Hint {
        unit: "nova-live-migration/3".into(),
        principal: Some("nova-compute/3".into()),
        machine: Some("7".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::example as hint;
    use super::*;

    #[test]
    fn the_hint_is_world_readable_and_written_once() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        keep(&state, &hint());
        let path = state.join(HINT_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(load(&state), Some(hint()));
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();
        keep(&state, &hint());
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            before
        );
        remove(&state);
        assert_eq!(load(&state), None);
    }
}
