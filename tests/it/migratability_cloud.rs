//! Issue 14 on the local cloud: one instance of each kind on node1 (each
//! policy, each migratability blocker, states that cannot move now, a task in
//! progress, a migration coming in, a hard affinity group split by a blocker),
//! booted on real Nova with the flavors, ports and actions that make them so.
//! The dry-run names every decision and the fact behind it; the evacuation
//! (`force=true`) then does exactly that plan, and an owner's policy set
//! between the plan and the instance's turn is heard (a named outcome).

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::cloud::{CloudEnv, DEST, IMAGE_ID, SOURCE, host_of, wait_until};
use crate::drain_cloud::{Node, Timed, report, wait_status};

const T: Duration = Duration::from_secs(90);
const POLICY: &str = "nova-live-migration:policy";
const PRIORITY: &str = "nova-live-migration:priority";

/// Boots `name` with `flavor` on `host` (no wait); returns its id.
async fn boot(
    cloud: &CloudEnv,
    name: &str,
    flavor: &str,
    host: &str,
    meta: &[(&str, &str)],
    group: Option<&str>,
) -> String {
    let flavor = cloud.flavor_id(flavor).await;
    let meta: serde_json::Map<String, Value> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let mut body = json!({"server": {"name": name, "imageRef": IMAGE_ID, "flavorRef": flavor,
        "networks": "none", "host": host, "metadata": meta}});
    if let Some(g) = group {
        body["os:scheduler_hints"] = json!({ "group": g });
    }
    let v = cloud
        .call(Method::POST, "/servers", Some(body), &[202])
        .await;
    v["server"]["id"].as_str().expect("server id").to_string()
}

async fn action(cloud: &CloudEnv, id: &str, body: Value) {
    let path = format!("/servers/{id}/action");
    cloud
        .call(Method::POST, &path, Some(body), &[200, 202])
        .await;
}

async fn running(cloud: &CloudEnv, id: &str) -> Value {
    wait_until(|| async move { cloud.running_migration(id).await }, T).await
}

/// The report's entry named `name`.
fn by_name<'a>(rep: &'a Value, name: &str) -> &'a Value {
    rep["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {rep:#}"))
}

/// Instances whose plan is a skip: (name, words of the reason, check).
const SKIPS: [(&str, &str, &str); 13] = [
    (
        "skip-1",
        "policy skip (metadata nova-live-migration:policy): left alone",
        "policy",
    ),
    ("notify-1", "listed under owners_to_contact", "policy"),
    (
        "cold-1",
        "policy cold (nova-live-migration:policy) asks to stop",
        "policy",
    ),
    (
        "sriov-1",
        "has binding:vnic_type direct (SR-IOV",
        "sriov-port",
    ),
    (
        "vtpm-1",
        "vTPM (flavor extra spec hw:tpm_version=2.0) with hw:tpm_secret_security=user (unset)",
        "vtpm",
    ),
    (
        "vgpu-1",
        "vGPU (flavor extra spec resources:VGPU=1)",
        "vgpu",
    ),
    (
        "pci-1",
        "flavor extra spec pci_passthrough:alias=nlm-pci:1",
        "pci-passthrough",
    ),
    (
        "suspended-1",
        "status SUSPENDED cannot be migrated; resume it",
        "state",
    ),
    ("rescued-1", "vm_state rescued", "state"),
    ("error-1", "vm_state error", "state"),
    ("resized-1", "vm_state resized", "state"),
    ("busy-1", "task_state migrating", "task-state"),
    ("aff-plain", "hard affinity group nlm-aff", "affinity"),
];
/// Instances the plan moves.
const MOVES: [&str; 4] = ["urgent-1", "live-1", "default-1", "vtpm-host-1"];

/// name, flavor, host, metadata, server group.
type Spec<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Vec<(&'a str, &'a str)>,
    Option<&'a str>,
);

/// Boots the zoo; returns (ids by name, the SR-IOV port, the group).
async fn zoo(cloud: &CloudEnv) -> (Vec<(String, String)>, String, String) {
    let g = cloud
        .call(
            Method::POST,
            "/os-server-groups",
            Some(json!({"server_group": {"name": "nlm-aff", "policy": "affinity"}})),
            &[200],
        )
        .await["server_group"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let stall = [("nlm_stall_at", "30"), ("nlm_migration_seconds", "10")];
    let specs: Vec<Spec> = vec![
        (
            "urgent-1",
            "m1.tiny",
            SOURCE,
            vec![
                (PRIORITY, "10"),
                ("nlm_stall_at", "50"),
                ("nlm_migration_seconds", "6"),
            ],
            None,
        ),
        ("live-1", "m1.tiny", SOURCE, vec![(POLICY, "live")], None),
        ("default-1", "m1.tiny", SOURCE, vec![], None),
        ("vtpm-host-1", "nlm.vtpm-host", SOURCE, vec![], None),
        ("skip-1", "m1.tiny", SOURCE, vec![(POLICY, "skip")], None),
        (
            "notify-1",
            "m1.tiny",
            SOURCE,
            vec![(POLICY, "notify")],
            None,
        ),
        ("cold-1", "m1.tiny", SOURCE, vec![(POLICY, "cold")], None),
        ("sriov-1", "m1.tiny", SOURCE, vec![], None),
        ("vtpm-1", "nlm.vtpm", SOURCE, vec![], None),
        ("vgpu-1", "nlm.vgpu", SOURCE, vec![], None),
        ("pci-1", "nlm.pci", SOURCE, vec![], None),
        ("suspended-1", "m1.tiny", SOURCE, vec![], None),
        ("rescued-1", "m1.tiny", SOURCE, vec![], None),
        ("error-1", "m1.tiny", SOURCE, vec![], None),
        ("resized-1", "m1.tiny", DEST, vec![], None),
        ("busy-1", "m1.tiny", SOURCE, stall.to_vec(), None),
        ("incoming-1", "m1.tiny", DEST, stall.to_vec(), None),
        ("aff-vgpu", "nlm.vgpu", SOURCE, vec![], Some(g.as_str())),
    ];
    let mut ids = Vec::new();
    for (name, flavor, host, meta, group) in &specs {
        ids.push((
            name.to_string(),
            boot(cloud, name, flavor, host, meta, *group).await,
        ));
    }
    for (_, id) in &ids {
        wait_status(cloud, id, "ACTIVE").await;
    }
    // aff-plain after aff-vgpu: the group's host is node1.
    let plain = boot(cloud, "aff-plain", "m1.tiny", SOURCE, &[], Some(&g)).await;
    wait_status(cloud, &plain, "ACTIVE").await;
    ids.push(("aff-plain".into(), plain));
    let id = |n: &str| ids.iter().find(|(k, _)| k == n).unwrap().1.clone();
    let port = cloud
        .neutron(
            Method::POST,
            "/v2.0/ports",
            Some(
                json!({"port": {"device_id": id("sriov-1"), "binding:vnic_type": "direct",
                "binding:host_id": SOURCE, "network_id": "physnet-sriov"}}),
            ),
            &[201],
        )
        .await["port"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    action(cloud, &id("suspended-1"), json!({"suspend": null})).await;
    action(cloud, &id("rescued-1"), json!({"rescue": null})).await;
    action(
        cloud,
        &id("error-1"),
        json!({"os-resetState": {"state": "error"}}),
    )
    .await;
    action(
        cloud,
        &id("resized-1"),
        json!({"migrate": {"host": SOURCE}}),
    )
    .await;
    cloud.live_migrate(&id("busy-1"), Some(DEST)).await;
    cloud.live_migrate(&id("incoming-1"), Some(SOURCE)).await;
    wait_status(cloud, &id("suspended-1"), "SUSPENDED").await;
    wait_status(cloud, &id("rescued-1"), "RESCUE").await;
    wait_status(cloud, &id("resized-1"), "VERIFY_RESIZE").await;
    running(cloud, &id("busy-1")).await;
    running(cloud, &id("incoming-1")).await;
    (ids, port, g)
}

#[tokio::test]
async fn the_dry_run_names_each_decision_and_the_evacuation_does_that_plan() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let _lock = cloud.lock();
    let _t = Timed::start("the_dry_run_names_each_decision_and_the_evacuation_does_that_plan");
    cloud.reset().await;
    let (ids, port, group) = zoo(&cloud).await;
    let id = |n: &str| ids.iter().find(|(k, _)| k == n).unwrap().1.clone();
    let mut node = Node::new(&cloud)
        .config("max-concurrent-migrations", json!(1))
        .config("stall-timeout", json!(0));

    // The dry-run: every decision with the fact behind it.
    let st = node.run("evacuate", &["dry-run=true"]);
    let dry = report(&st);
    eprintln!("dry-run summary: {:?}", st.action_results.get("summary"));
    eprintln!("dry-run report: {dry:#}");
    for (name, words, check) in SKIPS {
        let i = by_name(&dry, name);
        assert_eq!(i["result"], "skipped", "{name}: {i:#}");
        let e = i["error"].as_str().unwrap_or_default();
        assert!(e.contains(words), "{name}: {e}");
        assert_eq!(i["plan"]["check"], check, "{name}: {i:#}");
    }
    assert!(
        by_name(&dry, "sriov-1")["error"]
            .as_str()
            .unwrap()
            .contains(&port)
    );
    assert_eq!(by_name(&dry, "aff-vgpu")["plan"]["check"], "vgpu");
    for name in MOVES {
        assert_eq!(by_name(&dry, name)["result"], "planned", "{name}");
    }
    assert_eq!(
        by_name(&dry, "default-1")["plan"]["policy"],
        "live (config default-policy)"
    );
    assert_eq!(
        by_name(&dry, "live-1")["plan"]["policy"],
        "live (metadata nova-live-migration:policy)"
    );
    assert_eq!(
        by_name(&dry, "cold-1")["plan"]["policy"],
        "skip (metadata nova-live-migration:policy=cold, not followed)"
    );
    assert_eq!(by_name(&dry, "urgent-1")["plan"]["priority"], 10);
    assert_eq!(
        dry["instances"][0]["name"], "urgent-1",
        "priority 10 starts first"
    );
    let err = dry["error"]
        .as_str()
        .expect("a real run without force stops");
    assert!(err.contains("instance(s) cannot be live-migrated"), "{err}");
    assert!(
        err.contains(&format!(
            "coming to {SOURCE}: instance {}",
            id("incoming-1")
        )),
        "{err}"
    );
    let owners = dry["owners_to_contact"]
        .as_array()
        .expect("owners_to_contact");
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(owners[0]["name"], "notify-1");
    assert!(!owners[0]["project_id"].as_str().unwrap().is_empty());

    // Without force: refused up front, nothing changed.
    let st = node.run("evacuate", &[]);
    assert!(
        st.action_failed
            .as_deref()
            .unwrap()
            .contains("pre-flight failed, nothing was changed")
    );
    let svc = cloud
        .get(&format!("/os-services?binary=nova-compute&host={SOURCE}"))
        .await;
    assert_eq!(svc["services"][0]["status"], "enabled");

    // With force: exactly the plan. urgent-1 goes first and stalls; while
    // it does, default-1's owner sets skip: heard right before its start.
    let run = node.start("evacuate", &["force=true"]);
    let queued = wait_until(|| async { cloud.last_migration(&id("urgent-1")).await }, T).await;
    eprintln!("urgent-1 behind busy-1's migration: {}", queued["status"]);
    let busy = cloud
        .running_migration(&id("busy-1"))
        .await
        .expect("busy-1 still migrating");
    cloud.abort_migration(&id("busy-1"), &busy["id"]).await;
    let urgent = running(&cloud, &id("urgent-1")).await;
    let path = format!("/servers/{}/metadata", id("default-1"));
    cloud
        .call(
            Method::POST,
            &path,
            Some(json!({"metadata": {POLICY: "skip"}})),
            &[200],
        )
        .await;
    cloud.force_complete(&id("urgent-1"), &urgent["id"]).await;
    let st = node.sim.finish(run).expect("state").clone();
    let real = report(&st);
    eprintln!("evacuate log:\n  {}", st.action_log.join("\n  "));
    eprintln!("evacuate summary: {:?}", st.action_results.get("summary"));
    for name in ["urgent-1", "live-1", "vtpm-host-1"] {
        assert_eq!(
            by_name(&real, name)["result"],
            "migrated",
            "{name}: {real:#}"
        );
        assert_eq!(host_of(&cloud.server(&id(name)).await), DEST, "{name}");
    }
    let d = by_name(&real, "default-1");
    assert_eq!(d["result"], "skipped", "{d:#}");
    let e = d["error"].as_str().unwrap();
    assert!(
        e.contains("its policy changed since the plan (nova-live-migration:policy unset → skip)"),
        "{e}"
    );
    assert_eq!(host_of(&cloud.server(&id("default-1")).await), SOURCE);
    for (name, _, _) in SKIPS.iter().chain([("aff-vgpu", "", "")].iter()) {
        let (p, r) = (by_name(&dry, name), by_name(&real, name));
        assert_eq!(r["result"], "skipped", "{name}: {r:#}");
        assert_eq!(
            r["error"], p["error"],
            "{name}: the run skips it as planned"
        );
        assert_eq!(
            host_of(&cloud.server(&id(name)).await),
            SOURCE,
            "{name} stays"
        );
    }
    assert_eq!(real["owners_to_contact"][0]["name"], "notify-1");

    // Clean up what others' migrations and the stand-in still hold.
    if let Some(m) = cloud.running_migration(&id("incoming-1")).await {
        cloud.abort_migration(&id("incoming-1"), &m["id"]).await;
    }
    cloud
        .neutron(Method::DELETE, &format!("/v2.0/ports/{port}"), None, &[204])
        .await;
    cloud.reset().await;
    cloud
        .call(
            Method::DELETE,
            &format!("/os-server-groups/{group}"),
            None,
            &[204],
        )
        .await;
}
