//! Control actions: abort, force-complete, enable, status.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::charm::{Ready, Unit};
use crate::juju::ToolError;

/// Runs one control action.
pub async fn run(
    unit: &Unit<'_>,
    _ready: &Ready,
    name: &str,
    _params: &BTreeMap<String, Value>,
) -> Result<(), ToolError> {
    crate::actions::fail(
        unit,
        name,
        &format!("{name} is not available in this build of the charm"),
    )
}
