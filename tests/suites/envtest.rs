//! The operator against a real `kube-apiserver` and `etcd` (envtest, `tests/support/envtest.rs`):
//! the CRDs applied server-side from `crds/` and from the chart, every CEL rule refused by the
//! real server with its message, an oci copy to Ready with Events and printer columns,
//! finalizers and `deletionPolicy`, a ReplicaInstance sync, an OpenStack copy on the real
//! Keystone and Glance, leader election and fencing on real Leases, and the operator run as the
//! chart's ServiceAccount under its RBAC. One control plane for this binary; every test has its
//! own namespace and its own operator (`--namespace`, its Lease in that namespace too).
//! "Nothing written at rest" counted by the server itself is `tests/suites/envtest_at_rest.rs` (its own
//! binary, so no other test's requests are counted).

use crate::support;

use std::time::Duration;

use image_replication_operator::api::v1alpha1::{DestinationPhase, ReplicaPhase};
use image_replication_operator::api::{ImageReplication, ReplicaInstance};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use support::envtest::{self, ControlPlane};
use support::operator::{Operator, eventually, free_port};
use support::registry::TestRegistry;

const WAIT: Duration = Duration::from_secs(90);
/// Drift checks every 2 s, copies polled every 1-2 s.
const FAST: &[&str] = &[
    "--resync-seconds",
    "2",
    "--poll-min-seconds",
    "1",
    "--poll-max-seconds",
    "2",
];

/// One test's share of the control plane: an admin client, a namespace, a scratch directory.
struct Scene {
    cp: &'static ControlPlane,
    c: Client,
    ns: String,
    dir: tempfile::TempDir,
}

impl Scene {
    async fn new(prefix: &str) -> Option<Self> {
        let cp = envtest::control_plane()?;
        let c = cp.client().await;
        let ns = cp.namespace(&c, prefix).await;
        Some(Self {
            cp,
            c,
            ns,
            dir: tempfile::tempdir().unwrap(),
        })
    }

    /// The operator, as admin, watching only this namespace, its Lease here too.
    fn operator(&self, identity: &str, extra: &[&str]) -> Operator {
        let kc = self.cp.write_kubeconfig(self.dir.path());
        self.operator_as(&kc, identity, extra)
    }

    fn operator_as(&self, kubeconfig: &std::path::Path, identity: &str, extra: &[&str]) -> Operator {
        let mut args = vec!["--namespace", self.ns.as_str()];
        args.extend_from_slice(extra);
        Operator::start_on(
            free_port(),
            kubeconfig,
            self.dir.path(),
            identity,
            &args,
            &[("POD_NAMESPACE", self.ns.as_str())],
        )
    }

    /// One process of a label shard of the installation `<ns>/iro`: leader-elected on `lease`,
    /// reconciling the objects `selector` matches, polling copies every second.
    fn shard(&self, identity: &str, lease: &str, selector: &str) -> Operator {
        let installation = format!("{}/iro", self.ns);
        let args = [
            "--leader-elect",
            "--lease-name",
            lease,
            "--installation",
            installation.as_str(),
            "--watch-label-selector",
            selector,
            "--poll-min-seconds",
            "1",
            "--poll-max-seconds",
            "1",
        ];
        self.operator(identity, &args)
    }

    fn irs(&self) -> Api<ImageReplication> {
        Api::namespaced(self.c.clone(), &self.ns)
    }

    async fn reasons(&self, name: &str) -> Vec<String> {
        support::events_in(&self.c, &self.ns, name)
            .await
            .into_iter()
            .filter_map(|e| e.reason)
            .collect()
    }

    /// The notes of `name`'s Events of `reason`, once there are `n` of them.
    async fn notes(&self, name: &str, reason: &str, n: usize) -> Vec<String> {
        eventually(WAIT, &format!("{n} Events {reason} for {name}"), || async {
            let notes: Vec<String> = support::events_in(&self.c, &self.ns, name)
                .await
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some(reason))
                .filter_map(|e| e.note)
                .collect();
            (notes.len() >= n).then_some(notes)
        })
        .await
    }

    async fn wait_event(&self, name: &str, reason: &str) {
        eventually(WAIT, &format!("Event {reason} for {name}"), || async {
            self.reasons(name).await.iter().any(|r| r == reason).then_some(())
        })
        .await
    }
}

fn is_ready(conds: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> bool {
    conds.iter().any(|c| c.type_ == "Ready" && c.status == "True")
}

async fn wait_ready(api: &Api<ImageReplication>, name: &str) -> ImageReplication {
    eventually(WAIT, &format!("{name} Ready"), || async {
        let o = api.get(name).await.ok()?;
        is_ready(&o.status.as_ref()?.conditions).then_some(o)
    })
    .await
}

/// An oci ImageReplication of `team/web:1.4` from `a` into `repo` of `b`.
fn oci_object(ns: &str, name: &str, a: &TestRegistry, b: &TestRegistry, repo: &str, policy: &str) -> ImageReplication {
    serde_json::from_value(json!({
        "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ImageReplication",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "provider": {"kind": "oci"},
            "source": {"region": "region-a", "reference": format!("{}/team/web:1.4", a.host())},
            "destinations": [{"region": "region-b", "registry": b.url(), "name": repo}],
            "deletionPolicy": policy
        }
    }))
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// CRDs and CEL

/// Every CEL rule message in the generated CRDs, by kind.
fn cel_messages() -> Vec<(String, String)> {
    fn walk(v: &serde_yaml::Value, kind: &str, out: &mut Vec<(String, String)>) {
        match v {
            serde_yaml::Value::Mapping(m) => {
                if let Some(serde_yaml::Value::Sequence(rules)) = m.get("x-kubernetes-validations") {
                    for r in rules {
                        out.push((kind.to_string(), r["message"].as_str().unwrap().to_string()));
                    }
                }
                m.values().for_each(|x| walk(x, kind, out));
            }
            serde_yaml::Value::Sequence(s) => s.iter().for_each(|x| walk(x, kind, out)),
            _ => {}
        }
    }
    let mut out = vec![];
    for f in ["imagereplications", "replicainstances"] {
        let path = format!("{}/crds/{f}.replication.imageops.io.yaml", env!("CARGO_MANIFEST_DIR"));
        let doc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let kind = doc["spec"]["names"]["kind"].as_str().unwrap().to_string();
        walk(&doc["spec"]["versions"][0]["schema"], &kind, &mut out);
    }
    out
}

fn image_spec(patch: impl FnOnce(&mut Value)) -> Value {
    let mut s = json!({
        "provider": {"kind": "huawei", "agency": "ims_admin", "credentialsSecretRef": {"name": "hw"}},
        "source": {"region": "cn-north-4", "imageId": "img-1"},
        "destinations": [{"region": "cn-east-3"}, {"region": "cn-south-1", "name": "web-copy"}]
    });
    patch(&mut s);
    s
}

fn replica_spec(patch: impl FnOnce(&mut Value)) -> Value {
    let mut s = json!({
        "primary": {"provider": "oci", "region": "ap-guangzhou", "registry": "https://gz.example.com"},
        "region": "ap-shanghai",
        "replica": {"registry": "https://sh.example.com"},
        "sync": {"interval": "10m", "bandwidthLimit": "200Mi", "maxConcurrentTransfers": 4}
    });
    patch(&mut s);
    s
}

/// (kind, the start of the rule's message, a spec that breaks only that rule).
fn cel_cases() -> Vec<(&'static str, &'static str, Value)> {
    let openstack = json!({"kind": "openstack", "credentialsSecretRef": {"name": "os"}});
    let os = openstack.clone();
    let os2 = openstack.clone();
    vec![
        (
            "ImageReplication",
            "regions must be region ids such as cn-north-4",
            image_spec(|s| s["source"]["region"] = json!("CN_North_4")),
        ),
        (
            "ImageReplication",
            "destinations[].region must differ from source.region",
            image_spec(|s| s["destinations"] = json!([{"region": "cn-north-4"}])),
        ),
        (
            "ImageReplication",
            "source.reference is required when provider.kind is oci",
            image_spec(|s| {
                s["provider"] = json!({"kind": "oci"});
                s["destinations"] = json!([{"region": "cn-east-3", "registry": "https://r.example.com"}]);
            }),
        ),
        (
            "ImageReplication",
            "source.reference is only for provider.kind oci",
            image_spec(|s| s["source"] = json!({"region": "cn-north-4", "reference": "r.example.com/a:1"})),
        ),
        (
            "ImageReplication",
            "every destination needs registry when provider.kind is oci",
            image_spec(|s| {
                s["provider"] = json!({"kind": "oci"});
                s["source"] = json!({"region": "cn-north-4", "reference": "r.example.com/a:1"});
            }),
        ),
        (
            "ImageReplication",
            "at least one destination is required",
            image_spec(|s| s["destinations"] = json!([])),
        ),
        (
            "ImageReplication",
            "destination regions must be unique",
            image_spec(|s| s["destinations"] = json!([{"region": "cn-east-3"}, {"region": "cn-east-3"}])),
        ),
        (
            "ImageReplication",
            "name must be 2 to 128 characters long",
            image_spec(|s| s["destinations"] = json!([{"region": "cn-east-3", "name": "x"}])),
        ),
        (
            "ImageReplication",
            "region must be a region id such as cn-east-3",
            image_spec(|s| {
                s["provider"] = os;
                s["source"] = json!({"region": "RegionOne", "imageId": "img-1"});
                s["destinations"] = json!([{"region": "Region/Two"}]);
            }),
        ),
        (
            "ImageReplication",
            "retention.keep must be between 1 and 100",
            image_spec(|s| s["retention"] = json!({"keep": 0})),
        ),
        (
            "ImageReplication",
            "maxConcurrentCopies must be between 1 and 100",
            image_spec(|s| s["provider"]["maxConcurrentCopies"] = json!(0)),
        ),
        (
            "ImageReplication",
            "replicaCount must be between 1 and 100",
            image_spec(|s| s["destinations"][0]["replicaCount"] = json!(101)),
        ),
        (
            "ImageReplication",
            "exactly one of source.imageId, source.imageName or source.reference",
            image_spec(|s| s["source"]["imageName"] = json!("web")),
        ),
        (
            "ImageReplication",
            "region must be a region id such as cn-north-4",
            image_spec(|s| {
                s["provider"] = os2;
                s["source"] = json!({"region": "Region/One", "imageId": "img-1"});
                s["destinations"] = json!([{"region": "RegionTwo"}]);
            }),
        ),
        (
            "ReplicaInstance",
            "region (the replica region) must differ from primary.region",
            replica_spec(|s| s["region"] = json!("ap-guangzhou")),
        ),
        (
            "ReplicaInstance",
            "primary.registry and replica.registry are required",
            replica_spec(|s| {
                s.as_object_mut().unwrap().remove("replica");
            }),
        ),
        (
            "ReplicaInstance",
            "primary.instanceId is required when primary.provider is tencent",
            replica_spec(|s| s["primary"]["provider"] = json!("tencent")),
        ),
        (
            "ReplicaInstance",
            "primary.region must be a region id",
            replica_spec(|s| s["primary"]["region"] = json!("AP_GZ")),
        ),
        (
            "ReplicaInstance",
            "region must be a region id such as ap-shanghai",
            replica_spec(|s| s["region"] = json!("AP_SH")),
        ),
        (
            "ReplicaInstance",
            "bandwidthLimit must be a quantity",
            replica_spec(|s| s["sync"]["bandwidthLimit"] = json!("fast")),
        ),
        (
            "ReplicaInstance",
            "interval must be a duration",
            replica_spec(|s| s["sync"]["interval"] = json!("often")),
        ),
        (
            "ReplicaInstance",
            "maxConcurrentTransfers must be between 1 and 64",
            replica_spec(|s| s["sync"]["maxConcurrentTransfers"] = json!(0)),
        ),
    ]
}

/// A server-side dry-run create of `spec` as `kind`: the refusal's (code, message), or None.
async fn dry_run(c: &Client, ns: &str, kind: &str, spec: Value) -> Option<(u16, String)> {
    let obj = json!({
        "apiVersion": "replication.imageops.io/v1alpha1", "kind": kind,
        "metadata": {"name": "cel-case", "namespace": ns}, "spec": spec
    });
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let r = match kind {
        "ImageReplication" => Api::<ImageReplication>::namespaced(c.clone(), ns)
            .create(&pp, &serde_json::from_value(obj).unwrap())
            .await
            .map(|_| ()),
        _ => Api::<ReplicaInstance>::namespaced(c.clone(), ns)
            .create(&pp, &serde_json::from_value(obj).unwrap())
            .await
            .map(|_| ()),
    };
    match r {
        Ok(()) => None,
        Err(kube::Error::Api(e)) => Some((e.code, e.message)),
        Err(e) => panic!("{kind}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_cel_rule_is_refused_by_the_real_server_with_its_message() {
    let Some(sc) = Scene::new("cel").await else { return };
    let cases = cel_cases();
    let rules = cel_messages();
    // Every rule the CRDs carry has a case here: a new rule without one fails this test.
    for (kind, msg) in &rules {
        assert!(
            cases.iter().any(|(k, start, _)| k == kind && msg.starts_with(start)),
            "no real-server case for the {kind} rule {msg:?}"
        );
    }
    for kind in ["ImageReplication", "ReplicaInstance"] {
        let valid = if kind == "ImageReplication" {
            image_spec(|_| {})
        } else {
            replica_spec(|_| {})
        };
        assert_eq!(
            dry_run(&sc.c, &sc.ns, kind, valid).await,
            None,
            "the valid {kind} is accepted"
        );
    }
    for (kind, start, spec) in cases {
        let (code, message) = dry_run(&sc.c, &sc.ns, kind, spec.clone())
            .await
            .unwrap_or_else(|| panic!("{kind} accepted, expected {start:?}: {spec}"));
        assert_eq!(code, 422, "{message}");
        let full = rules
            .iter()
            .find(|(k, m)| k == kind && m.starts_with(start))
            .map(|(_, m)| m.clone())
            .unwrap();
        assert!(message.contains(&full), "{kind}: {message:?} lacks {full:?}");
        let others: Vec<_> = rules
            .iter()
            .filter(|(k, m)| k == kind && *m != full && message.contains(m.as_str()))
            .collect();
        assert!(
            others.is_empty(),
            "{kind} {start:?}: other rules failed too: {others:?}"
        );
    }
}

/// The whole chart, rendered for a release in `ns` that watches only `ns`, as YAML documents.
fn chart_docs(release: &str, ns: &str) -> Vec<Value> {
    let yaml = support::helm(&[
        "template",
        release,
        "charts/image-replication-operator",
        "--namespace",
        ns,
        "--set",
        &format!("watchNamespace={ns}"),
    ]);
    yaml.split("\n---")
        .filter_map(|d| serde_yaml::from_str::<Value>(d).ok())
        .filter(|v| v.is_object())
        .collect()
}

fn apply_docs(cp: &ControlPlane, docs: &[&Value], manager: &str) {
    let text: Vec<String> = docs.iter().map(|d| serde_yaml::to_string(d).unwrap()).collect();
    let out = cp.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            &format!("--field-manager={manager}"),
            "-f",
            "-",
        ],
        &text.join("---\n"),
    );
    assert!(out.status.success(), "apply: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chart_and_its_crds_apply_server_side_beside_crds_dir() {
    let Some(sc) = Scene::new("chart").await else { return };
    let crds = || {
        let out = sc.cp.kubectl_ok(&["get", "crd", "-o", "json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["spec"]["group"] == "replication.imageops.io")
            .map(|c| {
                (
                    c["metadata"]["name"].clone(),
                    c["metadata"]["generation"].clone(),
                    c["spec"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    let before = crds();
    assert_eq!(before.len(), 2, "crds/ applied at start");
    // The whole chart (CRDs from its templates, RBAC, Deployment, Service…), server-side, as a
    // second field manager: no conflict with crds/, and the CRDs' specs do not change.
    let docs = chart_docs("chart-rel", &sc.ns);
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert!(
        kinds.contains(&"CustomResourceDefinition") && kinds.contains(&"Deployment"),
        "{kinds:?}"
    );
    apply_docs(sc.cp, &docs.iter().collect::<Vec<_>>(), "helm");
    let after = crds();
    assert_eq!(
        before, after,
        "the chart's CRDs are the same as crds/ (same spec, same generation)"
    );
    let crd = sc.cp.kubectl_ok(&[
        "get",
        "crd",
        "imagereplications.replication.imageops.io",
        "-o",
        "json",
        "--show-managed-fields",
    ]);
    let crd: Value = serde_json::from_str(&crd).unwrap();
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
        "the chart's keep annotation"
    );
    let managers: Vec<&str> = crd["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(
        managers.contains(&"envtest") && managers.contains(&"helm"),
        "{managers:?}"
    );
    let established = crd["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Established" && c["status"] == "True");
    assert!(established);
}

// ---------------------------------------------------------------------------------------------
// oci copy, printer columns, finalizers and deletionPolicy

#[tokio::test(flavor = "multi_thread")]
async fn an_oci_copy_is_ready_with_events_columns_and_each_deletion_policy() {
    let Some(sc) = Scene::new("oci").await else { return };
    let (a, b) = (TestRegistry::start(), TestRegistry::start());
    let (digest, _) = a.seed("team/web", "1.4", &["--sign"]);
    let _op = sc.operator("op-a", &["--resync-seconds", "2"]);
    let api = sc.irs();
    api.create(
        &PostParams::default(),
        &oci_object(&sc.ns, "web", &a, &b, "team/web", "Delete"),
    )
    .await
    .unwrap();
    api.create(
        &PostParams::default(),
        &oci_object(&sc.ns, "kept", &a, &b, "kept/web", "Retain"),
    )
    .await
    .unwrap();
    let web = wait_ready(&api, "web").await;
    wait_ready(&api, "kept").await;
    assert_eq!(web.finalizers(), &["replication.imageops.io/cleanup".to_string()]);
    let st = web.status.unwrap();
    assert_eq!(st.summary.as_deref(), Some("1/1 available"));
    assert_eq!(st.observed_generation, Some(1));
    let d = &st.destinations[0];
    assert_eq!(
        (d.phase, d.digest.as_deref()),
        (DestinationPhase::Available, Some(digest.as_str()))
    );
    assert_eq!(
        b.digest_of("team/web", "1.4"),
        Some(digest.clone()),
        "skopeo sees the copy"
    );
    assert_eq!(b.digest_of("kept/web", "1.4"), Some(digest.clone()));
    sc.wait_event("web", "DestinationAvailable").await;

    // Printer columns as kubectl shows them (the server's Table rendering).
    // Reason has priority 1: only `-o wide` shows it.
    let table = sc.cp.kubectl_ok(&["get", "imagereplications", "-n", &sc.ns]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "SOURCE", "SUMMARY", "AGE"], "{table}");
    let row = table.lines().find(|l| l.starts_with("web ")).unwrap();
    assert!(row.contains(" True ") && row.contains("1/1 available"), "{table}");
    let wide = sc
        .cp
        .kubectl_ok(&["get", "imagereplications", "-n", &sc.ns, "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "READY", "SOURCE", "SUMMARY", "REASON", "AGE"],
        "{wide}"
    );
    let row = wide.lines().find(|l| l.starts_with("web ")).unwrap();
    assert!(row.contains(" Succeeded "), "{wide}");
    let short = sc.cp.kubectl_ok(&["get", "imgrep", "-n", &sc.ns, "-o", "name"]);
    assert!(
        short.contains("imagereplication.replication.imageops.io/web"),
        "short name: {short}"
    );

    // Delete: the copy goes first, then the object; Retain: the copy stays.
    api.delete("web", &DeleteParams::default()).await.unwrap();
    api.delete("kept", &DeleteParams::default()).await.unwrap();
    for name in ["web", "kept"] {
        eventually(WAIT, &format!("{name} gone"), || async {
            api.get_opt(name).await.unwrap().is_none().then_some(())
        })
        .await;
    }
    assert_eq!(
        b.digest_of("team/web", "1.4"),
        None,
        "deletionPolicy Delete removed the copy"
    );
    assert_eq!(b.digest_of("kept/web", "1.4"), Some(digest.clone()), "Retain kept it");
    assert_eq!(a.digest_of("team/web", "1.4"), Some(digest), "the source untouched");
    sc.wait_event("web", "CleanupComplete").await;
}

// ---------------------------------------------------------------------------------------------
// ReplicaInstance

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_instance_syncs_and_is_in_sync() {
    let Some(sc) = Scene::new("replica").await else { return };
    let (primary, replica) = (TestRegistry::start(), TestRegistry::start());
    let one = ["--platforms", "linux/amd64"];
    primary.seed("team-a/web", "v1", &one);
    primary.seed("team-a/api", "v1", &["--platforms", "linux/amd64", "--seed", "3"]);
    primary.seed("team-b/x", "v1", &one);
    let _op = sc.operator("op-a", &[]);
    let ri: Api<ReplicaInstance> = Api::namespaced(sc.c.clone(), &sc.ns);
    let obj: ReplicaInstance = serde_json::from_value(json!({
        "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ReplicaInstance",
        "metadata": {"name": "gz-to-sh", "namespace": sc.ns},
        "spec": {
            "primary": {"provider": "oci", "region": "ap-guangzhou", "registry": primary.url()},
            "region": "ap-shanghai",
            "replica": {"registry": replica.url()},
            "sync": {"interval": "1h", "filters": [{"repositories": ["team-a/**"]}]}
        }
    }))
    .unwrap();
    ri.create(&PostParams::default(), &obj).await.unwrap();
    let st = eventually(WAIT, "InSync", || async {
        let st = ri.get("gz-to-sh").await.ok()?.status?;
        (st.phase == Some(ReplicaPhase::InSync)).then_some(st)
    })
    .await;
    assert_eq!((st.repositories, st.artifacts, st.failed), (Some(2), Some(2), Some(0)));
    assert!(is_ready(&st.conditions));
    for repo in ["team-a/web", "team-a/api"] {
        assert_eq!(replica.digest_of(repo, "v1"), primary.digest_of(repo, "v1"), "{repo}");
    }
    assert_eq!(replica.digest_of("team-b/x", "v1"), None, "filtered out");
    let table = sc.cp.kubectl_ok(&["get", "replicainstances", "-n", &sc.ns]);
    assert!(table.contains("gz-to-sh") && table.contains("InSync"), "{table}");
}

// ---------------------------------------------------------------------------------------------
// OpenStack on the real Keystone and Glance

#[tokio::test(flavor = "multi_thread")]
async fn an_openstack_copy_on_real_keystone_and_glance() {
    use support::openstack::{Cloud, Glance, make_image};
    let Some(sc) = Scene::new("openstack").await else {
        return;
    };
    let ks = support::keystone::Keystone::start().await;
    let (one, two) = (Glance::start(), Glance::start());
    let cloud = Cloud::with_keystone(ks.api.clone(), &[("RegionOne", one.url()), ("RegionTwo", two.url())]).await;
    ks.add_region("RegionTwo").await;
    let glance = ks.add_image_service().await;
    for iface in ["public", "internal", "admin"] {
        ks.add_endpoint(&glance, "RegionOne", iface, &cloud.proxy_url("RegionOne"))
            .await;
    }
    ks.add_endpoint(&glance, "RegionTwo", "public", &cloud.proxy_url("RegionTwo"))
        .await;
    let file = make_image(sc.dir.path(), "base", "qcow2", 4);
    let src = one.upload("base", "qcow2", &file, json!({"os_distro": "debian"})).await;
    support::secret_in(
        &sc.c,
        &sc.ns,
        "os-creds",
        &[
            ("authUrl", &cloud.auth_url()),
            ("username", "admin"),
            ("password", support::keystone::ADMIN_PASSWORD),
            ("projectName", "admin"),
        ],
    )
    .await;
    let _op = sc.operator("op-a", FAST);
    let api = sc.irs();
    let obj: ImageReplication = serde_json::from_value(json!({
        "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ImageReplication",
        "metadata": {"name": "base", "namespace": sc.ns},
        "spec": {
            "provider": {"kind": "openstack", "credentialsSecretRef": {"name": "os-creds"}},
            "source": {"region": "RegionOne", "imageName": "base"},
            "destinations": [{"region": "RegionTwo"}],
            "deletionPolicy": "Delete"
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
    let st = wait_ready(&api, "base").await.status.unwrap();
    assert_eq!(
        st.source.as_ref().and_then(|s| s.image_id.as_deref()),
        Some(src.as_str())
    );
    let copies = two.copies_in("RegionTwo").await;
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0]["os_distro"], "debian");
    assert_eq!(copies[0]["id"].as_str(), st.destinations[0].image_id.as_deref());
    sc.wait_event("base", "DestinationAvailable").await;
    api.delete("base", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "base gone", || async {
        api.get_opt("base").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(
        two.copies_in("RegionTwo").await.is_empty(),
        "deletionPolicy Delete removed the copy"
    );
    assert!(one.image(&src).await.is_some(), "the source untouched");
}

// ---------------------------------------------------------------------------------------------
// Leader election and fencing on real Leases

/// Copy `team/web:1.4` from `a` into `name/web` of `b` as object `name`: Ready, and every
/// Event about it written by operator `identity` (the leader) alone.
async fn copied_by(sc: &Scene, name: &str, a: &TestRegistry, b: &TestRegistry, identity: &str) {
    let api = sc.irs();
    let repo = format!("{name}/web");
    api.create(&PostParams::default(), &oci_object(&sc.ns, name, a, b, &repo, "Retain"))
        .await
        .unwrap();
    wait_ready(&api, name).await;
    let reporters: Vec<_> = support::events_with(&sc.c, &sc.ns, name, &["DestinationAvailable"])
        .await
        .into_iter()
        .filter_map(|e| e.reporting_instance)
        .collect();
    assert!(
        !reporters.is_empty() && reporters.iter().all(|r| r == identity),
        "{name}: {reporters:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_operators_elect_one_leader_and_a_fenced_one_stops() {
    let Some(sc) = Scene::new("leader").await else { return };
    let (a_reg, b_reg) = (TestRegistry::start(), TestRegistry::start());
    a_reg.seed("team/web", "1.4", &[]);
    let leases: Api<Lease> = Api::namespaced(sc.c.clone(), &sc.ns);
    let holder = || async {
        leases
            .get_opt("image-replication-operator")
            .await
            .unwrap()
            .and_then(|l| l.spec?.holder_identity)
    };
    let mut a = sc.operator("op-a", &["--leader-elect"]);
    eventually(WAIT, "op-a leads", || async { holder().await.filter(|h| h == "op-a") }).await;
    let mut b = sc.operator("op-b", &["--leader-elect"]);
    eventually(WAIT, "op-b is a ready standby", || async {
        b.http_get("/readyz").filter(|(c, body)| *c == 200 && body == "standby")
    })
    .await;
    copied_by(&sc, "one", &a_reg, &b_reg, "op-a").await;

    // Fencing: another holder writes the Lease (as a partitioned peer that won would). The
    // leader sees it at its next renewal and stops; nothing else writes meanwhile.
    let lease = leases.get("image-replication-operator").await.unwrap();
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut spec = lease.spec.clone().unwrap();
    spec.holder_identity = Some("intruder".into());
    spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now));
    spec.lease_duration_seconds = Some(6);
    let mut taken = lease.clone();
    taken.spec = Some(spec);
    leases
        .replace("image-replication-operator", &PostParams::default(), &taken)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Ok(Some(st)) = a.child.try_wait() {
            break st.code();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "op-a kept running after losing its Lease:\n{}",
            a.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(code, Some(1), "{}", a.logs());
    assert!(a.logs().contains("leader lease lost"), "{}", a.logs());
    // The standby takes over once the intruder's lease expires, and reconciles.
    eventually(WAIT, "op-b leads", || async { holder().await.filter(|h| h == "op-b") }).await;
    copied_by(&sc, "two", &a_reg, &b_reg, "op-b").await;
    assert_eq!(b.terminate(Duration::from_secs(20)), Some(0));
    assert_eq!(holder().await, None, "released on SIGTERM");
}

// ---------------------------------------------------------------------------------------------
// RBAC: the operator as the chart's ServiceAccount

#[tokio::test(flavor = "multi_thread")]
async fn the_charts_rbac_is_enough_and_each_rule_is_needed() {
    let Some(sc) = Scene::new("rbac").await else { return };
    let (a, b) = (TestRegistry::start(), TestRegistry::start());
    a.seed("team/web", "1.4", &[]);
    let release = format!("{}-iro", sc.ns);
    let docs = chart_docs(&release, &sc.ns);
    let rbac: Vec<&Value> = docs
        .iter()
        .filter(|d| {
            let k = d["kind"].as_str().unwrap_or("");
            matches!(
                k,
                "ServiceAccount" | "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding"
            )
        })
        .collect();
    apply_docs(sc.cp, &rbac, "helm");
    let sa = rbac
        .iter()
        .find(|d| d["kind"] == "ServiceAccount")
        .and_then(|d| d["metadata"]["name"].as_str())
        .unwrap()
        .to_string();
    let kc = sc.cp.service_account_kubeconfig(sc.dir.path(), &sc.ns, &sa);
    support::secret_in(&sc.c, &sc.ns, "unused", &[("k", "v")]).await;

    // A full scenario as the ServiceAccount, with leader election: no Forbidden anywhere. The
    // object publishes its copy in a ConfigMap it owns (spec.publish).
    let mut op = sc.operator_as(&kc, "op-sa", &["--leader-elect"]);
    let api = sc.irs();
    let mut web = oci_object(&sc.ns, "web", &a, &b, "team/web", "Delete");
    web.spec.publish = Some(image_replication_operator::api::v1alpha1::PublishSpec {
        config_map_name: "web-images".into(),
    });
    api.create(&PostParams::default(), &web).await.unwrap();
    let st = wait_ready(&api, "web").await.status.unwrap();
    sc.wait_event("web", "DestinationAvailable").await;
    sc.wait_event("web", "Published").await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(sc.c.clone(), &sc.ns);
    let cm = cms.get("web-images").await.unwrap();
    let digest = st.destinations[0].digest.clone().unwrap();
    assert_eq!(
        cm.data.unwrap_or_default().get("region-b"),
        Some(&format!("{}/team/web@{digest}", b.host())),
        "the ConfigMap names the copy by digest"
    );
    let owner = &cm.metadata.owner_references.unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("ImageReplication", "web"));
    api.delete("web", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "web gone", || async {
        api.get_opt("web").await.unwrap().is_none().then_some(())
    })
    .await;
    let logs = op.logs();
    assert!(logs.contains("starting controllers"), "{logs}");
    assert!(
        !logs.to_lowercase().contains("forbidden"),
        "Forbidden with the chart's RBAC:\n{logs}"
    );
    assert_eq!(op.terminate(Duration::from_secs(20)), Some(0));

    // Take one rule away (status patches): the operator is refused, says so, and writes nothing.
    let role = rbac
        .iter()
        .find(|d| {
            d["kind"] == "Role"
                && d["metadata"]["namespace"] == json!(sc.ns)
                && !d["metadata"]["name"].as_str().unwrap().ends_with("leader-election")
        })
        .unwrap();
    let mut cut = (*role).clone();
    let rules: Vec<Value> = cut["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            !r["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == "imagereplications/status")
        })
        .cloned()
        .collect();
    assert_eq!(rules.len() + 1, cut["rules"].as_array().unwrap().len());
    cut["rules"] = json!(rules);
    apply_docs(sc.cp, &[&cut], "helm");
    let op = sc.operator_as(&kc, "op-cut", &["--leader-elect"]);
    api.create(
        &PostParams::default(),
        &oci_object(&sc.ns, "cut", &a, &b, "cut/web", "Retain"),
    )
    .await
    .unwrap();
    eventually(WAIT, "a Forbidden in the operator's log", || async {
        op.logs().to_lowercase().contains("forbidden").then_some(())
    })
    .await;
    let o = api.get("cut").await.unwrap();
    assert!(o.status.is_none(), "no status can be written: {:?}", o.status);
}

/// The CRD with shareWith installs on the real API server (within its CEL cost budget), the
/// sharing example applies (a same-region destination that only shares), and a duplicate account
/// is refused there (a list keyed by account), before the operator sees it.
#[tokio::test(flavor = "multi_thread")]
async fn the_sharing_example_applies_and_duplicate_accounts_are_refused() {
    let Some(sc) = Scene::new("share").await else { return };
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples/shared-golden-image.yaml");
    sc.cp.kubectl_ok(&["apply", "-n", &sc.ns, "-f", example]);
    let obj = sc.irs().get("golden-ami").await.unwrap();
    assert_eq!(obj.spec.destinations[1].share_with.len(), 1);
    let dup = std::fs::read_to_string(example)
        .unwrap()
        .replace("name: golden-ami", "name: dup")
        .replace("\"444455556666\"", "\"111122223333\"");
    let out = sc.cp.kubectl_stdin(&["apply", "-n", &sc.ns, "-f", "-"], &dup);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Duplicate value") && err.contains("111122223333"), "{err}");
}

/// The golden-image example (publish, a copy window, a share) applies on the real API server.
#[tokio::test(flavor = "multi_thread")]
async fn the_golden_image_example_applies() {
    let Some(sc) = Scene::new("golden").await else { return };
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/examples/golden-image-openstack.yaml"
    );
    sc.cp.kubectl_ok(&["apply", "-n", &sc.ns, "-f", example]);
    let obj = sc.irs().get("golden-base").await.unwrap();
    assert_eq!(
        obj.spec.publish.as_ref().map(|p| p.config_map_name.as_str()),
        Some("golden-base-images")
    );
    let violations = image_replication_operator::validation::image_replication(&obj.spec);
    assert!(violations.is_empty(), "{violations:?}");
}

/// Ask for a look at once (the retry annotation): what a pipeline does after it pushes.
async fn poke(api: &Api<ImageReplication>, name: &str, value: &str) {
    let patch = json!({"metadata": {"annotations": {"replication.imageops.io/retry": value}}});
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
}

/// Images over time on real Glance, through the real API server: an ImageReplication follows
/// the newest `golden-*` image. Each newer upload starts new copies in every region; the
/// published ConfigMap only ever names a copy that is active in Glance, and flips when the new
/// one is; `retention.keep: 2` deletes the oldest copies; deleting the object deletes every copy
/// it kept, never a source.
#[tokio::test(flavor = "multi_thread")]
async fn a_golden_image_pipeline_on_real_glance() {
    use support::openstack::{Cloud, Glance, make_image};
    let Some(sc) = Scene::new("follow").await else { return };
    let (one, two, three) = (Glance::start(), Glance::start(), Glance::start());
    let cloud = Cloud::start(&[
        ("region-one", one.url(), 0),
        ("region-two", two.url(), 0),
        ("region-three", three.url(), 0),
    ])
    .await;
    let file = make_image(sc.dir.path(), "golden", "qcow2", 2);
    one.upload("golden-1", "qcow2", &file, json!({})).await;
    one.upload("base-9", "qcow2", &file, json!({})).await;
    let url = cloud.auth_url();
    let creds = [
        ("authUrl", url.as_str()),
        ("username", "demo"),
        ("password", support::openstack::PASSWORD),
        ("projectName", "demo"),
    ];
    support::secret_in(&sc.c, &sc.ns, "os-creds", &creds).await;
    let _op = sc.operator("op-a", FAST);
    let api = sc.irs();
    let obj: ImageReplication = serde_json::from_value(json!({
        "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ImageReplication",
        "metadata": {"name": "golden", "namespace": sc.ns},
        "spec": {
            "provider": {"kind": "openstack", "credentialsSecretRef": {"name": "os-creds"}},
            "source": {"region": "region-one", "imageName": "golden-*", "follow": "Newest", "checkInterval": "10m"},
            "destinations": [{"region": "region-two"}, {"region": "region-three"}],
            "retention": {"keep": 2},
            "publish": {"configMapName": "golden-images"},
            "deletionPolicy": "Delete"
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(sc.c.clone(), &sc.ns);
    let glances = [("region-two", &two), ("region-three", &three)];

    // Wait for `name` to be the source and every region to have its copy, checking all the way
    // that the ConfigMap names only active images.
    let settle = |name: &'static str| {
        let (api, cms) = (api.clone(), cms.clone());
        async move {
            eventually(WAIT, &format!("{name} copied everywhere"), || async {
                if let Ok(cm) = cms.get("golden-images").await {
                    for (region, g) in glances {
                        if let Some(id) = cm.data.clone().unwrap_or_default().get(region) {
                            let doc = g.image(id).await.expect("a published image exists");
                            assert_eq!(doc["status"], "active", "published {id} in {region}: {doc}");
                        }
                    }
                }
                let o = api.get("golden").await.ok()?;
                let st = o.status.clone()?;
                (st.source.as_ref()?.name.as_deref() == Some(name)
                    && is_ready(&st.conditions)
                    && st.destinations.iter().all(|d| d.phase == DestinationPhase::Available))
                .then_some(st)
            })
            .await
        }
    };
    let st = settle("golden-1").await;
    let v1: Vec<String> = st.destinations.iter().map(|d| d.image_id.clone().unwrap()).collect();
    eventually(WAIT, "golden-1's copy published", || async {
        let cm = cms.get("golden-images").await.ok()?.data?;
        (cm.get("region-two") == Some(&v1[0])).then_some(())
    })
    .await;
    assert!(st.source.as_ref().unwrap().resolved_at.is_some());

    // The pipeline pushes golden-2 (a second later: Glance's created_at has whole seconds).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    one.upload("golden-2", "qcow2", &file, json!({})).await;
    poke(&api, "golden", "pushed-golden-2").await;
    let st = settle("golden-2").await;
    let v2: Vec<String> = st.destinations.iter().map(|d| d.image_id.clone().unwrap()).collect();
    assert!(v2.iter().all(|id| !v1.contains(id)), "new copies");
    // The ConfigMap is written just after the status: it flips.
    eventually(WAIT, "the ConfigMap flipped", || async {
        let cm = cms.get("golden-images").await.ok()?.data?;
        (cm.get("region-two") == Some(&v2[0])).then_some(())
    })
    .await;
    let kept: Vec<&str> = st.previous.iter().map(|c| c.image_id.as_str()).collect();
    assert!(v1.iter().all(|id| kept.contains(&id.as_str())), "{kept:?}");
    assert_eq!(two.copies_in("region-two").await.len(), 2);
    sc.wait_event("golden", "SourceChanged").await;

    // golden-3: keep 2 deletes golden-1's copies.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    one.upload("golden-3", "qcow2", &file, json!({})).await;
    poke(&api, "golden", "pushed-golden-3").await;
    settle("golden-3").await;
    let st = eventually(WAIT, "golden-1's copies deleted", || async {
        let st = api.get("golden").await.ok()?.status?;
        (st.previous.len() == 2).then_some(st)
    })
    .await;
    assert!(
        st.previous.iter().all(|c| v2.contains(&c.image_id)),
        "{:?}",
        st.previous
    );
    for (region, g) in glances {
        let ids: Vec<String> = g
            .copies_in(region)
            .await
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids.len(), 2, "{region}: {ids:?}");
        assert!(v1.iter().all(|id| !ids.contains(id)), "{region}: {ids:?}");
    }
    sc.wait_event("golden", "PreviousCopyDeleted").await;
    // Each move of the source is its own Event, each new published value too (#32: one
    // series per reason said "now golden-2, replacing golden-1" after golden-3 came).
    let moves = sc.notes("golden", "SourceChanged", 2).await;
    assert_eq!(moves.len(), 2, "{moves:?}");
    for name in ["(golden-2,", "(golden-3,"] {
        assert!(moves.iter().any(|m| m.contains(name)), "{name} not in {moves:?}");
    }
    let published = sc.notes("golden", "Published", 3).await;
    for id in [&v1[0], &v2[0]] {
        assert!(
            published.iter().any(|n| n.contains(id.as_str())),
            "{id} not in {published:?}"
        );
    }

    // Delete: every copy goes, current and earlier; the sources stay.
    api.delete("golden", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "golden gone", || async {
        api.get_opt("golden").await.ok()?.is_none().then_some(())
    })
    .await;
    for (region, g) in glances {
        assert!(g.copies_in(region).await.is_empty(), "{region}");
    }
    assert_eq!(one.images().await.len(), 4, "the sources stay");
}

/// A moving oci tag on real registries, through the real API server: the copies follow a new
/// digest within `source.checkInterval` (the operator's own drift period is an hour here), the
/// published digest changes, and a destination removed from the spec has its copy deleted
/// (`deletionPolicy: Delete`) and is forgotten with an Event.
#[tokio::test(flavor = "multi_thread")]
async fn a_moving_tag_is_followed_published_and_a_removed_destination_pruned() {
    let Some(sc) = Scene::new("tag").await else { return };
    let (a, b, cc) = (TestRegistry::start(), TestRegistry::start(), TestRegistry::start());
    let (first, _) = a.seed("team/web", "1.4", &[]);
    let op = sc.operator("op-a", &["--resync-seconds", "3600"]);
    let api = sc.irs();
    let mut obj = oci_object(&sc.ns, "web", &a, &b, "team/web", "Delete");
    obj.spec.source.check_interval = Some("1m".into());
    obj.spec
        .destinations
        .push(image_replication_operator::api::v1alpha1::DestinationSpec {
            region: "region-c".into(),
            registry: Some(cc.url()),
            ..Default::default()
        });
    obj.spec.publish = Some(image_replication_operator::api::v1alpha1::PublishSpec {
        config_map_name: "web-images".into(),
    });
    api.create(&PostParams::default(), &obj).await.unwrap();
    wait_ready(&api, "web").await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(sc.c.clone(), &sc.ns);
    let published = || async {
        cms.get("web-images")
            .await
            .ok()
            .and_then(|cm| cm.data)
            .unwrap_or_default()
            .get("region-b")
            .cloned()
            .unwrap_or_default()
    };
    // The ConfigMap is written just after the status that says Ready.
    eventually(WAIT, "the first digest published", || async {
        published().await.ends_with(&format!("@{first}")).then_some(())
    })
    .await;
    assert_eq!(cc.digest_of("team/web", "1.4"), Some(first.clone()));

    // The tag moves: followed within the minute of checkInterval (not the operator's hour).
    let (moved, _) = a.seed("team/web", "1.4", &["--seed", "5"]);
    assert_ne!(moved, first);
    eventually(Duration::from_secs(150), "the copy follows the moved tag", || async {
        (b.digest_of("team/web", "1.4") == Some(moved.clone())).then_some(())
    })
    .await;
    eventually(WAIT, "the published digest changes", || async {
        published().await.ends_with(&format!("@{moved}")).then_some(())
    })
    .await;
    sc.wait_event("web", "SourceChanged").await;
    // The status names the source and the digest its tag now resolves to; the freshness
    // metric reads 0 for a region once it holds that digest.
    let st = api.get("web").await.unwrap().status.unwrap();
    assert_eq!(st.source.as_ref().unwrap().digest.as_deref(), Some(moved.as_str()));
    let series = "imgrep_destinations_outdated{provider=\"oci\",region=\"region-b\"} 0";
    eventually(WAIT, "region-b up to date in the metrics", || async {
        op.http_get("/metrics")?.1.contains(series).then_some(())
    })
    .await;

    // region-c leaves the spec: its copy is deleted, the destination forgotten.
    let mut o = api.get("web").await.unwrap();
    o.spec.destinations.retain(|d| d.region != "region-c");
    api.replace("web", &PostParams::default(), &o).await.unwrap();
    eventually(WAIT, "region-c forgotten", || async {
        let st = api.get("web").await.ok()?.status?;
        st.destinations.iter().all(|d| d.region != "region-c").then_some(())
    })
    .await;
    assert_eq!(
        cc.digest_of("team/web", "1.4"),
        None,
        "the removed region's copy is deleted"
    );
    assert_eq!(b.digest_of("team/web", "1.4"), Some(moved.clone()), "the other stays");
    sc.wait_event("web", "DestinationRemoved").await;
}

/// Three shard processes of one installation on the real API server, as the chart runs
/// `shards: [a, b]`: shard `a` (`--watch-label-selector replication.imageops.io/shard in (a)`),
/// shard `b` and the main process (`notin (a,b)`), each with its own Lease, one installation. Each object is reconciled by
/// exactly one process (its Events' reporting instance); an object relabelled to shard `a`
/// mid-copy is let go by the main process and taken over by shard `a`, which finds the copy by
/// its idempotency token: one CopyImage per object, never two.
#[tokio::test(flavor = "multi_thread")]
async fn label_shards_split_the_objects_and_hand_one_over_without_a_second_copy() {
    use support::clouds::{Kind, Stand};
    let Some(sc) = Scene::new("shards").await else { return };
    let ecs = Stand::start(Kind::Alibaba).await;
    let (src_region, dst_region, data, _) = ecs.account();
    ecs.set_copy_time(dst_region, Duration::from_secs(8));
    support::secret_in(&sc.c, &sc.ns, "ali", &data).await;
    let installation = format!("{}/iro", sc.ns);
    let shard = |name: &str, selector: &str| sc.shard(&format!("op-{name}"), &format!("iro-{name}"), selector);
    let _a = shard("a", "replication.imageops.io/shard in (a)");
    let _b = shard("b", "replication.imageops.io/shard in (b)");
    let _main = shard("main", "replication.imageops.io/shard notin (a,b)");
    let api = sc.irs();
    let object = |name: &str, label: Option<&str>| -> ImageReplication {
        let src = ecs.add(src_region, name, 20, json!({}));
        let mut o: ImageReplication = serde_json::from_value(json!({
            "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ImageReplication",
            "metadata": {"name": name, "namespace": sc.ns},
            "spec": {
                "provider": {"kind": "alibaba", "credentialsSecretRef": {"name": "ali"}, "endpoint": ecs.url},
                "source": {"region": src_region, "imageId": src},
                "destinations": [{"region": dst_region}]
            }
        }))
        .unwrap();
        if let Some(l) = label {
            o.metadata.labels = Some([("replication.imageops.io/shard".to_string(), l.to_string())].into());
        }
        o
    };
    api.create(&PostParams::default(), &object("in-a", Some("a")))
        .await
        .unwrap();
    api.create(&PostParams::default(), &object("in-b", Some("b")))
        .await
        .unwrap();
    api.create(&PostParams::default(), &object("moves", None))
        .await
        .unwrap();
    api.create(&PostParams::default(), &object("stays", None))
        .await
        .unwrap();
    // `moves` starts copying in the main process; then it is relabelled to shard a.
    eventually(WAIT, "moves copying", || async {
        let st = api.get("moves").await.ok()?.status?;
        (st.destinations.first()?.phase == DestinationPhase::Copying).then_some(())
    })
    .await;
    let patch = json!({"metadata": {"labels": {"replication.imageops.io/shard": "a"}}});
    api.patch(
        "moves",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    for name in ["in-a", "in-b", "moves", "stays"] {
        wait_ready(&api, name).await;
    }
    let (c, ns) = (&sc.c, &sc.ns);
    let reporters = |name: &'static str| async move {
        let mut r: Vec<String> = support::events_with(c, ns, name, &["DestinationAvailable"])
            .await
            .into_iter()
            .filter_map(|e| e.reporting_instance)
            .collect();
        r.sort();
        r.dedup();
        r
    };
    assert_eq!(reporters("in-a").await, vec!["op-a".to_string()]);
    assert_eq!(reporters("in-b").await, vec!["op-b".to_string()]);
    assert_eq!(reporters("stays").await, vec!["op-main".to_string()]);
    let moved = reporters("moves").await;
    assert!(moved.contains(&"op-a".to_string()), "shard a took it over: {moved:?}");
    let copies = ecs.calls("CopyImage").len();
    assert_eq!(
        copies, 4,
        "one CopyImage per object, none repeated by the shard that took one over"
    );
    let o = api.get("moves").await.unwrap();
    assert_eq!(
        o.annotations().get("replication.imageops.io/installation"),
        Some(&installation),
        "both shards are one installation"
    );
}

/// Huawei IMS allows five cross-region copies in flight per account. Twelve copies of one
/// account, half in shard `a` (a leader and a standby) and half in the main process: the shards
/// share the five slots (Leases in the operator's namespace), so IMS never refuses a copy for
/// its quota (its stand-in answers IMG.0190 past five). Shard `a`'s leader is killed (-9)
/// mid-way: its standby takes the shard over, keeps its copies' slots (a slot's holder is the
/// copy, not the process), and all twelve end Available with one copy each.
#[tokio::test(flavor = "multi_thread")]
async fn two_shards_share_one_accounts_copy_quota() {
    use support::clouds::{Kind, Stand};
    let Some(sc) = Scene::new("slots").await else { return };
    let ims = Stand::start(Kind::Huawei).await;
    let (src_region, dst_region, data, _) = ims.account();
    ims.set_copy_time(dst_region, Duration::from_secs(3));
    support::secret_in(&sc.c, &sc.ns, "hw", &data).await;
    let shard = |name: &str, selector: &str| sc.shard(&format!("op-{name}"), &format!("iro-{name}"), selector);
    let mut a1 = shard("a", "replication.imageops.io/shard in (a)");
    let _main = shard("main", "replication.imageops.io/shard notin (a)");
    let lease_api: Api<Lease> = Api::namespaced(sc.c.clone(), &sc.ns);
    let holder = |name: &'static str| {
        let l = lease_api.clone();
        async move { l.get(name).await.ok().and_then(|l| l.spec?.holder_identity) }
    };
    eventually(WAIT, "op-a leads shard a", || async {
        (holder("iro-a").await.as_deref() == Some("op-a")).then_some(())
    })
    .await;
    let _a2 = sc.shard("op-a-standby", "iro-a", "replication.imageops.io/shard in (a)");
    let api = sc.irs();
    let names: Vec<String> = (0..12).map(|i| format!("img-{i:02}")).collect();
    for (i, name) in names.iter().enumerate() {
        let src = ims.add(src_region, name, 20, json!({}));
        let mut o: ImageReplication = serde_json::from_value(json!({
            "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ImageReplication",
            "metadata": {"name": name, "namespace": sc.ns},
            "spec": {
                "provider": {"kind": "huawei", "agency": "ims_admin", "credentialsSecretRef": {"name": "hw"}, "endpoint": ims.url},
                "source": {"region": src_region, "imageId": src},
                "destinations": [{"region": dst_region}]
            }
        }))
        .unwrap();
        if i % 2 == 0 {
            o.metadata.labels = Some([("replication.imageops.io/shard".to_string(), "a".to_string())].into());
        }
        api.create(&PostParams::default(), &o).await.unwrap();
    }
    // Shard a's leader dies mid-way (some copies done, some in flight, some queued).
    eventually(WAIT, "a first copy done", || async {
        for n in &names {
            let st = api.get(n).await.ok()?.status?;
            if st.destinations.first()?.phase == DestinationPhase::Available {
                return Some(());
            }
        }
        None
    })
    .await;
    a1.kill();
    eventually(WAIT, "the standby leads shard a", || async {
        (holder("iro-a").await.as_deref() == Some("op-a-standby")).then_some(())
    })
    .await;
    // A copy whose Starting status the killed leader wrote but whose IMS call it never made
    // is not asked for again by the standby within IMS's listing window (a minute): allowed for.
    eventually(Duration::from_secs(300), "twelve copies Available", || async {
        for n in &names {
            let st = api.get(n).await.ok()?.status?;
            (st.destinations.first()?.phase == DestinationPhase::Available).then_some(())?;
        }
        Some(())
    })
    .await;
    let refused: Vec<String> = ims
        .calls("cross_region_copy")
        .into_iter()
        .filter(|r| r.response.contains("IMG.0190"))
        .map(|r| r.response)
        .collect();
    assert!(refused.is_empty(), "IMS refused copies over its quota: {refused:?}");
    assert_eq!(ims.calls("cross_region_copy").len(), 12, "one copy each");
    // Both shards copied; the slots are let go once the copies are done.
    let leases: Api<Lease> = Api::namespaced(sc.c.clone(), &sc.ns);
    let slots = leases
        .list(&kube::api::ListParams::default().labels("replication.imageops.io/copy-slots"))
        .await
        .unwrap();
    let names: Vec<String> = slots.items.iter().map(|l| l.name_any()).collect();
    assert_eq!(names.len(), 6, "five slots and the account's queue: {names:?}");
    assert_eq!(names.iter().filter(|n| n.ends_with("-queue")).count(), 1);
    eventually(WAIT, "the slots let go", || async {
        let l = leases
            .list(&kube::api::ListParams::default().labels("replication.imageops.io/copy-slots"))
            .await
            .ok()?;
        let queued = |l: &Lease| {
            l.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("replication.imageops.io/waiting"))
                .is_some_and(|q| q != "[]")
        };
        l.items
            .iter()
            .all(|l| l.spec.as_ref().and_then(|s| s.holder_identity.as_ref()).is_none() && !queued(l))
            .then_some(())
    })
    .await;
}
