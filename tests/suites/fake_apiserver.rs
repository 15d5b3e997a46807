//! The fake API server behaves like the real one where the operator depends on it.
//! Everything here goes through a real `kube::Client`.

use crate::support;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use image_replication_operator::api::ImageReplication;
use image_replication_operator::crdgen;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, Client};
use serde_json::json;
use support::fake_apiserver::FakeApiServer;

fn cm(name: &str, data: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web", "tier": name}},
        "data": {"k": data}
    }))
    .unwrap()
}

fn api_err(r: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason),
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn setup() -> (FakeApiServer, Client) {
    let s = FakeApiServer::start_with(Duration::from_millis(300)).await;
    let c = s.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    for crd in crdgen::crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    (s, c)
}

#[tokio::test]
async fn create_sets_server_metadata_and_rejects_duplicates() {
    let (s, c) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(c, "default");
    let rv_before = s.resource_version();
    let created = api.create(&PostParams::default(), &cm("a", "1")).await.unwrap();
    let m = &created.metadata;
    assert!(m.uid.is_some() && m.creation_timestamp.is_some());
    assert_eq!(m.generation, Some(1));
    assert_eq!(
        m.resource_version.as_deref(),
        Some((rv_before + 1).to_string().as_str())
    );
    assert_eq!(
        api_err(api.create(&PostParams::default(), &cm("a", "1")).await),
        (409, "AlreadyExists".into())
    );
    assert_eq!(api_err(api.get("missing").await), (404, "NotFound".into()));
}

#[tokio::test]
async fn stale_resource_version_conflicts_and_generation_follows_spec_only() {
    let (_s, c) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(c, "default");
    let v1 = api.create(&PostParams::default(), &cm("b", "1")).await.unwrap();
    let mut v2 = v1.clone();
    v2.data = Some([("k".to_string(), "2".to_string())].into());
    let v2 = api.replace("b", &PostParams::default(), &v2).await.unwrap();
    assert_eq!(v2.metadata.generation, Some(2));
    // Writing with the old resourceVersion is a conflict.
    assert_eq!(
        api_err(api.replace("b", &PostParams::default(), &v1).await),
        (409, "Conflict".into())
    );
    // So is a merge patch that carries a stale one.
    let stale = json!({"metadata": {"resourceVersion": v1.metadata.resource_version}, "data": {"k": "3"}});
    assert_eq!(
        api_err(api.patch("b", &PatchParams::default(), &Patch::Merge(&stale)).await),
        (409, "Conflict".into())
    );
    // A label change does not bump generation.
    let v3 = api
        .patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(v3.metadata.generation, Some(2));
    assert_ne!(v3.metadata.resource_version, v2.metadata.resource_version);
}

#[tokio::test]
async fn noop_writes_do_not_bump_resource_version_or_notify() {
    let (s, c) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(c, "default");
    let v1 = api.create(&PostParams::default(), &cm("c", "1")).await.unwrap();
    let rv = s.resource_version();
    let same = api
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(&json!({"data": {"k": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(same.metadata.resource_version, v1.metadata.resource_version);
    assert_eq!(s.resource_version(), rv);
}

#[tokio::test]
async fn list_selectors_namespaces_and_resource_version() {
    let (s, c) = setup().await;
    let a: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let b: Api<ConfigMap> = Api::namespaced(c.clone(), "other");
    a.create(&PostParams::default(), &cm("x", "1")).await.unwrap();
    a.create(&PostParams::default(), &cm("y", "1")).await.unwrap();
    b.create(&PostParams::default(), &cm("x", "1")).await.unwrap();
    let l = a.list(&ListParams::default()).await.unwrap();
    assert_eq!(l.items.len(), 2);
    assert_eq!(l.metadata.resource_version, Some(s.resource_version().to_string()));
    let names = |l: kube::core::ObjectList<ConfigMap>| {
        l.items
            .into_iter()
            .map(|o| o.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(a.list(&ListParams::default().labels("tier=y")).await.unwrap()),
        vec!["y"]
    );
    assert_eq!(
        names(
            a.list(&ListParams::default().labels("tier in (x,z),app"))
                .await
                .unwrap()
        ),
        vec!["x"]
    );
    assert_eq!(
        names(a.list(&ListParams::default().labels("tier!=x")).await.unwrap()),
        vec!["y"]
    );
    assert_eq!(
        names(a.list(&ListParams::default().fields("metadata.name=x")).await.unwrap()),
        vec!["x"]
    );
    let all: Api<ConfigMap> = Api::all(c);
    assert_eq!(all.list(&ListParams::default()).await.unwrap().items.len(), 3);
}

#[tokio::test]
async fn watch_resumes_from_resource_version_with_bookmarks_and_timeout() {
    let (_s, c) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(c, "default");
    api.create(&PostParams::default(), &cm("old", "1")).await.unwrap();
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.create(&PostParams::default(), &cm("new", "1")).await.unwrap();
    let stream = api.watch(&WatchParams::default().timeout(2), &rv).await.unwrap();
    let events: Vec<WatchEvent<ConfigMap>> = tokio::time::timeout(Duration::from_secs(10), stream.try_collect())
        .await
        .expect("the watch ends after timeoutSeconds")
        .unwrap();
    let added: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Added(o) => o.metadata.name.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(added, vec!["new"], "older events are not replayed");
    assert!(
        events.iter().any(|e| matches!(e, WatchEvent::Bookmark(_))),
        "bookmarks are sent"
    );
}

#[tokio::test]
async fn status_subresource_is_isolated() {
    let (_s, c) = setup().await;
    let api: Api<ImageReplication> = Api::namespaced(c, "default");
    let obj: ImageReplication = serde_yaml::from_str(include_str!("../../deploy/examples/huawei.yaml")).unwrap();
    let mut with_status = obj.clone();
    with_status.status = Some(Default::default());
    with_status.status.as_mut().unwrap().summary = Some("from create".into());
    let created = api.create(&PostParams::default(), &with_status).await.unwrap();
    assert!(created.status.is_none(), "status is dropped on create");
    let name = created.metadata.name.clone().unwrap();
    // A spec change through /status is ignored; the status change applies.
    let p = json!({"spec": {"suspend": true}, "status": {"summary": "s1"}});
    let after = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&p))
        .await
        .unwrap();
    assert!(!after.spec.suspend);
    assert_eq!(after.status.unwrap().summary.as_deref(), Some("s1"));
    assert_eq!(after.metadata.generation, Some(1));
    // A status change through the main resource is ignored; the spec change applies.
    let after = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&p))
        .await
        .unwrap();
    assert!(after.spec.suspend);
    assert_eq!(after.status.unwrap().summary.as_deref(), Some("s1"));
    assert_eq!(after.metadata.generation, Some(2));
}

#[tokio::test]
async fn apply_creates_and_prunes_fields_it_no_longer_sets() {
    let (_s, c) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(c, "default");
    let pp = PatchParams::apply("tester");
    let first =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ap"}, "data": {"a": "1", "b": "2"}});
    let o = api.patch("ap", &pp, &Patch::Apply(&first)).await.unwrap();
    assert_eq!(o.data.unwrap().len(), 2);
    let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ap"}, "data": {"a": "1"}});
    let o = api.patch("ap", &pp, &Patch::Apply(&second)).await.unwrap();
    assert_eq!(o.data.unwrap().keys().collect::<Vec<_>>(), vec!["a"]);
}

#[tokio::test]
async fn json_patch_test_on_absent_path_and_finalizer_deletion() {
    let (_s, c) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(c, "default");
    api.create(&PostParams::default(), &cm("f", "1")).await.unwrap();
    // kube's finalizer helper: test /metadata/finalizers == null, then add.
    let add = json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/a"]}
    ]);
    let o = api
        .patch(
            "f",
            &PatchParams::default(),
            &Patch::<()>::Json(serde_json::from_value(add).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(o.metadata.finalizers, Some(vec!["example.com/a".to_string()]));
    // A failing test is rejected.
    let bad = json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "other"}, {"op": "remove", "path": "/metadata/finalizers/0"}]);
    let r = api
        .patch(
            "f",
            &PatchParams::default(),
            &Patch::<()>::Json(serde_json::from_value(bad).unwrap()),
        )
        .await;
    assert_eq!(api_err(r).0, 422);
    // Delete: the object stays with a deletionTimestamp.
    api.delete("f", &DeleteParams::default()).await.unwrap();
    let o = api.get("f").await.unwrap();
    assert!(o.metadata.deletion_timestamp.is_some());
    // No new finalizers while deleting.
    let more = json!({"metadata": {"finalizers": ["example.com/a", "example.com/b"]}});
    assert_eq!(
        api_err(api.patch("f", &PatchParams::default(), &Patch::Merge(&more)).await).0,
        422
    );
    // Removing the last finalizer removes the object.
    let rm = json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "example.com/a"}, {"op": "remove", "path": "/metadata/finalizers/0"}]);
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::<()>::Json(serde_json::from_value(rm).unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(api_err(api.get("f").await), (404, "NotFound".into()));
}

#[tokio::test]
async fn custom_resources_are_checked_against_the_crd_cel_rules() {
    let (_s, c) = setup().await;
    let api: Api<ImageReplication> = Api::namespaced(c, "default");
    let mut obj: ImageReplication = serde_yaml::from_str(include_str!("../../deploy/examples/huawei.yaml")).unwrap();
    obj.spec.destinations.push(obj.spec.destinations[0].clone());
    let (code, reason) = api_err(api.create(&PostParams::default(), &obj).await);
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
}

#[tokio::test]
async fn resources_without_a_crd_are_not_found() {
    let s = FakeApiServer::start().await;
    let api: Api<ImageReplication> = Api::namespaced(s.client().await, "default");
    assert_eq!(
        api_err(api.list(&ListParams::default()).await),
        (404, "NotFound".into())
    );
}

#[tokio::test]
async fn crds_are_established_and_watchable_by_name() {
    let (_s, c) = setup().await;
    let api: Api<CustomResourceDefinition> = Api::all(c);
    let name = "imagereplications.replication.imageops.io";
    let established =
        kube::runtime::wait::await_condition(api.clone(), name, kube::runtime::wait::conditions::is_crd_established());
    tokio::time::timeout(Duration::from_secs(5), established)
        .await
        .unwrap()
        .unwrap();
    let w = api
        .watch(
            &WatchParams::default()
                .fields(&format!("metadata.name={name}"))
                .timeout(1),
            "0",
        )
        .await
        .unwrap();
    let n = w
        .filter(|e| futures::future::ready(matches!(e, Ok(WatchEvent::Added(_)))))
        .count()
        .await;
    assert_eq!(n, 1);
}
