//! Placement API client (read-only). The capacity arithmetic is the
//! planner's (`plan::preflight`), the only capacity model.

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
}
