//! A session kept across processes: the token, its catalog and the
//! negotiated compute microversion, so that the next hook reuses them
//! instead of authenticating and negotiating again. The caller decides
//! where it lives (the state directory, `crate::state::token_cache`); this
//! module only says what it holds and when it may be used.
//!
//! It is keyed by a hash of the auth URL, the user and the project (never
//! the password, which it does not hold): a change of any of them makes it
//! unusable. It is used only within the first half of the token's life, as
//! measured on this machine's clock from when the token arrived.

use serde::{Deserialize, Serialize};

use super::keystone::{AuthConfig, CatalogEntry, IdName};

/// What a process hands to the next one (it holds the token: keep it 0600,
/// never log it; `Debug` leaves the token out).
#[derive(Clone, Serialize, Deserialize)]
pub struct SavedSession {
    /// [`session_key`] of the configuration it was obtained with.
    pub key: String,
    token: String,
    /// Lifetime as Keystone stated it, seconds.
    pub lifetime_s: f64,
    /// When the token arrived, ms since the epoch (this machine's clock).
    pub obtained_at_ms: u64,
    pub issued_at: String,
    pub expires_at: String,
    pub user: IdName,
    pub project: IdName,
    pub roles: Vec<String>,
    pub catalog: Vec<CatalogEntry>,
    /// The compute endpoint and what was negotiated with it.
    pub compute: Option<SavedCompute>,
}

impl std::fmt::Debug for SavedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedSession")
            .field("key", &self.key)
            .field("token", &"***")
            .field("lifetime_s", &self.lifetime_s)
            .field("obtained_at_ms", &self.obtained_at_ms)
            .field("expires_at", &self.expires_at)
            .field("compute", &self.compute)
            .finish_non_exhaustive()
    }
}

/// The compute endpoint's negotiated microversion.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavedCompute {
    pub endpoint: String,
    pub microversion: String,
    pub server_max: Option<String>,
}

impl SavedSession {
    pub(crate) fn new(key: String, token: &str, lifetime_s: f64, obtained_at_ms: u64) -> Self {
        SavedSession {
            key,
            token: token.to_string(),
            lifetime_s,
            obtained_at_ms,
            issued_at: String::new(),
            expires_at: String::new(),
            user: IdName::default(),
            project: IdName::default(),
            roles: Vec::new(),
            catalog: Vec::new(),
            compute: None,
        }
    }

    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// Both hold the same token.
    pub fn same_token(&self, other: &SavedSession) -> bool {
        self.token == other.token
    }

    /// A session for `config` holding `token` (tests).
    #[doc(hidden)]
    pub fn for_test(
        config: &AuthConfig,
        token: &str,
        lifetime_s: f64,
        obtained_at_ms: u64,
    ) -> Self {
        SavedSession::new(session_key(config), token, lifetime_s, obtained_at_ms)
    }

    /// Seconds of the token's life gone at `now_ms`, if it may still be
    /// used: for `config` (same key), not from the future (a clock set
    /// back), and within the first half of its life.
    pub fn usable_for(&self, config: &AuthConfig, now_ms: u64) -> Option<f64> {
        if self.key != session_key(config) || self.token.is_empty() || self.lifetime_s <= 0.0 {
            return None;
        }
        let elapsed = now_ms.checked_sub(self.obtained_at_ms)? as f64 / 1000.0;
        (elapsed < self.lifetime_s / 2.0).then_some(elapsed)
    }
}

/// The key of a configuration: a hash (FNV-1a, 64 bits) of the auth URL,
/// the user and the project with their domains. It tells configurations
/// apart; it protects nothing (the file it keys holds the token itself).
pub fn session_key(config: &AuthConfig) -> String {
    let parts = [
        config.auth_url.trim_end_matches('/').to_string(),
        format!("{:?}", config.user_domain),
        config.username.clone(),
        format!("{:?}", config.project_domain),
        format!("{:?}", config.project),
    ];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("fnv1a64:{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openstack::{NameOrId, Secret};

    fn config(url: &str, user: &str, project: &str) -> AuthConfig {
        let d = || NameOrId::Name("Default".into());
        AuthConfig::new(
            url,
            user,
            Secret::new("pw-one"),
            d(),
            NameOrId::Name(project.into()),
            d(),
        )
    }

    #[test]
    fn the_key_changes_with_url_user_project_never_with_the_password() {
        let a = config("http://ks:5000/v3", "nova_live_migration", "services");
        let k = session_key(&a);
        assert_eq!(
            k,
            session_key(&config(
                "http://ks:5000/v3/",
                "nova_live_migration",
                "services"
            ))
        );
        let mut other_pw = a.clone();
        other_pw.password = Secret::new("pw-two");
        assert_eq!(k, session_key(&other_pw));
        assert!(!k.contains("pw-one"));
        for b in [
            config("http://ks2:5000/v3", "nova_live_migration", "services"),
            config("http://ks:5000/v3", "admin", "services"),
            config("http://ks:5000/v3", "nova_live_migration", "admin"),
        ] {
            assert_ne!(k, session_key(&b));
        }
        let mut by_id = a.clone();
        by_id.project = NameOrId::Id("services".into());
        assert_ne!(k, session_key(&by_id));
    }

    #[test]
    fn used_only_in_the_first_half_of_its_life_for_its_own_config() {
        let c = config("http://ks:5000/v3", "u", "p");
        let t0 = 1_800_000_000_000;
        let s = SavedSession::new(session_key(&c), "tok", 3600.0, t0);
        assert_eq!(s.usable_for(&c, t0), Some(0.0));
        assert_eq!(s.usable_for(&c, t0 + 1_799_000), Some(1799.0));
        assert_eq!(s.usable_for(&c, t0 + 1_800_000), None, "half its life");
        assert_eq!(s.usable_for(&c, t0 - 1), None, "a clock set back");
        assert_eq!(
            s.usable_for(&config("http://ks:5000/v3", "u", "q"), t0),
            None
        );
        assert_eq!(
            SavedSession::new(session_key(&c), "", 3600.0, t0).usable_for(&c, t0),
            None
        );
        assert!(!format!("{s:?}").contains("tok\""), "{s:?}");
    }
}
