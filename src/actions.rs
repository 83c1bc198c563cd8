//! Action handlers. An action that cannot do what was asked calls
//! `action-fail` with a message that says what to do, sets `summary` and
//! `report`, and the process still exits 0.

use serde_json::json;

use crate::charm::Unit;
use crate::juju::{ActionResults, ToolError};

/// Every action `actions.yaml` declares.
pub const ACTIONS: [&str; 6] = [
    "evacuate",
    "migrate-vm",
    "abort",
    "force-complete",
    "enable",
    "status",
];

/// Fails the action with `message`, setting `summary` and a `report`.
pub fn fail(unit: &Unit, action: &str, message: &str) -> Result<(), ToolError> {
    let mut results = ActionResults::new();
    results.set("summary", message)?;
    let report = json!({"action": action, "error": message});
    results.set("report", report.to_string())?;
    unit.tools.action_set(&results)?;
    unit.tools.action_fail(message)
}

/// Runs one action.
pub fn run(unit: &Unit, name: &str) -> Result<(), ToolError> {
    if !ACTIONS.contains(&name) {
        return fail(
            unit,
            name,
            &format!(
                "unknown action {name:?}; this charm has {}",
                ACTIONS.join(", ")
            ),
        );
    }
    let _params = unit.tools.action_get()?;
    let ready = match unit.readiness()? {
        Ok(ready) => ready,
        Err(not_ready) => {
            return fail(
                unit,
                name,
                &format!("cannot run {name}: {}", not_ready.message()),
            );
        }
    };
    let _ = ready;
    fail(
        unit,
        name,
        &format!("{name} is not available in this build of the charm"),
    )
}
