//! The harness: runs the real `dispatch` the way the unit agent does, with
//! hook tools that record every call (tests/harness/sim.rs).
//!
//! The charm is the packed `.charm` when `NLM_CHARM` names one (CI packs it
//! first), else a charm directory assembled from this build's binary and the
//! repository's YAML files, laid out as `charm/pack` lays it out.

#[path = "../harness/sim.rs"]
pub mod sim;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{Map, Value};
pub use sim::State;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The juju-sim example binary (cargo test builds examples next to the
/// test binaries' directory).
pub fn sim_exe() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let p = profile_dir.join("examples").join("juju-sim");
    assert!(
        p.exists(),
        "{} is missing: run the tests with cargo test (which builds examples)",
        p.display()
    );
    p
}

/// One charm directory for the whole test run.
pub fn charm_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("nlm-charm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        match std::env::var_os("NLM_CHARM") {
            Some(charm) => {
                let status = std::process::Command::new("unzip")
                    .args(["-q", "-o"])
                    .arg(&charm)
                    .arg("-d")
                    .arg(&dir)
                    .status()
                    .expect("unzip");
                assert!(status.success(), "unzip {charm:?}");
            }
            None => {
                for f in ["metadata.yaml", "actions.yaml", "config.yaml"] {
                    std::fs::copy(repo().join(f), dir.join(f)).unwrap();
                }
                std::os::unix::fs::symlink(
                    env!("CARGO_BIN_EXE_nova-live-migration"),
                    dir.join("dispatch"),
                )
                .unwrap();
            }
        }
        dir
    })
}

/// A unit under test: a state file in a temp dir, and host paths of its own.
pub struct Sim {
    pub dir: tempfile::TempDir,
    pub state: State,
}

impl Default for Sim {
    fn default() -> Self {
        Sim::new()
    }
}

/// The password in [`keystone_bag`] (listed in tests/secrets.txt for the
/// suite-wide scan).
pub const SIM_PASSWORD: &str = "sim-password-7f3a9c";

/// A complete identity-credentials bag as keystone publishes it.
pub fn keystone_bag(auth_url_host: &str, port: &str) -> std::collections::BTreeMap<String, String> {
    [
        ("auth_host", auth_url_host),
        ("auth_port", port),
        ("auth_protocol", "http"),
        ("credentials_host", auth_url_host),
        ("credentials_port", port),
        ("credentials_protocol", "http"),
        ("credentials_username", "nova_live_migration"),
        ("credentials_password", SIM_PASSWORD),
        ("credentials_project", "services"),
        ("credentials_project_id", "0f1e2d3c4b5a69788796a5b4c3d2e1f0"),
        ("credentials_user_domain_name", "service_domain"),
        ("credentials_project_domain_name", "service_domain"),
        ("domain", "service_domain"),
        ("api_version", "3"),
        ("region", "RegionOne"),
        ("private-address", "10.0.0.5"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl Sim {
    /// A unit with the juju-info relation to its principal and nothing else.
    pub fn new() -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let state = State::subordinate("10.0.0.5");
        Sim { dir, state }
    }

    /// Adds the identity-credentials relation with keystone units' bags.
    pub fn with_keystone(
        mut self,
        units: Vec<(&str, std::collections::BTreeMap<String, String>)>,
    ) -> Sim {
        self.state.relations.push(sim::Relation {
            id: "identity-credentials:5".into(),
            endpoint: "identity-credentials".into(),
            remote_app: "keystone".into(),
            remote_units: units.into_iter().map(|(u, b)| (u.to_string(), b)).collect(),
            local: Default::default(),
        });
        self
    }

    pub fn config(mut self, key: &str, value: Value) -> Sim {
        self.state.config.insert(key.to_string(), value);
        self
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Host-path overrides that keep the charm inside the temp dir.
    pub fn host_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "NLM_CLI_LINK".into(),
                self.path("bin/nova-live-migration").display().to_string(),
            ),
            (
                "NLM_STATE_DIR".into(),
                self.path("state").display().to_string(),
            ),
            (
                "NLM_NOVA_CONF".into(),
                self.path("nova.conf").display().to_string(),
            ),
            (
                "NLM_NOVA_COMPUTE_LOG".into(),
                self.path("nova-compute.log").display().to_string(),
            ),
        ]
    }

    /// Runs an event (`hooks/x` or `actions/x` with `key=value` params, as
    /// `juju run` takes them); the state out replaces `self.state`. Err is
    /// the controller refusing the action before it runs.
    pub fn run(&mut self, event: &str, params: &[&str]) -> Result<&State, String> {
        self.run_env(event, params, Vec::new())
    }

    pub fn run_env(
        &mut self,
        event: &str,
        params: &[&str],
        extra_env: Vec<(String, String)>,
    ) -> Result<&State, String> {
        let running = self.start_env(event, params, extra_env)?;
        self.finish(running)
    }

    /// Starts an event without waiting (to kill dispatch mid-way); end it
    /// with [`Sim::finish`]. The state file (`state.json`) is updated by the
    /// hook tools as they run.
    pub fn start_env(
        &mut self,
        event: &str,
        params: &[&str],
        extra_env: Vec<(String, String)>,
    ) -> Result<sim::Running, String> {
        let state_path = self.path("state.json");
        sim::save(&state_path, &self.state)?;
        let mut map = Map::new();
        for p in params {
            let (k, v) = sim::parse_param(p)?;
            map.insert(k, v);
        }
        let mut env = self.host_env();
        env.extend(extra_env);
        let exe = sim_exe();
        sim::start_event(sim::Run {
            charm_dir: charm_dir(),
            state_path: &state_path,
            event,
            params: map,
            sim_exe: &exe,
            env,
            echo: false,
        })
    }

    /// Waits for an event started with [`Sim::start_env`]; the state out
    /// replaces `self.state`.
    pub fn finish(&mut self, running: sim::Running) -> Result<&State, String> {
        self.state = running.wait()?;
        Ok(&self.state)
    }

    /// The state file as the hook tools left it so far (while dispatch runs).
    pub fn live_state(&self) -> Option<State> {
        sim::load(&self.path("state.json")).ok()
    }

    pub fn hook(&mut self, name: &str) -> &State {
        let event = format!("hooks/{name}");
        self.run(&event, &[])
            .unwrap_or_else(|e| panic!("{event}: {e}"))
    }

    pub fn action(&mut self, name: &str, params: &[&str]) -> &State {
        let event = format!("actions/{name}");
        self.run(&event, params)
            .unwrap_or_else(|e| panic!("{event}: {e}"))
    }
}
