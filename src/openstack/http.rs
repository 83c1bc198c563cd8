//! The session: one HTTP client, the Keystone token, the single request path
//! (token + microversion headers, logging, counting, retries).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use super::error::{Error, Result, TransportKind, is_transient_status, parse_error_message};
use super::keystone::{AuthConfig, Token, TokenBody, check_ca_bundle};
use super::saved::{SavedSession, session_key};
use super::secret::Secret;

/// Retry policy of the request path.
///
/// GETs (and the token request) are retried on connect errors, timeouts,
/// broken connections and 429/502/503/504, with jittered exponential backoff
/// that honours `Retry-After`. POST/PUT/DELETE are retried only after a
/// connect error (the request never left); any other failure is returned.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total attempts of one call (1 = no retry).
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each time.
    pub base_delay: Duration,
    /// Cap of one backoff delay.
    pub max_delay: Duration,
    /// Cap applied to a server's `Retry-After`.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Jittered exponential delay before retry number `retry` (1-based):
    /// uniformly in `[d/2, d]` with `d = min(base * 2^(retry-1), max)`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16));
        let d = exp.min(self.max_delay);
        let half = d / 2;
        half + d.saturating_sub(half).mul_f64(fastrand::f64())
    }
}

/// Session tunables.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Renew the token when less than this is left (capped at half the
    /// token's lifetime, so short-lived tokens still get used).
    pub renew_before: Duration,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            retry: RetryPolicy::default(),
            renew_before: Duration::from_secs(300),
        }
    }
}

/// Counts of HTTP requests put on the wire (every attempt counts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// All requests.
    pub total: u64,
    /// Per method (`GET`, `POST`, …).
    pub by_method: BTreeMap<String, u64>,
    /// Per route label, e.g. `GET /servers/{id}/migrations`.
    pub by_route: BTreeMap<String, u64>,
    /// Attempts that were retries of an earlier failed attempt.
    pub retries: u64,
    /// Token requests to Keystone (also counted in `by_route`).
    pub authentications: u64,
    /// Responses `401 Unauthorized` to a call made with a token (the token
    /// was refused: expired early or revoked); each costs a re-authentication.
    pub unauthorized: u64,
}

impl StatsSnapshot {
    /// Count of one route label (0 when never used).
    pub fn route(&self, label: &str) -> u64 {
        self.by_route.get(label).copied().unwrap_or(0)
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        let diff = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>| {
            a.iter()
                .map(|(k, v)| (k.clone(), v - b.get(k).copied().unwrap_or(0)))
                .filter(|(_, v)| *v > 0)
                .collect()
        };
        StatsSnapshot {
            total: self.total - earlier.total,
            by_method: diff(&self.by_method, &earlier.by_method),
            by_route: diff(&self.by_route, &earlier.by_route),
            retries: self.retries - earlier.retries,
            authentications: self.authentications - earlier.authentications,
            unauthorized: self.unauthorized - earlier.unauthorized,
        }
    }
}

/// Shared request counters of a [`Session`]; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct RequestStats(Arc<Mutex<StatsSnapshot>>);

impl RequestStats {
    /// A copy of the counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Sets all counters to zero.
    pub fn reset(&self) {
        if let Ok(mut s) = self.0.lock() {
            *s = StatsSnapshot::default();
        }
    }

    fn record_unauthorized(&self) {
        if let Ok(mut s) = self.0.lock() {
            s.unauthorized += 1;
        }
    }

    fn record(&self, method: &Method, route: &str, retry: bool, auth: bool) {
        if let Ok(mut s) = self.0.lock() {
            s.total += 1;
            *s.by_method.entry(method.as_str().to_owned()).or_default() += 1;
            *s.by_route.entry(route.to_owned()).or_default() += 1;
            if retry {
                s.retries += 1;
            }
            if auth {
                s.authentications += 1;
            }
        }
    }
}

/// One logical call through [`Session::call`].
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub method: Method,
    /// Service endpoint (catalog URL, no trailing slash).
    pub base: String,
    /// Path below `base`, starting with `/` (may be empty).
    pub path: String,
    /// Route label for counting, e.g. `GET /servers/{id}`.
    pub route: &'static str,
    pub query: Vec<(String, String)>,
    pub body: Option<serde_json::Value>,
    /// `OpenStack-API-Version` value, e.g. `compute 2.96`.
    pub api_version: Option<String>,
    /// Extra headers (legacy microversion header).
    pub extra_headers: Vec<(&'static str, String)>,
}

impl Call {
    pub fn new(method: Method, base: &str, path: impl Into<String>, route: &'static str) -> Self {
        Call {
            method,
            base: base.trim_end_matches('/').to_owned(),
            path: path.into(),
            route,
            query: Vec::new(),
            body: None,
            api_version: None,
            extra_headers: Vec::new(),
        }
    }

    pub fn query(mut self, k: &str, v: impl ToString) -> Self {
        self.query.push((k.to_owned(), v.to_string()));
        self
    }

    pub fn query_opt(self, k: &str, v: Option<impl ToString>) -> Self {
        match v {
            Some(v) => self.query(k, v),
            None => self,
        }
    }

    pub fn json(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
        self
    }

    fn safe_to_retry(&self) -> bool {
        self.method == Method::GET || self.method == Method::HEAD
    }
}

/// A successful answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub request_id: Option<String>,
}

impl Answer {
    pub fn decode<T: DeserializeOwned>(&self, call: &Call) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Decode {
            method: call.method.to_string(),
            path: call.path.clone(),
            detail: e.to_string(),
        })
    }
}

/// Percent-encodes one path segment.
pub(crate) fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An authenticated session against one Keystone: shared by the service
/// clients (wrap it in an `Arc`).
#[derive(Debug)]
pub struct Session {
    client: reqwest::Client,
    config: AuthConfig,
    options: SessionOptions,
    token: tokio::sync::Mutex<Option<Arc<Token>>>,
    stats: RequestStats,
}

impl Session {
    /// Builds the HTTP client (rustls with the system store plus the extra
    /// CA, explicit timeouts, no proxy unless configured) and authenticates.
    pub async fn connect(config: AuthConfig, options: SessionOptions) -> Result<Session> {
        let session = Session::new(config, options)?;
        session.token().await?;
        Ok(session)
    }

    /// Like [`Session::connect`] without authenticating yet.
    pub fn new(config: AuthConfig, options: SessionOptions) -> Result<Session> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            // Never follow a redirect: reqwest drops `Authorization` on a
            // hop to another host but not `X-Auth-Token`, and a 307/308 of
            // the token POST would resend the password. A 3xx is an error
            // naming where it pointed (invariant I3).
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("nova-live-migration/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.ca_bundle_pem {
            builder = builder.tls_certs_merge(check_ca_bundle(pem)?);
        }
        builder = match &config.proxy {
            Some(p) => builder.proxy(
                reqwest::Proxy::all(p)
                    .map_err(|e| Error::Config(format!("invalid proxy URL: {e}")))?,
            ),
            None => builder.no_proxy(),
        };
        let client = builder
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Session {
            client,
            config,
            options,
            token: tokio::sync::Mutex::new(None),
            stats: RequestStats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The request counters.
    pub fn stats(&self) -> &RequestStats {
        &self.stats
    }

    /// The current token, renewed first when it is close to expiry. If that
    /// early renewal fails while the old token still has a little time left
    /// (more than a tenth of its lifetime, at most 30 s), the old one is used
    /// and renewal is tried again on the next call.
    pub async fn token(&self) -> Result<Arc<Token>> {
        let mut guard = self.token.lock().await;
        let Some(old) = guard.as_ref().cloned() else {
            let t = Arc::new(self.authenticate().await?);
            *guard = Some(t.clone());
            return Ok(t);
        };
        let margin = self.options.renew_before.min(old.lifetime / 2);
        if old.remaining() > margin {
            return Ok(old);
        }
        tracing::debug!(
            remaining_s = old.remaining().as_secs_f64(),
            "renewing the Keystone token before expiry"
        );
        match self.authenticate().await {
            Ok(t) => {
                let t = Arc::new(t);
                *guard = Some(t.clone());
                Ok(t)
            }
            Err(e) if old.remaining() > (old.lifetime / 10).min(Duration::from_secs(30)) => {
                tracing::warn!(
                    error = %e,
                    remaining_s = old.remaining().as_secs_f64(),
                    "Keystone token renewal failed; using the current token meanwhile"
                );
                Ok(old)
            }
            Err(e) => Err(e),
        }
    }

    /// Adopts the token an earlier process kept, when it may still be used
    /// ([`SavedSession::usable_for`]: same configuration, first half of its
    /// life at `now_ms`): no Keystone call. A token Keystone has revoked
    /// meanwhile is replaced on its first 401, as any other.
    pub async fn adopt(&self, saved: &SavedSession, now_ms: u64) -> bool {
        let Some(elapsed) = saved.usable_for(&self.config, now_ms) else {
            return false;
        };
        let now = Instant::now();
        let obtained = now
            .checked_sub(Duration::from_secs_f64(elapsed))
            .unwrap_or(now);
        let token = Token {
            value: Secret::new(saved.token()),
            lifetime: Duration::from_secs_f64(saved.lifetime_s),
            obtained,
            issued_at: saved.issued_at.clone(),
            expires_at: saved.expires_at.clone(),
            user: saved.user.clone(),
            project: saved.project.clone(),
            roles: saved.roles.clone(),
            catalog: saved.catalog.clone(),
        };
        *self.token.lock().await = Some(Arc::new(token));
        true
    }

    /// The current token to keep for the next process (`None` before
    /// authentication); `now_ms` dates its arrival on the wall clock.
    pub async fn saved(&self, now_ms: u64) -> Option<SavedSession> {
        let t = self.token.lock().await.clone()?;
        let age = t.obtained.elapsed().as_millis() as u64;
        let mut s = SavedSession::new(
            session_key(&self.config),
            t.value.expose(),
            t.lifetime.as_secs_f64(),
            now_ms.saturating_sub(age),
        );
        s.issued_at = t.issued_at.clone();
        s.expires_at = t.expires_at.clone();
        s.user = t.user.clone();
        s.project = t.project.clone();
        s.roles = t.roles.clone();
        s.catalog = t.catalog.clone();
        Some(s)
    }

    /// Makes sure the token has at least `min_fraction_left` (0.0–1.0) of its
    /// lifetime left, renewing it otherwise; e.g. `ensure_fresh(0.5)` before
    /// starting a migration.
    pub async fn ensure_fresh(&self, min_fraction_left: f64) -> Result<Arc<Token>> {
        let mut guard = self.token.lock().await;
        if let Some(t) = guard.as_ref() {
            let margin = self.options.renew_before.min(t.lifetime / 2);
            if t.fraction_left() >= min_fraction_left && t.remaining() > margin {
                return Ok(t.clone());
            }
        }
        let t = Arc::new(self.authenticate().await?);
        *guard = Some(t.clone());
        Ok(t)
    }

    /// Replaces `stale` after a 401 (unless another task already did).
    async fn renew_after_401(&self, stale: &Arc<Token>) -> Result<Arc<Token>> {
        let mut guard = self.token.lock().await;
        if let Some(t) = guard.as_ref()
            && !Arc::ptr_eq(t, stale)
        {
            return Ok(t.clone());
        }
        tracing::debug!("token rejected with 401; re-authenticating");
        let t = Arc::new(self.authenticate().await?);
        *guard = Some(t.clone());
        Ok(t)
    }

    /// Endpoint URL of a service type from the current token's catalog.
    pub async fn endpoint(&self, service_type: &str) -> Result<String> {
        let t = self.token().await?;
        t.endpoint(
            service_type,
            self.config.interface,
            self.config.region.as_deref(),
        )
        .map(|u| u.trim_end_matches('/').to_owned())
    }

    async fn authenticate(&self) -> Result<Token> {
        let call = Call::new(
            Method::POST,
            &self.config.auth_url,
            "/auth/tokens",
            "POST /auth/tokens",
        )
        .json(self.config.auth_body());
        // Issuing a token has no side effect: retry it like a GET.
        let obtained = Instant::now();
        let answer = self.execute(&call, None, true).await?;
        let value = answer
            .headers
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Error::Auth("response lacks the X-Subject-Token header".into()))?;
        let body: TokenBody = answer.decode(&call)?;
        let token = Token::from_response(Secret::new(value), body.token, obtained)?;
        tracing::debug!(
            user = %token.user.name,
            project = %token.project.name,
            lifetime_s = token.lifetime.as_secs(),
            expires_at = %token.expires_at,
            "authenticated to Keystone"
        );
        Ok(token)
    }

    /// Runs one call with the token, retrying as the policy allows; a 401
    /// re-authenticates once and resends.
    pub(crate) async fn call(&self, call: &Call) -> Result<Answer> {
        let mut token = self.token().await?;
        let mut reauthed = false;
        loop {
            match self.execute(call, Some(&token), call.safe_to_retry()).await {
                Err(e) if e.status() == Some(StatusCode::UNAUTHORIZED) => {
                    self.stats.record_unauthorized();
                    if reauthed {
                        return Err(e);
                    }
                    reauthed = true;
                    token = self.renew_after_401(&token).await?;
                }
                other => return other,
            }
        }
    }

    /// Sends and decodes a JSON answer.
    pub(crate) async fn call_json<T: DeserializeOwned>(&self, call: &Call) -> Result<T> {
        self.call(call).await?.decode(call)
    }

    async fn execute(&self, call: &Call, token: Option<&Token>, safe: bool) -> Result<Answer> {
        let url = format!("{}{}", call.base, call.path);
        let is_auth = token.is_none();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let req = self.request(call, &url, token)?;
            self.stats
                .record(&call.method, call.route, attempt > 1, is_auth);
            let started = Instant::now();
            let outcome = receive(req).await;
            let sent = Sent {
                call,
                url: &url,
                is_auth,
                safe,
                attempt,
                elapsed_ms: started.elapsed().as_millis() as u64,
            };
            let next = match outcome {
                Ok(received) => self.on_answer(&sent, received),
                Err(e) => self.on_transport_error(&sent, e),
            };
            match next {
                Next::Done(result) => return result,
                Next::RetryAfter(delay) => tokio::time::sleep(delay).await,
            }
        }
    }

    /// The request of one attempt: query, headers (the token marked
    /// sensitive) and JSON body.
    fn request(
        &self,
        call: &Call,
        url: &str,
        token: Option<&Token>,
    ) -> Result<reqwest::RequestBuilder> {
        let mut req = self.client.request(call.method.clone(), url);
        if !call.query.is_empty() {
            req = req.query(&call.query);
        }
        req = req.header("Accept", "application/json");
        if let Some(t) = token {
            let mut hv = HeaderValue::from_str(t.value.expose())
                .map_err(|_| Error::Auth("token is not a valid header value".into()))?;
            hv.set_sensitive(true);
            req = req.header("X-Auth-Token", hv);
        }
        if let Some(v) = &call.api_version {
            req = req.header("OpenStack-API-Version", v);
        }
        for (k, v) in &call.extra_headers {
            req = req.header(*k, v);
        }
        if let Some(b) = &call.body {
            req = req.json(b);
        }
        Ok(req)
    }

    /// What an HTTP answer means: success, a redirect (never followed), a
    /// transient status worth retrying (safe calls only), or an error.
    fn on_answer(&self, sent: &Sent<'_>, received: Received) -> Next {
        let policy = &self.options.retry;
        let (call, attempt) = (sent.call, sent.attempt);
        let Received {
            status,
            headers,
            body,
            request_id,
        } = received;
        tracing::debug!(
            method = %call.method,
            path = %call.path,
            status = status.as_u16(),
            elapsed_ms = sent.elapsed_ms,
            request_id = request_id.as_deref().unwrap_or("-"),
            attempt,
            "openstack request"
        );
        if status.is_success() {
            return Next::Done(Ok(Answer {
                headers,
                body,
                request_id,
            }));
        }
        if status.is_redirection() {
            return Next::Done(Err(Error::Http {
                method: call.method.to_string(),
                path: call.path.clone(),
                status,
                message: redirect_message(sent.url, &headers, sent.is_auth, &call.base),
                request_id,
            }));
        }
        if sent.safe && is_transient_status(status) && attempt < policy.max_attempts {
            let delay = retry_after(&headers, policy.max_retry_after, unix_now())
                .unwrap_or_else(|| policy.backoff(attempt));
            tracing::debug!(method = %call.method, path = %call.path, status = status.as_u16(), delay_ms = delay.as_millis() as u64, "retrying");
            return Next::RetryAfter(delay);
        }
        Next::Done(Err(Error::Http {
            method: call.method.to_string(),
            path: call.path.clone(),
            status,
            message: parse_error_message(&body),
            request_id,
        }))
    }

    /// What a transport failure means: a retry (safe calls, or any call
    /// that never connected) or the error, its URL without the query.
    fn on_transport_error(&self, sent: &Sent<'_>, e: reqwest::Error) -> Next {
        let policy = &self.options.retry;
        let (call, attempt) = (sent.call, sent.attempt);
        let kind = if e.is_connect() {
            TransportKind::Connect
        } else if e.is_timeout() {
            TransportKind::Timeout
        } else {
            TransportKind::Other
        };
        tracing::debug!(
            method = %call.method,
            path = %call.path,
            error = %kind,
            elapsed_ms = sent.elapsed_ms,
            attempt,
            "openstack request failed"
        );
        let may_retry = sent.safe || kind == TransportKind::Connect;
        if may_retry && attempt < policy.max_attempts {
            return Next::RetryAfter(policy.backoff(attempt));
        }
        Next::Done(Err(Error::Transport {
            method: call.method.to_string(),
            path: call.path.clone(),
            kind,
            source: e.without_url_query(),
        }))
    }
}

/// One attempt of a call, as its answer is judged.
struct Sent<'a> {
    call: &'a Call,
    url: &'a str,
    is_auth: bool,
    safe: bool,
    attempt: u32,
    elapsed_ms: u64,
}

/// An HTTP answer, its body read.
struct Received {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
    request_id: Option<String>,
}

/// After one attempt: the call's result, or a retry after a delay.
enum Next {
    Done(Result<Answer>),
    RetryAfter(Duration),
}

/// Sends the request and reads the whole answer.
async fn receive(req: reqwest::RequestBuilder) -> std::result::Result<Received, reqwest::Error> {
    let resp = req.send().await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let request_id = request_id(&headers);
    let body = resp.bytes().await?;
    Ok(Received {
        status,
        headers,
        body: body.to_vec(),
        request_id,
    })
}

trait WithoutUrlQuery {
    fn without_url_query(self) -> Self;
}

impl WithoutUrlQuery for reqwest::Error {
    fn without_url_query(mut self) -> Self {
        if let Some(u) = self.url_mut() {
            u.set_query(None);
        }
        self
    }
}

/// `X-OpenStack-Request-ID` (or Nova's `X-Compute-Request-Id`) of an
/// answer, when it is printable text of a sane length.
pub(crate) fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-openstack-request-id")
        .or_else(|| headers.get("x-compute-request-id"))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 256)
        .map(str::to_owned)
}

/// What to say about a 3xx answer: where it pointed (host and port of the
/// `Location`, never its path or query) and what to fix.
fn redirect_message(url: &str, headers: &HeaderMap, is_auth: bool, base: &str) -> String {
    let whereto = headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .and_then(|loc| reqwest::Url::parse(url).ok()?.join(loc.trim()).ok())
        .and_then(|u| {
            let host = u.host_str()?.to_owned();
            Some(match u.port_or_known_default() {
                Some(p) => format!("redirect to {host}:{p}"),
                None => format!("redirect to {host}"),
            })
        })
        .unwrap_or_else(|| "redirect without a Location".to_owned());
    if is_auth {
        format!(
            "{whereto}, not followed: the password is sent only to the auth URL {base}; point the auth URL at the address Keystone answers on (keystone's published auth_protocol/auth_host/auth_port, or OS_AUTH_URL)"
        )
    } else {
        format!(
            "{whereto}, not followed: the token is sent only to the catalog's endpoints; correct the Keystone catalog endpoint {base} (openstack endpoint list) to the URL the service answers on"
        )
    }
}

/// Seconds since the Unix epoch on the wall clock (for `Retry-After` dates).
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The wait a `Retry-After` asks for, at most `cap`: delay-seconds (a
/// decimal fraction and exponent tolerated; huge or infinite → `cap`) or an
/// HTTP-date (IMF-fixdate, relative to `now_unix`; past → zero). `None`
/// when absent, negative, NaN or unreadable: the caller's backoff applies.
pub(crate) fn retry_after(headers: &HeaderMap, cap: Duration, now_unix: f64) -> Option<Duration> {
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    let secs = match v.parse::<f64>() {
        Ok(s) if s.is_nan() || s < 0.0 => return None,
        Ok(s) => s,
        Err(_) => {
            let at = parse_http_date(v)?;
            (at - now_unix).max(0.0)
        }
    };
    Some(
        Duration::try_from_secs_f64(secs)
            .unwrap_or(Duration::MAX)
            .min(cap),
    )
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (IMF-fixdate) → Unix seconds.
fn parse_http_date(v: &str) -> Option<f64> {
    let parts: Vec<&str> = v.split_ascii_whitespace().collect();
    let [dow, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    if !dow.ends_with(',') || day.len() != 2 || year.len() != 4 || time.len() != 8 {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = MONTHS.iter().position(|x| x == month)? + 1;
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let d: u32 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    if !digits(year) || !digits(day) {
        return None;
    }
    let hms: Vec<&str> = time.split(':').collect();
    let [h, mi, s] = hms.as_slice() else {
        return None;
    };
    let ok =
        |x: &str, max: u32| x.len() == 2 && digits(x) && x.parse::<u32>().is_ok_and(|n| n <= max);
    if !ok(h, 23) || !ok(mi, 59) || !ok(s, 60) {
        return None;
    }
    super::keystone::parse_iso8601(&format!("{year}-{m:02}-{d:02}T{h}:{mi}:{s}Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            max_retry_after: Duration::from_secs(1),
        };
        for _ in 0..50 {
            let d1 = p.backoff(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d5 = p.backoff(5);
            assert!(d5 >= Duration::from_millis(150) && d5 <= Duration::from_millis(300));
        }
    }

    fn with_retry_after(v: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_bytes(v).unwrap());
        h
    }

    #[test]
    fn retry_after_never_panics_and_is_capped() {
        let cap = Duration::from_secs(30);
        let now = 1_000_000_000.0; // 2001-09-09T01:46:40Z
        let ra = |v: &str| retry_after(&with_retry_after(v.as_bytes()), cap, now);
        assert_eq!(ra("2"), Some(Duration::from_secs(2)));
        assert_eq!(ra(" 1.5 "), Some(Duration::from_millis(1500)));
        assert_eq!(ra("0"), Some(Duration::ZERO));
        // Huge, infinite: the cap (1e20 used to panic in from_secs_f64).
        for v in [
            "1e20",
            "1e308",
            "inf",
            "+Infinity",
            "18446744073709551616",
            "99999999999999999999999999999999999999999999",
            &"9".repeat(400),
        ] {
            assert_eq!(ra(v), Some(cap), "{v}");
        }
        // Negative, NaN, junk: no hint (the backoff applies).
        for v in [
            "-1", "-1e20", "-inf", "NaN", "nan", "", "soon", "1,5", "0x10",
        ] {
            assert_eq!(ra(v), None, "{v}");
        }
        // HTTP-dates: relative to now, a past one is zero, capped.
        assert_eq!(
            ra("Sun, 09 Sep 2001 01:46:50 GMT"),
            Some(Duration::from_secs(10))
        );
        assert_eq!(ra("Sun, 09 Sep 2001 01:46:00 GMT"), Some(Duration::ZERO));
        assert_eq!(ra("Fri, 31 Dec 9999 23:59:59 GMT"), Some(cap));
        assert_eq!(ra("Thu, 01 Jan 1970 00:00:00 GMT"), Some(Duration::ZERO));
        for v in [
            "Sun, 09 Sep 2001 01:46:50 UTC",
            "Sun, 32 Sep 2001 01:46:50 GMT",
            "Sun, 09 Foo 2001 01:46:50 GMT",
            "Sun, 09 Sep 2001 24:46:50 GMT",
            "Sunday, 09-Sep-01 01:46:50 GMT",
            "Sun Sep  9 01:46:50 2001",
            "Sun, 09 Sep 20x1 01:46:50 GMT",
            "Sun, +9 Sep 2001 01:46:50 GMT",
        ] {
            assert_eq!(ra(v), None, "{v}");
        }
        // Not text: no hint.
        assert_eq!(retry_after(&with_retry_after(b"\xff\xfe"), cap, now), None);
        assert_eq!(retry_after(&HeaderMap::new(), cap, now), None);
    }

    #[test]
    fn request_ids_are_read_when_printable() {
        let mut h = HeaderMap::new();
        assert_eq!(request_id(&h), None);
        h.insert("x-compute-request-id", HeaderValue::from_static("req-c"));
        assert_eq!(request_id(&h).as_deref(), Some("req-c"));
        h.insert("x-openstack-request-id", HeaderValue::from_static("req-o"));
        assert_eq!(request_id(&h).as_deref(), Some("req-o"));
        h.insert(
            "x-openstack-request-id",
            HeaderValue::from_bytes(b"req-\xff").unwrap(),
        );
        assert_eq!(request_id(&h), None);
        let long = "r".repeat(1000);
        h.insert(
            "x-openstack-request-id",
            HeaderValue::from_str(&long).unwrap(),
        );
        assert_eq!(request_id(&h), None);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn retry_after_of_any_header_value_is_capped_or_none(
                v in proptest::collection::vec(any::<u8>(), 0..64),
                text in "[-+0-9.eE naNifIF,:a-zA-Z]{0,40}",
                cap_ms in 0u64..100_000,
                now in any::<f64>(),
            ) {
                let cap = Duration::from_millis(cap_ms);
                for bytes in [v.as_slice(), text.as_bytes()] {
                    if let Ok(hv) = HeaderValue::from_bytes(bytes) {
                        let mut h = HeaderMap::new();
                        h.insert("retry-after", hv);
                        if let Some(d) = retry_after(&h, cap, now) {
                            prop_assert!(d <= cap);
                        }
                    }
                }
            }

            #[test]
            fn request_id_of_any_header_value(v in proptest::collection::vec(any::<u8>(), 0..300)) {
                if let Ok(hv) = HeaderValue::from_bytes(&v) {
                    let mut h = HeaderMap::new();
                    h.insert("x-openstack-request-id", hv);
                    if let Some(id) = request_id(&h) {
                        prop_assert!(!id.is_empty() && id.len() <= 256);
                    }
                }
            }

            #[test]
            fn redirect_message_of_any_location(
                v in proptest::collection::vec(any::<u8>(), 0..200),
                auth in any::<bool>(),
            ) {
                let mut h = HeaderMap::new();
                if let Ok(hv) = HeaderValue::from_bytes(&v) {
                    h.insert("location", hv);
                }
                let m = redirect_message("http://127.0.0.1:5000/v3/auth/tokens", &h, auth, "http://127.0.0.1:5000/v3");
                prop_assert!(m.contains("not followed"));
            }
        }
    }

    #[test]
    fn segment_encoding() {
        assert_eq!(seg("abc-1"), "abc-1");
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn stats_diff() {
        let s = RequestStats::default();
        s.record(&Method::GET, "GET /x", false, false);
        let a = s.snapshot();
        s.record(&Method::GET, "GET /x", true, false);
        s.record(&Method::POST, "POST /y", false, false);
        let d = s.snapshot().since(&a);
        assert_eq!(d.total, 2);
        assert_eq!(d.route("GET /x"), 1);
        assert_eq!(d.retries, 1);
        assert_eq!(d.by_method.get("POST"), Some(&1));
    }
}
