//! The copy engine against real registries (Debian docker-registry), checked with skopeo and
//! with the registries' own access logs.

use crate::support;

use image_replication_operator::oci::{
    Budgets, CopyOptions, Credentials, Engine, OciError, Progress, Registry, RegistryAddr,
};
use support::faulty::{Fault, FaultyProxy};
use support::registry::TestRegistry;

fn client(url: &str, budgets: &Budgets) -> Registry {
    let mut r = Registry::new(RegistryAddr::parse(url).unwrap(), Credentials::default(), budgets).unwrap();
    r.retry.base = std::time::Duration::from_millis(20);
    r
}

async fn copy(
    engine: &Engine,
    src: &Registry,
    dst: &Registry,
    repo: &str,
    tag: &str,
    opts: &CopyOptions,
) -> Result<image_replication_operator::oci::CopyReport, OciError> {
    engine
        .copy(src, repo, tag, dst, repo, Some(tag), opts, &Progress::default())
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_arch_index_and_signature_arrive_with_digests_unchanged() {
    let (a, b) = (TestRegistry::start(), TestRegistry::start());
    let (digest, sig) = a.seed("team/web", "1.4", &["--sign"]);
    let budgets = Budgets::default();
    let (src, dst) = (client(&a.url(), &budgets), client(&b.url(), &budgets));
    let engine = Engine::default();
    let progress = Progress::default();
    let r = engine
        .copy(
            &src,
            "team/web",
            "1.4",
            &dst,
            "team/web",
            Some("1.4"),
            &CopyOptions::default(),
            &progress,
        )
        .await
        .unwrap();
    assert_eq!(r.digest, digest, "{r:?}");
    assert_eq!(
        b.digest_of("team/web", "1.4"),
        Some(digest.clone()),
        "skopeo sees the same index digest"
    );
    let sig = sig.unwrap();
    assert_eq!(
        b.digest_of("team/web", &sig),
        a.digest_of("team/web", &sig),
        "the cosign signature tag is copied"
    );
    assert_eq!(r.referrers_copied, 1);
    // Both platforms' manifests are there by digest (skopeo --all copy back proves completeness).
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/team/web:1.4", b.host()))
        .output()
        .unwrap();
    let index: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for m in index["manifests"].as_array().unwrap() {
        let d = m["digest"].as_str().unwrap();
        assert_eq!(b.digest_of("team/web", d).as_deref(), Some(d));
    }
    // The shared base layer crossed once: 1 base + 2x2 layers + 2 configs + 2 signature blobs.
    assert_eq!(r.blobs_uploaded, 9, "{r:?}");
    assert_eq!(b.uploads_started(), 9);
    let (done, total) = progress.snapshot();
    assert_eq!(done, total);
    assert!(total > 1_000_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_copy_is_a_cheap_no_op() {
    let (a, b) = (TestRegistry::start(), TestRegistry::start());
    a.seed("team/web", "1.4", &[]);
    let budgets = Budgets::default();
    let (src, dst) = (client(&a.url(), &budgets), client(&b.url(), &budgets));
    let engine = Engine::default();
    copy(&engine, &src, &dst, "team/web", "1.4", &CopyOptions::default())
        .await
        .unwrap();
    let before = b.requests().len();
    let r = copy(&engine, &src, &dst, "team/web", "1.4", &CopyOptions::default())
        .await
        .unwrap();
    assert!(r.up_to_date);
    assert_eq!((r.blobs_uploaded, r.manifests_written), (0, 0));
    let dst_requests = &b.requests()[before..];
    assert_eq!(dst_requests.len(), 1, "one HEAD of the tag: {dst_requests:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_layers_are_mounted_across_repositories_not_uploaded_again() {
    let (a, b) = (TestRegistry::start(), TestRegistry::start());
    a.seed("team/one", "1", &["--platforms", "linux/amd64", "--seed", "1"]);
    a.seed("team/two", "1", &["--platforms", "linux/amd64", "--seed", "2"]);
    let budgets = Budgets::default();
    let (src, dst) = (client(&a.url(), &budgets), client(&b.url(), &budgets));
    let engine = Engine::default();
    let one = copy(&engine, &src, &dst, "team/one", "1", &CopyOptions::default())
        .await
        .unwrap();
    let two = copy(&engine, &src, &dst, "team/two", "1", &CopyOptions::default())
        .await
        .unwrap();
    assert_eq!(one.blobs_uploaded, 4); // base, 2 layers, config
    assert_eq!((two.blobs_mounted, two.blobs_uploaded), (1, 3), "{two:?}");
    let mounts: Vec<_> = b
        .requests()
        .into_iter()
        .filter(|(m, u, s)| m == "POST" && u.contains("mount=") && *s == 201)
        .collect();
    assert_eq!(mounts.len(), 1);
    assert_eq!(b.uploads_started(), 7, "every blob crossed exactly once");
}

/// Copy `team/web:1` from `src` into `dst_repo` with `engine`.
async fn copy_into(
    engine: &Engine,
    src: &Registry,
    dst: &Registry,
    dst_repo: &str,
) -> image_replication_operator::oci::CopyReport {
    engine
        .copy(
            src,
            "team/web",
            "1",
            dst,
            dst_repo,
            Some("1"),
            &CopyOptions::default(),
            &Progress::default(),
        )
        .await
        .unwrap()
}

/// What a restarted operator (a new engine) knows: only what the objects' statuses say. A blob
/// the destination registry holds in another repository is mounted, not uploaded again.
#[tokio::test(flavor = "multi_thread")]
async fn blobs_the_destination_holds_elsewhere_are_mounted_after_a_restart() {
    let (a, b) = (TestRegistry::start(), TestRegistry::start());
    // Base and two layers of 2 MiB (worth a HEAD each), a small config.
    let mib2 = (2 << 20).to_string();
    a.seed(
        "team/web",
        "1",
        &[
            "--platforms",
            "linux/amd64",
            "--layer-size",
            &mib2,
            "--base-size",
            &mib2,
        ],
    );
    let budgets = Budgets::default();
    let (src, dst) = (client(&a.url(), &budgets), client(&b.url(), &budgets));
    let first = copy_into(&Engine::default(), &src, &dst, "mirror/one").await;
    assert_eq!(first.blobs_uploaded, 4, "{first:?}");

    // Restarted, told where the earlier copy is (the controller does this from each object's
    // status as it reconciles at start-up): the big blobs are mounted from it.
    let restarted = Engine::default();
    restarted.note_repository(&b.host(), "mirror/one");
    let second = copy_into(&restarted, &src, &dst, "mirror/two").await;
    assert_eq!((second.blobs_mounted, second.blobs_uploaded), (3, 1), "{second:?}");
    assert!(second.bytes_uploaded < 64 << 10, "only the config crossed: {second:?}");
    assert_eq!(b.digest_of("mirror/two", "1"), b.digest_of("mirror/one", "1"));

    // Knowing nothing, the blobs are uploaded again (what the fix is measured against).
    let fresh = copy_into(&Engine::default(), &src, &dst, "mirror/three").await;
    assert_eq!((fresh.blobs_mounted, fresh.blobs_uploaded), (0, 4), "{fresh:?}");

    // A copy under the source repository's own name is a mount candidate with no knowledge at
    // all (mirrors keep names), for small blobs too, at no extra request.
    copy_into(&Engine::default(), &src, &dst, "team/web").await;
    let requests_before = b.requests().len();
    let by_name = copy_into(&Engine::default(), &src, &dst, "mirror/four").await;
    assert_eq!((by_name.blobs_mounted, by_name.blobs_uploaded), (4, 0), "{by_name:?}");
    let heads = b.requests()[requests_before..]
        .iter()
        .filter(|(m, u, _)| m == "HEAD" && u.contains("/blobs/") && !u.contains("mirror/four"))
        .count();
    assert_eq!(heads, 0, "no probes of other repositories were needed");
}

/// Seed `big/img:1`: one amd64 layer of `layer_size` bytes, no base layer; returns its digest.
fn one_layer_image(reg: &TestRegistry, layer_size: &str) -> String {
    let args = [
        "--platforms",
        "linux/amd64",
        "--layers",
        "1",
        "--layer-size",
        layer_size,
        "--base-size",
        "0",
    ];
    reg.seed("big/img", "1", &args).0
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_upload_sends_many_patches_and_verifies() {
    let (a, b) = (TestRegistry::start(), TestRegistry::start());
    let digest = one_layer_image(&a, "1000000");
    let budgets = Budgets::default();
    let (src, dst) = (client(&a.url(), &budgets), client(&b.url(), &budgets));
    let opts = CopyOptions {
        chunk_size: 64 * 1024,
        ..Default::default()
    };
    copy(&Engine::default(), &src, &dst, "big/img", "1", &opts)
        .await
        .unwrap();
    assert_eq!(b.digest_of("big/img", "1"), Some(digest));
    let patches = b.requests().into_iter().filter(|(m, _, _)| m == "PATCH").count();
    assert!(patches >= 15, "a 1 MB layer in 64 KiB chunks: {patches} PATCHes");
}

/// By default each blob is one streaming PATCH (the registry opens its upload once), with
/// progress while it streams; a source cut mid-blob is resumed inside the same PATCH.
#[tokio::test(flavor = "multi_thread")]
async fn by_default_a_blob_streams_in_one_patch_even_through_a_source_cut() {
    let (a, b) = (TestRegistry::start(), TestRegistry::start());
    let digest = one_layer_image(&a, "3000000");
    let proxy = FaultyProxy::start(a.url(), Fault::CutBlobs { n: 1, after: 1_000_000 }).await;
    let budgets = Budgets::default();
    let (src, dst) = (client(&proxy.url(), &budgets), client(&b.url(), &budgets));
    let progress = std::sync::Arc::new(Progress::default());
    let p2 = progress.clone();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    // Progress seen while the copy runs (sampled): it moves before the blob is done.
    let sampler = tokio::spawn(async move {
        let mut seen = std::collections::BTreeSet::new();
        while !*stop_rx.borrow() {
            seen.insert(p2.bytes_done.load(std::sync::atomic::Ordering::Relaxed));
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(2)) => {}
                _ = stop_rx.changed() => {}
            }
        }
        seen
    });
    let r = Engine::default()
        .copy(
            &src,
            "big/img",
            "1",
            &dst,
            "big/img",
            Some("1"),
            &CopyOptions::default(),
            &progress,
        )
        .await
        .unwrap();
    let _ = stop_tx.send(true);
    let seen = sampler.await.unwrap();
    assert_eq!(b.digest_of("big/img", "1"), Some(digest));
    let patches = b.requests().into_iter().filter(|(m, _, _)| m == "PATCH").count();
    assert_eq!(patches, 2, "one PATCH per blob (layer and config)");
    assert_eq!(
        r.bytes_uploaded,
        progress.bytes_total.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(
        progress.bytes_done.load(std::sync::atomic::Ordering::Relaxed),
        r.bytes_total
    );
    let ranged = proxy.seen.lock().unwrap().iter().filter(|r| r.2.is_some()).count();
    assert_eq!(ranged, 1, "the cut source was reopened once, at its offset");
    assert!(
        seen.iter().any(|n| *n > 0 && *n < r.bytes_total),
        "progress moved during the stream: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_blob_is_an_error_and_nothing_is_tagged() {
    let (a, b) = (TestRegistry::start(), TestRegistry::start());
    a.seed("team/web", "1", &["--platforms", "linux/amd64"]);
    let proxy = FaultyProxy::start(a.url(), Fault::CorruptBlobs).await;
    let budgets = Budgets::default();
    let (src, dst) = (client(&proxy.url(), &budgets), client(&b.url(), &budgets));
    let err = copy(&Engine::default(), &src, &dst, "team/web", "1", &CopyOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
    assert_eq!(err.reason(), "DigestMismatch");
    assert_eq!(b.digest_of("team/web", "1"), None, "no tag points at a partial copy");
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_are_waited_out_with_retry_after() {
    let (a, b) = (TestRegistry::start(), TestRegistry::start());
    let (digest, _) = a.seed("team/web", "1", &["--platforms", "linux/amd64"]);
    let proxy = FaultyProxy::start(a.url(), Fault::RateLimitManifests(2)).await;
    let budgets = Budgets::default();
    let (src, dst) = (client(&proxy.url(), &budgets), client(&b.url(), &budgets));
    copy(&Engine::default(), &src, &dst, "team/web", "1", &CopyOptions::default())
        .await
        .unwrap();
    assert_eq!(b.digest_of("team/web", "1"), Some(digest));
    let seen = proxy.seen.lock().unwrap().clone();
    assert_eq!(seen.iter().filter(|r| r.3 == 429).count(), 2);
    assert!(
        seen.iter().any(|r| r.1.contains("/manifests/") && r.3 == 200),
        "retried after the 429s"
    );
    assert_eq!(src.stats.retries.load(std::sync::atomic::Ordering::Relaxed), 2);
}

/// A 503 on a blob's first PATCH: the registry holds nothing (distribution's status says
/// `Range: 0-0`), so the upload resumes at byte 0 in the same session and the copy succeeds in
/// its first attempt — not at byte 1 with the finishing PUT refused as DIGEST_INVALID.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_first_chunk_resumes_at_byte_zero() {
    let (a, b) = (TestRegistry::start(), TestRegistry::start());
    let digest = one_layer_image(&a, "600000");
    let proxy = FaultyProxy::start(b.url(), Fault::FailPatches(1)).await;
    let budgets = Budgets::default();
    let (src, dst) = (client(&a.url(), &budgets), client(&proxy.url(), &budgets));
    let opts = CopyOptions {
        chunk_size: 256 * 1024,
        blob_concurrency: 1,
        ..Default::default()
    };
    copy(&Engine::default(), &src, &dst, "big/img", "1", &opts)
        .await
        .unwrap();
    assert_eq!(b.digest_of("big/img", "1"), Some(digest));
    let seen = proxy.seen.lock().unwrap().clone();
    assert_eq!(seen.iter().filter(|r| r.3 == 503).count(), 1, "{seen:?}");
    assert!(
        seen.iter()
            .any(|r| r.0 == "GET" && r.1.contains("/blobs/uploads/") && r.3 == 204),
        "the upload's status was asked: {seen:?}"
    );
    assert_eq!(
        b.uploads_started(),
        2,
        "one session per blob (layer + config), none restarted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_cut_mid_blob_resumes_where_it_broke() {
    let (a, b) = (TestRegistry::start(), TestRegistry::start());
    let digest = one_layer_image(&a, "1500000");
    let proxy = FaultyProxy::start(a.url(), Fault::CutBlobs { n: 1, after: 700_000 }).await;
    let budgets = Budgets::default();
    let (src, dst) = (client(&proxy.url(), &budgets), client(&b.url(), &budgets));
    let opts = CopyOptions {
        chunk_size: 256 * 1024,
        blob_concurrency: 1,
        ..Default::default()
    };
    copy(&Engine::default(), &src, &dst, "big/img", "1", &opts)
        .await
        .unwrap();
    assert_eq!(b.digest_of("big/img", "1"), Some(digest));
    let seen = proxy.seen.lock().unwrap().clone();
    let ranged: Vec<_> = seen.iter().filter_map(|r| r.2.clone()).collect();
    // The proxy cuts after sending 700,000 bytes; what reached the copier before the reset may
    // be less (bytes still buffered in the proxy are lost with the connection), and the copier
    // resumes at the exact byte it holds.
    let offsets: Vec<u64> = ranged
        .iter()
        .filter_map(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
        .collect();
    assert!(
        offsets.len() == 1 && ranged.len() == 1 && offsets[0] > 0 && offsets[0] <= 700_000,
        "resumed once where the cut happened, not from zero: {seen:?}"
    );
    assert_eq!(
        b.uploads_started(),
        2,
        "the destination never noticed: same upload sessions (layer + config)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_over_tls_with_a_private_ca() {
    use support::registry::Options;
    let a = TestRegistry::start();
    let b = TestRegistry::start_with(Options {
        basic: Some(("robot".into(), "s3cret".into())),
        tls: true,
        ..Default::default()
    });
    let (digest, _) = a.seed("team/web", "1", &["--platforms", "linux/amd64"]);
    let budgets = Budgets::default();
    let src = client(&a.url(), &budgets);
    let creds = |password: &str, ca: bool| Credentials {
        username: Some("robot".into()),
        password: Some(password.into()),
        ca_pem: ca.then(|| b.ca_pem()),
    };
    let dst = Registry::new(RegistryAddr::parse(&b.url()).unwrap(), creds("s3cret", true), &budgets).unwrap();
    copy(&Engine::default(), &src, &dst, "team/web", "1", &CopyOptions::default())
        .await
        .unwrap();
    assert_eq!(dst.head_manifest("team/web", "1").await.unwrap(), Some(digest));

    let wrong = Registry::new(RegistryAddr::parse(&b.url()).unwrap(), creds("nope", true), &budgets).unwrap();
    let err = copy(
        &Engine::default(),
        &src,
        &wrong,
        "team/web",
        "1",
        &CopyOptions::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.reason(), "Unauthorized", "{err}");
    assert!(!err.to_string().contains("nope"), "no secret in errors: {err}");

    let mut untrusted =
        Registry::new(RegistryAddr::parse(&b.url()).unwrap(), creds("s3cret", false), &budgets).unwrap();
    untrusted.retry.max_attempts = 1;
    let err = copy(
        &Engine::default(),
        &src,
        &untrusted,
        "team/web",
        "1",
        &CopyOptions::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.reason(),
        "ConnectionError",
        "a certificate from an unknown CA is refused: {err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_token_challenge_flow() {
    let (a, b) = (TestRegistry::start(), TestRegistry::start());
    let (digest, _) = a.seed("team/web", "1", &["--platforms", "linux/amd64"]);
    let gate = FaultyProxy::start(
        a.url(),
        Fault::RequireBearer {
            user: "robot",
            pass: "pw",
            token: "tok-123",
        },
    )
    .await;
    let budgets = Budgets::default();
    let creds = Credentials {
        username: Some("robot".into()),
        password: Some("pw".into()),
        ca_pem: None,
    };
    let src = Registry::new(RegistryAddr::parse(&gate.url()).unwrap(), creds, &budgets).unwrap();
    let dst = client(&b.url(), &budgets);
    copy(&Engine::default(), &src, &dst, "team/web", "1", &CopyOptions::default())
        .await
        .unwrap();
    assert_eq!(b.digest_of("team/web", "1"), Some(digest));
    let seen = gate.seen.lock().unwrap().clone();
    let tokens = seen.iter().filter(|r| r.1.starts_with("/token")).count();
    assert_eq!(tokens, 1, "one token fetched and reused for the scope: {seen:?}");
    assert_eq!(seen.iter().filter(|r| r.3 == 401).count(), 1, "one challenge");
}
