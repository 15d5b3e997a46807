//! An in-memory `ImageService` for in-process engine tests: no HTTP, no subprocess. Images live
//! in a map per region; a copy becomes a `Creating` image that turns `Available` after
//! `polls_to_finish` polls. Every call is counted, and the account's `password` must equal
//! `password` (else the call fails as an authentication error, as a cloud refusing a key does).

use std::collections::HashMap;
use std::sync::Mutex;

use super::{
    Account, CopyHandle, CopyRequest, ImageAt, ImageInfo, ImageSelector, ImageState, Member, MemberStatus,
    ProviderError, Service, TaskState,
};
use crate::api::v1alpha1::ProviderKind;

#[derive(Default)]
pub struct FakeCloud {
    pub password: String,
    pub polls_to_finish: u32,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// (region, id) -> (image, polls so far while creating)
    images: HashMap<(String, String), (ImageInfo, u32)>,
    /// token -> (region, image id)
    copies: HashMap<String, (String, String)>,
    calls: HashMap<&'static str, u32>,
    next: u32,
    /// (region, image id) -> members (openstack rules: shared members are pending until they
    /// accept with their own credentials, whose password is `member:<account>`).
    members: HashMap<(String, String), Vec<Member>>,
}

impl FakeCloud {
    pub fn new(password: &str) -> Self {
        Self {
            password: password.into(),
            polls_to_finish: 1,
            ..Default::default()
        }
    }

    /// Put an available image into a region.
    pub fn add_image(&self, region: &str, id: &str, size: u64) {
        self.add_image_created(region, id, size, "2026-01-01T00:00:00Z");
    }

    /// Put an available image created at `created` (RFC 3339) into a region.
    pub fn add_image_created(&self, region: &str, id: &str, size: u64, created: &str) {
        let info = ImageInfo {
            id: id.into(),
            name: id.into(),
            size_bytes: Some(size),
            disk_format: Some("qcow2".into()),
            container_format: Some("bare".into()),
            visibility: "private".into(),
            encrypted: Some(false),
            state: Some(ImageState::Available),
            created_at: Some(created.into()),
            ..Default::default()
        };
        let mut s = self.state.lock().unwrap();
        s.images.insert((region.into(), id.into()), (info, 0));
    }

    /// The members of an image, as the cloud lists them.
    pub fn members_of(&self, region: &str, image: &str) -> Vec<Member> {
        let s = self.state.lock().unwrap();
        s.members
            .get(&(region.into(), image.into()))
            .cloned()
            .unwrap_or_default()
    }

    /// How many times an operation was called.
    pub fn calls(&self, op: &str) -> u32 {
        self.state.lock().unwrap().calls.get(op).copied().unwrap_or(0)
    }

    /// Image ids in a region.
    pub fn images_in(&self, region: &str) -> Vec<String> {
        let s = self.state.lock().unwrap();
        let mut v: Vec<String> = s
            .images
            .keys()
            .filter(|(r, _)| r == region)
            .map(|(_, i)| i.clone())
            .collect();
        v.sort();
        v
    }

    fn enter(&self, op: &'static str, acct: &Account) -> Result<std::sync::MutexGuard<'_, State>, ProviderError> {
        let mut s = self.state.lock().unwrap();
        *s.calls.entry(op).or_default() += 1;
        if acct.text("password").as_deref() != Some(self.password.as_str()) {
            return Err(ProviderError::auth(format!(
                "{op}: the cloud refused the credentials (HTTP 401)"
            )));
        }
        Ok(s)
    }
}

impl Service for FakeCloud {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Openstack
    }
    fn can_cancel(&self) -> bool {
        true
    }
    async fn describe(&self, acct: &Account, region: &str, image: &ImageSelector) -> Result<ImageInfo, ProviderError> {
        let s = self.enter("describe", acct)?;
        s.images
            .iter()
            .find(|((r, id), (i, _))| {
                r == region
                    && match image {
                        ImageSelector::Id(x) => id == x,
                        ImageSelector::Name(n) => &i.name == n,
                    }
            })
            .map(|(_, (i, _))| i.clone())
            .ok_or_else(|| ProviderError::not_found(format!("image {image:?} not found in {region}")))
    }
    async fn candidates(&self, acct: &Account, region: &str, _pattern: &str) -> Result<Vec<ImageInfo>, ProviderError> {
        let s = self.enter("candidates", acct)?;
        Ok(s.images
            .iter()
            .filter(|((r, _), _)| r == region)
            .map(|(_, (i, _))| i.clone())
            .collect())
    }
    async fn start_copy(&self, acct: &Account, req: &CopyRequest) -> Result<CopyHandle, ProviderError> {
        let mut s = self.enter("start_copy", acct)?;
        if let Some((_, id)) = s.copies.get(&req.token) {
            return Ok(CopyHandle {
                task_id: None,
                image_id: Some(id.clone()),
            });
        }
        s.next += 1;
        let id = format!("copy-{}", s.next);
        let info = ImageInfo {
            id: id.clone(),
            name: req.name.clone(),
            state: Some(ImageState::Creating),
            ..req.source.clone()
        };
        s.images.insert((req.region.clone(), id.clone()), (info, 0));
        s.copies.insert(req.token.clone(), (req.region.clone(), id.clone()));
        Ok(CopyHandle {
            task_id: None,
            image_id: Some(id),
        })
    }
    async fn find_copy(&self, acct: &Account, req: &CopyRequest) -> Result<Option<CopyHandle>, ProviderError> {
        let s = self.enter("find_copy", acct)?;
        Ok(s.copies.get(&req.token).map(|(_, id)| CopyHandle {
            task_id: None,
            image_id: Some(id.clone()),
        }))
    }
    async fn poll(&self, acct: &Account, req: &CopyRequest, handle: &CopyHandle) -> Result<TaskState, ProviderError> {
        let mut s = self.enter("poll", acct)?;
        let id = handle.image_id.clone().unwrap_or_default();
        let finish = self.polls_to_finish;
        let image = s.images.get_mut(&(req.region.clone(), id.clone())).map(|(i, polls)| {
            *polls += 1;
            if *polls >= finish {
                i.state = Some(ImageState::Available);
            }
            let percent = (*polls * 100 / finish.max(1)).min(100) as i32;
            (i.state.clone().unwrap_or(ImageState::Creating), Some(percent))
        });
        Ok(TaskState::of_image(&id, req.source.size_bytes, image))
    }
    async fn cancel(&self, acct: &Account, region: &str, handle: &CopyHandle) -> Result<(), ProviderError> {
        let mut s = self.enter("cancel", acct)?;
        let id = handle.image_id.clone().unwrap_or_default();
        s.images.remove(&(region.to_string(), id));
        Ok(())
    }
    async fn delete_image(
        &self,
        acct: &Account,
        region: &str,
        _project: Option<&str>,
        image_id: &str,
    ) -> Result<(), ProviderError> {
        let mut s = self.enter("delete_image", acct)?;
        s.images.remove(&(region.to_string(), image_id.to_string()));
        Ok(())
    }
    async fn image_exists(
        &self,
        acct: &Account,
        region: &str,
        _project: Option<&str>,
        image_id: &str,
    ) -> Result<bool, ProviderError> {
        let s = self.enter("image_exists", acct)?;
        Ok(s.images.contains_key(&(region.to_string(), image_id.to_string())))
    }
    async fn members(&self, acct: &Account, at: &ImageAt) -> Result<Vec<Member>, ProviderError> {
        let s = self.enter("members", acct)?;
        Ok(s.members
            .get(&(at.region.clone(), at.image_id.clone()))
            .cloned()
            .unwrap_or_default())
    }
    async fn share(&self, acct: &Account, at: &ImageAt, account: &str) -> Result<(), ProviderError> {
        let mut s = self.enter("share", acct)?;
        let list = s.members.entry((at.region.clone(), at.image_id.clone())).or_default();
        if !list.iter().any(|m| m.account == account) {
            list.push(Member::new(account, MemberStatus::Pending));
        }
        Ok(())
    }
    async fn unshare(&self, acct: &Account, at: &ImageAt, account: &str) -> Result<(), ProviderError> {
        let mut s = self.enter("unshare", acct)?;
        if let Some(list) = s.members.get_mut(&(at.region.clone(), at.image_id.clone())) {
            list.retain(|m| m.account != account);
        }
        Ok(())
    }
    async fn accept(&self, member: &Account, at: &ImageAt, account: &str) -> Result<(), ProviderError> {
        let mut s = self.state.lock().unwrap();
        *s.calls.entry("accept").or_default() += 1;
        if member.text("password") != Some(format!("member:{account}")) {
            return Err(ProviderError::auth(
                "accept: the cloud refused the member's credentials (HTTP 401)",
            ));
        }
        let m = s
            .members
            .get_mut(&(at.region.clone(), at.image_id.clone()))
            .and_then(|l| l.iter_mut().find(|m| m.account == account))
            .ok_or_else(|| {
                ProviderError::not_found(format!("accept: image {} is not shared with {account}", at.image_id))
            })?;
        m.status = MemberStatus::Accepted;
        Ok(())
    }
}
