//! Hook tools, called with Juju's exact argv. The only code that runs them.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::results::ActionResults;

pub use super::error::ToolError;

/// Says where the first invalid byte is, and in which JSON key's value
/// (never the value itself: it may be a secret).
fn not_utf8(out: &[u8], e: &std::str::Utf8Error) -> String {
    let at = e.valid_up_to();
    let prefix = std::str::from_utf8(&out[..at]).unwrap_or_default();
    let within = match current_key(prefix) {
        Some(k) => format!(", in the value of {}", crate::text::quoted(&k, 64)),
        None => String::new(),
    };
    format!(
        "not valid UTF-8 (byte 0x{:02x} at offset {at}{within})",
        out[at]
    )
}

/// The key whose value `prefix` (JSON text cut short) ends in: the last
/// string token followed by `:`.
fn current_key(prefix: &str) -> Option<String> {
    let mut key = None;
    let mut last: Option<String> = None;
    let mut chars = prefix.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let mut s = String::new();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                s.push(n);
                            }
                        }
                        '"' => {
                            closed = true;
                            break;
                        }
                        _ => s.push(c),
                    }
                }
                if !closed {
                    // The prefix ends inside this string: it is the value.
                    return key;
                }
                last = Some(s);
            }
            ':' => key = last.take(),
            ',' | '{' | '[' => {
                key = None;
                last = None;
            }
            c if c.is_whitespace() => {}
            _ => last = None,
        }
    }
    key
}

/// Runs one hook tool and returns its stdout. The seam for tests.
pub trait Runner: Send + Sync {
    fn run(&self, tool: &str, args: &[String], stdin: Option<&[u8]>) -> Result<Vec<u8>, ToolError>;
}

/// Spawns the hook tool found on PATH (Juju prepends its tools directory),
/// inheriting the environment: the tools need `JUJU_CONTEXT_ID` and the agent
/// socket variables.
#[derive(Debug, Default)]
pub struct ProcessRunner;

impl Runner for ProcessRunner {
    fn run(&self, tool: &str, args: &[String], stdin: Option<&[u8]>) -> Result<Vec<u8>, ToolError> {
        let mut cmd = Command::new(tool);
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd.spawn().map_err(|source| ToolError::Spawn {
            tool: tool.to_string(),
            source,
        })?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A tool that exits early closes the pipe; its exit status says why.
            let _ = pipe.write_all(input);
        }
        let out = child
            .wait_with_output()
            .map_err(|source| ToolError::Spawn {
                tool: tool.to_string(),
                source,
            })?;
        if !out.status.success() {
            return Err(ToolError::Failed {
                tool: tool.to_string(),
                code: out.status.code().unwrap_or(-1),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out.stdout)
    }
}

/// Workload status values a charm may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Blocked,
    Waiting,
    Maintenance,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Blocked => "blocked",
            Status::Waiting => "waiting",
            Status::Maintenance => "maintenance",
        }
    }
}

/// juju-log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warning,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "ERROR",
            LogLevel::Warning => "WARNING",
            LogLevel::Info => "INFO",
            LogLevel::Debug => "DEBUG",
            LogLevel::Trace => "TRACE",
        }
    }
}

/// Typed access to the hook tools.
pub struct HookTools {
    runner: Box<dyn Runner>,
    /// Set while a juju-log call runs, so that a failing juju-log does not
    /// try to log its own failure through juju-log.
    in_log: Mutex<()>,
    /// config-get's answer: config cannot change while a hook runs.
    config: std::sync::OnceLock<BTreeMap<String, Value>>,
}

impl std::fmt::Debug for HookTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookTools")
    }
}

impl HookTools {
    pub fn new(runner: Box<dyn Runner>) -> HookTools {
        HookTools {
            runner,
            in_log: Mutex::new(()),
            config: std::sync::OnceLock::new(),
        }
    }

    /// The real tools on PATH.
    pub fn process() -> HookTools {
        HookTools::new(Box::new(ProcessRunner))
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<Vec<u8>, ToolError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        self.runner.run(tool, &args, None)
    }

    fn json<T: DeserializeOwned>(&self, tool: &str, args: &[&str]) -> Result<T, ToolError> {
        let out = self.run(tool, args)?;
        // Refuse bytes that are not UTF-8 rather than replace them: a value
        // silently changed (a password, a region) would fail later and far
        // from the cause.
        let text = std::str::from_utf8(&out).map_err(|e| ToolError::Parse {
            tool: tool.to_string(),
            detail: not_utf8(&out, &e),
        })?;
        // Juju 4 may print nothing or `null` for an empty map.
        let text = if text.trim().is_empty() {
            "null"
        } else {
            text.trim()
        };
        serde_json::from_str(text).map_err(|e| ToolError::Parse {
            tool: tool.to_string(),
            detail: e.to_string(),
        })
    }

    /// `config-get --format=json`: every option with its value (defaults included).
    /// Read once per process: config cannot change while a hook runs.
    pub fn config_get(&self) -> Result<BTreeMap<String, Value>, ToolError> {
        if let Some(c) = self.config.get() {
            return Ok(c.clone());
        }
        let v: Option<BTreeMap<String, Value>> = self.json("config-get", &["--format=json"])?;
        Ok(self.config.get_or_init(|| v.unwrap_or_default()).clone())
    }

    /// `action-get --format=json`: the action's parameters (schema defaults inserted by Juju).
    pub fn action_get(&self) -> Result<BTreeMap<String, Value>, ToolError> {
        let v: Option<BTreeMap<String, Value>> = self.json("action-get", &["--format=json"])?;
        Ok(v.unwrap_or_default())
    }

    /// `action-set k=v ...` with keys validated first (Juju refuses the whole call otherwise).
    pub fn action_set(&self, results: &ActionResults) -> Result<(), ToolError> {
        if results.is_empty() {
            return Ok(());
        }
        let args: Vec<String> = results.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.runner.run("action-set", &args, None).map(|_| ())
    }

    /// `action-log -- <msg>`: streamed live to `juju run`.
    pub fn action_log(&self, msg: &str) -> Result<(), ToolError> {
        self.run("action-log", &["--", msg]).map(|_| ())
    }

    /// `action-fail -- <msg>`: the task ends `failed` with this message (the process still exits 0).
    pub fn action_fail(&self, msg: &str) -> Result<(), ToolError> {
        self.run("action-fail", &["--", msg]).map(|_| ())
    }

    /// `status-set <status> -- <msg>` for this unit.
    pub fn status_set(&self, status: Status, msg: &str) -> Result<(), ToolError> {
        self.run("status-set", &[status.as_str(), "--", msg])
            .map(|_| ())
    }

    /// `juju-log --log-level L -- <msg>`.
    pub fn juju_log(&self, level: LogLevel, msg: &str) -> Result<(), ToolError> {
        let _guard = self.in_log.lock().unwrap_or_else(|e| e.into_inner());
        self.run("juju-log", &["--log-level", level.as_str(), "--", msg])
            .map(|_| ())
    }

    /// `relation-ids <endpoint> --format=json`.
    pub fn relation_ids(&self, endpoint: &str) -> Result<Vec<String>, ToolError> {
        let v: Option<Vec<String>> = self.json("relation-ids", &[endpoint, "--format=json"])?;
        Ok(v.unwrap_or_default())
    }

    /// `relation-list --format=json -r <id>`: the remote units.
    pub fn relation_list(&self, relation_id: &str) -> Result<Vec<String>, ToolError> {
        let v: Option<Vec<String>> =
            self.json("relation-list", &["--format=json", "-r", relation_id])?;
        Ok(v.unwrap_or_default())
    }

    /// `relation-get --format=json -r <id> - <unit>`: one unit's data bag.
    pub fn relation_get(
        &self,
        relation_id: &str,
        unit: &str,
    ) -> Result<BTreeMap<String, String>, ToolError> {
        let v: Option<BTreeMap<String, Value>> = self.json(
            "relation-get",
            &["--format=json", "-r", relation_id, "-", unit],
        )?;
        Ok(v.unwrap_or_default()
            .into_iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, s)
            })
            .collect())
    }

    /// `relation-set -r <id> --file -` with a JSON map on stdin (JSON is YAML).
    pub fn relation_set(
        &self,
        relation_id: &str,
        data: &BTreeMap<String, String>,
    ) -> Result<(), ToolError> {
        let body = serde_json::to_vec(data).expect("a map of strings serialises");
        let args = vec![
            "-r".to_string(),
            relation_id.to_string(),
            "--file".to_string(),
            "-".to_string(),
        ];
        self.runner
            .run("relation-set", &args, Some(&body))
            .map(|_| ())
    }

    /// `application-version-set -- <version>`.
    pub fn application_version_set(&self, version: &str) -> Result<(), ToolError> {
        self.run("application-version-set", &["--", version])
            .map(|_| ())
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// One recorded call: tool, argv, stdin.
    pub type RecordedCall = (String, Vec<String>, Option<String>);

    /// Records every call and answers from a table (tool name → stdout).
    #[derive(Default, Clone)]
    pub struct Recorder {
        pub calls: Arc<Mutex<Vec<RecordedCall>>>,
        pub answers: Arc<Mutex<BTreeMap<String, Result<String, String>>>>,
        /// Tool name → raw stdout (bytes that need not be UTF-8); wins over `answers`.
        pub raw: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    }

    impl Runner for Recorder {
        fn run(
            &self,
            tool: &str,
            args: &[String],
            stdin: Option<&[u8]>,
        ) -> Result<Vec<u8>, ToolError> {
            self.calls.lock().unwrap().push((
                tool.to_string(),
                args.to_vec(),
                stdin.map(|s| String::from_utf8_lossy(s).into_owned()),
            ));
            if let Some(raw) = self.raw.lock().unwrap().get(tool) {
                return Ok(raw.clone());
            }
            match self.answers.lock().unwrap().get(tool) {
                Some(Ok(s)) => Ok(s.clone().into_bytes()),
                Some(Err(e)) => Err(ToolError::Failed {
                    tool: tool.to_string(),
                    code: 1,
                    stderr: e.clone(),
                }),
                None => Ok(Vec::new()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Recorder;
    use super::*;

    fn tools() -> (HookTools, Recorder) {
        let r = Recorder::default();
        (HookTools::new(Box::new(r.clone())), r)
    }

    #[test]
    fn exact_argv() {
        let (t, r) = tools();
        t.status_set(Status::Blocked, "needs x").unwrap();
        t.juju_log(LogLevel::Info, "-starts with dash").unwrap();
        t.action_log("[1/2] vm").unwrap();
        t.action_fail("do this").unwrap();
        t.relation_list("identity-credentials:5").unwrap();
        t.relation_get("identity-credentials:5", "keystone/0")
            .unwrap();
        let mut data = BTreeMap::new();
        data.insert("username".to_string(), "nova_live_migration".to_string());
        t.relation_set("identity-credentials:5", &data).unwrap();
        let calls = r.calls.lock().unwrap().clone();
        let argv: Vec<String> = calls
            .iter()
            .map(|(t, a, _)| format!("{t} {}", a.join(" ")))
            .collect();
        assert_eq!(
            argv,
            vec![
                "status-set blocked -- needs x",
                "juju-log --log-level INFO -- -starts with dash",
                "action-log -- [1/2] vm",
                "action-fail -- do this",
                "relation-list --format=json -r identity-credentials:5",
                "relation-get --format=json -r identity-credentials:5 - keystone/0",
                "relation-set -r identity-credentials:5 --file -",
            ]
        );
        assert_eq!(
            calls[6].2.as_deref(),
            Some(r#"{"username":"nova_live_migration"}"#)
        );
    }

    #[test]
    fn parses_json_and_reports_errors() {
        let (t, r) = tools();
        r.answers.lock().unwrap().insert(
            "config-get".into(),
            Ok(r#"{"retries": 2, "region": ""}"#.into()),
        );
        r.answers
            .lock()
            .unwrap()
            .insert("relation-ids".into(), Ok("null".into()));
        r.answers.lock().unwrap().insert(
            "action-get".into(),
            Err("ERROR not running an action".into()),
        );
        let cfg = t.config_get().unwrap();
        assert_eq!(cfg["retries"], Value::from(2));
        assert!(t.relation_ids("identity-credentials").unwrap().is_empty());
        let err = t.action_get().unwrap_err().to_string();
        assert!(err.contains("ERROR not running an action"), "{err}");
        r.answers
            .lock()
            .unwrap()
            .insert("relation-list".into(), Ok("{not json".into()));
        assert!(matches!(
            t.relation_list("x:1"),
            Err(ToolError::Parse { .. })
        ));
    }

    #[test]
    fn output_that_is_not_utf8_is_refused_naming_the_key_not_the_value() {
        let (t, r) = tools();
        let mut out = br#"{"region": "RegionOne", "nova-host": "node"#.to_vec();
        out.extend_from_slice(b"\xff1\"}");
        r.raw.lock().unwrap().insert("config-get".into(), out);
        let err = t.config_get().unwrap_err();
        assert!(err.is_unreadable_output());
        let text = err.to_string();
        assert_eq!(
            text,
            "config-get printed output that is not the JSON expected: not valid UTF-8 (byte 0xff at offset 42, in the value of \"nova-host\")"
        );
        assert!(!text.contains("node"), "{text}");
        // Not cached: the next call asks again.
        r.raw.lock().unwrap().clear();
        r.answers
            .lock()
            .unwrap()
            .insert("config-get".into(), Ok("{}".into()));
        assert!(t.config_get().unwrap().is_empty());
    }

    #[test]
    fn current_key_follows_strings_and_escapes() {
        assert_eq!(current_key(r#"{"a": "x", "b": "y"#).as_deref(), Some("b"));
        assert_eq!(current_key(r#"{"a\"q": "#).as_deref(), Some("a\"q"));
        assert_eq!(current_key(r#"{"a": "x:y", "#), None);
        assert_eq!(current_key(r#"{"a": "x", "b"#), None);
        assert_eq!(current_key(""), None);
    }
}
