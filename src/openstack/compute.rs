//! Nova (compute) API client: microversion negotiation and the calls a drain needs.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{Error, Result};
use super::http::{Answer, Call, Session, seg};

/// A compute API microversion `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Microversion {
    /// Major (2).
    pub major: u16,
    /// Minor.
    pub minor: u16,
}

impl Microversion {
    /// `2.minor`.
    pub const fn v2(minor: u16) -> Self {
        Microversion { major: 2, minor }
    }

    /// Parses `"2.96"`.
    pub fn parse(s: &str) -> Option<Self> {
        let (a, b) = s.trim().split_once('.')?;
        Some(Microversion {
            major: a.parse().ok()?,
            minor: b.parse().ok()?,
        })
    }
}

impl fmt::Display for Microversion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Lowest microversion this client works with (Queens).
pub const MIN_MICROVERSION: Microversion = Microversion::v2(60);
/// Highest microversion this client knows.
pub const MAX_MICROVERSION: Microversion = Microversion::v2(104);

/// The version document of the compute endpoint.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(default)]
pub struct VersionInfo {
    /// `v2.1`
    pub id: String,
    /// `CURRENT`, `SUPPORTED`, `DEPRECATED`
    pub status: String,
    /// Maximum microversion (empty for a legacy v2.0 endpoint).
    pub version: String,
    /// Minimum microversion.
    pub min_version: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct VersionRoot {
    version: Option<VersionInfo>,
    versions: Vec<VersionInfo>,
}

/// `block_migration` of `os-migrateLive`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlockMigration {
    /// `"auto"`: Nova decides from the storage layout.
    #[default]
    Auto,
    /// `true`
    Yes,
    /// `false`
    No,
}

impl std::str::FromStr for BlockMigration {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(BlockMigration::Auto),
            "true" => Ok(BlockMigration::Yes),
            "false" => Ok(BlockMigration::No),
            o => Err(Error::Config(format!(
                "block-migration must be 'auto', 'true' or 'false', not '{o}'"
            ))),
        }
    }
}

/// Parameters of a live migration.
#[derive(Debug, Clone, Default)]
pub struct LiveMigrate {
    /// Destination service host; `None` = the scheduler picks.
    pub host: Option<String>,
    /// Block migration choice.
    pub block_migration: BlockMigration,
    /// Bypass the scheduler (2.30–2.67 only, needs `host`; refused at ≥ 2.68).
    pub force: bool,
}

/// An accepted asynchronous action (202).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The request id (= instance action `request_id`).
    pub request_id: Option<String>,
}

/// A server (only the fields a drain reads).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Server {
    /// uuid
    pub id: String,
    /// name
    pub name: String,
    /// `ACTIVE`, `SHUTOFF`, `MIGRATING`, …
    pub status: String,
    /// vm_state
    #[serde(rename = "OS-EXT-STS:vm_state")]
    pub vm_state: Option<String>,
    /// task_state
    #[serde(rename = "OS-EXT-STS:task_state")]
    pub task_state: Option<String>,
    /// power_state (1 = running, 3 = paused, 4 = shutdown)
    #[serde(rename = "OS-EXT-STS:power_state")]
    pub power_state: Option<i64>,
    /// Service host.
    #[serde(rename = "OS-EXT-SRV-ATTR:host")]
    pub host: Option<String>,
    /// Hypervisor (node) name.
    #[serde(rename = "OS-EXT-SRV-ATTR:hypervisor_hostname")]
    pub hypervisor_hostname: Option<String>,
    /// libvirt domain name.
    #[serde(rename = "OS-EXT-SRV-ATTR:instance_name")]
    pub instance_name: Option<String>,
    /// Progress percentage (only in some states).
    pub progress: Option<i64>,
    /// Locked (2.9).
    pub locked: Option<bool>,
    /// Why it is locked (2.73).
    pub locked_reason: Option<String>,
    /// `UP`, `DOWN`, `MAINTENANCE`, `UNKNOWN` of its compute service (2.16, policy).
    pub host_status: Option<String>,
    /// Project.
    pub tenant_id: String,
    /// User.
    pub user_id: String,
    /// `""` when booted from volume, else `{"id": …}`.
    pub image: Value,
    /// Embedded flavor (≥ 2.47).
    pub flavor: ServerFlavor,
    /// Attached volumes.
    #[serde(rename = "os-extended-volumes:volumes_attached")]
    pub volumes_attached: Vec<AttachedVolume>,
    /// Server metadata.
    pub metadata: BTreeMap<String, String>,
    /// Server groups (≥ 2.71, `GET /servers/{id}` only).
    pub server_groups: Option<Vec<String>>,
    /// Fault (ERROR/DELETED only).
    pub fault: Option<Fault>,
    /// created
    pub created: String,
    /// updated
    pub updated: String,
}

impl Server {
    /// Booted from volume (no image).
    pub fn is_volume_backed(&self) -> bool {
        match &self.image {
            Value::String(s) => s.is_empty(),
            Value::Null => true,
            Value::Object(o) => o.get("id").and_then(Value::as_str).unwrap_or("").is_empty(),
            _ => false,
        }
    }
}

impl Server {
    /// The id of the image it booted from; `None` when booted from volume.
    pub fn image_id(&self) -> Option<&str> {
        match &self.image {
            Value::Object(o) => o
                .get("id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty()),
            _ => None,
        }
    }
}

/// The microversion of the share attachments API (`/servers/{id}/shares`).
pub const SHARES_MICROVERSION: Microversion = Microversion::v2(97);

/// A Manila share attached to a server (`GET /servers/{id}/shares`, 2.97).
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(default)]
pub struct ServerShare {
    /// The Manila share's id.
    pub share_id: String,
    /// `attaching`, `inactive`, `active`, `detaching`, `error`.
    pub status: String,
    /// The tag the guest mounts it by.
    pub tag: String,
}

/// The flavor embedded in a server (≥ 2.47).
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct ServerFlavor {
    /// vCPUs
    pub vcpus: u64,
    /// RAM MiB
    pub ram: u64,
    /// Root disk GiB
    pub disk: u64,
    /// Ephemeral GiB
    pub ephemeral: u64,
    /// Swap MiB (an integer, or `""` in old APIs)
    #[serde(deserialize_with = "int_or_empty")]
    pub swap: u64,
    /// Flavor name at boot time.
    pub original_name: String,
    /// Extra specs (policy-dependent).
    pub extra_specs: BTreeMap<String, String>,
}

fn int_or_empty<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    })
}

/// A volume attached to a server.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(default)]
pub struct AttachedVolume {
    /// Volume id.
    pub id: String,
    /// Deleted with the server (2.3).
    pub delete_on_termination: Option<bool>,
}

/// A server fault.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Fault {
    /// code
    pub code: Option<i64>,
    /// message
    pub message: String,
    /// details (admin)
    pub details: Option<String>,
}

/// A flavor (`GET /flavors/{id}`).
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct Flavor {
    /// id
    pub id: String,
    /// name
    pub name: String,
    /// vCPUs
    pub vcpus: u64,
    /// RAM MiB
    pub ram: u64,
    /// Root disk GiB
    pub disk: u64,
    /// Ephemeral GiB
    #[serde(rename = "OS-FLV-EXT-DATA:ephemeral")]
    pub ephemeral: u64,
    /// Swap MiB
    #[serde(deserialize_with = "int_or_empty")]
    pub swap: u64,
    /// Extra specs (≥ 2.61, policy-dependent)
    pub extra_specs: BTreeMap<String, String>,
}

/// Service id: an integer before 2.53, a uuid from 2.53.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ServiceId {
    /// uuid (≥ 2.53)
    Uuid(String),
    /// integer (< 2.53)
    Int(i64),
}

impl Default for ServiceId {
    fn default() -> Self {
        ServiceId::Int(0)
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceId::Uuid(u) => f.write_str(u),
            ServiceId::Int(i) => write!(f, "{i}"),
        }
    }
}

/// A Nova service (`os-services`).
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Service {
    /// id
    pub id: ServiceId,
    /// `nova-compute`
    pub binary: String,
    /// service host
    pub host: String,
    /// availability zone
    pub zone: String,
    /// `enabled` / `disabled`
    pub status: String,
    /// `up` / `down`
    pub state: String,
    /// reason given when disabled
    pub disabled_reason: Option<String>,
    /// last heartbeat
    pub updated_at: Option<String>,
    /// forced down (2.11)
    pub forced_down: Option<bool>,
}

impl Service {
    /// `status == "disabled"`
    pub fn is_disabled(&self) -> bool {
        self.status == "disabled"
    }

    /// `state == "up"`
    pub fn is_up(&self) -> bool {
        self.state == "up"
    }
}

/// An entry of `GET /os-migrations` (no byte counters there).
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Migration {
    /// integer id
    pub id: i64,
    /// uuid (≥ 2.59)
    pub uuid: Option<String>,
    /// server
    pub instance_uuid: String,
    /// `accepted`, `queued`, `preparing`, `running`, `completed`, `error`, …
    pub status: String,
    /// `live-migration`, `migration`, `resize`, `evacuation` (≥ 2.23)
    pub migration_type: Option<String>,
    /// source service host
    pub source_compute: Option<String>,
    /// source node
    pub source_node: Option<String>,
    /// destination service host
    pub dest_compute: Option<String>,
    /// destination host address
    pub dest_host: Option<String>,
    /// destination node
    pub dest_node: Option<String>,
    /// created
    pub created_at: Option<String>,
    /// updated
    pub updated_at: Option<String>,
}

/// An in-progress live migration of a server (`/servers/{id}/migrations`).
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(default)]
pub struct ServerMigration {
    /// integer id
    pub id: i64,
    /// uuid (≥ 2.59)
    pub uuid: Option<String>,
    /// server
    pub server_uuid: String,
    /// `queued`, `preparing`, `running`, `post-migrating`
    pub status: String,
    /// source service host
    pub source_compute: Option<String>,
    /// source node
    pub source_node: Option<String>,
    /// destination service host
    pub dest_compute: Option<String>,
    /// destination host address
    pub dest_host: Option<String>,
    /// destination node
    pub dest_node: Option<String>,
    /// memory bytes in all
    pub memory_total_bytes: Option<u64>,
    /// memory bytes sent (may exceed total)
    pub memory_processed_bytes: Option<u64>,
    /// memory bytes left
    pub memory_remaining_bytes: Option<u64>,
    /// disk bytes in all
    pub disk_total_bytes: Option<u64>,
    /// disk bytes sent
    pub disk_processed_bytes: Option<u64>,
    /// disk bytes left
    pub disk_remaining_bytes: Option<u64>,
    /// created
    pub created_at: Option<String>,
    /// updated
    pub updated_at: Option<String>,
}

impl ServerMigration {
    /// Nova's own progress: `100 - remaining*100/total` of memory, if known.
    pub fn memory_percent(&self) -> Option<f64> {
        match (self.memory_total_bytes, self.memory_remaining_bytes) {
            (Some(t), Some(r)) if t > 0 => Some(100.0 - (r.min(t) as f64) * 100.0 / t as f64),
            _ => None,
        }
    }
}

/// Filters of `GET /os-migrations`.
#[derive(Debug, Clone, Default)]
pub struct MigrationFilter {
    /// Only this server.
    pub instance_uuid: Option<String>,
    /// Only from this service host.
    pub source_compute: Option<String>,
    /// From or to this service host.
    pub host: Option<String>,
    /// One status.
    pub status: Option<String>,
    /// `live-migration`, `migration`, …
    pub migration_type: Option<String>,
    /// ISO 8601 lower bound on `updated_at` (≥ 2.59).
    pub changes_since: Option<String>,
    /// Stop after this many results (`None` = all pages).
    pub max_results: Option<usize>,
}

/// A host aggregate (`GET /os-aggregates`).
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Aggregate {
    pub name: String,
    pub availability_zone: Option<String>,
    pub hosts: Vec<String>,
}

/// A server group.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(default)]
pub struct ServerGroup {
    /// uuid
    pub id: String,
    /// name
    pub name: String,
    /// `affinity`, `anti-affinity`, `soft-affinity`, `soft-anti-affinity` (≥ 2.64)
    pub policy: Option<String>,
    /// pre-2.64 list form
    pub policies: Vec<String>,
    /// rules (≥ 2.64)
    pub rules: ServerGroupRules,
    /// member server uuids
    pub members: Vec<String>,
    /// project
    pub project_id: String,
    /// user
    pub user_id: String,
}

impl ServerGroup {
    /// The policy whichever microversion shape was returned.
    pub fn policy(&self) -> Option<&str> {
        self.policy
            .as_deref()
            .or_else(|| self.policies.first().map(String::as_str))
    }
}

/// Server group rules.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(default)]
pub struct ServerGroupRules {
    /// anti-affinity: members allowed per host (default 1)
    pub max_server_per_host: Option<u32>,
}

/// An instance action with its events.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(default)]
pub struct InstanceAction {
    /// `live-migration`, `live_migration_force_complete`, …
    pub action: String,
    /// request id
    pub request_id: String,
    /// server
    pub instance_uuid: String,
    /// `Error` when it failed
    pub message: Option<String>,
    /// start
    pub start_time: Option<String>,
    /// update
    pub updated_at: Option<String>,
    /// events (only from `GET …/os-instance-actions/{request_id}`)
    pub events: Vec<InstanceActionEvent>,
}

impl InstanceAction {
    /// A one-line summary of the failed events (`event: details`), if any.
    pub fn fault_summary(&self) -> Option<String> {
        let failed: Vec<String> = self
            .events
            .iter()
            .filter(|e| e.result.as_deref() == Some("Error"))
            .map(|e| match e.details.as_deref().filter(|d| !d.is_empty()) {
                Some(d) => format!("{}: {d}", e.event),
                None => match e.traceback.as_deref().and_then(|t| t.trim().lines().last()) {
                    Some(last) => format!("{}: {}", e.event, last.trim()),
                    None => format!("{} failed", e.event),
                },
            })
            .collect();
        (!failed.is_empty()).then(|| failed.join("; "))
    }
}

/// An event of an instance action.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(default)]
pub struct InstanceActionEvent {
    /// e.g. `conductor_live_migrate_instance`
    pub event: String,
    /// `Success` / `Error`
    pub result: Option<String>,
    /// start
    pub start_time: Option<String>,
    /// end
    pub finish_time: Option<String>,
    /// traceback (admin)
    pub traceback: Option<String>,
    /// details (≥ 2.84)
    pub details: Option<String>,
    /// host
    pub host: Option<String>,
}

/// A hypervisor from `GET /os-hypervisors`.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Hypervisor {
    /// uuid (≥ 2.53) == Placement resource provider uuid
    #[serde(deserialize_with = "string_or_int")]
    pub id: String,
    /// node name == Placement resource provider name
    pub hypervisor_hostname: String,
    /// `up` / `down`
    pub state: Option<String>,
    /// `enabled` / `disabled`
    pub status: Option<String>,
    /// The nova-compute service of this node (`/os-hypervisors/detail` only).
    pub service: Option<HypervisorService>,
    /// Its instances (`with_servers=true` only; absent when it has none).
    pub servers: Option<Vec<HypervisorServer>>,
}

/// An instance of a hypervisor (`with_servers=true`).
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(default)]
pub struct HypervisorServer {
    pub uuid: String,
    pub name: String,
}

/// The service state and instance count of one host, from one call
/// ([`Compute::host_summary`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSummary {
    /// `enabled` / `disabled`
    pub status: String,
    /// `up` / `down`
    pub state: String,
    pub disabled_reason: Option<String>,
    pub instances: usize,
}

/// `service` of a hypervisor in `GET /os-hypervisors/detail`.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(default)]
pub struct HypervisorService {
    /// The service host (`os-services`, `servers?host=`, `os-migrateLive` host).
    pub host: Option<String>,
    /// Why the service is disabled.
    pub disabled_reason: Option<String>,
}

fn string_or_int<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    })
}

/// A flavor list entry.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(default)]
pub struct FlavorRef {
    /// id
    pub id: String,
    /// name
    pub name: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Link {
    rel: String,
    href: String,
}

fn has_next(links: &[Link]) -> bool {
    links.iter().any(|l| l.rel == "next" && !l.href.is_empty())
}

/// Page size used when listing.
pub const PAGE_SIZE: usize = 1000;

/// Nova client bound to one endpoint and one negotiated microversion.
#[derive(Debug, Clone)]
pub struct Compute {
    session: Arc<Session>,
    endpoint: String,
    microversion: Microversion,
    server_max: Option<Microversion>,
    page_size: usize,
}

impl Compute {
    /// Discovers the compute endpoint's range and negotiates
    /// `min(server max, 2.104)`; fails below 2.60.
    pub async fn connect(session: Arc<Session>) -> Result<Compute> {
        let endpoint = session.endpoint("compute").await?;
        Compute::negotiate(session, endpoint).await
    }

    /// Like [`Compute::connect`] with an explicit endpoint URL (`…/v2.1`).
    pub async fn negotiate(session: Arc<Session>, endpoint: String) -> Result<Compute> {
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        let info = root_versions(&session, &endpoint).await?;
        let max = Microversion::parse(&info.version).ok_or_else(|| Error::Unsupported {
            endpoint: endpoint.clone(),
            detail: format!(
                "endpoint '{}' announces no microversions (legacy v2.0 API); need ≥ {MIN_MICROVERSION}",
                info.id
            ),
        })?;
        let min = Microversion::parse(&info.min_version).unwrap_or(Microversion::v2(1));
        let chosen = max.min(MAX_MICROVERSION);
        if chosen < MIN_MICROVERSION || min > chosen {
            return Err(Error::Unsupported {
                endpoint: endpoint.clone(),
                detail: format!(
                    "it supports microversions {min} to {max}, this client needs {MIN_MICROVERSION} to {MAX_MICROVERSION} (Queens or newer)"
                ),
            });
        }
        tracing::debug!(%endpoint, server_min = %min, server_max = %max, using = %chosen, "compute microversion negotiated");
        Ok(Compute {
            session,
            endpoint,
            microversion: chosen,
            server_max: Some(max),
            page_size: PAGE_SIZE,
        })
    }

    /// A client for a negotiation an earlier process made
    /// ([`super::SavedCompute`]); `None` when it does not parse or is out
    /// of this client's range.
    pub fn restored(session: Arc<Session>, saved: &super::SavedCompute) -> Option<Compute> {
        let microversion = Microversion::parse(&saved.microversion)?;
        if microversion < MIN_MICROVERSION || microversion > MAX_MICROVERSION {
            return None;
        }
        Some(Compute {
            session,
            endpoint: saved.endpoint.trim_end_matches('/').to_owned(),
            microversion,
            server_max: saved.server_max.as_deref().and_then(Microversion::parse),
            page_size: PAGE_SIZE,
        })
    }

    /// What [`Compute::restored`] takes.
    pub fn saved(&self) -> super::SavedCompute {
        super::SavedCompute {
            endpoint: self.endpoint.clone(),
            microversion: self.microversion.to_string(),
            server_max: self.server_max.map(|m| m.to_string()),
        }
    }

    /// A copy using a forced microversion (tests; no range check).
    pub fn with_microversion(&self, mv: Microversion) -> Compute {
        Compute {
            microversion: mv,
            ..self.clone()
        }
    }

    /// A copy aimed at another endpoint URL, keeping the microversion (tests).
    pub fn with_endpoint(&self, endpoint: &str) -> Compute {
        Compute {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            ..self.clone()
        }
    }

    /// A copy using another page size for lists (tests).
    pub fn with_page_size(&self, page_size: usize) -> Compute {
        Compute {
            page_size: page_size.max(1),
            ..self.clone()
        }
    }

    /// The microversion in use.
    pub fn microversion(&self) -> Microversion {
        self.microversion
    }

    /// The server's maximum microversion.
    pub fn server_max_microversion(&self) -> Option<Microversion> {
        self.server_max
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The session.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Queued and preparing migrations can be aborted (≥ 2.65).
    pub fn can_abort_queued(&self) -> bool {
        self.microversion >= Microversion::v2(65)
    }

    /// The version document of the endpoint (`GET …/v2.1`).
    pub async fn root_versions(&self) -> Result<VersionInfo> {
        root_versions(&self.session, &self.endpoint).await
    }

    fn call(&self, method: Method, path: impl Into<String>, route: &'static str) -> Call {
        let mut c = Call::new(method, &self.endpoint, path, route);
        c.api_version = Some(format!("compute {}", self.microversion));
        if self.microversion < Microversion::v2(27) {
            c.extra_headers.push((
                "X-OpenStack-Nova-API-Version",
                self.microversion.to_string(),
            ));
        }
        c
    }

    async fn send(&self, call: Call) -> Result<Answer> {
        self.session.call(&call).await
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, call: Call) -> Result<T> {
        self.session.call_json(&call).await
    }

    /// Raw JSON request (for tests and one-off calls); returns the decoded
    /// body, or `Null` when empty.
    pub async fn raw(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let mut c = self.call(method, path, "RAW");
        c.body = body;
        let a = self.send(c.clone()).await?;
        if a.body.is_empty() {
            Ok(Value::Null)
        } else {
            a.decode(&c)
        }
    }

    // ----- servers -------------------------------------------------------

    /// All servers on a service host, all projects
    /// (`GET /servers/detail?all_tenants=1&host=…`, paged).
    pub async fn servers_on_host(&self, host: &str) -> Result<Vec<Server>> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Page {
            servers: Vec<Server>,
            servers_links: Vec<Link>,
        }
        let mut out: Vec<Server> = Vec::new();
        loop {
            let c = self
                .call(Method::GET, "/servers/detail", "GET /servers/detail")
                .query("all_tenants", 1)
                .query("host", host)
                .query("limit", self.page_size)
                .query_opt("marker", out.last().map(|s| s.id.clone()));
            let page: Page = self.get(c).await?;
            // Non-admins get the host filter silently ignored: never take
            // someone else's servers for this host's.
            if let Some(s) = page
                .servers
                .iter()
                .find(|s| s.host.as_deref() != Some(host))
            {
                return Err(Error::Unsupported {
                    endpoint: self.endpoint.clone(),
                    detail: format!(
                        "GET /servers/detail?host={host} returned server {} on host {:?}: the host filter was ignored (do the credentials have the admin role?)",
                        s.id, s.host
                    ),
                });
            }
            let n = page.servers.len();
            let before = out.last().map(|s| s.id.clone());
            out.extend(page.servers);
            if n == 0
                || !has_next(&page.servers_links)
                || out.last().map(|s| s.id.clone()) == before
            {
                return Ok(out);
            }
        }
    }

    /// One server (`GET /servers/{id}`).
    pub async fn server(&self, id: &str) -> Result<Server> {
        #[derive(Deserialize)]
        struct W {
            server: Server,
        }
        let c = self.call(
            Method::GET,
            format!("/servers/{}", seg(id)),
            "GET /servers/{id}",
        );
        Ok(self.get::<W>(c).await?.server)
    }

    /// Whether [`Compute::server_shares`] can be asked: the share
    /// attachments API exists from microversion 2.97 (Nova's
    /// `api/openstack/compute/server_shares.py`, `@wsgi.api_version("2.97")`).
    pub fn can_list_shares(&self) -> bool {
        self.microversion >= SHARES_MICROVERSION
    }

    /// The Manila shares attached to a server (`GET /servers/{id}/shares`,
    /// ≥ 2.97: [`Compute::can_list_shares`]).
    pub async fn server_shares(&self, id: &str) -> Result<Vec<ServerShare>> {
        #[derive(Deserialize)]
        struct W {
            shares: Vec<ServerShare>,
        }
        let c = self.call(
            Method::GET,
            format!("/servers/{}/shares", seg(id)),
            "GET /servers/{id}/shares",
        );
        Ok(self.get::<W>(c).await?.shares)
    }

    /// Flavor details (`GET /flavors/{id}`); servers embed theirs from 2.47.
    pub async fn flavor(&self, id: &str) -> Result<Flavor> {
        #[derive(Deserialize)]
        struct W {
            flavor: Flavor,
        }
        let c = self.call(
            Method::GET,
            format!("/flavors/{}", seg(id)),
            "GET /flavors/{id}",
        );
        Ok(self.get::<W>(c).await?.flavor)
    }

    /// Flavor ids and names (`GET /flavors`, public and private).
    pub async fn flavors(&self) -> Result<Vec<FlavorRef>> {
        #[derive(Deserialize)]
        struct W {
            flavors: Vec<FlavorRef>,
        }
        let c = self
            .call(Method::GET, "/flavors", "GET /flavors")
            .query("is_public", "None");
        Ok(self.get::<W>(c).await?.flavors)
    }

    // ----- services ------------------------------------------------------

    /// `GET /os-services?host=…&binary=…`.
    pub async fn services(&self, host: Option<&str>, binary: Option<&str>) -> Result<Vec<Service>> {
        #[derive(Deserialize)]
        struct W {
            services: Vec<Service>,
        }
        let c = self
            .call(Method::GET, "/os-services", "GET /os-services")
            .query_opt("binary", binary)
            .query_opt("host", host);
        Ok(self.get::<W>(c).await?.services)
    }

    /// The `nova-compute` service of a host, if it exists.
    pub async fn compute_service(&self, host: &str) -> Result<Option<Service>> {
        Ok(self
            .services(Some(host), Some("nova-compute"))
            .await?
            .into_iter()
            .find(|s| s.host == host))
    }

    /// Disables a service with a reason: `PUT /os-services/{uuid}` (≥ 2.53)
    /// or `PUT /os-services/disable-log-reason` (< 2.53).
    pub async fn disable_service(&self, service: &Service, reason: &str) -> Result<Service> {
        if self.microversion >= Microversion::v2(53) {
            self.update_service_uuid(
                service,
                json!({"status": "disabled", "disabled_reason": reason}),
            )
            .await
        } else {
            self.update_service_legacy(
                "/os-services/disable-log-reason",
                "PUT /os-services/disable-log-reason",
                json!({"host": service.host, "binary": service.binary, "disabled_reason": reason}),
                service,
            )
            .await
        }
    }

    /// Enables a service: `PUT /os-services/{uuid}` (≥ 2.53) or
    /// `PUT /os-services/enable` (< 2.53).
    pub async fn enable_service(&self, service: &Service) -> Result<Service> {
        if self.microversion >= Microversion::v2(53) {
            self.update_service_uuid(service, json!({"status": "enabled"}))
                .await
        } else {
            self.update_service_legacy(
                "/os-services/enable",
                "PUT /os-services/enable",
                json!({"host": service.host, "binary": service.binary}),
                service,
            )
            .await
        }
    }

    async fn update_service_uuid(&self, service: &Service, body: Value) -> Result<Service> {
        #[derive(Deserialize)]
        struct W {
            service: Service,
        }
        let ServiceId::Uuid(id) = &service.id else {
            return Err(Error::Config(format!(
                "service id {} of {} is not a uuid (listed below microversion 2.53)",
                service.id, service.host
            )));
        };
        let c = self
            .call(
                Method::PUT,
                format!("/os-services/{}", seg(id)),
                "PUT /os-services/{id}",
            )
            .json(body);
        Ok(self.get::<W>(c).await?.service)
    }

    async fn update_service_legacy(
        &self,
        path: &str,
        route: &'static str,
        body: Value,
        service: &Service,
    ) -> Result<Service> {
        #[derive(Deserialize)]
        struct W {
            service: Service,
        }
        let c = self.call(Method::PUT, path, route).json(body);
        let got = self.get::<W>(c).await?.service;
        // The legacy answer only has binary, host, status (and reason).
        Ok(Service {
            status: got.status,
            disabled_reason: got.disabled_reason,
            ..service.clone()
        })
    }

    // ----- migrations ----------------------------------------------------

    /// Starts a live migration (`POST /servers/{id}/action` `os-migrateLive`,
    /// body per microversion). 202, no body; find the migration afterwards.
    pub async fn live_migrate(&self, server_id: &str, req: &LiveMigrate) -> Result<Accepted> {
        let mv = self.microversion;
        let mut body = serde_json::Map::new();
        body.insert("host".into(), json!(req.host));
        let bm = match (req.block_migration, mv >= Microversion::v2(25)) {
            (BlockMigration::Auto, true) => json!("auto"),
            (BlockMigration::Auto, false) | (BlockMigration::No, _) => json!(false),
            (BlockMigration::Yes, _) => json!(true),
        };
        body.insert("block_migration".into(), bm);
        if mv < Microversion::v2(25) {
            body.insert("disk_over_commit".into(), json!(false));
        }
        if req.force {
            if mv < Microversion::v2(30) || mv >= Microversion::v2(68) {
                return Err(Error::Unsupported {
                    endpoint: self.endpoint.clone(),
                    detail: format!("forcing a live migration needs 2.30–2.67, using {mv}"),
                });
            }
            if req.host.is_none() {
                return Err(Error::Config("a forced live migration needs a host".into()));
            }
            body.insert("force".into(), json!(true));
        }
        self.action(server_id, json!({ "os-migrateLive": body }))
            .await
    }

    /// Cold migration (`{"migrate": null}`, or with `host` at ≥ 2.56).
    pub async fn cold_migrate(&self, server_id: &str, host: Option<&str>) -> Result<Accepted> {
        let body = match host {
            None => json!({ "migrate": null }),
            Some(h) if self.microversion >= Microversion::v2(56) => {
                json!({ "migrate": { "host": h } })
            }
            Some(_) => {
                return Err(Error::Unsupported {
                    endpoint: self.endpoint.clone(),
                    detail: format!(
                        "cold migration to a given host needs 2.56, using {}",
                        self.microversion
                    ),
                });
            }
        };
        self.action(server_id, body).await
    }

    /// Confirms a finished cold migration (`{"confirmResize": null}`).
    pub async fn confirm_resize(&self, server_id: &str) -> Result<Accepted> {
        self.action(server_id, json!({ "confirmResize": null }))
            .await
    }

    /// Resets the instance's state to active (`{"os-resetState": {"state":
    /// "active"}}`, admin). Only for an instance whose guest was confirmed
    /// running (reset-after-abort).
    pub async fn reset_state_active(&self, server_id: &str) -> Result<Accepted> {
        self.action(server_id, json!({ "os-resetState": { "state": "active" } }))
            .await
    }

    /// Stops the instance (`{"os-stop": null}`; Nova powers it off after
    /// the guest's shutdown timeout). Policy cold only.
    pub async fn stop_server(&self, server_id: &str) -> Result<Accepted> {
        self.action(server_id, json!({ "os-stop": null })).await
    }

    /// Starts a stopped instance (`{"os-start": null}`).
    pub async fn start_server(&self, server_id: &str) -> Result<Accepted> {
        self.action(server_id, json!({ "os-start": null })).await
    }

    async fn action(&self, server_id: &str, body: Value) -> Result<Accepted> {
        let c = self
            .call(
                Method::POST,
                format!("/servers/{}/action", seg(server_id)),
                "POST /servers/{id}/action",
            )
            .json(body);
        let a = self.send(c).await?;
        Ok(Accepted {
            request_id: a.request_id,
        })
    }

    /// `GET /os-migrations` with filters, newest first, following
    /// `limit`/`marker` (uuid) pages (≥ 2.59).
    pub async fn migrations(&self, filter: &MigrationFilter) -> Result<Vec<Migration>> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Page {
            migrations: Vec<Migration>,
            migrations_links: Vec<Link>,
        }
        let paged = self.microversion >= Microversion::v2(59);
        let limit = filter
            .max_results
            .map(|m| m.min(self.page_size))
            .unwrap_or(self.page_size);
        let mut out: Vec<Migration> = Vec::new();
        loop {
            let mut c = self
                .call(Method::GET, "/os-migrations", "GET /os-migrations")
                .query_opt("instance_uuid", filter.instance_uuid.as_deref())
                .query_opt("source_compute", filter.source_compute.as_deref())
                .query_opt("host", filter.host.as_deref())
                .query_opt("status", filter.status.as_deref())
                .query_opt("migration_type", filter.migration_type.as_deref());
            if paged {
                c = c
                    .query_opt("changes-since", filter.changes_since.as_deref())
                    .query("limit", limit)
                    .query_opt("marker", out.last().and_then(|m| m.uuid.clone()));
            }
            let page: Page = self.get(c).await?;
            let n = page.migrations.len();
            let before = out.last().and_then(|m| m.uuid.clone());
            out.extend(page.migrations);
            if paged && n > 0 && out.last().and_then(|m| m.uuid.clone()) == before {
                return Ok(out);
            }
            if let Some(max) = filter.max_results
                && out.len() >= max
            {
                out.truncate(max);
                return Ok(out);
            }
            if !paged
                || n == 0
                || !has_next(&page.migrations_links)
                || out.last().and_then(|m| m.uuid.as_ref()).is_none()
            {
                return Ok(out);
            }
        }
    }

    /// The newest live migration of a server (`GET /os-migrations?instance_uuid=…&migration_type=live-migration&limit=1`).
    pub async fn latest_live_migration(&self, server_id: &str) -> Result<Option<Migration>> {
        let mut all = self
            .migrations(&MigrationFilter {
                instance_uuid: Some(server_id.to_owned()),
                migration_type: Some("live-migration".to_owned()),
                max_results: Some(1),
                ..Default::default()
            })
            .await?;
        Ok(if all.is_empty() {
            None
        } else {
            Some(all.remove(0))
        })
    }

    /// In-progress live migrations of a server (`GET /servers/{id}/migrations`).
    pub async fn server_migrations(&self, server_id: &str) -> Result<Vec<ServerMigration>> {
        #[derive(Deserialize)]
        struct W {
            migrations: Vec<ServerMigration>,
        }
        let c = self.call(
            Method::GET,
            format!("/servers/{}/migrations", seg(server_id)),
            "GET /servers/{id}/migrations",
        );
        Ok(self.get::<W>(c).await?.migrations)
    }

    /// One in-progress live migration with its byte counters
    /// (`GET /servers/{id}/migrations/{mid}`; 404 once it is over).
    pub async fn server_migration(
        &self,
        server_id: &str,
        migration_id: i64,
    ) -> Result<ServerMigration> {
        #[derive(Deserialize)]
        struct W {
            migration: ServerMigration,
        }
        let c = self.call(
            Method::GET,
            format!("/servers/{}/migrations/{migration_id}", seg(server_id)),
            "GET /servers/{id}/migrations/{mid}",
        );
        Ok(self.get::<W>(c).await?.migration)
    }

    /// Force-completes a running live migration
    /// (`POST /servers/{id}/migrations/{mid}/action {"force_complete": null}`).
    pub async fn force_complete(&self, server_id: &str, migration_id: i64) -> Result<Accepted> {
        let c = self
            .call(
                Method::POST,
                format!(
                    "/servers/{}/migrations/{migration_id}/action",
                    seg(server_id)
                ),
                "POST /servers/{id}/migrations/{mid}/action",
            )
            .json(json!({ "force_complete": null }));
        let a = self.send(c).await?;
        Ok(Accepted {
            request_id: a.request_id,
        })
    }

    /// Aborts a live migration (`DELETE /servers/{id}/migrations/{mid}`):
    /// running ones always, queued/preparing ones only when
    /// [`Compute::can_abort_queued`] (≥ 2.65).
    pub async fn abort_migration(&self, server_id: &str, migration_id: i64) -> Result<Accepted> {
        let c = self.call(
            Method::DELETE,
            format!("/servers/{}/migrations/{migration_id}", seg(server_id)),
            "DELETE /servers/{id}/migrations/{mid}",
        );
        let a = self.send(c).await?;
        Ok(Accepted {
            request_id: a.request_id,
        })
    }

    // ----- groups, actions, hypervisors ----------------------------------

    /// Server groups of all projects (`GET /os-server-groups?all_projects=True`,
    /// `limit`/`offset` pages). Nova pages this list by offset only (no
    /// marker, no links) and cuts each page at its `[api] max_limit`, which
    /// may be below the `limit` asked: ask again from the next offset until
    /// an empty page (or a page that adds no new group: a server ignoring
    /// the offset).
    pub async fn server_groups(&self) -> Result<Vec<ServerGroup>> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct W {
            server_groups: Vec<ServerGroup>,
        }
        let mut out: Vec<ServerGroup> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut offset = 0usize;
        loop {
            let c = self
                .call(Method::GET, "/os-server-groups", "GET /os-server-groups")
                .query("all_projects", "True")
                .query("limit", self.page_size)
                .query("offset", offset);
            let page: W = self.get(c).await?;
            let n = page.server_groups.len();
            let before = out.len();
            for g in page.server_groups {
                if seen.insert(g.id.clone()) {
                    out.push(g);
                }
            }
            if n == 0 || out.len() == before {
                return Ok(out);
            }
            offset += n;
        }
    }

    /// Every host aggregate (`GET /os-aggregates`, admin).
    pub async fn aggregates(&self) -> Result<Vec<Aggregate>> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct W {
            aggregates: Vec<Aggregate>,
        }
        let c = self.call(Method::GET, "/os-aggregates", "GET /os-aggregates");
        Ok(self.get::<W>(c).await?.aggregates)
    }

    /// Instance actions of a server, newest first (no events)
    /// (`GET /servers/{id}/os-instance-actions`).
    pub async fn instance_actions(&self, server_id: &str) -> Result<Vec<InstanceAction>> {
        #[derive(Deserialize)]
        struct W {
            #[serde(rename = "instanceActions")]
            actions: Vec<InstanceAction>,
        }
        let c = self.call(
            Method::GET,
            format!("/servers/{}/os-instance-actions", seg(server_id)),
            "GET /servers/{id}/os-instance-actions",
        );
        Ok(self.get::<W>(c).await?.actions)
    }

    /// One instance action with its events
    /// (`GET /servers/{id}/os-instance-actions/{request_id}`).
    pub async fn instance_action(
        &self,
        server_id: &str,
        request_id: &str,
    ) -> Result<InstanceAction> {
        #[derive(Deserialize)]
        struct W {
            #[serde(rename = "instanceAction")]
            action: InstanceAction,
        }
        let c = self.call(
            Method::GET,
            format!(
                "/servers/{}/os-instance-actions/{}",
                seg(server_id),
                seg(request_id)
            ),
            "GET /servers/{id}/os-instance-actions/{req}",
        );
        Ok(self.get::<W>(c).await?.action)
    }

    /// Hypervisors (`GET /os-hypervisors`, id and hypervisor_hostname; never
    /// `/detail`). With a pattern: SQL `LIKE '%pattern%'` and no paging.
    pub async fn hypervisors(&self, hostname_pattern: Option<&str>) -> Result<Vec<Hypervisor>> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Page {
            hypervisors: Vec<Hypervisor>,
            hypervisors_links: Vec<Link>,
        }
        let mut out: Vec<Hypervisor> = Vec::new();
        loop {
            let mut c = self.call(Method::GET, "/os-hypervisors", "GET /os-hypervisors");
            if let Some(p) = hostname_pattern {
                c = c.query("hypervisor_hostname_pattern", p);
            } else {
                c = c
                    .query("limit", self.page_size)
                    .query_opt("marker", out.last().map(|h| h.id.clone()));
            }
            let page: Page = match self.get(c).await {
                // A pattern that matches nothing is a 404.
                Err(e) if hostname_pattern.is_some() && e.is_not_found() => return Ok(out),
                other => other?,
            };
            let n = page.hypervisors.len();
            let before = out.last().map(|h| h.id.clone());
            out.extend(page.hypervisors);
            if out.last().map(|h| h.id.clone()) == before {
                return Ok(out);
            }
            if hostname_pattern.is_some() || n == 0 || !has_next(&page.hypervisors_links) {
                return Ok(out);
            }
        }
    }

    /// Every hypervisor with its service host, in one listing
    /// (`GET /os-hypervisors/detail?with_servers=false`, `limit`/`marker`
    /// pages). At ≥ 2.88 the detail holds no statistics, so it is as light
    /// as the plain list; below it, the statistics come along unread.
    pub async fn hypervisors_detail(&self) -> Result<Vec<Hypervisor>> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Page {
            hypervisors: Vec<Hypervisor>,
            hypervisors_links: Vec<Link>,
        }
        let mut out: Vec<Hypervisor> = Vec::new();
        loop {
            let c = self
                .call(
                    Method::GET,
                    "/os-hypervisors/detail",
                    "GET /os-hypervisors/detail",
                )
                .query("with_servers", "false")
                .query("limit", self.page_size)
                .query_opt("marker", out.last().map(|h| h.id.clone()));
            let page: Page = self.get(c).await?;
            let n = page.hypervisors.len();
            let before = out.last().map(|h| h.id.clone());
            out.extend(page.hypervisors);
            if n == 0 || out.last().map(|h| h.id.clone()) == before {
                return Ok(out);
            }
            if !has_next(&page.hypervisors_links) {
                return Ok(out);
            }
        }
    }

    /// The service state and instance count of `host` in one call:
    /// `GET /os-hypervisors/detail?hypervisor_hostname_pattern=<host>&with_servers=true`
    /// (a substring match, so only hypervisors whose service host is
    /// exactly `host` count; their instances are Nova's instances of that
    /// host). `None` when no hypervisor's service is `host` (its hypervisor
    /// is named otherwise): ask [`Compute::compute_service`] and
    /// [`Compute::servers_on_host`] instead.
    pub async fn host_summary(&self, host: &str) -> Result<Option<HostSummary>> {
        #[derive(Deserialize)]
        struct Page {
            hypervisors: Vec<Hypervisor>,
        }
        let c = self
            .call(
                Method::GET,
                "/os-hypervisors/detail",
                "GET /os-hypervisors/detail",
            )
            .query("hypervisor_hostname_pattern", host)
            .query("with_servers", "true");
        let page: Page = match self.get(c).await {
            Ok(p) => p,
            // No hypervisor matches the pattern.
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let mine: Vec<&Hypervisor> = page
            .hypervisors
            .iter()
            .filter(|h| h.service.as_ref().and_then(|s| s.host.as_deref()) == Some(host))
            .collect();
        let Some(first) = mine.first() else {
            return Ok(None);
        };
        Ok(Some(HostSummary {
            status: first.status.clone().unwrap_or_default(),
            state: first.state.clone().unwrap_or_default(),
            disabled_reason: first
                .service
                .as_ref()
                .and_then(|s| s.disabled_reason.clone()),
            instances: mine
                .iter()
                .map(|h| h.servers.as_ref().map_or(0, Vec::len))
                .sum(),
        }))
    }

    /// The hypervisor whose `hypervisor_hostname` is exactly `name`.
    pub async fn hypervisor_by_name(&self, name: &str) -> Result<Option<Hypervisor>> {
        Ok(self
            .hypervisors(Some(name))
            .await?
            .into_iter()
            .find(|h| h.hypervisor_hostname == name))
    }
}

async fn root_versions(session: &Session, endpoint: &str) -> Result<VersionInfo> {
    let c = Call::new(Method::GET, endpoint, "/", "GET /");
    let root: VersionRoot = match session.call_json(&c).await {
        Ok(r) => r,
        // A catalog URL with a project id suffix (…/v2.1/<project>): ask …/v2.1.
        Err(e) if e.is_not_found() => match endpoint.rfind("/v2.1/") {
            Some(i) => {
                let c = Call::new(Method::GET, &endpoint[..i + 5], "/", "GET /");
                session.call_json(&c).await?
            }
            None => return Err(e),
        },
        Err(e) => return Err(e),
    };
    if let Some(v) = root.version {
        return Ok(v);
    }
    let pick = root
        .versions
        .iter()
        .find(|v| v.id == "v2.1")
        .or_else(|| root.versions.iter().find(|v| v.status == "CURRENT"))
        .cloned();
    pick.ok_or_else(|| Error::Decode {
        method: "GET".into(),
        path: "/".into(),
        detail: "no 'version' and no v2.1 entry in 'versions'".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openstack::arbitrary::body_with_keys;
    use proptest::prelude::*;

    const SERVER_KEYS: &[&str] = &[
        "server",
        "servers",
        "servers_links",
        "rel",
        "href",
        "id",
        "name",
        "status",
        "OS-EXT-STS:vm_state",
        "OS-EXT-STS:task_state",
        "OS-EXT-STS:power_state",
        "OS-EXT-SRV-ATTR:host",
        "OS-EXT-SRV-ATTR:hypervisor_hostname",
        "OS-EXT-SRV-ATTR:instance_name",
        "progress",
        "locked",
        "locked_reason",
        "host_status",
        "tenant_id",
        "user_id",
        "image",
        "flavor",
        "vcpus",
        "ram",
        "disk",
        "ephemeral",
        "swap",
        "original_name",
        "extra_specs",
        "os-extended-volumes:volumes_attached",
        "delete_on_termination",
        "metadata",
        "server_groups",
        "fault",
        "code",
        "message",
        "details",
        "created",
        "updated",
    ];
    const MIGRATION_KEYS: &[&str] = &[
        "migrations",
        "migration",
        "migrations_links",
        "rel",
        "href",
        "id",
        "uuid",
        "instance_uuid",
        "server_uuid",
        "status",
        "migration_type",
        "source_compute",
        "source_node",
        "dest_compute",
        "dest_host",
        "dest_node",
        "memory_total_bytes",
        "memory_processed_bytes",
        "memory_remaining_bytes",
        "disk_total_bytes",
        "disk_processed_bytes",
        "disk_remaining_bytes",
        "created_at",
        "updated_at",
    ];
    const SERVICE_KEYS: &[&str] = &[
        "services",
        "service",
        "id",
        "binary",
        "host",
        "zone",
        "status",
        "state",
        "disabled_reason",
        "updated_at",
        "forced_down",
        "hypervisors",
        "hypervisors_links",
        "hypervisor_hostname",
        "rel",
        "href",
        "version",
        "versions",
        "min_version",
        "server_groups",
        "policy",
        "policies",
        "rules",
        "max_server_per_host",
        "members",
        "project_id",
        "user_id",
        "instanceActions",
        "instanceAction",
        "action",
        "request_id",
        "events",
        "event",
        "result",
        "traceback",
        "start_time",
        "finish_time",
        "flavor",
        "flavors",
        "OS-FLV-EXT-DATA:ephemeral",
        "swap",
    ];

    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct ServerPage {
        servers: Vec<Server>,
        servers_links: Vec<Link>,
    }
    #[derive(Deserialize)]
    struct OneServer {
        server: Server,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct MigrationPage {
        migrations: Vec<Migration>,
        migrations_links: Vec<Link>,
    }
    #[derive(Deserialize)]
    struct ServerMigrations {
        migrations: Vec<ServerMigration>,
    }
    #[derive(Deserialize)]
    struct OneServerMigration {
        migration: ServerMigration,
    }
    #[derive(Deserialize)]
    struct Services {
        services: Vec<Service>,
    }
    #[derive(Deserialize)]
    struct OneService {
        service: Service,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct HypervisorPage {
        hypervisors: Vec<Hypervisor>,
        hypervisors_links: Vec<Link>,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Groups {
        server_groups: Vec<ServerGroup>,
    }
    #[derive(Deserialize)]
    struct Actions {
        #[serde(rename = "instanceActions")]
        actions: Vec<InstanceAction>,
    }
    #[derive(Deserialize)]
    struct OneAction {
        #[serde(rename = "instanceAction")]
        action: InstanceAction,
    }
    #[derive(Deserialize)]
    struct OneFlavor {
        flavor: Flavor,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1500))]

        /// No body can panic a decoder or what reads its result.
        #[test]
        fn server_decoders_never_panic(body in body_with_keys(SERVER_KEYS)) {
            if let Ok(p) = serde_json::from_slice::<ServerPage>(&body) {
                let _ = has_next(&p.servers_links);
                for s in &p.servers {
                    let _ = s.is_volume_backed();
                }
            }
            if let Ok(s) = serde_json::from_slice::<OneServer>(&body) {
                let _ = s.server.is_volume_backed();
            }
        }

        #[test]
        fn migration_decoders_never_panic(body in body_with_keys(MIGRATION_KEYS)) {
            if let Ok(p) = serde_json::from_slice::<MigrationPage>(&body) {
                let _ = has_next(&p.migrations_links);
            }
            if let Ok(m) = serde_json::from_slice::<ServerMigrations>(&body) {
                for m in &m.migrations {
                    if let Some(p) = m.memory_percent() {
                        prop_assert!((0.0..=100.0).contains(&p), "{}", p);
                    }
                }
            }
            if let Ok(m) = serde_json::from_slice::<OneServerMigration>(&body) {
                let _ = m.migration.memory_percent();
            }
        }

        #[test]
        fn service_hypervisor_and_other_decoders_never_panic(body in body_with_keys(SERVICE_KEYS)) {
            if let Ok(s) = serde_json::from_slice::<Services>(&body) {
                for s in &s.services {
                    let _ = (s.is_disabled(), s.is_up(), s.id.to_string());
                }
            }
            if let Ok(s) = serde_json::from_slice::<OneService>(&body) {
                let _ = s.service.is_up();
            }
            if let Ok(p) = serde_json::from_slice::<HypervisorPage>(&body) {
                let _ = has_next(&p.hypervisors_links);
            }
            if let Ok(v) = serde_json::from_slice::<VersionRoot>(&body)
                && let Some(v) = v.version
            {
                let _ = (Microversion::parse(&v.version), Microversion::parse(&v.min_version));
            }
            if let Ok(g) = serde_json::from_slice::<Groups>(&body) {
                for g in &g.server_groups {
                    let _ = g.policy();
                }
            }
            if let Ok(a) = serde_json::from_slice::<Actions>(&body) {
                for a in &a.actions {
                    let _ = a.fault_summary();
                }
            }
            if let Ok(a) = serde_json::from_slice::<OneAction>(&body) {
                let _ = a.action.fault_summary();
            }
            if let Ok(f) = serde_json::from_slice::<OneFlavor>(&body) {
                let _ = f.flavor.swap;
            }
        }

        #[test]
        fn microversion_of_any_text(s in ".{0,20}") {
            let _ = Microversion::parse(&s);
        }
    }
}
