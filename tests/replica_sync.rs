//! ReplicaInstance syncs against real registries without the controller: overwrite semantics,
//! and the no-cluster `replicate -f` command with a ReplicaInstance.

mod support;

use image_replication_operator::api::v1alpha1::ReplicaInstanceSpec;
use image_replication_operator::image_replication::oci::SecretCredentials;
use image_replication_operator::replica_instance::oci::{ReplicaSyncer, SyncProgress};
use support::registry::TestRegistry;

fn spec(primary: &TestRegistry, replica: &TestRegistry, overwrite: bool) -> ReplicaInstanceSpec {
    serde_json::from_value(serde_json::json!({
        "primary": {"provider": "oci", "region": "region-a", "registry": primary.url()},
        "region": "region-b",
        "replica": {"registry": replica.url()},
        "sync": {"overwrite": overwrite}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn overwrite_false_leaves_a_differing_tag_alone_and_reports_it() {
    let (p, r) = (TestRegistry::start(), TestRegistry::start());
    let (want, _) = p.seed("a/web", "v1", &["--platforms", "linux/amd64", "--seed", "1"]);
    let (theirs, _) = r.seed("a/web", "v1", &["--platforms", "linux/amd64", "--seed", "2"]);
    p.seed("a/web", "v2", &["--platforms", "linux/amd64", "--seed", "3"]);
    let none = SecretCredentials::default();
    let syncer = ReplicaSyncer::default();

    let report = syncer
        .sync(&spec(&p, &r, false), None, &none, &none, &SyncProgress::default())
        .await
        .unwrap();
    assert_eq!(
        report.conflicts,
        vec![("a/web:v1".to_string(), theirs.clone(), want.clone())]
    );
    assert_eq!(report.copied, 1, "v2 is still copied");
    assert_eq!(r.digest_of("a/web", "v1"), Some(theirs), "left alone");

    let report = syncer
        .sync(&spec(&p, &r, true), None, &none, &none, &SyncProgress::default())
        .await
        .unwrap();
    assert!(report.conflicts.is_empty());
    assert_eq!(r.digest_of("a/web", "v1"), Some(want), "overwritten");
    // A second sync finds nothing to do.
    let report = syncer
        .sync(&spec(&p, &r, true), None, &none, &none, &SyncProgress::default())
        .await
        .unwrap();
    assert_eq!((report.copied, report.artifacts), (0, 2));
}

/// A ReplicaInstance `r1` from `primary` to `replica`, as a manifest for `replicate -f`.
fn replica_yaml(primary: &str, replica: &str) -> String {
    format!(
        "apiVersion: replication.imageops.io/v1alpha1\nkind: ReplicaInstance\nmetadata: {{name: r1, namespace: default}}\nspec:\n  primary: {{provider: oci, region: region-a, registry: '{primary}'}}\n  region: region-b\n  replica: {{registry: '{replica}'}}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn replicate_command_syncs_a_replica_instance() {
    let (p, r) = (TestRegistry::start(), TestRegistry::start());
    let (d, _) = p.seed("team/web", "v1", &["--platforms", "linux/amd64"]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("replica.yaml");
    std::fs::write(&f, replica_yaml(&p.url(), &r.url())).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_image-replication-operator"))
        .args(["replicate", "-f"])
        .arg(&f)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("ReplicaInstance r1: Ready (1 artifacts in sync)"),
        "{text}"
    );
    assert_eq!(r.digest_of("team/web", "v1"), Some(d));
}

/// Artifacts that fail in one pass are synced again within the same `replicate -f` run (up to
/// `--attempts` passes), so a transient failure does not need a second run.
#[tokio::test(flavor = "multi_thread")]
async fn replicate_retries_failed_artifacts_within_the_run() {
    use support::faulty::{Fault, FaultyProxy};
    let (p, r) = (TestRegistry::start(), TestRegistry::start());
    let mut want = Vec::new();
    for tag in ["v1", "v2", "v3"] {
        want.push(
            p.seed("team/web", tag, &["--platforms", "linux/amd64", "--seed", &tag[1..]])
                .0,
        );
    }
    let proxy = FaultyProxy::start(p.url(), Fault::FailManifestGets(2)).await;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("replica.yaml");
    std::fs::write(&f, replica_yaml(&proxy.url(), &r.url())).unwrap();
    let run = |attempts: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_image-replication-operator"))
            .args(["replicate", "--no-blob-cache", "--attempts", attempts, "-f"])
            .arg(&f)
            .output()
            .unwrap()
    };
    let out = run("3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("pass 1: 2 of 3 artifacts failed; syncing again"),
        "{text}"
    );
    assert!(
        text.contains("ReplicaInstance r1: Ready (3 artifacts in sync)"),
        "{text}"
    );
    for (tag, d) in ["v1", "v2", "v3"].iter().zip(&want) {
        assert_eq!(r.digest_of("team/web", tag).as_ref(), Some(d), "{tag}");
    }
    // With one attempt the same faults leave the run failed (what the retry is measured against).
    let r2 = TestRegistry::start();
    let proxy2 = FaultyProxy::start(p.url(), Fault::FailManifestGets(2)).await;
    std::fs::write(&f, replica_yaml(&proxy2.url(), &r2.url())).unwrap();
    let out = run("1");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(!text.contains("syncing again"), "{text}");
    // Every failed artifact is named, with the registry's message, and the sync is not called
    // completed.
    assert_eq!(text.matches("r1: failed team/web:").count(), 2, "{text}");
    assert!(text.contains("injected failure"), "{text}");
    assert!(
        text.contains("FullSyncIncomplete") && !text.contains("FullSyncCompleted"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_concurrent_fleet_sync_uploads_each_blob_once() {
    let (p, r) = (TestRegistry::start(), TestRegistry::start());
    let mut unique = std::collections::BTreeSet::new();
    for repo in ["fleet/r1", "fleet/r2", "fleet/r3", "fleet/r4", "fleet/r5"] {
        for (tag, seed) in [("v1", "1"), ("v2", "2"), ("v3", "3")] {
            // Layers of 1 MiB and more: the copies also look for them in other repositories
            // (HEAD) before uploading, which widens the window two copies of one blob race in.
            p.seed(
                repo,
                tag,
                &[
                    "--platforms",
                    "linux/amd64",
                    "--seed",
                    seed,
                    "--layer-size",
                    "1048576",
                    "--base-size",
                    "2097152",
                ],
            );
        }
    }
    // Blobs: 1 shared base + per seed (2 layers + 1 config) = 10 unique.
    for l in p
        .requests()
        .iter()
        .filter(|(m, u, s)| m == "PUT" && u.contains("/blobs/uploads/") && *s == 201)
    {
        if let Some(d) = l.1.split("digest=").nth(1) {
            unique.insert(d.split('&').next().unwrap().to_string());
        }
    }
    let mut s = spec(&p, &r, true);
    s.sync.max_concurrent_transfers = 8;
    let none = SecretCredentials::default();
    let report = ReplicaSyncer::default()
        .sync(&s, None, &none, &none, &SyncProgress::default())
        .await
        .unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!((report.copied, report.artifacts), (15, 15));
    assert_eq!(
        r.uploads_started(),
        unique.len(),
        "every blob crossed exactly once ({} unique)",
        unique.len()
    );
}
