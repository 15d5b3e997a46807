//! The pure state machine of VM image copies: (object, what was observed, now) -> the status to
//! write, which copies want a quota slot, which to start or cancel, and the Events to publish.
//!
//! Phases per destination: `Pending -> Queued -> Starting -> Copying -> Available`, with
//! `Failed` (retried with backoff up to a bound), `Cancelling -> Cancelled` (suspend), and
//! drift (an Available image deleted out of band) going back to `Pending`.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::follow;
use super::quota::{Admission, Ledger, Order};
use super::rules::{self, Limits};
use super::share::{self, ShareObs, SharePlan, ShareWork};
use super::slots::{SlotPlan, SlotView};
use super::{CopyHandle, ImageInfo, ImageState, ProviderError, TaskPhase, TaskState};
use crate::api::conditions::{self, Desired, VALIDATED, reason};
use crate::api::v1alpha1::*;
use crate::plan::{Announcement, Gate, Standing, gate_conditions, retry_delay, standing_conditions};
pub use crate::plan::{RETRY_ANNOTATION, retry_requested};
use crate::validation;

/// How a destination copied again after its copy was deleted outside the operator says so.
const DRIFT_NOTE: &str = "the copy was deleted outside the operator; copying it again";

/// A start the cloud's setup prevents (a region the catalog lacks) is tried again this often,
/// without counting attempts.
pub const SETUP_RETRY: Duration = Duration::from_secs(60);

/// How a destination's message says so (prose only: `DestinationReason::SetupRequired` says
/// it as data).
const SETUP_NOTE: &str = "the cloud's admin can fix this; no attempt counted, tried again every";

/// What the engine observed about one destination this time.
#[derive(Clone, Debug, PartialEq)]
pub enum DestObs {
    /// Nothing was asked of the provider about it (not due, or nothing to ask).
    Unchecked,
    /// The copy was found (by id or by token) and polled.
    Task { handle: CopyHandle, state: TaskState },
    /// `Starting`: no copy carries the token; the start call is (re)issued.
    NotStarted,
    /// The start call failed.
    StartFailed(ProviderError),
    /// Looking up or polling failed.
    Error(ProviderError),
    /// The Available destination image no longer exists.
    Gone,
    /// The copy was cancelled (suspend).
    Cancelled,
    /// The copy of a destination removed from the spec was deleted.
    Pruned,
}

/// Everything observed for one object.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The source image, when it was described this time.
    pub source: Option<Result<ImageInfo, ProviderError>>,
    pub dests: HashMap<String, DestObs>,
    /// Region -> what was observed of its image's shares.
    pub shares: HashMap<String, ShareObs>,
    /// Whether the provider can cancel a copy in flight (a copy of a source that a newer one
    /// replaced is cancelled where it can).
    pub can_cancel: bool,
    /// Copies of earlier sources deleted under `retention.keep` since the last plan (image id ->
    /// the outcome).
    pub retired: HashMap<String, Result<(), ProviderError>>,
    /// How the cloud lists new copies.
    pub listing: Listing,
    /// Regions whose copy's owner no longer has the source shared with it (withdrawn by this
    /// process).
    pub source_unshared: std::collections::HashSet<String>,
    /// Whether the cloud marks superseded images (the provider's fact).
    pub marks_superseded: bool,
    /// Copies of earlier sources this process marked superseded.
    pub superseded: std::collections::HashSet<String>,
}

/// How a cloud lists the copies it makes (the provider's facts, observed with the rest): new
/// images show in its lists up to `late` after the call that made them, and a copy call
/// repeated with the same token gives the same copy when `idempotent_start`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub late: Duration,
    pub idempotent_start: bool,
}

impl Listing {
    /// How much longer a copy of the attempt `s` started may go unlisted before it counts as
    /// gone (`None`: the window is over, or the attempt has no start time).
    pub fn wait_left(&self, s: &DestinationStatus, now: &Time) -> Option<Duration> {
        let started = s.started_at.as_ref()?.0.as_second();
        let left = started + self.late.as_secs() as i64 - now.0.as_second();
        (left > 0).then(|| Duration::from_secs(left as u64))
    }
}

/// One reconcile's snapshot of a VM ImageReplication, read by the engine's observe: what the
/// cloud said, the account's quota ledger and copy slots as they were, and how long until each
/// destination's next poll and drift check. [`plan`] is a pure function of it.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub observed: Observed,
    /// The account's ledger of copies in flight and waiting (this process).
    pub ledger: Ledger,
    /// At most this many copies in flight for the account.
    pub limit: i32,
    /// The account's copy slots shared by every process (shards).
    pub slots: SharedSlots,
    /// Region -> time until its next poll (absent: due now).
    pub poll_in: HashMap<String, Duration>,
    /// Region -> time until its next drift check (absent: a full `resync`).
    pub drift_in: HashMap<String, Duration>,
    pub resync: Duration,
    /// Time until the engine looks again for its own reasons (a followed source's next look).
    pub check_in: Option<Duration>,
    pub limits: Limits,
    pub max_attempts: i32,
}

/// The copy slots shared across processes, as observed.
#[derive(Clone, Debug, Default)]
pub enum SharedSlots {
    /// One process: the ledger is the whole quota.
    #[default]
    None,
    /// Shared, but not read this time (nothing in flight or waiting as the status says; or
    /// reading failed): a copy granted by the ledger waits and asks again.
    Unread,
    Read(SlotView),
}

/// What a plan takes from what it shares with other objects and processes (the account's
/// ledger, the copy slots), claimed before its status is written (`VmEngine::claim`): a claim
/// that finds them taken meanwhile writes nothing, and the object plans again.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Claim {
    /// This object's copies in flight before this plan's grants.
    pub running: Vec<String>,
    /// Its copies that want a slot.
    pub wants: Vec<(Order, String)>,
    /// The copies the ledger granted (as observed).
    pub granted: Vec<String>,
    /// Granted by the ledger, but no shared slot was free (or the slots were not read): they
    /// wait in their place and ask again.
    pub no_slot: Vec<(Order, String)>,
    /// The slot writes to make, when there are any.
    pub slots: Option<SlotPlan>,
    /// Copies wanted a shared slot that was not read: read the slots next time.
    pub read_slots: bool,
}

/// A granted copy that found no shared slot asks again this soon.
const NO_SLOT_RETRY: Duration = super::slots::SLOT_RETRY;

/// Plan from one snapshot: the state machine ([`decide`]), the ledger's and the slots'
/// answers ([`grant`]), the conditions and when to look again. Pure: the same snapshot and
/// time give the same plan.
pub fn plan(obj: &ImageReplication, gate: &Gate, snap: &Snapshot, now: &Time) -> VmPlan {
    let (mut p, waits) = decide(obj, gate, &snap.observed, &snap.limits, now, snap.max_attempts);
    let (admissions, claim) = grant(&p, obj, gate, snap, now);
    p.claim = claim;
    admitted(p, waits, obj, gate, snap, &admissions, now)
}

/// The rest of [`plan`] once the quota answered: granted copies start, the conditions and the
/// summary are made once (from the destinations as admitted), and when to look again.
fn admitted(
    mut p: VmPlan,
    waits: Waits,
    obj: &ImageReplication,
    gate: &Gate,
    snap: &Snapshot,
    admissions: &HashMap<String, Admission>,
    now: &Time,
) -> VmPlan {
    if matches!(gate, Gate::Open) && !p.wants.is_empty() {
        vm_admit(&mut p, obj, admissions, now);
    }
    waits.finish(&mut p, obj, gate, now, snap.max_attempts);
    p.unshare_source = unshare_source(obj, &p.status, &snap.observed.source_unshared);
    p.requeue = next_wake(&p, snap);
    if !p.claim.no_slot.is_empty() {
        let again = if p.claim.read_slots {
            Duration::from_secs(1)
        } else {
            NO_SLOT_RETRY
        };
        p.requeue = Some(p.requeue.map_or(again, |r| r.min(again)));
    }
    p
}

/// The quota's answers to the copies that want to start: the account's ledger as observed
/// (oldest first, at most `limit` in flight), then, with shards, a free shared slot for each
/// granted copy ([`super::slots::plan`]); one that finds none waits again in its place. And what
/// the claim is to take.
pub fn grant(
    p: &VmPlan,
    obj: &ImageReplication,
    gate: &Gate,
    snap: &Snapshot,
    now: &Time,
) -> (HashMap<String, Admission>, Claim) {
    let key = crate::api::key_of(obj);
    let wants = if matches!(gate, Gate::Open) {
        p.wants.clone()
    } else {
        Vec::new()
    };
    let mut ledger = snap.ledger.clone();
    let (mut adm, _) = ledger.admit(&key, snap.limit, &p.running, &wants);
    let granted: Vec<(Order, String)> = wants
        .iter()
        .filter(|(_, r)| adm.get(r) == Some(&Admission::Granted))
        .cloned()
        .collect();
    let mut claim = Claim {
        running: p.running.clone(),
        granted: granted.iter().map(|(_, r)| r.clone()).collect(),
        wants,
        ..Default::default()
    };
    let slotted = match &snap.slots {
        SharedSlots::None => return (adm, claim),
        SharedSlots::Unread => {
            claim.read_slots = !granted.is_empty();
            std::collections::HashSet::new()
        }
        SharedSlots::Read(view) => {
            let sp = super::slots::plan(&view.slots, &view.queue, &key, &p.running, &granted, now.0.as_second());
            let got = sp.granted.clone();
            if !sp.hold.is_empty() || !sp.release.is_empty() || sp.queue.is_some() {
                claim.slots = Some(sp);
            }
            got
        }
    };
    for (o, r) in granted.into_iter().filter(|(_, r)| !slotted.contains(r)) {
        let pos = ledger.requeue(&key, &r, o.clone());
        adm.insert(r.clone(), Admission::Queued(pos));
        claim.no_slot.push((o, r));
    }
    (adm, claim)
}

/// The accounts that own a copy (`destinations[].account`) and no longer need the source
/// shared with them: their copy is Available, no other copy of theirs is still to be made, and
/// no same-region destination shares the source with them in place. (region, account), for
/// the regions not withdrawn yet (`done`).
pub fn unshare_source(
    obj: &ImageReplication,
    status: &ImageReplicationStatus,
    done: &std::collections::HashSet<String>,
) -> Vec<(String, String)> {
    let owner = |region: &str| {
        obj.spec
            .destinations
            .iter()
            .find(|d| d.region == region)
            .and_then(|d| d.account.as_ref())
    };
    let ds = &status.destinations;
    ds.iter()
        .filter(|d| d.phase == DestinationPhase::Available && !done.contains(&d.region))
        .filter_map(|d| owner(&d.region).map(|o| (d.region.clone(), o.id.clone())))
        .filter(|(_, id)| {
            let copying = ds
                .iter()
                .any(|x| x.phase != DestinationPhase::Available && owner(&x.region).is_some_and(|y| &y.id == id));
            let in_place =
                obj.spec.destinations.iter().any(|x| {
                    x.shares_in_place(&obj.spec.source.region) && x.share_with.iter().any(|w| &w.account == id)
                });
            !copying && !in_place
        })
        .collect()
}

/// When to look again: the plan's own wake-up, the next poll of a copy in flight, the next
/// drift check of an available one.
fn next_wake(p: &VmPlan, snap: &Snapshot) -> Option<Duration> {
    let mut next: Vec<Duration> = p.requeue.into_iter().chain(snap.check_in).collect();
    for s in &p.status.destinations {
        let region = &s.region;
        match s.phase {
            DestinationPhase::Starting | DestinationPhase::Copying | DestinationPhase::Cancelling => {
                let poll = snap.poll_in.get(region).copied().unwrap_or_default();
                next.push(poll.max(Duration::from_millis(500)));
            }
            DestinationPhase::Available => {
                let drift = snap.drift_in.get(region).copied().unwrap_or(snap.resync);
                next.push(drift.max(Duration::from_secs(1)));
            }
            _ => {}
        }
    }
    next.into_iter().min()
}

/// The outcome of planning.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VmPlan {
    pub status: ImageReplicationStatus,
    /// Destinations that hold a quota slot (Starting, Copying, Cancelling).
    pub running: Vec<String>,
    /// Destinations ready to start, waiting for a slot.
    pub wants: Vec<(Order, String)>,
    /// Destinations whose start call is to be issued (after the status is written).
    pub start: Vec<String>,
    /// Destinations whose copy is to be cancelled.
    pub cancel: Vec<String>,
    /// Destinations removed from the spec whose copy is to be deleted (`deletionPolicy:
    /// Delete`), its shares withdrawn first.
    pub prune: Vec<String>,
    pub requeue: Option<Duration>,
    pub events: Vec<Announcement>,
    /// Images of copies that failed this plan (the cloud made them, but they are unusable or
    /// never listed): kept in `status.previous` as failed copies until they are deleted.
    pub failed_copies: Vec<PreviousCopy>,
    /// The seed rules the source breaks (empty when none).
    pub refused: Vec<validation::Violation>,
    /// Share calls to make (after the status is written).
    pub shares: Vec<ShareWork>,
    /// Copies of earlier sources to delete (`retention.keep`, or their destination removed
    /// under `deletionPolicy: Delete`), their shares withdrawn first.
    pub retire: Vec<PreviousCopy>,
    /// (region, account): the source's share with the owner of that region's copy, to withdraw
    /// (see [`unshare_source`]).
    pub unshare_source: Vec<(String, String)>,
    /// Kept copies of earlier sources to mark superseded by their region's current copy (see
    /// [`supersede`]).
    pub supersede: Vec<Superseded>,
    /// What to take from the ledger and slots shared with others before the status is written.
    pub claim: Claim,
}

fn secs_since(t: &Option<Time>, now: &Time) -> Option<i64> {
    t.as_ref().map(|t| now.0.as_second() - t.0.as_second())
}

fn source_status(i: &ImageInfo) -> SourceStatus {
    SourceStatus {
        image_id: Some(i.id.clone()),
        name: Some(i.name.clone()),
        size_bytes: i.size_bytes.map(|b| b as i64),
        format: i.disk_format.clone(),
        visibility: Some(i.visibility.clone()),
        encrypted: i.encrypted,
        state: i.state.as_ref().map(|s| match s {
            ImageState::Available => "available".to_string(),
            ImageState::Creating => "creating".to_string(),
            ImageState::Unusable(s) => s.clone(),
        }),
        digest: i.digest.clone(),
        resolved_at: None,
        created_at: i.created_at.clone(),
    }
}

/// The idempotency token of a destination's attempt: unique per object (uid, or namespace and
/// name without a cluster), region, source (`follow`: each new source's copies have their own)
/// and attempt, and at most 64 ASCII characters (the limit of Alibaba's and AWS's
/// `ClientToken`).
pub fn token_for(obj: &ImageReplication, region: &str, source: Option<&str>, attempt: i32) -> String {
    use sha2::Digest;
    let id = obj.metadata.uid.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            obj.metadata.namespace.clone().unwrap_or_default(),
            obj.metadata.name.clone().unwrap_or_default()
        )
    });
    let key = match source {
        Some(s) => format!("{id}|{region}|{s}"),
        None => format!("{id}|{region}"),
    };
    let h = sha2::Sha256::digest(key.as_bytes());
    format!("imgrep-{}-{attempt}", &crate::oci::api::hex(&h)[..32])
}

/// A copy holds a quota slot: starting, copying or being cancelled.
pub(crate) fn in_flight(p: DestinationPhase) -> bool {
    matches!(
        p,
        DestinationPhase::Starting | DestinationPhase::Copying | DestinationPhase::Cancelling
    )
}

fn apply_task(s: &mut DestinationStatus, handle: &CopyHandle, st: &TaskState, now: &Time) {
    if handle.task_id.is_some() {
        s.task_id = handle.task_id.clone();
    }
    if let Some(id) = st.image_id.clone().or_else(|| handle.image_id.clone()) {
        s.image_id = Some(id);
    }
    s.bytes_copied = st.bytes_done.map(|b| b as i64).or(s.bytes_copied);
    s.bytes_total = st.bytes_total.map(|b| b as i64).or(s.bytes_total);
    s.progress_percent = st.progress_percent.or(s.progress_percent);
    s.started_at.get_or_insert_with(|| now.clone());
}

/// What the conditions of a plan say besides its destinations: the source's error, and what
/// the destinations that do not start wait for (the source, else the copy window).
pub struct Waits {
    source_error: Option<ProviderError>,
    waiting: Option<(&'static str, String)>,
}

impl Waits {
    /// The plan's conditions and summary.
    fn finish(&self, p: &mut VmPlan, obj: &ImageReplication, gate: &Gate, now: &Time, max_attempts: i32) {
        let waiting = self.waiting.as_ref().map(|(r, m)| (*r, m.as_str()));
        finish(p, obj, gate, self.source_error.as_ref(), waiting, now, max_attempts);
    }
}

/// The destinations' new status and the work to do, before the quota's admissions and the
/// conditions: what the engine asks the quota for (`wants`, `running`), and what [`plan`]
/// admits and finishes.
pub fn decide(
    obj: &ImageReplication,
    gate: &Gate,
    obs: &Observed,
    limits: &Limits,
    now: &Time,
    max_attempts: i32,
) -> (VmPlan, Waits) {
    let spec = &obj.spec;
    let kind = spec.provider.kind;
    let old = obj.status.clone().unwrap_or_default();
    let retry = retry_requested(obj);
    let redrive = old.observed_generation != obj.metadata.generation || retry.is_some();
    let key = crate::api::key_of(obj);

    let source = obs.source.as_ref().and_then(|r| r.as_ref().ok()).cloned();
    let source_error = obs.source.as_ref().and_then(|r| r.as_ref().err()).cloned();
    // The seed rules the source breaks, and what a source not ready yet waits for.
    let refused = source
        .as_ref()
        .zip(super::providers::cloud(kind))
        .map(|(s, cloud)| rules::check(cloud, spec, s, limits))
        .unwrap_or_default();
    let waiting = source.as_ref().and_then(rules::wait_reason);
    let held = crate::image_replication::window::hold(spec, now);
    let may_start = *gate == Gate::Open && source.is_some() && refused.is_empty() && waiting.is_none();

    let mut p = VmPlan {
        refused: refused.clone(),
        ..Default::default()
    };
    let mut wake: Vec<Duration> = Vec::new();
    let old_source = old.source.as_ref().and_then(|s| s.image_id.as_deref());
    let round = Round {
        gate,
        obs,
        now,
        max_attempts,
        redrive,
        source_region: &spec.source.region,
        sharing: super::providers::sharing(kind),
        start_now: StartNow {
            may_start,
            source: source.as_ref(),
            waiting: waiting.as_deref(),
            source_error: source_error.as_ref(),
            created: obj.metadata.creation_timestamp.as_ref().map_or(0, |t| t.0.as_second()),
            key: &key,
            window: held.as_ref().map(|(m, d)| (m.as_str(), *d)),
        },
        // `follow`: the source this plan copies, when it was looked up this time.
        newer: source
            .as_ref()
            .filter(|_| follow::following(&spec.source))
            .map(|s| s.id.as_str()),
        old_source,
    };
    let mut previous = old.previous.clone();
    let mut destinations = Vec::new();
    for (index, d) in spec.destinations.iter().enumerate() {
        let s = round.destination(&mut p, &old, index, d, &mut previous, &mut wake);
        destinations.push(s);
    }
    for s in old
        .destinations
        .iter()
        .filter(|s| !spec.destinations.iter().any(|d| d.region == s.region))
    {
        let o = obs.dests.get(&s.region).unwrap_or(&DestObs::Unchecked);
        destinations.extend(removed_destination(&mut p, s, o, spec.deletion_policy, gate));
    }

    if let (Some(new), Some(was)) = (round.newer, old_source)
        && new != was
    {
        p.events.push(follow::source_changed(spec, source.as_ref(), was));
    }
    previous.append(&mut p.failed_copies);
    previous = keep_previous(&mut p, obj, &destinations, previous, &obs.retired, gate);
    if *gate == Gate::Open && obs.marks_superseded {
        p.supersede = supersede(&destinations, &previous, &p.retire, &obs.superseded);
    }
    p.status = ImageReplicationStatus {
        observed_generation: obj.metadata.generation,
        conditions: Vec::new(),
        source: source_now(old.source.as_ref(), source.as_ref(), now),
        destinations,
        summary: None,
        last_handled_retry: retry.or(old.last_handled_retry.clone()),
        previous,
    };
    p.requeue = wake.into_iter().min();
    // What the destinations that do not start wait for: the source, else the copy window.
    let waiting = waiting
        .map(|w| ("SourceNotReady", w))
        .or(held.map(|(m, _)| ("OutsideCopyWindow", m)));
    (p, Waits { source_error, waiting })
}

/// The source's status: as described now (resolved when it became this image), else as it was.
fn source_now(old: Option<&SourceStatus>, source: Option<&ImageInfo>, now: &Time) -> Option<SourceStatus> {
    let Some(i) = source else { return old.cloned() };
    Some(SourceStatus {
        resolved_at: follow::resolved_at(old, |o| o.image_id.as_deref() == Some(i.id.as_str()), now),
        ..source_status(i)
    })
}

/// What every destination of one plan shares.
struct Round<'a> {
    gate: &'a Gate,
    obs: &'a Observed,
    now: &'a Time,
    max_attempts: i32,
    /// The spec changed or a retry was asked for: failed destinations and shares start over.
    redrive: bool,
    source_region: &'a str,
    sharing: Option<&'static share::Sharing>,
    start_now: StartNow<'a>,
    /// `follow`: the source this plan copies, when it was looked up this time.
    newer: Option<&'a str>,
    old_source: Option<&'a str>,
}

impl Round<'_> {
    /// One destination of the spec: what was observed of its copy applied, superseded by a
    /// newer source, queued for a slot, its shares planned, and its phase change announced.
    fn destination(
        &self,
        p: &mut VmPlan,
        old: &ImageReplicationStatus,
        index: usize,
        d: &DestinationSpec,
        previous: &mut Vec<PreviousCopy>,
        wake: &mut Vec<Duration>,
    ) -> DestinationStatus {
        let (gate, now, max_attempts) = (self.gate, self.now, self.max_attempts);
        let mut s = old.destination_or_new(&d.region);
        s.owner = d.account.as_ref().map(|a| a.id.clone());
        let before = s.phase;
        let o = self.obs.dests.get(&d.region).unwrap_or(&DestObs::Unchecked);
        if self.redrive && matches!(s.phase, DestinationPhase::Failed) {
            s.attempts = 0;
            s.phase = DestinationPhase::Pending;
            s.message = None;
        }
        if d.shares_in_place(self.source_region) {
            shared_in_place(&mut s, self.start_now.source.filter(|_| self.start_now.may_start));
        } else {
            let at = Clock {
                now,
                max_attempts,
                listing: self.obs.listing,
            };
            // Copies may start: the gate is open and the source is known.
            let can_start = *gate == Gate::Open && self.start_now.source.is_some();
            apply_observation(p, &mut s, before, o, can_start, &at, wake);
            if let Some(current) = self.newer.filter(|_| *gate == Gate::Open) {
                let cancel = follow::supersede(&mut s, current, self.old_source, self.obs.can_cancel, previous);
                p.cancel.extend(cancel);
            }
            queue_destination(p, &mut s, gate, index, &self.start_now, now, max_attempts, wake);
        }
        let sp = SharePlan {
            sharing: self.sharing,
            obs: self.obs.shares.get(&d.region),
            redrive: self.redrive,
            may_act: *gate == Gate::Open,
            max_attempts,
            twins: old
                .destinations
                .iter()
                .filter(|t| t.region != d.region && t.phase == DestinationPhase::Available)
                .filter(|t| s.image_id.is_some() && t.image_id == s.image_id)
                .flat_map(|t| &t.shares)
                .collect(),
        };
        share::plan_shares(d, &mut s, &sp, now, &mut p.shares, &mut p.events, wake);
        if s.phase != DestinationPhase::Failed {
            s.reason = None;
        }
        if in_flight(s.phase) {
            p.running.push(d.region.clone());
        }
        if s.phase != DestinationPhase::Queued {
            s.queue_position = None;
        }
        if s.phase != before && s.phase != DestinationPhase::Queued {
            p.events.push(phase_event(&s));
        }
        s
    }
}

/// The copies of earlier sources after this plan: those deleted since the last one forgotten
/// (with an Event), a failed delete said on its entry, the listing bounded without
/// `retention.keep`, and those to delete now into `p.retire`.
fn keep_previous(
    p: &mut VmPlan,
    obj: &ImageReplication,
    destinations: &[DestinationStatus],
    mut previous: Vec<PreviousCopy>,
    retired: &HashMap<String, Result<(), ProviderError>>,
    gate: &Gate,
) -> Vec<PreviousCopy> {
    let spec = &obj.spec;
    previous.retain_mut(|c| match retired.get(&c.image_id) {
        Some(Ok(())) => {
            p.events.push(follow::retired_event(spec, c));
            false
        }
        Some(Err(e)) => {
            c.message = Some(format!("deleting it failed (will retry): {}", e.message));
            true
        }
        None => true,
    });
    follow::forget_removed(spec, &mut previous, &mut p.events);
    follow::forget_beyond_listing(spec, &mut previous, &mut p.events);
    if *gate == Gate::Open {
        p.retire = follow::retire(spec, destinations, &previous);
    }
    previous
}

/// A kept copy of an earlier source and the current copy in its region that supersedes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superseded {
    pub region: String,
    pub image_id: String,
    pub by: String,
}

/// Where the cloud marks superseded images: each copy of an earlier source that stays (not
/// retired now, not failed, not marked yet by this process), pointed to its region's current
/// Available copy. Never an earlier source itself (a same-region destination's image): only
/// images the operator made.
pub fn supersede(
    destinations: &[DestinationStatus],
    previous: &[PreviousCopy],
    retire: &[PreviousCopy],
    marked: &std::collections::HashSet<String>,
) -> Vec<Superseded> {
    previous
        .iter()
        .filter(|c| !c.failed && !marked.contains(&c.image_id))
        .filter(|c| c.source_image_id.as_deref() != Some(c.image_id.as_str()))
        .filter(|c| !retire.iter().any(|r| r.image_id == c.image_id))
        .filter_map(|c| {
            let current = destinations
                .iter()
                .find(|d| d.region == c.region && d.phase == DestinationPhase::Available)?;
            let by = current.image_id.clone().filter(|i| *i != c.image_id)?;
            Some(Superseded {
                region: c.region.clone(),
                image_id: c.image_id.clone(),
                by,
            })
        })
        .collect()
}

/// A same-region destination that only shares: nothing is copied, the source itself (once
/// described and allowed to start) is its image.
fn shared_in_place(s: &mut DestinationStatus, source: Option<&ImageInfo>) {
    if let Some(src) = source {
        s.phase = DestinationPhase::Available;
        s.image_id = Some(src.id.clone());
        s.message = Some("the source image itself (same region: shared, not copied)".into());
    }
}

/// A destination removed from the spec (what Argo CD and Flux users expect when they delete a
/// line): a copy in flight is cancelled; then under `deletionPolicy: Delete` its copy is deleted
/// (shares withdrawn first) and under `Retain` kept; then it is forgotten, with an Event.
/// `Some`: the status it keeps meanwhile.
fn removed_destination(
    p: &mut VmPlan,
    s: &DestinationStatus,
    o: &DestObs,
    policy: DeletionPolicy,
    gate: &Gate,
) -> Option<DestinationStatus> {
    let region = &s.region;
    let image = s.image_id.clone().unwrap_or_else(|| "?".into());
    let forget = |p: &mut VmPlan, what: String| {
        p.events.push(Announcement {
            warning: false,
            reason: "DestinationRemoved".into(),
            note: format!("{region}: removed from spec.destinations; {what}"),
        });
        None
    };
    let mut kept = s.clone();
    match (s.phase, o) {
        (_, DestObs::Pruned) => forget(p, format!("its copy {image} was deleted (deletionPolicy Delete)")),
        (DestinationPhase::Cancelling, DestObs::Cancelled) => forget(
            p,
            "its copy in flight was cancelled (where the cloud cannot cancel, it finishes untracked)".into(),
        ),
        (DestinationPhase::Starting | DestinationPhase::Copying | DestinationPhase::Cancelling, _) => {
            if *gate == Gate::Open || *gate == Gate::Suspended {
                kept.phase = DestinationPhase::Cancelling;
                kept.message = Some("removed from spec.destinations: cancelling the copy in flight".into());
                p.cancel.push(region.clone());
            }
            Some(kept)
        }
        (DestinationPhase::Available, _) if policy == DeletionPolicy::Delete && s.image_id.is_some() => {
            if *gate == Gate::Open {
                p.prune.push(region.clone());
            }
            let m = match o {
                DestObs::Error(e) => format!(
                    "removed from spec.destinations: deleting image {image} failed (will retry): {}",
                    e.message
                ),
                _ => format!("removed from spec.destinations: deleting image {image} (deletionPolicy Delete)"),
            };
            kept.message = Some(m);
            Some(kept)
        }
        (DestinationPhase::Available, _) => forget(p, format!("its copy {image} is kept (deletionPolicy Retain)")),
        _ => forget(p, "it had no copy".into()),
    }
}

/// Whether the copies of an object may start now, and if not why.
struct StartNow<'a> {
    may_start: bool,
    /// The source image, when it was described.
    source: Option<&'a ImageInfo>,
    /// The source image is not ready yet (the message says for what it waits).
    waiting: Option<&'a str>,
    /// The source image could not be read.
    source_error: Option<&'a ProviderError>,
    /// The object's creation time and key: its place in the account's queue.
    created: i64,
    key: &'a str,
    /// The copy window is closed: why, and for how long (drift repairs are not held).
    window: Option<(&'a str, Duration)>,
}

/// Suspend stops what is in flight; otherwise a destination that has no copy (or a failed one
/// whose backoff has passed) asks for a slot (`p.wants`), or says why it cannot yet.
#[allow(clippy::too_many_arguments)]
fn queue_destination(
    p: &mut VmPlan,
    s: &mut DestinationStatus,
    gate: &Gate,
    index: usize,
    start_now: &StartNow<'_>,
    now: &Time,
    max_attempts: i32,
    wake: &mut Vec<Duration>,
) {
    let StartNow {
        may_start,
        waiting,
        source_error,
        created,
        key,
        window,
        ..
    } = *start_now;
    // Suspend: stop what is in flight; nothing new starts.
    if *gate == Gate::Suspended {
        if matches!(
            s.phase,
            DestinationPhase::Starting | DestinationPhase::Copying | DestinationPhase::Cancelling
        ) {
            s.phase = DestinationPhase::Cancelling;
            p.cancel.push(s.region.clone());
        } else if s.phase == DestinationPhase::Queued {
            s.phase = DestinationPhase::Pending;
            s.queue_position = None;
            s.message = Some("suspended".into());
        }
    }

    // Candidates for a slot.
    let retry_due = |s: &DestinationStatus, wake: &mut Vec<Duration>| {
        if s.attempts >= max_attempts {
            return false;
        }
        let setup = s.reason == Some(DestinationReason::SetupRequired);
        let due = if setup { SETUP_RETRY } else { retry_delay(s.attempts) }.as_secs() as i64;
        match secs_since(&s.completed_at, now) {
            Some(age) if age < due => {
                wake.push(Duration::from_secs((due - age) as u64));
                false
            }
            _ => true,
        }
    };
    let candidate = match s.phase {
        DestinationPhase::Pending | DestinationPhase::Queued | DestinationPhase::Cancelled => true,
        DestinationPhase::Failed => retry_due(s, wake),
        _ => false,
    };
    if candidate && *gate == Gate::Open {
        // A drift repair (copied before, its copy deleted outside the operator: attempts made,
        // no failure recorded) is not held by the window.
        let repair = s.attempts > 0 && s.completed_at.is_none();
        if let (true, Some((why, until)), false) = (may_start, window, repair) {
            s.phase = DestinationPhase::Queued;
            s.queue_position = None;
            s.message = Some(why.to_string());
            wake.push(until.max(Duration::from_secs(1)));
        } else if may_start {
            s.phase = DestinationPhase::Queued;
            s.message = None;
            let order = Order {
                created,
                key: key.to_string(),
                index,
            };
            p.wants.push((order, s.region.clone()));
        } else if let Some(w) = waiting {
            s.phase = DestinationPhase::Queued;
            s.queue_position = None;
            s.message = Some(w.to_string());
            wake.push(Duration::from_secs(30));
        } else if let Some(e) = source_error {
            s.message = Some(format!("source image: {}", e.message));
            wake.push(Duration::from_secs(if e.retryable { 15 } else { 60 }));
        }
    }
}

/// A copy in flight was polled: progress, success, failure (with retry backoff into `wake`),
/// cancellation.
fn apply_polled(
    s: &mut DestinationStatus,
    before: DestinationPhase,
    handle: &CopyHandle,
    state: &TaskState,
    at: &Clock<'_>,
    wake: &mut Vec<Duration>,
) {
    let (now, max_attempts) = (at.now, at.max_attempts);
    apply_task(s, handle, state, now);
    match &state.phase {
        TaskPhase::Running => {
            if s.phase == DestinationPhase::Starting {
                s.phase = DestinationPhase::Copying;
            }
            s.message = None;
        }
        TaskPhase::Succeeded => {
            s.phase = DestinationPhase::Available;
            s.progress_percent = Some(100);
            s.bytes_copied = s.bytes_total.or(s.bytes_copied);
            s.digest = state.digest.clone();
            s.completed_at = Some(now.clone());
            s.message = None;
        }
        TaskPhase::Failed(msg) => fail(s, msg, true, now, max_attempts, wake),
        TaskPhase::Unlisted => {
            let id = s.image_id.clone().unwrap_or_else(|| "?".into());
            unlisted(s, &format!("destination image {id}"), at, wake);
        }
        TaskPhase::Cancelled if before == DestinationPhase::Cancelling => {
            s.phase = DestinationPhase::Cancelled;
            s.completed_at = Some(now.clone());
            s.message = Some("cancelled (suspend)".into());
            clear_progress(s);
        }
        TaskPhase::Cancelled => fail(
            s,
            "the copy was cancelled outside the operator",
            true,
            now,
            max_attempts,
            wake,
        ),
    }
}

/// What a destination's plan is timed by: now, the attempts bound, and how the cloud lists
/// new copies.
struct Clock<'a> {
    now: &'a Time,
    max_attempts: i32,
    listing: Listing,
}

/// A copy the cloud does not list (`what`): within the cloud's listing window since the attempt
/// started it is still too new to list, so it is waited for (in flight, never made again);
/// after the window it is gone, a failed attempt.
fn unlisted(s: &mut DestinationStatus, what: &str, at: &Clock<'_>, wake: &mut Vec<Duration>) {
    match at.listing.wait_left(s, at.now) {
        Some(_) => {
            if s.phase == DestinationPhase::Starting {
                s.phase = DestinationPhase::Copying;
            }
            s.message = Some(format!(
                "{what} is not listed by the cloud yet (it lists new images up to {}s late); waiting for it, not copying again",
                at.listing.late.as_secs()
            ));
        }
        None => fail(
            s,
            &format!(
                "{what} is gone: the cloud has not listed it in the {}s since the copy started (cancelled or deleted)",
                at.listing.late.as_secs()
            ),
            true,
            at.now,
            at.max_attempts,
            wake,
        ),
    }
}

/// Take what was observed of one destination's copy into its status: progress, success,
/// failure (with retry backoff into `wake`), cancellation, drift (a deleted copy starts
/// again, keeping the attempt count); a copy to start (`can_start`) goes into `p.start`.
fn apply_observation(
    p: &mut VmPlan,
    s: &mut DestinationStatus,
    before: DestinationPhase,
    o: &DestObs,
    can_start: bool,
    at: &Clock<'_>,
    wake: &mut Vec<Duration>,
) {
    let (now, max_attempts) = (at.now, at.max_attempts);
    let region = s.region.clone();
    let region = region.as_str();
    match (s.phase, o) {
        (
            DestinationPhase::Starting | DestinationPhase::Copying | DestinationPhase::Cancelling,
            DestObs::Task { handle, state },
        ) => {
            if state.restarted {
                let lost = s.bytes_copied.unwrap_or(0);
                p.events.push(Announcement {
                    warning: true,
                    reason: "UploadRestarted".into(),
                    note: format!(
                        "{region}: the upload into image {} starts again from the beginning (the provider cannot resume it after the operator restarted); {lost} bytes already sent are sent again",
                        handle.image_id.as_deref().unwrap_or("?")
                    ),
                });
            }
            let image = s.image_id.clone().or_else(|| handle.image_id.clone());
            apply_polled(s, before, handle, state, at, wake);
            abandoned(p, s, image);
        }
        (DestinationPhase::Cancelling, DestObs::Cancelled) => cancelled(s, now),
        // After a restart no copy carries the token yet: on a cloud whose copy call takes no
        // client token, a copy asked for this attempt may only not be listed yet, so none is
        // asked for again until the cloud's listing window is over.
        (DestinationPhase::Starting, DestObs::NotStarted)
            if can_start
                && !at.listing.idempotent_start
                && s.client_token.is_some()
                && at.listing.wait_left(s, now).is_some() =>
        {
            s.message = Some(format!(
                "looking for the copy this attempt asked for: the cloud lists new images up to {}s late, so no second copy is asked for before then",
                at.listing.late.as_secs()
            ));
        }
        (DestinationPhase::Starting, DestObs::NotStarted) if can_start => {
            p.start.push(region.to_string());
        }
        (DestinationPhase::Starting, DestObs::StartFailed(e)) if e.setup => {
            // Nothing was started: the attempt is given back, and the start is tried again on
            // a slow schedule for as long as the cloud's admin has not set it up.
            s.attempts = (s.attempts - 1).max(0);
            stop_failed(s, now);
            s.reason = Some(DestinationReason::SetupRequired);
            s.message = Some(format!("{} ({SETUP_NOTE} {}s)", e.message, SETUP_RETRY.as_secs()));
            wake.push(SETUP_RETRY);
        }
        (DestinationPhase::Starting, DestObs::StartFailed(e)) => {
            // The token is kept: a start that failed late may still have created the copy,
            // and the next attempt looks it up first.
            let token = s.client_token.clone();
            fail(s, &e.message, e.retryable, now, max_attempts, wake);
            s.client_token = token;
        }
        (DestinationPhase::Starting | DestinationPhase::Copying, DestObs::Error(e)) if e.not_found => {
            let image = s.image_id.clone();
            unlisted(s, &format!("the copy ({})", e.message), at, wake);
            abandoned(p, s, image);
        }
        (_, DestObs::Error(e)) => {
            s.message = Some(format!("provider error (will retry): {}", e.message));
        }
        (DestinationPhase::Available, DestObs::Gone) => drifted(p, s),
        _ => {}
    }
}

/// A copy in flight that the provider cancelled (suspend).
fn cancelled(s: &mut DestinationStatus, now: &Time) {
    s.phase = DestinationPhase::Cancelled;
    s.completed_at = Some(now.clone());
    s.message = Some("cancelled (suspend)".into());
    clear_progress(s);
    s.task_id = None;
    s.image_id = None;
    s.client_token = None;
}

/// An Available copy deleted outside the operator: announced, and copied again.
fn drifted(p: &mut VmPlan, s: &mut DestinationStatus) {
    p.events.push(Announcement {
        warning: true,
        reason: "DriftDetected".into(),
        note: format!(
            "{}: destination image {} was deleted outside the operator; copying it again",
            s.region,
            s.image_id.as_deref().unwrap_or("?")
        ),
    });
    // A fresh copy, but the attempt count goes on: the next copy's idempotency token
    // (`...-<attempt>`) must differ from the deleted one's, or a provider that is idempotent
    // per token hands back the deleted copy (and the Events name it).
    *s = DestinationStatus {
        region: s.region.clone(),
        attempts: s.attempts,
        message: Some(DRIFT_NOTE.into()),
        ..Default::default()
    };
}

/// A copy whose attempt just failed while the cloud had made its image (`image`): the image is
/// kept as a failed copy, to be deleted (a failed AMI or `CreateFailed` ECS image still counts
/// against the account's quotas and bills its snapshots; one never listed may show later).
fn abandoned(p: &mut VmPlan, s: &DestinationStatus, image: Option<String>) {
    if s.phase != DestinationPhase::Failed {
        return;
    }
    if let Some(image_id) = image {
        p.failed_copies.push(PreviousCopy {
            region: s.region.clone(),
            image_id,
            source_image_id: s.source_image_id.clone(),
            owner: s.owner.clone(),
            message: s.message.clone(),
            failed: true,
            ..Default::default()
        });
    }
}

/// Forget a stopped copy's progress and byte counts: they describe a copy that is not going on.
fn clear_progress(s: &mut DestinationStatus) {
    s.progress_percent = None;
    s.bytes_copied = None;
    s.bytes_total = None;
}

/// `Failed` now, with no copy behind it: no progress to show (not the 99% it had reached), no
/// token, task or image.
fn stop_failed(s: &mut DestinationStatus, now: &Time) {
    s.phase = DestinationPhase::Failed;
    s.reason = Some(DestinationReason::CopyFailed);
    s.completed_at = Some(now.clone());
    clear_progress(s);
    s.client_token = None;
    s.task_id = None;
    s.image_id = None;
}

fn fail(
    s: &mut DestinationStatus,
    msg: &str,
    retryable: bool,
    now: &Time,
    max_attempts: i32,
    wake: &mut Vec<Duration>,
) {
    if !retryable {
        s.attempts = s.attempts.max(max_attempts);
    }
    let retry = s.attempts < max_attempts;
    stop_failed(s, now);
    s.message = Some(format!(
        "{msg} (attempt {}/{max_attempts}{})",
        s.attempts.min(max_attempts),
        if retry { ", will retry" } else { "" }
    ));
    if retry {
        wake.push(retry_delay(s.attempts));
    }
}

fn phase_event(s: &DestinationStatus) -> Announcement {
    let what = match s.phase {
        DestinationPhase::Available => format!(
            "image {} available{}",
            s.image_id.as_deref().unwrap_or("?"),
            s.digest
                .as_deref()
                .map(|d| format!(", {d} verified"))
                .unwrap_or_default()
        ),
        DestinationPhase::Starting => format!("starting copy (token {})", s.client_token.as_deref().unwrap_or("?")),
        DestinationPhase::Copying => format!(
            "copying to image {} (task {})",
            s.image_id.as_deref().unwrap_or("?"),
            s.task_id.as_deref().unwrap_or("?")
        ),
        // Every Event says something: the phase's own words when there is no message.
        phase => s
            .message
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| match phase {
                DestinationPhase::Pending => "waiting to be queued".to_string(),
                DestinationPhase::Queued => format!(
                    "waiting for a copy slot of the account (position {})",
                    s.queue_position.map_or_else(|| "?".to_string(), |p| p.to_string())
                ),
                DestinationPhase::Cancelling => "cancelling the copy".to_string(),
                DestinationPhase::Cancelled => "copy cancelled".to_string(),
                DestinationPhase::Failed => "copy failed".to_string(),
                other => format!("{other:?}").to_lowercase(),
            }),
    };
    // A region the cloud is not set up for is its own happening, not a failed copy.
    let reason = match s.reason {
        Some(DestinationReason::SetupRequired) => "DestinationSetupRequired".to_string(),
        _ => format!("Destination{:?}", s.phase),
    };
    Announcement {
        warning: s.phase == DestinationPhase::Failed,
        reason,
        note: format!("{}: {what}", s.region),
    }
}

/// Apply the quota's answers: granted copies become `Starting` with a fresh idempotency token
/// (or the kept one of a start that failed), the rest are `Queued` with their position.
pub fn vm_admit(p: &mut VmPlan, obj: &ImageReplication, admissions: &HashMap<String, Admission>, now: &Time) {
    let current = p.status.source.as_ref().and_then(|s| s.image_id.clone());
    for s in p.status.destinations.iter_mut() {
        match admissions.get(&s.region) {
            Some(Admission::Granted) => {
                s.attempts += 1;
                s.phase = DestinationPhase::Starting;
                if follow::following(&obj.spec.source) {
                    s.source_image_id = current.clone();
                }
                let token = s
                    .client_token
                    .clone()
                    .unwrap_or_else(|| token_for(obj, &s.region, s.source_image_id.as_deref(), s.attempts));
                s.client_token = Some(token);
                s.task_id = None;
                s.image_id = None;
                s.started_at = Some(now.clone());
                s.completed_at = None;
                s.progress_percent = Some(0);
                s.bytes_copied = Some(0);
                s.queue_position = None;
                s.message = None;
                p.start.push(s.region.clone());
                p.running.push(s.region.clone());
                p.events.push(phase_event(s));
            }
            Some(Admission::Queued(pos)) => {
                let fresh = s.queue_position.is_none();
                s.queue_position = Some(*pos);
                s.message = Some(format!(
                    "waiting for a copy slot (position {pos} in the account's queue)"
                ));
                if fresh {
                    p.events.push(Announcement {
                        warning: false,
                        reason: "DestinationQueued".into(),
                        note: format!("{}: {}", s.region, s.message.clone().unwrap_or_default()),
                    });
                }
            }
            None => {}
        }
    }
}

/// The source's own rules (format, size, encryption, ...) ran only if it could be read: until
/// then the spec is not called valid, only not yet refused.
fn source_unchecked(desired: &mut [Desired], source_error: Option<&ProviderError>) {
    let Some(e) = source_error else { return };
    for d in desired.iter_mut().filter(|d| d.type_ == VALIDATED && d.status) {
        *d = Desired::unknown(
            VALIDATED,
            reason::SOURCE_NOT_CHECKED,
            format!(
                "the spec passed every rule checked without the source; the source image's rules are not yet checked (it could not be read: {})",
                e.message
            ),
        );
    }
}

/// Every copy available and every share in place.
fn done_conditions(
    obj: &ImageReplication,
    n: usize,
    shares_n: usize,
    source_error: Option<&ProviderError>,
) -> Vec<Desired> {
    let shared = if shares_n > 0 {
        format!(" and shared with {shares_n}/{shares_n} accounts")
    } else {
        String::new()
    };
    // A followed source that cannot be found again: the copies stay, and Ready says so.
    let kept = match source_error.filter(|_| follow::following(&obj.spec.source)) {
        Some(e) => format!(
            "; looking up the source again failed, so these copies are kept: {}",
            e.message
        ),
        None => String::new(),
    };
    standing_conditions(
        Standing::Done,
        reason::SUCCEEDED,
        format!("{n}/{n} destination images available and verified{shared}{kept}"),
    )
}

/// The conditions the destinations, shares, gate and source call for, and the summary
/// ("2/3 available, 1 copying").
fn desired_conditions(
    p: &VmPlan,
    obj: &ImageReplication,
    gate: &Gate,
    source_error: Option<&ProviderError>,
    waiting: Option<(&'static str, &str)>,
    max_attempts: i32,
) -> (Vec<Desired>, String) {
    let ds = &p.status.destinations;
    let n = ds.len();
    let count = |ph: DestinationPhase| ds.iter().filter(|d| d.phase == ph).count();
    let available = count(DestinationPhase::Available);
    let copying = count(DestinationPhase::Copying) + count(DestinationPhase::Starting);
    let queued = count(DestinationPhase::Queued);
    let failed: Vec<&DestinationStatus> = ds.iter().filter(|d| d.phase == DestinationPhase::Failed).collect();
    let final_failed = failed.iter().filter(|d| d.attempts >= max_attempts).count();
    let mut summary = format!("{available}/{n} available");
    let (shares_ok, shares_n, withdrawing) = share::count(ds);
    if shares_n > 0 {
        summary.push_str(&format!(", {shares_ok}/{shares_n} shares"));
    }
    for (k, label) in [(copying, "copying"), (queued, "queued"), (failed.len(), "failed")] {
        if k > 0 {
            summary.push_str(&format!(", {k} {label}"));
        }
    }
    let fail_text = failed
        .iter()
        .map(|d| format!("{}: {}", d.region, d.message.as_deref().unwrap_or("failed")))
        .collect::<Vec<_>>()
        .join("; ");
    let with_fail = |m: String| {
        if fail_text.is_empty() {
            m
        } else {
            format!("{m}; {fail_text}")
        }
    };
    let desired = if !p.refused.is_empty() {
        let (r, m) = validation::summarize(&p.refused);
        let mut d = standing_conditions(Standing::Stuck, r, m.clone());
        d[3] = Desired::new(VALIDATED, false, r, m);
        d
    } else if !matches!(gate, Gate::Open) {
        gate_conditions(gate, false)
    } else if available == n && shares_ok == shares_n && withdrawing == 0 {
        done_conditions(obj, n, shares_n, source_error)
    } else if available == n {
        share::conditions(ds, &summary, max_attempts)
    } else if let Some(e) = source_error.filter(|e| e.auth) {
        // The cloud (or its security token service) refused the credentials: nothing is
        // copied until they change.
        standing_conditions(Standing::Stuck, "CredentialsRefused", e.message.clone())
    } else if let Some(e) = source_error.filter(|e| !e.retryable) {
        standing_conditions(
            Standing::Stuck,
            "SourceUnavailable",
            format!("source image: {}", e.message),
        )
    } else if copying + queued > 0
        || failed.len() > final_failed
        || ds.iter().any(|d| {
            matches!(
                d.phase,
                DestinationPhase::Pending | DestinationPhase::Cancelling | DestinationPhase::Cancelled
            )
        })
    {
        let setup = failed
            .iter()
            .any(|d| d.reason == Some(DestinationReason::SetupRequired));
        let r = match waiting {
            Some((why, _)) if copying == 0 => why,
            _ if setup && copying == 0 => "CloudSetupRequired",
            _ => reason::PROGRESSING,
        };
        let m = with_fail(match (waiting, source_error) {
            (Some((_, w)), _) => format!("{summary}; {w}"),
            (None, Some(e)) => format!("{summary}; source image (will retry): {}", e.message),
            (None, None) => summary.clone(),
        });
        standing_conditions(Standing::Working, r, m)
    } else {
        standing_conditions(Standing::Stuck, "DestinationsFailed", with_fail(summary.clone()))
    };
    (desired, summary)
}

/// Summary and conditions from the destinations.
fn finish(
    p: &mut VmPlan,
    obj: &ImageReplication,
    gate: &Gate,
    source_error: Option<&ProviderError>,
    waiting: Option<(&'static str, &str)>,
    now: &Time,
    max_attempts: i32,
) {
    let old = obj.status.clone().unwrap_or_default();
    let (desired, summary) = desired_conditions(p, obj, gate, source_error, waiting, max_attempts);
    let mut desired = desired;
    if p.refused.is_empty() && matches!(gate, Gate::Open) {
        source_unchecked(&mut desired, source_error);
    }
    p.status.conditions = conditions::merge(&old.conditions, &desired, obj.metadata.generation, now);
    // The printer column says why nothing moves, as for every other provider.
    p.status.summary = Some(match (p.refused.first(), gate) {
        (Some(v), _) => format!("Invalid: {}", v.reason),
        (None, Gate::Invalid(v)) if !v.is_empty() => format!("Invalid: {}", v[0].reason),
        _ => summary,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::plan::test_at as at;

    fn obj() -> ImageReplication {
        let mut o: ImageReplication = serde_yaml::from_str(
            r#"
apiVersion: replication.imageops.io/v1alpha1
kind: ImageReplication
metadata: {name: web, namespace: default, uid: 0f8e2a4c-1111-2222-3333-444455556666}
spec:
  provider: {kind: openstack, credentialsSecretRef: {name: s}}
  source: {region: one, imageId: img-1}
  destinations: [{region: two}, {region: three}]
"#,
        )
        .unwrap();
        o.metadata.generation = Some(1);
        o
    }

    /// Where the cloud marks superseded images, each kept copy of an earlier source is marked
    /// once, pointing to its region's current Available copy; never one retired now, a failed
    /// one, one marked already, an earlier source itself, or while the region has no current copy.
    #[test]
    fn kept_copies_are_marked_superseded_by_the_current_one() {
        let copy = |region: &str, id: &str, source: &str| PreviousCopy {
            region: region.into(),
            image_id: id.into(),
            source_image_id: Some(source.into()),
            ..Default::default()
        };
        let dest = |region: &str, phase: DestinationPhase, id: &str| DestinationStatus {
            region: region.into(),
            phase,
            image_id: Some(id.into()),
            ..Default::default()
        };
        let dests = [
            dest("two", DestinationPhase::Available, "c-2"),
            dest("three", DestinationPhase::Copying, "c-3"),
            dest("one", DestinationPhase::Available, "src-2"),
        ];
        let failed = PreviousCopy {
            failed: true,
            ..copy("two", "f-2", "src-1")
        };
        let previous = [
            copy("two", "a-2", "src-1"),
            copy("two", "b-2", "src-0"),
            copy("two", "m-2", "src-0"),
            failed,
            copy("three", "a-3", "src-1"),
            copy("one", "src-1", "src-1"),
        ];
        let retire = [copy("two", "b-2", "src-0")];
        let marked = std::collections::HashSet::from(["m-2".to_string()]);
        let got = supersede(&dests, &previous, &retire, &marked);
        assert_eq!(
            got,
            vec![Superseded {
                region: "two".into(),
                image_id: "a-2".into(),
                by: "c-2".into()
            }]
        );
    }

    /// The quota is decided in the plan from what observe read: the account's ledger (at most
    /// `limit` in flight, oldest first), then, with shards, a free shared slot per granted
    /// copy; the claim carries what to take. A copy granted by the ledger with no shared slot
    /// (or slots not read) waits in its place and asks again soon.
    #[test]
    fn the_ledger_and_the_shared_slots_grant_in_the_plan() {
        let snap = |limit: i32, ledger: Ledger, slots: SharedSlots| Snapshot {
            observed: observed(&[]),
            ledger,
            limit,
            slots,
            max_attempts: 3,
            ..Default::default()
        };
        let phases = |p: &VmPlan| {
            p.status
                .destinations
                .iter()
                .map(|d| (d.region.clone(), d.phase, d.queue_position))
                .collect::<Vec<_>>()
        };
        let q = |r: &str, pos| (r.to_string(), DestinationPhase::Queued, Some(pos));
        let started = |r: &str| (r.to_string(), DestinationPhase::Starting, None);
        // One process, one slot: the first destination starts, the second waits.
        let p = plan(
            &obj(),
            &Gate::Open,
            &snap(1, Ledger::default(), SharedSlots::None),
            &at(0),
        );
        assert_eq!(phases(&p), [started("two"), q("three", 1)]);
        assert_eq!(
            (p.start.clone(), p.claim.granted.clone()),
            (vec!["two".to_string()], vec!["two".to_string()])
        );
        assert_eq!(p.claim.wants.len(), 2);
        assert!(p.claim.slots.is_none() && p.claim.no_slot.is_empty());
        // Another object of the account holds the slot: both wait, in order.
        let mut busy = Ledger::default();
        busy.admit("default/other", 1, &["x".to_string()], &[]);
        let p = plan(&obj(), &Gate::Open, &snap(1, busy, SharedSlots::None), &at(0));
        assert_eq!(phases(&p), [q("two", 1), q("three", 2)]);
        assert!(p.start.is_empty() && p.claim.granted.is_empty());
        // Shards: the ledger grants both, one shared slot is free (another process holds the
        // other): `two` takes it, `three` waits and asks again within the slot retry.
        let view = SlotView {
            slots: vec![
                Some(super::super::slots::Seen {
                    holder: Some("default/b/r".into()),
                    renewed: at(0).0.as_second(),
                    ..Default::default()
                }),
                None,
            ],
            ..Default::default()
        };
        let p = plan(
            &obj(),
            &Gate::Open,
            &snap(2, Ledger::default(), SharedSlots::Read(view)),
            &at(0),
        );
        assert_eq!(phases(&p), [started("two"), q("three", 1)]);
        let sp = p.claim.slots.clone().expect("slot writes");
        assert_eq!(
            sp.hold.into_iter().collect::<Vec<_>>(),
            [(1, "default/web/two".to_string())]
        );
        assert_eq!(
            p.claim.no_slot.iter().map(|(_, r)| r.as_str()).collect::<Vec<_>>(),
            ["three"]
        );
        assert!(p.requeue.unwrap() <= NO_SLOT_RETRY);
        // Shards, slots not read this time: nothing starts, they are read at the next look, soon.
        let p = plan(
            &obj(),
            &Gate::Open,
            &snap(2, Ledger::default(), SharedSlots::Unread),
            &at(0),
        );
        assert_eq!(phases(&p), [q("two", 1), q("three", 2)]);
        assert!(p.start.is_empty() && p.claim.read_slots);
        assert_eq!(p.requeue, Some(Duration::from_secs(1)));
        // Suspended: nothing wants a slot, nothing is granted.
        let p = plan(
            &obj(),
            &Gate::Suspended,
            &snap(2, Ledger::default(), SharedSlots::None),
            &at(0),
        );
        assert!(p.claim.wants.is_empty() && p.claim.granted.is_empty() && p.start.is_empty());
    }

    /// The source's share with a copy's owner is withdrawn once no copy of that owner is still
    /// to be made and no same-region destination shares the source with it; once per region.
    #[test]
    fn the_sources_share_with_an_owner_is_withdrawn_when_no_longer_needed() {
        let mut o = obj();
        o.spec = serde_yaml::from_str(
            r#"
provider: {kind: aws}
source: {region: us-east-1, imageId: ami-1}
destinations:
- {region: eu-west-1, account: {id: "210987654321", assumeRole: {roleArn: "arn:aws:iam::210987654321:role/c"}}}
- {region: ap-southeast-1, account: {id: "210987654321", assumeRole: {roleArn: "arn:aws:iam::210987654321:role/c"}}}
- {region: us-east-2, account: {id: "333333333333", assumeRole: {roleArn: "arn:aws:iam::333333333333:role/c"}}}
- {region: us-east-1, shareWith: [{account: "333333333333"}]}
"#,
        )
        .unwrap();
        let status = |phases: &[(&str, DestinationPhase)]| ImageReplicationStatus {
            destinations: phases
                .iter()
                .map(|(r, p)| DestinationStatus {
                    region: r.to_string(),
                    phase: *p,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        use DestinationPhase::{Available, Copying};
        let none = std::collections::HashSet::new();
        let owner = |r: &str| (r.to_string(), "210987654321".to_string());
        for (phases, done, want) in [
            // Another copy of the same owner is still being made: kept.
            (
                vec![("eu-west-1", Available), ("ap-southeast-1", Copying)],
                none.clone(),
                vec![],
            ),
            (
                vec![("eu-west-1", Available), ("ap-southeast-1", Available)],
                none.clone(),
                vec![owner("eu-west-1"), owner("ap-southeast-1")],
            ),
            // Withdrawn already for one region.
            (
                vec![("eu-west-1", Available), ("ap-southeast-1", Available)],
                ["eu-west-1".to_string()].into(),
                vec![owner("ap-southeast-1")],
            ),
            // The source is shared with that owner in place: kept.
            (vec![("us-east-2", Available)], none.clone(), vec![]),
        ] {
            assert_eq!(unshare_source(&o, &status(&phases), &done), want, "{phases:?}");
        }
    }

    fn image() -> ImageInfo {
        ImageInfo {
            id: "img-1".into(),
            name: "web".into(),
            size_bytes: Some(100),
            visibility: "private".into(),
            state: Some(ImageState::Available),
            digest: Some("sha512:aa".into()),
            ..Default::default()
        }
    }

    fn observed(dests: &[(&str, DestObs)]) -> Observed {
        Observed {
            source: Some(Ok(image())),
            dests: dests.iter().map(|(r, o)| (r.to_string(), o.clone())).collect(),
            ..Default::default()
        }
    }

    /// One plan with the quota's answers given (`grant` has its own tests).
    fn step(o: &mut ImageReplication, gate: &Gate, obs: &Observed, now: i64, grant: &[(&str, Admission)]) -> VmPlan {
        let snap = Snapshot {
            observed: obs.clone(),
            max_attempts: 3,
            ..Default::default()
        };
        let admissions = grant.iter().map(|(r, a)| (r.to_string(), a.clone())).collect();
        let (p, waits) = decide(o, gate, &snap.observed, &snap.limits, &at(now), snap.max_attempts);
        let p = admitted(p, waits, o, gate, &snap, &admissions, &at(now));
        o.status = Some(p.status.clone());
        p
    }

    fn dest<'a>(p: &'a VmPlan, r: &str) -> &'a DestinationStatus {
        p.status.destinations.iter().find(|d| d.region == r).unwrap()
    }

    fn cond<'a>(p: &'a VmPlan, t: &str) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        p.status.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    fn running(image: &str, done: u64) -> DestObs {
        DestObs::Task {
            handle: CopyHandle {
                task_id: Some("t".into()),
                image_id: Some(image.into()),
            },
            state: TaskState {
                phase: TaskPhase::Running,
                image_id: Some(image.into()),
                progress_percent: Some((done * 100 / 100) as i32),
                bytes_done: Some(done),
                bytes_total: Some(100),
                digest: None,
                restarted: false,
            },
        }
    }

    fn finished(image: &str, phase: TaskPhase) -> DestObs {
        DestObs::Task {
            handle: CopyHandle {
                task_id: Some("t".into()),
                image_id: Some(image.into()),
            },
            state: TaskState {
                phase,
                image_id: Some(image.into()),
                progress_percent: Some(100),
                bytes_done: Some(100),
                bytes_total: Some(100),
                digest: Some("sha512:aa".into()),
                restarted: false,
            },
        }
    }

    #[test]
    fn queued_then_starting_with_a_token_then_copying_then_available() {
        let mut o = obj();
        let p = step(
            &mut o,
            &Gate::Open,
            &observed(&[]),
            0,
            &[("two", Admission::Granted), ("three", Admission::Queued(1))],
        );
        assert_eq!(p.wants.len(), 2);
        assert_eq!(p.start, vec!["two".to_string()]);
        let two = dest(&p, "two");
        assert_eq!(two.phase, DestinationPhase::Starting);
        let token = two.client_token.clone().unwrap();
        assert!(
            token.starts_with("imgrep-") && token.ends_with("-1") && token.len() <= 64,
            "{token}"
        );
        // Unique per object and region.
        let mut other = o.clone();
        other.metadata.uid = Some("another-uid".into());
        assert_ne!(token_for(&other, "two", None, 1), token);
        assert_ne!(token_for(&o, "three", None, 1), token);
        assert_ne!(
            token_for(&o, "two", Some("src-2"), 1),
            token,
            "a followed source's copies have their own tokens"
        );
        assert_eq!(two.attempts, 1);
        let three = dest(&p, "three");
        assert_eq!((three.phase, three.queue_position), (DestinationPhase::Queued, Some(1)));
        assert!(p.events.iter().any(|e| e.reason == "DestinationStarting"));
        assert!(p.events.iter().any(|e| e.reason == "DestinationQueued"));
        assert_eq!(p.status.source.as_ref().unwrap().digest.as_deref(), Some("sha512:aa"));
        assert_eq!(p.status.summary.as_deref(), Some("0/2 available, 1 copying, 1 queued"));

        // The copy is found by its token and runs.
        let p = step(
            &mut o,
            &Gate::Open,
            &observed(&[("two", running("d-2", 40))]),
            5,
            &[("three", Admission::Queued(1))],
        );
        let two = dest(&p, "two");
        assert_eq!(two.phase, DestinationPhase::Copying);
        assert_eq!(
            (two.image_id.as_deref(), two.task_id.as_deref()),
            (Some("d-2"), Some("t"))
        );
        assert_eq!((two.bytes_copied, two.progress_percent), (Some(40), Some(40)));
        assert_eq!(p.running, vec!["two".to_string()]);
        assert_eq!(cond(&p, "Reconciling").status, "True");

        // It finishes; the queued one gets its slot.
        let p = step(
            &mut o,
            &Gate::Open,
            &observed(&[("two", finished("d-2", TaskPhase::Succeeded))]),
            9,
            &[("three", Admission::Granted)],
        );
        assert_eq!(dest(&p, "two").phase, DestinationPhase::Available);
        assert_eq!(dest(&p, "two").digest.as_deref(), Some("sha512:aa"));
        assert_eq!(dest(&p, "three").phase, DestinationPhase::Starting);
        let p = step(
            &mut o,
            &Gate::Open,
            &observed(&[("three", finished("d-3", TaskPhase::Succeeded))]),
            12,
            &[],
        );
        assert_eq!(p.status.summary.as_deref(), Some("2/2 available"));
        assert_eq!(cond(&p, "Ready").status, "True");
        assert!(p.wants.is_empty() && p.start.is_empty());
    }

    #[test]
    fn a_restart_in_starting_reissues_the_start_with_the_same_token() {
        let mut o = obj();
        step(
            &mut o,
            &Gate::Open,
            &observed(&[]),
            0,
            &[("two", Admission::Granted), ("three", Admission::Granted)],
        );
        let token = dest_token(&o, "two");
        // After a restart the token finds nothing: the start is issued again, same token, same attempt.
        let p = step(
            &mut o,
            &Gate::Open,
            &observed(&[("two", DestObs::NotStarted), ("three", DestObs::Unchecked)]),
            3,
            &[],
        );
        assert_eq!(p.start, vec!["two".to_string()]);
        assert_eq!(dest(&p, "two").attempts, 1);
        assert_eq!(dest_token(&o, "two"), token);
        assert!(p.running.contains(&"two".to_string()) && p.running.contains(&"three".to_string()));
    }

    /// A copy the cloud does not list yet (EC2's eventual consistency, an ECS or CVM list that
    /// lags, an IMS job that says SUCCESS first) is waited for within the cloud's listing
    /// window: it stays in flight with its image id and token, no attempt is counted and no
    /// second copy is asked for; only after the window is it gone (a failed attempt). After a
    /// restart, a cloud without client tokens asks for no second copy within the window
    /// either, while one with client tokens asks again (the cloud hands back the same copy).
    /// Before the fix a copy not listed 1 ms after its start failed as "gone" and was made
    /// again with a new token, three copies per cloud, none ever deleted.
    #[test]
    fn a_copy_the_cloud_does_not_list_yet_is_waited_for_within_its_window() {
        let listing = LATE_LISTING;
        let unlisted = DestObs::Task {
            handle: CopyHandle::of_image("d-2"),
            state: TaskState {
                phase: TaskPhase::Unlisted,
                ..TaskState::running(Some("d-2".into()), Some(100))
            },
        };
        let not_found = DestObs::Error(ProviderError::not_found("InvalidAMIID.NotFound"));
        for (case, seen) in [("unlisted", unlisted.clone()), ("not found", not_found)] {
            let mut o = obj();
            o.spec.destinations.truncate(1);
            step(&mut o, &Gate::Open, &observed(&[]), 0, &[("two", Admission::Granted)]);
            let token = dest_token(&o, "two");
            // Seen right after the start, and for the whole window: in flight, nothing new.
            for t in [1, 60, 299] {
                let p = step(&mut o, &Gate::Open, &with(&[("two", seen.clone())], listing), t, &[]);
                let two = dest(&p, "two");
                assert_eq!(two.phase, DestinationPhase::Copying, "{case} at {t}s");
                assert_eq!(
                    (two.attempts, two.client_token.as_deref()),
                    (1, Some(token.as_str())),
                    "{case}"
                );
                assert!(p.start.is_empty() && p.wants.is_empty(), "{case}: no second copy");
                assert!(
                    two.message.as_deref().unwrap().contains("not listed by the cloud yet"),
                    "{case}"
                );
                assert!(!p.events.iter().any(|e| e.warning), "{case}: {:?}", p.events);
            }
            // Listed at last: it goes on as any copy.
            let mut later = o.clone();
            let p = step(
                &mut later,
                &Gate::Open,
                &with(&[("two", running("d-2", 40))], listing),
                200,
                &[],
            );
            assert_eq!(
                (dest(&p, "two").phase, dest(&p, "two").message.as_deref()),
                (DestinationPhase::Copying, None)
            );
            // Never listed in the window: gone, a failed attempt (retried with a new token).
            let p = step(&mut o, &Gate::Open, &with(&[("two", seen.clone())], listing), 301, &[]);
            let two = dest(&p, "two");
            assert_eq!(two.phase, DestinationPhase::Failed, "{case}");
            assert!(
                two.message.as_deref().unwrap().contains("is gone"),
                "{case}: {:?}",
                two.message
            );
        }
    }

    /// A cloud that lists new images up to 5 minutes late and whose copy call takes no token.
    const LATE_LISTING: Listing = Listing {
        late: Duration::from_secs(300),
        idempotent_start: false,
    };

    /// What was observed, on a cloud that lists as `l` says.
    fn with(dests: &[(&str, DestObs)], l: Listing) -> Observed {
        Observed {
            listing: l,
            ..observed(dests)
        }
    }

    /// A restart while the copy is not listed: no second copy within the window where the copy
    /// call takes no token; asked again where it does (the same copy comes back).
    #[test]
    fn a_restart_asks_for_no_second_copy_within_the_listing_window() {
        let listing = LATE_LISTING;
        let mut o = obj();
        o.spec.destinations.truncate(1);
        step(&mut o, &Gate::Open, &observed(&[]), 0, &[("two", Admission::Granted)]);
        let mut again = o.clone();
        let p = step(
            &mut o,
            &Gate::Open,
            &with(&[("two", DestObs::NotStarted)], listing),
            30,
            &[],
        );
        assert!(p.start.is_empty(), "no second SyncImages / IMS copy within the window");
        assert_eq!(dest(&p, "two").phase, DestinationPhase::Starting);
        assert!(dest(&p, "two").message.as_deref().unwrap().contains("no second copy"));
        let p = step(
            &mut o,
            &Gate::Open,
            &with(&[("two", DestObs::NotStarted)], listing),
            301,
            &[],
        );
        assert_eq!(
            p.start,
            vec!["two".to_string()],
            "after the window the start is issued again"
        );
        let idempotent = Listing {
            idempotent_start: true,
            ..listing
        };
        let p = step(
            &mut again,
            &Gate::Open,
            &with(&[("two", DestObs::NotStarted)], idempotent),
            30,
            &[],
        );
        assert_eq!(
            p.start,
            vec!["two".to_string()],
            "a client token makes asking again safe"
        );
    }

    /// A copy that fails after the cloud made its image (a `CreateFailed` ECS image, a
    /// `failed` AMI, a copy never listed in the window) is retried with a new token, and its
    /// image is kept in `status.previous` as a failed copy and deleted whatever the retention
    /// (it was left in the account, counting against its quotas); once deleted it is forgotten
    /// with an Event. A failed delete stays listed and is retried.
    #[test]
    fn the_image_of_a_failed_copy_is_deleted_not_left_behind() {
        let listing = Listing {
            late: Duration::from_secs(300),
            idempotent_start: true,
        };
        let with = |dests: &[(&str, DestObs)], retired: &[(&str, Result<(), ProviderError>)]| Observed {
            listing,
            retired: retired.iter().map(|(i, r)| (i.to_string(), r.clone())).collect(),
            ..observed(dests)
        };
        let unlisted = DestObs::Task {
            handle: CopyHandle::of_image("d-9"),
            state: TaskState {
                phase: TaskPhase::Unlisted,
                ..TaskState::running(Some("d-9".into()), Some(100))
            },
        };
        for (case, seen, at_s, image) in [
            (
                "CreateFailed",
                finished("d-2", TaskPhase::Failed("destination image d-2 is CreateFailed".into())),
                5,
                "d-2",
            ),
            ("never listed", unlisted, 400, "d-9"),
        ] {
            let mut o = obj();
            o.spec.destinations.truncate(1);
            step(&mut o, &Gate::Open, &observed(&[]), 0, &[("two", Admission::Granted)]);
            let p = step(&mut o, &Gate::Open, &with(&[("two", seen)], &[]), at_s, &[]);
            assert_eq!(dest(&p, "two").phase, DestinationPhase::Failed, "{case}");
            let kept: Vec<_> = p
                .status
                .previous
                .iter()
                .map(|c| (c.image_id.as_str(), c.failed))
                .collect();
            assert_eq!(kept, vec![(image, true)], "{case}");
            assert_eq!(p.retire.len(), 1, "{case}: deleted at once, no retention asked");
            assert_eq!(p.retire[0].image_id, image);
            // The delete fails: listed with why, asked again.
            let p = step(
                &mut o,
                &Gate::Open,
                &with(&[], &[(image, Err(ProviderError::transient("busy")))]),
                at_s + 1,
                &[],
            );
            assert!(
                p.status.previous[0].message.as_deref().unwrap().contains("busy"),
                "{case}"
            );
            assert_eq!(p.retire.len(), 1, "{case}");
            // Deleted: forgotten, with an Event.
            let p = step(&mut o, &Gate::Open, &with(&[], &[(image, Ok(()))]), at_s + 2, &[]);
            assert!(p.status.previous.is_empty(), "{case}");
            let e = p
                .events
                .iter()
                .find(|e| e.reason == "FailedCopyDeleted")
                .expect("FailedCopyDeleted");
            assert!(e.note.contains(image), "{case}: {}", e.note);
        }
    }

    fn dest_token(o: &ImageReplication, r: &str) -> String {
        o.status
            .as_ref()
            .unwrap()
            .destinations
            .iter()
            .find(|d| d.region == r)
            .unwrap()
            .client_token
            .clone()
            .unwrap()
    }

    #[test]
    fn failures_retry_with_backoff_then_stall_and_the_annotation_redrives() {
        let mut o = obj();
        o.spec.destinations.truncate(1);
        step(&mut o, &Gate::Open, &observed(&[]), 0, &[("two", Admission::Granted)]);
        let token = dest_token(&o, "two");
        // A start that failed keeps its token (it may have created the copy late).
        let p = step(
            &mut o,
            &Gate::Open,
            &observed(&[("two", DestObs::StartFailed(ProviderError::transient("503")))]),
            1,
            &[],
        );
        let two = dest(&p, "two");
        assert_eq!(two.phase, DestinationPhase::Failed);
        assert_eq!(two.client_token.as_deref(), Some(token.as_str()));
        assert!(two.message.as_deref().unwrap().contains("attempt 1/3, will retry"));
        assert_eq!(p.requeue, Some(Duration::from_secs(10)));
        assert!(p.events.iter().any(|e| e.reason == "DestinationFailed" && e.warning));
        // Not before the delay; then again with the same token.
        assert!(step(&mut o, &Gate::Open, &observed(&[]), 5, &[]).wants.is_empty());
        let p = step(&mut o, &Gate::Open, &observed(&[]), 12, &[("two", Admission::Granted)]);
        assert_eq!(dest(&p, "two").attempts, 2);
        assert_eq!(dest_token(&o, "two"), token);
        // A copy that ran and failed drops its token; a non-retryable failure is final.
        let p = step(
            &mut o,
            &Gate::Open,
            &observed(&[("two", finished("d", TaskPhase::Failed("disk full".into())))]),
            13,
            &[],
        );
        assert_eq!(dest(&p, "two").client_token, None);
        let failed = dest(&p, "two");
        assert_eq!(
            (failed.progress_percent, failed.bytes_copied),
            (None, None),
            "a failed copy shows no progress"
        );
        let p = step(&mut o, &Gate::Open, &observed(&[]), 40, &[("two", Admission::Granted)]);
        assert_eq!(dest(&p, "two").attempts, 3);
        assert_ne!(dest_token(&o, "two"), token);
        let p = step(
            &mut o,
            &Gate::Open,
            &observed(&[("two", DestObs::StartFailed(ProviderError::permanent("quota")))]),
            41,
            &[],
        );
        assert_eq!(cond(&p, "Stalled").status, "True");
        assert_eq!(cond(&p, "Ready").reason, "DestinationsFailed");
        assert!(
            step(&mut o, &Gate::Open, &observed(&[]), 9999, &[]).wants.is_empty(),
            "final"
        );
        // The retry annotation re-drives it once.
        o.metadata.annotations = Some([(RETRY_ANNOTATION.to_string(), "1".to_string())].into());
        let p = step(
            &mut o,
            &Gate::Open,
            &observed(&[]),
            10000,
            &[("two", Admission::Granted)],
        );
        assert_eq!(dest(&p, "two").attempts, 1);
        assert_eq!(p.status.last_handled_retry.as_deref(), Some("1"));
        assert_eq!(retry_requested(&o), None);
    }

    #[test]
    fn refused_sources_start_nothing_and_creating_sources_wait() {
        let mut o = obj();
        let mut obs = observed(&[]);
        obs.source = Some(Ok(ImageInfo {
            disk_format: Some("iso".into()),
            ..image()
        }));
        let p = step(&mut o, &Gate::Open, &obs, 0, &[]);
        assert!(p.wants.is_empty() && p.start.is_empty());
        assert_eq!(cond(&p, "Validated").reason, "DiskFormatNotReplicable");
        assert_eq!(cond(&p, "Stalled").status, "True");

        let mut o = obj();
        obs.source = Some(Ok(ImageInfo {
            state: Some(ImageState::Creating),
            ..image()
        }));
        let p = step(&mut o, &Gate::Open, &obs, 0, &[]);
        assert!(p.wants.is_empty());
        assert_eq!(dest(&p, "two").phase, DestinationPhase::Queued);
        assert_eq!(cond(&p, "Ready").reason, "SourceNotReady");
        assert_eq!(cond(&p, "Stalled").status, "False");
        assert_eq!(p.requeue, Some(Duration::from_secs(30)));
    }

    #[test]
    fn phase_events_always_say_something() {
        for phase in [
            DestinationPhase::Pending,
            DestinationPhase::Queued,
            DestinationPhase::Cancelling,
            DestinationPhase::Cancelled,
            DestinationPhase::Failed,
        ] {
            let s = DestinationStatus {
                region: "regiontwo".into(),
                phase,
                ..Default::default()
            };
            let e = phase_event(&s);
            let text = e.note.strip_prefix("regiontwo: ").unwrap();
            assert!(!text.trim().is_empty(), "{phase:?}: {:?}", e.note);
        }
    }

    #[test]
    fn suspend_cancels_in_flight_copies_and_resume_starts_them_again() {
        let mut o = obj();
        step(
            &mut o,
            &Gate::Open,
            &observed(&[]),
            0,
            &[("two", Admission::Granted), ("three", Admission::Queued(1))],
        );
        let p = step(
            &mut o,
            &Gate::Suspended,
            &observed(&[("two", running("d", 10))]),
            2,
            &[],
        );
        assert_eq!(p.cancel, vec!["two".to_string()]);
        assert_eq!(dest(&p, "two").phase, DestinationPhase::Cancelling);
        assert_eq!(dest(&p, "three").phase, DestinationPhase::Pending);
        assert_eq!(cond(&p, "Ready").reason, "Suspended");
        let p = step(
            &mut o,
            &Gate::Suspended,
            &observed(&[("two", DestObs::Cancelled)]),
            3,
            &[],
        );
        assert_eq!(dest(&p, "two").phase, DestinationPhase::Cancelled);
        assert_eq!(
            (dest(&p, "two").progress_percent, dest(&p, "two").bytes_copied),
            (None, None),
            "a cancelled copy keeps no stale counts"
        );
        assert!(p.running.is_empty());
        let p = step(
            &mut o,
            &Gate::Open,
            &observed(&[]),
            4,
            &[("two", Admission::Granted), ("three", Admission::Granted)],
        );
        assert_eq!(p.start.len(), 2);
    }

    /// A destination removed from the spec while its copy runs: the copy is cancelled, then the
    /// destination is forgotten with an Event; the other destination goes on.
    #[test]
    fn a_destination_removed_mid_copy_is_cancelled_then_forgotten() {
        let mut o = obj();
        let grant = [("two", Admission::Granted), ("three", Admission::Granted)];
        step(&mut o, &Gate::Open, &observed(&[]), 0, &grant);
        step(&mut o, &Gate::Open, &observed(&[("two", running("i2", 40))]), 5, &[]);
        o.spec.destinations.retain(|d| d.region != "two");
        o.metadata.generation = Some(2);
        let p = step(&mut o, &Gate::Open, &observed(&[]), 10, &[]);
        assert_eq!(p.cancel, vec!["two".to_string()]);
        assert_eq!(dest(&p, "two").phase, DestinationPhase::Cancelling);
        let p = step(&mut o, &Gate::Open, &observed(&[("two", DestObs::Cancelled)]), 15, &[]);
        assert!(p.status.destinations.iter().all(|d| d.region != "two"));
        assert!(
            p.events
                .iter()
                .any(|e| e.reason == "DestinationRemoved" && e.note.starts_with("two:"))
        );
        assert_eq!(p.status.destinations.len(), 1);
    }

    fn following(o: &mut ImageReplication) {
        o.spec.source.image_id = None;
        o.spec.source.image_name = Some("web-*".into());
        o.spec.source.follow = Some(Follow::Newest);
    }

    fn newer(id: &str, can_cancel: bool, dests: &[(&str, DestObs)]) -> Observed {
        let mut obs = observed(dests);
        obs.source = Some(Ok(ImageInfo {
            id: id.into(),
            ..image()
        }));
        obs.can_cancel = can_cancel;
        obs
    }

    /// A newer source while copies of the older one run: where the cloud can cancel, the
    /// copy is cancelled and the newer source starts with its own token; where it cannot
    /// (IMS), the copy finishes, becomes an earlier copy, and then the newer source starts.
    /// An Available copy becomes an earlier copy at once.
    #[test]
    fn a_newer_source_cancels_or_outlives_copies_of_the_older_one() {
        for can_cancel in [true, false] {
            let mut o = obj();
            following(&mut o);
            let grant = [("two", Admission::Granted), ("three", Admission::Granted)];
            step(&mut o, &Gate::Open, &newer("img-1", can_cancel, &[]), 0, &grant);
            let first = dest_token(&o, "two");
            let obs = newer(
                "img-1",
                can_cancel,
                &[
                    ("two", finished("c2", TaskPhase::Succeeded)),
                    ("three", running("c3", 40)),
                ],
            );
            let p = step(&mut o, &Gate::Open, &obs, 5, &[]);
            assert_eq!(dest(&p, "two").source_image_id.as_deref(), Some("img-1"));

            let p = step(&mut o, &Gate::Open, &newer("img-2", can_cancel, &[]), 10, &grant[..1]);
            assert!(
                p.events
                    .iter()
                    .any(|e| e.reason == "SourceChanged" && e.note.contains("replacing img-1"))
            );
            assert_eq!(p.status.source.as_ref().unwrap().image_id.as_deref(), Some("img-2"));
            assert_eq!(p.status.previous.len(), 1, "two's copy of img-1 is kept");
            assert_eq!(p.status.previous[0].image_id, "c2");
            let two = dest(&p, "two");
            assert_eq!(two.phase, DestinationPhase::Starting);
            assert_ne!(
                two.client_token.as_deref(),
                Some(first.as_str()),
                "a new token for the new source"
            );
            assert_eq!(two.source_image_id.as_deref(), Some("img-2"));
            let three = dest(&p, "three");
            if can_cancel {
                assert_eq!(p.cancel, vec!["three".to_string()]);
                assert_eq!(three.phase, DestinationPhase::Cancelling);
                let p = step(
                    &mut o,
                    &Gate::Open,
                    &newer("img-2", true, &[("three", DestObs::Cancelled)]),
                    15,
                    &[("three", Admission::Granted)],
                );
                let three = dest(&p, "three");
                assert_eq!(
                    (three.phase, three.source_image_id.as_deref()),
                    (DestinationPhase::Starting, Some("img-2"))
                );
                assert_eq!(p.status.previous.len(), 1, "a cancelled copy is not kept");
            } else {
                assert!(p.cancel.is_empty());
                assert_eq!(three.phase, DestinationPhase::Copying);
                assert!(
                    three.message.as_deref().unwrap().contains("cannot be cancelled"),
                    "{three:?}"
                );
                let obs = newer("img-2", false, &[("three", finished("c3", TaskPhase::Succeeded))]);
                let p = step(&mut o, &Gate::Open, &obs, 15, &[("three", Admission::Granted)]);
                assert_eq!(dest(&p, "three").phase, DestinationPhase::Starting);
                let kept: Vec<_> = p.status.previous.iter().map(|c| c.image_id.as_str()).collect();
                assert_eq!(kept, vec!["c3", "c2"], "the finished copy of img-1 is kept");
            }
        }
    }

    /// A followed source that can no longer be found (every image of the pattern deleted):
    /// the copies stay Available, nothing is deleted or restarted, and Ready says so.
    #[test]
    fn a_followed_source_that_vanishes_keeps_its_copies_and_says_so() {
        let mut o = obj();
        following(&mut o);
        let grant = [("two", Admission::Granted), ("three", Admission::Granted)];
        step(&mut o, &Gate::Open, &newer("img-1", true, &[]), 0, &grant);
        let done = [
            ("two", finished("c2", TaskPhase::Succeeded)),
            ("three", finished("c3", TaskPhase::Succeeded)),
        ];
        step(&mut o, &Gate::Open, &newer("img-1", true, &done), 5, &[]);
        let mut gone = observed(&[]);
        gone.source = Some(Err(ProviderError::not_found(
            "no available image matches \"web-*\" in one",
        )));
        let p = step(&mut o, &Gate::Open, &gone, 10, &[]);
        assert!(p.start.is_empty() && p.cancel.is_empty() && p.retire.is_empty());
        assert!(
            p.status
                .destinations
                .iter()
                .all(|d| d.phase == DestinationPhase::Available)
        );
        let ready = cond(&p, "Ready");
        assert_eq!(ready.status, "True");
        assert!(
            ready
                .message
                .contains("these copies are kept: no available image matches"),
            "{}",
            ready.message
        );
        assert_eq!(p.status.source.as_ref().unwrap().image_id.as_deref(), Some("img-1"));
    }

    /// A closed copy window (22:00-06:00 UTC; the test clock starts at 08:00) holds new copies
    /// Queued with the next opening and reason OutsideCopyWindow; they start when it opens; a
    /// drift repair in the closed hours is not held.
    #[test]
    fn a_closed_copy_window_holds_new_copies_but_not_drift_repairs() {
        let mut o = obj();
        o.spec.schedule = crate::image_replication::window::night();
        let grant = [("two", Admission::Granted), ("three", Admission::Granted)];
        let p = step(&mut o, &Gate::Open, &observed(&[]), 0, &grant);
        assert!(p.wants.is_empty() && p.start.is_empty());
        let d = dest(&p, "two");
        assert_eq!(d.phase, DestinationPhase::Queued);
        let m = d.message.clone().unwrap();
        assert!(
            m.contains("(22:00-06:00 UTC); new copies start at 2027-01-15T22:00:00Z"),
            "{m}"
        );
        assert_eq!(cond(&p, "Ready").reason, "OutsideCopyWindow");
        assert_eq!(p.requeue, Some(Duration::from_secs(14 * 3600)));
        let p = step(&mut o, &Gate::Open, &observed(&[]), 14 * 3600, &grant);
        assert_eq!(p.start.len(), 2, "the window opened");
        let done = [
            ("two", finished("i2", TaskPhase::Succeeded)),
            ("three", finished("i3", TaskPhase::Succeeded)),
        ];
        let p = step(&mut o, &Gate::Open, &observed(&done), 14 * 3600 + 5, &[]);
        assert!(conditions::is_true(&p.status.conditions, "Ready"));
        // Next morning, 10:00: the copy in two is deleted by hand; its repair starts at once.
        let p = step(
            &mut o,
            &Gate::Open,
            &observed(&[("two", DestObs::Gone)]),
            26 * 3600,
            &[("two", Admission::Granted)],
        );
        assert_eq!(p.start, vec!["two".to_string()], "a drift repair is not held");
    }

    /// An upload the provider had to start again (OpenStack after a kill -9) says so, with the
    /// bytes sent twice.
    #[test]
    fn an_upload_started_again_says_so() {
        let mut o = obj();
        let grant = [("two", Admission::Granted), ("three", Admission::Granted)];
        step(&mut o, &Gate::Open, &observed(&[]), 0, &grant);
        step(&mut o, &Gate::Open, &observed(&[("two", running("i2", 40))]), 5, &[]);
        let mut again = running("i2", 0);
        if let DestObs::Task { state, .. } = &mut again {
            state.restarted = true;
        }
        let p = step(&mut o, &Gate::Open, &observed(&[("two", again)]), 10, &[]);
        let e = p
            .events
            .iter()
            .find(|e| e.reason == "UploadRestarted")
            .expect("an Event");
        assert!(e.warning && e.note.contains("40 bytes already sent"), "{e:?}");
        assert_eq!(dest(&p, "two").bytes_copied, Some(0));
    }

    /// The set-up schedule is read from the status's `reason`, not its words: an OpenStack
    /// set-up error naming a 2 KiB catalog is cut (1,024 bytes) before the status is written,
    /// so the note at its end is lost — before, the next plan then took the failed-copy
    /// schedule (10 s, attempts counted). The condition says what is awaited
    /// (`CloudSetupRequired`, not `Progressing`) and the Event is its own reason.
    #[test]
    fn a_cut_setup_message_keeps_the_setup_schedule() {
        let mut o = obj();
        step(
            &mut o,
            &Gate::Open,
            &observed(&[]),
            0,
            &[("two", Admission::Granted), ("three", Admission::Granted)],
        );
        let regions: Vec<String> = (0..200).map(|i| format!("Region{i:04}")).collect();
        let long = format!(
            "no public image endpoint in region two (regions: {})",
            regions.join(", ")
        );
        assert!(long.len() > 2048);
        let p = step(
            &mut o,
            &Gate::Open,
            &observed(&[("two", DestObs::StartFailed(ProviderError::setup(long)))]),
            1,
            &[],
        );
        assert!(
            p.events
                .iter()
                .any(|e| e.warning && e.reason == "DestinationSetupRequired"),
            "{:?}",
            p.events
        );
        // What the shell writes: messages bounded.
        o.status = Some(crate::redact::status(o.status.take().unwrap()));
        let d = o
            .status
            .as_ref()
            .unwrap()
            .destinations
            .iter()
            .find(|d| d.region == "two")
            .unwrap();
        assert!(d.message.as_deref().unwrap().len() <= 1024 && !d.message.as_deref().unwrap().contains(SETUP_NOTE));
        assert_eq!(d.reason, Some(DestinationReason::SetupRequired));
        let p = step(
            &mut o,
            &Gate::Open,
            &observed(&[("three", running("i-3", 10))]),
            20,
            &[("two", Admission::Granted)],
        );
        assert_eq!(
            (dest(&p, "two").phase, dest(&p, "two").attempts),
            (DestinationPhase::Failed, 0),
            "not after 10 s"
        );
        let p = step(
            &mut o,
            &Gate::Open,
            &observed(&[("three", finished("i-3", TaskPhase::Succeeded))]),
            40,
            &[],
        );
        assert_eq!(dest(&p, "three").phase, DestinationPhase::Available);
        assert_eq!(
            cond(&p, "Ready").reason,
            "CloudSetupRequired",
            "{:?}",
            cond(&p, "Ready")
        );
        let p = step(&mut o, &Gate::Open, &observed(&[]), 62, &[("two", Admission::Granted)]);
        assert_eq!(dest(&p, "two").phase, DestinationPhase::Starting, "after a minute");
        assert_eq!(dest(&p, "two").reason, None, "the reason goes with the phase");
    }

    /// A region the cloud is not set up for (OpenStack: missing from the Keystone catalog) is
    /// not a failed copy: no attempt is counted, the start is tried again every minute for as
    /// long as it takes, and it goes on once the admin fixes it.
    #[test]
    fn a_region_the_cloud_is_not_set_up_for_is_retried_without_counting() {
        let mut o = obj();
        let grant = [("two", Admission::Granted), ("three", Admission::Granted)];
        step(&mut o, &Gate::Open, &observed(&[]), 0, &grant);
        let missing = ProviderError::setup("the Keystone catalog has no public image endpoint in region two");
        let p = step(
            &mut o,
            &Gate::Open,
            &observed(&[("two", DestObs::StartFailed(missing))]),
            1,
            &[],
        );
        let d = dest(&p, "two");
        assert_eq!((d.phase, d.attempts), (DestinationPhase::Failed, 0));
        let m = d.message.clone().unwrap();
        assert!(m.contains("no attempt counted") && !m.contains("attempt 1/"), "{m}");
        assert!(p.requeue.unwrap() <= SETUP_RETRY);
        let p = step(&mut o, &Gate::Open, &observed(&[]), 31, &[("two", Admission::Granted)]);
        assert_eq!(dest(&p, "two").phase, DestinationPhase::Failed, "not before a minute");
        for t in [62, 200, 400, 800] {
            // Many minutes, many tries: never final.
            let p = step(&mut o, &Gate::Open, &observed(&[]), t, &[("two", Admission::Granted)]);
            assert_eq!(dest(&p, "two").phase, DestinationPhase::Starting, "at {t}");
            let e = ProviderError::setup("the Keystone catalog has no public image endpoint in region two");
            step(
                &mut o,
                &Gate::Open,
                &observed(&[("two", DestObs::StartFailed(e))]),
                t + 1,
                &[],
            );
        }
        let p = step(&mut o, &Gate::Open, &observed(&[]), 900, &[("two", Admission::Granted)]);
        assert_eq!(
            (dest(&p, "two").phase, dest(&p, "two").attempts),
            (DestinationPhase::Starting, 1)
        );
    }

    #[test]
    fn a_destination_deleted_by_hand_is_copied_again() {
        let mut o = obj();
        o.spec.destinations.truncate(1);
        let first = step(&mut o, &Gate::Open, &observed(&[]), 0, &[("two", Admission::Granted)]);
        let first_token = dest(&first, "two").client_token.clone();
        step(
            &mut o,
            &Gate::Open,
            &observed(&[("two", finished("d-1", TaskPhase::Succeeded))]),
            1,
            &[],
        );
        let p = step(
            &mut o,
            &Gate::Open,
            &observed(&[("two", DestObs::Gone)]),
            400,
            &[("two", Admission::Granted)],
        );
        assert!(
            p.events
                .iter()
                .any(|e| e.reason == "DriftDetected" && e.note.contains("d-1"))
        );
        let two = dest(&p, "two");
        // The repair is one more attempt, with a token of its own: a provider idempotent per
        // token cannot hand back the deleted copy, and the Events name the new one.
        assert_eq!(
            (two.phase, two.attempts, two.image_id.clone()),
            (DestinationPhase::Starting, 2, None)
        );
        assert!(first_token.is_some() && two.client_token.is_some());
        assert_ne!(two.client_token, first_token);
        assert!(
            p.events
                .iter()
                .any(|e| e.reason == "DestinationStarting" && e.note.contains(two.client_token.as_deref().unwrap())),
            "{:?}",
            p.events
        );
        assert_eq!(cond(&p, "Ready").status, "False");
    }
}
