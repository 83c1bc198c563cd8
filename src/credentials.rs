//! Keystone credentials from the `identity-credentials` relation
//! (interface `keystone-credentials`): only the keystone leader's unit bag
//! carries them, so the unit whose data is complete is the one to use.

use std::collections::BTreeMap;

use crate::juju::{HookTools, ToolError};

pub const ENDPOINT: &str = "identity-credentials";
/// The user name the charm asks keystone to create.
pub const USERNAME: &str = "nova_live_migration";

/// Keys that must be present and non-empty before the data is usable
/// (the reference IdentityCredentialsContext's base and auth keys, less
/// the Juju-populated private-address).
pub const REQUIRED: [&str; 11] = [
    "auth_host",
    "auth_port",
    "auth_protocol",
    "credentials_host",
    "credentials_port",
    "credentials_protocol",
    "api_version",
    "credentials_project",
    "credentials_project_id",
    "credentials_username",
    "credentials_password",
];

/// A complete data bag. Debug never prints the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RelationData {
    pub relation_id: String,
    pub unit: String,
    pub data: BTreeMap<String, String>,
}

impl std::fmt::Debug for RelationData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&String> = self.data.keys().collect();
        f.debug_struct("RelationData")
            .field("relation_id", &self.relation_id)
            .field("unit", &self.unit)
            .field("keys", &keys)
            .finish()
    }
}

/// Where the credentials stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsState {
    /// No identity-credentials relation at all.
    NoRelation,
    /// Related, but no keystone unit has published complete data yet.
    Incomplete {
        relation_id: String,
        missing: Vec<String>,
    },
    /// Keystone published data this charm cannot use (e.g. Keystone v2).
    Unusable {
        relation_id: String,
        reason: String,
    },
    Complete(RelationData),
}

/// Keys missing from one unit's bag.
pub fn missing_keys(data: &BTreeMap<String, String>) -> Vec<String> {
    REQUIRED
        .iter()
        .filter(|k| data.get(**k).is_none_or(|v| v.trim().is_empty()))
        .map(|k| k.to_string())
        .collect()
}

/// Reads the relation: relation-ids, relation-list, then relation-get for
/// each remote unit until one has complete data.
pub fn read(tools: &HookTools) -> Result<CredentialsState, ToolError> {
    let ids = tools.relation_ids(ENDPOINT)?;
    let Some(relation_id) = ids.into_iter().next() else {
        return Ok(CredentialsState::NoRelation);
    };
    let units = tools.relation_list(&relation_id)?;
    let mut fewest_missing: Option<Vec<String>> = None;
    for unit in units {
        let data = tools.relation_get(&relation_id, &unit)?;
        let missing = missing_keys(&data);
        if missing.is_empty() {
            if data.get("api_version").map(|s| s.trim()) != Some("3") {
                return Ok(CredentialsState::Unusable {
                    relation_id,
                    reason: format!(
                        "keystone publishes api_version {:?}; this charm needs the Keystone v3 API (keystone config preferred-api-version=3)",
                        data.get("api_version").cloned().unwrap_or_default()
                    ),
                });
            }
            let proto = data["auth_protocol"].trim().to_ascii_lowercase();
            if proto != "http" && proto != "https" {
                return Ok(CredentialsState::Unusable {
                    relation_id,
                    reason: format!(
                        "keystone publishes auth_protocol {:?}; only http and https are supported",
                        data["auth_protocol"]
                    ),
                });
            }
            return Ok(CredentialsState::Complete(RelationData {
                relation_id,
                unit,
                data,
            }));
        }
        if fewest_missing
            .as_ref()
            .is_none_or(|m| missing.len() < m.len())
        {
            fewest_missing = Some(missing);
        }
    }
    Ok(CredentialsState::Incomplete {
        relation_id,
        missing: fewest_missing.unwrap_or_else(|| REQUIRED.iter().map(|s| s.to_string()).collect()),
    })
}

/// Asks keystone for a user: sets `username` in our unit bag.
pub fn request(tools: &HookTools, relation_id: &str) -> Result<(), ToolError> {
    let mut data = BTreeMap::new();
    data.insert("username".to_string(), USERNAME.to_string());
    tools.relation_set(relation_id, &data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::juju::tools::testing::Recorder;

    fn complete() -> BTreeMap<String, String> {
        REQUIRED
            .iter()
            .map(|k| (k.to_string(), "x".to_string()))
            .chain([
                ("api_version".to_string(), "3".to_string()),
                ("auth_protocol".to_string(), "https".to_string()),
            ])
            .collect()
    }

    #[test]
    fn debug_hides_password() {
        let mut data = complete();
        data.insert("credentials_password".into(), "s3cr3t-pw".into());
        let d = RelationData {
            relation_id: "identity-credentials:1".into(),
            unit: "keystone/0".into(),
            data,
        };
        let shown = format!("{d:?}");
        assert!(!shown.contains("s3cr3t-pw"), "{shown}");
        assert!(shown.contains("credentials_password"));
    }

    #[test]
    fn picks_the_complete_unit() {
        let rec = Recorder::default();
        let tools = HookTools::new(Box::new(rec.clone()));
        // The recorder answers every relation-get with the same text, so a
        // complete answer makes the first unit complete.
        rec.answers.lock().unwrap().insert(
            "relation-ids".into(),
            Ok(r#"["identity-credentials:3"]"#.into()),
        );
        rec.answers.lock().unwrap().insert(
            "relation-list".into(),
            Ok(r#"["keystone/1","keystone/0"]"#.into()),
        );
        rec.answers.lock().unwrap().insert(
            "relation-get".into(),
            Ok(serde_json::to_string(&complete()).unwrap()),
        );
        match read(&tools).unwrap() {
            CredentialsState::Complete(d) => assert_eq!(d.unit, "keystone/1"),
            other => panic!("{other:?}"),
        }
        rec.answers.lock().unwrap().insert(
            "relation-get".into(),
            Ok(r#"{"private-address":"10.0.0.1"}"#.into()),
        );
        match read(&tools).unwrap() {
            CredentialsState::Incomplete { missing, .. } => {
                assert_eq!(missing.len(), REQUIRED.len())
            }
            other => panic!("{other:?}"),
        }
        rec.answers
            .lock()
            .unwrap()
            .insert("relation-ids".into(), Ok("[]".into()));
        assert_eq!(read(&tools).unwrap(), CredentialsState::NoRelation);
    }
}
