//! ImageReplication with provider oci, end to end: the operator process, the fake API server and
//! real registries. Also the no-cluster `replicate -f` command.

use crate::support;

use std::time::Duration;

use image_replication_operator::api::ImageReplication;
use image_replication_operator::api::v1alpha1::DestinationPhase;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use support::operator::{Operator, eventually, free_port};
use support::registry::TestRegistry;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn copies_reports_per_destination_repairs_drift_and_deletes() {
    let (a, b) = (TestRegistry::start(), TestRegistry::start());
    let dead = free_port(); // nothing listens here: a region whose registry is down
    let (digest, _) = a.seed("team/web", "1.4", &["--sign"]);

    let (s, c) = support::cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let _op = Operator::start(
        &s.write_kubeconfig(dir.path()),
        dir.path(),
        "op-a",
        &["--resync-seconds", "2"],
    );

    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let obj: ImageReplication = serde_json::from_value(json!({
        "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ImageReplication",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "provider": {"kind": "oci"},
            "source": {"region": "region-a", "reference": format!("{}/team/web:1.4", a.host())},
            "destinations": [
                {"region": "region-b", "registry": b.url()},
                {"region": "region-c", "registry": format!("http://127.0.0.1:{dead}")}
            ],
            "deletionPolicy": "Delete"
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();

    // One failed region does not hide the good one.
    let st = eventually(WAIT, "b Available and c Failed", || async {
        let st = api.get("web").await.ok()?.status?;
        let phase = |r: &str| st.destinations.iter().find(|d| d.region == r).map(|d| d.phase);
        (phase("region-b") == Some(DestinationPhase::Available) && phase("region-c") == Some(DestinationPhase::Failed))
            .then_some(st)
    })
    .await;
    let b_st = st.destinations.iter().find(|d| d.region == "region-b").unwrap();
    assert_eq!(b_st.digest.as_deref(), Some(digest.as_str()));
    assert_eq!(b_st.progress_percent, Some(100));
    let c_st = st.destinations.iter().find(|d| d.region == "region-c").unwrap();
    assert!(
        c_st.message.as_deref().unwrap_or("").contains("ConnectionError"),
        "{c_st:?}"
    );
    assert_eq!(st.summary.as_deref(), Some("1/2 available, 1 failed"));
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "False");
    assert_eq!(
        b.digest_of("team/web", "1.4"),
        Some(digest.clone()),
        "skopeo sees the copy"
    );
    support::reasons_with(&c, "web", &["DestinationAvailable", "DestinationFailed"]).await;

    // Drift repair: delete the copy by hand; the next resync restores it.
    let http = reqwest::Client::new();
    let del = http
        .delete(format!("{}/v2/team/web/manifests/{digest}", b.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status().as_u16(), 202);
    // (With a 2 s resync the operator may restore it before anyone looks; the event proves it noticed.)
    eventually(WAIT, "the copy restored", || async {
        (b.digest_of("team/web", "1.4") == Some(digest.clone())).then_some(())
    })
    .await;
    eventually(WAIT, "a DriftRepaired event", || async {
        support::event_reasons(&c, "web")
            .await
            .contains(&"DriftRepaired".to_string())
            .then_some(())
    })
    .await;

    // The source's tag is pushed again with other content: the copy follows it at the next
    // check, and the Event says the source moved (with both digests), not that the copy drifted.
    let (moved, _) = a.seed("team/web", "1.4", &["--seed", "7"]);
    assert_ne!(moved, digest);
    eventually(WAIT, "the copy follows the moved tag", || async {
        (b.digest_of("team/web", "1.4") == Some(moved.clone())).then_some(())
    })
    .await;
    let note = eventually(WAIT, "a SourceChanged event", || async {
        support::events_in(&c, "default", "web")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("SourceChanged"))
            .and_then(|e| e.note)
    })
    .await;
    assert!(note.contains(&format!("from {digest} to {moved}")), "{note}");
    let digest = moved;

    // deletionPolicy Delete: the copy goes with the object.
    api.delete("web", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "object removed", || async {
        api.get_opt("web").await.unwrap().is_none().then_some(())
    })
    .await;
    assert_eq!(b.digest_of("team/web", "1.4"), None, "the destination copy was deleted");
    assert_eq!(
        a.digest_of("team/web", "1.4"),
        Some(digest),
        "the source is never touched"
    );
}

/// `team/web:1.4` from registry `a` (region-a) to `b` (region-b).
fn web_to(a: &TestRegistry, b: &TestRegistry, name: &str, policy: &str) -> ImageReplication {
    serde_json::from_value(json!({
        "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ImageReplication",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "provider": {"kind": "oci"},
            "source": {"region": "region-a", "reference": format!("{}/team/web:1.4", a.host())},
            "destinations": [{"region": "region-b", "registry": b.url()}],
            "deletionPolicy": policy
        }
    }))
    .unwrap()
}

async fn wait_ready(
    api: &Api<ImageReplication>,
    name: &str,
) -> image_replication_operator::api::v1alpha1::ImageReplicationStatus {
    eventually(WAIT, &format!("{name} Ready"), || async {
        let st = api.get(name).await.ok()?.status?;
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(st)
    })
    .await
}

/// At rest nothing is written: drift checks that find the copy intact (every 2 s here) change
/// no status field, wake no watcher and record no Event, and the status keeps the real story
/// (bytes copied, when the copy completed).
#[tokio::test(flavor = "multi_thread")]
async fn at_rest_drift_checks_write_nothing() {
    let (a, b) = (TestRegistry::start(), TestRegistry::start());
    let (digest, _) = a.seed("team/web", "1.4", &[]);
    let (s, c) = support::cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let _op = Operator::start(
        &s.write_kubeconfig(dir.path()),
        dir.path(),
        "op-a",
        &["--resync-seconds", "2"],
    );
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    api.create(&PostParams::default(), &web_to(&a, &b, "quiet", "Retain"))
        .await
        .unwrap();
    let ready = wait_ready(&api, "quiet").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let heads = || {
        b.requests()
            .iter()
            .filter(|(m, u, _)| m == "HEAD" && u.contains("/manifests/"))
            .count()
    };
    let checks_before = heads();
    support::assert_quiet(&s, &c, "quiet", Duration::from_secs(7)).await;
    assert!(heads() >= checks_before + 2, "the drift checks ran meanwhile");
    let st = api.get("quiet").await.unwrap().status.unwrap();
    assert_eq!(st, ready, "the status is the one written when the copy completed");
    let d = &st.destinations[0];
    assert_eq!(d.digest.as_deref(), Some(digest.as_str()));
    assert!(
        d.bytes_copied.unwrap_or(0) > 0 && d.bytes_copied == d.bytes_total,
        "{d:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replicate_command_copies_without_a_cluster_and_reports_failures() {
    let (a, b) = (TestRegistry::start(), TestRegistry::start());
    let (digest, _) = a.seed("team/web", "1.4", &[]);
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        format!(
            "apiVersion: replication.imageops.io/v1alpha1\nkind: ImageReplication\nmetadata: {{name: web, namespace: default}}\nspec:\n  provider: {{kind: oci}}\n  source: {{region: a, reference: '{}/team/web:1.4'}}\n  destinations: [{{region: b, registry: '{}', name: mirror/web}}]\n",
            a.host(),
            b.url()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_image-replication-operator");
    let out = std::process::Command::new(bin)
        .args(["replicate", "-f"])
        .arg(&good)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("ImageReplication web: Ready (1/1 available)"), "{text}");
    assert_eq!(b.digest_of("mirror/web", "1.4"), Some(digest.clone()));
    // Again: the copy is already there, and the output says so.
    let out = std::process::Command::new(bin)
        .args(["replicate", "-f"])
        .arg(&good)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("web/b: up to date {digest}")), "{text}");
    assert!(!text.contains("copying 0 B"), "{text}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&good)
            .unwrap()
            .replace("/team/web:1.4", "/team/missing:1.4"),
    )
    .unwrap();
    let out = std::process::Command::new(bin)
        .args(["replicate", "--attempts", "1", "-f"])
        .arg(&bad)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("not Ready: DestinationsFailed") && text.contains("NotFound"),
        "{text}"
    );

    let invalid = dir.path().join("invalid.yaml");
    std::fs::write(
        &invalid,
        std::fs::read_to_string(&good)
            .unwrap()
            .replace("name: mirror/web", "name: Mirror/Web"),
    )
    .unwrap();
    let out = std::process::Command::new(bin)
        .args(["replicate", "-f"])
        .arg(&invalid)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("InvalidName"), "{text}");
}

/// A delete that cannot finish (`deletionPolicy: Delete`, the destination registry down) says
/// so in status — Ready=False, DeletionBlocked, the destination's error and the remedy — is
/// counted and logged as blocked (not as a reconcile error) and tried again: once the registry is back the
/// copy is removed and the object goes; switching to Retain lets a blocked object go at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_blocked_delete_is_visible_and_retain_lets_it_go() {
    let a = TestRegistry::start();
    let mut b = TestRegistry::start();
    let (digest, _) = a.seed("team/web", "1.4", &[]);
    let (s, c) = support::cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let op = Operator::start(&s.write_kubeconfig(dir.path()), dir.path(), "op-a", &[]);
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    api.create(&PostParams::default(), &web_to(&a, &b, "blocked", "Delete"))
        .await
        .unwrap();
    wait_ready(&api, "blocked").await;
    b.stop(); // the destination registry goes down
    api.delete("blocked", &DeleteParams::default()).await.unwrap();
    let st = eventually(WAIT, "DeletionBlocked in status", || async {
        let st = api.get("blocked").await.ok()?.status?;
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "DeletionBlocked")
            .then_some(st)
    })
    .await;
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(
        ready.message.contains("region-b") && ready.message.contains("deletionPolicy: Retain"),
        "{}",
        ready.message
    );
    let d = &st.destinations[0];
    assert!(
        d.message.as_deref().unwrap_or("").starts_with("deletion blocked: "),
        "{d:?}"
    );
    // The Event is published right after the status write: wait for it.
    eventually(WAIT, "a DeletionBlocked Event", || async {
        support::event_reasons(&c, "blocked")
            .await
            .contains(&"DeletionBlocked".to_string())
            .then_some(())
    })
    .await;
    let metrics = eventually(WAIT, "counted as blocked", || async {
        let (_, m) = op.http_get("/metrics")?;
        m.lines()
            .any(|l| {
                l.starts_with("imgrep_cleanup_blocked_total{controller=\"image_replication\"}") && !l.ends_with(" 0")
            })
            .then_some(m)
    })
    .await;
    assert!(
        metrics
            .lines()
            .filter(|l| l.starts_with("imgrep_reconcile_errors_total{") && l.contains("image_replication"))
            .all(|l| l.ends_with(" 0")),
        "a blocked delete is not a reconcile error: {metrics}"
    );
    let logs = op.logs();
    assert!(
        !logs.contains("controller stream error") && !logs.contains("reconcile failed"),
        "a blocked delete is not logged as a failure: {logs}"
    );

    // The destination comes back: the copy is removed and the object goes.
    b.restart();
    eventually(WAIT, "object gone once the registry is back", || async {
        api.get_opt("blocked").await.unwrap().is_none().then_some(())
    })
    .await;
    assert_eq!(b.digest_of("team/web", "1.4"), None, "the copy was removed");
    assert_eq!(
        a.digest_of("team/web", "1.4"),
        Some(digest),
        "the source is never touched"
    );

    // Blocked again, then Retain: nothing to remove, the object goes at once.
    api.create(&PostParams::default(), &web_to(&a, &b, "blocked", "Delete"))
        .await
        .unwrap();
    wait_ready(&api, "blocked").await;
    b.stop();
    api.delete("blocked", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "blocked again", || async {
        let st = api.get("blocked").await.ok()?.status?;
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason == "DeletionBlocked")
            .then_some(())
    })
    .await;
    api.patch(
        "blocked",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"deletionPolicy": "Retain"}})),
    )
    .await
    .unwrap();
    eventually(WAIT, "object gone", || async {
        api.get_opt("blocked").await.unwrap().is_none().then_some(())
    })
    .await;
}

/// `team/web:1.4` from `a` into repository `repo` of `b`.
fn web_into(a: &TestRegistry, b: &TestRegistry, name: &str, repo: &str) -> ImageReplication {
    let mut o = web_to(a, b, name, "Retain");
    o.spec.destinations[0].name = Some(repo.to_string());
    o
}

/// Mount POSTs the registry answered 201 (mounted), and upload PATCHes, in its access log.
fn mounts_and_patches(r: &TestRegistry) -> (usize, usize) {
    let reqs = r.requests();
    let mounted = reqs
        .iter()
        .filter(|(m, u, s)| m == "POST" && u.contains("mount=") && *s == 201)
        .count();
    let patches = reqs
        .iter()
        .filter(|(m, u, _)| m == "PATCH" && u.contains("/blobs/uploads/"))
        .count();
    (mounted, patches)
}

/// After a restart the operator knows again where its copies are (from the objects' statuses)
/// and mounts the big blobs a new copy into the same registry needs instead of uploading them;
/// `replicate -f` does the same across runs through its blob cache.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_copy_mounts_what_the_registry_holds_after_a_restart_and_across_replicate_runs() {
    let (a, b) = (TestRegistry::start(), TestRegistry::start());
    let mib2 = (2 << 20).to_string();
    a.seed(
        "team/web",
        "1.4",
        &[
            "--platforms",
            "linux/amd64",
            "--layer-size",
            &mib2,
            "--base-size",
            &mib2,
        ],
    );
    let (s, c) = support::cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = s.write_kubeconfig(dir.path());
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    {
        let _op = Operator::start(&kubeconfig, dir.path(), "op-a", &[]);
        api.create(&PostParams::default(), &web_into(&a, &b, "one", "mirror/one"))
            .await
            .unwrap();
        wait_ready(&api, "one").await;
    } // the operator stops; what it remembered in memory is gone
    let (mounted_before, _) = mounts_and_patches(&b);
    let op = Operator::start(&kubeconfig, dir.path(), "op-b", &[]);
    // Once it has reconciled what exists (object one among them), a new object comes.
    eventually(WAIT, "op-b ready", || async {
        (op.http_get("/readyz").map(|(c, _)| c) == Some(200)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    api.create(&PostParams::default(), &web_into(&a, &b, "two", "mirror/two"))
        .await
        .unwrap();
    let st = wait_ready(&api, "two").await;
    let (mounted, _) = mounts_and_patches(&b);
    assert_eq!(
        mounted - mounted_before,
        3,
        "base and both layers mounted from mirror/one"
    );
    let d = &st.destinations[0];
    assert_eq!(
        d.digest,
        api.get("one").await.unwrap().status.unwrap().destinations[0].digest
    );

    // replicate -f: two runs into new repositories of a fresh registry, one blob cache.
    let cache = dir.path().join("blob-cache.json");
    let b2 = TestRegistry::start();
    let into_b2 = |repo: &str| {
        let name = repo.replace('/', "-");
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, serde_yaml::to_string(&web_into(&a, &b2, &name, repo)).unwrap()).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_image-replication-operator"))
            .args(["replicate", "-f"])
            .arg(&file)
            .env("IMGREP_BLOB_CACHE", &cache)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    };
    into_b2("cli/one");
    let (m1, p1) = mounts_and_patches(&b2);
    assert_eq!(m1, 0, "nothing to mount from in a fresh registry");
    into_b2("cli/two");
    let (m2, p2) = mounts_and_patches(&b2);
    // The cache holds each blob's exact location, the small config's too.
    assert_eq!(m2 - m1, 4, "the second run mounts every blob the first uploaded");
    assert_eq!(p2, p1, "nothing uploaded again");
}

/// Two installations watching the same namespace: exactly one claims each object (annotation
/// `replication.imageops.io/installation`) and reconciles it; the other leaves it alone, says so
/// once in a Warning Event and a metric, and writes nothing else. An installation run with
/// `--adopt-objects` takes objects over.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_installation_leaves_the_first_ones_objects_alone() {
    let (a, b) = (TestRegistry::start(), TestRegistry::start());
    a.seed("team/web", "1.4", &[]);
    let (s, c) = support::cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = s.write_kubeconfig(dir.path());
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let first = Operator::start(&kubeconfig, dir.path(), "op-a", &["--installation", "team-a/iro"]);
    api.create(&PostParams::default(), &web_to(&a, &b, "shared", "Retain"))
        .await
        .unwrap();
    wait_ready(&api, "shared").await;
    let annotation = |o: &ImageReplication| {
        o.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("replication.imageops.io/installation").cloned())
    };
    assert_eq!(
        annotation(&api.get("shared").await.unwrap()).as_deref(),
        Some("team-a/iro")
    );
    // A second installation starts on the same namespace.
    let dir2 = tempfile::tempdir().unwrap();
    let second = Operator::start(&kubeconfig, dir2.path(), "op-b", &["--installation", "team-b/iro"]);
    let warned = eventually(WAIT, "the second installation's Warning", || async {
        support::events_for(&c, "shared")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("OwnedByAnotherInstallation"))
    })
    .await;
    let note = warned.note.unwrap_or_default();
    assert!(note.contains("team-a/iro") && note.contains("team-b/iro"), "{note}");
    // Nothing else changes: the owner's status stands, no flapping, no more Events.
    support::assert_quiet(&s, &c, "shared", Duration::from_secs(4)).await;
    let metrics = second.http_get("/metrics").unwrap().1;
    assert!(
        metrics.lines().any(|l| l
            .starts_with("imgrep_objects_owned_elsewhere_total{controller=\"image_replication\"}")
            && !l.ends_with(" 0")),
        "{metrics}"
    );
    // The first installation goes; one run with --adopt-objects takes the object over.
    drop(first);
    drop(second);
    let _third = Operator::start(
        &kubeconfig,
        dir2.path(),
        "op-c",
        &["--installation", "team-b/iro", "--adopt-objects"],
    );
    eventually(WAIT, "adopted", || async {
        (annotation(&api.get("shared").await.ok()?).as_deref() == Some("team-b/iro")).then_some(())
    })
    .await;
    wait_ready(&api, "shared").await;
}

/// Events as kube's Recorder writes them: a repeat (same type, action, reason, object and
/// note: the same happening) counts in the first one's `series`; another reason, or the same
/// reason saying something new (issue #32: a source that moved again, a new published value),
/// is another Event. The publisher remembers one small entry per distinct event.
#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_event_counts_in_the_first_ones_series() {
    use image_replication_operator::controller::events::Events;
    use k8s_openapi::api::core::v1::ObjectReference;
    use kube::runtime::events::{Event, EventType, Reporter};
    let (_s, c) = support::cluster().await;
    let reporter = Reporter {
        controller: "image-replication-operator".into(),
        instance: Some("op-a".into()),
    };
    let events = Events::new(c.clone(), reporter);
    let regarding = ObjectReference {
        api_version: Some("replication.imageops.io/v1alpha1".into()),
        kind: Some("ImageReplication".into()),
        namespace: Some("default".into()),
        name: Some("web".into()),
        uid: Some("uid-1".into()),
        ..Default::default()
    };
    let ev = |reason: &str, n: u32| Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(format!("{reason} {n}")),
        action: "Reconcile".into(),
        secondary: None,
    };
    for _ in 1..=3 {
        events.publish(&ev("Copying", 1), &regarding).await.unwrap();
    }
    events.publish(&ev("Copying", 2), &regarding).await.unwrap();
    events.publish(&ev("Available", 1), &regarding).await.unwrap();
    let mut got: Vec<(String, String, Option<i32>, String)> = support::events_for(&c, "web")
        .await
        .into_iter()
        .map(|e| {
            (
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
                e.series.map(|s| s.count),
                e.reporting_instance.unwrap_or_default(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("Available".into(), "Available 1".into(), None, "op-a".into()),
            ("Copying".into(), "Copying 1".into(), Some(3), "op-a".into()),
            ("Copying".into(), "Copying 2".into(), None, "op-a".into()),
        ]
    );
    assert_eq!(events.remembered(), 3);
}

/// What a real API server cannot be made to do on demand, the fake does: status writes answered
/// 500 and 429, the claim answered 409, Events refused, slow lists, and every watch dropped.
/// The copy still reaches Ready, each blob crosses once, the failures are counted, and a change
/// made after the watches were dropped is still seen.
#[tokio::test(flavor = "multi_thread")]
async fn api_server_faults_delay_but_neither_break_nor_duplicate_a_copy() {
    use support::fake_apiserver::FaultKind;
    let (a, b) = (TestRegistry::start(), TestRegistry::start());
    let (digest, _) = a.seed("team/web", "1.4", &[]);
    let (s, c) = support::cluster().await;
    s.inject("PATCH", "/imagereplications/web/status", FaultKind::Status(500), 2);
    s.inject("PATCH", "/imagereplications/web/status", FaultKind::Status(429), 1);
    s.inject("PATCH", "/imagereplications/web?", FaultKind::Status(409), 1);
    s.inject("POST", "/events", FaultKind::Status(500), 2);
    s.inject(
        "GET",
        "/imagereplications?",
        FaultKind::Delay(Duration::from_secs(2)),
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let op = Operator::start(&s.write_kubeconfig(dir.path()), dir.path(), "op-a", &[]);
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    api.create(&PostParams::default(), &web_to(&a, &b, "web", "Retain"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.drop_watches();
    let st = wait_ready(&api, "web").await;
    assert_eq!(st.destinations[0].digest.as_deref(), Some(digest.as_str()));
    // (The Events follow the status write: their faults may be met just after Ready.)
    eventually(WAIT, "every injected fault met", || async {
        (s.faults_left() == 0).then_some(())
    })
    .await;
    assert_eq!(b.digest_of("team/web", "1.4"), Some(digest));
    // Each blob crossed once: as many finished uploads as distinct blobs.
    let puts: Vec<String> = b
        .requests()
        .into_iter()
        .filter(|(m, u, st)| m == "PUT" && u.contains("/blobs/uploads/") && *st == 201)
        .filter_map(|(_, u, _)| {
            u.split("digest=")
                .nth(1)
                .map(|d| d.split('&').next().unwrap().to_string())
        })
        .collect();
    let distinct: std::collections::BTreeSet<&String> = puts.iter().collect();
    assert!(!puts.is_empty());
    assert_eq!(puts.len(), distinct.len(), "a blob uploaded twice: {puts:?}");
    let metrics = op.http_get("/metrics").unwrap().1;
    let errors: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("imgrep_reconcile_errors_total{") && l.contains("image_replication"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    // The two 500s fail their reconciles (counted, backed off); kube's client waits out the
    // 429's Retry-After and sends again; the claim's 409 is a race, read again, not an error.
    assert!(errors >= 2.0, "the refused status writes are counted: {metrics}");

    // Every watch dropped again: a change made afterwards is still seen (the watches resume).
    s.drop_watches();
    let mut o = api.get("web").await.unwrap();
    o.spec.suspend = true;
    api.replace("web", &PostParams::default(), &o).await.unwrap();
    eventually(WAIT, "Suspended after the watches were dropped", || async {
        let st = api.get("web").await.ok()?.status?;
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason == "Suspended")
            .then_some(())
    })
    .await;
}
