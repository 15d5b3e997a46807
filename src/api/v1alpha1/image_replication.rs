//! `ImageReplication`: copy one image from a source region to one or many destination regions.

// kube's derive takes one `printcolumn(...)` per column; clippy reads the repeated keys as duplicates.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DeletionPolicy, SecretRef, conditions_schema, is_false};

/// Copy one image (a cloud VM image or a container image) from a source region to one or many
/// destination regions, and keep the copies there.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "replication.imageops.io",
    version = "v1alpha1",
    kind = "ImageReplication",
    plural = "imagereplications",
    namespaced,
    status = "ImageReplicationStatus",
    shortname = "imgrep",
    category = "imageops",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Source", type_ = "string", json_path = ".status.source.name"),
    printcolumn(name = "Summary", type_ = "string", json_path = ".status.summary"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        priority = 1,
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = kube::core::Rule::new(
    "self.provider.kind == 'openstack' || (size(self.source.region) <= 63 && self.source.region.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && self.destinations.all(d, size(d.region) <= 63 && d.region.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')))"
).message("regions must be region ids such as cn-north-4 (lowercase letters, digits and '-', at most 63); only provider.kind openstack takes Keystone's own region ids (e.g. RegionOne)"))]
#[x_kube(validation = kube::core::Rule::new(
    "self.destinations.all(d, d.region != self.source.region || has(d.encryption) || (has(d.shareWith) && size(d.shareWith) > 0))"
).message("destinations[].region must differ from source.region unless encryption is set (a same-region copy is only allowed as copy-and-encrypt) or shareWith is (the source itself is shared, not copied)"))]
#[x_kube(validation = kube::core::Rule::new(
    "self.provider.kind != 'oci' || has(self.source.reference)"
).message("source.reference is required when provider.kind is oci"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.source.reference) || self.provider.kind == 'oci'"
).message("source.reference is only for provider.kind oci; VM images use source.imageId or source.imageName"))]
#[x_kube(validation = kube::core::Rule::new(
    "self.provider.kind != 'oci' || self.destinations.all(d, has(d.registry))"
).message("every destination needs registry when provider.kind is oci"))]
#[serde(rename_all = "camelCase")]
pub struct ImageReplicationSpec {
    /// Which service holds the image, and how to reach it.
    pub provider: ProviderSpec,
    /// The image to copy and the region it is in.
    pub source: SourceSpec,
    /// Regions to copy the image to (1 to 64, regions unique).
    #[x_kube(validation = kube::core::Rule::new("size(self) >= 1").message("at least one destination is required"))]
    #[x_kube(validation = kube::core::Rule::new("self.all(d, self.exists_one(e, e.region == d.region))").message("destination regions must be unique"))]
    #[schemars(length(max = 64))]
    pub destinations: Vec<DestinationSpec>,
    /// On delete: Retain keeps the destination copies, Delete removes them. In-flight copies are
    /// cancelled either way where the provider can.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Stop starting new work; copies in flight are cancelled where the provider can.
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspend: bool,
    /// Tell consumers which image is current in each region: a ConfigMap in the object's
    /// namespace, owned by it, with one key per region whose copy is Available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishSpec>,
    /// When work may start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSpec>,
    /// How many copies per destination to keep when the source moves on (`source.follow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSpec>,
}

/// Copies of earlier sources kept per destination.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Copies kept per destination, the current one included (at least 1; default: all).
    /// Beyond it the oldest copies of earlier sources that this object made are deleted, their
    /// shares withdrawn first; never the current copy, never one still copying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1 && self <= 100").message("retention.keep must be between 1 and 100"))]
    pub keep: Option<i32>,
}

/// Which image of a name pattern the source is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Follow {
    /// The newest image (by the cloud's creation time) whose name matches `source.imageName`
    /// (a glob: `*`, `?`), looked up again every `source.checkInterval`.
    Newest,
}

/// When work may start.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// New copies (and retries) start only inside this daily window (the Alibaba seed: copy at
    /// off-peak hours); running copies continue; drift repairs, an oci tag that moved, and
    /// shares are not held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowSpec>,
}

/// A daily window, e.g. 22:00 to 06:00 in Asia/Shanghai (across midnight when end < start).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WindowSpec {
    /// Opening time, HH:MM (24 h).
    #[schemars(length(max = 5))]
    pub start: String,
    /// Closing time, HH:MM (24 h); equal to start: always open.
    #[schemars(length(max = 5))]
    pub end: String,
    /// IANA time zone of start and end (default UTC), e.g. Asia/Shanghai.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub time_zone: Option<String>,
}

/// Where the current image of each region is published.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishSpec {
    /// The ConfigMap's name (a DNS subdomain). Data: `<region>: <imageId>` (oci:
    /// `<region>: <registry>/<repository>@<digest>`), written when a region's copy becomes
    /// Available and only then; a region whose copy is not Available has no key.
    #[schemars(length(min = 1, max = 253))]
    pub config_map_name: String,
}

/// The image service that holds the source image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Huawei Cloud Image Management Service (IMS) cross-region replication.
    Huawei,
    /// Alibaba Cloud ECS CopyImage (plain or copy-and-encrypt).
    Alibaba,
    /// AWS EC2 CopyImage.
    Aws,
    /// Tencent Cloud CVM SyncImages.
    Tencent,
    /// OpenStack Glance: the operator streams the image data region to region.
    Openstack,
    /// Google Compute Engine: an image made from the source with its data in another region.
    Google,
    /// Azure Compute Gallery: the image version replicated to another region by Azure.
    Azure,
    /// OCI / Docker registries: container images, multi-arch indexes and referrers.
    Oci,
}

impl ProviderKind {
    /// Every kind of the API.
    pub const ALL: [ProviderKind; 8] = [
        Self::Huawei,
        Self::Alibaba,
        Self::Aws,
        Self::Tencent,
        Self::Openstack,
        Self::Google,
        Self::Azure,
        Self::Oci,
    ];

    /// The lowercase name used in manifests, metrics and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Huawei => "huawei",
            Self::Alibaba => "alibaba",
            Self::Aws => "aws",
            Self::Tencent => "tencent",
            Self::Openstack => "openstack",
            Self::Google => "google",
            Self::Azure => "azure",
            Self::Oci => "oci",
        }
    }
}

/// How to reach the image service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderSpec {
    /// Which service holds the image: huawei, alibaba, aws, tencent, openstack, google, azure or
    /// oci.
    pub kind: ProviderKind,
    /// Secret in the same namespace with the provider's credentials (keys documented per
    /// provider). huawei, alibaba, aws, tencent, google, azure: without it the operator acts with its pod's
    /// workload identity (the projected ServiceAccount token exchanged at the cloud's security
    /// token service, as the cloud's SDKs read it from the environment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
    /// huawei, alibaba, aws, tencent, google: act as this role, assumed with the credentials above (the
    /// Secret's keys, or the workload identity): short-lived keys, refreshed before they expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assume_role: Option<AssumeRoleSpec>,
    /// API endpoint override (private cloud, tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub endpoint: Option<String>,
    /// huawei: IAM agency that holds IMS Administrator in both regions (required by IMS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub agency: Option<String>,
    /// Copies in flight at once per account across all objects (1 to 100); the rest are Queued.
    /// Default: the provider's documented quota (huawei 5, alibaba 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1 && self <= 100").message("maxConcurrentCopies must be between 1 and 100"))]
    pub max_concurrent_copies: Option<i32>,
}

/// The image to copy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[x_kube(validation = kube::core::Rule::new(
    "(has(self.imageId) ? 1 : 0) + (has(self.imageName) ? 1 : 0) + (has(self.reference) ? 1 : 0) == 1"
).message("exactly one of source.imageId, source.imageName or source.reference must be set"))]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    /// Region that holds the source image, e.g. cn-north-4 (openstack: the Keystone region id
    /// as it is, e.g. RegionOne).
    #[x_kube(validation = kube::core::Rule::new("size(self) >= 1 && !self.contains('/')").message("region must be a region id such as cn-north-4 (openstack: the Keystone region id, e.g. RegionOne)"))]
    #[schemars(length(max = 255))]
    pub region: String,
    /// Id of the source image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub image_id: Option<String>,
    /// Name of the source image; resolved to an id. An ambiguous name is an error, not a guess.
    /// With `follow: Newest`, a glob (`golden-*`); Compute Engine also takes an image family
    /// (`family/golden`), Compute Gallery `<gallery>/<definition>/<version glob>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub image_name: Option<String>,
    /// VM clouds: follow the newest image whose name matches `imageName`; a newer one starts a
    /// new set of copies to every destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<Follow>,
    /// With `follow`: how often the source is looked up again, e.g. 10m (default), 1h; 1m at
    /// least. oci: how often the source tag is looked up and the copies checked (default: the
    /// operator's --resync-seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub check_interval: Option<String>,
    /// oci only: image reference with a tag or a digest, e.g. registry.example.com/team/web:1.4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reference: Option<String>,
}

/// One destination region.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DestinationSpec {
    /// Destination region id (openstack: the Keystone region id as it is).
    #[x_kube(validation = kube::core::Rule::new("size(self) >= 1 && !self.contains('/')").message("region must be a region id such as cn-east-3 (openstack: the Keystone region id, e.g. RegionOne)"))]
    #[schemars(length(max = 255))]
    pub region: String,
    /// Name of the copy (2 to 128 characters). Default: the provider's convention, e.g. huawei
    /// copy_<sourceRegion>_<sourceName>.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("size(self) >= 2 && size(self) <= 128").message("name must be 2 to 128 characters long"))]
    pub name: Option<String>,
    /// huawei: destination project name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub project: Option<String>,
    /// Description of the copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// alibaba/aws/tencent: encrypt the copy (copy-and-encrypt) with a KMS key in the destination region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionSpec>,
    /// Tags set on the copy.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// alibaba: resource group of the copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub resource_group_id: Option<String>,
    /// huawei: CBR vault for full-ECS images made from backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub vault_id: Option<String>,
    /// azure: replicas of the image version in this region (1 when unset; more replicas serve
    /// more VMs created from it at once). Set when the region is added to the version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1 && self <= 100").message("replicaCount must be between 1 and 100"))]
    pub replica_count: Option<i32>,
    /// azure: storage account type of this region's replicas (`Standard_LRS`, `Standard_ZRS`,
    /// `Premium_LRS`, `PremiumV2_LRS`; the version's own when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub storage_account_type: Option<String>,
    /// oci: destination registry for this region, e.g. https://sh.registry.example.com.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub registry: Option<String>,
    /// VM clouds: accounts (huawei, openstack: projects) the image in this region is shared with
    /// once it is available. A destination in the source region with only shareWith shares the
    /// source image itself (no copy). Removing an account withdraws its share.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "share_with_schema")]
    pub share_with: Vec<ShareSpec>,
    /// aws: the copy in this region is made by and belongs to another account: the source and
    /// its snapshots are shared with it, it copies them with its own credentials, and the share
    /// of the source is withdrawn once the copy is available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<OwnerSpec>,
}

impl DestinationSpec {
    /// A destination in the source region that only shares: the source itself is shared,
    /// nothing is copied (the seeds' "cross-account replication in the same region").
    pub fn shares_in_place(&self, source_region: &str) -> bool {
        self.region == source_region && self.encryption.is_none() && !self.share_with.is_empty()
    }
}

/// The account that owns a destination's copy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnerSpec {
    /// The account's id (aws: 12 digits), to share the source with.
    #[schemars(length(min = 1, max = 64))]
    pub id: String,
    /// A Secret with the account's credentials (the provider's keys), used to copy, poll,
    /// share and delete its copy. With `assumeRole`, the keys that assume it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
    /// A role of that account, assumed with the provider's own credentials (its Secret or its
    /// workload identity), or with `credentialsSecretRef` when given: no second key pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assume_role: Option<AssumeRoleSpec>,
}

impl OwnerSpec {
    /// What its credentials are known by (the Secret's name, or the role's name, which has a
    /// `:` no Secret name has): the key of the accounts read for an object.
    pub fn credentials_key(&self) -> String {
        match (&self.credentials_secret_ref, &self.assume_role) {
            (Some(s), None) => s.name.clone(),
            (s, Some(r)) => format!(
                "{}{}",
                r.role_arn,
                s.as_ref()
                    .map(|s| format!(" with Secret {}", s.name))
                    .unwrap_or_default()
            ),
            (None, None) => String::new(),
        }
    }
}

/// A role to act as: assumed at the cloud's security token service (aws `sts:AssumeRole`,
/// alibaba and tencent STS `AssumeRole`) for short-lived keys.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssumeRoleSpec {
    /// The role: aws `arn:aws:iam::<account>:role/<name>`, alibaba `acs:ram::<account>:role/<name>`,
    /// tencent `qcs::cam::uin/<account>:roleName/<name>`.
    #[schemars(length(min = 1, max = 2048))]
    pub role_arn: String,
    /// aws: the external id the role's trust policy asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 1224))]
    pub external_id: Option<String>,
}

/// `shareWith`: a list keyed by `account` (the API server refuses a duplicate account, at no
/// CEL cost: a uniqueness rule over up to 1,000 accounts in 64 destinations exceeds the CRD's
/// CEL budget), at most 1,000 (the largest member limit of any cloud, AWS's).
fn share_with_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let items = g.subschema_for::<ShareSpec>();
    serde_json::from_value(serde_json::json!({
        "type": "array",
        "description": "VM clouds: accounts (huawei, openstack: projects) the image in this region is shared with once it is available. A destination in the source region with only shareWith shares the source image itself (no copy). Removing an account withdraws its share.",
        "maxItems": 1000,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["account"],
        "items": items,
    }))
    .expect("static schema is valid")
}

/// One account an image is shared with.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShareSpec {
    /// huawei, openstack: the member's project id; alibaba, aws, tencent: the account id.
    #[schemars(length(min = 1, max = 64))]
    pub account: String,
    /// huawei, openstack: how to accept the share as the member: a Secret of the member
    /// account (the provider's keys, `name`), or (huawei) an agency of the member account
    /// assumed with the provider's credentials (`assumeRole`). Without it the member accepts in
    /// its own account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_with: Option<AcceptSpec>,
}

/// How a member accepts a share: its Secret, or a role of its account.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcceptSpec {
    /// A Secret of the member account in the object's namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// huawei: an agency of the member account (`iam::<domain id>:agency:<name>`), assumed with
    /// the provider's credentials: no member key pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assume_role: Option<AssumeRoleSpec>,
}

impl AcceptSpec {
    /// A member's Secret.
    pub fn secret(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            assume_role: None,
        }
    }
    /// What its credentials are known by (as [`OwnerSpec::credentials_key`]).
    pub fn credentials_key(&self) -> String {
        self.as_owner().credentials_key()
    }
    /// The same credentials as an owner's (a Secret, a role, or a role with a Secret).
    pub fn as_owner(&self) -> OwnerSpec {
        OwnerSpec {
            id: String::new(),
            credentials_secret_ref: (!self.name.is_empty()).then(|| SecretRef {
                name: self.name.clone(),
            }),
            assume_role: self.assume_role.clone(),
        }
    }
    /// For messages: `Secret s`, or `role r`.
    pub fn describe(&self) -> String {
        match &self.assume_role {
            Some(r) => format!("role {}", r.role_arn),
            None => format!("Secret {}", self.name),
        }
    }
}

/// Copy-and-encrypt settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionSpec {
    /// KMS key in the destination region; the provider's default key when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub kms_key_id: Option<String>,
}

/// Observed state of an ImageReplication.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageReplicationStatus {
    /// The metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready summarises; Reconciling while work is under way; Stalled when it cannot progress
    /// without a change; Validated says whether the spec passed the provider's rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// What the operator found out about the source image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceStatus>,
    /// One entry per destination region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<DestinationStatus>,
    /// Short summary for the printer column, e.g. "2/3 available".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The last value of the `replication.imageops.io/retry` annotation acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_retry: Option<String>,
    /// Copies of earlier sources that are kept (`source.follow`), newest first per region,
    /// at most `retention.keep - 1` per region once the current copy is Available.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<PreviousCopy>,
}

/// A kept copy of an earlier source, or a copy that failed and is to be deleted.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviousCopy {
    pub region: String,
    /// The copy's image id.
    pub image_id: String,
    /// The source image it is a copy of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_image_id: Option<String>,
    /// When the copy became Available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// The account that owns the copy, where not the provider's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The accounts it is shared with (withdrawn before it is deleted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_with: Vec<String>,
    /// Why it is still listed (a delete that failed and is retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A copy that failed (the cloud made an image that is not usable, or never listed it):
    /// deleted whatever `retention` and `deletionPolicy` say, as it holds nothing of use.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failed: bool,
}

impl ImageReplicationStatus {
    /// The recorded status of the destination in `region`, or a fresh one for it.
    pub fn destination_or_new(&self, region: &str) -> DestinationStatus {
        self.destinations
            .iter()
            .find(|s| s.region == region)
            .cloned()
            .unwrap_or_else(|| DestinationStatus {
                region: region.to_string(),
                ..Default::default()
            })
    }
}

/// The source image as the provider describes it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    /// Resolved image id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Image name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// Disk or manifest format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// private, public, shared or market.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<String>,
    /// Whether the source image is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    /// The provider's state of the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// oci: manifest digest of the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// When this image became the source (`follow`: when it was found to be the newest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Time>,
    /// The cloud's creation time of the source image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// Phase of one destination copy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum DestinationPhase {
    /// Not started.
    #[default]
    Pending,
    /// Waiting for a quota slot or for the source image to become ready.
    Queued,
    /// The start request is being sent; the idempotency token is recorded.
    Starting,
    /// The copy task runs.
    Copying,
    /// The copy exists and matches the source.
    Available,
    /// The copy failed; see message.
    Failed,
    /// The copy is being cancelled.
    Cancelling,
    /// The copy was cancelled.
    Cancelled,
}

/// Observed state of one destination.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DestinationStatus {
    /// Destination region.
    pub region: String,
    /// Phase of the copy.
    pub phase: DestinationPhase,
    /// Id of the destination image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Provider task or job id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Idempotency token recorded before the copy was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    /// oci: digest held by the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Progress 0..100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_percent: Option<i32>,
    /// Bytes copied so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_copied: Option<i64>,
    /// Bytes to copy in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<i64>,
    /// Position in the quota queue while Queued (1 = next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<i32>,
    /// When the current attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the copy finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Why a Failed destination failed, as data (the message says it in prose, and may be
    /// reworded or cut): `SetupRequired` (the cloud is not set up for the region, e.g. it is
    /// missing from the Keystone catalog: no attempt counted, tried again every minute) or
    /// `CopyFailed` (an attempt counted, retried with backoff while attempts last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DestinationReason>,
    /// Attempts made so far.
    #[serde(default)]
    pub attempts: i32,
    /// Human-readable detail of the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The account that owns this region's copy, when it is not the provider's (`account`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// oci: the destination registry as the spec named it, and the copy's repository (kept so
    /// that a destination removed from the spec can still be pruned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// `source.follow`: the source image this region's copy is (being) made of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_image_id: Option<String>,
    /// The shares of this region's image, one per account of shareWith (and per account still
    /// being withdrawn).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<ShareStatus>,
}

/// Why a destination is Failed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum DestinationReason {
    /// The cloud's set-up lacks something only its admin can add (a region missing from the
    /// catalog): not a failed copy; tried again every minute without counting attempts.
    SetupRequired,
    /// The copy failed (an attempt counted).
    CopyFailed,
}

/// State of one share.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum SharePhase {
    /// Not in place yet: the image is not available, the share call is under way, or (huawei,
    /// openstack) the member has not accepted; the message says which.
    #[default]
    Pending,
    /// The account can use the image (clouds where a share needs no acceptance).
    Shared,
    /// The member accepted the share (huawei, openstack).
    Accepted,
    /// Sharing failed; the message says why and whether it is retried.
    Failed,
    /// Being withdrawn (the account left shareWith).
    Withdrawing,
}

/// Why a share is in its state, as data (the message says the same in prose, and may be
/// reworded or cut): what `replicate -f`, the retry schedule and the Events read.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ShareReason {
    /// The image in this region is not available yet.
    AwaitingImage,
    /// The share call is to be made, or under way.
    Sharing,
    /// Shared; the cloud does not list the member yet (its member lists lag).
    NotListedYet,
    /// Shared; the member accepts in its own account (huawei, openstack without acceptWith).
    AwaitingMember,
    /// Shared; the operator accepts as the member with its Secret (acceptWith).
    Accepting,
    /// The image's members could not be read this time; read again.
    MembersUnreadable,
    /// The share was removed outside the operator; shared again.
    RemovedOutside,
    /// The member rejected the share.
    Rejected,
    /// A share, accept or withdraw call failed (retried while attempts last).
    CallFailed,
    /// The account left shareWith; the share is withdrawn.
    LeftShareWith,
}

/// Observed state of one share.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShareStatus {
    /// The account or project shared with.
    pub account: String,
    pub state: SharePhase,
    /// Why it is in that state (absent once in place).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ShareReason>,
    /// Failed share calls so far (reset when the share is in place).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: i32,
    /// When the state last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the operator last asked the cloud to share (or withdraw) this account: the
    /// cloud's member list may not show the change for a while, and the call is not made
    /// again meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub called_at: Option<Time>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}
