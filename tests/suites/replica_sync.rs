//! ReplicaInstance syncs against real registries without the controller: overwrite semantics,
//! and the no-cluster `replicate -f` command with a ReplicaInstance.

use crate::support;

use image_replication_operator::api::v1alpha1::ReplicaInstanceSpec;
use image_replication_operator::oci::SecretCredentials;
use image_replication_operator::replica_instance::oci::sync::{ReplicaSyncer, SyncProgress};
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
    let sessions: Vec<_> = r
        .requests()
        .into_iter()
        .filter(|(m, u, _)| m != "GET" && m != "HEAD" && u.contains("/blobs/"))
        .collect();
    // Nor is a blob mounted twice into one repository: three tags of a repository need its
    // base layer at once, and one lands it while the others wait. (Mounts of one blob into one
    // repository at once rewrite its link file, in place on distribution 2.8, and a mount *from*
    // that repository meanwhile can read it empty, fail, and send the blob again.)
    let mut mounts = std::collections::BTreeMap::new();
    for (_, u, _) in sessions.iter().filter(|(m, u, _)| m == "POST" && u.contains("mount=")) {
        let repo = u
            .trim_start_matches("/v2/")
            .split("/blobs/")
            .next()
            .unwrap_or("")
            .to_string();
        let digest = u.split("mount=").nth(1).unwrap().split('&').next().unwrap().to_string();
        *mounts.entry((repo, digest)).or_insert(0) += 1;
    }
    let twice: Vec<_> = mounts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "mounted more than once: {twice:?}");
    assert_eq!(
        r.uploads_started(),
        unique.len(),
        "every blob crossed exactly once ({} unique); blob writes: {sessions:#?}",
        unique.len()
    );
}

/// `maxConcurrentTransfers` bounds the blobs whose bytes move at once across a sync (it let
/// each of that many artifacts move its layers side by side: 2 artifacts, 4 blobs each).
#[tokio::test(flavor = "multi_thread")]
async fn max_concurrent_transfers_bounds_the_blobs_moving_at_once() {
    use support::faulty::{Fault, FaultyProxy};
    let (p, r) = (TestRegistry::start(), TestRegistry::start());
    let mut want = Vec::new();
    for (repo, seed) in [("fleet/a", "1"), ("fleet/b", "2"), ("fleet/c", "3")] {
        let args = ["--platforms", "linux/amd64", "--seed", seed, "--layers", "3"];
        want.push((repo, p.seed(repo, "v1", &args).0));
    }
    let proxy = FaultyProxy::start(r.url(), Fault::SlowPatches(300)).await;
    let mut s = spec(&p, &r, true);
    s.replica.as_mut().unwrap().registry = Some(proxy.url());
    s.sync.max_concurrent_transfers = 2;
    let none = SecretCredentials::default();
    let report = ReplicaSyncer::default()
        .sync(&s, None, &none, &none, &SyncProgress::default())
        .await
        .unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    for (repo, digest) in want {
        assert_eq!(r.digest_of(repo, "v1"), Some(digest), "{repo}");
    }
    let peak = proxy.patch_peak.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(peak, 2, "blob uploads at once with maxConcurrentTransfers: 2");
}

/// The unique blob bytes a registry stores (its `blobs/` tree), and the upload sessions it
/// still holds (`_uploads/` entries of every repository).
fn stored(r: &TestRegistry) -> (u64, Vec<String>) {
    fn walk(dir: &std::path::Path, blobs: &mut u64, sessions: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if path.is_dir() {
                if name == "_uploads" {
                    for s in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                        sessions.push(s.path().display().to_string());
                    }
                } else {
                    walk(&path, blobs, sessions);
                }
            } else if name == "data" && path.to_string_lossy().contains("/blobs/") {
                *blobs += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    let (mut blobs, mut sessions) = (0, Vec::new());
    walk(&r.dir.path().join("data"), &mut blobs, &mut sessions);
    (blobs, sessions)
}

/// #15: a fleet of 30 repositories x 3 tags through fault-injecting proxies in front of both
/// registries (10 % 503, 5 % 429 with `Retry-After: 1`, 3 % answers and 3 % uploads cut
/// half-way; fixed seeds) converges in one `replicate -f` run: every tag at
/// the replica with the primary's digest, bytes sent to the replica a small multiple of what it
/// stores, and every upload session the registry kept reported. Prints the times with faults
/// and without (make bench reports them).
#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_sync_converges_in_one_run_through_flaky_registries() {
    use support::faulty::{Fault, FaultyProxy};
    let p = TestRegistry::start();
    let repos: Vec<String> = (1..=30).map(|i| format!("fleet/app{i:02}")).collect();
    let mut want = std::collections::BTreeMap::new();
    std::thread::scope(|sc| {
        let jobs: Vec<_> = repos
            .chunks(8)
            .map(|chunk| {
                let p = &p;
                sc.spawn(move || {
                    let mut got = Vec::new();
                    for repo in chunk {
                        for tag in ["v1", "v2", "v3"] {
                            let seed = format!("{}{}", repo.trim_start_matches("fleet/app"), &tag[1..]);
                            let (d, _) = p.seed(
                                repo,
                                tag,
                                &[
                                    "--platforms",
                                    "linux/amd64",
                                    "--seed",
                                    &seed,
                                    "--layer-size",
                                    "400000",
                                    "--base-size",
                                    "1048576",
                                ],
                            );
                            got.push(((repo.clone(), tag), d));
                        }
                    }
                    got
                })
            })
            .collect();
        for j in jobs {
            want.extend(j.join().unwrap());
        }
    });
    // FLAKY_RATES="p503,p429,cut_response,cut_upload" overrides the rates (to see what each
    // costs); the assertions hold for any rates.
    let rates: Vec<f64> = std::env::var("FLAKY_RATES")
        .unwrap_or_else(|_| "0.10,0.05,0.03,0.03".into())
        .split(',')
        .map(|x| x.trim().parse().unwrap())
        .collect();
    let faults = |seed| Fault::Random {
        seed,
        p503: rates[0],
        p429: rates[1],
        cut_response: rates[2],
        cut_upload: rates[3],
    };
    let run = |primary: String, replica: String| async move {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("replica.yaml");
        std::fs::write(&f, replica_yaml(&primary, &replica)).unwrap();
        let started = std::time::Instant::now();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_image-replication-operator"))
                .args(["replicate", "--no-blob-cache", "--attempts", "10", "-f"])
                .arg(&f)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        (out, started.elapsed())
    };
    // Without faults, for the time it is measured against.
    let clean = TestRegistry::start();
    let (out, fault_free) = run(p.url(), clean.url()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // With faults in front of both registries.
    let r = TestRegistry::start();
    let (pp, rp) = (
        FaultyProxy::start(p.url(), faults(15)).await,
        FaultyProxy::start(r.url(), faults(16)).await,
    );
    let (out, faulty) = run(pp.url(), rp.url()).await;
    let text = String::from_utf8_lossy(&out.stdout);
    std::fs::write(std::env::temp_dir().join("flaky-fleet.out"), text.as_bytes()).ok();
    let seen = |proxy: &FaultyProxy, status: u16| proxy.seen.lock().unwrap().iter().filter(|s| s.3 == status).count();
    println!(
        "flaky fleet: 90 tags, fault-free {:.2} s, with faults {:.2} s ({:.1}x); injected at the primary 503 x{} 429 x{} cut answers x{}, at the replica 503 x{} 429 x{} cut answers x{} cut uploads x{}; passes: {}",
        fault_free.as_secs_f64(),
        faulty.as_secs_f64(),
        faulty.as_secs_f64() / fault_free.as_secs_f64(),
        seen(&pp, 503),
        seen(&pp, 429),
        seen(&pp, 1),
        seen(&rp, 503),
        seen(&rp, 429),
        seen(&rp, 1),
        seen(&rp, 0),
        text.matches("syncing again").count() + 1
    );
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Ready (90 artifacts in sync)"), "{text}");
    if std::env::var("FLAKY_RATES").is_err() {
        assert!(
            seen(&pp, 503) + seen(&rp, 503) > 0 && seen(&rp, 0) > 0,
            "faults were injected"
        );
    }
    for ((repo, tag), d) in &want {
        assert_eq!(r.digest_of(repo, tag).as_ref(), Some(d), "{repo}:{tag}");
    }
    let (stored_bytes, sessions) = stored(&r);
    let sent = rp.body_bytes.load(std::sync::atomic::Ordering::Relaxed);
    println!("flaky fleet: the replica stores {stored_bytes} blob bytes; {sent} bytes were sent to it");
    assert!(
        sent <= 3 * stored_bytes,
        "resends bounded: sent {sent} bytes for {stored_bytes} stored"
    );
    // distribution refuses every request on a session whose PATCH was cut (404
    // BLOB_UPLOAD_INVALID: its state names an offset the stored bytes no longer match) and keeps
    // it until it purges old uploads: each such session is reported, none is left silently, and
    // only cut uploads leave one.
    let reported: u64 = text
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("warning: 127.0.0.1:{}: ", rp.port)))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    println!(
        "flaky fleet: upload sessions left {} (reported {reported})",
        sessions.len()
    );

    assert_eq!(sessions.len() as u64, reported, "{sessions:?}\n{text}");
    // Restarts are counted and said.
    assert!(
        sessions.is_empty() || text.contains("blob upload(s) started again from byte 0"),
        "{text}"
    );
    assert!(sessions.len() <= seen(&rp, 0), "{sessions:?}");
    println!(
        "BENCH flaky fault_free_s={:.2} faulty_s={:.2} passes={} sent_bytes={sent} stored_bytes={stored_bytes} sessions_left={} injected_503={} injected_429={} cut_answers={} cut_uploads={}",
        fault_free.as_secs_f64(),
        faulty.as_secs_f64(),
        text.matches("syncing again").count() + 1,
        sessions.len(),
        seen(&pp, 503) + seen(&rp, 503),
        seen(&pp, 429) + seen(&rp, 429),
        seen(&pp, 1) + seen(&rp, 1),
        seen(&rp, 0)
    );
}
