//! Benchmark harness (not a test: ignored, prints measurements, asserts nothing about time).
//! Controller scale: BENCH_SCALE_IRS oci ImageReplications (default 5,000; distinct destination
//! repositories of one registry, so the blobs are mounted) and BENCH_SCALE_RIS ReplicaInstances
//! (default 100) against the fake API server and real registries. `make bench` runs
//! `cargo test --release --test bench_scale -- --ignored --nocapture`.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use image_replication_operator::api::{ImageReplication, ReplicaInstance};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;
use support::operator::{Operator, free_port};
use support::registry::TestRegistry;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Resident and peak resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// How many objects of `api` are Ready.
async fn ready_count<K>(
    api: &Api<K>,
    conditions: impl Fn(&K) -> Option<&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]>,
) -> usize
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|o| conditions(o).is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run by make bench"]
async fn controller_scale() {
    let n_ir = env("BENCH_SCALE_IRS", 5000);
    let n_ri = env("BENCH_SCALE_RIS", 100);
    let idle = Duration::from_secs(env("BENCH_SCALE_IDLE_SECS", 60) as u64);
    let resync = env("BENCH_SCALE_RESYNC_SECS", 60);
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let (primary, replica) = (TestRegistry::start(), TestRegistry::start());
    src.seed("team/web", "1", &["--platforms", "linux/amd64"]);
    // One repository per ReplicaInstance, four seeded at a time.
    let repos: Vec<String> = (0..n_ri).map(|i| format!("apps/r{i:03}")).collect();
    std::thread::scope(|s| {
        for chunk in repos.chunks(repos.len().div_ceil(4).max(1)) {
            let p = &primary;
            s.spawn(move || {
                for r in chunk {
                    p.seed(r, "v1", &["--platforms", "linux/amd64", "--layers", "1"]);
                }
            });
        }
    });

    let (s, c) = support::cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let op = Operator::start_on(
        free_port(),
        &s.write_kubeconfig(dir.path()),
        dir.path(),
        "scale",
        &["--resync-seconds", &resync.to_string()],
        &[("RUST_LOG", "warn")],
    );
    let pid = op.child.id();
    let irs: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let ris: Api<ReplicaInstance> = Api::namespaced(c.clone(), "default");

    let t0 = Instant::now();
    let source = format!("{}/team/web:1", src.host());
    let creates = futures::stream::iter(0..n_ir)
        .map(|i| {
            let (irs, source, dst_url) = (irs.clone(), source.clone(), dst.url());
            async move {
                let o: ImageReplication = serde_json::from_value(json!({
                    "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ImageReplication",
                    "metadata": {"name": format!("ir-{i:05}"), "namespace": "default"},
                    "spec": {
                        "provider": {"kind": "oci"},
                        "source": {"region": "region-a", "reference": source},
                        "destinations": [{"region": "region-b", "registry": dst_url, "name": format!("copies/r{i:05}")}]
                    }
                }))
                .unwrap();
                irs.create(&PostParams::default(), &o).await.unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>();
    creates.await;
    for (i, repo) in repos.iter().enumerate() {
        let o: ReplicaInstance = serde_json::from_value(json!({
            "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ReplicaInstance",
            "metadata": {"name": format!("ri-{i:03}"), "namespace": "default"},
            "spec": {
                "primary": {"provider": "oci", "region": "region-a", "registry": primary.url()},
                "region": "region-b",
                "replica": {"registry": replica.url()},
                "sync": {"filters": [{"repositories": [repo]}]}
            }
        }))
        .unwrap();
        ris.create(&PostParams::default(), &o).await.unwrap();
    }
    let created_s = t0.elapsed().as_secs_f64();

    // Until every object is Ready (list every 2 s), with the operator's memory sampled.
    let mut peak_rss = 0;
    let ready_s = loop {
        peak_rss = peak_rss.max(rss_kib(pid).0);
        let ir_ready = ready_count(&irs, |o: &ImageReplication| {
            o.status.as_ref().map(|s| &s.conditions[..])
        })
        .await;
        let ri_ready = ready_count(&ris, |o: &ReplicaInstance| o.status.as_ref().map(|s| &s.conditions[..])).await;
        if ir_ready == n_ir && ri_ready == n_ri {
            break t0.elapsed().as_secs_f64();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1800),
            "not Ready after 30 min: {ir_ready}/{n_ir} ImageReplications, {ri_ready}/{n_ri} ReplicaInstances"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let mounted = dst
        .requests()
        .iter()
        .filter(|(m, u, st)| m == "POST" && u.contains("mount=") && *st == 201)
        .count();
    let uploaded = dst
        .requests()
        .iter()
        .filter(|(m, u, st)| m == "PUT" && u.contains("/blobs/uploads/") && *st == 201)
        .count();

    // Idle: nothing of ours talks to the API server; count what the operator sends, and the
    // drift checks the registry sees, per 10 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let api_before = s.requests().len();
    let mut buckets = Vec::new();
    let mut last = dst.requests().len();
    let started = Instant::now();
    while started.elapsed() < idle {
        tokio::time::sleep(Duration::from_secs(10).min(idle)).await;
        peak_rss = peak_rss.max(rss_kib(pid).0);
        let now = dst.requests().len();
        buckets.push(now - last);
        last = now;
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let idle_reqs: Vec<(String, String)> = s.requests().into_iter().skip(api_before).collect();
    let mut by_verb: BTreeMap<String, usize> = BTreeMap::new();
    for (m, p) in &idle_reqs {
        let watch = p.contains("watch=true") || p.contains("watch=1");
        *by_verb
            .entry(if watch { "WATCH".into() } else { m.clone() })
            .or_default() += 1;
    }
    let writes = idle_reqs
        .iter()
        .filter(|(m, _)| matches!(m.as_str(), "POST" | "PUT" | "PATCH" | "DELETE"))
        .count();
    let registry_idle: usize = buckets.iter().sum();
    let hwm = rss_kib(pid).1.max(peak_rss);

    // Delete everything; the finalizers run (Retain: nothing to remove at the registries).
    let t1 = Instant::now();
    let names: Vec<String> = (0..n_ir).map(|i| format!("ir-{i:05}")).collect();
    futures::stream::iter(names)
        .map(|n| {
            let irs = irs.clone();
            async move {
                let _ = irs.delete(&n, &DeleteParams::default()).await;
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    for i in 0..n_ri {
        let _ = ris.delete(&format!("ri-{i:03}"), &DeleteParams::default()).await;
    }
    let delete_s = loop {
        let left = irs.list(&ListParams::default()).await.unwrap().items.len()
            + ris.list(&ListParams::default()).await.unwrap().items.len();
        if left == 0 {
            break t1.elapsed().as_secs_f64();
        }
        assert!(
            t1.elapsed() < Duration::from_secs(900),
            "{left} objects left after 15 min"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };

    let per_min = |n: usize| (n as f64 / minutes).round() as usize;
    let verbs: Vec<String> = by_verb.iter().map(|(k, v)| format!("{k}:{}", per_min(*v))).collect();
    println!(
        "BENCH scale irs={n_ir} ris={n_ri} resync_s={resync} created_s={created_s:.1} ready_s={ready_s:.1} peak_rss_mib={} uploaded={uploaded} mounted={mounted} idle_s={:.0} idle_api_per_min={} idle_writes={writes} idle_registry_per_min={} registry_per_10s={} delete_s={delete_s:.1}",
        hwm / 1024,
        minutes * 60.0,
        if verbs.is_empty() {
            "none".to_string()
        } else {
            verbs.join(",")
        },
        per_min(registry_idle),
        buckets.iter().map(|b| b.to_string()).collect::<Vec<_>>().join("/"),
    );
}
