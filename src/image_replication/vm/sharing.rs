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
    /// How long (seconds) a member that a share call added, or a withdraw removed, may take to
    /// show in (or leave) the image's member list; the call is not made again meanwhile.
    pub members_lag: u64,
    /// It refuses to share an image encrypted with its default key (huawei IMS, EC2); the
    /// operator cannot tell the key, so an encrypted source is not shared in place.
    pub refuses_encrypted_in_place: bool,
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

/// A Glance-style member list (Glance v2, and Huawei IMS's `GlanceListImageMembers`):
/// `{"members": [{"member_id", "status": pending|accepted|rejected}]}`.
pub fn glance_members(v: &serde_json::Value) -> Vec<Member> {
    v.get("members")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let id = m.get("member_id")?.as_str()?;
            let status = match m.get("status").and_then(serde_json::Value::as_str) {
                Some("accepted") => MemberStatus::Accepted,
                Some("rejected") => MemberStatus::Rejected,
                _ => MemberStatus::Pending,
            };
            Some(Member::new(id, status))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_glance_members() {
        let v = json!({"members": [
            {"member_id": "p1", "image_id": "i", "status": "accepted", "created_at": "x", "updated_at": "x", "schema": "/v2/schemas/member"},
            {"member_id": "p2", "status": "pending"}, {"member_id": "p3", "status": "rejected"}, {"status": "accepted"}],
            "schema": "/v2/schemas/members"});
        assert_eq!(
            glance_members(&v),
            vec![
                Member::new("p1", MemberStatus::Accepted),
                Member::new("p2", MemberStatus::Pending),
                Member::new("p3", MemberStatus::Rejected),
            ]
        );
    }
}
