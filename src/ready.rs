//! Config and credentials, when both are usable, and what they make: the
//! client configuration, the OpenStack connection, this node's nova host.
//! Used by the actions, the hooks and the host CLI.

use crate::config::Config;
use crate::credentials;
use crate::paths::Paths;

/// Config and credentials, when both are usable.
pub struct Ready {
    pub config: Config,
    pub credentials: credentials::RelationData,
}

impl Ready {
    /// The catalog interface from config.
    pub fn interface(&self) -> crate::openstack::Interface {
        use crate::openstack::Interface;
        match self.config.endpoint_interface {
            crate::config::EndpointInterface::Internal => Interface::Internal,
            crate::config::EndpointInterface::Public => Interface::Public,
            crate::config::EndpointInterface::Admin => Interface::Admin,
        }
    }

    /// The client configuration: the relation's credentials, the
    /// interface/region/ssl-ca config and the timeout override (one place
    /// for every caller: actions, the CLI and `update-status`).
    pub fn auth_config(&self) -> Result<crate::openstack::AuthConfig, String> {
        let auth = crate::openstack::AuthConfig::from_relation(
            &self.credentials.data,
            self.interface(),
            self.config.region.as_deref(),
            self.config.ssl_ca_pem.clone(),
        )
        .map_err(|e| format!("identity-credentials relation data: {e}"))?;
        Ok(with_timeout_override(
            auth,
            std::env::var(API_TIMEOUT_ENV).ok().as_deref(),
        ))
    }

    /// Authenticates to Keystone and negotiates the compute API.
    pub async fn connect(&self) -> Result<crate::openstack::OpenStack, String> {
        use crate::openstack::OpenStack;
        let auth = self.auth_config()?;
        let url = auth.auth_url.clone();
        OpenStack::connect(auth).await.map_err(|e| {
            let hint = if e.is_tls_certificate() {
                "the TLS certificate is not trusted: set the ssl-ca config option to the base64-encoded PEM of the CA that signed it"
            } else if e.is_auth() {
                "check the identity-credentials relation with keystone"
            } else if e.is_retryable() || e.is_ambiguous() {
                "check that Keystone and Nova are reachable from this machine"
            } else {
                "check the keystone relation and the endpoint-interface/region/ssl-ca config"
            };
            format!("cannot connect to OpenStack via {url}: {e} ({hint})")
        })
    }

    /// This node's nova service host and where it came from.
    pub fn nova_host(&self, paths: &Paths) -> Result<(String, crate::host::HostSource), String> {
        let conf = crate::host::read_nova_conf(&paths.nova_conf)
            .map_err(|e| format!("cannot read {}: {e}", paths.nova_conf.display()))?;
        crate::host::resolve_nova_host(self.config.nova_host.as_deref(), &conf).ok_or_else(|| {
            "cannot tell this node's nova host: set the nova-host config option".to_string()
        })
    }
}

/// Environment variable that shortens the per-request HTTP timeout (whole
/// seconds, 1–600). Juju never sets it; the fault-injection tests use it so
/// that a response delayed past the client's timeout costs seconds, not the
/// default minute.
pub const API_TIMEOUT_ENV: &str = "NLM_API_TIMEOUT";

fn with_timeout_override(
    mut auth: crate::openstack::AuthConfig,
    value: Option<&str>,
) -> crate::openstack::AuthConfig {
    if let Some(secs) = value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| (1..=600).contains(s))
    {
        auth.request_timeout = std::time::Duration::from_secs(secs);
        auth.connect_timeout = auth.connect_timeout.min(auth.request_timeout);
    }
    auth
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openstack::{AuthConfig, NameOrId, Secret};
    use std::time::Duration;

    #[test]
    fn api_timeout_override_is_bounded() {
        let base = || {
            AuthConfig::new(
                "http://127.0.0.1:5000/v3",
                "u",
                Secret::new("p".to_string()),
                NameOrId::Name("d".into()),
                NameOrId::Name("p".into()),
                NameOrId::Name("d".into()),
            )
        };
        let t = |v: Option<&str>| with_timeout_override(base(), v).request_timeout;
        let default = base().request_timeout;
        assert_eq!(t(None), default);
        assert_eq!(t(Some("5")), Duration::from_secs(5));
        assert_eq!(
            with_timeout_override(base(), Some("5")).connect_timeout,
            Duration::from_secs(5)
        );
        for bad in ["0", "-3", "601", "x", ""] {
            assert_eq!(t(Some(bad)), default, "{bad}");
        }
    }
}
