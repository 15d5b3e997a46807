//! What a cloud lists as an image's members ([`Member`]): plain types, read by the providers
//! and the share plan (the `share` module); what a cloud states about sharing is its
//! [`Sharing`](super::facts::Sharing) fact.

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
