//! No long-lived keys (issue #33): the operator acts with its pod's workload identity — a
//! ServiceAccount token the real API server issued (TokenRequest with the cloud's audience,
//! written where the kubelet projects it) exchanged at the cloud's security token service — and
//! assumes another account's role for a copy that account owns. The stand-ins accept only the
//! handed-out keys with their session token, signed, and expire them quickly, so a copy outlives
//! several sets of keys; every exchange is held to the SDK's model.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use image_replication_operator::api::ImageReplication;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use support::clouds::{AK, AK2, AWS_ACCOUNT, AWS_OTHER_ACCOUNT, Kind, Stand};
use support::envtest::{self, ControlPlane};
use support::operator::{Operator, eventually, free_port};

const WAIT: Duration = Duration::from_secs(120);
/// The issuer of the envtest API server's ServiceAccount tokens.
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const ROLE: &str = "arn:aws:iam::123456789012:role/image-replication-operator";
const OTHER_ROLE: &str = "arn:aws:iam::210987654321:role/imgrep-copies";
/// The workload identity pool provider the operator's token is exchanged for (Google).
const GOOGLE_POOL: &str = "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/k8s/providers/c1";

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

    /// A token of the operator's ServiceAccount for `audience`, issued by the API server and
    /// written where the kubelet would project it.
    fn projected_token(&self, audience: &str) -> PathBuf {
        let _ = self
            .cp
            .kubectl(&["-n", &self.ns, "create", "serviceaccount", "image-replication-operator"]);
        let token = self.cp.kubectl_ok(&[
            "-n",
            &self.ns,
            "create",
            "token",
            "image-replication-operator",
            "--audience",
            audience,
            "--duration=1h",
        ]);
        let dir = self.dir.path().join("eks.amazonaws.com/serviceaccount");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, token.trim()).unwrap();
        path
    }

    fn operator(&self, envs: &[(&str, &str)]) -> Operator {
        let kc = self.cp.write_kubeconfig(self.dir.path());
        let mut all = vec![("POD_NAMESPACE", self.ns.as_str())];
        all.extend_from_slice(envs);
        Operator::start_on(
            free_port(),
            &kc,
            self.dir.path(),
            "op-keyless",
            &[
                "--namespace",
                &self.ns,
                "--resync-seconds",
                "2",
                "--poll-min-seconds",
                "1",
                "--poll-max-seconds",
                "1",
            ],
            &all,
        )
    }

    fn irs(&self) -> Api<ImageReplication> {
        Api::namespaced(self.c.clone(), &self.ns)
    }

    async fn create(&self, name: &str, spec: Value) {
        let obj: ImageReplication = serde_json::from_value(json!({
            "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ImageReplication",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": spec,
        }))
        .unwrap();
        self.irs().create(&PostParams::default(), &obj).await.unwrap();
    }

    /// The Ready condition once its reason is `reason`.
    async fn ready_with(&self, name: &str, reason: &str) -> (String, String) {
        eventually(WAIT, &format!("{name} Ready reason {reason}"), || async {
            let st = self.irs().get(name).await.ok()?.status?;
            let c = st.conditions.iter().find(|c| c.type_ == "Ready")?;
            (c.reason == reason).then(|| (c.status.clone(), c.message.clone()))
        })
        .await
    }
}

/// A keyless example of deploy/examples, pointed at the stand-in and its source image.
fn example(file: &str, cloud: &Stand, src: &str) -> (String, Value) {
    let path = format!("{}/deploy/examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut spec = doc["spec"].clone();
    assert!(
        spec["provider"].get("credentialsSecretRef").is_none(),
        "{file} is keyless"
    );
    spec["provider"]["endpoint"] = json!(cloud.url);
    spec["source"]["imageId"] = json!(src);
    (doc["metadata"]["name"].as_str().unwrap().to_string(), spec)
}

fn irsa_env(token: &Path, cloud: &Stand) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ROLE_ARN", ROLE.to_string()),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token.display().to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL_STS", cloud.url.clone()),
    ]
}

fn borrowed<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// IRSA end to end with no Secret: a copy that outlives four sets of keys (each refreshed
/// before it expires: not one call refused), a share with another account, a copy owned by
/// that account through its role (assumed with the workload identity's keys and an external
/// id), the exchanges counted in the metrics, and nothing of the keys or the token in the logs,
/// status or Events; then delete.
#[tokio::test(flavor = "multi_thread")]
async fn aws_copies_shares_and_deletes_with_no_secret_through_irsa_and_an_assumed_role() {
    let Some(sc) = Scene::new("irsa").await else {
        return;
    };
    let cloud = Stand::start(Kind::Aws).await;
    cloud.trust_web_identity(ISSUER, "sts.amazonaws.com", &[(ROLE, AWS_ACCOUNT)]);
    cloud.trust_role(OTHER_ROLE, AWS_OTHER_ACCOUNT, AWS_ACCOUNT, Some("team-a"));
    cloud.set_credentials_life(Duration::from_secs(12));
    let src = cloud.add("us-east-1", "golden", 8, json!({}));
    cloud.set_copy_time("eu-west-1", Duration::from_secs(30));
    let token = sc.projected_token("sts.amazonaws.com");
    let env = irsa_env(&token, &cloud);
    let op = sc.operator(&borrowed(&env));
    // deploy/examples/aws-keyless.yaml, as a user applies it.
    let (name, spec) = example("aws-keyless.yaml", &cloud, &src);
    assert_eq!(spec["destinations"][2]["account"]["assumeRole"]["roleArn"], OTHER_ROLE);
    sc.create(&name, spec).await;
    let (status, msg) = sc.ready_with(&name, "Succeeded").await;
    assert_eq!(status, "True", "{msg}");

    // What a user sees: both copies, the share, the owned copy in the other account.
    let members = |image: &str| -> Vec<String> { cloud.members_of(image).into_iter().map(|(a, _)| a).collect() };
    eventually(WAIT, "the eu-west-1 copy, shared", || async {
        let eu = cloud.images_in("eu-west-1");
        (eu.len() == 1 && members(&eu[0].id) == [AWS_OTHER_ACCOUNT]).then_some(())
    })
    .await;
    eventually(WAIT, "the ap-southeast-1 copy, the other account's", || async {
        let ap = cloud.images_in("ap-southeast-1");
        (ap.len() == 1 && ap[0].extra["ownerId"] == AWS_OTHER_ACCOUNT).then_some(())
    })
    .await;
    // The source itself shared in its own region; the owner's share of it withdrawn once its
    // copy was available.
    eventually(WAIT, "the source shared in place only", || async {
        let members: Vec<String> = cloud.members_of(&src).into_iter().map(|(a, _)| a).collect();
        (members == ["111122223333"]).then_some(())
    })
    .await;

    // Every EC2 call was made with handed-out keys and their token; none with a key pair.
    let ec2: Vec<_> = cloud
        .requests()
        .into_iter()
        .filter(|r| !r.action().starts_with("AssumeRole"))
        .collect();
    assert!(!ec2.is_empty());
    for r in &ec2 {
        let auth = &r.headers["authorization"];
        assert!(
            auth.contains("Credential=ASIATEMP") && !auth.contains(AK) && !auth.contains(AK2),
            "{} signed with {auth}",
            r.action()
        );
        assert!(
            auth.contains("x-amz-security-token"),
            "{}: token not signed",
            r.action()
        );
    }
    // The copy took longer than the keys live: they were renewed before expiry, never after.
    let web = cloud.count("AssumeRoleWithWebIdentity");
    assert!(web >= 2, "keys renewed during the 30 s copy: {web} exchanges");
    assert_eq!(cloud.expired_calls(), 0, "no call with expired keys");
    // One exchange per 8 s (two thirds of 12 s) at most, however many calls: no storm.
    let copy_secs = 30 + 15;
    cloud.assert_budget(
        "keyless copy",
        &[
            ("AssumeRoleWithWebIdentity", copy_secs / 8 + 2),
            ("AssumeRole", copy_secs / 8 + 2),
        ],
    );
    assert!(
        cloud.calls("CopyImage").iter().any(|r| {
            let ak = auth_key(r);
            cloud
                .sessions()
                .iter()
                .any(|s| s.ak == ak && s.account == AWS_OTHER_ACCOUNT)
        }),
        "the owned copy was made with the other account's role"
    );
    let assumed = cloud.calls("AssumeRole");
    assert!(
        assumed
            .iter()
            .all(|r| r.params.get("ExternalId").map(String::as_str) == Some("team-a"))
    );
    assert!(
        assumed
            .iter()
            .all(|r| r.params.get("RoleSessionName").is_some_and(|n| n.contains(&sc.ns))),
        "the session names the namespace"
    );

    // No Secret anywhere in the namespace; no key, token or JWT in logs, status or Events.
    let secrets: Api<Secret> = Api::namespaced(sc.c.clone(), &sc.ns);
    assert!(secrets.list(&ListParams::default()).await.unwrap().items.is_empty());
    let jwt = std::fs::read_to_string(&token).unwrap();
    let mut secret_values: Vec<String> = vec![jwt];
    for s in cloud.sessions() {
        secret_values.push(s.sk.clone());
        secret_values.push(s.token.clone());
    }
    let seen = format!(
        "{}\n{}\n{:?}\n{}",
        op.logs(),
        serde_json::to_string(&sc.irs().get(&name).await.unwrap().status).unwrap(),
        support::events_in(&sc.c, &sc.ns, &name).await,
        op.http_get("/metrics").map(|(_, b)| b).unwrap_or_default()
    );
    for v in &secret_values {
        assert!(!seen.contains(v.as_str()), "a secret value leaked");
    }
    let metrics = op.http_get("/metrics").unwrap().1;
    let ok = metrics
        .lines()
        .find(|l| l.starts_with("imgrep_credential_exchanges_total{outcome=\"ok\",provider=\"aws\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(ok as usize >= web, "{metrics}");

    sc.irs().delete(&name, &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "golden gone", || async {
        sc.irs().get_opt(&name).await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(cloud.images_in("eu-west-1").is_empty() && cloud.images_in("ap-southeast-1").is_empty());
    assert!(
        cloud.members_of(&src).is_empty(),
        "the in-place share withdrawn before delete"
    );
    assert_eq!(cloud.expired_calls(), 0);
    cloud.assert_conforms();
}

/// A token for the wrong audience: STS refuses it, the object says which role, which audience
/// and the cloud's code, and no EC2 call is made.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_web_identity_says_which_role_and_audience_and_calls_nothing_else() {
    let Some(sc) = Scene::new("irsa-refused").await else {
        return;
    };
    let cloud = Stand::start(Kind::Aws).await;
    cloud.trust_web_identity(ISSUER, "sts.amazonaws.com", &[(ROLE, AWS_ACCOUNT)]);
    let src = cloud.add("us-east-1", "golden", 8, json!({}));
    let token = sc.projected_token("api");
    let env = irsa_env(&token, &cloud);
    let _op = sc.operator(&borrowed(&env));
    sc.create(
        "refused",
        json!({
            "provider": {"kind": "aws", "endpoint": cloud.url},
            "source": {"region": "us-east-1", "imageId": src},
            "destinations": [{"region": "eu-west-1"}],
        }),
    )
    .await;
    let (status, msg) = sc.ready_with("refused", "CredentialsRefused").await;
    assert_eq!(status, "False");
    for part in [
        ROLE,
        "audience api",
        "InvalidIdentityToken",
        "Incorrect token audience",
        "workload identity",
    ] {
        assert!(msg.contains(part), "{part:?} not in {msg}");
    }
    let counts = cloud.counts();
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        ["AssumeRoleWithWebIdentity"],
        "{counts:?}"
    );
    // Refused credentials back off (minutes), not retried every reconcile.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(cloud.count("AssumeRoleWithWebIdentity"), 1, "{:?}", cloud.counts());
    assert!(cloud.images_in("eu-west-1").is_empty());
    cloud.assert_conforms();
}

/// A role the STS refuses (its trust policy does not name the caller, or wants another external
/// id): the object says which role and the cloud's code, and makes no EC2 call.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_role_says_which_and_calls_nothing_else() {
    let Some(sc) = Scene::new("role-refused").await else {
        return;
    };
    let cloud = Stand::start(Kind::Aws).await;
    cloud.trust_web_identity(ISSUER, "sts.amazonaws.com", &[(ROLE, AWS_ACCOUNT)]);
    cloud.trust_role(OTHER_ROLE, AWS_OTHER_ACCOUNT, AWS_ACCOUNT, Some("team-a"));
    let src = cloud.add("us-east-1", "golden", 8, json!({}));
    let token = sc.projected_token("sts.amazonaws.com");
    let env = irsa_env(&token, &cloud);
    let _op = sc.operator(&borrowed(&env));
    sc.create(
        "wrong-external-id",
        json!({
            "provider": {"kind": "aws", "endpoint": cloud.url,
                "assumeRole": {"roleArn": OTHER_ROLE, "externalId": "team-b"}},
            "source": {"region": "us-east-1", "imageId": src},
            "destinations": [{"region": "eu-west-1"}],
        }),
    )
    .await;
    let (status, msg) = sc.ready_with("wrong-external-id", "CredentialsRefused").await;
    assert_eq!(status, "False");
    for part in [OTHER_ROLE, "AccessDenied", "assuming role"] {
        assert!(msg.contains(part), "{part:?} not in {msg}");
    }
    let counts = cloud.counts();
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        ["AssumeRole", "AssumeRoleWithWebIdentity"],
        "no EC2 call: {counts:?}"
    );
    assert!(cloud.images_in("eu-west-1").is_empty());
    cloud.assert_conforms();
}

/// EKS Pod Identity: the node's agent (here a stand-in of it on loopback, answering from the
/// cloud stand-in's STS) gives keys for the pod's token; no Secret, no IRSA variables.
#[tokio::test(flavor = "multi_thread")]
async fn aws_copies_with_eks_pod_identity() {
    let Some(sc) = Scene::new("pod-identity").await else {
        return;
    };
    let cloud = Stand::start(Kind::Aws).await;
    cloud.trust_web_identity(ISSUER, "pods.eks.amazonaws.com", &[(ROLE, AWS_ACCOUNT)]);
    let src = cloud.add("us-east-1", "golden", 8, json!({}));
    let token = sc.projected_token("pods.eks.amazonaws.com");
    // The agent: `Authorization` is the pod's token; the answer is the container credentials.
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (state, counted) = (cloud.state.clone(), calls.clone());
    let app = axum::Router::new().route(
        "/v1/credentials",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let (state, counted) = (state.clone(), counted.clone());
            async move {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let jwt = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
                match state.sts.lock().unwrap().web_identity(ROLE, jwt) {
                    Err((code, message)) => (
                        axum::http::StatusCode::FORBIDDEN,
                        axum::Json(json!({"code": code, "message": message})),
                    ),
                    Ok(s) => (
                        axum::http::StatusCode::OK,
                        axum::Json(json!({"AccessKeyId": s.ak, "SecretAccessKey": s.sk, "Token": s.token,
                            "AccountId": s.account, "Expiration": k8s_openapi::jiff::Timestamp::from_second(s.expires_unix).unwrap().to_string()})),
                    ),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent = format!("http://{}/v1/credentials", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let token_file = token.display().to_string();
    let _op = sc.operator(&[
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", agent.as_str()),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file.as_str()),
    ]);
    sc.create(
        "golden",
        json!({
            "provider": {"kind": "aws", "endpoint": cloud.url},
            "source": {"region": "us-east-1", "imageId": src},
            "destinations": [{"region": "eu-west-1"}],
        }),
    )
    .await;
    let (status, msg) = sc.ready_with("golden", "Succeeded").await;
    assert_eq!(status, "True", "{msg}");
    eventually(WAIT, "the copy in eu-west-1", || async {
        (cloud.images_in("eu-west-1").len() == 1).then_some(())
    })
    .await;
    assert!(calls.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    for r in cloud.requests() {
        assert!(
            auth_key(&r).starts_with("ASIATEMP"),
            "{} signed with {}",
            r.action(),
            auth_key(&r)
        );
    }
    cloud.assert_conforms();
}

/// The access key a request was signed with.
pub fn auth_key(r: &support::clouds::Req) -> String {
    r.headers
        .get("authorization")
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').next())
        .unwrap_or("")
        .to_string()
}

/// A cloud's workload identity as its managed Kubernetes sets it: (role, audience, variables).
fn workload(cloud: &Stand, token: &Path) -> (&'static str, &'static str, Vec<(&'static str, String)>) {
    let token = token.display().to_string();
    match cloud.kind {
        Kind::Alibaba => (
            "acs:ram::1234567890123456:role/image-replication-operator",
            "sts.aliyuncs.com",
            vec![
                (
                    "ALIBABA_CLOUD_ROLE_ARN",
                    "acs:ram::1234567890123456:role/image-replication-operator".into(),
                ),
                (
                    "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
                    "acs:ram::1234567890123456:oidc-provider/ack-rrsa-c1".into(),
                ),
                ("ALIBABA_CLOUD_OIDC_TOKEN_FILE", token),
                ("ALIBABA_CLOUD_STS_ENDPOINT", cloud.url.clone()),
            ],
        ),
        Kind::Tencent => (
            "qcs::cam::uin/100000000001:roleName/image-replication-operator",
            "sts.cloud.tencent.com",
            vec![
                ("TKE_REGION", "ap-guangzhou".into()),
                ("TKE_PROVIDER_ID", "tke-oidc-c1".into()),
                ("TKE_WEB_IDENTITY_TOKEN_FILE", token),
                (
                    "TKE_ROLE_ARN",
                    "qcs::cam::uin/100000000001:roleName/image-replication-operator".into(),
                ),
                ("TENCENTCLOUD_STS_ENDPOINT", cloud.url.clone()),
            ],
        ),
        Kind::Huawei => (
            "cce-oidc-c1",
            "sts.myhuaweicloud.com",
            vec![
                ("HUAWEICLOUD_SDK_IDP_ID", "cce-oidc-c1".into()),
                ("HUAWEICLOUD_SDK_ID_TOKEN_FILE", token),
                ("HUAWEICLOUD_SDK_IAM_ENDPOINT", cloud.url.clone()),
            ],
        ),
        Kind::Google => {
            // The external_account configuration `gcloud iam workload-identity-pools
            // create-cred-config` writes, its endpoints the stand-in's.
            let config = std::path::Path::new(&token).with_file_name("google-credentials.json");
            let cfg = json!({
                "type": "external_account", "audience": GOOGLE_POOL,
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                "token_url": format!("{}/v1/token", cloud.url),
                "credential_source": {"file": token},
            });
            std::fs::write(&config, cfg.to_string()).unwrap();
            (
                GOOGLE_POOL,
                "sts.googleapis.com",
                vec![
                    ("GOOGLE_APPLICATION_CREDENTIALS", config.display().to_string()),
                    ("GOOGLE_CLOUD_PROJECT", support::clouds::google::GOOGLE_PROJECT.into()),
                    ("GOOGLE_IAMCREDENTIALS_ENDPOINT", cloud.url.clone()),
                ],
            )
        }
        k => panic!("no workload identity for {k:?} here"),
    }
}

/// ACK RRSA and TKE OIDC end to end with no Secret: the workload identity's keys assume a
/// copier role (`provider.assumeRole`, signed with the handed-out keys and their token), which
/// copies and shares; its keys live 12 s and the copy 30 s, so they are renewed before they
/// expire and no call is refused; every call is made with handed-out keys; every exchange is
/// held to the SDK's STS model.
async fn keyless_copy_and_share(kind: Kind) {
    let Some(sc) = Scene::new(&format!("keyless-{kind:?}").to_lowercase()).await else {
        return;
    };
    let cloud = Stand::start(kind).await;
    let (src_region, dst_region, _, provider) = cloud.account();
    let token_path = {
        let audience = image_replication_operator::image_replication::vm::providers::CLOUDS
            .iter()
            .find(|c| c.kind.as_str() == provider)
            .and_then(|c| c.identity)
            .unwrap()
            .audience;
        sc.projected_token(audience)
    };
    let (role, audience, env) = workload(&cloud, &token_path);
    // deploy/examples/<cloud>-keyless.yaml, as a user applies it: its copier role, its member.
    let src = cloud.add(src_region, "golden", 8, json!({}));
    let (name, spec) = example(&format!("{provider}-keyless.yaml"), &cloud, &src);
    assert_eq!(
        (
            spec["source"]["region"].as_str(),
            spec["destinations"][0]["region"].as_str()
        ),
        (Some(src_region), Some(dst_region))
    );
    let copier = spec["provider"]["assumeRole"]["roleArn"].as_str().unwrap().to_string();
    let copier = copier.as_str();
    let member = spec["destinations"][0]["shareWith"][0]["account"]
        .as_str()
        .map(String::from);
    let account = match kind {
        Kind::Alibaba => support::clouds::ALI_ACCOUNT,
        Kind::Huawei => support::clouds::HW_ACCOUNT,
        Kind::Google => support::clouds::google::GOOGLE_PROJECT,
        _ => support::clouds::TC_ACCOUNT,
    };
    cloud.trust_web_identity(ISSUER, audience, &[(role, account)]);
    cloud.trust_role(copier, account, account, None);
    // A member that accepts through an agency of its own account (huawei), taken with the
    // provider's (the copier's) keys.
    if let Some(accept) = spec["destinations"][0]["shareWith"][0]["acceptWith"]["assumeRole"]["roleArn"].as_str() {
        cloud.trust_role(accept, "1b2c3d4e5f", account, None);
    }
    cloud.set_credentials_life(Duration::from_secs(12));
    cloud.set_copy_time(dst_region, Duration::from_secs(30));
    let op = sc.operator(&borrowed(&env));
    sc.create(&name, spec.clone()).await;
    let (status, msg) = sc.ready_with(&name, "Succeeded").await;
    assert_eq!(status, "True", "{msg}");
    eventually(WAIT, "the copy, shared as the example says", || async {
        let copies = cloud.images_in(dst_region);
        let shared: Vec<String> = match copies.first() {
            Some(c) => cloud.members_of(&c.id).into_iter().map(|(a, _)| a).collect(),
            None => Vec::new(),
        };
        (copies.len() == 1 && shared == member.iter().cloned().collect::<Vec<_>>()).then_some(())
    })
    .await;
    let sessions = cloud.sessions();
    let accept_role = spec["destinations"][0]["shareWith"][0]["acceptWith"]["assumeRole"]["roleArn"].as_str();
    let copier_keys: Vec<&str> = sessions
        .iter()
        .filter(|s| s.role == copier || Some(s.role.as_str()) == accept_role)
        .map(|s| s.ak.as_str())
        .collect();
    let (web, assume) = match kind {
        Kind::Alibaba => ("AssumeRoleWithOIDC", "AssumeRole"),
        Kind::Huawei => (
            "POST /v3.0/OS-AUTH/id-token/tokens",
            "POST /v3.0/OS-CREDENTIAL/securitytokens",
        ),
        Kind::Google => ("sts.token", "iamcredentials.generateAccessToken"),
        _ => ("AssumeRoleWithWebIdentity", "AssumeRole"),
    };
    let sts_call = |r: &support::clouds::Req| {
        r.action().starts_with("AssumeRole")
            || r.path.starts_with("/v3.0/OS-")
            || r.action() == web
            || r.action() == assume
    };
    for r in cloud.requests().iter().filter(|r| !sts_call(r)) {
        let ak = match kind {
            Kind::Alibaba => r.params.get("AccessKeyId").cloned().unwrap_or_default(),
            Kind::Huawei => r
                .headers
                .get("authorization")
                .and_then(|a| a.split("Access=").nth(1))
                .and_then(|c| c.split(',').next())
                .unwrap_or("")
                .to_string(),
            Kind::Google => r
                .headers
                .get("authorization")
                .and_then(|a| a.strip_prefix("Bearer "))
                .unwrap_or("")
                .to_string(),
            _ => auth_key(r),
        };
        assert!(
            copier_keys.contains(&ak.as_str()),
            "{} made with {ak}, not the copier role's keys",
            r.action()
        );
    }
    assert!(
        cloud.count(assume) >= 2,
        "the copier's keys renewed during the copy: {:?}",
        cloud.counts()
    );
    assert!(cloud.count(web) >= 1);
    assert_eq!(cloud.expired_calls(), 0, "no call with expired keys");
    let copy_secs = 30 + 15;
    // IAM's one securitytokens path is both the workload identity's second step and the agency.
    let per_identity = copy_secs / 8 + 2;
    let assumes = if kind == Kind::Huawei {
        2 * per_identity
    } else {
        per_identity
    };
    cloud.assert_budget(
        "keyless copy",
        &[(web, per_identity), (assume, assumes), ("GET /v3/projects", 2)],
    );
    let logs = op.logs();
    for s in &sessions {
        assert!(
            !logs.contains(&s.sk) && !logs.contains(&s.token),
            "a key leaked into the logs"
        );
        // Google's handed-out credential is the bearer token itself.
        assert!(
            kind != Kind::Google || !logs.contains(&s.ak),
            "a token leaked into the logs"
        );
    }
    sc.irs().delete(&name, &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "golden gone", || async {
        sc.irs().get_opt(&name).await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(cloud.images_in(dst_region).is_empty());
    cloud.assert_conforms();
}

#[tokio::test(flavor = "multi_thread")]
async fn alibaba_copies_and_shares_with_no_secret_through_rrsa_and_a_copier_role() {
    keyless_copy_and_share(Kind::Alibaba).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn huawei_copies_with_no_secret_through_cce_workload_identity_and_an_agency() {
    keyless_copy_and_share(Kind::Huawei).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tencent_copies_and_shares_with_no_secret_through_tke_oidc_and_a_copier_role() {
    keyless_copy_and_share(Kind::Tencent).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn google_copies_and_shares_with_no_secret_through_workload_identity_federation_and_a_copier() {
    keyless_copy_and_share(Kind::Google).await;
}

/// Azure Workload Identity end to end with no Secret (deploy/examples/azure-keyless.yaml): the
/// ServiceAccount token the real API server issued (audience api://AzureADTokenExchange) is the
/// client assertion for the app's token; tokens of 12 s are renewed during a 30 s replication,
/// every ARM call carries a handed-out token, none expired, none in the logs; every exchange held
/// to azure-mgmt-compute's models.
#[tokio::test(flavor = "multi_thread")]
async fn azure_replicates_with_no_secret_through_workload_identity() {
    use support::clouds::azure::{CLIENT, RESOURCE_GROUP, SUBSCRIPTION, TENANT};
    let Some(sc) = Scene::new("keyless-azure").await else {
        return;
    };
    let cloud = Stand::start(Kind::Azure).await;
    let (src_region, dst_region, _, _) = cloud.account();
    let audience = image_replication_operator::image_replication::vm::providers::azure::wi::IDENTITY.audience;
    let token_path = sc.projected_token(audience);
    cloud.trust_web_identity(ISSUER, audience, &[(CLIENT, SUBSCRIPTION)]);
    cloud.set_credentials_life(Duration::from_secs(12));
    cloud.set_copy_time(dst_region, Duration::from_secs(30));
    let src = cloud.add(src_region, "1.0.0", 8, json!({}));
    let (name, spec) = example("azure-keyless.yaml", &cloud, &src);
    let env = vec![
        ("AZURE_CLIENT_ID", CLIENT.to_string()),
        ("AZURE_TENANT_ID", TENANT.to_string()),
        ("AZURE_FEDERATED_TOKEN_FILE", token_path.display().to_string()),
        ("AZURE_AUTHORITY_HOST", cloud.url.clone()),
        ("AZURE_SUBSCRIPTION_ID", SUBSCRIPTION.to_string()),
        ("AZURE_RESOURCE_GROUP", RESOURCE_GROUP.to_string()),
    ];
    let op = sc.operator(&borrowed(&env));
    sc.create(&name, spec).await;
    let (status, msg) = sc.ready_with(&name, "Succeeded").await;
    assert_eq!(status, "True", "{msg}");
    assert_eq!(cloud.images_in(dst_region).len(), 1);
    let sessions = cloud.sessions();
    let tokens: Vec<&str> = sessions.iter().map(|s| s.ak.as_str()).collect();
    for r in cloud.requests().iter().filter(|r| r.action() != "token") {
        let bearer = r
            .headers
            .get("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or("");
        assert!(
            tokens.contains(&bearer),
            "{} made without a handed-out token",
            r.action()
        );
    }
    assert!(
        cloud.count("token") >= 2,
        "renewed during the copy: {:?}",
        cloud.counts()
    );
    cloud.assert_budget("keyless replication", &[("token", (30 + 15) / 8 + 2)]);
    assert_eq!(cloud.expired_calls(), 0, "no call with an expired token");
    let logs = op.logs();
    assert!(
        sessions.iter().all(|s| !logs.contains(&s.ak)),
        "a token leaked into the logs"
    );
    sc.irs().delete(&name, &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "gone", || async {
        sc.irs().get_opt(&name).await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(cloud.images_in(dst_region).is_empty(), "the region left the version");
    cloud.assert_conforms();
}
