//! `keystone-token.json`: the Keystone token the hooks keep between runs
//! (0600, root only), so that update-status every five minutes does not
//! ask Keystone for a new token each time. What it holds and when it may be
//! used is `openstack::SavedSession`'s business (keyed by a hash of the
//! auth URL, user and project; never the password; used in the first half
//! of the token's life); here only where it lives. Never logged.

use std::path::Path;

use crate::openstack::SavedSession;

pub const TOKEN_CACHE: &str = "keystone-token.json";

/// The kept session, if there is a readable one (anything else: none).
pub fn load_token(state_dir: &Path) -> Option<SavedSession> {
    let bytes = std::fs::read(state_dir.join(TOKEN_CACHE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Keeps `saved` unless the file already holds that token for that
/// compute endpoint (no write every five minutes for nothing).
pub fn store_token(state_dir: &Path, saved: &SavedSession) {
    if let Some(old) = load_token(state_dir)
        && old.key == saved.key
        && old.same_token(saved)
        && old.compute == saved.compute
    {
        return;
    }
    let Ok(body) = serde_json::to_vec(saved) else {
        return;
    };
    if let Err(e) = super::write_private(&state_dir.join(TOKEN_CACHE), &body) {
        tracing::warn!("could not keep the Keystone token for the next hook: {e}");
    }
}

/// Forgets the kept token (refused by Keystone, or the relation went).
pub fn discard_token(state_dir: &Path) {
    match std::fs::remove_file(state_dir.join(TOKEN_CACHE)) {
        Ok(()) => tracing::debug!("discarded the kept Keystone token"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("could not remove the kept Keystone token: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openstack::{AuthConfig, NameOrId, Secret};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn kept_0600_reloaded_and_discarded() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_token(dir.path()).is_none());
        let config = AuthConfig::new(
            "http://ks:5000/v3",
            "u",
            Secret::new("pw"),
            NameOrId::Name("Default".into()),
            NameOrId::Name("p".into()),
            NameOrId::Name("Default".into()),
        );
        let saved = SavedSession::for_test(&config, "the-token", 3600.0, 1_800_000_000_000);
        store_token(dir.path(), &saved);
        let path = dir.path().join(TOKEN_CACHE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("\"pw\""), "no password kept");
        let back = load_token(dir.path()).unwrap();
        assert!(back.same_token(&saved));
        assert_eq!(back.usable_for(&config, 1_800_000_000_000), Some(0.0));
        std::fs::write(&path, b"{not json").unwrap();
        assert!(load_token(dir.path()).is_none(), "unreadable: none");
        discard_token(dir.path());
        assert!(!path.exists());
        discard_token(dir.path());
    }
}
