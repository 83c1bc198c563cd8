//! Host paths the charm touches, each overridable by an environment variable
//! (for tests and unusual hosts; Juju sets none of them).

use std::path::PathBuf;

/// Where things live on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The host CLI link (`/usr/local/bin/nova-live-migration`, `NLM_CLI_LINK`).
    pub cli_link: PathBuf,
    /// Journal and other state (`/var/lib/nova-live-migration`, `NLM_STATE_DIR`).
    pub state_dir: PathBuf,
    /// nova-compute's config (`/etc/nova/nova.conf`, `NLM_NOVA_CONF`).
    pub nova_conf: PathBuf,
    /// nova-compute's log (`/var/log/nova/nova-compute.log`, `NLM_NOVA_COMPUTE_LOG`).
    pub nova_compute_log: PathBuf,
    /// libvirt's client, run read-only (`virsh`, looked up on PATH; `NLM_VIRSH`).
    pub virsh: PathBuf,
}

impl Paths {
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Paths {
        let pick = |k: &str, default: &str| {
            PathBuf::from(
                get(k)
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| default.to_string()),
            )
        };
        Paths {
            cli_link: pick("NLM_CLI_LINK", "/usr/local/bin/nova-live-migration"),
            state_dir: pick("NLM_STATE_DIR", "/var/lib/nova-live-migration"),
            nova_conf: pick("NLM_NOVA_CONF", "/etc/nova/nova.conf"),
            nova_compute_log: pick("NLM_NOVA_COMPUTE_LOG", "/var/log/nova/nova-compute.log"),
            virsh: pick("NLM_VIRSH", "virsh"),
        }
    }
}
