//! ImageReplication with provider openstack, end to end: the operator process and the fake API
//! server, real Glance servers as regions behind a Keystone stand-in (and, in one test, a real
//! Keystone), images made with qemu-img.

use crate::support;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use image_replication_operator::api::ImageReplication;
use image_replication_operator::api::v1alpha1::{DestinationPhase, ImageReplicationStatus};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use support::openstack::{Cloud, Glance, make_image};
use support::operator::{Operator, eventually};

const WAIT: Duration = Duration::from_secs(120);

use support::secret;

async fn password_secret(c: &Client, cloud: &Cloud) {
    secret(
        c,
        "os-creds",
        &[
            ("authUrl", &cloud.auth_url()),
            ("username", "demo"),
            ("password", support::openstack::PASSWORD),
            ("projectName", "demo"),
        ],
    )
    .await;
}

fn object(name: &str, source: Value, dests: Value, extra: Value) -> ImageReplication {
    let mut spec = json!({
        "provider": {"kind": "openstack", "credentialsSecretRef": {"name": "os-creds"}},
        "source": source,
        "destinations": dests,
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ImageReplication",
        "metadata": {"name": name, "namespace": "default"}, "spec": spec
    }))
    .unwrap()
}

fn phase(st: &ImageReplicationStatus, region: &str) -> Option<DestinationPhase> {
    st.destinations.iter().find(|d| d.region == region).map(|d| d.phase)
}

fn ready(st: &ImageReplicationStatus) -> bool {
    st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
}

async fn wait_ready(api: &Api<ImageReplication>, name: &str) -> ImageReplicationStatus {
    eventually(WAIT, &format!("{name} Ready"), || async {
        let st = api.get(name).await.ok()?.status?;
        ready(&st).then_some(st)
    })
    .await
}

fn op_args() -> Vec<&'static str> {
    vec![
        "--resync-seconds",
        "2",
        "--poll-min-seconds",
        "1",
        "--poll-max-seconds",
        "2",
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn copies_to_many_regions_verifies_checksums_and_repairs_drift() {
    let (a, b, cc) = (Glance::start(), Glance::start(), Glance::start());
    let cloud = Cloud::start(&[
        ("region-one", a.url(), 0),
        ("region-two", b.url(), 0),
        ("region-three", cc.url(), 0),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = make_image(dir.path(), "web", "qcow2", 8);
    // A public source (Glance makes a new image `shared` unless told: its copies must be private).
    let src = a
        .upload(
            "web",
            "qcow2",
            &file,
            json!({"os_distro": "debian", "visibility": "public"}),
        )
        .await;
    let src_doc = a.image(&src).await.unwrap();
    assert_eq!(src_doc["visibility"], "public");

    let (s, c) = support::cluster().await;
    password_secret(&c, &cloud).await;
    let op = Operator::start(&s.write_kubeconfig(dir.path()), dir.path(), "op-a", &op_args());
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let obj = object(
        "web",
        json!({"region": "region-one", "imageName": "web"}),
        json!([{"region": "region-two"},
               {"region": "region-three", "name": "web-copy", "description": "golden", "tags": {"team": "a"}}]),
        json!({}),
    );
    api.create(&PostParams::default(), &obj).await.unwrap();
    let st = wait_ready(&api, "web").await;

    assert_eq!(st.summary.as_deref(), Some("2/2 available"));
    let source = st.source.clone().unwrap();
    assert_eq!(source.image_id.as_deref(), Some(src.as_str()));
    let want = format!("sha512:{}", src_doc["os_hash_value"].as_str().unwrap());
    assert_eq!(source.digest.as_deref(), Some(want.as_str()));
    for (g, region, name) in [(&b, "region-two", "web"), (&cc, "region-three", "web-copy")] {
        let d = st.destinations.iter().find(|d| d.region == region).unwrap();
        assert_eq!(d.digest.as_deref(), Some(want.as_str()), "{region} verified by sha512");
        assert_eq!(d.progress_percent, Some(100));
        assert_eq!(d.attempts, 1);
        let copies = g.copies_in(region).await;
        assert_eq!(copies.len(), 1, "exactly one image in {region}");
        let img = &copies[0];
        assert_eq!(img["id"].as_str(), d.image_id.as_deref());
        assert_eq!(img["status"], "active");
        assert_eq!(img["name"], name);
        assert_eq!(img["os_hash_value"], src_doc["os_hash_value"]);
        assert_eq!(img["checksum"], src_doc["checksum"]);
        assert_eq!(img["disk_format"], "qcow2");
        assert_eq!(img["os_distro"], "debian", "user properties carried over");
        assert_eq!(img["imgrep_source_image"].as_str(), Some(src.as_str()));
        assert_eq!(img["visibility"], "private", "a copy of a public image is private");
    }
    let three = &cc.copies_in("region-three").await[0];
    assert_eq!(three["description"], "golden");
    assert_eq!(three["tags"], json!(["team=a"]));
    assert!(
        cloud.auth_requests.load(Ordering::SeqCst) >= 1,
        "authenticated with Keystone"
    );
    for r in ["DestinationStarting", "DestinationAvailable"] {
        eventually(WAIT, &format!("Event {r}"), || async {
            support::event_reasons(&c, "web")
                .await
                .iter()
                .any(|e| e == r)
                .then_some(())
        })
        .await;
    }
    let metrics = op.http_get("/metrics").unwrap().1;
    assert!(
        metrics.contains(r#"imgrep_vm_copies{phase="Available",provider="openstack"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"imgrep_provider_request_duration_seconds_count{operation="start_copy",outcome="ok",provider="openstack"} 2"#), "{metrics}");
    assert!(
        metrics.contains(r#"imgrep_copy_task_duration_seconds_count{provider="openstack"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            r#"imgrep_bytes_transferred_total{{provider="openstack"}} {}"#,
            2 * src_doc["size"].as_u64().unwrap()
        )),
        "{metrics}"
    );

    // Drift: the region-two copy is deleted by hand; the next resync copies it again.
    let old_id = st
        .destinations
        .iter()
        .find(|d| d.region == "region-two")
        .unwrap()
        .image_id
        .clone()
        .unwrap();
    b.delete(&old_id).await;
    let st = eventually(WAIT, "region-two copied again", || async {
        let st = api.get("web").await.ok()?.status?;
        let d = st.destinations.iter().find(|d| d.region == "region-two")?;
        (d.phase == DestinationPhase::Available && d.image_id.as_deref() != Some(old_id.as_str())).then_some(st)
    })
    .await;
    assert!(ready(&st));
    let copies = b.copies_in("region-two").await;
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0]["os_hash_value"], src_doc["os_hash_value"]);
    support::reasons_with(&c, "web", &["DriftDetected"]).await;
    support::assert_secrets_kept(&s, &op, &[support::openstack::PASSWORD]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_keeps_twelve_destinations_to_five_in_flight() {
    let (a, b) = (Glance::start(), Glance::start());
    let regions: Vec<String> = (1..=12).map(|i| format!("r{i:02}")).collect();
    let mut cat = vec![("region-one", a.url(), 0u64)];
    for r in &regions {
        cat.push((r.as_str(), b.url(), 2 << 20)); // 2 MiB/s per upload: copies overlap
    }
    let cloud = Cloud::start(&cat).await;
    let dir = tempfile::tempdir().unwrap();
    let file = make_image(dir.path(), "base", "raw", 2);
    let src = a.upload("base", "raw", &file, json!({})).await;

    let (s, c) = support::cluster().await;
    // Application credential authentication this time.
    secret(
        &c,
        "os-creds",
        &[
            ("authUrl", &cloud.auth_url()),
            ("applicationCredentialId", "app-1"),
            ("applicationCredentialSecret", support::openstack::APP_SECRET),
        ],
    )
    .await;
    let _op = Operator::start(&s.write_kubeconfig(dir.path()), dir.path(), "op-a", &op_args());
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let dests: Vec<Value> = regions.iter().map(|r| json!({"region": r})).collect();
    let obj = object(
        "fleet",
        json!({"region": "region-one", "imageId": src}),
        json!(dests),
        json!({"provider": {"kind": "openstack", "credentialsSecretRef": {"name": "os-creds"}, "maxConcurrentCopies": 5}}),
    );
    api.create(&PostParams::default(), &obj).await.unwrap();

    let seen = std::sync::Arc::new(std::sync::Mutex::new((0usize, false)));
    let st = eventually(WAIT, "12/12 available", || {
        let (api, seen) = (api.clone(), seen.clone());
        async move {
            let st = api.get("fleet").await.ok()?.status?;
            let n = st
                .destinations
                .iter()
                .filter(|d| matches!(d.phase, DestinationPhase::Starting | DestinationPhase::Copying))
                .count();
            let mut s = seen.lock().unwrap();
            s.0 = s.0.max(n);
            s.1 |= st
                .destinations
                .iter()
                .any(|d| d.phase == DestinationPhase::Queued && d.queue_position.is_some());
            ready(&st).then_some(st)
        }
    })
    .await;
    let (max_in_flight, saw_queue) = *seen.lock().unwrap();
    assert_eq!(st.summary.as_deref(), Some("12/12 available"));
    assert!(max_in_flight <= 5, "status showed {max_in_flight} copies in flight");
    assert!(saw_queue, "some destinations waited in Queued with a position");
    let uploads = cloud.all.uploads_max.load(Ordering::SeqCst);
    assert!(
        (2..=5).contains(&uploads),
        "Glance saw at most 5 uploads at once (saw {uploads})"
    );
    for r in &regions {
        assert_eq!(b.copies_in(r).await.len(), 1, "one image in {r}");
    }
    support::reasons_with(&c, "fleet", &["DestinationQueued"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_copy_then_restart_leaves_exactly_one_image_per_region() {
    let (a, b) = (Glance::start(), Glance::start());
    let cloud = Cloud::start(&[
        ("region-one", a.url(), 0),
        ("region-two", b.url(), 1 << 20),
        ("region-three", b.url(), 1 << 20),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = make_image(dir.path(), "big", "raw", 12);
    let src = a.upload("big", "raw", &file, json!({})).await;
    let src_hash = a.image(&src).await.unwrap()["os_hash_value"].clone();

    let (s, c) = support::cluster().await;
    password_secret(&c, &cloud).await;
    let kubeconfig = s.write_kubeconfig(dir.path());
    let mut op = Operator::start(&kubeconfig, dir.path(), "op-a", &op_args());
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let obj = object(
        "big",
        json!({"region": "region-one", "imageId": src}),
        json!([{"region": "region-two"}, {"region": "region-three"}]),
        json!({}),
    );
    api.create(&PostParams::default(), &obj).await.unwrap();
    eventually(WAIT, "both copying with bytes moved", || async {
        let st = api.get("big").await.ok()?.status?;
        st.destinations
            .iter()
            .all(|d| d.phase == DestinationPhase::Copying && d.bytes_copied.unwrap_or(0) > 0)
            .then_some(())
    })
    .await;
    op.child.kill().unwrap(); // SIGKILL
    op.child.wait().unwrap();
    for r in ["region-two", "region-three"] {
        cloud.region(r).upload_rate.store(0, Ordering::Relaxed);
    }

    let op2 = Operator::start(&kubeconfig, dir.path(), "op-b", &op_args());
    let st = wait_ready(&api, "big").await;
    for r in ["region-two", "region-three"] {
        let copies = b.copies_in(r).await;
        assert_eq!(copies.len(), 1, "exactly one image in {r}: {copies:?}");
        assert_eq!(copies[0]["status"], "active");
        assert_eq!(copies[0]["os_hash_value"], src_hash);
        let d = st.destinations.iter().find(|d| d.region == r).unwrap();
        assert_eq!(d.attempts, 1, "resumed, not started again: {d:?}");
        assert_eq!(d.image_id.as_deref(), copies[0]["id"].as_str());
    }
    assert_eq!(
        b.images().await.len(),
        2,
        "nothing else left behind in the destination service"
    );
    // Glance cannot resume an upload: a restart says so (an Event, whose repeats within six
    // minutes count in its series, as kube's Recorder does), with the bytes sent again; the
    // log names each one.
    let restarted: Vec<String> = support::events_with(&c, "default", "big", &["UploadRestarted"])
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("UploadRestarted"))
        .filter_map(|e| e.note)
        .collect();
    assert!(
        restarted
            .iter()
            .any(|n| n.contains("bytes already sent are sent again")),
        "{restarted:?}"
    );
    let logs = op2.logs();
    for r in ["region-two", "region-three"] {
        assert!(
            logs.lines()
                .any(|l| l.contains("restarted the upload from the start") && l.contains(r)),
            "{r}: {logs}"
        );
    }
    drop(op2);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_mid_copy_honours_each_deletion_policy() {
    let (a, b) = (Glance::start(), Glance::start());
    let cloud = Cloud::start(&[
        ("region-one", a.url(), 0),
        ("fast", b.url(), 0),
        ("slow", b.url(), 256 << 10),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = make_image(dir.path(), "app", "raw", 8);
    let src = a.upload("app", "raw", &file, json!({})).await;

    let (s, c) = support::cluster().await;
    password_secret(&c, &cloud).await;
    let _op = Operator::start(&s.write_kubeconfig(dir.path()), dir.path(), "op-a", &op_args());
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let mut uids = BTreeMap::new(); // two objects, same image and regions: separate copies
    for (name, policy) in [("keep", "Retain"), ("drop", "Delete")] {
        let obj = object(
            name,
            json!({"region": "region-one", "imageId": src}),
            json!([{"region": "fast", "name": format!("{name}-fast")}, {"region": "slow", "name": format!("{name}-slow")}]),
            json!({"deletionPolicy": policy}),
        );
        let created = api.create(&PostParams::default(), &obj).await.unwrap();
        uids.insert(name, created.metadata.uid.unwrap());
    }
    for name in ["keep", "drop"] {
        eventually(WAIT, "fast Available, slow Copying", || async {
            let st = api.get(name).await.ok()?.status?;
            (phase(&st, "fast") == Some(DestinationPhase::Available)
                && phase(&st, "slow") == Some(DestinationPhase::Copying))
            .then_some(())
        })
        .await;
    }
    for name in ["keep", "drop"] {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in ["keep", "drop"] {
        eventually(WAIT, "object gone after cleanup", || async {
            api.get(name).await.is_err().then_some(())
        })
        .await;
    }
    let names: Vec<String> = b
        .images()
        .await
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        vec!["keep-fast".to_string()],
        "Retain keeps the finished copy; in-flight copies are cancelled; Delete removes all"
    );
    assert_eq!(a.images().await.len(), 1, "the source is untouched");
    assert_eq!(
        cloud.region("slow").count("POST", "/v2/images"),
        2,
        "each object started its own copy (tokens are per object): {uids:?}"
    );
    // The cancelled streams are broken off, not finished: the proxy in front of Glance sees each
    // upload end with the operator's side gone (502), once it has drained what the kernel buffered.
    eventually(WAIT, "no upload still running", || async {
        (cloud.region("slow").uploads_now.load(Ordering::SeqCst) == 0).then_some(())
    })
    .await;
    let puts: Vec<u16> = cloud
        .region("slow")
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, p, _)| m == "PUT" && p.ends_with("/file"))
        .map(|r| r.2)
        .collect();
    assert_eq!(puts, vec![502, 502], "both slow uploads were broken off by the cancel");
    let evs = support::events_for(&c, "keep").await;
    let note = evs
        .iter()
        .find(|e| e.reason.as_deref() == Some("CleanupComplete"))
        .and_then(|e| e.note.clone())
        .unwrap_or_default();
    assert!(
        note.contains("cancelled the copies in flight to slow") && note.contains("kept the destination images in fast"),
        "{note}"
    );
    let evs = support::events_for(&c, "drop").await;
    let note = evs
        .iter()
        .find(|e| e.reason.as_deref() == Some("CleanupComplete"))
        .and_then(|e| e.note.clone())
        .unwrap_or_default();
    assert!(note.contains("deleted the destination images in fast"), "{note}");
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_rules_refuse_before_any_copy_starts_and_unready_sources_wait() {
    let (a, b) = (Glance::start(), Glance::start());
    let cloud = Cloud::start(&[("region-one", a.url(), 0), ("region-two", b.url(), 0)]).await;
    let dir = tempfile::tempdir().unwrap();
    let small = make_image(dir.path(), "small", "raw", 1);
    let big = make_image(dir.path(), "big", "raw", 3);
    let iso = a.upload("installer", "iso", &small, json!({})).await;
    let large = a.upload("large", "raw", &big, json!({})).await;
    let off = a.upload("retired", "raw", &small, json!({})).await;
    a.deactivate(&off).await;
    let pending = a.create_empty("pending").await;

    let (s, c) = support::cluster().await;
    password_secret(&c, &cloud).await;
    let mut args = op_args();
    args.extend(["--openstack-max-image-bytes", "2097152"]);
    let _op = Operator::start(&s.write_kubeconfig(dir.path()), dir.path(), "op-a", &args);
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let cases = [
        ("iso", &iso, "DiskFormatNotReplicable"),
        ("large", &large, "ImageTooLarge"),
        ("retired", &off, "SourceNotUsable"),
    ];
    for (name, id, _) in cases.iter().chain([("pending", &pending, "")].iter()) {
        let obj = object(
            name,
            json!({"region": "region-one", "imageId": id}),
            json!([{"region": "region-two"}]),
            json!({}),
        );
        api.create(&PostParams::default(), &obj).await.unwrap();
    }
    for (name, id, reason) in cases {
        let st = eventually(WAIT, &format!("{name} refused"), || async {
            let st = api.get(name).await.ok()?.status?;
            st.conditions
                .iter()
                .any(|c| c.type_ == "Validated" && c.status == "False")
                .then_some(st)
        })
        .await;
        let v = st.conditions.iter().find(|c| c.type_ == "Validated").unwrap();
        assert_eq!(v.reason, reason, "{name}");
        assert!(
            v.message.contains(id.as_str()) && v.message.contains("spec.source.imageId"),
            "{name}: {}",
            v.message
        );
        assert!(
            st.conditions.iter().any(|c| c.type_ == "Stalled" && c.status == "True"),
            "{name} stalled"
        );
        // The Event follows the status write.
        eventually(WAIT, &format!("{name}: a Warning event {reason}"), || async {
            let evs = support::events_for(&c, name).await;
            evs.iter()
                .any(|e| e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some(reason))
                .then_some(())
        })
        .await;
    }
    // An image without data yet waits, Queued with the reason, and is not Stalled.
    let st = eventually(WAIT, "pending waits", || async {
        let st = api.get("pending").await.ok()?.status?;
        (phase(&st, "region-two") == Some(DestinationPhase::Queued)).then_some(st)
    })
    .await;
    let d = &st.destinations[0];
    assert!(
        d.message.as_deref().unwrap_or("").contains("still being created"),
        "{d:?}"
    );
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "False")
    );
    assert_eq!(
        cloud.region("region-two").count("POST", "/v2/images"),
        0,
        "no copy was started anywhere"
    );
    assert!(b.images().await.is_empty());

    // Once the image has its data, the waiting copy proceeds.
    a.put_data(&pending, &small).await;
    wait_ready(&api, "pending").await;
    assert_eq!(b.copies_in("region-two").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn replicate_command_copies_vm_images_without_a_cluster() {
    let (a, b) = (Glance::start(), Glance::start());
    let cloud = Cloud::start(&[("region-one", a.url(), 0), ("region-two", b.url(), 0)]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = make_image(dir.path(), "cli", "qcow2", 2);
    a.upload("cli", "qcow2", &file, json!({})).await;
    let manifest = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: os-creds}}
stringData: {{authUrl: "{}", username: demo, password: {}, projectName: demo}}
---
apiVersion: replication.imageops.io/v1alpha1
kind: ImageReplication
metadata: {{name: cli, namespace: default}}
spec:
  provider: {{kind: openstack, credentialsSecretRef: {{name: os-creds}}}}
  source: {{region: region-one, imageName: cli}}
  destinations: [{{region: region-two}}]
"#,
        cloud.auth_url(),
        support::openstack::PASSWORD
    );
    let path = dir.path().join("vm.yaml");
    std::fs::write(&path, manifest).unwrap();
    for run in 1..=2 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_image-replication-operator"))
            .args(["replicate", "-f", path.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "run {run}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("ImageReplication cli: Ready (1/1 available)"), "{text}");
        assert!(!text.contains(support::openstack::PASSWORD), "no secret in the output");
        // A second run finds the first run's copy by its token instead of copying again.
        assert_eq!(b.copies_in("region-two").await.len(), 1, "run {run}");
    }
}

/// Against a real Keystone (Debian, Zed): its default region id `RegionOne` and case-sensitive
/// ids are accepted; a hidden source is found by name; min_disk, min_ram, os_hidden and tags
/// travel with the copy; a region added to Keystone while the operator runs is used without a
/// restart; a region Keystone does not have is named with the catalog's regions, each once.
#[tokio::test(flavor = "multi_thread")]
async fn real_keystone_region_ids_catalog_changes_and_image_attributes() {
    let ks = support::keystone::Keystone::start().await;
    let (one, two, three) = (Glance::start(), Glance::start(), Glance::start());
    let cloud = Cloud::with_keystone(
        ks.api.clone(),
        &[
            ("RegionOne", one.url()),
            ("RegionTwo", two.url()),
            ("RegionThree", three.url()),
        ],
    )
    .await;
    ks.add_region("RegionTwo").await;
    ks.add_region("RegionThree").await;
    let glance = ks.add_image_service().await;
    for iface in ["public", "internal", "admin"] {
        ks.add_endpoint(&glance, "RegionOne", iface, &cloud.proxy_url("RegionOne"))
            .await;
    }
    ks.add_endpoint(&glance, "RegionTwo", "public", &cloud.proxy_url("RegionTwo"))
        .await;

    let dir = tempfile::tempdir().unwrap();
    let file = make_image(dir.path(), "base", "qcow2", 4);
    let src = one
        .upload(
            "base",
            "qcow2",
            &file,
            json!({"min_disk": 2, "min_ram": 512, "os_hidden": true, "tags": ["t1", "t2"], "os_distro": "debian"}),
        )
        .await;
    let (s, c) = support::cluster().await;
    secret(
        &c,
        "os-creds",
        &[
            ("authUrl", &cloud.auth_url()),
            ("username", "admin"),
            ("password", support::keystone::ADMIN_PASSWORD),
            ("projectName", "admin"),
        ],
    )
    .await;
    let op = Operator::start(&s.write_kubeconfig(dir.path()), dir.path(), "op-a", &op_args());
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let obj = object(
        "base",
        json!({"region": "RegionOne", "imageName": "base"}),
        json!([{"region": "RegionTwo", "tags": {"team": "platform"}}]),
        json!({}),
    );
    api.create(&PostParams::default(), &obj).await.unwrap();
    let st = wait_ready(&api, "base").await;
    assert_eq!(
        st.source.as_ref().and_then(|s| s.image_id.as_deref()),
        Some(src.as_str()),
        "the hidden source found by name"
    );
    let copies = two.copies_in("RegionTwo").await;
    assert_eq!(copies.len(), 1, "{copies:?}");
    let copy = &copies[0];
    assert_eq!(copy["min_disk"], 2, "min_disk carried");
    assert_eq!(copy["min_ram"], 512, "min_ram carried");
    assert_eq!(copy["os_hidden"], true, "os_hidden carried");
    let mut tags: Vec<&str> = copy["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        vec!["t1", "t2", "team=platform"],
        "the source's tags and the spec's"
    );
    assert_eq!(copy["os_distro"], "debian");

    // A region Keystone does not have: the catalog's regions, each named once.
    let nowhere = object(
        "nowhere",
        json!({"region": "RegionOne", "imageId": src}),
        json!([{"region": "RegionNine"}]),
        json!({}),
    );
    api.create(&PostParams::default(), &nowhere).await.unwrap();
    let msg = eventually(WAIT, "RegionNine refused", || async {
        let st = api.get("nowhere").await.ok()?.status?;
        let d = st.destinations.iter().find(|d| d.region == "RegionNine")?;
        d.message.clone().filter(|m| m.contains("no public image endpoint"))
    })
    .await;
    assert!(msg.contains("(regions: RegionOne, RegionTwo)"), "{msg}");
    assert!(msg.contains("no attempt counted"), "not a failed copy: {msg}");
    let st = api.get("nowhere").await.unwrap().status.unwrap();
    assert_eq!(st.destinations[0].attempts, 0, "no attempt counted");

    // A region added to Keystone while the operator runs: used at once, no restart.
    ks.add_endpoint(&glance, "RegionThree", "public", &cloud.proxy_url("RegionThree"))
        .await;
    let later = object(
        "later",
        json!({"region": "RegionOne", "imageId": src}),
        json!([{"region": "RegionThree"}]),
        json!({}),
    );
    api.create(&PostParams::default(), &later).await.unwrap();
    wait_ready(&api, "later").await;
    assert_eq!(three.copies_in("RegionThree").await.len(), 1);
    // The admin adds the missing region: the waiting destination goes on by itself (no
    // retry annotation, no restart), with a truthful attempt count.
    ks.add_region("RegionNine").await;
    ks.add_endpoint(&glance, "RegionNine", "public", &cloud.proxy_url("RegionThree"))
        .await;
    let st = wait_ready(&api, "nowhere").await;
    assert_eq!(st.destinations[0].attempts, 1, "{:?}", st.destinations[0]);
    support::assert_secrets_kept(&s, &op, &[support::keystone::ADMIN_PASSWORD]).await;
}

/// A Glance GET with a tenant's own token, through the region's keystonemiddleware proxy.
async fn get_as(cloud: &Cloud, region: &str, token: &str, path: &str) -> u16 {
    support::openstack::client()
        .get(format!("{}{path}", cloud.proxy_url(region)))
        .header("X-Auth-Token", token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The seeds' cross-account distribution on a real Keystone and real Glance: a copy in
/// RegionTwo shared with two other projects (one accepted by the operator with that project's
/// own credentials, one left to its owner and shown Pending with why, until it accepts), the
/// source itself shared in its own region (no copy); the member's token sees the image; an
/// account removed from shareWith loses it; deletion withdraws every share before it deletes the
/// copy, and never deletes the source.
#[tokio::test(flavor = "multi_thread")]
async fn shares_copies_with_other_projects_on_real_keystone_and_glance() {
    let ks = support::keystone::Keystone::start().await;
    let (one, two) = (Glance::start(), Glance::start());
    let cloud = Cloud::with_keystone(ks.api.clone(), &[("RegionOne", one.url()), ("RegionTwo", two.url())]).await;
    ks.add_region("RegionTwo").await;
    let glance = ks.add_image_service().await;
    for r in ["RegionOne", "RegionTwo"] {
        ks.add_endpoint(&glance, r, "public", &cloud.proxy_url(r)).await;
    }
    let team_b = ks.add_tenant("team-b", "bob", "bob-pw-Q1").await;
    let team_c = ks.add_tenant("team-c", "carol", "carol-pw-Q2").await;

    let dir = tempfile::tempdir().unwrap();
    let file = make_image(dir.path(), "golden", "qcow2", 4);
    // Uploaded as `openstack image create --private` does: Glance refuses to list a private
    // image's members (403), so the operator makes it `shared` first (the copy, which carries
    // the visibility, too). Before the fix the member list was read every 5 s forever.
    let src = one
        .upload("golden", "qcow2", &file, json!({"visibility": "private"}))
        .await;
    // `--public` and `--community` images are open to every project already: a share of one
    // is refused once, with why, and a copy of a public one (private) is shared.
    let public = one
        .upload("open", "qcow2", &file, json!({"visibility": "public"}))
        .await;
    let community = one
        .upload("commons", "qcow2", &file, json!({"visibility": "community"}))
        .await;
    let (s, c) = support::cluster().await;
    let creds = |user: &'static str, pw: &'static str, project: &'static str| {
        let url = cloud.auth_url();
        let c = c.clone();
        async move {
            let name = format!("{user}-creds");
            let data = [
                ("authUrl", url.as_str()),
                ("username", user),
                ("password", pw),
                ("projectName", project),
            ];
            secret(&c, &name, &data).await;
        }
    };
    creds("admin", support::keystone::ADMIN_PASSWORD, "admin").await;
    creds("bob", "bob-pw-Q1", "team-b").await;
    let op = Operator::start(&s.write_kubeconfig(dir.path()), dir.path(), "op-a", &op_args());
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let mut obj = object(
        "golden",
        json!({"region": "RegionOne", "imageId": src}),
        json!([
            {"region": "RegionTwo", "shareWith": [
                {"account": team_b, "acceptWith": {"name": "bob-creds"}},
                {"account": team_c}]},
            {"region": "RegionOne", "shareWith": [{"account": team_b, "acceptWith": {"name": "bob-creds"}}]}
        ]),
        json!({"deletionPolicy": "Delete"}),
    );
    obj.spec.provider.credentials_secret_ref = Some(image_replication_operator::api::v1alpha1::SecretRef {
        name: "admin-creds".into(),
    });
    api.create(&PostParams::default(), &obj).await.unwrap();

    // team-b is accepted by the operator; team-c waits for its owner, and says so.
    let st = eventually(WAIT, "team-b accepted, team-c pending", || async {
        let st = api.get("golden").await.ok()?.status?;
        (st.summary.as_deref() == Some("2/2 available, 2/3 shares")).then_some(st)
    })
    .await;
    let d2 = st.destinations.iter().find(|d| d.region == "RegionTwo").unwrap();
    let copy = d2.image_id.clone().unwrap();
    let c_share = d2.shares.iter().find(|x| x.account == team_c).unwrap();
    assert_eq!(format!("{:?}", c_share.state), "Pending");
    assert!(
        c_share
            .message
            .as_deref()
            .unwrap()
            .contains(&format!("accept it in account {team_c}")),
        "{c_share:?}"
    );
    let r = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((r.status.as_str(), r.reason.as_str()), ("False", "SharesPending"));
    let d1 = st.destinations.iter().find(|d| d.region == "RegionOne").unwrap();
    assert_eq!(
        d1.image_id.as_deref(),
        Some(src.as_str()),
        "the source itself is shared"
    );
    assert_eq!(
        one.image(&src).await.unwrap()["visibility"],
        "shared",
        "the private source made shared"
    );
    // The member list of each image is read a bounded number of times (it was every 5 s,
    // forever, for a private image).
    for (region, image) in [("RegionOne", &src), ("RegionTwo", &copy)] {
        let reads = cloud
            .region(region)
            .count("GET", &format!("/v2/images/{image}/members"));
        assert!(reads <= 15, "{region}: {reads} member list reads");
    }

    // The public and community images: each share refused once with why; the public one's
    // copy (private) is shared.
    for (name, image, vis) in [("open", &public, "public"), ("commons", &community, "community")] {
        let mut o = object(
            name,
            json!({"region": "RegionOne", "imageId": image}),
            json!([
                {"region": "RegionOne", "shareWith": [{"account": team_c}]},
                {"region": "RegionTwo", "shareWith": [{"account": team_c}]}
            ]),
            json!({"deletionPolicy": "Delete"}),
        );
        o.spec.provider.credentials_secret_ref = obj.spec.provider.credentials_secret_ref.clone();
        api.create(&PostParams::default(), &o).await.unwrap();
        let st = eventually(WAIT, &format!("{name}: the in-place share refused"), || async {
            let st = api.get(name).await.ok()?.status?;
            let d = st.destinations.iter().find(|d| d.region == "RegionOne")?;
            let share = d.shares.first()?;
            (format!("{:?}", share.state) == "Failed").then_some(st)
        })
        .await;
        let d = st.destinations.iter().find(|d| d.region == "RegionOne").unwrap();
        let why = d.shares[0].message.clone().unwrap_or_default();
        assert!(
            why.contains(&format!("is {vis}")) && why.contains("every project"),
            "{name}: {why}"
        );
        let d2 = eventually(WAIT, &format!("{name}: the copy's share"), || async {
            let st = api.get(name).await.ok()?.status?;
            let d = st.destinations.iter().find(|d| d.region == "RegionTwo")?.clone();
            (d.shares.first()?.attempts > 0
                || format!("{:?}", d.shares.first()?.state) != "Pending"
                || d.shares.first()?.message.as_deref()?.contains("accept it in account"))
            .then_some(d)
        })
        .await;
        let copy_share = format!("{:?}", d2.shares[0].state);
        if vis == "public" {
            assert_eq!(
                copy_share, "Pending",
                "{name}: the private copy shared, waiting for team-c: {d2:?}"
            );
            let copy = d2.image_id.clone().unwrap();
            assert_eq!(two.image(&copy).await.unwrap()["visibility"], "shared");
        } else {
            assert_eq!(
                copy_share, "Failed",
                "{name}: the community copy is open to all: {d2:?}"
            );
        }
        let calls = cloud
            .region("RegionOne")
            .count("POST", &format!("/v2/images/{image}/members"));
        assert_eq!(calls, 0, "{name}: no member added to a {vis} image");
        api.delete(name, &DeleteParams::default()).await.unwrap();
        eventually(WAIT, &format!("{name} gone"), || async {
            api.get_opt(name).await.ok()?.is_none().then_some(())
        })
        .await;
        assert!(one.image(image).await.is_some(), "{name}: the source is kept");
    }
    assert_eq!(
        one.images().await.len(),
        3,
        "nothing copied into the source's region (the source and the two open images)"
    );
    assert_eq!(two.image(&copy).await.unwrap()["visibility"], "shared");

    // The member's own token sees the copy and the source.
    let bob = ks.token("bob", "bob-pw-Q1", "team-b").await.unwrap();
    assert_eq!(
        get_as(&cloud, "RegionTwo", &bob, &format!("/v2/images/{copy}")).await,
        200
    );
    assert_eq!(
        get_as(&cloud, "RegionOne", &bob, &format!("/v2/images/{src}")).await,
        200
    );

    // carol accepts in her own account: the object is Ready.
    let carol = ks.token("carol", "carol-pw-Q2", "team-c").await.unwrap();
    let r = support::openstack::client()
        .put(format!(
            "{}/v2/images/{copy}/members/{team_c}",
            cloud.proxy_url("RegionTwo")
        ))
        .header("X-Auth-Token", &carol)
        .json(&json!({"status": "accepted"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "carol accepts: {}", r.status());
    let st = wait_ready(&api, "golden").await;
    assert_eq!(st.summary.as_deref(), Some("2/2 available, 3/3 shares"));
    support::reasons_with(&c, "golden", &["Shared", "ShareAccepted"]).await;

    // team-b leaves RegionTwo's list: its share is withdrawn, bob no longer sees the copy.
    let patch = json!({"spec": {"destinations": [
        {"region": "RegionTwo", "shareWith": [{"account": team_c}]},
        {"region": "RegionOne", "shareWith": [{"account": team_b, "acceptWith": {"name": "bob-creds"}}]}
    ]}});
    api.patch(
        "golden",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    eventually(WAIT, "team-b withdrawn", || async {
        let st = api.get("golden").await.ok()?.status?;
        (st.summary.as_deref() == Some("2/2 available, 2/2 shares") && ready(&st)).then_some(())
    })
    .await;
    assert_eq!(
        get_as(&cloud, "RegionTwo", &bob, &format!("/v2/images/{copy}")).await,
        404
    );

    // A protected copy blocks the delete: the message says so in one clean line (not Glance's
    // HTML page), naming the image once. Unprotected, the delete goes on.
    let admin = ks
        .token("admin", support::keystone::ADMIN_PASSWORD, "admin")
        .await
        .unwrap();
    let protect = |on: bool| {
        let (url, admin) = (
            format!("{}/v2/images/{copy}", cloud.proxy_url("RegionTwo")),
            admin.clone(),
        );
        async move {
            let r = support::openstack::client()
                .patch(url)
                .header("X-Auth-Token", admin)
                .header("Content-Type", "application/openstack-images-v2.1-json-patch")
                .body(json!([{"op": "replace", "path": "/protected", "value": on}]).to_string())
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "protect {on}: {}", r.status());
        }
    };
    protect(true).await;
    api.delete("golden", &DeleteParams::default()).await.unwrap();
    let msg = eventually(WAIT, "the delete blocked", || async {
        let st = api.get("golden").await.ok()?.status?;
        let c = st.conditions.iter().find(|c| c.type_ == "Ready")?;
        c.message.contains("protected").then(|| c.message.clone())
    })
    .await;
    assert!(!msg.contains('<') && !msg.contains('\n'), "{msg}");
    assert_eq!(msg.matches("deleting image").count(), 1, "{msg}");
    assert!(
        msg.contains(&format!("RegionTwo: deleting image {copy}: Glance: HTTP 403")),
        "{msg}"
    );
    protect(false).await;

    // Delete: every share withdrawn, the copy deleted, the source kept.
    eventually(WAIT, "golden gone", || async {
        api.get_opt("golden").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(two.image(&copy).await.is_none(), "the copy is deleted");
    assert!(one.image(&src).await.is_some(), "the source is kept");
    assert_eq!(
        get_as(&cloud, "RegionOne", &bob, &format!("/v2/images/{src}")).await,
        404
    );
    support::assert_secrets_kept(&s, &op, &[support::keystone::ADMIN_PASSWORD, "bob-pw-Q1"]).await;
}
