//! The registry-to-registry copy of the `oci` provider: where each destination's copy goes
//! ([`target`]) and the [`OciReplicator`] that copies, verifies and removes it through the copy
//! engine of [`crate::oci`] (one request budget per registry host, shared by every object).

use std::sync::Arc;

use crate::api::v1alpha1::{DestinationSpec, ImageReplicationSpec};
use crate::oci::{
    Budgets, CopyOptions, CopyReport, Engine, ImageRef, OciError, Progress, Registry, RegistryAddr, SecretCredentials,
};

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
            repository_name(&registry, n).map_err(|e| format!("destinations[{}].name: {e}", dest.region))?;
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

/// Whether `name` is a repository name in `registry` (the reference parser's rules).
pub fn repository_name(registry: &RegistryAddr, name: &str) -> Result<(), String> {
    ImageRef::parse(&format!("{}/{name}:x", registry.host)).map(|_| ())
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

    /// Remove the copy (the manifest by digest, which removes its tags), and the manifest the
    /// destination's tag names now if that is another one: a check cancelled a moment ago may
    /// have copied a moved tag that the status never recorded. False when absent.
    pub async fn delete_copy(
        &self,
        spec: &ImageReplicationSpec,
        dest: &DestinationSpec,
        digest: &str,
        creds: &SecretCredentials,
    ) -> Result<bool, OciError> {
        let t = target(spec, dest).map_err(OciError::Unsupported)?;
        let client = self.client(&t.registry, creds)?;
        let mut deleted = client.delete_manifest(&t.repository, digest).await?;
        if let Some(tag) = &t.tag
            && let Some(now) = client.head_manifest(&t.repository, tag).await?
            && now != digest
        {
            deleted |= client.delete_manifest(&t.repository, &now).await?;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
