//! Benchmark harness (not a test: ignored, prints measurements, asserts nothing about time).
//! Controller scale: BENCH_SCALE_IRS oci ImageReplications (default 5,000; distinct destination
//! repositories of one registry, so the blobs are mounted) and BENCH_SCALE_RIS ReplicaInstances
//! (default 100) against real registries and a real kube-apiserver with etcd (envtest,
//! `controller_scale`) or the fake API server (`controller_scale_fake`). `make bench` runs
//! `cargo test --release --test bench_scale -- --ignored --nocapture --test-threads 1`.

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

/// The API server under the bench: what it is, and how its requests are counted.
enum Server {
    Real(&'static support::envtest::ControlPlane),
    Fake(support::fake_apiserver::FakeApiServer),
}

/// Requests counted so far by (verb, resource or resource/subresource) for our two kinds,
/// Events and Secrets (the real server: its own counters; the fake: its request log).
type Counts = BTreeMap<(String, String), u64>;

impl Server {
    fn counts(&self) -> Counts {
        match self {
            Server::Real(cp) => {
                let empty = BTreeMap::new();
                support::envtest::request_delta(&empty, &cp.request_totals(RESOURCES))
            }
            Server::Fake(s) => {
                let mut out = Counts::new();
                for (m, p) in s.requests() {
                    let path = p.split('?').next().unwrap_or("");
                    let parts: Vec<&str> = path.split('/').collect();
                    let Some(i) = parts.iter().position(|x| RESOURCES.contains(x)) else {
                        continue;
                    };
                    // .../<resource>[/<name>[/<subresource>]]
                    let res = match parts.get(i + 2) {
                        Some(sub) => format!("{}/{sub}", parts[i]),
                        None => parts[i].to_string(),
                    };
                    let watch = p.contains("watch=true") || p.contains("watch=1");
                    let verb = match m.as_str() {
                        _ if watch => "WATCH".to_string(),
                        "GET" if parts.len() == i + 1 => "LIST".to_string(),
                        "PATCH" if p.contains("fieldManager") && p.contains("force") => "APPLY".to_string(),
                        _ => m,
                    };
                    *out.entry((verb, res)).or_default() += 1;
                }
                out
            }
        }
    }
}

const RESOURCES: &[&str] = &["imagereplications", "replicainstances", "events", "secrets"];
const READS: &[&str] = &["GET", "LIST", "WATCH"];

fn minus(after: &Counts, before: &Counts) -> Counts {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

/// `verb:resource:count` words, for the BENCH line; each count divided by `per(resource)`.
fn words(c: &Counts, per: impl Fn(&str) -> f64) -> String {
    if c.is_empty() {
        return "none".into();
    }
    c.iter()
        .map(|((v, r), n)| format!("{v}:{r}:{}", fmt_num(*n as f64 / per(r))))
        .collect::<Vec<_>>()
        .join(",")
}

fn fmt_num(v: f64) -> String {
    if v == v.round() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run by make bench"]
async fn controller_scale() {
    let cp = support::envtest::control_plane().expect("make bench needs envtest assets (make tools)");
    scale(Server::Real(cp), false).await
}

/// The same on the real API server with two label shards (half the objects labelled
/// `replication.imageops.io/shard: a`), one process each, as the chart's `shards: [a]` runs.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run by make bench"]
async fn controller_scale_shards() {
    let cp = support::envtest::control_plane().expect("make bench needs envtest assets (make tools)");
    scale(Server::Real(cp), true).await
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run by make bench"]
async fn controller_scale_fake() {
    let (s, _) = support::cluster().await;
    scale(Server::Fake(s), false).await
}

async fn scale(server: Server, shards: bool) {
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

    let dir = tempfile::tempdir().unwrap();
    let (c, kubeconfig, ns, kind) = match &server {
        Server::Real(cp) => {
            let c = cp.client().await;
            let ns = cp.namespace(&c, "bench").await;
            (c, cp.write_kubeconfig(dir.path()), ns, "real")
        }
        Server::Fake(s) => (
            s.client().await,
            s.write_kubeconfig(dir.path()),
            "default".to_string(),
            "fake",
        ),
    };
    let resync_s = resync.to_string();
    let installation = format!("{ns}/bench");
    let start = |identity: &str, selector: Option<&str>| {
        let mut args = vec!["--resync-seconds", resync_s.as_str()];
        if let Some(sel) = selector {
            args.extend(["--installation", installation.as_str(), "--watch-label-selector", sel]);
        }
        Operator::start_on(
            free_port(),
            &kubeconfig,
            dir.path(),
            identity,
            &args,
            &[("RUST_LOG", "warn")],
        )
    };
    let ops: Vec<Operator> = if shards {
        vec![
            start("scale", Some("replication.imageops.io/shard notin (a)")),
            start("scale-a", Some("replication.imageops.io/shard in (a)")),
        ]
    } else {
        vec![start("scale", None)]
    };
    let pids: Vec<u32> = ops.iter().map(|o| o.child.id()).collect();
    let label = |i: usize| -> serde_json::Value {
        if shards && i % 2 == 1 {
            json!({"replication.imageops.io/shard": "a"})
        } else {
            json!({})
        }
    };
    let irs: Api<ImageReplication> = Api::namespaced(c.clone(), &ns);
    let ris: Api<ReplicaInstance> = Api::namespaced(c.clone(), &ns);

    let counts0 = server.counts();
    let t0 = Instant::now();
    let source = format!("{}/team/web:1", src.host());
    let creates = futures::stream::iter(0..n_ir)
        .map(|i| {
            let (irs, source, dst_url, ns) = (irs.clone(), source.clone(), dst.url(), ns.clone());
            async move {
                let o: ImageReplication = serde_json::from_value(json!({
                    "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ImageReplication",
                    "metadata": {"name": format!("ir-{i:05}"), "namespace": ns, "labels": label(i)},
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
            "metadata": {"name": format!("ri-{i:03}"), "namespace": ns, "labels": label(i)},
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
    let mut peak_rss = vec![0; pids.len()];
    let sample = |peak: &mut Vec<u64>| {
        for (p, pid) in peak.iter_mut().zip(&pids) {
            *p = (*p).max(rss_kib(*pid).0);
        }
    };
    let ready_s = loop {
        sample(&mut peak_rss);
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
    // Writes on the way to Ready, per object, by verb and resource (the bench's own creates
    // are the POSTs; the rest is the operator's).
    let to_ready = minus(&server.counts(), &counts0);
    let to_ready_writes: Counts = to_ready
        .iter()
        .filter(|((v, _), _)| !READS.contains(&v.as_str()))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
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
    let api_before = server.counts();
    let mut buckets = Vec::new();
    let mut last = dst.requests().len();
    let started = Instant::now();
    while started.elapsed() < idle {
        tokio::time::sleep(Duration::from_secs(10).min(idle)).await;
        sample(&mut peak_rss);
        let now = dst.requests().len();
        buckets.push(now - last);
        last = now;
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let idle_counts = minus(&server.counts(), &api_before);
    let writes: u64 = idle_counts
        .iter()
        .filter(|((v, _), _)| !READS.contains(&v.as_str()))
        .map(|(_, n)| n)
        .sum();
    let registry_idle: usize = buckets.iter().sum();
    let hwms: Vec<u64> = pids
        .iter()
        .zip(&peak_rss)
        .map(|(pid, p)| rss_kib(*pid).1.max(*p))
        .collect();
    let hwm = hwms.iter().copied().max().unwrap_or(0);
    let each = hwms
        .iter()
        .map(|h| (h / 1024).to_string())
        .collect::<Vec<_>>()
        .join("/");

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
    println!(
        "BENCH scale server={kind} processes={} peak_rss_mib_each={each} irs={n_ir} ris={n_ri} resync_s={resync} created_s={created_s:.1} ready_s={ready_s:.1} peak_rss_mib={} uploaded={uploaded} mounted={mounted} writes_per_object={} idle_s={:.0} idle_api_per_min={} idle_writes={writes} idle_registry_per_min={} registry_per_10s={} delete_s={delete_s:.1}",
        pids.len(),
        hwm / 1024,
        // Per object of the kind the resource is (Events: per object of either kind).
        words(&to_ready_writes, |r| if r.starts_with("imagereplications") {
            n_ir as f64
        } else if r.starts_with("replicainstances") {
            n_ri as f64
        } else {
            (n_ir + n_ri) as f64
        }),
        minutes * 60.0,
        words(&idle_counts, |_| minutes),
        per_min(registry_idle),
        buckets.iter().map(|b| b.to_string()).collect::<Vec<_>>().join("/"),
    );
}
