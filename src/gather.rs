//! Pre-flight's facts, gathered concurrently: this node's service and
//! servers, the local units, the Placement allocations of this node's
//! provider, every other compute host with its capacity, and the server
//! groups of this node's servers with where their other members run, the
//! Neutron ports of the servers (`binding:vnic_type`), the Manila shares
//! attached to the running ones (one `GET /servers/{id}/shares` each,
//! compute API ≥ 2.97), the Glance properties of the images the running
//! ones booted from (one `GET /v2/images/{id}` per distinct image) and
//! this node's recent migrations (those coming in).
//!
//! The calls that do not depend on one another go out together, so
//! pre-flight takes about the time of its longest chain
//! (`os-hypervisors` or `os-services` → resource provider → inventories),
//! not the sum of all calls.
//!
//! Names: Placement names a compute node's provider after its
//! `hypervisor_hostname`, while `os-services`, `servers?host=` and
//! `os-migrateLive` speak of the service host. On clouds deployed without
//! `use_fqdn_hint` the two differ (service `node1`, hypervisor
//! `node1.maas`), so both are mapped through one
//! `GET /os-hypervisors/detail` listing ([`NodeNames`]).

use std::collections::{BTreeMap, BTreeSet};
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;

use crate::host;
use crate::openstack::{self, Compute, Hypervisor, OpenStack, Placement};
use crate::plan::{self, PreflightInput};

/// Requests of one fan-out (candidate hosts, group members) in flight at
/// once: enough to hide the latency on a large cloud without a burst of
/// hundreds of requests at the API.
const FAN_OUT: usize = 8;

/// Units of this node pre-flight requires active.
const LOCAL_UNITS: [&str; 2] = ["nova-compute", "libvirtd"];

/// Service host → the `hypervisor_hostname`s (Placement provider names) of
/// its compute nodes, from `GET /os-hypervisors/detail`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeNames {
    by_host: BTreeMap<String, Vec<String>>,
}

impl NodeNames {
    /// From the hypervisor listing; hypervisors without a service host are
    /// left out (they then resolve to their own name).
    pub fn from_hypervisors(list: &[Hypervisor]) -> NodeNames {
        let mut by_host: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for h in list {
            if let Some(host) = h.service.as_ref().and_then(|s| s.host.clone())
                && !h.hypervisor_hostname.is_empty()
            {
                by_host
                    .entry(host)
                    .or_default()
                    .push(h.hypervisor_hostname.clone());
            }
        }
        for names in by_host.values_mut() {
            names.sort();
            names.dedup();
        }
        NodeNames { by_host }
    }

    /// The provider names of `host`'s compute nodes: the mapped ones, else
    /// the host name itself (where nova-compute uses one name for both).
    pub fn nodes_of(&self, host: &str) -> Vec<String> {
        match self.by_host.get(host) {
            Some(n) if !n.is_empty() => n.clone(),
            _ => vec![host.to_string()],
        }
    }

    /// Whether the listing named `host` at all.
    pub fn knows(&self, host: &str) -> bool {
        self.by_host.contains_key(host)
    }
}

/// Gathers pre-flight's input (see the module documentation).
pub async fn gather(os: &OpenStack, host: &str) -> Result<PreflightInput, openstack::Error> {
    let compute = os.compute();
    // Stage 1: everything that needs nothing but the host name.
    let (service, servers, services, names, groups, placement, local_units, aggregates, migrations) = tokio::join!(
        compute.compute_service(host),
        compute.servers_on_host(host),
        compute.services(None, Some("nova-compute")),
        node_names(compute),
        compute.server_groups(),
        os.placement(),
        local_units(),
        crate::fleet::aggregates(compute),
        recent_migrations(compute, host),
    );
    let (service, servers, services, groups, placement) =
        (service?, servers?, services?, groups?, placement?);
    let names = names?;
    let cloud = crate::fleet::cloud(&services, aggregates?);
    // Stage 2: what needs stage 1's answers, again all at once.
    let source_nodes = source_nodes(&names, host, &servers);
    let candidates: Vec<_> = services.into_iter().filter(|s| s.host != host).collect();
    let ids: BTreeSet<&str> = servers.iter().map(|s| s.id.as_str()).collect();
    let groups: Vec<_> = groups
        .into_iter()
        .filter(|g| g.members.iter().any(|m| ids.contains(m.as_str())))
        .collect();
    let others: BTreeSet<String> = groups
        .iter()
        .flat_map(|g| g.members.iter())
        .filter(|m| !ids.contains(m.as_str()))
        .cloned()
        .collect();
    let (allocations, capacities, member_hosts, devices) = tokio::join!(
        source_allocations(&placement, &source_nodes),
        join_bounded(
            candidates
                .iter()
                .map(|svc| capacity(&placement, names.nodes_of(&svc.host)))
                .collect(),
            FAN_OUT,
        ),
        member_hosts(compute, others),
        device_facts(os, &servers),
    );
    let allocations = allocations?;
    let devices = devices?;
    let mut hosts = Vec::with_capacity(candidates.len());
    for (svc, cap) in candidates.into_iter().zip(capacities) {
        let (inventories, usages) = cap?;
        hosts.push(plan::HostCandidate {
            enabled: !svc.is_disabled(),
            up: svc.is_up(),
            host: svc.host,
            inventories,
            usages,
        });
    }
    Ok(PreflightInput {
        host: host.to_string(),
        service: service.map(|s| plan::ServiceView {
            status: s.status.clone(),
            state: s.state.clone(),
            disabled_reason: s.disabled_reason.clone(),
        }),
        local_units,
        servers: servers
            .iter()
            .map(|s| server_info(s, &allocations, &devices))
            .collect(),
        hosts,
        groups: groups.into_iter().map(group_view).collect(),
        member_hosts: member_hosts?,
        cloud,
        migrations: migrations?,
        unchecked: devices.unchecked,
    })
}

fn group_view(g: openstack::ServerGroup) -> plan::ServerGroup {
    plan::ServerGroup {
        policy: g.policy().unwrap_or_default().to_string(),
        max_server_per_host: g.rules.max_server_per_host.map(u64::from),
        id: g.id,
        name: g.name,
        members: g.members,
    }
}

/// How far back this node's migrations are listed for the ones coming in
/// (one still in progress after a day is stuck and shows in `status`).
const MIGRATIONS_SINCE_MS: u64 = 24 * 3600 * 1000;

/// This node's migrations (to or from it) updated in the last day.
async fn recent_migrations(
    compute: &Compute,
    host: &str,
) -> Result<Vec<plan::IncomingMigration>, openstack::Error> {
    let since = crate::time::now_ms().saturating_sub(MIGRATIONS_SINCE_MS);
    let listed = compute
        .migrations(&openstack::MigrationFilter {
            host: Some(host.to_string()),
            changes_since: Some(crate::time::iso(since)),
            ..Default::default()
        })
        .await?;
    Ok(listed
        .into_iter()
        .map(|m| plan::IncomingMigration {
            id: m.id,
            instance: m.instance_uuid,
            migration_type: m.migration_type.unwrap_or_default(),
            status: plan::MigrationStatus::parse(&m.status),
            source_compute: m.source_compute.unwrap_or_default(),
            dest_compute: m.dest_compute.unwrap_or_default(),
        })
        .collect())
}

type Ports = BTreeMap<String, Vec<plan::PortInfo>>;

/// What the device checks ([`plan::migratability`]) look at, by server id
/// (images by image id), and the facts that could not be read.
#[derive(Debug, Default)]
struct DeviceFacts {
    ports: Ports,
    shares: BTreeMap<String, Vec<String>>,
    images: BTreeMap<String, plan::ImageInfo>,
    unchecked: Vec<String>,
}

/// A live-migration candidate: the device checks apply to it (a stopped
/// one moves cold, which these devices do not block).
fn live_candidate(s: &openstack::Server) -> bool {
    matches!(s.vm_state.as_deref(), Some("active" | "paused"))
}

/// The ports of every server, the shares and image properties of the live
/// candidates, all at once.
async fn device_facts(
    os: &OpenStack,
    servers: &[openstack::Server],
) -> Result<DeviceFacts, openstack::Error> {
    let ids: Vec<String> = servers.iter().map(|s| s.id.clone()).collect();
    let live: Vec<&openstack::Server> = servers.iter().filter(|s| live_candidate(s)).collect();
    let (ports, shares, images) = tokio::join!(
        ports_of(os, &ids),
        shares_of(os.compute(), &live),
        images_of(os, &live),
    );
    let ((ports, mut unchecked), (shares, u2), (images, u3)) = (ports?, shares?, images?);
    unchecked.extend(u2);
    unchecked.extend(u3);
    Ok(DeviceFacts {
        ports,
        shares,
        images,
        unchecked,
    })
}

/// The ids of the Manila shares attached to each of `live` (Nova refuses
/// to live-migrate an instance with one: `@block_shares_not_supported()`
/// on `live_migrate` in `nova/compute/api.py`). Below compute API 2.97 the
/// call does not exist: a note says shares went unchecked.
async fn shares_of(
    compute: &Compute,
    live: &[&openstack::Server],
) -> Result<(BTreeMap<String, Vec<String>>, Vec<String>), openstack::Error> {
    let mut out = BTreeMap::new();
    if live.is_empty() {
        return Ok((out, vec![]));
    }
    if !compute.can_list_shares() {
        return Ok((
            out,
            vec![format!(
                "Manila shares not checked: the compute API here goes up to microversion {}, GET /servers/{{id}}/shares needs {}; an instance with a share attached would fail its live migration (409)",
                compute.microversion(),
                openstack::SHARES_MICROVERSION
            )],
        ));
    }
    let reads = join_bounded(
        live.iter().map(|s| compute.server_shares(&s.id)).collect(),
        FAN_OUT,
    )
    .await;
    let mut refused = Vec::new();
    for (s, r) in live.iter().zip(reads) {
        match r {
            Ok(list) if list.is_empty() => {}
            Ok(list) => {
                out.insert(s.id.clone(), list.into_iter().map(|m| m.share_id).collect());
            }
            // Deleted since it was listed: nothing to move.
            Err(e) if e.is_not_found() => {}
            Err(e) if e.status().is_some_and(|c| c.as_u16() == 403) => {
                refused.push(format!("{} ({}): {e}", s.name, s.id));
            }
            Err(e) => return Err(e),
        }
    }
    let note = (!refused.is_empty()).then(|| format!(
        "Manila shares not checked for {}; an instance with a share attached would fail its live migration (409)",
        refused.join("; ")
    ));
    Ok((out, note.into_iter().collect()))
}

/// The `hw_*` properties of the images `live` booted from, one read per
/// distinct image (the vTPM check: `hw_tpm_version`, `hw_tpm_model`). An
/// instance booted from volume has no image: its volume's image metadata
/// is not read, and a note says so.
async fn images_of(
    os: &OpenStack,
    live: &[&openstack::Server],
) -> Result<(BTreeMap<String, plan::ImageInfo>, Vec<String>), openstack::Error> {
    let mut notes = Vec::new();
    let from_volume: Vec<String> = live
        .iter()
        .filter(|s| s.image_id().is_none())
        .map(|s| format!("{} ({})", s.name, s.id))
        .collect();
    if !from_volume.is_empty() {
        notes.push(format!(
            "vTPM checked from the flavor only for {} (booted from volume: the volume's image metadata, where hw_tpm_version would be, is not read)",
            from_volume.join(", ")
        ));
    }
    let ids: Vec<&str> = live
        .iter()
        .filter_map(|s| s.image_id())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut out = BTreeMap::new();
    if ids.is_empty() {
        return Ok((out, notes));
    }
    let glance = match os.image().await {
        Ok(g) => g,
        Err(e @ openstack::Error::EndpointNotFound { .. }) => {
            notes.push(format!(
                "image properties not checked for vTPM ({e}): an instance whose image sets hw_tpm_version would fail its live migration unless its flavor has hw:tpm_secret_security=host"
            ));
            return Ok((out, notes));
        }
        Err(e) => return Err(e),
    };
    let reads = join_bounded(
        ids.iter().map(|id| glance.hw_properties(id)).collect(),
        FAN_OUT,
    )
    .await;
    for (id, r) in ids.into_iter().zip(reads) {
        match r {
            Ok(properties) => {
                out.insert(
                    id.to_string(),
                    plan::ImageInfo {
                        id: id.to_string(),
                        properties,
                    },
                );
            }
            Err(e) if e.is_not_found() || e.status().is_some_and(|c| c.as_u16() == 403) => {
                notes.push(format!(
                    "image {id} not readable ({e}): its hw_tpm_version (vTPM) not checked"
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Ok((out, notes))
}

/// The Neutron ports of `servers`, by server; a cloud without a network
/// service in the catalog gets none and a note that ports went unchecked.
async fn ports_of(
    os: &OpenStack,
    servers: &[String],
) -> Result<(Ports, Vec<String>), openstack::Error> {
    if servers.is_empty() {
        return Ok((Ports::new(), vec![]));
    }
    let network = match os.network().await {
        Ok(n) => n,
        Err(e @ openstack::Error::EndpointNotFound { .. }) => {
            return Ok((
                Ports::new(),
                vec![format!(
                    "ports not checked for SR-IOV ({e}): an instance with a direct/macvtap/vdpa port would fail its live migration"
                )],
            ));
        }
        Err(e) => return Err(e),
    };
    let mut by_server = Ports::new();
    for p in network.ports_of(servers).await? {
        by_server
            .entry(p.device_id)
            .or_default()
            .push(plan::PortInfo {
                id: p.id,
                vnic_type: p.vnic_type.unwrap_or_else(|| "normal".into()),
            });
    }
    Ok((by_server, vec![]))
}

/// The hypervisor listing as [`NodeNames`]. A user the policy refuses the
/// listing (403) or a Nova without it (404) gets the names assumed equal,
/// with a warning: a candidate whose provider is then not found has no
/// capacity in the plan, which errs on the safe side.
async fn node_names(compute: &Compute) -> Result<NodeNames, openstack::Error> {
    match compute.hypervisors_detail().await {
        Ok(list) => Ok(NodeNames::from_hypervisors(&list)),
        Err(e) if e.is_not_found() || e.status().is_some_and(|s| s.as_u16() == 403) => {
            tracing::warn!(
                "cannot list hypervisors ({e}); taking each compute host's Placement provider to be named after its service host"
            );
            Ok(NodeNames::default())
        }
        Err(e) => Err(e),
    }
}

/// This node's provider names: from the hypervisor listing, else the
/// hypervisor of its servers, else the host name.
fn source_nodes(names: &NodeNames, host: &str, servers: &[openstack::Server]) -> Vec<String> {
    if names.knows(host) {
        return names.nodes_of(host);
    }
    let mut from_servers: Vec<String> = servers
        .iter()
        .filter_map(|s| s.hypervisor_hostname.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if from_servers.is_empty() {
        from_servers.push(host.to_string());
    }
    from_servers
}

async fn local_units() -> BTreeMap<String, bool> {
    // systemctl is a blocking child process: off the runtime's thread, so
    // the API calls proceed meanwhile.
    let checked = tokio::task::spawn_blocking(|| {
        LOCAL_UNITS
            .iter()
            .map(|u| (u.to_string(), host::unit_active(u)))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_else(|e| {
        LOCAL_UNITS
            .iter()
            .map(|u| (u.to_string(), Err(format!("the check did not finish: {e}"))))
            .collect()
    });
    checked
        .into_iter()
        .map(|(unit, r)| {
            let active = match r {
                Ok((active, state)) => {
                    if !active {
                        tracing::warn!("local unit {unit} is {state}");
                    }
                    active
                }
                Err(e) => {
                    tracing::warn!("cannot check {unit}: {e}");
                    false
                }
            };
            (unit, active)
        })
        .collect()
}

/// The allocations (consumer → resources) on this node's providers.
async fn source_allocations(
    placement: &Placement,
    nodes: &[String],
) -> Result<BTreeMap<String, openstack::Resources>, openstack::Error> {
    let mut out = BTreeMap::new();
    for node in nodes {
        if let Some(rp) = placement.resource_provider_by_name(node).await? {
            out.extend(placement.allocations(&rp.uuid).await?);
        }
    }
    Ok(out)
}

/// What proof of empty needs to see of `host` once a drain has ended
/// (judged by [`plan::verify()`]): the servers Nova places on it, every
/// migration record to or from it, and the allocations on its providers.
/// A part that cannot be read is an `Err` with why (the check then says
/// it is no proof), never a failed action.
pub async fn node_after_drain(os: &OpenStack, host: &str) -> plan::NodeSeen {
    let compute = os.compute();
    let filter = openstack::MigrationFilter {
        host: Some(host.to_string()),
        ..Default::default()
    };
    let (servers, migrations, names, placement) = tokio::join!(
        compute.servers_on_host(host),
        compute.migrations(&filter),
        node_names(compute),
        os.placement(),
    );
    let allocations = match (names, placement) {
        (Ok(names), Ok(placement)) => {
            let nodes = source_nodes(&names, host, servers.as_deref().unwrap_or(&[]));
            let mut by_provider = BTreeMap::new();
            let mut failed = None;
            for node in nodes {
                let found = match placement.resource_provider_by_name(&node).await {
                    Ok(Some(rp)) => placement.allocations(&rp.uuid).await.map(Some),
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                };
                match found {
                    Ok(Some(a)) => {
                        by_provider.insert(node, a);
                    }
                    Ok(None) => {}
                    Err(e) => failed = Some(e.to_string()),
                }
            }
            match failed {
                Some(e) => Err(e),
                None if by_provider.is_empty() => {
                    Err(format!("no resource provider of {host} in Placement"))
                }
                None => Ok(by_provider),
            }
        }
        (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
    };
    plan::NodeSeen {
        servers: servers
            .map(|list| {
                list.into_iter()
                    .map(|s| plan::SeenServer {
                        id: s.id,
                        name: s.name,
                        status: s.status,
                    })
                    .collect()
            })
            .map_err(|e| e.to_string()),
        migrations: migrations
            .map(|list| {
                list.into_iter()
                    .map(|m| plan::SeenMigration {
                        id: m.id,
                        uuid: m.uuid,
                        instance_id: m.instance_uuid,
                        status: plan::MigrationStatus::parse(&m.status),
                        migration_type: m.migration_type,
                        source: m.source_compute,
                        destination: m.dest_compute,
                    })
                    .collect()
            })
            .map_err(|e| e.to_string()),
        allocations,
    }
}

type Capacity = (BTreeMap<String, plan::Inventory>, BTreeMap<String, u64>);

/// Inventories and usages of a candidate's provider: the first of its
/// nodes that Placement knows (a libvirt host has one). None found: no
/// capacity, which errs on the safe side.
async fn capacity(placement: &Placement, nodes: Vec<String>) -> Result<Capacity, openstack::Error> {
    for node in nodes {
        let Some(rp) = placement.resource_provider_by_name(&node).await? else {
            continue;
        };
        let (inv, usages) =
            tokio::join!(placement.inventories(&rp.uuid), placement.usages(&rp.uuid));
        let inv = inv?
            .into_iter()
            .map(|(k, i)| {
                (
                    k,
                    plan::Inventory {
                        total: i.total,
                        reserved: i.reserved,
                        min_unit: i.min_unit,
                        max_unit: i.max_unit,
                        step_size: i.step_size,
                        allocation_ratio: i.allocation_ratio,
                    },
                )
            })
            .collect();
        return Ok((inv, usages?));
    }
    Ok((BTreeMap::new(), BTreeMap::new()))
}

/// The service host of each group member not on this node (a member that
/// no longer exists is left out).
async fn member_hosts(
    compute: &Compute,
    members: BTreeSet<String>,
) -> Result<BTreeMap<String, String>, openstack::Error> {
    let members: Vec<String> = members.into_iter().collect();
    let reads = join_bounded(members.iter().map(|m| compute.server(m)).collect(), FAN_OUT).await;
    let mut out = BTreeMap::new();
    for (m, r) in members.into_iter().zip(reads) {
        match r {
            Ok(s) => {
                out.insert(m, s.host.unwrap_or_default());
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn server_info(
    s: &openstack::Server,
    allocations: &BTreeMap<String, openstack::Resources>,
    devices: &DeviceFacts,
) -> plan::ServerInfo {
    plan::ServerInfo {
        id: s.id.clone(),
        name: s.name.clone(),
        status: s.status.clone(),
        vm_state: s.vm_state.clone().unwrap_or_default(),
        task_state: s.task_state.clone(),
        image_backed: !s.is_volume_backed(),
        volumes_attached: s.volumes_attached.len(),
        flavor: plan::Flavor {
            vcpus: s.flavor.vcpus,
            ram_mb: s.flavor.ram,
            disk_gb: s.flavor.disk,
            ephemeral_gb: s.flavor.ephemeral,
            swap_mb: s.flavor.swap,
        },
        allocation: allocations.get(&s.id).cloned(),
        extra_specs: s.flavor.extra_specs.clone(),
        metadata: s.metadata.clone(),
        ports: devices.ports.get(&s.id).cloned().unwrap_or_default(),
        image: s.image_id().and_then(|id| devices.images.get(id)).cloned(),
        shares: devices.shares.get(&s.id).cloned().unwrap_or_default(),
        project_id: s.tenant_id.clone(),
        user_id: s.user_id.clone(),
    }
}

/// Runs `futs` concurrently on this task, at most `limit` at a time (in
/// order: one starts as an earlier one ends), and returns their outputs in
/// the order given. A small `join_all` without the `futures` crate.
async fn join_bounded<F: Future>(futs: Vec<F>, limit: usize) -> Vec<F::Output> {
    let limit = limit.max(1);
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut active = 0;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_some() {
                continue;
            }
            if active == limit {
                break;
            }
            match f.as_mut().poll(cx) {
                Poll::Ready(v) => out[i] = Some(v),
                Poll::Pending => active += 1,
            }
        }
        if out.iter().all(Option::is_some) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openstack::HypervisorService;

    fn hv(name: &str, host: Option<&str>) -> Hypervisor {
        Hypervisor {
            id: format!("uuid-{name}"),
            hypervisor_hostname: name.to_string(),
            service: host.map(|h| HypervisorService {
                host: Some(h.to_string()),
                ..HypervisorService::default()
            }),
            ..Hypervisor::default()
        }
    }

    #[test]
    fn short_service_hosts_map_to_their_fqdn_providers() {
        let names = NodeNames::from_hypervisors(&[
            hv("node1.maas", Some("node1")),
            hv("node4.maas", Some("node4")),
            hv("node5.maas", Some("node5.maas")),
            hv("orphan.maas", None),
        ]);
        assert_eq!(names.nodes_of("node1"), vec!["node1.maas"]);
        assert_eq!(names.nodes_of("node4"), vec!["node4.maas"]);
        assert_eq!(names.nodes_of("node5.maas"), vec!["node5.maas"]);
        // Unknown to the listing: its own name.
        assert!(!names.knows("node9"));
        assert_eq!(names.nodes_of("node9"), vec!["node9"]);
        assert_eq!(NodeNames::default().nodes_of("x"), vec!["x"]);
    }

    #[test]
    fn the_source_falls_back_to_its_servers_hypervisor_then_its_name() {
        let names = NodeNames::from_hypervisors(&[hv("node1.maas", Some("node1"))]);
        assert_eq!(source_nodes(&names, "node1", &[]), vec!["node1.maas"]);
        let s = openstack::Server {
            hypervisor_hostname: Some("n2.example".into()),
            ..Default::default()
        };
        assert_eq!(
            source_nodes(&NodeNames::default(), "n2", &[s]),
            vec!["n2.example"]
        );
        assert_eq!(source_nodes(&NodeNames::default(), "n3", &[]), vec!["n3"]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn join_bounded_keeps_order_and_the_limit() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let now = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let futs = (0..20)
            .map(|i| {
                let (now, peak) = (&now, &peak);
                async move {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    for _ in 0..(i % 3 + 1) {
                        tokio::task::yield_now().await;
                    }
                    now.fetch_sub(1, Ordering::SeqCst);
                    i
                }
            })
            .collect();
        let out = join_bounded(futs, 4).await;
        assert_eq!(out, (0..20).collect::<Vec<_>>());
        assert_eq!(peak.load(Ordering::SeqCst), 4);
    }
}
