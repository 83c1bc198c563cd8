//! Action results flattened to keys Juju accepts.
//!
//! Juju splits each `action-set` key on `.` and requires every segment to
//! match `^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$`; `stdout`, `stdout-encoding`,
//! `stderr` and `stderr-encoding` are reserved anywhere in the path. One bad
//! key makes Juju refuse the whole call, so keys are checked here first.

use std::collections::BTreeMap;

use super::error::ToolError;

const RESERVED: [&str; 4] = ["stdout", "stdout-encoding", "stderr", "stderr-encoding"];

/// An ordered set of `key=value` action results.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ActionResults(BTreeMap<String, String>);

/// Checks one dotted key as Juju does.
pub fn validate_key(key: &str) -> Result<(), ToolError> {
    let bad = |why: &str| ToolError::BadKey {
        key: key.to_string(),
        why: why.to_string(),
    };
    if key.is_empty() {
        return Err(bad("empty key"));
    }
    for seg in key.split('.') {
        if RESERVED.contains(&seg) {
            return Err(bad("reserved by Juju"));
        }
        let ok = !seg.is_empty()
            && seg
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !seg.starts_with('-')
            && !seg.ends_with('-');
        if !ok {
            return Err(bad(
                "each dot-separated part must be lowercase letters, digits and inner hyphens",
            ));
        }
    }
    Ok(())
}

/// Makes a string usable as a key segment: lowercase, `_` and other
/// characters become `-`, no leading or trailing hyphen.
pub fn key_segment(raw: &str) -> String {
    let mapped: String = raw
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches('-');
    if trimmed.is_empty() {
        "x".to_string()
    } else {
        trimmed.to_string()
    }
}

impl ActionResults {
    pub fn new() -> ActionResults {
        ActionResults::default()
    }

    /// Sets one key; the key must be valid.
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> Result<(), ToolError> {
        validate_key(key)?;
        self.0.insert(key.to_string(), value.into());
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_as_juju_checks_them() {
        for good in [
            "summary",
            "counts.cold-migrated",
            "instances.81df1304-aa.name",
            "a1",
        ] {
            assert!(validate_key(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Summary",
            "counts.cold_migrated",
            "-a",
            "a-",
            "a..b",
            "stdout",
            "x.stderr-encoding",
            "a b",
        ] {
            assert!(validate_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_segments_and_reserved_keys() {
        assert_eq!(key_segment("cold_migrated"), "cold-migrated");
        assert_eq!(key_segment("81DF-1304"), "81df-1304");
        assert_eq!(key_segment("81DF_13"), "81df-13");
        assert_eq!(key_segment("__"), "x");
        let mut r = ActionResults::new();
        r.set("instances.81df-1304.name", "focal-2").unwrap();
        assert_eq!(r.get("instances.81df-1304.name"), Some("focal-2"));
        assert!(r.set("stdout", "x").is_err());
    }
}
