//! Per-instance maintenance policy and drain order, from the server's
//! metadata over this node's config. Pure.
//!
//! * `nova-live-migration:policy` (set by the instance's owner with
//!   `openstack server set --property nova-live-migration:policy=skip`):
//!   `live` (migrate it), `cold` (cold-migrate it even when running: stop
//!   it, migrate, confirm, start it again), `skip` (leave it, counted and
//!   named) or `notify` (leave it and list its owner under "owners to
//!   contact"). Without it, the config option `default-policy` decides,
//!   which cannot be `cold`: a running instance is only ever stopped on its
//!   owner's own opt-in.
//! * `nova-live-migration:priority` (1–10, higher first; unset counts as 5)
//!   orders the starts, then `drain-order` ([`Order`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The metadata key of the per-instance policy.
pub const POLICY_KEY: &str = "nova-live-migration:policy";
/// The metadata key of the per-instance priority.
pub const PRIORITY_KEY: &str = "nova-live-migration:priority";
/// The priority of an instance without (a valid) one.
pub const DEFAULT_PRIORITY: u8 = 5;

/// What a drain does with one instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstancePolicy {
    /// Migrate it (live; a stopped one cold with `include-stopped`).
    #[default]
    Live,
    /// Cold-migrate it; a running one is stopped first and started again
    /// after (only from the instance's own metadata).
    Cold,
    /// Leave it, counted and named.
    Skip,
    /// Leave it and name its owner in the report's `owners_to_contact`.
    Notify,
}

impl InstancePolicy {
    /// The values the metadata takes.
    pub const ALLOWED: &'static str = "live, cold, skip, notify";
    /// The values `default-policy` takes: not `cold`, which stops running
    /// instances and so needs each owner's own opt-in.
    pub const ALLOWED_DEFAULT: &'static str =
        "live, skip, notify (cold only per instance, from its metadata nova-live-migration:policy)";

    pub fn parse(s: &str) -> Option<InstancePolicy> {
        match s.trim().to_ascii_lowercase().as_str() {
            "live" => Some(Self::Live),
            "cold" => Some(Self::Cold),
            "skip" => Some(Self::Skip),
            "notify" => Some(Self::Notify),
            _ => None,
        }
    }
    /// A node default (`default-policy`): any policy but `cold`.
    pub fn parse_default(s: &str) -> Option<InstancePolicy> {
        Self::parse(s).filter(|p| *p != Self::Cold)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Cold => "cold",
            Self::Skip => "skip",
            Self::Notify => "notify",
        }
    }
}

/// Where an instance's policy came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicySource {
    /// The server metadata [`POLICY_KEY`].
    Metadata,
    /// The config option `default-policy`.
    #[default]
    Config,
}

/// The policy decided for one instance, and its origin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyChoice {
    pub policy: InstancePolicy,
    pub source: PolicySource,
    /// The metadata value as set (`None`: unset). Compared right before the
    /// start: a value changed since the plan leaves the instance alone.
    pub metadata: Option<String>,
    /// Why the metadata value is not followed (`cold`, a typo): the
    /// instance is then left alone with this reason.
    pub refused: Option<String>,
}

impl PolicyChoice {
    /// The node default `live` with nothing set (left out of the journal).
    pub fn is_default(&self) -> bool {
        *self == PolicyChoice::default()
    }
    /// `live (metadata nova-live-migration:policy)`, `skip (config default-policy)`.
    /// `skip (metadata nova-live-migration:policy=lve, not followed)` for a
    /// refused value.
    pub fn describe(&self) -> String {
        match (self.source, &self.refused, &self.metadata) {
            (PolicySource::Metadata, Some(_), Some(raw)) => format!(
                "{} (metadata {POLICY_KEY}={}, not followed)",
                self.policy.as_str(),
                crate::text::shown(raw, 32)
            ),
            (PolicySource::Metadata, _, _) => {
                format!("{} (metadata {POLICY_KEY})", self.policy.as_str())
            }
            (PolicySource::Config, _, _) => {
                format!("{} (config default-policy)", self.policy.as_str())
            }
        }
    }
}

/// The policy of an instance with `metadata` on a node whose default is
/// `default`. An unknown value is refused: the instance is left alone
/// (`Skip`) with the reason, as leaving it is what cannot hurt it.
pub fn choose(metadata: &BTreeMap<String, String>, default: InstancePolicy) -> PolicyChoice {
    let Some(raw) = metadata.get(POLICY_KEY) else {
        return PolicyChoice {
            policy: default,
            ..PolicyChoice::default()
        };
    };
    let shown = crate::text::shown(raw, 64);
    let (policy, refused) = match InstancePolicy::parse(raw) {
        Some(p) => (p, None),
        None => (
            InstancePolicy::Skip,
            Some(format!(
                "{POLICY_KEY}={shown} is not a policy (allowed: {}); left alone until its owner fixes it",
                InstancePolicy::ALLOWED
            )),
        ),
    };
    PolicyChoice {
        policy,
        source: PolicySource::Metadata,
        metadata: Some(raw.clone()),
        refused,
    }
}

/// The priority (1–10, higher first) and, for a value that is not one, why
/// it was ignored.
pub fn priority(metadata: &BTreeMap<String, String>) -> (u8, Option<String>) {
    let Some(raw) = metadata.get(PRIORITY_KEY) else {
        return (DEFAULT_PRIORITY, None);
    };
    match raw.trim().parse::<u8>() {
        Ok(p @ 1..=10) => (p, None),
        _ => (
            DEFAULT_PRIORITY,
            Some(format!(
                "{PRIORITY_KEY}={} is not 1-10; taken as {DEFAULT_PRIORITY}",
                crate::text::shown(raw, 32)
            )),
        ),
    }
}

/// `drain-order`: the order of the starts after the priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    /// Largest memory first (then CPU, disk): frees the most capacity
    /// earliest and places the hardest-to-fit while room is widest.
    #[default]
    LargestFirst,
    /// Smallest memory first: the most instances moved earliest.
    SmallestFirst,
    /// As Nova lists the servers (newest first).
    Nova,
}

impl Order {
    pub const ALLOWED: &'static str = "largest-first, smallest-first, nova";

    pub fn parse(s: &str) -> Option<Order> {
        match s.trim() {
            "largest-first" => Some(Self::LargestFirst),
            "smallest-first" => Some(Self::SmallestFirst),
            "nova" => Some(Self::Nova),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LargestFirst => "largest-first",
            Self::SmallestFirst => "smallest-first",
            Self::Nova => "nova",
        }
    }
}

/// The sort key of one instance: priority (higher first), then its size
/// as `order` wants it; equal keys keep Nova's listing order (stable sort).
pub fn sort_key(order: Order, priority: u8, size: (u64, u64, u64)) -> (i64, i128) {
    let (ram, cpu, disk) = (size.0 as i128, size.1 as i128, size.2 as i128);
    let weight = (ram << 64) + (cpu << 32) + disk;
    let size_key = match order {
        Order::LargestFirst => -weight,
        Order::SmallestFirst => weight,
        Order::Nova => 0,
    };
    (-(priority as i64), size_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(k: &str, v: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(k.to_string(), v.to_string())])
    }

    #[test]
    fn metadata_wins_over_the_node_default_and_says_so() {
        let c = choose(&meta(POLICY_KEY, "notify"), InstancePolicy::Live);
        assert_eq!(c.policy, InstancePolicy::Notify);
        assert_eq!(c.source, PolicySource::Metadata);
        assert_eq!(c.describe(), "notify (metadata nova-live-migration:policy)");
        let d = choose(&BTreeMap::new(), InstancePolicy::Skip);
        assert_eq!(d.policy, InstancePolicy::Skip);
        assert_eq!(d.describe(), "skip (config default-policy)");
        assert_eq!(
            choose(&meta(POLICY_KEY, " LIVE "), InstancePolicy::Skip).policy,
            InstancePolicy::Live
        );
    }

    #[test]
    fn cold_is_followed_from_metadata_only_and_typos_leave_it_alone() {
        let c = choose(&meta(POLICY_KEY, "Cold"), InstancePolicy::Live);
        assert_eq!(c.policy, InstancePolicy::Cold);
        assert_eq!(c.refused, None);
        assert_eq!(c.describe(), "cold (metadata nova-live-migration:policy)");
        // Never a node default: stopping needs the owner's opt-in.
        assert_eq!(InstancePolicy::parse_default("cold"), None);
        assert_eq!(
            InstancePolicy::parse_default("notify"),
            Some(InstancePolicy::Notify)
        );
        let t = choose(&meta(POLICY_KEY, "liv"), InstancePolicy::Live);
        assert_eq!(t.policy, InstancePolicy::Skip);
        assert_eq!(
            t.describe(),
            "skip (metadata nova-live-migration:policy=liv, not followed)"
        );
        let r = t.refused.unwrap();
        assert!(
            r.contains("liv is not a policy (allowed: live, cold, skip, notify)"),
            "{r}"
        );
    }

    #[test]
    fn priority_is_one_to_ten_else_the_default_with_a_note() {
        assert_eq!(priority(&meta(PRIORITY_KEY, "10")), (10, None));
        assert_eq!(priority(&BTreeMap::new()), (5, None));
        for bad in ["0", "11", "high", "-1"] {
            let (p, note) = priority(&meta(PRIORITY_KEY, bad));
            assert_eq!(p, 5);
            assert!(note.unwrap().contains("is not 1-10"));
        }
    }

    #[test]
    fn sort_keys_put_priority_first_then_the_order() {
        let big = (4096, 4, 40);
        let small = (512, 1, 10);
        let l = Order::LargestFirst;
        assert!(sort_key(l, 5, big) < sort_key(l, 5, small));
        assert!(sort_key(l, 9, small) < sort_key(l, 5, big));
        let s = Order::SmallestFirst;
        assert!(sort_key(s, 5, small) < sort_key(s, 5, big));
        assert_eq!(
            sort_key(Order::Nova, 5, big),
            sort_key(Order::Nova, 5, small)
        );
    }
}
