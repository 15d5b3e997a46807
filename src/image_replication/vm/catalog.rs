//! One shape for the clouds whose own API copies an image between regions and answers with the
//! destination image at once (Alibaba ECS `CopyImage`, AWS EC2 `CopyImage`, Tencent CVM
//! `SyncImages`, Compute Engine `images.insert`, Compute Gallery target regions): each says in a small [`Catalog`] how it lists and reads its images, asks for a
//! copy, finds one by our token and removes one; the adapter below makes every `Catalog` an
//! [`Service`] (so an `ImageService`) that describes, starts, finds, polls and checks copies the same way.
//!
//! Huawei IMS (copy jobs polled by job id, projects) and OpenStack (the operator moves the
//! bytes itself) differ in what they do and implement [`Service`] themselves.

use std::future::Future;
use std::time::Duration;

use super::{
    Account, CopyHandle, CopyRequest, ImageAt, ImageInfo, ImageSelector, ImageState, Member, MemberStatus,
    ProviderError, Service, TaskPhase, TaskState,
};
use crate::api::v1alpha1::ProviderKind;
use crate::cloud;
use crate::cloud::identity::{Exchange, Temporary};

/// A text field of a JSON image record (ECS, CVM), empty when absent.
pub fn json_text(image: &serde_json::Value, key: &str) -> String {
    image
        .get(key)
        .and_then(serde_json::Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// What one such cloud defines: its image record and the calls on it.
pub trait Catalog: Send + Sync {
    /// The cloud's image record (JSON for ECS and CVM, an XML node for EC2).
    type Image: Send + Sync;
    const KIND: ProviderKind;
    /// The service's name in messages (`ECS`).
    const SERVICE: &'static str;
    /// Whether an in-flight copy can be cancelled.
    const CAN_CANCEL: bool;
    /// How long a new image may go unlisted after the copy call (the cloud's eventual
    /// consistency; see [`super::ImageService::lists_late`]).
    const LISTS_LATE: Duration = Duration::from_secs(300);
    /// Whether the copy call takes a client token that makes it idempotent.
    const START_IDEMPOTENT: bool;
    /// Whether withdrawing a share the image does not have is answered as success (EC2), so
    /// no list is read first.
    const UNSHARE_IS_IDEMPOTENT: bool = false;

    /// Short-lived keys (see [`super::ImageService::exchange`]).
    fn exchange(&self, how: &Exchange) -> impl Future<Output = Result<Temporary, ProviderError>> + Send {
        let _ = how;
        async move { Err(super::no_identity(Self::KIND)) }
    }
    /// The images `selector` may name in `region`; the adapter keeps the exact matches.
    fn lookup(
        &self,
        acct: &Account,
        region: &str,
        selector: &ImageSelector,
    ) -> impl Future<Output = Result<Vec<Self::Image>, ProviderError>> + Send;
    /// The account's own images in `region` (`pattern`, a glob, may narrow the listing where
    /// the cloud filters by wildcard; the adapter matches the names).
    fn own_images(
        &self,
        acct: &Account,
        region: &str,
        pattern: &str,
    ) -> impl Future<Output = Result<Vec<Self::Image>, ProviderError>> + Send;
    /// See [`super::ImageService::follows`].
    fn follows(pattern: &str, image: &ImageInfo) -> bool {
        super::glob::glob_match(pattern, &image.name)
    }
    /// One image by id, if it exists.
    fn image(
        &self,
        acct: &Account,
        region: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<Self::Image>, ProviderError>> + Send;
    fn id(image: &Self::Image) -> String;
    /// Whether `image` is the one `id` names (a cloud may name it two ways: a resource name or a bare name).
    fn is(image: &Self::Image, id: &str) -> bool {
        Self::id(image) == id
    }
    fn name(image: &Self::Image) -> String;
    fn parse(image: &Self::Image) -> ImageInfo;
    /// The image's state, and the copy's progress percent where the cloud reports one.
    fn state(image: &Self::Image) -> (ImageState, Option<i32>);
    /// The state of the copy in `region` (a cloud whose copy is the same image replicated,
    /// that region's replication); `None` when the image has no copy there.
    fn copy_state(image: &Self::Image, _region: &str) -> Option<(ImageState, Option<i32>)> {
        Some(Self::state(image))
    }
    /// The copy started with `req.token` in `req.region`, if any.
    fn find(
        &self,
        acct: &Account,
        req: &CopyRequest,
    ) -> impl Future<Output = Result<Option<CopyHandle>, ProviderError>> + Send;
    /// Ask for a copy (`find` found none).
    fn request_copy(
        &self,
        acct: &Account,
        req: &CopyRequest,
    ) -> impl Future<Output = Result<CopyHandle, ProviderError>> + Send;
    /// Start the copy: the one started with `req.token` when `find` finds it, else a new one
    /// (`request_copy`). A cloud whose find and request read the same record does both with
    /// one read (Azure: the version).
    fn start(
        &self,
        acct: &Account,
        req: &CopyRequest,
    ) -> impl Future<Output = Result<CopyHandle, ProviderError>> + Send {
        async move {
            match self.find(acct, req).await? {
                Some(h) => Ok(h),
                None => self.request_copy(acct, req).await,
            }
        }
    }
    /// Why the copy `handle` names failed, when its image is not listed and the cloud tracks the
    /// copy call itself (Compute Engine's operation): a copy refused after the call made no
    /// image, and is failed at once rather than waited for as one listed late.
    fn task_failure(
        &self,
        acct: &Account,
        handle: &CopyHandle,
    ) -> impl Future<Output = Result<Option<String>, ProviderError>> + Send {
        let _ = (acct, handle);
        async { Ok(None) }
    }
    /// Done before an available copy is reported (EC2 makes sure of our tag).
    fn settle(
        &self,
        _acct: &Account,
        _req: &CopyRequest,
        _image: &Self::Image,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send {
        async { Ok(()) }
    }
    /// Cancel a copy in flight; the partial destination image goes with it.
    fn cancel(
        &self,
        acct: &Account,
        region: &str,
        handle: &CopyHandle,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;
    /// Whether the cloud marks an image superseded (see [`super::ImageService::marks_superseded`]).
    const MARKS_SUPERSEDED: bool = false;
    /// Mark image `id` superseded by image `by`.
    fn supersede(
        &self,
        acct: &Account,
        region: &str,
        id: &str,
        by: &str,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send {
        let _ = (acct, region, id, by);
        async { Ok(()) }
    }
    /// Delete a destination image; absent already is success.
    fn delete(&self, acct: &Account, region: &str, id: &str) -> impl Future<Output = Result<(), ProviderError>> + Send;
    /// The accounts image `id` is shared with (these clouds have no acceptance step).
    fn shared_with(
        &self,
        acct: &Account,
        region: &str,
        id: &str,
    ) -> impl Future<Output = Result<Vec<String>, ProviderError>> + Send;
    /// Share image `id` with `account`, or withdraw the share (`add` false); idempotent.
    fn set_share(
        &self,
        acct: &Account,
        region: &str,
        id: &str,
        account: &str,
        add: bool,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;
}

impl<C: Catalog> Service for C {
    fn kind(&self) -> ProviderKind {
        C::KIND
    }

    fn can_cancel(&self) -> bool {
        C::CAN_CANCEL
    }

    fn lists_late(&self) -> Duration {
        C::LISTS_LATE
    }

    fn follows(&self, pattern: &str, image: &ImageInfo) -> bool {
        C::follows(pattern, image)
    }

    fn marks_superseded(&self) -> bool {
        C::MARKS_SUPERSEDED
    }

    async fn supersede(&self, acct: &Account, at: &ImageAt, by: &str) -> Result<(), ProviderError> {
        cloud::gone_is_ok(C::supersede(self, acct, &at.region, &at.image_id, by).await)
    }

    fn start_idempotent(&self) -> bool {
        C::START_IDEMPOTENT
    }

    fn exchange(&self, how: &Exchange) -> impl Future<Output = Result<Temporary, ProviderError>> + Send {
        Catalog::exchange(self, how)
    }

    async fn describe(&self, acct: &Account, region: &str, image: &ImageSelector) -> Result<ImageInfo, ProviderError> {
        let wanted = match image {
            ImageSelector::Id(v) | ImageSelector::Name(v) => v.as_str(),
        };
        let exact = self
            .lookup(acct, region, image)
            .await?
            .into_iter()
            .filter(|i| match image {
                ImageSelector::Id(id) => C::is(i, id),
                ImageSelector::Name(n) => C::name(i) == *n,
            })
            .map(|i| (C::id(&i), i))
            .collect();
        cloud::exactly_one(C::SERVICE, region, wanted, exact).map(|i| C::parse(&i))
    }

    async fn candidates(&self, acct: &Account, region: &str, pattern: &str) -> Result<Vec<ImageInfo>, ProviderError> {
        let listed = self.own_images(acct, region, pattern).await?;
        Ok(listed
            .iter()
            .map(|i| ImageInfo {
                state: Some(C::state(i).0),
                ..C::parse(i)
            })
            .collect())
    }

    async fn start_copy(&self, acct: &Account, req: &CopyRequest) -> Result<CopyHandle, ProviderError> {
        // A copy whose answer was lost is found by its token before another is asked for.
        C::start(self, acct, req).await
    }

    async fn find_copy(&self, acct: &Account, req: &CopyRequest) -> Result<Option<CopyHandle>, ProviderError> {
        self.find(acct, req).await
    }

    async fn poll(&self, acct: &Account, req: &CopyRequest, handle: &CopyHandle) -> Result<TaskState, ProviderError> {
        let id = handle.image()?;
        let img = self.image(acct, &req.region, id).await?;
        let view = img.as_ref().and_then(|i| C::copy_state(i, &req.region));
        if let (Some((ImageState::Available, _)), Some(i)) = (&view, &img) {
            self.settle(acct, req, i).await?;
        }
        if view.is_none()
            && let Some(why) = C::task_failure(self, acct, handle).await?
        {
            let mut st = TaskState::running(Some(id.to_string()), req.source.size_bytes);
            st.phase = TaskPhase::Failed(why);
            return Ok(st);
        }
        Ok(TaskState::of_image(id, req.source.size_bytes, view))
    }

    async fn cancel(&self, acct: &Account, region: &str, handle: &CopyHandle) -> Result<(), ProviderError> {
        Catalog::cancel(self, acct, region, handle).await
    }

    async fn delete_image(
        &self,
        acct: &Account,
        region: &str,
        _project: Option<&str>,
        image_id: &str,
    ) -> Result<(), ProviderError> {
        self.delete(acct, region, image_id).await
    }

    async fn members(&self, acct: &Account, at: &ImageAt) -> Result<Vec<Member>, ProviderError> {
        let accounts = self.shared_with(acct, &at.region, &at.image_id).await?;
        Ok(accounts
            .into_iter()
            .map(|a| Member::new(a, MemberStatus::Shared))
            .collect())
    }

    async fn share(&self, acct: &Account, at: &ImageAt, account: &str) -> Result<(), ProviderError> {
        self.set_share(acct, &at.region, &at.image_id, account, true).await
    }

    /// Only an account the image is shared with is removed (the clouds differ in how they
    /// answer the removal of one it is not): not shared, or no image, is success.
    async fn unshare(&self, acct: &Account, at: &ImageAt, account: &str) -> Result<(), ProviderError> {
        if C::UNSHARE_IS_IDEMPOTENT {
            return cloud::gone_is_ok(self.set_share(acct, &at.region, &at.image_id, account, false).await);
        }
        let listed = match self.shared_with(acct, &at.region, &at.image_id).await {
            Ok(l) => l,
            Err(e) if e.not_found => return Ok(()),
            Err(e) => return Err(e),
        };
        if !listed.iter().any(|a| a == account) {
            return Ok(());
        }
        cloud::gone_is_ok(self.set_share(acct, &at.region, &at.image_id, account, false).await)
    }

    /// Usable or still being made.
    async fn image_exists(
        &self,
        acct: &Account,
        region: &str,
        _project: Option<&str>,
        image_id: &str,
    ) -> Result<bool, ProviderError> {
        let img = self.image(acct, region, image_id).await?;
        let state = img.and_then(|i| C::copy_state(&i, region));
        Ok(state.is_some_and(|(s, _)| matches!(s, ImageState::Available | ImageState::Creating)))
    }
}
