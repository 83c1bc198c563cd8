//! update-status's cost on the local cloud: the Keystone token is kept
//! across hooks (`keystone-token.json`, 0600), so Keystone issues one token
//! for many runs; a refused one is replaced on its first 401; and the
//! status is one Nova call. The figures of docs/BENCHMARKS.md
//! ("update-status cost") are printed by this test
//! (`cargo test --test it status_cost -- --nocapture`).

use std::os::unix::fs::PermissionsExt;

use serde_json::{Value, json};

use crate::cloud::{CloudEnv, SOURCE};
use crate::juju::{Sim, State};

/// The `update-status: N API calls (A authentications, U refused with 401): …`
/// juju-log line of one hook run: (calls, authentications, 401s, routes).
fn cost(st: &State) -> (u64, u64, u64, String) {
    let line = st
        .juju_log
        .iter()
        .map(|l| l.message.as_str())
        .find(|m| m.starts_with("update-status: ") && m.contains(" API calls ("))
        .unwrap_or_else(|| panic!("no cost line in {:#?}", st.juju_log))
        .to_string();
    let num = |after: &str, before: &str| -> u64 {
        line.split_once(after)
            .and_then(|(_, r)| r.split_once(before))
            .and_then(|(n, _)| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{line}"))
    };
    let calls = num("update-status: ", " API calls");
    let auths = num(" API calls (", " authentications");
    let unauthorized = num(" authentications, ", " refused");
    let routes = line
        .split_once("): ")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (calls, auths, unauthorized, routes)
}

fn kept_token(sim: &Sim) -> Value {
    let path = sim.path("state").join("keystone-token.json");
    let mode = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "keystone-token.json mode");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn cloud_update_status_keeps_the_token_and_makes_one_nova_call() {
    let Some(cloud) = CloudEnv::detect() else {
        return;
    };
    let _lock = cloud.lock();
    let rt = crate::cloud::rt();
    rt.block_on(cloud.reset());
    rt.block_on(cloud.boot_on(SOURCE, &["cost-1", "cost-2"], &[]));
    let bag: std::collections::BTreeMap<String, String> = cloud
        .relation_data()
        .into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
        .collect();
    let password = bag["credentials_password"].clone();
    let mut sim = Sim::new()
        .with_keystone(vec![("keystone/0", bag)])
        .config("nova-host", json!(SOURCE))
        .config("log-level", json!("debug"));
    let run = |sim: &mut Sim| {
        let st = sim.run("hooks/update-status", &[]).unwrap().clone();
        assert!(!st.everything().contains(&password), "a secret leaked");
        let last = st.statuses.last().unwrap().clone();
        assert_eq!(
            (last.status.as_str(), last.message.as_str()),
            (
                "active",
                format!("nova-compute/0 on {SOURCE}: enabled, 2 instances").as_str()
            )
        );
        let c = cost(&st);
        eprintln!(
            "update-status: {} calls, {} authentications, {} 401: {}",
            c.0, c.1, c.2, c.3
        );
        (st, c)
    };

    // First run: one token, the version document, one Nova call.
    let (_, first) = run(&mut sim);
    assert_eq!((first.0, first.1, first.2), (3, 1, 0), "{first:?}");
    assert!(
        first.3.contains("GET /os-hypervisors/detail ×1"),
        "{first:?}"
    );
    let kept = kept_token(&sim);
    let token = kept["token"].as_str().unwrap().to_string();
    let text = serde_json::to_string(&kept).unwrap();
    assert!(!text.contains(&password), "the password is never kept");
    assert!(kept["key"].as_str().unwrap().starts_with("fnv1a64:"));

    // Then: no Keystone call, no version discovery, one Nova call.
    for _ in 0..2 {
        let (_, again) = run(&mut sim);
        assert_eq!(again, (1, 0, 0, "GET /os-hypervisors/detail ×1".into()));
        assert_eq!(kept_token(&sim)["token"], token.as_str(), "the same token");
    }

    // Refused: the first call gets 401, one new token, kept in its place.
    // (A revoked token is refused the same way once nova-api's
    // keystonemiddleware cache of its validation (300 s) has lapsed; a token
    // Keystone never issued is refused at once.)
    let path = sim.path("state").join("keystone-token.json");
    let mut doc = kept_token(&sim);
    doc["token"] = json!("gAAAAAB-not-a-token-keystone-issued");
    std::fs::write(&path, doc.to_string()).unwrap();
    let (_, after) = run(&mut sim);
    assert_eq!((after.1, after.2), (1, 1), "{after:?}");
    let renewed = kept_token(&sim)["token"].as_str().unwrap().to_string();
    assert_ne!(renewed, token);
    let (_, again) = run(&mut sim);
    assert_eq!((again.0, again.1), (1, 0), "{again:?}");

    // Other credentials (another user or project): the kept token is not used.
    let mut doc = kept_token(&sim);
    doc["key"] = json!("fnv1a64:0000000000000000");
    std::fs::write(&path, doc.to_string()).unwrap();
    let (_, other) = run(&mut sim);
    assert_eq!((other.0, other.1), (3, 1), "{other:?}");

    // Expired (past half its life): a new one.
    let mut doc = kept_token(&sim);
    doc["obtained_at_ms"] = json!(nlm::time::now_ms() - 1000 * 3600);
    std::fs::write(&path, doc.to_string()).unwrap();
    let (_, old) = run(&mut sim);
    assert_eq!(old.1, 1, "{old:?}");

    // The relation goes: the kept token goes with it.
    sim.state
        .relations
        .retain(|r| r.endpoint != "identity-credentials");
    let st = sim
        .run("hooks/identity-credentials-relation-broken", &[])
        .unwrap()
        .clone();
    assert!(!st.everything().contains(&password));
    assert!(!path.exists(), "discarded with the relation");
    rt.block_on(cloud.reset());
}
