//! The journal's body: one evacuation or migrate-vm run, and how the other
//! processes see it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::BlockMigration;
use crate::plan::{Drain, Millis, Outcome, Plan, ServiceReport};
use crate::time::iso;

use super::{Journal, drain_running};

/// Which action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Evacuate,
    MigrateVm,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Evacuate => "evacuate",
            Kind::MigrateVm => "migrate-vm",
        }
    }
}

/// v1 → v2 (the core's rework for a shared cloud, issue 12): each plan
/// entry's `destination` marker string becomes the typed destination
/// (`"none"` → null, `"scheduler"` → `"scheduler"`, a host → `{"host": …}`:
/// v1 could not tell a host named `scheduler` from the scheduler, and read
/// it as the scheduler, so that is what it becomes); each instance's
/// `track.abort_sent` becomes `abort_reason` (an abort the earlier version
/// had sent); an ended run counts as reported (v1 did not record it, and
/// taking it as reported never hands an old result to a new action). Every
/// field v2 adds takes its default.
pub fn v1_to_v2(mut s: Value) -> Result<Value, String> {
    if let Some(entries) = s.pointer_mut("/plan/entries").and_then(Value::as_array_mut) {
        for e in entries {
            let d = match e.get("destination").and_then(Value::as_str) {
                None | Some("none") => Value::Null,
                Some("scheduler") => Value::from("scheduler"),
                Some(host) => serde_json::json!({ "host": host }),
            };
            e["destination"] = d;
        }
    }
    let instances = s
        .pointer_mut("/drain/instances")
        .and_then(Value::as_array_mut)
        .map(std::mem::take)
        .unwrap_or_default();
    let mut converted = Vec::with_capacity(instances.len());
    for mut i in instances {
        if let Some(t) = i.get_mut("track").and_then(Value::as_object_mut)
            && t.remove("abort_sent") == Some(Value::Bool(true))
        {
            t.insert(
                "abort_reason".into(),
                Value::from("an abort sent before the charm was upgraded"),
            );
        }
        converted.push(i);
    }
    if let Some(list) = s.pointer_mut("/drain/instances") {
        *list = Value::Array(converted);
    }
    if s.get("reported_at").is_none_or(Value::is_null)
        && let Some(end) = s.get("ended_at").filter(|v| !v.is_null()).cloned()
    {
        s["reported_at"] = end;
    }
    Ok(s)
}

/// The journal body: one evacuation or migrate-vm run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub kind: Kind,
    pub unit: String,
    pub task: Option<String>,
    pub host: String,
    pub started_at: Millis,
    /// `"auto"`, `"true"` or `"false"` in the journal, as in config.
    pub block_migration: BlockMigration,
    pub plan: Plan,
    /// The service as pre-flight found it.
    pub service_before: ServiceReport,
    /// The reason we disabled the service with (evacuate).
    pub disabled_reason: Option<String>,
    pub drain: Drain,
    pub ended_at: Option<Millis>,
    /// Ended by an abort (action or CLI).
    #[serde(default)]
    pub aborted: bool,
    /// When the action's result was delivered (`action-set` done): an
    /// ended run without it was killed before it could report, and the
    /// next run of the same action reports it.
    #[serde(default)]
    pub reported_at: Option<Millis>,
    /// The parameters it was started with (a resumed run keeps them).
    #[serde(default)]
    pub params: Option<RunParams>,
}

/// The parameters a run was started with, as the journal keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunParams {
    pub vm: Option<String>,
    pub target_host: Option<String>,
    pub max_concurrent: Option<u32>,
    pub block_migration: Option<String>,
    pub include_stopped: bool,
    pub exclude: Vec<String>,
    pub force: bool,
}

impl RunParams {
    /// The parameters given now that say something else than the run's own
    /// (a parameter left out keeps the run's value).
    pub fn conflicts(&self, now: &RunParams) -> Vec<String> {
        let mut out = Vec::new();
        let mut differ = |k: &str, given: bool, same: bool, was: String| {
            if given && !same {
                out.push(format!("{k} (the run has {was})"));
            }
        };
        let show = |o: &Option<String>| o.clone().unwrap_or_else(|| "none".into());
        differ(
            "target-host",
            now.target_host.is_some(),
            now.target_host == self.target_host,
            show(&self.target_host),
        );
        differ(
            "max-concurrent",
            now.max_concurrent.is_some(),
            now.max_concurrent == self.max_concurrent,
            self.max_concurrent
                .map_or_else(|| "the config's".into(), |n| n.to_string()),
        );
        differ(
            "block-migration",
            now.block_migration.is_some(),
            now.block_migration == self.block_migration,
            show(&self.block_migration),
        );
        differ(
            "include-stopped",
            now.include_stopped,
            self.include_stopped,
            "false".into(),
        );
        differ(
            "exclude",
            !now.exclude.is_empty(),
            now.exclude == self.exclude,
            if self.exclude.is_empty() {
                "none".into()
            } else {
                self.exclude.join(",")
            },
        );
        differ("force", now.force, self.force, "false".into());
        out
    }
}

impl RunRecord {
    /// Still running or interrupted (killed): not ended.
    pub fn in_flight(&self) -> bool {
        self.ended_at.is_none()
    }

    /// `3/12 done, 2 in flight`.
    pub fn progress(&self) -> String {
        let total = self.drain.instances.len();
        let done = self
            .drain
            .instances
            .iter()
            .filter(|r| r.outcome().is_some())
            .count();
        format!("{done}/{total} done, {} in flight", self.drain.in_flight())
    }
}

/// The last run as a report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvacuationSummary {
    pub kind: Kind,
    /// `running`, `interrupted`, `ended` or `aborted`.
    pub state: String,
    pub task: Option<String>,
    /// ISO 8601.
    pub started_at: String,
    pub ended_at: Option<String>,
    pub aborted: bool,
    /// `3/12 done, 2 in flight`.
    pub progress: String,
    pub instances: usize,
    /// Instances per outcome (`migrated`, `in_flight`, `not_started`, …).
    pub counts: BTreeMap<String, usize>,
}

/// The last run in the journal and whether its process is alive.
pub struct LastRun {
    pub record: RunRecord,
    pub running: bool,
}

impl LastRun {
    /// `running`, `interrupted` or `ended`/`aborted`.
    pub fn state(&self) -> &'static str {
        if self.record.in_flight() {
            if self.running {
                "running"
            } else {
                "interrupted"
            }
        } else if self.record.aborted {
            "aborted"
        } else {
            "ended"
        }
    }

    /// The journal summary as the status and abort reports carry it.
    pub fn summary(&self) -> EvacuationSummary {
        let r = &self.record;
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for i in &r.drain.instances {
            let k = match i.outcome() {
                Some(Outcome::Migrated) => "migrated",
                Some(Outcome::ColdMigrated) => "cold_migrated",
                Some(Outcome::Failed) => "failed",
                Some(Outcome::Aborted) => "aborted",
                Some(Outcome::Pending) => "pending",
                Some(Outcome::Skipped) => "skipped",
                None if i.in_flight() => "in_flight",
                None => "not_started",
            };
            *counts.entry(k.to_string()).or_default() += 1;
        }
        EvacuationSummary {
            kind: r.kind,
            state: self.state().to_string(),
            task: r.task.clone(),
            started_at: iso(r.started_at),
            ended_at: r.ended_at.map(iso),
            aborted: r.aborted,
            progress: r.progress(),
            instances: r.drain.instances.len(),
            counts,
        }
    }

    /// `evacuate started 2026-…: 3/12 done, 2 in flight (running)`.
    pub fn line(&self) -> String {
        let r = &self.record;
        let end = match r.ended_at {
            Some(t) => format!(", ended {}", iso(t)),
            None => String::new(),
        };
        format!(
            "{} started {}: {}{end} ({})",
            r.kind.as_str(),
            iso(r.started_at),
            r.progress(),
            self.state()
        )
    }
}

/// Loads the journal of `state_dir` (`None` when there is none).
pub fn last_run(state_dir: &Path) -> Result<Option<LastRun>, String> {
    let journal = Journal::in_dir(state_dir);
    match journal.load::<RunRecord>() {
        Ok(Some(record)) => Ok(Some(LastRun {
            running: record.in_flight() && drain_running(state_dir),
            record,
        })),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// A journal this project wrote: an evacuation of four instances by the
    /// production orchestrator (`bench scale 4`), version 1.
    const V1_ENDED: &str = include_str!("testdata/journal-v1-evacuate-ended.json");

    fn load(doc: &str) -> Result<Option<RunRecord>, super::super::JournalError> {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::in_dir(dir.path());
        std::fs::write(j.path(), doc).unwrap();
        j.load::<RunRecord>()
    }

    #[test]
    fn a_v1_journal_loads_with_its_block_migration_typed() {
        let rec = load(V1_ENDED).unwrap().unwrap();
        assert_eq!(rec.kind, Kind::Evacuate);
        assert_eq!(rec.block_migration, BlockMigration::Auto);
        // v1 → v2: an ended v1 run counts as reported.
        assert_eq!(rec.reported_at, rec.ended_at);
        assert!(rec.params.is_none());
        assert_eq!(rec.drain.instances.len(), 4);
        assert!(!rec.in_flight());
        assert_eq!(rec.progress(), "4/4 done, 0 in flight");
        for (word, typed) in [
            ("true", BlockMigration::True),
            ("false", BlockMigration::False),
        ] {
            let doc = V1_ENDED.replace(
                "\"block_migration\":\"auto\"",
                &format!("\"block_migration\":\"{word}\""),
            );
            assert_ne!(doc, V1_ENDED);
            assert_eq!(load(&doc).unwrap().unwrap().block_migration, typed);
        }
        let doc = V1_ENDED.replace(
            "\"block_migration\":\"auto\"",
            "\"block_migration\":\"yes\"",
        );
        let e = load(&doc).unwrap_err().to_string();
        assert!(e.contains("move it aside"), "{e}");
    }

    #[test]
    fn what_this_binary_writes_is_v2_and_reads_back_the_same() {
        let mut rec = load(V1_ENDED).unwrap().unwrap();
        rec.block_migration = BlockMigration::True;
        rec.reported_at = Some(1_796_141_690_000);
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::in_dir(dir.path());
        j.store(&rec).unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(j.path()).unwrap()).unwrap();
        assert_eq!(v["version"], 2);
        assert_eq!(v["state"]["block_migration"], "true");
        assert_eq!(v["state"]["reported_at"], 1_796_141_690_000u64);
        let back: RunRecord = j.load().unwrap().unwrap();
        assert_eq!(back.reported_at, rec.reported_at);
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&rec).unwrap()
        );
        // The v1 document's own fields keep their strings.
        let orig: Value = serde_json::from_str(V1_ENDED).unwrap();
        for k in [
            "kind",
            "host",
            "unit",
            "task",
            "started_at",
            "ended_at",
            "plan",
        ] {
            assert_eq!(v["state"][k], orig["state"][k], "{k}");
        }
    }

    #[test]
    fn v1_destination_markers_become_typed() {
        let mut doc: Value = serde_json::from_str(V1_ENDED).unwrap();
        doc["state"]["plan"]["entries"][1]["destination"] = Value::from("node7.maas");
        doc["state"]["plan"]["entries"][2]["destination"] = Value::from("none");
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::in_dir(dir.path());
        std::fs::write(j.path(), doc.to_string()).unwrap();
        let rec: RunRecord = j.load().unwrap().unwrap();
        use crate::plan::Destination;
        assert_eq!(
            rec.plan.entries[0].destination,
            Some(Destination::Scheduler)
        );
        assert_eq!(
            rec.plan.entries[1].destination,
            Some(Destination::Host("node7.maas".into()))
        );
        assert_eq!(rec.plan.entries[2].destination, None);
    }

    #[test]
    fn v1_abort_sent_becomes_an_abort_reason() {
        let mut doc: Value = serde_json::from_str(V1_ENDED).unwrap();
        doc["state"]["drain"]["instances"][0]["track"]["abort_sent"] = Value::Bool(true);
        doc["state"]["ended_at"] = Value::Null;
        let out = v1_to_v2(doc["state"].clone()).unwrap();
        let t = &out["drain"]["instances"][0]["track"];
        assert!(t.get("abort_sent").is_none());
        assert!(
            t["abort_reason"]
                .as_str()
                .unwrap()
                .contains("before the charm was upgraded")
        );
        assert!(
            out.get("reported_at").is_none_or(Value::is_null),
            "in flight: not reported"
        );
    }
}
