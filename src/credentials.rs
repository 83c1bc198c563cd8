//! Keystone credentials from the `identity-credentials` relation
//! (interface `keystone-credentials`): only the keystone leader's unit bag
//! carries them, so the unit whose data is complete is the one to use.

use std::collections::BTreeMap;

use crate::juju::{HookTools, ToolError};
use crate::text::quoted;

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

/// Keys read besides [`REQUIRED`] (when present).
pub const OPTIONAL: [&str; 6] = [
    "domain",
    "region",
    "credentials_user_domain_name",
    "credentials_user_domain_id",
    "credentials_project_domain_name",
    "credentials_project_domain_id",
];

/// Longest value accepted for a key this charm reads (Keystone's own
/// `max_password_length` defaults to 4096; names and ids are far shorter).
pub const MAX_VALUE_BYTES: usize = 4096;

/// What to do about data keystone should not have published.
const FIX_KEYSTONE: &str = "fix what keystone publishes (juju config keystone); this unit reads it again on the next identity-credentials-relation-changed";

/// Checks a complete bag's values before anything uses them; the reason
/// names the unit and the key, and quotes no secret.
pub fn validate(unit: &str, data: &BTreeMap<String, String>) -> Result<(), String> {
    for key in REQUIRED.iter().chain(OPTIONAL.iter()) {
        if let Some(v) = data.get(*key)
            && v.len() > MAX_VALUE_BYTES
        {
            return Err(format!(
                "{unit} publishes {key} of {} bytes, more than the {MAX_VALUE_BYTES} this charm accepts; {FIX_KEYSTONE}",
                v.len()
            ));
        }
    }
    let get = |k: &str| data.get(k).map(|v| v.trim()).unwrap_or_default();
    if get("api_version") != "3" {
        return Err(format!(
            "keystone publishes api_version {}; this charm needs the Keystone v3 API (keystone config preferred-api-version=3)",
            quoted(get("api_version"), 64)
        ));
    }
    let proto = get("auth_protocol");
    if proto != "http" && proto != "https" {
        return Err(format!(
            "{unit} publishes auth_protocol {}: only http and https are supported; {FIX_KEYSTONE}",
            quoted(proto, 64)
        ));
    }
    let port = get("auth_port");
    if crate::openstack::parse_port(port).is_none() {
        return Err(format!(
            "{unit} publishes auth_port {}, not a port number (1 to 65535); {FIX_KEYSTONE}",
            quoted(port, 64)
        ));
    }
    let host = get("auth_host");
    if crate::openstack::parse_host(host).is_none() {
        return Err(format!(
            "{unit} publishes auth_host {}, not a host name or IP address (a DNS name, an IPv4 address or an IPv6 address, bracketed or not, and no port); {FIX_KEYSTONE}",
            quoted(host, 64)
        ));
    }
    Ok(())
}

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
    let mut unreadable: Option<String> = None;
    for unit in units {
        let data = match tools.relation_get(&relation_id, &unit) {
            Ok(data) => data,
            // Reading again would print the same: report it (blocked)
            // rather than fail the hook for Juju to retry; another unit's
            // complete data is still usable.
            Err(e) if e.is_unreadable_output() => {
                unreadable.get_or_insert(format!("cannot read {unit}'s data: {e}; {FIX_KEYSTONE}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        let missing = missing_keys(&data);
        if missing.is_empty() {
            if let Err(reason) = validate(&unit, &data) {
                return Ok(CredentialsState::Unusable {
                    relation_id,
                    reason,
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
    if let Some(reason) = unreadable {
        return Ok(CredentialsState::Unusable {
            relation_id,
            reason,
        });
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
                ("auth_port".to_string(), "5000".to_string()),
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
    fn validate_names_the_unit_and_key_and_never_the_password() {
        let ok = |d: &BTreeMap<String, String>| validate("keystone/0", d);
        let mut d = complete();
        d.insert("auth_host".into(), "10.0.0.5".into());
        assert_eq!(ok(&d), Ok(()));
        for host in ["keystone.maas", "fd00::5", "[fd00::5]", "k_1"] {
            d.insert("auth_host".into(), host.into());
            assert_eq!(ok(&d), Ok(()), "{host}");
        }
        let bad = |k: &str, v: String, needle: &str| {
            let mut d = complete();
            d.insert(k.into(), v.clone());
            let e = ok(&d).unwrap_err();
            assert!(
                e.contains(needle),
                "{k}={}: {e}",
                crate::text::shown(&v, 20)
            );
            assert!(
                e.contains("juju config keystone") || k == "api_version",
                "{e}"
            );
            assert!(e.len() < 600, "{} bytes", e.len());
            e
        };
        for proto in ["ftp", "ldap", "HTTP", ""] {
            bad("auth_protocol", proto.into(), "publishes auth_protocol");
        }
        for port in ["fivethousand", "0", "65536", "-1", "5000/v3", "1e3"] {
            bad(
                "auth_port",
                port.into(),
                &format!(
                    "keystone/0 publishes auth_port \"{port}\", not a port number (1 to 65535)"
                ),
            );
        }
        for host in [
            "keystone/v3",
            "a b",
            "-x",
            "h?q=1",
            "10.0.0.5:5000",
            "keystone.maas:5000",
            "[fd00::5",
            "fd00::5]",
            "[fd00::5]:5000",
            "[10.0.0.5]",
            "[]",
            "10.0.0.256",
            "1.2.3",
            "a..b",
            ".",
            "x-.maas",
            "fe80::1%eth0",
            "user@keystone",
        ] {
            bad(
                "auth_host",
                host.into(),
                "not a host name or IP address (a DNS name, an IPv4 address or an IPv6 address, bracketed or not, and no port)",
            );
        }
        for host in [
            "keystone",
            "keystone.maas.",
            "::1",
            "[::ffff:10.0.0.5]",
            "10.0.0.5",
            "K-1.example",
        ] {
            d.insert("auth_host".into(), host.into());
            assert_eq!(ok(&d), Ok(()), "{host}");
        }
        let big = "p".repeat(1 << 20);
        let e = bad(
            "credentials_password",
            big.clone(),
            "keystone/0 publishes credentials_password of 1048576 bytes, more than the 4096",
        );
        assert!(!e.contains("ppp"), "{e}");
        bad("auth_host", big, "auth_host of 1048576 bytes");
        bad("api_version", "2".into(), "Keystone v3");
    }

    #[test]
    fn a_unit_whose_data_is_not_utf8_is_unusable_unless_another_is_complete() {
        let rec = Recorder::default();
        let tools = HookTools::new(Box::new(rec.clone()));
        rec.answers.lock().unwrap().insert(
            "relation-ids".into(),
            Ok(r#"["identity-credentials:3"]"#.into()),
        );
        rec.answers
            .lock()
            .unwrap()
            .insert("relation-list".into(), Ok(r#"["keystone/0"]"#.into()));
        let mut raw = br#"{"credentials_password": "s3cr"#.to_vec();
        raw.extend_from_slice(b"\xfe\xffet\"}");
        rec.raw.lock().unwrap().insert("relation-get".into(), raw);
        match read(&tools).unwrap() {
            CredentialsState::Unusable { reason, .. } => {
                assert!(
                    reason.starts_with("cannot read keystone/0's data: relation-get printed output that is not the JSON expected: not valid UTF-8 (byte 0xfe at offset 30, in the value of \"credentials_password\")"),
                    "{reason}"
                );
                assert!(!reason.contains("s3cr"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // A tool that fails (exit 1) is still an error: Juju retries the hook.
        rec.raw.lock().unwrap().clear();
        rec.answers
            .lock()
            .unwrap()
            .insert("relation-get".into(), Err("ERROR agent gone".into()));
        assert!(read(&tools).is_err());
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
