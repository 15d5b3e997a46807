//! The seeds' rules for VM image copies, as pure functions of (spec, described source image).
//!
//! Rules that need only the spec live in [`crate::validation`] (and in the CRD's CEL); these need
//! what the provider says about the source image. A broken rule refuses the copy before any call
//! that starts work; an image that is still being created waits instead.

use crate::api::v1alpha1::{DestinationSpec, ImageReplicationSpec, ProviderKind};
use crate::validation::Violation;

use super::{ImageInfo, ImageState};

const GIB: u64 = 1 << 30;

/// Huawei IMS: regions between which full-ECS images can be replicated (seed: 华北-北京一,
/// 华东-上海一, 华东-上海二, 华北-北京四, 华南-广州).
pub const HUAWEI_FULL_ECS_REGIONS: [&str; 5] = ["cn-north-1", "cn-east-3", "cn-east-2", "cn-north-4", "cn-south-1"];

/// Huawei IMS: source regions whose images may be up to 300 GB (seed: 华南-广州, 华东-上海一,
/// 华东-上海二, 华北-北京四); elsewhere the limit is 128 GB. GB read as GiB.
pub const HUAWEI_300GB_REGIONS: [&str; 4] = ["cn-south-1", "cn-east-3", "cn-east-2", "cn-north-4"];

/// Alibaba ECS: images over 2 TiB must go through snapshot copy.
pub const ALIBABA_MAX_BYTES: u64 = 2 * 1024 * GIB;

/// Tencent CVM: the longest destination image name SyncImages accepts.
pub const TENCENT_MAX_NAME: usize = 60;

/// Limits that are configuration rather than seed facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// OpenStack: the largest image the operator copies (it streams every byte itself).
    pub openstack_max_bytes: u64,
    /// OpenStack: disk formats refused for cross-region copies (default `iso`, as Huawei IMS,
    /// which is built on OpenStack, refuses ISO images).
    pub openstack_refused_formats: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            openstack_max_bytes: 1024 * GIB,
            openstack_refused_formats: vec!["iso".into()],
        }
    }
}

/// Huawei's size limit for images replicated out of `region`.
pub fn huawei_max_bytes(region: &str) -> u64 {
    if HUAWEI_300GB_REGIONS.contains(&region) {
        300 * GIB
    } else {
        128 * GIB
    }
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / GIB as f64)
}

/// The destination name when the spec gives none: the provider's convention.
pub fn default_name(kind: ProviderKind, source_region: &str, source: &ImageInfo) -> String {
    match kind {
        ProviderKind::Huawei => format!("copy_{source_region}_{}", source.name),
        _ => source.name.clone(),
    }
}

/// The destination name to use.
pub fn destination_name(
    kind: ProviderKind,
    spec: &ImageReplicationSpec,
    d: &DestinationSpec,
    source: &ImageInfo,
) -> String {
    d.name
        .clone()
        .unwrap_or_else(|| default_name(kind, &spec.source.region, source))
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

/// Every rule the described source image breaks for this spec. Empty: the copy may start.
pub fn check(kind: ProviderKind, spec: &ImageReplicationSpec, source: &ImageInfo, limits: &Limits) -> Vec<Violation> {
    let src_field = if spec.source.image_id.is_some() {
        "spec.source.imageId"
    } else {
        "spec.source.imageName"
    };
    let mut c = Check {
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
    match kind {
        ProviderKind::Huawei => huawei(&mut c),
        ProviderKind::Alibaba => alibaba(&mut c),
        ProviderKind::Openstack => openstack(&mut c),
        ProviderKind::Tencent => tencent(&mut c),
        ProviderKind::Aws | ProviderKind::Oci => {}
    }
    shares(&mut c, kind);
    c.out
}

/// What the clouds refuse to share: an image another account shared (only your own images can
/// be shared), an encrypted source shared in place (IMS and EC2 refuse images encrypted with
/// the default key, and the operator cannot tell the key), more members than a Huawei full-ECS
/// image takes (10).
fn shares(c: &mut Check<'_>, kind: ProviderKind) {
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
        let in_place = super::share::share_only(&spec.source.region, d);
        if in_place && source.encrypted == Some(true) && matches!(kind, ProviderKind::Huawei | ProviderKind::Aws) {
            let message = format!(
                "{} is encrypted; {} refuses to share an image encrypted with the default key: share a copy encrypted with a customer key instead",
                c.img,
                kind.as_str()
            );
            c.refuse(field.clone(), "EncryptedImageNotShareable", message);
        }
        if kind == ProviderKind::Huawei && source.whole_machine && d.share_with.len() > 10 {
            let message = format!(
                "{} is a full-ECS image; IMS shares one with at most 10 tenants, {} are listed",
                c.img,
                d.share_with.len()
            );
            c.refuse(field, "TooManyShares", message);
        }
    }
}

/// What the rules of every provider look at, and the violations found.
struct Check<'a> {
    spec: &'a ImageReplicationSpec,
    source: &'a ImageInfo,
    limits: &'a Limits,
    /// The spec field that names the source image.
    src_field: &'static str,
    /// `source image <id> (<name>)`, for messages.
    img: String,
    size: u64,
    iso: bool,
    out: Vec<Violation>,
}

impl Check<'_> {
    fn refuse(&mut self, field: String, reason: &'static str, message: String) {
        self.out.push(Violation::new(field, reason, message));
    }
}

/// Huawei IMS full-ECS images: a CBR vault per destination, not themselves replicated from
/// a backup, only between the regions that support them.
fn huawei_full_ecs(c: &mut Check<'_>) {
    let spec = c.spec;
    let source = c.source;
    let src_field = c.src_field;
    let img = c.img.clone();
    for (i, d) in spec.destinations.iter().enumerate() {
        if d.vault_id.as_deref().is_none_or(str::is_empty) {
            c.refuse(
                format!("spec.destinations[{i}].vaultId"),
                "VaultRequired",
                format!(
                    "{img} is a full-ECS image; replicating it to {} needs the CBR backup vault (vault ID, protection type Replication) in that region that will hold its backups",
                    d.region
                ),
            );
        }
    }
    // BatchUpdateMembers needs the member's own CBR vault (`vault_id`) to accept a full-ECS
    // image made from a backup (every full-ECS copy is); the spec has no field for it, so such
    // an acceptance is refused before anything starts rather than failing after the copy.
    for (i, d) in spec.destinations.iter().enumerate() {
        for (j, w) in d.share_with.iter().enumerate() {
            if w.accept_with.is_some() {
                c.refuse(
                    format!("spec.destinations[{i}].shareWith[{j}].acceptWith"),
                    "AcceptNeedsVault",
                    format!(
                        "{img} is a full-ECS image; accepting a share of it needs a CBR vault of the member account {} (BatchUpdateMembers vault_id), which the operator cannot name: remove acceptWith and accept it in that account",
                        w.account
                    ),
                );
            }
        }
    }
    if source.replicated_from_backup {
        c.refuse(
            src_field.into(),
            "FullEcsReplicaNotReplicable",
            format!(
                "{img} is a full-ECS image that was itself replicated from a backup; it cannot be replicated across regions again"
            ),
        );
    }
    if !HUAWEI_FULL_ECS_REGIONS.contains(&spec.source.region.as_str()) {
        c.refuse(
            "spec.source.region".into(),
            "FullEcsRegionNotSupported",
            format!(
                "{img} is a full-ECS image; full-ECS images can only be replicated between {}, not from {}",
                HUAWEI_FULL_ECS_REGIONS.join(", "),
                spec.source.region
            ),
        );
    }
    for (i, d) in spec.destinations.iter().enumerate() {
        if !HUAWEI_FULL_ECS_REGIONS.contains(&d.region.as_str()) {
            c.refuse(
                format!("spec.destinations[{i}].region"),
                "FullEcsRegionNotSupported",
                format!(
                    "{img} is a full-ECS image; full-ECS images can only be replicated between {}, not to {}",
                    HUAWEI_FULL_ECS_REGIONS.join(", "),
                    d.region
                ),
            );
        }
    }
}

/// Huawei IMS: private images only, no ISO, encrypted or KooGallery-derived images; full-ECS images need a vault per destination, may not be replicas of backups and stay within the regions that support them; the size limit of the source region.
fn huawei(c: &mut Check<'_>) {
    let spec = c.spec;
    let source = c.source;
    let src_field = c.src_field;
    let img = c.img.clone();
    let size = c.size;
    let iso = c.iso;
    if source.visibility != "private" {
        c.refuse(
            src_field.into(),
            "NotPrivateImage",
            format!(
                "{img} is a {} image; only private images can be replicated across regions (create an ECS from it, then a private image from that ECS)",
                source.visibility
            ),
        );
    }
    if iso {
        c.refuse(
            src_field.into(),
            "IsoImageNotReplicable",
            format!("{img} is an ISO image; ISO images cannot be replicated across regions"),
        );
    }
    if source.encrypted == Some(true) {
        c.refuse(
            src_field.into(),
            "EncryptedImageNotReplicable",
            format!("{img} is encrypted; encrypted images cannot be replicated across regions"),
        );
    }
    if source.properties.get("__productcode").is_some_and(|c| !c.is_empty()) {
        c.refuse(
            src_field.into(),
            "MarketplaceDerivedImage",
            format!(
                "{img} was made from a KooGallery (marketplace) image (product {}); such private images cannot be replicated across regions",
                source.properties["__productcode"]
            ),
        );
    }
    if source.whole_machine {
        huawei_full_ecs(c);
    }
    let max = huawei_max_bytes(&spec.source.region);
    if size > max {
        c.refuse(
            src_field.into(),
            "ImageTooLarge",
            format!(
                "{img} is {}; images replicated from {} may be at most {}",
                gib(size),
                spec.source.region,
                gib(max)
            ),
        );
    }
}

/// Alibaba ECS: no images shared by another account, at most 2 TiB, destination names of 2 to 128 characters.
fn alibaba(c: &mut Check<'_>) {
    let spec = c.spec;
    let source = c.source;
    let src_field = c.src_field;
    let img = c.img.clone();
    let size = c.size;
    let kind = ProviderKind::Alibaba;
    let copies = spec
        .destinations
        .iter()
        .any(|d| !super::share::share_only(&spec.source.region, d));
    if source.shared_from_other_account && copies {
        c.refuse(
            src_field.into(),
            "SharedImageNotCopyable",
            format!("{img} is shared by another account; create a custom image from it first, then copy that"),
        );
    }
    if size > ALIBABA_MAX_BYTES {
        c.refuse(
            src_field.into(),
            "ImageTooLarge",
            format!(
                "{img} is {}; images over 2 TiB must be copied as snapshots and the image created from the snapshot copy in the destination region, which this version does not do",
                gib(size)
            ),
        );
    }
    for (i, d) in spec.destinations.iter().enumerate() {
        let n = destination_name(kind, spec, d, source).chars().count();
        if !(2..=128).contains(&n) {
            c.refuse(
                format!("spec.destinations[{i}].name"),
                "InvalidName",
                format!(
                    "the destination name would be {n} characters (from the source name); it must be 2 to 128, set destinations[{i}].name"
                ),
            );
        }
    }
}

/// OpenStack: the disk formats and the size this operator is configured to refuse.
fn openstack(c: &mut Check<'_>) {
    let source = c.source;
    let limits = c.limits;
    let src_field = c.src_field;
    let img = c.img.clone();
    let size = c.size;
    if let Some(f) = source.disk_format.as_deref()
        && limits
            .openstack_refused_formats
            .iter()
            .any(|r| r.eq_ignore_ascii_case(f))
    {
        c.refuse(
            src_field.into(),
            "DiskFormatNotReplicable",
            format!(
                "{img} has disk format {f}; this operator is configured to refuse {} images for cross-region copies (--openstack-refused-disk-formats)",
                f
            ),
        );
    }
    if size > limits.openstack_max_bytes {
        c.refuse(
            src_field.into(),
            "ImageTooLarge",
            format!(
                "{img} is {}; this operator copies OpenStack images up to {} (--openstack-max-image-bytes)",
                gib(size),
                gib(limits.openstack_max_bytes)
            ),
        );
    }
}

/// Tencent CVM: custom images only, a shared image only within its own region, destination names within the limit.
fn tencent(c: &mut Check<'_>) {
    let spec = c.spec;
    let source = c.source;
    let src_field = c.src_field;
    let img = c.img.clone();
    let kind = ProviderKind::Tencent;
    if matches!(source.visibility.as_str(), "public" | "market") {
        c.refuse(
            src_field.into(),
            "NotCustomImage",
            format!(
                "{img} is a {} image; SyncImages only syncs custom images (create an instance from it, then a custom image)",
                source.visibility
            ),
        );
    }
    if source.visibility == "shared" {
        for (i, d) in spec.destinations.iter().enumerate() {
            if d.region != spec.source.region {
                c.refuse(
                    format!("spec.destinations[{i}].region"),
                    "SharedImageNotSyncable",
                    format!(
                        "{img} is shared with this account; a shared image can only be copied into its own region ({}) as a custom image, then that custom image synced to {}",
                        spec.source.region, d.region
                    ),
                );
            }
        }
    }
    for (i, d) in spec.destinations.iter().enumerate() {
        let n = destination_name(kind, spec, d, source).chars().count();
        if n > TENCENT_MAX_NAME {
            c.refuse(
                format!("spec.destinations[{i}].name"),
                "InvalidName",
                format!(
                    "the destination image name would be {n} characters; Tencent CVM allows at most {TENCENT_MAX_NAME}, set destinations[{i}].name"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1alpha1::{ImageReplicationSpec, SecretRef, ShareSpec};

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
        let got = check(ProviderKind::Alibaba, &s, &shared, &Limits::default());
        assert_eq!(reasons(&got), vec!["SharedImageNotShareable"]);
        assert_eq!(got[0].field, "spec.destinations[0].shareWith");
        let mut enc = image();
        enc.encrypted = Some(true);
        let s = with_shares("aws", "us-east-1", "us-east-1", 1);
        assert_eq!(
            reasons(&check(ProviderKind::Aws, &s, &enc, &Limits::default())),
            vec!["EncryptedImageNotShareable"]
        );
        // A copy to another region is shared, not the encrypted source: not refused here.
        let s = with_shares("aws", "us-east-1", "us-west-2", 1);
        assert!(check(ProviderKind::Aws, &s, &enc, &Limits::default()).is_empty());
        let mut full = image();
        full.whole_machine = true;
        let mut s = with_shares("huawei", "cn-north-4", "cn-north-4", 11);
        s.destinations[0].vault_id = Some("v".into());
        assert!(reasons(&check(ProviderKind::Huawei, &s, &full, &Limits::default())).contains(&"TooManyShares"));
        s.destinations[0].share_with.truncate(10);
        assert!(!reasons(&check(ProviderKind::Huawei, &s, &full, &Limits::default())).contains(&"TooManyShares"));
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
            let got = check(ProviderKind::Huawei, &s, &img, &Limits::default());
            assert_eq!(reasons(&got), want, "{what}");
            // Accepting a share as the member: refused for a full-ECS image (it needs the
            // member's CBR vault, which the spec cannot name), allowed otherwise.
            s.destinations[0].share_with = vec![ShareSpec {
                account: "0a1b2c3d4e5f60718293a4b5c6d7e8f9".into(),
                accept_with: Some(SecretRef { name: "member".into() }),
            }];
            let accept = check(ProviderKind::Huawei, &s, &img, &Limits::default());
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
        assert!(check(ProviderKind::Alibaba, &s, &image(), &Limits::default()).is_empty());
        let mut img = image();
        img.shared_from_other_account = true;
        assert_eq!(
            reasons(&check(ProviderKind::Alibaba, &s, &img, &Limits::default())),
            vec!["SharedImageNotCopyable"]
        );
        let mut img = image();
        img.size_bytes = Some(ALIBABA_MAX_BYTES + 1);
        assert_eq!(
            reasons(&check(ProviderKind::Alibaba, &s, &img, &Limits::default())),
            vec!["ImageTooLarge"]
        );
        let mut img = image();
        img.name = "x".into();
        let got = check(ProviderKind::Alibaba, &s, &img, &Limits::default());
        assert_eq!(reasons(&got), vec!["InvalidName"]);
        assert_eq!(got[0].field, "spec.destinations[0].name");
        // Huawei rules do not apply to alibaba: a public or ISO image is not refused here.
        let mut img = image();
        img.visibility = "public".into();
        assert!(check(ProviderKind::Alibaba, &s, &img, &Limits::default()).is_empty());
    }

    #[test]
    fn tencent_rules() {
        let s = spec("tencent", "ap-guangzhou", &["ap-shanghai"]);
        assert!(check(ProviderKind::Tencent, &s, &image(), &Limits::default()).is_empty());
        for (vis, want) in [
            ("public", "NotCustomImage"),
            ("market", "NotCustomImage"),
            ("shared", "SharedImageNotSyncable"),
        ] {
            let mut img = image();
            img.visibility = vis.into();
            assert_eq!(
                reasons(&check(ProviderKind::Tencent, &s, &img, &Limits::default())),
                vec![want],
                "{vis}"
            );
        }
        let mut img = image();
        img.name = "n".repeat(61);
        let got = check(ProviderKind::Tencent, &s, &img, &Limits::default());
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
            reasons(&check(ProviderKind::Openstack, &s, &image(), &limits)),
            vec!["ImageTooLarge"]
        );
        let mut img = image();
        img.size_bytes = Some(GIB);
        assert!(check(ProviderKind::Openstack, &s, &img, &limits).is_empty());
        img.state = Some(ImageState::Unusable("deactivated".into()));
        assert_eq!(
            reasons(&check(ProviderKind::Openstack, &s, &img, &limits)),
            vec!["SourceNotUsable"]
        );
        img.state = Some(ImageState::Available);
        img.disk_format = Some("iso".into());
        assert_eq!(
            reasons(&check(ProviderKind::Openstack, &s, &img, &limits)),
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
                ProviderKind::Huawei,
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
            default_name(ProviderKind::Huawei, "cn-north-4", &img),
            "copy_cn-north-4_web"
        );
        assert_eq!(default_name(ProviderKind::Alibaba, "cn-hangzhou", &img), "web");
        let s = spec("huawei", "cn-north-4", &["cn-east-3"]);
        let mut d = s.destinations[0].clone();
        assert_eq!(
            destination_name(ProviderKind::Huawei, &s, &d, &img),
            "copy_cn-north-4_web"
        );
        d.name = Some("mine".into());
        assert_eq!(destination_name(ProviderKind::Huawei, &s, &d, &img), "mine");
    }
}
