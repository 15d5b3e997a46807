//! Test support shared by the integration tests.

#![allow(dead_code)]

pub mod clouds;
pub mod conformance;
pub mod envtest;
pub mod fake_apiserver;
pub mod faulty;
pub mod keystone;
pub mod openstack;
pub mod operator;
pub mod registry;

use image_replication_operator::crdgen;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use std::path::PathBuf;
use std::process::Command;

/// Fail with what to install when a command the tests need is missing.
pub fn need(cmd: &str, pkg: &str) {
    let ok = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "{cmd} is missing: install {pkg} (make tools does)");
}

/// Create both CRDs.
pub async fn install_crds(c: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    for crd in crdgen::crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
}

/// A fake API server with the CRDs installed, and a client for it.
pub async fn cluster() -> (fake_apiserver::FakeApiServer, Client) {
    let s = fake_apiserver::FakeApiServer::start().await;
    let c = s.client().await;
    install_crds(&c).await;
    (s, c)
}

/// The Events about an object in namespace default.
pub async fn events_for(c: &Client, name: &str) -> Vec<Event> {
    events_in(c, "default", name).await
}

/// The Events about an object in namespace `ns`.
pub async fn events_in(c: &Client, ns: &str, name: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(c.clone(), ns);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// The Events about an object in namespace `ns` once every one of `reasons` is among them:
/// an Event is posted after the status write it follows, so a test never reads them once right
/// after a condition (it waits, up to a minute, and fails naming what is missing).
pub async fn events_with(c: &Client, ns: &str, name: &str, reasons: &[&str]) -> Vec<Event> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let evs = events_in(c, ns, name).await;
        let missing: Vec<&str> = reasons
            .iter()
            .copied()
            .filter(|r| !evs.iter().any(|e| e.reason.as_deref() == Some(*r)))
            .collect();
        if missing.is_empty() {
            return evs;
        }
        if std::time::Instant::now() > deadline {
            let seen: Vec<_> = evs.iter().filter_map(|e| e.reason.clone()).collect();
            panic!("Events of {ns}/{name}: {missing:?} never came; seen {seen:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The reasons of the Events about an object in namespace default, once every one of
/// `reasons` is among them (see [`events_with`]).
pub async fn reasons_with(c: &Client, name: &str, reasons: &[&str]) -> Vec<String> {
    events_with(c, "default", name, reasons)
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

/// The reasons of the Events about an object.
pub async fn event_reasons(c: &Client, name: &str) -> Vec<String> {
    events_for(c, name).await.into_iter().filter_map(|e| e.reason).collect()
}

/// At rest: for `how_long` the object named `name` gets no write request (object or status), no
/// watch event and no new Event.
pub async fn assert_quiet(s: &fake_apiserver::FakeApiServer, c: &Client, name: &str, how_long: std::time::Duration) {
    let writes = s.writes_to(name).len();
    let watch = s.watch_events_of(name).len();
    let events = events_for(c, name).await.len();
    tokio::time::sleep(how_long).await;
    let new_writes: Vec<_> = s.writes_to(name).into_iter().skip(writes).collect();
    let new_watch: Vec<_> = s.watch_events_of(name).into_iter().skip(watch).collect();
    let after = events_for(c, name).await;
    assert!(
        new_writes.is_empty() && new_watch.is_empty() && after.len() == events,
        "{name} at rest for {how_long:?}: writes {new_writes:?}, watch events {new_watch:?}, Events {} -> {} ({:?})",
        events,
        after.len(),
        after.iter().filter_map(|e| e.reason.clone()).collect::<Vec<_>>()
    );
}

/// Create a Secret in `default` with these data keys.
pub async fn secret(c: &Client, name: &str, data: &[(&str, &str)]) {
    secret_in(c, "default", name, data).await
}

/// Create a Secret in namespace `ns` with these data keys.
pub async fn secret_in(c: &Client, ns: &str, name: &str, data: &[(&str, &str)]) {
    use base64::Engine as _;
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(c.clone(), ns);
    let data: std::collections::BTreeMap<String, String> = data
        .iter()
        .map(|(k, v)| (k.to_string(), base64::engine::general_purpose::STANDARD.encode(v)))
        .collect();
    let s = serde_json::from_value(serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": ns}, "data": data}))
    .unwrap();
    api.create(&PostParams::default(), &s).await.unwrap();
}

/// The forms a credential value could leak in: as is, URL-encoded, and base64 (as in a Basic
/// header or a Secret's data).
fn leak_forms(v: &str) -> Vec<String> {
    use base64::Engine as _;
    let url: String = v
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let mut forms = vec![v.to_string(), url, base64::engine::general_purpose::STANDARD.encode(v)];
    forms.dedup();
    forms
}

/// Credential values appear in no log line of the operator, no stored object but Secrets (every
/// status ever written, every Event) and no metric (name, label or value). `creds` are the
/// Secret values the scenario used; an access key id counts too.
pub async fn assert_secrets_kept(s: &fake_apiserver::FakeApiServer, op: &operator::Operator, creds: &[&str]) {
    let logs = op.logs();
    assert!(
        !logs.trim().is_empty(),
        "the operator logged nothing: the check would prove nothing"
    );
    let stored = s.everything_but_secrets();
    let metrics = op.http_get("/metrics").map(|(_, b)| b).unwrap_or_default();
    assert!(
        metrics.contains("imgrep_"),
        "no metrics scraped: the check would prove nothing"
    );
    for c in creds {
        for form in leak_forms(c) {
            for (where_, text) in [
                ("the operator's logs", &logs),
                ("the API server's objects", &stored),
                ("/metrics", &metrics),
            ] {
                if let Some(i) = text.find(&form) {
                    let from = text[..i].char_indices().rev().nth(200).map(|(j, _)| j).unwrap_or(0);
                    let to = (i + form.len() + 200).min(text.len());
                    let to = (to..=text.len())
                        .find(|j| text.is_char_boundary(*j))
                        .unwrap_or(text.len());
                    panic!("credential {form:?} found in {where_}: …{}…", &text[from..to]);
                }
            }
        }
    }
}

/// A tool: `$env`, else `local` in this checkout, else `name` on the PATH.
pub fn tool(env: &str, local: &str, name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return p.into();
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(local);
    if p.exists() {
        return p;
    }
    if Command::new(name).arg("-v").output().is_ok() {
        return name.into();
    }
    panic!("{name} not found: run `make tools` (or set {env})");
}

/// Run helm (see [`tool`]) in the checkout; its stdout.
pub fn helm(args: &[&str]) -> String {
    let out = Command::new(tool("HELM", ".tools/bin/helm", "helm"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
