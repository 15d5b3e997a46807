//! ReplicaInstance with an oci primary, end to end: the operator process, the fake API server, a
//! real primary registry that sends notifications to the operator, and a real replica.

use crate::support;

use std::time::Duration;

use image_replication_operator::api::ReplicaInstance;
use image_replication_operator::api::v1alpha1::ReplicaPhase;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use support::operator::{Operator, eventually, free_port};
use support::registry::{Options, TestRegistry};

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "notify-t0ken";

#[tokio::test(flavor = "multi_thread")]
async fn full_sync_with_filters_then_pushes_and_deletes_arrive_by_notification() {
    let (s, c) = support::cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let op = Operator::start_on(
        port,
        &s.write_kubeconfig(dir.path()),
        dir.path(),
        "op-a",
        &[],
        &[("NOTIFICATION_TOKEN", TOKEN)],
    );

    let primary = TestRegistry::start_with(Options {
        notify: Some((format!("http://127.0.0.1:{port}/notifications"), TOKEN.into())),
        ..Default::default()
    });
    let replica = TestRegistry::start();
    let one = ["--platforms", "linux/amd64"];
    primary.seed("team-a/web", "v1", &one);
    primary.seed("team-a/web", "v2", &["--platforms", "linux/amd64", "--seed", "2"]);
    primary.seed("team-a/web", "latest", &one);
    let (api_digest, _) = primary.seed("team-a/api", "v1", &["--platforms", "linux/amd64", "--seed", "3"]);
    primary.seed("team-b/x", "v1", &one);

    let ri: Api<ReplicaInstance> = Api::namespaced(c.clone(), "default");
    let obj: ReplicaInstance = serde_json::from_value(json!({
        "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ReplicaInstance",
        "metadata": {"name": "gz-to-sh", "namespace": "default"},
        "spec": {
            "primary": {"provider": "oci", "region": "ap-guangzhou", "registry": primary.url()},
            "region": "ap-shanghai",
            "replica": {"registry": replica.url()},
            "sync": {"interval": "1h", "filters": [{"repositories": ["team-a/**"], "tags": ["v*"]}], "deletes": "Propagate"}
        }
    }))
    .unwrap();
    ri.create(&PostParams::default(), &obj).await.unwrap();

    let st = eventually(WAIT, "first full sync InSync", || async {
        let st = ri.get("gz-to-sh").await.ok()?.status?;
        (st.phase == Some(ReplicaPhase::InSync)).then_some(st)
    })
    .await;
    assert_eq!((st.repositories, st.artifacts, st.failed), (Some(2), Some(3), Some(0)));
    assert!(st.last_full_sync_time.is_some());
    assert!(st.bytes_transferred.unwrap_or(0) > 0);
    let synced = st.conditions.iter().find(|c| c.type_ == "Synced").unwrap();
    assert_eq!(synced.status, "True");
    assert_eq!(
        st.conditions.iter().find(|c| c.type_ == "Ready").unwrap().status,
        "True"
    );
    for (repo, tag) in [("team-a/web", "v1"), ("team-a/web", "v2"), ("team-a/api", "v1")] {
        assert_eq!(
            replica.digest_of(repo, tag),
            primary.digest_of(repo, tag),
            "{repo}:{tag}"
        );
    }
    assert_eq!(replica.digest_of("team-a/web", "latest"), None, "tag filter");
    assert_eq!(replica.digest_of("team-b/x", "v1"), None, "repository filter");
    support::reasons_with(&c, "gz-to-sh", &["FullSyncCompleted"]).await;

    // A push to the primary reaches the replica without waiting for the 1h interval.
    let (v3, _) = primary.seed("team-a/web", "v3", &["--platforms", "linux/amd64", "--seed", "4"]);
    eventually(WAIT, "v3 on the replica", || async {
        (replica.digest_of("team-a/web", "v3") == Some(v3.clone())).then_some(())
    })
    .await;

    // A delete on the primary is propagated.
    let http = reqwest::Client::new();
    let r = http
        .delete(format!("{}/v2/team-a/api/manifests/{api_digest}", primary.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    eventually(WAIT, "team-a/api:v1 gone from the replica", || async {
        replica.digest_of("team-a/api", "v1").is_none().then_some(())
    })
    .await;
    let st = eventually(WAIT, "lastEventTime", || async {
        let st = ri.get("gz-to-sh").await.ok()?.status?;
        st.last_event_time.is_some().then_some(st)
    })
    .await;
    assert_eq!(st.lag_seconds, Some(0));
    support::reasons_with(&c, "gz-to-sh", &["EventSynced"]).await;
    assert!(
        primary.digest_of("team-a/web", "v1").is_some(),
        "the primary is never written"
    );

    // The endpoint refuses a bad token, and counts it.
    let bad = http
        .post(format!("http://127.0.0.1:{port}/notifications"))
        .header("Authorization", "Bearer wrong")
        .body(r#"{"events":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);
    let garbage = http
        .post(format!("http://127.0.0.1:{port}/notifications"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status().as_u16(), 400);
    let m = op.http_get("/metrics").unwrap().1;
    assert!(m.contains("imgrep_notifications_total{outcome=\"accepted\"}"), "{m}");
    assert!(
        m.contains("imgrep_notifications_total{outcome=\"unauthorized\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("imgrep_notifications_total{outcome=\"bad_payload\"} 1"),
        "{m}"
    );
    assert!(m.contains("imgrep_replica_artifacts_total{result=\"copied\"}"), "{m}");
    assert!(m.contains("imgrep_replica_lag_seconds"), "{m}");
}

/// At rest nothing is written: the periodic full sync (every 30 s here) that finds the replica
/// in sync changes no status field, wakes no watcher and records no Event.
#[tokio::test(flavor = "multi_thread")]
async fn at_rest_periodic_full_syncs_write_nothing() {
    let (s, c) = support::cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let _op = Operator::start(&s.write_kubeconfig(dir.path()), dir.path(), "op-a", &[]);
    let (primary, replica) = (TestRegistry::start(), TestRegistry::start());
    primary.seed("team/web", "v1", &["--platforms", "linux/amd64"]);
    let ri: Api<ReplicaInstance> = Api::namespaced(c.clone(), "default");
    let obj: ReplicaInstance = serde_json::from_value(json!({
        "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ReplicaInstance",
        "metadata": {"name": "quiet", "namespace": "default"},
        "spec": {
            "primary": {"provider": "oci", "region": "ap-guangzhou", "registry": primary.url()},
            "region": "ap-shanghai",
            "replica": {"registry": replica.url()},
            "sync": {"trigger": "Interval", "interval": "30s"}
        }
    }))
    .unwrap();
    ri.create(&PostParams::default(), &obj).await.unwrap();
    let synced = eventually(WAIT, "InSync", || async {
        let st = ri.get("quiet").await.ok()?.status?;
        (st.phase == Some(ReplicaPhase::InSync)).then_some(st)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let catalogs = || {
        primary
            .requests()
            .iter()
            .filter(|(m, u, _)| m == "GET" && u.starts_with("/v2/_catalog"))
            .count()
    };
    let before = catalogs();
    support::assert_quiet(&s, &c, "quiet", Duration::from_secs(40)).await;
    assert!(catalogs() > before, "a periodic full sync ran meanwhile");
    let st = ri.get("quiet").await.unwrap().status.unwrap();
    assert_eq!(st.last_full_sync_time, synced.last_full_sync_time);
    assert_eq!(st.phase, Some(ReplicaPhase::InSync));
}
