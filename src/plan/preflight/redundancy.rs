//! Redundancy that must survive this node's maintenance, checked up front
//! (overridable with `force`, like the capacity shortfall):
//! - `evacuate` must not leave this node's availability zone, or an
//!   aggregate it belongs to, without an enabled, up compute service (the
//!   nodes other units hold in maintenance are disabled, so they do not
//!   count, and neither does capacity on them: `preflight` plans only on
//!   enabled, up hosts);
//! - the scheduler must have room for the moving members of each hard
//!   anti-affinity group: enough enabled, up hosts other than this one
//!   without a member (up to `max_server_per_host` each). Two last members
//!   and one remaining host: Nova would answer NoValidHost, or break the
//!   group where the late check is off.
//!
//! With `target-host` the affinity of the target is checked by
//! `preflight` itself.

use std::collections::BTreeMap;

use super::{Failure, FailureKind, PlanEntry, PreflightInput, PreflightParams};
use crate::plan::budget::Cloud;

/// The overridable failures for this plan (empty: nothing to say).
pub fn check(
    input: &PreflightInput,
    params: &PreflightParams,
    entries: &[PlanEntry],
) -> Vec<Failure> {
    let mut out = Vec::new();
    if params.only.is_none() {
        out.extend(last_enabled(&input.cloud, &input.host));
    }
    if params.target_host.is_none() {
        out.extend(anti_affinity_room(input, entries));
    }
    out
}

fn others_enabled<'a>(cloud: &'a Cloud, host: &str, among: impl Fn(&str) -> bool) -> Vec<&'a str> {
    cloud
        .services
        .iter()
        .filter(|s| s.host != host && s.enabled && s.up && among(&s.host))
        .map(|s| s.host.as_str())
        .collect()
}

/// This node's zone and aggregates keep an enabled, up compute.
fn last_enabled(cloud: &Cloud, host: &str) -> Vec<Failure> {
    let mut out = Vec::new();
    let Some(me) = cloud.service(host) else {
        return out;
    };
    let zone_of: BTreeMap<&str, &str> = cloud
        .services
        .iter()
        .map(|s| (s.host.as_str(), s.zone.as_str()))
        .collect();
    if !me.zone.is_empty()
        && others_enabled(cloud, host, |h| zone_of.get(h) == Some(&me.zone.as_str())).is_empty()
    {
        out.push(Failure {
            kind: FailureKind::Capacity,
            message: format!(
                "evacuating {host} would leave availability zone {} with no enabled, up compute host; enable another host of {} first, or run with force=true",
                me.zone, me.zone
            ),
        });
    }
    for a in cloud
        .aggregates
        .iter()
        .filter(|a| a.hosts.iter().any(|h| h == host))
    {
        if others_enabled(cloud, host, |h| a.hosts.iter().any(|x| x == h)).is_empty() {
            out.push(Failure {
                kind: FailureKind::Capacity,
                message: format!(
                    "evacuating {host} would leave aggregate {} with no enabled, up compute host (members: {}); enable another member first, or run with force=true",
                    a.name,
                    a.hosts.join(", ")
                ),
            });
        }
    }
    out
}

/// Each hard anti-affinity group has room for its moving members.
fn anti_affinity_room(input: &PreflightInput, entries: &[PlanEntry]) -> Vec<Failure> {
    let remaining: Vec<&str> = input
        .hosts
        .iter()
        .filter(|h| h.host != input.host && h.enabled && h.up)
        .map(|h| h.host.as_str())
        .collect();
    let mut out = Vec::new();
    for g in input.groups.iter().filter(|g| g.policy == "anti-affinity") {
        let moving: Vec<&str> = entries
            .iter()
            .filter(|e| e.moves() && g.members.contains(&e.id))
            .map(|e| e.name.as_str())
            .collect();
        if moving.is_empty() {
            continue;
        }
        let max = g.max_server_per_host.unwrap_or(1).max(1);
        let held = |h: &str| {
            g.members
                .iter()
                .filter(|m| input.member_hosts.get(*m).is_some_and(|x| x == h))
                .count() as u64
        };
        let room: u64 = remaining.iter().map(|h| max.saturating_sub(held(h))).sum();
        if (moving.len() as u64) > room {
            let hosts = if remaining.is_empty() {
                "no other enabled, up host".to_string()
            } else {
                remaining
                    .iter()
                    .map(|h| format!("{h} (holding {})", held(h)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.push(Failure {
                kind: FailureKind::Affinity,
                message: format!(
                    "anti-affinity group {} ({}) allows {max} member(s) per host, but {} must move ({}) and the remaining hosts have room for {room}: {hosts}; enable another host, exclude members, or run with force=true",
                    g.name,
                    g.id,
                    moving.len(),
                    moving.join(", ")
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::budget::{Aggregate, FleetService};
    use crate::plan::{HostCandidate, ServerGroup};

    fn svc(host: &str, zone: &str, enabled: bool) -> FleetService {
        FleetService {
            host: host.into(),
            zone: zone.into(),
            enabled,
            up: true,
            ..Default::default()
        }
    }

    fn cand(host: &str, enabled: bool) -> HostCandidate {
        HostCandidate {
            host: host.into(),
            enabled,
            up: true,
            ..Default::default()
        }
    }

    fn entry(id: &str) -> PlanEntry {
        PlanEntry {
            id: id.into(),
            name: format!("vm-{id}"),
            action: crate::plan::Action::Live,
            storage: crate::plan::Storage::Local,
            vcpus: 1,
            ram_mb: 64,
            disk_gb: 1,
            destination: None,
            fits: true,
            estimated_host: None,
            demand: BTreeMap::new(),
            policy: Default::default(),
            priority: 5,
            check: None,
            owner: None,
        }
    }

    fn input(cloud: Cloud, hosts: Vec<HostCandidate>) -> PreflightInput {
        PreflightInput {
            host: "node1".into(),
            hosts,
            cloud,
            ..Default::default()
        }
    }

    #[test]
    fn the_last_enabled_host_of_a_zone_or_aggregate_is_refused() {
        let cloud = Cloud {
            services: vec![
                svc("node1", "az1", true),
                svc("node2", "az1", false),
                svc("node3", "az2", true),
            ],
            aggregates: vec![
                Aggregate {
                    name: "gpu".into(),
                    availability_zone: None,
                    hosts: vec!["node1".into(), "node2".into()],
                },
                Aggregate {
                    name: "big".into(),
                    availability_zone: None,
                    hosts: vec!["node1".into(), "node3".into()],
                },
            ],
        };
        let f = check(&input(cloud, vec![]), &PreflightParams::default(), &[]);
        let msgs: Vec<&str> = f.iter().map(|f| f.message.as_str()).collect();
        assert_eq!(f.len(), 2, "{msgs:?}");
        assert!(
            msgs[0].contains("availability zone az1 with no enabled, up compute host"),
            "{msgs:?}"
        );
        assert!(
            msgs[1].contains("aggregate gpu with no enabled"),
            "{msgs:?}"
        );
        // migrate-vm disables nothing.
        let p = PreflightParams {
            only: Some("x".into()),
            ..Default::default()
        };
        let cloud = Cloud {
            services: vec![svc("node1", "az1", true)],
            aggregates: vec![],
        };
        assert!(check(&input(cloud, vec![]), &p, &[]).is_empty());
    }

    #[test]
    fn nodes_in_maintenance_give_no_capacity() {
        use crate::plan::{Flavor, Inventory, ServerInfo, preflight};
        let memory = |mb: u64| {
            BTreeMap::from([(
                "MEMORY_MB".to_string(),
                Inventory {
                    total: mb,
                    reserved: 0,
                    min_unit: 1,
                    max_unit: 4096,
                    step_size: 1,
                    allocation_ratio: 1.0,
                },
            )])
        };
        // node4 is held in maintenance by another unit (disabled): its
        // room does not count; node5 has 32 MB.
        let mut node4 = cand("node4", false);
        node4.inventories = memory(4096);
        let mut node5 = cand("node5", true);
        node5.inventories = memory(32);
        let mut inp = input(Cloud::default(), vec![node4, node5]);
        inp.servers = vec![ServerInfo {
            id: "a".into(),
            name: "vm-a".into(),
            status: "ACTIVE".into(),
            vm_state: "active".into(),
            image_backed: true,
            flavor: Flavor {
                ram_mb: 64,
                ..Default::default()
            },
            ..Default::default()
        }];
        let p = preflight(&inp, &PreflightParams::default());
        assert_eq!(p.overridable.len(), 1, "{:?}", p.overridable);
        assert!(
            p.overridable[0].message.contains("MEMORY_MB short by 32"),
            "{:?}",
            p.overridable
        );
    }

    #[test]
    fn two_last_anti_affinity_members_and_one_remaining_host_are_refused() {
        let mut inp = input(
            Cloud::default(),
            vec![cand("node4", true), cand("node5", false)],
        );
        inp.groups = vec![ServerGroup {
            id: "g1".into(),
            name: "web".into(),
            policy: "anti-affinity".into(),
            max_server_per_host: None,
            members: vec!["a".into(), "b".into()],
        }];
        // a here, b on node4 (the only enabled host): no room for a.
        inp.member_hosts.insert("b".into(), "node4".into());
        let f = check(&inp, &PreflightParams::default(), &[entry("a")]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, FailureKind::Affinity);
        assert!(
            f[0].message.contains("room for 0: node4 (holding 1)"),
            "{}",
            f[0].message
        );
        // With node5 enabled there is room.
        inp.hosts[1].enabled = true;
        assert!(check(&inp, &PreflightParams::default(), &[entry("a")]).is_empty());
        // Both here, one host: room for one.
        inp.member_hosts.clear();
        inp.hosts[1].enabled = false;
        let f = check(&inp, &PreflightParams::default(), &[entry("a"), entry("b")]);
        assert!(
            f[0].message
                .contains("2 must move (vm-a, vm-b) and the remaining hosts have room for 1"),
            "{}",
            f[0].message
        );
        // target-host: preflight's own target check applies.
        let p = PreflightParams {
            target_host: Some("node4".into()),
            ..Default::default()
        };
        assert!(check(&inp, &p, &[entry("a"), entry("b")]).is_empty());
    }
}
