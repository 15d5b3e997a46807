//! VM image copy tasks: the provider-independent engine for ImageReplication with a cloud image
//! service (huawei, alibaba, aws, tencent, openstack).
//!
//! - [`ImageService`]: what a cloud offers (describe, start a copy, find a copy by its
//!   idempotency token, poll, cancel, delete); [`Service`] is the shape each cloud implements.
//! - [`rules`]: the seeds' rules as pure functions of (spec, described source image).
//! - [`plan`]: the pure per-destination state machine.
//! - [`quota`]: the per-account queue of copies in flight.
//! - [`engine`]: the thin shell: observe, plan, act, cleanup.
//! - [`provider`]: one cloud on the shared engine, as the ImageReplication provider the
//!   registry holds.
//! - [`providers`]: one module per cloud: `openstack` (Keystone v3 + Glance v2; the operator
//!   moves the bytes), `huawei`, `alibaba`, `aws`, `tencent` (the clouds' own copy APIs, on the
//!   signed HTTP plumbing of [`crate::cloud`]: signing, error classes, throttling backoff, EC2
//!   XML), the signed-API ones through [`catalog`].

pub mod catalog;
pub mod credentials;
pub mod engine;
pub mod facts;
#[cfg(test)]
pub mod fake;
pub mod follow;
pub mod glob;
pub mod members;
pub mod plan;
pub mod provider;
pub mod providers;
pub mod quota;
pub mod rules;
pub mod share;
pub mod slots;

use std::collections::BTreeMap;
use std::time::Duration;

use std::future::Future;

use futures::future::BoxFuture;

use crate::api::v1alpha1::ProviderKind;
use crate::cloud::identity::{Exchange, Temporary};
pub use crate::cloud::{Account, ProviderError};
pub use members::{Member, MemberStatus};

/// The image property (or tag) that carries our idempotency token on a destination image.
pub const TOKEN_PROPERTY: &str = "imgrep_client_token";

/// The lifecycle state of an image, mapped from each provider's own names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageState {
    /// Ready to use (Glance `active`, IMS `active`, ECS `Available`).
    Available,
    /// Being created, uploaded or imported (Glance `queued`/`saving`/`importing`, ECS `Creating`).
    Creating,
    /// Failed, killed, deactivated or being deleted; the provider's word for it.
    Unusable(String),
}

/// What a provider says about an image.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImageInfo {
    pub id: String,
    pub name: String,
    pub size_bytes: Option<u64>,
    /// Disk format (qcow2, raw, vhd, iso, ...).
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    /// private, public, shared, community, market (provider words, lower case).
    pub visibility: String,
    /// Encrypted; `None` when the provider does not say (Tencent CVM's image model has no
    /// encryption field).
    pub encrypted: Option<bool>,
    pub state: Option<ImageState>,
    /// A full-ECS (whole-machine) image.
    pub whole_machine: bool,
    /// A full-ECS image that is itself a cross-region replica made from a CBR backup.
    pub replicated_from_backup: bool,
    /// Shared with this account by another account (not a custom image of its own).
    pub shared_from_other_account: bool,
    /// Integrity digest as `algo:hex` (e.g. Glance `sha512:...`), when the provider gives one.
    pub digest: Option<String>,
    /// md5 checksum (Glance `checksum`).
    pub checksum: Option<String>,
    /// User properties carried over to copies.
    pub properties: BTreeMap<String, String>,
    /// The cloud's creation time, as it writes it (RFC 3339 mostly): `source.follow` picks the
    /// newest.
    pub created_at: Option<String>,
    /// Provider attributes a copy carries as they are (OpenStack: `min_disk`, `min_ram`,
    /// `os_hidden`, `tags`, and `visibility` unless public).
    pub carried: BTreeMap<String, serde_json::Value>,
}

/// An image a share call is about: its region, the destination's project where the cloud has
/// them (huawei), and its id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageAt {
    pub region: String,
    pub project: Option<String>,
    pub image_id: String,
}

/// How the source image is named in the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSelector {
    Id(String),
    /// Resolved to one id; ambiguity is an error.
    Name(String),
}

/// One copy to start: everything a provider needs, including our idempotency token.
#[derive(Clone, Debug, PartialEq)]
pub struct CopyRequest {
    pub source_region: String,
    pub source: ImageInfo,
    pub region: String,
    pub name: String,
    pub description: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub project: Option<String>,
    pub kms_key_id: Option<String>,
    pub resource_group_id: Option<String>,
    pub vault_id: Option<String>,
    /// Azure: replicas in the region and their storage account type.
    pub replica_count: Option<i32>,
    pub storage_account_type: Option<String>,
    /// Idempotency token: the same token never yields two copies.
    pub token: String,
    /// When this attempt was first started (Unix seconds): a copy found by name must not be
    /// older (providers without tags or client tokens on their copy call).
    pub started_at: Option<i64>,
}

/// Where a started copy can be found again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyHandle {
    pub task_id: Option<String>,
    pub image_id: Option<String>,
}

/// The state of a copy task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskPhase {
    Running,
    Succeeded,
    Failed(String),
    Cancelled,
    /// The cloud does not list the copy's image (yet): new images show in the clouds' lists
    /// some time after the call that made them ([`ImageService::lists_late`]), so this is
    /// waited for within that window and means gone only after it.
    Unlisted,
}

/// A poll result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskState {
    pub phase: TaskPhase,
    pub image_id: Option<String>,
    pub progress_percent: Option<i32>,
    pub bytes_done: Option<u64>,
    pub bytes_total: Option<u64>,
    /// The destination's digest once verified.
    pub digest: Option<String>,
    /// The provider started moving the bytes again from the start (OpenStack after a restart:
    /// Glance cannot resume an upload).
    pub restarted: bool,
}

impl CopyHandle {
    /// A copy known by its destination image only.
    pub fn of_image(id: impl Into<String>) -> Self {
        Self {
            task_id: None,
            image_id: Some(id.into()),
        }
    }

    /// The destination image id, for providers that track a copy by its image.
    pub fn image(&self) -> Result<&str, ProviderError> {
        self.image_id
            .as_deref()
            .ok_or_else(|| ProviderError::permanent("no destination image id to poll"))
    }
}

impl TaskState {
    /// The state of a copy tracked by its destination image: `None` when the image is gone,
    /// else its state and the provider's progress percentage (bytes estimated from it).
    pub fn of_image(id: &str, bytes_total: Option<u64>, image: Option<(ImageState, Option<i32>)>) -> Self {
        let mut s = Self::running(Some(id.to_string()), bytes_total);
        match image {
            None => s.phase = TaskPhase::Unlisted,
            Some((ImageState::Available, _)) => {
                s.phase = TaskPhase::Succeeded;
                s.progress_percent = Some(100);
                s.bytes_done = bytes_total;
            }
            Some((ImageState::Creating, p)) => {
                s.progress_percent = p;
                s.bytes_done = p.zip(bytes_total).map(|(p, t)| t * p.clamp(0, 100) as u64 / 100);
            }
            Some((ImageState::Unusable(what), _)) => {
                s.phase = TaskPhase::Failed(format!("destination image {id} is {what}"));
            }
        }
        s
    }

    /// A copy still running, nothing known yet but what it copies.
    pub fn running(image_id: Option<String>, bytes_total: Option<u64>) -> Self {
        Self {
            phase: TaskPhase::Running,
            image_id,
            progress_percent: None,
            bytes_done: None,
            bytes_total,
            digest: None,
            restarted: false,
        }
    }
}

/// A cloud image service, object-safe (the engine holds `dyn ImageService`). Every method is
/// one provider interaction; none waits for a copy. Providers implement [`Service`].
pub trait ImageService: Send + Sync {
    fn kind(&self) -> ProviderKind;
    /// Short-lived keys for `how`, at the cloud's security token service (a cloud whose facts
    /// have an `identity`).
    fn exchange<'a>(&'a self, how: &'a Exchange) -> BoxFuture<'a, Result<Temporary, ProviderError>>;
    /// The source image `image` names in `region` (exactly one, or an error saying why).
    fn describe<'a>(
        &'a self,
        acct: &'a Account,
        region: &'a str,
        image: &'a ImageSelector,
    ) -> BoxFuture<'a, Result<ImageInfo, ProviderError>>;
    /// Copies in flight per account when the spec does not say (the provider's documented quota).
    fn default_max_concurrent(&self) -> i32 {
        5
    }
    /// Whether an in-flight copy can be cancelled.
    fn can_cancel(&self) -> bool;
    /// How long after a copy call the cloud may still not list the new image (its eventual
    /// consistency): a copy not listed within this is waited for, never made again.
    fn lists_late(&self) -> Duration {
        Duration::ZERO
    }
    /// Whether `image`, one of `candidates(pattern)`, is an image `source.imageName: pattern`
    /// names: a glob on its name, unless the cloud's look-up answers for the pattern itself
    /// (a Compute Engine image family).
    fn follows(&self, pattern: &str, image: &ImageInfo) -> bool {
        glob::glob_match(pattern, &image.name)
    }
    /// Whether a copy call repeated with the same token gives the same copy (a client token
    /// the cloud honours), so a copy the cloud does not list yet may safely be asked for again.
    fn start_idempotent(&self) -> bool {
        false
    }
    /// The account's own images in `region` that `source.follow` picks from (the caller
    /// matches their names against `pattern`, which may narrow the listing where the cloud
    /// filters by wildcard).
    fn candidates<'a>(
        &'a self,
        acct: &'a Account,
        region: &'a str,
        pattern: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ImageInfo>, ProviderError>>;
    /// Start a copy. Must be idempotent per `req.token`.
    fn start_copy<'a>(
        &'a self,
        acct: &'a Account,
        req: &'a CopyRequest,
    ) -> BoxFuture<'a, Result<CopyHandle, ProviderError>>;
    /// Find the copy started with `req.token` in `req.region`, if any.
    fn find_copy<'a>(
        &'a self,
        acct: &'a Account,
        req: &'a CopyRequest,
    ) -> BoxFuture<'a, Result<Option<CopyHandle>, ProviderError>>;
    /// Poll a copy. `req` is the request the copy was started with (providers that move the
    /// bytes themselves resume from it after a restart).
    fn poll<'a>(
        &'a self,
        acct: &'a Account,
        req: &'a CopyRequest,
        handle: &'a CopyHandle,
    ) -> BoxFuture<'a, Result<TaskState, ProviderError>>;
    /// Cancel a copy in flight; the partial destination image goes with it.
    fn cancel<'a>(
        &'a self,
        acct: &'a Account,
        region: &'a str,
        handle: &'a CopyHandle,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;
    /// Delete a destination image (absent already is success). `project` is the destination's
    /// project where the provider has them (huawei).
    fn delete_image<'a>(
        &'a self,
        acct: &'a Account,
        region: &'a str,
        project: Option<&'a str>,
        image_id: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;
    /// Whether the cloud marks an image superseded by another (Compute Engine's deprecation), so
    /// a kept copy of an earlier source points its users to the current one.
    fn marks_superseded(&self) -> bool {
        false
    }
    /// Mark the copy `at` superseded by image `by` (see [`ImageService::marks_superseded`]).
    fn supersede<'a>(
        &'a self,
        acct: &'a Account,
        at: &'a ImageAt,
        by: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        let _ = (acct, at, by);
        Box::pin(async { Ok(()) })
    }
    /// Whether a destination image still exists and is usable (drift check).
    fn image_exists<'a>(
        &'a self,
        acct: &'a Account,
        region: &'a str,
        project: Option<&'a str>,
        image_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, ProviderError>>;
    /// Who the image is shared with, as the cloud lists its members.
    fn members<'a>(&'a self, acct: &'a Account, at: &'a ImageAt) -> BoxFuture<'a, Result<Vec<Member>, ProviderError>>;
    /// Share the image with `account` (already shared is success).
    fn share<'a>(
        &'a self,
        acct: &'a Account,
        at: &'a ImageAt,
        account: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;
    /// Withdraw the share with `account` (not shared is success).
    fn unshare<'a>(
        &'a self,
        acct: &'a Account,
        at: &'a ImageAt,
        account: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;
    /// Accept the share as the member `account`, with the member's own credentials.
    fn accept<'a>(
        &'a self,
        member: &'a Account,
        at: &'a ImageAt,
        account: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;
}

/// A cloud that gives no short-lived keys: what to do instead.
pub fn no_identity(kind: ProviderKind) -> ProviderError {
    ProviderError::permanent(format!(
        "provider {} has no workload identity or roles: name a Secret in credentialsSecretRef",
        kind.as_str()
    ))
}

/// What a provider implements: the calls of [`ImageService`] as native async fns. The one
/// adapter below boxes them into the object-safe [`ImageService`] the engine and the provider
/// registry hold, so no provider writes the boxing itself.
pub trait Service: Send + Sync {
    fn kind(&self) -> ProviderKind;
    /// Copies in flight per account when the spec does not say (the provider's documented quota).
    fn default_max_concurrent(&self) -> i32 {
        5
    }
    /// Whether an in-flight copy can be cancelled.
    fn can_cancel(&self) -> bool;
    /// See [`ImageService::lists_late`].
    fn lists_late(&self) -> Duration {
        Duration::ZERO
    }
    /// See [`ImageService::follows`].
    fn follows(&self, pattern: &str, image: &ImageInfo) -> bool {
        glob::glob_match(pattern, &image.name)
    }
    /// See [`ImageService::start_idempotent`].
    fn start_idempotent(&self) -> bool {
        false
    }
    /// See [`ImageService::exchange`].
    fn exchange(&self, how: &Exchange) -> impl Future<Output = Result<Temporary, ProviderError>> + Send {
        let _ = how;
        let kind = self.kind();
        async move { Err(no_identity(kind)) }
    }
    fn describe(
        &self,
        acct: &Account,
        region: &str,
        image: &ImageSelector,
    ) -> impl Future<Output = Result<ImageInfo, ProviderError>> + Send;
    /// Start a copy. Must be idempotent per `req.token`.
    /// See [`ImageService::candidates`].
    fn candidates(
        &self,
        acct: &Account,
        region: &str,
        pattern: &str,
    ) -> impl Future<Output = Result<Vec<ImageInfo>, ProviderError>> + Send;
    fn start_copy(
        &self,
        acct: &Account,
        req: &CopyRequest,
    ) -> impl Future<Output = Result<CopyHandle, ProviderError>> + Send;
    /// Find the copy started with `req.token` in `req.region`, if any.
    fn find_copy(
        &self,
        acct: &Account,
        req: &CopyRequest,
    ) -> impl Future<Output = Result<Option<CopyHandle>, ProviderError>> + Send;
    /// Poll a copy. `req` is the request the copy was started with (providers that move the
    /// bytes themselves resume from it after a restart).
    fn poll(
        &self,
        acct: &Account,
        req: &CopyRequest,
        handle: &CopyHandle,
    ) -> impl Future<Output = Result<TaskState, ProviderError>> + Send;
    /// Cancel a copy in flight; the partial destination image goes with it.
    fn cancel(
        &self,
        acct: &Account,
        region: &str,
        handle: &CopyHandle,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;
    /// Delete a destination image (absent already is success). `project` is the destination's
    /// project where the provider has them (huawei).
    fn delete_image(
        &self,
        acct: &Account,
        region: &str,
        project: Option<&str>,
        image_id: &str,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;
    /// See [`ImageService::marks_superseded`].
    fn marks_superseded(&self) -> bool {
        false
    }
    /// See [`ImageService::supersede`].
    fn supersede(
        &self,
        acct: &Account,
        at: &ImageAt,
        by: &str,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send {
        let _ = (acct, at, by);
        async { Ok(()) }
    }
    /// Whether a destination image still exists and is usable (drift check).
    fn image_exists(
        &self,
        acct: &Account,
        region: &str,
        project: Option<&str>,
        image_id: &str,
    ) -> impl Future<Output = Result<bool, ProviderError>> + Send;
    /// Who the image is shared with, as the cloud lists its members.
    fn members(&self, acct: &Account, at: &ImageAt) -> impl Future<Output = Result<Vec<Member>, ProviderError>> + Send {
        let _ = (acct, at);
        async { Err(self.cannot_share()) }
    }
    /// Share the image with `account` (already shared is success).
    fn share(
        &self,
        acct: &Account,
        at: &ImageAt,
        account: &str,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send {
        let _ = (acct, at, account);
        async { Err(self.cannot_share()) }
    }
    /// Withdraw the share with `account` (not shared is success).
    fn unshare(
        &self,
        acct: &Account,
        at: &ImageAt,
        account: &str,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send {
        let _ = (acct, at, account);
        async { Err(self.cannot_share()) }
    }
    /// Accept the share as the member `account`, with the member's own credentials (clouds
    /// whose shares need no acceptance: nothing to do).
    fn accept(
        &self,
        member: &Account,
        at: &ImageAt,
        account: &str,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send {
        let _ = (member, at, account);
        async { Ok(()) }
    }
    /// The error of a share call on a cloud that cannot share.
    fn cannot_share(&self) -> ProviderError {
        ProviderError::permanent(format!("provider {} cannot share images", self.kind().as_str()))
    }
}

impl<T: Service> ImageService for T {
    fn kind(&self) -> ProviderKind {
        Service::kind(self)
    }
    fn default_max_concurrent(&self) -> i32 {
        Service::default_max_concurrent(self)
    }
    fn can_cancel(&self) -> bool {
        Service::can_cancel(self)
    }
    fn lists_late(&self) -> Duration {
        Service::lists_late(self)
    }
    fn follows(&self, pattern: &str, image: &ImageInfo) -> bool {
        Service::follows(self, pattern, image)
    }
    fn start_idempotent(&self) -> bool {
        Service::start_idempotent(self)
    }
    fn exchange<'a>(&'a self, how: &'a Exchange) -> BoxFuture<'a, Result<Temporary, ProviderError>> {
        Box::pin(Service::exchange(self, how))
    }
    fn describe<'a>(
        &'a self,
        acct: &'a Account,
        region: &'a str,
        image: &'a ImageSelector,
    ) -> BoxFuture<'a, Result<ImageInfo, ProviderError>> {
        Box::pin(Service::describe(self, acct, region, image))
    }
    fn candidates<'a>(
        &'a self,
        acct: &'a Account,
        region: &'a str,
        pattern: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ImageInfo>, ProviderError>> {
        Box::pin(Service::candidates(self, acct, region, pattern))
    }
    fn start_copy<'a>(
        &'a self,
        acct: &'a Account,
        req: &'a CopyRequest,
    ) -> BoxFuture<'a, Result<CopyHandle, ProviderError>> {
        Box::pin(Service::start_copy(self, acct, req))
    }
    fn find_copy<'a>(
        &'a self,
        acct: &'a Account,
        req: &'a CopyRequest,
    ) -> BoxFuture<'a, Result<Option<CopyHandle>, ProviderError>> {
        Box::pin(Service::find_copy(self, acct, req))
    }
    fn poll<'a>(
        &'a self,
        acct: &'a Account,
        req: &'a CopyRequest,
        handle: &'a CopyHandle,
    ) -> BoxFuture<'a, Result<TaskState, ProviderError>> {
        Box::pin(Service::poll(self, acct, req, handle))
    }
    fn cancel<'a>(
        &'a self,
        acct: &'a Account,
        region: &'a str,
        handle: &'a CopyHandle,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(Service::cancel(self, acct, region, handle))
    }
    fn delete_image<'a>(
        &'a self,
        acct: &'a Account,
        region: &'a str,
        project: Option<&'a str>,
        image_id: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(Service::delete_image(self, acct, region, project, image_id))
    }
    fn marks_superseded(&self) -> bool {
        Service::marks_superseded(self)
    }
    fn supersede<'a>(
        &'a self,
        acct: &'a Account,
        at: &'a ImageAt,
        by: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(Service::supersede(self, acct, at, by))
    }
    fn image_exists<'a>(
        &'a self,
        acct: &'a Account,
        region: &'a str,
        project: Option<&'a str>,
        image_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, ProviderError>> {
        Box::pin(Service::image_exists(self, acct, region, project, image_id))
    }
    fn members<'a>(&'a self, acct: &'a Account, at: &'a ImageAt) -> BoxFuture<'a, Result<Vec<Member>, ProviderError>> {
        Box::pin(Service::members(self, acct, at))
    }
    fn share<'a>(
        &'a self,
        acct: &'a Account,
        at: &'a ImageAt,
        account: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(Service::share(self, acct, at, account))
    }
    fn unshare<'a>(
        &'a self,
        acct: &'a Account,
        at: &'a ImageAt,
        account: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(Service::unshare(self, acct, at, account))
    }
    fn accept<'a>(
        &'a self,
        member: &'a Account,
        at: &'a ImageAt,
        account: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(Service::accept(self, member, at, account))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_state_from_the_destination_image() {
        let t = Some(1000);
        let s = TaskState::of_image("i", t, Some((ImageState::Creating, Some(40))));
        assert_eq!(
            (s.phase, s.progress_percent, s.bytes_done),
            (TaskPhase::Running, Some(40), Some(400))
        );
        let s = TaskState::of_image("i", t, Some((ImageState::Available, Some(90))));
        assert_eq!((s.phase, s.bytes_done), (TaskPhase::Succeeded, t));
        let s = TaskState::of_image("i", t, Some((ImageState::Unusable("CreateFailed".into()), None)));
        assert_eq!(s.phase, TaskPhase::Failed("destination image i is CreateFailed".into()));
        let s = TaskState::of_image("i", t, None);
        assert_eq!(s.phase, TaskPhase::Unlisted);
        assert!(CopyHandle::default().image().is_err());
    }
}
