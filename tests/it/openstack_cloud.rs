//! The OpenStack client against the local cloud (`tests/cloud/cloud up`).
//! Each test skips (one line on stderr) when the cloud is not reachable.

use std::collections::BTreeMap;
use std::future::Future;

use std::path::PathBuf;

use std::time::{Duration, Instant};

use nlm::openstack::{AuthConfig, Compute, Interface, LiveMigrate, Microversion, OpenStack};
use reqwest::Method;
use serde_json::{Value, json};

const SOURCE: &str = "node1.maas";
const DEST: &str = "node4.maas";
const PREFIX: &str = "nlm-client-it-";

// ---------------------------------------------------------------------------
// Detection and serialisation: the suite's shared CloudEnv (tests/it/cloud).

struct Cloud {
    dir: PathBuf,
    os: BTreeMap<String, String>,
    env: crate::cloud::CloudEnv,
}

impl Cloud {
    /// The cloud, or `None` after one stderr line.
    fn detect() -> Option<Cloud> {
        let env = crate::cloud::CloudEnv::detect()?;
        Some(Cloud {
            dir: env.dir().to_path_buf(),
            os: env.os_env().clone(),
            env,
        })
    }

    /// Exclusive use of the cloud (process-wide and across processes).
    async fn lock(&self) -> crate::cloud::CloudLock {
        self.env.lock()
    }

    fn admin_config(&self) -> AuthConfig {
        let mut c = AuthConfig::from_os_vars(&self.os).expect("adminrc maps");
        c.connect_timeout = Duration::from_secs(5);
        c.request_timeout = Duration::from_secs(30);
        c
    }

    fn relation_config(&self) -> AuthConfig {
        let text = std::fs::read_to_string(self.dir.join("relation.json")).expect("relation.json");
        let v: BTreeMap<String, Value> =
            serde_json::from_str(&text).expect("relation.json is JSON");
        let bag: BTreeMap<String, String> = v
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    v.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string()),
                )
            })
            .collect();
        AuthConfig::from_relation(&bag, Interface::Internal, None, None)
            .expect("relation data maps")
    }
}

// ---------------------------------------------------------------------------
// Fixtures (raw HTTP through Compute::raw)

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn image_id(admin: &OpenStack) -> String {
    if let Ok(url) = admin.session().endpoint("image").await
        && let Ok(v) = admin
            .compute()
            .with_endpoint(&url)
            .raw(Method::GET, "/v2/images", None)
            .await
        && let Some(id) = v["images"][0]["id"].as_str()
    {
        return id.to_string();
    }
    "3b6a1c2e-9d4f-4e8a-8c1b-6f0d2a7e5c01".to_string()
}

/// Boots a server pinned to `host` (admin, ≥ 2.74) and waits until ACTIVE.
async fn boot(admin: &OpenStack, name: &str, host: &str, metadata: Value) -> String {
    let c = admin.compute();
    let flavor = c
        .flavors()
        .await
        .unwrap()
        .into_iter()
        .find(|f| f.name == "m1.tiny")
        .expect("flavor m1.tiny");
    let image = image_id(admin).await;
    let v = c
        .raw(
            Method::POST,
            "/servers",
            Some(json!({"server": {"name": format!("{PREFIX}{name}"), "imageRef": image, "flavorRef": flavor.id,
                "networks": "none", "host": host, "metadata": metadata}})),
        )
        .await
        .unwrap();
    let id = v["server"]["id"].as_str().expect("server id").to_string();
    wait_for("server ACTIVE", Duration::from_secs(60), || async {
        let s = c.server(&id).await.unwrap();
        assert_ne!(s.status, "ERROR", "boot failed: {:?}", s.fault);
        (s.status == "ACTIVE" && s.task_state.is_none()).then_some(())
    })
    .await;
    id
}

async fn delete(c: &Compute, id: &str) {
    match c.raw(Method::DELETE, &format!("/servers/{id}"), None).await {
        Ok(_) => {}
        Err(e) if e.is_not_found() => return,
        Err(e) => panic!("delete {id}: {e}"),
    }
    wait_for("server deleted", Duration::from_secs(60), || async {
        match c.server(id).await {
            Err(e) if e.is_not_found() => Some(()),
            Ok(s) if s.status == "DELETED" => Some(()),
            _ => None,
        }
    })
    .await;
}

/// Removes servers left by an earlier failed run and re-enables both hosts.
async fn clean_slate(admin: &OpenStack) {
    let c = admin.compute();
    for host in [SOURCE, DEST] {
        for s in c.servers_on_host(host).await.unwrap() {
            if s.name.starts_with(PREFIX) {
                delete(c, &s.id).await;
            }
        }
        if let Some(svc) = c.compute_service(host).await.unwrap()
            && svc.is_disabled()
            && svc
                .disabled_reason
                .as_deref()
                .is_some_and(|r| r.starts_with(PREFIX))
        {
            c.enable_service(&svc).await.unwrap();
        }
    }
}

struct Env {
    _lock: crate::cloud::CloudLock,
    admin: OpenStack,
    charm: OpenStack,
}

async fn setup() -> Option<Env> {
    let cloud = Cloud::detect()?;
    let lock = cloud.lock().await;
    let admin = OpenStack::connect(cloud.admin_config())
        .await
        .expect("admin connects");
    let charm = OpenStack::connect(cloud.relation_config())
        .await
        .expect("relation user connects");
    clean_slate(&admin).await;
    Some(Env {
        _lock: lock,
        admin,
        charm,
    })
}

/// Starts a live migration off SOURCE and returns the migration id once it is `running`.
async fn start_migration(c: &Compute, id: &str) -> i64 {
    c.live_migrate(id, &LiveMigrate::default()).await.unwrap();
    let mig = wait_for("the migration record", Duration::from_secs(30), || async {
        c.latest_live_migration(id).await.unwrap()
    })
    .await;
    assert_eq!(mig.source_compute.as_deref(), Some(SOURCE));
    wait_for("migration running", Duration::from_secs(30), || async {
        c.server_migrations(id)
            .await
            .unwrap()
            .into_iter()
            .find(|m| m.id == mig.id && m.status == "running")
            .map(|m| m.id)
    })
    .await
}

// ---------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn cloud_relation_auth_and_servers_on_host() {
    let Some(env) = setup().await else { return };
    let c = env.charm.compute();
    assert_eq!(
        c.microversion(),
        c.server_max_microversion()
            .unwrap()
            .min(Microversion::v2(104))
    );
    let token = env.charm.session().token().await.unwrap();
    assert_eq!(token.user.name, "nova_live_migration");
    assert!(token.lifetime > Duration::from_secs(60));

    let id = boot(&env.admin, "list", SOURCE, json!({})).await;
    let before = env.charm.request_stats();
    let servers = c.servers_on_host(SOURCE).await.unwrap();
    assert_eq!(env.charm.request_stats().since(&before).total, 1);
    let s = servers
        .iter()
        .find(|s| s.id == id)
        .expect("booted server listed on node1");
    assert_eq!(s.host.as_deref(), Some(SOURCE));
    assert_eq!(s.flavor.original_name, "m1.tiny");
    assert_eq!(s.flavor.vcpus, 1);
    assert_eq!(s.vm_state.as_deref(), Some("active"));
    assert!(!s.is_volume_backed());
    assert!(
        c.servers_on_host(DEST)
            .await
            .unwrap()
            .iter()
            .all(|s| s.id != id)
    );

    let hv = c.hypervisors(None).await.unwrap();
    let names: Vec<&str> = hv.iter().map(|h| h.hypervisor_hostname.as_str()).collect();
    assert!(
        names.contains(&SOURCE) && names.contains(&DEST),
        "{names:?}"
    );
    c.server_groups().await.unwrap();
    delete(env.admin.compute(), &id).await;
}

#[tokio::test]
async fn cloud_disable_and_enable_with_reason() {
    let Some(env) = setup().await else { return };
    let c = env.charm.compute();
    let svc = c
        .compute_service(SOURCE)
        .await
        .unwrap()
        .expect("node1 service");
    assert!(svc.is_up());
    let reason = format!("{PREFIX}maintenance by nova-live-migration/0");
    let d = c.disable_service(&svc, &reason).await.unwrap();
    assert!(d.is_disabled());
    let listed = c.compute_service(SOURCE).await.unwrap().unwrap();
    assert_eq!(listed.status, "disabled");
    assert_eq!(listed.disabled_reason.as_deref(), Some(reason.as_str()));
    let e = c.enable_service(&listed).await.unwrap();
    assert_eq!(e.status, "enabled");
    assert!(
        !c.compute_service(SOURCE)
            .await
            .unwrap()
            .unwrap()
            .is_disabled()
    );

    // The legacy shape at a forced lower microversion does the same.
    let old = c.with_microversion(Microversion::v2(52));
    let svc = old.compute_service(SOURCE).await.unwrap().unwrap();
    assert!(matches!(svc.id, nlm::openstack::ServiceId::Int(_)));
    old.disable_service(&svc, &reason).await.unwrap();
    assert!(
        c.compute_service(SOURCE)
            .await
            .unwrap()
            .unwrap()
            .is_disabled()
    );
    old.enable_service(&svc).await.unwrap();
    assert!(
        !c.compute_service(SOURCE)
            .await
            .unwrap()
            .unwrap()
            .is_disabled()
    );
}

#[tokio::test]
async fn cloud_live_migrate_found_and_tracked() {
    let Some(env) = setup().await else { return };
    let c = env.charm.compute();
    let id = boot(
        &env.admin,
        "migrate",
        SOURCE,
        json!({"nlm_migration_seconds": "4"}),
    )
    .await;
    env.charm.session().ensure_fresh(0.5).await.unwrap();
    let started = Instant::now();
    let mid = start_migration(c, &id).await;
    let m = wait_for("progress counters", Duration::from_secs(10), || async {
        match c.server_migration(&id, mid).await {
            Ok(m) if m.memory_total_bytes.unwrap_or(0) > 0 => Some(m),
            Ok(_) => None,
            Err(e) if e.is_not_found() => panic!("migration ended before any progress was seen"),
            Err(e) => panic!("{e}"),
        }
    })
    .await;
    assert_eq!(m.server_uuid, id);
    assert!(m.memory_percent().is_some());
    let done = wait_for("migration completed", Duration::from_secs(60), || async {
        let m = c.latest_live_migration(&id).await.unwrap()?;
        matches!(
            m.status.as_str(),
            "completed" | "error" | "failed" | "cancelled"
        )
        .then_some(m)
    })
    .await;
    assert_eq!(done.status, "completed");
    assert_eq!(done.dest_compute.as_deref(), Some(DEST));
    // Finished migrations leave the in-progress view.
    assert!(
        c.server_migration(&id, mid)
            .await
            .unwrap_err()
            .is_not_found()
    );
    let s = wait_for("server settled", Duration::from_secs(20), || async {
        let s = c.server(&id).await.unwrap();
        s.task_state.is_none().then_some(s)
    })
    .await;
    assert_eq!(s.host.as_deref(), Some(DEST));
    eprintln!(
        "live migration took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let actions = c.instance_actions(&id).await.unwrap();
    let lm = actions
        .iter()
        .find(|a| a.action == "live-migration")
        .expect("live-migration action");
    let a = c.instance_action(&id, &lm.request_id).await.unwrap();
    assert!(a.events.iter().any(|e| e.event == "compute_live_migration"));
    assert_eq!(a.fault_summary(), None);
    delete(env.admin.compute(), &id).await;
}

#[tokio::test]
async fn cloud_force_complete() {
    let Some(env) = setup().await else { return };
    let c = env.charm.compute();
    let id = boot(
        &env.admin,
        "force",
        SOURCE,
        json!({"nlm_migration_seconds": "30"}),
    )
    .await;
    let mid = start_migration(c, &id).await;
    let t = Instant::now();
    c.force_complete(&id, mid).await.unwrap();
    let done = wait_for("forced completion", Duration::from_secs(20), || async {
        let m = c.latest_live_migration(&id).await.unwrap()?;
        (m.status != "running" && m.status != "preparing" && m.status != "queued").then_some(m)
    })
    .await;
    assert_eq!(done.status, "completed");
    assert!(t.elapsed() < Duration::from_secs(20));
    let s = wait_for("server settled", Duration::from_secs(20), || async {
        let s = c.server(&id).await.unwrap();
        s.task_state.is_none().then_some(s)
    })
    .await;
    assert_eq!(s.host.as_deref(), Some(DEST));
    delete(env.admin.compute(), &id).await;
}

#[tokio::test]
async fn cloud_abort() {
    let Some(env) = setup().await else { return };
    let c = env.charm.compute();
    assert!(c.can_abort_queued());
    let id = boot(
        &env.admin,
        "abort",
        SOURCE,
        json!({"nlm_migration_seconds": "30"}),
    )
    .await;
    let mid = start_migration(c, &id).await;
    c.abort_migration(&id, mid).await.unwrap();
    let done = wait_for("cancelled", Duration::from_secs(20), || async {
        let m = c.latest_live_migration(&id).await.unwrap()?;
        (m.status != "running" && m.status != "preparing" && m.status != "queued").then_some(m)
    })
    .await;
    assert_eq!(done.status, "cancelled");
    let s = wait_for("server settled", Duration::from_secs(20), || async {
        let s = c.server(&id).await.unwrap();
        s.task_state.is_none().then_some(s)
    })
    .await;
    assert_eq!(s.host.as_deref(), Some(SOURCE));
    assert_eq!(s.status, "ACTIVE");
    // A second abort is refused (nothing in progress).
    let e = c.abort_migration(&id, mid).await.unwrap_err();
    assert!(
        matches!(e.status().map(|s| s.as_u16()), Some(400 | 404 | 409)),
        "{e}"
    );
    delete(env.admin.compute(), &id).await;
}

#[tokio::test]
async fn cloud_placement_capacity_of_node4() {
    let Some(env) = setup().await else { return };
    let c = env.charm.compute();
    let p = env.charm.placement().await.unwrap();
    let hv = c
        .hypervisor_by_name(DEST)
        .await
        .unwrap()
        .expect("node4 hypervisor");
    let rp = p
        .resource_provider_by_name(DEST)
        .await
        .unwrap()
        .expect("node4 provider");
    assert_eq!(rp.uuid, hv.id, "provider uuid == hypervisor id");
    let inv = p.inventories(&rp.uuid).await.unwrap();
    let used = p.usages(&rp.uuid).await.unwrap();
    for rc in ["VCPU", "MEMORY_MB", "DISK_GB"] {
        let k = inv
            .get(rc)
            .unwrap_or_else(|| panic!("{rc} missing: {inv:?}"));
        let free = planner_free(&inv, &used, rc);
        assert!(k.total > k.reserved && free > 0.0, "{rc}: {k:?}");
        assert!(k.min_unit <= 1 && free >= 1.0, "{rc}: {k:?}");
    }
    // A server on node1 shows up in node1's allocations with its flavor.
    let id = boot(&env.admin, "alloc", SOURCE, json!({})).await;
    let rp1 = p
        .resource_provider_by_name(SOURCE)
        .await
        .unwrap()
        .expect("node1 provider");
    let allocs = p.allocations(&rp1.uuid).await.unwrap();
    let mine = allocs.get(&id).expect("allocation of the new server");
    assert_eq!(mine.get("VCPU"), Some(&1));
    assert_eq!(mine.get("MEMORY_MB"), Some(&64));
    let used = p.usages(&rp1.uuid).await.unwrap();
    assert!(used["MEMORY_MB"] >= 64);
    delete(env.admin.compute(), &id).await;
}

/// Free capacity of `rc` by the planner's model (the only one):
/// `(total - reserved) * allocation_ratio - used`.
fn planner_free(
    inv: &std::collections::BTreeMap<String, nlm::openstack::Inventory>,
    used: &std::collections::BTreeMap<String, u64>,
    rc: &str,
) -> f64 {
    let i = &inv[rc];
    let planner = nlm::plan::Inventory {
        total: i.total,
        reserved: i.reserved,
        min_unit: i.min_unit,
        max_unit: i.max_unit,
        step_size: i.step_size,
        allocation_ratio: i.allocation_ratio,
    };
    planner.capacity() - used.get(rc).copied().unwrap_or(0) as f64
}
