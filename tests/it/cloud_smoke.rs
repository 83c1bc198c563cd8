//! The local cloud and its fake virt driver behave as the rest of the suite
//! expects (raw HTTP; skipped when the cloud is not up).

use std::time::Duration;

use crate::cloud::{CloudEnv, DEST, SOURCE, host_of, wait_until};

const T: Duration = Duration::from_secs(60);

fn cloud() -> Option<CloudEnv> {
    CloudEnv::detect()
}

#[tokio::test]
async fn relation_data_is_complete() {
    let Some(cloud) = cloud() else { return };
    let rel = cloud.relation_data();
    for key in [
        "auth_host",
        "auth_port",
        "auth_protocol",
        "credentials_host",
        "credentials_port",
        "credentials_protocol",
        "credentials_username",
        "credentials_password",
        "credentials_project",
        "credentials_project_id",
        "api_version",
        "region",
        "domain",
        "credentials_user_domain_name",
        "credentials_user_domain_id",
        "credentials_project_domain_name",
        "credentials_project_domain_id",
        "private-address",
    ] {
        assert!(
            rel.get(key).is_some_and(|v| v.is_string()),
            "relation.json lacks string {key}"
        );
    }
    assert_eq!(rel["credentials_username"], "nova_live_migration");
    assert!(cloud.compute_log(SOURCE).exists());
}

#[tokio::test]
async fn live_migration_reports_progress_and_completes() {
    let Some(cloud) = cloud() else { return };
    let cloud = &cloud;
    let _lock = cloud.lock();
    cloud.reset().await;
    let ids = cloud
        .boot_on(SOURCE, &["it-progress"], &[("nlm_migration_seconds", "3")])
        .await;
    let id = &ids[0];
    cloud.live_migrate(id, None).await;
    let first = wait_until(|| cloud.running_migration(id), T).await;
    assert_eq!(first["memory_total_bytes"], 64 * 1024 * 1024);
    assert_eq!(first["source_compute"], SOURCE);
    assert_eq!(first["dest_compute"], DEST);
    let p0 = first["memory_processed_bytes"].as_u64().unwrap();
    let later = wait_until(
        || async move {
            let m = cloud.running_migration(id).await?;
            (m["memory_processed_bytes"].as_u64()? > p0).then_some(m)
        },
        T,
    )
    .await;
    assert!(
        later["memory_remaining_bytes"].as_u64().unwrap()
            < first["memory_remaining_bytes"].as_u64().unwrap()
    );
    let (server, migration) = cloud.wait_settled(id, T).await;
    assert_eq!(migration["status"], "completed");
    assert_eq!(host_of(&server), DEST);
    assert_eq!(server["status"], "ACTIVE");
}

#[tokio::test]
async fn force_complete_finishes_at_once() {
    let Some(cloud) = cloud() else { return };
    let cloud = &cloud;
    let _lock = cloud.lock();
    cloud.reset().await;
    let ids = cloud
        .boot_on(SOURCE, &["it-force"], &[("nlm_migration_seconds", "120")])
        .await;
    let id = &ids[0];
    cloud.live_migrate(id, None).await;
    let m = wait_until(|| cloud.running_migration(id), T).await;
    cloud.force_complete(id, &m["id"]).await;
    let (server, migration) = cloud.wait_settled(id, Duration::from_secs(20)).await;
    assert_eq!(migration["status"], "completed");
    assert_eq!(host_of(&server), DEST);
}

#[tokio::test]
async fn abort_cancels_and_stays_on_source() {
    let Some(cloud) = cloud() else { return };
    let cloud = &cloud;
    let _lock = cloud.lock();
    cloud.reset().await;
    let ids = cloud
        .boot_on(SOURCE, &["it-abort"], &[("nlm_migration_seconds", "120")])
        .await;
    let id = &ids[0];
    cloud.live_migrate(id, None).await;
    let m = wait_until(|| cloud.running_migration(id), T).await;
    cloud.abort_migration(id, &m["id"]).await;
    let (server, migration) = cloud.wait_settled(id, Duration::from_secs(20)).await;
    assert_eq!(migration["status"], "cancelled");
    assert_eq!(host_of(&server), SOURCE);
    assert_eq!(server["status"], "ACTIVE");
}

#[tokio::test]
async fn failure_modes() {
    let Some(cloud) = cloud() else { return };
    let cloud = &cloud;
    let _lock = cloud.lock();
    cloud.reset().await;
    // (metadata nlm_failure, migration status, server status); all end on the source
    let cases = [
        ("fail", "failed", "ACTIVE"),
        ("error", "error", "ERROR"),
        ("precheck", "error", "ACTIVE"),
    ];
    let mut ids = Vec::new();
    for (mode, _, _) in cases {
        let name = format!("it-{mode}");
        let id = cloud
            .boot_on(
                SOURCE,
                &[name.as_str()],
                &[("nlm_failure", mode), ("nlm_migration_seconds", "1")],
            )
            .await
            .remove(0);
        cloud.live_migrate(&id, None).await;
        ids.push(id);
    }
    for ((mode, want_migration, want_server), id) in cases.iter().zip(&ids) {
        let (server, migration) = cloud.wait_settled(id, T).await;
        assert_eq!(migration["status"], *want_migration, "{mode}: {migration}");
        assert_eq!(server["status"], *want_server, "{mode}");
        assert_eq!(host_of(&server), SOURCE, "{mode}");
    }
}

#[tokio::test]
async fn stall_holds_progress_until_aborted() {
    let Some(cloud) = cloud() else { return };
    let cloud = &cloud;
    let _lock = cloud.lock();
    cloud.reset().await;
    let ids = cloud
        .boot_on(
            SOURCE,
            &["it-stall"],
            &[("nlm_stall_at", "30"), ("nlm_migration_seconds", "1")],
        )
        .await;
    let id = &ids[0];
    cloud.live_migrate(id, None).await;
    let total = 64 * 1024 * 1024u64;
    let stalled = wait_until(
        || async move {
            let m = cloud.running_migration(id).await?;
            (m["memory_remaining_bytes"].as_u64()? <= total * 70 / 100).then_some(m)
        },
        T,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = cloud
        .running_migration(id)
        .await
        .expect("still running while stalled");
    assert_eq!(
        again["memory_remaining_bytes"],
        stalled["memory_remaining_bytes"]
    );
    assert!(again["memory_processed_bytes"].as_u64() >= stalled["memory_processed_bytes"].as_u64());
    assert_eq!(cloud.server(id).await["progress"], 30);
    cloud.abort_migration(id, &again["id"]).await;
    let (server, migration) = cloud.wait_settled(id, Duration::from_secs(20)).await;
    assert_eq!(migration["status"], "cancelled");
    assert_eq!(host_of(&server), SOURCE);
}
