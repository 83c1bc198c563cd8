//! The one error type of the OpenStack client.

use reqwest::StatusCode;

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a request failed below HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// The connection could not be established: the request never left.
    Connect,
    /// No (complete) answer in time: the request may or may not have been processed.
    Timeout,
    /// Any other failure while sending or receiving (outcome unknown).
    Other,
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportKind::Connect => "connection failed",
            TransportKind::Timeout => "timed out",
            TransportKind::Other => "transport error",
        })
    }
}

/// Everything that can go wrong talking to Keystone, Nova or Placement.
///
/// No variant ever carries a password or a token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The service answered with an error status.
    #[error("{method} {path} → {}: {message}{}", status_text(*.status), req_suffix(.request_id))]
    Http {
        /// HTTP method.
        method: String,
        /// Path relative to the service endpoint (no query).
        path: String,
        /// Response status.
        status: StatusCode,
        /// The service's message (`badRequest.message`, `error.message`, `errors[0].detail`, or the body).
        message: String,
        /// `X-OpenStack-Request-ID` / `X-Compute-Request-Id` of the answer.
        request_id: Option<String>,
    },
    /// No HTTP answer (connect error, timeout, broken connection). The
    /// text ends with the causes below reqwest's own line (e.g. the TLS
    /// verifier's `invalid peer certificate: UnknownIssuer`).
    #[error("{method} {path}: {kind}: {source}{}", causes(source))]
    Transport {
        /// HTTP method.
        method: String,
        /// Path relative to the service endpoint.
        path: String,
        /// What kind of failure.
        kind: TransportKind,
        /// The underlying error (its text names the URL, never headers).
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not what the API documents.
    #[error("{method} {path}: unexpected response: {detail}")]
    Decode {
        /// HTTP method.
        method: String,
        /// Path relative to the service endpoint.
        path: String,
        /// What did not parse.
        detail: String,
    },
    /// The service catalog has no matching endpoint.
    #[error(
        "no '{service_type}' endpoint with interface '{interface}'{} in the Keystone catalog; it offers: {available}",
        region.as_ref().map(|r| format!(" in region '{r}'")).unwrap_or_default()
    )]
    EndpointNotFound {
        /// Service type asked for (`compute`, `placement`).
        service_type: String,
        /// Interface asked for.
        interface: String,
        /// Region asked for, if any.
        region: Option<String>,
        /// What the catalog has, e.g. `compute: public@RegionOne, internal@RegionOne`.
        available: String,
    },
    /// The compute API cannot serve what this client needs.
    #[error("compute API at {endpoint}: {detail}")]
    Unsupported {
        /// The endpoint asked.
        endpoint: String,
        /// Why (e.g. maximum microversion 2.53 is below the required 2.60).
        detail: String,
    },
    /// Invalid or incomplete configuration / relation data.
    #[error("{0}")]
    Config(String),
    /// Keystone answered without a usable token.
    #[error("Keystone authentication: {0}")]
    Auth(String),
}

/// Statuses that refuse a request for now without carrying it out: 429 Too
/// Many Requests, 503 Service Unavailable (e.g. a load balancer with no API
/// worker up). The one list, with [`GATEWAY_STATUSES`], of what is worth
/// sending again later.
const REFUSED_FOR_NOW: [u16; 2] = [429, 503];
/// Gateway statuses: a proxy's upstream failed or was too slow, and may or
/// may not have carried the request out (502, 504).
const GATEWAY_STATUSES: [u16; 2] = [502, 504];

/// A status worth trying again after a wait: 429, 502, 503, 504 (the
/// request path retries GETs on these).
pub(crate) fn is_transient_status(status: StatusCode) -> bool {
    let s = status.as_u16();
    REFUSED_FOR_NOW.contains(&s) || GATEWAY_STATUSES.contains(&s)
}

fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(r) => format!("{} {r}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// `: cause: deeper cause` below `e` (each only when it adds text).
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut seen = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        let text = c.to_string();
        if !text.is_empty() && !seen.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
            seen.push_str(&text);
        }
        next = c.source();
    }
    out
}

fn req_suffix(id: &Option<String>) -> String {
    id.as_ref().map(|i| format!(" ({i})")).unwrap_or_default()
}

impl Error {
    /// HTTP status of an [`Error::Http`].
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The service's message of an [`Error::Http`].
    pub fn message(&self) -> Option<&str> {
        match self {
            Error::Http { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The request id of an [`Error::Http`].
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Http { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// 409 Conflict (e.g. instance in the wrong task state).
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(StatusCode::CONFLICT)
    }

    /// 404 Not Found.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
    }

    /// 400 Bad Request.
    pub fn is_bad_request(&self) -> bool {
        self.status() == Some(StatusCode::BAD_REQUEST)
    }

    /// 401 or 403.
    pub fn is_auth(&self) -> bool {
        matches!(
            self.status(),
            Some(StatusCode::UNAUTHORIZED) | Some(StatusCode::FORBIDDEN)
        )
    }

    /// The cause is transient: connect error, timeout, broken connection,
    /// 429, 502, 503, 504. For a POST/PUT/DELETE the caller must still read
    /// state before trying again (see [`Error::is_ambiguous`]).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport { .. } => true,
            Error::Http { status, .. } => is_transient_status(*status),
            _ => false,
        }
    }

    /// The service refused the request for now without carrying it out
    /// (429, 503): not the instance's end; send it again later.
    pub fn is_transient_refusal(&self) -> bool {
        matches!(self, Error::Http { status, .. } if REFUSED_FOR_NOW.contains(&status.as_u16()))
    }

    /// The TLS handshake failed on the server's certificate (not trusted,
    /// expired, not for this host): the `ssl-ca` config is the likely fix.
    pub fn is_tls_certificate(&self) -> bool {
        match self {
            Error::Transport { source, .. } => {
                let text = causes(source).to_ascii_lowercase();
                text.contains("certificate") || text.contains("unknownissuer")
            }
            _ => false,
        }
    }

    /// The request provably never reached the service: the connection
    /// (TCP or TLS) could not be made, or no token could be had to send it
    /// with. Sending it again cannot do anything twice (invariant I5).
    pub fn never_reached(&self) -> bool {
        matches!(
            self,
            Error::Transport {
                kind: TransportKind::Connect,
                ..
            } | Error::Auth(_)
        )
    }

    /// The request may or may not have been carried out (timeout, broken
    /// connection, 500/502/504): reconcile by reading state.
    pub fn is_ambiguous(&self) -> bool {
        match self {
            Error::Transport { kind, .. } => *kind != TransportKind::Connect,
            Error::Http { status, .. } => {
                status.as_u16() == 500 || GATEWAY_STATUSES.contains(&status.as_u16())
            }
            _ => false,
        }
    }
}

/// Extracts the human message from an OpenStack error body:
/// Nova `{"conflictingRequest": {"message": …}}` (any fault name),
/// Keystone `{"error": {"message": …}}`, Placement `{"errors": [{"detail": …}]}`,
/// else the (shortened) body text.
pub(crate) fn parse_error_message(body: &[u8]) -> String {
    const MAX: usize = 300;
    let text = |m: &str| Some(clean(m)).filter(|m| !m.is_empty());
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(errors) = v.get("errors").and_then(|e| e.as_array()) {
            let msgs: Vec<String> = errors
                .iter()
                .filter_map(|e| {
                    e.get("detail")
                        .or_else(|| e.get("title"))
                        .and_then(|d| d.as_str())
                        .and_then(text)
                })
                .collect();
            if !msgs.is_empty() {
                return shorten(&msgs.join("; "), MAX);
            }
        }
        if let Some(obj) = v.as_object() {
            for inner in obj.values() {
                if let Some(m) = inner.get("message").and_then(|m| m.as_str()).and_then(text) {
                    return shorten(&m, MAX);
                }
            }
            if let Some(m) = obj.get("message").and_then(|m| m.as_str()).and_then(text) {
                return shorten(&m, MAX);
            }
        }
    }
    let text = clean(&String::from_utf8_lossy(body));
    if text.is_empty() {
        "(empty body)".to_owned()
    } else {
        shorten(&text, MAX)
    }
}

fn clean(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn shorten(s: &str, max: usize) -> String {
    crate::text::ellipsis(s, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_known_shapes() {
        assert_eq!(
            parse_error_message(br#"{"conflictingRequest": {"code": 409, "message": "Cannot 'os-migrateLive' instance x while it is in task_state migrating"}}"#),
            "Cannot 'os-migrateLive' instance x while it is in task_state migrating"
        );
        assert_eq!(
            parse_error_message(br#"{"badRequest": {"code": 400, "message": "Invalid input"}}"#),
            "Invalid input"
        );
        assert_eq!(
            parse_error_message(br#"{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}"#),
            "The request you have made requires authentication."
        );
        assert_eq!(
            parse_error_message(br#"{"errors": [{"status": 404, "title": "Not Found", "detail": "The resource could not be found.\n\n No resource provider with uuid x found  "}]}"#),
            "The resource could not be found. No resource provider with uuid x found"
        );
        assert_eq!(
            parse_error_message(b"<html>Bad gateway</html>"),
            "<html>Bad gateway</html>"
        );
        assert_eq!(parse_error_message(b""), "(empty body)");
        // An empty message says what the body was; a huge one is shortened.
        assert_eq!(
            parse_error_message(br#"{"error": {"message": " "}}"#),
            r#"{"error": {"message": " "}}"#
        );
        let huge = format!(
            r#"{{"badRequest": {{"message": "{}"}}}}"#,
            "m".repeat(10_000)
        );
        assert_eq!(parse_error_message(huge.as_bytes()).chars().count(), 301);
    }

    #[test]
    fn display_reads_well() {
        let e = Error::Http {
            method: "POST".into(),
            path: "/servers/abc/action".into(),
            status: StatusCode::CONFLICT,
            message: "Cannot 'os-migrateLive' instance abc while it is in task_state migrating"
                .into(),
            request_id: Some("req-1".into()),
        };
        assert_eq!(
            e.to_string(),
            "POST /servers/abc/action → 409 Conflict: Cannot 'os-migrateLive' instance abc while it is in task_state migrating (req-1)"
        );
        assert!(e.is_conflict() && !e.is_retryable() && !e.is_ambiguous());
    }

    #[test]
    fn one_list_of_transient_statuses() {
        let http = |code: u16| Error::Http {
            method: "POST".into(),
            path: "/servers/x/action".into(),
            status: StatusCode::from_u16(code).unwrap(),
            message: String::new(),
            request_id: None,
        };
        for code in 100..=599u16 {
            let e = http(code);
            assert_eq!(
                e.is_retryable(),
                matches!(code, 429 | 502 | 503 | 504),
                "{code}"
            );
            assert_eq!(
                e.is_transient_refusal(),
                matches!(code, 429 | 503),
                "{code}"
            );
            assert_eq!(e.is_ambiguous(), matches!(code, 500 | 502 | 504), "{code}");
            assert!(!e.never_reached(), "{code}");
            // Refused-for-now and ambiguous never overlap: a 503 did not happen.
            assert!(!(e.is_transient_refusal() && e.is_ambiguous()), "{code}");
        }
        assert!(!Error::Config("x".into()).is_transient_refusal());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::openstack::arbitrary::body_with_keys;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Any error body gives a message of bounded length.
        #[test]
        fn parse_error_message_of_any_body(
            body in body_with_keys(&["errors", "detail", "title", "message", "conflictingRequest", "badRequest", "error", "code"]),
        ) {
            let m = parse_error_message(&body);
            prop_assert!(!m.is_empty());
            prop_assert!(m.chars().count() <= 301, "{} chars", m.chars().count());
        }
    }

    #[test]
    fn deep_bodies_are_text() {
        let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        let m = parse_error_message(deep.as_bytes());
        assert!(m.chars().count() <= 301, "{}", m.len());
    }
}
