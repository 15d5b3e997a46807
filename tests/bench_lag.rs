//! Benchmark harness (not a test: ignored, prints measurements, asserts nothing about time).
//! Push-to-replica lag with event-driven sync: `make bench` runs
//! `cargo test --release --test bench_lag -- --ignored --nocapture`.

mod support;

use std::time::{Duration, Instant};

use image_replication_operator::api::ReplicaInstance;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use support::operator::{Operator, eventually, free_port};
use support::registry::{Options, TestRegistry};

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run by make bench"]
async fn push_to_replica_lag() {
    let pushes: usize = std::env::var("BENCH_LAG_PUSHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let (s, c) = support::cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _op = Operator::start_on(
        port,
        &s.write_kubeconfig(dir.path()),
        dir.path(),
        "bench",
        &[],
        &[("NOTIFICATION_TOKEN", "t")],
    );
    let primary = TestRegistry::start_with(Options {
        notify: Some((format!("http://127.0.0.1:{port}/notifications"), "t".into())),
        ..Default::default()
    });
    let replica = TestRegistry::start();
    primary.seed("bench/app", "v0", &["--platforms", "linux/amd64"]);
    let ri: Api<ReplicaInstance> = Api::namespaced(c.clone(), "default");
    let obj: ReplicaInstance = serde_json::from_value(json!({
        "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ReplicaInstance",
        "metadata": {"name": "bench", "namespace": "default"},
        "spec": {"primary": {"provider": "oci", "region": "region-a", "registry": primary.url()},
                 "region": "region-b", "replica": {"registry": replica.url()}, "sync": {"interval": "1h"}}
    }))
    .unwrap();
    ri.create(&PostParams::default(), &obj).await.unwrap();
    eventually(Duration::from_secs(60), "first sync", || async {
        replica.digest_of("bench/app", "v0").map(|_| ())
    })
    .await;

    // Each push: a new image (new config and layer) under a new tag, pushed with skopeo.
    let http = reqwest::Client::new();
    let mut lags = Vec::new();
    for i in 1..=pushes {
        let tag = format!("v{i}");
        let t0 = Instant::now();
        primary.seed(
            "bench/app",
            &tag,
            &[
                "--platforms",
                "linux/amd64",
                "--layers",
                "1",
                "--layer-size",
                "65536",
                "--base-size",
                "0",
                "--seed",
                &(100 + i).to_string(),
            ],
        );
        let pushed = t0.elapsed();
        let url = format!("{}/v2/bench/app/manifests/{tag}", replica.url());
        loop {
            let r = http
                .head(&url)
                .header("Accept", "application/vnd.oci.image.manifest.v1+json")
                .send()
                .await
                .unwrap();
            if r.status().is_success() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        lags.push(t0.elapsed() - pushed);
    }
    lags.sort();
    let pct = |p: f64| lags[((lags.len() as f64 * p).ceil() as usize).clamp(1, lags.len()) - 1];
    println!(
        "BENCH lag pushes={} p50_ms={:.0} p99_ms={:.0} max_ms={:.0}",
        lags.len(),
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
        lags.last().unwrap().as_secs_f64() * 1000.0
    );
}
