//! ReplicaInstance with `primary.provider: tencent`, end to end: the operator process and the
//! fake API server against a TCR API stand-in (tests/support/clouds/) that checks every
//! request's TC3-HMAC-SHA256 signature and CreateReplicationInstance's 1 request/s limit.

use crate::support;

use std::time::Duration;

use image_replication_operator::api::ReplicaInstance;
use image_replication_operator::api::v1alpha1::ReplicaPhase;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use support::clouds::{AK, Kind, SK, Stand};
use support::operator::{Operator, eventually};

const WAIT: Duration = Duration::from_secs(60);

fn replica(name: &str, instance: &str, region: &str, policy: &str) -> ReplicaInstance {
    serde_json::from_value(json!({
        "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ReplicaInstance",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"primary": {"provider": "tencent", "region": "ap-guangzhou", "instanceId": instance,
                             "credentialsSecretRef": {"name": "tcr"}},
                 "region": region, "deletionPolicy": policy}
    }))
    .unwrap()
}

fn cond(r: &ReplicaInstance, t: &str) -> Option<(String, String, String)> {
    let c = r.status.as_ref()?.conditions.iter().find(|c| c.type_ == t)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test(flavor = "multi_thread")]
async fn tcr_replicas_are_created_reported_and_deleted_under_policy() {
    let tcr = Stand::start(Kind::Tcr).await;
    tcr.state.tcr_instances.lock().unwrap().extend([
        (
            "tcr-prem".to_string(),
            "ap-guangzhou".to_string(),
            "premium".to_string(),
        ),
        (
            "tcr-std".to_string(),
            "ap-guangzhou".to_string(),
            "standard".to_string(),
        ),
    ]);
    tcr.state.tcr_log.lock().unwrap().push(json!({"ResourceType": "image",
        "Source": "team/web:1", "Destination": "team/web:1", "Status": "Success",
        "StartTime": "2026-11-24 08:00:01", "EndTime": "2026-11-24 08:00:04"}));
    let dir = tempfile::tempdir().unwrap();
    let (s, c) = support::cluster().await;
    support::secret(
        &c,
        "tcr",
        &[("secretId", AK), ("secretKey", SK), ("endpoint", &tcr.url)],
    )
    .await;
    let op = Operator::start(&s.write_kubeconfig(dir.path()), dir.path(), "op-a", &[]);
    let api: Api<ReplicaInstance> = Api::namespaced(c.clone(), "default");
    for (name, inst, region, policy) in [
        ("sh", "tcr-prem", "ap-shanghai", "Delete"),
        ("bj", "tcr-prem", "ap-beijing", "Retain"),
        ("std", "tcr-std", "ap-chengdu", "Delete"),
        ("nj", "tcr-prem", "ap-nanjing", "Delete"),
    ] {
        api.create(&PostParams::default(), &replica(name, inst, region, policy))
            .await
            .unwrap();
    }

    for name in ["sh", "bj"] {
        eventually(WAIT, &format!("{name} in sync"), || async {
            let r = api.get(name).await.ok()?;
            (cond(&r, "Ready")?.0 == "True" && cond(&r, "Synced")?.0 == "True").then_some(())
        })
        .await;
    }
    let r = api.get("sh").await.unwrap();
    let st = r.status.clone().unwrap();
    assert_eq!(st.phase, Some(ReplicaPhase::InSync));
    assert!(st.last_full_sync_time.is_some(), "ReplicationTime is lastFullSyncTime");
    assert!(cond(&r, "Ready").unwrap().2.contains("tcr-prem-ap-shanghai"));

    let all_creates = tcr.calls("CreateReplicationInstance");
    assert!(
        all_creates.iter().all(|r| !r.throttled),
        "creates kept to 1/s: {all_creates:?}"
    );
    let creates: Vec<_> = all_creates
        .iter()
        .filter(|r| r.body["ReplicationRegionName"] != "ap-nanjing")
        .collect();
    assert_eq!(creates.len(), 2, "one create per replica region: {creates:?}");
    assert!(
        creates.iter().all(
            |r| r.body["ReplicationRegionName"] == "ap-shanghai" || r.body["ReplicationRegionName"] == "ap-beijing"
        )
    );
    assert!(
        tcr.requests().iter().all(|r| !r.bad_signature),
        "every request was signed correctly"
    );
    assert!(
        tcr.requests()
            .iter()
            .all(|r| r.headers["x-tc-region"] == "ap-guangzhou"),
        "TCR calls go to the primary's region"
    );

    // The standard instance is refused with the seed's reason, and nothing is created for it.
    let std = eventually(WAIT, "std refused", || async {
        let r = api.get("std").await.ok()?;
        let v = cond(&r, "Validated")?;
        (v.0 == "False").then_some(v)
    })
    .await;
    assert_eq!(std.1, "NotPremiumInstance");
    assert!(std.2.contains("premium"), "{}", std.2);
    assert!(
        !tcr.calls("CreateReplicationInstance")
            .iter()
            .any(|r| r.body["RegistryId"] == "tcr-std")
    );

    // A create the cloud refuses is a Warning Event with its reason, and stays Reconciling.
    let note = eventually(WAIT, "CreateReplicaFailed event", || async {
        support::events_for(&c, "nj")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("CreateReplicaFailed"))
            .and_then(|e| e.note)
    })
    .await;
    assert!(note.contains("UnsupportedOperation"), "{note}");
    let nj = api.get("nj").await.unwrap();
    assert_eq!(cond(&nj, "Reconciling").unwrap().0, "True");
    api.delete("nj", &DeleteParams::default()).await.unwrap();

    // A failed replication shows in status and as a Warning Event.
    tcr.state.tcr_log.lock().unwrap().push(json!({"ResourceType": "image",
        "Source": "team/api:2", "Destination": "team/api:2", "Status": "Failed",
        "StartTime": "2026-11-24 08:01:01", "EndTime": "2026-11-24 08:01:09"}));
    let degraded = eventually(WAIT, "sh degraded", || async {
        let r = api.get("sh").await.ok()?;
        let st = r.status?;
        (st.phase == Some(ReplicaPhase::Degraded)).then_some(st)
    })
    .await;
    assert_eq!(degraded.recent_failures.len(), 1);
    assert_eq!(degraded.recent_failures[0].artifact, "team/api:2");
    eventually(WAIT, "ReplicationFailed event", || async {
        support::event_reasons(&c, "sh")
            .await
            .iter()
            .any(|r| r == "ReplicationFailed")
            .then_some(())
    })
    .await;

    // A replica whose primary is gone (TCR answers ResourceNotFound.TcrResourceNotFound): the
    // object with the Delete policy goes, there is nothing left to delete.
    tcr.state
        .tcr_instances
        .lock()
        .unwrap()
        .push(("tcr-gone".into(), "ap-guangzhou".into(), "premium".into()));
    api.create(
        &PostParams::default(),
        &replica("orphan", "tcr-gone", "ap-chongqing", "Delete"),
    )
    .await
    .unwrap();
    eventually(WAIT, "orphan's replica created", || async {
        let reps = tcr.state.tcr_replicas.lock().unwrap().clone();
        reps.iter().any(|r| r.0 == "tcr-gone").then_some(())
    })
    .await;
    tcr.state.tcr_instances.lock().unwrap().retain(|i| i.0 != "tcr-gone");
    tcr.state.tcr_replicas.lock().unwrap().retain(|r| r.0 != "tcr-gone");
    api.delete("orphan", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "orphan gone", || async {
        api.get("orphan").await.is_err().then_some(())
    })
    .await;

    // Delete: the Delete policy removes its replica; Retain keeps the other; the primary stays.
    for name in ["sh", "bj"] {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in ["sh", "bj"] {
        eventually(WAIT, "gone", || async { api.get(name).await.is_err().then_some(()) }).await;
    }
    let deletes = tcr.calls("DeleteReplicationInstance");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].body["ReplicationRegistryId"], "tcr-prem-ap-shanghai");
    let left: Vec<String> = tcr
        .state
        .tcr_replicas
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.2.clone())
        .collect();
    assert_eq!(left, vec!["ap-beijing".to_string()]);
    assert_eq!(
        tcr.state.tcr_instances.lock().unwrap().len(),
        2,
        "primaries are never touched"
    );
    support::assert_secrets_kept(&s, &op, &[AK, SK]).await;
    tcr.assert_conforms();
}

/// A premium instance `id` in ap-guangzhou whose replication log has one success.
fn premium_with_a_log(tcr: &Stand, id: &str) {
    tcr.state
        .tcr_instances
        .lock()
        .unwrap()
        .push((id.to_string(), "ap-guangzhou".to_string(), "premium".to_string()));
    tcr.state.tcr_log.lock().unwrap().push(json!({"ResourceType": "image",
        "Source": "team/web:1", "Destination": "team/web:1", "Status": "Success",
        "StartTime": "2026-11-24 08:00:01", "EndTime": "2026-11-24 08:00:04"}));
}

/// `replicate -f` drives a tencent ReplicaInstance too (same observe, plan and create as the
/// controller), with the credentials from a Secret in the files.
#[tokio::test(flavor = "multi_thread")]
async fn replicate_command_creates_a_tcr_replica_without_a_cluster() {
    let tcr = Stand::start(Kind::Tcr).await;
    premium_with_a_log(&tcr, "tcr-prem");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("replica.yaml");
    std::fs::write(
        &f,
        format!(
            "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: tcr}}\nstringData: {{secretId: {AK}, secretKey: {SK}, endpoint: '{}'}}\n",
            serde_yaml::to_string(&replica("sh", "tcr-prem", "ap-shanghai", "Retain")).unwrap(),
            tcr.url
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_image-replication-operator"))
            .args(["replicate", "-f"])
            .arg(&f)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("ReplicaInstance sh: Ready"), "{text}");
    assert!(text.contains("created replica instance"), "{text}");
    let creates = tcr.calls("CreateReplicationInstance");
    assert_eq!(creates.len(), 1, "{creates:?}");
    assert_eq!(creates[0].body["ReplicationRegionName"], "ap-shanghai");
    assert!(tcr.requests().iter().all(|r| !r.bad_signature));
    assert!(!text.contains(SK), "the secret key is never printed");
}

/// No Secret: the TKE OIDC variables name a role and a token file; the operator exchanges the
/// token at the stand-in's STS (`AssumeRoleWithWebIdentity`) and manages the replica with the
/// handed-out keys and their `X-TC-Token`.
#[tokio::test(flavor = "multi_thread")]
async fn replicate_command_creates_a_tcr_replica_with_no_secret_through_tke_oidc() {
    use base64::Engine as _;
    let tcr = Stand::start(Kind::Tcr).await;
    let role = "qcs::cam::uin/100000000001:roleName/image-replication-operator";
    tcr.trust_web_identity(
        "https://oidc.tke.example",
        "sts.cloud.tencent.com",
        &[(role, support::clouds::TC_ACCOUNT)],
    );
    premium_with_a_log(&tcr, "tcr-abcd1234");
    let dir = tempfile::tempdir().unwrap();
    // A ServiceAccount token as TKE projects it (the real API server's are tests/suites/identity.rs').
    let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let exp = k8s_openapi::jiff::Timestamp::now().as_second() + 3600;
    let jwt = format!(
        "{}.{}.sig",
        b64(json!({"alg": "RS256"})),
        b64(
            json!({"iss": "https://oidc.tke.example", "aud": "sts.cloud.tencent.com", "exp": exp, "sub": "system:serviceaccount:ops:iro"})
        )
    );
    let token = dir.path().join("token");
    std::fs::write(&token, &jwt).unwrap();
    let f = dir.path().join("replica.yaml");
    // deploy/examples/replica-tencent-keyless.yaml, as a user applies it.
    std::fs::write(&f, include_str!("../../deploy/examples/replica-tencent-keyless.yaml")).unwrap();
    let url = tcr.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_image-replication-operator"))
            .args(["replicate", "-f"])
            .arg(&f)
            .env("TKE_REGION", "ap-guangzhou")
            .env("TKE_PROVIDER_ID", "tke-oidc-c1")
            .env("TKE_WEB_IDENTITY_TOKEN_FILE", &token)
            .env("TKE_ROLE_ARN", role)
            .env("TENCENTCLOUD_STS_ENDPOINT", &url)
            .env("TENCENTCLOUD_TCR_ENDPOINT", &url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("ReplicaInstance tcr-shanghai-keyless: Ready"), "{text}");
    assert_eq!(tcr.count("CreateReplicationInstance"), 1);
    assert_eq!(tcr.count("AssumeRoleWithWebIdentity"), 1, "{:?}", tcr.counts());
    let keys = tcr.sessions();
    for r in tcr
        .requests()
        .iter()
        .filter(|r| r.action() != "AssumeRoleWithWebIdentity")
    {
        assert_eq!(r.headers.get("x-tc-token"), Some(&keys[0].token), "{}", r.action());
        assert!(r.headers["authorization"].contains(&format!("Credential={}/", keys[0].ak)));
    }
    assert!(!text.contains(&jwt) && !text.contains(&keys[0].sk));
    tcr.assert_conforms();
}
