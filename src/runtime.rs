//! The one async runtime builder: every entry point (hooks, actions, the
//! host CLI) runs its async work on one current-thread runtime.

/// A current-thread tokio runtime with I/O and time enabled.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}
