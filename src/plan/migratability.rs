//! Migratability pre-checks that name the blocker: what Nova (or the
//! hardware behind it) will refuse to live-migrate, decided from the facts
//! gathered before anything changes. Pure.
//!
//! | check | fact | Nova |
//! |---|---|---|
//! | `sriov-port` | a Neutron port of the instance with `binding:vnic_type` `direct`, `direct-physical`, `macvtap`, `vdpa`, `accelerator-direct`, `accelerator-direct-physical` | a VF / physical function / vDPA device or accelerator moves only where the driver, the NICs and Neutron's agents support it (Nova refuses accelerator ports and vDPA on old computes outright) |
//! | `pci-passthrough` | flavor extra spec `pci_passthrough:alias` | a passed-through device moves only where its `[pci] alias` is `live_migratable` (not visible through the API) |
//! | `vtpm` | flavor extra spec `hw:tpm_version` or `hw:tpm_model` without `hw:tpm_secret_security=host` | `reject_legacy_vtpm_live_migration`: 400 |
//! | `vgpu` | flavor extra spec `resources[N]:VGPU` > 0 | a mediated device moves only with libvirt/QEMU/driver support on both ends |
//! | incoming | a migration of this node's `os-migrations` whose `dest_compute` is this node and which is in progress | the instance lands here after the plan and would stay |
//!
//! Each blocker applies to a **live** migration; a cold migration (a
//! stopped instance with `include-stopped`) moves these devices with a new
//! claim on the destination, so it is not blocked.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types::MigrationStatus;

/// A Neutron port bound to an instance (`GET /v2.0/ports?device_id=`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortInfo {
    pub id: String,
    /// `binding:vnic_type` (`normal` when unset).
    pub vnic_type: String,
}

/// A migration listed for this node (`GET /os-migrations?host=`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingMigration {
    pub id: i64,
    pub instance: String,
    /// `live-migration`, `migration`, `resize`, `evacuation`.
    pub migration_type: String,
    pub status: MigrationStatus,
    pub source_compute: String,
    pub dest_compute: String,
}

/// The check that decided a skip (the plan's `check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// Excluded by the operator.
    Excluded,
    /// The owner's (or the node's) policy.
    Policy,
    /// `vm_state` (stopped, suspended, shelved, rescued, resized, error, building).
    State,
    /// A task in progress (`task_state`).
    TaskState,
    SriovPort,
    PciPassthrough,
    Vtpm,
    Vgpu,
    /// A member of a hard affinity group another member of which cannot move.
    Affinity,
}

/// One instance that cannot be live-migrated, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    pub check: Check,
    pub reason: String,
}

/// The vnic types whose ports block a live migration.
const BLOCKING_VNIC: [&str; 6] = [
    "direct",
    "direct-physical",
    "macvtap",
    "vdpa",
    "accelerator-direct",
    "accelerator-direct-physical",
];

/// The first device blocker of a live migration of an instance with these
/// flavor extra specs and ports, checked in the table's order.
pub fn live_blocker(extra_specs: &BTreeMap<String, String>, ports: &[PortInfo]) -> Option<Blocker> {
    let block = |check, reason: String| {
        Some(Blocker {
            check,
            reason: format!("not live-migratable: {reason}"),
        })
    };
    if let Some(p) = ports
        .iter()
        .find(|p| BLOCKING_VNIC.contains(&p.vnic_type.as_str()))
    {
        return block(
            Check::SriovPort,
            format!(
                "port {} has binding:vnic_type {} (SR-IOV/passthrough NIC); move it by hand where your NICs and Neutron agents support it, or detach the port",
                p.id, p.vnic_type
            ),
        );
    }
    if let Some(a) = extra_specs.get("pci_passthrough:alias") {
        return block(
            Check::PciPassthrough,
            format!(
                "flavor extra spec pci_passthrough:alias={} (PCI passthrough); Nova moves it only where the alias is live_migratable, so stop it and cold-migrate it (include-stopped=true) or exclude it",
                crate::text::shown(a, 64)
            ),
        );
    }
    let tpm = ["hw:tpm_version", "hw:tpm_model"].iter().find_map(|k| {
        extra_specs
            .get(*k)
            .map(|v| format!("{k}={}", crate::text::shown(v, 16)))
    });
    let security = extra_specs.get("hw:tpm_secret_security");
    if let Some(tpm) = tpm
        && security.is_none_or(|s| s != "host")
    {
        return block(
            Check::Vtpm,
            format!(
                "vTPM (flavor extra spec {tpm}) with hw:tpm_secret_security={}; Nova live-migrates a vTPM only with hw:tpm_secret_security=host, so stop it and cold-migrate it (include-stopped=true) or exclude it",
                security.map_or("user (unset)".to_string(), |s| crate::text::shown(s, 16))
            ),
        );
    }
    if let Some((k, v)) = extra_specs
        .iter()
        .find(|(k, v)| is_vgpu(k) && amount(v) > 0)
    {
        return block(
            Check::Vgpu,
            format!(
                "vGPU (flavor extra spec {k}={}); a mediated device moves only where both hosts' drivers support its migration, so stop it and cold-migrate it (include-stopped=true) or exclude it",
                crate::text::shown(v, 16)
            ),
        );
    }
    None
}

/// `resources:VGPU`, `resources1:VGPU`, `resources_gpu:VGPU` (a request group).
fn is_vgpu(key: &str) -> bool {
    key.strip_prefix("resources")
        .and_then(|rest| rest.strip_suffix(":VGPU"))
        .is_some_and(|group| {
            group.is_empty() || group.chars().all(|c| c.is_ascii_digit()) || group.starts_with('_')
        })
}

fn amount(v: &str) -> u64 {
    v.trim().parse().unwrap_or(0)
}

/// Migrations coming to `host` now (in progress, `dest_compute` this node,
/// not from it): they land after the plan was made and would stay.
pub fn incoming<'a>(host: &str, listed: &'a [IncomingMigration]) -> Vec<&'a IncomingMigration> {
    listed
        .iter()
        .filter(|m| m.dest_compute == host && m.source_compute != host && m.status.in_progress())
        .collect()
}

/// The failure message for migrations coming in, `None` when there are none.
pub fn incoming_failure(host: &str, listed: &[IncomingMigration]) -> Option<String> {
    let coming = incoming(host, listed);
    if coming.is_empty() {
        return None;
    }
    let list = coming
        .iter()
        .map(|m| {
            format!(
                "instance {} ({} {} from {}, status {})",
                m.instance,
                m.migration_type,
                m.id,
                m.source_compute,
                m.status.as_str()
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "{} migration(s) coming to {host}: {list}; it would arrive after the plan and stay here. Wait for it to end (or abort it: `openstack server migration abort <server> <id>`) and run again, or run with force=true to drain the rest",
        coming.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn port(vnic: &str) -> PortInfo {
        PortInfo {
            id: "p1".into(),
            vnic_type: vnic.into(),
        }
    }

    #[test]
    fn each_device_blocker_is_named_with_its_fact() {
        let none = BTreeMap::new();
        for v in BLOCKING_VNIC {
            let b = live_blocker(&none, &[port("normal"), port(v)]).unwrap();
            assert_eq!(b.check, Check::SriovPort);
            assert!(
                b.reason.contains(&format!("binding:vnic_type {v}")),
                "{}",
                b.reason
            );
        }
        assert_eq!(
            live_blocker(&none, &[port("normal"), port("baremetal")]),
            None
        );
        let pci = live_blocker(&specs(&[("pci_passthrough:alias", "a1:1")]), &[]).unwrap();
        assert_eq!(pci.check, Check::PciPassthrough);
        assert!(pci.reason.contains("pci_passthrough:alias=a1:1"));
        let vgpu = live_blocker(&specs(&[("resources1:VGPU", "1")]), &[]).unwrap();
        assert_eq!(vgpu.check, Check::Vgpu);
        assert!(vgpu.reason.contains("resources1:VGPU=1"));
        assert_eq!(live_blocker(&specs(&[("resources:VGPU", "0")]), &[]), None);
        assert_eq!(live_blocker(&specs(&[("resources:VCPU", "2")]), &[]), None);
    }

    #[test]
    fn a_vtpm_moves_only_with_host_secret_security() {
        let legacy = live_blocker(&specs(&[("hw:tpm_version", "2.0")]), &[]).unwrap();
        assert_eq!(legacy.check, Check::Vtpm);
        assert!(legacy.reason.contains("hw:tpm_version=2.0"));
        assert!(
            legacy
                .reason
                .contains("hw:tpm_secret_security=user (unset)")
        );
        let dep = specs(&[
            ("hw:tpm_model", "tpm-crb"),
            ("hw:tpm_secret_security", "deployment"),
        ]);
        assert!(
            live_blocker(&dep, &[])
                .unwrap()
                .reason
                .contains("=deployment")
        );
        let host = specs(&[
            ("hw:tpm_version", "2.0"),
            ("hw:tpm_secret_security", "host"),
        ]);
        assert_eq!(live_blocker(&host, &[]), None);
    }

    #[test]
    fn only_in_progress_migrations_to_this_node_count_as_incoming() {
        let m = |id, status: &str, src: &str, dst: &str| IncomingMigration {
            id,
            instance: format!("i{id}"),
            migration_type: "live-migration".into(),
            status: MigrationStatus::parse(status),
            source_compute: src.into(),
            dest_compute: dst.into(),
        };
        let listed = [
            m(1, "running", "node4", "node1"),
            m(2, "completed", "node4", "node1"),
            m(3, "running", "node1", "node4"),
            m(4, "queued", "node5", "node1"),
        ];
        let ids: Vec<i64> = incoming("node1", &listed).iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![1, 4]);
        let msg = incoming_failure("node1", &listed).unwrap();
        assert!(msg.starts_with("2 migration(s) coming to node1: instance i1 (live-migration 1 from node4, status running)"), "{msg}");
        assert_eq!(incoming_failure("node1", &listed[1..3]), None);
    }
}
