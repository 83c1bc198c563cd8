//! The state directory's contract: the one definition of the files that
//! three processes share — the drain action (`evacuate`/`migrate-vm`), the
//! control actions and hooks, and the host CLI.
//!
//! The directory is `/var/lib/nova-live-migration` (`NLM_STATE_DIR`); every
//! file in it is written 0600 (root only) but `operator-hint.json` (0644).
//! Only `cli-credentials.json` and `keystone-token.json` hold a secret, and
//! nothing read from them is ever logged.
//!
//! | file | writer | readers | format |
//! |---|---|---|---|
//! | `run.lock` | drain action (held for its whole run), control `abort` while it ends an interrupted run | everyone ([`drain_running`]) | empty; an exclusive `flock`, dropped by the kernel when the holder dies |
//! | `abort-requests/<id>.json` | `abort` action and CLI while a drain runs | the running drain, each tick | `{"id": "<id>", "vm": null \| "<name or UUID>", "requested_at": <ms since the epoch>}` |
//! | `abort-requests/<id>.taken` | the running drain, when it takes `<id>` | the requester (then removes it) | the request as above |
//! | `cli-credentials.json` | hooks (`update-status`, relation and config hooks) | host CLI | `{"relation_id", "unit", "data": {<identity-credentials bag>}, "config": {<config-get>}}` |
//! | `keystone-token.json` | hooks (`update-status` and the others that set the status) | the next hook | `openstack::SavedSession`: `{"key": "fnv1a64:<hash of auth URL, user, project>", "token", "lifetime_s", "obtained_at_ms", "issued_at", "expires_at", "user", "project", "roles", "catalog", "compute": {"endpoint", "microversion", "server_max"}}`; a secret (the token, never the password): reused in the first half of its life for the same key, discarded when Keystone refuses it or the relation goes ([`token_cache`]) |
//! | `journal.json` | drain action; `abort` ending an interrupted run | status, update-status, CLI, resume | `{"version": N, "state": <RunRecord>}` ([`journal`]) |
//! | `operator-hint.json` | every hook ([`operator_hint`], 0644: the one file anyone may read) | the host CLI run by a non-root user | `{"unit": "<this unit>", "principal": "<unit>", "machine": "<id>"}`; no secret |
//!
//! Semantics:
//!
//! - **Running or interrupted.** "journal in flight + lock free" means the
//!   run was *interrupted* (killed); "lock held" means *running*.
//! - **Abort requests are a queue**: one file per request, named by its id
//!   (`<ms, 13 digits>-<pid>-<n>`, so names sort by time), so two close
//!   requests both arrive. The drain takes every request made since its run
//!   began and renames each to `<id>.taken`, which is how the requester
//!   knows it was taken (and not discarded); a request made before the run
//!   began is stale and removed unread. A request file from an older charm
//!   (`abort-request.json`) is removed as stale.
//! - **Writes are atomic and durable**: every writer writes a temp file of
//!   its own (`<name>.<pid>.<n>.tmp`, mode 0600, 0644 for the hint), fsyncs
//!   it, renames it over `<name>` and fsyncs the directory
//!   ([`write_private`]): a reader sees the old content or the new one,
//!   never a torn write, and two writers never share a temp file. A temp
//!   file left by a killed writer is removed by the next write of the same
//!   name.
//! - **The journal is versioned**: a journal of an earlier version is
//!   converted on load (see [`journal`]); one of a newer version than this
//!   binary reads is refused, saying so.

pub mod abort;
pub mod cli_credentials;
mod fs;
pub mod journal;
pub mod lock;
pub mod operator_hint;
pub mod run;
pub mod token_cache;

pub use abort::{AbortRequest, AbortRequests, RequestState};
pub use cli_credentials::{
    CLI_CREDENTIALS, load_cli_credentials, remove_cli_credentials, sync_cli_credentials,
};
pub use fs::write_private;
pub use journal::{Journal, JournalError};
pub use lock::{RUN_LOCK, RunLock, drain_running};
pub use run::{EvacuationSummary, Kind, LastRun, RunParams, RunRecord, last_run};
pub use token_cache::{TOKEN_CACHE, discard_token, load_token, store_token};
