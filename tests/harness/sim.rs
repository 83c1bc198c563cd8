//! A Juju unit agent in miniature, for tests and the demo.
//!
//! State in → event → state out: a JSON state file holds what Juju would
//! know (config, relations with their unit data bags, leadership, the action
//! and its parameters, the local systemd units) and collects what the charm
//! does (every hook-tool call, statuses, juju-log lines, action logs, results
//! and failure). `run_event` validates and completes the input as the
//! controller does (config defaults from config.yaml; action parameters
//! checked against actions.yaml, unknown ones refused, schema defaults
//! inserted), then runs the charm's real `dispatch` with the `JUJU_*`
//! environment and a PATH whose hook tools are this same program under the
//! tools' names (see `tool_main`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Every hook tool the simulator provides (plus `systemctl`).
pub const TOOLS: [&str; 19] = [
    "action-get",
    "action-set",
    "action-log",
    "action-fail",
    "status-set",
    "status-get",
    "juju-log",
    "config-get",
    "relation-ids",
    "relation-list",
    "relation-get",
    "relation-set",
    "is-leader",
    "application-version-set",
    "state-get",
    "state-set",
    "state-delete",
    "unit-get",
    "systemctl",
];

/// One relation as this unit sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Relation {
    /// e.g. `identity-credentials:5`
    pub id: String,
    pub endpoint: String,
    pub remote_app: String,
    /// Remote unit name → its data bag.
    #[serde(default)]
    pub remote_units: BTreeMap<String, BTreeMap<String, String>>,
    /// This unit's own data bag (what `relation-set` writes).
    #[serde(default)]
    pub local: BTreeMap<String, String>,
}

/// A running action.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ActionRun {
    pub name: String,
    pub id: String,
    pub params: Map<String, Value>,
}

/// One hook-tool call, as argv (tool name first) and stdin.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Call {
    pub argv: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
}

impl Call {
    pub fn line(&self) -> String {
        self.argv.join(" ")
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StatusEntry {
    pub status: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LogEntry {
    pub level: String,
    pub message: String,
}

/// The whole state: input fields first, then what the charm did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub unit: String,
    pub principal: String,
    pub model: String,
    pub machine: String,
    #[serde(default)]
    pub leader: bool,
    /// Values set by `juju config` (defaults are added at run time).
    #[serde(default)]
    pub config: Map<String, Value>,
    #[serde(default)]
    pub relations: Vec<Relation>,
    #[serde(default)]
    pub action: Option<ActionRun>,
    /// `systemctl is-active` answers: unit → state (missing = inactive).
    #[serde(default)]
    pub systemd: BTreeMap<String, String>,
    /// Tool name → stderr: that tool fails with exit 1.
    #[serde(default)]
    pub fail_tools: BTreeMap<String, String>,
    /// Tool name → stdout as hex: that tool prints these raw bytes (e.g.
    /// invalid UTF-8) instead of its answer, and exits 0.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tool_stdout_hex: BTreeMap<String, String>,
    /// `juju cancel-task` landing at an exact instant: when the charm makes
    /// its n-th hook-tool call (1-based, counting every tool), the tool
    /// records the call, then SIGKILLs the dispatch process (its parent) as
    /// the agent does on cancel (`runner.go` `runCharmProcessOnLocal` calls
    /// `os.Process.Kill()`), and never answers. Deterministic at any machine
    /// speed, unlike a kill after a delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_at_call: Option<usize>,
    /// With [`State::kill_at_call`]: count only the calls of this tool
    /// (e.g. the first `action-set`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_at_tool: Option<String>,
    /// Charm state (`state-get/set`).
    #[serde(default)]
    pub charm_state: BTreeMap<String, String>,

    // What the charm did.
    #[serde(default)]
    pub calls: Vec<Call>,
    #[serde(default)]
    pub statuses: Vec<StatusEntry>,
    #[serde(default)]
    pub juju_log: Vec<LogEntry>,
    #[serde(default)]
    pub action_log: Vec<String>,
    /// Flat dotted keys, as given to `action-set`.
    #[serde(default)]
    pub action_results: BTreeMap<String, String>,
    #[serde(default)]
    pub action_failed: Option<String>,
    #[serde(default)]
    pub app_version: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
    /// Wall time of the dispatch process, milliseconds.
    #[serde(default)]
    pub dispatch_ms: f64,
}

impl Default for State {
    fn default() -> State {
        State {
            unit: "nova-live-migration/0".into(),
            principal: "nova-compute/0".into(),
            model: "sim".into(),
            machine: "0".into(),
            leader: true,
            config: Map::new(),
            relations: Vec::new(),
            action: None,
            systemd: [
                ("nova-compute".to_string(), "active".to_string()),
                ("libvirtd".to_string(), "active".to_string()),
            ]
            .into_iter()
            .collect(),
            fail_tools: BTreeMap::new(),
            tool_stdout_hex: BTreeMap::new(),
            kill_at_call: None,
            kill_at_tool: None,
            charm_state: BTreeMap::new(),
            calls: Vec::new(),
            statuses: Vec::new(),
            juju_log: Vec::new(),
            action_log: Vec::new(),
            action_results: BTreeMap::new(),
            action_failed: None,
            app_version: None,
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            dispatch_ms: 0.0,
        }
    }
}

impl State {
    /// A subordinate unit related to its principal over juju-info (the
    /// relation Juju creates with the unit), with `address` as the
    /// principal's private-address.
    pub fn subordinate(address: &str) -> State {
        let mut state = State::default();
        state.relations.push(Relation {
            id: "juju-info:1".into(),
            endpoint: "juju-info".into(),
            remote_app: "nova-compute".into(),
            remote_units: [(
                state.principal.clone(),
                [("private-address".to_string(), address.to_string())]
                    .into_iter()
                    .collect(),
            )]
            .into_iter()
            .collect(),
            local: Default::default(),
        });
        state
    }

    /// Clears the outputs, keeping the inputs (for the next event).
    pub fn clear_outputs(&mut self) {
        self.calls.clear();
        self.statuses.clear();
        self.juju_log.clear();
        self.action_log.clear();
        self.action_results.clear();
        self.action_failed = None;
        self.exit_code = None;
        self.stdout.clear();
        self.stderr.clear();
        self.action = None;
    }

    /// The last status set, as `status: message`.
    pub fn last_status(&self) -> Option<String> {
        self.statuses
            .last()
            .map(|s| format!("{}: {}", s.status, s.message))
    }

    pub fn relation_mut(&mut self, endpoint: &str) -> Option<&mut Relation> {
        self.relations.iter_mut().find(|r| r.endpoint == endpoint)
    }

    pub fn call_lines(&self) -> Vec<String> {
        self.calls.iter().map(Call::line).collect()
    }

    /// Everything the unit produced in this run as one text (hook-tool
    /// calls with their stdin, statuses, logs, action output, stdout and
    /// stderr): what a test searches for a leaked secret.
    pub fn everything(&self) -> String {
        serde_json::to_string(&(
            &self.calls,
            &self.statuses,
            &self.juju_log,
            &self.action_log,
            &self.action_results,
            &self.action_failed,
            &self.stdout,
            &self.stderr,
        ))
        .unwrap_or_default()
    }
}

pub fn load(path: &Path) -> Result<State, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn save(path: &Path, state: &State) -> Result<(), String> {
    let text = serde_json::to_string_pretty(state).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The charm's YAML files, read as JSON values.
pub struct Schema {
    pub actions: Map<String, Value>,
    pub config: Map<String, Value>,
}

fn read_yaml(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_saphyr::from_str::<Value>(&text).map_err(|e| format!("{}: {e}", path.display()))
}

impl Schema {
    pub fn load(charm_dir: &Path) -> Result<Schema, String> {
        let actions = read_yaml(&charm_dir.join("actions.yaml"))?;
        let config = read_yaml(&charm_dir.join("config.yaml"))?;
        let config = config
            .get("options")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        Ok(Schema {
            actions: actions.as_object().cloned().unwrap_or_default(),
            config,
        })
    }

    /// Config as `config-get` prints it: defaults overlaid with set values.
    /// Refuses values of the wrong type, as `juju config` does.
    pub fn config_values(&self, set: &Map<String, Value>) -> Result<Map<String, Value>, String> {
        let mut out = Map::new();
        for (name, opt) in &self.config {
            if let Some(d) = opt.get("default") {
                out.insert(name.clone(), d.clone());
            }
        }
        for (name, value) in set {
            let Some(opt) = self.config.get(name) else {
                return Err(format!("unknown option {name:?}"));
            };
            let ty = opt.get("type").and_then(Value::as_str).unwrap_or("string");
            let ok = match ty {
                "string" => value.is_string(),
                "int" => value.is_i64() || value.is_u64(),
                "float" => value.is_number(),
                "boolean" => value.is_boolean(),
                _ => true,
            };
            if !ok {
                return Err(format!("option {name:?} expected {ty}, got {value}"));
            }
            out.insert(name.clone(), value.clone());
        }
        Ok(out)
    }

    /// Validates action parameters as the controller does and inserts
    /// schema defaults. The error text follows Juju's
    /// (`validation failed: (root) : Additional property x is not allowed`).
    pub fn action_params(
        &self,
        action: &str,
        given: &Map<String, Value>,
    ) -> Result<Map<String, Value>, String> {
        let Some(spec) = self.actions.get(action) else {
            return Err(format!(
                "action {action:?} not defined on unit (have {})",
                self.actions.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        };
        let props = spec
            .get("params")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let additional = spec
            .get("additionalProperties")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let fail = |msg: String| Err(format!("validation failed: (root) : {msg}"));
        for (k, v) in given {
            let Some(p) = props.get(k) else {
                if additional {
                    continue;
                }
                return fail(format!("Additional property {k} is not allowed"));
            };
            let ty = p.get("type").and_then(Value::as_str).unwrap_or("string");
            let ok = match ty {
                "string" => v.is_string(),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                "boolean" => v.is_boolean(),
                "array" => v.is_array(),
                "object" => v.is_object(),
                _ => true,
            };
            if !ok {
                return fail(format!(
                    "{k} : Invalid type. Expected: {ty}, given: {}",
                    type_name(v)
                ));
            }
            if let Some(choices) = p.get("enum").and_then(Value::as_array)
                && !choices.contains(v)
            {
                let list: Vec<String> = choices.iter().map(|c| c.to_string()).collect();
                return fail(format!(
                    "{k} : {k} must be one of the following: {}",
                    list.join(", ")
                ));
            }
            if let (Some(min), Some(n)) = (p.get("minimum").and_then(Value::as_f64), v.as_f64())
                && n < min
            {
                return fail(format!("{k} : Must be greater than or equal to {min}"));
            }
        }
        if let Some(required) = spec.get("required").and_then(Value::as_array) {
            for r in required.iter().filter_map(Value::as_str) {
                if !given.contains_key(r) {
                    return fail(format!("{r} is required"));
                }
            }
        }
        let mut out = given.clone();
        for (k, p) in &props {
            if let (false, Some(d)) = (out.contains_key(k), p.get("default")) {
                out.insert(k.clone(), d.clone());
            }
        }
        Ok(out)
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Parses `key=value` as `juju run` does: the value as YAML (so `true` is a
/// boolean and `3` an integer), falling back to the plain string.
pub fn parse_param(arg: &str) -> Result<(String, Value), String> {
    let (k, v) = arg
        .split_once('=')
        .ok_or_else(|| format!("argument {arg:?} is not key=value"))?;
    let value = match v {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => {
            if let Ok(n) = v.parse::<i64>() {
                Value::from(n)
            } else if let Ok(f) = v.parse::<f64>()
                && f.is_finite()
            {
                Value::from(f)
            } else {
                Value::String(v.to_string())
            }
        }
    };
    Ok((k.to_string(), value))
}

/// What `run_event` needs.
pub struct Run<'a> {
    pub charm_dir: &'a Path,
    pub state_path: &'a Path,
    /// `hooks/<name>` or `actions/<name>`.
    pub event: &'a str,
    pub params: Map<String, Value>,
    /// The simulator binary, linked under every tool name.
    pub sim_exe: &'a Path,
    /// Extra environment for dispatch (e.g. NLM_* overrides).
    pub env: Vec<(String, String)>,
    /// Print action-log lines to stderr as they come.
    pub echo: bool,
}

/// Runs one event; returns the state out. An action whose parameters the
/// controller would refuse is refused here too (Err), and dispatch does not run.
pub fn run_event(run: Run<'_>) -> Result<State, String> {
    start_event(run)?.wait()
}

/// A dispatch started by [`start_event`] and not yet waited for.
pub struct Running {
    pub child: std::process::Child,
    started: std::time::Instant,
    state_path: PathBuf,
    echo_path: Option<PathBuf>,
    event: String,
    /// The charm's state dir (`NLM_STATE_DIR` given to dispatch), to keep.
    charm_state_dir: Option<PathBuf>,
}

impl Running {
    /// The dispatch process id (e.g. to SIGKILL it as `juju cancel-task` does).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for dispatch to end (killed or not) and returns the state out.
    pub fn wait(self) -> Result<State, String> {
        let output = match &self.echo_path {
            Some(echo) => wait_echoing(self.child, echo)?,
            None => self.child.wait_with_output().map_err(|e| e.to_string())?,
        };
        let dispatch_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let mut state = load(&self.state_path)?;
        state.dispatch_ms = dispatch_ms;
        state.exit_code = output.status.code().or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            output.status.signal().map(|s| 128 + s)
        });
        state.stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        state.stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        save(&self.state_path, &state)?;
        if let Some(root) = suite_out() {
            keep_run(
                &root,
                &self.event,
                &state,
                &output,
                self.charm_state_dir.as_deref(),
            )
            .map_err(|e| format!("keeping the run's outputs under {}: {e}", root.display()))?;
        }
        Ok(state)
    }
}

// ---------------------------------------------------------------------------
// Keeping what the charm produced, for the suite-wide secrets scan.

/// When set, every run keeps what the charm produced (each hook-tool call,
/// the statuses, logs and results, dispatch's stdout and stderr, the charm's
/// state dir) in a directory of its own under `$NLM_SUITE_OUT/runs/`, for
/// `tests/scan-secrets`. The harness's own input (the relation data Juju
/// would hold, with its password) is not output and is not kept.
pub const SUITE_OUT_ENV: &str = "NLM_SUITE_OUT";

/// State-dir files that hold credentials by design (root-only, their mode
/// is asserted by the tests): not output, not kept.
pub const NOT_KEPT: [&str; 1] = [nlm::state::CLI_CREDENTIALS];

pub fn suite_out() -> Option<PathBuf> {
    std::env::var_os(SUITE_OUT_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn slug(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.chars().take(120).collect()
}

/// A new directory `runs/<test>.<what>.<pid>.<n>` under `root`: the test
/// is the thread's name, as libtest names it, else the program's name
/// (`juju-sim`, or a test binary run with one thread).
pub fn new_keep_dir(root: &Path, what: &str) -> std::io::Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let thread = std::thread::current();
    let test = match thread.name() {
        Some(name) if name != "main" => slug(name),
        _ => std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| slug(&n.to_string_lossy())))
            .unwrap_or_else(|| "main".into()),
    };
    let runs = root.join("runs");
    std::fs::create_dir_all(&runs)?;
    loop {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = runs.join(format!("{test}.{}.{}.{n}", slug(what), std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Keeps named byte strings (e.g. a CLI run's stdout and stderr) in a new
/// directory under `$NLM_SUITE_OUT`, when it is set.
pub fn keep_output(what: &str, files: &[(&str, &[u8])]) -> Result<(), String> {
    let Some(root) = suite_out() else {
        return Ok(());
    };
    let dir = new_keep_dir(&root, what).map_err(|e| format!("{}: {e}", root.display()))?;
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}

fn keep_run(
    root: &Path,
    event: &str,
    state: &State,
    output: &std::process::Output,
    charm_state_dir: Option<&Path>,
) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let dir = new_keep_dir(root, event).map_err(io)?;
    let relation_local: BTreeMap<&str, &BTreeMap<String, String>> = state
        .relations
        .iter()
        .map(|r| (r.id.as_str(), &r.local))
        .collect();
    let mut not_kept = Vec::new();
    if let Some(src) = charm_state_dir
        && src.is_dir()
    {
        copy_tree(src, &dir.join("state"), &mut not_kept).map_err(io)?;
    }
    let outputs = serde_json::json!({
        "event": event,
        "exit_code": state.exit_code,
        "dispatch_ms": state.dispatch_ms,
        "statuses": state.statuses,
        "juju_log": state.juju_log,
        "action_log": state.action_log,
        "action_results": state.action_results,
        "action_failed": state.action_failed,
        "app_version": state.app_version,
        "relation_local": relation_local,
        "state_not_kept": not_kept,
    });
    std::fs::write(dir.join("outputs.json"), pretty(&outputs)).map_err(io)?;
    std::fs::write(dir.join("calls.json"), pretty(&state.calls)).map_err(io)?;
    std::fs::write(dir.join("stdout"), &output.stdout).map_err(io)?;
    std::fs::write(dir.join("stderr"), &output.stderr).map_err(io)?;
    Ok(())
}

fn pretty<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).expect("serialisable")
}

/// Copies the files under `src` to `dst`, except [`NOT_KEPT`] (named in
/// `not_kept`).
fn copy_tree(src: &Path, dst: &Path, not_kept: &mut Vec<String>) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let name = entry.file_name();
        let ty = entry.file_type()?;
        if ty.is_dir() {
            copy_tree(&entry.path(), &dst.join(&name), not_kept)?;
        } else if ty.is_file() {
            if NOT_KEPT.iter().any(|n| name == *n) {
                not_kept.push(name.to_string_lossy().into_owned());
                continue;
            }
            match std::fs::copy(entry.path(), dst.join(&name)) {
                Ok(_) => {}
                // Gone meanwhile (a temp file renamed): nothing to keep.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Like [`run_event`], but returns as soon as dispatch is started.
pub fn start_event(run: Run<'_>) -> Result<Running, String> {
    let mut state = load(run.state_path)?;
    let schema = Schema::load(run.charm_dir)?;
    let config = schema.config_values(&state.config)?;
    state.clear_outputs();
    let (kind, name) = run.event.split_once('/').ok_or_else(|| {
        format!(
            "event {:?} is not hooks/<name> or actions/<name>",
            run.event
        )
    })?;
    let is_action = match kind {
        "hooks" => false,
        "actions" => true,
        _ => {
            return Err(format!(
                "event {:?} is not hooks/<name> or actions/<name>",
                run.event
            ));
        }
    };
    if is_action {
        let params = schema.action_params(name, &run.params)?;
        state.action = Some(ActionRun {
            name: name.to_string(),
            id: "1".to_string(),
            params,
        });
    }
    // config-get reads the effective values from here.
    state.config = config;
    let work = run
        .state_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let tools_dir = work.join("tools");
    std::fs::create_dir_all(&tools_dir).map_err(|e| e.to_string())?;
    for tool in TOOLS {
        let link = tools_dir.join(tool);
        if std::fs::read_link(&link).ok().as_deref() != Some(run.sim_exe) {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(run.sim_exe, &link).map_err(|e| e.to_string())?;
        }
    }
    save(run.state_path, &state)?;
    let echo_path = work.join("action-log.live");
    let _ = std::fs::remove_file(&echo_path);

    let mut cmd = Command::new(run.charm_dir.join("dispatch"));
    cmd.env_clear()
        .current_dir(run.charm_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let path = format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        tools_dir.display()
    );
    let unit_tag = state.unit.replace('/', "-");
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), path),
        ("LANG".into(), "C.UTF-8".into()),
        ("JUJU_DISPATCH_PATH".into(), run.event.to_string()),
        (
            "JUJU_HOOK_NAME".into(),
            if is_action {
                String::new()
            } else {
                name.to_string()
            },
        ),
        ("JUJU_UNIT_NAME".into(), state.unit.clone()),
        ("JUJU_PRINCIPAL_UNIT".into(), state.principal.clone()),
        ("JUJU_CHARM_DIR".into(), run.charm_dir.display().to_string()),
        ("CHARM_DIR".into(), run.charm_dir.display().to_string()),
        (
            "JUJU_CONTEXT_ID".into(),
            format!("{}-{}-1", state.unit, name),
        ),
        (
            "JUJU_AGENT_SOCKET_ADDRESS".into(),
            format!("@/var/lib/juju/agents/unit-{unit_tag}/agent.socket"),
        ),
        ("JUJU_AGENT_SOCKET_NETWORK".into(), "unix".into()),
        ("JUJU_MODEL_NAME".into(), state.model.clone()),
        (
            "JUJU_MODEL_UUID".into(),
            "00000000-0000-4000-8000-000000000000".into(),
        ),
        ("JUJU_MACHINE_ID".into(), state.machine.clone()),
        ("JUJU_VERSION".into(), "3.6.14".into()),
        ("JUJU_AVAILABILITY_ZONE".into(), String::new()),
        ("JUJU_CHARM_HTTP_PROXY".into(), String::new()),
        ("JUJU_CHARM_HTTPS_PROXY".into(), String::new()),
        ("JUJU_CHARM_NO_PROXY".into(), String::new()),
        (
            "JUJU_SIM_STATE".into(),
            run.state_path.display().to_string(),
        ),
    ];
    if run.echo {
        env.push(("JUJU_SIM_ECHO".into(), echo_path.display().to_string()));
    }
    if is_action {
        env.push(("JUJU_ACTION_NAME".into(), name.to_string()));
        env.push(("JUJU_ACTION_UUID".into(), "1".into()));
        env.push(("JUJU_ACTION_TAG".into(), "action-1".into()));
    } else if let Some(endpoint) = relation_endpoint(name)
        && let Some(rel) = state.relations.iter().find(|r| r.endpoint == endpoint)
    {
        env.push(("JUJU_RELATION".into(), endpoint.to_string()));
        env.push(("JUJU_RELATION_ID".into(), rel.id.clone()));
        env.push(("JUJU_REMOTE_APP".into(), rel.remote_app.clone()));
        if !name.ends_with("-relation-broken")
            && !name.ends_with("-relation-created")
            && let Some(u) = rel.remote_units.keys().next()
        {
            env.push(("JUJU_REMOTE_UNIT".into(), u.clone()));
        }
    }
    env.extend(run.env.iter().cloned());
    cmd.envs(env);
    let started = std::time::Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run dispatch: {e}"))?;
    let charm_state_dir = run
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "NLM_STATE_DIR")
        .map(|(_, v)| PathBuf::from(v));
    Ok(Running {
        child,
        started,
        state_path: run.state_path.to_path_buf(),
        echo_path: run.echo.then_some(echo_path),
        event: run.event.to_string(),
        charm_state_dir,
    })
}

fn wait_echoing(
    mut child: std::process::Child,
    echo: &Path,
) -> Result<std::process::Output, String> {
    // Drain the pipes on threads so a chatty dispatch never blocks.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let mut shown = 0usize;
    let show = |shown: &mut usize| {
        if let Ok(text) = std::fs::read_to_string(echo)
            && text.len() > *shown
        {
            eprint!("{}", &text[*shown..]);
            let _ = std::io::stderr().flush();
            *shown = text.len();
        }
    };
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        show(&mut shown);
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    show(&mut shown);
    Ok(std::process::Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    })
}

fn relation_endpoint(hook: &str) -> Option<&str> {
    for suffix in [
        "-relation-created",
        "-relation-joined",
        "-relation-changed",
        "-relation-departed",
        "-relation-broken",
    ] {
        if let Some(ep) = hook.strip_suffix(suffix) {
            return Some(ep);
        }
    }
    None
}

// ---------------------------------------------------------------------------
// The hook tools.

/// Runs as the hook tool `tool`: reads and updates the state file named by
/// `JUJU_SIM_STATE`, prints the answer, returns the exit code.
pub fn tool_main(tool: &str, args: &[String]) -> i32 {
    let Some(path) = std::env::var_os("JUJU_SIM_STATE").map(PathBuf::from) else {
        eprintln!("ERROR {tool}: JUJU_SIM_STATE is not set (not run by juju-sim)");
        return 1;
    };
    let lock_path = path.with_extension("lock");
    let lock = match std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ERROR {tool}: {e}");
            return 1;
        }
    };
    if let Err(e) = lock.lock() {
        eprintln!("ERROR {tool}: lock: {e}");
        return 1;
    }
    let mut state = match load(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ERROR {tool}: {e}");
            return 1;
        }
    };
    let mut stdin_text = None;
    if tool == "relation-set" && args.iter().any(|a| a == "--file") {
        let mut s = String::new();
        let _ = std::io::stdin().read_to_string(&mut s);
        stdin_text = Some(s);
    }
    let mut argv = vec![tool.to_string()];
    argv.extend(args.iter().cloned());
    state.calls.push(Call {
        argv,
        stdin: stdin_text.clone(),
    });
    let nth = match &state.kill_at_tool {
        Some(t) => state.calls.iter().filter(|c| c.argv[0] == *t).count(),
        None => state.calls.len(),
    };
    if state.kill_at_call == Some(nth) && state.kill_at_tool.as_deref().is_none_or(|t| t == tool) {
        if let Err(e) = save(&path, &state) {
            eprintln!("ERROR {tool}: {e}");
            return 1;
        }
        let dispatch = std::os::unix::process::parent_id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &dispatch])
            .status();
        return 1;
    }
    let raw_stdout = match state.tool_stdout_hex.get(tool).map(|h| from_hex(h)) {
        Some(Ok(bytes)) if !state.fail_tools.contains_key(tool) => Some(bytes),
        Some(Err(e)) => {
            eprintln!("ERROR {tool}: tool_stdout_hex: {e}");
            return 1;
        }
        _ => None,
    };
    if let Some(bytes) = raw_stdout {
        if let Err(e) = save(&path, &state) {
            eprintln!("ERROR {tool}: {e}");
            return 1;
        }
        let mut out = std::io::stdout().lock();
        return match out.write_all(&bytes).and_then(|()| out.flush()) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("ERROR {tool}: {e}");
                1
            }
        };
    }
    let outcome = if let Some(msg) = state.fail_tools.get(tool).cloned() {
        Err((1, msg))
    } else {
        apply(&mut state, tool, args, stdin_text.as_deref())
    };
    if let Err(e) = save(&path, &state) {
        eprintln!("ERROR {tool}: {e}");
        return 1;
    }
    match outcome {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            0
        }
        Err((code, msg)) => {
            eprintln!("{msg}");
            code
        }
    }
}

/// Lowercase hex of `bytes` (for [`State::tool_stdout_hex`]).
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(hex: &str) -> Result<Vec<u8>, String> {
    if !hex.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(|| format!("not hex at {i}"))
        })
        .collect()
}

type ToolResult = Result<String, (i32, String)>;

fn usage(msg: &str) -> ToolResult {
    Err((2, format!("ERROR {msg}")))
}

/// Splits `[flags] [--] rest`, returning the flags' values and the rest.
struct Args<'a> {
    flags: BTreeMap<&'a str, Option<&'a str>>,
    rest: Vec<&'a str>,
}

fn parse_args<'a>(args: &'a [String], with_value: &[&str]) -> Args<'a> {
    let mut flags = BTreeMap::new();
    let mut rest = Vec::new();
    let mut i = 0;
    let mut free = false;
    while i < args.len() {
        let a = args[i].as_str();
        if free {
            rest.push(a);
        } else if a == "--" {
            free = true;
        } else if let Some((k, v)) = a.split_once('=').filter(|_| a.starts_with("--")) {
            flags.insert(k, Some(v));
        } else if with_value.contains(&a) {
            flags.insert(a, args.get(i + 1).map(String::as_str));
            i += 1;
        } else if a.starts_with('-') && a.len() > 1 {
            flags.insert(a, None);
        } else {
            rest.push(a);
        }
        i += 1;
    }
    Args { flags, rest }
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serialisable")
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !seg.starts_with('-')
                && !seg.ends_with('-')
        })
}

fn find_relation<'a>(state: &'a State, id: Option<&str>) -> Result<&'a Relation, (i32, String)> {
    let Some(id) = id else {
        return Err((2, "ERROR no relation id specified".into()));
    };
    state.relations.iter().find(|r| r.id == id).ok_or_else(|| {
        (
            2,
            format!("ERROR invalid value \"{id}\" for option -r: relation not found"),
        )
    })
}

fn apply(state: &mut State, tool: &str, args: &[String], stdin: Option<&str>) -> ToolResult {
    match tool {
        "config-get" => {
            let a = parse_args(args, &[]);
            match a.rest.first() {
                Some(key) => Ok(json(state.config.get(*key).unwrap_or(&Value::Null))),
                None => Ok(json(&state.config)),
            }
        }
        "action-get" => {
            let Some(action) = &state.action else {
                return Err((1, "ERROR not running an action".into()));
            };
            let a = parse_args(args, &[]);
            match a.rest.first() {
                Some(key) => Ok(json(action.params.get(*key).unwrap_or(&Value::Null))),
                None => Ok(json(&action.params)),
            }
        }
        "action-set" => {
            if state.action.is_none() {
                return Err((1, "ERROR not running an action".into()));
            }
            let mut updates = Vec::new();
            for a in args {
                let Some((k, v)) = a.split_once('=') else {
                    return usage(&format!(
                        "argument \"{a}\" must be of the form key...=value"
                    ));
                };
                if !valid_key(k) {
                    return usage(&format!(
                        "key \"{k}\" must start and end with lowercase alphanumeric, and contain only lowercase alphanumeric, hyphens and periods"
                    ));
                }
                if k.split('.').any(|s| {
                    ["stdout", "stdout-encoding", "stderr", "stderr-encoding"].contains(&s)
                }) {
                    return usage(&format!("cannot set reserved action key \"{k}\""));
                }
                updates.push((k.to_string(), v.to_string()));
            }
            state.action_results.extend(updates);
            Ok(String::new())
        }
        "action-log" => {
            if state.action.is_none() {
                return Err((1, "ERROR not running an action".into()));
            }
            let a = parse_args(args, &[]);
            let line = a.rest.join(" ");
            if let Some(echo) = std::env::var_os("JUJU_SIM_ECHO")
                && let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(echo)
            {
                let _ = writeln!(f, "{line}");
            }
            state.action_log.push(line);
            Ok(String::new())
        }
        "action-fail" => {
            if state.action.is_none() {
                return Err((1, "ERROR not running an action".into()));
            }
            let a = parse_args(args, &[]);
            let msg = if a.rest.is_empty() {
                "action failed without reason given, check action for errors".to_string()
            } else {
                a.rest.join(" ")
            };
            state.action_failed = Some(msg);
            Ok(String::new())
        }
        "status-set" => {
            let a = parse_args(args, &[]);
            if a.flags.contains_key("--application")
                && a.flags["--application"] != Some("false")
                && !state.leader
            {
                return Err((1, "ERROR this unit is not the leader".into()));
            }
            let Some(status) = a.rest.first() else {
                return usage("invalid args, require <status> [message] [data]");
            };
            if !["maintenance", "blocked", "waiting", "active"].contains(status) {
                return usage(&format!(
                    "invalid status \"{status}\", expected one of [maintenance blocked waiting active]"
                ));
            }
            state.statuses.push(StatusEntry {
                status: status.to_string(),
                message: a.rest[1..].join(" "),
            });
            Ok(String::new())
        }
        "status-get" => {
            let last = state.statuses.last().cloned().unwrap_or(StatusEntry {
                status: "unknown".into(),
                message: String::new(),
            });
            Ok(json(
                &serde_json::json!({"status": last.status, "message": last.message, "status-data": {}}),
            ))
        }
        "juju-log" => {
            let a = parse_args(args, &["--log-level", "-l"]);
            let level = a
                .flags
                .get("--log-level")
                .or_else(|| a.flags.get("-l"))
                .copied()
                .flatten()
                .map(str::to_string)
                .unwrap_or_else(|| {
                    if a.flags.contains_key("--debug") {
                        "DEBUG".into()
                    } else {
                        "INFO".into()
                    }
                });
            if !["TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"].contains(&level.as_str())
            {
                return usage(&format!("invalid log level \"{level}\""));
            }
            state.juju_log.push(LogEntry {
                level,
                message: a.rest.join(" "),
            });
            Ok(String::new())
        }
        "is-leader" => Ok(json(&state.leader)),
        "relation-ids" => {
            let a = parse_args(args, &[]);
            let Some(endpoint) = a.rest.first() else {
                return usage("no endpoint name specified");
            };
            let ids: Vec<&str> = state
                .relations
                .iter()
                .filter(|r| r.endpoint == *endpoint)
                .map(|r| r.id.as_str())
                .collect();
            Ok(json(&ids))
        }
        "relation-list" => {
            let a = parse_args(args, &["-r"]);
            let rel = find_relation(state, a.flags.get("-r").copied().flatten())?;
            if a.flags.contains_key("--app") {
                return Ok(json(&rel.remote_app));
            }
            Ok(json(&rel.remote_units.keys().collect::<Vec<_>>()))
        }
        "relation-get" => {
            let a = parse_args(args, &["-r"]);
            let rel = find_relation(state, a.flags.get("-r").copied().flatten())?;
            let key = a.rest.first().copied().unwrap_or("-");
            let Some(unit) = a.rest.get(1).copied() else {
                return usage("no unit specified");
            };
            let bag = if unit == state.unit {
                Some(&rel.local)
            } else {
                rel.remote_units.get(unit)
            };
            let Some(bag) = bag else {
                return Err((
                    1,
                    format!(
                        "ERROR cannot read settings for unit \"{unit}\" in relation \"{}\": unit \"{unit}\": settings not found",
                        rel.id
                    ),
                ));
            };
            if key == "-" {
                Ok(json(bag))
            } else {
                Ok(json(&bag.get(key)))
            }
        }
        "relation-set" => {
            let a = parse_args(args, &["-r", "--file"]);
            let id = a.flags.get("-r").copied().flatten().map(str::to_string);
            let rel_index = {
                let rel = find_relation(state, id.as_deref())?;
                state
                    .relations
                    .iter()
                    .position(|r| r.id == rel.id)
                    .expect("found")
            };
            let mut updates: BTreeMap<String, String> = BTreeMap::new();
            if a.flags.get("--file").copied().flatten() == Some("-") {
                let text = stdin.unwrap_or("");
                let map: BTreeMap<String, Value> = serde_json::from_str(text)
                    .or_else(|_| serde_saphyr::from_str(text))
                    .map_err(|e| (1, format!("ERROR cannot parse relation settings: {e}")))?;
                for (k, v) in map {
                    let s = match v {
                        Value::String(s) => s,
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    updates.insert(k, s);
                }
            }
            for kv in &a.rest {
                let Some((k, v)) = kv.split_once('=') else {
                    return usage(&format!("expected \"key=value\", got \"{kv}\""));
                };
                updates.insert(k.to_string(), v.to_string());
            }
            let local = &mut state.relations[rel_index].local;
            for (k, v) in updates {
                if v.is_empty() {
                    local.remove(&k);
                } else {
                    local.insert(k, v);
                }
            }
            Ok(String::new())
        }
        "application-version-set" => {
            let a = parse_args(args, &[]);
            state.app_version = Some(a.rest.join(" "));
            Ok(String::new())
        }
        "state-get" => {
            let a = parse_args(args, &[]);
            match a.rest.first() {
                Some(k) => Ok(json(&state.charm_state.get(*k))),
                None => Ok(json(&state.charm_state)),
            }
        }
        "state-set" => {
            for kv in args.iter().filter(|a| !a.starts_with('-')) {
                if let Some((k, v)) = kv.split_once('=') {
                    state.charm_state.insert(k.to_string(), v.to_string());
                }
            }
            Ok(String::new())
        }
        "state-delete" => {
            for k in args {
                state.charm_state.remove(k);
            }
            Ok(String::new())
        }
        "unit-get" => Ok("127.0.0.1".into()),
        "systemctl" => {
            let a = parse_args(args, &[]);
            match a.rest.as_slice() {
                ["is-active", units @ ..] if !units.is_empty() => {
                    let states: Vec<String> = units
                        .iter()
                        .map(|u| {
                            let u = u.trim_end_matches(".service");
                            state
                                .systemd
                                .get(u)
                                .cloned()
                                .unwrap_or_else(|| "inactive".into())
                        })
                        .collect();
                    let all_active = states.iter().all(|s| s == "active");
                    if all_active {
                        Ok(states.join("\n"))
                    } else {
                        // systemctl prints the states on stdout and exits 3.
                        println!("{}", states.join("\n"));
                        Err((3, String::new()))
                    }
                }
                _ => Err((
                    1,
                    format!("systemctl (sim): unsupported arguments {args:?}"),
                )),
            }
        }
        other => Err((1, format!("ERROR unknown hook tool {other}"))),
    }
}
