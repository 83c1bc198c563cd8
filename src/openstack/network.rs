//! Neutron (network) API client (read-only): the ports of instances, for
//! the SR-IOV pre-check (`binding:vnic_type`).

use std::sync::Arc;

use reqwest::Method;
use serde::Deserialize;

use super::error::Result;
use super::http::{Call, Session};

/// Server ids per `GET /v2.0/ports` (repeated `device_id` filters are
/// OR-ed by Neutron; this keeps the URL well under common 8 KiB limits).
pub const PORTS_PER_CALL: usize = 40;

/// A port (the fields asked for).
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Port {
    /// uuid
    pub id: String,
    /// The server it is attached to.
    pub device_id: String,
    /// `normal`, `direct`, `direct-physical`, `macvtap`, `vdpa`, …
    #[serde(rename = "binding:vnic_type")]
    pub vnic_type: Option<String>,
}

/// Neutron client.
#[derive(Debug, Clone)]
pub struct Network {
    session: Arc<Session>,
    endpoint: String,
}

impl Network {
    /// Uses the catalog's `network` endpoint.
    pub async fn connect(session: Arc<Session>) -> Result<Network> {
        let endpoint = session.endpoint("network").await?;
        Ok(Network { session, endpoint })
    }

    /// The ports of `servers` (`GET /v2.0/ports?device_id=…&fields=…`, in
    /// chunks of [`PORTS_PER_CALL`]).
    pub async fn ports_of(&self, servers: &[String]) -> Result<Vec<Port>> {
        #[derive(Deserialize)]
        struct W {
            ports: Vec<Port>,
        }
        let mut out = Vec::new();
        for chunk in servers.chunks(PORTS_PER_CALL) {
            let mut c = Call::new(
                Method::GET,
                &self.endpoint,
                "/v2.0/ports",
                "GET /v2.0/ports",
            );
            for f in ["id", "device_id", "binding:vnic_type"] {
                c = c.query("fields", f);
            }
            for id in chunk {
                c = c.query("device_id", id);
            }
            let w: W = self.session.call_json(&c).await?;
            out.extend(w.ports);
        }
        Ok(out)
    }
}
