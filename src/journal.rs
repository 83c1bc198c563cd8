//! The crash-safe journal: one versioned JSON document per node, written
//! with write-to-temp + fsync + rename + directory fsync, mode 0600.
//!
//! Whatever the state type is, a reader sees either the previous complete
//! document or the new complete one, never a torn write, whatever instant the
//! process is killed at. Nothing secret is ever put in it (the types stored
//! hold no credentials).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The journal format version; bumped on incompatible changes.
pub const VERSION: u32 = 1;

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
        "journal {path} has version {found}, this charm reads version {VERSION}; move it aside to start afresh"
    )]
    Version { path: PathBuf, found: u32 },
}

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    version: u32,
    state: &'a T,
}

#[derive(serde::Deserialize)]
struct EnvelopeIn<T> {
    version: u32,
    state: T,
}

#[derive(serde::Deserialize)]
struct VersionOnly {
    version: u32,
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

    /// Loads the state, `None` when there is no journal.
    pub fn load<T: DeserializeOwned>(&self) -> Result<Option<T>, JournalError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        let corrupt = |e: serde_json::Error| JournalError::Corrupt {
            path: self.path.clone(),
            detail: e.to_string(),
        };
        let v: VersionOnly = serde_json::from_slice(&bytes).map_err(corrupt)?;
        if v.version != VERSION {
            return Err(JournalError::Version {
                path: self.path.clone(),
                found: v.version,
            });
        }
        let env: EnvelopeIn<T> = serde_json::from_slice(&bytes).map_err(corrupt)?;
        debug_assert_eq!(env.version, VERSION);
        Ok(Some(env.state))
    }

    /// Replaces the journal atomically and durably.
    pub fn store<T: Serialize>(&self, state: &T) -> Result<(), JournalError> {
        let body = serde_json::to_vec(&EnvelopeOut {
            version: VERSION,
            state,
        })
        .map_err(|e| JournalError::Corrupt {
            path: self.path.clone(),
            detail: e.to_string(),
        })?;
        write_private(&self.path, &body).map_err(|e| self.io(e))
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

/// Replaces `path` with `bytes` atomically and durably, readable by root
/// only: a 0600 temp file beside it, fsync, rename, directory fsync. A
/// reader sees the old content or the new, never a torn write.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // The umask cannot widen it, but be explicit.
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
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
        assert!(text.starts_with("{\"version\":1,"), "{text}");
    }

    #[test]
    fn corrupt_and_future_versions_are_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::in_dir(dir.path());
        fs::write(j.path(), b"{\"version\":1,\"state\":").unwrap();
        let e = j.load::<S>().unwrap_err().to_string();
        assert!(e.contains("move it aside"), "{e}");
        fs::write(j.path(), b"{\"version\":9,\"state\":{}}").unwrap();
        assert!(matches!(
            j.load::<S>(),
            Err(JournalError::Version { found: 9, .. })
        ));
        let moved = j.archive("old").unwrap().unwrap();
        assert!(moved.ends_with("journal.old.json"));
        assert!(!j.path().exists());
    }
}
