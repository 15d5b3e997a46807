//! ConfigMaps an object publishes (ImageReplication `spec.publish`): read once after a start
//! and written (server-side apply, owned by the object so they go with it) only when what is to
//! be published differs from what is there, so nothing is written at rest. `replicate -f` has
//! no cluster: it says what it would publish.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

/// A ConfigMap's data.
pub type Data = BTreeMap<String, String>;

/// Where published ConfigMaps live.
pub trait ConfigMaps: Send + Sync {
    /// The data of ConfigMap `name` in `ns`; `None` when it does not exist (or cannot be, here).
    fn get<'a>(&'a self, ns: &'a str, name: &'a str) -> BoxFuture<'a, Result<Option<Data>, String>>;
    /// Write it, owned by `owner`.
    fn apply<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        owner: OwnerReference,
        data: &'a Data,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Whether what is applied is really written (a cluster), or only said.
    fn writes(&self) -> bool {
        true
    }
}

/// The API server's ConfigMaps.
pub struct KubeConfigMaps(pub Client);

impl ConfigMaps for KubeConfigMaps {
    fn get<'a>(&'a self, ns: &'a str, name: &'a str) -> BoxFuture<'a, Result<Option<Data>, String>> {
        Box::pin(async move {
            let api: Api<ConfigMap> = Api::namespaced(self.0.clone(), ns);
            api.get_opt(name)
                .await
                .map(|c| c.map(|c| c.data.unwrap_or_default()))
                .map_err(|e| format!("reading ConfigMap {name}: {e}"))
        })
    }
    fn apply<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        owner: OwnerReference,
        data: &'a Data,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let api: Api<ConfigMap> = Api::namespaced(self.0.clone(), ns);
            let cm = serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": ns, "ownerReferences": [owner],
                    "labels": {"app.kubernetes.io/managed-by": "image-replication-operator"}},
                "data": data,
            });
            api.patch(
                name,
                &PatchParams::apply(crate::api::FIELD_MANAGER).force(),
                &Patch::Apply(&cm),
            )
            .await
            .map(|_| ())
            .map_err(|e| format!("writing ConfigMap {name}: {e}"))
        })
    }
}

/// No cluster (`replicate -f`): nothing exists, nothing is written; the Event says what would be.
pub struct NoConfigMaps;

impl ConfigMaps for NoConfigMaps {
    fn get<'a>(&'a self, _ns: &'a str, _name: &'a str) -> BoxFuture<'a, Result<Option<Data>, String>> {
        Box::pin(async { Ok(None) })
    }
    fn apply<'a>(
        &'a self,
        _ns: &'a str,
        _name: &'a str,
        _owner: OwnerReference,
        _data: &'a Data,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    fn writes(&self) -> bool {
        false
    }
}
