//! The maintenance budget across the cloud: how many compute nodes this
//! charm may hold in maintenance at once (`max-nodes-in-maintenance`, and
//! per availability zone `max-nodes-in-maintenance-per-az`).
//!
//! Each unit sees only its node, and Nova is the one truth all units read:
//! a node is *in maintenance* when its nova-compute service is disabled
//! with a reason this charm wrote (`<unit> evacuate … at <time>`). No
//! coordinator: a unit checks before it disables ([`admit`]), then
//! disables and counts again ([`recount`]), because two units may pass the
//! first check at the same moment.
//!
//! The rule after the disable (`S` = the nodes in maintenance now, this
//! one included, ordered by the time in their reason, then host name):
//! - `|S| ≤ limit`: go on.
//! - this node's rank in `S` is past the limit: it is the later one; it
//!   re-enables itself and refuses.
//! - its rank is within the limit but `|S| > limit`: a later unit has not
//!   backed off yet, or went on because it counted before this node's
//!   disable was visible. Count again each poll; go on once `|S| ≤ limit`,
//!   and back off when that has not happened within [`RACE_WAIT_MS`].
//!
//! A unit goes on only after a count that found the budget kept, its own
//! disable included; of any set of units that all went on, the one that
//! counted last saw every other's disable (each disabled before it
//! counted), so no such set exceeds the limit. The wait only decides
//! *which* of the racing units goes on: the earlier one, unless the later
//! one had already gone on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Millis;

/// How long a unit within the limit waits, counting each poll, for a
/// racing unit past it to back off before it backs off itself.
pub const RACE_WAIT_MS: Millis = 30_000;

/// One nova-compute service of the cloud, as the budget and the
/// redundancy checks see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetService {
    pub host: String,
    /// Availability zone (`os-services` `zone`).
    pub zone: String,
    pub enabled: bool,
    pub up: bool,
    pub disabled_reason: Option<String>,
    /// Disabled with this charm's reason: the time written in it
    /// (parsed at the edge from [`reason_time`]'s text).
    pub ours_since: Option<Millis>,
}

/// A host aggregate (`os-aggregates`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregate {
    pub name: String,
    pub availability_zone: Option<String>,
    pub hosts: Vec<String>,
}

/// The cloud beyond this node: every compute service and the aggregates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cloud {
    pub services: Vec<FleetService>,
    pub aggregates: Vec<Aggregate>,
}

impl Cloud {
    pub fn service(&self, host: &str) -> Option<&FleetService> {
        self.services.iter().find(|s| s.host == host)
    }
}

/// Per-zone limits: `""` none; `N` every zone; `az1=1,az2=2` those zones;
/// `*=N` the zones not named.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneLimits {
    pub default: Option<u32>,
    pub zones: BTreeMap<String, u32>,
}

/// Most nodes a limit may name (a sanity bound for the config check).
pub const MAX_LIMIT: u32 = 10_000;

fn limit_number(s: &str, what: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if n <= MAX_LIMIT => Ok(n),
        _ => Err(format!(
            "{what} {} is not a whole number from 0 to {MAX_LIMIT}",
            crate::text::quoted(s.trim(), 32)
        )),
    }
}

impl ZoneLimits {
    /// Parses the config value; the error says what is allowed.
    pub fn parse(s: &str) -> Result<ZoneLimits, String> {
        const FORM: &str = "use a number (every zone), or zone=N pairs separated by commas, with *=N for the zones not named (0 = no limit)";
        let s = s.trim();
        let mut out = ZoneLimits::default();
        if s.is_empty() {
            return Ok(out);
        }
        if !s.contains('=') {
            out.default = Some(limit_number(s, "the limit").map_err(|e| format!("{e}; {FORM}"))?);
            return Ok(out);
        }
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((zone, n)) = part.split_once('=') else {
                return Err(format!(
                    "{} is not zone=N; {FORM}",
                    crate::text::quoted(part, 64)
                ));
            };
            let zone = zone.trim();
            let bad_zone = zone.is_empty()
                || zone.len() > 255
                || zone.chars().any(|c| c.is_control() || c == ',');
            if bad_zone {
                return Err(format!(
                    "{} is not an availability zone name; {FORM}",
                    crate::text::quoted(zone, 64)
                ));
            }
            let n = limit_number(n, &format!("the limit of {zone}"))?;
            let slot = if zone == "*" {
                out.default.replace(n).is_some()
            } else {
                out.zones.insert(zone.to_string(), n).is_some()
            };
            if slot {
                return Err(format!("zone {zone} is named twice; name each zone once"));
            }
        }
        Ok(out)
    }

    /// The limit of `zone` (`None` or `Some(0)`: no limit).
    pub fn of(&self, zone: &str) -> Option<u32> {
        self.zones.get(zone).copied().or(self.default)
    }
}

/// The budget of `evacuate` (0 = no limit).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub total: u32,
    pub per_az: ZoneLimits,
}

/// The time text of a `disabled_reason` this charm wrote
/// (`<application>/<n> evacuate[ (task <id>)] at <ISO time>`), else `None`
/// (the one parser: [`super::maintenance::parse_reason`]).
pub fn reason_time(reason: &str) -> Option<&str> {
    super::maintenance::parse_reason(reason).map(|(_, time)| time)
}

/// A node this charm holds in maintenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InMaintenance<'a> {
    pub host: &'a str,
    pub zone: &'a str,
    pub since: Millis,
    pub reason: &'a str,
}

/// The nodes in maintenance, in the budget's order: the time in their
/// reason, then host name.
pub fn in_maintenance(cloud: &Cloud) -> Vec<InMaintenance<'_>> {
    let mut v: Vec<InMaintenance<'_>> = cloud
        .services
        .iter()
        .filter(|s| !s.enabled)
        .filter_map(|s| {
            Some(InMaintenance {
                host: &s.host,
                zone: &s.zone,
                since: s.ours_since?,
                reason: s.disabled_reason.as_deref().unwrap_or_default(),
            })
        })
        .collect();
    v.sort_by(|a, b| (a.since, a.host).cmp(&(b.since, b.host)));
    v
}

fn listing(nodes: &[&InMaintenance<'_>]) -> String {
    nodes
        .iter()
        .map(|m| format!("{} ({})", m.host, m.reason))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One limit to check: its name for messages, the number, the nodes it counts.
struct Scope<'a, 'b> {
    option: String,
    limit: u32,
    nodes: Vec<&'b InMaintenance<'a>>,
}

fn scopes<'a, 'b>(all: &'b [InMaintenance<'a>], zone: &str, limits: &Limits) -> Vec<Scope<'a, 'b>> {
    let mut out = Vec::new();
    if limits.total > 0 {
        out.push(Scope {
            option: format!("max-nodes-in-maintenance={}", limits.total),
            limit: limits.total,
            nodes: all.iter().collect(),
        });
    }
    if let Some(n) = limits.per_az.of(zone).filter(|n| *n > 0) {
        out.push(Scope {
            option: format!("max-nodes-in-maintenance-per-az allows {n} in zone {zone}"),
            limit: n,
            nodes: all.iter().filter(|m| m.zone == zone).collect(),
        });
    }
    out
}

fn zone_of<'a>(cloud: &'a Cloud, host: &str) -> &'a str {
    cloud.service(host).map(|s| s.zone.as_str()).unwrap_or("")
}

/// Before the disable: may `host` enter maintenance? `Err` names the
/// limit and the nodes already in maintenance (this one is not counted:
/// a run killed after its disable is not held against itself).
pub fn admit(cloud: &Cloud, host: &str, limits: &Limits) -> Result<(), String> {
    let all = in_maintenance(cloud);
    let others: Vec<InMaintenance<'_>> = all.into_iter().filter(|m| m.host != host).collect();
    for s in scopes(&others, zone_of(cloud, host), limits) {
        if s.nodes.len() as u32 >= s.limit {
            return Err(format!(
                "maintenance budget: {} and {} node(s) are already in maintenance: {}; wait until one of them is enabled again, or raise the limit (0 = no limit)",
                s.option,
                s.nodes.len(),
                listing(&s.nodes)
            ));
        }
    }
    Ok(())
}

/// What a unit does after its disable, from a fresh count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recount {
    /// The budget holds with this node in it.
    Proceed,
    /// Within the limit by rank, but a later unit is still counted: count again.
    Wait(String),
    /// Re-enable this node and refuse, with the reason.
    BackOff(String),
}

/// After `host`'s disable: go on, wait, or back off (module docs for the
/// rule). `waited_ms` is the time since the first count after the disable.
pub fn recount(cloud: &Cloud, host: &str, limits: &Limits, waited_ms: Millis) -> Recount {
    let all = in_maintenance(cloud);
    if !all.iter().any(|m| m.host == host) {
        // Not disabled with our reason (someone else's disable stayed):
        // not held in this charm's budget.
        return Recount::Proceed;
    }
    let mut wait = None;
    for s in scopes(&all, zone_of(cloud, host), limits) {
        if s.nodes.len() as u32 <= s.limit {
            continue;
        }
        let rank = s.nodes.iter().position(|m| m.host == host).unwrap_or(0) as u32 + 1;
        let others: Vec<&InMaintenance<'_>> =
            s.nodes.iter().copied().filter(|m| m.host != host).collect();
        if rank > s.limit {
            return Recount::BackOff(format!(
                "maintenance budget: {} and another unit disabled its node at the same time: {} node(s) in maintenance with this one ({}); this node came later, so it was enabled again; wait until one of them is enabled again, or raise the limit (0 = no limit)",
                s.option,
                s.nodes.len(),
                listing(&others)
            ));
        }
        if waited_ms >= RACE_WAIT_MS {
            return Recount::BackOff(format!(
                "maintenance budget: {} and another unit disabled its node at the same time and went on: {} node(s) in maintenance with this one ({}); this node was enabled again; wait until one of them is enabled again, or raise the limit (0 = no limit)",
                s.option,
                s.nodes.len(),
                listing(&others)
            ));
        }
        wait.get_or_insert(format!(
            "maintenance budget: {} node(s) in maintenance with this one against {}: waiting for {} to back off",
            s.nodes.len(),
            s.option,
            listing(&others)
        ));
    }
    match wait {
        Some(w) => Recount::Wait(w),
        None => Recount::Proceed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_780_000_000_000;

    fn svc(host: &str, zone: &str, ours_since: Option<Millis>) -> FleetService {
        FleetService {
            host: host.into(),
            zone: zone.into(),
            enabled: ours_since.is_none(),
            up: true,
            disabled_reason: ours_since.map(|t| format!("nova-live-migration/0 evacuate at {t}")),
            ours_since,
        }
    }

    fn cloud(services: Vec<FleetService>) -> Cloud {
        Cloud {
            services,
            aggregates: vec![],
        }
    }

    fn total(n: u32) -> Limits {
        Limits {
            total: n,
            per_az: ZoneLimits::default(),
        }
    }

    #[test]
    fn reasons_of_this_charm_are_recognised() {
        let t = "2026-11-25T21:35:30Z";
        assert_eq!(
            reason_time(&format!("nova-live-migration/0 evacuate (task 1) at {t}")),
            Some(t)
        );
        assert_eq!(reason_time(&format!("nlm/12 evacuate at {t}")), Some(t));
        for other in [
            "maintenance by ops",
            "nova-live-migration/0 migrate-vm at 2026-11-25T21:35:30Z",
            "someone evacuate at 2026-11-25T21:35:30Z",
            "app/x evacuate at 2026-11-25T21:35:30Z",
            "",
        ] {
            assert_eq!(reason_time(other), None, "{other}");
        }
    }

    #[test]
    fn no_limit_admits_everything() {
        let c = cloud(vec![
            svc("a", "nova", Some(T0)),
            svc("b", "nova", Some(T0)),
            svc("c", "nova", None),
        ]);
        assert_eq!(admit(&c, "c", &Limits::default()), Ok(()));
        assert_eq!(recount(&c, "a", &Limits::default(), 0), Recount::Proceed);
    }

    #[test]
    fn a_full_budget_refuses_and_lists_the_nodes_in_maintenance() {
        let c = cloud(vec![
            svc("node4.maas", "nova", Some(T0)),
            svc("node1.maas", "nova", None),
            FleetService {
                disabled_reason: Some("broken disk".into()),
                ..svc("node5.maas", "nova", None)
            },
        ]);
        let e = admit(&c, "node1.maas", &total(1)).unwrap_err();
        assert!(
            e.contains("max-nodes-in-maintenance=1 and 1 node(s) are already in maintenance: node4.maas (nova-live-migration/0 evacuate at"),
            "{e}"
        );
        assert!(
            !e.contains("node5"),
            "someone else's disable is not ours: {e}"
        );
        assert_eq!(admit(&c, "node1.maas", &total(2)), Ok(()));
        // The node itself (a run killed after its disable) is not held against it.
        assert_eq!(admit(&c, "node4.maas", &total(1)), Ok(()));
    }

    #[test]
    fn the_zone_limit_counts_only_its_zone() {
        let c = cloud(vec![
            svc("a1", "az1", Some(T0)),
            svc("a2", "az1", None),
            svc("b1", "az2", None),
        ]);
        let limits = Limits {
            total: 0,
            per_az: ZoneLimits::parse("az1=1,*=2").unwrap(),
        };
        let e = admit(&c, "a2", &limits).unwrap_err();
        assert!(e.contains("allows 1 in zone az1"), "{e}");
        assert_eq!(admit(&c, "b1", &limits), Ok(()));
    }

    #[test]
    fn the_later_of_two_racing_units_backs_off_at_once() {
        // Both disabled, both counted after both disables.
        let c = cloud(vec![
            svc("node1.maas", "nova", Some(T0)),
            svc("node5.maas", "nova", Some(T0 + 1000)),
        ]);
        match recount(&c, "node5.maas", &total(1), 0) {
            Recount::BackOff(m) => {
                assert!(m.contains("came later") && m.contains("node1.maas"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            recount(&c, "node1.maas", &total(1), 0),
            Recount::Wait(_)
        ));
        // Once the later one is enabled again, the earlier one goes on.
        let after = cloud(vec![
            svc("node1.maas", "nova", Some(T0)),
            svc("node5.maas", "nova", None),
        ]);
        assert_eq!(
            recount(&after, "node1.maas", &total(1), 2000),
            Recount::Proceed
        );
    }

    #[test]
    fn equal_times_are_ordered_by_host_name() {
        let c = cloud(vec![
            svc("node5.maas", "nova", Some(T0)),
            svc("node1.maas", "nova", Some(T0)),
        ]);
        assert!(matches!(
            recount(&c, "node5.maas", &total(1), 0),
            Recount::BackOff(_)
        ));
        assert!(matches!(
            recount(&c, "node1.maas", &total(1), 0),
            Recount::Wait(_)
        ));
    }

    #[test]
    fn the_earlier_one_backs_off_when_the_later_one_went_on() {
        // The later unit counted before this disable was visible and went
        // on: it never backs off, so after the wait this one does.
        let c = cloud(vec![
            svc("node1.maas", "nova", Some(T0)),
            svc("node5.maas", "nova", Some(T0 + 1000)),
        ]);
        assert!(matches!(
            recount(&c, "node1.maas", &total(1), RACE_WAIT_MS - 1),
            Recount::Wait(_)
        ));
        match recount(&c, "node1.maas", &total(1), RACE_WAIT_MS) {
            Recount::BackOff(m) => assert!(m.contains("went on"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    /// Every interleaving of two units' (disable, count) steps ends with at
    /// most one in maintenance, and exactly one when the later-ranked unit
    /// backs off in time.
    #[test]
    fn every_interleaving_of_two_units_keeps_the_budget() {
        // Steps: D = disable (visible at once), C = count. Orders of the
        // four steps with D before C for each unit.
        let orders: [[(usize, char); 4]; 6] = [
            [(0, 'D'), (0, 'C'), (1, 'D'), (1, 'C')],
            [(0, 'D'), (1, 'D'), (0, 'C'), (1, 'C')],
            [(0, 'D'), (1, 'D'), (1, 'C'), (0, 'C')],
            [(1, 'D'), (1, 'C'), (0, 'D'), (0, 'C')],
            [(1, 'D'), (0, 'D'), (0, 'C'), (1, 'C')],
            [(1, 'D'), (0, 'D'), (1, 'C'), (0, 'C')],
        ];
        let hosts = ["node1.maas", "node5.maas"];
        for order in orders {
            for times in [[T0, T0 + 1000], [T0 + 1000, T0], [T0, T0]] {
                let mut disabled = [false; 2];
                let mut decided: [Option<bool>; 2] = [None; 2]; // Some(true) = went on
                let view = |d: &[bool; 2]| {
                    cloud(
                        (0..2)
                            .map(|i| svc(hosts[i], "nova", d[i].then_some(times[i])))
                            .collect(),
                    )
                };
                let mut waiting = vec![];
                for (u, step) in order {
                    if step == 'D' {
                        disabled[u] = true;
                        continue;
                    }
                    match recount(&view(&disabled), hosts[u], &total(1), 0) {
                        Recount::Proceed => decided[u] = Some(true),
                        Recount::BackOff(_) => {
                            disabled[u] = false;
                            decided[u] = Some(false);
                        }
                        Recount::Wait(_) => waiting.push(u),
                    }
                }
                // The waiting ones count again until decided (the wait ends).
                for u in waiting {
                    let mut waited = 1000;
                    loop {
                        match recount(&view(&disabled), hosts[u], &total(1), waited) {
                            Recount::Proceed => {
                                decided[u] = Some(true);
                                break;
                            }
                            Recount::BackOff(_) => {
                                disabled[u] = false;
                                decided[u] = Some(false);
                                break;
                            }
                            Recount::Wait(_) => waited += 1000,
                        }
                    }
                }
                let on = decided.iter().filter(|d| **d == Some(true)).count();
                assert_eq!(on, 1, "{order:?} {times:?}: {decided:?}");
                assert_eq!(disabled.iter().filter(|d| **d).count(), 1);
            }
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

            /// Config and disable reasons are input: no panic, and a limit
            /// parsed is within bounds.
            #[test]
            fn any_text_is_a_reason_or_not_and_a_limit_or_an_error(s in ".{0,80}", z in "[a-z0-9*=, -]{0,40}") {
                let _ = reason_time(&s);
                if let Ok(l) = ZoneLimits::parse(&z) {
                    prop_assert!(l.default.is_none_or(|n| n <= MAX_LIMIT));
                    prop_assert!(l.zones.values().all(|n| *n <= MAX_LIMIT));
                }
                let _ = ZoneLimits::parse(&s);
            }
        }
    }

    #[test]
    fn zone_limits_parse_with_clear_errors() {
        assert_eq!(ZoneLimits::parse("").unwrap(), ZoneLimits::default());
        assert_eq!(ZoneLimits::parse(" 2 ").unwrap().of("any"), Some(2));
        let z = ZoneLimits::parse("az1=1, az2 = 3, *=2").unwrap();
        assert_eq!(
            (z.of("az1"), z.of("az2"), z.of("az9")),
            (Some(1), Some(3), Some(2))
        );
        assert_eq!(ZoneLimits::parse("az1=1").unwrap().of("az2"), None);
        for (bad, says) in [
            ("two", "\"two\" is not a whole number"),
            ("az1=1,az1=2", "zone az1 is named twice"),
            ("az1=-1", "the limit of az1 \"-1\" is not a whole number"),
            ("az1=1,az2", "\"az2\" is not zone=N"),
            ("=1", "is not an availability zone name"),
            ("az1=99999999", "from 0 to 10000"),
        ] {
            let e = ZoneLimits::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
