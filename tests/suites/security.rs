//! Safe in a shared cluster: the egress policy, end to end with the operator process, the fake
//! API server and real registries on allowed and refused loopback ports.

use crate::support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use image_replication_operator::api::v1alpha1::DestinationPhase;
use image_replication_operator::api::{ImageReplication, ReplicaInstance};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use support::operator::{Operator, eventually};
use support::registry::TestRegistry;

const WAIT: Duration = Duration::from_secs(60);

/// A loopback listener that counts connections and answers each request with `answer`
/// (`None`: closes at once). Runs until the test process ends.
fn listener(answer: Option<String>) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            c.fetch_add(1, Ordering::SeqCst);
            if let Some(a) = &answer {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(a.as_bytes());
            }
        }
    });
    (port, count)
}

fn ir(name: &str, source: &str, dest: &str) -> ImageReplication {
    serde_json::from_value(json!({
        "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ImageReplication",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "provider": {"kind": "oci"},
            "source": {"region": "region-a", "reference": source},
            "destinations": [{"region": "region-b", "registry": dest}]
        }
    }))
    .unwrap()
}

fn condition(o: &ImageReplication, t: &str) -> Option<(String, String, String)> {
    let c = o.status.as_ref()?.conditions.iter().find(|c| c.type_ == t)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_egress_policy_refuses_what_the_admin_did_not_allow_before_any_connection() {
    let (a, b) = (TestRegistry::start(), TestRegistry::start());
    let (digest, _) = a.seed("team/web", "1.4", &[]);
    // A loopback port the policy does not name: nothing may ever connect to it.
    let (refused, refused_conns) = listener(None);
    // An allowed "registry" that sends every request to the refused port.
    let (redirector, _) = listener(Some(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{refused}/v2/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )));

    let (s, c) = support::cluster().await;
    let api_port: u16 = s
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let allowed = format!("*,{},{},127.0.0.1:{redirector}", a.host(), b.host());
    let _op = Operator::start_on(
        support::operator::free_port(),
        &s.write_kubeconfig(dir.path()),
        dir.path(),
        "op-egress",
        &[],
        // Cloud endpoints: a wildcard, which never opens loopback.
        &[("EGRESS_REGISTRY_HOSTS", allowed.as_str()), ("EGRESS_CLOUD_HOSTS", "*")],
    );
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let src = format!("{}/team/web:1.4", a.host());
    for o in [
        ir("allowed", &src, &b.url()),
        ir("refused-port", &src, &format!("http://127.0.0.1:{refused}")),
        ir("metadata", &src, "http://169.254.169.254"),
        ir("api-server", &src, &format!("http://127.0.0.1:{api_port}")),
        ir("refused-source", &format!("127.0.0.1:{refused}/team/web:1.4"), &b.url()),
        ir("redirected", &format!("127.0.0.1:{redirector}/team/web:1.4"), &b.url()),
    ] {
        api.create(&PostParams::default(), &o).await.unwrap();
    }

    // Allowed ports work as before.
    eventually(WAIT, "the allowed copy Available", || async {
        let st = api.get("allowed").await.ok()?.status?;
        (st.destinations.first()?.phase == DestinationPhase::Available).then_some(())
    })
    .await;
    assert_eq!(b.digest_of("team/web", "1.4"), Some(digest));

    // Refused URLs: Validated=False naming the field and the policy, and an Event.
    for (name, field, says) in [
        (
            "refused-port",
            "spec.destinations[0].registry",
            format!("127.0.0.1:{refused}"),
        ),
        ("metadata", "spec.destinations[0].registry", "link-local".to_string()),
        (
            "api-server",
            "spec.destinations[0].registry",
            "Kubernetes API server".to_string(),
        ),
        (
            "refused-source",
            "spec.source.reference",
            format!("127.0.0.1:{refused}"),
        ),
    ] {
        let (status, reason, message) = eventually(WAIT, &format!("{name} Validated=False"), || async {
            let o = api.get(name).await.ok()?;
            condition(&o, "Validated").filter(|(s, _, _)| s == "False")
        })
        .await;
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "EgressRefused"),
            "{name}: {message}"
        );
        assert!(message.contains(field) && message.contains(&says), "{name}: {message}");
        assert!(message.contains("egress policy"), "{name}: {message}");
        let o = api.get(name).await.unwrap();
        assert!(o.status.unwrap().destinations.is_empty(), "{name}: nothing started");
        support::reasons_with(&c, name, &["EgressRefused"]).await;
    }

    // The other URL fields: a ReplicaInstance's primary and replica registries, a cloud
    // provider's endpoint.
    let refused_url = format!("http://127.0.0.1:{refused}");
    let ri: ReplicaInstance = serde_json::from_value(json!({
        "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ReplicaInstance",
        "metadata": {"name": "ri", "namespace": "default"},
        "spec": {
            "primary": {"provider": "oci", "region": "region-a", "registry": refused_url},
            "region": "region-b",
            "replica": {"registry": "http://169.254.169.254"}
        }
    }))
    .unwrap();
    let ris: Api<ReplicaInstance> = Api::namespaced(c.clone(), "default");
    ris.create(&PostParams::default(), &ri).await.unwrap();
    let msg = eventually(WAIT, "ri Validated=False", || async {
        let st = ris.get("ri").await.ok()?.status?;
        let v = st
            .conditions
            .iter()
            .find(|c| c.type_ == "Validated" && c.status == "False")?;
        (v.reason == "EgressRefused").then(|| v.message.clone())
    })
    .await;
    assert!(
        msg.contains("spec.primary.registry") && msg.contains("spec.replica.registry"),
        "{msg}"
    );
    let cloud: ImageReplication = serde_json::from_value(json!({
        "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ImageReplication",
        "metadata": {"name": "cloud", "namespace": "default"},
        "spec": {
            "provider": {"kind": "alibaba", "endpoint": refused_url, "credentialsSecretRef": {"name": "ali"}},
            "source": {"region": "cn-hangzhou", "imageId": "m-1"},
            "destinations": [{"region": "cn-shanghai"}]
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &cloud).await.unwrap();
    let (_, reason, message) = eventually(WAIT, "cloud Validated=False", || async {
        condition(&api.get("cloud").await.ok()?, "Validated").filter(|(s, _, _)| s == "False")
    })
    .await;
    assert_eq!(reason, "EgressRefused", "{message}");
    assert!(
        message.contains("spec.provider.endpoint") && message.contains("--egress-cloud-hosts"),
        "{message}"
    );

    // A URL from a Secret (OpenStack authUrl) is refused before the request.
    support::secret(
        &c,
        "os",
        &[
            ("authUrl", &format!("{refused_url}/v3")),
            ("username", "demo"),
            ("password", "pw"),
            ("projectName", "demo"),
        ],
    )
    .await;
    let os: ImageReplication = serde_json::from_value(json!({
        "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ImageReplication",
        "metadata": {"name": "os", "namespace": "default"},
        "spec": {
            "provider": {"kind": "openstack", "credentialsSecretRef": {"name": "os"}},
            "source": {"region": "RegionOne", "imageId": "0b3c"},
            "destinations": [{"region": "RegionTwo"}]
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &os).await.unwrap();
    let text = eventually(WAIT, "the openstack source refused", || async {
        let st = api.get("os").await.ok()?.status?;
        let text = serde_json::to_string(&st).ok()?;
        text.contains("egress policy refuses").then_some(text)
    })
    .await;
    assert!(text.contains(&format!("127.0.0.1:{refused}")), "{text}");

    // A redirect from an allowed registry to a refused host is refused the same way.
    let msg = eventually(WAIT, "the redirected copy refused", || async {
        let st = api.get("redirected").await.ok()?.status?;
        let text = serde_json::to_string(&st).ok()?;
        text.contains("egress policy refuses").then_some(text)
    })
    .await;
    assert!(msg.contains(&format!("127.0.0.1:{refused}")), "{msg}");

    // Give the operator time to retry anything it would retry: the refused port never saw a
    // connection, the API server never saw a registry request.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        refused_conns.load(Ordering::SeqCst),
        0,
        "a refused port was connected to"
    );
    assert!(
        !s.requests().iter().any(|(_, path)| path.starts_with("/v2")),
        "the API server got a registry request"
    );
}

const PASSWORD: &str = "pw-Distinct-Q7x3";
const WRONG: &str = "pw-Wrong-Z9k2";

/// oci with a TLS registry behind basic auth, one object with the right credentials and one
/// with wrong ones (errors are where credentials leak), JSON logs: no credential in any log
/// line, stored object, Event or metric. (The cloud providers' scenarios run the same check:
/// tests/suites/vm_clouds.rs, vm_openstack.rs, replica_tencent.rs.)
#[tokio::test(flavor = "multi_thread")]
async fn registry_credentials_reach_no_log_status_event_or_metric() {
    use base64::Engine as _;
    let a = TestRegistry::start();
    let b = TestRegistry::start_with(support::registry::Options {
        basic: Some(("robot".into(), PASSWORD.into())),
        tls: true,
        ..Default::default()
    });
    let (digest, _) = a.seed("team/web", "1.4", &[]);
    let (s, c) = support::cluster().await;
    let ca = String::from_utf8(b.ca_pem()).unwrap();
    support::secret(
        &c,
        "reg",
        &[("username", "robot"), ("password", PASSWORD), ("ca.crt", &ca)],
    )
    .await;
    support::secret(
        &c,
        "bad",
        &[("username", "robot"), ("password", WRONG), ("ca.crt", &ca)],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let op = Operator::start_on(
        support::operator::free_port(),
        &s.write_kubeconfig(dir.path()),
        dir.path(),
        "op-secrets",
        &["--resync-seconds", "2"],
        &[("LOG_FORMAT", "json")],
    );
    let api: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    let src = format!("{}/team/web:1.4", a.host());
    for (name, secret) in [("good", "reg"), ("bad", "bad")] {
        let mut o = ir(name, &src, &b.url());
        o.spec.provider.credentials_secret_ref = Some(serde_json::from_value(json!({"name": secret})).unwrap());
        api.create(&PostParams::default(), &o).await.unwrap();
    }
    eventually(WAIT, "good Available", || async {
        let st = api.get("good").await.ok()?.status?;
        (st.destinations.first()?.phase == DestinationPhase::Available).then_some(())
    })
    .await;
    assert_eq!(b.digest_of_as("team/web", "1.4", "robot", PASSWORD), Some(digest));
    let msg = eventually(WAIT, "bad refused", || async {
        let st = api.get("bad").await.ok()?.status?;
        let d = st.destinations.first()?;
        (d.phase == DestinationPhase::Failed).then(|| d.message.clone().unwrap_or_default())
    })
    .await;
    assert!(msg.contains("Unauthorized"), "{msg}");
    // A few drift checks and retries pass, with their logs.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let basic = |p: &str| base64::engine::general_purpose::STANDARD.encode(format!("robot:{p}"));
    let (good_basic, bad_basic) = (basic(PASSWORD), basic(WRONG));
    support::assert_secrets_kept(&s, &op, &[PASSWORD, WRONG, &good_basic, &bad_basic]).await;
}
