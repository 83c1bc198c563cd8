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

    /// The action's spec in actions.yaml (`None` when the charm has no
    /// such action).
    pub fn action_spec(&self, action: &str) -> Option<&Map<String, Value>> {
        self.actions.get(action).and_then(Value::as_object)
    }

    /// `parallel: true` (and no `execution-group`): the action runs without
    /// the machine lock. Juju: `NeedsGlobalMachineLock() = !Parallel() ||
    /// ExecutionGroup() != ""` (internal/worker/uniter/operation/runaction.go).
    pub fn action_lock(&self, action: &str) -> Option<String> {
        let spec = self.action_spec(action)?;
        let parallel = spec
            .get("parallel")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let group = spec
            .get("execution-group")
            .and_then(Value::as_str)
            .unwrap_or("");
        match (parallel, group) {
            (true, "") => None,
            (_, "") => Some(MACHINE_LOCK.to_string()),
            (_, g) => Some(format!("{MACHINE_LOCK}-{g}")),
        }
    }

    /// Validates action parameters as the controller does when it enqueues
    /// the task, and inserts schema defaults. Juju 3.6: `state/unit.go`
    /// `PrepareActionPayload` calls `spec.ValidateParams` then
    /// `spec.InsertDefaults` (juju/charm `actions.go`), a JSON-schema draft 4
    /// check by `github.com/juju/gojsonschema`; a refusal is
    /// `validation failed: ` and the validator's errors joined by `; `, each
    /// worded as that library words it (`locales.go`, `result.go`
    /// `"%s : %s, given %s"`), e.g.
    /// `validation failed: (root).block-migration : must be of type string, given true`.
    /// The task is then not created. Errors are listed root first, then the
    /// properties by name (the library follows Go map order there).
    pub fn action_params(
        &self,
        unit: &str,
        action: &str,
        given: &Map<String, Value>,
    ) -> Result<Map<String, Value>, String> {
        let Some(spec) = self.action_spec(action) else {
            return Err(format!(
                "action \"{action}\" not defined on unit \"{unit}\""
            ));
        };
        let props = spec
            .get("params")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        // Juju 3 (juju/charm v12 ReadActionsYaml) leaves additionalProperties
        // unset (= allowed) unless actions.yaml says false.
        let additional = spec
            .get("additionalProperties")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let doc = Value::Object(given.clone());
        let mut errors = Vec::new();
        let err = |ctx: &str, desc: String, value: &Value| -> String {
            format!("{ctx} : {desc}, given {}", go_json(value))
        };
        if let Some(required) = spec.get("required").and_then(Value::as_array) {
            for r in required.iter().filter_map(Value::as_str) {
                if !given.contains_key(r) {
                    errors.push(err(
                        "(root)",
                        format!("\"{r}\" property is missing and required"),
                        &doc,
                    ));
                }
            }
        }
        if !additional {
            for k in given.keys() {
                if !props.contains_key(k) {
                    errors.push(err(
                        "(root)",
                        format!("additional property \"{k}\" is not allowed"),
                        &doc,
                    ));
                }
            }
        }
        for (k, p) in &props {
            let Some(v) = given.get(k) else { continue };
            let ctx = format!("(root).{k}");
            let types: Vec<&str> = match p.get("type") {
                Some(Value::String(t)) => vec![t.as_str()],
                Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !types.is_empty() && !types.iter().any(|t| json_type_matches(t, v)) {
                let shown = if types.len() == 1 {
                    types[0].to_string()
                } else {
                    format!("[{}]", types.join(","))
                };
                errors.push(err(&ctx, format!("must be of type {shown}"), v));
                continue;
            }
            if let Some(n) = v.as_f64() {
                if let Some(min) = p.get("minimum").and_then(Value::as_f64)
                    && n < min
                {
                    errors.push(err(
                        &ctx,
                        format!("must be greater than or equal to {}", go_number(min)),
                        &Value::String(go_number(n)),
                    ));
                }
                if let Some(max) = p.get("maximum").and_then(Value::as_f64)
                    && n > max
                {
                    errors.push(err(
                        &ctx,
                        format!("must be lower than or equal to {}", go_number(max)),
                        &Value::String(go_number(n)),
                    ));
                }
            }
            if let Some(choices) = p.get("enum").and_then(Value::as_array) {
                let given_json = go_json(v);
                let listed: Vec<String> = choices.iter().map(go_json).collect();
                if !listed.contains(&given_json) {
                    errors.push(err(
                        &ctx,
                        format!("must match one of the enum values [{}]", listed.join(",")),
                        v,
                    ));
                }
            }
        }
        if !errors.is_empty() {
            return Err(format!("validation failed: {}", errors.join("; ")));
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

/// gojsonschema's largest integer (ECMA's MAX_SAFE_INTEGER, utils.go).
const MAX_JSON_INT: f64 = 9_007_199_254_740_991.0;

/// The machine lock's name (`core/machinelock`: "machine-lock", or
/// "machine-lock-<group>" for an execution group).
pub const MACHINE_LOCK: &str = "machine-lock";

/// Whether `v` (as gojsonschema sees it after a JSON round trip: every
/// number a float64) is of JSON-schema type `ty` (validation.go
/// `validateRecursive`: an integral float64 is an integer).
fn json_type_matches(ty: &str, v: &Value) -> bool {
    match (ty, v) {
        ("null", Value::Null)
        | ("boolean", Value::Bool(_))
        | ("string", Value::String(_))
        | ("array", Value::Array(_))
        | ("object", Value::Object(_))
        | ("number", Value::Number(_)) => true,
        // utils.go `isFloat64AnInteger`: integral and within ±(2^53 - 1).
        ("integer", Value::Number(n)) => n
            .as_f64()
            .is_some_and(|f| f.is_finite() && f.fract() == 0.0 && f.abs() <= MAX_JSON_INT),
        _ => false,
    }
}

/// A number as gojsonschema prints it (`resultErrorFormatNumber`: `%d` for
/// an integral value, else `%g`).
fn go_number(n: f64) -> String {
    if n.is_finite() && n.fract() == 0.0 && n.abs() <= MAX_JSON_INT {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// A value as Go's `json.Marshal` prints it after the round trip to
/// float64: integral numbers without a fraction, object keys sorted.
fn go_json(v: &Value) -> String {
    match v {
        // Go prints a float64 in full below 1e21 (strconv 'f', shortest).
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e21 => format!("{f:.0}"),
            Some(f) => format!("{f}"),
            None => n.to_string(),
        },
        Value::Array(a) => format!("[{}]", a.iter().map(go_json).collect::<Vec<_>>().join(",")),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Value::String((*k).clone()), go_json(&m[*k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        other => other.to_string(),
    }
}

/// What `juju run` makes of one `key=value` argument (cmd/juju/action/run.go
/// `Init` and `enqueueActions`): the key split on `.`, every segment checked
/// against the action-name rule, the value parsed as YAML by gopkg.in/yaml.v2
/// unless `--string-args` (then the raw string). `juju config` values
/// (`new --config`) use the same parser here.
pub fn parse_param(arg: &str) -> Result<(String, Value), String> {
    parse_run_arg(arg, false)
}

/// `juju run --string-args key=value`: the value as the raw string.
pub fn parse_param_string(arg: &str) -> Result<(String, Value), String> {
    parse_run_arg(arg, true)
}

fn parse_run_arg(arg: &str, string_args: bool) -> Result<(String, Value), String> {
    let Some((k, v)) = arg.split_once('=') else {
        return Err(format!(
            "argument \"{arg}\" must be of the form key.key.key...=value"
        ));
    };
    for seg in k.split('.') {
        if !valid_name_rule(seg) {
            return Err(format!(
                "key \"{seg}\" must start and end with lowercase alphanumeric, and contain only lowercase alphanumeric and hyphens"
            ));
        }
    }
    let value = if string_args {
        Value::String(v.to_string())
    } else {
        yaml_v2_value(v)?
    };
    // Dotted keys build nested maps (run.go addValueToMap); the charm's
    // parameters are flat, so a dotted key stays one name here.
    Ok((k.to_string(), value))
}

/// `^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$` (run.go `nameRule`).
fn valid_name_rule(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// One `juju run` value parsed as gopkg.in/yaml.v2 parses a document into
/// `interface{}`: plain scalars resolved by YAML 1.1 rules (resolve.go:
/// `y|yes|on|true` and `n|no|off|false` in three casings are booleans,
/// `~|null` are null (an empty value stays the empty string), integers in base 10, `0x` hex,
/// `0b` binary and leading-`0` octal with `_` ignored, floats; timestamps
/// stay strings in an `interface{}`), quoted and flow values (`"123"`,
/// `[a, b]`) by a YAML parser. NaN and infinities cannot be sent as JSON:
/// an error, as the client's JSON encoding fails on them.
pub fn yaml_v2_value(raw: &str) -> Result<Value, String> {
    let v = raw.trim_matches(|c| c == ' ' || c == '\t');
    // An empty (or blank) document leaves run.go's `cleansedValue`, which
    // starts as the raw string, as it was: `vm=` sends "".
    if v.is_empty() {
        return Ok(Value::String(raw.to_string()));
    }
    let structured = v.starts_with(['"', '\'', '[', '{', '!', '&', '*', '|', '>'])
        || v.contains(": ")
        || v.contains(" #")
        || v.starts_with("- ");
    if structured {
        let parsed: Value = serde_saphyr::from_str(v).map_err(|e| format!("yaml: {e}"))?;
        return Ok(parsed);
    }
    const TRUE: [&str; 11] = [
        "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON",
    ];
    const FALSE: [&str; 11] = [
        "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF",
    ];
    if TRUE.contains(&v) {
        return Ok(Value::Bool(true));
    }
    if FALSE.contains(&v) {
        return Ok(Value::Bool(false));
    }
    if ["", "~", "null", "Null", "NULL"].contains(&v) {
        return Ok(Value::Null);
    }
    let non_json = [
        ".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf",
        "-.Inf", "-.INF",
    ];
    if non_json.contains(&v) {
        return Err(format!("json: unsupported value: {v}"));
    }
    let first = v.as_bytes()[0];
    if first == b'.' {
        if let Ok(f) = v.parse::<f64>() {
            return Ok(Value::from(f));
        }
        return Ok(Value::String(v.to_string()));
    }
    if !(first.is_ascii_digit() || first == b'+' || first == b'-') {
        return Ok(Value::String(v.to_string()));
    }
    if looks_like_timestamp(v) {
        return Ok(Value::String(v.to_string()));
    }
    let plain = v.replace('_', "");
    if let Some(n) = go_parse_int_base0(&plain) {
        if let Ok(i) = i64::try_from(n) {
            return Ok(Value::from(i));
        }
        if let Ok(u) = u64::try_from(n) {
            return Ok(Value::from(u));
        }
    }
    if yaml_style_float(&plain)
        && let Ok(f) = plain.parse::<f64>()
        && f.is_finite()
    {
        return Ok(Value::from(f));
    }
    Ok(Value::String(v.to_string()))
}

/// Go's `strconv.ParseInt(s, 0, 64)` prefixes: sign, then `0x`, `0b`, `0o`,
/// a leading `0` (octal) or decimal digits; `None` if not all digits.
fn go_parse_int_base0(s: &str) -> Option<i128> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let n = i128::from_str_radix(digits, radix).ok()?;
    if n > u64::MAX as i128 {
        return None;
    }
    Some(if neg { -n } else { n })
}

/// yaml.v2's `yamlStyleFloat`: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn yaml_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if int_digits == 0 && i == frac_start {
            return false;
        }
    } else if int_digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return false;
        }
    }
    i == b.len()
}

/// yaml.v2 `parseTimestamp`'s quick check (four digits then `-`) followed by
/// a date: such values stay strings in an `interface{}`.
fn looks_like_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 8 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && {
        let rest = &s[5..];
        let date: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '-')
            .collect();
        let parts: Vec<&str> = date.split('-').collect();
        parts.len() >= 2 && parts[0].len() <= 2 && !parts[0].is_empty() && !parts[1].is_empty()
    }
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
    unit: String,
    /// The charm's state dir (`NLM_STATE_DIR` given to dispatch), to keep.
    charm_state_dir: Option<PathBuf>,
    /// The unit's operation lock and, for a hook or a non-parallel action,
    /// the machine lock: held until dispatch has ended and the state out is
    /// saved (dropped with `self`).
    _locks: Vec<Held>,
}

/// `juju run` waits this long for a task unless `--wait` says otherwise,
/// then prints `timed out waiting for results from: unit <unit>` and exits
/// non-zero while the task runs on (cmd/juju/action run: the wait flag's
/// default 0 becomes 60 s in `runCommandBase.Init`).
pub const JUJU_RUN_DEFAULT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The largest action result the harness accepts: Juju stores a task's
/// results in one controller document (3.6: the `actions` collection,
/// state/action.go), and a MongoDB document is at most 16 MiB. No smaller
/// limit exists in the uniter (runner.go `updateActionResults` copies stdout
/// and stderr whole); one `action-set` argument is further bounded by the
/// kernel's MAX_ARG_STRLEN (128 KiB), which the real exec of the hook tool
/// already enforces here.
pub const MAX_ACTION_RESULTS_BYTES: usize = 16 * 1024 * 1024;

impl Running {
    /// The dispatch process id (e.g. to SIGKILL it as `juju cancel-task` does).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `juju cancel-task` on a running task: the agent SIGKILLs the
    /// dispatch process (not its group) and the task ends `aborted`
    /// (internal/worker/uniter/runner/runner.go `runCharmProcessOnLocal`
    /// kills the process on the action's cancel channel; operation/runaction.go
    /// watches for `ActionAborting`). No hook runs after it.
    pub fn cancel(mut self) -> Result<State, String> {
        self.child
            .kill()
            .map_err(|e| format!("SIGKILL dispatch: {e}"))?;
        self.wait()
    }

    /// `juju run --wait=<d>`: the state out if dispatch ends within `d`,
    /// else the client's refusal `timed out waiting for results from: unit
    /// <unit>` with the task still running (returned, to wait for or
    /// cancel). [`JUJU_RUN_DEFAULT_WAIT`] is what `juju run` waits without
    /// `--wait`.
    pub fn wait_for(
        mut self,
        d: std::time::Duration,
    ) -> Result<Result<State, String>, Box<(Running, String)>> {
        let t0 = std::time::Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return Ok(self.wait()),
                Ok(None) if t0.elapsed() >= d => {
                    let msg = format!("timed out waiting for results from: unit {}", self.unit);
                    return Err(Box::new((self, msg)));
                }
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(20)),
                Err(e) => return Ok(Err(e.to_string())),
            }
        }
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
        let results_bytes: usize = state
            .action_results
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
            + state.stdout.len()
            + state.stderr.len();
        if state.action.is_some() && results_bytes > MAX_ACTION_RESULTS_BYTES {
            state.action_failed = Some(format!(
                "juju-sim: the task's results are {results_bytes} bytes, more than the {MAX_ACTION_RESULTS_BYTES} one controller document holds"
            ));
        }
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
    let pre = load(run.state_path)?;
    let schema = Schema::load(run.charm_dir)?;
    let host = host_dir(run.state_path, &run.env);
    let state = &pre;
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
    // The controller refuses bad parameters before anything queues.
    let params = if is_action {
        Some(schema.action_params(&state.unit, name, &run.params)?)
    } else {
        None
    };
    // One operation at a time per unit: the uniter runs hooks, actions and
    // juju-exec commands one after the other (operation/executor.go runs
    // each op synchronously; PR #12548 "for a given unit agent, actions for
    // that agent are still run sequentially", whatever `parallel` says).
    let mut locks = vec![take_lock(
        &unit_lock_path(&host, &state.unit),
        &format!("unit {}", state.unit),
    )?];
    // The machine lock: every hook, and an action unless it is `parallel:
    // true` without an execution group (operation/runhook.go and
    // runaction.go `NeedsGlobalMachineLock`).
    let machine_lock = if is_action {
        schema.action_lock(name)
    } else {
        Some(MACHINE_LOCK.to_string())
    };
    if let Some(lock) = machine_lock {
        locks.push(take_lock(
            &host.join(LOCKS_DIR).join(&lock),
            &format!("the {lock} of machine {}", state.machine),
        )?);
    }
    // The state file is only touched under the unit's lock.
    let mut state = load(run.state_path)?;
    let config = schema.config_values(&state.config)?;
    state.clear_outputs();
    if let Some(params) = params {
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
        unit: state.unit.clone(),
        charm_state_dir,
        _locks: locks,
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
// The agent's locks and `juju exec`.

/// Where a host's locks live, under its host dir.
pub const LOCKS_DIR: &str = "juju-sim-locks";

/// The host a run belongs to: the parent of the charm's state dir
/// (`NLM_STATE_DIR` in its environment) when given, so that two harness
/// states on the same host paths are one machine; else the state file's dir.
pub fn host_dir(state_path: &Path, env: &[(String, String)]) -> PathBuf {
    env.iter()
        .rev()
        .find(|(k, _)| k == "NLM_STATE_DIR")
        .and_then(|(_, v)| Path::new(v).parent().map(Path::to_path_buf))
        .or_else(|| state_path.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The lock serialising one unit's operations.
pub fn unit_lock_path(host: &Path, unit: &str) -> PathBuf {
    host.join(LOCKS_DIR)
        .join(format!("unit-{}.lock", unit.replace('/', "-")))
}

/// A held exclusive lock (flock); released on drop.
pub struct Held {
    _file: std::fs::File,
    path: PathBuf,
}

fn held_here() -> &'static std::sync::Mutex<std::collections::BTreeSet<PathBuf>> {
    static HELD: std::sync::OnceLock<std::sync::Mutex<std::collections::BTreeSet<PathBuf>>> =
        std::sync::OnceLock::new();
    HELD.get_or_init(Default::default)
}

/// Takes the lock at `path`, waiting while another process holds it (the
/// agent queues the operation). When this process itself holds it (an
/// operation it started and has not waited for), waiting would never end:
/// that is an error naming what Juju would do.
pub fn take_lock(path: &Path, what: &str) -> Result<Held, String> {
    if held_here()
        .lock()
        .map(|h| h.contains(path))
        .unwrap_or(false)
    {
        return Err(format!(
            "{what} is busy with an operation this process started: Juju would queue this one until that one ends (one operation at a time per unit; hooks and non-parallel actions share the machine lock)"
        ));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.lock()
        .map_err(|e| format!("lock {}: {e}", path.display()))?;
    if let Ok(mut h) = held_here().lock() {
        h.insert(path.to_path_buf());
    }
    Ok(Held {
        _file: file,
        path: path.to_path_buf(),
    })
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut h) = held_here().lock() {
            h.remove(&self.path);
        }
    }
}

/// The user `juju exec --machine` runs commands as here. Juju runs them as
/// `ubuntu` (internal/worker/machineactions/handleactions.go `RunAsUser =
/// "ubuntu"`); what matters to the charm's CLI is that it is not root, and
/// `nobody` (uid 65534) exists on every Debian and Ubuntu machine without
/// the harness adding a user.
pub const EXEC_MACHINE_UID: u32 = 65534;

/// What a `juju exec` command printed.
#[derive(Debug, Clone)]
pub struct ExecOut {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// `juju exec` on this host.
pub struct Exec<'a> {
    /// The host's dir (see [`host_dir`]).
    pub host: &'a Path,
    /// The bash command line, as `juju exec -- <command>` gives it.
    pub command: &'a str,
    /// Directories to put first on PATH (e.g. where the CLI link is).
    pub path: Vec<PathBuf>,
    /// Host-path overrides (`NLM_*`) the command sees; Juju sets none.
    pub env: Vec<(String, String)>,
}

fn exec_output(out: std::process::Output) -> ExecOut {
    ExecOut {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn exec_path(extra: &[PathBuf], tools: Option<&Path>) -> String {
    let mut parts: Vec<String> = tools.iter().map(|t| t.display().to_string()).collect();
    parts.extend(extra.iter().map(|p| p.display().to_string()));
    parts.push("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    parts.join(":")
}

/// `juju exec --unit <unit> -- <command>`: a `juju-exec` operation of that
/// unit's agent. It runs as root (the unit agent's user) in the unit's hook
/// context (its `JUJU_*` variables and hook tools on PATH, but no
/// `JUJU_DISPATCH_PATH`: runner.go `runCommandsWithTimeout` vs
/// `runCharmHookWithLocation`), after the unit's running operation, and it
/// takes the machine lock (the juju-exec action is not parallel unless
/// `juju exec --parallel`). For a subordinate's abort it is the principal
/// (`nova-compute/K`) that is named: that unit is not the one running the
/// evacuation.
pub fn exec_unit(e: Exec<'_>, unit: &str, machine: &str) -> Result<ExecOut, String> {
    let _unit = take_lock(&unit_lock_path(e.host, unit), &format!("unit {unit}"))?;
    let _machine = take_lock(
        &e.host.join(LOCKS_DIR).join(MACHINE_LOCK),
        &format!("the {MACHINE_LOCK} of machine {machine}"),
    )?;
    let unit_tag = unit.replace('/', "-");
    let out = Command::new("bash")
        .arg("-c")
        .arg(e.command)
        .env_clear()
        .envs(e.env.iter().cloned())
        .env("PATH", exec_path(&e.path, None))
        .env("LANG", "C.UTF-8")
        .env("JUJU_UNIT_NAME", unit)
        .env("JUJU_CONTEXT_ID", format!("{unit}-run-commands-1"))
        .env(
            "JUJU_AGENT_SOCKET_ADDRESS",
            format!("@/var/lib/juju/agents/unit-{unit_tag}/agent.socket"),
        )
        .env("JUJU_AGENT_SOCKET_NETWORK", "unix")
        .env("JUJU_MODEL_NAME", "sim")
        .env("JUJU_MACHINE_ID", machine)
        .env(
            "JUJU_CHARM_DIR",
            format!("/var/lib/juju/agents/unit-{unit_tag}/charm"),
        )
        .env("JUJU_VERSION", "3.6.14")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("bash: {e}"))?;
    Ok(exec_output(out))
}

/// `juju exec --machine <n> -- <command>`: run by the machine agent, not a
/// unit's, so no unit lock, no machine lock and no `JUJU_*` context; as the
/// user `ubuntu` (here [`EXEC_MACHINE_UID`]: handleactions.go
/// `runCommandWithTimeout` sets `User: RunAsUser`).
pub fn exec_machine(e: Exec<'_>) -> Result<ExecOut, String> {
    use std::os::unix::process::CommandExt;
    let out = Command::new("bash")
        .arg("-c")
        .arg(e.command)
        .env_clear()
        .envs(e.env.iter().cloned())
        .env("PATH", exec_path(&e.path, None))
        .env("LANG", "C.UTF-8")
        .current_dir("/")
        .uid(EXEC_MACHINE_UID)
        .gid(EXEC_MACHINE_UID)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("bash as uid {EXEC_MACHINE_UID}: {e}"))?;
    Ok(exec_output(out))
}

/// `juju ssh <machine> -- sudo <command>`: a login as `ubuntu` on the
/// machine, then sudo: root, with sudo's reset environment (no `JUJU_*`),
/// and no lock of any agent (it does not go through Juju's agents at all).
pub fn ssh_sudo(e: Exec<'_>) -> Result<ExecOut, String> {
    let out = Command::new("bash")
        .arg("-c")
        .arg(e.command)
        .env_clear()
        .envs(e.env.iter().cloned())
        .env("PATH", exec_path(&e.path, None))
        .env("LANG", "C.UTF-8")
        .env("SUDO_USER", "ubuntu")
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("bash: {e}"))?;
    Ok(exec_output(out))
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
