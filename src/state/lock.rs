//! `run.lock`: held by the drain action for as long as it runs.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

pub const RUN_LOCK: &str = "run.lock";

/// The exclusive run lock; released on drop (or when the process dies).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock without waiting: `Ok(None)` when another process holds it.
    pub fn try_acquire(state_dir: &Path) -> std::io::Result<Option<RunLock>> {
        std::fs::create_dir_all(state_dir)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(state_dir.join(RUN_LOCK))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(RunLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Takes the lock, retrying for up to `patience` (a status probe may hold
    /// it for an instant): `Ok(None)` when another process still holds it.
    pub fn acquire(state_dir: &Path, patience: Duration) -> std::io::Result<Option<RunLock>> {
        let t0 = std::time::Instant::now();
        loop {
            if let Some(l) = RunLock::try_acquire(state_dir)? {
                return Ok(Some(l));
            }
            if t0.elapsed() >= patience {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// True when an evacuate/migrate-vm process holds the run lock right now.
pub fn drain_running(state_dir: &Path) -> bool {
    if !state_dir.join(RUN_LOCK).exists() {
        return false;
    }
    matches!(RunLock::try_acquire(state_dir), Ok(None))
}
