//! Keystone v3: configuration, password authentication, the token and its catalog.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::secret::Secret;

/// A Keystone object named either by name or by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameOrId {
    /// By name (needs a domain for users and projects).
    Name(String),
    /// By id.
    Id(String),
}

impl NameOrId {
    fn to_json(&self) -> serde_json::Value {
        match self {
            NameOrId::Name(n) => serde_json::json!({ "name": n }),
            NameOrId::Id(i) => serde_json::json!({ "id": i }),
        }
    }
}

/// Catalog interface of the endpoints to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interface {
    /// `public`
    Public,
    /// `internal` (the charm's default)
    #[default]
    Internal,
    /// `admin`
    Admin,
}

impl Interface {
    /// The catalog spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Interface::Public => "public",
            Interface::Internal => "internal",
            Interface::Admin => "admin",
        }
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Interface {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "public" => Ok(Interface::Public),
            "internal" => Ok(Interface::Internal),
            "admin" => Ok(Interface::Admin),
            other => Err(Error::Config(format!(
                "endpoint-interface must be 'internal', 'public' or 'admin', not '{other}'"
            ))),
        }
    }
}

/// Everything needed to authenticate and reach the services.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Keystone v3 URL, ending in `/v3`.
    pub auth_url: String,
    /// User name.
    pub username: String,
    /// Password (never printed).
    pub password: Secret,
    /// Domain of the user.
    pub user_domain: NameOrId,
    /// Project to scope the token to.
    pub project: NameOrId,
    /// Domain of the project (used when the project is given by name).
    pub project_domain: NameOrId,
    /// Region of the endpoints; `None` = the first region the catalog lists.
    pub region: Option<String>,
    /// Catalog interface.
    pub interface: Interface,
    /// Extra trusted CA certificates (PEM), on top of the system store.
    pub ca_bundle_pem: Option<Vec<u8>>,
    /// Explicit proxy URL; `None` = no proxy at all (environment ignored).
    pub proxy: Option<String>,
    /// TCP+TLS connect timeout.
    pub connect_timeout: Duration,
    /// Total timeout of one HTTP request.
    pub request_timeout: Duration,
}

/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default per-request timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A TCP port from relation data: 1 to 65535 (the one rule for the hooks'
/// check of the data and for building the client from it).
pub fn parse_port(s: &str) -> Option<u16> {
    s.trim().parse::<u16>().ok().filter(|p| *p != 0)
}

/// The host of a URL from relation data: a DNS host name (labels of
/// letters, digits, '-' and '_', not starting or ending with '-', the last
/// not all digits), an IPv4 address, or an IPv6 address with or without
/// brackets; never a port, a path or anything else. Returns the form to put
/// in a URL (IPv6 bracketed). The one rule for the hooks' check of the data
/// and for building the client from it.
pub fn parse_host(s: &str) -> Option<String> {
    let s = s.trim();
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner.strip_suffix(']')?;
        return inner
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|_| format!("[{inner}]"));
    }
    if s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Some(format!("[{s}]"));
    }
    if s.parse::<std::net::Ipv4Addr>().is_ok() {
        return Some(s.to_owned());
    }
    let name = s.strip_suffix('.').unwrap_or(s);
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    // An all-digit last label is a mistyped IPv4 address, not a name.
    let last_numeric = labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    (labels.iter().all(|l| label_ok(l)) && !last_numeric).then(|| s.to_owned())
}

impl AuthConfig {
    /// Builds the configuration from the keystone charm's `identity-credentials`
    /// relation data (one unit's bag), plus the charm config `endpoint-interface`,
    /// `region` (empty = first region the relation lists) and the decoded `ssl-ca`.
    pub fn from_relation(
        bag: &BTreeMap<String, String>,
        interface: Interface,
        region: Option<&str>,
        ca_bundle_pem: Option<Vec<u8>>,
    ) -> Result<AuthConfig> {
        let data = RelationData(bag);
        let auth_url = data.auth_url()?;
        let username = data.need("credentials_username")?.to_owned();
        let password = Secret::new(data.need("credentials_password")?);
        let user_domain =
            data.domain("credentials_user_domain_id", "credentials_user_domain_name")?;
        let project_domain = data.domain(
            "credentials_project_domain_id",
            "credentials_project_domain_name",
        )?;
        let project = data.project()?;
        let region = data.region(region);
        if let Some(pem) = &ca_bundle_pem {
            check_ca_bundle(pem)?;
        }
        Ok(AuthConfig {
            auth_url,
            username,
            password,
            user_domain,
            project,
            project_domain,
            region,
            interface,
            ca_bundle_pem,
            proxy: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        })
    }

    /// A password configuration with the defaults: region from the catalog,
    /// `internal` interface, system CAs only, no proxy, default timeouts.
    pub fn new(
        auth_url: impl Into<String>,
        username: impl Into<String>,
        password: Secret,
        user_domain: NameOrId,
        project: NameOrId,
        project_domain: NameOrId,
    ) -> AuthConfig {
        AuthConfig {
            auth_url: auth_url.into().trim_end_matches('/').to_owned(),
            username: username.into(),
            password,
            user_domain,
            project,
            project_domain,
            region: None,
            interface: Interface::Internal,
            ca_bundle_pem: None,
            proxy: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// From `OS_*` variables (an openrc file or the environment):
    /// `OS_AUTH_URL`, `OS_USERNAME`, `OS_PASSWORD`, `OS_PROJECT_ID` or
    /// `OS_PROJECT_NAME`, `OS_USER_DOMAIN_ID|NAME`, `OS_PROJECT_DOMAIN_ID|NAME`
    /// (default `Default`), `OS_REGION_NAME`, `OS_INTERFACE` (default `public`),
    /// `OS_CACERT` is not read (pass the PEM in `ca_bundle_pem`).
    pub fn from_os_vars(vars: &BTreeMap<String, String>) -> Result<AuthConfig> {
        let get = |k: &str| vars.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let need = |k: &str| get(k).ok_or_else(|| Error::Config(format!("{k} is not set")));
        let domain = |id: &str, name: &str| match (get(id), get(name)) {
            (Some(i), _) => NameOrId::Id(i.to_owned()),
            (None, Some(n)) => NameOrId::Name(n.to_owned()),
            (None, None) => NameOrId::Name("Default".to_owned()),
        };
        let project = match (get("OS_PROJECT_ID"), get("OS_PROJECT_NAME")) {
            (Some(i), _) => NameOrId::Id(i.to_owned()),
            (None, Some(n)) => NameOrId::Name(n.to_owned()),
            (None, None) => return Err(Error::Config("OS_PROJECT_NAME is not set".into())),
        };
        let mut c = AuthConfig::new(
            need("OS_AUTH_URL")?,
            need("OS_USERNAME")?,
            Secret::new(need("OS_PASSWORD")?),
            domain("OS_USER_DOMAIN_ID", "OS_USER_DOMAIN_NAME"),
            project,
            domain("OS_PROJECT_DOMAIN_ID", "OS_PROJECT_DOMAIN_NAME"),
        );
        c.region = get("OS_REGION_NAME").map(str::to_owned);
        c.interface = match get("OS_INTERFACE").or(get("OS_ENDPOINT_TYPE")) {
            Some(i) => i.trim_end_matches("URL").parse()?,
            None => Interface::Public,
        };
        Ok(c)
    }

    /// The JSON body of `POST /v3/auth/tokens` (contains the password: never log it).
    pub(crate) fn auth_body(&self) -> serde_json::Value {
        let user = serde_json::json!({
            "name": self.username,
            "domain": self.user_domain.to_json(),
            "password": self.password.expose(),
        });
        let project = match &self.project {
            NameOrId::Id(id) => serde_json::json!({ "id": id }),
            NameOrId::Name(n) => {
                serde_json::json!({ "name": n, "domain": self.project_domain.to_json() })
            }
        };
        serde_json::json!({
            "auth": {
                "identity": { "methods": ["password"], "password": { "user": user } },
                "scope": { "project": project }
            }
        })
    }
}

/// One unit's `identity-credentials` relation data, as `from_relation`
/// reads it: values trimmed, an empty value absent.
struct RelationData<'a>(&'a BTreeMap<String, String>);

impl<'a> RelationData<'a> {
    fn get(&self, k: &str) -> Option<&'a str> {
        self.0.get(k).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn need(&self, k: &str) -> Result<&'a str> {
        self.get(k)
            .ok_or_else(|| Error::Config(format!("identity-credentials relation data lacks '{k}'")))
    }

    /// Keystone's v3 URL from `auth_protocol`, `auth_host` and `auth_port`.
    fn auth_url(&self) -> Result<String> {
        let protocol = self.need("auth_protocol")?;
        if protocol != "http" && protocol != "https" {
            return Err(Error::Config(format!(
                "identity-credentials auth_protocol must be 'http' or 'https', not '{protocol}'"
            )));
        }
        let host = self.need("auth_host")?;
        let port = self.need("auth_port")?;
        if parse_port(port).is_none() {
            return Err(Error::Config(format!(
                "identity-credentials auth_port '{port}' is not a port number"
            )));
        }
        let host = parse_host(host).ok_or_else(|| {
            Error::Config(format!(
                "identity-credentials auth_host {} is not a host name, an IPv4 address or an IPv6 address (without a port)",
                crate::text::quoted(host, 64)
            ))
        })?;
        Ok(format!("{protocol}://{host}:{port}/v3"))
    }

    /// A domain by its id, else by its name, else the relation's `domain`.
    fn domain(&self, id_key: &str, name_key: &str) -> Result<NameOrId> {
        if let Some(id) = self.get(id_key) {
            Ok(NameOrId::Id(id.to_owned()))
        } else if let Some(n) = self.get(name_key).or(self.get("domain")) {
            Ok(NameOrId::Name(n.to_owned()))
        } else {
            Err(Error::Config(format!(
                "identity-credentials relation data lacks '{name_key}' / '{id_key}' / 'domain'"
            )))
        }
    }

    /// The project by its id, else by its name.
    fn project(&self) -> Result<NameOrId> {
        Ok(if let Some(id) = self.get("credentials_project_id") {
            NameOrId::Id(id.to_owned())
        } else {
            NameOrId::Name(self.need("credentials_project")?.to_owned())
        })
    }

    /// The configured region, else the first the relation lists.
    fn region(&self, configured: Option<&str>) -> Option<String> {
        configured
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .or_else(|| {
                self.get("region")
                    .and_then(|r| r.split_whitespace().next())
                    .map(str::to_owned)
            })
    }
}

/// Decodes the `ssl-ca` config value: PEM text, or base64 of PEM (the
/// OpenStack-charm convention). Fails when the result holds no certificate.
pub fn decode_ca_bundle(value: &str) -> Result<Vec<u8>> {
    let trimmed = value.trim();
    let pem = if trimmed.starts_with("-----BEGIN") {
        trimmed.as_bytes().to_vec()
    } else {
        let compact: String = trimmed.split_whitespace().collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|e| Error::Config(format!("ssl-ca is neither PEM nor base64: {e}")))?
    };
    check_ca_bundle(&pem)?;
    Ok(pem)
}

/// Checks a PEM bundle: every `CERTIFICATE` section decodes and is an
/// X.509 certificate usable as a trust anchor, and there is at least one;
/// returns how many. The error says which certificate is wrong (the caller
/// names the option).
pub fn check_ca_pem(pem: &[u8]) -> std::result::Result<usize, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let ders: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("the bundle is not valid PEM ({e})"))?;
    if ders.is_empty() {
        return Err("the bundle holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned());
    }
    let n = ders.len();
    for (i, der) in ders.into_iter().enumerate() {
        rustls::RootCertStore::empty().add(der).map_err(|e| {
            format!(
                "certificate {} of {n} is not an X.509 certificate ({e})",
                i + 1
            )
        })?;
    }
    Ok(n)
}

/// Fails unless the PEM bundle is one or more X.509 certificates
/// ([`check_ca_pem`]); the certificates for the HTTP client.
pub(crate) fn check_ca_bundle(pem: &[u8]) -> Result<Vec<reqwest::Certificate>> {
    check_ca_pem(pem).map_err(|e| {
        Error::Config(format!(
            "ssl-ca: {e}; give the PEM of the CA certificate(s)"
        ))
    })?;
    reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|e| Error::Config(format!("ssl-ca: not a PEM certificate bundle: {e}")))
}

/// A self-signed test CA certificate (no key kept), for the unit tests of
/// the `ssl-ca` checks.
#[cfg(test)]
pub(crate) const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBjTCCATOgAwIBAgIURJQq5dKORVB1tB8KbWgRPFvWcLIwCgYIKoZIzj0EAwIw
GzEZMBcGA1UEAwwQbmxtLXVuaXQtdGVzdC1jYTAgFw0yNjEyMDExNjI5MjZaGA8y
MTI2MTEwNzE2MjkyNlowGzEZMBcGA1UEAwwQbmxtLXVuaXQtdGVzdC1jYTBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABGF3asoqi5cLXE3eyF9FMRtQAUOcxV/2fiqt
B+slHiZjN/t64ZCwvIFUdE5C3/7zVMrUjUGtTiOoL+t3tFaEdBmjUzBRMB0GA1Ud
DgQWBBRvgfJjpV9Rrcbz1z6a0kk7gJcF/TAfBgNVHSMEGDAWgBRvgfJjpV9Rrcbz
1z6a0kk7gJcF/TAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIHH4
4XjjH6UjwV2uaAbNRcLK6hWiNFPw6hTU7DBhsd3WAiEA2hOXx8s60Znz2otqinnT
KW9vM9dSUYau6kmfGSVbBg0=
-----END CERTIFICATE-----
";

// ---------------------------------------------------------------------------
// Token

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct TokenBody {
    pub token: TokenData,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct TokenData {
    pub expires_at: String,
    pub issued_at: String,
    pub user: IdName,
    pub project: IdName,
    pub roles: Vec<IdName>,
    pub catalog: Vec<CatalogEntry>,
}

/// An `{id, name}` pair from Keystone.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(default)]
pub struct IdName {
    /// id
    pub id: String,
    /// name
    pub name: String,
}

/// One service of the catalog.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(default)]
pub struct CatalogEntry {
    /// Service type (`compute`, `placement`, …).
    #[serde(rename = "type")]
    pub service_type: String,
    /// Service name.
    pub name: String,
    /// Its endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// One endpoint of a catalog entry.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(default)]
pub struct Endpoint {
    /// `public` / `internal` / `admin`.
    pub interface: String,
    /// Region name.
    pub region: Option<String>,
    /// Region id.
    pub region_id: Option<String>,
    /// URL.
    pub url: String,
}

/// A project-scoped token and what came with it.
#[derive(Debug)]
pub struct Token {
    pub(crate) value: Secret,
    /// Lifetime as stated by Keystone (`expires_at - issued_at`).
    pub lifetime: Duration,
    /// When this process received it (monotonic clock; immune to clock skew).
    pub obtained: Instant,
    /// `issued_at` as Keystone wrote it.
    pub issued_at: String,
    /// `expires_at` as Keystone wrote it.
    pub expires_at: String,
    /// The user.
    pub user: IdName,
    /// The project.
    pub project: IdName,
    /// Role names.
    pub roles: Vec<String>,
    /// The service catalog.
    pub catalog: Vec<CatalogEntry>,
}

impl Token {
    pub(crate) fn from_response(value: Secret, body: TokenData, obtained: Instant) -> Result<Self> {
        let issued = parse_iso8601(&body.issued_at);
        let expires = parse_iso8601(&body.expires_at).ok_or_else(|| {
            Error::Auth(format!(
                "token expires_at '{}' is not an ISO 8601 time",
                body.expires_at
            ))
        })?;
        // Without issued_at, assume it was issued now (server time unknown): use
        // the local wall clock as a fallback.
        let issued = issued.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)
        });
        let lifetime = Duration::from_secs_f64((expires - issued).max(0.0));
        Ok(Token {
            value,
            lifetime,
            obtained,
            issued_at: body.issued_at,
            expires_at: body.expires_at,
            user: body.user,
            project: body.project,
            roles: body.roles.into_iter().map(|r| r.name).collect(),
            catalog: body.catalog,
        })
    }

    /// Time left before expiry, measured on the local monotonic clock from
    /// the moment the token arrived.
    pub fn remaining(&self) -> Duration {
        self.lifetime.saturating_sub(self.obtained.elapsed())
    }

    /// Fraction of the lifetime still left (0.0 – 1.0).
    pub fn fraction_left(&self) -> f64 {
        if self.lifetime.is_zero() {
            0.0
        } else {
            self.remaining().as_secs_f64() / self.lifetime.as_secs_f64()
        }
    }

    /// Finds the endpoint URL of a service type for an interface and region
    /// (`None` = the first region listed).
    pub fn endpoint(
        &self,
        service_type: &str,
        interface: Interface,
        region: Option<&str>,
    ) -> Result<String> {
        let candidates = self
            .catalog
            .iter()
            .filter(|e| e.service_type == service_type)
            .flat_map(|e| e.endpoints.iter())
            .filter(|ep| ep.interface == interface.as_str());
        let found = match region {
            Some(r) => candidates
                .filter(|ep| ep.region.as_deref() == Some(r) || ep.region_id.as_deref() == Some(r))
                .map(|ep| ep.url.clone())
                .next(),
            None => candidates.map(|ep| ep.url.clone()).next(),
        };
        found.ok_or_else(|| Error::EndpointNotFound {
            service_type: service_type.to_owned(),
            interface: interface.to_string(),
            region: region.map(str::to_owned),
            available: describe_catalog(&self.catalog, service_type),
        })
    }
}

fn describe_catalog(catalog: &[CatalogEntry], service_type: &str) -> String {
    let same: Vec<String> = catalog
        .iter()
        .filter(|e| e.service_type == service_type)
        .flat_map(|e| e.endpoints.iter())
        .map(|ep| {
            format!(
                "{}@{}",
                ep.interface,
                ep.region
                    .as_deref()
                    .or(ep.region_id.as_deref())
                    .unwrap_or("-")
            )
        })
        .collect();
    if !same.is_empty() {
        return format!("{service_type}: {}", same.join(", "));
    }
    let types: Vec<&str> = catalog.iter().map(|e| e.service_type.as_str()).collect();
    if types.is_empty() {
        "an empty catalog".to_owned()
    } else {
        format!("no '{service_type}' service; types: {}", types.join(", "))
    }
}

/// Parses `2015-11-07T02:58:43.578887Z` / `…+00:00` / `…+0200` into Unix seconds.
pub(crate) fn parse_iso8601(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.len() < 19 {
        return None;
    }
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    if b[4] != b'-'
        || b[7] != b'-'
        || (b[10] != b'T' && b[10] != b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.chars().take_while(|c| c.is_ascii_digit()).count();
        frac = format!("0.{}", &r[..digits]).parse().ok()?;
        rest = &r[digits..];
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        tz if tz.starts_with('+') || tz.starts_with('-') => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            let digits: String = tz[1..].chars().filter(|c| c.is_ascii_digit()).collect();
            if digits.len() != 4 {
                return None;
            }
            let oh: i64 = digits[..2].parse().ok()?;
            let om: i64 = digits[2..].parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some((days * 86400 + h * 3600 + mi * 60 + sec - offset) as f64 + frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601() {
        assert_eq!(parse_iso8601("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_iso8601("2015-11-07T02:58:43.5Z"), Some(1446865123.5));
        assert_eq!(
            parse_iso8601("2015-11-07T04:58:43+02:00"),
            Some(1446865123.0)
        );
        assert_eq!(
            parse_iso8601("2015-11-07T02:58:43.000000"),
            Some(1446865123.0)
        );
        assert_eq!(parse_iso8601("garbage"), None);
    }

    fn bag() -> BTreeMap<String, String> {
        [
            ("auth_protocol", "https"),
            ("auth_host", "10.0.0.5"),
            ("auth_port", "35357"),
            ("credentials_username", "nova_live_migration"),
            ("credentials_password", "pw"),
            ("credentials_project", "services"),
            ("credentials_project_id", "p123"),
            ("credentials_user_domain_name", "service_domain"),
            ("credentials_project_domain_name", "service_domain"),
            ("domain", "service_domain"),
            ("region", "RegionOne RegionTwo"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn relation_mapping() {
        let c = AuthConfig::from_relation(&bag(), Interface::Internal, None, None).unwrap();
        assert_eq!(c.auth_url, "https://10.0.0.5:35357/v3");
        assert_eq!(c.region.as_deref(), Some("RegionOne"));
        assert_eq!(c.project, NameOrId::Id("p123".into()));
        assert_eq!(c.user_domain, NameOrId::Name("service_domain".into()));
        let c =
            AuthConfig::from_relation(&bag(), Interface::Public, Some("RegionTwo"), None).unwrap();
        assert_eq!(c.region.as_deref(), Some("RegionTwo"));
        assert!(!format!("{c:?}").contains("pw\""));

        let mut b = bag();
        b.insert("auth_protocol".into(), "ftp".into());
        let e = AuthConfig::from_relation(&b, Interface::Public, None, None).unwrap_err();
        assert!(e.to_string().contains("auth_protocol"), "{e}");
        let mut b = bag();
        b.remove("credentials_password");
        let e = AuthConfig::from_relation(&b, Interface::Public, None, None).unwrap_err();
        assert!(e.to_string().contains("credentials_password"), "{e}");
        let e = AuthConfig::from_relation(&bag(), Interface::Public, None, Some(b"junk".to_vec()))
            .unwrap_err();
        assert!(e.to_string().contains("ssl-ca"), "{e}");
    }

    #[test]
    fn relation_hosts_are_hosts_without_ports() {
        let url = |h: &str| {
            let mut b = bag();
            b.insert("auth_host".into(), h.into());
            AuthConfig::from_relation(&b, Interface::Internal, None, None).map(|c| c.auth_url)
        };
        assert_eq!(url("fd00::5").unwrap(), "https://[fd00::5]:35357/v3");
        assert_eq!(url("[fd00::5]").unwrap(), "https://[fd00::5]:35357/v3");
        assert_eq!(
            url("keystone.maas").unwrap(),
            "https://keystone.maas:35357/v3"
        );
        for bad in [
            "10.0.0.5:5000",
            "[fd00::5",
            "fd00::5]",
            "k/v3",
            "[10.0.0.5]",
        ] {
            let e = url(bad).unwrap_err().to_string();
            assert!(e.contains("is not a host name"), "{bad}: {e}");
        }
    }

    #[test]
    fn os_vars_mapping() {
        let vars: BTreeMap<String, String> = [
            ("OS_AUTH_URL", "http://127.0.0.1:5000/v3/"),
            ("OS_USERNAME", "admin"),
            ("OS_PASSWORD", "admin"),
            ("OS_PROJECT_NAME", "admin"),
            ("OS_USER_DOMAIN_NAME", "Default"),
            ("OS_REGION_NAME", "RegionOne"),
            ("OS_INTERFACE", "internal"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let c = AuthConfig::from_os_vars(&vars).unwrap();
        assert_eq!(c.auth_url, "http://127.0.0.1:5000/v3");
        assert_eq!(c.project, NameOrId::Name("admin".into()));
        assert_eq!(c.project_domain, NameOrId::Name("Default".into()));
        assert_eq!(c.interface, Interface::Internal);
        assert_eq!(c.region.as_deref(), Some("RegionOne"));
        let mut v2 = vars.clone();
        v2.remove("OS_PASSWORD");
        assert!(
            AuthConfig::from_os_vars(&v2)
                .unwrap_err()
                .to_string()
                .contains("OS_PASSWORD")
        );
    }

    #[test]
    fn ca_bundle_decoding() {
        assert!(decode_ca_bundle("bm90IGEgY2VydA==").is_err());
        assert!(decode_ca_bundle("%%%").is_err());
        assert_eq!(
            decode_ca_bundle(TEST_CA_PEM).unwrap(),
            TEST_CA_PEM.trim().as_bytes()
        );
        assert_eq!(check_ca_pem(TEST_CA_PEM.as_bytes()), Ok(1));
        let fake = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let e = decode_ca_bundle(fake).unwrap_err().to_string();
        assert!(
            e.starts_with("ssl-ca: certificate 1 of 1 is not an X.509 certificate"),
            "{e}"
        );
    }

    #[test]
    fn auth_body_shapes() {
        let c = AuthConfig::from_relation(&bag(), Interface::Internal, None, None).unwrap();
        let b = c.auth_body();
        assert_eq!(b["auth"]["scope"]["project"]["id"], "p123");
        assert_eq!(
            b["auth"]["identity"]["password"]["user"]["domain"]["name"],
            "service_domain"
        );
        assert_eq!(b["auth"]["identity"]["password"]["user"]["password"], "pw");
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::openstack::arbitrary::body_with_keys;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any token answer decodes or fails; a decoded one makes a token
        /// or an error; the catalog lookup never panics.
        #[test]
        fn token_answers_never_panic(body in body_with_keys(&[
            "token", "expires_at", "issued_at", "user", "project", "roles", "catalog",
            "id", "name", "type", "endpoints", "interface", "region", "region_id", "url",
        ])) {
            if let Ok(b) = serde_json::from_slice::<TokenBody>(&body)
                && let Ok(t) = Token::from_response(Secret::new("t"), b.token, Instant::now())
            {
                let _ = (t.remaining(), t.fraction_left());
                let _ = t.endpoint("compute", Interface::Internal, None);
                let _ = t.endpoint("compute", Interface::Public, Some("RegionOne"));
            }
        }

        #[test]
        fn iso8601_of_any_text(s in "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}.{0,12}", t in ".{0,40}") {
            let _ = parse_iso8601(&s);
            let _ = parse_iso8601(&t);
        }

        #[test]
        fn ca_bundles_of_any_text(s in ".{0,200}", b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_ca_bundle(&s);
            let _ = check_ca_bundle(&b);
        }
    }
}
