//! Credentials Secrets: read by a kind's observe (or act, for the copies it starts), once per
//! reconcile, through [`Secrets`]: the API server's for the controllers, the manifests' for
//! `replicate -f`. A Secret that cannot be read is a message naming it, never its values.

use std::collections::{BTreeMap, HashMap};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::api::v1alpha1::SecretRef;
use crate::oci::SecretCredentials;

/// A Secret's data (values decoded).
pub type Data = BTreeMap<String, Vec<u8>>;

/// Where credentials Secrets are read from.
pub trait Secrets: Send + Sync {
    /// The data of Secret `name` in namespace `ns`, or why it could not be read.
    fn data<'a>(&'a self, ns: &'a str, name: &'a str) -> BoxFuture<'a, Result<Data, String>>;
}

/// The API server's Secrets.
pub struct KubeSecrets(pub Client);

fn kube_reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.reason, s.code),
        other => other.to_string(),
    }
}

impl Secrets for KubeSecrets {
    fn data<'a>(&'a self, ns: &'a str, name: &'a str) -> BoxFuture<'a, Result<Data, String>> {
        Box::pin(async move {
            let api: Api<Secret> = Api::namespaced(self.0.clone(), ns);
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
        })
    }
}

/// Secrets given with the manifests (`replicate -f`), by name: the files hold one namespace's
/// objects.
#[derive(Default)]
pub struct FileSecrets(pub HashMap<String, Data>);

impl Secrets for FileSecrets {
    fn data<'a>(&'a self, _ns: &'a str, name: &'a str) -> BoxFuture<'a, Result<Data, String>> {
        let found = self
            .0
            .get(name)
            .cloned()
            .ok_or_else(|| format!("Secret {name} is not in the files"));
        Box::pin(std::future::ready(found))
    }
}

/// Registry credentials from a Secret (none referenced: anonymous).
pub async fn credentials(secrets: &dyn Secrets, ns: &str, r: Option<&SecretRef>) -> Result<SecretCredentials, String> {
    let Some(r) = r else {
        return Ok(SecretCredentials::default());
    };
    let d = secrets.data(ns, &r.name).await?;
    SecretCredentials::from_data(&d).map_err(|e| format!("Secret {}: {e}", r.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_secrets_name_what_is_missing_and_parse_what_is_there() {
        let mut data = Data::new();
        data.insert("username".into(), b"robot".to_vec());
        data.insert("password".into(), b"s3cret".to_vec());
        let files = FileSecrets([("pull".to_string(), data)].into_iter().collect());
        let r = |name: &str| SecretRef { name: name.into() };
        let c = credentials(&files, "default", Some(&r("pull"))).await.unwrap();
        assert_eq!(c.for_host("any:5000").username.as_deref(), Some("robot"));
        let e = credentials(&files, "default", Some(&r("other"))).await.unwrap_err();
        assert_eq!(e, "Secret other is not in the files");
        assert!(
            credentials(&files, "default", None)
                .await
                .unwrap()
                .for_host("x")
                .username
                .is_none()
        );
    }
}
