//! Proof of empty: after an evacuation, is the node really empty?
//!
//! The driver observes the node once the drain has ended ([`NodeSeen`]:
//! the servers Nova places on it, the migrations to or from it, the
//! Placement allocations on its providers) and [`verify`] judges it against
//! the report: an instance still there must be one the report lists as left
//! (skipped, failed, aborted, pending); no migration to or from the node may
//! be in progress; every allocation on its providers must belong to an
//! instance still there. Orphans are listed with their consumer ids, never
//! deleted.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::types::MigrationStatus;

/// How the report left one instance: its `result` and whether that leaves
/// it on the node (skipped, failed, aborted, pending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub id: String,
    pub result: String,
    pub left: bool,
}

/// A server Nova places on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenServer {
    pub id: String,
    pub name: String,
    pub status: String,
}

/// A migration record to or from the node (any status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenMigration {
    pub id: i64,
    /// The migration's own uuid (a Placement consumer while it moves).
    pub uuid: Option<String>,
    pub instance_id: String,
    pub status: MigrationStatus,
    pub migration_type: Option<String>,
    pub source: Option<String>,
    pub destination: Option<String>,
}

/// Allocations on the node's providers: provider name → consumer →
/// resource class → amount.
pub type ProviderAllocations = BTreeMap<String, BTreeMap<String, BTreeMap<String, u64>>>;

/// What the driver saw of the node after the drain. A part it could not
/// observe is `Err` with why.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSeen {
    pub servers: Result<Vec<SeenServer>, String>,
    pub migrations: Result<Vec<SeenMigration>, String>,
    pub allocations: Result<ProviderAllocations, String>,
}

/// An instance still on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftInstance {
    pub id: String,
    pub name: String,
    pub status: String,
    /// Its result in the report (`None`: the run did not know it).
    pub result: Option<String>,
    /// The report lists it as left (skipped, failed, aborted, pending).
    pub expected: bool,
}

/// A migration to or from the node still in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationInProgress {
    pub id: i64,
    pub instance_id: String,
    pub status: MigrationStatus,
    pub migration_type: Option<String>,
    pub source: Option<String>,
    pub destination: Option<String>,
}

/// An allocation on the node's provider that belongs to no instance still
/// on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrphanAllocation {
    pub consumer_id: String,
    pub provider: String,
    pub resources: BTreeMap<String, u64>,
    /// What the consumer is, when known (a migration of this node, an
    /// instance the report says moved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Held by a migration Nova has just marked `completed`: Nova deletes
    /// that allocation right after (it saves the status first), so it is
    /// looked at again before being called an orphan.
    #[serde(skip)]
    pub nova_cleans_up: bool,
}

/// The report's `verification`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// Nothing but what the report lists as left, no migration in
    /// progress, no orphan allocation, and everything could be checked.
    pub ok: bool,
    pub instances_left: Vec<LeftInstance>,
    pub migrations_in_progress: Vec<MigrationInProgress>,
    pub orphan_allocations: Vec<OrphanAllocation>,
    /// What could not be observed (the check is then not a proof).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchecked: Vec<String>,
}

/// Judges what was seen against the report's instances.
pub fn verify(host: &str, instances: &[Reported], seen: &NodeSeen) -> Verification {
    let result_of: BTreeMap<&str, &Reported> =
        instances.iter().map(|i| (i.id.as_str(), i)).collect();
    let mut unchecked = Vec::new();
    let servers = match &seen.servers {
        Ok(s) => s.as_slice(),
        Err(e) => {
            unchecked.push(format!("the instances on {host}: {e}"));
            &[]
        }
    };
    let instances_left: Vec<LeftInstance> = servers
        .iter()
        .map(|s| {
            let reported = result_of.get(s.id.as_str());
            LeftInstance {
                id: s.id.clone(),
                name: s.name.clone(),
                status: s.status.clone(),
                result: reported.map(|r| r.result.clone()),
                expected: reported.is_some_and(|r| r.left),
            }
        })
        .collect();
    let migrations = match &seen.migrations {
        Ok(m) => m.as_slice(),
        Err(e) => {
            unchecked.push(format!("the migrations of {host}: {e}"));
            &[]
        }
    };
    let migrations_in_progress: Vec<MigrationInProgress> = migrations
        .iter()
        .filter(|m| m.status.in_progress())
        .map(|m| MigrationInProgress {
            id: m.id,
            instance_id: m.instance_id.clone(),
            status: m.status.clone(),
            migration_type: m.migration_type.clone(),
            source: m.source.clone(),
            destination: m.destination.clone(),
        })
        .collect();
    let here: BTreeSet<&str> = servers.iter().map(|s| s.id.as_str()).collect();
    let mut orphan_allocations = Vec::new();
    match &seen.allocations {
        Ok(by_provider) => {
            for (provider, consumers) in by_provider {
                for (consumer, resources) in consumers {
                    if here.contains(consumer.as_str()) {
                        continue;
                    }
                    let held_by = migrations
                        .iter()
                        .find(|m| m.uuid.as_deref() == Some(consumer.as_str()));
                    orphan_allocations.push(OrphanAllocation {
                        consumer_id: consumer.clone(),
                        provider: provider.clone(),
                        resources: resources.clone(),
                        note: consumer_note(consumer, held_by, &result_of),
                        nova_cleans_up: held_by
                            .is_some_and(|m| m.status == MigrationStatus::Completed),
                    });
                }
            }
        }
        Err(e) => unchecked.push(format!("the Placement allocations of {host}: {e}")),
    }
    let ok = instances_left.iter().all(|i| i.expected)
        && migrations_in_progress.is_empty()
        && orphan_allocations.is_empty()
        && unchecked.is_empty();
    Verification {
        ok,
        instances_left,
        migrations_in_progress,
        orphan_allocations,
        unchecked,
    }
}

fn consumer_note(
    consumer: &str,
    held_by: Option<&SeenMigration>,
    result_of: &BTreeMap<&str, &Reported>,
) -> Option<String> {
    if let Some(m) = held_by {
        return Some(format!(
            "held by migration {} of instance {} ({})",
            m.id,
            m.instance_id,
            m.status.as_str()
        ));
    }
    result_of
        .get(consumer)
        .map(|r| format!("instance of this run, reported {}", r.result))
}

impl Verification {
    /// Some allocation is one Nova is about to delete (held by a migration
    /// it has just completed): the driver looks again, within a bound,
    /// before reporting it.
    pub fn awaits_nova(&self) -> bool {
        self.orphan_allocations.iter().any(|o| o.nova_cleans_up)
    }

    /// The summary's line, e.g. `verified: node empty`.
    pub fn line(&self) -> String {
        let expected = self.instances_left.iter().filter(|i| i.expected).count();
        if self.ok {
            return match expected {
                0 => "verified: node empty".to_string(),
                1 => "verified: only the instance reported left remains".to_string(),
                n => format!("verified: only the {n} instances reported left remain"),
            };
        }
        let mut parts = Vec::new();
        let unexpected: Vec<&LeftInstance> =
            self.instances_left.iter().filter(|i| !i.expected).collect();
        if !unexpected.is_empty() {
            parts.push(format!(
                "{} not reported left ({})",
                plural(unexpected.len(), "instance"),
                short_list(unexpected.iter().map(|i| i.name.as_str()))
            ));
        }
        if !self.migrations_in_progress.is_empty() {
            parts.push(format!(
                "{} in progress ({})",
                plural(self.migrations_in_progress.len(), "migration"),
                short_list(
                    self.migrations_in_progress
                        .iter()
                        .map(|m| m.id.to_string())
                        .collect::<Vec<_>>()
                        .iter()
                        .map(String::as_str)
                )
            ));
        }
        if !self.orphan_allocations.is_empty() {
            parts.push(format!(
                "{} on its provider (consumer {})",
                plural(self.orphan_allocations.len(), "orphan allocation"),
                short_list(
                    self.orphan_allocations
                        .iter()
                        .map(|o| o.consumer_id.as_str())
                )
            ));
        }
        if !self.unchecked.is_empty() {
            parts.push(format!("not checked: {}", self.unchecked.join("; ")));
        }
        format!("verification failed: {}", parts.join(", "))
    }
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// At most three items, then how many more.
fn short_list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let all: Vec<&str> = items.collect();
    let mut s = all.iter().take(3).copied().collect::<Vec<_>>().join(", ");
    if all.len() > 3 {
        s.push_str(&format!(" and {} more", all.len() - 3));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::plan::ResultKind;

    fn inst(id: &str, result: ResultKind) -> Reported {
        Reported {
            id: id.into(),
            result: result.as_str().into(),
            left: !matches!(result, ResultKind::Migrated | ResultKind::ColdMigrated),
        }
    }

    fn server(id: &str) -> SeenServer {
        SeenServer {
            id: id.into(),
            name: format!("vm-{id}"),
            status: "ACTIVE".into(),
        }
    }

    fn mig(id: i64, instance: &str, status: &str) -> SeenMigration {
        SeenMigration {
            id,
            uuid: Some(format!("mig-{id}")),
            instance_id: instance.into(),
            status: MigrationStatus::parse(status),
            migration_type: Some("live-migration".into()),
            source: Some("node1".into()),
            destination: Some("node4".into()),
        }
    }

    fn alloc(pairs: &[(&str, u64)]) -> Result<ProviderAllocations, String> {
        let consumers = pairs
            .iter()
            .map(|(c, mb)| (c.to_string(), [("MEMORY_MB".to_string(), *mb)].into()))
            .collect();
        Ok([("node1".to_string(), consumers)].into())
    }

    fn seen(
        servers: Vec<SeenServer>,
        migrations: Vec<SeenMigration>,
        a: &[(&str, u64)],
    ) -> NodeSeen {
        NodeSeen {
            servers: Ok(servers),
            migrations: Ok(migrations),
            allocations: alloc(a),
        }
    }

    #[test]
    fn an_emptied_node_verifies() {
        let report = [
            inst("a", ResultKind::Migrated),
            inst("b", ResultKind::Migrated),
        ];
        let v = verify(
            "node1",
            &report,
            &seen(
                vec![],
                vec![mig(1, "a", "completed"), mig(2, "b", "completed")],
                &[],
            ),
        );
        assert!(v.ok, "{v:?}");
        assert_eq!(v.line(), "verified: node empty");
    }

    #[test]
    fn what_the_report_left_may_stay_with_its_allocations() {
        let report = [
            inst("a", ResultKind::Migrated),
            inst("s", ResultKind::Skipped),
            inst("f", ResultKind::Failed),
        ];
        let v = verify(
            "node1",
            &report,
            &seen(
                vec![server("s"), server("f")],
                vec![],
                &[("s", 64), ("f", 64)],
            ),
        );
        assert!(v.ok, "{v:?}");
        assert_eq!(v.instances_left.len(), 2);
        assert!(v.instances_left.iter().all(|i| i.expected));
        assert_eq!(
            v.line(),
            "verified: only the 2 instances reported left remain"
        );
    }

    #[test]
    fn an_instance_not_reported_left_fails_it() {
        // One the report says migrated (it came back), one the run never saw.
        let report = [inst("a", ResultKind::Migrated)];
        let v = verify(
            "node1",
            &report,
            &seen(
                vec![server("a"), server("new")],
                vec![],
                &[("a", 64), ("new", 64)],
            ),
        );
        assert!(!v.ok);
        let unexpected: Vec<(&str, Option<&str>)> = v
            .instances_left
            .iter()
            .filter(|i| !i.expected)
            .map(|i| (i.id.as_str(), i.result.as_deref()))
            .collect();
        assert_eq!(unexpected, [("a", Some("migrated")), ("new", None)]);
        assert!(v.orphan_allocations.is_empty());
        assert_eq!(
            v.line(),
            "verification failed: 2 instances not reported left (vm-a, vm-new)"
        );
    }

    #[test]
    fn a_migration_in_progress_to_or_from_the_node_fails_it() {
        let report = [inst("a", ResultKind::Migrated)];
        let v = verify(
            "node1",
            &report,
            &seen(
                vec![],
                vec![
                    mig(1, "a", "completed"),
                    mig(7, "x", "running"),
                    mig(8, "y", "error"),
                ],
                &[("mig-7", 64)],
            ),
        );
        assert!(!v.ok);
        assert_eq!(v.migrations_in_progress.len(), 1);
        assert_eq!(v.migrations_in_progress[0].id, 7);
        assert_eq!(v.orphan_allocations.len(), 1);
        assert_eq!(
            v.orphan_allocations[0].note.as_deref(),
            Some("held by migration 7 of instance x (running)")
        );
        assert!(!v.awaits_nova(), "a running migration's hold is no cleanup");
        assert_eq!(
            v.line(),
            "verification failed: 1 migration in progress (7), 1 orphan allocation on its provider (consumer mig-7)"
        );
    }

    #[test]
    fn a_just_completed_migrations_hold_is_looked_at_again() {
        // Nova saves `completed` before it deletes the source allocation.
        let report = [inst("a", ResultKind::Migrated)];
        let v = verify(
            "node1",
            &report,
            &seen(vec![], vec![mig(1, "a", "completed")], &[("mig-1", 64)]),
        );
        assert!(!v.ok && v.awaits_nova(), "{v:?}");
        // Still there once Nova has had its time: a real orphan.
        assert_eq!(
            v.line(),
            "verification failed: 1 orphan allocation on its provider (consumer mig-1)"
        );
        let json = serde_json::to_value(&v).unwrap();
        assert!(
            json["orphan_allocations"][0]
                .get("nova_cleans_up")
                .is_none()
        );
    }

    #[test]
    fn allocations_of_no_instance_here_are_orphans_listed_by_consumer() {
        let report = [inst("a", ResultKind::Migrated)];
        let v = verify(
            "node1",
            &report,
            &seen(vec![], vec![], &[("a", 64), ("ghost", 128)]),
        );
        assert!(!v.ok);
        let o: Vec<(&str, Option<&str>)> = v
            .orphan_allocations
            .iter()
            .map(|o| (o.consumer_id.as_str(), o.note.as_deref()))
            .collect();
        assert_eq!(
            o,
            [
                ("a", Some("instance of this run, reported migrated")),
                ("ghost", None)
            ]
        );
        assert_eq!(v.orphan_allocations[1].resources["MEMORY_MB"], 128);
        assert_eq!(v.orphan_allocations[1].provider, "node1");
    }

    #[test]
    fn what_could_not_be_observed_is_no_proof() {
        let v = verify(
            "node1",
            &[],
            &NodeSeen {
                servers: Ok(vec![]),
                migrations: Ok(vec![]),
                allocations: Err("Placement answered 503".into()),
            },
        );
        assert!(!v.ok);
        assert_eq!(
            v.line(),
            "verification failed: not checked: the Placement allocations of node1: Placement answered 503"
        );
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(
            json["unchecked"][0],
            "the Placement allocations of node1: Placement answered 503"
        );
        // The list is left out when empty.
        let ok = verify("node1", &[], &seen(vec![], vec![], &[]));
        assert!(
            serde_json::to_value(&ok)
                .unwrap()
                .get("unchecked")
                .is_none()
        );
    }

    #[test]
    fn long_lists_are_cut_in_the_line() {
        let servers: Vec<SeenServer> = (0..5).map(|i| server(&i.to_string())).collect();
        let v = verify("node1", &[], &seen(servers, vec![], &[]));
        assert_eq!(
            v.line(),
            "verification failed: 5 instances not reported left (vm-0, vm-1, vm-2 and 2 more)"
        );
    }
}
