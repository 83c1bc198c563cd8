//! The crash-safe journal: one versioned JSON document per node,
//! `{"version": N, "state": <body>}`, written by
//! [`write_private`](super::write_private) (own temp file, fsync, rename,
//! directory fsync, mode 0600).
//!
//! Whatever the state type is, a reader sees either the previous complete
//! document or the new complete one, never a torn write, whatever instant the
//! process is killed at. Nothing secret is ever put in it (the types stored
//! hold no credentials).
//!
//! **Versions.** The body's format has a version; [`CONVERSIONS`] is the
//! chain that brings a body of any earlier version this project wrote to the
//! current one, applied in order on load as `serde_json::Value` transforms
//! (v1 → v2 → …), the way Kubernetes CRD versions convert. To change the
//! body's format incompatibly, append one function `vN_to_vN+1` to
//! [`CONVERSIONS`]: [`VERSION`] follows from the chain's length. A journal
//! of a newer version than this binary reads (written by a later charm
//! revision) is refused, saying so, and left as it is.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// One step of the chain: a body of version `i + 1` to version `i + 2`.
pub type Conversion = fn(Value) -> Result<Value, String>;

/// `CONVERSIONS[i]` converts a version `i + 1` body to version `i + 2`.
pub const CONVERSIONS: &[Conversion] = &[super::run::v1_to_v2];

/// The journal format this binary writes: one more than the conversions.
pub const VERSION: u32 = CONVERSIONS.len() as u32 + 1;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {path} is not valid ({detail}); move it aside to start afresh")]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "journal {path} has version {found}, newer than this charm reads (up to {VERSION}): a later charm revision wrote it; refresh the charm to that revision (or later) to resume or end its run, or move it aside to start afresh"
    )]
    Version { path: PathBuf, found: u32 },
}

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    version: u32,
    state: &'a T,
}

#[derive(serde::Deserialize)]
struct EnvelopeIn {
    version: u32,
    state: Value,
}

/// Brings a body of `version` to [`VERSION`] through the chain.
pub fn upgrade(version: u32, state: Value) -> Result<Value, String> {
    upgrade_with(CONVERSIONS, version, state)
}

fn upgrade_with(chain: &[Conversion], version: u32, mut state: Value) -> Result<Value, String> {
    if version == 0 {
        return Err("version 0 does not exist".into());
    }
    for (i, convert) in chain.iter().enumerate().skip(version as usize - 1) {
        let from = i + 1;
        state = convert(state).map_err(|e| format!("converting v{from} to v{}: {e}", from + 1))?;
    }
    Ok(state)
}

/// A journal file.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    pub fn new(path: impl Into<PathBuf>) -> Journal {
        Journal { path: path.into() }
    }

    /// `<state_dir>/journal.json`.
    pub fn in_dir(dir: &Path) -> Journal {
        Journal::new(dir.join("journal.json"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> JournalError {
        JournalError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, detail: impl ToString) -> JournalError {
        JournalError::Corrupt {
            path: self.path.clone(),
            detail: detail.to_string(),
        }
    }

    /// Loads the state, converted from an earlier version if need be;
    /// `None` when there is no journal.
    pub fn load<T: DeserializeOwned>(&self) -> Result<Option<T>, JournalError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        let env: EnvelopeIn = serde_json::from_slice(&bytes).map_err(|e| self.corrupt(e))?;
        if env.version > VERSION {
            return Err(JournalError::Version {
                path: self.path.clone(),
                found: env.version,
            });
        }
        let state = upgrade(env.version, env.state).map_err(|e| self.corrupt(e))?;
        serde_json::from_value(state)
            .map(Some)
            .map_err(|e| self.corrupt(e))
    }

    /// Replaces the journal atomically and durably.
    pub fn store<T: Serialize>(&self, state: &T) -> Result<(), JournalError> {
        let body = serde_json::to_vec(&EnvelopeOut {
            version: VERSION,
            state,
        })
        .map_err(|e| self.corrupt(e))?;
        super::write_private(&self.path, &body).map_err(|e| self.io(e))
    }

    /// Moves the journal aside (`journal.json` → `journal.<suffix>.json`),
    /// keeping it for the record.
    pub fn archive(&self, suffix: &str) -> Result<Option<PathBuf>, JournalError> {
        if !self.path.exists() {
            return Ok(None);
        }
        let to = self.path.with_extension(format!("{suffix}.json"));
        fs::rename(&self.path, &to).map_err(|e| self.io(e))?;
        Ok(Some(to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct S {
        n: u32,
        names: Vec<String>,
    }

    #[test]
    fn round_trip_mode_and_no_temp_left() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::in_dir(&dir.path().join("sub"));
        assert_eq!(j.load::<S>().unwrap(), None);
        let s = S {
            n: 3,
            names: vec!["focal-2".into()],
        };
        j.store(&s).unwrap();
        assert_eq!(j.load::<S>().unwrap(), Some(s));
        let mode = fs::metadata(j.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let entries: Vec<_> = fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(entries.len(), 1);
        let text = fs::read_to_string(j.path()).unwrap();
        assert!(
            text.starts_with(&format!("{{\"version\":{VERSION},")),
            "{text}"
        );
    }

    #[test]
    fn corrupt_and_future_versions_are_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::in_dir(dir.path());
        fs::write(j.path(), b"{\"version\":1,\"state\":").unwrap();
        let e = j.load::<S>().unwrap_err().to_string();
        assert!(e.contains("move it aside"), "{e}");
        fs::write(j.path(), b"{\"version\":9,\"state\":{}}").unwrap();
        let e = j.load::<S>().unwrap_err();
        assert!(matches!(e, JournalError::Version { found: 9, .. }), "{e}");
        let e = e.to_string();
        assert!(
            e.contains("newer than this charm reads") && e.contains("refresh the charm"),
            "{e}"
        );
        // Refusing leaves it as it was.
        assert_eq!(fs::read(j.path()).unwrap(), b"{\"version\":9,\"state\":{}}");
        fs::write(j.path(), b"{\"version\":0,\"state\":{}}").unwrap();
        assert!(matches!(j.load::<S>(), Err(JournalError::Corrupt { .. })));
        let moved = j.archive("old").unwrap().unwrap();
        assert!(moved.ends_with("journal.old.json"));
        assert!(!j.path().exists());
    }

    #[test]
    fn the_chain_brings_every_version_to_the_current_one() {
        assert_eq!(VERSION as usize, CONVERSIONS.len() + 1);
        // The current version converts to itself.
        let v = serde_json::json!({"n": 1});
        assert_eq!(upgrade(VERSION, v.clone()).unwrap(), v);
        assert!(upgrade(0, v).is_err());
    }

    #[test]
    fn conversions_apply_in_order_from_the_documents_version() {
        fn v1_to_v2(mut s: Value) -> Result<Value, String> {
            let n = s["n"].take();
            s["count"] = n;
            s.as_object_mut().unwrap().remove("n");
            Ok(s)
        }
        fn v2_to_v3(mut s: Value) -> Result<Value, String> {
            let c = s["count"].as_u64().ok_or("count is not a number")?;
            s["count"] = (c * 10).into();
            Ok(s)
        }
        let chain: &[Conversion] = &[v1_to_v2, v2_to_v3];
        let v1 = serde_json::json!({"n": 4});
        assert_eq!(
            upgrade_with(chain, 1, v1).unwrap(),
            serde_json::json!({"count": 40})
        );
        let v2 = serde_json::json!({"count": 4});
        assert_eq!(
            upgrade_with(chain, 2, v2).unwrap(),
            serde_json::json!({"count": 40})
        );
        let v3 = serde_json::json!({"count": 4});
        assert_eq!(upgrade_with(chain, 3, v3.clone()).unwrap(), v3);
        let e = upgrade_with(chain, 2, serde_json::json!({"count": "x"})).unwrap_err();
        assert_eq!(e, "converting v2 to v3: count is not a number");
    }
}
