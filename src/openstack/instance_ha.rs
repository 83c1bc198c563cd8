//! Masakari (instance HA, catalog type `instance-ha`) client: the failover
//! segments and their hosts, and a host's `on_maintenance` flag. While a
//! host is on maintenance Masakari does not "recover" (evacuate) its
//! instances when its monitors report it down, which a drain would
//! otherwise provoke.
//!
//! API v1 (masakari api-ref): `GET /segments`, `GET
//! /segments/{segment_uuid}/hosts?name=`, `PUT
//! /segments/{segment_uuid}/hosts/{host_uuid}` with `{"host":
//! {"on_maintenance": true}}`. The catalog URL already carries `/v1/<project>`.

use std::sync::Arc;

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::error::{Error, Result};
use super::http::{Call, Session, seg};

/// Catalog service type of Masakari.
pub const SERVICE_TYPE: &str = "instance-ha";

/// A failover segment.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Segment {
    pub uuid: String,
    pub name: String,
}

/// A host of a segment (named after the nova service host).
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(default)]
pub struct HaHost {
    pub uuid: String,
    pub name: String,
    pub on_maintenance: bool,
    pub failover_segment_id: String,
}

/// Masakari client.
#[derive(Debug, Clone)]
pub struct InstanceHa {
    session: Arc<Session>,
    endpoint: String,
}

impl InstanceHa {
    /// `None` when the catalog has no `instance-ha` endpoint for this
    /// interface and region (no Masakari on this cloud).
    pub async fn connect(session: Arc<Session>) -> Result<Option<InstanceHa>> {
        match session.endpoint(SERVICE_TYPE).await {
            Ok(endpoint) => Ok(Some(InstanceHa { session, endpoint })),
            Err(Error::EndpointNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Every failover segment (`GET /segments`).
    pub async fn segments(&self) -> Result<Vec<Segment>> {
        #[derive(Deserialize)]
        struct W {
            segments: Vec<Segment>,
        }
        let c = Call::new(Method::GET, &self.endpoint, "/segments", "GET /segments");
        Ok(self.session.call_json::<W>(&c).await?.segments)
    }

    /// The hosts named `name` in a segment (`GET /segments/{id}/hosts`).
    pub async fn hosts_named(&self, segment: &str, name: &str) -> Result<Vec<HaHost>> {
        #[derive(Deserialize)]
        struct W {
            hosts: Vec<HaHost>,
        }
        let c = Call::new(
            Method::GET,
            &self.endpoint,
            format!("/segments/{}/hosts", seg(segment)),
            "GET /segments/{id}/hosts",
        );
        let w: W = self.session.call_json(&c).await?;
        Ok(w.hosts.into_iter().filter(|h| h.name == name).collect())
    }

    /// Sets a host's `on_maintenance` (`PUT /segments/{id}/hosts/{id}`).
    pub async fn set_on_maintenance(&self, host: &HaHost, on: bool) -> Result<HaHost> {
        #[derive(Deserialize)]
        struct W {
            host: HaHost,
        }
        let c = Call::new(
            Method::PUT,
            &self.endpoint,
            format!(
                "/segments/{}/hosts/{}",
                seg(&host.failover_segment_id),
                seg(&host.uuid)
            ),
            "PUT /segments/{id}/hosts/{id}",
        )
        .json(json!({"host": {"on_maintenance": on}}));
        Ok(self.session.call_json::<W>(&c).await?.host)
    }

    /// Every record of `name` across the segments (a host may be in several).
    pub async fn hosts_of(&self, name: &str) -> Result<Vec<HaHost>> {
        let mut out = Vec::new();
        for s in self.segments().await? {
            for mut h in self.hosts_named(&s.uuid, name).await? {
                if h.failover_segment_id.is_empty() {
                    h.failover_segment_id = s.uuid.clone();
                }
                out.push(h);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::openstack::arbitrary::body_with_keys;
    use proptest::prelude::*;

    const KEYS: &[&str] = &[
        "segments",
        "hosts",
        "host",
        "uuid",
        "name",
        "on_maintenance",
        "failover_segment_id",
    ];

    #[derive(Deserialize)]
    struct Segments {
        #[allow(dead_code)]
        segments: Vec<Segment>,
    }
    #[derive(Deserialize)]
    struct Hosts {
        #[allow(dead_code)]
        hosts: Vec<HaHost>,
    }
    #[derive(Deserialize)]
    struct OneHost {
        #[allow(dead_code)]
        host: HaHost,
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// I4: no Masakari answer panics its decoders.
        #[test]
        fn masakari_decoders_never_panic(body in body_with_keys(KEYS)) {
            let _ = serde_json::from_slice::<Segments>(&body);
            let _ = serde_json::from_slice::<Hosts>(&body);
            let _ = serde_json::from_slice::<OneHost>(&body);
        }
    }
}
