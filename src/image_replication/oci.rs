//! The `oci` provider of ImageReplication: source reference -> each destination registry,
//! through the copy engine. Shared by the controller and the no-cluster `replicate` command.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::Engine as _;

use crate::api::v1alpha1::{DestinationSpec, ImageReplicationSpec};
use crate::oci::{
    Budgets, CopyOptions, CopyReport, Credentials, Engine, ImageRef, OciError, Progress, Registry, RegistryAddr,
};

/// Credentials from a Secret: `username`/`password`/`ca.crt` for every registry, and/or a
/// `.dockerconfigjson` with per-registry `auths`.
#[derive(Clone, Debug, Default)]
pub struct SecretCredentials {
    default: Credentials,
    per_host: HashMap<String, Credentials>,
}

impl SecretCredentials {
    /// Parse the data of a Secret (values already base64-decoded).
    pub fn from_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, String> {
        let text = |k: &str| {
            data.get(k)
                .map(|v| String::from_utf8_lossy(v).trim_end_matches('\n').to_string())
        };
        let default = Credentials {
            username: text("username"),
            password: text("password"),
            ca_pem: data.get("ca.crt").cloned(),
        };
        let mut per_host = HashMap::new();
        if let Some(raw) = data.get(".dockerconfigjson") {
            let v: serde_json::Value =
                serde_json::from_slice(raw).map_err(|e| format!(".dockerconfigjson is not JSON: {e}"))?;
            for (host, entry) in v.get("auths").and_then(|a| a.as_object()).into_iter().flatten() {
                let host = host
                    .trim_start_matches("https://")
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_string();
                let (mut u, mut p) = (
                    entry.get("username").and_then(|x| x.as_str()).map(String::from),
                    entry.get("password").and_then(|x| x.as_str()).map(String::from),
                );
                if let Some(auth) = entry.get("auth").and_then(|x| x.as_str()) {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth)
                        .map_err(|_| format!(".dockerconfigjson auth for {host} is not base64"))?;
                    let s = String::from_utf8_lossy(&decoded).to_string();
                    if let Some((a, b)) = s.split_once(':') {
                        u = Some(a.to_string());
                        p = Some(b.to_string());
                    }
                }
                per_host.insert(
                    host,
                    Credentials {
                        username: u,
                        password: p,
                        ca_pem: default.ca_pem.clone(),
                    },
                );
            }
        }
        Ok(Self { default, per_host })
    }

    /// The credentials to use for a registry host.
    pub fn for_host(&self, host: &str) -> Credentials {
        self.per_host.get(host).cloned().unwrap_or_else(|| self.default.clone())
    }
}

/// Where a destination copy lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub registry: RegistryAddr,
    pub repository: String,
    /// The source tag, or None for a digest-only reference.
    pub tag: Option<String>,
}

/// The source reference of an oci spec.
pub fn source(spec: &ImageReplicationSpec) -> Result<ImageRef, String> {
    let r = spec
        .source
        .reference
        .as_deref()
        .ok_or("source.reference is required for provider oci")?;
    ImageRef::parse(r).map_err(|e| format!("source.reference: {e}"))
}

/// Where a destination's copy goes: its registry, `name` as the repository (default: the
/// source repository), and the source tag.
pub fn target(spec: &ImageReplicationSpec, dest: &DestinationSpec) -> Result<Target, String> {
    let src = source(spec)?;
    let registry = RegistryAddr::parse(dest.registry.as_deref().unwrap_or(""))
        .map_err(|e| format!("destinations[{}].registry: {e}", dest.region))?;
    let repository = match &dest.name {
        Some(n) => {
            // Reuse the reference parser's repository rules.
            ImageRef::parse(&format!("{}/{n}:x", registry.host))
                .map_err(|e| format!("destinations[{}].name: {e}", dest.region))?;
            n.clone()
        }
        None => src.repository.clone(),
    };
    Ok(Target {
        registry,
        repository,
        tag: src.tag.clone(),
    })
}

/// Runs oci copies; one per operator, shared by all objects (one budget per registry host,
/// one map of where blobs are for cross-repository mounts).
#[derive(Default)]
pub struct OciReplicator {
    pub engine: Engine,
    pub budgets: Budgets,
    pub opts: CopyOptions,
}

impl OciReplicator {
    /// A replicator whose registry requests are observed (for metrics).
    pub fn with_budgets(budgets: Budgets) -> Self {
        Self {
            budgets,
            ..Default::default()
        }
    }
}

impl OciReplicator {
    fn client(&self, addr: &RegistryAddr, creds: &SecretCredentials) -> Result<Arc<Registry>, OciError> {
        self.budgets.registry(addr, creds.for_host(&addr.host))
    }

    /// Copy the source to one destination (a cheap no-op when it is already there).
    pub async fn copy_to(
        &self,
        spec: &ImageReplicationSpec,
        dest: &DestinationSpec,
        creds: &SecretCredentials,
        progress: &Progress,
    ) -> Result<CopyReport, OciError> {
        let src = source(spec).map_err(OciError::Unsupported)?;
        let t = target(spec, dest).map_err(OciError::Unsupported)?;
        let (s, d) = (self.client(&src.registry, creds)?, self.client(&t.registry, creds)?);
        self.engine
            .copy(
                &s,
                &src.repository,
                src.reference(),
                &d,
                &t.repository,
                t.tag.as_deref(),
                &self.opts,
                progress,
            )
            .await
    }

    /// Remember the repositories that hold this object's Available copies: mount candidates
    /// for the blobs other copies need. Every object is reconciled at start-up, so after a
    /// restart the engine knows again where the copies are.
    pub fn note_copies(&self, obj: &crate::api::ImageReplication) {
        let Some(st) = &obj.status else { return };
        for d in &st.destinations {
            if d.phase != crate::api::v1alpha1::DestinationPhase::Available {
                continue;
            }
            if let Some(dest) = obj.spec.destinations.iter().find(|s| s.region == d.region)
                && let Ok(t) = target(&obj.spec, dest)
            {
                self.engine.note_repository(&t.registry.host, &t.repository);
            }
        }
    }

    /// Remove the copy (the manifest by digest, which removes its tags). False when absent.
    pub async fn delete_copy(
        &self,
        spec: &ImageReplicationSpec,
        dest: &DestinationSpec,
        digest: &str,
        creds: &SecretCredentials,
    ) -> Result<bool, OciError> {
        let t = target(spec, dest).map_err(OciError::Unsupported)?;
        self.client(&t.registry, creds)?
            .delete_manifest(&t.repository, digest)
            .await
    }
}

impl crate::provider::ImageProvider for OciReplicator {
    fn kind(&self) -> crate::api::v1alpha1::ProviderKind {
        crate::api::v1alpha1::ProviderKind::Oci
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_credentials() {
        let mut data = BTreeMap::new();
        data.insert("username".to_string(), b"robot".to_vec());
        data.insert("password".to_string(), b"pw\n".to_vec());
        let auth = base64::engine::general_purpose::STANDARD.encode("u2:p2");
        data.insert(
            ".dockerconfigjson".to_string(),
            format!(r#"{{"auths":{{"https://reg.example.com":{{"auth":"{auth}"}}}}}}"#).into_bytes(),
        );
        let c = SecretCredentials::from_data(&data).unwrap();
        assert_eq!(c.for_host("reg.example.com").username.as_deref(), Some("u2"));
        assert_eq!(c.for_host("reg.example.com").password.as_deref(), Some("p2"));
        assert_eq!(c.for_host("other:5000").password.as_deref(), Some("pw"));
    }

    #[test]
    fn targets() {
        let spec: ImageReplicationSpec = serde_yaml::from_str(
            "provider: {kind: oci}\nsource: {region: a, reference: '127.0.0.1:5000/team/web:1.4'}\ndestinations: [{region: b, registry: 'http://127.0.0.1:5001'}, {region: c, registry: 'reg.example.com', name: mirror/web}]",
        )
        .unwrap();
        let t = target(&spec, &spec.destinations[0]).unwrap();
        assert_eq!(
            (t.registry.url().as_str(), t.repository.as_str(), t.tag.as_deref()),
            ("http://127.0.0.1:5001", "team/web", Some("1.4"))
        );
        let t = target(&spec, &spec.destinations[1]).unwrap();
        assert_eq!(
            (t.registry.url().as_str(), t.repository.as_str()),
            ("https://reg.example.com", "mirror/web")
        );
    }
}
