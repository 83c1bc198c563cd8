//! `bench scale [N]`: a drain of N instances (default 500) through the
//! production orchestrator (`nlm::drain::run`, same client, same planner)
//! against `FakeCloud`, an in-process fake of Keystone, Nova and Placement
//! served by wiremock (one catch-all responder over `Arc<Mutex<FakeCloud>>`).
//! Prints peak RSS, wall time, API requests per tick and the journal size;
//! then times `plan::Drain::step` alone for N = 100, 500, 2000.
//!
//! The fake is a small event simulation of one source host: each accepted
//! `os-migrateLive` creates a migration record that is `queued`, becomes
//! `running` when one of the source's `max_concurrent_live_migrations` slots
//! is free (Nova's per-compute semaphore) and `completed` after a fixed
//! duration, at which moment the server moves to a destination (round
//! robin over the other hosts). Unknown routes and unknown query parameters
//! are answered 404/400 and counted: the bench fails if any occurred.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nlm::config::Config;
use nlm::drain::{self, Kind, Params};
use nlm::openstack::{AuthConfig, Interface, OpenStack};
use nlm::paths::Paths;
use nlm::plan::{self, Command, MigrationStatus, MigrationView, Observation, ServerView};
use nlm::time::{iso, now_ms, parse_iso};
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const SOURCE: &str = "node1.maas";
const DESTS: [&str; 4] = ["node2.maas", "node3.maas", "node4.maas", "node5.maas"];
const TOKEN: &str = "scale-token";
const RAM_MB: u64 = 2048;
/// Nova's `max_concurrent_live_migrations` on the source (and in its nova.conf).
const NOVA_MAX_CONCURRENT: usize = 4;
const POLL_INTERVAL_S: f64 = 0.2;

/// Nova-like timestamp: `2026-11-25T21:30:05.123000` (UTC, no zone).
fn nova_ts(ms: u64) -> String {
    format!("{}.{:06}", &iso(ms)[..19], (ms % 1000) * 1000)
}

struct FServer {
    id: String,
    name: String,
    host: String,
    /// `migrating` while a live migration is queued or running.
    task_state: Option<String>,
    /// Accepted `os-migrateLive` POSTs.
    posts: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum MStatus {
    Queued,
    Running,
    Completed,
}

impl MStatus {
    fn as_str(self) -> &'static str {
        match self {
            MStatus::Queued => "queued",
            MStatus::Running => "running",
            MStatus::Completed => "completed",
        }
    }
}

struct FMig {
    id: u64,
    uuid: String,
    server: usize,
    dest: String,
    status: MStatus,
    created: u64,
    updated: u64,
    started: Option<u64>,
}

struct FService {
    host: String,
    status: String,
    disabled_reason: Option<String>,
}

/// The simulated cloud.
pub struct FakeCloud {
    uri: String,
    servers: Vec<FServer>,
    by_id: HashMap<String, usize>,
    services: Vec<FService>,
    migrations: Vec<FMig>,
    migration_ms: u64,
    max_concurrent: usize,
    /// Nova's `[api] max_limit` (page size cap).
    max_limit: usize,
    next_dest: usize,
    /// Requests answered, and the bytes of their bodies.
    requests: u64,
    bytes_out: u64,
    /// `GET /os-migrations?source_compute=` calls: one per poll tick.
    list_ticks: u64,
    /// Requests the fake does not implement (method path?query → count).
    unknown: BTreeMap<String, u64>,
    conflicts: u64,
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

impl FakeCloud {
    pub fn new(uri: String, n: usize, migration_ms: u64) -> FakeCloud {
        let servers: Vec<FServer> = (0..n)
            .map(|i| FServer {
                id: format!("00000000-0000-4000-8000-{i:012}"),
                name: format!("scale-{i:04}"),
                host: SOURCE.to_string(),
                task_state: None,
                posts: 0,
            })
            .collect();
        let by_id = servers
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        let services = std::iter::once(SOURCE)
            .chain(DESTS)
            .map(|h| FService {
                host: h.to_string(),
                status: "enabled".into(),
                disabled_reason: None,
            })
            .collect();
        let max_limit = std::env::var("NLM_SCALE_MAX_LIMIT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        FakeCloud {
            uri,
            servers,
            by_id,
            services,
            migrations: Vec::new(),
            migration_ms,
            max_concurrent: NOVA_MAX_CONCURRENT,
            max_limit,
            next_dest: 0,
            requests: 0,
            bytes_out: 0,
            list_ticks: 0,
            unknown: BTreeMap::new(),
            conflicts: 0,
        }
    }

    /// What the bench checks after the run (also served at `GET /_fake/report`
    /// when the fake runs in a child process).
    fn summary(&self) -> Value {
        json!({
            "unknown": self.unknown,
            "requests": self.requests,
            "bytes_out": self.bytes_out,
            "list_ticks": self.list_ticks,
            "conflicts": self.conflicts,
            "max_limit": self.max_limit,
            "source_service": self.services[0].status,
            "migrations": self.migrations.len(),
            "completed": self.migrations.iter().filter(|m| m.status == MStatus::Completed).count(),
            "servers": self.servers.iter().map(|s| (s.id.clone(), json!({"name": s.name, "host": s.host, "posts": s.posts}))).collect::<serde_json::Map<String, Value>>(),
        })
    }

    /// Advances the simulation to `now`, event by event: a completion frees
    /// a slot at its own time, and the oldest queued migration starts then.
    fn advance(&mut self, now: u64) {
        loop {
            let running = self
                .migrations
                .iter()
                .filter(|m| m.status == MStatus::Running)
                .count();
            // Start queued ones while slots are free (at their creation time
            // or when the slot freed, whichever is later: `updated`).
            if running < self.max_concurrent
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
            // The earliest completion due by now.
            let dur = self.migration_ms;
            let Some(m) = self
                .migrations
                .iter_mut()
                .filter(|m| m.status == MStatus::Running)
                .filter(|m| m.started.unwrap_or(0) + dur <= now)
                .min_by_key(|m| m.started)
            else {
                break;
            };
            let at = m.started.unwrap_or(0) + dur;
            m.status = MStatus::Completed;
            m.updated = at;
            let (server, dest) = (m.server, m.dest.clone());
            let s = &mut self.servers[server];
            s.host = dest;
            s.task_state = None;
            // Queued ones waiting for this slot start at `at`.
            for q in self
                .migrations
                .iter_mut()
                .filter(|q| q.status == MStatus::Queued)
            {
                q.updated = q.updated.max(at);
            }
        }
    }

    fn server_json(&self, s: &FServer) -> Value {
        let migrating = s.task_state.is_some();
        json!({
            "id": s.id, "name": s.name,
            "status": if migrating { "MIGRATING" } else { "ACTIVE" },
            "OS-EXT-STS:vm_state": "active", "OS-EXT-STS:task_state": s.task_state,
            "OS-EXT-STS:power_state": 1,
            "OS-EXT-SRV-ATTR:host": s.host, "OS-EXT-SRV-ATTR:hypervisor_hostname": s.host,
            "OS-EXT-SRV-ATTR:instance_name": format!("instance-{}", &s.id[24..]),
            "image": {"id": "3b6a1c2e-9d4f-4e8a-8c1b-6f0d2a7e5c01"},
            "tenant_id": "t1", "user_id": "u1", "locked": false,
            "flavor": {"vcpus": 1, "ram": RAM_MB, "disk": 10, "ephemeral": 0, "swap": 0,
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
            "status": m.status.as_str(), "migration_type": "live-migration",
            "source_compute": SOURCE, "source_node": SOURCE,
            "dest_compute": m.dest, "dest_host": "10.0.0.2", "dest_node": m.dest,
            "old_instance_type_id": 1, "new_instance_type_id": 1,
            "created_at": nova_ts(m.created), "updated_at": nova_ts(m.updated),
            "user_id": "u1", "project_id": "t1",
        })
    }

    fn service_json(&self, s: &FService) -> Value {
        json!({"id": format!("svc-{}", s.host), "binary": "nova-compute", "host": s.host,
            "zone": "nova", "status": s.status, "state": "up",
            "disabled_reason": s.disabled_reason, "forced_down": false,
            "updated_at": nova_ts(now_ms())})
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
        json!([
            {"type": "identity", "name": "keystone", "endpoints": eps(format!("{}/v3", self.uri))},
            {"type": "compute", "name": "nova", "endpoints": eps(format!("{}/v2.1", self.uri))},
            {"type": "placement", "name": "placement", "endpoints": eps(format!("{}/placement", self.uri))},
        ])
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
            None => self.max_limit,
        }
        .min(self.max_limit);
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

    fn handle(&mut self, req: &Request) -> (u16, Option<Value>, Vec<(&'static str, String)>) {
        let method = req.method.as_str().to_string();
        let path = req.url.path().trim_end_matches('/').to_string();
        let q = qmap(req);
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let now = now_ms();
        self.advance(now);
        if (method.as_str(), segs.as_slice()) == ("POST", &["v3", "auth", "tokens"][..]) {
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
            self.unknown
                .entry(format!("{method} {path} without a valid token"))
                .and_modify(|n| *n += 1)
                .or_insert(1);
            return (401, Some(json!({"error": {"code": 401}})), vec![]);
        }
        let (status, body) = match self.route(&method, &segs, &q, req, now) {
            Some(r) => r,
            None => {
                let key = format!(
                    "{method} {path}{}",
                    req.url.query().map(|q| format!("?{q}")).unwrap_or_default()
                );
                *self.unknown.entry(key).or_default() += 1;
                not_found("no such route in the fake")
            }
        };
        (status, body, vec![])
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
                "id": "v2.1", "status": "CURRENT", "version": "2.96", "min_version": "2.1",
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
            ("GET", ["v2.1", "servers", "detail"])
                if only(&["all_tenants", "host", "limit", "marker"]) =>
            {
                let items: Vec<&FServer> = self
                    .servers
                    .iter()
                    .filter(|s| q.get("host").is_none_or(|h| *h == s.host))
                    .collect();
                let (page, more) = match self.page(items, q, |s| s.id.as_str()) {
                    Ok(p) => p,
                    Err(e) => return Some((400, Some(json!({"badRequest": {"message": e}})))),
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
            ("GET", ["v2.1", "servers", id]) if q.is_empty() => match self.by_id.get(*id) {
                Some(&i) => ok(json!({"server": self.server_json(&self.servers[i])})),
                None => not_found("Instance could not be found."),
            },
            ("POST", ["v2.1", "servers", id, "action"]) if q.is_empty() => {
                let body: Value = serde_json::from_slice(&req.body).ok()?;
                let ml = body.get("os-migrateLive")?;
                // The fake only implements the scheduler's choice, auto block.
                if !ml.get("host").is_some_and(Value::is_null)
                    || ml.get("block_migration") != Some(&json!("auto"))
                {
                    return None;
                }
                let &i = self.by_id.get(*id)?;
                let s = &self.servers[i];
                if s.task_state.is_some() {
                    self.conflicts += 1;
                    return Some((
                        409,
                        Some(json!({"conflictingRequest": {"code": 409,
                        "message": "Cannot 'os-migrateLive' instance while it is in task_state migrating"}})),
                    ));
                }
                let dest = DESTS[self.next_dest % DESTS.len()].to_string();
                self.next_dest += 1;
                let mid = self.migrations.len() as u64 + 1;
                self.migrations.push(FMig {
                    id: mid,
                    uuid: format!("11111111-0000-4000-8000-{mid:012}"),
                    server: i,
                    dest,
                    status: MStatus::Queued,
                    created: now,
                    updated: now,
                    started: None,
                });
                let s = &mut self.servers[i];
                s.task_state = Some("migrating".into());
                s.posts += 1;
                self.advance(now);
                (202, None)
            }
            ("GET", ["v2.1", "os-migrations"])
                if only(&[
                    "instance_uuid",
                    "source_compute",
                    "changes-since",
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
                    .filter(|_| q.get("source_compute").is_none_or(|h| h == SOURCE))
                    // Nova compares with second precision stored times.
                    .filter(|m| since.is_none_or(|t| m.updated / 1000 * 1000 >= t))
                    .collect();
                let (page, more) = match self.page(items, q, |m| m.uuid.as_str()) {
                    Ok(p) => p,
                    Err(e) => return Some((400, Some(json!({"badRequest": {"message": e}})))),
                };
                let mut v = json!({"migrations": page.iter().map(|m| self.mig_json(m)).collect::<Vec<_>>()});
                if more && let Some(last) = page.last() {
                    v["migrations_links"] = json!([{"rel": "next", "href": format!(
                        "{}/v2.1/os-migrations?limit={}&marker={}", self.uri, page.len(), last.uuid)}]);
                }
                ok(v)
            }
            ("GET", ["v2.1", "servers", id, "migrations", mid]) if q.is_empty() => {
                let &i = self.by_id.get(*id)?;
                let mid: u64 = mid.parse().ok()?;
                match self
                    .migrations
                    .iter()
                    .find(|m| m.id == mid && m.server == i && m.status != MStatus::Completed)
                {
                    Some(m) => {
                        let total = RAM_MB << 20;
                        let done = m.started.map_or(0.0, |s| {
                            (now.saturating_sub(s) as f64 / self.migration_ms as f64).min(1.0)
                        });
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
            ("GET", ["v2.1", "os-server-groups"]) if only(&["all_projects", "limit", "offset"]) => {
                ok(json!({"server_groups": []}))
            }
            ("GET", ["v2.1", "servers", id, "os-instance-actions"]) if q.is_empty() => {
                self.by_id.get(*id)?;
                ok(json!({"instanceActions": []}))
            }
            ("GET", ["placement", "resource_providers"]) if only(&["name"]) => {
                let name = q.get("name")?;
                let rps: Vec<Value> = std::iter::once(SOURCE)
                    .chain(DESTS)
                    .filter(|h| h == name)
                    .map(|h| json!({"uuid": format!("rp-{h}"), "name": h, "generation": 1}))
                    .collect();
                ok(json!({ "resource_providers": rps }))
            }
            ("GET", ["placement", "resource_providers", rp, what]) if q.is_empty() => {
                let host = rp.strip_prefix("rp-")?;
                if host != SOURCE && !DESTS.contains(&host) {
                    return Some((
                        404,
                        Some(json!({"errors": [{"status": 404,
                        "title": "Not Found", "detail": "No resource provider"}]})),
                    ));
                }
                let on: Vec<&FServer> = self.servers.iter().filter(|s| s.host == host).collect();
                let n = on.len() as u64;
                match *what {
                    "inventories" => ok(json!({"resource_provider_generation": 1, "inventories": {
                        "VCPU": {"total": 256, "reserved": 0, "min_unit": 1, "max_unit": 256, "step_size": 1, "allocation_ratio": 16.0},
                        "MEMORY_MB": {"total": 4 << 20, "reserved": 4096, "min_unit": 1, "max_unit": 4 << 20, "step_size": 1, "allocation_ratio": 1.0},
                        "DISK_GB": {"total": 100_000, "reserved": 0, "min_unit": 1, "max_unit": 100_000, "step_size": 1, "allocation_ratio": 1.0}}})),
                    "usages" => ok(json!({"resource_provider_generation": 1, "usages": {
                        "VCPU": n, "MEMORY_MB": n * RAM_MB, "DISK_GB": n * 10}})),
                    "allocations" => {
                        let a: serde_json::Map<String, Value> = on
                            .iter()
                            .map(|s| {
                                (
                                    s.id.clone(),
                                    json!({"resources": {"VCPU": 1, "MEMORY_MB": RAM_MB, "DISK_GB": 10}}),
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
}

/// The catch-all wiremock responder.
struct Responder(Arc<Mutex<FakeCloud>>);

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

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn rss_kib() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets `VmHWM` to the current RSS (Linux ≥ 4.0); false when refused.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn main(n: usize) -> Result<(), String> {
    let fake_bin = std::env::temp_dir().join(format!("nlm-scale-bin-{}", std::process::id()));
    std::fs::create_dir_all(&fake_bin).map_err(|e| e.to_string())?;
    std::fs::write(fake_bin.join("systemctl"), "#!/bin/sh\necho active\n")
        .map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        fake_bin.join("systemctl"),
        std::fs::Permissions::from_mode(0o755),
    )
    .map_err(|e| e.to_string())?;
    let path = format!(
        "{}:{}",
        fake_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // SAFETY: single-threaded here, before any runtime starts.
    unsafe { std::env::set_var("PATH", path) };
    let migration_ms = migration_ms();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // The drain with the fake in a child process first (a clean process:
    // its peak is the drain's own), then the brief's setting, the fake in
    // this process (its memory counts in the peak).
    let result = rt
        .block_on(drain_run(n, migration_ms, true))
        .and_then(|a| Ok((a, rt.block_on(drain_run(n, migration_ms, false))?)));
    let _ = std::fs::remove_dir_all(&fake_bin);
    let (child, inproc) = result?;
    let planner: Vec<PlannerRow> = [100, 500, 2000].into_iter().map(planner_bench).collect();
    print_tables(&[child, inproc], &planner);
    Ok(())
}

struct RunRow {
    child: bool,
    n: usize,
    migration_ms: u64,
    wall_s: f64,
    rss_before_kib: u64,
    hwm_before_kib: u64,
    peak_kib: u64,
    peak_reset: bool,
    requests: u64,
    by_route: BTreeMap<String, u64>,
    ticks: u64,
    fake_requests: u64,
    fake_bytes: u64,
    journal_bytes: u64,
    conflicts: u64,
    max_limit: usize,
}

/// Serves the fake in this process (`bench scale-fake N`), for the run
/// that keeps it out of the measured process: prints the URI, serves until
/// killed.
pub fn serve(n: usize) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let (server, _cloud) = start_fake(n, migration_ms()).await;
        println!("{}", server.uri());
        use std::io::Write;
        let _ = std::io::stdout().flush();
        std::future::pending::<()>().await;
    });
    Ok(())
}

fn migration_ms() -> u64 {
    std::env::var("NLM_SCALE_MIGRATION_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

async fn start_fake(n: usize, migration_ms: u64) -> (MockServer, Arc<Mutex<FakeCloud>>) {
    let server = MockServer::builder()
        .disable_request_recording()
        .start()
        .await;
    let cloud = Arc::new(Mutex::new(FakeCloud::new(server.uri(), n, migration_ms)));
    Mock::given(wiremock::matchers::any())
        .respond_with(Responder(cloud.clone()))
        .mount(&server)
        .await;
    (server, cloud)
}

/// Where the fake runs: in this process (the brief's setting: its memory
/// counts in the peak) or in a child process (the peak is the drain's own).
enum FakeAt {
    InProcess(MockServer, Arc<Mutex<FakeCloud>>),
    Child(std::process::Child, String),
}

impl FakeAt {
    fn uri(&self) -> String {
        match self {
            FakeAt::InProcess(s, _) => s.uri(),
            FakeAt::Child(_, u) => u.clone(),
        }
    }
    async fn summary(&self) -> Result<Value, String> {
        match self {
            FakeAt::InProcess(_, c) => Ok(c.lock().unwrap_or_else(|e| e.into_inner()).summary()),
            FakeAt::Child(_, u) => reqwest::get(format!("{u}/_fake/report"))
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

impl Drop for FakeAt {
    fn drop(&mut self) {
        if let FakeAt::Child(child, _) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn drain_run(n: usize, migration_ms: u64, child: bool) -> Result<RunRow, String> {
    let fake = if child {
        use std::io::BufRead;
        let mut c = std::process::Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
            .args(["scale-fake", &n.to_string()])
            .env("NLM_SCALE_MIGRATION_MS", migration_ms.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        let out = c.stdout.take().ok_or("no stdout")?;
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        FakeAt::Child(c, line.trim().to_string())
    } else {
        let (s, c) = start_fake(n, migration_ms).await;
        FakeAt::InProcess(s, c)
    };
    let url = reqwest::Url::parse(&fake.uri()).map_err(|e| e.to_string())?;
    let bag: BTreeMap<String, String> = [
        ("auth_protocol", "http".to_string()),
        ("auth_host", url.host_str().unwrap_or_default().to_string()),
        ("auth_port", url.port().unwrap_or(80).to_string()),
        ("credentials_username", "nova_live_migration".into()),
        ("credentials_password", "bench-password".into()),
        ("credentials_project", "services".into()),
        ("credentials_user_domain_name", "service_domain".into()),
        ("credentials_project_domain_name", "service_domain".into()),
        ("region", "RegionOne".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let cfg = AuthConfig::from_relation(&bag, Interface::Internal, None, None)
        .map_err(|e| e.to_string())?;
    let os = OpenStack::connect(cfg).await.map_err(|e| e.to_string())?;

    let state = tempfile::tempdir().map_err(|e| e.to_string())?;
    let nova_conf = state.path().join("nova.conf");
    std::fs::write(
        &nova_conf,
        format!(
            "[DEFAULT]\nhost = {SOURCE}\nmax_concurrent_live_migrations = {NOVA_MAX_CONCURRENT}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let state_dir = state.path().join("state");
    let paths = Paths::from_env(|k| match k {
        "NLM_STATE_DIR" => Some(state_dir.display().to_string()),
        "NLM_NOVA_CONF" => Some(nova_conf.display().to_string()),
        "NLM_NOVA_COMPUTE_LOG" => Some(state.path().join("none.log").display().to_string()),
        _ => None,
    });
    let config = Config::from_values(&BTreeMap::from([(
        "poll-interval".to_string(),
        json!(POLL_INTERVAL_S),
    )]))
    .map_err(|e| e.to_string())?;
    let log = |_: &str| {};
    let env = drain::Env {
        os: &os,
        config: &config,
        paths: &paths,
        host: SOURCE.to_string(),
        unit: "nova-live-migration/0".into(),
        task: Some("scale".into()),
        log: &log,
        status: &|_: &str| {},
    };
    let params = Params::from_action(Kind::Evacuate, &BTreeMap::new())?;
    let before = os.request_stats();
    let (rss_before_kib, hwm_before_kib) = rss_kib();
    let peak_reset = reset_peak();
    let t = Instant::now();
    let outcome = drain::run(&env, &params).await.map_err(|e| e.to_string())?;
    let wall_s = t.elapsed().as_secs_f64();
    let (_, peak_kib) = rss_kib();
    let stats = os.request_stats().since(&before);

    if let Some(f) = &outcome.failure {
        return Err(format!("evacuate failed: {f}"));
    }
    let c = fake.summary().await?;
    let num = |k: &str| c[k].as_u64().unwrap_or(0);
    if c["unknown"].as_object().is_none_or(|u| !u.is_empty()) {
        return Err(format!(
            "the client made requests the fake does not implement: {}",
            c["unknown"]
        ));
    }
    let r = &outcome.report;
    if r.counts.migrated as usize != n || r.instances.len() != n {
        return Err(format!(
            "migrated {} of {n} ({} reported)",
            r.counts.migrated,
            r.instances.len()
        ));
    }
    for i in &r.instances {
        let s = &c["servers"][&i.id];
        if i.result != plan::ResultKind::Migrated || i.attempts != 1 {
            return Err(format!(
                "{}: {:?} after {} attempts",
                i.name, i.result, i.attempts
            ));
        }
        let host = s["host"].as_str().unwrap_or(SOURCE);
        if s["posts"] != 1 || host == SOURCE || i.destination.as_deref() != Some(host) {
            return Err(format!(
                "{}: {} os-migrateLive POSTs, now on {host}, reported {:?}",
                i.name, s["posts"], i.destination
            ));
        }
    }
    if num("migrations") != n as u64 || num("completed") != n as u64 {
        return Err(format!(
            "{} migration records, {} completed, not {n}",
            num("migrations"),
            num("completed")
        ));
    }
    if c["source_service"] != "disabled" {
        return Err("the source service was not disabled".into());
    }
    let journal_bytes = dir_bytes(&state_dir);
    Ok(RunRow {
        child,
        n,
        migration_ms,
        wall_s,
        rss_before_kib,
        hwm_before_kib,
        peak_kib,
        peak_reset,
        requests: stats.total,
        by_route: stats.by_route.clone(),
        ticks: num("list_ticks"),
        fake_requests: num("requests"),
        fake_bytes: num("bytes_out"),
        journal_bytes,
        conflicts: num("conflicts"),
        max_limit: num("max_limit") as usize,
    })
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Planner time per tick: `Drain::step` alone, on synthetic observations.

struct PlannerRow {
    n: usize,
    ticks: u64,
    calls: usize,
    median_us: f64,
    p99_us: f64,
    max_us: f64,
    raw_max_us: f64,
    preflight_ms: f64,
}

const REPLAYS: usize = 5;

fn planner_input(n: usize) -> plan::PreflightInput {
    let servers = (0..n)
        .map(|i| plan::ServerInfo {
            id: format!("00000000-0000-4000-8000-{i:012}"),
            name: format!("scale-{i:04}"),
            status: "ACTIVE".into(),
            vm_state: "active".into(),
            task_state: None,
            image_backed: true,
            volumes_attached: 0,
            flavor: plan::Flavor {
                vcpus: 1,
                ram_mb: RAM_MB,
                disk_gb: 10,
                ephemeral_gb: 0,
                swap_mb: 0,
            },
            allocation: Some(BTreeMap::from([
                ("VCPU".to_string(), 1),
                ("MEMORY_MB".to_string(), RAM_MB),
                ("DISK_GB".to_string(), 10),
            ])),
        })
        .collect();
    let inv = |total: u64, ratio: f64| plan::Inventory {
        total,
        reserved: 0,
        min_unit: 1,
        max_unit: total,
        step_size: 1,
        allocation_ratio: ratio,
    };
    let hosts = DESTS
        .iter()
        .map(|h| plan::HostCandidate {
            host: h.to_string(),
            enabled: true,
            up: true,
            inventories: BTreeMap::from([
                ("VCPU".to_string(), inv(1024, 16.0)),
                ("MEMORY_MB".to_string(), inv(16 << 20, 1.0)),
                ("DISK_GB".to_string(), inv(1_000_000, 1.0)),
            ]),
            usages: BTreeMap::new(),
        })
        .collect();
    plan::PreflightInput {
        host: SOURCE.into(),
        service: Some(plan::ServiceView {
            status: "enabled".into(),
            state: "up".into(),
            disabled_reason: None,
        }),
        local_units: BTreeMap::from([
            ("nova-compute".to_string(), true),
            ("libvirtd".to_string(), true),
        ]),
        servers,
        hosts,
        groups: vec![],
        member_hosts: BTreeMap::new(),
    }
}

/// Drives a `Drain` of `n` with what `drive`/`observe` would feed it from
/// a Nova where each migration runs for 2 ticks after it is found: each
/// tick a migration view (running with memory counters, then completed)
/// for every in-flight instance, and a server view when it has ended.
fn planner_bench(n: usize) -> PlannerRow {
    let runs: Vec<(Vec<f64>, u64, f64)> = (0..REPLAYS).map(|_| planner_once(n)).collect();
    let calls = runs[0].0.len();
    assert!(runs.iter().all(|r| r.0.len() == calls), "replays differ");
    let raw_max_us = runs
        .iter()
        .flat_map(|r| r.0.iter())
        .cloned()
        .fold(0.0, f64::max);
    let mut times: Vec<f64> = (0..calls)
        .map(|i| runs.iter().map(|r| r.0[i]).fold(f64::INFINITY, f64::min))
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    PlannerRow {
        n,
        ticks: runs[0].1,
        calls,
        median_us: pct(0.5),
        p99_us: pct(0.99),
        max_us: times[times.len() - 1],
        raw_max_us,
        preflight_ms: runs.iter().map(|r| r.2).fold(f64::INFINITY, f64::min),
    }
}

/// One synthetic drain: each step call's time (µs), ticks, pre-flight ms.
fn planner_once(n: usize) -> (Vec<f64>, u64, f64) {
    let t = Instant::now();
    let input = planner_input(n);
    let pf = plan::preflight(&input, &plan::PreflightParams::default());
    let preflight_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert!(pf.can_proceed(), "synthetic pre-flight refused");
    let policy = plan::Policy {
        max_concurrent: NOVA_MAX_CONCURRENT as u32 + 1,
        poll_interval_ms: (POLL_INTERVAL_S * 1000.0) as u64,
        ..plan::Policy::default()
    };
    let t0: u64 = 1_790_000_000_000;
    let mut d = plan::Drain::new(SOURCE, pf.to_move(), policy, t0);
    assert_eq!(d.instances.len(), n);
    let poll = (POLL_INTERVAL_S * 1000.0) as u64;
    let total = RAM_MB << 20;
    // instance → (migration id, tick it was found)
    let mut found: HashMap<String, (u64, u64)> = HashMap::new();
    let mut next_mid = 1u64;
    let mut times: Vec<f64> = Vec::new();
    let mut obs: Vec<Observation> = Vec::new();
    let mut tick = 0u64;
    let view = |id: u64, status: MigrationStatus, rem: Option<u64>, at: u64| MigrationView {
        id: plan::MigrationId(id),
        status,
        created_at: Some(at),
        dest_compute: Some(DESTS[0].into()),
        memory_total_bytes: rem.map(|_| total),
        memory_processed_bytes: rem.map(|r| total - r),
        memory_remaining_bytes: rem,
        disk_total_bytes: rem.map(|_| 0),
        disk_processed_bytes: rem.map(|_| 0),
        disk_remaining_bytes: rem.map(|_| 0),
    };
    let here = |host: &str| ServerView {
        host: host.into(),
        status: "ACTIVE".into(),
        vm_state: plan::VmState::Active,
        task_state: None,
        fault: None,
    };
    loop {
        let now = t0 + tick * poll;
        // One round as `drive` does it: poll, execute every command, hand
        // back the results, poll again at the same instant until quiet.
        for _ in 0..8 {
            let s = Instant::now();
            let cmds = d.step(now, &obs);
            times.push(s.elapsed().as_secs_f64() * 1e6);
            obs.clear();
            for c in cmds {
                match c {
                    Command::StartLive {
                        instance, attempt, ..
                    } => {
                        found.entry(instance.clone()).or_insert_with(|| {
                            next_mid += 1;
                            (next_mid - 1, tick)
                        });
                        obs.push(Observation::Started {
                            instance,
                            attempt,
                            result: plan::StartResult::Accepted,
                        })
                    }
                    Command::ReadServer { instance } => {
                        let host = match found.get(&instance) {
                            Some(&(_, at)) if tick - at >= 3 => DESTS[0],
                            _ => SOURCE,
                        };
                        obs.push(Observation::Server {
                            instance,
                            view: here(host),
                        });
                    }
                    Command::ListMigrations { .. } => {
                        for r in d.instances.iter().filter(|r| r.in_flight()) {
                            let Some(&(mid, at)) = found.get(&r.id) else {
                                continue;
                            };
                            let st = if tick - at < 3 {
                                MigrationStatus::Running
                            } else {
                                MigrationStatus::Completed
                            };
                            obs.push(Observation::Migration {
                                instance: r.id.clone(),
                                view: view(mid, st, None, t0 + at * poll),
                            });
                        }
                        obs.push(Observation::Listed { ok: true });
                    }
                    Command::ReadProgress { instance, .. } => {
                        if let Some(&(mid, at)) = found.get(&instance) {
                            let age = tick - at;
                            let rem = total - total * age.min(3) / 3;
                            obs.push(Observation::Migration {
                                instance,
                                view: view(
                                    mid,
                                    MigrationStatus::Running,
                                    Some(rem),
                                    t0 + at * poll,
                                ),
                            });
                        }
                    }
                    _ => {}
                }
            }
            if obs.is_empty() {
                break;
            }
        }
        if d.is_done() {
            break;
        }
        tick += 1;
        assert!(tick < 100_000, "synthetic drain does not end");
    }
    let migrated = d
        .instances
        .iter()
        .filter(|r| r.outcome() == Some(plan::Outcome::Migrated))
        .count();
    assert_eq!(migrated, n, "synthetic drain: {migrated}/{n} migrated");
    (times, tick, preflight_ms)
}

fn print_tables(runs: &[RunRow], planner: &[PlannerRow]) {
    let r0 = &runs[0];
    println!(
        "scale: evacuate of {} instances through nlm::drain::run against the fake cloud \
         (migration {} ms each, nova max_concurrent_live_migrations {NOVA_MAX_CONCURRENT} on the source, \
         {} destinations, poll-interval {POLL_INTERVAL_S} s, Nova max_limit {})",
        r0.n,
        r0.migration_ms,
        DESTS.len(),
        r0.max_limit
    );
    println!();
    println!(
        "| fake runs | N | wall s | RSS before drain MiB | peak RSS during drain MiB (VmHWM) | API requests | poll ticks | requests per tick | response KiB per tick | journal KiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1}{} | {} | {} | {:.2} | {:.1} | {:.1} |",
            if r.child {
                "in a child process"
            } else {
                "in this process"
            },
            r.n,
            r.wall_s,
            mib(r.rss_before_kib),
            mib(r.peak_kib),
            if r.peak_reset { "" } else { " (since start)" },
            r.requests,
            r.ticks,
            r.requests as f64 / r.ticks.max(1) as f64,
            r.fake_bytes as f64 / 1024.0 / r.ticks.max(1) as f64,
            r.journal_bytes as f64 / 1024.0
        );
    }
    println!();
    for r in runs {
        println!(
            "fake {}: VmHWM before the drain {:.1} MiB; requests seen by the fake {} (client counted {}, + token and report calls); 409 conflicts {}",
            if r.child {
                "in a child process"
            } else {
                "in this process"
            },
            mib(r.hwm_before_kib),
            r.fake_requests,
            r.requests,
            r.conflicts
        );
        let routes: Vec<String> = r
            .by_route
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        println!("  by route: {}", routes.join("; "));
    }
    println!();
    println!(
        "planner: plan::Drain::step alone on synthetic observations for every in-flight instance each tick \
         (max-concurrent {}, each migration running 3 ticks; two step calls per tick as drive() does); \
         the drain is replayed {REPLAYS} times and each call's time is its minimum over the replays (filters preemption on a shared machine); raw max over all replays in the last column",
        NOVA_MAX_CONCURRENT + 1
    );
    println!();
    println!(
        "| N | pre-flight ms | ticks | step calls | median µs | p99 µs | max µs | raw max µs |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for p in planner {
        println!(
            "| {} | {:.2} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            p.n, p.preflight_ms, p.ticks, p.calls, p.median_us, p.p99_us, p.max_us, p.raw_max_us
        );
    }
}
