//! `FakeNova`: an in-process fake of Keystone, Nova and Placement, served by
//! wiremock (one catch-all responder over `Arc<Mutex<FakeNova>>`), good
//! enough for `nlm::drain::run` to drain a node against it. Used by the
//! benchmarks (`tests/bench/scale.rs`) and the suite (`tests/it/drain_fake.rs`)
//! through `#[path]`.
//!
//! It is a small event simulation of one source host and its peers:
//! - each accepted `os-migrateLive` creates a live migration that is
//!   `queued`, becomes `running` when one of the source's
//!   `max_concurrent_live_migrations` slots is free (Nova's per-compute
//!   semaphore) and `completed` after `migration_ms`, at which moment the
//!   server moves to its destination (the requested host, else round robin);
//! - `migrate` (cold) is `migrating` for `migration_ms`, then `finished` with
//!   the server in `VERIFY_RESIZE` on the destination until `confirmResize`;
//! - `force_complete` completes a running live migration at once, `DELETE`
//!   of it cancels it (the server stays);
//! - `GET /os-hypervisors/detail` maps service hosts to hypervisor names,
//!   which name the Placement providers. With `short_hosts` the service host
//!   is `node1` and the hypervisor `node1.maas` (a cloud deployed without
//!   `use_fqdn_hint`).
//! - with `shares_api` the compute API goes to 2.97 and serves
//!   `GET /servers/{id}/shares`; with `image_service` the catalog has Glance
//!   and `GET /image/v2/images/{id}` serves [`FakeNova::images`].
//!
//! Faults: [`FakeNova::inject`] answers the next matching requests with a
//! status (404, 409, 500…); [`FakeNova::vanish`] deletes a server;
//! [`FakeNova::stall`] freezes a server's live migrations (running, no
//! progress) until they are aborted or force-completed. Every request is
//! recorded ([`FakeNova::calls`]); routes or query parameters the fake does
//! not implement are answered 404/400 and counted in `unknown`.
#![allow(dead_code)] // shared by the bench and the suite; each uses a part

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use nlm::time::{iso, now_ms, parse_iso};
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const TOKEN: &str = "fake-nova-token";
/// The password the relation bag carries (the fake accepts any).
pub const PASSWORD: &str = "fake-nova-SECRET-pw";
/// The one image.
pub const IMAGE_ID: &str = "3b6a1c2e-9d4f-4e8a-8c1b-6f0d2a7e5c01";

/// Nova-like timestamp: `2026-11-25T21:30:05.123000` (UTC, no zone).
pub fn nova_ts(ms: u64) -> String {
    format!("{}.{:06}", &iso(ms)[..19], (ms % 1000) * 1000)
}

/// How the fake cloud is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// The source's service host.
    pub source: String,
    /// The other compute hosts' service hosts.
    pub dests: Vec<String>,
    /// Servers booted on the source (`{prefix}-{i:04}`, active).
    pub servers: usize,
    pub name_prefix: String,
    pub ram_mb: u64,
    /// How long each migration takes (fake time = real time).
    pub migration_ms: u64,
    /// Nova's `max_concurrent_live_migrations` on the source.
    pub max_concurrent: usize,
    /// Nova's `[api] max_limit` (page size cap).
    pub max_limit: usize,
    /// Hypervisor (and provider) names are `{host}.maas` while service
    /// hosts stay as given (short).
    pub short_hosts: bool,
    /// Compute API up to 2.97, with `GET /servers/{id}/shares` (the
    /// servers' [`FServer::shares`]); else up to 2.96, without it.
    pub shares_api: bool,
    /// An image service (`image` in the catalog, `GET /image/v2/images/{id}`
    /// from [`FakeNova::images`]).
    pub image_service: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            source: "node1.maas".into(),
            dests: ["node2.maas", "node3.maas", "node4.maas", "node5.maas"]
                .map(String::from)
                .to_vec(),
            servers: 0,
            name_prefix: "fake".into(),
            ram_mb: 2048,
            migration_ms: 200,
            max_concurrent: 4,
            max_limit: 1000,
            short_hosts: false,
            shares_api: false,
            image_service: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct FServer {
    pub id: String,
    pub name: String,
    pub host: String,
    pub status: String,
    pub vm_state: String,
    /// `migrating` / `resize_migrating` while a migration is in progress.
    pub task_state: Option<String>,
    /// Accepted move requests (`os-migrateLive`, `migrate`).
    pub posts: u32,
    /// Deleted ([`FakeNova::vanish`]): 404 from now on.
    pub gone: bool,
    /// The ids of the Manila shares attached (served when
    /// [`Options::shares_api`]).
    pub shares: Vec<String>,
    /// The image it booted from ([`IMAGE_ID`] unless set).
    pub image: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MStatus {
    Queued,
    Running,
    Completed,
    Cancelled,
    Failed,
    /// Cold: `migrating` until `finished`, then `confirmed`.
    Migrating,
    Finished,
    Confirmed,
}

impl MStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MStatus::Queued => "queued",
            MStatus::Running => "running",
            MStatus::Completed => "completed",
            MStatus::Cancelled => "cancelled",
            MStatus::Failed => "failed",
            MStatus::Migrating => "migrating",
            MStatus::Finished => "finished",
            MStatus::Confirmed => "confirmed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct FMig {
    pub id: u64,
    pub uuid: String,
    pub server: usize,
    pub live: bool,
    pub source: String,
    pub dest: String,
    pub status: MStatus,
    pub created: u64,
    pub updated: u64,
    pub started: Option<u64>,
    /// The `os-migrateLive` body's `block_migration` (live only).
    pub block_migration: Value,
    /// The server's vm_state before a cold migration (restored on confirm).
    pub prior_vm_state: String,
}

#[derive(Debug, Clone)]
pub struct FService {
    pub host: String,
    pub status: String,
    pub state: String,
    pub disabled_reason: Option<String>,
}

/// A fault to answer instead of the real handling.
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: String,
    /// A substring of `path?query` (e.g. the server id, `os-migrateLive`
    /// matches the action body's key as well).
    pub matches: String,
    pub status: u16,
    /// How many requests it answers (then it is gone).
    pub times: u32,
}

/// One request as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// For `POST …/action`: the action's key (`os-migrateLive`, …).
    pub action: Option<String>,
    pub status: u16,
}

impl Call {
    /// `POST /v2.1/servers/X/action os-migrateLive → 202`.
    pub fn line(&self) -> String {
        format!(
            "{} {}{} -> {}",
            self.method,
            self.target,
            self.action
                .as_ref()
                .map(|a| format!(" {a}"))
                .unwrap_or_default(),
            self.status
        )
    }
}

/// The simulated cloud.
pub struct FakeNova {
    pub uri: String,
    pub opts: Options,
    pub servers: Vec<FServer>,
    by_id: HashMap<String, usize>,
    pub services: Vec<FService>,
    pub migrations: Vec<FMig>,
    /// Server groups as Nova shows them (≥ 2.64 shape).
    pub groups: Vec<Value>,
    /// Servers whose live migrations do not progress.
    pub stalled: BTreeSet<String>,
    /// The images the image service knows (id → the image as Glance v2
    /// shows it): [`IMAGE_ID`] with no `hw_` property, to begin with.
    pub images: BTreeMap<String, Value>,
    pub faults: Vec<Fault>,
    next_dest: usize,
    /// Requests answered, and the bytes of their bodies.
    pub requests: u64,
    pub bytes_out: u64,
    /// `GET /os-migrations?source_compute=` calls: one per poll tick.
    pub list_ticks: u64,
    /// Requests the fake does not implement (method path?query → count).
    pub unknown: BTreeMap<String, u64>,
    pub conflicts: u64,
    /// Every request, in order (unless `record` is off, as in the bench).
    pub calls: Vec<Call>,
    pub record: bool,
}

fn qmap(req: &Request) -> BTreeMap<String, String> {
    req.url.query_pairs().into_owned().collect()
}

fn ok(v: Value) -> (u16, Option<Value>) {
    (200, Some(v))
}

fn not_found(what: &str) -> (u16, Option<Value>) {
    (
        404,
        Some(json!({"itemNotFound": {"code": 404, "message": what}})),
    )
}

fn conflict(what: &str) -> (u16, Option<Value>) {
    (
        409,
        Some(json!({"conflictingRequest": {"code": 409, "message": what}})),
    )
}

fn bad_request(what: &str) -> (u16, Option<Value>) {
    (
        400,
        Some(json!({"badRequest": {"code": 400, "message": what}})),
    )
}

impl FakeNova {
    pub fn new(uri: String, opts: Options) -> FakeNova {
        let servers: Vec<FServer> = (0..opts.servers)
            .map(|i| FServer {
                id: format!("00000000-0000-4000-8000-{i:012}"),
                name: format!("{}-{i:04}", opts.name_prefix),
                host: opts.source.clone(),
                status: "ACTIVE".into(),
                vm_state: "active".into(),
                task_state: None,
                posts: 0,
                gone: false,
                shares: Vec::new(),
                image: IMAGE_ID.into(),
            })
            .collect();
        let by_id = servers
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        let services = std::iter::once(&opts.source)
            .chain(&opts.dests)
            .map(|h| FService {
                host: h.clone(),
                status: "enabled".into(),
                state: "up".into(),
                disabled_reason: None,
            })
            .collect();
        FakeNova {
            uri,
            opts,
            servers,
            by_id,
            services,
            migrations: Vec::new(),
            groups: Vec::new(),
            stalled: BTreeSet::new(),
            images: BTreeMap::from([(
                IMAGE_ID.to_string(),
                json!({"id": IMAGE_ID, "name": "cirros", "status": "active"}),
            )]),
            faults: Vec::new(),
            next_dest: 0,
            requests: 0,
            bytes_out: 0,
            list_ticks: 0,
            unknown: BTreeMap::new(),
            conflicts: 0,
            calls: Vec::new(),
            record: true,
        }
    }

    // ----- set-up and faults ------------------------------------------------

    /// The hypervisor (and Placement provider) name of a service host.
    pub fn hypervisor_of(&self, host: &str) -> String {
        if self.opts.short_hosts && !host.contains('.') {
            format!("{host}.maas")
        } else {
            host.to_string()
        }
    }

    /// Adds a server on `host`; returns its id.
    pub fn add_server(&mut self, name: &str, host: &str, vm_state: &str) -> String {
        let i = self.servers.len();
        let id = format!("00000000-0000-4000-9000-{i:012}");
        self.servers.push(FServer {
            id: id.clone(),
            name: name.to_string(),
            host: host.to_string(),
            status: match vm_state {
                "active" => "ACTIVE",
                "stopped" => "SHUTOFF",
                "paused" => "PAUSED",
                _ => "ACTIVE",
            }
            .into(),
            vm_state: vm_state.to_string(),
            task_state: None,
            posts: 0,
            gone: false,
            shares: Vec::new(),
            image: IMAGE_ID.into(),
        });
        self.by_id.insert(id.clone(), i);
        id
    }

    pub fn server(&self, id: &str) -> Option<&FServer> {
        self.by_id.get(id).map(|&i| &self.servers[i])
    }

    /// A server to change in a test's set-up.
    pub fn server_mut(&mut self, id: &str) -> &mut FServer {
        let i = self.by_id[id];
        &mut self.servers[i]
    }

    pub fn server_named(&self, name: &str) -> Option<&FServer> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// Deletes a server (reads 404, lists leave it out, its migrations stay).
    pub fn vanish(&mut self, id: &str) {
        if let Some(&i) = self.by_id.get(id) {
            self.servers[i].gone = true;
        }
    }

    /// Freezes `id`'s live migrations: running, no progress, until aborted
    /// or force-completed.
    pub fn stall(&mut self, id: &str) {
        self.stalled.insert(id.to_string());
    }

    /// Answers the next `times` requests `method` whose path, query or
    /// action key contains `matches` with `status`.
    pub fn inject(&mut self, method: &str, matches: &str, status: u16, times: u32) {
        self.faults.push(Fault {
            method: method.to_string(),
            matches: matches.to_string(),
            status,
            times,
        });
    }

    /// The recorded calls as lines, `POST /v2.1/… os-migrateLive -> 202`.
    pub fn call_lines(&self) -> Vec<String> {
        self.calls.iter().map(Call::line).collect()
    }

    /// How many recorded calls are `method` with a target containing
    /// `needle` (or that action).
    pub fn count(&self, method: &str, needle: &str) -> usize {
        self.calls
            .iter()
            .filter(|c| {
                c.method == method
                    && (c.target.contains(needle) || c.action.as_deref() == Some(needle))
            })
            .count()
    }

    /// What the bench checks after the run (also served at `GET /_fake/report`
    /// when the fake runs in a child process).
    pub fn summary(&self) -> Value {
        json!({
            "unknown": self.unknown,
            "requests": self.requests,
            "bytes_out": self.bytes_out,
            "list_ticks": self.list_ticks,
            "conflicts": self.conflicts,
            "max_limit": self.opts.max_limit,
            "source_service": self.services[0].status,
            "migrations": self.migrations.len(),
            "completed": self.migrations.iter().filter(|m| m.status == MStatus::Completed).count(),
            "servers": self.servers.iter().map(|s| (s.id.clone(), json!({"name": s.name, "host": s.host, "posts": s.posts}))).collect::<serde_json::Map<String, Value>>(),
        })
    }

    // ----- the simulation ---------------------------------------------------

    fn finish_live(&mut self, m: usize, at: u64) {
        let mig = &mut self.migrations[m];
        mig.status = MStatus::Completed;
        mig.updated = at;
        let (server, dest) = (mig.server, mig.dest.clone());
        let s = &mut self.servers[server];
        s.host = dest;
        s.task_state = None;
        s.status = "ACTIVE".into();
        // Queued ones waiting for this slot start at `at`.
        for q in self
            .migrations
            .iter_mut()
            .filter(|q| q.status == MStatus::Queued)
        {
            q.updated = q.updated.max(at);
        }
    }

    /// Advances the simulation to `now`, event by event: a completion frees
    /// a slot at its own time, and the oldest queued migration starts then.
    pub fn advance(&mut self, now: u64) {
        let dur = self.opts.migration_ms;
        // Cold migrations: `migrating` → `finished` (VERIFY_RESIZE on the dest).
        for m in self
            .migrations
            .iter_mut()
            .filter(|m| m.status == MStatus::Migrating && m.created + dur <= now)
        {
            m.status = MStatus::Finished;
            m.updated = m.created + dur;
            let s = &mut self.servers[m.server];
            s.host = m.dest.clone();
            s.status = "VERIFY_RESIZE".into();
            s.vm_state = "resized".into();
            s.task_state = None;
        }
        loop {
            let running = self
                .migrations
                .iter()
                .filter(|m| m.status == MStatus::Running)
                .count();
            if running < self.opts.max_concurrent
                && let Some(m) = self
                    .migrations
                    .iter_mut()
                    .filter(|m| m.status == MStatus::Queued)
                    .min_by_key(|m| m.id)
            {
                let at = m.updated.max(m.created);
                m.status = MStatus::Running;
                m.started = Some(at);
                m.updated = at;
                continue;
            }
            // The earliest completion due by now (stalled ones never are).
            let stalled = &self.stalled;
            let servers = &self.servers;
            let Some(i) = self
                .migrations
                .iter()
                .enumerate()
                .filter(|(_, m)| m.status == MStatus::Running)
                .filter(|(_, m)| !stalled.contains(&servers[m.server].id))
                .filter(|(_, m)| m.started.unwrap_or(0) + dur <= now)
                .min_by_key(|(_, m)| m.started)
                .map(|(i, _)| i)
            else {
                break;
            };
            let at = self.migrations[i].started.unwrap_or(0) + dur;
            self.finish_live(i, at);
        }
    }

    fn server_json(&self, s: &FServer) -> Value {
        json!({
            "id": s.id, "name": s.name,
            "status": s.status,
            "OS-EXT-STS:vm_state": s.vm_state, "OS-EXT-STS:task_state": s.task_state,
            "OS-EXT-STS:power_state": if s.vm_state == "stopped" { 4 } else { 1 },
            "OS-EXT-SRV-ATTR:host": s.host,
            "OS-EXT-SRV-ATTR:hypervisor_hostname": self.hypervisor_of(&s.host),
            "OS-EXT-SRV-ATTR:instance_name": format!("instance-{}", &s.id[24..]),
            "image": {"id": s.image},
            "tenant_id": "t1", "user_id": "u1", "locked": false,
            "flavor": {"vcpus": 1, "ram": self.opts.ram_mb, "disk": 10, "ephemeral": 0, "swap": 0,
                "original_name": "m1.small", "extra_specs": {}},
            "os-extended-volumes:volumes_attached": [],
            "metadata": {},
            "server_groups": [],
            "created": "2026-11-25T10:00:00Z", "updated": "2026-11-25T10:00:00Z",
        })
    }

    fn mig_json(&self, m: &FMig) -> Value {
        json!({
            "id": m.id, "uuid": m.uuid, "instance_uuid": self.servers[m.server].id,
            "status": m.status.as_str(),
            "migration_type": if m.live { "live-migration" } else { "migration" },
            "source_compute": m.source, "source_node": self.hypervisor_of(&m.source),
            "dest_compute": m.dest, "dest_host": "10.0.0.2", "dest_node": self.hypervisor_of(&m.dest),
            "old_instance_type_id": 1, "new_instance_type_id": 1,
            "created_at": nova_ts(m.created), "updated_at": nova_ts(m.updated),
            "user_id": "u1", "project_id": "t1",
        })
    }

    fn service_json(&self, s: &FService) -> Value {
        json!({"id": format!("svc-{}", s.host), "binary": "nova-compute", "host": s.host,
            "zone": "nova", "status": s.status, "state": s.state,
            "disabled_reason": s.disabled_reason, "forced_down": false,
            "updated_at": nova_ts(now_ms())})
    }

    fn hosts(&self) -> Vec<String> {
        std::iter::once(&self.opts.source)
            .chain(&self.opts.dests)
            .cloned()
            .collect()
    }

    fn catalog(&self) -> Value {
        let eps = |url: String| -> Vec<Value> {
            ["public", "internal", "admin"]
                .iter()
                .map(|i| {
                    json!({"id": format!("e-{i}"), "interface": i, "region": "RegionOne",
                    "region_id": "RegionOne", "url": url})
                })
                .collect()
        };
        let mut services = vec![
            json!({"type": "identity", "name": "keystone", "endpoints": eps(format!("{}/v3", self.uri))}),
            json!({"type": "compute", "name": "nova", "endpoints": eps(format!("{}/v2.1", self.uri))}),
            json!({"type": "placement", "name": "placement", "endpoints": eps(format!("{}/placement", self.uri))}),
        ];
        if self.opts.image_service {
            services.push(json!({"type": "image", "name": "glance", "endpoints": eps(format!("{}/image", self.uri))}));
        }
        Value::Array(services)
    }

    /// Pages `items` Nova-style: `limit` capped at `max_limit`, `marker`
    /// = the key of the last item of the previous page.
    fn page<'a, T>(
        &self,
        items: Vec<&'a T>,
        q: &BTreeMap<String, String>,
        key: impl Fn(&T) -> &str,
    ) -> Result<(Vec<&'a T>, bool), String> {
        let limit = match q.get("limit") {
            Some(l) => l.parse::<usize>().map_err(|_| format!("bad limit {l}"))?,
            None => self.opts.max_limit,
        }
        .min(self.opts.max_limit);
        let start = match q.get("marker") {
            Some(m) => {
                items
                    .iter()
                    .position(|i| key(i) == m)
                    .ok_or_else(|| format!("marker {m} not found"))?
                    + 1
            }
            None => 0,
        };
        let rest: Vec<&T> = items.into_iter().skip(start).collect();
        let more = rest.len() > limit;
        Ok((rest.into_iter().take(limit).collect(), more))
    }

    fn take_fault(&mut self, method: &str, target: &str, action: Option<&str>) -> Option<u16> {
        let i = self.faults.iter().position(|f| {
            f.method == method && (target.contains(&f.matches) || action == Some(&f.matches))
        })?;
        let f = &mut self.faults[i];
        let status = f.status;
        f.times = f.times.saturating_sub(1);
        if f.times == 0 {
            self.faults.remove(i);
        }
        Some(status)
    }

    pub fn handle(&mut self, req: &Request) -> (u16, Option<Value>, Vec<(&'static str, String)>) {
        let method = req.method.as_str().to_string();
        let path = req.url.path().trim_end_matches('/').to_string();
        let target = format!(
            "{path}{}",
            req.url.query().map(|q| format!("?{q}")).unwrap_or_default()
        );
        let action = if method == "POST" && path.ends_with("/action") {
            serde_json::from_slice::<Value>(&req.body)
                .ok()
                .and_then(|b| b.as_object().and_then(|o| o.keys().next().cloned()))
        } else {
            None
        };
        let (status, body, headers) = self.answer(req, &method, &path, &target, action.as_deref());
        if self.record {
            self.calls.push(Call {
                method,
                target,
                action,
                status,
            });
        }
        (status, body, headers)
    }

    fn answer(
        &mut self,
        req: &Request,
        method: &str,
        path: &str,
        target: &str,
        action: Option<&str>,
    ) -> (u16, Option<Value>, Vec<(&'static str, String)>) {
        let q = qmap(req);
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let now = now_ms();
        self.advance(now);
        if (method, segs.as_slice()) == ("POST", &["v3", "auth", "tokens"][..]) {
            let body = json!({"token": {
                "issued_at": nova_ts(now) + "Z",
                "expires_at": nova_ts(now + 24 * 3600 * 1000) + "Z",
                "methods": ["password"],
                "user": {"id": "u1", "name": "nova_live_migration"},
                "project": {"id": "p1", "name": "services"},
                "roles": [{"id": "r1", "name": "admin"}],
                "catalog": self.catalog(),
            }});
            return (201, Some(body), vec![("X-Subject-Token", TOKEN.into())]);
        }
        let token_ok = req
            .headers
            .get("X-Auth-Token")
            .and_then(|v| v.to_str().ok())
            == Some(TOKEN);
        if !token_ok {
            *self
                .unknown
                .entry(format!("{method} {path} without a valid token"))
                .or_default() += 1;
            return (401, Some(json!({"error": {"code": 401}})), vec![]);
        }
        if let Some(status) = self.take_fault(method, target, action) {
            let body = match status {
                404 => not_found("injected: not found").1,
                409 => conflict("injected: conflict").1,
                400 => bad_request("injected: bad request").1,
                s => Some(json!({"computeFault": {"code": s, "message": "injected fault"}})),
            };
            return (status, body, vec![]);
        }
        let (status, body) = match self.route(method, &segs, &q, req, now) {
            Some(r) => r,
            None => {
                *self
                    .unknown
                    .entry(format!("{method} {target}"))
                    .or_default() += 1;
                not_found("no such route in the fake")
            }
        };
        (status, body, vec![])
    }

    fn live_server(&self, id: &str) -> Option<usize> {
        self.by_id
            .get(id)
            .copied()
            .filter(|&i| !self.servers[i].gone)
    }

    /// `None`: a route (or query parameter) the fake does not implement.
    fn route(
        &mut self,
        method: &str,
        segs: &[&str],
        q: &BTreeMap<String, String>,
        req: &Request,
        now: u64,
    ) -> Option<(u16, Option<Value>)> {
        let only = |allowed: &[&str]| q.keys().all(|k| allowed.contains(&k.as_str()));
        Some(match (method, segs) {
            ("GET", ["v2.1"]) if q.is_empty() => ok(json!({"version": {
                "id": "v2.1", "status": "CURRENT",
                "version": if self.opts.shares_api { "2.97" } else { "2.96" }, "min_version": "2.1",
                "updated": "2013-07-23T11:33:21Z",
                "links": [{"rel": "self", "href": format!("{}/v2.1/", self.uri)}]}})),
            ("GET", ["v2.1", "os-services"]) if only(&["binary", "host"]) => {
                let list: Vec<Value> = self
                    .services
                    .iter()
                    .filter(|s| q.get("host").is_none_or(|h| *h == s.host))
                    .filter(|_| q.get("binary").is_none_or(|b| b == "nova-compute"))
                    .map(|s| self.service_json(s))
                    .collect();
                ok(json!({ "services": list }))
            }
            ("PUT", ["v2.1", "os-services", id]) if q.is_empty() => {
                let body: Value = serde_json::from_slice(&req.body).ok()?;
                let i = self
                    .services
                    .iter()
                    .position(|s| format!("svc-{}", s.host) == *id)?;
                let status = body.get("status").and_then(Value::as_str)?;
                if status != "enabled" && status != "disabled" {
                    return None;
                }
                let s = &mut self.services[i];
                s.status = status.to_string();
                s.disabled_reason = body
                    .get("disabled_reason")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let v = self.service_json(&self.services[i]);
                ok(json!({ "service": v }))
            }
            ("GET", ["v2.1", "os-hypervisors", "detail"])
                if only(&["with_servers", "limit", "marker"]) =>
            {
                let hosts = self.hosts();
                let items: Vec<&String> = hosts.iter().collect();
                let (page, more) = match self.page(items, q, |h| h.as_str()) {
                    Ok(p) => p,
                    Err(e) => return Some(bad_request(&e)),
                };
                let list: Vec<Value> = page
                    .iter()
                    .map(|h| {
                        let hv = self.hypervisor_of(h);
                        let svc = self.services.iter().find(|s| &s.host == *h);
                        json!({"id": h, "hypervisor_hostname": hv,
                            "state": svc.map_or("up", |s| s.state.as_str()),
                            "status": svc.map_or("enabled", |s| s.status.as_str()),
                            "hypervisor_type": "QEMU", "hypervisor_version": 8002000,
                            "host_ip": "10.0.0.1", "uptime": null,
                            "service": {"id": format!("svc-{h}"), "host": h, "disabled_reason": null}})
                    })
                    .collect();
                let mut v = json!({ "hypervisors": list });
                if more && let Some(last) = page.last() {
                    v["hypervisors_links"] = json!([{"rel": "next", "href": format!(
                        "{}/v2.1/os-hypervisors/detail?limit={}&marker={last}", self.uri, page.len())}]);
                }
                ok(v)
            }
            ("GET", ["v2.1", "servers", "detail"])
                if only(&["all_tenants", "host", "limit", "marker"]) =>
            {
                let items: Vec<&FServer> = self
                    .servers
                    .iter()
                    .filter(|s| !s.gone)
                    .filter(|s| q.get("host").is_none_or(|h| *h == s.host))
                    .collect();
                let (page, more) = match self.page(items, q, |s| s.id.as_str()) {
                    Ok(p) => p,
                    Err(e) => return Some(bad_request(&e)),
                };
                let mut v = json!({"servers": page.iter().map(|s| self.server_json(s)).collect::<Vec<_>>()});
                if more && let Some(last) = page.last() {
                    v["servers_links"] = json!([{"rel": "next", "href": format!(
                        "{}/v2.1/servers/detail?all_tenants=1&host={}&limit={}&marker={}",
                        self.uri, q.get("host").map(String::as_str).unwrap_or(""),
                        page.len(), last.id)}]);
                }
                ok(v)
            }
            ("GET", ["v2.1", "servers", id]) if q.is_empty() => match self.live_server(id) {
                Some(i) => ok(json!({"server": self.server_json(&self.servers[i])})),
                None => not_found(&format!("Instance {id} could not be found.")),
            },
            // Nova's api/openstack/compute/server_shares.py (≥ 2.97).
            ("GET", ["v2.1", "servers", id, "shares"]) if q.is_empty() && self.opts.shares_api => {
                match self.live_server(id) {
                    Some(i) => {
                        let list: Vec<Value> = (self.servers[i].shares.iter())
                            .map(|sh| json!({"share_id": sh, "status": "active", "tag": sh}))
                            .collect();
                        ok(json!({ "shares": list }))
                    }
                    None => not_found(&format!("Instance {id} could not be found.")),
                }
            }
            ("GET", ["image", "v2", "images", id]) if q.is_empty() && self.opts.image_service => {
                match self.images.get(*id) {
                    Some(image) => ok(image.clone()),
                    None => not_found(&format!("No image found with ID {id}")),
                }
            }
            ("POST", ["v2.1", "servers", id, "action"]) if q.is_empty() => {
                let body: Value = serde_json::from_slice(&req.body).ok()?;
                let Some(i) = self.live_server(id) else {
                    return Some(not_found(&format!("Instance {id} could not be found.")));
                };
                if let Some(ml) = body.get("os-migrateLive") {
                    self.migrate_live(i, ml, now)?
                } else if body.get("migrate").is_some() {
                    self.migrate_cold(i, &body["migrate"], now)?
                } else if body.get("confirmResize").is_some() {
                    self.confirm(i, now)
                } else {
                    return None;
                }
            }
            ("GET", ["v2.1", "os-migrations"])
                if only(&[
                    "instance_uuid",
                    "source_compute",
                    "host",
                    "changes-since",
                    "migration_type",
                    "limit",
                    "marker",
                ]) =>
            {
                if q.contains_key("source_compute") {
                    self.list_ticks += 1;
                }
                let since = match q.get("changes-since") {
                    Some(s) => Some(parse_iso(s)?),
                    None => None,
                };
                // Newest first (created_at, id desc), as Nova sorts.
                let items: Vec<&FMig> = self
                    .migrations
                    .iter()
                    .rev()
                    .filter(|m| {
                        q.get("instance_uuid")
                            .is_none_or(|u| *u == self.servers[m.server].id)
                    })
                    .filter(|m| q.get("source_compute").is_none_or(|h| *h == m.source))
                    // `host`: from or to it (Nova's `or_(source, dest)`).
                    .filter(|m| q.get("host").is_none_or(|h| *h == m.source || *h == m.dest))
                    .filter(|m| {
                        q.get("migration_type").is_none_or(|t| {
                            *t == if m.live {
                                "live-migration"
                            } else {
                                "migration"
                            }
                        })
                    })
                    // Nova compares with second precision stored times.
                    .filter(|m| since.is_none_or(|t| m.updated / 1000 * 1000 >= t))
                    .collect();
                let (page, more) = match self.page(items, q, |m| m.uuid.as_str()) {
                    Ok(p) => p,
                    Err(e) => return Some(bad_request(&e)),
                };
                let mut v = json!({"migrations": page.iter().map(|m| self.mig_json(m)).collect::<Vec<_>>()});
                if more && let Some(last) = page.last() {
                    v["migrations_links"] = json!([{"rel": "next", "href": format!(
                        "{}/v2.1/os-migrations?limit={}&marker={}", self.uri, page.len(), last.uuid)}]);
                }
                ok(v)
            }
            ("GET", ["v2.1", "servers", id, "migrations", mid]) if q.is_empty() => {
                let i = self.live_server(id)?;
                let mid: u64 = mid.parse().ok()?;
                match self.in_progress(i, mid) {
                    Some(m) => {
                        let m = &self.migrations[m];
                        let total = self.opts.ram_mb << 20;
                        let stalled = self.stalled.contains(*id);
                        let done = if stalled {
                            0.5
                        } else {
                            m.started.map_or(0.0, |s| {
                                (now.saturating_sub(s) as f64 / self.opts.migration_ms as f64)
                                    .min(1.0)
                            })
                        };
                        let processed = (total as f64 * done) as u64;
                        let mut v = self.mig_json(m);
                        let o = v.as_object_mut()?;
                        o.remove("instance_uuid");
                        o.remove("migration_type");
                        o.insert("server_uuid".into(), json!(id));
                        for (k, x) in [
                            ("memory_total_bytes", total),
                            ("memory_processed_bytes", processed),
                            ("memory_remaining_bytes", total - processed),
                            ("disk_total_bytes", 0),
                            ("disk_processed_bytes", 0),
                            ("disk_remaining_bytes", 0),
                        ] {
                            o.insert(k.into(), json!(x));
                        }
                        ok(json!({ "migration": v }))
                    }
                    None => not_found(&format!(
                        "In-progress live migration {mid} is not found for server {id}."
                    )),
                }
            }
            ("POST", ["v2.1", "servers", id, "migrations", mid, "action"]) if q.is_empty() => {
                let body: Value = serde_json::from_slice(&req.body).ok()?;
                body.get("force_complete")?;
                let i = self.live_server(id)?;
                let mid: u64 = mid.parse().ok()?;
                match self.in_progress(i, mid) {
                    Some(m) if self.migrations[m].status == MStatus::Running => {
                        self.stalled.remove(*id);
                        self.finish_live(m, now);
                        (202, None)
                    }
                    Some(_) => conflict(&format!(
                        "Migration {mid} state of instance {id} is queued. Cannot force_complete while the migration is in this state."
                    )),
                    None => bad_request(&format!(
                        "Migration {mid} for instance {id} is not in progress"
                    )),
                }
            }
            ("DELETE", ["v2.1", "servers", id, "migrations", mid]) if q.is_empty() => {
                let i = self.live_server(id)?;
                let mid: u64 = mid.parse().ok()?;
                match self.in_progress(i, mid) {
                    Some(m) => {
                        let mig = &mut self.migrations[m];
                        mig.status = MStatus::Cancelled;
                        mig.updated = now;
                        let s = &mut self.servers[i];
                        s.task_state = None;
                        s.status = "ACTIVE".into();
                        self.stalled.remove(*id);
                        (202, None)
                    }
                    None => bad_request(&format!(
                        "Migration {mid} for instance {id} is not in progress"
                    )),
                }
            }
            ("GET", ["v2.1", "os-server-groups"]) if only(&["all_projects", "limit", "offset"]) => {
                let offset: usize = q.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
                let limit: usize = q
                    .get("limit")
                    .and_then(|o| o.parse().ok())
                    .unwrap_or(self.opts.max_limit);
                let page: Vec<Value> = self
                    .groups
                    .iter()
                    .skip(offset)
                    .take(limit)
                    .cloned()
                    .collect();
                ok(json!({ "server_groups": page }))
            }
            ("GET", ["v2.1", "os-aggregates"]) if q.is_empty() => ok(json!({"aggregates": []})),
            ("GET", ["v2.1", "servers", id, "os-instance-actions"]) if q.is_empty() => {
                self.live_server(id)?;
                ok(json!({"instanceActions": []}))
            }
            ("GET", ["placement", "resource_providers"]) if only(&["name"]) => {
                let name = q.get("name")?;
                let rps: Vec<Value> = self
                    .hosts()
                    .iter()
                    .map(|h| self.hypervisor_of(h))
                    .filter(|hv| hv == name)
                    .map(|hv| json!({"uuid": format!("rp-{hv}"), "name": hv, "generation": 1}))
                    .collect();
                ok(json!({ "resource_providers": rps }))
            }
            ("GET", ["placement", "resource_providers", rp, what]) if q.is_empty() => {
                let hv = rp.strip_prefix("rp-")?;
                let Some(host) = self
                    .hosts()
                    .into_iter()
                    .find(|h| self.hypervisor_of(h) == hv)
                else {
                    return Some((
                        404,
                        Some(json!({"errors": [{"status": 404,
                        "title": "Not Found", "detail": "No resource provider"}]})),
                    ));
                };
                let on: Vec<&FServer> = self
                    .servers
                    .iter()
                    .filter(|s| !s.gone && s.host == host)
                    .collect();
                let n = on.len() as u64;
                let ram = self.opts.ram_mb;
                match *what {
                    "inventories" => ok(json!({"resource_provider_generation": 1, "inventories": {
                        "VCPU": {"total": 256, "reserved": 0, "min_unit": 1, "max_unit": 256, "step_size": 1, "allocation_ratio": 16.0},
                        "MEMORY_MB": {"total": 4 << 20, "reserved": 4096, "min_unit": 1, "max_unit": 4 << 20, "step_size": 1, "allocation_ratio": 1.0},
                        "DISK_GB": {"total": 100_000, "reserved": 0, "min_unit": 1, "max_unit": 100_000, "step_size": 1, "allocation_ratio": 1.0}}})),
                    "usages" => ok(json!({"resource_provider_generation": 1, "usages": {
                        "VCPU": n, "MEMORY_MB": n * ram, "DISK_GB": n * 10}})),
                    "allocations" => {
                        let a: serde_json::Map<String, Value> = on
                            .iter()
                            .map(|s| {
                                (
                                    s.id.clone(),
                                    json!({"resources": {"VCPU": 1, "MEMORY_MB": ram, "DISK_GB": 10}}),
                                )
                            })
                            .collect();
                        ok(json!({"resource_provider_generation": 1, "allocations": a}))
                    }
                    _ => return None,
                }
            }
            _ => return None,
        })
    }

    /// The index of `server`'s migration `mid` when it is in progress.
    fn in_progress(&self, server: usize, mid: u64) -> Option<usize> {
        self.migrations.iter().position(|m| {
            m.id == mid
                && m.server == server
                && matches!(m.status, MStatus::Queued | MStatus::Running)
        })
    }

    fn pick_dest(&mut self, requested: Option<&str>) -> Result<String, (u16, Option<Value>)> {
        match requested {
            Some(h) if self.opts.dests.iter().any(|d| d == h) => Ok(h.to_string()),
            Some(h) => Err(bad_request(&format!(
                "Compute host {h} could not be found."
            ))),
            None => {
                let d = self.opts.dests[self.next_dest % self.opts.dests.len()].clone();
                self.next_dest += 1;
                Ok(d)
            }
        }
    }

    fn new_migration(&mut self, server: usize, live: bool, dest: String, now: u64, block: Value) {
        let mid = self.migrations.len() as u64 + 1;
        let source = self.servers[server].host.clone();
        let prior_vm_state = self.servers[server].vm_state.clone();
        self.migrations.push(FMig {
            id: mid,
            uuid: format!("11111111-0000-4000-8000-{mid:012}"),
            server,
            live,
            source,
            dest,
            status: if live {
                MStatus::Queued
            } else {
                MStatus::Migrating
            },
            created: now,
            updated: now,
            started: None,
            block_migration: block,
            prior_vm_state,
        });
        self.servers[server].posts += 1;
    }

    fn migrate_live(&mut self, i: usize, ml: &Value, now: u64) -> Option<(u16, Option<Value>)> {
        let block = ml.get("block_migration")?.clone();
        if !matches!(block.as_str(), Some("auto")) && !block.is_boolean() {
            return Some(bad_request(
                "Invalid input for field/attribute block_migration.",
            ));
        }
        let s = &self.servers[i];
        if let Some(t) = &s.task_state {
            self.conflicts += 1;
            return Some(conflict(&format!(
                "Cannot 'os-migrateLive' instance {} while it is in task_state {t}",
                s.id
            )));
        }
        if s.vm_state != "active" && s.vm_state != "paused" {
            return Some(conflict(&format!(
                "Cannot 'os-migrateLive' instance {} while it is in vm_state {}",
                s.id, s.vm_state
            )));
        }
        let dest = match self.pick_dest(ml.get("host").and_then(Value::as_str)) {
            Ok(d) => d,
            Err(r) => return Some(r),
        };
        self.new_migration(i, true, dest, now, block);
        let s = &mut self.servers[i];
        s.task_state = Some("migrating".into());
        s.status = "MIGRATING".into();
        self.advance(now);
        Some((202, None))
    }

    fn migrate_cold(&mut self, i: usize, m: &Value, now: u64) -> Option<(u16, Option<Value>)> {
        let s = &self.servers[i];
        if let Some(t) = &s.task_state {
            return Some(conflict(&format!(
                "Cannot 'migrate' instance {} while it is in task_state {t}",
                s.id
            )));
        }
        let dest = match self.pick_dest(m.get("host").and_then(Value::as_str)) {
            Ok(d) => d,
            Err(r) => return Some(r),
        };
        self.new_migration(i, false, dest, now, Value::Null);
        let s = &mut self.servers[i];
        s.task_state = Some("resize_migrating".into());
        s.status = "RESIZE".into();
        Some((202, None))
    }

    fn confirm(&mut self, i: usize, now: u64) -> (u16, Option<Value>) {
        let id = self.servers[i].id.clone();
        if self.servers[i].vm_state != "resized" {
            return conflict(&format!(
                "Cannot 'confirmResize' instance {id} while it is in vm_state {}",
                self.servers[i].vm_state
            ));
        }
        let mut prior = "active".to_string();
        if let Some(m) = self
            .migrations
            .iter_mut()
            .rev()
            .find(|m| m.server == i && m.status == MStatus::Finished)
        {
            m.status = MStatus::Confirmed;
            m.updated = now;
            prior = m.prior_vm_state.clone();
        }
        let s = &mut self.servers[i];
        s.status = if prior == "stopped" {
            "SHUTOFF"
        } else {
            "ACTIVE"
        }
        .into();
        s.vm_state = prior;
        (204, None)
    }
}

/// The catch-all wiremock responder.
struct Responder(Arc<Mutex<FakeNova>>);

impl Respond for Responder {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut cloud = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if req.url.path() == "/_fake/report" {
            return ResponseTemplate::new(200).set_body_json(cloud.summary());
        }
        let (status, body, headers) = cloud.handle(req);
        cloud.requests += 1;
        let mut t = ResponseTemplate::new(status).insert_header(
            "x-openstack-request-id",
            format!("req-{}", cloud.requests).as_str(),
        );
        for (k, v) in headers {
            t = t.insert_header(k, v.as_str());
        }
        if let Some(b) = body {
            let bytes = serde_json::to_vec(&b).unwrap_or_default();
            cloud.bytes_out += bytes.len() as u64;
            t = t.set_body_raw(bytes, "application/json");
        }
        t
    }
}

/// A running fake: its server and its state.
pub struct Fake {
    pub server: MockServer,
    pub cloud: Arc<Mutex<FakeNova>>,
}

impl Fake {
    pub async fn start(opts: Options) -> Fake {
        let server = MockServer::builder()
            .disable_request_recording()
            .start()
            .await;
        let cloud = Arc::new(Mutex::new(FakeNova::new(server.uri(), opts)));
        Mock::given(wiremock::matchers::any())
            .respond_with(Responder(cloud.clone()))
            .mount(&server)
            .await;
        Fake { server, cloud }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// The state, locked (hold it briefly: the fake answers nothing meanwhile).
    pub fn state(&self) -> MutexGuard<'_, FakeNova> {
        self.cloud.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The identity-credentials bag keystone would publish, pointing at `uri`.
pub fn relation_bag(uri: &str) -> BTreeMap<String, String> {
    let url = reqwest::Url::parse(uri).expect("fake uri");
    [
        ("auth_protocol", "http".to_string()),
        ("auth_host", url.host_str().unwrap_or_default().to_string()),
        ("auth_port", url.port().unwrap_or(80).to_string()),
        ("credentials_username", "nova_live_migration".into()),
        ("credentials_password", PASSWORD.into()),
        ("credentials_project", "services".into()),
        ("credentials_user_domain_name", "service_domain".into()),
        ("credentials_project_domain_name", "service_domain".into()),
        ("region", "RegionOne".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}
