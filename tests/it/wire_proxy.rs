//! An HTTP/1.1 proxy in front of the local cloud's Keystone, Nova and
//! Placement, for the wire-level reliability tests (reliability_wire.rs).
//!
//! One listener per upstream, each on an ephemeral 127.0.0.1 port, all
//! served by one thread with its own tokio runtime (the tests block on the
//! charm's `dispatch` while the proxies keep answering). Each proxy:
//!
//! - reads a request from the client (Content-Length bodies; keep-alive),
//!   forwards it to its upstream over plain HTTP with `reqwest` and writes the
//!   answer back with a fresh Content-Length;
//! - rewrites the upstream URLs in JSON answers to the proxies' URLs (the
//!   service catalog of `POST /v3/auth/tokens`, and the links of version
//!   documents), so the client under test reaches every service through a
//!   proxy, with scheme `https` when the proxies terminate TLS;
//! - optionally terminates TLS with a given certificate and key;
//! - injects faults ([`FaultPlan`]): an error status without forwarding
//!   (502, 503), a connection reset before forwarding, a reset after
//!   forwarding (the request took effect, the client sees a reset), the
//!   answer held past the client's timeout after forwarding, or refused
//!   connections ([`Fault::Refuse`]: what a restart of the service looks
//!   like from the client);
//! - counts requests, forwards and injected faults per kind and per route
//!   ([`Counts`]).
//!
//! Which request gets which fault is decided by a hash of the plan's seed,
//! the request's route label and its occurrence number on that route, not by
//! arrival order across routes: concurrent or re-timed requests on other
//! routes do not shift the faults of a route.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

/// What the proxy does to one request instead of (or on top of) forwarding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// Answer `502 Bad Gateway` without forwarding.
    BadGateway,
    /// Answer `503 Service Unavailable` without forwarding.
    Unavailable,
    /// Reset the connection (TCP RST) without forwarding.
    ResetBefore,
    /// Forward, then reset the connection instead of answering.
    ResetAfter,
    /// Forward, then hold the answer for [`FaultPlan::delay`] (past the
    /// client's timeout) before writing it.
    DelayAfter,
    /// A service restart: close this request's connection without
    /// forwarding or answering it, close this proxy's listening socket (every
    /// new connection then gets ECONNREFUSED) and every connection it keeps
    /// open, and listen again on the same port after
    /// [`FaultPlan::refuse_for`].
    Refuse,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::BadGateway,
        Fault::Unavailable,
        Fault::ResetBefore,
        Fault::ResetAfter,
        Fault::DelayAfter,
        Fault::Refuse,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::BadGateway => "502",
            Fault::Unavailable => "503",
            Fault::ResetBefore => "reset-before",
            Fault::ResetAfter => "reset-after",
            Fault::DelayAfter => "delay",
            Fault::Refuse => "refuse",
        }
    }

    /// Whether the upstream sees the request.
    pub fn forwards(self) -> bool {
        matches!(self, Fault::ResetAfter | Fault::DelayAfter)
    }
}

/// A fault for the `nth` (1-based) request with this exact route label;
/// with `distinct`, for the first request to the `nth` distinct path of the
/// route (e.g. the first start of the `nth` server to start; its retries
/// are left alone).
#[derive(Debug, Clone)]
pub struct Target {
    pub route: String,
    pub nth: u64,
    pub distinct: bool,
    pub fault: Fault,
}

/// Which requests get which fault.
#[derive(Clone)]
pub struct FaultPlan {
    pub seed: u64,
    /// Fraction of the eligible requests answered with one of
    /// [`FaultPlan::kinds`], picked uniformly.
    pub rate: f64,
    /// The kinds drawn at random.
    pub kinds: Vec<Fault>,
    /// Fraction of the eligible requests (besides `rate`) delayed after forwarding.
    pub delay_rate: f64,
    /// How long a delayed answer is held.
    pub delay: Duration,
    /// How long a [`Fault::Refuse`] keeps the proxy's port closed.
    pub refuse_for: Duration,
    /// Which route labels random faults apply to.
    pub eligible: fn(&str) -> bool,
    /// Faults for given occurrences of given routes (take precedence).
    pub targets: Vec<Target>,
}

impl FaultPlan {
    /// No fault at all: a transparent proxy.
    pub fn none() -> FaultPlan {
        FaultPlan {
            seed: 0,
            rate: 0.0,
            kinds: Vec::new(),
            delay_rate: 0.0,
            delay: Duration::ZERO,
            refuse_for: Duration::ZERO,
            eligible: |_| false,
            targets: Vec::new(),
        }
    }

    /// The fault (if any) for occurrence `nth` of `route`; `new_path` is
    /// the number of distinct paths of the route seen so far when this
    /// request is the first to its path.
    pub fn decide(&self, route: &str, nth: u64, new_path: Option<u64>) -> Option<Fault> {
        let target = self.targets.iter().find(|t| {
            t.route == route
                && if t.distinct {
                    new_path == Some(t.nth)
                } else {
                    t.nth == nth
                }
        });
        if let Some(t) = target {
            return Some(t.fault);
        }
        if !(self.eligible)(route) {
            return None;
        }
        let mut rng = fastrand::Rng::with_seed(
            self.seed ^ fnv1a(route.as_bytes()) ^ nth.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let x = rng.f64();
        if x < self.rate && !self.kinds.is_empty() {
            Some(self.kinds[rng.usize(..self.kinds.len())])
        } else if x < self.rate + self.delay_rate {
            Some(Fault::DelayAfter)
        } else {
            None
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What the proxies saw and did (all proxies of one [`WireProxies`]).
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Requests read from clients.
    pub requests: u64,
    /// Requests sent upstream (whatever happened to the answer).
    pub forwarded: u64,
    /// Requests per route label.
    pub by_route: BTreeMap<String, u64>,
    /// Injected faults per kind.
    pub faults: BTreeMap<Fault, u64>,
    /// Injected faults per (route label, kind).
    pub faults_by_route: BTreeMap<(String, Fault), u64>,
    /// TLS handshakes that failed (e.g. the client does not trust the CA).
    pub tls_handshake_failures: u64,
    /// JSON answers whose upstream URLs were rewritten.
    pub rewritten: u64,
    /// Windows during which a proxy refused connections ([`Fault::Refuse`]).
    pub refusals: u64,
    /// Kept client connections closed when a refusal window began.
    pub refused_closed: u64,
    /// Connections accepted after a refusal window ended.
    pub accepted_after_refusal: u64,
}

impl Counts {
    pub fn faults_total(&self) -> u64 {
        self.faults.values().sum()
    }

    pub fn fault(&self, kind: Fault) -> u64 {
        self.faults.get(&kind).copied().unwrap_or(0)
    }

    /// The faults injected on one route: `reset-after ×1, 503 ×1`.
    pub fn faults_on(&self, route: &str) -> String {
        let parts: Vec<String> = self
            .faults_by_route
            .iter()
            .filter(|((r, _), _)| r == route)
            .map(|((_, k), n)| format!("{} ×{n}", k.name()))
            .collect();
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(", ")
        }
    }

    /// One line: `requests 312, forwarded 290, faults 31 (502 ×7, …), …`.
    pub fn line(&self) -> String {
        let kinds: Vec<String> = Fault::ALL
            .iter()
            .map(|k| format!("{} ×{}", k.name(), self.fault(*k)))
            .collect();
        format!(
            "requests {}, forwarded {}, faults {} ({}), TLS handshake failures {}, refusal windows {} (kept connections closed {}, accepted after {})",
            self.requests,
            self.forwarded,
            self.faults_total(),
            kinds.join(", "),
            self.tls_handshake_failures,
            self.refusals,
            self.refused_closed,
            self.accepted_after_refusal
        )
    }

    /// A Markdown table: one row per route, one column per fault kind.
    pub fn table(&self) -> String {
        let mut out = String::from("| route | requests |");
        for k in Fault::ALL {
            out.push_str(&format!(" {} |", k.name()));
        }
        out.push_str("\n|---|---:|");
        for _ in Fault::ALL {
            out.push_str("---:|");
        }
        out.push('\n');
        for (route, n) in &self.by_route {
            out.push_str(&format!("| `{route}` | {n} |"));
            for k in Fault::ALL {
                let f = self
                    .faults_by_route
                    .get(&(route.clone(), k))
                    .copied()
                    .unwrap_or(0);
                out.push_str(&format!(" {f} |"));
            }
            out.push('\n');
        }
        out
    }
}

/// Server certificate and key (PEM files) for TLS termination.
pub struct TlsFiles<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// The three proxies: Keystone, Nova, Placement.
pub struct WireProxies {
    pub keystone: String,
    pub nova: String,
    pub placement: String,
    /// The Keystone proxy's port (for the relation's `auth_port`).
    pub keystone_port: u16,
    counts: Arc<Mutex<Counts>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The local cloud's services (tests/cloud): Keystone, Nova, Placement, on
/// the ports `tests/cloud/cloud` takes (`NLM_CLOUD_*_PORT`, else its
/// defaults), so a cloud on another port set is the one proxied.
pub fn upstreams() -> Vec<String> {
    [
        ("NLM_CLOUD_KEYSTONE_PORT", 5000),
        ("NLM_CLOUD_NOVA_PORT", 8774),
        ("NLM_CLOUD_PLACEMENT_PORT", 8778),
    ]
    .iter()
    .map(|(var, default)| {
        let port = std::env::var(var)
            .ok()
            .and_then(|v| v.parse::<u16>().ok())
            .unwrap_or(*default);
        format!("http://127.0.0.1:{port}")
    })
    .collect()
}

struct Shared {
    plan: FaultPlan,
    counts: Arc<Mutex<Counts>>,
    /// Per route label: requests so far, and the distinct paths.
    seen: Mutex<BTreeMap<String, (u64, std::collections::BTreeSet<String>)>>,
    /// (upstream base, proxy base) pairs applied to JSON answers.
    rewrites: Vec<(String, String)>,
    client: reqwest::Client,
}

impl WireProxies {
    /// Starts one proxy per entry of [`upstreams`].
    pub fn start(plan: FaultPlan, tls: Option<TlsFiles<'_>>) -> WireProxies {
        let upstreams = upstreams();
        let acceptor = tls.map(|t| tls_acceptor(t.cert, t.key));
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let listeners: Vec<std::net::TcpListener> = upstreams
            .iter()
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
                l.set_nonblocking(true).unwrap();
                l
            })
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        let urls: Vec<String> = ports
            .iter()
            .map(|p| format!("{scheme}://127.0.0.1:{p}"))
            .collect();
        let counts = Arc::new(Mutex::new(Counts::default()));
        let shared = Arc::new(Shared {
            plan,
            counts: counts.clone(),
            seen: Mutex::new(BTreeMap::new()),
            rewrites: upstreams
                .iter()
                .cloned()
                .zip(urls.iter().cloned())
                .collect(),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("upstream client"),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("wire-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(async move {
                    for (listener, upstream) in listeners.into_iter().zip(upstreams) {
                        let listener = TcpListener::from_std(listener).unwrap();
                        let shared = shared.clone();
                        let acceptor = acceptor.clone();
                        // Three short strings per proxy set, alive as long as its
                        // tasks (which outlive no test process).
                        let upstream: &'static str = Box::leak(upstream.into_boxed_str());
                        tokio::spawn(accept_loop(listener, upstream, shared, acceptor));
                    }
                    let _ = stop_rx.await;
                });
            })
            .expect("spawn the proxy thread");
        WireProxies {
            keystone: urls[0].clone(),
            nova: urls[1].clone(),
            placement: urls[2].clone(),
            keystone_port: ports[0],
            counts,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// A copy of the counters now.
    pub fn counts(&self) -> Counts {
        self.counts.lock().unwrap().clone()
    }
}

impl Drop for WireProxies {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn tls_acceptor(cert: &Path, key: &Path) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap_or_else(|e| panic!("{}: {e}", cert.display()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", cert.display()));
    let key =
        PrivateKeyDer::from_pem_file(key).unwrap_or_else(|e| panic!("{}: {e}", key.display()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server certificate and key");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A client connection: plain TCP or TLS over TCP (the TCP socket is needed
/// to reset the connection).
trait Conn: AsyncRead + AsyncWrite + Unpin + Send {
    fn tcp(&self) -> &TcpStream;
}

impl Conn for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Conn for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// One proxy's way to stop listening for a while ([`Fault::Refuse`]).
struct Gate {
    /// Asks the accept loop to close the port for this long; answered
    /// once the port is closed.
    refuse: tokio::sync::mpsc::UnboundedSender<(Duration, tokio::sync::oneshot::Sender<()>)>,
    /// Changes when every kept connection must be closed.
    epoch: tokio::sync::watch::Receiver<u64>,
}

enum Accepted {
    Conn(TcpStream),
    Error,
    Refuse(Duration, tokio::sync::oneshot::Sender<()>),
}

async fn accept_loop(
    listener: TcpListener,
    upstream: &'static str,
    shared: Arc<Shared>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) {
    let port = listener.local_addr().expect("listener address").port();
    let (refuse_tx, mut refuse_rx) = tokio::sync::mpsc::unbounded_channel();
    let (epoch_tx, epoch_rx) = tokio::sync::watch::channel(0u64);
    let gate = Arc::new(Gate {
        refuse: refuse_tx,
        epoch: epoch_rx,
    });
    let mut listener = Some(listener);
    let mut after_refusal = false;
    loop {
        let l = listener.as_ref().expect("listening");
        let event = tokio::select! {
            r = l.accept() => match r {
                Ok((tcp, _)) => Accepted::Conn(tcp),
                Err(_) => Accepted::Error,
            },
            Some((d, ack)) = refuse_rx.recv() => Accepted::Refuse(d, ack),
        };
        let tcp = match event {
            Accepted::Conn(tcp) => tcp,
            Accepted::Error => continue,
            Accepted::Refuse(d, ack) => {
                // Close the port (connect() now gets ECONNREFUSED) and every
                // connection kept open, like a service that stops.
                drop(listener.take());
                epoch_tx.send_modify(|e| *e += 1);
                shared.counts.lock().unwrap().refusals += 1;
                let _ = ack.send(());
                tokio::time::sleep(d).await;
                while refuse_rx.try_recv().is_ok() {}
                let mut tries = 0;
                listener = loop {
                    match TcpListener::bind(("127.0.0.1", port)).await {
                        Ok(l) => break Some(l),
                        Err(e) => {
                            tries += 1;
                            assert!(
                                tries < 200,
                                "wire proxy: cannot listen on {port} again: {e}"
                            );
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                };
                after_refusal = true;
                continue;
            }
        };
        if after_refusal {
            shared.counts.lock().unwrap().accepted_after_refusal += 1;
        }
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        let gate = gate.clone();
        tokio::spawn(async move {
            match acceptor {
                None => serve(tcp, upstream, &shared, &gate).await,
                Some(a) => match a.accept(tcp).await {
                    Ok(tls) => serve(tls, upstream, &shared, &gate).await,
                    Err(_) => shared.counts.lock().unwrap().tls_handshake_failures += 1,
                },
            }
        });
    }
}

/// One parsed client request.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    close: bool,
}

/// Reads one request; `None` at a clean end of the connection (or garbage).
async fn read_request<C: Conn>(conn: &mut C, buf: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 256 * 1024 {
            return None;
        }
        let mut chunk = [0u8; 16 * 1024];
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    assert!(
        header("transfer-encoding").is_none(),
        "wire proxy: chunked request bodies are not supported ({method} {target})"
    );
    let len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    while buf.len() < len {
        let mut chunk = [0u8; 16 * 1024];
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body: Vec<u8> = buf.drain(..len).collect();
    Some(Request {
        method,
        target,
        headers,
        body,
        close,
    })
}

/// `POST /v2.1/servers/{id}/action os-migrateLive`: the method, the path
/// without query with ids replaced by `{id}`, and a server action's name.
pub fn route_label(method: &str, target: &str, body: &[u8]) -> String {
    let path = target.split('?').next().unwrap_or("");
    let segs: Vec<&str> = path
        .split('/')
        .map(|s| if is_id(s) { "{id}" } else { s })
        .collect();
    let mut label = format!("{method} {}", segs.join("/"));
    if method == "POST"
        && path.ends_with("/action")
        && let Ok(serde_json::Value::Object(m)) = serde_json::from_slice(body)
        && let Some(k) = m.keys().next()
    {
        label.push(' ');
        label.push_str(k);
    }
    label
}

fn is_id(s: &str) -> bool {
    let hex = s.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    (!s.is_empty() && s.chars().all(|c| c.is_ascii_digit()))
        || (hex && (s.len() == 32 || s.len() == 36))
}

/// Hop-by-hop and length headers the proxy sets itself.
fn skip_header(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "host",
        "content-length",
        "accept-encoding",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

fn reset<C: Conn>(conn: C) {
    let _ = conn.tcp().set_zero_linger();
    drop(conn);
}

async fn serve<C: Conn>(mut conn: C, upstream: &str, shared: &Shared, gate: &Gate) {
    let mut buf = Vec::new();
    let mut epoch = gate.epoch.clone();
    epoch.mark_unchanged();
    loop {
        let req = tokio::select! {
            r = read_request(&mut conn, &mut buf) => r,
            // A refusal window began: this kept connection is closed.
            _ = epoch.changed() => {
                shared.counts.lock().unwrap().refused_closed += 1;
                return;
            }
        };
        let Some(req) = req else {
            return;
        };
        let route = route_label(&req.method, &req.target, &req.body);
        let (nth, new_path) = {
            let mut seen = shared.seen.lock().unwrap();
            let (n, paths) = seen.entry(route.clone()).or_default();
            *n += 1;
            let path = req.target.split('?').next().unwrap_or("").to_string();
            let new_path = paths.insert(path).then_some(paths.len() as u64);
            (*n, new_path)
        };
        let fault = shared.plan.decide(&route, nth, new_path);
        {
            let mut c = shared.counts.lock().unwrap();
            c.requests += 1;
            *c.by_route.entry(route.clone()).or_default() += 1;
            if let Some(f) = fault {
                *c.faults.entry(f).or_default() += 1;
                *c.faults_by_route.entry((route.clone(), f)).or_default() += 1;
            }
            if fault.is_none_or(Fault::forwards) {
                c.forwarded += 1;
            }
        }
        let status_only = |code: u16, reason: &str| {
            let body = format!(
                "{{\"message\": \"wire proxy: injected {code} {reason}\", \"code\": {code}}}"
            );
            format!(
                "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        match fault {
            Some(Fault::BadGateway) => {
                let r = status_only(502, "Bad Gateway");
                if conn.write_all(r.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            Some(Fault::Unavailable) => {
                let r = status_only(503, "Service Unavailable");
                if conn.write_all(r.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            Some(Fault::ResetBefore) => return reset(conn),
            Some(Fault::Refuse) => {
                // The port is closed before this connection is, so the
                // client's next connect() is refused.
                let (ack, closed) = tokio::sync::oneshot::channel();
                if gate.refuse.send((shared.plan.refuse_for, ack)).is_ok() {
                    let _ = closed.await;
                }
                drop(conn);
                return;
            }
            _ => {}
        }
        let answer = forward(&req, upstream, shared).await;
        match fault {
            Some(Fault::ResetAfter) => return reset(conn),
            Some(Fault::DelayAfter) => tokio::time::sleep(shared.plan.delay).await,
            _ => {}
        }
        if conn.write_all(&answer).await.is_err() || conn.flush().await.is_err() {
            return;
        }
        if req.close {
            let _ = conn.shutdown().await;
            return;
        }
    }
}

/// Sends the request upstream; the whole HTTP/1.1 answer to write back.
async fn forward(req: &Request, upstream: &str, shared: &Shared) -> Vec<u8> {
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).expect("HTTP method");
    let mut r = shared
        .client
        .request(method, format!("{upstream}{}", req.target));
    for (k, v) in &req.headers {
        if !skip_header(k) {
            r = r.header(k.as_str(), v.as_str());
        }
    }
    if !req.body.is_empty() {
        r = r.body(req.body.clone());
    }
    let resp = match r.send().await {
        Ok(resp) => resp,
        Err(e) => {
            let body = format!("{{\"message\": \"wire proxy: upstream {upstream}: {e}\"}}");
            return format!(
                "HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes();
        }
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    let json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if json {
        let text = String::from_utf8_lossy(&body);
        if shared.rewrites.iter().any(|(from, _)| text.contains(from)) {
            let mut text = text.into_owned();
            for (from, to) in &shared.rewrites {
                text = text.replace(from, to);
            }
            body = text.into_bytes();
            shared.counts.lock().unwrap().rewritten += 1;
        }
    }
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (k, v) in &headers {
        if !skip_header(k.as_str()) {
            out.push_str(&format!(
                "{}: {}\r\n",
                k.as_str(),
                String::from_utf8_lossy(v.as_bytes())
            ));
        }
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_labelled_without_ids() {
        assert_eq!(
            route_label(
                "POST",
                "/v2.1/servers/0f6b2a9c-1d2e-4f3a-8b9c-0d1e2f3a4b5c/action",
                br#"{"os-migrateLive": {"host": null}}"#
            ),
            "POST /v2.1/servers/{id}/action os-migrateLive"
        );
        assert_eq!(
            route_label(
                "GET",
                "/v2.1/servers/0f6b2a9c-1d2e-4f3a-8b9c-0d1e2f3a4b5c/migrations/17?x=1",
                b""
            ),
            "GET /v2.1/servers/{id}/migrations/{id}"
        );
        assert_eq!(
            route_label("GET", "/v2.1/os-migrations?instance_uuid=x", b""),
            "GET /v2.1/os-migrations"
        );
        assert_eq!(
            route_label("POST", "/v3/auth/tokens", b"{}"),
            "POST /v3/auth/tokens"
        );
    }

    #[test]
    fn decisions_are_seeded_per_route_and_occurrence() {
        let plan = FaultPlan {
            seed: 7,
            rate: 0.1,
            kinds: vec![Fault::BadGateway, Fault::Unavailable, Fault::ResetBefore],
            delay_rate: 0.02,
            delay: Duration::from_secs(1),
            refuse_for: Duration::ZERO,
            eligible: |r| r.starts_with("GET "),
            targets: vec![
                Target {
                    route: "POST /x".into(),
                    nth: 2,
                    distinct: false,
                    fault: Fault::ResetAfter,
                },
                Target {
                    route: "POST /y".into(),
                    nth: 2,
                    distinct: true,
                    fault: Fault::Unavailable,
                },
            ],
        };
        let a: Vec<_> = (1..=2000).map(|n| plan.decide("GET /a", n, None)).collect();
        let b: Vec<_> = (1..=2000).map(|n| plan.decide("GET /a", n, None)).collect();
        assert_eq!(a, b, "same seed, same decisions");
        let faulted = a.iter().filter(|f| f.is_some()).count();
        assert!((160..=330).contains(&faulted), "{faulted} of 2000");
        assert!(a.contains(&Some(Fault::DelayAfter)));
        assert_eq!(plan.decide("POST /x", 1, Some(1)), None, "not eligible");
        assert_eq!(plan.decide("POST /x", 2, None), Some(Fault::ResetAfter));
        // Only the first request to the second distinct path.
        assert_eq!(plan.decide("POST /y", 2, None), None);
        assert_eq!(plan.decide("POST /y", 3, Some(2)), Some(Fault::Unavailable));
    }

    /// The refusal window: the request's connection is closed unanswered,
    /// connect() is refused at once, kept connections are closed, and the
    /// same port listens again after `refuse_for` (no upstream needed: the
    /// requests used are never forwarded).
    #[tokio::test]
    async fn refuse_closes_the_port_for_a_while_then_listens_again() {
        use std::io::{Read, Write};
        let plan = FaultPlan {
            refuse_for: Duration::from_millis(1500),
            targets: vec![
                Target {
                    route: "GET /restart".into(),
                    nth: 1,
                    distinct: false,
                    fault: Fault::Refuse,
                },
                Target {
                    route: "GET /hello".into(),
                    nth: 1,
                    distinct: false,
                    fault: Fault::Unavailable,
                },
            ],
            ..FaultPlan::none()
        };
        let proxies = WireProxies::start(plan, None);
        let addr = ("127.0.0.1", proxies.keystone_port);
        let request = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        // A kept-alive connection, answered once (503, not forwarded).
        let mut kept = std::net::TcpStream::connect(addr).unwrap();
        kept.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        kept.write_all(request("/hello").as_bytes()).unwrap();
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&answer).contains("injected 503") {
            let n = kept.read(&mut chunk).unwrap();
            assert!(n > 0, "{:?}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&chunk[..n]);
        }
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(request("/restart").as_bytes()).unwrap();
        let mut buf = Vec::new();
        let n = c.read_to_end(&mut buf).unwrap_or(0);
        assert_eq!(
            n,
            0,
            "closed without an answer: {:?}",
            String::from_utf8_lossy(&buf)
        );
        let began = std::time::Instant::now();
        let e = std::net::TcpStream::connect(addr).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        // The kept connection was closed too.
        let mut one = [0u8; 1];
        assert_eq!(kept.read(&mut one).unwrap_or(0), 0);
        // Listening again on the same port after the window.
        let back = loop {
            match std::net::TcpStream::connect(addr) {
                Ok(s) => break s,
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
                    assert!(
                        began.elapsed() < Duration::from_secs(20),
                        "never listened again"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        assert!(
            began.elapsed() >= Duration::from_millis(1400),
            "{:?}",
            began.elapsed()
        );
        drop(back);
        let c = proxies.counts();
        assert_eq!(
            (c.refusals, c.fault(Fault::Refuse), c.forwarded),
            (1, 1, 0),
            "{}",
            c.line()
        );
        assert_eq!(c.refused_closed, 1, "{}", c.line());
    }
}
