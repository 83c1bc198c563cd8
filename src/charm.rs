//! Hook handlers and the unit's workload status.

use std::path::Path;

use crate::config::{Config, ConfigError};
use crate::credentials::{self, CredentialsState};
use crate::juju::{Context, HookTools, Status, ToolError};
use crate::paths::Paths;
pub use crate::ready::API_TIMEOUT_ENV;
use crate::ready::Ready;

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
    /// config-get printed something that cannot be read (e.g. not UTF-8).
    ConfigUnreadable(String),
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
            NotReady::ConfigUnreadable(e) => format!(
                "cannot read the charm config: {e}; set that option again to plain text with juju config nova-live-migration"
            ),
            NotReady::NoRelation => "needs the identity-credentials relation to keystone: juju integrate nova-live-migration:identity-credentials keystone:identity-credentials".to_string(),
            NotReady::Incomplete(missing) => format!(
                "waiting for keystone to publish credentials on identity-credentials (missing {})",
                missing.join(", ")
            ),
            NotReady::Unusable(reason) => format!("identity-credentials: {reason}"),
        }
    }
}

impl Unit<'_> {
    /// Reads and validates config, then the credentials.
    pub fn readiness(&self) -> Result<Result<Ready, NotReady>, ToolError> {
        let raw = match self.tools.config_get() {
            Ok(raw) => raw,
            // Asking again would print the same: say so rather than fail
            // the hook for Juju to retry.
            Err(e) if e.is_unreadable_output() => {
                return Ok(Err(NotReady::ConfigUnreadable(e.to_string())));
            }
            Err(e) => return Err(e),
        };
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

    /// Sets the workload status from config, credentials, the journal and
    /// (when ready and no evacuation is in flight) Nova; keeps the host CLI's
    /// copy of the credentials in step.
    pub fn update_status(&self) -> Result<(), ToolError> {
        let (status, message) = match self.readiness()? {
            Err(not_ready) => {
                if !matches!(
                    not_ready,
                    NotReady::Config(_) | NotReady::ConfigUnreadable(_)
                ) {
                    crate::state::sync_cli_credentials(&self.paths.state_dir, None);
                }
                (not_ready.status(), not_ready.message())
            }
            Ok(ready) => {
                let raw = self.tools.config_get()?;
                crate::state::sync_cli_credentials(
                    &self.paths.state_dir,
                    Some((&raw, &ready.credentials)),
                );
                self.ready_status(&ready)
            }
        };
        self.tools.status_set(status, &message)
    }

    /// `maintenance` with the journal's progress while an evacuation is in
    /// flight (no API call); else `active` with the service state and the
    /// instance count from Nova (bounded by [`STATUS_TIMEOUT`]).
    fn ready_status(&self, ready: &Ready) -> (Status, String) {
        let principal = self.ctx.principal();
        match crate::state::last_run(&self.paths.state_dir) {
            Ok(Some(run)) if run.record.in_flight() => {
                let r = &run.record;
                let msg = if run.running {
                    format!(
                        "{principal} on {}: {} running, {}",
                        r.host,
                        r.kind.as_str(),
                        r.progress()
                    )
                } else {
                    format!(
                        "{principal} on {}: {} interrupted at {}: run evacuate to resume or abort to end it",
                        r.host,
                        r.kind.as_str(),
                        r.progress()
                    )
                };
                return (Status::Maintenance, msg);
            }
            Ok(_) => {}
            Err(e) => return (Status::Blocked, format!("{principal}: {e}")),
        }
        let host = match ready.nova_host(self.paths) {
            Ok((h, _)) => h,
            Err(e) => {
                return (
                    Status::Active,
                    format!(
                        "{principal} on this node: ready (credentials from {}); {e}",
                        ready.credentials.unit
                    ),
                );
            }
        };
        let rt = match crate::runtime::runtime() {
            Ok(rt) => rt,
            Err(e) => return (Status::Active, format!("{principal} on {host}: {e}")),
        };
        let state_dir = &self.paths.state_dir;
        let answer = rt.block_on(async {
            tokio::time::timeout(STATUS_TIMEOUT, node_summary(ready, &host, state_dir)).await
        });
        match answer {
            Ok(Ok(line)) => (Status::Active, format!("{principal} on {host}: {line}")),
            Ok(Err(NodeError::Auth(e))) => (
                Status::Blocked,
                format!(
                    "{principal} on {host}: Keystone refused the credentials ({e}): check the identity-credentials relation"
                ),
            ),
            Ok(Err(NodeError::Tls(e))) => (
                Status::Blocked,
                format!(
                    "{principal} on {host}: TLS to OpenStack failed (credentials from {}): {e}",
                    ready.credentials.unit
                ),
            ),
            Ok(Err(NodeError::Other(e))) => (
                Status::Active,
                format!(
                    "{principal} on {host}: Nova not reachable (credentials from {}): {e}",
                    ready.credentials.unit
                ),
            ),
            Err(_) => (
                Status::Active,
                format!(
                    "{principal} on {host}: Nova not reachable (credentials from {}): no answer within {} s",
                    ready.credentials.unit,
                    STATUS_TIMEOUT.as_secs()
                ),
            ),
        }
    }

    /// Runs one hook. Unknown hooks do nothing.
    pub fn hook(&self, name: &str) -> Result<(), ToolError> {
        if name == "remove" {
            crate::state::operator_hint::remove(&self.paths.state_dir);
        } else {
            let machine = std::env::var("JUJU_MACHINE_ID").ok();
            crate::state::operator_hint::keep(
                &self.paths.state_dir,
                &crate::hint::from_context(self.ctx, machine),
            );
        }
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
                if name == "remove" {
                    crate::state::remove_cli_credentials(&self.paths.state_dir);
                    crate::state::discard_token(&self.paths.state_dir);
                }
                Ok(())
            }
            "identity-credentials-relation-broken" => {
                crate::state::remove_cli_credentials(&self.paths.state_dir);
                crate::state::discard_token(&self.paths.state_dir);
                self.update_status()
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

/// Longest time `update-status` waits for Keystone and Nova.
pub const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

enum NodeError {
    Auth(String),
    /// The server's certificate is not trusted: only `ssl-ca` fixes it.
    Tls(String),
    Other(String),
}

/// `enabled, 12 instances`. The Keystone token and the negotiated
/// microversion of the last hook are reused while they may be
/// (`keystone-token.json`), and the service state with the instance count
/// is one Nova call where the hypervisor is named after the service host
/// (else two: the service, the servers).
async fn node_summary(ready: &Ready, host: &str, state_dir: &Path) -> Result<String, NodeError> {
    use crate::openstack::OpenStack;
    let auth = ready.auth_config().map_err(NodeError::Other)?;
    let classify = |e: crate::openstack::Error| {
        if e.is_auth() {
            // Keystone refused it (or the token): nothing kept is any good.
            crate::state::discard_token(state_dir);
            NodeError::Auth(e.to_string())
        } else if e.is_tls_certificate() {
            NodeError::Tls(format!(
                "{e} (set the ssl-ca config option to the base64-encoded PEM of the CA that signed the certificate)"
            ))
        } else {
            NodeError::Other(e.to_string())
        }
    };
    let kept = crate::state::load_token(state_dir);
    let now = crate::time::now_ms();
    let os = OpenStack::connect_saved(auth, kept.as_ref(), now)
        .await
        .map_err(classify)?;
    let line = service_line(&os, host).await.map_err(classify);
    if line.is_ok()
        && let Some(saved) = os.saved(crate::time::now_ms()).await
    {
        crate::state::store_token(state_dir, &saved);
    }
    let stats = os.request_stats();
    tracing::debug!(
        "update-status: {} API calls ({} authentications, {} refused with 401): {}",
        stats.total,
        stats.authentications,
        stats.unauthorized,
        stats
            .by_route
            .iter()
            .map(|(r, n)| format!("{r} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    line
}

/// The service state and instance count of `host`.
async fn service_line(
    os: &crate::openstack::OpenStack,
    host: &str,
) -> Result<String, crate::openstack::Error> {
    let compute = os.compute();
    let (status, state, reason, n) = match compute.host_summary(host).await? {
        Some(h) => (h.status, h.state, h.disabled_reason, h.instances),
        None => {
            let Some(service) = compute.compute_service(host).await? else {
                return Ok(
                    "no nova-compute service for this host in Nova: check the nova-host config option"
                        .into(),
                );
            };
            let n = compute.servers_on_host(host).await?.len();
            (service.status, service.state, service.disabled_reason, n)
        }
    };
    let mut line = status;
    if let Some(reason) = reason.as_deref().filter(|r| !r.is_empty()) {
        line.push_str(&format!(" ({})", crate::text::ellipsis(reason, 80)));
    }
    if state != "up" {
        line.push_str(&format!(", service {state}"));
    }
    Ok(format!(
        "{line}, {n} instance{}",
        if n == 1 { "" } else { "s" }
    ))
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
