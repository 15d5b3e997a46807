//! The seeds' rules for VM image copies, as pure functions of (spec, described source image).
//!
//! Rules that need only the spec live in [`crate::validation`] (and in the CRD's CEL); these need
//! what the provider says about the source image. A broken rule refuses the copy before any call
//! that starts work; an image that is still being created waits instead.

use crate::api::v1alpha1::{DestinationSpec, ImageReplicationSpec};
use crate::api::violation::Violation;

pub use super::facts::{Check, Cloud, GIB, Limits, gib};
use super::{ImageInfo, ImageState};

/// The destination name to use: the spec's, else the cloud's convention.
pub fn destination_name(cloud: &Cloud, spec: &ImageReplicationSpec, d: &DestinationSpec, source: &ImageInfo) -> String {
    d.name
        .clone()
        .unwrap_or_else(|| (cloud.default_name)(&spec.source.region, source))
}

/// Why a source image must wait before it can be copied, if it must.
pub fn wait_reason(source: &ImageInfo) -> Option<String> {
    match &source.state {
        Some(ImageState::Creating) => Some(format!(
            "source image {} is still being created; the copy waits until it is ready",
            source.id
        )),
        _ => None,
    }
}

/// Every rule the described source image breaks for this spec (every cloud's, then the
/// cloud's own: `cloud.source_rules`). Empty: the copy may start.
pub fn check(cloud: &Cloud, spec: &ImageReplicationSpec, source: &ImageInfo, limits: &Limits) -> Vec<Violation> {
    let src_field = if spec.source.image_id.is_some() {
        "spec.source.imageId"
    } else {
        "spec.source.imageName"
    };
    let mut c = Check {
        cloud,
        spec,
        source,
        limits,
        src_field,
        img: format!("source image {} ({})", source.id, source.name),
        size: source.size_bytes.unwrap_or(0),
        iso: source
            .disk_format
            .as_deref()
            .is_some_and(|f| f.eq_ignore_ascii_case("iso")),
        out: Vec::new(),
    };
    if let Some(ImageState::Unusable(s)) = &source.state {
        let message = format!("{} is {s}; only usable images can be copied", c.img);
        c.refuse(src_field.into(), "SourceNotUsable", message);
    }
    (cloud.source_rules)(&mut c);
    shares(&mut c);
    c.out
}

/// What the clouds refuse to share: an image another account shared (only your own images can
/// be shared), an encrypted source shared in place where the cloud refuses images encrypted
/// with the default key (the operator cannot tell the key).
fn shares(c: &mut Check<'_>) {
    let kind = c.cloud.kind;
    let (spec, source) = (c.spec, c.source);
    for (i, d) in spec.destinations.iter().enumerate() {
        if d.share_with.is_empty() {
            continue;
        }
        let field = format!("spec.destinations[{i}].shareWith");
        if source.shared_from_other_account {
            let message = format!(
                "{} is shared with this account by another one; only your own images can be shared: create a custom image from it first",
                c.img
            );
            c.refuse(field.clone(), "SharedImageNotShareable", message);
        }
        let in_place = d.shares_in_place(&spec.source.region);
        if in_place && source.encrypted == Some(true) && c.cloud.sharing.refuses_encrypted_in_place {
            let message = format!(
                "{} is encrypted; {} refuses to share an image encrypted with the default key: share a copy encrypted with a customer key instead",
                c.img,
                kind.as_str()
            );
            c.refuse(field, "EncryptedImageNotShareable", message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1alpha1::ProviderKind;

    fn cloud(kind: ProviderKind) -> &'static Cloud {
        crate::image_replication::vm::providers::cloud(kind).unwrap()
    }
    use crate::api::v1alpha1::{ImageReplicationSpec, ShareSpec};

    fn spec(kind: &str, src: &str, dests: &[&str]) -> ImageReplicationSpec {
        let d: Vec<String> = dests.iter().map(|r| format!("{{region: {r}}}")).collect();
        serde_yaml::from_str(&format!(
            "provider: {{kind: {kind}, agency: a, credentialsSecretRef: {{name: s}}}}\nsource: {{region: {src}, imageId: img-1}}\ndestinations: [{}]",
            d.join(", ")
        ))
        .unwrap()
    }

    fn image() -> ImageInfo {
        ImageInfo {
            id: "img-1".into(),
            name: "web".into(),
            size_bytes: Some(40 * GIB),
            disk_format: Some("qcow2".into()),
            visibility: "private".into(),
            state: Some(ImageState::Available),
            ..Default::default()
        }
    }

    fn reasons(v: &[Violation]) -> Vec<&'static str> {
        v.iter().map(|v| v.reason).collect()
    }

    /// What the clouds refuse to share: another account's image, an encrypted image shared in
    /// place (IMS, EC2), more than 10 tenants for a Huawei full-ECS image.
    #[test]
    fn share_rules() {
        let with_shares = |kind: &str, src: &str, dest: &str, n: usize| {
            let mut s = spec(kind, src, &[dest]);
            s.destinations[0].share_with = (0..n)
                .map(|i| crate::api::v1alpha1::ShareSpec {
                    account: format!("{i:032x}"),
                    accept_with: None,
                })
                .collect();
            s
        };
        let mut shared = image();
        shared.shared_from_other_account = true;
        let s = with_shares("alibaba", "cn-hangzhou", "cn-hangzhou", 1);
        let got = check(cloud(ProviderKind::Alibaba), &s, &shared, &Limits::default());
        assert_eq!(reasons(&got), vec!["SharedImageNotShareable"]);
        assert_eq!(got[0].field, "spec.destinations[0].shareWith");
        let mut enc = image();
        enc.encrypted = Some(true);
        let s = with_shares("aws", "us-east-1", "us-east-1", 1);
        assert_eq!(
            reasons(&check(cloud(ProviderKind::Aws), &s, &enc, &Limits::default())),
            vec!["EncryptedImageNotShareable"]
        );
        // A copy to another region is shared, not the encrypted source: not refused here.
        let s = with_shares("aws", "us-east-1", "us-west-2", 1);
        assert!(check(cloud(ProviderKind::Aws), &s, &enc, &Limits::default()).is_empty());
        let mut full = image();
        full.whole_machine = true;
        let mut s = with_shares("huawei", "cn-north-4", "cn-north-4", 11);
        s.destinations[0].vault_id = Some("v".into());
        assert!(reasons(&check(cloud(ProviderKind::Huawei), &s, &full, &Limits::default())).contains(&"TooManyShares"));
        s.destinations[0].share_with.truncate(10);
        assert!(
            !reasons(&check(cloud(ProviderKind::Huawei), &s, &full, &Limits::default())).contains(&"TooManyShares")
        );
    }

    type HuaweiCase = (
        &'static str,
        fn(&mut ImageInfo),
        &'static str,
        &'static str,
        Vec<&'static str>,
    );

    /// Each row (what the source image is, the regions, the reasons expected) checked, and the
    /// same with a member accepting the share (refused for a full-ECS image: it needs the
    /// member's CBR vault, which the spec cannot name).
    fn check_huawei(cases: Vec<HuaweiCase>) {
        for (what, f, src, dst, want) in cases {
            let mut img = image();
            f(&mut img);
            let mut s = spec("huawei", src, &[dst]);
            if !what.contains("without a vault") {
                s.destinations[0].vault_id = Some("vault-1".into());
            }
            let got = check(cloud(ProviderKind::Huawei), &s, &img, &Limits::default());
            assert_eq!(reasons(&got), want, "{what}");
            // Accepting a share as the member: refused for a full-ECS image (it needs the
            // member's CBR vault, which the spec cannot name), allowed otherwise.
            s.destinations[0].share_with = vec![ShareSpec {
                account: "0a1b2c3d4e5f60718293a4b5c6d7e8f9".into(),
                accept_with: Some(crate::api::v1alpha1::AcceptSpec::secret("member")),
            }];
            let accept = check(cloud(ProviderKind::Huawei), &s, &img, &Limits::default());
            let refused = accept.iter().find(|v| v.reason == "AcceptNeedsVault");
            assert_eq!(refused.is_some(), img.whole_machine, "{what}: {accept:?}");
            if let Some(v) = refused {
                assert_eq!(v.field, "spec.destinations[0].shareWith[0].acceptWith");
                assert!(v.message.contains("vault"), "{v}");
            }
            for v in &got {
                assert!(
                    v.message.contains("img-1") && v.field.starts_with("spec."),
                    "{what}: {v}"
                );
            }
        }
    }

    /// The Huawei seed's rules on the image itself, one row per rule.
    #[test]
    fn huawei_rules_on_the_image() {
        check_huawei(vec![
            (
                "a plain private image passes",
                |_| {},
                "cn-north-4",
                "cn-east-3",
                vec![],
            ),
            (
                "public image",
                |i| i.visibility = "public".into(),
                "cn-north-4",
                "cn-east-3",
                vec!["NotPrivateImage"],
            ),
            (
                "iso image",
                |i| i.disk_format = Some("iso".into()),
                "cn-north-4",
                "cn-east-3",
                vec!["IsoImageNotReplicable"],
            ),
            (
                "encrypted image",
                |i| i.encrypted = Some(true),
                "cn-north-4",
                "cn-east-3",
                vec!["EncryptedImageNotReplicable"],
            ),
            (
                "a killed image",
                |i| i.state = Some(ImageState::Unusable("killed".into())),
                "cn-north-4",
                "cn-east-3",
                vec!["SourceNotUsable"],
            ),
            (
                "a private image made from a KooGallery image",
                |i| {
                    i.properties.insert("__productcode".into(), "00301-xxxx".into());
                },
                "cn-north-4",
                "cn-east-3",
                vec!["MarketplaceDerivedImage"],
            ),
        ]);
    }

    /// The Huawei seed's rules on regions, sizes and full-ECS images, one row per rule.
    #[test]
    fn huawei_rules_on_regions_and_sizes() {
        check_huawei(vec![
            (
                "full-ECS between listed regions",
                |i| i.whole_machine = true,
                "cn-north-4",
                "cn-south-1",
                vec![],
            ),
            (
                "full-ECS to an unlisted region",
                |i| i.whole_machine = true,
                "cn-north-4",
                "ap-southeast-1",
                vec!["FullEcsRegionNotSupported"],
            ),
            (
                "full-ECS from an unlisted region",
                |i| i.whole_machine = true,
                "ap-southeast-1",
                "cn-north-4",
                vec!["FullEcsRegionNotSupported"],
            ),
            (
                "full-ECS replica of a backup",
                |i| {
                    i.whole_machine = true;
                    i.replicated_from_backup = true;
                },
                "cn-north-4",
                "cn-east-3",
                vec!["FullEcsReplicaNotReplicable"],
            ),
            (
                "200 GiB from a 300 GB region",
                |i| i.size_bytes = Some(200 * GIB),
                "cn-north-4",
                "cn-east-3",
                vec![],
            ),
            (
                "200 GiB from a 128 GB region",
                |i| i.size_bytes = Some(200 * GIB),
                "ap-southeast-1",
                "cn-east-3",
                vec!["ImageTooLarge"],
            ),
            (
                "301 GiB from a 300 GB region",
                |i| i.size_bytes = Some(301 * GIB),
                "cn-south-1",
                "cn-east-3",
                vec!["ImageTooLarge"],
            ),
            (
                "full-ECS without a vault",
                |i| i.whole_machine = true,
                "cn-north-4",
                "cn-south-1",
                vec!["VaultRequired"],
            ),
        ]);
    }

    #[test]
    fn alibaba_rules() {
        let s = spec("alibaba", "cn-hangzhou", &["cn-beijing"]);
        assert!(check(cloud(ProviderKind::Alibaba), &s, &image(), &Limits::default()).is_empty());
        let mut img = image();
        img.shared_from_other_account = true;
        assert_eq!(
            reasons(&check(cloud(ProviderKind::Alibaba), &s, &img, &Limits::default())),
            vec!["SharedImageNotCopyable"]
        );
        let mut img = image();
        img.size_bytes = Some(crate::image_replication::vm::providers::alibaba::MAX_BYTES + 1);
        assert_eq!(
            reasons(&check(cloud(ProviderKind::Alibaba), &s, &img, &Limits::default())),
            vec!["ImageTooLarge"]
        );
        let mut img = image();
        img.name = "x".into();
        let got = check(cloud(ProviderKind::Alibaba), &s, &img, &Limits::default());
        assert_eq!(reasons(&got), vec!["InvalidName"]);
        assert_eq!(got[0].field, "spec.destinations[0].name");
        // Huawei rules do not apply to alibaba: a public or ISO image is not refused here.
        let mut img = image();
        img.visibility = "public".into();
        assert!(check(cloud(ProviderKind::Alibaba), &s, &img, &Limits::default()).is_empty());
    }

    #[test]
    fn tencent_rules() {
        let s = spec("tencent", "ap-guangzhou", &["ap-shanghai"]);
        assert!(check(cloud(ProviderKind::Tencent), &s, &image(), &Limits::default()).is_empty());
        for (vis, want) in [
            ("public", "NotCustomImage"),
            ("market", "NotCustomImage"),
            ("shared", "SharedImageNotSyncable"),
        ] {
            let mut img = image();
            img.visibility = vis.into();
            assert_eq!(
                reasons(&check(cloud(ProviderKind::Tencent), &s, &img, &Limits::default())),
                vec![want],
                "{vis}"
            );
        }
        let mut img = image();
        img.name = "n".repeat(61);
        let got = check(cloud(ProviderKind::Tencent), &s, &img, &Limits::default());
        assert_eq!(reasons(&got), vec!["InvalidName"]);
        assert_eq!(got[0].field, "spec.destinations[0].name");
    }

    #[test]
    fn openstack_rules() {
        let s = spec("openstack", "region-one", &["region-two"]);
        let limits = Limits {
            openstack_max_bytes: 10 * GIB,
            ..Default::default()
        };
        assert_eq!(
            reasons(&check(cloud(ProviderKind::Openstack), &s, &image(), &limits)),
            vec!["ImageTooLarge"]
        );
        let mut img = image();
        img.size_bytes = Some(GIB);
        assert!(check(cloud(ProviderKind::Openstack), &s, &img, &limits).is_empty());
        img.state = Some(ImageState::Unusable("deactivated".into()));
        assert_eq!(
            reasons(&check(cloud(ProviderKind::Openstack), &s, &img, &limits)),
            vec!["SourceNotUsable"]
        );
        img.state = Some(ImageState::Available);
        img.disk_format = Some("iso".into());
        assert_eq!(
            reasons(&check(cloud(ProviderKind::Openstack), &s, &img, &limits)),
            vec!["DiskFormatNotReplicable"]
        );
    }

    #[test]
    fn images_being_created_wait() {
        let mut img = image();
        assert_eq!(wait_reason(&img), None);
        img.state = Some(ImageState::Creating);
        assert!(wait_reason(&img).unwrap().contains("being created"));
        // Waiting is not refusing.
        assert!(
            check(
                cloud(ProviderKind::Huawei),
                &spec("huawei", "cn-north-4", &["cn-east-3"]),
                &img,
                &Limits::default()
            )
            .is_empty()
        );
    }

    #[test]
    fn default_names_follow_the_provider() {
        let img = image();
        assert_eq!(
            (cloud(ProviderKind::Huawei).default_name)("cn-north-4", &img),
            "copy_cn-north-4_web"
        );
        assert_eq!((cloud(ProviderKind::Alibaba).default_name)("cn-hangzhou", &img), "web");
        let s = spec("huawei", "cn-north-4", &["cn-east-3"]);
        let mut d = s.destinations[0].clone();
        assert_eq!(
            destination_name(cloud(ProviderKind::Huawei), &s, &d, &img),
            "copy_cn-north-4_web"
        );
        d.name = Some("mine".into());
        assert_eq!(destination_name(cloud(ProviderKind::Huawei), &s, &d, &img), "mine");
    }
}
