//! This node: the nova service host name, nova.conf settings, local systemd
//! units, and nova-compute.log lines. Filesystem and process edges only.

use std::path::Path;
use std::process::Command;

/// The few nova.conf settings the charm reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NovaConf {
    /// `[DEFAULT] host`.
    pub host: Option<String>,
    /// `[DEFAULT] max_concurrent_live_migrations`.
    pub max_concurrent_live_migrations: Option<u32>,
}

/// Parses the INI text of nova.conf (only `[DEFAULT]` is read; later
/// assignments win, as oslo.config does for one file).
pub fn parse_nova_conf(text: &str) -> NovaConf {
    let mut conf = NovaConf::default();
    let mut in_default = false;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            in_default = line[1..line.len() - 1]
                .trim()
                .eq_ignore_ascii_case("DEFAULT");
            continue;
        }
        if !in_default {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "host" if !v.is_empty() => conf.host = Some(v.to_string()),
            "max_concurrent_live_migrations" => {
                conf.max_concurrent_live_migrations = v.parse().ok();
            }
            _ => {}
        }
    }
    conf
}

/// Reads nova.conf; a missing file is an empty config.
pub fn read_nova_conf(path: &Path) -> std::io::Result<NovaConf> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse_nova_conf(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NovaConf::default()),
        Err(e) => Err(e),
    }
}

/// Where the nova host name came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostSource {
    Config,
    NovaConf,
    Hostname,
}

impl HostSource {
    pub fn describe(&self) -> &'static str {
        match self {
            HostSource::Config => "the nova-host config option",
            HostSource::NovaConf => "[DEFAULT] host in nova.conf",
            HostSource::Hostname => "the machine's hostname",
        }
    }
}

/// `nova-host`, else nova.conf's `[DEFAULT] host`, else the hostname.
pub fn resolve_nova_host(
    configured: Option<&str>,
    conf: &NovaConf,
) -> Option<(String, HostSource)> {
    if let Some(h) = configured.filter(|h| !h.is_empty()) {
        return Some((h.to_string(), HostSource::Config));
    }
    if let Some(h) = &conf.host {
        return Some((h.clone(), HostSource::NovaConf));
    }
    hostname().map(|h| (h, HostSource::Hostname))
}

/// The kernel's host name.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// `systemctl is-active <unit>`: Ok(true) when active.
pub fn unit_active(unit: &str) -> Result<(bool, String), String> {
    let out = Command::new("systemctl")
        .args(["is-active", unit])
        .output()
        .map_err(|e| format!("cannot run systemctl: {e}"))?;
    let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok((out.status.success() && state == "active", state))
}

/// The last `max` lines of `log` that mention `needle` (an instance uuid),
/// reading at most the file's last `window` bytes. A missing log gives none.
pub fn log_lines_naming(log: &Path, needle: &str, max: usize, window: u64) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(log) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(window);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let mut hits: Vec<String> = text
        .lines()
        .skip(usize::from(start > 0))
        .filter(|l| l.contains(needle))
        .map(|l| l.chars().take(500).collect())
        .collect();
    let n = hits.len();
    if n > max {
        hits.drain(..n - max);
    }
    hits
}

/// The state of a guest on this node, read-only: `virsh -r domstate
/// <instance_name>` (libvirt's default URI for root, `qemu:///system`).
pub fn guest_state(virsh: &Path, instance_name: &str) -> crate::plan::GuestState {
    use crate::plan::GuestState;
    if instance_name.is_empty() || instance_name.starts_with('-') {
        return GuestState::Unknown(format!("no usable libvirt domain name ({instance_name:?})"));
    }
    match Command::new(virsh)
        .args(["-r", "domstate", instance_name])
        .output()
    {
        Ok(out) => parse_domstate(
            out.status.success(),
            &String::from_utf8_lossy(&out.stdout),
            &String::from_utf8_lossy(&out.stderr),
        ),
        Err(e) => GuestState::Unknown(format!("cannot run {}: {e}", virsh.display())),
    }
}

/// `virsh domstate`'s answer: "running", another state, or no such domain.
pub fn parse_domstate(ok: bool, stdout: &str, stderr: &str) -> crate::plan::GuestState {
    use crate::plan::GuestState;
    let state = stdout.lines().map(str::trim).find(|l| !l.is_empty());
    if ok {
        return match state {
            Some("running") => GuestState::Running,
            Some(s) => GuestState::NotRunning(s.chars().take(64).collect()),
            None => GuestState::Unknown("virsh domstate printed nothing".into()),
        };
    }
    let err: String = stderr.trim().chars().take(300).collect();
    if err.contains("failed to get domain") || err.contains("Domain not found") {
        GuestState::Absent
    } else {
        GuestState::Unknown(if err.is_empty() {
            "virsh domstate failed".into()
        } else {
            err
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domstate() {
        use crate::plan::GuestState;
        assert_eq!(parse_domstate(true, "running\n\n", ""), GuestState::Running);
        assert_eq!(
            parse_domstate(true, "paused\n", ""),
            GuestState::NotRunning("paused".into())
        );
        assert_eq!(
            parse_domstate(true, "shut off\n", ""),
            GuestState::NotRunning("shut off".into())
        );
        assert_eq!(
            parse_domstate(
                false,
                "",
                "error: failed to get domain 'instance-00000001'\n"
            ),
            GuestState::Absent
        );
        assert!(matches!(
            parse_domstate(false, "", "error: failed to connect to the hypervisor"),
            GuestState::Unknown(e) if e.contains("failed to connect")
        ));
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            guest_state(&dir.path().join("no-virsh"), "instance-1"),
            GuestState::Unknown(e) if e.contains("cannot run")
        ));
        assert!(matches!(
            guest_state(Path::new("virsh"), "--help"),
            GuestState::Unknown(_)
        ));
    }

    #[test]
    fn nova_conf() {
        let c = parse_nova_conf(
            "# comment\n[DEFAULT]\nhost = node1.maas\nmax_concurrent_live_migrations=3\n[libvirt]\nhost = other\n",
        );
        assert_eq!(c.host.as_deref(), Some("node1.maas"));
        assert_eq!(c.max_concurrent_live_migrations, Some(3));
        assert_eq!(parse_nova_conf("[libvirt]\nhost=x\n"), NovaConf::default());
    }

    #[test]
    fn host_resolution_order() {
        let conf = NovaConf {
            host: Some("node1.maas".into()),
            ..Default::default()
        };
        assert_eq!(
            resolve_nova_host(Some("n9"), &conf),
            Some(("n9".into(), HostSource::Config))
        );
        assert_eq!(
            resolve_nova_host(Some(""), &conf),
            Some(("node1.maas".into(), HostSource::NovaConf))
        );
        assert_eq!(
            resolve_nova_host(None, &NovaConf::default()).map(|h| h.1),
            Some(HostSource::Hostname)
        );
    }

    #[test]
    fn log_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nova-compute.log");
        let mut text = String::new();
        for i in 0..50 {
            text.push_str(&format!(
                "line {i} [instance: {}]\n",
                if i % 2 == 0 { "aaa" } else { "bbb" }
            ));
        }
        std::fs::write(&p, text).unwrap();
        let got = log_lines_naming(&p, "aaa", 3, 1 << 20);
        assert_eq!(
            got,
            vec![
                "line 44 [instance: aaa]",
                "line 46 [instance: aaa]",
                "line 48 [instance: aaa]"
            ]
        );
        assert!(log_lines_naming(&dir.path().join("none"), "aaa", 3, 1024).is_empty());
        // A window that starts mid-line drops the partial line.
        let tail = log_lines_naming(&p, "line", 100, 30);
        assert!(tail.iter().all(|l| l.starts_with("line ")), "{tail:?}");
    }
}
