//! ImageReplication with the huawei, alibaba and aws providers, end to end: the operator process
//! and the fake API server, against HTTP stand-ins of Huawei IMS, Alibaba ECS and AWS EC2 that
//! check every request's signature (tests/support/clouds/); and the aws provider against moto.

#[path = "vm_clouds/in_time.rs"]
mod in_time;
use crate::support;

use std::time::Duration;

use image_replication_operator::api::ImageReplication;
use image_replication_operator::api::v1alpha1::{DestinationPhase, ImageReplicationStatus};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use support::clouds::{AK, Img, Kind, SK, Stand};
use support::operator::{Operator, eventually};

const WAIT: Duration = Duration::from_secs(60);
const TOKEN_TAG: &str = "imgrep_client_token";

use support::secret;

fn object(name: &str, provider: Value, source: Value, dests: Value, policy: &str) -> ImageReplication {
    serde_json::from_value(json!({
        "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ImageReplication",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"provider": provider, "source": source, "destinations": dests, "deletionPolicy": policy}
    }))
    .unwrap()
}

/// Create an ImageReplication from its parts.
async fn create(api: &Api<ImageReplication>, name: &str, provider: &Value, source: Value, dests: Value, policy: &str) {
    api.create(
        &PostParams::default(),
        &object(name, provider.clone(), source, dests, policy),
    )
    .await
    .unwrap();
}

fn dest<'a>(
    st: &'a ImageReplicationStatus,
    region: &str,
) -> &'a image_replication_operator::api::v1alpha1::DestinationStatus {
    st.destinations.iter().find(|d| d.region == region).unwrap()
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

async fn refused(api: &Api<ImageReplication>, name: &str) -> (String, String) {
    eventually(WAIT, &format!("{name} Validated=False"), || async {
        let st = api.get(name).await.ok()?.status?;
        let c = st
            .conditions
            .iter()
            .find(|c| c.type_ == "Validated" && c.status == "False")?;
        Some((c.reason.clone(), c.message.clone()))
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
        "1",
    ]
}

/// Start a cluster, the credentials Secret and the operator.
async fn setup(
    dir: &std::path::Path,
    secret_name: &str,
    data: &[(&str, &str)],
) -> (support::fake_apiserver::FakeApiServer, Client, Operator) {
    setup_with(dir, secret_name, data, &[]).await
}

/// `setup` with extra environment for the operator (e.g. `LOG_FORMAT=json`).
async fn setup_with(
    dir: &std::path::Path,
    secret_name: &str,
    data: &[(&str, &str)],
    envs: &[(&str, &str)],
) -> (support::fake_apiserver::FakeApiServer, Client, Operator) {
    let (s, c) = support::cluster().await;
    secret(&c, secret_name, data).await;
    let op = Operator::start_on(
        support::operator::free_port(),
        &s.write_kubeconfig(dir),
        dir,
        "op-a",
        &op_args(),
        envs,
    );
    (s, c, op)
}

#[tokio::test(flavor = "multi_thread")]
async fn huawei_replicates_through_ims_jobs_with_signed_requests_and_backs_off_when_throttled() {
    let ims = Stand::start(Kind::Huawei).await;
    let src = ims.add("cn-north-4", "web", 40, json!({}));
    let public = ims.add("cn-north-4", "ubuntu", 40, json!({"__imagetype": "gold"}));
    ims.set_copy_time("cn-east-3", Duration::from_secs(4));
    ims.state.throttle.store(2, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    // JSON logs here (the other scenarios log text): the secrets check reads both formats.
    let (s, c, op) = setup_with(
        dir.path(),
        "hw",
        &[("accessKey", AK), ("secretKey", SK), ("iamEndpoint", &ims.url)],
        &[("LOG_FORMAT", "json")],
    )
    .await;
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let provider = json!({"kind": "huawei", "credentialsSecretRef": {"name": "hw"}, "endpoint": ims.url, "agency": "ims_admin_agency"});
    create(&api, "web", &provider, json!({"region": "cn-north-4", "imageId": src}), json!([{"region": "cn-east-3", "project": "cn-east-3_team"}, {"region": "cn-south-1", "tags": {"team": "web"}}]), "Retain").await;
    create(
        &api,
        "public",
        &provider,
        json!({"region": "cn-north-4", "imageId": public}),
        json!([{"region": "cn-east-3"}]),
        "Retain",
    )
    .await;

    // The job's progress shows while it runs.
    let seen = eventually(WAIT, "cn-east-3 Copying with progress", || async {
        let st = api.get("web").await.ok()?.status?;
        let d = dest(&st, "cn-east-3");
        (d.phase == DestinationPhase::Copying && d.progress_percent.is_some_and(|p| p > 0 && p < 100))
            .then_some(d.clone())
    })
    .await;
    assert!(seen.task_id.is_some(), "the IMS job id is in status: {seen:?}");
    let st = wait_ready(&api, "web").await;

    let copies = ims.calls("/cross_region_copy");
    let web_copies: Vec<_> = copies.iter().filter(|r| r.path.contains(&src)).collect();
    assert_eq!(web_copies.len(), 2, "one copy per region: {copies:?}");
    for r in &web_copies {
        assert_eq!(r.method, "POST");
        assert_eq!(r.body["name"], "copy_cn-north-4_web", "the IMS default name");
        assert_eq!(r.body["agency_name"], "ims_admin_agency");
        assert_eq!(
            r.headers["x-project-id"], "p-cn-north-4",
            "copies run in the source project"
        );
        assert!(r.headers["authorization"].starts_with(
            "SDK-HMAC-SHA256 Access=AKTESTSTANDIN, SignedHeaders=content-type;host;x-project-id;x-sdk-date, Signature="
        ));
    }
    let east = web_copies.iter().find(|r| r.body["region"] == "cn-east-3").unwrap();
    assert_eq!(east.body["project_name"], "cn-east-3_team");
    let south = web_copies.iter().find(|r| r.body["region"] == "cn-south-1").unwrap();
    assert_eq!(south.body["project_name"], "cn-south-1");

    for region in ["cn-east-3", "cn-south-1"] {
        let imgs = ims.images_in(region);
        assert_eq!(imgs.len(), 1, "exactly one image in {region}");
        let d = dest(&st, region);
        assert_eq!(d.image_id.as_deref(), Some(imgs[0].id.as_str()));
        assert_eq!(
            imgs[0].tags.get(TOKEN_TAG),
            d.client_token.as_ref(),
            "tagged with our token"
        );
    }
    assert_eq!(
        ims.images_in("cn-south-1")[0].tags.get("team").map(String::as_str),
        Some("web")
    );
    assert_eq!(ims.images_in("cn-east-3")[0].project, "cn-east-3_team");

    let reqs = ims.requests();
    assert_eq!(
        reqs.iter().filter(|r| r.throttled && r.status == 429).count(),
        2,
        "throttled twice, then backed off and went on"
    );
    assert!(
        reqs.iter().all(|r| !r.bad_signature),
        "every request was signed correctly"
    );

    // The public image is refused before any copy call for it.
    let (reason, message) = refused(&api, "public").await;
    assert_eq!(reason, "NotPrivateImage");
    assert!(message.contains(&public), "{message}");
    // A full-ECS image (found by the list API's __whole_image filter: the answer has no such
    // field) needs a CBR vault per destination: refused before any copy call without one.
    let whole = ims.add("cn-north-4", "server", 40, json!({"__whole_image": "true"}));
    create(
        &api,
        "whole",
        &provider,
        json!({"region": "cn-north-4", "imageId": whole}),
        json!([{"region": "cn-east-3"}]),
        "Retain",
    )
    .await;
    let (reason, _) = refused(&api, "whole").await;
    assert_eq!(reason, "VaultRequired");
    assert!(!ims.calls("/cross_region_copy").iter().any(|r| r.path.contains(&whole)));
    assert!(!ims.calls("/cross_region_copy").iter().any(|r| r.path.contains(&public)));
    assert!(
        op.logs()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| l.starts_with('{')),
        "LOG_FORMAT=json logs JSON lines"
    );
    support::assert_secrets_kept(&s, &op, &[AK, SK]).await;
    ims.assert_conforms();
}

#[tokio::test(flavor = "multi_thread")]
async fn huawei_delete_mid_copy_waits_for_the_job_then_deletes() {
    let ims = Stand::start(Kind::Huawei).await;
    let src = ims.add("cn-north-4", "db", 20, json!({}));
    ims.set_copy_time("cn-south-1", Duration::from_secs(5));
    let dir = tempfile::tempdir().unwrap();
    let (_s, c, _op) = setup(
        dir.path(),
        "hw",
        &[("accessKey", AK), ("secretKey", SK), ("iamEndpoint", &ims.url)],
    )
    .await;
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let provider = json!({"kind": "huawei", "credentialsSecretRef": {"name": "hw"}, "endpoint": ims.url, "agency": "ims_admin_agency"});
    create(
        &api,
        "db",
        &provider,
        json!({"region": "cn-north-4", "imageId": src}),
        json!([{"region": "cn-south-1"}]),
        "Delete",
    )
    .await;
    eventually(WAIT, "Copying", || async {
        let st = api.get("db").await.ok()?.status?;
        (dest(&st, "cn-south-1").phase == DestinationPhase::Copying).then_some(())
    })
    .await;
    api.delete("db", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        api.get("db").await.is_ok(),
        "IMS cannot cancel: the object waits for the job"
    );
    assert_eq!(ims.images_in("cn-south-1").len(), 1);
    eventually(WAIT, "object gone", || async {
        api.get("db").await.is_err().then_some(())
    })
    .await;
    assert!(
        ims.images_in("cn-south-1").is_empty(),
        "deletionPolicy Delete removed the finished copy"
    );
    assert_eq!(ims.calls("DELETE /v2/images/").len(), 1);
    let note = support::events_for(&c, "db")
        .await
        .iter()
        .find(|e| e.reason.as_deref() == Some("CleanupComplete"))
        .and_then(|e| e.note.clone())
        .unwrap_or_default();
    assert!(note.contains("deleted the destination images in cn-south-1"), "{note}");
    ims.assert_conforms();
}

#[tokio::test(flavor = "multi_thread")]
async fn alibaba_copies_and_encrypts_then_cancels_and_deletes_on_delete() {
    let ecs = Stand::start(Kind::Alibaba).await;
    let src = ecs.add("cn-hangzhou", "web", 40, json!({}));
    let shared = ecs.add("cn-hangzhou", "partner", 40, json!({"ImageOwnerAlias": "others"}));
    ecs.set_copy_time("cn-shanghai", Duration::from_millis(500));
    ecs.set_copy_time("cn-hangzhou", Duration::from_secs(3600));
    ecs.state.throttle.store(1, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let (s, c, op) = setup(dir.path(), "ali", &[("accessKeyId", AK), ("accessKeySecret", SK)]).await;
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let provider = json!({"kind": "alibaba", "credentialsSecretRef": {"name": "ali"}, "endpoint": ecs.url});
    create(
        &api,
        "web",
        &provider,
        json!({"region": "cn-hangzhou", "imageId": src}),
        json!([
            {"region": "cn-shanghai", "name": "web-golden", "description": "golden image for web",
             "resourceGroupId": "rg-acfmxazb4ph", "tags": {"team": "web"}},
            {"region": "cn-hangzhou", "name": "web-golden-encrypted", "encryption": {"kmsKeyId": "0e478b7a-4262"}}
        ]),
        "Delete",
    )
    .await;
    create(
        &api,
        "shared",
        &provider,
        json!({"region": "cn-hangzhou", "imageId": shared}),
        json!([{"region": "cn-beijing"}]),
        "Retain",
    )
    .await;

    let st = eventually(WAIT, "shanghai Available, hangzhou Copying", || async {
        let st = api.get("web").await.ok()?.status?;
        (dest(&st, "cn-shanghai").phase == DestinationPhase::Available
            && dest(&st, "cn-hangzhou").phase == DestinationPhase::Copying
            && dest(&st, "cn-hangzhou").progress_percent.is_some())
        .then_some(st)
    })
    .await;
    let copies = ecs.calls("CopyImage");
    let ok: Vec<_> = copies.iter().filter(|r| r.status == 200).collect();
    assert_eq!(ok.len(), 2, "{copies:?}");
    let sh = ok
        .iter()
        .find(|r| r.params["DestinationRegionId"] == "cn-shanghai")
        .unwrap();
    assert_eq!(sh.params["RegionId"], "cn-hangzhou");
    assert_eq!(sh.params["ImageId"], src);
    assert_eq!(sh.params["DestinationImageName"], "web-golden");
    assert_eq!(sh.params["DestinationDescription"], "golden image for web");
    assert_eq!(sh.params["ResourceGroupId"], "rg-acfmxazb4ph");
    assert_eq!(sh.params["SignatureMethod"], "HMAC-SHA1");
    assert_eq!(
        Some(&sh.params["ClientToken"]),
        dest(&st, "cn-shanghai").client_token.as_ref(),
        "CopyImage carries our token as its ClientToken"
    );
    assert_eq!(sh.params["Format"], "JSON");
    assert!(!sh.params.contains_key("Encrypted"));
    let img = &ecs.images_in("cn-shanghai")[0];
    assert_eq!(img.tags.get("team").map(String::as_str), Some("web"));
    assert_eq!(img.tags.get(TOKEN_TAG), dest(&st, "cn-shanghai").client_token.as_ref());
    let hz = ok
        .iter()
        .find(|r| r.params["DestinationRegionId"] == "cn-hangzhou")
        .unwrap();
    assert_eq!(hz.params["Encrypted"], "true");
    assert_eq!(hz.params["KMSKeyId"], "0e478b7a-4262");
    let reqs = ecs.requests();
    assert_eq!(
        reqs.iter().filter(|r| r.throttled).count(),
        1,
        "one Throttling.User answer, backed off and retried"
    );
    assert!(
        reqs.iter().all(|r| !r.bad_signature),
        "every request was signed correctly"
    );

    let (reason, _) = refused(&api, "shared").await;
    assert_eq!(reason, "SharedImageNotCopyable");
    assert!(!ecs.calls("CopyImage").iter().any(|r| r.params["ImageId"] == shared));

    api.delete("web", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "object gone", || async {
        api.get("web").await.is_err().then_some(())
    })
    .await;
    let cancels = ecs.calls("CancelCopyImage");
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0].params["RegionId"], "cn-hangzhou");
    assert_eq!(
        Some(&cancels[0].params["ImageId"]),
        dest(&st, "cn-hangzhou").image_id.as_ref()
    );
    assert_eq!(ecs.calls("DeleteImage").iter().filter(|r| r.status == 200).count(), 1);
    assert!(ecs.images_in("cn-shanghai").is_empty());
    assert_eq!(
        ecs.images_in("cn-hangzhou").len(),
        2,
        "the two source images stay; the encrypted copy was cancelled"
    );
    support::assert_secrets_kept(&s, &op, &[AK, SK]).await;
    ecs.assert_conforms();
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_crash_between_copy_request_and_answer_never_copies_twice_then_drift_and_delete() {
    let ec2 = Stand::start(Kind::Aws).await;
    let src = ec2.add("us-east-1", "web", 8, json!({}));
    *ec2.state.hold_copy_answer.lock().unwrap() = Some(Duration::from_secs(30));
    let dir = tempfile::tempdir().unwrap();
    let (s, c, mut op) = setup(dir.path(), "aws", &[("accessKeyId", AK), ("secretAccessKey", SK)]).await;
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let provider = json!({"kind": "aws", "credentialsSecretRef": {"name": "aws"}, "endpoint": ec2.url});
    create(&api, "web", &provider, json!({"region": "us-east-1", "imageId": src}), json!([{"region": "eu-west-1", "name": "web-eu", "tags": {"team": "web"}, "encryption": {"kmsKeyId": "alias/ami-copies"}}]), "Delete").await;
    eventually(WAIT, "CopyImage sent", || async {
        (!ec2.calls("CopyImage").is_empty() || !ec2.images_in("eu-west-1").is_empty()).then_some(())
    })
    .await;
    let st = api.get("web").await.unwrap().status.unwrap();
    let d = dest(&st, "eu-west-1");
    assert_eq!(
        d.phase,
        DestinationPhase::Starting,
        "the token was persisted before the call: {d:?}"
    );
    let token = d.client_token.clone().unwrap();
    op.child.kill().unwrap(); // SIGKILL while the answer is held back
    op.child.wait().unwrap();

    let op2 = Operator::start(&s.write_kubeconfig(dir.path()), dir.path(), "op-b", &op_args());
    let st = wait_ready(&api, "web").await;
    let imgs = ec2.images_in("eu-west-1");
    assert_eq!(imgs.len(), 1, "exactly one copy after the crash: {imgs:?}");
    let d = dest(&st, "eu-west-1");
    assert_eq!(d.image_id.as_deref(), Some(imgs[0].id.as_str()));
    assert_eq!(d.attempts, 1, "found by its token, not started again");
    assert_eq!(imgs[0].tags.get(TOKEN_TAG), Some(&token));
    assert!(imgs[0].encrypted);
    let first = ec2
        .calls("CopyImage")
        .into_iter()
        .next()
        .expect("the held CopyImage was logged on answer");
    assert_eq!(first.params["ClientToken"], token);
    assert_eq!(first.params["SourceRegion"], "us-east-1");
    assert_eq!(first.params["SourceImageId"], src);
    assert_eq!(first.params["Name"], "web-eu");
    assert_eq!(first.params["Encrypted"], "true");
    assert_eq!(first.params["KmsKeyId"], "alias/ami-copies");
    assert_eq!(first.params["TagSpecification.1.ResourceType"], "image");
    assert!(
        first.headers["authorization"].contains("/eu-west-1/ec2/aws4_request"),
        "signed for the destination region"
    );

    // Drift: the copy deregistered by hand is copied again.
    ec2.state.images.lock().unwrap().retain(|i| i.region != "eu-west-1");
    let again = eventually(WAIT, "copied again after drift", || async {
        let st = api.get("web").await.ok()?.status?;
        let d = dest(&st, "eu-west-1");
        (ready(&st) && d.image_id.is_some() && d.image_id.as_deref() != Some(imgs[0].id.as_str())).then_some(d.clone())
    })
    .await;
    assert_eq!(ec2.images_in("eu-west-1").len(), 1);
    support::reasons_with(&c, "web", &["DriftDetected"]).await;

    api.delete("web", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "object gone", || async {
        api.get("web").await.is_err().then_some(())
    })
    .await;
    assert!(ec2.images_in("eu-west-1").is_empty());
    let dereg = ec2.calls("DeregisterImage");
    assert_eq!(dereg.last().unwrap().params["ImageId"], again.image_id.unwrap());
    assert_eq!(ec2.calls("DeleteSnapshot").len(), 1, "the copy's snapshot went with it");
    // Both instances: the one killed mid-call (its log) and the one that finished.
    for o in [&op, &op2] {
        assert!(!o.logs().contains(SK) && !o.logs().contains(AK), "{}", o.identity);
    }
    support::assert_secrets_kept(&s, &op2, &[AK, SK]).await;
    ec2.assert_conforms();
}

/// A moto server on a free loopback port, killed (by PID) when dropped.
struct Moto {
    child: std::process::Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto() -> Moto {
    let ok = std::process::Command::new("sh")
        .args(["-c", "command -v moto_server"])
        .stdout(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "moto_server is missing: `make tools` installs moto[server]");
    let port = support::operator::free_port();
    let child = std::process::Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let m = Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..150 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return m;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("moto_server did not start on port {port}");
}

fn boto(url: &str, code: &str) -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", &format!(
            "import boto3\nec2 = lambda r: boto3.client('ec2', endpoint_url='{url}', region_name=r, aws_access_key_id='{AK}', aws_secret_access_key='{SK}')\n{code}"
        )])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An AMI `web` of 8 GiB in moto's us-east-1.
fn register_web(url: &str) {
    let ami = boto(
        url,
        "print(ec2('us-east-1').register_image(Name='web', RootDeviceName='/dev/sda1', \
         BlockDeviceMappings=[{'DeviceName': '/dev/sda1', 'Ebs': {'VolumeSize': 8}}])['ImageId'])",
    );
    assert!(ami.starts_with("ami-"), "{ami}");
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_provider_speaks_ec2_to_moto() {
    let m = moto();
    let url = m.url.clone();
    register_web(&url);
    let dir = tempfile::tempdir().unwrap();
    let manifest = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: aws}}
stringData: {{accessKeyId: {AK}, secretAccessKey: "{SK}"}}
---
apiVersion: replication.imageops.io/v1alpha1
kind: ImageReplication
metadata: {{name: web, namespace: default}}
spec:
  provider: {{kind: aws, credentialsSecretRef: {{name: aws}}, endpoint: "{url}"}}
  source: {{region: us-east-1, imageName: web}}
  destinations: [{{region: eu-west-1, description: web for europe, tags: {{team: web}}}}]
"#
    );
    let path = dir.path().join("aws.yaml");
    std::fs::write(&path, manifest).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_image-replication-operator"))
        .args(["replicate", "-f", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // moto ignores CopyImage's tags; the provider's CreateTags on success puts them on.
    let found = boto(
        &url,
        "imgs = ec2('eu-west-1').describe_images(Owners=['self'])['Images']\n\
         print(len(imgs), imgs[0]['Name'] if imgs else '', imgs[0].get('Description') if imgs else '', \
         ','.join(sorted(t['Key'] for t in imgs[0].get('Tags', []))) if imgs else '')",
    );
    drop(m);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("ImageReplication web: Ready (1/1 available)"), "{text}");
    assert!(!text.contains(SK));
    assert_eq!(
        found, "1 web web for europe imgrep_client_token,team",
        "the copy in eu-west-1"
    );
}

/// No Secret, on moto: the IRSA variables name a role and a token file, the operator asks
/// moto's STS (`AssumeRoleWithWebIdentity`) for keys and copies with them.
#[tokio::test(flavor = "multi_thread")]
async fn aws_keyless_through_motos_sts() {
    let m = moto();
    let url = m.url.clone();
    register_web(&url);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    // moto's STS does not check the token; the real API server's tokens are tests/suites/identity.rs'.
    std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJzdHMuYW1hem9uYXdzLmNvbSJ9.c2ln").unwrap();
    let manifest = format!(
        r#"apiVersion: replication.imageops.io/v1alpha1
kind: ImageReplication
metadata: {{name: web, namespace: default}}
spec:
  provider: {{kind: aws, endpoint: "{url}"}}
  source: {{region: us-east-1, imageName: web}}
  destinations: [{{region: eu-west-1}}]
"#
    );
    let path = dir.path().join("aws.yaml");
    std::fs::write(&path, manifest).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_image-replication-operator"))
        .args(["replicate", "-f", path.to_str().unwrap()])
        .env(
            "AWS_ROLE_ARN",
            "arn:aws:iam::123456789012:role/image-replication-operator",
        )
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL_STS", &url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let found = boto(
        &url,
        "print(len(ec2('eu-west-1').describe_images(Owners=['self'])['Images']))",
    );
    drop(m);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("ImageReplication web: Ready (1/1 available)"), "{text}");
    assert_eq!(found, "1", "the copy in eu-west-1");
}

/// The operator is killed while the cloud holds back its answer to the copy request, on a cloud
/// that lists a new image only 15 s after the call that made it (the realistic profile); the
/// next operator finds the copy once it is listed (Huawei: by name, untagged, then tags it;
/// Alibaba: by the token tag set at creation) and never starts a second one: where the copy call
/// takes no client token (IMS, CVM) no copy is asked for again within the cloud's listing
/// window; where it does (ECS) it may be asked for again with the same token, which hands back
/// the same copy.
async fn crash_between_copy_request_and_answer(kind: Kind) {
    let profile = support::clouds::Profile {
        list_lag: Duration::from_secs(15),
        ..support::clouds::Profile::realistic()
    };
    let cloud = Stand::start_with(kind, profile).await;
    let (src_region, dst_region, secret_data, provider_kind) = cloud.account();
    let copy_call = match kind {
        Kind::Huawei => "/cross_region_copy",
        Kind::Tencent => "SyncImages",
        Kind::Google => "images.insert",
        _ => "CopyImage",
    };
    // Copy requests that start work (Tencent's DryRun pre-flight does not).
    let copies = |c: &Stand| {
        c.calls(copy_call)
            .into_iter()
            .filter(|r| r.body.get("DryRun") != Some(&json!(true)))
            .count()
    };
    let src = cloud.add(src_region, "app", 10, json!({}));
    *cloud.state.hold_copy_answer.lock().unwrap() = Some(Duration::from_secs(30));
    let dir = tempfile::tempdir().unwrap();
    let (s, c, mut op) = setup(dir.path(), "creds", &secret_data).await;
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let provider = json!({"kind": provider_kind, "credentialsSecretRef": {"name": "creds"}, "endpoint": cloud.url, "agency": "ims_admin_agency"});
    let mut provider = provider;
    if kind != Kind::Huawei {
        provider.as_object_mut().unwrap().remove("agency");
    }
    create(
        &api,
        "app",
        &provider,
        json!({"region": src_region, "imageId": src}),
        json!([{"region": dst_region, "name": "app-copy"}]),
        "Retain",
    )
    .await;
    eventually(WAIT, "copy requested", || async {
        (!cloud.calls(copy_call).is_empty()).then_some(())
    })
    .await;
    op.child.kill().unwrap();
    op.child.wait().unwrap();
    let _op2 = Operator::start(&s.write_kubeconfig(dir.path()), dir.path(), "op-b", &op_args());
    let st = wait_ready(&api, "app").await;
    let imgs = cloud.images_in(dst_region);
    assert_eq!(imgs.len(), 1, "exactly one copy: {imgs:?}");
    // Clouds whose copy call is idempotent (ECS ClientToken, Compute Engine requestId) may be
    // asked again, with the same key only.
    let key = match kind {
        Kind::Alibaba => Some("ClientToken"),
        Kind::Google => Some("requestId"),
        _ => None,
    };
    if let Some(key) = key {
        let tokens: std::collections::BTreeSet<String> = cloud
            .calls(copy_call)
            .iter()
            .filter_map(|r| r.params.get(key).cloned())
            .collect();
        assert_eq!(tokens.len(), 1, "asked again only with the same {key}: {tokens:?}");
    } else {
        assert_eq!(copies(&cloud), 1, "the copy was not requested again");
    }
    let d = dest(&st, dst_region);
    assert_eq!(d.image_id.as_deref(), Some(imgs[0].id.as_str()));
    assert_eq!(d.attempts, 1);
    if kind != Kind::Tencent {
        assert_eq!(
            imgs[0].tags.get(TOKEN_TAG),
            d.client_token.as_ref(),
            "the copy carries our token"
        );
    }
    cloud.assert_conforms();
}

#[tokio::test(flavor = "multi_thread")]
async fn huawei_crash_between_copy_request_and_answer_never_copies_twice() {
    crash_between_copy_request_and_answer(Kind::Huawei).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn alibaba_crash_between_copy_request_and_answer_never_copies_twice() {
    crash_between_copy_request_and_answer(Kind::Alibaba).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tencent_crash_between_copy_request_and_answer_never_copies_twice() {
    crash_between_copy_request_and_answer(Kind::Tencent).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn google_crash_between_copy_request_and_answer_never_copies_twice() {
    crash_between_copy_request_and_answer(Kind::Google).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tencent_syncs_images_with_a_dry_run_first_and_deletes_under_policy() {
    let cvm = Stand::start(Kind::Tencent).await;
    let src = cvm.add("ap-guangzhou", "web", 50, json!({}));
    let public = cvm.add("ap-guangzhou", "tlinux", 20, json!({"ImageType": "PUBLIC_IMAGE"}));
    cvm.set_copy_time("ap-shanghai", Duration::from_secs(3));
    cvm.state.throttle.store(1, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let (s, c, op) = setup(dir.path(), "tc", &[("secretId", AK), ("secretKey", SK)]).await;
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let provider = json!({"kind": "tencent", "credentialsSecretRef": {"name": "tc"}, "endpoint": cvm.url});
    create(
        &api,
        "web",
        &provider,
        json!({"region": "ap-guangzhou", "imageId": src}),
        json!([{"region": "ap-shanghai", "name": "web-sh"}, {"region": "ap-beijing"}, {"region": "ap-unsupported-1"}]),
        "Delete",
    )
    .await;
    create(
        &api,
        "public",
        &provider,
        json!({"region": "ap-guangzhou", "imageId": public}),
        json!([{"region": "ap-beijing"}]),
        "Retain",
    )
    .await;

    eventually(WAIT, "ap-shanghai syncing with progress", || async {
        let st = api.get("web").await.ok()?.status?;
        let d = dest(&st, "ap-shanghai");
        (d.phase == DestinationPhase::Copying && d.progress_percent.is_some_and(|p| p < 100)).then_some(())
    })
    .await;
    let st = eventually(WAIT, "two available, the unsupported region failed", || async {
        let st = api.get("web").await.ok()?.status?;
        (dest(&st, "ap-shanghai").phase == DestinationPhase::Available
            && dest(&st, "ap-beijing").phase == DestinationPhase::Available
            && dest(&st, "ap-unsupported-1").phase == DestinationPhase::Failed)
            .then_some(st)
    })
    .await;
    let failed = dest(&st, "ap-unsupported-1");
    assert!(
        failed
            .message
            .as_deref()
            .unwrap_or("")
            .contains("InvalidRegion.Unavailable"),
        "the dry run's refusal is the message: {failed:?}"
    );
    let syncs = cvm.calls("SyncImages");
    let real: Vec<_> = syncs.iter().filter(|r| r.body.get("DryRun").is_none()).collect();
    assert_eq!(real.len(), 2, "no sync started for the refused region: {syncs:?}");
    for r in &real {
        assert_eq!(r.headers["x-tc-region"], "ap-guangzhou");
        assert_eq!(r.headers["x-tc-version"], "2017-03-12");
        assert!(r.headers["authorization"].starts_with("TC3-HMAC-SHA256 Credential=AKTESTSTANDIN/"));
        assert_eq!(r.body["ImageIds"], json!([src]));
        assert_eq!(r.body["ImageSetRequired"], json!(true));
        let region = r.body["DestinationRegions"][0].as_str().unwrap();
        assert!(
            syncs
                .iter()
                .any(|d| d.body.get("DryRun") == Some(&json!(true)) && d.body["DestinationRegions"][0] == region),
            "a dry run came first for {region}"
        );
    }
    let sh = real
        .iter()
        .find(|r| r.body["DestinationRegions"][0] == "ap-shanghai")
        .unwrap();
    assert_eq!(sh.body["ImageName"], "web-sh");
    assert_eq!(cvm.images_in("ap-shanghai")[0].name, "web-sh");
    assert_eq!(cvm.images_in("ap-beijing")[0].name, "web", "the source name by default");
    let reqs = cvm.requests();
    assert_eq!(reqs.iter().filter(|r| r.throttled).count(), 1);
    assert!(
        reqs.iter().all(|r| !r.bad_signature),
        "every request was signed correctly"
    );

    let (reason, _) = refused(&api, "public").await;
    assert_eq!(reason, "NotCustomImage");
    assert!(
        !cvm.calls("SyncImages")
            .iter()
            .any(|r| r.body["ImageIds"] == json!([public]))
    );

    let copy_snapshots: Vec<String> = ["ap-shanghai", "ap-beijing"]
        .iter()
        .flat_map(|r| cvm.images_in(r))
        .flat_map(|i| i.snapshots)
        .collect();
    api.delete("web", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "object gone", || async {
        api.get("web").await.is_err().then_some(())
    })
    .await;
    assert!(cvm.images_in("ap-shanghai").is_empty() && cvm.images_in("ap-beijing").is_empty());
    let mut deleted = cvm.state.deleted_snapshots.lock().unwrap().clone();
    deleted.sort();
    let mut want = copy_snapshots;
    want.sort();
    assert_eq!(deleted, want, "the copies' snapshots went with them (DeleteBindedSnap)");
    assert_eq!(cvm.calls("DeleteImages").len(), 2);
    assert_eq!(cvm.images_in("ap-guangzhou").len(), 2, "the sources stay");
    support::assert_secrets_kept(&s, &op, &[AK, SK]).await;
    cvm.assert_conforms();
}

/// At rest nothing is written: drift checks of an Available VM copy (every 2 s here) that find
/// it in place change no status, wake no watcher, record no Event.
#[tokio::test(flavor = "multi_thread")]
async fn at_rest_vm_drift_checks_write_nothing() {
    let ecs = Stand::start(Kind::Alibaba).await;
    let src = ecs.add("cn-hangzhou", "web", 20, json!({}));
    let dir = tempfile::tempdir().unwrap();
    let (s, c, _op) = setup(dir.path(), "ali", &[("accessKeyId", AK), ("accessKeySecret", SK)]).await;
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let provider = json!({"kind": "alibaba", "credentialsSecretRef": {"name": "ali"}, "endpoint": ecs.url});
    create(
        &api,
        "quiet",
        &provider,
        json!({"region": "cn-hangzhou", "imageId": src}),
        json!([{"region": "cn-shanghai", "shareWith": [{"account": "1234567890123456"}]}, {"region": "cn-beijing"}]),
        "Retain",
    )
    .await;
    let ready = wait_ready(&api, "quiet").await;
    assert_eq!(ready.summary.as_deref(), Some("2/2 available, 1/1 shares"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ready_now = api.get("quiet").await.unwrap().status.unwrap();
    let looks = || ecs.calls("DescribeImages").len();
    let members = || ecs.calls("DescribeImageSharePermission").len();
    let (before, shares_before) = (looks(), members());
    support::assert_quiet(&s, &c, "quiet", Duration::from_secs(7)).await;
    assert!(looks() >= before + 2, "the drift checks ran meanwhile");
    assert!(members() > shares_before, "the shares were read again meanwhile");
    let st = api.get("quiet").await.unwrap().status.unwrap();
    assert_eq!(st, ready_now);
    assert_eq!(
        dest(&st, "cn-shanghai").completed_at,
        dest(&ready, "cn-shanghai").completed_at,
        "completedAt is when the copy completed"
    );
    ecs.assert_conforms();
}

/// #11: the credentials Secret is read once per reconcile: `act`, starting the copies, uses
/// the account the plan read (it read the Secret again). Counted at rest (the next drift check
/// is an hour away), so no reconcile is in flight when the counts are taken.
#[tokio::test(flavor = "multi_thread")]
async fn the_credentials_secret_is_read_once_per_reconcile() {
    let ecs = Stand::start(Kind::Alibaba).await;
    let src = ecs.add("cn-hangzhou", "web", 40, json!({}));
    ecs.set_copy_time("cn-shanghai", Duration::from_millis(500));
    ecs.set_copy_time("cn-beijing", Duration::from_millis(500));
    let dir = tempfile::tempdir().unwrap();
    let (s, c) = support::cluster().await;
    secret(&c, "ali", &[("accessKeyId", AK), ("accessKeySecret", SK)]).await;
    let op = Operator::start_on(
        support::operator::free_port(),
        &s.write_kubeconfig(dir.path()),
        dir.path(),
        "op-a",
        &[
            "--resync-seconds",
            "3600",
            "--poll-min-seconds",
            "1",
            "--poll-max-seconds",
            "1",
        ],
        &[],
    );
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let provider = json!({"kind": "alibaba", "credentialsSecretRef": {"name": "ali"}, "endpoint": ecs.url});
    create(
        &api,
        "web",
        &provider,
        json!({"region": "cn-hangzhou", "imageId": src}),
        json!([{"region": "cn-shanghai"}, {"region": "cn-beijing"}]),
        "Retain",
    )
    .await;
    wait_ready(&api, "web").await;
    let (reconciles, reads) = reads_at_rest(&s, &op, "ali").await;
    assert_eq!(reads, reconciles, "Secret reads per reconcile of web");
}

/// Once at rest (no reconcile finished for 3 s): how many reconciles ran, and how many times
/// Secret `name` was read over them.
async fn reads_at_rest(s: &support::fake_apiserver::FakeApiServer, op: &Operator, name: &str) -> (usize, usize) {
    let metric = "imgrep_reconcile_duration_seconds_count{controller=\"image_replication\"} ";
    let count = || -> usize {
        let (_, text) = op.http_get("/metrics").unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with(metric))
            .unwrap_or_default()
            .to_string();
        line.trim_start_matches(metric).trim().parse().unwrap_or(0)
    };
    let mut reconciles = count();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = count();
        if now == reconciles {
            break;
        }
        reconciles = now;
    }
    let path = format!("/secrets/{name}");
    let reads = s
        .requests()
        .iter()
        .filter(|(m, p)| m == "GET" && p.split('?').next().unwrap_or("").ends_with(&path))
        .count();
    assert_eq!(count(), reconciles, "at rest: no reconcile ran while counting");
    assert!(reconciles >= 2, "{reconciles} reconciles");
    (reconciles, reads)
}

/// A copy owned by another account through a role of it, assumed with the provider's keys:
/// the provider's Secret is read once per reconcile, not again for the role.
#[tokio::test(flavor = "multi_thread")]
async fn an_owners_role_is_assumed_with_the_provider_keys_read_once() {
    use support::clouds::{AWS_ACCOUNT, AWS_OTHER_ACCOUNT};
    let role = "arn:aws:iam::210987654321:role/imgrep-copies";
    let cloud = Stand::start(Kind::Aws).await;
    cloud.trust_role(role, AWS_OTHER_ACCOUNT, AWS_ACCOUNT, None);
    let (src_region, dst_region, data, _) = cloud.account();
    let src = cloud.add(src_region, "golden", 8, json!({}));
    let dir = tempfile::tempdir().unwrap();
    let (s, c) = support::cluster().await;
    secret(&c, "creds", &data).await;
    let op = Operator::start_on(
        support::operator::free_port(),
        &s.write_kubeconfig(dir.path()),
        dir.path(),
        "op-a",
        &[
            "--resync-seconds",
            "3600",
            "--poll-min-seconds",
            "1",
            "--poll-max-seconds",
            "1",
        ],
        &[("AWS_ENDPOINT_URL_STS", cloud.url.as_str())],
    );
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let provider = json!({"kind": "aws", "credentialsSecretRef": {"name": "creds"}, "endpoint": cloud.url});
    create(
        &api,
        "web",
        &provider,
        json!({"region": src_region, "imageId": src}),
        json!([{"region": dst_region, "account": {"id": AWS_OTHER_ACCOUNT, "assumeRole": {"roleArn": role}}}]),
        "Retain",
    )
    .await;
    wait_ready(&api, "web").await;
    eventually(WAIT, "the copy, the other account's", || async {
        let copies = cloud.images_in(dst_region);
        (copies.len() == 1 && copies[0].extra["ownerId"] == AWS_OTHER_ACCOUNT).then_some(())
    })
    .await;
    let (reconciles, reads) = reads_at_rest(&s, &op, "creds").await;
    assert_eq!(reads, reconciles, "the provider's Secret read once per reconcile");
    assert_eq!(
        cloud.count("AssumeRole"),
        1,
        "one exchange for the role: {:?}",
        cloud.counts()
    );
    support::assert_secrets_kept(&s, &op, &[support::clouds::SK]).await;
    cloud.assert_conforms();
}

/// AWS sharing on moto: the copy in eu-west-1 and the source itself in us-east-1 are shared
/// with another account, launch permission AND createVolumePermission on every snapshot (the
/// step users forget, without which the account cannot copy the AMI). The source had been
/// shared by hand with the launch permission only: the operator adds the snapshot's.
#[tokio::test(flavor = "multi_thread")]
async fn aws_shares_amis_and_their_snapshots_on_moto() {
    let m = moto();
    let url = m.url.clone();
    let ami = boto(
        &url,
        "c = ec2('us-east-1')\n\
         i = c.register_image(Name='golden', RootDeviceName='/dev/sda1', \
             BlockDeviceMappings=[{'DeviceName': '/dev/sda1', 'Ebs': {'VolumeSize': 8}}])['ImageId']\n\
         c.modify_image_attribute(ImageId=i, LaunchPermission={'Add': [{'UserId': '210987654321'}]})\n\
         print(i)",
    );
    let dir = tempfile::tempdir().unwrap();
    let manifest = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: aws}}
stringData: {{accessKeyId: {AK}, secretAccessKey: "{SK}"}}
---
apiVersion: replication.imageops.io/v1alpha1
kind: ImageReplication
metadata: {{name: golden, namespace: default}}
spec:
  provider: {{kind: aws, credentialsSecretRef: {{name: aws}}, endpoint: "{url}"}}
  source: {{region: us-east-1, imageId: {ami}}}
  destinations:
  - {{region: eu-west-1, shareWith: [{{account: "210987654321"}}, {{account: "123456789013"}}]}}
  - {{region: us-east-1, shareWith: [{{account: "210987654321"}}]}}
"#
    );
    let path = dir.path().join("aws.yaml");
    std::fs::write(&path, manifest).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_image-replication-operator"))
        .args(["replicate", "-f", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let check = |region: &str, image: &str| {
        boto(
            &url,
            &format!(
                "c = ec2('{region}')\n\
                 img = c.describe_images(ImageIds=['{image}'])['Images'][0]\n\
                 lp = sorted(p['UserId'] for p in c.describe_image_attribute(ImageId='{image}', Attribute='launchPermission')['LaunchPermissions'])\n\
                 snaps = [b['Ebs']['SnapshotId'] for b in img['BlockDeviceMappings'] if 'Ebs' in b]\n\
                 cv = [sorted(p['UserId'] for p in c.describe_snapshot_attribute(SnapshotId=s, Attribute='createVolumePermission')['CreateVolumePermissions']) for s in snaps]\n\
                 print(','.join(lp), len(snaps), cv)"
            ),
        )
    };
    let copy = boto(
        &url,
        "imgs = ec2('eu-west-1').describe_images(Owners=['self'])['Images']\nprint(imgs[0]['ImageId'] if imgs else '')",
    );
    let (copy_shares, source_shares) = (check("eu-west-1", &copy), check("us-east-1", &ami));
    drop(m);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("ImageReplication golden: Ready (2/2 available, 3/3 shares)"),
        "{text}"
    );
    assert_eq!(
        copy_shares, "123456789013,210987654321 1 [['123456789013', '210987654321']]",
        "the copy and its snapshot"
    );
    assert_eq!(
        source_shares, "210987654321 1 [['210987654321']]",
        "the source's snapshot permission, which the hand-made share lacked"
    );
}

/// Sharing on the signed-API clouds' stand-ins, through the operator: a copy shared with two
/// accounts and the source itself shared in its own region; on Huawei one member is accepted
/// with its own keys (`acceptWith`) and the other waits, saying why; deletion withdraws every
/// share, deletes the copy, keeps the source; every call holds to the official SDK's model.
async fn shares_through_the_operator(kind: Kind) {
    // As the clouds behave: Huawei's member calls are jobs of 5 s, new images listed 5 s late.
    let cloud = Stand::start_with(kind, support::clouds::Profile::realistic()).await;
    let (a, b) = match kind {
        Kind::Huawei => ("0a1b2c3d4e5f60718293a4b5c6d7e8f9", "1a1b2c3d4e5f60718293a4b5c6d7e8f9"),
        Kind::Alibaba => ("1234567890123456", "2234567890123456"),
        Kind::Aws => ("111122223333", "444455556666"),
        Kind::Google => (
            "group:platform@example.com",
            "serviceAccount:deployer@app-a.iam.gserviceaccount.com",
        ),
        _ => ("100000000001", "100000000002"),
    };
    let (src_region, dst_region, data, kind_name) = cloud.account();
    let provider = json!({"kind": kind_name, "agency": "ims_admin", "credentialsSecretRef": {"name": "creds"}, "endpoint": cloud.url});
    let src = cloud.add(src_region, "golden", 40, json!({}));
    let dir = tempfile::tempdir().unwrap();
    let (s, c, op) = setup(dir.path(), "creds", &data).await;
    let accepts = kind == Kind::Huawei;
    let first = if accepts {
        secret(&c, "member-a", &[("accessKey", AK), ("secretKey", SK)]).await;
        json!({"account": a, "acceptWith": {"name": "member-a"}})
    } else {
        json!({"account": a})
    };
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    create(
        &api,
        "golden",
        &provider,
        json!({"region": src_region, "imageId": src}),
        json!([{"region": dst_region, "shareWith": [first, {"account": b}]},
               {"region": src_region, "shareWith": [{"account": a}]}]),
        "Delete",
    )
    .await;
    let st = if accepts {
        eventually(WAIT, "a accepted, b pending", || async {
            let st = api.get("golden").await.ok()?.status?;
            (st.summary.as_deref() == Some("2/2 available, 1/3 shares")
                && dest(&st, dst_region)
                    .shares
                    .iter()
                    .any(|x| format!("{:?}", x.state) == "Accepted"))
            .then_some(st)
        })
        .await
    } else {
        wait_ready(&api, "golden").await
    };
    let copy = dest(&st, dst_region).image_id.clone().unwrap();
    assert_ne!(copy, src);
    assert_eq!(dest(&st, src_region).image_id.as_deref(), Some(src.as_str()));
    let want = |status: &str| {
        if accepts {
            vec![
                (a.to_string(), "accepted".to_string()),
                (b.to_string(), status.to_string()),
            ]
        } else {
            vec![
                (a.to_string(), "shared".to_string()),
                (b.to_string(), "shared".to_string()),
            ]
        }
    };
    assert_eq!(cloud.members_of(&copy), want("pending"));
    let gauge = |state: &str, n: u32| format!("imgrep_vm_shares{{provider=\"{kind_name}\",state=\"{state}\"}} {n}");
    let expected = if accepts {
        vec![gauge("Accepted", 1), gauge("Pending", 2)]
    } else {
        vec![gauge("Shared", 3)]
    };
    // The gauges are set when the status is acted on, just after it is written.
    eventually(WAIT, "the share gauges", || async {
        let metrics = op.http_get("/metrics")?.1;
        expected.iter().all(|g| metrics.contains(g)).then_some(())
    })
    .await;
    if kind == Kind::Aws {
        // Every snapshot of the copy and of the source: createVolumePermission, so the
        // accounts can copy the AMI, not only launch it.
        let src_snaps = cloud.images_in(src_region)[0].snapshots.clone();
        let copy_snaps = cloud.images_in(dst_region)[0].snapshots.clone();
        assert!(!copy_snaps.is_empty() && !src_snaps.is_empty());
        for snap in &copy_snaps {
            assert_eq!(cloud.members_of(snap), want("shared"), "{snap}");
        }
        for snap in &src_snaps {
            assert_eq!(cloud.members_of(snap), vec![(a.to_string(), "shared".to_string())]);
        }
    }
    // The call budget of three shares (the copy with a and b, the source with a) and, on
    // Huawei, two acceptances: each share call made once (never again while its job runs),
    // each job polled on a doubling schedule, the members read a bounded number of times.
    let counts = cloud.counts();
    println!("calls for three shares on {kind_name}: {counts:?}");
    let budget: &[(&str, usize)] = match kind {
        Kind::Huawei => &[
            ("POST /v1/cloudimages/members", 3),
            ("PUT /v1/cloudimages/members", 2),
            ("GET /v1/cloudimages/job/{}", 20),
            ("GET /v2/images/{}/members", 30),
        ],
        Kind::Aws => &[("ModifyImageAttribute", 3), ("ModifySnapshotAttribute", 3)],
        // Each share a read and a write of the image's policy; read again for the status.
        Kind::Google => &[("images.setIamPolicy", 3), ("images.getIamPolicy", 30), ("token", 1)],
        _ => &[("ModifyImageSharePermission", 3), ("DescribeImageSharePermission", 30)],
    };
    cloud.assert_budget(&format!("three shares on {kind_name}"), budget);
    if accepts {
        let why = dest(&st, dst_region).shares[1].message.clone().unwrap();
        assert!(why.contains(&format!("accept it in account {b}")), "{why}");
    } else {
        assert_eq!(st.summary.as_deref(), Some("2/2 available, 3/3 shares"));
    }

    api.delete("golden", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "golden gone", || async {
        api.get_opt("golden").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(cloud.members_of(&copy).is_empty(), "the copy's shares withdrawn");
    assert!(cloud.members_of(&src).is_empty(), "the source's share withdrawn");
    for snap in cloud.images_in(src_region)[0].snapshots.clone() {
        assert!(
            cloud.members_of(&snap).is_empty(),
            "the source snapshot's permission withdrawn"
        );
    }
    assert!(cloud.images_in(dst_region).is_empty(), "the copy deleted");
    assert_eq!(cloud.images_in(src_region).len(), 1, "the source kept");
    support::assert_secrets_kept(&s, &op, &[SK]).await;
    cloud.assert_conforms();
}

#[tokio::test(flavor = "multi_thread")]
async fn huawei_shares_and_accepts_as_the_member() {
    shares_through_the_operator(Kind::Huawei).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn alibaba_shares_with_accounts() {
    shares_through_the_operator(Kind::Alibaba).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_shares_with_accounts_through_the_stand_in() {
    shares_through_the_operator(Kind::Aws).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tencent_shares_with_accounts() {
    shares_through_the_operator(Kind::Tencent).await;
}

/// A copy owned by another AWS account (`destinations[].account`): the source AMI and its
/// snapshot are shared with that account, which copies it with its own keys; once the copy is
/// available the source's share is withdrawn; on delete the owner's keys deregister it. Without
/// the snapshot's createVolumePermission the stand-in refuses the other account's CopyImage, as
/// EC2 does ("You do not have permission to access the storage of this ami").
#[tokio::test(flavor = "multi_thread")]
async fn google_shares_with_principals() {
    shares_through_the_operator(Kind::Google).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_copy_owned_by_another_account() {
    use support::clouds::{AK2, AWS_OTHER_ACCOUNT, SK2};
    let cloud = Stand::start(Kind::Aws).await;
    let (src_region, dst_region, data, _) = cloud.account();
    let src = cloud.add(src_region, "golden", 8, json!({}));
    let dir = tempfile::tempdir().unwrap();
    let (s, c, op) = setup(dir.path(), "creds", &data).await;
    secret(&c, "team-b", &[("accessKeyId", AK2), ("secretAccessKey", SK2)]).await;
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let provider = json!({"kind": "aws", "credentialsSecretRef": {"name": "creds"}, "endpoint": cloud.url});
    create(
        &api,
        "owned",
        &provider,
        json!({"region": src_region, "imageId": src}),
        json!([{"region": dst_region, "account": {"id": AWS_OTHER_ACCOUNT, "credentialsSecretRef": {"name": "team-b"}}}]),
        "Delete",
    )
    .await;
    let st = wait_ready(&api, "owned").await;
    let d = dest(&st, dst_region);
    assert_eq!(d.owner.as_deref(), Some(AWS_OTHER_ACCOUNT));
    let copies = cloud.images_in(dst_region);
    assert_eq!(copies.len(), 1);
    assert_eq!(
        copies[0].extra["ownerId"], AWS_OTHER_ACCOUNT,
        "the other account owns the copy"
    );
    assert_eq!(d.image_id.as_deref(), Some(copies[0].id.as_str()));
    let copy_calls = cloud.calls("CopyImage");
    assert!(
        copy_calls
            .iter()
            .all(|r| r.headers["authorization"].contains(&format!("Credential={AK2}/"))),
        "copied with the owner's keys"
    );
    // The source's share with the owner is withdrawn once the copy is available.
    eventually(WAIT, "the source's share withdrawn", || async {
        let snaps = cloud.images_in(src_region)[0].snapshots.clone();
        (cloud.members_of(&src).is_empty() && snaps.iter().all(|x| cloud.members_of(x).is_empty())).then_some(())
    })
    .await;

    api.delete("owned", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "owned gone", || async {
        api.get_opt("owned").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(cloud.images_in(dst_region).is_empty(), "the owner's copy deregistered");
    assert_eq!(cloud.images_in(src_region).len(), 1, "the source kept");
    support::assert_secrets_kept(&s, &op, &[SK, SK2]).await;
    cloud.assert_conforms();
}

/// A line deleted from `spec.destinations` (as Argo CD or Flux apply it): under `deletionPolicy:
/// Delete` that region's copy is deleted and the destination forgotten, with an Event; the other
/// region is untouched.
#[tokio::test(flavor = "multi_thread")]
async fn a_destination_removed_from_the_spec_is_pruned() {
    let ecs = Stand::start(Kind::Alibaba).await;
    let (src_region, _, data, _) = ecs.account();
    let src = ecs.add(src_region, "web", 20, json!({}));
    let dir = tempfile::tempdir().unwrap();
    let (_s, c, _op) = setup(dir.path(), "ali", &data).await;
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let provider = json!({"kind": "alibaba", "credentialsSecretRef": {"name": "ali"}, "endpoint": ecs.url});
    create(
        &api,
        "web",
        &provider,
        json!({"region": src_region, "imageId": src}),
        json!([{"region": "cn-shanghai"}, {"region": "cn-beijing"}]),
        "Delete",
    )
    .await;
    wait_ready(&api, "web").await;
    let patch = json!({"spec": {"destinations": [{"region": "cn-shanghai"}]}});
    api.patch(
        "web",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    let st = eventually(WAIT, "cn-beijing pruned", || async {
        let st = api.get("web").await.ok()?.status?;
        (st.destinations.len() == 1 && ecs.images_in("cn-beijing").is_empty()).then_some(st)
    })
    .await;
    assert_eq!(st.destinations[0].region, "cn-shanghai");
    assert_eq!(ecs.images_in("cn-shanghai").len(), 1, "the other region's copy stays");
    assert!(ready(&st));
    support::reasons_with(&c, "web", &["DestinationRemoved"]).await;
    ecs.assert_conforms();
}

/// Images over time on each signed-API cloud's stand-in (held to the SDK's model), through the
/// operator: the object follows the newest `golden-*` image of the account; a newer one (the
/// pipeline pokes the object with the retry annotation instead of waiting for
/// `checkInterval`) is copied, the replaced copy is deleted at `retention.keep: 1` once the new
/// one is Available (Huawei and Tencent, which cannot cancel, also once it is), and the source
/// images stay. The clouds behave as they do (the realistic profile: copies listed 5 s late),
/// and the account holds 120 other images between the two, so the newest one is on the
/// second page of a listing at its largest page size (ECS and CVM read only the first page
/// before the fix, and missed it).
async fn follows_the_newest_source(kind: Kind) {
    let cloud = Stand::start_with(kind, support::clouds::Profile::realistic()).await;
    let (src_region, dst_region, data, kind_name) = cloud.account();
    let provider = json!({"kind": kind_name, "agency": "ims_admin", "credentialsSecretRef": {"name": "creds"}, "endpoint": cloud.url});
    let day = 1_796_000_000; // 2026-11-30
    let old = cloud.add(src_region, "golden-1", 20, json!({}));
    cloud.set_created(&old, day);
    let other = cloud.add(src_region, "other-2", 20, json!({}));
    cloud.set_created(&other, day + 9 * 86400);
    const OTHERS: usize = 120;
    for n in 0..OTHERS {
        let id = cloud.add(src_region, &format!("build-{n}"), 20, json!({}));
        cloud.set_created(&id, day + 3600 + n as i64);
    }
    let dir = tempfile::tempdir().unwrap();
    let (_s, c, _op) = setup(dir.path(), "creds", &data).await;
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let mut obj = object(
        "golden",
        provider,
        json!({"region": src_region, "imageName": "golden-*", "follow": "Newest", "checkInterval": "1h"}),
        json!([{"region": dst_region}]),
        "Delete",
    );
    obj.spec.retention = Some(image_replication_operator::api::v1alpha1::RetentionSpec { keep: Some(1) });
    api.create(&PostParams::default(), &obj).await.unwrap();
    let st = wait_ready(&api, "golden").await;
    assert_eq!(
        st.source.as_ref().unwrap().image_id.as_deref(),
        Some(old.as_str()),
        "{kind_name}"
    );
    let first = dest(&st, dst_region).image_id.clone().unwrap();

    let new = cloud.add(src_region, "golden-2", 20, json!({}));
    cloud.set_created(&new, day + 86400);
    let patch = json!({"metadata": {"annotations": {"replication.imageops.io/retry": "pushed-golden-2"}}});
    api.patch(
        "golden",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    let st = eventually(WAIT, "golden-2 copied, golden-1's copy deleted", || async {
        let st = api.get("golden").await.ok()?.status?;
        (st.source.as_ref()?.image_id.as_deref() == Some(new.as_str()) && ready(&st) && st.previous.is_empty())
            .then_some(st)
    })
    .await;
    let second = dest(&st, dst_region).image_id.clone().unwrap();
    assert_ne!(second, first);
    let ids: Vec<String> = cloud.images_in(dst_region).iter().map(|i| i.id.clone()).collect();
    assert_eq!(ids, vec![second.clone()], "{kind_name}: keep 1, only the current copy");
    assert_eq!(cloud.images_in(src_region).len(), 3 + OTHERS, "sources stay");
    // Posted after the status writes they follow: waited for, never read once.
    support::reasons_with(&c, "golden", &["SourceChanged", "PreviousCopyDeleted"]).await;
    cloud.assert_conforms();
}

#[tokio::test(flavor = "multi_thread")]
async fn follows_the_newest_source_on_ecs() {
    follows_the_newest_source(Kind::Alibaba).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn follows_the_newest_source_on_ec2() {
    follows_the_newest_source(Kind::Aws).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn follows_the_newest_source_on_cvm() {
    follows_the_newest_source(Kind::Tencent).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn follows_the_newest_source_on_ims() {
    follows_the_newest_source(Kind::Huawei).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn follows_the_newest_source_on_compute_engine() {
    follows_the_newest_source(Kind::Google).await;
}

/// Compute Engine image families: `imageName: family/golden` follows what
/// `images.getFromFamily` answers, the family's newest image that is not deprecated — not a
/// newer deprecated one, not a newer image of another family, not one whose name merely looks
/// alike. A newer image in the family replaces it; the copy it supersedes is kept (`keep: 2`)
/// but deprecated with the new copy as its replacement; a third image deprecates the second copy
/// and the first is deleted. One `images.getFromFamily` per look, no listing to follow, one
/// `images.deprecate` per superseded copy.
#[tokio::test(flavor = "multi_thread")]
async fn google_follows_an_image_family_and_deprecates_the_copies_it_supersedes() {
    let cloud = Stand::start_with(Kind::Google, support::clouds::Profile::realistic()).await;
    let (src_region, dst_region, data, _) = cloud.account();
    let id = support::clouds::google::resource;
    let day = 1_796_000_000;
    let family = |more: Value| {
        let mut v = json!({"family": "golden"});
        v.as_object_mut()
            .unwrap()
            .extend(more.as_object().cloned().unwrap_or_default());
        v
    };
    for (n, (name, extra)) in [
        ("golden-a", family(json!({}))),
        (
            "golden-b",
            family(json!({"deprecated": {"state": "DEPRECATED", "replacement": id("golden-a")}})),
        ),
        ("golden-other", json!({"family": "other"})),
        ("golden-z", json!({})),
    ]
    .into_iter()
    .enumerate()
    {
        let i = cloud.add(src_region, name, 10, extra);
        cloud.set_created(&i, day + n as i64);
    }
    let dir = tempfile::tempdir().unwrap();
    let (_s, c, _op) = setup(dir.path(), "creds", &data).await;
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let mut obj = object(
        "fam",
        json!({"kind": "google", "credentialsSecretRef": {"name": "creds"}, "endpoint": cloud.url}),
        json!({"region": src_region, "imageName": "family/golden", "follow": "Newest", "checkInterval": "1h"}),
        json!([{"region": dst_region}]),
        "Delete",
    );
    obj.spec.retention = Some(image_replication_operator::api::v1alpha1::RetentionSpec { keep: Some(2) });
    api.create(&PostParams::default(), &obj).await.unwrap();
    let st = wait_ready(&api, "fam").await;
    assert_eq!(
        st.source.as_ref().unwrap().image_id,
        Some(id("golden-a")),
        "the family's newest not deprecated"
    );
    assert_eq!(dest(&st, dst_region).image_id, Some(id("golden-a-europe-west1")));
    assert_eq!(
        cloud.count("images.list"),
        1,
        "only to find our copy by its token, never to follow"
    );

    let look_again = |n: &str| json!({"metadata": {"annotations": {"replication.imageops.io/retry": n}}});
    // The copies in the destination region: (name, deprecation state, its replacement's name).
    let copies = || -> Vec<(String, String, String)> {
        let mut v: Vec<(String, String, String)> = cloud
            .images_in(dst_region)
            .iter()
            .map(|i| {
                let d = &i.extra["deprecated"];
                let by = d["replacement"]
                    .as_str()
                    .unwrap_or("")
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .to_string();
                (i.name.clone(), d["state"].as_str().unwrap_or("").to_string(), by)
            })
            .collect();
        v.sort();
        v
    };
    let row = |n: &str, state: &str, by: &str| (n.to_string(), state.to_string(), by.to_string());
    for (n, (name, at)) in [("golden-c", day + 10), ("golden-d", day + 20)].into_iter().enumerate() {
        let i = cloud.add(src_region, name, 10, family(json!({})));
        cloud.set_created(&i, at);
        api.patch(
            "fam",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&look_again(name)),
        )
        .await
        .unwrap();
        let want = if n == 0 {
            vec![
                row("golden-a-europe-west1", "DEPRECATED", "golden-c-europe-west1"),
                row("golden-c-europe-west1", "", ""),
            ]
        } else {
            vec![
                row("golden-c-europe-west1", "DEPRECATED", "golden-d-europe-west1"),
                row("golden-d-europe-west1", "", ""),
            ]
        };
        eventually(WAIT, &format!("{name} copied, the copy before deprecated"), || async {
            let st = api.get("fam").await.ok()?.status?;
            (st.source.as_ref()?.image_id == Some(id(name)) && ready(&st) && copies() == want).then_some(())
        })
        .await;
    }
    let replacement = cloud
        .images_in(dst_region)
        .iter()
        .find(|i| i.name == "golden-c-europe-west1")
        .unwrap()
        .extra["deprecated"]["replacement"]
        .clone();
    assert_eq!(
        replacement,
        json!(format!(
            "https://www.googleapis.com/compute/v1/{}",
            id("golden-d-europe-west1")
        )),
        "the replacement as a resource URL"
    );
    println!("calls following a family on google: {:?}", cloud.counts());
    let looks = cloud.count("images.getFromFamily");
    assert!((3..=6).contains(&looks), "one look-up per look: {looks}");
    cloud.assert_budget(
        "three family look-ups, three copies, two deprecations, one deletion",
        &[
            ("images.insert", 3),
            ("images.list", 3),
            ("images.deprecate", 2),
            ("images.delete", 1),
        ],
    );
    cloud.assert_conforms();
}

/// A public image project's family followed into our own project (what a platform team does
/// when `constraints/compute.trustedImageProjects` lets teams launch only from its project):
/// `imageName: projects/debian-cloud/global/images/family/debian-12` in the multi-region `us`
/// follows that project's family (never an image of ours with the same family), the copies are
/// inserted in our project from the public image's resource name, and the public project is only
/// read.
#[tokio::test(flavor = "multi_thread")]
async fn google_follows_a_public_image_projects_family_into_our_project() {
    use support::clouds::google::{PUBLIC_PROJECT, add_public, resource};
    let cloud = Stand::start_with(Kind::Google, support::clouds::Profile::realistic()).await;
    let (_, dst_region, data, _) = cloud.account();
    let day = 1_796_000_000;
    let v1 = add_public(&cloud, "us", "debian-12-bookworm-v1", json!({"family": "debian-12"}));
    cloud.set_created(&v1, day);
    let v2 = add_public(&cloud, "us", "debian-12-bookworm-v2", json!({"family": "debian-12"}));
    cloud.set_created(&v2, day + 10);
    // Ours, newer, in a family of the same name: not the public family.
    let ours = cloud.add("us", "debian-12-ours", 10, json!({"family": "debian-12"}));
    cloud.set_created(&ours, day + 20);
    let dir = tempfile::tempdir().unwrap();
    let (_s, c, _op) = setup(dir.path(), "creds", &data).await;
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    create(
        &api,
        "debian",
        &json!({"kind": "google", "credentialsSecretRef": {"name": "creds"}, "endpoint": cloud.url}),
        json!({"region": "us", "imageName": format!("projects/{PUBLIC_PROJECT}/global/images/family/debian-12"), "follow": "Newest"}),
        json!([{"region": dst_region}]),
        "Delete",
    )
    .await;
    let st = wait_ready(&api, "debian").await;
    assert_eq!(
        st.source.as_ref().unwrap().image_id.as_deref(),
        Some(v2.as_str()),
        "the public family's newest"
    );
    let copy = resource("debian-12-bookworm-v2-europe-west1");
    assert_eq!(
        dest(&st, dst_region).image_id.as_deref(),
        Some(copy.as_str()),
        "a copy in our project"
    );
    let inserted = cloud.images_in(dst_region);
    assert_eq!(inserted.len(), 1);
    assert!(
        inserted[0].extra["sourceImage"].as_str().unwrap().ends_with(&v2),
        "made from the public image: {}",
        inserted[0].extra["sourceImage"]
    );
    let public: Vec<_> = cloud
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(&format!("/projects/{PUBLIC_PROJECT}/")))
        .collect();
    assert!(
        !public.is_empty() && public.iter().all(|r| r.method == "GET"),
        "the public project only read"
    );
    api.delete("debian", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "debian gone", || async {
        api.get_opt("debian").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(cloud.images_in(dst_region).is_empty(), "our copy deleted");
    assert_eq!(cloud.images_in("us").len(), 3, "the public images and ours untouched");
    cloud.assert_conforms();
}

/// A copy owned by another project (`destinations[].account`): the source is shared with that
/// project's copier (`roles/compute.imageUser`), the copier inserts the copy in its own project
/// with its own key (Compute Engine refuses it before the share), the source's share is withdrawn
/// once the copy is available, and on delete the copy goes with the copier's key.
#[tokio::test(flavor = "multi_thread")]
async fn google_copy_owned_by_another_project() {
    use support::clouds::google::{TEAM_ACCOUNT, TEAM_PROJECT, key_file_of, resource};
    let cloud = Stand::start_with(Kind::Google, support::clouds::Profile::realistic()).await;
    let (src_region, dst_region, data, _) = cloud.account();
    let src = cloud.add(src_region, "golden-1", 10, json!({}));
    let dir = tempfile::tempdir().unwrap();
    let (s, c, op) = setup(dir.path(), "creds", &data).await;
    let team_key = key_file_of(&cloud.url, TEAM_ACCOUNT, TEAM_PROJECT);
    secret(&c, "team-b", &[("serviceAccountKey", team_key.as_str())]).await;
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let copier = format!("serviceAccount:{TEAM_ACCOUNT}");
    create(
        &api,
        "owned",
        &json!({"kind": "google", "credentialsSecretRef": {"name": "creds"}, "endpoint": cloud.url}),
        json!({"region": src_region, "imageId": src}),
        json!([{"region": dst_region, "account": {"id": copier, "credentialsSecretRef": {"name": "team-b"}}}]),
        "Delete",
    )
    .await;
    let st = wait_ready(&api, "owned").await;
    let copy = format!("projects/{TEAM_PROJECT}/global/images/golden-1-{dst_region}");
    let d = dest(&st, dst_region);
    assert_eq!(d.image_id.as_deref(), Some(copy.as_str()), "in the team's project");
    assert_eq!(d.owner.as_deref(), Some(copier.as_str()));
    let inserts = cloud.calls("images.insert");
    assert!(
        !inserts.is_empty()
            && inserts
                .iter()
                .all(|r| r.path.contains(&format!("/projects/{TEAM_PROJECT}/"))
                    && r.headers["authorization"].contains(TEAM_PROJECT)),
        "inserted by the team's copier in its project"
    );
    eventually(WAIT, "the source's share withdrawn", || async {
        cloud.members_of(&resource("golden-1")).is_empty().then_some(())
    })
    .await;
    assert_eq!(
        cloud.count("images.setIamPolicy"),
        2,
        "shared with the copier, then withdrawn"
    );
    let order: Vec<String> = cloud
        .requests()
        .iter()
        .map(support::clouds::google::method_name)
        .collect();
    let first = |m: &str| order.iter().position(|x| x == m).unwrap();
    assert!(
        first("images.setIamPolicy") < first("images.insert"),
        "shared before the copier inserts: {order:?}"
    );
    api.delete("owned", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "owned gone", || async {
        api.get_opt("owned").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(cloud.images_in(dst_region).is_empty(), "the team's copy deleted");
    let deletes = cloud.calls("images.delete");
    assert!(
        deletes
            .iter()
            .all(|r| r.headers["authorization"].contains(TEAM_PROJECT)),
        "with the copier's key"
    );
    assert_eq!(cloud.images_in(src_region).len(), 1, "the source kept");
    support::assert_secrets_kept(&s, &op, &[support::clouds::google::TEST_KEY.lines().nth(1).unwrap()]).await;
    cloud.assert_conforms();
}

/// An insert Compute Engine accepts and then refuses (the organization policy on resource
/// locations denies the region) makes no image: its operation ends `DONE` with the policy's
/// error. The copy fails with that error at its first poll (one `globalOperations.get`) instead
/// of being waited for as an image listed late (5 minutes), and each attempt is one insert.
#[tokio::test(flavor = "multi_thread")]
async fn google_an_insert_refused_by_policy_fails_with_the_operations_error() {
    use support::clouds::google::DENIED_LOCATIONS;
    let cloud = Stand::start_with(Kind::Google, support::clouds::Profile::realistic()).await;
    let (src_region, _, data, _) = cloud.account();
    let denied = DENIED_LOCATIONS[0];
    cloud.add(src_region, "golden-1", 10, json!({}));
    let dir = tempfile::tempdir().unwrap();
    let (_s, c, _op) = setup(dir.path(), "creds", &data).await;
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    create(
        &api,
        "denied",
        &json!({"kind": "google", "credentialsSecretRef": {"name": "creds"}, "endpoint": cloud.url}),
        json!({"region": src_region, "imageName": "golden-1"}),
        json!([{"region": denied}]),
        "Delete",
    )
    .await;
    let started = std::time::Instant::now();
    let d = eventually(WAIT, "the policy's error on the destination", || async {
        let st = api.get("denied").await.ok()?.status?;
        let d = dest(&st, denied).clone();
        d.message
            .as_deref()?
            .contains("constraints/gcp.resourceLocations")
            .then_some(d)
    })
    .await;
    println!(
        "calls for a refused insert on google in {:?}: {:?}",
        started.elapsed(),
        cloud.counts()
    );
    assert!(cloud.images_in(denied).is_empty(), "no image was made");
    assert!(
        d.message.as_deref().unwrap().contains("CONDITION_NOT_MET"),
        "{:?}",
        d.message
    );
    let inserts = cloud.count("images.insert");
    assert!(
        inserts >= 1 && inserts as i32 <= d.attempts.max(1),
        "one insert per attempt: {inserts}, {}",
        d.attempts
    );
    assert!(
        cloud.count("globalOperations.get") <= 2 * inserts,
        "the operation read once or twice per attempt: {:?}",
        cloud.counts()
    );
    cloud.assert_conforms();
}

/// Compute Engine as it behaves in time: the source found on the listing's second page (500
/// images a page), a copy that ends FAILED and is made again, throttled calls (403
/// rateLimitExceeded) waited out, and bearer tokens of 20 s renewed before they expire (no
/// call with an expired one). Every call counted: one insert per attempt, the token asked for
/// about once per two thirds of its life.
#[tokio::test(flavor = "multi_thread")]
async fn google_pages_retries_a_failed_copy_waits_out_throttling_and_renews_tokens() {
    let profile = support::clouds::Profile {
        bucket: Some((3.0, 1.0)),
        ..support::clouds::Profile::realistic()
    };
    let cloud = Stand::start_with(Kind::Google, profile).await;
    cloud.set_credentials_life(Duration::from_secs(20));
    let (src_region, dst_region, data, _) = cloud.account();
    let day = 1_796_000_000;
    for n in 0..505 {
        let id = cloud.add(src_region, &format!("build-{n}"), 10, json!({}));
        cloud.set_created(&id, day + n);
    }
    cloud.set_copy_time(dst_region, Duration::from_secs(12));
    cloud.state.fail_copies.store(1, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let (s, c, op) = setup(dir.path(), "creds", &data).await;
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let started = std::time::Instant::now();
    // The first two API calls are throttled (the token endpoint is not).
    cloud.state.throttle.store(2, std::sync::atomic::Ordering::SeqCst);
    create(
        &api,
        "builds",
        &json!({"kind": "google", "credentialsSecretRef": {"name": "creds"}, "endpoint": cloud.url}),
        json!({"region": src_region, "imageName": "build-*", "follow": "Newest"}),
        json!([{"region": dst_region}]),
        "Delete",
    )
    .await;
    let st = wait_ready(&api, "builds").await;
    let took = started.elapsed();
    let id = support::clouds::google::resource;
    assert_eq!(
        st.source.as_ref().unwrap().image_id,
        Some(id("build-504")),
        "the newest, on page 2"
    );
    let d = dest(&st, dst_region);
    assert_eq!(d.attempts, 2, "the FAILED copy was made again");
    assert_eq!(
        d.image_id,
        Some(id("build-504-europe-west1")),
        "its resource name, as published"
    );
    let ready: Vec<Img> = cloud
        .images_in(dst_region)
        .into_iter()
        .filter(|i| i.ready() && !i.failed())
        .collect();
    assert_eq!(ready.len(), 1);
    let reqs = cloud.requests();
    assert!(
        reqs.iter().filter(|r| r.throttled).count() >= 2,
        "throttled, then went on"
    );
    assert_eq!(cloud.expired_calls(), 0, "no call with an expired token");
    let counts = cloud.counts();
    println!("calls for a followed copy with one failure on google in {took:?}: {counts:?}");
    // A token lives 20 s and is renewed after two thirds of it.
    let tokens = counts.get("token").copied().unwrap_or(0);
    let most = (took.as_secs() / 13 + 2) as usize;
    assert!(
        tokens >= 2 && tokens <= most,
        "{tokens} tokens in {took:?} (at most {most})"
    );
    cloud.assert_budget(
        "a followed copy with one failure",
        &[("images.insert", 2), ("images.list", 8), ("images.get", 60)],
    );
    // The failure was told as it happened (posted after the status write: waited for).
    support::reasons_with(&c, "builds", &["DestinationFailed", "DestinationAvailable"]).await;
    support::assert_secrets_kept(&s, &op, &[support::clouds::google::TEST_KEY.lines().nth(1).unwrap()]).await;
    cloud.assert_conforms();
}

/// Azure Compute Gallery end to end: the newest version of an image definition is followed
/// (found on the listing's second page), replicated to another region by adding it to the
/// version's target regions, shared (Reader for a group), published as the version's id; a newer
/// version replaces it and the older version leaves that region (`keep: 1`) and its share is
/// withdrawn, but it stays a version in its home region; on delete the region leaves the current
/// version too and its share goes. Every call with a bearer token, every exchange
/// held to azure-mgmt-compute's models.
#[tokio::test(flavor = "multi_thread")]
async fn azure_follows_replicates_publishes_keeps_one_and_deletes() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use support::clouds::azure::version_id;
    let cloud = Stand::start_with(Kind::Azure, support::clouds::Profile::realistic()).await;
    let (home, region, data, _) = cloud.account();
    let day = 1_796_000_000;
    for n in 0..60 {
        let id = cloud.add(home, &format!("0.0.{n}"), 10, json!({}));
        cloud.set_created(&id, day + n);
    }
    let first = cloud.add(home, "1.0.0", 30, json!({}));
    cloud.set_created(&first, day + 3600);
    cloud.set_copy_time(region, Duration::from_secs(4));
    let dir = tempfile::tempdir().unwrap();
    let (_s, c, _op) = setup(dir.path(), "creds", &data).await;
    let g = "group:3f2b7c1e-8d4a-4e6b-9c1d-2a5e7f9b0c13";
    let shared = vec![(g.to_string(), "shared".to_string())];
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let mut obj = object(
        "golden",
        json!({"kind": "azure", "credentialsSecretRef": {"name": "creds"}, "endpoint": cloud.url}),
        json!({"region": home, "imageName": "gallery1/golden/*", "follow": "Newest", "checkInterval": "1h"}),
        json!([{"region": region, "shareWith": [{"account": g}], "replicaCount": 3, "storageAccountType": "Standard_ZRS"}]),
        "Delete",
    );
    obj.spec.retention = Some(image_replication_operator::api::v1alpha1::RetentionSpec { keep: Some(1) });
    obj.spec.publish = Some(serde_json::from_value(json!({"configMapName": "golden-azure"})).unwrap());
    api.create(&PostParams::default(), &obj).await.unwrap();
    let st = wait_ready(&api, "golden").await;
    assert_eq!(
        st.source.as_ref().unwrap().image_id.as_deref(),
        Some(first.as_str()),
        "1.0.0, on page 2"
    );
    assert_eq!(
        dest(&st, region).image_id.as_deref(),
        Some(first.as_str()),
        "the version itself, replicated"
    );
    assert_eq!(
        cloud.images_in(region).iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        vec![first.clone()]
    );
    assert_eq!(cloud.members_of(&first), shared, "Reader on the version");
    let replica = &cloud.images_in(region)[0].extra;
    assert_eq!(
        (
            replica["regionalReplicaCount"].clone(),
            replica["storageAccountType"].clone()
        ),
        (json!(3), json!("Standard_ZRS")),
        "the region's replicas as the destination asks"
    );

    let newer = cloud.add(home, "1.1.0", 30, json!({}));
    cloud.set_created(&newer, day + 7200);
    let patch = json!({"metadata": {"annotations": {"replication.imageops.io/retry": "pushed-1.1.0"}}});
    api.patch(
        "golden",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    eventually(WAIT, "1.1.0 replicated, 1.0.0 out of the region", || async {
        let st = api.get("golden").await.ok()?.status?;
        (st.source.as_ref()?.image_id.as_deref() == Some(newer.as_str()) && ready(&st) && st.previous.is_empty())
            .then_some(st)
    })
    .await;
    let ids: Vec<String> = cloud.images_in(region).iter().map(|i| i.id.clone()).collect();
    assert_eq!(ids, vec![newer.clone()], "keep 1: only the current version in {region}");
    eventually(WAIT, "the new version shared", || async {
        let st = api.get("golden").await.ok()?.status?;
        (dest(&st, region).shares.first()?.state == image_replication_operator::api::v1alpha1::SharePhase::Shared)
            .then_some(())
    })
    .await;
    assert_eq!(cloud.members_of(&newer), shared, "the current version shared");
    assert!(
        cloud.members_of(&first).is_empty(),
        "the retired version's share withdrawn"
    );
    assert!(
        cloud.images_in(home).iter().any(|i| i.id == version_id("1.0.0")),
        "1.0.0 stays a version"
    );
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    eventually(WAIT, "the version's id published", || async {
        let cm = cms.get("golden-azure").await.ok()?;
        (cm.data?.get(region)? == &newer).then_some(())
    })
    .await;
    support::reasons_with(&c, "golden", &["SourceChanged", "PreviousCopyDeleted"]).await;

    api.delete("golden", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "golden gone", || async {
        api.get_opt("golden").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(
        cloud.images_in(region).is_empty(),
        "the region left the current version too"
    );
    assert!(cloud.members_of(&newer).is_empty(), "its share withdrawn");
    assert_eq!(
        cloud.images_in(home).len(),
        62,
        "every version stays in its home region"
    );
    assert_eq!(cloud.expired_calls(), 0);
    println!("calls on azure: {:?}", cloud.counts());
    cloud.assert_budget(
        "follow, two replications, a retirement, a delete",
        &[
            ("GalleryImageVersions_Update", 4),
            ("GalleryImageVersions_ListByGalleryImage", 6),
            ("RoleAssignments_Create", 2),
            ("RoleAssignments_Delete", 2),
            ("token", 1),
        ],
    );
    cloud.assert_conforms();
}

/// Azure shares end to end: a share is the Reader role on the image version for an Entra ID
/// principal, and the copy in every region is that version, so three destinations sharing with
/// the same principals make one role assignment per principal (not per region). A principal that
/// does not exist fails for good with Azure's reason (one call, not one per region or per
/// reconcile); a Reader inherited from the subscription is not taken for a share. A principal
/// that leaves shareWith is withdrawn once; a region that leaves the spec leaves the version's
/// target regions but not its shares, which the other regions still use; on delete every share
/// goes. Every exchange held to azure-mgmt-compute's and azure-mgmt-authorization's models.
#[tokio::test(flavor = "multi_thread")]
async fn azure_shares_the_version_once_for_every_region_and_withdraws_it() {
    use image_replication_operator::api::v1alpha1::SharePhase;
    let cloud = Stand::start_with(Kind::Azure, support::clouds::Profile::realistic()).await;
    let (home, region, data, _) = cloud.account();
    let third = "southeastasia";
    let version = cloud.add(home, "1.0.0", 30, json!({}));
    let dir = tempfile::tempdir().unwrap();
    let (s, c, op) = setup(dir.path(), "creds", &data).await;
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let (g, sp) = (
        "group:3f2b7c1e-8d4a-4e6b-9c1d-2a5e7f9b0c13",
        "servicePrincipal:9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
    );
    let nobody = "user:ffffffff-0000-4000-8000-00000000dead";
    let shares = |accounts: &[&str]| json!(accounts.iter().map(|a| json!({"account": a})).collect::<Vec<_>>());
    let dests = |regions: &[&str], accounts: &[&str]| {
        json!(
            regions
                .iter()
                .map(|r| json!({"region": r, "shareWith": shares(accounts)}))
                .collect::<Vec<_>>()
        )
    };
    let provider = json!({"kind": "azure", "credentialsSecretRef": {"name": "creds"}, "endpoint": cloud.url});
    create(
        &api,
        "golden",
        &provider,
        json!({"region": home, "imageId": version}),
        dests(&[region, third, home], &[g, sp, nobody]),
        "Delete",
    )
    .await;
    let states = |st: &ImageReplicationStatus, r: &str| -> Vec<(String, SharePhase)> {
        dest(st, r)
            .shares
            .iter()
            .map(|x| (x.account.clone(), x.state))
            .collect()
    };
    let want = vec![
        (g.to_string(), SharePhase::Shared),
        (sp.to_string(), SharePhase::Shared),
        (nobody.to_string(), SharePhase::Failed),
    ];
    let st = eventually(WAIT, "shared in every region, the unknown principal failed", || async {
        let st = api.get("golden").await.ok()?.status?;
        [region, third, home]
            .iter()
            .all(|r| dest(&st, r).phase == DestinationPhase::Available && states(&st, r) == want)
            .then_some(st)
    })
    .await;
    for r in [region, third, home] {
        assert_eq!(
            dest(&st, r).image_id.as_deref(),
            Some(version.as_str()),
            "{r}: the version itself"
        );
        let why = dest(&st, r).shares[2].message.clone().unwrap_or_default();
        assert!(why.contains("PrincipalNotFound"), "{r}: {why}");
    }
    let members = |accounts: &[&str]| -> Vec<(String, String)> {
        accounts.iter().map(|a| (a.to_string(), "shared".to_string())).collect()
    };
    assert_eq!(cloud.members_of(&version), members(&[g, sp]));
    println!("calls for two shares in three regions: {:?}", cloud.counts());
    // At rest (one share failed for good, two in place): nothing written; the version's role
    // assignments read once per drift check for all three regions, not once per region.
    let reads = || cloud.count("RoleAssignments_ListForScope");
    // The Events of the last status change are posted after it is written: waited for.
    support::reasons_with(&c, "golden", &["SharesFailed"]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = reads();
    support::assert_quiet(&s, &c, "golden", Duration::from_secs(7)).await;
    let during = reads() - before;
    println!("role assignment reads in 7 s at rest (drift checks every 2 s): {during}");
    assert!(
        (1..=5).contains(&during),
        "read once per look, for every region: {during}"
    );
    assert_eq!(
        cloud.count("RoleAssignments_Create"),
        3,
        "one per principal (the unknown one once), not one per region"
    );
    cloud.assert_budget(
        "shares in three regions",
        &[
            ("RoleAssignments_ListForScope", 12),
            ("GalleryImageVersions_Update", 2),
            ("token", 1),
        ],
    );

    // sp and nobody leave shareWith: sp's assignment is withdrawn once, for every region.
    let patch = json!({"spec": {"destinations": dests(&[region, third, home], &[g])}});
    api.patch(
        "golden",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    eventually(WAIT, "only g in every region", || async {
        let st = api.get("golden").await.ok()?.status?;
        [region, third, home]
            .iter()
            .all(|r| states(&st, r) == vec![(g.to_string(), SharePhase::Shared)])
            .then_some(())
    })
    .await;
    assert_eq!(cloud.members_of(&version), members(&[g]));
    assert_eq!(cloud.count("RoleAssignments_Delete"), 1, "withdrawn once");
    support::reasons_with(&c, "golden", &["ShareWithdrawn"]).await;

    // A region leaves the spec: out of the version's target regions; g keeps its Reader (the
    // other regions share it).
    let patch = json!({"spec": {"destinations": dests(&[region, home], &[g])}});
    api.patch(
        "golden",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    eventually(WAIT, "southeastasia pruned", || async {
        let st = api.get("golden").await.ok()?.status?;
        (st.destinations.len() == 2 && cloud.images_in(third).is_empty()).then_some(())
    })
    .await;
    assert_eq!(
        cloud.members_of(&version),
        members(&[g]),
        "the other regions' share stays"
    );
    assert_eq!(
        cloud.count("RoleAssignments_Delete"),
        1,
        "nothing withdrawn with the region"
    );

    api.delete("golden", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "golden gone", || async {
        api.get_opt("golden").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(cloud.members_of(&version).is_empty(), "every share withdrawn");
    assert!(cloud.images_in(region).is_empty(), "the region left the version");
    assert_eq!(cloud.images_in(home).len(), 1, "the version stays in its home region");
    assert_eq!(cloud.count("RoleAssignments_Delete"), 2);
    assert_eq!(cloud.expired_calls(), 0);
    support::assert_secrets_kept(&s, &op, &[support::clouds::azure::CLIENT_SECRET]).await;
    cloud.assert_conforms();
}
