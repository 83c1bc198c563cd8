//! Migratability pre-checks that name the blocker: what Nova (or the
//! hardware behind it) will refuse to live-migrate, decided from the facts
//! gathered before anything changes. Pure.
//!
//! | check | fact | Nova |
//! |---|---|---|
//! | `sriov-port` | a Neutron port of the instance with `binding:vnic_type` `direct`, `direct-physical`, `macvtap`, `vdpa`, `accelerator-direct`, `accelerator-direct-physical` | a VF / physical function / vDPA device or accelerator moves only where the driver, the NICs and Neutron's agents support it (Nova refuses accelerator ports and vDPA on old computes outright) |
//! | `pci-passthrough` | flavor extra spec `pci_passthrough:alias` | a passed-through device moves only where its `[pci] alias` is `live_migratable` (not visible through the API) |
//! | `vtpm` | a TPM version: flavor extra spec `hw:tpm_version`, else the image property `hw_tpm_version` (Glance `GET /v2/images/{id}` of the image it booted from), without flavor extra spec `hw:tpm_secret_security=host` | `reject_legacy_vtpm_live_migration` (`compute/api.py`): 400; the version comes from `virt/hardware.py` `get_vtpm_constraint` (flavor or image, a model alone is no vTPM), the secret security only from the flavor (`get_tpm_secret_security_constraint`: no image property, on purpose) |
//! | `vgpu` | flavor extra spec `resources[N]:VGPU` > 0 | a mediated device moves only with libvirt/QEMU/driver support on both ends |
//! | `share` | a Manila share attached (`GET /servers/{id}/shares`, compute API ≥ 2.97) | `live_migrate` carries `@block_shares_not_supported()` (`compute/api.py`): `ForbiddenWithShare`, 409 (`api/openstack/compute/migrate_server.py`); a cold migration with shares is allowed once every nova-compute is at service version ≥ `MIN_COMPUTE_COLD_MIGRATE_WITH_SHARES` (74, `resize` in `compute/api.py`) |
//! | incoming | a migration of this node's `os-migrations` whose `dest_compute` is this node and which is in progress | the instance lands here after the plan and would stay |
//!
//! Each blocker applies to a **live** migration; a cold migration (a
//! stopped instance with `include-stopped`) moves these devices with a new
//! claim on the destination, so it is not blocked.
//!
//! Not seen: the image metadata of a boot-from-volume instance's volume
//! (`volume_image_metadata`, where its `hw_tpm_version` would be), and an
//! image property changed in Glance after the boot (Nova decides from the
//! copy in the instance's system metadata). Facts that could not be read
//! (no image service, compute API below 2.97) are the plan's warnings.

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

/// The image an instance booted from and its `hw_*` properties (Glance
/// `GET /v2/images/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub id: String,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// What the device blockers of one instance are decided from.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The embedded flavor's extra specs.
    pub extra_specs: &'a BTreeMap<String, String>,
    pub ports: &'a [PortInfo],
    /// Its image, when it booted from one and the image was read.
    pub image: Option<&'a ImageInfo>,
    /// The ids of the Manila shares attached to it.
    pub shares: &'a [String],
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
    /// A Manila share attached (`GET /servers/{id}/shares`).
    Share,
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
/// facts, checked in the table's order.
pub fn live_blocker(f: &Facts) -> Option<Blocker> {
    let block = |check, reason: String| {
        Some(Blocker {
            check,
            reason: format!("not live-migratable: {reason}"),
        })
    };
    let specs = f.extra_specs;
    if let Some(p) = f
        .ports
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
    if let Some(a) = specs.get("pci_passthrough:alias") {
        return block(
            Check::PciPassthrough,
            format!(
                "flavor extra spec pci_passthrough:alias={} (PCI passthrough); Nova moves it only where the alias is live_migratable, so stop it and cold-migrate it (include-stopped=true) or exclude it",
                crate::text::shown(a, 64)
            ),
        );
    }
    let security = specs.get("hw:tpm_secret_security");
    if let Some(tpm) = vtpm(f)
        && security.is_none_or(|s| s != "host")
    {
        return block(
            Check::Vtpm,
            format!(
                "vTPM ({tpm}) with hw:tpm_secret_security={}; Nova live-migrates a vTPM only with flavor extra spec hw:tpm_secret_security=host (no image property sets it), so stop it and cold-migrate it (include-stopped=true) or exclude it",
                security.map_or("user (unset)".to_string(), |s| crate::text::shown(s, 16))
            ),
        );
    }
    if let Some((k, v)) = specs.iter().find(|(k, v)| is_vgpu(k) && amount(v) > 0) {
        return block(
            Check::Vgpu,
            format!(
                "vGPU (flavor extra spec {k}={}); a mediated device moves only where both hosts' drivers support its migration, so stop it and cold-migrate it (include-stopped=true) or exclude it",
                crate::text::shown(v, 16)
            ),
        );
    }
    if !f.shares.is_empty() {
        let ids: Vec<String> = f.shares.iter().map(|s| crate::text::shown(s, 40)).collect();
        return block(
            Check::Share,
            format!(
                "Manila share(s) {} attached; Nova refuses to live-migrate an instance with a share (409), so stop it and cold-migrate it (include-stopped=true), or its owner sets policy cold (`openstack server set --property nova-live-migration:policy=cold`), or detach the share (`openstack server remove share <server> <share>`)",
                ids.join(", ")
            ),
        );
    }
    None
}

/// The fact that gives the instance a vTPM: its TPM version, from the
/// flavor (`hw:tpm_version`) or else its image (`hw_tpm_version`). Nova's
/// `get_vtpm_constraint` (`virt/hardware.py`) takes `flavor_value or
/// image_value` and has no vTPM without a version (the model, `tpm_model`,
/// only says which one; it defaults to TIS).
fn vtpm(f: &Facts) -> Option<String> {
    if let Some(v) = f.extra_specs.get("hw:tpm_version") {
        return Some(format!(
            "flavor extra spec hw:tpm_version={}",
            crate::text::shown(v, 16)
        ));
    }
    let i = f.image?;
    let v = i.properties.get("hw_tpm_version")?;
    Some(format!(
        "image {} property hw_tpm_version={}",
        crate::text::shown(&i.id, 40),
        crate::text::shown(v, 16)
    ))
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

    fn blocker(specs: &BTreeMap<String, String>, ports: &[PortInfo]) -> Option<Blocker> {
        live_blocker(&Facts {
            extra_specs: specs,
            ports,
            image: None,
            shares: &[],
        })
    }

    fn image(kv: &[(&str, &str)]) -> ImageInfo {
        ImageInfo {
            id: "img-1".into(),
            properties: specs(kv),
        }
    }

    #[test]
    fn each_device_blocker_is_named_with_its_fact() {
        let none = BTreeMap::new();
        for v in BLOCKING_VNIC {
            let b = blocker(&none, &[port("normal"), port(v)]).unwrap();
            assert_eq!(b.check, Check::SriovPort);
            assert!(
                b.reason.contains(&format!("binding:vnic_type {v}")),
                "{}",
                b.reason
            );
        }
        assert_eq!(blocker(&none, &[port("normal"), port("baremetal")]), None);
        let pci = blocker(&specs(&[("pci_passthrough:alias", "a1:1")]), &[]).unwrap();
        assert_eq!(pci.check, Check::PciPassthrough);
        assert!(pci.reason.contains("pci_passthrough:alias=a1:1"));
        let vgpu = blocker(&specs(&[("resources1:VGPU", "1")]), &[]).unwrap();
        assert_eq!(vgpu.check, Check::Vgpu);
        assert!(vgpu.reason.contains("resources1:VGPU=1"));
        assert_eq!(blocker(&specs(&[("resources:VGPU", "0")]), &[]), None);
        assert_eq!(blocker(&specs(&[("resources:VCPU", "2")]), &[]), None);
    }

    #[test]
    fn a_vtpm_moves_only_with_host_secret_security() {
        let legacy = blocker(&specs(&[("hw:tpm_version", "2.0")]), &[]).unwrap();
        assert_eq!(legacy.check, Check::Vtpm);
        assert!(
            legacy
                .reason
                .contains("flavor extra spec hw:tpm_version=2.0")
        );
        assert!(
            legacy
                .reason
                .contains("hw:tpm_secret_security=user (unset)")
        );
        let dep = specs(&[
            ("hw:tpm_version", "2.0"),
            ("hw:tpm_model", "tpm-crb"),
            ("hw:tpm_secret_security", "deployment"),
        ]);
        let dep = blocker(&dep, &[]).unwrap().reason;
        assert!(dep.contains("=deployment"), "{dep}");
        let host = specs(&[
            ("hw:tpm_version", "2.0"),
            ("hw:tpm_secret_security", "host"),
        ]);
        assert_eq!(blocker(&host, &[]), None);
        // Nova's get_vtpm_constraint: no version, no vTPM (a model alone
        // only says which model a vTPM would have).
        assert_eq!(blocker(&specs(&[("hw:tpm_model", "tpm-crb")]), &[]), None);
    }

    #[test]
    fn a_vtpm_from_the_image_is_named_by_its_property() {
        let none = BTreeMap::new();
        let img = image(&[("hw_tpm_version", "2.0"), ("hw_tpm_model", "tpm-tis")]);
        let facts = |specs, image| Facts {
            extra_specs: specs,
            ports: &[],
            image,
            shares: &[],
        };
        let b = live_blocker(&facts(&none, Some(&img))).unwrap();
        assert_eq!(b.check, Check::Vtpm);
        assert!(
            b.reason.contains(
                "vTPM (image img-1 property hw_tpm_version=2.0) with hw:tpm_secret_security=user (unset)"
            ),
            "{}",
            b.reason
        );
        // The secret security comes only from the flavor.
        let host = specs(&[("hw:tpm_secret_security", "host")]);
        assert_eq!(live_blocker(&facts(&host, Some(&img))), None);
        let img_host = image(&[
            ("hw_tpm_version", "2.0"),
            ("hw_tpm_secret_security", "host"),
        ]);
        assert_eq!(
            live_blocker(&facts(&none, Some(&img_host))).unwrap().check,
            Check::Vtpm
        );
        // The flavor's value wins where both are set (flavor_value or image_value).
        let flavor = specs(&[("hw:tpm_version", "1.2")]);
        let r = live_blocker(&facts(&flavor, Some(&img))).unwrap().reason;
        assert!(
            r.contains("vTPM (flavor extra spec hw:tpm_version=1.2) with"),
            "{r}"
        );
        // A model alone in the image is no vTPM; other hw_ properties neither.
        let model = image(&[("hw_tpm_model", "tpm-crb"), ("hw_machine_type", "q35")]);
        assert_eq!(live_blocker(&facts(&none, Some(&model))), None);
    }

    #[test]
    fn an_attached_share_blocks_and_is_named() {
        let none = BTreeMap::new();
        let shares = ["share-a".to_string(), "share-b".to_string()];
        let b = live_blocker(&Facts {
            extra_specs: &none,
            ports: &[],
            image: None,
            shares: &shares,
        })
        .unwrap();
        assert_eq!(b.check, Check::Share);
        assert!(
            b.reason
                .starts_with("not live-migratable: Manila share(s) share-a, share-b attached;"),
            "{}",
            b.reason
        );
        for remedy in ["include-stopped=true", "policy=cold", "remove share"] {
            assert!(b.reason.contains(remedy), "{remedy}: {}", b.reason);
        }
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
