//! Glance (image) API client (read-only): the properties of the images
//! instances booted from, for the vTPM pre-check (`hw_tpm_version`,
//! `hw_tpm_model`).

use std::collections::BTreeMap;
use std::sync::Arc;

use reqwest::Method;
use serde_json::Value;

use super::error::Result;
use super::http::{Call, Session, seg};

/// Glance client.
#[derive(Debug, Clone)]
pub struct Image {
    session: Arc<Session>,
    endpoint: String,
}

impl Image {
    /// Uses the catalog's `image` endpoint (with or without a trailing
    /// `/v2`: Glance's catalog URL is usually unversioned).
    pub async fn connect(session: Arc<Session>) -> Result<Image> {
        let endpoint = session.endpoint("image").await?;
        let endpoint = endpoint
            .trim_end_matches('/')
            .trim_end_matches("/v2")
            .to_string();
        Ok(Image { session, endpoint })
    }

    /// The string-valued fields of an image whose names start with `hw_`
    /// (`GET /v2/images/{id}`; Glance v2 puts custom properties at the top
    /// level of the image).
    pub async fn hw_properties(&self, id: &str) -> Result<BTreeMap<String, String>> {
        let c = Call::new(
            Method::GET,
            &self.endpoint,
            format!("/v2/images/{}", seg(id)),
            "GET /v2/images/{id}",
        );
        let image: Value = self.session.call_json(&c).await?;
        Ok(hw_of(&image))
    }
}

fn hw_of(image: &Value) -> BTreeMap<String, String> {
    image
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("hw_"))
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hw_string_properties_are_kept() {
        let image = serde_json::json!({
            "id": "i1", "name": "x", "hw_tpm_version": "2.0", "hw_tpm_model": "tpm-crb",
            "hw_numa_nodes": 2, "os_distro": "ubuntu", "tags": []
        });
        let hw = hw_of(&image);
        assert_eq!(
            hw.into_iter().collect::<Vec<_>>(),
            vec![
                ("hw_tpm_model".to_string(), "tpm-crb".to_string()),
                ("hw_tpm_version".to_string(), "2.0".to_string())
            ]
        );
    }
}
