//! Request-shape and behaviour tests of the OpenStack client against wiremock fakes.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nlm::openstack::{
    AuthConfig, BlockMigration, Compute, Error, Interface, LiveMigrate, Microversion,
    MigrationFilter, OpenStack, Placement, RetryPolicy, Session, SessionOptions, TransportKind,
};
use serde_json::{Value, json};
use wiremock::matchers::{body_json, body_partial_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub(crate) const PASSWORD: &str = "pa55-SECRET-w0rd";
/// A password the fake refuses.
pub(crate) const WRONG_PASSWORD: &str = "wrong-SECRET";
const TOKEN_PREFIX: &str = "tok-SECRET-";

// ---------------------------------------------------------------------------
// Log capture: every test's client use logs into one global buffer (when this
// crate owns the global subscriber), and the leak test also captures its own
// scenario thread-locally.

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Buf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn subscriber(buf: Buf) -> impl tracing::Subscriber + Send + Sync {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || buf.clone())
        .finish()
}

static GLOBAL_LOG: OnceLock<Option<Buf>> = OnceLock::new();

fn global_log() -> Option<&'static Buf> {
    GLOBAL_LOG
        .get_or_init(|| {
            let buf = Buf::default();
            tracing::subscriber::set_global_default(subscriber(buf.clone()))
                .ok()
                .map(|_| buf)
        })
        .as_ref()
}

// ---------------------------------------------------------------------------
// Fake Keystone

struct Keystone {
    issued: AtomicUsize,
    lifetime_s: u64,
    catalog: Value,
}

impl Respond for Keystone {
    fn respond(&self, _req: &Request) -> ResponseTemplate {
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let expires = format!(
            "2026-11-25T{:02}:{:02}:{:02}.000000Z",
            10 + self.lifetime_s / 3600,
            (self.lifetime_s / 60) % 60,
            self.lifetime_s % 60
        );
        ResponseTemplate::new(201)
            .insert_header("X-Subject-Token", format!("{TOKEN_PREFIX}{n}").as_str())
            .insert_header("x-openstack-request-id", format!("req-auth-{n}").as_str())
            .set_body_json(json!({"token": {
                "issued_at": "2026-11-25T10:00:00.000000Z",
                "expires_at": expires,
                "methods": ["password"],
                "user": {"id": "u1", "name": "nova_live_migration"},
                "project": {"id": "p1", "name": "services"},
                "roles": [{"id": "r1", "name": "Admin"}],
                "catalog": self.catalog,
            }}))
    }
}

fn catalog(uri: &str, interfaces: &[&str]) -> Value {
    let eps = |url: String| -> Vec<Value> {
        interfaces
            .iter()
            .map(|i| json!({"id": format!("e-{i}"), "interface": i, "region": "RegionOne", "region_id": "RegionOne", "url": url}))
            .collect()
    };
    json!([
        {"type": "identity", "name": "keystone", "endpoints": eps(format!("{uri}/v3"))},
        {"type": "compute", "name": "nova", "endpoints": eps(format!("{uri}/v2.1"))},
        {"type": "placement", "name": "placement", "endpoints": eps(format!("{uri}/placement"))},
    ])
}

fn relation_bag(server: &MockServer) -> BTreeMap<String, String> {
    let addr = server.address();
    [
        ("auth_protocol", "http".to_string()),
        ("auth_host", addr.ip().to_string()),
        ("auth_port", addr.port().to_string()),
        ("credentials_username", "nova_live_migration".into()),
        ("credentials_password", PASSWORD.into()),
        ("credentials_project", "services".into()),
        ("credentials_project_id", "p1".into()),
        ("credentials_user_domain_name", "service_domain".into()),
        ("credentials_project_domain_name", "service_domain".into()),
        ("domain", "service_domain".into()),
        ("region", "RegionOne RegionTwo".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn options() -> SessionOptions {
    SessionOptions {
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            max_retry_after: Duration::from_secs(5),
        },
        ..SessionOptions::default()
    }
}

struct Fake {
    server: MockServer,
    keystone: Arc<KeystoneHandle>,
}

struct KeystoneHandle {
    server_uri: String,
}

impl Fake {
    /// A fake with Keystone (token lifetime `lifetime_s`) and the compute root at `max` / `min`.
    async fn start_with(lifetime_s: u64, max: &str, min: &str) -> Fake {
        global_log();
        let server = MockServer::start().await;
        let uri = server.uri();
        Mock::given(method("POST"))
            .and(path("/v3/auth/tokens"))
            .respond_with(Keystone {
                issued: AtomicUsize::new(0),
                lifetime_s,
                catalog: catalog(&uri, &["public", "internal", "admin"]),
            })
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v2.1/"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"version": {
                "id": "v2.1", "status": "CURRENT", "version": max, "min_version": min,
                "updated": "2013-07-23T11:33:21Z"}})))
            .mount(&server)
            .await;
        Fake {
            keystone: Arc::new(KeystoneHandle { server_uri: uri }),
            server,
        }
    }

    async fn start() -> Fake {
        Fake::start_with(3600, "2.96", "2.1").await
    }

    fn config(&self) -> AuthConfig {
        let mut c =
            AuthConfig::from_relation(&relation_bag(&self.server), Interface::Internal, None, None)
                .unwrap();
        c.request_timeout = Duration::from_secs(5);
        c.connect_timeout = Duration::from_secs(2);
        c
    }

    async fn connect(&self) -> OpenStack {
        OpenStack::connect_with(self.config(), options())
            .await
            .unwrap()
    }

    async fn compute(&self) -> Compute {
        self.connect().await.compute().clone()
    }

    fn url(&self, p: &str) -> String {
        format!("{}{p}", self.keystone.server_uri)
    }

    async fn requests(&self, m: &str, p: &str) -> Vec<Request> {
        self.server
            .received_requests()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.method.as_str() == m && r.url.path() == p)
            .collect()
    }

    async fn auth_count(&self) -> usize {
        self.requests("POST", "/v3/auth/tokens").await.len()
    }

    /// Every compute request carried a token and the microversion header.
    async fn assert_compute_headers(&self, mv: &str) {
        for r in self.server.received_requests().await.unwrap() {
            let p = r.url.path();
            if p.starts_with("/v2.1") && p != "/v2.1/" {
                let tok = r
                    .headers
                    .get("x-auth-token")
                    .map(|v| v.to_str().unwrap().to_string());
                assert!(
                    tok.unwrap_or_default().starts_with(TOKEN_PREFIX),
                    "{p} lacks a token"
                );
                assert_eq!(
                    r.headers
                        .get("openstack-api-version")
                        .map(|v| v.to_str().unwrap()),
                    Some(format!("compute {mv}").as_str()),
                    "{} {p}",
                    r.method
                );
            }
        }
    }
}

fn ok(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

// ---------------------------------------------------------------------------
// Authentication, catalog, negotiation

#[tokio::test]
async fn authenticates_with_the_relation_credentials() {
    let f = Fake::start().await;
    let os = f.connect().await;
    let auth = f.requests("POST", "/v3/auth/tokens").await;
    assert_eq!(auth.len(), 1);
    let body: Value = auth[0].body_json().unwrap();
    assert_eq!(
        body,
        json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "nova_live_migration", "domain": {"name": "service_domain"}, "password": PASSWORD}}},
            "scope": {"project": {"id": "p1"}}}})
    );
    let token = os.session().token().await.unwrap();
    assert_eq!(token.lifetime, Duration::from_secs(3600));
    assert_eq!(token.project.name, "services");
    assert_eq!(os.compute().endpoint(), f.url("/v2.1"));
    assert_eq!(os.compute().microversion(), Microversion::v2(96));
    assert_eq!(os.session().config().region.as_deref(), Some("RegionOne"));
    let p = os.placement().await.unwrap();
    assert_eq!(p.endpoint(), f.url("/placement"));
}

#[tokio::test]
async fn microversion_is_capped_at_2_104() {
    let f = Fake::start_with(3600, "2.110", "2.1").await;
    let c = f.compute().await;
    assert_eq!(c.microversion(), Microversion::v2(104));
    assert_eq!(c.server_max_microversion(), Some(Microversion::v2(110)));
    let v = c.root_versions().await.unwrap();
    assert_eq!(v.version, "2.110");
}

#[tokio::test]
async fn microversion_below_2_60_is_refused() {
    let f = Fake::start_with(3600, "2.53", "2.1").await;
    let e = OpenStack::connect_with(f.config(), options())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("2.53") && text.contains("2.60"), "{text}");
}

#[tokio::test]
async fn root_with_versions_list_and_legacy_endpoint() {
    // `{"versions": [...]}` shape
    let server = MockServer::start().await;
    let uri = server.uri();
    Mock::given(method("POST"))
        .and(path("/v3/auth/tokens"))
        .respond_with(Keystone {
            issued: AtomicUsize::new(0),
            lifetime_s: 3600,
            catalog: catalog(&uri, &["internal"]),
        })
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2.1/"))
        .respond_with(ok(json!({"versions": [
            {"id": "v2.0", "status": "DEPRECATED", "version": "", "min_version": ""},
            {"id": "v2.1", "status": "CURRENT", "version": "2.65", "min_version": "2.1"}]})))
        .mount(&server)
        .await;
    let cfg =
        AuthConfig::from_relation(&relation_bag(&server), Interface::Internal, None, None).unwrap();
    let os = OpenStack::connect_with(cfg.clone(), options())
        .await
        .unwrap();
    assert_eq!(os.compute().microversion(), Microversion::v2(65));
    assert!(os.compute().can_abort_queued());

    // A legacy v2.0 endpoint (no microversions) is refused clearly.
    let e = Compute::negotiate(os.session().clone(), format!("{uri}/v2")).await;
    assert!(e.is_err());
    Mock::given(method("GET"))
        .and(path("/v2/"))
        .respond_with(ok(json!({"version": {"id": "v2.0", "status": "SUPPORTED", "version": "", "min_version": ""}})))
        .mount(&server)
        .await;
    let e = Compute::negotiate(os.session().clone(), format!("{uri}/v2"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("legacy v2.0"), "{e}");
}

#[tokio::test]
async fn catalog_without_the_interface_is_a_clear_error() {
    let server = MockServer::start().await;
    let uri = server.uri();
    Mock::given(method("POST"))
        .and(path("/v3/auth/tokens"))
        .respond_with(Keystone {
            issued: AtomicUsize::new(0),
            lifetime_s: 3600,
            catalog: catalog(&uri, &["public", "admin"]),
        })
        .mount(&server)
        .await;
    let cfg =
        AuthConfig::from_relation(&relation_bag(&server), Interface::Internal, None, None).unwrap();
    let e = OpenStack::connect_with(cfg.clone(), options())
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::EndpointNotFound { .. }), "{e:?}");
    assert!(
        text.contains("'compute'") && text.contains("'internal'") && text.contains("RegionOne"),
        "{text}"
    );
    assert!(
        text.contains("public@RegionOne") && text.contains("admin@RegionOne"),
        "{text}"
    );

    // wrong region
    let mut cfg2 = cfg.clone();
    cfg2.interface = Interface::Public;
    cfg2.region = Some("RegionTwo".into());
    let e = OpenStack::connect_with(cfg2, options()).await.unwrap_err();
    assert!(e.to_string().contains("in region 'RegionTwo'"), "{e}");
}

#[tokio::test]
async fn keystone_rejection_reads_well() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/auth/tokens"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {
            "code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}})))
        .mount(&server)
        .await;
    let cfg =
        AuthConfig::from_relation(&relation_bag(&server), Interface::Internal, None, None).unwrap();
    let e = OpenStack::connect_with(cfg, options()).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "POST /auth/tokens → 401 Unauthorized: The request you have made requires authentication."
    );
    assert!(e.is_auth());
}

// ---------------------------------------------------------------------------
// Token renewal

#[tokio::test]
async fn expired_token_401_renews_once_and_resends() {
    let f = Fake::start().await;
    let c = f.compute().await;
    Mock::given(method("GET"))
        .and(path("/v2.1/servers/s1"))
        .and(header("X-Auth-Token", "tok-SECRET-1"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"error": {"message": "expired"}})),
        )
        .expect(1)
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2.1/servers/s1"))
        .and(header("X-Auth-Token", "tok-SECRET-2"))
        .respond_with(ok(
            json!({"server": {"id": "s1", "name": "vm1", "status": "ACTIVE"}}),
        ))
        .expect(1)
        .mount(&f.server)
        .await;
    let s = c.server("s1").await.unwrap();
    assert_eq!(s.name, "vm1");
    assert_eq!(f.auth_count().await, 2);

    // A POST rejected with 401 is also resent once with the new token.
    Mock::given(method("POST"))
        .and(path("/v2.1/servers/s2/action"))
        .and(header("X-Auth-Token", "tok-SECRET-2"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&f.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2.1/servers/s2/action"))
        .and(header("X-Auth-Token", "tok-SECRET-3"))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&f.server)
        .await;
    c.live_migrate("s2", &LiveMigrate::default()).await.unwrap();

    // A persistent 401 is returned after one renewal.
    Mock::given(method("GET"))
        .and(path("/v2.1/servers/s3"))
        .respond_with(ResponseTemplate::new(401))
        .expect(2)
        .mount(&f.server)
        .await;
    let e = c.server("s3").await.unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(401));
    assert_eq!(f.auth_count().await, 4);
}

#[tokio::test]
async fn token_is_renewed_before_expiry_and_on_demand() {
    // Lifetime 2 s: renewed when less than min(renew_before, lifetime/2) = 1 s is left.
    let f = Fake::start_with(2, "2.96", "2.1").await;
    Mock::given(method("GET"))
        .and(path("/v2.1/os-services"))
        .respond_with(ok(json!({"services": []})))
        .mount(&f.server)
        .await;
    let os = f.connect().await;
    let c = os.compute();
    c.services(None, None).await.unwrap();
    assert_eq!(f.auth_count().await, 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.services(None, None).await.unwrap();
    assert_eq!(f.auth_count().await, 2, "renewed before expiry");
    let last = f.requests("GET", "/v2.1/os-services").await;
    assert_eq!(
        last.last().unwrap().headers.get("x-auth-token").unwrap(),
        "tok-SECRET-2"
    );

    // ensure_fresh: demand 90 % of the lifetime after 300 ms → renew.
    let t = os.session().ensure_fresh(0.5).await.unwrap();
    assert!(t.fraction_left() > 0.5);
    assert_eq!(f.auth_count().await, 2, "fresh enough, kept");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = os.session().ensure_fresh(0.9).await.unwrap();
    assert!(t.fraction_left() > 0.9);
    assert_eq!(f.auth_count().await, 3);
    assert_eq!(os.request_stats().authentications, 3);
}

#[tokio::test]
async fn failed_early_renewal_keeps_the_valid_token() {
    let f = Fake::start_with(2, "2.96", "2.1").await;
    Mock::given(method("GET"))
        .and(path("/v2.1/os-services"))
        .and(header("X-Auth-Token", "tok-SECRET-1"))
        .respond_with(ok(json!({"services": []})))
        .mount(&f.server)
        .await;
    let os = f.connect().await;
    os.compute().services(None, None).await.unwrap();
    // Keystone goes down; the token still has ~0.9 s of its 2 s.
    Mock::given(method("POST"))
        .and(path("/v3/auth/tokens"))
        .respond_with(ResponseTemplate::new(503))
        .with_priority(1)
        .mount(&f.server)
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    os.compute().services(None, None).await.unwrap();
    assert_eq!(
        f.auth_count().await,
        1 + 3,
        "one renewal tried (3 attempts)"
    );
    // Past a tenth of the lifetime left, the failure is reported.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let e = os.compute().services(None, None).await.unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(503), "{e}");
}

// ---------------------------------------------------------------------------
// Retry policy

#[tokio::test]
async fn get_is_retried_after_5xx() {
    let f = Fake::start().await;
    let c = f.compute().await;
    Mock::given(method("GET"))
        .and(path("/v2.1/servers/s1"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2.1/servers/s1"))
        .respond_with(ok(json!({"server": {"id": "s1"}})))
        .mount(&f.server)
        .await;
    let before = c.session().stats().snapshot();
    c.server("s1").await.unwrap();
    let d = c.session().stats().snapshot().since(&before);
    assert_eq!(d.route("GET /servers/{id}"), 3);
    assert_eq!(d.retries, 2);
    assert_eq!(f.requests("GET", "/v2.1/servers/s1").await.len(), 3);

    // Out of attempts: the last error comes back, marked retryable.
    Mock::given(method("GET"))
        .and(path("/v2.1/servers/s9"))
        .respond_with(ResponseTemplate::new(502).set_body_string("<html>Bad Gateway</html>"))
        .expect(3)
        .mount(&f.server)
        .await;
    let e = c.server("s9").await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(
        e.to_string(),
        "GET /servers/s9 → 502 Bad Gateway: <html>Bad Gateway</html>"
    );
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let f = Fake::start().await;
    let c = f.compute().await;
    Mock::given(method("GET"))
        .and(path("/v2.1/os-hypervisors"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2.1/os-hypervisors"))
        .respond_with(ok(json!({"hypervisors": []})))
        .mount(&f.server)
        .await;
    let t = Instant::now();
    c.hypervisors(None).await.unwrap();
    let el = t.elapsed();
    assert!(el >= Duration::from_millis(950), "waited only {el:?}");
    assert!(el < Duration::from_secs(4), "waited {el:?}");
}

#[tokio::test]
async fn post_after_timeout_is_not_resent() {
    let f = Fake::start().await;
    let mut cfg = f.config();
    cfg.request_timeout = Duration::from_millis(300);
    let os = OpenStack::connect_with(cfg, options()).await.unwrap();
    Mock::given(method("POST"))
        .and(path("/v2.1/servers/s1/action"))
        .respond_with(ResponseTemplate::new(202).set_delay(Duration::from_millis(1500)))
        .expect(1)
        .mount(&f.server)
        .await;
    let e = os
        .compute()
        .live_migrate("s1", &LiveMigrate::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Transport {
                kind: TransportKind::Timeout,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_ambiguous() && e.is_retryable());
    assert!(
        e.to_string()
            .starts_with("POST /servers/s1/action: timed out"),
        "{e}"
    );
    assert_eq!(os.request_stats().route("POST /servers/{id}/action"), 1);

    // A 503 on a POST is not retried either.
    Mock::given(method("PUT"))
        .and(path("/v2.1/os-services/u1"))
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&f.server)
        .await;
    let svc = nlm::openstack::Service {
        id: nlm::openstack::ServiceId::Uuid("u1".into()),
        host: "node1.maas".into(),
        binary: "nova-compute".into(),
        ..Default::default()
    };
    let e = os.compute().disable_service(&svc, "x").await.unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(503));

    // …while a GET that times out is retried.
    Mock::given(method("GET"))
        .and(path("/v2.1/servers/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(1500)))
        .expect(3)
        .mount(&f.server)
        .await;
    let e = os.compute().server("slow").await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Transport {
                kind: TransportKind::Timeout,
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn post_is_retried_when_it_never_left() {
    let f = Fake::start().await;
    let os = f.connect().await;
    // A port nobody listens on: the request provably never left.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead = os
        .compute()
        .with_endpoint(&format!("http://127.0.0.1:{port}/v2.1"));
    let before = os.request_stats();
    let e = dead
        .live_migrate("s1", &LiveMigrate::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Transport {
                kind: TransportKind::Connect,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.is_ambiguous(), "connect errors are not ambiguous");
    assert!(
        !e.is_tls_certificate(),
        "a refused connection is no TLS problem: {e}"
    );
    let d = os.request_stats().since(&before);
    assert_eq!(
        d.route("POST /servers/{id}/action"),
        3,
        "POST retried up to max_attempts"
    );
    assert_eq!(d.retries, 2);
    // Negotiation against a dead endpoint fails with the connect error too.
    let e = Compute::negotiate(
        os.session().clone(),
        format!("http://127.0.0.1:{port}/v2.1"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Transport {
                kind: TransportKind::Connect,
                ..
            }
        ),
        "{e:?}"
    );
}

// ---------------------------------------------------------------------------
// Request shapes

fn server_json(id: &str, host: &str) -> Value {
    json!({"id": id, "name": format!("vm-{id}"), "status": "ACTIVE",
        "OS-EXT-STS:vm_state": "active", "OS-EXT-STS:task_state": null, "OS-EXT-STS:power_state": 1,
        "OS-EXT-SRV-ATTR:host": host, "OS-EXT-SRV-ATTR:hypervisor_hostname": host,
        "image": "", "tenant_id": "t1", "user_id": "u1", "locked": false,
        "flavor": {"vcpus": 2, "ram": 2048, "disk": 20, "ephemeral": 0, "swap": 0, "original_name": "m1.small", "extra_specs": {}},
        "os-extended-volumes:volumes_attached": [{"id": "v1", "delete_on_termination": false}],
        "metadata": {"k": "v"}})
}

#[tokio::test]
async fn servers_on_host_pages_with_marker() {
    let f = Fake::start().await;
    let c = f.compute().await.with_page_size(2);
    Mock::given(method("GET"))
        .and(path("/v2.1/servers/detail"))
        .and(query_param("all_tenants", "1"))
        .and(query_param("host", "node1.maas"))
        .and(query_param("limit", "2"))
        .and(query_param("marker", "b"))
        .respond_with(ok(json!({"servers": [server_json("c", "node1.maas")]})))
        .expect(1)
        .with_priority(1)
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2.1/servers/detail"))
        .and(query_param("all_tenants", "1"))
        .and(query_param("host", "node1.maas"))
        .and(query_param("limit", "2"))
        .respond_with(ok(json!({"servers": [server_json("a", "node1.maas"), server_json("b", "node1.maas")],
            "servers_links": [{"rel": "next", "href": "http://x/v2.1/servers/detail?limit=2&marker=b"}]})))
        .expect(1)
        .mount(&f.server)
        .await;
    let servers = c.servers_on_host("node1.maas").await.unwrap();
    let ids: Vec<&str> = servers.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    let s = &servers[0];
    assert!(s.is_volume_backed());
    assert_eq!(s.flavor.ram, 2048);
    assert_eq!(s.host.as_deref(), Some("node1.maas"));
    assert_eq!(s.vm_state.as_deref(), Some("active"));
    assert_eq!(s.task_state, None);
    assert_eq!(s.volumes_attached[0].id, "v1");
    f.assert_compute_headers("2.96").await;
}

#[tokio::test]
async fn servers_on_host_refuses_an_ignored_host_filter() {
    let f = Fake::start().await;
    let c = f.compute().await;
    // What a non-admin gets: the filter is ignored and hosts are hidden.
    let mut s = server_json("x", "node1.maas");
    s["OS-EXT-SRV-ATTR:host"] = Value::Null;
    Mock::given(method("GET"))
        .and(path("/v2.1/servers/detail"))
        .respond_with(ok(json!({"servers": [s]})))
        .mount(&f.server)
        .await;
    let e = c.servers_on_host("node1.maas").await.unwrap_err();
    assert!(e.to_string().contains("host filter was ignored"), "{e}");
}

#[tokio::test]
async fn services_disable_enable_uuid_shape() {
    let f = Fake::start().await;
    let c = f.compute().await;
    Mock::given(method("GET"))
        .and(path("/v2.1/os-services"))
        .and(query_param("host", "node1.maas"))
        .and(query_param("binary", "nova-compute"))
        .respond_with(ok(json!({"services": [{"id": "7c1f-uuid", "binary": "nova-compute", "host": "node1.maas",
            "zone": "nova", "status": "enabled", "state": "up", "disabled_reason": null, "forced_down": false}]})))
        .mount(&f.server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/v2.1/os-services/7c1f-uuid"))
        .and(body_json(
            json!({"status": "disabled", "disabled_reason": "nlm evacuate"}),
        ))
        .respond_with(ok(
            json!({"service": {"id": "7c1f-uuid", "binary": "nova-compute", "host": "node1.maas",
            "status": "disabled", "state": "up", "disabled_reason": "nlm evacuate"}}),
        ))
        .expect(1)
        .mount(&f.server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/v2.1/os-services/7c1f-uuid"))
        .and(body_json(json!({"status": "enabled"})))
        .respond_with(ok(
            json!({"service": {"id": "7c1f-uuid", "binary": "nova-compute", "host": "node1.maas",
            "status": "enabled", "state": "up", "disabled_reason": null}}),
        ))
        .expect(1)
        .mount(&f.server)
        .await;
    let svc = c.compute_service("node1.maas").await.unwrap().unwrap();
    assert!(svc.is_up() && !svc.is_disabled());
    let d = c.disable_service(&svc, "nlm evacuate").await.unwrap();
    assert!(d.is_disabled());
    assert_eq!(d.disabled_reason.as_deref(), Some("nlm evacuate"));
    let e = c.enable_service(&d).await.unwrap();
    assert!(!e.is_disabled());
    f.assert_compute_headers("2.96").await;
}

#[tokio::test]
async fn services_legacy_shape_below_2_53() {
    let f = Fake::start().await;
    let c = f.compute().await.with_microversion(Microversion::v2(52));
    Mock::given(method("GET"))
        .and(path("/v2.1/os-services"))
        .respond_with(ok(
            json!({"services": [{"id": 5, "binary": "nova-compute", "host": "node1.maas",
            "zone": "nova", "status": "enabled", "state": "up"}]}),
        ))
        .mount(&f.server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/v2.1/os-services/disable-log-reason"))
        .and(body_json(json!({"host": "node1.maas", "binary": "nova-compute", "disabled_reason": "maint"})))
        .respond_with(ok(json!({"service": {"binary": "nova-compute", "host": "node1.maas", "status": "disabled", "disabled_reason": "maint"}})))
        .expect(1)
        .mount(&f.server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/v2.1/os-services/enable"))
        .and(body_json(json!({"host": "node1.maas", "binary": "nova-compute"})))
        .respond_with(ok(json!({"service": {"binary": "nova-compute", "host": "node1.maas", "status": "enabled"}})))
        .expect(1)
        .mount(&f.server)
        .await;
    let svc = c.compute_service("node1.maas").await.unwrap().unwrap();
    assert_eq!(svc.id, nlm::openstack::ServiceId::Int(5));
    let d = c.disable_service(&svc, "maint").await.unwrap();
    assert!(d.is_disabled() && d.is_up() && d.id == svc.id);
    c.enable_service(&d).await.unwrap();
    f.assert_compute_headers("2.52").await;
}

#[tokio::test]
async fn live_migrate_body_per_microversion() {
    let f = Fake::start().await;
    let base = f.compute().await;
    let auto = json!({"os-migrateLive": {"host": null, "block_migration": "auto"}});
    Mock::given(method("POST"))
        .and(path("/v2.1/servers/s1/action"))
        .and(body_json(&auto))
        .respond_with(ResponseTemplate::new(202).insert_header("x-openstack-request-id", "req-lm1"))
        .expect(4)
        .mount(&f.server)
        .await;
    for mv in [60, 65, 68, 96] {
        let c = base.with_microversion(Microversion::v2(mv));
        let a = c.live_migrate("s1", &LiveMigrate::default()).await.unwrap();
        assert_eq!(a.request_id.as_deref(), Some("req-lm1"));
    }
    let posts = f.requests("POST", "/v2.1/servers/s1/action").await;
    let versions: Vec<String> = posts
        .iter()
        .map(|r| {
            r.headers
                .get("openstack-api-version")
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        versions,
        [
            "compute 2.60",
            "compute 2.65",
            "compute 2.68",
            "compute 2.96"
        ]
    );

    // explicit host and block migration
    Mock::given(method("POST"))
        .and(path("/v2.1/servers/s2/action"))
        .and(body_json(
            json!({"os-migrateLive": {"host": "node4.maas", "block_migration": true}}),
        ))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&f.server)
        .await;
    let req = LiveMigrate {
        host: Some("node4.maas".into()),
        block_migration: BlockMigration::Yes,
        force: false,
    };
    base.live_migrate("s2", &req).await.unwrap();

    // force only between 2.30 and 2.67
    Mock::given(method("POST"))
        .and(path("/v2.1/servers/s3/action"))
        .and(body_json(json!({"os-migrateLive": {"host": "node4.maas", "block_migration": false, "force": true}})))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&f.server)
        .await;
    let forced = LiveMigrate {
        host: Some("node4.maas".into()),
        block_migration: BlockMigration::No,
        force: true,
    };
    base.with_microversion(Microversion::v2(60))
        .live_migrate("s3", &forced)
        .await
        .unwrap();
    let e = base
        .with_microversion(Microversion::v2(68))
        .live_migrate("s3", &forced)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("2.30–2.67"), "{e}");

    // pre-2.25 shape (forced low version): booleans + disk_over_commit
    Mock::given(method("POST"))
        .and(path("/v2.1/servers/s4/action"))
        .and(body_json(json!({"os-migrateLive": {"host": null, "block_migration": false, "disk_over_commit": false}})))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&f.server)
        .await;
    base.with_microversion(Microversion::v2(24))
        .live_migrate("s4", &LiveMigrate::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn conflict_message_and_request_id_are_reported() {
    let f = Fake::start().await;
    let c = f.compute().await;
    let msg = "Cannot 'os-migrateLive' instance s1 while it is in task_state migrating";
    Mock::given(method("POST"))
        .and(path("/v2.1/servers/s1/action"))
        .respond_with(
            ResponseTemplate::new(409)
                .insert_header("x-openstack-request-id", "req-9f2c")
                .set_body_json(json!({"conflictingRequest": {"code": 409, "message": msg}})),
        )
        .expect(1)
        .mount(&f.server)
        .await;
    let e = c
        .live_migrate("s1", &LiveMigrate::default())
        .await
        .unwrap_err();
    assert!(e.is_conflict() && !e.is_retryable());
    assert_eq!(e.request_id(), Some("req-9f2c"));
    assert_eq!(
        e.to_string(),
        format!("POST /servers/s1/action → 409 Conflict: {msg} (req-9f2c)")
    );
    Mock::given(method("GET"))
        .and(path("/v2.1/servers/gone"))
        .respond_with(ResponseTemplate::new(404).set_body_json(
            json!({"itemNotFound": {"code": 404, "message": "Instance gone could not be found."}}),
        ))
        .mount(&f.server)
        .await;
    let e = c.server("gone").await.unwrap_err();
    assert!(e.is_not_found());
    assert_eq!(e.message(), Some("Instance gone could not be found."));
    Mock::given(method("GET"))
        .and(path("/v2.1/os-hypervisors"))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({"forbidden": {"code": 403, "message": "Policy doesn't allow os_compute_api:os-hypervisors:list to be performed."}})))
        .mount(&f.server)
        .await;
    let e = c.hypervisors(None).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("403 Forbidden: Policy doesn't allow"),
        "{e}"
    );
}

#[tokio::test]
async fn cold_migrate_and_confirm() {
    let f = Fake::start().await;
    let c = f.compute().await;
    Mock::given(method("POST"))
        .and(path("/v2.1/servers/s1/action"))
        .and(body_json(json!({"migrate": {"host": "node4.maas"}})))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&f.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2.1/servers/s1/action"))
        .and(body_json(json!({"migrate": null})))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&f.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2.1/servers/s1/action"))
        .and(body_json(json!({"confirmResize": null})))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&f.server)
        .await;
    c.cold_migrate("s1", Some("node4.maas")).await.unwrap();
    c.cold_migrate("s1", None).await.unwrap();
    c.confirm_resize("s1").await.unwrap();
    let e = c
        .with_microversion(Microversion::v2(55))
        .cold_migrate("s1", Some("node4.maas"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("2.56"), "{e}");
}

#[tokio::test]
async fn os_migrations_filters_and_paging() {
    let f = Fake::start().await;
    let c = f.compute().await.with_page_size(2);
    let mig = |id: i64, uuid: &str, status: &str| {
        json!({"id": id, "uuid": uuid, "instance_uuid": "s1", "status": status,
        "migration_type": "live-migration", "source_compute": "node1.maas", "dest_compute": "node4.maas"})
    };
    Mock::given(method("GET"))
        .and(path("/v2.1/os-migrations"))
        .and(query_param("marker", "m-b"))
        .respond_with(ok(json!({"migrations": [mig(1, "m-a", "error")]})))
        .with_priority(1)
        .expect(1)
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2.1/os-migrations"))
        .and(query_param("instance_uuid", "s1"))
        .and(query_param("source_compute", "node1.maas"))
        .and(query_param("migration_type", "live-migration"))
        .and(query_param("limit", "2"))
        .respond_with(ok(json!({"migrations": [mig(3, "m-c", "running"), mig(2, "m-b", "completed")],
            "migrations_links": [{"rel": "next", "href": "http://x/v2.1/os-migrations?limit=2&marker=m-b"}]})))
        .mount(&f.server)
        .await;
    let all = c
        .migrations(&MigrationFilter {
            instance_uuid: Some("s1".into()),
            source_compute: Some("node1.maas".into()),
            migration_type: Some("live-migration".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.iter().map(|m| m.id).collect::<Vec<_>>(), [3, 2, 1]);
    Mock::given(method("GET"))
        .and(path("/v2.1/os-migrations"))
        .and(query_param("limit", "1"))
        .respond_with(ok(json!({"migrations": [mig(3, "m-c", "running")],
            "migrations_links": [{"rel": "next", "href": "http://x/v2.1/os-migrations?limit=1&marker=m-c"}]})))
        .with_priority(1)
        .expect(1)
        .mount(&f.server)
        .await;
    let latest = c.latest_live_migration("s1").await.unwrap().unwrap();
    assert_eq!(latest.status, "running");
    let q = f.requests("GET", "/v2.1/os-migrations").await;
    assert_eq!(
        q.last().unwrap().url.query(),
        Some("instance_uuid=s1&migration_type=live-migration&limit=1")
    );
    f.assert_compute_headers("2.96").await;
}

#[tokio::test]
async fn server_migrations_force_complete_and_abort() {
    let f = Fake::start().await;
    let c = f.compute().await;
    let m = json!({"id": 53, "uuid": "mu", "server_uuid": "s1", "status": "running", "source_compute": "node1.maas",
        "dest_compute": "node4.maas", "memory_total_bytes": 1000, "memory_processed_bytes": 300,
        "memory_remaining_bytes": 750, "disk_total_bytes": 0, "disk_processed_bytes": 0, "disk_remaining_bytes": 0});
    Mock::given(method("GET"))
        .and(path("/v2.1/servers/s1/migrations"))
        .respond_with(ok(json!({"migrations": [m.clone()]})))
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2.1/servers/s1/migrations/53"))
        .respond_with(ok(json!({"migration": m})))
        .mount(&f.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2.1/servers/s1/migrations/53/action"))
        .and(body_json(json!({"force_complete": null})))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&f.server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/v2.1/servers/s1/migrations/53"))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&f.server)
        .await;
    let list = c.server_migrations("s1").await.unwrap();
    assert_eq!(list.len(), 1);
    let one = c.server_migration("s1", 53).await.unwrap();
    assert_eq!(one.memory_remaining_bytes, Some(750));
    assert_eq!(one.memory_percent(), Some(25.0));
    c.force_complete("s1", 53).await.unwrap();
    c.abort_migration("s1", 53).await.unwrap();
    assert!(c.can_abort_queued());
    assert!(!c.with_microversion(Microversion::v2(64)).can_abort_queued());
    f.assert_compute_headers("2.96").await;
}

#[tokio::test]
async fn server_groups_all_projects_offset_paging() {
    let f = Fake::start().await;
    let c = f.compute().await.with_page_size(2);
    let g = |id: &str, policy: &str| {
        json!({"id": id, "name": id, "policy": policy, "rules": {"max_server_per_host": 2},
        "members": ["s1"], "project_id": "p", "user_id": "u"})
    };
    Mock::given(method("GET"))
        .and(path("/v2.1/os-server-groups"))
        .and(query_param("all_projects", "True"))
        .and(query_param("limit", "2"))
        .and(query_param("offset", "0"))
        .respond_with(ok(
            json!({"server_groups": [g("g1", "anti-affinity"), g("g2", "affinity")]}),
        ))
        .expect(1)
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2.1/os-server-groups"))
        .and(query_param("offset", "2"))
        .respond_with(ok(
            json!({"server_groups": [{"id": "g3", "policies": ["soft-affinity"], "members": []}]}),
        ))
        .expect(1)
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2.1/os-server-groups"))
        .and(query_param("offset", "3"))
        .respond_with(ok(json!({"server_groups": []})))
        .expect(1)
        .mount(&f.server)
        .await;
    let groups = c.server_groups().await.unwrap();
    assert_eq!(groups.len(), 3);
    assert_eq!(groups[0].policy(), Some("anti-affinity"));
    assert_eq!(groups[0].rules.max_server_per_host, Some(2));
    assert_eq!(groups[2].policy(), Some("soft-affinity"));
}

#[tokio::test]
async fn instance_actions_with_events() {
    let f = Fake::start().await;
    let c = f.compute().await;
    Mock::given(method("GET"))
        .and(path("/v2.1/servers/s1/os-instance-actions"))
        .respond_with(ok(json!({"instanceActions": [{"action": "live-migration", "request_id": "req-1",
            "instance_uuid": "s1", "message": "Error", "start_time": "2026-11-25T10:00:00.000000"}]})))
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2.1/servers/s1/os-instance-actions/req-1"))
        .respond_with(ok(json!({"instanceAction": {"action": "live-migration", "request_id": "req-1",
            "instance_uuid": "s1", "message": "Error", "events": [
                {"event": "conductor_live_migrate_instance", "result": "Error", "details": "No valid host was found.",
                 "traceback": "Traceback …\nNoValidHost: No valid host was found."},
                {"event": "compute_check_can_live_migrate_destination", "result": "Success"}]}})))
        .mount(&f.server)
        .await;
    let actions = c.instance_actions("s1").await.unwrap();
    assert_eq!(actions[0].request_id, "req-1");
    let a = c.instance_action("s1", "req-1").await.unwrap();
    assert_eq!(a.events.len(), 2);
    assert_eq!(
        a.fault_summary().as_deref(),
        Some("conductor_live_migrate_instance: No valid host was found.")
    );
}

#[tokio::test]
async fn hypervisors_list_not_detail() {
    let f = Fake::start().await;
    let c = f.compute().await.with_page_size(1);
    Mock::given(method("GET"))
        .and(path("/v2.1/os-hypervisors"))
        .and(query_param("hypervisor_hostname_pattern", "node4.maas"))
        .respond_with(ok(json!({"hypervisors": [
            {"id": "h4", "hypervisor_hostname": "node4.maas", "state": "up", "status": "enabled"},
            {"id": "h40", "hypervisor_hostname": "node40.maas", "state": "up", "status": "enabled"}]})))
        .with_priority(1)
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2.1/os-hypervisors"))
        .and(query_param("marker", "h1"))
        .respond_with(ok(
            json!({"hypervisors": [{"id": "h4", "hypervisor_hostname": "node4.maas"}]}),
        ))
        .with_priority(2)
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2.1/os-hypervisors"))
        .and(query_param("limit", "1"))
        .respond_with(ok(
            json!({"hypervisors": [{"id": "h1", "hypervisor_hostname": "node1.maas"}],
            "hypervisors_links": [{"rel": "next", "href": "http://x?marker=h1"}]}),
        ))
        .with_priority(3)
        .mount(&f.server)
        .await;
    for mv in [60, 87, 88, 104] {
        let c = c.with_microversion(Microversion::v2(mv));
        let all = c.hypervisors(None).await.unwrap();
        assert_eq!(all.len(), 2, "at 2.{mv}");
    }
    let all = c.hypervisors(None).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|h| h.hypervisor_hostname.as_str())
            .collect::<Vec<_>>(),
        ["node1.maas", "node4.maas"]
    );
    let h = c.hypervisor_by_name("node4.maas").await.unwrap().unwrap();
    assert_eq!(h.id, "h4");
    assert!(
        f.requests("GET", "/v2.1/os-hypervisors/detail")
            .await
            .is_empty()
    );
    let versions: Vec<String> = f
        .requests("GET", "/v2.1/os-hypervisors")
        .await
        .iter()
        .map(|r| {
            r.headers
                .get("openstack-api-version")
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for mv in [
        "compute 2.60",
        "compute 2.87",
        "compute 2.88",
        "compute 2.104",
        "compute 2.96",
    ] {
        assert!(
            versions.iter().any(|v| v == mv),
            "{mv} missing in {versions:?}"
        );
    }
}

#[tokio::test]
async fn placement_reads_and_capacity() {
    let f = Fake::start().await;
    let os = f.connect().await;
    let p: Placement = os.placement().await.unwrap();
    let pv = || header("OpenStack-API-Version", "placement 1.14");
    Mock::given(method("GET"))
        .and(path("/placement/resource_providers"))
        .and(query_param("name", "node4.maas"))
        .and(pv())
        .respond_with(ok(
            json!({"resource_providers": [{"uuid": "rp4", "name": "node4.maas", "generation": 3}]}),
        ))
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/placement/resource_providers/rp4/inventories"))
        .and(pv())
        .respond_with(ok(json!({"resource_provider_generation": 3, "inventories": {
            "VCPU": {"total": 4, "reserved": 0, "min_unit": 1, "max_unit": 4, "step_size": 1, "allocation_ratio": 16.0},
            "MEMORY_MB": {"total": 8192, "reserved": 512, "min_unit": 1, "max_unit": 8192, "step_size": 1, "allocation_ratio": 1.5},
            "DISK_GB": {"total": 100, "reserved": 0, "min_unit": 1, "max_unit": 100, "step_size": 1, "allocation_ratio": 1.0}}})))
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/placement/resource_providers/rp4/usages"))
        .and(pv())
        .respond_with(ok(json!({"resource_provider_generation": 3, "usages": {"VCPU": 6, "MEMORY_MB": 4096, "DISK_GB": 40}})))
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/placement/resource_providers/rp4/allocations"))
        .and(pv())
        .respond_with(ok(
            json!({"resource_provider_generation": 3, "allocations": {
            "s1": {"resources": {"VCPU": 2, "MEMORY_MB": 2048, "DISK_GB": 20}}}}),
        ))
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/placement/resource_providers/nope/usages"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"errors": [{"status": 404, "title": "Not Found",
            "detail": "The resource could not be found.\n\n No resource provider with uuid nope found  ", "request_id": "req-p"}]})))
        .mount(&f.server)
        .await;
    let rp = p
        .resource_provider_by_name("node4.maas")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rp.uuid, "rp4");
    let inv = p.inventories(&rp.uuid).await.unwrap();
    let used = p.usages(&rp.uuid).await.unwrap();
    assert_eq!(planner_free(&inv, &used, "VCPU"), 58.0);
    assert_eq!(
        planner_free(&inv, &used, "MEMORY_MB"),
        (11520 - 4096) as f64
    );
    assert_eq!(inv["VCPU"].max_unit, 4, "max_unit 4");
    let allocs = p.allocations("rp4").await.unwrap();
    assert_eq!(allocs["s1"]["MEMORY_MB"], 2048);
    let e = p.usages("nope").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "GET /resource_providers/nope/usages → 404 Not Found: The resource could not be found. No resource provider with uuid nope found"
    );
}

// ---------------------------------------------------------------------------
// Secrets

#[tokio::test]
async fn secrets_never_reach_logs_or_errors() {
    let buf = Buf::default();
    let _guard = tracing::subscriber::set_default(subscriber(buf.clone()));
    let f = Fake::start().await;
    Mock::given(method("GET"))
        .and(path("/v2.1/servers/s1"))
        .and(header("X-Auth-Token", "tok-SECRET-1"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2.1/servers/s1"))
        .respond_with(
            ResponseTemplate::new(409)
                .set_body_json(json!({"conflictingRequest": {"message": "nope"}})),
        )
        .mount(&f.server)
        .await;
    let cfg = f.config();
    let os = OpenStack::connect_with(cfg.clone(), options())
        .await
        .unwrap();
    let mut texts = vec![
        format!("{cfg:?}"),
        format!("{:?}", os),
        format!("{:?}", os.session()),
    ];
    let tok = os.session().token().await.unwrap();
    texts.push(format!("{tok:?}"));
    let e = os.compute().server("s1").await.unwrap_err();
    texts.push(format!("{e} {e:?}"));
    // a transport error
    let session = Arc::new(Session::new(cfg.clone(), options()).unwrap());
    let mut dead = cfg.clone();
    dead.auth_url = "http://127.0.0.1:9/v3".into();
    let e = Session::connect(dead, options()).await.unwrap_err();
    texts.push(format!("{e} {e:?}"));
    drop(session);
    // bad password
    Mock::given(method("POST"))
        .and(path("/v3/auth/tokens"))
        .and(body_partial_json(
            json!({"auth": {"identity": {"password": {"user": {"password": WRONG_PASSWORD}}}}}),
        ))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"error": {"message": "The request you have made requires authentication."}}),
        ))
        .with_priority(1)
        .mount(&f.server)
        .await;
    let mut bad = cfg.clone();
    bad.password = WRONG_PASSWORD.into();
    let e = Session::connect(bad, options()).await.unwrap_err();
    texts.push(format!("{e} {e:?}"));

    let log = buf.text();
    assert!(log.contains("openstack request"), "capture works: {log}");
    assert!(log.contains("/v3/auth/tokens") || log.contains("/auth/tokens"));
    let mut all = texts.join("\n");
    all.push_str(&log);
    if let Some(g) = global_log() {
        all.push_str(&g.text());
    }
    for needle in [PASSWORD, WRONG_PASSWORD, TOKEN_PREFIX, "SECRET"] {
        assert!(!all.contains(needle), "'{needle}' leaked in:\n{all}");
    }
}

// ---------------------------------------------------------------------------
// TLS: the extra CA is trusted on top of the system store

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn tls_extra_ca_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let made = crate::certs::make_ca_and_server_cert(d).is_ok();
    if !made {
        eprintln!("skipping tls_extra_ca_is_trusted: openssl cannot make test certificates");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Ok(child) = std::process::Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-cert",
            "srv.pem",
            "-key",
            "srv.key",
            "-www",
            "-quiet",
        ])
        .current_dir(d)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        eprintln!("skipping tls_extra_ca_is_trusted: cannot run openssl s_server");
        return;
    };
    let _child = Child(child);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "s_server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let https = format!("https://127.0.0.1:{port}/v2.1");
    let f = Fake::start().await;

    // Without the CA: the TLS handshake fails (a connect error).
    let session = Arc::new(Session::connect(f.config(), options()).await.unwrap());
    let e = Compute::negotiate(session, https.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Transport {
                kind: TransportKind::Connect,
                ..
            }
        ),
        "{e:?}"
    );
    // It says why, and is recognised as a certificate problem (the charm
    // then points at the ssl-ca config option).
    assert!(e.is_tls_certificate(), "{e}");
    assert!(e.to_string().contains("certificate"), "{e}");

    // With it: TLS works, and s_server's HTML status page is not a version document.
    let mut cfg = f.config();
    cfg.ca_bundle_pem = Some(std::fs::read(d.join("ca.pem")).unwrap());
    let session = Arc::new(Session::connect(cfg, options()).await.unwrap());
    let e = Compute::negotiate(session, https).await.unwrap_err();
    assert!(
        matches!(e, Error::Decode { .. }),
        "TLS with the extra CA should succeed: {e:?}"
    );

    // base64 of the PEM (the charm's ssl-ca format) decodes to the same bundle.
    use base64::Engine as _;
    let pem = std::fs::read(d.join("ca.pem")).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&pem);
    assert_eq!(nlm::openstack::decode_ca_bundle(&b64).unwrap(), pem);
}

/// Free capacity of `rc` by the planner's model (the only one):
/// `(total - reserved) * allocation_ratio - used`.
fn planner_free(
    inv: &std::collections::BTreeMap<String, nlm::openstack::Inventory>,
    used: &std::collections::BTreeMap<String, u64>,
    rc: &str,
) -> f64 {
    let i = &inv[rc];
    let planner = nlm::plan::Inventory {
        total: i.total,
        reserved: i.reserved,
        min_unit: i.min_unit,
        max_unit: i.max_unit,
        step_size: i.step_size,
        allocation_ratio: i.allocation_ratio,
    };
    planner.capacity() - used.get(rc).copied().unwrap_or(0) as f64
}
