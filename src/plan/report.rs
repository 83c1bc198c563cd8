//! The report model of SPEC §4 "Results": [`Report`] serialises to the
//! `report` JSON document and [`Report::summary`] is the one-line `summary`;
//! the Juju layer (`actions.rs`) flattens it into action-result keys.
//!
//! One addition to the fixed schema: an instance carries `decisions` (the
//! policy decisions with their numbers, e.g. a stall abort) only when there
//! were any; it is omitted otherwise. The report of a real `evacuate`
//! also carries `verification` (SPEC §6: proof the node is empty, judged by
//! [`super::verify()`]); other reports leave it out.

use serde::{Deserialize, Serialize};

use super::InstanceId;
use super::machine::{Drain, InstanceRecord, Outcome};
use super::migratability::Check;
use super::preflight::{Action, Plan, PlanEntry, ServiceView, Storage};

/// `result` of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResultKind {
    Planned,
    Migrated,
    ColdMigrated,
    Failed,
    Aborted,
    Skipped,
    Pending,
}

impl ResultKind {
    pub const ALL: [ResultKind; 7] = [
        ResultKind::Planned,
        ResultKind::Migrated,
        ResultKind::ColdMigrated,
        ResultKind::Failed,
        ResultKind::Aborted,
        ResultKind::Skipped,
        ResultKind::Pending,
    ];
    /// The hyphenated name (`cold-migrated`).
    pub fn as_str(self) -> &'static str {
        match self {
            ResultKind::Planned => "planned",
            ResultKind::Migrated => "migrated",
            ResultKind::ColdMigrated => "cold-migrated",
            ResultKind::Failed => "failed",
            ResultKind::Aborted => "aborted",
            ResultKind::Skipped => "skipped",
            ResultKind::Pending => "pending",
        }
    }
}

impl From<Outcome> for ResultKind {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Migrated => ResultKind::Migrated,
            Outcome::ColdMigrated => ResultKind::ColdMigrated,
            Outcome::Failed => ResultKind::Failed,
            Outcome::Aborted => ResultKind::Aborted,
            Outcome::Pending => ResultKind::Pending,
            Outcome::Skipped => ResultKind::Skipped,
        }
    }
}

/// `counts` (underscored keys in the JSON document).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub planned: u32,
    pub migrated: u32,
    pub cold_migrated: u32,
    pub failed: u32,
    pub aborted: u32,
    pub skipped: u32,
    pub pending: u32,
}

impl Counts {
    pub fn get(&self, k: ResultKind) -> u32 {
        match k {
            ResultKind::Planned => self.planned,
            ResultKind::Migrated => self.migrated,
            ResultKind::ColdMigrated => self.cold_migrated,
            ResultKind::Failed => self.failed,
            ResultKind::Aborted => self.aborted,
            ResultKind::Skipped => self.skipped,
            ResultKind::Pending => self.pending,
        }
    }
    fn bump(&mut self, k: ResultKind) {
        let c = match k {
            ResultKind::Planned => &mut self.planned,
            ResultKind::Migrated => &mut self.migrated,
            ResultKind::ColdMigrated => &mut self.cold_migrated,
            ResultKind::Failed => &mut self.failed,
            ResultKind::Aborted => &mut self.aborted,
            ResultKind::Skipped => &mut self.skipped,
            ResultKind::Pending => &mut self.pending,
        };
        *c += 1;
    }
    pub fn total(&self) -> u32 {
        ResultKind::ALL.iter().map(|k| self.get(*k)).sum()
    }
}

/// `service`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceReport {
    pub status: String,
    pub disabled_reason: Option<String>,
}

impl From<&ServiceView> for ServiceReport {
    fn from(s: &ServiceView) -> Self {
        ServiceReport {
            status: s.status.clone(),
            disabled_reason: s.disabled_reason.clone(),
        }
    }
}

/// `plan` of one instance (dry-run only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSummary {
    pub storage: Storage,
    pub vcpus: u64,
    pub ram_mb: u64,
    pub disk_gb: u64,
    pub destination: String,
    pub fits: bool,
    /// How it moves: `live`, `cold`, or `stop, cold-migrate, start` (policy
    /// cold on a running instance); absent for an instance that stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// `live (metadata nova-live-migration:policy)`, `skip (config default-policy)`.
    #[serde(default)]
    pub policy: String,
    #[serde(default)]
    pub priority: u8,
    /// The check that decided a skip (`policy`, `state`, `sriov-port`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Check>,
}

/// An instance left by `notify`: who to tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerToContact {
    pub id: InstanceId,
    pub name: String,
    pub project_id: String,
    pub user_id: String,
}

impl PlanSummary {
    /// SPEC's `plan.destination`: the host, `scheduler`, or `none` for an
    /// instance that stays (strings of the report only; the plan is typed).
    fn label(e: &PlanEntry) -> String {
        e.destination
            .as_ref()
            .map_or_else(|| "none".to_string(), |d| d.label().to_string())
    }
}

impl From<&PlanEntry> for PlanSummary {
    fn from(e: &PlanEntry) -> Self {
        PlanSummary {
            storage: e.storage,
            vcpus: e.vcpus,
            ram_mb: e.ram_mb,
            disk_gb: e.disk_gb,
            destination: PlanSummary::label(e),
            fits: e.fits,
            method: e.action.method().map(str::to_string),
            policy: e.policy.describe(),
            priority: e.priority,
            check: e.check,
        }
    }
}

/// One element of `instances`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceReport {
    pub id: InstanceId,
    pub name: String,
    pub result: ResultKind,
    pub source: String,
    pub destination: Option<String>,
    pub block_migration: String,
    pub migration_id: Option<crate::plan::MigrationId>,
    pub attempts: u32,
    pub duration_s: Option<f64>,
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanSummary>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<String>,
}

/// The `report` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub action: String,
    pub host: String,
    pub dry_run: bool,
    pub service: ServiceReport,
    pub instances: Vec<InstanceReport>,
    pub counts: Counts,
    pub duration_s: f64,
    /// Why the action failed (pre-flight failures, …); `null` when none.
    pub error: Option<String>,
    /// The owners of the instances left by policy `notify`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners_to_contact: Vec<OwnerToContact>,
    /// Proof of empty after an evacuation ([`super::verify()`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<super::verify::Verification>,
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn skipped(e: &PlanEntry, source: &str, block_migration: &str, with_plan: bool) -> InstanceReport {
    let reason = match &e.action {
        Action::Skip { reason } => Some(reason.clone()),
        _ => None,
    };
    InstanceReport {
        id: e.id.clone(),
        name: e.name.clone(),
        result: ResultKind::Skipped,
        source: source.to_string(),
        destination: None,
        block_migration: block_migration.to_string(),
        migration_id: None,
        attempts: 0,
        duration_s: None,
        error: reason,
        plan: with_plan.then(|| e.into()),
        decisions: vec![],
    }
}

fn plan_error(plan: &Plan) -> Option<String> {
    let f = plan.stopping_failures();
    (!f.is_empty()).then(|| {
        f.iter()
            .map(|f| f.message.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    })
}

impl Report {
    /// The dry-run report: exactly the plan (moving instances `planned`,
    /// others `skipped` with the reason in `error`); `error` lists the
    /// failures that would stop a real run.
    pub fn from_plan(
        action: &str,
        plan: &Plan,
        service: ServiceReport,
        block_migration: &str,
        duration_s: f64,
    ) -> Report {
        let instances: Vec<InstanceReport> = plan
            .entries
            .iter()
            .map(|e| {
                if e.moves() {
                    InstanceReport {
                        id: e.id.clone(),
                        name: e.name.clone(),
                        result: ResultKind::Planned,
                        source: plan.host.clone(),
                        destination: Some(PlanSummary::label(e)),
                        block_migration: block_migration.to_string(),
                        migration_id: None,
                        attempts: 0,
                        duration_s: None,
                        error: None,
                        plan: Some(e.into()),
                        decisions: vec![],
                    }
                } else {
                    skipped(e, &plan.host, block_migration, true)
                }
            })
            .collect();
        Report::assemble(
            action,
            &plan.host,
            true,
            service,
            instances,
            duration_s,
            plan_error(plan),
        )
        .with_owners(plan)
    }

    /// A real run stopped by pre-flight (nothing changed): moving instances
    /// are `pending`, the others `skipped`; `error` lists what stopped it.
    pub fn blocked(
        action: &str,
        plan: &Plan,
        service: ServiceReport,
        block_migration: &str,
        duration_s: f64,
    ) -> Report {
        let instances = plan
            .entries
            .iter()
            .map(|e| {
                let mut i = skipped(e, &plan.host, block_migration, false);
                if e.moves() {
                    i.result = ResultKind::Pending;
                    i.error = Some("not started: pre-flight failed".into());
                }
                i
            })
            .collect();
        Report::assemble(
            action,
            &plan.host,
            false,
            service,
            instances,
            duration_s,
            plan_error(plan),
        )
        .with_owners(plan)
    }

    /// The report of a run: skipped plan entries plus the drain's outcomes
    /// (instances not yet done are reported `pending`).
    pub fn from_drain(
        action: &str,
        plan: &Plan,
        drain: &Drain,
        service: ServiceReport,
        block_migration: &str,
        duration_s: f64,
        error: Option<String>,
    ) -> Report {
        let mut instances = Vec::new();
        for e in &plan.entries {
            if let Some(r) = drain.get(&e.id) {
                instances.push(Report::instance(r, &drain.source, block_migration));
            } else {
                // A moving entry the drain does not know (should not happen)
                // is reported pending rather than lost.
                let mut s = skipped(e, &plan.host, block_migration, false);
                if e.moves() {
                    s.result = ResultKind::Pending;
                    s.error = Some("not started".into());
                }
                instances.push(s);
            }
        }
        for r in &drain.instances {
            if !plan.entries.iter().any(|e| e.id == r.id) {
                instances.push(Report::instance(r, &drain.source, block_migration));
            }
        }
        Report::assemble(
            action,
            &drain.source,
            false,
            service,
            instances,
            duration_s,
            error,
        )
        .with_owners(plan)
    }

    /// One instance record of the drain.
    pub fn instance(r: &InstanceRecord, source: &str, block_migration: &str) -> InstanceReport {
        let result = r
            .outcome()
            .map(ResultKind::from)
            .unwrap_or(ResultKind::Pending);
        InstanceReport {
            id: r.id.clone(),
            name: r.name.clone(),
            result,
            source: source.to_string(),
            destination: r.destination.clone(),
            block_migration: block_migration.to_string(),
            migration_id: r.migration_id.or_else(|| r.past_migrations.last().copied()),
            attempts: r.attempts,
            duration_s: r.duration_s().map(round1),
            error: match result {
                ResultKind::Migrated | ResultKind::ColdMigrated => None,
                _ => r.error.clone(),
            },
            plan: None,
            decisions: r.decisions.clone(),
        }
    }

    fn assemble(
        action: &str,
        host: &str,
        dry_run: bool,
        service: ServiceReport,
        instances: Vec<InstanceReport>,
        duration_s: f64,
        error: Option<String>,
    ) -> Report {
        let mut counts = Counts::default();
        for i in &instances {
            counts.bump(i.result);
        }
        Report {
            action: action.to_string(),
            host: host.to_string(),
            dry_run,
            service,
            instances,
            counts,
            duration_s: round1(duration_s),
            error,
            owners_to_contact: vec![],
            verification: None,
        }
    }

    /// `owners_to_contact`: the owners of the plan's `notify` instances.
    fn with_owners(mut self, plan: &Plan) -> Report {
        self.owners_to_contact = plan
            .entries
            .iter()
            .filter_map(|e| {
                e.owner
                    .as_ref()
                    .map(|(project_id, user_id)| OwnerToContact {
                        id: e.id.clone(),
                        name: e.name.clone(),
                        project_id: project_id.clone(),
                        user_id: user_id.clone(),
                    })
            })
            .collect();
        self
    }

    /// How the report left each instance, for [`super::verify()`].
    pub fn reported(&self) -> Vec<super::verify::Reported> {
        self.instances
            .iter()
            .map(|i| super::verify::Reported {
                id: i.id.clone(),
                result: i.result.as_str().to_string(),
                left: !matches!(i.result, ResultKind::Migrated | ResultKind::ColdMigrated),
            })
            .collect()
    }

    /// One human line, e.g. `evacuate node1.maas: 10 migrated, 1 failed, 2
    /// skipped in 412.0 s`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = ResultKind::ALL
            .iter()
            .filter(|k| self.counts.get(**k) > 0)
            .map(|k| format!("{} {}", self.counts.get(*k), k.as_str()))
            .collect();
        let body = if parts.is_empty() {
            "no instances".to_string()
        } else {
            parts.join(", ")
        };
        let dry = if self.dry_run { " (dry-run)" } else { "" };
        let mut s = format!(
            "{}{dry} {}: {body} in {:.1} s",
            self.action, self.host, self.duration_s
        );
        if !self.owners_to_contact.is_empty() {
            let owners: Vec<String> = self
                .owners_to_contact
                .iter()
                .map(|o| format!("{} (project {})", o.name, o.project_id))
                .collect();
            s.push_str(&format!("; owners to contact: {}", owners.join(", ")));
        }
        if let Some(v) = &self.verification {
            s.push_str(&format!("; {}", v.line()));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!(" — {e}"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::machine::tests::{entry, sv};
    use crate::plan::machine::{Observation, Policy, StartResult};
    use serde_json::json;

    fn plan() -> Plan {
        let mut skip = entry(
            "s1",
            Action::Skip {
                reason: "excluded".into(),
            },
            512,
        );
        skip.destination = None;
        skip.fits = false;
        Plan {
            host: "node1.maas".into(),
            target_host: None,
            force: false,
            entries: vec![entry("81df1304-aaaa", Action::Live, 2048), skip],
            blocking: vec![],
            overridable: vec![],
            warnings: vec![],
        }
    }

    #[test]
    fn dry_run_report_matches_schema() {
        let r = Report::from_plan(
            "evacuate",
            &plan(),
            ServiceReport {
                status: "enabled".into(),
                disabled_reason: None,
            },
            "auto",
            1.234,
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            json!({
                "action": "evacuate", "host": "node1.maas", "dry_run": true,
                "service": {"status": "enabled", "disabled_reason": null},
                "instances": [
                    {"id": "81df1304-aaaa", "name": "vm-81df1304-aaaa", "result": "planned",
                     "source": "node1.maas", "destination": "scheduler", "block_migration": "auto",
                     "migration_id": null, "attempts": 0, "duration_s": null, "error": null,
                     "plan": {"storage": "local", "vcpus": 1, "ram_mb": 2048, "disk_gb": 1,
                              "destination": "scheduler", "fits": true, "method": "live",
                              "policy": "live (config default-policy)", "priority": 5}},
                    {"id": "s1", "name": "vm-s1", "result": "skipped",
                     "source": "node1.maas", "destination": null, "block_migration": "auto",
                     "migration_id": null, "attempts": 0, "duration_s": null, "error": "excluded",
                     "plan": {"storage": "local", "vcpus": 1, "ram_mb": 512, "disk_gb": 1,
                              "destination": "none", "fits": false,
                              "policy": "live (config default-policy)", "priority": 5}}
                ],
                "counts": {"planned": 1, "migrated": 0, "cold_migrated": 0, "failed": 0,
                           "aborted": 0, "skipped": 1, "pending": 0},
                "duration_s": 1.2,
                "error": null
            })
        );
        assert_eq!(
            r.summary(),
            "evacuate (dry-run) node1.maas: 1 planned, 1 skipped in 1.2 s"
        );
    }

    #[test]
    fn run_report_counts() {
        let p = plan();
        let mut d = Drain::new("node1.maas", &p.entries, Policy::default(), 0);
        d.step(0, &[]);
        d.step(
            1000,
            &[Observation::Started {
                instance: "81df1304-aaaa".into(),
                attempt: 1,
                result: StartResult::Accepted,
            }],
        );
        d.step(
            13_300,
            &[
                Observation::MigrationFound {
                    instance: "81df1304-aaaa".into(),
                    migration_id: crate::plan::MigrationId(29),
                },
                Observation::Server {
                    instance: "81df1304-aaaa".into(),
                    view: sv("node4.maas", "ACTIVE", "active", None),
                },
            ],
        );
        assert!(d.is_done());
        let r = Report::from_drain(
            "evacuate",
            &p,
            &d,
            ServiceReport {
                status: "disabled".into(),
                disabled_reason: Some("nova-live-migration/0 evacuate".into()),
            },
            "auto",
            41.23,
            None,
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["instances"][0]["result"], "migrated");
        assert_eq!(v["instances"][0]["migration_id"], 29);
        assert_eq!(v["instances"][0]["duration_s"], 13.3);
        assert_eq!(v["instances"][0]["destination"], "node4.maas");
        assert_eq!(v["instances"][0]["attempts"], 1);
        assert!(v["instances"][0].get("plan").is_none());
        assert_eq!(v["counts"]["migrated"], 1);
        assert_eq!(v["counts"]["skipped"], 1);
        assert_eq!(v["error"], serde_json::Value::Null);
        assert_eq!(
            r.summary(),
            "evacuate node1.maas: 1 migrated, 1 skipped in 41.2 s"
        );
    }

    #[test]
    fn blocked_plan_reports_error() {
        let mut p = plan();
        p.overridable.push(crate::plan::Failure {
            kind: crate::plan::FailureKind::Capacity,
            message: "not enough capacity".into(),
        });
        let r = Report::from_plan("evacuate", &p, ServiceReport::default(), "auto", 0.0);
        assert_eq!(r.error.as_deref(), Some("not enough capacity"));
        assert!(r.summary().ends_with("— not enough capacity"));
        let b = Report::blocked("evacuate", &p, ServiceReport::default(), "auto", 0.5);
        assert!(!b.dry_run);
        assert_eq!(b.counts.pending, 1);
        assert_eq!(b.counts.skipped, 1);
        assert_eq!(b.error.as_deref(), Some("not enough capacity"));
        assert_eq!(
            b.summary(),
            "evacuate node1.maas: 1 skipped, 1 pending in 0.5 s — not enough capacity"
        );
        // force overrides: nothing stops it.
        p.force = true;
        assert_eq!(
            Report::from_plan("evacuate", &p, ServiceReport::default(), "auto", 0.0).error,
            None
        );
    }
}
