//! OpenStack client (Keystone v3, Nova, Placement, Masakari, Neutron ports, Glance image properties). The only module that speaks HTTP.
//!
//! [`OpenStack::connect`] authenticates ([`Session`]), negotiates the compute
//! microversion (`min(server max, 2.104)`, refusing below 2.60) and hands out
//! [`Compute`] and [`Placement`] clients sharing the session. Every request
//! goes through one path that adds `X-Auth-Token` and `OpenStack-API-Version`,
//! logs method/path/status/duration/request id at `debug` (never headers or
//! bodies), counts requests ([`RequestStats`]) and retries per [`RetryPolicy`]:
//! GETs on connect errors, timeouts, 429/502/503/504 (jittered exponential
//! backoff, `Retry-After` honoured); POST/PUT/DELETE only after a connect
//! error, or once after a 401 re-authentication. Tokens are renewed before
//! they expire ([`SessionOptions::renew_before`], [`Session::ensure_fresh`]).
//! Redirects are never followed (a 3xx is an [`Error::Http`] naming the
//! Location's host): the password goes only to the auth URL and the token only
//! to the catalog's endpoints (invariant I3).
//!
//! ```no_run
//! # async fn demo(bag: std::collections::BTreeMap<String, String>) -> nlm::openstack::Result<()> {
//! use nlm::openstack::{AuthConfig, Interface, LiveMigrate, OpenStack};
//! let config = AuthConfig::from_relation(&bag, Interface::Internal, None, None)?;
//! let os = OpenStack::connect(config).await?;
//! let nova = os.compute();
//! let service = nova.compute_service("node1.maas").await?.expect("service");
//! nova.disable_service(&service, "nova-live-migration/0 evacuate").await?;
//! for server in nova.servers_on_host("node1.maas").await? {
//!     os.session().ensure_fresh(0.5).await?;
//!     nova.live_migrate(&server.id, &LiveMigrate::default()).await?;
//! }
//! println!("{} API calls", os.request_stats().total);
//! # Ok(()) }
//! ```
//!
//! Calls and the microversions they rely on (`N` = negotiated, ≥ 2.60):
//!
//! | call | request | microversion |
//! |---|---|---|
//! | authenticate | `POST {auth_url}/auth/tokens` (password, project scope) | Keystone v3 |
//! | [`Compute::root_versions`] | `GET {compute}/` → `version` or `versions[]` | none |
//! | [`Compute::servers_on_host`] | `GET /servers/detail?all_tenants=1&host=&limit=&marker=` | N (flavor embedded ≥ 2.47) |
//! | [`Compute::server`] | `GET /servers/{id}` | N (`server_groups` ≥ 2.71) |
//! | [`Compute::flavor`], [`Compute::flavors`] | `GET /flavors/{id}`, `GET /flavors?is_public=None` | N |
//! | [`Compute::services`] | `GET /os-services?binary=&host=` | N (uuid ids ≥ 2.53) |
//! | [`Compute::disable_service`] / [`Compute::enable_service`] | `PUT /os-services/{uuid}` ≥ 2.53; `PUT /os-services/disable-log-reason` / `enable` below | N |
//! | [`Compute::live_migrate`] | `POST /servers/{id}/action {"os-migrateLive": {host, block_migration}}` | `"auto"` ≥ 2.25; `force` only 2.30–2.67 |
//! | [`Compute::cold_migrate`] | `POST /servers/{id}/action {"migrate": null \| {host}}` | `host` ≥ 2.56 |
//! | [`Compute::confirm_resize`] | `POST /servers/{id}/action {"confirmResize": null}` | N |
//! | [`Compute::migrations`] | `GET /os-migrations?instance_uuid=&source_compute=&host=&status=&migration_type=&limit=&marker=<uuid>` | paging ≥ 2.59 |
//! | [`Compute::server_migrations`] / [`Compute::server_migration`] | `GET /servers/{id}/migrations[/{mid}]` | ≥ 2.23 (in-progress only) |
//! | [`Compute::force_complete`] | `POST /servers/{id}/migrations/{mid}/action {"force_complete": null}` | ≥ 2.22 |
//! | [`Compute::abort_migration`] | `DELETE /servers/{id}/migrations/{mid}` | running ≥ 2.24; queued/preparing ≥ 2.65 ([`Compute::can_abort_queued`]) |
//! | [`Compute::server_groups`] | `GET /os-server-groups?all_projects=True&limit=&offset=` (until an empty page) | `policy`/`rules` ≥ 2.64 |
//! | [`Compute::instance_actions`] / [`Compute::instance_action`] | `GET /servers/{id}/os-instance-actions[/{req}]` | event `details` ≥ 2.84 |
//! | [`Compute::hypervisors`] | `GET /os-hypervisors[?hypervisor_hostname_pattern=]` | uuid ids ≥ 2.53 |
//! | [`Compute::hypervisors_detail`] | `GET /os-hypervisors/detail?with_servers=false&limit=&marker=` (service hosts) | ≥ 2.53 |
//! | [`Compute::host_summary`] | `GET /os-hypervisors/detail?hypervisor_hostname_pattern=&with_servers=true` (update-status: service state and instance count in one call) | ≥ 2.53 |
//! | [`Compute::aggregates`] | `GET /os-aggregates` | N |
//! | [`Compute::server_shares`] | `GET /servers/{id}/shares` (Manila share attachments) | ≥ 2.97 ([`Compute::can_list_shares`]) |
//! | [`Network::ports_of`] | `GET /v2.0/ports?fields=id&fields=device_id&fields=binding:vnic_type&device_id=…` (40 ids a call) | Neutron v2.0 |
//! | [`Image::hw_properties`] | `GET {image}/v2/images/{id}` (its `hw_*` properties) | Glance v2 |
//! | [`Placement::resource_provider_by_name`] | `GET /resource_providers?name=` | placement 1.14 |
//! | [`Placement::inventories`] / [`Placement::usages`] / [`Placement::allocations`] | `GET /resource_providers/{uuid}/inventories\|usages\|allocations` | placement 1.14 |
//! | [`InstanceHa::segments`] / [`InstanceHa::hosts_named`] | `GET {instance-ha}/segments`, `GET /segments/{uuid}/hosts` | Masakari v1 |
//! | [`InstanceHa::set_on_maintenance`] | `PUT /segments/{uuid}/hosts/{uuid} {"host": {"on_maintenance": b}}` | Masakari v1 |

#[cfg(test)]
mod arbitrary;
mod compute;
mod error;
mod http;
mod image;
mod instance_ha;
mod keystone;
mod network;
mod placement;
mod saved;
mod secret;

use std::sync::Arc;

pub use compute::{
    Accepted, Aggregate, AttachedVolume, BlockMigration, Compute, Fault, Flavor, FlavorRef,
    HostSummary, Hypervisor, HypervisorServer, HypervisorService, InstanceAction,
    InstanceActionEvent, LiveMigrate, MAX_MICROVERSION, MIN_MICROVERSION, Microversion, Migration,
    MigrationFilter, PAGE_SIZE, SHARES_MICROVERSION, Server, ServerFlavor, ServerGroup,
    ServerGroupRules, ServerMigration, ServerShare, Service, ServiceId, VersionInfo,
};
pub use error::{Error, Result, TransportKind};
pub use http::{RequestStats, RetryPolicy, Session, SessionOptions, StatsSnapshot};
pub use image::Image;
pub use instance_ha::{HaHost, InstanceHa, Segment};
#[cfg(test)]
pub(crate) use keystone::TEST_CA_PEM;
pub use keystone::{
    AuthConfig, CatalogEntry, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, Endpoint, IdName,
    Interface, NameOrId, Token, check_ca_pem, decode_ca_bundle, parse_host, parse_port,
};
pub use network::{Network, PORTS_PER_CALL, Port};
pub use placement::{Inventory, PLACEMENT_MICROVERSION, Placement, ResourceProvider, Resources};
pub use saved::{SavedCompute, SavedSession, session_key};
pub use secret::Secret;

/// The façade: one session, a negotiated compute client, placement on demand.
#[derive(Debug, Clone)]
pub struct OpenStack {
    session: Arc<Session>,
    compute: Compute,
}

impl OpenStack {
    /// Authenticates, finds the compute endpoint and negotiates its microversion.
    pub async fn connect(config: AuthConfig) -> Result<OpenStack> {
        OpenStack::connect_with(config, SessionOptions::default()).await
    }

    /// [`OpenStack::connect`] with explicit retry/renewal options.
    pub async fn connect_with(config: AuthConfig, options: SessionOptions) -> Result<OpenStack> {
        let session = Arc::new(Session::connect(config, options).await?);
        let compute = Compute::connect(session.clone()).await?;
        Ok(OpenStack { session, compute })
    }

    /// Like [`OpenStack::connect`], reusing what an earlier process kept
    /// when it may be used: its token (no Keystone call) and, when the
    /// catalog still names the same compute endpoint, its negotiated
    /// microversion (no version discovery).
    pub async fn connect_saved(
        config: AuthConfig,
        saved: Option<&SavedSession>,
        now_ms: u64,
    ) -> Result<OpenStack> {
        let session = Arc::new(Session::new(config, SessionOptions::default())?);
        let adopted = match saved {
            Some(s) => session.adopt(s, now_ms).await,
            None => false,
        };
        if !adopted {
            session.token().await?;
        }
        let kept = saved.filter(|_| adopted).and_then(|s| s.compute.as_ref());
        let compute = match kept {
            Some(c) if session.endpoint("compute").await? == c.endpoint => {
                match Compute::restored(session.clone(), c) {
                    Some(compute) => compute,
                    None => Compute::connect(session.clone()).await?,
                }
            }
            _ => Compute::connect(session.clone()).await?,
        };
        Ok(OpenStack { session, compute })
    }

    /// What the next process may reuse ([`OpenStack::connect_saved`]).
    pub async fn saved(&self, now_ms: u64) -> Option<SavedSession> {
        let mut s = self.session.saved(now_ms).await?;
        s.compute = Some(self.compute.saved());
        Some(s)
    }

    /// The Nova client.
    pub fn compute(&self) -> &Compute {
        &self.compute
    }

    /// A Placement client (looks the endpoint up in the catalog).
    pub async fn placement(&self) -> Result<Placement> {
        Placement::connect(self.session.clone()).await
    }

    /// The Masakari client, `None` without Masakari in the catalog.
    pub async fn instance_ha(&self) -> Result<Option<InstanceHa>> {
        InstanceHa::connect(self.session.clone()).await
    }

    /// A Neutron client (looks the endpoint up in the catalog).
    pub async fn network(&self) -> Result<Network> {
        Network::connect(self.session.clone()).await
    }

    /// A Glance client (looks the endpoint up in the catalog).
    pub async fn image(&self) -> Result<Image> {
        Image::connect(self.session.clone()).await
    }

    /// The shared session.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Request counters of everything done through this session.
    pub fn request_stats(&self) -> StatsSnapshot {
        self.session.stats().snapshot()
    }
}
