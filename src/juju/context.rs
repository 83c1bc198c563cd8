//! The unit agent's environment turned into one validated context.

use std::path::PathBuf;

/// What Juju asked the binary to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `hooks/<name>`: install, config-changed, `<endpoint>`-relation-joined ...
    Hook(String),
    /// `actions/<name>`: evacuate, migrate-vm, ...
    Action(String),
}

/// The relation a relation hook is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationContext {
    /// Endpoint name, e.g. `identity-credentials`.
    pub endpoint: String,
    /// Relation id as Juju prints it, e.g. `identity-credentials:5`.
    pub id: String,
    pub remote_unit: Option<String>,
    pub remote_app: Option<String>,
}

/// Everything the charm needs from the `JUJU_*` environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub event: Event,
    /// This (subordinate) unit, e.g. `nova-live-migration/0`.
    pub unit: String,
    /// The principal unit this subordinate sits beside, e.g. `nova-compute/3`.
    pub principal_unit: Option<String>,
    pub charm_dir: PathBuf,
    pub model_name: Option<String>,
    pub relation: Option<RelationContext>,
    /// The numeric task id of an action (`JUJU_ACTION_UUID`).
    pub action_id: Option<String>,
}

/// Why the environment is not a usable Juju context.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContextError {
    #[error("not running under Juju: JUJU_DISPATCH_PATH is not set")]
    NotJuju,
    #[error("{0} is not set; the unit agent always sets it")]
    Missing(&'static str),
    #[error("JUJU_DISPATCH_PATH={0:?} is neither hooks/<name> nor actions/<name>")]
    BadDispatchPath(String),
}

impl Context {
    /// Builds the context from an environment lookup (the process environment
    /// in production, a map in tests).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Context, ContextError> {
        let non_empty = |k: &str| get(k).filter(|v| !v.is_empty());
        let dispatch = non_empty("JUJU_DISPATCH_PATH").ok_or(ContextError::NotJuju)?;
        let event = match dispatch.split_once('/') {
            Some(("hooks", name)) if valid_name(name) => Event::Hook(name.to_string()),
            Some(("actions", name)) if valid_name(name) => Event::Action(name.to_string()),
            _ => return Err(ContextError::BadDispatchPath(dispatch)),
        };
        let unit = non_empty("JUJU_UNIT_NAME").ok_or(ContextError::Missing("JUJU_UNIT_NAME"))?;
        let charm_dir = non_empty("JUJU_CHARM_DIR")
            .or_else(|| non_empty("CHARM_DIR"))
            .ok_or(ContextError::Missing("JUJU_CHARM_DIR"))?;
        if matches!(event, Event::Action(_)) && non_empty("JUJU_ACTION_NAME").is_none() {
            return Err(ContextError::Missing("JUJU_ACTION_NAME"));
        }
        let relation = match (non_empty("JUJU_RELATION"), non_empty("JUJU_RELATION_ID")) {
            (Some(endpoint), Some(id)) => Some(RelationContext {
                endpoint,
                id,
                remote_unit: non_empty("JUJU_REMOTE_UNIT"),
                remote_app: non_empty("JUJU_REMOTE_APP"),
            }),
            _ => None,
        };
        Ok(Context {
            event,
            unit,
            principal_unit: non_empty("JUJU_PRINCIPAL_UNIT"),
            charm_dir: PathBuf::from(charm_dir),
            model_name: non_empty("JUJU_MODEL_NAME"),
            relation,
            action_id: non_empty("JUJU_ACTION_UUID"),
        })
    }

    /// The principal unit's name, or a placeholder when Juju did not say.
    pub fn principal(&self) -> &str {
        self.principal_unit.as_deref().unwrap_or("principal unit")
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn hook_with_relation() {
        let ctx = Context::from_env(env(&[
            (
                "JUJU_DISPATCH_PATH",
                "hooks/identity-credentials-relation-changed",
            ),
            ("JUJU_UNIT_NAME", "nova-live-migration/1"),
            ("JUJU_CHARM_DIR", "/var/lib/juju/agents/unit-x-1/charm"),
            ("JUJU_PRINCIPAL_UNIT", "nova-compute/3"),
            ("JUJU_RELATION", "identity-credentials"),
            ("JUJU_RELATION_ID", "identity-credentials:7"),
            ("JUJU_REMOTE_UNIT", "keystone/0"),
            ("JUJU_REMOTE_APP", "keystone"),
        ]))
        .unwrap();
        assert_eq!(
            ctx.event,
            Event::Hook("identity-credentials-relation-changed".into())
        );
        assert_eq!(ctx.principal(), "nova-compute/3");
        let rel = ctx.relation.unwrap();
        assert_eq!(rel.id, "identity-credentials:7");
        assert_eq!(rel.remote_unit.as_deref(), Some("keystone/0"));
    }

    #[test]
    fn action_needs_action_name() {
        let base = [
            ("JUJU_DISPATCH_PATH", "actions/evacuate"),
            ("JUJU_UNIT_NAME", "nova-live-migration/0"),
            ("JUJU_CHARM_DIR", "/c"),
        ];
        assert_eq!(
            Context::from_env(env(&base)),
            Err(ContextError::Missing("JUJU_ACTION_NAME"))
        );
        let mut with = base.to_vec();
        with.push(("JUJU_ACTION_NAME", "evacuate"));
        with.push(("JUJU_ACTION_UUID", "42"));
        let ctx = Context::from_env(env(&with)).unwrap();
        assert_eq!(ctx.event, Event::Action("evacuate".into()));
        assert_eq!(ctx.action_id.as_deref(), Some("42"));
    }

    #[test]
    fn errors() {
        assert_eq!(Context::from_env(env(&[])), Err(ContextError::NotJuju));
        assert_eq!(
            Context::from_env(env(&[("JUJU_DISPATCH_PATH", "bin/x")])),
            Err(ContextError::BadDispatchPath("bin/x".into()))
        );
        assert_eq!(
            Context::from_env(env(&[("JUJU_DISPATCH_PATH", "hooks/install")])),
            Err(ContextError::Missing("JUJU_UNIT_NAME"))
        );
        assert_eq!(
            Context::from_env(env(&[
                ("JUJU_DISPATCH_PATH", "hooks/install"),
                ("JUJU_UNIT_NAME", "a/0")
            ])),
            Err(ContextError::Missing("JUJU_CHARM_DIR"))
        );
    }
}
