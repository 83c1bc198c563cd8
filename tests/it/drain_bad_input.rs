//! Bad input to `evacuate` / `migrate-vm`, through the Juju harness: each
//! case ends in an `action-fail` whose message says what is wrong and what
//! to do, with `summary` and `report` set, exit 0, and nothing changed (the
//! service, every instance, no migration record, no journal).
//!
//! The first table needs no cloud (it runs everywhere); the second runs
//! against the local cloud and is skipped (one line) without it.
//!
//! Not covered: a `target-host` that is *down*. The local cloud has two
//! computes, both processes on this machine; making node4 report down means
//! stopping it for `service_down_time` (60 s) and more, which would break the
//! cloud for every other test sharing it. The check itself is unit-tested in
//! `plan::preflight`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::cloud::{CloudEnv, DEST, SOURCE, wait_until};
use crate::drain_cloud::{
    Node, Placement, Timed, boot, cloud_bag, migration_records, report, service, set_service,
    where_are,
};
use crate::juju::keystone_bag;

/// The password of the "wrong password" case (listed in tests/secrets.txt).
pub(crate) const WRONG_PASSWORD: &str = "not-the-password";

/// What a case expects of the failure message (every needle must appear).
struct Case {
    name: &'static str,
    action: &'static str,
    params: Vec<String>,
    /// The node as the case wants it.
    node: Node,
    needles: Vec<String>,
}

/// Runs a case; checks the failure and the outputs; returns the message.
fn check(mut c: Case) -> String {
    let params: Vec<&str> = c.params.iter().map(String::as_str).collect();
    let st = c.node.run(c.action, &params);
    let msg = st
        .action_failed
        .clone()
        .unwrap_or_else(|| panic!("{}: not refused; log {:#?}", c.name, st.action_log));
    for n in &c.needles {
        assert!(msg.contains(n.as_str()), "{}: {n:?} not in {msg:?}", c.name);
    }
    assert_eq!(st.exit_code, Some(0), "{}: {}", c.name, st.stderr);
    assert!(
        st.action_results.contains_key("summary"),
        "{}: no summary",
        c.name
    );
    let rep = report(&st);
    assert_eq!(rep["action"], c.action, "{}", c.name);
    assert!(
        c.node.journal().is_none(),
        "{}: a refused action wrote a journal",
        c.name
    );
    eprintln!("{:<34} → {msg}", c.name);
    msg
}

fn offline(bag: Option<BTreeMap<String, String>>) -> Node {
    Node::with_relation(bag)
}

/// A complete bag for a Keystone that nothing listens to.
fn closed_port_bag() -> BTreeMap<String, String> {
    keystone_bag("127.0.0.1", "9")
}

#[test]
fn bad_input_without_a_cloud_is_refused_clearly() {
    let mut incomplete = closed_port_bag();
    incomplete.remove("credentials_password");
    let cases = vec![
        Case {
            name: "no identity-credentials relation",
            action: "evacuate",
            params: vec![],
            node: offline(None),
            needles: vec![
                "needs the identity-credentials relation".into(),
                "juju integrate nova-live-migration:identity-credentials keystone:identity-credentials"
                    .into(),
            ],
        },
        Case {
            name: "incomplete relation",
            action: "migrate-vm",
            params: vec!["vm=x".into()],
            node: offline(Some(incomplete)),
            needles: vec![
                "waiting for keystone to publish credentials".into(),
                "credentials_password".into(),
            ],
        },
        Case {
            name: "keystone unreachable",
            action: "evacuate",
            params: vec![],
            node: offline(Some(closed_port_bag())),
            needles: vec![
                "cannot connect to OpenStack via http://127.0.0.1:9".into(),
                "check that Keystone and Nova are reachable from this machine".into(),
                "nothing was changed".into(),
            ],
        },
        Case {
            name: "invalid config",
            action: "evacuate",
            params: vec![],
            node: offline(Some(closed_port_bag()))
                .config("timeout-action", json!("explode")),
            needles: vec![
                "cannot run evacuate".into(),
                "timeout-action".into(),
                "juju config nova-live-migration".into(),
            ],
        },
        Case {
            name: "migrate-vm with an empty vm",
            action: "migrate-vm",
            params: vec!["vm=".into()],
            node: offline(Some(closed_port_bag())),
            needles: vec![
                "migrate-vm needs vm=<name or UUID>".into(),
                "nothing was changed".into(),
            ],
        },
        Case {
            name: "max-concurrent above the limit",
            action: "evacuate",
            params: vec!["max-concurrent=500".into()],
            node: offline(Some(closed_port_bag())),
            needles: vec![
                "max-concurrent must be a whole number from 1 to 64, got 500".into(),
                "nothing was changed".into(),
            ],
        },
        Case {
            name: "exclude with only commas",
            action: "evacuate",
            params: vec!["exclude=, ,".into()],
            node: offline(Some(closed_port_bag())),
            needles: vec![
                "names no instance".into(),
                "give comma-separated names or ids, or leave it out".into(),
            ],
        },
    ];
    for c in cases {
        check(c);
    }
}

/// Node, service and instances as they were, no migration record.
struct Snapshot {
    service: (Value, Value),
    servers: Vec<(String, String, Value)>,
}

async fn snapshot(cloud: &CloudEnv, ids: &[String]) -> Snapshot {
    let s = service(cloud, SOURCE).await;
    Snapshot {
        service: (s["status"].clone(), s["disabled_reason"].clone()),
        servers: where_are(cloud, ids).await,
    }
}

async fn assert_unchanged(cloud: &CloudEnv, ids: &[String], before: &Snapshot, name: &str) {
    let now = snapshot(cloud, ids).await;
    assert_eq!(now.service, before.service, "{name}: the service changed");
    assert_eq!(now.servers, before.servers, "{name}: an instance changed");
    for id in ids {
        let lm = migration_records(cloud, id, "live-migration").await;
        let cm = migration_records(cloud, id, "migration").await;
        assert!(lm.is_empty() && cm.is_empty(), "{name}: {id} migrated");
    }
}

#[tokio::test]
async fn bad_input_on_the_cloud_is_refused_and_changes_nothing() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let cloud = &cloud;
    let _lock = cloud.lock();
    let _t = Timed::start("bad_input_on_the_cloud_is_refused_and_changes_nothing");
    cloud.reset().await;
    let ids = boot(
        cloud,
        &[("twin", &[]), ("twin", &[]), ("solo", &[]), ("off", &[])],
    )
    .await;
    crate::drain_cloud::stop(cloud, &ids[3]).await;
    let elsewhere = cloud.boot_on(DEST, &["elsewhere"], &[]).await.remove(0);
    let mut all = ids.clone();
    all.push(elsewhere.clone());
    let before = snapshot(cloud, &all).await;
    let mut wrong_password = cloud_bag(cloud);
    wrong_password.insert("credentials_password".into(), WRONG_PASSWORD.into());
    let fresh = || Node::new(cloud);
    let inactive = |unit: &str| {
        let mut n = fresh();
        n.sim
            .state
            .systemd
            .insert(unit.to_string(), "inactive".into());
        n
    };
    let mut wrong = Node::with_relation(Some(wrong_password));
    wrong.password = WRONG_PASSWORD.into();

    let cases = vec![
        Case {
            name: "unknown vm",
            action: "migrate-vm",
            params: vec!["vm=no-such-vm".into()],
            node: fresh(),
            needles: vec![
                "pre-flight failed, nothing was changed".into(),
                format!("no instance named or with id no-such-vm on {SOURCE}"),
                format!("openstack server list --all-projects --host {SOURCE}"),
            ],
        },
        Case {
            name: "ambiguous name",
            action: "migrate-vm",
            params: vec!["vm=twin".into()],
            node: fresh(),
            needles: vec![
                format!("the name twin is ambiguous on {SOURCE}"),
                ids[0].clone(),
                ids[1].clone(),
                "pass the id instead".into(),
            ],
        },
        Case {
            name: "instance on another host",
            action: "migrate-vm",
            params: vec![format!("vm={elsewhere}")],
            node: fresh(),
            needles: vec![format!(
                "no instance named or with id {elsewhere} on {SOURCE}"
            )],
        },
        Case {
            name: "target-host is this host",
            action: "migrate-vm",
            params: vec!["vm=solo".into(), format!("target-host={SOURCE}")],
            node: fresh(),
            needles: vec![format!(
                "target-host {SOURCE} is this node; name another compute host or leave target-host empty"
            )],
        },
        Case {
            name: "target-host unknown",
            action: "evacuate",
            params: vec!["target-host=node9.maas".into()],
            node: fresh(),
            needles: vec![
                "target-host node9.maas is not a known compute host".into(),
                "openstack compute service list --service nova-compute".into(),
            ],
        },
        Case {
            name: "migrate-vm of a stopped vm",
            action: "migrate-vm",
            // Quoted: juju run reads a bare vm=off as the YAML boolean
            // false, which the controller refuses (or use --string-args).
            params: vec!["vm='off'".into()],
            node: fresh(),
            needles: vec![
                "pre-flight failed, nothing was changed".into(),
                format!(
                    "off ({}) cannot be moved: stopped (SHUTOFF): not live-migratable",
                    ids[3]
                ),
                format!("openstack server migrate {}", ids[3]),
            ],
        },
        Case {
            name: "wrong password",
            action: "evacuate",
            params: vec![],
            node: wrong,
            needles: vec![
                "cannot connect to OpenStack".into(),
                "check the identity-credentials relation with keystone".into(),
                "nothing was changed".into(),
            ],
        },
        Case {
            name: "nova-host unknown to Nova",
            action: "evacuate",
            params: vec![],
            node: fresh().config("nova-host", json!("node9.maas")),
            needles: vec![
                "no nova-compute service is registered for host node9.maas".into(),
                "check the nova-host config option".into(),
            ],
        },
        Case {
            name: "local nova-compute inactive",
            action: "evacuate",
            params: vec![],
            node: inactive("nova-compute"),
            needles: vec![
                "local service nova-compute is not active".into(),
                "systemctl start nova-compute".into(),
            ],
        },
        Case {
            name: "local libvirtd inactive",
            action: "migrate-vm",
            params: vec!["vm=solo".into()],
            node: inactive("libvirtd"),
            needles: vec![
                "local service libvirtd is not active".into(),
                "systemctl start libvirtd".into(),
            ],
        },
        Case {
            name: "exclude names no instance here",
            action: "evacuate",
            params: vec!["exclude=solo,sol0".into()],
            node: fresh(),
            needles: vec![
                format!("exclude names sol0 that is not on {SOURCE}"),
                "check the names or ids".into(),
            ],
        },
    ];
    for c in cases {
        let name = c.name;
        check(c);
        assert_unchanged(cloud, &all, &before, name).await;
    }

    // target-host disabled (even with force: it cannot be overridden).
    set_service(cloud, DEST, false).await;
    for force in ["force=false", "force=true"] {
        let msg = check(Case {
            name: "target-host disabled",
            action: "migrate-vm",
            params: vec![
                "vm=solo".into(),
                format!("target-host={DEST}"),
                force.into(),
            ],
            node: fresh(),
            needles: vec![format!(
                "target-host {DEST} is disabled; enable it (`openstack compute service set --enable {DEST} nova-compute`) or choose another"
            )],
        });
        assert!(msg.starts_with("pre-flight failed, nothing was changed"));
    }
    set_service(cloud, DEST, true).await;
    assert_unchanged(cloud, &all, &before, "target-host disabled").await;

    // Capacity shortfall from Placement (node4 keeps 32 MB).
    let placement = Placement::connect(cloud).await;
    placement.hog_memory(DEST, 32).await;
    let msg = check(Case {
        name: "capacity shortfall",
        action: "migrate-vm",
        params: vec!["vm=solo".into()],
        node: fresh(),
        needles: vec![
            "not enough capacity on the other enabled, up compute hosts for 1 instance(s)".into(),
            "MEMORY_MB short by 32".into(),
            "free capacity, exclude instances, or run with force=true".into(),
        ],
    });
    placement.release().await;
    assert!(msg.contains(&ids[2]));
    assert_unchanged(cloud, &all, &before, "capacity shortfall").await;

    // migrate-vm while an evacuation is in flight (killed mid-migration of
    // a migration that stalls until aborted).
    cloud.reset().await;
    let stuck = boot(
        cloud,
        &[("stuck", &[("nlm_stall_at", "30")]), ("other", &[])],
    )
    .await;
    let mut node = fresh();
    let run = node.start("evacuate", &["max-concurrent=1"]);
    let s0 = &stuck[0];
    wait_until(
        || async move { cloud.running_migration(s0).await.map(|_| ()) },
        std::time::Duration::from_secs(60),
    )
    .await;
    node.kill(run);
    let before = snapshot(cloud, &stuck).await;
    let journal = node.journal().expect("the killed evacuation's journal");
    let st = node.run("migrate-vm", &["vm=stuck"]);
    let msg = st.action_failed.clone().expect("refused");
    assert!(msg.starts_with("the evacuate started at "), "{msg}");
    assert!(msg.contains("is still in flight ("), "{msg}");
    assert!(
        msg.ends_with("1 in flight); run evacuate to resume it, or abort to end it"),
        "{msg}"
    );
    assert_eq!(node.journal(), Some(journal), "the journal changed");
    let now = snapshot(cloud, &stuck).await;
    assert_eq!(now.service, before.service);
    assert_eq!(now.servers, before.servers);
    eprintln!("{:<34} → {msg}", "evacuation in flight");
    let _ = std::fs::remove_file(node.journal_path());
    cloud.reset().await;
}
