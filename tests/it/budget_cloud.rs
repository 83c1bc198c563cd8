//! The maintenance budget and the redundancy checks on the local cloud with
//! a third compute (`NLM_CLOUD_COMPUTES=3 tests/cloud/cloud up`: node1,
//! node4 and node5): units of the charm on node1 and node5, each the real
//! `dispatch` run by the harness with its own state dir and `nova.conf`.
//! Without node5 these tests skip with one line, and fail under
//! `NLM_REQUIRE_CLOUD=1` (tests/run brings node5 up for them).

use reqwest::Method;
use serde_json::{Value, json};

use crate::cloud::{CloudEnv, DEST, SOURCE, skip_or_fail};
use crate::drain_cloud::{Node, Timed, cloud_bag, report, service, set_service};
use crate::juju::State;

/// The third compute of the local cloud.
pub const THIRD: &str = "node5.maas";

/// The cloud, when it has node5 up (else skipped or failed, see the module).
async fn three_computes() -> Option<CloudEnv> {
    let cloud = CloudEnv::detect()?;
    let s = service(&cloud, THIRD).await;
    if s["host"] == THIRD && s["state"] == "up" {
        return Some(cloud);
    }
    skip_or_fail(
        "the local cloud has no third compute node5.maas up",
        "start it with NLM_CLOUD_COMPUTES=3 tests/cloud/cloud up (tests/cloud/README.md)",
    );
    None
}

/// A unit of the charm beside nova-compute on `host`.
fn unit_on(cloud: &CloudEnv, host: &str) -> Node {
    let node = Node::with_relation(Some(cloud_bag(cloud)))
        .env("NLM_NOVA_COMPUTE_LOG", cloud.compute_log(host).display())
        .config("max-nodes-in-maintenance", json!(1));
    std::fs::write(
        node.sim.path("nova.conf"),
        format!("[DEFAULT]\nhost = {host}\nmax_concurrent_live_migrations = 1\n"),
    )
    .unwrap();
    node
}

fn failure(st: &State) -> Option<&str> {
    st.action_failed.as_deref()
}

/// Back to three enabled computes, no servers, no server groups of ours,
/// no host on maintenance in the Masakari stand-in (when there is one).
async fn clean(cloud: &CloudEnv) {
    cloud.reset().await;
    if let Some(port) = stand_in_port(cloud) {
        clear_maintenance(port).await;
    }
    let v = cloud.get("/os-server-groups?all_projects=True").await;
    for g in v["server_groups"].as_array().into_iter().flatten() {
        if g["name"].as_str().is_some_and(|n| n.starts_with("budget-")) {
            let path = format!("/os-server-groups/{}", g["id"].as_str().unwrap());
            cloud.call(Method::DELETE, &path, None, &[204, 404]).await;
        }
    }
}

#[tokio::test]
async fn two_evacuations_at_once_against_a_budget_of_one() {
    let Some(cloud) = three_computes().await else {
        return;
    };
    let cloud = &cloud;
    let _lock = cloud.lock();
    let _t = Timed::start("two_evacuations_at_once_against_a_budget_of_one");
    clean(cloud).await;
    cloud.boot_on(SOURCE, &["budget-1"], &[]).await;
    cloud.boot_on(THIRD, &["budget-5"], &[]).await;
    let mut a = unit_on(cloud, SOURCE);
    let mut b = unit_on(cloud, THIRD);
    // Both dispatch processes started before either is waited for.
    let ra = a.start("evacuate", &[]);
    let rb = b.start("evacuate", &[]);
    let sa = a.sim.finish(ra).expect("evacuate on node1").clone();
    let sb = b.sim.finish(rb).expect("evacuate on node5").clone();
    a.assert_no_secrets(&sa);
    b.assert_no_secrets(&sb);
    for (h, st) in [(SOURCE, &sa), (THIRD, &sb)] {
        eprintln!(
            "{h}: failure {:?}; summary {:?}\n  {}",
            failure(st),
            st.action_results.get("summary"),
            st.action_log.join("\n  ")
        );
    }
    let refused: Vec<(&str, &State)> = [(SOURCE, &sa), (THIRD, &sb)]
        .into_iter()
        .filter(|(_, st)| failure(st).is_some())
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "exactly one refusal: {:?} / {:?}",
        failure(&sa),
        failure(&sb)
    );
    let (loser, st) = refused[0];
    let winner = if loser == SOURCE { THIRD } else { SOURCE };
    let msg = failure(st).unwrap();
    assert!(
        msg.contains("maintenance budget: max-nodes-in-maintenance=1"),
        "{msg}"
    );
    assert!(msg.contains(winner), "names the node in maintenance: {msg}");
    // Nova: the winner disabled with this charm's reason, the loser enabled.
    let (w, l) = (service(cloud, winner).await, service(cloud, loser).await);
    assert_eq!(w["status"], "disabled", "{w}");
    assert!(
        w["disabled_reason"]
            .as_str()
            .unwrap()
            .contains(" evacuate (task "),
        "{w}"
    );
    assert_eq!(l["status"], "enabled", "{l}");
    assert_eq!(report(st)["service"]["status"], "enabled");
    // The loser's instance stayed; the winner's left.
    let on = |host: &'static str| async move {
        cloud
            .get(&format!("/servers?all_tenants=1&host={host}"))
            .await["servers"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(on(winner).await, 0);
    assert_eq!(on(loser).await, 1);
    clean(cloud).await;
}

#[tokio::test]
async fn a_full_budget_and_lost_redundancy_are_refused_up_front() {
    let Some(cloud) = three_computes().await else {
        return;
    };
    let cloud = &cloud;
    let _lock = cloud.lock();
    let _t = Timed::start("a_full_budget_and_lost_redundancy_are_refused_up_front");
    clean(cloud).await;
    let mut a = unit_on(cloud, SOURCE);
    let st = a.run("evacuate", &[]);
    assert_eq!(failure(&st), None);
    let reason = service(cloud, SOURCE).await["disabled_reason"].clone();

    // 1. The budget is full: refused, nothing changed, node1 listed.
    let mut b = unit_on(cloud, THIRD);
    let st = b.run("evacuate", &[]);
    let msg = failure(&st).expect("refused");
    assert!(
        msg.starts_with("pre-flight failed, nothing was changed"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "max-nodes-in-maintenance=1 and 1 node(s) are already in maintenance: {SOURCE} ({})",
            reason.as_str().unwrap()
        )),
        "{msg}"
    );
    assert_eq!(service(cloud, THIRD).await["status"], "enabled");
    // force does not lift the budget.
    let st = b.run("evacuate", &["force=true"]);
    assert!(failure(&st).is_some_and(|m| m.contains("maintenance budget")));

    // 2. Budget raised: the last two members of a hard anti-affinity group
    // (one on node5, one on node4) and node4 the only host left enabled.
    let mut b = b.config("max-nodes-in-maintenance", json!(2));
    let g = cloud
        .call(
            Method::POST,
            "/os-server-groups",
            Some(json!({"server_group": {"name": "budget-aa", "policy": "anti-affinity"}})),
            &[200],
        )
        .await;
    let gid = g["server_group"]["id"].as_str().unwrap().to_string();
    boot_in_group(cloud, "budget-aa-5", THIRD, &gid).await;
    boot_in_group(cloud, "budget-aa-4", DEST, &gid).await;
    let st = b.run("evacuate", &[]);
    let msg = failure(&st).expect("refused");
    assert!(
        msg.contains("anti-affinity group budget-aa")
            && msg.contains("room for 0: node4.maas (holding 1)"),
        "{msg}"
    );
    assert_eq!(service(cloud, THIRD).await["status"], "enabled");

    // 3. node4 disabled by someone else: the zone would have no enabled compute.
    set_service(cloud, DEST, false).await;
    let st = b.run("evacuate", &["exclude=budget-aa-5"]);
    set_service(cloud, DEST, true).await;
    let msg = failure(&st).expect("refused");
    assert!(
        msg.contains("would leave availability zone nova with no enabled, up compute host"),
        "{msg}"
    );
    assert_eq!(service(cloud, THIRD).await["status"], "enabled");
    clean(cloud).await;
}

async fn boot_in_group(cloud: &CloudEnv, name: &str, host: &str, group: &str) -> String {
    let flavor = cloud.flavor_id("m1.tiny").await;
    let body = json!({"server": {"name": name, "imageRef": crate::cloud::IMAGE_ID,
        "flavorRef": flavor, "networks": "none", "host": host},
        "os:scheduler_hints": {"group": group}});
    let v: Value = cloud
        .call(Method::POST, "/servers", Some(body), &[202])
        .await;
    let id = v["server"]["id"].as_str().unwrap().to_string();
    crate::drain_cloud::wait_status(cloud, &id, "ACTIVE").await;
    id
}

fn stand_in_port(cloud: &CloudEnv) -> Option<u16> {
    std::fs::read_to_string(cloud.dir().join("masakari.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["port"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
}

/// Every host of the stand-in off maintenance.
async fn clear_maintenance(port: u16) {
    let base = format!("http://127.0.0.1:{port}/v1");
    let http = reqwest::Client::new();
    let segs: Value = http
        .get(format!("{base}/segments"))
        .header("X-Auth-Token", "test")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for seg in segs["segments"].as_array().into_iter().flatten() {
        let seg = seg["uuid"].as_str().unwrap();
        let hosts: Value = http
            .get(format!("{base}/segments/{seg}/hosts"))
            .header("X-Auth-Token", "test")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for h in hosts["hosts"].as_array().into_iter().flatten() {
            let url = format!(
                "{base}/segments/{seg}/hosts/{}",
                h["uuid"].as_str().unwrap()
            );
            let r = http
                .put(url)
                .header("X-Auth-Token", "test")
                .json(&json!({"host": {"on_maintenance": false}}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
        }
    }
}

/// The Masakari stand-in's port (`NLM_CLOUD_MASAKARI=1`), else skipped or failed.
fn masakari_port(cloud: &CloudEnv) -> Option<u16> {
    let port = stand_in_port(cloud);
    if port.is_none() {
        skip_or_fail(
            "the local cloud has no Masakari stand-in",
            "start it with NLM_CLOUD_MASAKARI=1 tests/cloud/cloud up (tests/cloud/README.md)",
        );
    }
    port
}

/// `on_maintenance` of `host` in the stand-in's one segment.
async fn on_maintenance(port: u16, host: &str) -> bool {
    let base = format!("http://127.0.0.1:{port}/v1");
    let http = reqwest::Client::new();
    let get = |path: String| {
        let req = http
            .get(format!("{base}{path}"))
            .header("X-Auth-Token", "test");
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let segs = get("/segments".into()).await;
    let seg = segs["segments"][0]["uuid"].as_str().unwrap().to_string();
    let hosts = get(format!("/segments/{seg}/hosts")).await;
    hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == host)
        .unwrap_or_else(|| panic!("{host} not in the segment: {hosts}"))["on_maintenance"]
        .as_bool()
        .unwrap()
}

#[tokio::test]
async fn instance_ha_stands_back_while_draining_and_returns_on_enable() {
    let Some(cloud) = three_computes().await else {
        return;
    };
    let Some(port) = masakari_port(&cloud) else {
        return;
    };
    let cloud = &cloud;
    let _lock = cloud.lock();
    let _t = Timed::start("instance_ha_stands_back_while_draining_and_returns_on_enable");
    clean(cloud).await;
    cloud.boot_on(SOURCE, &["budget-ha"], &[]).await;
    assert!(!on_maintenance(port, SOURCE).await);
    let mut a = unit_on(cloud, SOURCE);
    let st = a.run("evacuate", &[]);
    assert_eq!(failure(&st), None);
    let line = st
        .action_log
        .iter()
        .find(|l| l.starts_with("instance-ha:"))
        .expect("one instance-ha line");
    eprintln!("{line}");
    assert!(
        line.starts_with("instance-ha: on_maintenance set on node1.maas (segment "),
        "{line}"
    );
    // Set before the first migration started.
    let at = |needle: &str| {
        st.action_log
            .iter()
            .position(|l| l.contains(needle))
            .unwrap()
    };
    assert!(at("instance-ha:") < at("starting live migration"));
    assert!(on_maintenance(port, SOURCE).await);
    assert!(!on_maintenance(port, DEST).await);

    let st = a.run("enable", &[]);
    let summary = st
        .action_results
        .get("summary")
        .cloned()
        .unwrap_or_default();
    eprintln!("{summary}");
    assert!(
        summary.contains("instance-ha: on_maintenance cleared on node1.maas (segment "),
        "{summary}"
    );
    assert!(!on_maintenance(port, SOURCE).await);
    assert_eq!(service(cloud, SOURCE).await["status"], "enabled");
    clean(cloud).await;
}
