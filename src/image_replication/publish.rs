//! `spec.publish`: which image is current in each region, for consumers (Cluster API machine
//! templates, Karpenter, Terraform, Kustomize replacements, Helm `lookup`) to read from a
//! ConfigMap the object owns. [`data`] is pure: only regions whose copy is Available have a key
//! (or, while a newer followed source is copied, the newest earlier copy, which is Available),
//! so the ConfigMap never points at a copy that is not; the shell writes it when it differs from
//! what is there ([`crate::controller::config_maps`]), never at rest.

use std::collections::BTreeMap;

use crate::api::v1alpha1::{DestinationPhase, ImageReplication, ImageReplicationStatus, ProviderKind};

/// The ConfigMap data for this status: `<region>: <imageId>` for VM images,
/// `<region>: <registry>/<repository>@<digest>` for oci, one per Available destination.
pub fn data(obj: &ImageReplication, status: &ImageReplicationStatus) -> BTreeMap<String, String> {
    let spec = &obj.spec;
    let mut out = BTreeMap::new();
    for s in status
        .destinations
        .iter()
        .filter(|s| s.phase == DestinationPhase::Available)
    {
        let Some(d) = spec.destinations.iter().find(|d| d.region == s.region) else {
            continue;
        };
        let value = if spec.provider.kind == ProviderKind::Oci {
            let (Some(digest), Ok(t)) = (&s.digest, crate::image_replication::oci::replicator::target(spec, d)) else {
                continue;
            };
            format!("{}/{}@{digest}", t.registry.host, t.repository)
        } else {
            let Some(id) = &s.image_id else { continue };
            id.clone()
        };
        out.insert(s.region.clone(), value);
    }
    // `source.follow`: while a region copies a newer source, its consumers keep the newest
    // earlier copy (Available when it was kept, and kept until the new one is).
    for c in &status.previous {
        if spec.destinations.iter().any(|d| d.region == c.region) && !out.contains_key(&c.region) {
            out.insert(c.region.clone(), c.image_id.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1alpha1::{DestinationStatus, PreviousCopy};

    fn obj(kind: &str) -> ImageReplication {
        serde_yaml::from_str(&format!(
            r#"
apiVersion: replication.imageops.io/v1alpha1
kind: ImageReplication
metadata: {{name: web, namespace: default}}
spec:
  provider: {{kind: {kind}}}
  source: {{region: one, {src}}}
  destinations:
  - {{region: two, registry: "https://r2.example.com"}}
  - {{region: three, registry: "https://r3.example.com", name: mirror/web}}
  publish: {{configMapName: web-images}}
"#,
            src = if kind == "oci" {
                "reference: r1.example.com/team/web:1.4"
            } else {
                "imageId: img-1"
            }
        ))
        .unwrap()
    }

    fn dest(region: &str, phase: DestinationPhase) -> DestinationStatus {
        DestinationStatus {
            region: region.into(),
            phase,
            image_id: Some(format!("img-{region}")),
            digest: Some("sha256:ab".into()),
            ..Default::default()
        }
    }

    /// Only Available copies are published; oci names the copy by digest in its own
    /// repository; a region that is copying again has no key.
    #[test]
    fn only_available_copies_are_published() {
        let st = ImageReplicationStatus {
            destinations: vec![
                dest("two", DestinationPhase::Available),
                dest("three", DestinationPhase::Copying),
            ],
            ..Default::default()
        };
        let vm = data(&obj("openstack"), &st);
        assert_eq!(vm, BTreeMap::from([("two".to_string(), "img-two".to_string())]));
        // A newer source being copied to two: its consumers keep the newest earlier copy
        // until the new one is Available; then it flips.
        let mut st = ImageReplicationStatus {
            destinations: vec![dest("two", DestinationPhase::Copying)],
            previous: vec![
                PreviousCopy {
                    region: "two".into(),
                    image_id: "img-two-v2".into(),
                    ..Default::default()
                },
                PreviousCopy {
                    region: "two".into(),
                    image_id: "img-two-v1".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(data(&obj("openstack"), &st)["two"], "img-two-v2");
        st.destinations[0].phase = DestinationPhase::Available;
        assert_eq!(data(&obj("openstack"), &st)["two"], "img-two");
        let st = ImageReplicationStatus {
            destinations: vec![
                dest("two", DestinationPhase::Available),
                dest("three", DestinationPhase::Available),
            ],
            ..Default::default()
        };
        let oci = data(&obj("oci"), &st);
        assert_eq!(oci["two"], "r2.example.com/team/web@sha256:ab");
        assert_eq!(oci["three"], "r3.example.com/mirror/web@sha256:ab");
    }
}
