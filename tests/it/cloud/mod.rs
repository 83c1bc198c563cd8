//! Support for the tests that run against the local OpenStack cloud
//! (`tests/cloud/cloud up`, see tests/cloud/README.md).
//!
//! - [`CloudEnv::detect`] finds the cloud (OS_* from the environment, else
//!   `$NLM_CLOUD_DIR/adminrc`) or says once that the cloud tests are skipped,
//!   and prints one [`SKIP_MARKER`] line per skipped test (`tests/run`
//!   counts them). With `NLM_REQUIRE_CLOUD=1` (set by `tests/run` unless
//!   `NLM_NO_CLOUD` is) a missing cloud fails the test instead.
//! - [`CloudEnv::lock`] serialises cloud tests across threads and processes.
//! - The fixtures (`boot_on`, `server`, `delete_all_servers`, …) speak raw
//!   HTTP with an admin token. They set up and inspect the cloud; the
//!   product's own OpenStack client is tested with them, not through them.
#![allow(dead_code)] // a support library for the whole suite: not every test uses every helper

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

/// Microversion the fixtures speak.
pub const MICROVERSION: &str = "compute 2.96";
/// The one image of the Glance stub (tests/cloud/stubs.py).
pub const IMAGE_ID: &str = "3b6a1c2e-9d4f-4e8a-8c1b-6f0d2a7e5c01";
/// The compute hosts of the local cloud.
pub const SOURCE: &str = "node1.maas";
pub const DEST: &str = "node4.maas";

const SKIP_LINE: &str = "skipping: local cloud not up (run tests/cloud/cloud up)";
/// The start of the one line a skipped test prints (with its name); `tests/run`
/// counts these lines in its log.
pub const SKIP_MARKER: &str = "NLM-SKIPPED-TEST:";

/// Set (non-empty, not `0`) when a missing cloud must fail the test (CI).
fn cloud_required() -> bool {
    std::env::var("NLM_REQUIRE_CLOUD").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A cloud test that cannot run here: fails it (with `why` and what to
/// do) under `NLM_REQUIRE_CLOUD`, else prints its skip marker. For skips
/// other than "no cloud" (e.g. a cloud without the short-token Keystone).
pub fn skip_or_fail(why: &str, fix: &str) {
    if cloud_required() {
        panic!("{why} (NLM_REQUIRE_CLOUD is set, so this test fails instead of skipping): {fix}");
    }
    note_skipped(why);
}

/// Prints the skip marker of the running test straight to fd 2 (libtest
/// captures `eprintln!` but not `io::stderr()`), so `tests/run` sees it
/// whatever the capture setting.
pub fn note_skipped(why: &str) {
    let name = std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .map(str::to_string)
        .unwrap_or_else(|| "(unnamed test)".to_string());
    // One write, so lines of parallel tests do not interleave.
    let line = format!("{SKIP_MARKER} {name}: {why}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

static PROCESS_LOCK: Mutex<()> = Mutex::new(());
static SKIP_ONCE: Once = Once::new();

/// The current-thread runtime a synchronous cloud test drives its async
/// calls on.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// State directory of the local cloud: `$NLM_CLOUD_DIR`, default `/var/tmp/nlm-cloud`.
pub fn cloud_dir() -> PathBuf {
    std::env::var_os("NLM_CLOUD_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/nlm-cloud"))
}

/// Token and compute endpoint of the admin.
#[derive(Clone)]
struct Auth {
    token: String,
    nova: String,
    placement: String,
    /// The catalog's network (Neutron stand-in) endpoint.
    network: Option<String>,
    /// The catalog's image (Glance stand-in) and sharev2 (Manila
    /// stand-in) endpoints.
    image: Option<String>,
    sharev2: Option<String>,
    obtained: Instant,
}

/// A reachable local cloud and its admin credentials.
pub struct CloudEnv {
    dir: PathBuf,
    os: BTreeMap<String, String>,
    http: reqwest::Client,
    auth: Mutex<Option<Auth>>,
}

/// Held while a test uses the cloud: a process-wide mutex plus an exclusive
/// lock on `$NLM_CLOUD_DIR/tests.lock` (released on drop).
pub struct CloudLock {
    _file: File,
    _guard: MutexGuard<'static, ()>,
}

fn parse_rc(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line);
        if let Some((k, v)) = line.split_once('=')
            && k.starts_with("OS_")
        {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            out.insert(k.trim().to_string(), v.to_string());
        }
    }
    out
}

/// `http://host:port/path` → (host, port, path).
fn split_http_url(url: &str) -> Option<(String, u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().ok()?),
        None => (hostport.to_string(), 80),
    };
    Some((host, port, path.to_string()))
}

/// GET the URL with a 2 s budget; true on any 2xx/3xx answer.
fn probe(url: &str) -> bool {
    let timeout = Duration::from_secs(2);
    let Some((host, port, path)) = split_http_url(url) else {
        // https or odd URL: settle for a TCP connect
        let hostport = url
            .split("://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or("");
        let hostport = if hostport.contains(':') {
            hostport.to_string()
        } else {
            format!("{hostport}:443")
        };
        return hostport
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|a| TcpStream::connect_timeout(&a, timeout).is_ok());
    };
    let Some(addr) = (host.as_str(), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
    else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let req = format!("GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match s.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let head = String::from_utf8_lossy(&head[..n]);
    head.starts_with("HTTP/1.") && matches!(head.get(9..10), Some("2") | Some("3"))
}

impl CloudEnv {
    /// The local cloud, or `None` (after one line on stderr) when it is not up.
    ///
    /// # Panics
    /// When the cloud is not up and `NLM_REQUIRE_CLOUD` is set: in CI a
    /// test that needs the cloud fails rather than passing without running.
    pub fn detect() -> Option<CloudEnv> {
        let dir = cloud_dir();
        let os: BTreeMap<String, String> =
            if std::env::var("OS_AUTH_URL").is_ok_and(|v| !v.is_empty()) {
                std::env::vars()
                    .filter(|(k, _)| k.starts_with("OS_"))
                    .collect()
            } else {
                std::fs::read_to_string(dir.join("adminrc"))
                    .map(|t| parse_rc(&t))
                    .unwrap_or_default()
            };
        let up = os.get("OS_AUTH_URL").is_some_and(|u| probe(u));
        if !up {
            if cloud_required() {
                panic!(
                    "the local cloud is not up at {} (NLM_REQUIRE_CLOUD is set, so this test \
                     fails instead of skipping): start it with tests/cloud/cloud up, or set \
                     NLM_NO_CLOUD=1 to run the suite without it",
                    os.get("OS_AUTH_URL")
                        .cloned()
                        .unwrap_or_else(|| format!("{} (no adminrc)", dir.display()))
                );
            }
            note_skipped("local cloud not up");
            // straight to fd 2: libtest captures eprintln! but not io::stderr()
            SKIP_ONCE.call_once(|| {
                let _ = writeln!(std::io::stderr(), "{SKIP_LINE}");
            });
            return None;
        }
        // The tests block this runtime while dispatch runs, so the pool
        // never sees the services (gunicorn, --keep-alive 30) close an idle
        // connection and would reuse a dead one afterwards: drop idle
        // connections well before the server does.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client");
        Some(CloudEnv {
            dir,
            os,
            http,
            auth: Mutex::new(None),
        })
    }

    /// The state directory (`$NLM_CLOUD_DIR`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The admin's OS_* variables (to hand to a process under test).
    pub fn os_env(&self) -> &BTreeMap<String, String> {
        &self.os
    }

    /// The identity-credentials unit data bag the keystone charm would publish
    /// for our charm (`$NLM_CLOUD_DIR/relation.json`).
    pub fn relation_data(&self) -> Map<String, Value> {
        let path = self.dir.join("relation.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        match serde_json::from_str(&text) {
            Ok(Value::Object(m)) => m,
            other => panic!("{}: not a JSON object: {other:?}", path.display()),
        }
    }

    /// The nova-compute log of `host` (what the charm on that node would read).
    pub fn compute_log(&self, host: &str) -> PathBuf {
        self.dir
            .join("log")
            .join(format!("nova-compute-{host}.log"))
    }

    /// Exclusive use of the cloud until the guard is dropped.
    pub fn lock(&self) -> CloudLock {
        let guard = PROCESS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::create_dir_all(&self.dir).expect("create cloud dir");
        let path = self.dir.join("tests.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        file.lock()
            .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
        CloudLock {
            _file: file,
            _guard: guard,
        }
    }

    // ------------------------------------------------------------ raw HTTP

    fn os(&self, key: &str, default: &str) -> String {
        self.os
            .get(key)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }

    async fn auth(&self) -> Auth {
        if let Some(a) = self.auth.lock().unwrap().clone()
            && a.obtained.elapsed() < Duration::from_secs(600)
        {
            return a;
        }
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": self.os("OS_USERNAME", "admin"),
                "domain": {"name": self.os("OS_USER_DOMAIN_NAME", "Default")},
                "password": self.os("OS_PASSWORD", "")}}},
            "scope": {"project": {
                "name": self.os("OS_PROJECT_NAME", "admin"),
                "domain": {"name": self.os("OS_PROJECT_DOMAIN_NAME", "Default")}}}}});
        let url = format!(
            "{}/auth/tokens",
            self.os("OS_AUTH_URL", "").trim_end_matches('/')
        );
        let r = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .expect("keystone auth");
        assert_eq!(r.status().as_u16(), 201, "keystone auth at {url}");
        let token = r.headers()["x-subject-token"].to_str().unwrap().to_string();
        let v: Value = r.json().await.unwrap();
        let region = self.os("OS_REGION_NAME", "RegionOne");
        let find = |kind: &str| {
            v["token"]["catalog"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["type"] == kind)
                .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
                .find(|e| e["interface"] == "public" && e["region_id"] == region.as_str())
                .and_then(|e| e["url"].as_str())
                .map(|u| u.trim_end_matches('/').to_string())
        };
        let endpoint =
            |kind: &str| find(kind).unwrap_or_else(|| panic!("{kind} endpoint in the catalog"));
        let network = find("network");
        let (image, sharev2) = (find("image"), find("sharev2"));
        let a = Auth {
            token,
            nova: endpoint("compute"),
            placement: endpoint("placement"),
            network,
            image,
            sharev2,
            obtained: Instant::now(),
        };
        *self.auth.lock().unwrap() = Some(a.clone());
        a
    }

    /// A Nova API call as admin at [`MICROVERSION`]: (status, body or Null).
    pub async fn nova(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.nova_at(MICROVERSION, method, path, body).await
    }

    /// [`CloudEnv::nova`] at another microversion (`compute 2.67`).
    pub async fn nova_at(
        &self,
        microversion: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let a = self.auth().await;
        let h = [("OpenStack-API-Version", microversion)];
        self.send(&a.token, &a.nova, &h, method, path, body).await
    }

    /// One request as admin to `base`: (status, body as JSON, the text when
    /// it is not JSON, or Null when empty).
    async fn send(
        &self,
        token: &str,
        base: &str,
        headers: &[(&str, &str)],
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.clone(), format!("{base}{path}"))
            .header("X-Auth-Token", token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {base}{path}: {e}"));
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    /// A Neutron call (the stand-in's ports) that must answer one of `ok`.
    pub async fn neutron(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        ok: &[u16],
    ) -> Value {
        self.service("network", method, path, body, ok).await
    }

    /// A call to the catalog's `kind` endpoint (`network`: the Neutron
    /// stand-in, `image`: the Glance stand-in, `sharev2`: the Manila
    /// stand-in) that must answer one of `ok`.
    pub async fn service(
        &self,
        kind: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        ok: &[u16],
    ) -> Value {
        let a = self.auth().await;
        let base = match kind {
            "network" => a.network.clone(),
            "image" => a.image.clone(),
            "sharev2" => a.sharev2.clone(),
            other => panic!("no {other} endpoint kept"),
        };
        let base = base.unwrap_or_else(|| {
            panic!("{kind} endpoint in the catalog (a cloud up from before the Manila stand-in: `tests/cloud/cloud down` and `up`)")
        });
        let (status, v) = self
            .send(&a.token, &base, &[], method.clone(), path, body)
            .await;
        assert!(ok.contains(&status), "{method} {kind} {path}: {status} {v}");
        match v {
            Value::String(_) => Value::Null,
            v => v,
        }
    }

    /// A Placement API call as admin at `placement 1.28`: (status, body or Null).
    pub async fn placement(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let a = self.auth().await;
        let h = [("OpenStack-API-Version", "placement 1.28")];
        self.send(&a.token, &a.placement, &h, method, path, body)
            .await
    }

    /// The uuid of the resource provider named `name`.
    pub async fn provider_uuid(&self, name: &str) -> String {
        let (s, v) = self
            .placement(
                reqwest::Method::GET,
                &format!("/resource_providers?name={name}"),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v["resource_providers"][0]["uuid"]
            .as_str()
            .unwrap_or_else(|| panic!("no resource provider {name}: {v}"))
            .to_string()
    }

    /// Deletes the allocations on `host`'s provider whose consumer is no
    /// server of the cloud: what earlier tests leaked (an instance deleted
    /// mid-migration can leave one; nova-compute then logs "has allocations
    /// against this compute host but is not found in the database"). Test
    /// setup for the proof-of-empty assertions; the charm never deletes any.
    pub async fn delete_leaked_allocations(&self, host: &str) {
        let rp = self.provider_uuid(host).await;
        let (s, v) = self
            .placement(
                reqwest::Method::GET,
                &format!("/resource_providers/{rp}/allocations"),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let servers = self.server_ids().await;
        let consumers: Vec<String> = v["allocations"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for c in consumers.iter().filter(|c| !servers.contains(c)) {
            eprintln!("deleting an allocation leaked on {host} by consumer {c}");
            let (s, v) = self
                .placement(reqwest::Method::DELETE, &format!("/allocations/{c}"), None)
                .await;
            assert!(s == 204 || s == 404, "{v}");
        }
    }

    /// A GET that may fail below HTTP (e.g. while nova-api restarts):
    /// `Err` with the transport error instead of a panic.
    pub async fn try_get(&self, path: &str) -> Result<u16, String> {
        let a = self.auth().await;
        self.http
            .get(format!("{}{path}", a.nova))
            .header("X-Auth-Token", &a.token)
            .header("OpenStack-API-Version", MICROVERSION)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    }

    /// GET that must answer 200.
    pub async fn get(&self, path: &str) -> Value {
        let (s, v) = self.nova(reqwest::Method::GET, path, None).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    /// A call that must answer one of `ok`.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        ok: &[u16],
    ) -> Value {
        let (s, v) = self.nova(method.clone(), path, body).await;
        assert!(ok.contains(&s), "{method} {path}: {s} {v}");
        v
    }

    /// Flavor id by name (m1.tiny, m1.small).
    pub async fn flavor_id(&self, name: &str) -> String {
        let v = self.get("/flavors").await;
        v["flavors"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["name"] == name)
            .and_then(|f| f["id"].as_str())
            .unwrap_or_else(|| panic!("no flavor {name}"))
            .to_string()
    }

    /// Boot one m1.tiny server per name on `host` (no network, the stub image)
    /// with `metadata`, wait until all are ACTIVE, return their ids in order.
    pub async fn boot_on(
        &self,
        host: &str,
        names: &[&str],
        metadata: &[(&str, &str)],
    ) -> Vec<String> {
        let flavor = self.flavor_id("m1.tiny").await;
        let meta: Map<String, Value> = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let mut ids = Vec::new();
        for name in names {
            let body = json!({"server": {"name": name, "imageRef": IMAGE_ID, "flavorRef": flavor,
                "networks": "none", "host": host, "metadata": meta}});
            let v = self
                .call(reqwest::Method::POST, "/servers", Some(body), &[202])
                .await;
            ids.push(v["server"]["id"].as_str().expect("server id").to_string());
        }
        for id in &ids {
            wait_until(
                || async move {
                    let s = self.server(id).await;
                    assert_ne!(
                        s["status"], "ERROR",
                        "server {id} went to ERROR on boot: {s}"
                    );
                    (s["status"] == "ACTIVE").then_some(())
                },
                Duration::from_secs(60),
            )
            .await;
        }
        ids
    }

    /// Live-migrates `id` to `host` past the scheduler (`force: true`,
    /// microversions 2.30–2.67; admin only), as another operator might:
    /// Nova then checks only that the destination is up, so it lands even
    /// on a disabled service. Waits until it is ACTIVE there.
    pub async fn live_migrate_forced(&self, id: &str, host: &str) {
        let body =
            json!({"os-migrateLive": {"host": host, "block_migration": "auto", "force": true}});
        let (s, v) = self
            .nova_at(
                "compute 2.67",
                reqwest::Method::POST,
                &format!("/servers/{id}/action"),
                Some(body),
            )
            .await;
        assert_eq!(s, 202, "forced live migration of {id} to {host}: {v}");
        wait_until(
            || async {
                let s = self.server(id).await;
                (host_of(&s) == host
                    && s["status"] == "ACTIVE"
                    && s["OS-EXT-STS:task_state"].is_null())
                .then_some(())
            },
            Duration::from_secs(60),
        )
        .await;
    }

    /// `GET /servers/{id}` → the server object.
    pub async fn server(&self, id: &str) -> Value {
        self.get(&format!("/servers/{id}")).await["server"].take()
    }

    /// Ids of every server (all projects).
    pub async fn server_ids(&self) -> Vec<String> {
        let v = self.get("/servers?all_tenants=1").await;
        v["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["id"].as_str().map(String::from))
            .collect()
    }

    /// Abort what migrates, delete every server, wait until none remain.
    pub async fn delete_all_servers(&self) {
        for id in self.server_ids().await {
            for m in self.migrations(&id).await {
                let path = format!("/servers/{id}/migrations/{}", m["id"]);
                self.nova(reqwest::Method::DELETE, &path, None).await;
            }
        }
        wait_until(
            || async move {
                let ids = self.server_ids().await;
                for id in &ids {
                    self.nova(reqwest::Method::DELETE, &format!("/servers/{id}"), None)
                        .await;
                }
                ids.is_empty().then_some(())
            },
            Duration::from_secs(120),
        )
        .await;
    }

    /// Enable every nova-compute service.
    pub async fn enable_all_services(&self) {
        let v = self.get("/os-services?binary=nova-compute").await;
        for s in v["services"].as_array().into_iter().flatten() {
            if s["status"] != "enabled" {
                let path = format!("/os-services/{}", s["id"].as_str().unwrap());
                self.call(
                    reqwest::Method::PUT,
                    &path,
                    Some(json!({"status": "enabled"})),
                    &[200],
                )
                .await;
            }
        }
    }

    /// The nova-compute service of `host` as Nova lists it.
    pub async fn compute_service(&self, host: &str) -> Value {
        let v = self
            .get(&format!("/os-services?binary=nova-compute&host={host}"))
            .await;
        v["services"][0].clone()
    }

    /// Disables `host`'s nova-compute service by hand with `reason` (or
    /// none), as an operator (or another tool) would.
    pub async fn disable_service(&self, host: &str, reason: Option<&str>) {
        let id = self.compute_service(host).await["id"]
            .as_str()
            .expect("service id")
            .to_string();
        self.call(
            reqwest::Method::PUT,
            &format!("/os-services/{id}"),
            Some(match reason {
                Some(r) => json!({"status": "disabled", "disabled_reason": r}),
                None => json!({"status": "disabled"}),
            }),
            &[200],
        )
        .await;
    }

    /// Back to a clean cloud: every service enabled, no servers.
    pub async fn reset(&self) {
        self.enable_all_services().await;
        self.delete_all_servers().await;
    }

    /// `os-migrateLive` with `host: null` (or the given host), `block_migration: "auto"`.
    pub async fn live_migrate(&self, id: &str, host: Option<&str>) {
        let body = json!({"os-migrateLive": {"host": host, "block_migration": "auto"}});
        self.call(
            reqwest::Method::POST,
            &format!("/servers/{id}/action"),
            Some(body),
            &[202],
        )
        .await;
    }

    /// In-progress migrations of a server (`GET /servers/{id}/migrations`).
    pub async fn migrations(&self, id: &str) -> Vec<Value> {
        let (s, v) = self
            .nova(
                reqwest::Method::GET,
                &format!("/servers/{id}/migrations"),
                None,
            )
            .await;
        if s != 200 {
            return Vec::new();
        }
        v["migrations"].as_array().cloned().unwrap_or_default()
    }

    /// The running migration of a server once the driver has reported progress.
    pub async fn running_migration(&self, id: &str) -> Option<Value> {
        self.migrations(id).await.into_iter().find(|m| {
            m["status"] == "running" && m["memory_total_bytes"].as_u64().is_some_and(|t| t > 0)
        })
    }

    /// The newest migration record of a server (any status, `/os-migrations`).
    pub async fn last_migration(&self, id: &str) -> Option<Value> {
        let v = self
            .get(&format!("/os-migrations?instance_uuid={id}"))
            .await;
        v["migrations"]
            .as_array()
            .into_iter()
            .flatten()
            .max_by_key(|m| m["id"].as_i64().unwrap_or(0))
            .cloned()
    }

    /// Wait until the server has no task and its newest migration has ended;
    /// returns (server, migration).
    pub async fn wait_settled(&self, id: &str, timeout: Duration) -> (Value, Value) {
        wait_until(
            || async move {
                let s = self.server(id).await;
                if !s["OS-EXT-STS:task_state"].is_null() {
                    return None;
                }
                let m = self.last_migration(id).await?;
                let st = m["status"].as_str().unwrap_or("");
                let done = ["completed", "failed", "error", "cancelled"].contains(&st);
                done.then_some((s, m))
            },
            timeout,
        )
        .await
    }

    pub async fn force_complete(&self, id: &str, migration_id: &Value) {
        let path = format!("/servers/{id}/migrations/{migration_id}/action");
        self.call(
            reqwest::Method::POST,
            &path,
            Some(json!({"force_complete": null})),
            &[202],
        )
        .await;
    }

    pub async fn abort_migration(&self, id: &str, migration_id: &Value) {
        let path = format!("/servers/{id}/migrations/{migration_id}");
        self.call(reqwest::Method::DELETE, &path, None, &[202])
            .await;
    }
}

/// `OS-EXT-SRV-ATTR:host` of a server object.
pub fn host_of(server: &Value) -> &str {
    server["OS-EXT-SRV-ATTR:host"].as_str().unwrap_or("")
}

/// Poll `f` every 200 ms until it returns `Some`; panic after `timeout`.
pub async fn wait_until<T, F, Fut>(mut f: F, timeout: Duration) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adminrc_is_parsed() {
        let rc = parse_rc(
            "export OS_AUTH_URL=http://127.0.0.1:5000/v3\nexport OS_PASSWORD='a b'\nFOO=1\n",
        );
        assert_eq!(rc["OS_AUTH_URL"], "http://127.0.0.1:5000/v3");
        assert_eq!(rc["OS_PASSWORD"], "a b");
        assert!(!rc.contains_key("FOO"));
    }

    #[test]
    fn http_urls_are_split() {
        assert_eq!(
            split_http_url("http://127.0.0.1:5000/v3"),
            Some(("127.0.0.1".into(), 5000, "/v3".into()))
        );
        assert_eq!(
            split_http_url("http://h"),
            Some(("h".into(), 80, "/".into()))
        );
        assert_eq!(split_http_url("https://h/"), None);
    }
}
