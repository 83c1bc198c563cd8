//! The hook tools' error, shared by `tools` (running them) and `results`
//! (checking action-result keys before `action-set` runs).

/// A hook tool failed or printed something we could not read.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("could not run {tool}: {source}")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} exited with {code}: {stderr}")]
    Failed {
        tool: String,
        code: i32,
        stderr: String,
    },
    #[error("{tool} printed output that is not the JSON expected: {detail}")]
    Parse { tool: String, detail: String },
    #[error("invalid action result key {key:?}: {why}")]
    BadKey { key: String, why: String },
}

impl ToolError {
    /// The tool ran and exited 0 but printed something unreadable: running
    /// it again would print the same, so the caller should report it rather
    /// than fail the hook for Juju to retry.
    pub fn is_unreadable_output(&self) -> bool {
        matches!(self, ToolError::Parse { .. })
    }
}
