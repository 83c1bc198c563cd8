//! The Juju layer: the dispatch context, hook tools, action results and
//! logging. No other module runs hook tools.

pub mod context;
pub mod error;
pub mod log;
pub mod results;
pub mod tools;

pub use context::{Context, ContextError, Event, RelationContext};
pub use results::ActionResults;
pub use tools::{HookTools, LogLevel, Runner, Status, ToolError};
