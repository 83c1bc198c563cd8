//! Proof of empty on the local cloud: every evacuation's report carries
//! `verification`; an instance that lands on the node after the plan and
//! an allocation no instance of the node holds are named, never removed.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::cloud::{CloudEnv, DEST, SOURCE, host_of, rt, wait_until};
use crate::drain_cloud::Node;
use crate::juju::State;

fn report(st: &State) -> Value {
    serde_json::from_str(&st.action_results["report"]).expect("report JSON")
}

#[test]
fn cloud_a_normal_evacuation_verifies_the_node_empty() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let _lock = cloud.lock();
    let rt = rt();
    rt.block_on(cloud.reset());
    rt.block_on(cloud.delete_leaked_allocations(SOURCE));
    let ids = rt.block_on(cloud.boot_on(SOURCE, &["vf-ok1", "vf-ok2"], &[]));
    let mut node = Node::new(&cloud);
    let st = node.run("evacuate", &[]);
    assert_eq!(st.action_failed, None, "{:#?}", st.action_log);
    let rep = report(&st);
    let v = &rep["verification"];
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["instances_left"], json!([]), "{v}");
    assert_eq!(v["migrations_in_progress"], json!([]), "{v}");
    assert_eq!(v["orphan_allocations"], json!([]), "{v}");
    assert_eq!(
        st.action_results["summary"],
        format!(
            "evacuate {SOURCE}: 2 migrated in {:.1} s; verified: node empty",
            rep["duration_s"].as_f64().unwrap()
        )
    );
    assert_eq!(st.action_results["verification.ok"], "true");
    assert_eq!(st.action_results["verification.orphan-allocations"], "0");
    assert!(
        st.action_log.iter().any(|l| l == "verified: node empty"),
        "{:#?}",
        st.action_log
    );
    for id in &ids {
        assert_eq!(host_of(&rt.block_on(cloud.server(id))), DEST);
    }
    // A dry-run proves nothing and carries none.
    rt.block_on(cloud.reset());
    rt.block_on(cloud.boot_on(SOURCE, &["vf-dry"], &[]));
    let st = node.run("evacuate", &["dry-run=true"]);
    assert!(report(&st).get("verification").is_none());
    rt.block_on(cloud.reset());
}

/// Another admin moves an instance onto the node while it drains (a forced
/// live migration: Nova's API refuses a boot on a disabled service, even a
/// forced one, through Placement's COMPUTE_STATUS_DISABLED trait) and something
/// leaves an allocation for a consumer that is no instance: the evacuation
/// moves what it planned, and its verification names both; the allocation
/// is still there afterwards (listed, never deleted).
#[test]
fn cloud_verification_names_an_instance_that_arrived_and_an_orphan_allocation() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let _lock = cloud.lock();
    let rt = rt();
    rt.block_on(cloud.reset());
    rt.block_on(cloud.delete_leaked_allocations(SOURCE));
    // Its migration stalls at 40 % until the test force-completes it: the
    // window in which the others act is held open at any speed.
    let ids = rt.block_on(cloud.boot_on(
        SOURCE,
        &["vf-stall"],
        &[("nlm_migration_seconds", "20"), ("nlm_stall_at", "40")],
    ));
    let intruder = rt
        .block_on(cloud.boot_on(DEST, &["vf-intruder"], &[]))
        .remove(0);
    let mut node = Node::new(&cloud).config("stall-timeout", json!(0));
    let running = node.start("evacuate", &[]);
    let migration = rt.block_on(wait_until(
        || async { cloud.running_migration(&ids[0]).await },
        Duration::from_secs(60),
    ));

    // Another actor: an instance moved onto the node after the plan ...
    rt.block_on(cloud.live_migrate_forced(&intruder, SOURCE));
    // ... and an allocation on its provider for a made-up consumer.
    let ghost = "0badc0de-0000-4000-8000-00000000beef";
    let rp = rt.block_on(cloud.provider_uuid(SOURCE));
    let project = rt.block_on(cloud.server(&intruder))["tenant_id"]
        .as_str()
        .unwrap()
        .to_string();
    let user = rt.block_on(cloud.server(&intruder))["user_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = rt.block_on(cloud.placement(
        Method::PUT,
        &format!("/allocations/{ghost}"),
        Some(
            json!({"allocations": {rp.as_str(): {"resources": {"MEMORY_MB": 16}}},
                    "project_id": project, "user_id": user, "consumer_generation": null}),
        ),
    ));
    assert_eq!(s, 204, "{v}");

    rt.block_on(cloud.force_complete(&ids[0], &migration["id"]));
    let st = node.sim.finish(running).expect("evacuate ran").clone();
    node.assert_no_secrets(&st);
    assert_eq!(st.exit_code, Some(0), "{}", st.stderr);
    let rep = report(&st);
    assert_eq!(rep["counts"]["migrated"], 1, "{rep}");
    let v = &rep["verification"];
    assert_eq!(v["ok"], false, "{v}");
    let left = v["instances_left"].as_array().unwrap();
    assert_eq!(left.len(), 1, "{v}");
    assert_eq!(left[0]["id"], intruder.as_str());
    assert_eq!(left[0]["name"], "vf-intruder");
    assert_eq!(left[0]["expected"], false);
    assert_eq!(left[0]["result"], Value::Null);
    assert_eq!(v["migrations_in_progress"], json!([]), "{v}");
    // The intruder's own allocation is not an orphan; the ghost is.
    let orphans = v["orphan_allocations"].as_array().unwrap();
    assert_eq!(orphans.len(), 1, "{v}");
    assert_eq!(orphans[0]["consumer_id"], ghost);
    assert_eq!(orphans[0]["provider"], SOURCE);
    assert_eq!(orphans[0]["resources"]["MEMORY_MB"], 16);
    let summary = &st.action_results["summary"];
    eprintln!("summary: {summary}");
    assert!(
        summary.ends_with(&format!(
            "; verification failed: 1 instance not reported left (vf-intruder), 1 orphan allocation on its provider (consumer {ghost})"
        )),
        "{summary}"
    );
    assert_eq!(st.action_results["verification.ok"], "false");
    assert_eq!(st.action_results["verification.not-reported-left"], "1");
    assert_eq!(st.action_results["verification.orphan-consumers"], ghost);

    // Listed, never deleted.
    let (s, v) = rt.block_on(cloud.placement(Method::GET, &format!("/allocations/{ghost}"), None));
    assert_eq!(s, 200);
    assert_eq!(
        v["allocations"][rp.as_str()]["resources"]["MEMORY_MB"],
        16,
        "{v}"
    );
    let (s, v) =
        rt.block_on(cloud.placement(Method::DELETE, &format!("/allocations/{ghost}"), None));
    assert_eq!(s, 204, "{v}");
    rt.block_on(cloud.reset());
}
