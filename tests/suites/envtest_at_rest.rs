//! At rest nothing is written, counted by a real `kube-apiserver` itself
//! (`apiserver_request_total` by verb and resource). On a control plane of its own
//! ([`envtest::quiet_control_plane`]), so that it serves no other suite's requests while it
//! counts (the counters are server-wide).

use crate::support;

use std::time::Duration;

use image_replication_operator::api::v1alpha1::ReplicaPhase;
use image_replication_operator::api::{ImageReplication, ReplicaInstance};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use support::clouds::{Kind, Stand};
use support::envtest;
use support::operator::{Operator, eventually, free_port};
use support::registry::TestRegistry;

const WAIT: Duration = Duration::from_secs(90);
/// What the operator's objects and their neighbours are called in the server's counters.
const RESOURCES: &[&str] = &[
    "imagereplications",
    "replicainstances",
    "events",
    "secrets",
    "leases",
    "configmaps",
];
const READS: &[&str] = &["GET", "LIST", "WATCH"];

#[tokio::test(flavor = "multi_thread")]
async fn at_rest_the_real_server_counts_no_write_for_either_kind() {
    let Some(cp) = envtest::quiet_control_plane() else {
        return;
    };
    let c = cp.client().await;
    let ns = cp.namespace(&c, "rest").await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b, replica) = (TestRegistry::start(), TestRegistry::start(), TestRegistry::start());
    a.seed("team/web", "1.4", &["--sign"]);
    a.seed("team-a/api", "v1", &["--platforms", "linux/amd64", "--seed", "3"]);
    // Drift checks every 2 s, a full replica sync every 30 s (the shortest allowed): many at-rest passes while we count.
    let _op = Operator::start_on(
        free_port(),
        &cp.write_kubeconfig(dir.path()),
        dir.path(),
        "op-a",
        &["--namespace", &ns, "--leader-elect", "--resync-seconds", "2"],
        &[("POD_NAMESPACE", ns.as_str())],
    );
    let irs: Api<ImageReplication> = Api::namespaced(c.clone(), &ns);
    let ris: Api<ReplicaInstance> = Api::namespaced(c.clone(), &ns);
    let ir: ImageReplication = serde_json::from_value(json!({
        "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ImageReplication",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "provider": {"kind": "oci"},
            "source": {"region": "region-a", "reference": format!("{}/team/web:1.4", a.host())},
            "destinations": [{"region": "region-b", "registry": b.url()}],
            "publish": {"configMapName": "web-images"}
        }
    }))
    .unwrap();
    let ri: ReplicaInstance = serde_json::from_value(json!({
        "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ReplicaInstance",
        "metadata": {"name": "gz-to-sh", "namespace": ns},
        "spec": {
            "primary": {"provider": "oci", "region": "ap-guangzhou", "registry": a.url()},
            "region": "ap-shanghai",
            "replica": {"registry": replica.url()},
            "sync": {"interval": "30s", "filters": [{"repositories": ["team-a/**"]}]}
        }
    }))
    .unwrap();
    // A VM object that follows the newest `golden-*` image on the ECS stand-in: its source is
    // looked up again every minute, and a look that finds the same image writes nothing.
    let ecs = Stand::start(Kind::Alibaba).await;
    let (src_region, dst_region, data, _) = ecs.account();
    ecs.add(src_region, "golden-1", 20, json!({}));
    support::secret_in(&c, &ns, "ali", &data).await;
    let golden: ImageReplication = serde_json::from_value(json!({
        "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ImageReplication",
        "metadata": {"name": "golden", "namespace": ns},
        "spec": {
            "provider": {"kind": "alibaba", "credentialsSecretRef": {"name": "ali"}, "endpoint": ecs.url},
            "source": {"region": src_region, "imageName": "golden-*", "follow": "Newest", "checkInterval": "1m"},
            "destinations": [{"region": dst_region}],
            "retention": {"keep": 2},
            "publish": {"configMapName": "golden-images"}
        }
    }))
    .unwrap();
    irs.create(&PostParams::default(), &ir).await.unwrap();
    irs.create(&PostParams::default(), &golden).await.unwrap();
    ris.create(&PostParams::default(), &ri).await.unwrap();
    for name in ["web", "golden"] {
        eventually(WAIT, &format!("{name} Ready"), || async {
            let st = irs.get(name).await.ok()?.status?;
            st.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        })
        .await;
    }
    eventually(WAIT, "gz-to-sh InSync", || async {
        let st = ris.get("gz-to-sh").await.ok()?.status?;
        (st.phase == Some(ReplicaPhase::InSync)).then_some(())
    })
    .await;
    // The last Events of the way to Ready may still be on their way.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The published ConfigMap is there (written once, on the way to Ready).
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(c.clone(), &ns);
    let cm = cms.get("web-images").await.unwrap();
    assert!(cm.data.unwrap_or_default()["region-b"].contains("/team/web@sha256:"));

    let rv = |o: Option<String>| o.unwrap_or_default();
    let ir_rv = rv(irs.get("web").await.unwrap().metadata.resource_version);
    let ri_rv = rv(ris.get("gz-to-sh").await.unwrap().metadata.resource_version);
    let golden_rv = rv(irs.get("golden").await.unwrap().metadata.resource_version);
    let looks = || {
        ecs.calls("DescribeImages")
            .iter()
            .filter(|r| r.params.contains_key("ImageOwnerAlias"))
            .count()
    };
    let (checks_before, looks_before) = (b.requests().len() + replica.requests().len(), looks());
    let before = cp.request_totals(RESOURCES);
    // Longer than the followed source's checkInterval (1m): it is looked up again meanwhile.
    let quiet = Duration::from_secs(65);
    tokio::time::sleep(quiet).await;
    let after = cp.request_totals(RESOURCES);
    let checks = b.requests().len() + replica.requests().len() - checks_before;
    assert!(
        looks() > looks_before,
        "the followed source was not looked up again while we counted"
    );

    let d = envtest::request_delta(&before, &after);
    eprintln!("requests to the API server in {quiet:?} at rest (verb, resource): {d:?}");
    eprintln!("registry requests by the drift checks and syncs meanwhile: {checks}");
    assert!(
        checks > 0,
        "no drift check or sync ran while we counted: the check would prove nothing"
    );
    let writes: Vec<_> = d
        .iter()
        .filter(|((verb, res), _)| !READS.contains(&verb.as_str()) && !res.starts_with("leases"))
        .collect();
    assert!(writes.is_empty(), "writes at rest: {writes:?}");
    // Lease writes are the leader's renewals (every 5 s) and the API server's own identity
    // Lease in kube-system (every 10 s; the counters are server-wide): nothing else is written.
    let renewals: u64 = d
        .iter()
        .filter(|((verb, res), _)| res.starts_with("leases") && !READS.contains(&verb.as_str()))
        .map(|(_, n)| n)
        .sum();
    assert!(
        renewals <= quiet.as_secs() / 5 + quiet.as_secs() / 10 + 2,
        "lease writes: {renewals}"
    );
    assert_eq!(rv(irs.get("web").await.unwrap().metadata.resource_version), ir_rv);
    assert_eq!(rv(ris.get("gz-to-sh").await.unwrap().metadata.resource_version), ri_rv);
    assert_eq!(
        rv(irs.get("golden").await.unwrap().metadata.resource_version),
        golden_rv
    );
    // And the counters do count this kind's writes: a spec change is a write the server sees.
    let before = cp.request_totals(&["imagereplications"]);
    let mut changed = irs.get("web").await.unwrap();
    changed.spec.suspend = true;
    irs.replace("web", &PostParams::default(), &changed).await.unwrap();
    eventually(WAIT, "the operator's status write counted", || async {
        let d = envtest::request_delta(&before, &cp.request_totals(&["imagereplications"]));
        d.iter()
            .any(|((verb, _), _)| verb == "APPLY" || verb == "PATCH")
            .then_some(())
    })
    .await;
}
