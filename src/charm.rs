//! Hook handlers and the unit's workload status.

use std::path::Path;

use crate::config::{Config, ConfigError};
use crate::credentials::{self, CredentialsState};
use crate::juju::{Context, HookTools, Status, ToolError};
use crate::paths::Paths;

/// Everything a handler needs.
pub struct Unit<'a> {
    pub ctx: &'a Context,
    pub tools: &'a HookTools,
    pub paths: &'a Paths,
}

/// Why the charm cannot work yet, as the status and action failures say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    Config(ConfigError),
    NoRelation,
    Incomplete(Vec<String>),
    Unusable(String),
}

impl NotReady {
    pub fn status(&self) -> Status {
        match self {
            NotReady::Incomplete(_) => Status::Waiting,
            _ => Status::Blocked,
        }
    }

    /// The message for the status line and for action-fail: what is wrong and what to do.
    pub fn message(&self) -> String {
        match self {
            NotReady::Config(e) => format!("{e} (fix with juju config nova-live-migration)"),
            NotReady::NoRelation => "needs the identity-credentials relation to keystone: juju integrate nova-live-migration:identity-credentials keystone:identity-credentials".to_string(),
            NotReady::Incomplete(missing) => format!(
                "waiting for keystone to publish credentials on identity-credentials (missing {})",
                missing.join(", ")
            ),
            NotReady::Unusable(reason) => format!("identity-credentials: {reason}"),
        }
    }
}

/// Config and credentials, when both are usable.
pub struct Ready {
    pub config: Config,
    pub credentials: credentials::RelationData,
}

impl Unit<'_> {
    /// Reads and validates config, then the credentials.
    pub fn readiness(&self) -> Result<Result<Ready, NotReady>, ToolError> {
        let raw = self.tools.config_get()?;
        let config = match Config::from_values(&raw) {
            Ok(c) => c,
            Err(e) => return Ok(Err(NotReady::Config(e))),
        };
        Ok(match credentials::read(self.tools)? {
            CredentialsState::NoRelation => Err(NotReady::NoRelation),
            CredentialsState::Incomplete { missing, .. } => Err(NotReady::Incomplete(missing)),
            CredentialsState::Unusable { reason, .. } => Err(NotReady::Unusable(reason)),
            CredentialsState::Complete(credentials) => Ok(Ready {
                config,
                credentials,
            }),
        })
    }

    /// Sets the workload status from config, credentials and (when ready) the node's state.
    pub fn update_status(&self) -> Result<(), ToolError> {
        let (status, message) = match self.readiness()? {
            Err(not_ready) => (not_ready.status(), not_ready.message()),
            Ok(ready) => (Status::Active, self.active_message(&ready)),
        };
        self.tools.status_set(status, &message)
    }

    fn active_message(&self, ready: &Ready) -> String {
        let host = ready
            .config
            .nova_host
            .clone()
            .unwrap_or_else(|| "this node".to_string());
        format!(
            "{} on {}: ready (credentials from {})",
            self.ctx.principal(),
            host,
            ready.credentials.unit
        )
    }

    /// Runs one hook. Unknown hooks do nothing.
    pub fn hook(&self, name: &str) -> Result<(), ToolError> {
        match name {
            "install" | "upgrade-charm" => {
                self.link_cli();
                let _ = self
                    .tools
                    .application_version_set(env!("CARGO_PKG_VERSION"));
                self.update_status()
            }
            "config-changed" | "start" | "update-status" | "leader-elected" => self.update_status(),
            "stop" | "remove" => {
                self.unlink_cli();
                Ok(())
            }
            n if n.starts_with("identity-credentials-relation-") => {
                if n == "identity-credentials-relation-joined" {
                    let id = self
                        .ctx
                        .relation
                        .as_ref()
                        .map(|r| r.id.clone())
                        .or_else(|| {
                            self.tools
                                .relation_ids(credentials::ENDPOINT)
                                .ok()
                                .and_then(|ids| ids.into_iter().next())
                        });
                    if let Some(id) = id {
                        credentials::request(self.tools, &id)?;
                        tracing::info!(
                            relation = id.as_str(),
                            "asked keystone for user {}",
                            credentials::USERNAME
                        );
                    }
                }
                self.update_status()
            }
            n if n.starts_with("juju-info-relation-") => self.update_status(),
            other => {
                tracing::debug!("no handler for hook {other}");
                Ok(())
            }
        }
    }

    /// Links the host CLI to this charm's dispatch binary.
    fn link_cli(&self) {
        let target = self.ctx.charm_dir.join("dispatch");
        let link = &self.paths.cli_link;
        if let Err(e) = replace_symlink(&target, link) {
            tracing::warn!(
                "could not link the host CLI {} -> {}: {e}",
                link.display(),
                target.display()
            );
        } else {
            tracing::info!("host CLI at {}", link.display());
        }
    }

    /// Removes the host CLI link, if it is ours.
    fn unlink_cli(&self) {
        let link = &self.paths.cli_link;
        let ours = std::fs::read_link(link)
            .map(|t| t == self.ctx.charm_dir.join("dispatch"))
            .unwrap_or(false);
        if ours && let Err(e) = std::fs::remove_file(link) {
            tracing::warn!("could not remove {}: {e}", link.display());
        }
    }
}

fn replace_symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    if let Some(dir) = link.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link)
}

impl Ready {
    /// Authenticates to Keystone and negotiates the compute API.
    pub async fn connect(&self) -> Result<crate::openstack::OpenStack, String> {
        use crate::openstack::{AuthConfig, Interface, OpenStack};
        let interface = match self.config.endpoint_interface {
            crate::config::EndpointInterface::Internal => Interface::Internal,
            crate::config::EndpointInterface::Public => Interface::Public,
            crate::config::EndpointInterface::Admin => Interface::Admin,
        };
        let auth = AuthConfig::from_relation(
            &self.credentials.data,
            interface,
            self.config.region.as_deref(),
            self.config.ssl_ca_pem.clone(),
        )
        .map_err(|e| format!("identity-credentials relation data: {e}"))?;
        let url = auth.auth_url.clone();
        OpenStack::connect(auth).await.map_err(|e| {
            let hint = if e.is_auth() {
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
