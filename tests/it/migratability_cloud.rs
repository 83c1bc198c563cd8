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
pub(crate) fn by_name<'a>(rep: &'a Value, name: &str) -> &'a Value {
    rep["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {rep:#}"))
}

/// Instances whose plan is a skip: (name, words of the reason, check).
const SKIPS: [(&str, &str, &str); 12] = [
    (
        "skip-1",
        "policy skip (metadata nova-live-migration:policy): left alone",
        "policy",
    ),
    ("notify-1", "listed under owners_to_contact", "policy"),
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
const MOVES: [&str; 6] = [
    "urgent-1",
    "live-1",
    "default-1",
    "vtpm-host-1",
    "cold-1",
    "cold-off-1",
];

/// What the zoo is: the ids by name, the SR-IOV port, the affinity group.
struct Zoo {
    ids: Vec<(String, String)>,
    port: String,
    group: String,
}

impl Zoo {
    fn id(&self, name: &str) -> String {
        self.ids.iter().find(|(k, _)| k == name).unwrap().1.clone()
    }
}

/// Boots one instance of each kind (ACTIVE), then makes each what it is.
async fn zoo(cloud: &CloudEnv) -> Zoo {
    let group = cloud
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
    let mut ids = Vec::new();
    for (name, flavor, host, meta, in_group) in specs() {
        let g = in_group.then_some(group.as_str());
        ids.push((
            name.to_string(),
            boot(cloud, name, flavor, host, &meta, g).await,
        ));
    }
    for (_, id) in &ids {
        wait_status(cloud, id, "ACTIVE").await;
    }
    // aff-plain after aff-vgpu: the group's host is node1.
    let plain = boot(cloud, "aff-plain", "m1.tiny", SOURCE, &[], Some(&group)).await;
    wait_status(cloud, &plain, "ACTIVE").await;
    ids.push(("aff-plain".into(), plain));
    let mut z = Zoo {
        ids,
        port: String::new(),
        group,
    };
    z.port = make_them_so(cloud, &z).await;
    z
}

/// name, flavor, host, metadata, in the affinity group.
type Spec = (
    &'static str,
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
    bool,
);

fn specs() -> Vec<Spec> {
    let stall = vec![("nlm_stall_at", "30"), ("nlm_migration_seconds", "10")];
    let urgent = vec![
        (PRIORITY, "10"),
        ("nlm_stall_at", "50"),
        ("nlm_migration_seconds", "6"),
    ];
    vec![
        ("urgent-1", "m1.tiny", SOURCE, urgent, false),
        ("live-1", "m1.tiny", SOURCE, vec![(POLICY, "live")], false),
        ("default-1", "m1.tiny", SOURCE, vec![], false),
        ("vtpm-host-1", "nlm.vtpm-host", SOURCE, vec![], false),
        ("skip-1", "m1.tiny", SOURCE, vec![(POLICY, "skip")], false),
        (
            "notify-1",
            "m1.tiny",
            SOURCE,
            vec![(POLICY, "notify")],
            false,
        ),
        ("cold-1", "m1.tiny", SOURCE, vec![(POLICY, "cold")], false),
        (
            "cold-off-1",
            "m1.tiny",
            SOURCE,
            vec![(POLICY, "cold")],
            false,
        ),
        ("sriov-1", "m1.tiny", SOURCE, vec![], false),
        ("vtpm-1", "nlm.vtpm", SOURCE, vec![], false),
        ("vgpu-1", "nlm.vgpu", SOURCE, vec![], false),
        ("pci-1", "nlm.pci", SOURCE, vec![], false),
        ("suspended-1", "m1.tiny", SOURCE, vec![], false),
        ("rescued-1", "m1.tiny", SOURCE, vec![], false),
        ("error-1", "m1.tiny", SOURCE, vec![], false),
        ("resized-1", "m1.tiny", DEST, vec![], false),
        ("busy-1", "m1.tiny", SOURCE, stall.clone(), false),
        ("incoming-1", "m1.tiny", DEST, stall, false),
        ("aff-vgpu", "nlm.vgpu", SOURCE, vec![], true),
    ]
}

/// The port, the states, the migrations of others (in flight, held by the
/// fake driver); returns the port's id.
async fn make_them_so(cloud: &CloudEnv, z: &Zoo) -> String {
    let body = json!({"port": {"device_id": z.id("sriov-1"), "binding:vnic_type": "direct",
        "binding:host_id": SOURCE, "network_id": "physnet-sriov"}});
    let port = cloud
        .neutron(Method::POST, "/v2.0/ports", Some(body), &[201])
        .await["port"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    action(cloud, &z.id("suspended-1"), json!({"suspend": null})).await;
    action(cloud, &z.id("cold-off-1"), json!({"os-stop": null})).await;
    action(cloud, &z.id("rescued-1"), json!({"rescue": null})).await;
    let error = json!({"os-resetState": {"state": "error"}});
    action(cloud, &z.id("error-1"), error).await;
    let to_source = json!({"migrate": {"host": SOURCE}});
    action(cloud, &z.id("resized-1"), to_source).await;
    cloud.live_migrate(&z.id("busy-1"), Some(DEST)).await;
    cloud.live_migrate(&z.id("incoming-1"), Some(SOURCE)).await;
    wait_status(cloud, &z.id("suspended-1"), "SUSPENDED").await;
    wait_status(cloud, &z.id("cold-off-1"), "SHUTOFF").await;
    wait_status(cloud, &z.id("rescued-1"), "RESCUE").await;
    wait_status(cloud, &z.id("resized-1"), "VERIFY_RESIZE").await;
    running(cloud, &z.id("busy-1")).await;
    running(cloud, &z.id("incoming-1")).await;
    port
}

/// The dry-run names every decision with the fact behind it.
fn assert_dry_run(dry: &Value, z: &Zoo) {
    for (name, words, check) in SKIPS {
        let i = by_name(dry, name);
        assert_eq!(i["result"], "skipped", "{name}: {i:#}");
        let e = i["error"].as_str().unwrap_or_default();
        assert!(e.contains(words), "{name}: {e}");
        assert_eq!(i["plan"]["check"], check, "{name}: {i:#}");
    }
    let sriov = by_name(dry, "sriov-1")["error"].as_str().unwrap();
    assert!(sriov.contains(&z.port), "{sriov}");
    assert_eq!(by_name(dry, "aff-vgpu")["plan"]["check"], "vgpu");
    for name in MOVES {
        assert_eq!(by_name(dry, name)["result"], "planned", "{name}");
    }
    for (name, policy) in [
        ("default-1", "live (config default-policy)"),
        ("live-1", "live (metadata nova-live-migration:policy)"),
        ("cold-1", "cold (metadata nova-live-migration:policy)"),
    ] {
        assert_eq!(by_name(dry, name)["plan"]["policy"], policy, "{name}");
    }
    for (name, method) in [
        ("live-1", "live"),
        ("cold-1", "stop, cold-migrate, start"),
        ("cold-off-1", "cold"),
    ] {
        assert_eq!(by_name(dry, name)["plan"]["method"], method, "{name}");
    }
    assert_eq!(by_name(dry, "urgent-1")["plan"]["priority"], 10);
    assert_eq!(dry["instances"][0]["name"], "urgent-1", "priority 10 first");
    let err = dry["error"]
        .as_str()
        .expect("a real run without force stops");
    assert!(err.contains("instance(s) cannot be live-migrated"), "{err}");
    let incoming = format!("coming to {SOURCE}: instance {}", z.id("incoming-1"));
    assert!(err.contains(&incoming), "{err}");
    let owners = dry["owners_to_contact"]
        .as_array()
        .expect("owners_to_contact");
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(owners[0]["name"], "notify-1");
    assert!(!owners[0]["project_id"].as_str().unwrap().is_empty());
}

/// `evacuate force=true`: urgent-1 goes first (queued behind busy-1's
/// migration, which is then aborted) and stalls; while it does, default-1's
/// owner sets skip; then urgent-1 is force-completed. Returns the report.
async fn forced_run(cloud: &CloudEnv, node: &mut Node, z: &Zoo) -> Value {
    let run = node.start("evacuate", &["force=true"]);
    let urgent_id = z.id("urgent-1");
    let queued = wait_until(|| cloud.last_migration(&urgent_id), T).await;
    eprintln!("urgent-1 behind busy-1's migration: {}", queued["status"]);
    let busy = cloud.running_migration(&z.id("busy-1")).await;
    let busy = busy.expect("busy-1 still migrating");
    cloud.abort_migration(&z.id("busy-1"), &busy["id"]).await;
    let urgent = running(cloud, &urgent_id).await;
    let path = format!("/servers/{}/metadata", z.id("default-1"));
    let skip = json!({"metadata": {POLICY: "skip"}});
    cloud.call(Method::POST, &path, Some(skip), &[200]).await;
    cloud.force_complete(&urgent_id, &urgent["id"]).await;
    let st = node.sim.finish(run).expect("state").clone();
    eprintln!("evacuate log:\n  {}", st.action_log.join("\n  "));
    eprintln!("evacuate summary: {:?}", st.action_results.get("summary"));
    report(&st)
}

/// The run did the plan: the planned ones moved (but default-1, whose
/// policy changed), every skipped one stayed with the plan's reason.
async fn assert_run_is_the_plan(cloud: &CloudEnv, dry: &Value, real: &Value, z: &Zoo) {
    for name in ["urgent-1", "live-1", "vtpm-host-1"] {
        let r = by_name(real, name);
        assert_eq!(r["result"], "migrated", "{name}: {r:#}");
        assert_eq!(host_of(&cloud.server(&z.id(name)).await), DEST, "{name}");
    }
    // Policy cold: the running one runs again on its new host, the stopped
    // one stays stopped there.
    for (name, status) in [("cold-1", "ACTIVE"), ("cold-off-1", "SHUTOFF")] {
        let r = by_name(real, name);
        assert_eq!(r["result"], "cold-migrated", "{name}: {r:#}");
        let s = cloud.server(&z.id(name)).await;
        assert_eq!(
            (host_of(&s), s["status"].as_str()),
            (DEST, Some(status)),
            "{name}"
        );
    }
    let d = by_name(real, "default-1");
    assert_eq!(d["result"], "skipped", "{d:#}");
    let e = d["error"].as_str().unwrap();
    let changed = "its policy changed since the plan (nova-live-migration:policy unset → skip)";
    assert!(e.contains(changed), "{e}");
    let server = cloud.server(&z.id("default-1")).await;
    assert_eq!(host_of(&server), SOURCE);
    for (name, _, _) in SKIPS.iter().chain([("aff-vgpu", "", "")].iter()) {
        let (p, r) = (by_name(dry, name), by_name(real, name));
        assert_eq!(r["result"], "skipped", "{name}: {r:#}");
        assert_eq!(r["error"], p["error"], "{name}: skipped as planned");
        let server = cloud.server(&z.id(name)).await;
        assert_eq!(host_of(&server), SOURCE, "{name} stays");
    }
    assert_eq!(real["owners_to_contact"][0]["name"], "notify-1");
}

/// What others' migrations and the stand-in still hold.
async fn clean_up(cloud: &CloudEnv, z: &Zoo) {
    if let Some(m) = cloud.running_migration(&z.id("incoming-1")).await {
        cloud.abort_migration(&z.id("incoming-1"), &m["id"]).await;
    }
    let port = format!("/v2.0/ports/{}", z.port);
    cloud.neutron(Method::DELETE, &port, None, &[204]).await;
    cloud.reset().await;
    let group = format!("/os-server-groups/{}", z.group);
    cloud.call(Method::DELETE, &group, None, &[204]).await;
}

#[tokio::test]
async fn the_dry_run_names_each_decision_and_the_evacuation_does_that_plan() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let _lock = cloud.lock();
    let _t = Timed::start("the_dry_run_names_each_decision_and_the_evacuation_does_that_plan");
    cloud.reset().await;
    let z = zoo(&cloud).await;
    let mut node = Node::new(&cloud)
        .config("max-concurrent-migrations", json!(1))
        .config("stall-timeout", json!(0));

    let st = node.run("evacuate", &["dry-run=true"]);
    let dry = report(&st);
    eprintln!("dry-run summary: {:?}", st.action_results.get("summary"));
    eprintln!("dry-run report: {dry:#}");
    assert_dry_run(&dry, &z);

    // Without force: refused up front, nothing changed.
    let st = node.run("evacuate", &[]);
    let failed = st.action_failed.as_deref().unwrap();
    assert!(
        failed.contains("pre-flight failed, nothing was changed"),
        "{failed}"
    );
    let svc = cloud
        .get(&format!("/os-services?binary=nova-compute&host={SOURCE}"))
        .await;
    assert_eq!(svc["services"][0]["status"], "enabled");

    let real = forced_run(&cloud, &mut node, &z).await;
    assert_run_is_the_plan(&cloud, &dry, &real, &z).await;
    clean_up(&cloud, &z).await;
}

// ------------------------------------------- a Manila share, a vTPM image

const SHARES: &str = "compute 2.97";

/// The status of `share` on server `id` (`GET /servers/{id}/shares`, 2.97).
async fn share_status(cloud: &CloudEnv, id: &str, share: &str) -> Option<String> {
    let path = format!("/servers/{id}/shares");
    let (s, v) = cloud.nova_at(SHARES, Method::GET, &path, None).await;
    assert_eq!(s, 200, "GET {path}: {v}");
    v["shares"]
        .as_array()?
        .iter()
        .find(|m| m["share_id"] == share)
        .and_then(|m| m["status"].as_str().map(String::from))
}

async fn share_becomes(cloud: &CloudEnv, id: &str, share: &str, status: &str) {
    wait_until(
        || async move {
            (share_status(cloud, id, share).await.as_deref() == Some(status)).then_some(())
        },
        T,
    )
    .await;
}

/// A real Nova share mapping on `id` (running afterwards): a share made in
/// the Manila stand-in, attached the way Nova allows it (the server
/// stopped: `POST /servers/{id}/shares`, nova/api/openstack/compute/
/// server_shares.py; the compute grants access through Manila), then the
/// server started (the mapping becomes active). Returns the share id.
async fn attach_share(cloud: &CloudEnv, id: &str) -> String {
    let body = json!({"share": {"name": "nlm-share", "share_proto": "NFS", "size": 1}});
    let made = cloud
        .service("sharev2", Method::POST, "/shares", Some(body), &[201])
        .await;
    let share = made["share"]["id"].as_str().unwrap().to_string();
    action(cloud, id, json!({"os-stop": null})).await;
    wait_status(cloud, id, "SHUTOFF").await;
    let path = format!("/servers/{id}/shares");
    let body = json!({"share": {"share_id": share}});
    let (s, v) = cloud.nova_at(SHARES, Method::POST, &path, Some(body)).await;
    assert_eq!(s, 201, "POST {path}: {v}");
    share_becomes(cloud, id, &share, "inactive").await;
    action(cloud, id, json!({"os-start": null})).await;
    wait_status(cloud, id, "ACTIVE").await;
    share_becomes(cloud, id, &share, "active").await;
    share
}

/// An image in the Glance stand-in with `hw_tpm_version=2.0` (no model:
/// Nova's default, TIS); returns its id.
async fn vtpm_image(cloud: &CloudEnv) -> String {
    let body = json!({"name": "nlm-vtpm-image", "disk_format": "raw", "container_format": "bare",
        "hw_tpm_version": "2.0"});
    let made = cloud
        .service("image", Method::POST, "/v2/images", Some(body), &[201])
        .await;
    made["id"].as_str().unwrap().to_string()
}

/// Boots `name` (m1.tiny) from `image` on the source; returns its id.
async fn boot_from(cloud: &CloudEnv, name: &str, image: &str) -> String {
    let flavor = cloud.flavor_id("m1.tiny").await;
    let body = json!({"server": {"name": name, "imageRef": image, "flavorRef": flavor,
        "networks": "none", "host": SOURCE}});
    let v = cloud
        .call(Method::POST, "/servers", Some(body), &[202])
        .await;
    v["server"]["id"].as_str().unwrap().to_string()
}

/// The `POST /servers/{id}/action` requests nova-api logged for `id`
/// (its request log has one line per request, written before the answer).
fn actions_posted(cloud: &CloudEnv, id: &str) -> usize {
    let log = std::fs::read_to_string(cloud.dir().join("log").join("nova-api.log"))
        .expect("nova-api.log");
    let needle = format!("\"POST /v2.1/servers/{id}/action\"");
    log.lines().filter(|l| l.contains(&needle)).count()
}

#[tokio::test]
async fn a_share_and_a_vtpm_image_are_named_and_the_evacuation_leaves_them_without_a_post() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let _lock = cloud.lock();
    let _t = Timed::start("a_share_and_a_vtpm_image_are_named");
    cloud.reset().await;
    let image = vtpm_image(&cloud).await;
    let img_tpm = boot_from(&cloud, "img-vtpm-1", &image).await;
    let shared = boot(&cloud, "share-1", "m1.tiny", SOURCE, &[], None).await;
    let plain = boot(&cloud, "plain-1", "m1.tiny", SOURCE, &[], None).await;
    for id in [&img_tpm, &shared, &plain] {
        wait_status(&cloud, id, "ACTIVE").await;
    }
    let share = attach_share(&cloud, &shared).await;
    let mut node = Node::new(&cloud);

    let dry = report(&node.run("evacuate", &["dry-run=true"]));
    eprintln!("dry-run report: {dry:#}");
    let s = by_name(&dry, "share-1");
    assert_eq!(s["plan"]["check"], "share", "{s:#}");
    let e = s["error"].as_str().unwrap();
    assert!(
        e.contains(&format!("Manila share(s) {share} attached")),
        "{e}"
    );
    let t = by_name(&dry, "img-vtpm-1");
    assert_eq!(t["plan"]["check"], "vtpm", "{t:#}");
    let e = t["error"].as_str().unwrap();
    let fact = format!(
        "vTPM (image {image} property hw_tpm_version=2.0) with hw:tpm_secret_security=user (unset)"
    );
    assert!(e.contains(&fact), "{e}");
    assert_eq!(by_name(&dry, "plain-1")["result"], "planned");

    let posted = [&shared, &img_tpm].map(|id| actions_posted(&cloud, id));
    let st = node.run("evacuate", &["force=true"]);
    let real = report(&st);
    eprintln!("evacuate log:\n  {}", st.action_log.join("\n  "));
    assert_eq!(by_name(&real, "plain-1")["result"], "migrated");
    assert_eq!(host_of(&cloud.server(&plain).await), DEST);
    for (name, id, before) in [
        ("share-1", &shared, posted[0]),
        ("img-vtpm-1", &img_tpm, posted[1]),
    ] {
        let r = by_name(&real, name);
        assert_eq!(r["result"], "skipped", "{name}: {r:#}");
        assert_eq!(
            r["error"],
            by_name(&dry, name)["error"],
            "{name}: as planned"
        );
        assert_eq!(host_of(&cloud.server(id).await), SOURCE, "{name} stays");
        assert_eq!(
            actions_posted(&cloud, id),
            before,
            "{name}: no live-migrate POST"
        );
    }
    assert_eq!(
        share_status(&cloud, &shared, &share).await.as_deref(),
        Some("active")
    );

    cloud.reset().await;
    let path = format!("/shares/{share}");
    cloud
        .service("sharev2", Method::DELETE, &path, None, &[202])
        .await;
    let path = format!("/v2/images/{image}");
    cloud
        .service("image", Method::DELETE, &path, None, &[204])
        .await;
}
