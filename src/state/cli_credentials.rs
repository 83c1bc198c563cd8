//! `cli-credentials.json`: a root-only (0600) copy of the
//! identity-credentials bag and the config, kept by the hooks so the host
//! CLI can talk to Nova outside a hook. Never logged, never in a result.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::config::Config;
use crate::credentials::RelationData;
use crate::ready::Ready;

pub const CLI_CREDENTIALS: &str = "cli-credentials.json";

/// Keeps `cli-credentials.json` in step with the hooks' view: written (0600)
/// when the credentials are complete, removed otherwise.
pub fn sync_cli_credentials(
    state_dir: &Path,
    ready: Option<(&BTreeMap<String, Value>, &RelationData)>,
) {
    let path = state_dir.join(CLI_CREDENTIALS);
    match ready {
        Some((config, creds)) => {
            let body = json!({
                "relation_id": creds.relation_id,
                "unit": creds.unit,
                "data": creds.data,
                "config": config,
            })
            .to_string();
            let same = std::fs::read(&path).is_ok_and(|b| b == body.as_bytes());
            if !same && let Err(e) = super::write_private(&path, body.as_bytes()) {
                tracing::warn!("could not keep the host CLI's credentials file: {e}");
            }
        }
        None => remove_cli_credentials(state_dir),
    }
}

pub fn remove_cli_credentials(state_dir: &Path) {
    let path = state_dir.join(CLI_CREDENTIALS);
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::info!("removed the host CLI's credentials file"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("could not remove the host CLI's credentials file: {e}"),
    }
}

/// The credentials and config the hooks last saw, for the host CLI.
pub fn load_cli_credentials(state_dir: &Path) -> Result<Ready, String> {
    let path = state_dir.join(CLI_CREDENTIALS);
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "no credentials for the host CLI at {}: the charm writes them once the identity-credentials relation is complete",
            path.display()
        ),
        std::io::ErrorKind::PermissionDenied => {
            format!("cannot read {}: run as root", path.display())
        }
        _ => format!("cannot read {}: {e}", path.display()),
    })?;
    let v: Value =
        serde_json::from_str(&text).map_err(|_| format!("{} is not valid JSON", path.display()))?;
    let data: BTreeMap<String, String> = v
        .get("data")
        .and_then(|d| serde_json::from_value(d.clone()).ok())
        .ok_or_else(|| format!("{} has no credentials", path.display()))?;
    let config: BTreeMap<String, Value> = v
        .get("config")
        .and_then(|d| serde_json::from_value(d.clone()).ok())
        .unwrap_or_default();
    let config = Config::from_values(&config)
        .map_err(|e| format!("{e} (fix with juju config nova-live-migration)"))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Ok(Ready {
        config,
        credentials: RelationData {
            relation_id: s("relation_id"),
            unit: s("unit"),
            data,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_file_is_private_and_follows_the_relation() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut data = BTreeMap::new();
        for (k, v) in [
            ("auth_host", "127.0.0.1"),
            ("auth_port", "5000"),
            ("auth_protocol", "http"),
            ("credentials_username", "nova_live_migration"),
            ("credentials_password", "pw-123"),
        ] {
            data.insert(k.to_string(), v.to_string());
        }
        let creds = RelationData {
            relation_id: "identity-credentials:5".into(),
            unit: "keystone/0".into(),
            data,
        };
        let config: BTreeMap<String, Value> = [("nova-host".to_string(), json!("node1.maas"))]
            .into_iter()
            .collect();
        sync_cli_credentials(dir.path(), Some((&config, &creds)));
        let file = dir.path().join(CLI_CREDENTIALS);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let ready = load_cli_credentials(dir.path()).unwrap();
        assert_eq!(ready.credentials.unit, "keystone/0");
        assert_eq!(ready.config.nova_host.as_deref(), Some("node1.maas"));
        // Debug of what the CLI holds never shows the password.
        assert!(!format!("{:?}", ready.credentials).contains("pw-123"));
        sync_cli_credentials(dir.path(), None);
        assert!(!file.exists());
        let e = load_cli_credentials(dir.path()).err().unwrap();
        assert!(e.contains("no credentials for the host CLI"), "{e}");
    }
}
