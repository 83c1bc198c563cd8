//! The client at the edge (issue 12): where credentials may go (I3) and
//! which failures prove the request never left (I5), against local servers.
//!
//! - A redirect (302/307/308) on the token POST or on a Nova call is not
//!   followed: nothing at all reaches the host it points to, and the error
//!   names the status, the Location's host and what to fix.
//! - A refused TCP connection and a failed TLS handshake are
//!   [`Error::never_reached`]; a timeout or a reset after the request was
//!   sent are not.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nlm::openstack::{
    AuthConfig, Compute, Error, Interface, OpenStack, RetryPolicy, Session, SessionOptions,
    TransportKind,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PASSWORD: &str = "edge-SECRET-pw";
const TOKEN: &str = "edge-SECRET-token";

fn options() -> SessionOptions {
    SessionOptions {
        retry: RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            max_retry_after: Duration::from_secs(1),
        },
        ..SessionOptions::default()
    }
}

/// Relation data pointing Keystone at 127.0.0.1:`port` over `protocol`.
fn config(protocol: &str, port: u16) -> AuthConfig {
    let bag: BTreeMap<String, String> = [
        ("auth_protocol", protocol.to_string()),
        ("auth_host", "127.0.0.1".to_string()),
        ("auth_port", port.to_string()),
        ("credentials_username", "nova_live_migration".into()),
        ("credentials_password", PASSWORD.into()),
        ("credentials_project", "services".into()),
        ("credentials_project_id", "p1".into()),
        ("domain", "service_domain".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut c = AuthConfig::from_relation(&bag, Interface::Internal, None, None).unwrap();
    c.connect_timeout = Duration::from_secs(2);
    c.request_timeout = Duration::from_secs(2);
    c
}

fn token_answer(compute_url: &str) -> ResponseTemplate {
    ResponseTemplate::new(201)
        .insert_header("X-Subject-Token", TOKEN)
        .set_body_json(json!({"token": {
            "issued_at": "2026-11-25T10:00:00.000000Z",
            "expires_at": "2026-11-25T11:00:00.000000Z",
            "user": {"id": "u1", "name": "nova_live_migration"},
            "project": {"id": "p1", "name": "services"},
            "roles": [{"id": "r1", "name": "admin"}],
            "catalog": [{"type": "compute", "name": "nova", "endpoints": [
                {"interface": "internal", "region": "RegionOne", "url": compute_url}]}],
        }}))
}

/// A second server that answers everything; it must see nothing.
async fn elsewhere() -> MockServer {
    let s = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(token_answer("http://127.0.0.1:9/v2.1"))
        .mount(&s)
        .await;
    s
}

async fn assert_untouched(s: &MockServer, what: &str) {
    let got = s.received_requests().await.unwrap();
    let seen: Vec<String> = got
        .iter()
        .map(|r| {
            format!(
                "{} {} (token: {}, body {} bytes)",
                r.method,
                r.url.path(),
                r.headers.contains_key("x-auth-token"),
                r.body.len()
            )
        })
        .collect();
    assert!(
        seen.is_empty(),
        "{what}: the redirect target received {seen:?}"
    );
}

fn redirect(status: u16, to: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).insert_header("Location", to)
}

#[tokio::test]
async fn a_redirect_of_the_token_request_is_not_followed() {
    for status in [302u16, 307, 308] {
        let other = elsewhere().await;
        let keystone = MockServer::start().await;
        let to = format!("{}/v3/auth/tokens", other.uri());
        Mock::given(method("POST"))
            .and(path("/v3/auth/tokens"))
            .respond_with(redirect(status, &to))
            .mount(&keystone)
            .await;
        let e = Session::connect(config("http", keystone.address().port()), options())
            .await
            .unwrap_err();
        let text = e.to_string();
        eprintln!("token POST answered {status}: {text}");
        assert_untouched(&other, &format!("{status} on the token POST")).await;
        assert_eq!(e.status().map(|s| s.as_u16()), Some(status), "{text}");
        let host = format!("127.0.0.1:{}", other.address().port());
        assert!(
            text.starts_with(&format!("POST /auth/tokens → {status} ")),
            "{text}"
        );
        assert!(text.contains(&format!("redirect to {host}")), "{text}");
        assert!(text.contains("not followed"), "{text}");
        assert!(text.contains("auth URL"), "{text}");
        assert!(!text.contains(PASSWORD), "{text}");
        // Asked once: a redirect is not a transient failure.
        assert_eq!(keystone.received_requests().await.unwrap().len(), 1);
        assert!(!e.is_retryable() && !e.never_reached() && !e.is_ambiguous());
    }
}

#[tokio::test]
async fn a_redirect_of_a_nova_call_is_not_followed() {
    for status in [302u16, 307, 308] {
        let other = elsewhere().await;
        let cloud = MockServer::start().await;
        let compute = format!("{}/v2.1", cloud.uri());
        Mock::given(method("POST"))
            .and(path("/v3/auth/tokens"))
            .respond_with(token_answer(&compute))
            .mount(&cloud)
            .await;
        Mock::given(method("GET"))
            .and(path("/v2.1/"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"version": {
                "id": "v2.1", "status": "CURRENT", "version": "2.96", "min_version": "2.1"}})))
            .mount(&cloud)
            .await;
        let to = format!("{}/v2.1/servers/s1", other.uri());
        Mock::given(method("GET"))
            .and(path("/v2.1/servers/s1"))
            .respond_with(redirect(status, &to))
            .mount(&cloud)
            .await;
        let os = OpenStack::connect_with(config("http", cloud.address().port()), options())
            .await
            .unwrap();
        let e = os.compute().server("s1").await.unwrap_err();
        let text = e.to_string();
        eprintln!("GET /servers/s1 answered {status}: {text}");
        assert_untouched(&other, &format!("{status} on a Nova GET")).await;
        assert_eq!(e.status().map(|s| s.as_u16()), Some(status), "{text}");
        let host = format!("127.0.0.1:{}", other.address().port());
        assert!(
            text.starts_with(&format!("GET /servers/s1 → {status} ")),
            "{text}"
        );
        assert!(text.contains(&format!("redirect to {host}")), "{text}");
        assert!(text.contains("not followed"), "{text}");
        assert!(text.contains("catalog"), "{text}");
        assert!(text.contains(&compute), "names the endpoint to fix: {text}");
        assert!(!text.contains(TOKEN), "{text}");
    }
}

#[tokio::test]
async fn a_redirect_without_location_or_to_the_same_host_is_not_followed_either() {
    let cloud = MockServer::start().await;
    let compute = format!("{}/v2.1", cloud.uri());
    Mock::given(method("POST"))
        .and(path("/v3/auth/tokens"))
        .respond_with(token_answer(&compute))
        .mount(&cloud)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2.1/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"version": {
            "id": "v2.1", "status": "CURRENT", "version": "2.96", "min_version": "2.1"}})))
        .mount(&cloud)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2.1/servers/same"))
        .respond_with(redirect(307, "/v2.1/servers/s1"))
        .mount(&cloud)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2.1/servers/none"))
        .respond_with(ResponseTemplate::new(302))
        .mount(&cloud)
        .await;
    let os = OpenStack::connect_with(config("http", cloud.address().port()), options())
        .await
        .unwrap();
    let e = os.compute().server("same").await.unwrap_err();
    let host = format!("127.0.0.1:{}", cloud.address().port());
    assert!(
        e.to_string().contains(&format!("redirect to {host}")),
        "{e}"
    );
    let e = os.compute().server("none").await.unwrap_err();
    assert!(e.to_string().contains("redirect without a Location"), "{e}");
    let asked: Vec<String> = cloud
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_string())
        .collect();
    assert!(
        !asked.contains(&"/v2.1/servers/s1".to_string()),
        "{asked:?}"
    );
}

// ------------------------------------------------------------------- I5

/// A port nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn transport_kind(e: &Error) -> Option<TransportKind> {
    match e {
        Error::Transport { kind, .. } => Some(*kind),
        _ => None,
    }
}

#[tokio::test]
async fn a_refused_connection_never_reached() {
    let port = closed_port();
    let e = Session::connect(config("http", port), options())
        .await
        .unwrap_err();
    assert_eq!(transport_kind(&e), Some(TransportKind::Connect), "{e:?}");
    assert!(e.never_reached(), "{e}");
    assert!(!e.is_ambiguous(), "{e}");
    // The same for a service call made with a token.
    let keystone = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/auth/tokens"))
        .respond_with(token_answer(&format!("http://127.0.0.1:{port}/v2.1")))
        .mount(&keystone)
        .await;
    let session = Arc::new(
        Session::connect(config("http", keystone.address().port()), options())
            .await
            .unwrap(),
    );
    let e = Compute::negotiate(session, format!("http://127.0.0.1:{port}/v2.1"))
        .await
        .unwrap_err();
    assert_eq!(transport_kind(&e), Some(TransportKind::Connect), "{e:?}");
    assert!(e.never_reached(), "{e}");
}

#[tokio::test]
async fn a_failed_tls_handshake_never_reached() {
    let dir = tempfile::tempdir().unwrap();
    if let Err(e) = crate::certs::make_ca_and_server_cert(dir.path()) {
        panic!("openssl cannot make the test certificates: {e}");
    }
    let acceptor = tls_acceptor(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got_request = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = got_request.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let mut b = [0u8; 1];
                if tls.read(&mut b).await.unwrap_or(0) > 0 {
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
    });
    // The client does not trust the private CA: the handshake fails.
    let e = Session::connect(config("https", port), options())
        .await
        .unwrap_err();
    server.abort();
    assert_eq!(transport_kind(&e), Some(TransportKind::Connect), "{e:?}");
    assert!(e.is_tls_certificate(), "{e}");
    assert!(e.never_reached(), "{e}");
    assert!(!got_request.load(std::sync::atomic::Ordering::SeqCst));
}

fn tls_acceptor(dir: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("srv.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("srv.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A server that reads each request whole, then does `after` to it.
async fn after_reading(after: fn(tokio::net::TcpStream)) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Head, then the Content-Length body.
                loop {
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= i + 4 + len {
                            break;
                        }
                    }
                }
                after(tcp);
            });
        }
    });
    (port, task)
}

#[tokio::test]
async fn a_timeout_or_a_reset_after_sending_is_not_never_reached() {
    // Held: the request was read whole and no answer comes (timeout).
    let (port, task) = after_reading(|tcp| {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(tcp);
        });
    })
    .await;
    let mut c = config("http", port);
    c.request_timeout = Duration::from_millis(500);
    let e = Session::connect(c, options()).await.unwrap_err();
    task.abort();
    assert_eq!(transport_kind(&e), Some(TransportKind::Timeout), "{e:?}");
    assert!(!e.never_reached(), "{e}");
    assert!(e.is_ambiguous(), "{e}");

    // Reset: the request was read whole, then the connection is reset.
    let (port, task) = after_reading(|tcp| {
        let _ = tcp.set_zero_linger();
        drop(tcp);
    })
    .await;
    let e = Session::connect(config("http", port), options())
        .await
        .unwrap_err();
    task.abort();
    assert_eq!(transport_kind(&e), Some(TransportKind::Other), "{e:?}");
    assert!(!e.never_reached(), "{e}");
    assert!(e.is_ambiguous(), "{e}");

    // Closed without an answer (FIN after the request): not never-reached.
    let (port, task) = after_reading(|mut tcp| {
        tokio::spawn(async move {
            let _ = tcp.shutdown().await;
        });
    })
    .await;
    let e = Session::connect(config("http", port), options())
        .await
        .unwrap_err();
    task.abort();
    assert!(!e.never_reached(), "{e:?}");
    assert!(e.is_ambiguous(), "{e}");
}

// ------------------------------------------------------- server groups

/// Nova's `GET /os-server-groups`: `limit`/`offset` (no marker, no links),
/// each page cut at the server's `[api] max_limit`.
struct GroupsCappedAt {
    max_limit: usize,
    groups: usize,
    ignore_offset: bool,
}

impl wiremock::Respond for GroupsCappedAt {
    fn respond(&self, req: &wiremock::Request) -> ResponseTemplate {
        let q = |k: &str| {
            req.url
                .query_pairs()
                .find(|(n, _)| n == k)
                .and_then(|(_, v)| v.parse::<usize>().ok())
        };
        let limit = q("limit").unwrap_or(self.max_limit).min(self.max_limit);
        let offset = if self.ignore_offset {
            0
        } else {
            q("offset").unwrap_or(0)
        };
        let page: Vec<_> = (offset..self.groups)
            .take(limit)
            .map(|i| json!({"id": format!("g{i}"), "name": format!("g{i}"), "policy": "anti-affinity", "members": []}))
            .collect();
        ResponseTemplate::new(200).set_body_json(json!({ "server_groups": page }))
    }
}

async fn groups_listed(
    max_limit: usize,
    groups: usize,
    ignore_offset: bool,
) -> (usize, Vec<String>) {
    let cloud = MockServer::start().await;
    let compute = format!("{}/v2.1", cloud.uri());
    Mock::given(method("POST"))
        .and(path("/v3/auth/tokens"))
        .respond_with(token_answer(&compute))
        .mount(&cloud)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2.1/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"version": {
            "id": "v2.1", "status": "CURRENT", "version": "2.96", "min_version": "2.1"}})))
        .mount(&cloud)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2.1/os-server-groups"))
        .respond_with(GroupsCappedAt {
            max_limit,
            groups,
            ignore_offset,
        })
        .mount(&cloud)
        .await;
    let os = OpenStack::connect_with(config("http", cloud.address().port()), options())
        .await
        .unwrap();
    let got = os.compute().server_groups().await.unwrap();
    let offsets: Vec<String> = cloud
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/v2.1/os-server-groups")
        .map(|r| {
            r.url
                .query_pairs()
                .find(|(k, _)| k == "offset")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
        .collect();
    (got.len(), offsets)
}

#[tokio::test]
async fn server_groups_are_all_listed_when_nova_max_limit_is_below_the_page_size() {
    // [api] max_limit = 2 (the client asks for 1000 a page): every group.
    let (n, offsets) = groups_listed(2, 5, false).await;
    assert_eq!(n, 5, "offsets asked: {offsets:?}");
    assert_eq!(offsets, ["0", "2", "4", "5"]);
    // Exactly a multiple of the cap: ends at the empty page.
    let (n, offsets) = groups_listed(3, 6, false).await;
    assert_eq!((n, offsets.len()), (6, 3));
    // None at all: one request.
    assert_eq!(groups_listed(2, 0, false).await, (0, vec!["0".to_string()]));
    // A server that ignores the offset: no endless loop, no duplicates.
    let (n, offsets) = groups_listed(2, 5, true).await;
    assert_eq!((n, offsets.len()), (2, 2));
}
