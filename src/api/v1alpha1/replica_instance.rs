//! `ReplicaInstance`: keep a replica registry in another region in sync with a primary.

// kube's derive takes one `printcolumn(...)` per column; clippy reads the repeated keys as duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DeletionPolicy, SecretRef, conditions_schema, is_false};

/// How many failures `status.recentFailures` keeps; older ones live on as Events only.
pub const MAX_RECENT_FAILURES: usize = 10;

/// Keep a replica container registry in another region continuously in sync with a primary
/// registry (pull-only replica; the operator never writes to the primary).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "replication.imageops.io",
    version = "v1alpha1",
    kind = "ReplicaInstance",
    plural = "replicainstances",
    namespaced,
    status = "ReplicaInstanceStatus",
    shortname = "replica",
    category = "imageops",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Lag", type_ = "integer", json_path = ".status.lagSeconds"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        priority = 1,
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = kube::core::Rule::new("self.region != self.primary.region")
    .message("region (the replica region) must differ from primary.region"))]
#[x_kube(validation = kube::core::Rule::new(
    "self.primary.provider != 'oci' || (has(self.primary.registry) && has(self.replica) && has(self.replica.registry))"
).message("primary.registry and replica.registry are required when primary.provider is oci"))]
#[x_kube(validation = kube::core::Rule::new("self.primary.provider != 'tencent' || has(self.primary.instanceId)")
    .message("primary.instanceId is required when primary.provider is tencent"))]
#[serde(rename_all = "camelCase")]
pub struct ReplicaInstanceSpec {
    /// The primary registry that is replicated. It is only ever read.
    pub primary: PrimarySpec,
    /// Region of the replica; must differ from primary.region.
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("region must be a region id such as ap-shanghai (lowercase letters, digits and '-')"))]
    #[schemars(length(max = 63))]
    pub region: String,
    /// oci: the registry kept in sync. tencent: unused (the cloud creates the replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<ReplicaTarget>,
    /// What is synced, when, and how.
    #[serde(default)]
    pub sync: SyncSpec,
    /// On delete: Retain keeps the replica's content (oci) or replica instance (tencent), Delete removes it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Stop syncing; transfers in flight are cancelled.
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspend: bool,
}

/// Which kind of registry the primary is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaProvider {
    /// Any OCI / Docker registry; the operator copies the content itself.
    Oci,
    /// Tencent Container Registry Enterprise: the cloud's managed instance replication.
    Tencent,
}

impl ReplicaProvider {
    /// The lowercase name used in manifests, metrics and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oci => "oci",
            Self::Tencent => "tencent",
        }
    }
}

/// The primary registry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrimarySpec {
    /// oci or tencent.
    pub provider: ReplicaProvider,
    /// Region of the primary, e.g. ap-guangzhou.
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("primary.region must be a region id such as ap-guangzhou (lowercase letters, digits and '-')"))]
    #[schemars(length(max = 63))]
    pub region: String,
    /// oci: URL of the primary registry, e.g. https://gz.registry.example.com.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub registry: Option<String>,
    /// tencent: id of the TCR Enterprise (premium) instance, e.g. tcr-xxxx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub instance_id: Option<String>,
    /// Secret with credentials for the primary. tencent: without it the operator acts with its
    /// pod's workload identity (TKE OIDC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
}

/// The replica registry (oci).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaTarget {
    /// URL of the replica registry, e.g. https://sh.registry.example.com.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub registry: Option<String>,
    /// Secret with credentials for the replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
}

/// When a sync runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SyncTrigger {
    /// Push notifications from the primary, plus a periodic full resync as the safety net.
    #[default]
    Event,
    /// Only the periodic full resync.
    Interval,
}

/// Whether deletions on the primary reach the replica.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletesPolicy {
    /// Tag and manifest deletions on the primary are applied to the replica (only within the filters).
    Propagate,
    /// The replica never deletes (default).
    #[default]
    Ignore,
}

/// Sync settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncSpec {
    /// Event (push notifications plus periodic full resync) or Interval (periodic full resync only).
    #[serde(default)]
    pub trigger: SyncTrigger,
    /// Full resync period, e.g. 10m, 1h30m (units s, m, h).
    #[serde(default = "default_interval")]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^([0-9]+(s|m|h))+$')").message("interval must be a duration such as 30s, 10m or 1h30m"))]
    #[schemars(length(max = 32))]
    pub interval: String,
    /// Which repositories and tags are synced; empty means everything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub filters: Vec<SyncFilter>,
    /// Propagate or Ignore tag/manifest deletions on the primary.
    #[serde(default)]
    pub deletes: DeletesPolicy,
    /// false: a replica tag that points at another digest is left alone and reported.
    #[serde(default = "default_true")]
    pub overwrite: bool,
    /// Blob transfers moving bytes at once for this object (1 to 64); up to four times as many
    /// artifacts are worked on, so those waiting on a registry do not hold a transfer.
    #[serde(default = "default_transfers")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1 && self <= 64").message("maxConcurrentTransfers must be between 1 and 64"))]
    pub max_concurrent_transfers: i32,
    /// Bytes per second, as a quantity such as 200Mi or 50M; unlimited when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[0-9]+(k|Ki|M|Mi|G|Gi)?$')").message("bandwidthLimit must be a quantity such as 200Mi or 50M"))]
    #[schemars(length(max = 32))]
    pub bandwidth_limit: Option<String>,
}

impl Default for SyncSpec {
    fn default() -> Self {
        Self {
            trigger: SyncTrigger::default(),
            interval: default_interval(),
            filters: Vec::new(),
            deletes: DeletesPolicy::default(),
            overwrite: true,
            max_concurrent_transfers: default_transfers(),
            bandwidth_limit: None,
        }
    }
}

fn default_interval() -> String {
    "10m".to_string()
}
fn default_true() -> bool {
    true
}
fn default_transfers() -> i32 {
    8
}

/// Selects repositories and tags. Globs: `*` matches within one path segment, `**` across segments.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncFilter {
    /// Repository globs, e.g. team-a/**; empty means all repositories.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub repositories: Vec<String>,
    /// Tag globs, e.g. v*; empty means all tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub tags: Vec<String>,
    /// Repository or repository:tag globs that are never synced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub exclude: Vec<String>,
}

/// Overall phase of a replica.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReplicaPhase {
    /// Nothing synced yet.
    #[default]
    Pending,
    /// A sync is under way.
    Syncing,
    /// The replica holds everything the filters select.
    InSync,
    /// Some artifacts failed to sync; see recentFailures.
    Degraded,
}

/// Observed state of a ReplicaInstance.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaInstanceStatus {
    /// The metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling, Stalled, Validated and Synced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Pending, Syncing, InSync or Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ReplicaPhase>,
    /// When the last full sync finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_full_sync_time: Option<Time>,
    /// When the last push notification was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_time: Option<Time>,
    /// Age in seconds of the oldest change not yet applied to the replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<i64>,
    /// Repositories selected by the filters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repositories: Option<i64>,
    /// Artifacts (tags and their manifests) held in sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<i64>,
    /// Bytes transferred to the replica since the object was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_transferred: Option<i64>,
    /// Artifacts waiting to be transferred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<i64>,
    /// Artifacts that failed in the last sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<i64>,
    /// The most recent failures (at most 10); every failure is also an Event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub recent_failures: Vec<SyncFailure>,
}

/// One failed artifact.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncFailure {
    /// repository:tag or repository@digest.
    pub artifact: String,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// When it failed.
    pub time: Time,
}
