//! What a cloud states about sharing an image ([`Sharing`], one per provider module) and what it
//! lists as an image's members ([`Member`]): plain types, used by the spec's validation, the
//! providers and the share plan (the `share` module).

/// What a cloud states about sharing an image (each provider module holds its own).
#[derive(Clone, Copy, Debug)]
pub struct Sharing {
    /// What an account id looks like, for the error message ("a 12-digit AWS account id").
    pub account_rule: &'static str,
    pub valid_account: fn(&str) -> bool,
    /// Accounts one image can be shared with.
    pub member_limit: usize,
    /// Where the limit is stated.
    pub limit_source: &'static str,
    /// The member accepts a share before it can use the image (huawei, openstack).
    pub needs_accept: bool,
}

/// A member's status as the cloud lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberStatus {
    /// Shared, not yet accepted (huawei, openstack).
    Pending,
    Accepted,
    Rejected,
    /// Shared; the cloud has no acceptance step.
    Shared,
}

/// One account an image is shared with, as the cloud lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub account: String,
    pub status: MemberStatus,
}

impl Member {
    pub fn new(account: impl Into<String>, status: MemberStatus) -> Self {
        Self {
            account: account.into(),
            status,
        }
    }
}
