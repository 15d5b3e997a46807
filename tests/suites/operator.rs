//! The real operator binary, run as a process against the fake API server: what a user sees
//! through kubectl (finalizers, conditions, events) and through the HTTP endpoints.

use crate::support;

use serde::Deserialize;

use std::time::Duration;

use image_replication_operator::api::{FINALIZER, ImageReplication, ReplicaInstance};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use support::fake_apiserver::FakeApiServer;
use support::operator::{Operator, eventually};

const WAIT: Duration = Duration::from_secs(30);

async fn cluster() -> (FakeApiServer, Client, tempfile::TempDir) {
    let (s, c) = support::cluster().await;
    (s, c, tempfile::tempdir().unwrap())
}

fn example<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_yaml::from_str(yaml).unwrap()
}

fn cond<'a>(conds: &'a [Condition], t: &str) -> Option<&'a Condition> {
    conds.iter().find(|c| c.type_ == t)
}

/// Wait until the object has a status for its current generation and return it.
async fn settled(api: &Api<ImageReplication>, name: &str) -> ImageReplication {
    eventually(WAIT, "status with observedGeneration", || async {
        let o = api.get(name).await.ok()?;
        let st = o.status.as_ref()?;
        (st.observed_generation == o.metadata.generation).then_some(o)
    })
    .await
}

#[test]
fn version_names_the_git_revision() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_image-replication-operator"))
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let rev = text
        .trim()
        .strip_prefix("image-replication-operator 0.1.0 (")
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(rev.len() == 12 && rev.chars().all(|c| c.is_ascii_hexdigit()), "{text}");
    // A commit of this repository (the one the binary was built from).
    let known = std::process::Command::new("git")
        .args(["cat-file", "-e", &format!("{rev}^{{commit}}")])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(known.success(), "{rev} is not a commit here");
}

/// The examples name no namespace: `kubectl apply -n team-a -f deploy/examples/...` works.
#[test]
fn examples_name_no_namespace() {
    for e in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples")).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = serde_yaml::Value::deserialize(doc).unwrap();
            assert!(
                v.get("metadata").and_then(|m| m.get("namespace")).is_none(),
                "{} names a namespace",
                p.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_adds_finalizer_honest_status_events_and_metrics() {
    let (_s, c, dir) = cluster().await;
    let op = Operator::start(&_s.write_kubeconfig(dir.path()), dir.path(), "op-a", &[]);
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    api.create(
        &PostParams::default(),
        &example(include_str!("../../deploy/examples/tencent.yaml")),
    )
    .await
    .unwrap();

    let o = settled(&api, "web-image-tencent").await;
    assert_eq!(o.finalizers(), &[FINALIZER.to_string()]);
    let st = o.status.unwrap();
    assert_eq!(st.observed_generation, Some(1));
    // Honest about what it waits for: the credentials Secret the example names does not exist.
    let ready = cond(&st.conditions, "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "Progressing"));
    assert!(
        ready.message.contains("reading Secret tencent-credentials"),
        "{}",
        ready.message
    );
    assert_eq!(ready.observed_generation, Some(1));
    assert_eq!(cond(&st.conditions, "Stalled").unwrap().status, "False");
    // The spec's own rules passed, but the source image could not be read, so its rules are
    // not yet checked: not called valid.
    let v = cond(&st.conditions, "Validated").unwrap();
    assert_eq!((v.status.as_str(), v.reason.as_str()), ("Unknown", "SourceNotChecked"));
    assert!(v.message.contains("not yet checked"), "{}", v.message);
    assert_eq!(cond(&st.conditions, "Reconciling").unwrap().status, "True");
    assert_eq!(st.summary.as_deref(), Some("0/2 available"));
    assert_eq!(
        st.destinations.iter().map(|d| d.region.as_str()).collect::<Vec<_>>(),
        vec!["ap-shanghai", "ap-beijing"]
    );
    // Text logs to a file carry no colour codes.
    let logs = op.logs();
    assert!(logs.contains("starting controllers"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "ANSI escapes in a log file: {logs}");

    // ReplicaInstance goes through its own controller.
    let ri: Api<ReplicaInstance> = Api::namespaced(c.clone(), "default");
    ri.create(
        &PostParams::default(),
        &example(include_str!("../../deploy/examples/replica-tencent.yaml")),
    )
    .await
    .unwrap();
    let r = eventually(WAIT, "replica status", || async {
        let o = ri.get("tcr-shanghai").await.ok()?;
        o.status.filter(|s| s.observed_generation == Some(1))
    })
    .await;
    assert_eq!(cond(&r.conditions, "Synced").unwrap().status, "False");
    let ready = cond(&r.conditions, "Ready").unwrap();
    assert_eq!(ready.reason, "Progressing");
    assert!(
        ready.message.contains("reading Secret tencent-credentials"),
        "{}",
        ready.message
    );
    let evs = eventually(WAIT, "an event", || async {
        let e = support::events_for(&c, "tcr-shanghai").await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(evs[0].reporting_instance.as_deref(), Some("op-a"), "{evs:?}");

    let (code, body) = eventually(WAIT, "readyz", || async {
        op.http_get("/readyz").filter(|(c, _)| *c == 200)
    })
    .await;
    assert_eq!((code, body.as_str()), (200, "ready"));
    assert_eq!(op.http_get("/healthz").unwrap().0, 200);
    let metrics = op.http_get("/metrics").unwrap().1;
    assert!(
        metrics.contains("imgrep_reconciliations_total{controller=\"image_replication\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("imgrep_reconciliations_total{controller=\"replica_instance\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("imgrep_reconcile_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("web-image-tencent"),
        "object names never become labels"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_spec_is_reported_once_then_waits_for_a_change() {
    let (s, c, dir) = cluster().await;
    let _op = Operator::start(&s.write_kubeconfig(dir.path()), dir.path(), "op-a", &[]);
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let mut obj: ImageReplication = example(include_str!("../../deploy/examples/huawei.yaml"));
    obj.spec.provider.agency = None; // allowed by the schema, refused by the Huawei IMS rules
    api.create(&PostParams::default(), &obj).await.unwrap();

    let o = settled(&api, "web-image-huawei").await;
    let st = o.status.clone().unwrap();
    let v = cond(&st.conditions, "Validated").unwrap();
    assert_eq!((v.status.as_str(), v.reason.as_str()), ("False", "AgencyRequired"));
    assert!(v.message.contains("spec.provider.agency"), "{}", v.message);
    assert_eq!(cond(&st.conditions, "Stalled").unwrap().status, "True");
    assert_eq!(st.summary.as_deref(), Some("Invalid: AgencyRequired"));
    let evs = eventually(WAIT, "a warning event", || async {
        let e = support::events_for(&c, "web-image-huawei").await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(
        (evs[0].type_.as_deref(), evs[0].reason.as_deref()),
        (Some("Warning"), Some("AgencyRequired"))
    );

    // No hot loop: nothing more is written to the object or its events.
    let writes = |s: &FakeApiServer| {
        s.requests()
            .into_iter()
            .filter(|(m, p)| m != "GET" && (p.contains("web-image-huawei") || p.contains("/events")))
            .count()
    };
    // Measured once the first report is written (its status, its Event and whatever the
    // server's answers set off): no write for a second.
    let mut quiet = writes(&s);
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let n = writes(&s);
        if n == quiet {
            break;
        }
        quiet = n;
    }
    let before = (quiet, api.get("web-image-huawei").await.unwrap().resource_version());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = (
        writes(&s),
        api.get("web-image-huawei").await.unwrap().resource_version(),
    );
    assert_eq!(before, after, "an invalid object gets no further writes");
    assert_eq!(support::events_for(&c, "web-image-huawei").await.len(), 1);

    // Fixing the spec re-validates at the new generation.
    let fix = json!({"spec": {"provider": {"agency": "ims_admin_agency"}}});
    api.patch("web-image-huawei", &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .unwrap();
    let o = settled(&api, "web-image-huawei").await;
    let st = o.status.unwrap();
    assert_eq!(st.observed_generation, Some(2));
    assert_eq!(cond(&st.conditions, "Validated").unwrap().reason, "SourceNotChecked");
    // Valid now as far as the spec goes: the copy waits for its credentials Secret, and says so.
    let r = cond(&st.conditions, "Ready").unwrap();
    assert_eq!((r.status.as_str(), r.reason.as_str()), ("False", "Progressing"));
    assert!(r.message.contains("reading Secret huawei-credentials"), "{}", r.message);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_runs_cleanup_then_the_object_goes() {
    let (s, c, dir) = cluster().await;
    let _op = Operator::start(&s.write_kubeconfig(dir.path()), dir.path(), "op-a", &[]);
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    api.create(
        &PostParams::default(),
        &example(include_str!("../../deploy/examples/aws.yaml")),
    )
    .await
    .unwrap();
    let o = settled(&api, "web-ami").await;
    assert_eq!(o.finalizers(), &[FINALIZER.to_string()]);
    api.delete("web-ami", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "object removed", || async {
        api.get_opt("web-ami").await.unwrap().is_none().then_some(())
    })
    .await;
    // The CleanupComplete Event is written before the finalizer goes: whoever sees the object
    // gone finds it already (and an operator stopped between the two cannot lose it).
    eventually(WAIT, "a CleanupComplete Event", || async {
        let evs = support::events_for(&c, "web-ami").await;
        evs.iter()
            .any(|e| e.reason.as_deref() == Some("CleanupComplete"))
            .then_some(())
    })
    .await;
    let requests = s.requests();
    let finalizer_gone = requests
        .iter()
        .rposition(|(m, p)| m == "PATCH" && p.split('?').next().unwrap_or("").ends_with("/web-ami"))
        .expect("the finalizer is removed by a patch");
    let events_after: Vec<_> = requests[finalizer_gone..]
        .iter()
        .filter(|(m, p)| m != "GET" && p.contains("/events"))
        .collect();
    assert!(
        events_after.is_empty(),
        "Event writes after the finalizer went: {events_after:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn waits_for_crds_before_starting() {
    let s = FakeApiServer::start().await;
    let c = s.client().await;
    let dir = tempfile::tempdir().unwrap();
    let op = Operator::start(&s.write_kubeconfig(dir.path()), dir.path(), "op-a", &[]);
    eventually(WAIT, "http up", || async { op.http_get("/healthz") }).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(op.http_get("/readyz").unwrap().0, 503, "not ready without CRDs");
    support::install_crds(&c).await;
    eventually(WAIT, "ready after CRDs", || async {
        op.http_get("/readyz").filter(|(c, _)| *c == 200)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_election_lets_one_instance_reconcile_and_hands_over_on_sigterm() {
    let (s, c, dir) = cluster().await;
    let kc = s.write_kubeconfig(dir.path());
    let mut a = Operator::start(&kc, dir.path(), "op-a", &["--leader-elect"]);
    let leases: Api<Lease> = Api::namespaced(c.clone(), "operators");
    let holder = |l: Lease| l.spec.and_then(|s| s.holder_identity);
    eventually(WAIT, "op-a leads", || async {
        leases
            .get_opt("image-replication-operator")
            .await
            .unwrap()
            .and_then(holder)
            .filter(|h| h == "op-a")
    })
    .await;
    let mut b = Operator::start(&kc, dir.path(), "op-b", &["--leader-elect"]);
    eventually(WAIT, "op-b is a ready standby", || async {
        b.http_get("/readyz").filter(|(c, body)| *c == 200 && body == "standby")
    })
    .await;

    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    api.create(
        &PostParams::default(),
        &example(include_str!("../../deploy/examples/huawei.yaml")),
    )
    .await
    .unwrap();
    settled(&api, "web-image-huawei").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reporters: Vec<_> = support::events_for(&c, "web-image-huawei")
        .await
        .into_iter()
        .map(|e| e.reporting_instance)
        .collect();
    assert_eq!(reporters, vec![Some("op-a".to_string())], "only the leader reconciles");
    let standby_metrics = b.http_get("/metrics").unwrap().1;
    assert!(standby_metrics.contains("imgrep_leader 0"), "{standby_metrics}");
    // (The counters are served from zero for each controller.)
    assert!(
        standby_metrics
            .lines()
            .filter(|l| l.starts_with("imgrep_reconciliations_total{"))
            .all(|l| l.ends_with(" 0")),
        "the standby reconciled: {standby_metrics}"
    );

    // SIGTERM: the leader stops cleanly and releases the lease; the standby takes over.
    assert_eq!(
        a.terminate(Duration::from_secs(20)),
        Some(0),
        "clean exit on SIGTERM:\n{}",
        a.logs()
    );
    eventually(WAIT, "op-b leads", || async {
        leases
            .get_opt("image-replication-operator")
            .await
            .unwrap()
            .and_then(holder)
            .filter(|h| h == "op-b")
    })
    .await;
    api.create(
        &PostParams::default(),
        &example(include_str!("../../deploy/examples/alibaba.yaml")),
    )
    .await
    .unwrap();
    settled(&api, "web-image-alibaba").await;
    let reporters = eventually(WAIT, "an event from op-b", || async {
        let e = support::events_for(&c, "web-image-alibaba").await;
        (!e.is_empty()).then(|| e.into_iter().map(|e| e.reporting_instance).collect::<Vec<_>>())
    })
    .await;
    assert_eq!(reporters, vec![Some("op-b".to_string())]);
    assert_eq!(b.terminate(Duration::from_secs(20)), Some(0));
}
