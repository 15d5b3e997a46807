//! Credentials Secrets: read by a kind's observe (or act, for the copies it starts), once per
//! reconcile; a Secret that cannot be read is a message naming it, never its values.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::api::v1alpha1::SecretRef;
use crate::image_replication::oci::SecretCredentials;

fn kube_reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.reason, s.code),
        other => other.to_string(),
    }
}

/// A Secret's data, or why it could not be read.
pub async fn data(client: &Client, ns: &str, name: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = api
        .get(name)
        .await
        .map_err(|e| format!("reading Secret {name}: {}", kube_reason(&e)))?;
    Ok(secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect())
}

/// Registry credentials from a Secret (none referenced: anonymous).
pub async fn credentials(client: &Client, ns: &str, r: Option<&SecretRef>) -> Result<SecretCredentials, String> {
    let Some(r) = r else {
        return Ok(SecretCredentials::default());
    };
    let d = data(client, ns, &r.name).await?;
    SecretCredentials::from_data(&d).map_err(|e| format!("Secret {}: {e}", r.name))
}
