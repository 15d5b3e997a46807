//! Sharing a destination's image with other accounts (`destinations[].shareWith`): the facts
//! each cloud states about sharing ([`Sharing`], held by each provider module), what the cloud
//! lists as members of an image ([`Member`]), and the pure per-destination plan of shares:
//! share once the image is available, accept as the member where the cloud needs it and a
//! member Secret is given, withdraw what left the list, retry failures with backoff.
//!
//! Per account: `Pending` (the image is not available yet, the share call is under way, or the
//! member has not accepted) -> `Shared` (clouds without acceptance) or `Accepted`; `Failed`
//! (retried with backoff up to the attempt bound, or final); `Withdrawing` until the cloud no
//! longer lists an account that left `shareWith`. Only accounts this object shared are ever
//! withdrawn: members added by hand are not in its status and are left alone.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::ProviderError;
pub use super::facts::Sharing;
pub use super::members::{Member, MemberStatus};
use crate::api::conditions::Desired;
use crate::api::v1alpha1::{
    DestinationPhase, DestinationSpec, DestinationStatus, SharePhase, ShareReason, ShareSpec, ShareStatus,
};
use crate::plan::{Announcement, Standing, retry_delay, secs_since, standing_conditions};

/// A share call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShareCall {
    Share,
    /// As the member, with its Secret.
    Accept,
    Unshare,
}

impl ShareCall {
    fn verb(self) -> &'static str {
        match self {
            Self::Share => "sharing",
            Self::Accept => "accepting as the member",
            Self::Unshare => "withdrawing the share",
        }
    }
}

/// What was observed of one destination's shares.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShareObs {
    /// The members the cloud lists for the image, when they were read this time.
    pub members: Option<Result<Vec<Member>, ProviderError>>,
    /// The share calls of the last act that failed, per account.
    pub failed: HashMap<String, (ShareCall, ProviderError)>,
}

/// One share call to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareWork {
    pub region: String,
    pub image_id: String,
    pub account: String,
    pub call: ShareCall,
    /// What the member's credentials are known by (Accept): its Secret's name, or its role
    /// (`AcceptSpec::credentials_key`).
    pub secret: Option<String>,
}

/// The message of a share that waits for the member, while the cloud lists it as pending
/// (prose only: `ShareReason::AwaitingMember` / `Accepting` say it as data).
const AWAITING: &str = "shared; waiting for the member to accept";

/// How often the members are read while only a member who accepts in its own account is
/// awaited.
pub const MEMBER_WAIT: Duration = Duration::from_secs(60);

/// Whether a share is in place for its account.
pub fn done(s: &ShareStatus) -> bool {
    matches!(s.state, SharePhase::Shared | SharePhase::Accepted)
}

/// Whether a share is on the failure track: a call of ours failed (`Pending` with reason
/// `CallFailed` while it will be retried, `Failed` once it will not) or the member rejected it.
pub fn call_failed(s: &ShareStatus) -> bool {
    s.state == SharePhase::Failed || s.reason == Some(ShareReason::CallFailed)
}

/// Whether a share will not change without someone else: in place, failed for good within
/// `attempts`, or waiting for a member who accepts in its own account (`replicate -f` stops
/// there).
pub fn settled(s: &ShareStatus, attempts: i32) -> bool {
    done(s)
        || (s.state == SharePhase::Failed && s.attempts >= attempts)
        || (s.state == SharePhase::Pending && s.reason == Some(ShareReason::AwaitingMember))
}

/// The shares of one destination: everything the plan needs besides the destination itself.
pub struct SharePlan<'a> {
    pub sharing: Option<&'a Sharing>,
    pub obs: Option<&'a ShareObs>,
    /// The spec changed or a retry was asked for: failed shares start over.
    pub redrive: bool,
    /// New share calls may be made (the gate is open).
    pub may_act: bool,
    pub max_attempts: i32,
    /// The shares of other destinations whose copy is the same image (where the cloud
    /// replicates the source itself, Azure): a share is the image's, so a destination that has
    /// not called for it yet takes over theirs (a call under way, a failure) instead of
    /// calling again.
    pub twins: Vec<&'a ShareStatus>,
}

/// Plan the shares of one destination into its status; calls to make go into `work`, Events
/// into `events`, when to look again into `wake`.
pub fn plan_shares(
    d: &DestinationSpec,
    s: &mut DestinationStatus,
    sp: &SharePlan<'_>,
    now: &Time,
    work: &mut Vec<ShareWork>,
    events: &mut Vec<Announcement>,
    wake: &mut Vec<Duration>,
) {
    let old = std::mem::take(&mut s.shares);
    let image = s.image_id.clone().filter(|_| s.phase == DestinationPhase::Available);
    let Some(image) = image else {
        // No image to share (yet, or any more: a copy made again carries no share).
        s.shares = d
            .share_with
            .iter()
            .map(|w| {
                let prev = old.iter().find(|o| o.account == w.account);
                set(
                    prev,
                    &w.account,
                    (SharePhase::Pending, Some(ShareReason::AwaitingImage)),
                    0,
                    Some("waits for the image in this region to be available"),
                    now,
                )
            })
            .collect();
        return;
    };
    let mut dest = DestShares {
        region: s.region.clone(),
        image,
        sp,
        now,
        work,
        wake,
    };
    let mut shares = Vec::new();
    for w in &d.share_with {
        let prev = old.iter().find(|o| o.account == w.account);
        let next = dest.wanted(w, prev.cloned());
        announce(&dest.region, &dest.image, prev, &next, events);
        shares.push(next);
    }
    // Accounts that left shareWith: withdrawn, then forgotten once the cloud no longer lists them.
    for o in old
        .iter()
        .filter(|o| !d.share_with.iter().any(|w| w.account == o.account))
    {
        shares.extend(dest.withdrawn(o, events));
    }
    // Soon again while a call of ours is under way; within a minute for a member that accepts
    // in its own account.
    if shares.iter().any(|x| !settled(x, sp.max_attempts) && !call_failed(x)) {
        dest.wake.push(Duration::from_secs(15));
    } else if shares.iter().any(|x| x.state == SharePhase::Pending) {
        dest.wake.push(MEMBER_WAIT);
    }
    s.shares = shares;
}

/// One destination's shares being planned: its Available image, what was observed, and where
/// the calls and wake-ups go.
struct DestShares<'a, 'b> {
    region: String,
    image: String,
    sp: &'a SharePlan<'b>,
    now: &'a Time,
    work: &'a mut Vec<ShareWork>,
    wake: &'a mut Vec<Duration>,
}

impl<'b> DestShares<'_, 'b> {
    fn members(&self) -> Option<&'b Result<Vec<Member>, ProviderError>> {
        self.sp.obs.and_then(|o| o.members.as_ref())
    }

    fn failed(&self, account: &str) -> Option<&'b (ShareCall, ProviderError)> {
        self.sp.obs.and_then(|o| o.failed.get(account))
    }

    /// Another destination's share of the same image with `a` that a call of ours made or
    /// found: a call under way or failed, or the share in place.
    fn twin(&self, a: &str) -> Option<ShareStatus> {
        self.sp
            .twins
            .iter()
            .find(|t| {
                t.account == a
                    && t.state != SharePhase::Withdrawing
                    && (t.state != SharePhase::Pending
                        || t.called_at.is_some()
                        || t.reason == Some(ShareReason::CallFailed))
            })
            .map(|t| (*t).clone())
    }

    /// A call to make, when calls may be made.
    fn call(&mut self, account: &str, call: ShareCall, secret: Option<String>) {
        if self.sp.may_act {
            self.work.push(ShareWork {
                region: self.region.clone(),
                image_id: self.image.clone(),
                account: account.to_string(),
                call,
                secret,
            });
        }
    }

    /// The share with an account of shareWith, from what the cloud lists.
    fn wanted(&mut self, w: &ShareSpec, mut prev: Option<ShareStatus>) -> ShareStatus {
        let (a, now, max) = (w.account.as_str(), self.now, self.sp.max_attempts);
        let never_called = prev
            .as_ref()
            .is_none_or(|p| p.reason == Some(ShareReason::AwaitingImage));
        if never_called && let Some(t) = self.twin(a) {
            prev = Some(t);
        }
        if self.sp.redrive
            && let Some(p) = prev.as_mut().filter(|p| call_failed(p))
        {
            p.attempts = 0;
        }
        let attempts = prev.as_ref().map_or(0, |p| p.attempts);
        if let Some((c, e)) = self.failed(a) {
            return failure(prev.as_ref(), a, *c, e, max, now, self.wake);
        }
        let list = match self.members() {
            Some(Ok(list)) => list,
            Some(Err(e)) => {
                let mut p = prev.unwrap_or_else(|| new(a, now));
                if !done(&p) {
                    p.reason = Some(ShareReason::MembersUnreadable);
                    p.message = Some(format!(
                        "reading the image's members failed (will retry): {}",
                        e.message
                    ));
                }
                return p;
            }
            None => {
                return prev.unwrap_or_else(|| {
                    let mut p = new(a, now);
                    p.reason = Some(ShareReason::Sharing);
                    p.message = Some("sharing".into());
                    p
                });
            }
        };
        let seen = list.iter().find(|m| m.account == a).map(|m| m.status);
        let retry_ok = retry_due(prev.as_ref(), max, now, self.wake);
        let needs_accept = self.sp.sharing.is_some_and(|x| x.needs_accept);
        match (seen, w.accept_with.as_ref()) {
            (Some(MemberStatus::Accepted), _) => set(prev.as_ref(), a, (SharePhase::Accepted, None), 0, None, now),
            (Some(MemberStatus::Shared), _) => set(prev.as_ref(), a, (SharePhase::Shared, None), 0, None, now),
            (Some(MemberStatus::Pending | MemberStatus::Rejected), Some(secret)) if needs_accept => {
                if retry_ok {
                    self.call(a, ShareCall::Accept, Some(secret.credentials_key()));
                }
                let m = format!("{AWAITING}; accepting with {}", secret.describe());
                keep_failed(prev.as_ref(), a, attempts, (ShareReason::Accepting, m), retry_ok, now)
            }
            (Some(MemberStatus::Pending), _) => {
                let m = format!("{AWAITING}: accept it in account {a}, or set acceptWith to a Secret of that account");
                set(
                    prev.as_ref(),
                    a,
                    (SharePhase::Pending, Some(ShareReason::AwaitingMember)),
                    0,
                    Some(&m),
                    now,
                )
            }
            (Some(MemberStatus::Rejected), _) => {
                let m = "the member rejected the share; it can accept it again in its own account";
                set(
                    prev.as_ref(),
                    a,
                    (SharePhase::Failed, Some(ShareReason::Rejected)),
                    max,
                    Some(m),
                    now,
                )
            }
            (None, _) => self.not_listed(a, prev, attempts, retry_ok),
        }
    }

    /// An account of shareWith the cloud does not list: our share call not listed yet (the
    /// cloud's member lists lag) is waited for, not made again; otherwise it is shared (again,
    /// if it was removed outside the operator).
    fn not_listed(&mut self, a: &str, prev: Option<ShareStatus>, attempts: i32, retry_ok: bool) -> ShareStatus {
        let now = self.now;
        // Our share call, not listed yet (the cloud's member lists lag): waited for,
        // not made again.
        let lag = self.sp.sharing.map_or(0, |x| x.members_lag);
        if let Some(p) = prev.as_ref().filter(|p| p.state == SharePhase::Pending)
            && let Some(left) = call_unseen_for(Some(p), lag, now)
        {
            self.wake.push(left);
            let mut p = p.clone();
            p.reason = Some(ShareReason::NotListedYet);
            p.message = Some(format!(
                "shared; waiting for the cloud to list account {a} as a member (it lists them up to {lag}s late)"
            ));
            return p;
        }
        let called = retry_ok && self.sp.may_act;
        if retry_ok {
            self.call(a, ShareCall::Share, None);
        }
        let m = if prev.as_ref().is_some_and(done) {
            (
                ShareReason::RemovedOutside,
                "the share was removed outside the operator; sharing again",
            )
        } else {
            (ShareReason::Sharing, "sharing")
        };
        let mut next = keep_failed(prev.as_ref(), a, attempts, (m.0, m.1.to_string()), retry_ok, now);
        if called && lag > 0 {
            next.called_at = Some(now.clone());
        }
        next
    }

    /// An account that left shareWith: withdrawn while the cloud lists it, then forgotten
    /// (`None`) with an Event.
    fn withdrawn(&mut self, o: &ShareStatus, events: &mut Vec<Announcement>) -> Option<ShareStatus> {
        let listed = match self.members() {
            Some(Ok(list)) => Some(list.iter().any(|m| m.account == o.account)),
            _ => None,
        };
        if listed == Some(false) {
            if o.state == SharePhase::Withdrawing || was_listed(o) {
                events.push(Announcement {
                    warning: false,
                    reason: "ShareWithdrawn".into(),
                    note: format!(
                        "{}: image {} is no longer shared with account {}",
                        self.region, self.image, o.account
                    ),
                });
            }
            return None;
        }
        if let Some((c, e)) = self.failed(&o.account) {
            let mut w = failure(Some(o), &o.account, *c, e, self.sp.max_attempts, self.now, self.wake);
            w.state = SharePhase::Withdrawing;
            return Some(w);
        }
        let mut w = o.clone();
        if w.state != SharePhase::Withdrawing {
            w.since = Some(self.now.clone());
            w.called_at = None;
        }
        w.state = SharePhase::Withdrawing;
        w.reason = Some(ShareReason::LeftShareWith);
        w.message = Some("the account left shareWith; withdrawing the share".into());
        let lag = self.sp.sharing.map_or(0, |x| x.members_lag);
        match call_unseen_for(Some(&w), lag, self.now) {
            // Our withdraw call, the member still listed: the list lags; not made again.
            Some(left) if listed == Some(true) => self.wake.push(left),
            _ if listed == Some(true) => {
                self.call(&o.account, ShareCall::Unshare, None);
                if self.sp.may_act && lag > 0 {
                    w.called_at = Some(self.now.clone());
                }
            }
            _ => {}
        }
        Some(w)
    }
}

fn new(account: &str, now: &Time) -> ShareStatus {
    ShareStatus {
        account: account.to_string(),
        state: SharePhase::Pending,
        reason: None,
        attempts: 0,
        since: Some(now.clone()),
        message: None,
        called_at: None,
    }
}

/// The share in `state` for `reason`, keeping `since` when the state did not change.
fn set(
    prev: Option<&ShareStatus>,
    account: &str,
    (state, reason): (SharePhase, Option<ShareReason>),
    attempts: i32,
    message: Option<&str>,
    now: &Time,
) -> ShareStatus {
    let since = prev
        .filter(|p| p.state == state)
        .and_then(|p| p.since.clone())
        .unwrap_or_else(|| now.clone());
    ShareStatus {
        account: account.to_string(),
        state,
        reason,
        attempts,
        since: Some(since),
        message: message.map(String::from),
        called_at: None,
    }
}

/// A share waiting for a call: Pending for `reason`, or still Failed (with its reason and
/// message) while its retry is not due.
fn keep_failed(
    prev: Option<&ShareStatus>,
    account: &str,
    attempts: i32,
    (reason, message): (ShareReason, String),
    retry_ok: bool,
    now: &Time,
) -> ShareStatus {
    match prev {
        Some(p) if call_failed(p) && !retry_ok => p.clone(),
        _ => set(
            prev,
            account,
            (SharePhase::Pending, Some(reason)),
            attempts,
            Some(&message),
            now,
        ),
    }
}

/// Whether a share failed and waits out its retry backoff now: nothing to read or call for it
/// until then.
pub fn backing_off(s: &ShareStatus, max_attempts: i32, now: &Time) -> bool {
    call_failed(s) && s.attempts < max_attempts && !retry_due(Some(s), max_attempts, now, &mut Vec::new())
}

/// How much longer a share or withdraw call of ours may go unseen in the member list (the
/// cloud's `members_lag` since the call); `None` when it was not called or the lag is over.
fn call_unseen_for(s: Option<&ShareStatus>, lag: u64, now: &Time) -> Option<Duration> {
    let age = secs_since(&s?.called_at, now)?;
    let left = lag as i64 - age;
    (left > 0).then(|| Duration::from_secs(left as u64))
}

/// Whether a call for this share may be made now: not after a final failure, not before a
/// failed one's backoff has passed (its end goes into `wake`).
fn retry_due(prev: Option<&ShareStatus>, max_attempts: i32, now: &Time, wake: &mut Vec<Duration>) -> bool {
    let Some(p) = prev.filter(|p| call_failed(p)) else {
        return true;
    };
    if p.attempts >= max_attempts {
        return false;
    }
    let due = retry_delay(p.attempts).as_secs() as i64;
    match secs_since(&p.since, now) {
        Some(age) if age < due => {
            wake.push(Duration::from_secs((due - age) as u64));
            false
        }
        _ => true,
    }
}

/// A failed call: its attempt counted (a permanent error is final); `Pending` (reason
/// `CallFailed`) while it will be retried after the backoff, `Failed` once it will not.
fn failure(
    prev: Option<&ShareStatus>,
    account: &str,
    call: ShareCall,
    e: &ProviderError,
    max_attempts: i32,
    now: &Time,
    wake: &mut Vec<Duration>,
) -> ShareStatus {
    let mut attempts = prev.map_or(0, |p| p.attempts) + 1;
    if !e.retryable {
        attempts = attempts.max(max_attempts);
    }
    let retry = attempts < max_attempts;
    if retry {
        wake.push(retry_delay(attempts));
    }
    let m = format!(
        "{}: {} (attempt {}/{max_attempts}{})",
        call.verb(),
        e.message,
        attempts.min(max_attempts),
        if retry { ", will retry" } else { "" }
    );
    ShareStatus {
        account: account.to_string(),
        state: if retry { SharePhase::Pending } else { SharePhase::Failed },
        reason: Some(ShareReason::CallFailed),
        attempts,
        since: Some(now.clone()),
        message: Some(m),
        called_at: None,
    }
}

/// Whether the cloud listed the account as a member when this status was planned.
fn was_listed(s: &ShareStatus) -> bool {
    done(s) || matches!(s.reason, Some(ShareReason::AwaitingMember | ShareReason::Accepting))
}

/// The Event of a share's change: Shared (listed by the cloud), ShareAccepted, ShareFailed.
fn announce(region: &str, image: &str, old: Option<&ShareStatus>, new: &ShareStatus, events: &mut Vec<Announcement>) {
    let a = &new.account;
    let was_listed = old.is_some_and(was_listed);
    let listed = self::was_listed(new);
    let changed = old.is_none_or(|o| o.state != new.state);
    let (warning, reason, note) = match new.state {
        SharePhase::Accepted if changed => (false, "ShareAccepted", format!("account {a} accepted image {image}")),
        _ if call_failed(new) && old.is_none_or(|o| o.attempts != new.attempts || o.state != new.state) => (
            true,
            "ShareFailed",
            format!(
                "image {image} with account {a}: {}",
                new.message.as_deref().unwrap_or("failed")
            ),
        ),
        _ if listed && !was_listed => (false, "Shared", format!("image {image} shared with account {a}")),
        _ => return,
    };
    events.push(Announcement {
        warning,
        reason: reason.into(),
        note: format!("{region}: {note}"),
    });
}

/// Shares in place and shares asked for ("n/m shares"), over every destination, and shares
/// still being withdrawn.
pub fn count(destinations: &[DestinationStatus]) -> (usize, usize, usize) {
    let (mut ok, mut n, mut withdrawing) = (0, 0, 0);
    for s in destinations.iter().flat_map(|d| d.shares.iter()) {
        if s.state == SharePhase::Withdrawing {
            withdrawing += 1;
        } else {
            n += 1;
            ok += usize::from(done(s));
        }
    }
    (ok, n, withdrawing)
}

/// The conditions of an object whose copies are all Available but whose shares are not all
/// in place: `SharesFailed` (stalled) when every one not in place failed for good, else
/// `SharesPending`, each naming the shares and why.
pub fn conditions(destinations: &[DestinationStatus], summary: &str, max_attempts: i32) -> Vec<Desired> {
    let (mut pending, mut finals) = (Vec::new(), 0);
    for (d, x) in destinations.iter().flat_map(|d| d.shares.iter().map(move |x| (d, x))) {
        if done(x) {
            continue;
        }
        finals += usize::from(x.state == SharePhase::Failed && x.attempts >= max_attempts);
        let why = x.message.as_deref().unwrap_or("pending");
        pending.push(format!("{} share with {}: {why}", d.region, x.account));
    }
    let m = format!("{summary}; {}", pending.join("; "));
    if finals == pending.len() {
        standing_conditions(Standing::Stuck, "SharesFailed", m)
    } else {
        standing_conditions(Standing::Working, "SharesPending", m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1alpha1::{AcceptSpec, ShareSpec};
    use crate::image_replication::vm::providers::{aws, openstack};
    use crate::plan::test_at as at;

    fn dest(accounts: &[(&str, Option<&str>)]) -> DestinationSpec {
        DestinationSpec {
            region: "two".into(),
            share_with: accounts
                .iter()
                .map(|(a, s)| ShareSpec {
                    account: a.to_string(),
                    accept_with: s.map(AcceptSpec::secret),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn available() -> DestinationStatus {
        DestinationStatus {
            region: "two".into(),
            phase: DestinationPhase::Available,
            image_id: Some("img-2".into()),
            ..Default::default()
        }
    }

    fn listed(members: &[(&str, MemberStatus)]) -> ShareObs {
        ShareObs {
            members: Some(Ok(members.iter().map(|(a, s)| Member::new(*a, *s)).collect())),
            failed: HashMap::new(),
        }
    }

    struct Step {
        work: Vec<ShareWork>,
        events: Vec<Announcement>,
        wake: Vec<Duration>,
    }

    fn step(
        d: &DestinationSpec,
        s: &mut DestinationStatus,
        sharing: &Sharing,
        obs: Option<&ShareObs>,
        redrive: bool,
        now: i64,
    ) -> Step {
        let sp = SharePlan {
            sharing: Some(sharing),
            obs,
            redrive,
            may_act: true,
            max_attempts: 3,
            twins: Vec::new(),
        };
        let mut st = Step {
            work: Vec::new(),
            events: Vec::new(),
            wake: Vec::new(),
        };
        plan_shares(d, s, &sp, &at(now), &mut st.work, &mut st.events, &mut st.wake);
        st
    }

    /// Where every destination's copy is the same image (Azure), a destination that becomes
    /// available after another one shared that image takes over its share: a call under way is
    /// waited for and a failure for good stays one, not called again for each region (before:
    /// 6 role assignment calls for 3 shares in 3 regions).
    #[test]
    fn a_share_another_destination_made_on_the_same_image_is_not_made_again() {
        use crate::image_replication::vm::providers::azure;
        let (g, nobody) = ("group:g", "user:nobody");
        let d = dest(&[(g, None), (nobody, None)]);
        let mut first = available();
        let st = step(&d, &mut first, &azure::SHARING, Some(&listed(&[])), false, 0);
        assert_eq!(calls(&st), vec![(g, ShareCall::Share), (nobody, ShareCall::Share)]);
        let failed = ShareObs {
            members: Some(Ok(Vec::new())),
            failed: HashMap::from([(
                nobody.to_string(),
                (ShareCall::Share, ProviderError::permanent("PrincipalNotFound")),
            )]),
        };
        step(&d, &mut first, &azure::SHARING, Some(&failed), false, 1);
        assert_eq!(
            states(&first),
            vec![(g, SharePhase::Pending), (nobody, SharePhase::Failed)]
        );
        // The second region's copy becomes available, the member list not showing g yet.
        let mut second = DestinationStatus {
            region: "three".into(),
            ..available()
        };
        let sp = SharePlan {
            sharing: Some(&azure::SHARING),
            obs: Some(&listed(&[])),
            redrive: false,
            may_act: true,
            max_attempts: 3,
            twins: first.shares.iter().collect(),
        };
        let mut st = Step {
            work: Vec::new(),
            events: Vec::new(),
            wake: Vec::new(),
        };
        plan_shares(&d, &mut second, &sp, &at(5), &mut st.work, &mut st.events, &mut st.wake);
        assert!(st.work.is_empty(), "{:?}", calls(&st));
        assert_eq!(states(&second), states(&first));
        assert_eq!(second.shares[0].reason, Some(ShareReason::NotListedYet));
        // Without twins (another image), it is this destination's own share to make.
        let mut other = available();
        let st = step(&d, &mut other, &azure::SHARING, Some(&listed(&[])), false, 5);
        assert_eq!(calls(&st).len(), 2);
    }

    fn states(s: &DestinationStatus) -> Vec<(&str, SharePhase)> {
        s.shares.iter().map(|x| (x.account.as_str(), x.state)).collect()
    }

    fn calls(st: &Step) -> Vec<(&str, ShareCall)> {
        st.work.iter().map(|w| (w.account.as_str(), w.call)).collect()
    }

    /// What a share waits for is data (`reason`), and a message may be reworded or cut without
    /// changing what happens: a member who accepts in its own account is settled (where
    /// `replicate -f` stops), one the operator accepts for is not, and a member withdrawn after
    /// it was listed is announced — whatever the message says.
    #[test]
    fn a_shares_reason_decides_not_its_message() {
        let d = dest(&[("p2", None), ("p3", Some("member-p3"))]);
        let mut s = available();
        let pending = listed(&[("p2", MemberStatus::Pending), ("p3", MemberStatus::Pending)]);
        step(&d, &mut s, &openstack::SHARING, Some(&pending), false, 0);
        let reasons: Vec<_> = s.shares.iter().map(|x| x.reason).collect();
        assert_eq!(
            reasons,
            vec![Some(ShareReason::AwaitingMember), Some(ShareReason::Accepting)]
        );
        for x in s.shares.iter_mut() {
            x.message = Some("reworded".into());
        }
        assert!(settled(&s.shares[0], 3));
        assert!(!settled(&s.shares[1], 3));
        // p2 leaves shareWith; the cloud no longer lists it: the withdrawal is announced.
        let st = step(
            &dest(&[("p3", Some("member-p3"))]),
            &mut s,
            &openstack::SHARING,
            Some(&listed(&[("p3", MemberStatus::Pending)])),
            false,
            10,
        );
        assert!(
            st.events
                .iter()
                .any(|e| e.reason == "ShareWithdrawn" && e.note.contains("p2")),
            "{:?}",
            st.events.iter().map(|e| &e.reason).collect::<Vec<_>>()
        );
        assert!(s.shares.iter().all(|x| x.account == "p3"));
        // In place: no reason left.
        step(
            &dest(&[("p3", Some("member-p3"))]),
            &mut s,
            &openstack::SHARING,
            Some(&listed(&[("p3", MemberStatus::Accepted)])),
            false,
            20,
        );
        assert_eq!((s.shares[0].state, s.shares[0].reason), (SharePhase::Accepted, None));
    }

    /// EC2, ECS and CVM list a member some seconds after the call that added it (and keep
    /// listing one that was removed): a share or withdraw call of ours is not made again while
    /// the list may only lag (`members_lag`); only after it is the account shared again. Before,
    /// every read of the members in that time made the call again (90 ModifyImageSharePermission
    /// for three shares on the realistic ECS stand-in).
    #[test]
    fn a_call_the_member_list_does_not_show_yet_is_not_made_again() {
        let d = dest(&[("111122223333", None)]);
        let mut s = available();
        let st = step(&d, &mut s, &aws::SHARING, Some(&listed(&[])), false, 0);
        assert_eq!(calls(&st), vec![("111122223333", ShareCall::Share)]);
        assert_eq!(s.shares[0].called_at, Some(at(0)));
        for t in [1, 30, 59] {
            let st = step(&d, &mut s, &aws::SHARING, Some(&listed(&[])), false, t);
            assert!(st.work.is_empty(), "not again at {t}s: {:?}", calls(&st));
            assert!(
                s.shares[0]
                    .message
                    .as_deref()
                    .unwrap()
                    .contains("waiting for the cloud to list")
            );
            assert!(!st.wake.is_empty());
        }
        // Listed: Shared, the call forgotten.
        let mut listed_now = s.clone();
        step(
            &d,
            &mut listed_now,
            &aws::SHARING,
            Some(&listed(&[("111122223333", MemberStatus::Shared)])),
            false,
            10,
        );
        assert_eq!(states(&listed_now), vec![("111122223333", SharePhase::Shared)]);
        assert_eq!(listed_now.shares[0].called_at, None);
        // Never listed within the lag: shared again.
        let st = step(&d, &mut s, &aws::SHARING, Some(&listed(&[])), false, 61);
        assert_eq!(calls(&st), vec![("111122223333", ShareCall::Share)]);

        // Withdrawn: the call once, then waited for while the account is still listed.
        let mut w = listed_now;
        let gone = dest(&[]);
        let shown = listed(&[("111122223333", MemberStatus::Shared)]);
        let st = step(&gone, &mut w, &aws::SHARING, Some(&shown), false, 100);
        assert_eq!(calls(&st), vec![("111122223333", ShareCall::Unshare)]);
        let st = step(&gone, &mut w, &aws::SHARING, Some(&shown), false, 110);
        assert!(st.work.is_empty(), "{:?}", calls(&st));
        let st = step(&gone, &mut w, &aws::SHARING, Some(&listed(&[])), false, 115);
        assert!(w.shares.is_empty() && st.events.iter().any(|e| e.reason == "ShareWithdrawn"));
    }

    fn reasons(st: &Step) -> Vec<&str> {
        st.events.iter().map(|e| e.reason.as_str()).collect()
    }

    #[test]
    fn nothing_is_shared_before_the_image_is_available() {
        let d = dest(&[("p1", None)]);
        let mut s = DestinationStatus {
            region: "two".into(),
            phase: DestinationPhase::Copying,
            image_id: Some("img-2".into()),
            ..Default::default()
        };
        let st = step(&d, &mut s, &openstack::SHARING, Some(&listed(&[])), false, 0);
        assert!(st.work.is_empty());
        assert_eq!(states(&s), vec![("p1", SharePhase::Pending)]);
        assert!(s.shares[0].message.as_deref().unwrap().contains("available"));
    }

    /// A cloud whose members accept (openstack, huawei): shared, pending with the reason while
    /// no member Secret is given; with one, accepted as the member; Events say each step.
    #[test]
    fn share_then_accept_as_the_member_or_say_who_must_accept() {
        let d = dest(&[("p1", Some("p1-creds")), ("p2", None)]);
        let mut s = available();
        let st = step(&d, &mut s, &openstack::SHARING, Some(&listed(&[])), false, 0);
        assert_eq!(calls(&st), vec![("p1", ShareCall::Share), ("p2", ShareCall::Share)]);
        assert_eq!(
            states(&s),
            vec![("p1", SharePhase::Pending), ("p2", SharePhase::Pending)]
        );
        assert!(st.wake.contains(&Duration::from_secs(15)));

        // Listed as pending: p1 is accepted with its Secret, p2 waits for its owner.
        let obs = listed(&[("p1", MemberStatus::Pending), ("p2", MemberStatus::Pending)]);
        let st = step(&d, &mut s, &openstack::SHARING, Some(&obs), false, 5);
        assert_eq!(calls(&st), vec![("p1", ShareCall::Accept)]);
        assert_eq!(st.work[0].secret.as_deref(), Some("p1-creds"));
        assert_eq!(reasons(&st), vec!["Shared", "Shared"]);
        let why = s.shares[1].message.clone().unwrap();
        assert!(
            why.contains("accept it in account p2") && why.contains("acceptWith"),
            "{why}"
        );
        assert_eq!(s.shares[1].state, SharePhase::Pending);

        let obs = listed(&[("p1", MemberStatus::Accepted), ("p2", MemberStatus::Pending)]);
        let st = step(&d, &mut s, &openstack::SHARING, Some(&obs), false, 10);
        assert!(st.work.is_empty());
        assert_eq!(
            states(&s),
            vec![("p1", SharePhase::Accepted), ("p2", SharePhase::Pending)]
        );
        assert_eq!(reasons(&st), vec!["ShareAccepted"]);
        assert_eq!(
            st.wake,
            vec![MEMBER_WAIT],
            "only p2's owner can act: looked at each minute"
        );
        // Nothing changes: no Event, no call, the same status.
        let before = s.clone();
        let st = step(&d, &mut s, &openstack::SHARING, Some(&obs), false, 20);
        assert!(st.work.is_empty() && st.events.is_empty());
        assert_eq!(s, before);
        // Not read this time: the status stays as it is.
        let st = step(&d, &mut s, &openstack::SHARING, None, false, 25);
        assert!(st.work.is_empty() && st.events.is_empty());
        assert_eq!(s, before);
    }

    #[test]
    fn clouds_without_acceptance_are_shared_once_listed() {
        let d = dest(&[("123456789012", None)]);
        let mut s = available();
        let st = step(&d, &mut s, &aws::SHARING, Some(&listed(&[])), false, 0);
        assert_eq!(calls(&st), vec![("123456789012", ShareCall::Share)]);
        let st = step(
            &d,
            &mut s,
            &aws::SHARING,
            Some(&listed(&[("123456789012", MemberStatus::Shared)])),
            false,
            5,
        );
        assert_eq!(states(&s), vec![("123456789012", SharePhase::Shared)]);
        assert_eq!(reasons(&st), vec!["Shared"]);
        // Removed outside the operator: shared again, and the status says so.
        let st = step(&d, &mut s, &aws::SHARING, Some(&listed(&[])), false, 400);
        assert_eq!(calls(&st), vec![("123456789012", ShareCall::Share)]);
        assert!(s.shares[0].message.as_deref().unwrap().contains("removed outside"));
    }

    /// An account removed from shareWith is withdrawn, and forgotten once the cloud no longer
    /// lists it; a member added by hand (never in the status) is left alone.
    #[test]
    fn an_account_that_leaves_share_with_is_withdrawn() {
        let mut s = available();
        let both = dest(&[("p1", None), ("p2", None)]);
        let obs = listed(&[
            ("p1", MemberStatus::Accepted),
            ("p2", MemberStatus::Accepted),
            ("by-hand", MemberStatus::Accepted),
        ]);
        step(&both, &mut s, &openstack::SHARING, Some(&obs), false, 0);
        let one = dest(&[("p1", None)]);
        let st = step(&one, &mut s, &openstack::SHARING, Some(&obs), false, 10);
        assert_eq!(calls(&st), vec![("p2", ShareCall::Unshare)]);
        assert_eq!(
            states(&s),
            vec![("p1", SharePhase::Accepted), ("p2", SharePhase::Withdrawing)]
        );
        let gone = listed(&[("p1", MemberStatus::Accepted), ("by-hand", MemberStatus::Accepted)]);
        let st = step(&one, &mut s, &openstack::SHARING, Some(&gone), false, 15);
        assert!(st.work.is_empty());
        assert_eq!(states(&s), vec![("p1", SharePhase::Accepted)]);
        assert_eq!(reasons(&st), vec!["ShareWithdrawn"]);
    }

    /// A failed call is counted, backed off, retried; a permanent one is final until the spec
    /// changes (or the retry annotation).
    #[test]
    fn failures_back_off_and_permanent_ones_wait_for_a_change() {
        let d = dest(&[("p1", None)]);
        let mut s = available();
        step(&d, &mut s, &openstack::SHARING, Some(&listed(&[])), false, 0);
        let mut obs = listed(&[]);
        obs.failed
            .insert("p1".into(), (ShareCall::Share, ProviderError::transient("HTTP 503")));
        let st = step(&d, &mut s, &openstack::SHARING, Some(&obs), false, 5);
        // A share that will be retried is not Failed: Pending, its reason the failed call.
        assert_eq!(states(&s), vec![("p1", SharePhase::Pending)]);
        assert_eq!(s.shares[0].reason, Some(ShareReason::CallFailed));
        assert_eq!(reasons(&st), vec!["ShareFailed"]);
        assert!(
            s.shares[0]
                .message
                .as_deref()
                .unwrap()
                .contains("HTTP 503 (attempt 1/3, will retry)")
        );
        // Within the backoff: no call; after it: shared again.
        let st = step(&d, &mut s, &openstack::SHARING, Some(&listed(&[])), false, 8);
        assert!(st.work.is_empty() && st.events.is_empty());
        assert_eq!(s.shares[0].state, SharePhase::Pending);
        assert!(backing_off(&s.shares[0], 3, &at(8)));
        let st = step(&d, &mut s, &openstack::SHARING, Some(&listed(&[])), false, 16);
        assert_eq!(calls(&st), vec![("p1", ShareCall::Share)]);
        assert_eq!(s.shares[0].attempts, 1);

        let mut obs = listed(&[]);
        obs.failed.insert(
            "p1".into(),
            (ShareCall::Share, ProviderError::permanent("HTTP 403 Forbidden")),
        );
        let st = step(&d, &mut s, &openstack::SHARING, Some(&obs), false, 20);
        assert_eq!(s.shares[0].attempts, 3);
        // Final: Failed, said once, and the object says so.
        assert_eq!(
            (s.shares[0].state, s.shares[0].reason),
            (SharePhase::Failed, Some(ShareReason::CallFailed))
        );
        assert_eq!(reasons(&st), vec!["ShareFailed"]);
        assert!(settled(&s.shares[0], 3));
        let st = step(&d, &mut s, &openstack::SHARING, Some(&listed(&[])), false, 4000);
        assert!(st.work.is_empty(), "a permanent failure is not retried");
        let st = step(&d, &mut s, &openstack::SHARING, Some(&listed(&[])), true, 4001);
        assert_eq!(calls(&st), vec![("p1", ShareCall::Share)], "a spec change starts over");
    }

    #[test]
    fn same_region_destinations_share_the_source_itself() {
        let mut d = dest(&[("p1", None)]);
        d.region = "one".into();
        assert!(d.shares_in_place("one"));
        d.encryption = Some(Default::default());
        assert!(!d.shares_in_place("one"), "copy-and-encrypt is a copy");
        let copy = DestinationSpec {
            region: "one".into(),
            ..Default::default()
        };
        assert!(!copy.shares_in_place("one"));
    }
}
