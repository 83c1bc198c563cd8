//! The cloud beyond this node, at the edge: every nova-compute service
//! (zone, status, this charm's disable reason and its time) and the host
//! aggregates, as `plan::budget::Cloud`; and the count again after the
//! disable that keeps the maintenance budget without a coordinator (the
//! rule is `plan::budget`'s).

use std::time::Duration;

use crate::openstack::{self, Compute, Service};
use crate::plan::budget::{self, Cloud, FleetService, Limits, Recount};
use crate::time::{now_ms, parse_iso};

/// One service as the budget sees it (the reason's time parsed here).
pub fn fleet_service(s: &Service) -> FleetService {
    FleetService {
        host: s.host.clone(),
        zone: s.zone.clone(),
        enabled: !s.is_disabled(),
        up: s.is_up(),
        disabled_reason: s.disabled_reason.clone(),
        ours_since: s
            .disabled_reason
            .as_deref()
            .and_then(budget::reason_time)
            .and_then(parse_iso),
    }
}

/// The aggregates, or none (with a warning) where the policy refuses the
/// listing or Nova lacks it: the aggregate checks are then skipped.
pub async fn aggregates(compute: &Compute) -> Result<Vec<budget::Aggregate>, openstack::Error> {
    match compute.aggregates().await {
        Ok(list) => Ok(list
            .into_iter()
            .map(|a| budget::Aggregate {
                name: a.name,
                availability_zone: a.availability_zone,
                hosts: a.hosts,
            })
            .collect()),
        Err(e) if e.is_not_found() || e.status().is_some_and(|s| s.as_u16() == 403) => {
            tracing::warn!("cannot list host aggregates ({e}); the aggregate checks are skipped");
            Ok(vec![])
        }
        Err(e) => Err(e),
    }
}

/// The cloud from a service listing and the aggregates.
pub fn cloud(services: &[Service], aggregates: Vec<budget::Aggregate>) -> Cloud {
    Cloud {
        services: services.iter().map(fleet_service).collect(),
        aggregates,
    }
}

/// After this node's disable: counts again each `poll` until the budget
/// says go on or back off. `Some(message)` = backed off: the service is
/// enabled again (only while the reason is still `reason`), nothing else
/// changed.
pub async fn hold_budget(
    compute: &Compute,
    host: &str,
    reason: &str,
    limits: &Limits,
    poll: Duration,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Option<String>, openstack::Error> {
    if limits.total == 0 && limits.per_az.default.is_none() && limits.per_az.zones.is_empty() {
        return Ok(None);
    }
    let t0 = now_ms();
    let mut said = false;
    loop {
        let services = compute.services(None, Some("nova-compute")).await?;
        let view = cloud(&services, vec![]);
        match budget::recount(&view, host, limits, now_ms().saturating_sub(t0)) {
            Recount::Proceed => return Ok(None),
            Recount::Wait(m) => {
                if !said {
                    log(&m);
                    said = true;
                }
            }
            Recount::BackOff(m) => {
                if let Some(s) = services.iter().find(|s| s.host == host)
                    && s.is_disabled()
                    && s.disabled_reason.as_deref() == Some(reason)
                {
                    compute.enable_service(s).await?;
                    log(&format!("enabled nova-compute on {host} again: {m}"));
                }
                return Ok(Some(m));
            }
        }
        tokio::time::sleep(poll).await;
    }
}

/// What telling Masakari came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceHaNote {
    /// No `instance-ha` in the catalog: nothing to tell.
    Absent(String),
    /// Masakari answered (set, cleared, not a host of any segment) or
    /// failed; the line says which.
    Told(String),
}

impl InstanceHaNote {
    pub fn line(&self) -> &str {
        match self {
            InstanceHaNote::Absent(l) | InstanceHaNote::Told(l) => l,
        }
    }
}

/// Sets (`on`) or clears `host`'s `on_maintenance` in every Masakari
/// segment that has it, so instance HA does not "recover" the instances a
/// drain is moving. Never fails the caller: an error is the line it returns.
pub async fn instance_ha_maintenance(
    os: &openstack::OpenStack,
    host: &str,
    on: bool,
) -> InstanceHaNote {
    let verb = if on { "set" } else { "cleared" };
    let ha = match os.instance_ha().await {
        Ok(Some(ha)) => ha,
        Ok(None) => {
            return InstanceHaNote::Absent(format!(
                "instance-ha: no Masakari in the catalog; on_maintenance not {verb}"
            ));
        }
        Err(e) => return InstanceHaNote::Told(format!("instance-ha: cannot reach Masakari: {e}")),
    };
    let hosts = match ha.hosts_of(host).await {
        Ok(h) => h,
        Err(e) => {
            return InstanceHaNote::Told(format!("instance-ha: cannot list Masakari's hosts: {e}"));
        }
    };
    if hosts.is_empty() {
        return InstanceHaNote::Told(format!(
            "instance-ha: {host} is in no Masakari segment; on_maintenance not {verb}"
        ));
    }
    let mut done = Vec::new();
    for h in &hosts {
        if h.on_maintenance == on {
            done.push(format!("segment {} (already)", h.failover_segment_id));
            continue;
        }
        match ha.set_on_maintenance(h, on).await {
            Ok(_) => done.push(format!("segment {}", h.failover_segment_id)),
            Err(e) => {
                return InstanceHaNote::Told(format!(
                    "instance-ha: could not set on_maintenance={on} on {host} in segment {}: {e}",
                    h.failover_segment_id
                ));
            }
        }
    }
    InstanceHaNote::Told(format!(
        "instance-ha: on_maintenance {verb} on {host} ({})",
        done.join(", ")
    ))
}
