//! Placement API client (read-only) and the free-capacity arithmetic.

use std::collections::BTreeMap;
use std::sync::Arc;

use reqwest::Method;
use serde::Deserialize;

use super::error::Result;
use super::http::{Call, Session, seg};

/// Microversion sent to Placement (1.14: nested providers; Queens has it).
pub const PLACEMENT_MICROVERSION: &str = "1.14";

/// A resource provider.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(default)]
pub struct ResourceProvider {
    /// uuid (== compute node / hypervisor id for compute nodes)
    pub uuid: String,
    /// name (== hypervisor_hostname for compute nodes)
    pub name: String,
    /// generation
    pub generation: i64,
    /// parent (1.14)
    pub parent_provider_uuid: Option<String>,
    /// root (1.14)
    pub root_provider_uuid: Option<String>,
}

/// One inventory record of a resource class.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(default)]
pub struct Inventory {
    /// total
    pub total: u64,
    /// reserved
    pub reserved: u64,
    /// smallest single allocation
    pub min_unit: u64,
    /// largest single allocation
    pub max_unit: u64,
    /// allocation granularity
    pub step_size: u64,
    /// overcommit ratio
    pub allocation_ratio: f64,
}

impl Default for Inventory {
    fn default() -> Self {
        Inventory {
            total: 0,
            reserved: 0,
            min_unit: 1,
            max_unit: u64::MAX,
            step_size: 1,
            allocation_ratio: 1.0,
        }
    }
}

/// Free capacity of one resource class on one provider.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    /// `floor((total - reserved) * allocation_ratio)`
    pub capacity: u64,
    /// currently used
    pub used: u64,
    /// `capacity - used` (negative when over-committed)
    pub free: i64,
    /// smallest single allocation
    pub min_unit: u64,
    /// largest single allocation
    pub max_unit: u64,
    /// granularity
    pub step_size: u64,
}

impl Capacity {
    /// Placement would accept one more allocation of `amount`
    /// (`min_unit ≤ amount ≤ max_unit`, `amount % step_size == 0`, `amount ≤ free`).
    pub fn fits(&self, amount: u64) -> bool {
        if amount == 0 {
            return true;
        }
        amount >= self.min_unit
            && amount <= self.max_unit
            && (self.step_size <= 1 || amount.is_multiple_of(self.step_size))
            && (amount as i128) <= self.free as i128
    }

    /// The same capacity after allocating `amount` (cumulative filling).
    pub fn take(&self, amount: u64) -> Capacity {
        Capacity {
            used: self.used.saturating_add(amount),
            free: self.free.saturating_sub(amount.min(i64::MAX as u64) as i64),
            ..*self
        }
    }
}

/// Free capacity per resource class: `(total - reserved) * allocation_ratio - used`,
/// keeping `min_unit`/`max_unit`/`step_size`. Classes without inventory are absent.
pub fn free_capacity(
    inventories: &BTreeMap<String, Inventory>,
    usages: &BTreeMap<String, u64>,
) -> BTreeMap<String, Capacity> {
    inventories
        .iter()
        .map(|(rc, inv)| {
            let capacity =
                ((inv.total.saturating_sub(inv.reserved)) as f64 * inv.allocation_ratio).floor();
            let capacity = if capacity.is_finite() && capacity > 0.0 {
                capacity.min(u64::MAX as f64) as u64
            } else {
                0
            };
            let used = usages.get(rc).copied().unwrap_or(0);
            let free =
                (capacity as i128 - used as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
            (
                rc.clone(),
                Capacity {
                    capacity,
                    used,
                    free,
                    min_unit: inv.min_unit,
                    max_unit: inv.max_unit,
                    step_size: inv.step_size,
                },
            )
        })
        .collect()
}

/// True when every `(class, amount)` of `demand` fits; a class the provider
/// has no inventory for does not fit.
pub fn fits_all(capacity: &BTreeMap<String, Capacity>, demand: &BTreeMap<String, u64>) -> bool {
    demand
        .iter()
        .all(|(rc, amount)| *amount == 0 || capacity.get(rc).is_some_and(|c| c.fits(*amount)))
}

/// Allocations of one consumer on a provider: resource class → amount.
pub type Resources = BTreeMap<String, u64>;

/// Placement client.
#[derive(Debug, Clone)]
pub struct Placement {
    session: Arc<Session>,
    endpoint: String,
}

impl Placement {
    /// Uses the catalog's `placement` endpoint.
    pub async fn connect(session: Arc<Session>) -> Result<Placement> {
        let endpoint = session.endpoint("placement").await?;
        Ok(Placement::with_endpoint(session, endpoint))
    }

    /// Uses an explicit endpoint.
    pub fn with_endpoint(session: Arc<Session>, endpoint: String) -> Placement {
        Placement {
            session,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
        }
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn call(&self, path: String, route: &'static str) -> Call {
        let mut c = Call::new(Method::GET, &self.endpoint, path, route);
        c.api_version = Some(format!("placement {PLACEMENT_MICROVERSION}"));
        c
    }

    /// `GET /resource_providers?name=…`.
    pub async fn resource_provider_by_name(&self, name: &str) -> Result<Option<ResourceProvider>> {
        #[derive(Deserialize)]
        struct W {
            resource_providers: Vec<ResourceProvider>,
        }
        let c = self
            .call("/resource_providers".into(), "GET /resource_providers")
            .query("name", name);
        let w: W = self.session.call_json(&c).await?;
        Ok(w.resource_providers.into_iter().find(|p| p.name == name))
    }

    /// `GET /resource_providers/{uuid}`.
    pub async fn resource_provider(&self, uuid: &str) -> Result<ResourceProvider> {
        let c = self.call(
            format!("/resource_providers/{}", seg(uuid)),
            "GET /resource_providers/{uuid}",
        );
        self.session.call_json(&c).await
    }

    /// `GET /resource_providers/{uuid}/inventories`.
    pub async fn inventories(&self, uuid: &str) -> Result<BTreeMap<String, Inventory>> {
        #[derive(Deserialize)]
        struct W {
            inventories: BTreeMap<String, Inventory>,
        }
        let c = self.call(
            format!("/resource_providers/{}/inventories", seg(uuid)),
            "GET /resource_providers/{uuid}/inventories",
        );
        Ok(self.session.call_json::<W>(&c).await?.inventories)
    }

    /// `GET /resource_providers/{uuid}/usages`.
    pub async fn usages(&self, uuid: &str) -> Result<BTreeMap<String, u64>> {
        #[derive(Deserialize)]
        struct W {
            usages: BTreeMap<String, u64>,
        }
        let c = self.call(
            format!("/resource_providers/{}/usages", seg(uuid)),
            "GET /resource_providers/{uuid}/usages",
        );
        Ok(self.session.call_json::<W>(&c).await?.usages)
    }

    /// All consumers' allocations on a provider, consumer uuid → resources
    /// (`GET /resource_providers/{uuid}/allocations`). During a move the
    /// source allocation is held by the migration uuid.
    pub async fn allocations(&self, uuid: &str) -> Result<BTreeMap<String, Resources>> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Alloc {
            resources: Resources,
        }
        #[derive(Deserialize)]
        struct W {
            allocations: BTreeMap<String, Alloc>,
        }
        let c = self.call(
            format!("/resource_providers/{}/allocations", seg(uuid)),
            "GET /resource_providers/{uuid}/allocations",
        );
        let w: W = self.session.call_json(&c).await?;
        Ok(w.allocations
            .into_iter()
            .map(|(k, v)| (k, v.resources))
            .collect())
    }

    /// Inventories and usages of a provider combined into free capacity (2 calls).
    pub async fn capacity(&self, uuid: &str) -> Result<BTreeMap<String, Capacity>> {
        let inv = self.inventories(uuid).await?;
        let used = self.usages(uuid).await?;
        Ok(free_capacity(&inv, &used))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(total: u64, reserved: u64, ratio: f64, max_unit: u64, step: u64) -> Inventory {
        Inventory {
            total,
            reserved,
            min_unit: 1,
            max_unit,
            step_size: step,
            allocation_ratio: ratio,
        }
    }

    proptest::proptest! {
        #[test]
        fn fits_never_overcommits(total in 0u64..10_000, reserved in 0u64..1_000, ratio in 0.5f64..16.0,
                                  used in 0u64..100_000, step in 1u64..8, max_unit in 1u64..10_000,
                                  amounts in proptest::collection::vec(1u64..2_000, 0..20)) {
            let invs = BTreeMap::from([("VCPU".to_string(), inv(total, reserved, ratio, max_unit, step))]);
            let used = BTreeMap::from([("VCPU".to_string(), used)]);
            let mut cap = free_capacity(&invs, &used)["VCPU"];
            for a in amounts {
                if cap.fits(a) {
                    proptest::prop_assert!(a <= max_unit && a % step == 0);
                    cap = cap.take(a);
                    proptest::prop_assert!(cap.free >= 0);
                    proptest::prop_assert!(cap.used as f64 <= ((total.saturating_sub(reserved)) as f64 * ratio).max(used["VCPU"] as f64));
                }
            }
        }
    }

    #[test]
    fn capacity_formula() {
        let invs = BTreeMap::from([
            ("VCPU".to_string(), inv(8, 0, 16.0, 8, 1)),
            ("MEMORY_MB".to_string(), inv(16384, 512, 1.5, 16384, 1)),
            ("DISK_GB".to_string(), inv(100, 0, 1.0, 100, 10)),
        ]);
        let used = BTreeMap::from([("VCPU".to_string(), 10), ("MEMORY_MB".to_string(), 24000)]);
        let cap = free_capacity(&invs, &used);
        assert_eq!(cap["VCPU"].capacity, 128);
        assert_eq!(cap["VCPU"].free, 118);
        assert_eq!(cap["MEMORY_MB"].capacity, 23808);
        assert_eq!(cap["MEMORY_MB"].free, -192);
        assert!(!cap["MEMORY_MB"].fits(1));
        assert!(cap["VCPU"].fits(8) && !cap["VCPU"].fits(9), "max_unit");
        assert!(
            cap["DISK_GB"].fits(20) && !cap["DISK_GB"].fits(15),
            "step_size"
        );
        assert!(!cap["DISK_GB"].take(90).fits(20));
        let demand = BTreeMap::from([("VCPU".to_string(), 2), ("PCPU".to_string(), 1)]);
        assert!(!fits_all(&cap, &demand));
        let demand = BTreeMap::from([("VCPU".to_string(), 2), ("PCPU".to_string(), 0)]);
        assert!(fits_all(&cap, &demand));
    }
}
