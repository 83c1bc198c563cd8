//! The journal's body: one evacuation or migrate-vm run, and how the other
//! processes see it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

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
    /// When the action's result was delivered (`action-set` done).
    #[serde(default)]
    pub reported_at: Option<Millis>,
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
        assert_eq!(rec.reported_at, None);
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
    fn what_this_binary_writes_reads_back_as_v1_with_the_same_strings() {
        let mut rec = load(V1_ENDED).unwrap().unwrap();
        rec.block_migration = BlockMigration::True;
        rec.reported_at = Some(1_796_141_690_000);
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::in_dir(dir.path());
        j.store(&rec).unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(j.path()).unwrap()).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["state"]["block_migration"], "true");
        assert_eq!(v["state"]["reported_at"], 1_796_141_690_000u64);
        let back: RunRecord = j.load().unwrap().unwrap();
        assert_eq!(back.reported_at, rec.reported_at);
        // Everything else is as the v1 document had it.
        let orig: Value = serde_json::from_str(V1_ENDED).unwrap();
        let mut now = v["state"].clone();
        now["block_migration"] = orig["state"]["block_migration"].clone();
        now.as_object_mut().unwrap().remove("reported_at");
        assert_eq!(now, orig["state"]);
    }
}
