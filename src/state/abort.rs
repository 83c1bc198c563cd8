//! Abort requests: a queue of one file per request in `abort-requests/`, so
//! two close requests both arrive.
//!
//! A requester (the `abort` action or the host CLI, while a drain runs)
//! [`submit`](AbortRequests::submit)s `<id>.json` and waits for the running
//! drain to take it: the drain renames it to `<id>.taken`
//! ([`take_since`](AbortRequests::take_since)), the requester sees
//! [`RequestState::Taken`] and [`forget`](AbortRequests::forget)s it. A
//! request made before the drain's run began belongs to a run that ended
//! without taking it: it is removed unread
//! ([`discard_before`](AbortRequests::discard_before)), and its requester
//! sees [`RequestState::Gone`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::plan::Millis;
use crate::time::iso;

/// The queue's directory in the state dir.
pub const ABORT_REQUESTS: &str = "abort-requests";
/// The single request file of charm versions before the queue; removed as
/// stale.
pub const LEGACY_ABORT_REQUEST: &str = "abort-request.json";

const PENDING: &str = "json";
const TAKEN: &str = "taken";

/// One request to abort the running drain's migrations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortRequest {
    /// `<requested_at, 13 digits>-<pid>-<n>`: unique, sorts by time.
    pub id: String,
    /// `None`: every instance (and start no more); else one instance's name
    /// or UUID.
    pub vm: Option<String>,
    /// Milliseconds since the epoch.
    pub requested_at: Millis,
}

/// Where a submitted request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestState {
    /// Written, not taken yet.
    Pending,
    /// The running drain took it.
    Taken,
    /// Neither: discarded as stale (or forgotten).
    Gone,
}

/// The queue in one state dir.
#[derive(Debug, Clone)]
pub struct AbortRequests {
    dir: PathBuf,
    legacy: PathBuf,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl AbortRequests {
    pub fn in_dir(state_dir: &Path) -> AbortRequests {
        AbortRequests {
            dir: state_dir.join(ABORT_REQUESTS),
            legacy: state_dir.join(LEGACY_ABORT_REQUEST),
        }
    }

    /// The queue's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, id: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{id}.{ext}"))
    }

    /// The pending file of request `id`.
    pub fn path_of(&self, id: &str) -> PathBuf {
        self.file(id, PENDING)
    }

    /// Queues a request (0600, atomically) made at `now`.
    pub fn submit(&self, vm: Option<&str>, now: Millis) -> std::io::Result<AbortRequest> {
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let req = AbortRequest {
            id: format!("{now:013}-{}-{n}", std::process::id()),
            vm: vm.map(str::to_string),
            requested_at: now,
        };
        let body = serde_json::to_vec(&req).map_err(std::io::Error::other)?;
        super::write_private(&self.path_of(&req.id), &body)?;
        Ok(req)
    }

    /// Files with extension `ext`, each with its request (`None`: not
    /// readable as one), oldest first.
    fn files(&self, ext: &str) -> Vec<(PathBuf, Option<AbortRequest>)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return vec![];
        };
        let mut out: Vec<(PathBuf, Option<AbortRequest>)> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == ext))
            .map(|p| {
                let req = std::fs::read(&p)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<AbortRequest>(&b).ok());
                (p, req)
            })
            .collect();
        out.sort_by(|a, b| {
            let key = |x: &(PathBuf, Option<AbortRequest>)| {
                (x.1.as_ref().map(|r| r.requested_at), x.0.clone())
            };
            key(a).cmp(&key(b))
        });
        out
    }

    /// The requests not taken yet, oldest first.
    pub fn pending(&self) -> Vec<AbortRequest> {
        self.files(PENDING)
            .into_iter()
            .filter_map(|(_, r)| r)
            .collect()
    }

    /// Takes every request made since `since` (the drain's start), oldest
    /// first, marking each taken for its requester; removes older ones
    /// (stale) and unreadable ones.
    pub fn take_since(&self, since: Millis) -> Vec<AbortRequest> {
        // A request whose file can be neither renamed nor removed would come
        // back each call: stop at the first repeat.
        let mut seen = std::collections::BTreeSet::new();
        std::iter::from_fn(|| self.take_next_since(since))
            .take_while(|r| seen.insert(r.id.clone()))
            .collect()
    }

    /// [`take_since`](Self::take_since) one at a time: the oldest request
    /// made since `since`; later ones stay queued for the next call.
    pub fn take_next_since(&self, since: Millis) -> Option<AbortRequest> {
        for (path, req) in self.files(PENDING) {
            match req {
                Some(r) if r.requested_at >= since => {
                    match std::fs::rename(&path, self.file(&r.id, TAKEN)) {
                        Ok(()) => return Some(r),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            tracing::warn!("abort request {}: {e}", path.display());
                            let _ = std::fs::remove_file(&path);
                            return Some(r);
                        }
                    }
                }
                Some(r) => {
                    tracing::info!(
                        "ignoring a stale abort request from {}",
                        iso(r.requested_at)
                    );
                    let _ = std::fs::remove_file(&path);
                }
                None => {
                    tracing::warn!("removing an unreadable abort request {}", path.display());
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        None
    }

    /// At a run's start: removes requests made before `since` (and their
    /// uncollected taken marks, and an older charm's request file); keeps
    /// those made since (during this run's pre-flight) for the first tick.
    pub fn discard_before(&self, since: Millis) {
        let _ = std::fs::remove_file(&self.legacy);
        for ext in [PENDING, TAKEN] {
            for (path, req) in self.files(ext) {
                if req.is_none_or(|r| r.requested_at < since) {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }

    /// Where request `id` is.
    pub fn state(&self, id: &str) -> RequestState {
        if self.file(id, TAKEN).exists() {
            RequestState::Taken
        } else if self.path_of(id).exists() {
            RequestState::Pending
        } else {
            RequestState::Gone
        }
    }

    /// Removes request `id` (pending or taken): its requester is done.
    pub fn forget(&self, id: &str) {
        for ext in [PENDING, TAKEN] {
            let _ = std::fs::remove_file(self.file(id, ext));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn two_close_requests_both_arrive_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let q = AbortRequests::in_dir(dir.path());
        let t = 1_796_000_000_000;
        let a = q.submit(Some("focal-2"), t).unwrap();
        let b = q.submit(None, t).unwrap();
        assert_ne!(a.id, b.id);
        let mode = std::fs::metadata(q.path_of(&a.id))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(q.pending(), vec![a.clone(), b.clone()]);
        assert_eq!(q.state(&a.id), RequestState::Pending);
        assert_eq!(q.take_since(t), vec![a.clone(), b.clone()]);
        assert_eq!(q.state(&a.id), RequestState::Taken);
        assert_eq!(q.state(&b.id), RequestState::Taken);
        assert!(q.take_since(t).is_empty(), "taken once");
        q.forget(&a.id);
        assert_eq!(q.state(&a.id), RequestState::Gone);
    }

    #[test]
    fn one_at_a_time_keeps_the_rest_for_the_next_call() {
        let dir = tempfile::tempdir().unwrap();
        let q = AbortRequests::in_dir(dir.path());
        let a = q.submit(Some("a"), 2000).unwrap();
        let b = q.submit(Some("b"), 2001).unwrap();
        assert_eq!(q.take_next_since(1000), Some(a));
        assert_eq!(q.pending(), vec![b.clone()]);
        assert_eq!(q.take_next_since(1000), Some(b));
        assert_eq!(q.take_next_since(1000), None);
    }

    #[test]
    fn stale_requests_are_discarded_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let q = AbortRequests::in_dir(dir.path());
        let legacy = dir.path().join(LEGACY_ABORT_REQUEST);
        std::fs::write(&legacy, br#"{"vm":null,"requested_at":1}"#).unwrap();
        let old = q.submit(None, 999).unwrap();
        let old_taken = q.submit(Some("x"), 998).unwrap();
        assert_eq!(q.take_next_since(0), Some(old_taken.clone()));
        let fresh = q.submit(Some("focal-2"), 1000).unwrap();
        std::fs::write(q.dir().join("junk.json"), b"{").unwrap();
        q.discard_before(1000);
        assert!(!legacy.exists());
        assert_eq!(q.state(&old.id), RequestState::Gone);
        assert_eq!(q.state(&old_taken.id), RequestState::Gone);
        assert_eq!(q.pending(), vec![fresh.clone()]);
        // A stale one that arrives late is not taken either.
        let late_stale = q.submit(None, 10).unwrap();
        assert_eq!(q.take_since(1000), vec![fresh]);
        assert_eq!(q.state(&late_stale.id), RequestState::Gone);
        assert!(q.take_since(0).is_empty());
    }
}
