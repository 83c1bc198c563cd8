//! The charm's configuration (`config.yaml`), typed and validated.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::Value;

use crate::plan::{InstancePolicy, Order};
use crate::text::{quoted, shown};

/// Keystone catalog interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointInterface {
    Internal,
    Public,
    Admin,
}

impl EndpointInterface {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointInterface::Internal => "internal",
            EndpointInterface::Public => "public",
            EndpointInterface::Admin => "admin",
        }
    }
}

/// `block-migration`: `auto`, `true` or `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockMigration {
    Auto,
    True,
    False,
}

impl BlockMigration {
    pub fn parse(s: &str) -> Option<BlockMigration> {
        match s {
            "auto" => Some(BlockMigration::Auto),
            "true" => Some(BlockMigration::True),
            "false" => Some(BlockMigration::False),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BlockMigration::Auto => "auto",
            BlockMigration::True => "true",
            BlockMigration::False => "false",
        }
    }
}

/// `timeout-action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeoutAction {
    Abort,
    ForceComplete,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub endpoint_interface: EndpointInterface,
    /// Empty = first region the relation publishes.
    pub region: Option<String>,
    /// Decoded PEM bundle, when `ssl-ca` is set.
    pub ssl_ca_pem: Option<Vec<u8>>,
    /// Empty = nova.conf, else hostname.
    pub nova_host: Option<String>,
    /// 0 = derived from nova.conf.
    pub max_concurrent_migrations: u32,
    pub block_migration: BlockMigration,
    /// Seconds, 0 = off.
    pub migration_timeout: u64,
    /// Seconds, 0 = off.
    pub stall_timeout: u64,
    pub timeout_action: TimeoutAction,
    /// Percent, 0 = never.
    pub force_complete_at: u8,
    pub retries: u32,
    /// Seconds.
    pub poll_interval: f64,
    pub log_level: String,
    /// Reset an instance Nova left in ERROR after an abort to active, only
    /// when its guest is confirmed running on this node.
    pub reset_after_abort: bool,
    /// `max-nodes-in-maintenance` and `max-nodes-in-maintenance-per-az`.
    pub maintenance: crate::plan::budget::Limits,
    /// Policy of an instance without `nova-live-migration:policy`.
    pub default_policy: InstancePolicy,
    /// Start order after the instances' priority.
    pub drain_order: Order,
}

/// One invalid option, with what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub option: &'static str,
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.option, self.message)
    }
}

/// Every invalid option at once, so one `juju config` fixes them all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: {}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
pub struct ConfigError(pub Vec<ConfigProblem>);

/// Upper bounds that keep an option meaningful.
pub const MAX_CONCURRENT: i64 = 64;
pub const MAX_RETRIES: i64 = 10;
pub const MAX_POLL_INTERVAL: f64 = 60.0;
pub const MIN_POLL_INTERVAL: f64 = 0.2;
const MAX_SECONDS: i64 = 7 * 24 * 3600;
/// Longest host or region name.
pub const MAX_NAME_BYTES: usize = 255;

struct Reader<'a> {
    raw: &'a BTreeMap<String, Value>,
    problems: Vec<ConfigProblem>,
}

impl Reader<'_> {
    fn bad(&mut self, option: &'static str, message: String) {
        self.problems.push(ConfigProblem { option, message });
    }

    fn string(&mut self, option: &'static str, default: &str) -> String {
        match self.raw.get(option) {
            None | Some(Value::Null) => default.to_string(),
            Some(Value::String(s)) => s.trim().to_string(),
            Some(other) => {
                self.bad(
                    option,
                    format!("must be a string, got {}", shown(&other.to_string(), 64)),
                );
                default.to_string()
            }
        }
    }

    fn choice<T>(
        &mut self,
        option: &'static str,
        default: &str,
        parse: impl Fn(&str) -> Option<T>,
        allowed: &str,
    ) -> T {
        let s = self.string(option, default);
        match parse(&s) {
            Some(v) => v,
            None => {
                self.bad(
                    option,
                    format!("{} is not one of {allowed}", quoted(&s, 64)),
                );
                parse(default).expect("the default parses")
            }
        }
    }

    fn int(&mut self, option: &'static str, default: i64, min: i64, max: i64) -> i64 {
        let v = match self.raw.get(option) {
            None | Some(Value::Null) => return default,
            Some(v) => v,
        };
        match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => n,
            Some(n) => {
                self.bad(
                    option,
                    format!("{n} is out of range, allowed {min} to {max}"),
                );
                default
            }
            // A whole number above i64::MAX is still a whole number.
            None if v.is_u64() => {
                self.bad(
                    option,
                    format!("{v} is out of range, allowed {min} to {max}"),
                );
                default
            }
            None => {
                self.bad(
                    option,
                    format!("must be a whole number, got {}", shown(&v.to_string(), 64)),
                );
                default
            }
        }
    }

    fn boolean(&mut self, option: &'static str, default: bool) -> bool {
        match self.raw.get(option) {
            None | Some(Value::Null) => default,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) if s.trim() == "true" => true,
            Some(Value::String(s)) if s.trim() == "false" => false,
            Some(other) => {
                self.bad(
                    option,
                    format!(
                        "must be true or false, got {}",
                        shown(&other.to_string(), 64)
                    ),
                );
                default
            }
        }
    }

    fn float(&mut self, option: &'static str, default: f64, min: f64, max: f64) -> f64 {
        let v = match self.raw.get(option) {
            None | Some(Value::Null) => return default,
            Some(v) => v,
        };
        match v.as_f64() {
            Some(n) if n.is_finite() && n >= min && n <= max => n,
            Some(n) => {
                self.bad(
                    option,
                    format!("{n} is out of range, allowed {min} to {max}"),
                );
                default
            }
            None => {
                self.bad(
                    option,
                    format!("must be a number, got {}", shown(&v.to_string(), 64)),
                );
                default
            }
        }
    }
}

/// Decodes `ssl-ca`: base64 of one or more PEM certificates, each of which
/// must parse as X.509.
pub fn decode_ssl_ca(raw: &str) -> Result<Vec<u8>, String> {
    let compact: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| {
            format!("is not valid base64 ({e}); set it to the output of `base64 -w0 ca.pem`")
        })?;
    crate::openstack::check_ca_pem(&pem).map_err(|e| {
        format!(
            "decodes to something unusable: {e}; it must be base64 of the PEM of the CA certificate(s): set it to the output of `base64 -w0 ca.pem`"
        )
    })?;
    Ok(pem)
}

impl Reader<'_> {
    /// The maintenance budget: a number, and a per-zone string
    /// (`plan::budget::ZoneLimits::parse` says what is allowed).
    fn maintenance_limits(&mut self) -> crate::plan::budget::Limits {
        let max = i64::from(crate::plan::budget::MAX_LIMIT);
        let total = self.int("max-nodes-in-maintenance", 0, 0, max) as u32;
        let raw = self.string("max-nodes-in-maintenance-per-az", "");
        let per_az = crate::plan::budget::ZoneLimits::parse(&raw).unwrap_or_else(|e| {
            self.bad("max-nodes-in-maintenance-per-az", e);
            Default::default()
        });
        crate::plan::budget::Limits { total, per_az }
    }
}

impl Reader<'_> {
    fn endpoint_interface(&mut self) -> EndpointInterface {
        self.choice(
            "endpoint-interface",
            "internal",
            |s| match s {
                "internal" => Some(EndpointInterface::Internal),
                "public" => Some(EndpointInterface::Public),
                "admin" => Some(EndpointInterface::Admin),
                _ => None,
            },
            "internal, public, admin",
        )
    }

    /// `None`: the first region keystone publishes.
    fn region(&mut self) -> Option<String> {
        let region = Some(self.string("region", "")).filter(|s| !s.is_empty());
        if let Some(reg) = &region
            && (reg.len() > MAX_NAME_BYTES || reg.chars().any(char::is_control))
        {
            self.bad(
                "region",
                format!(
                    "{} is not a region name (at most {MAX_NAME_BYTES} bytes, no control characters); leave it empty to use the first region keystone publishes",
                    quoted(reg, 64)
                ),
            );
        }
        region
    }

    fn ssl_ca_pem(&mut self) -> Option<Vec<u8>> {
        let ssl_ca = self.string("ssl-ca", "");
        if ssl_ca.is_empty() {
            return None;
        }
        match decode_ssl_ca(&ssl_ca) {
            Ok(pem) => Some(pem),
            Err(e) => {
                self.bad("ssl-ca", e);
                None
            }
        }
    }

    fn nova_host(&mut self) -> Option<String> {
        let nova_host = Some(self.string("nova-host", "")).filter(|s| !s.is_empty());
        if let Some(h) = &nova_host
            && !valid_host(h)
        {
            self.bad(
                "nova-host",
                format!(
                    "{} is not a host name (at most {MAX_NAME_BYTES} bytes of letters, digits, '.', '-', '_')",
                    quoted(h, 64)
                ),
            );
        }
        nova_host
    }

    fn timeout_action(&mut self) -> TimeoutAction {
        self.choice(
            "timeout-action",
            "abort",
            |s| match s {
                "abort" => Some(TimeoutAction::Abort),
                "force-complete" => Some(TimeoutAction::ForceComplete),
                _ => None,
            },
            "abort, force-complete",
        )
    }
}

fn valid_host(s: &str) -> bool {
    s.len() <= MAX_NAME_BYTES
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

impl Config {
    /// Validates the raw `config-get --format=json` map. Missing options take
    /// the defaults of config.yaml.
    pub fn from_values(raw: &BTreeMap<String, Value>) -> Result<Config, ConfigError> {
        let mut r = Reader {
            raw,
            problems: Vec::new(),
        };
        let endpoint_interface = r.endpoint_interface();
        let region = r.region();
        let ssl_ca_pem = r.ssl_ca_pem();
        let nova_host = r.nova_host();
        let max_concurrent_migrations =
            r.int("max-concurrent-migrations", 0, 0, MAX_CONCURRENT) as u32;
        let block_migration = r.choice(
            "block-migration",
            "auto",
            BlockMigration::parse,
            "auto, true, false",
        );
        let migration_timeout = r.int("migration-timeout", 0, 0, MAX_SECONDS) as u64;
        let stall_timeout = r.int("stall-timeout", 300, 0, MAX_SECONDS) as u64;
        let timeout_action = r.timeout_action();
        let force_complete_at = r.int("force-complete-at", 0, 0, 100) as u8;
        let retries = r.int("retries", 1, 0, MAX_RETRIES) as u32;
        let poll_interval = r.float("poll-interval", 2.0, MIN_POLL_INTERVAL, MAX_POLL_INTERVAL);
        let log_level = r.choice(
            "log-level",
            "info",
            |s| crate::juju::log::parse_level(s).map(|_| s.to_string()),
            "error, warn, info, debug, trace",
        );
        let reset_after_abort = r.boolean("reset-after-abort", false);
        let maintenance = r.maintenance_limits();
        let default_policy = r.choice(
            "default-policy",
            "live",
            InstancePolicy::parse_default,
            InstancePolicy::ALLOWED_DEFAULT,
        );
        let drain_order = r.choice("drain-order", "largest-first", Order::parse, Order::ALLOWED);
        if !r.problems.is_empty() {
            return Err(ConfigError(r.problems));
        }
        Ok(Config {
            endpoint_interface,
            region,
            ssl_ca_pem,
            nova_host,
            max_concurrent_migrations,
            block_migration,
            migration_timeout,
            stall_timeout,
            timeout_action,
            force_complete_at,
            retries,
            poll_interval,
            log_level,
            reset_after_abort,
            maintenance,
            default_policy,
            drain_order,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: Value) -> Result<Config, ConfigError> {
        let map: BTreeMap<String, Value> = serde_json::from_value(v).unwrap();
        Config::from_values(&map)
    }

    #[test]
    fn defaults() {
        let c = cfg(json!({})).unwrap();
        assert_eq!(c.endpoint_interface, EndpointInterface::Internal);
        assert_eq!(c.stall_timeout, 300);
        assert!(!c.reset_after_abort);
        assert_eq!(c.retries, 1);
        assert_eq!(c.poll_interval, 2.0);
        assert_eq!(c.block_migration, BlockMigration::Auto);
        assert_eq!(c.region, None);
        assert_eq!(c.log_level, "info");
    }

    #[test]
    fn maintenance_budget_options() {
        let c = cfg(
            json!({"max-nodes-in-maintenance": 2, "max-nodes-in-maintenance-per-az": "az1=1,*=3"}),
        )
        .unwrap();
        assert_eq!(c.maintenance.total, 2);
        assert_eq!(c.maintenance.per_az.of("az1"), Some(1));
        assert_eq!(c.maintenance.per_az.of("az2"), Some(3));
        assert_eq!(cfg(json!({})).unwrap().maintenance, Default::default());
        let err = cfg(
            json!({"max-nodes-in-maintenance": -1, "max-nodes-in-maintenance-per-az": "az1=one"}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("max-nodes-in-maintenance: -1 is out of range, allowed 0 to 10000"),
            "{err}"
        );
        assert!(
            err.contains("max-nodes-in-maintenance-per-az: the limit of az1 \"one\" is not a whole number from 0 to 10000"),
            "{err}"
        );
    }

    #[test]
    fn every_bad_option_is_named() {
        let err = cfg(json!({
            "endpoint-interface": "private",
            "max-concurrent-migrations": -1,
            "timeout-action": "kill",
            "force-complete-at": 101,
            "poll-interval": 0.0,
            "ssl-ca": "%%%",
            "log-level": "loud",
            "nova-host": "node 1",
            "retries": "two"
        }))
        .unwrap_err();
        let options: Vec<&str> = err.0.iter().map(|p| p.option).collect();
        assert_eq!(
            options,
            vec![
                "endpoint-interface",
                "ssl-ca",
                "nova-host",
                "max-concurrent-migrations",
                "timeout-action",
                "force-complete-at",
                "retries",
                "poll-interval",
                "log-level"
            ]
        );
        let text = err.to_string();
        assert!(
            text.contains("endpoint-interface: \"private\" is not one of internal, public, admin"),
            "{text}"
        );
    }

    #[test]
    fn default_policy_and_drain_order_are_choices() {
        let c = cfg(json!({})).unwrap();
        assert_eq!(c.default_policy, InstancePolicy::Live);
        assert_eq!(c.drain_order, Order::LargestFirst);
        let c = cfg(json!({"default-policy": "notify", "drain-order": "smallest-first"})).unwrap();
        assert_eq!(c.default_policy, InstancePolicy::Notify);
        assert_eq!(c.drain_order, Order::SmallestFirst);
        // cold is never a node default: stopping needs the owner's opt-in.
        let err = cfg(json!({"default-policy": "cold", "drain-order": "random"}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("default-policy: \"cold\" is not one of live, skip, notify (cold only per instance, from its metadata nova-live-migration:policy)"),
            "{err}"
        );
        assert!(
            err.contains(
                "drain-order: \"random\" is not one of largest-first, smallest-first, nova"
            ),
            "{err}"
        );
    }

    #[test]
    fn huge_and_oversized_values_are_named_and_not_echoed_whole() {
        let big = "n".repeat(1 << 20);
        let err = cfg(json!({
            "max-concurrent-migrations": u64::MAX,
            "retries": i64::MIN,
            "nova-host": big,
            "region": big,
            "endpoint-interface": big,
        }))
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "max-concurrent-migrations: 18446744073709551615 is out of range, allowed 0 to 64",
            "retries: -9223372036854775808 is out of range, allowed 0 to 10",
            "nova-host: \"nnnn",
            "region: \"nnnn",
            "endpoint-interface: \"nnnn",
            "\"… (1048576 bytes) is not a host name",
        ] {
            assert!(
                text.contains(needle),
                "{needle} not in {}",
                shown(&text, 2000)
            );
        }
        assert!(text.len() < 2000, "{} bytes", text.len());
        // A region of a normal length is fine; a control character is not.
        assert!(cfg(json!({"region": "RegionOne"})).is_ok());
        let e = cfg(json!({"region": "Region\nOne"})).unwrap_err();
        assert_eq!(e.0[0].option, "region");
    }

    #[test]
    fn ssl_ca_must_be_base64_of_x509_certificates() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let good = crate::openstack::TEST_CA_PEM;
        let c = cfg(json!({ "ssl-ca": b64(good) })).unwrap();
        assert_eq!(c.ssl_ca_pem.as_deref(), Some(good.as_bytes()));
        let two = format!("{good}{good}");
        assert!(cfg(json!({ "ssl-ca": b64(&two) })).is_ok());
        let not_pem = b64("hello");
        assert_eq!(
            cfg(json!({ "ssl-ca": not_pem })).unwrap_err().0[0].option,
            "ssl-ca"
        );
        // PEM armour around something that is no certificate: refused.
        let fake = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let garbage = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
        let broken = "-----BEGIN CERTIFICATE-----\n%%%%\n-----END CERTIFICATE-----\n";
        let unterminated = "-----BEGIN CERTIFICATE-----\nMIIB\n";
        for (bundle, needle) in [
            (
                fake.to_string(),
                "certificate 1 of 1 is not an X.509 certificate",
            ),
            (
                garbage.to_string(),
                "certificate 1 of 1 is not an X.509 certificate",
            ),
            (
                format!("{good}{fake}"),
                "certificate 2 of 2 is not an X.509 certificate",
            ),
            (broken.to_string(), "is not valid PEM"),
            (unterminated.to_string(), "is not valid PEM"),
        ] {
            let e = cfg(json!({ "ssl-ca": b64(&bundle) })).unwrap_err();
            assert_eq!(e.0.len(), 1, "{e}");
            assert_eq!(e.0[0].option, "ssl-ca", "{e}");
            let text = e.to_string();
            assert!(text.contains(needle), "{needle} not in {text}");
            assert!(text.contains("base64 -w0"), "says what to do: {text}");
        }
    }
}
