//! The pure planner of an oci ImageReplication: from the object, what each destination's copy
//! task is doing and the time, the status to write, the copies and drift checks to start, when
//! to look again and the Events to publish. No I/O; table-tested below.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::conditions::{self, Desired, reason};
use crate::api::v1alpha1::*;
use crate::plan::{
    Announcement, QUIET_START, Standing, TaskView, age, later, next_check, retry_delay, retry_requested, secs_since,
    standing_conditions,
};

/// What the shell should do after an oci planning step.
#[derive(Clone, Debug, PartialEq)]
pub struct OciPlan {
    pub status: ImageReplicationStatus,
    /// Destinations (region, resync?) whose copy task should start now.
    pub start: Vec<(String, bool)>,
    /// When to look again (None: only on change).
    pub requeue: Option<std::time::Duration>,
    /// Per-destination state changes to publish as Events.
    pub events: Vec<Announcement>,
    /// Destinations removed from the spec to stop: their copy task cancelled, and under
    /// `deletionPolicy: Delete` their copy deleted.
    pub prune: Vec<String>,
    /// The status differs from the one written only by copies younger than
    /// [`QUIET_START`]: it need not be written before this has passed (see
    /// [`crate::controller::Planned::status_may_wait`]).
    pub status_may_wait: Option<std::time::Duration>,
}

/// Plan an oci ImageReplication whose gate is open. A destination is tried `max_attempts`
/// times (normally [`crate::plan::MAX_ATTEMPTS`]) before it is Failed for good, until the spec changes.
/// `checked` holds when each destination's copy was last verified (kept in memory, not in
/// status): a drift check that finds the copy intact changes nothing in status, so an object at
/// rest is never written.
pub fn oci_plan(
    obj: &ImageReplication,
    tasks: &std::collections::HashMap<String, TaskView>,
    checked: &std::collections::HashMap<String, Time>,
    pruned: &std::collections::HashMap<String, Result<(), String>>,
    now: &Time,
    resync: std::time::Duration,
    max_attempts: i32,
) -> OciPlan {
    let spec = &obj.spec;
    let old = obj.status.clone().unwrap_or_default();
    let retry = retry_requested(obj);
    let spec_changed = old.observed_generation != obj.metadata.generation || retry.is_some();
    let round = OciRound {
        object_key: crate::api::key_of(obj),
        checked,
        now,
        resync,
        max_attempts,
        held: crate::image_replication::window::hold(spec, now),
    };
    let mut start = Vec::new();
    let mut events = Vec::new();
    let mut wake: Vec<std::time::Duration> = Vec::new();
    let mut destinations = Vec::new();
    let mut quiet = StatusWait::default();
    for d in &spec.destinations {
        let mut s = old.destination_or_new(&d.region);
        let before = old.destinations.iter().find(|x| x.region == d.region).cloned();
        if spec_changed && s.phase == DestinationPhase::Failed {
            s.attempts = 0; // a spec change re-drives failed destinations
        }
        let view = tasks.get(&d.region).unwrap_or(&TaskView::Idle);
        let mut young = round.apply(d, &mut s, view, &mut start, &mut events, &mut wake);
        if start.last().is_some_and(|(r, resync)| r == &d.region && !resync) {
            record_started(&mut s, now);
            young = Some(QUIET_START);
        }
        if s.digest.is_some()
            && let Ok(t) = crate::image_replication::oci::replicator::target(spec, d)
        {
            s.registry = d.registry.clone();
            s.repository = Some(t.repository);
        }
        quiet.note(before.as_ref() != Some(&s), young);
        destinations.push(s);
    }
    check_the_rest_when_the_source_moved(spec, &old, tasks, &destinations, &mut start);
    let prune = removed_destinations(spec, &old, tasks, pruned, &mut destinations, &mut events, &mut quiet);
    if !start.is_empty() {
        wake.push(std::time::Duration::from_secs(2));
    }

    let status_may_wait = quiet.may_wait(events.is_empty() && retry.is_none());
    let (summary, desired) = oci_conditions(&destinations, max_attempts);
    let generation = obj.metadata.generation;
    OciPlan {
        status: ImageReplicationStatus {
            observed_generation: generation,
            conditions: conditions::merge(&old.conditions, &desired, generation, now),
            source: oci_source(spec, old.source.as_ref(), &destinations, now),
            destinations,
            summary: Some(summary),
            last_handled_retry: retry.or(old.last_handled_retry.clone()),
            previous: old.previous.clone(),
        },
        start,
        requeue: wake.into_iter().min(),
        status_may_wait,
        events,
        prune,
    }
}

/// What every destination of one oci plan shares.
struct OciRound<'a> {
    object_key: String,
    checked: &'a std::collections::HashMap<String, Time>,
    now: &'a Time,
    resync: std::time::Duration,
    max_attempts: i32,
    /// The copy window is closed: why, and until when.
    held: Option<(String, std::time::Duration)>,
}

impl OciRound<'_> {
    /// The phase of a destination's drift checks: the same key as its check history.
    fn check_key(&self, d: &DestinationSpec) -> String {
        format!("{}/{}", self.object_key, d.region)
    }

    /// What the destination's task says, applied to its status: a copy to start (or a drift
    /// check) into `start`, when to look again into `wake`. Returns how long ago a copy that
    /// is still young started (its first status may wait).
    fn apply(
        &self,
        d: &DestinationSpec,
        s: &mut DestinationStatus,
        view: &TaskView,
        start: &mut Vec<(String, bool)>,
        events: &mut Vec<Announcement>,
        wake: &mut Vec<std::time::Duration>,
    ) -> Option<std::time::Duration> {
        let (now, resync, max_attempts, held) = (self.now, self.resync, self.max_attempts, &self.held);
        let mut young = None;
        match view {
            TaskView::Running {
                done,
                total,
                resync,
                started,
            } => {
                young = record_running(s, *done, *total, *resync, started, now);
                wake.push(young.unwrap_or(std::time::Duration::from_secs(2)));
            }
            TaskView::Succeeded {
                digest,
                up_to_date: true,
                resync: true,
                ..
            } if s.phase == DestinationPhase::Available && s.digest.as_ref() == Some(digest) => {
                // A drift check that found the copy intact: nothing to say.
                wake.push(check_wait(
                    &self.check_key(d),
                    last_check(s, self.checked.get(&d.region)),
                    now,
                    resync,
                ));
            }
            TaskView::Succeeded {
                digest,
                bytes_total,
                up_to_date,
                resync: _,
            } => {
                record_copied(s, digest, *bytes_total, *up_to_date, now, events);
                wake.push(check_wait(&self.check_key(d), s.completed_at.as_ref(), now, resync));
            }
            TaskView::Failed {
                reason,
                message,
                resync: _,
            } => record_failed(s, reason, message, now, max_attempts, events, wake),
            TaskView::Idle => {
                let (go, wait) = idle_next(
                    s,
                    &self.check_key(d),
                    self.checked.get(&d.region),
                    now,
                    resync,
                    max_attempts,
                );
                match (go, held) {
                    // A new copy (not a drift check) waits for the copy window to open.
                    (Some(false), Some((why, until))) => {
                        s.phase = DestinationPhase::Queued;
                        s.message = Some(why.clone());
                        wake.push(*until);
                    }
                    _ => {
                        start.extend(go.map(|drift_check| (d.region.clone(), drift_check)));
                        wake.extend(wait);
                    }
                }
            }
        }
        young
    }
}

/// The source as the status shows it: the reference, and the digest its tag last resolved to —
/// that of the most recent copy or repair — with when it became that (`resolvedAt`), so that a
/// region still holding an earlier digest reads as outdated.
fn oci_source(
    spec: &ImageReplicationSpec,
    old: Option<&SourceStatus>,
    destinations: &[DestinationStatus],
    now: &Time,
) -> Option<SourceStatus> {
    let newest = destinations
        .iter()
        .filter(|d| d.phase == DestinationPhase::Available && spec.destinations.iter().any(|s| s.region == d.region))
        .filter(|d| d.digest.is_some())
        .max_by_key(|d| d.completed_at.as_ref().map(|t| t.0.as_second()));
    let Some(digest) = newest.and_then(|d| d.digest.clone()) else {
        return old.cloned();
    };
    let resolved_at =
        crate::image_replication::over_time::resolved_at(old, |o| o.digest.as_deref() == Some(digest.as_str()), now);
    Some(SourceStatus {
        name: spec.source.reference.clone(),
        digest: Some(digest),
        resolved_at,
        ..Default::default()
    })
}

/// A moved tag that one destination's check found (its copy now holds another digest than the
/// source had) starts every other idle destination's check at once, so that all regions take
/// the new digest together instead of each at its own phase of the drift period (up to
/// `resync` apart, with the published ConfigMap naming two digests meanwhile).
fn check_the_rest_when_the_source_moved(
    spec: &ImageReplicationSpec,
    old: &ImageReplicationStatus,
    tasks: &std::collections::HashMap<String, TaskView>,
    destinations: &[DestinationStatus],
    start: &mut Vec<(String, bool)>,
) {
    let Some(was) = old.source.as_ref().and_then(|s| s.digest.as_deref()) else {
        return;
    };
    let moved = destinations.iter().find_map(|s| {
        let before = old.destinations.iter().find(|o| o.region == s.region)?;
        let new = s.digest.as_deref()?;
        (s.phase == DestinationPhase::Available && before.digest.as_deref() == Some(was) && new != was).then_some(new)
    });
    let Some(new) = moved else { return };
    for (d, s) in spec.destinations.iter().zip(destinations) {
        let idle = matches!(tasks.get(&d.region).unwrap_or(&TaskView::Idle), TaskView::Idle);
        if idle
            && s.phase == DestinationPhase::Available
            && s.digest.as_deref() != Some(new)
            && !start.iter().any(|(r, _)| r == &d.region)
        {
            start.push((d.region.clone(), true));
        }
    }
}

/// The destinations of the old status that left the spec ([`removed_oci`] each): those still
/// kept go into `destinations`; returns the regions the shell stops.
fn removed_destinations(
    spec: &ImageReplicationSpec,
    old: &ImageReplicationStatus,
    tasks: &std::collections::HashMap<String, TaskView>,
    pruned: &std::collections::HashMap<String, Result<(), String>>,
    destinations: &mut Vec<DestinationStatus>,
    events: &mut Vec<Announcement>,
    quiet: &mut StatusWait,
) -> Vec<String> {
    let mut prune = Vec::new();
    for s in old
        .destinations
        .iter()
        .filter(|s| !spec.destinations.iter().any(|d| d.region == s.region))
    {
        let kept = removed_oci(
            s,
            tasks.get(&s.region),
            pruned.get(&s.region),
            spec.deletion_policy,
            events,
        );
        quiet.note(kept.as_ref() != Some(s), None);
        if let Some(kept) = kept {
            prune.push(s.region.clone());
            destinations.push(kept);
        }
    }
    prune
}

/// A destination removed from the spec (what Argo CD and Flux users expect when they delete a
/// line): a copy in flight is cancelled; under `deletionPolicy: Delete` its copy is deleted
/// from the registry, under `Retain` kept; then it is forgotten, with an Event. `Some`: the
/// status it keeps meanwhile (and the shell stops it: `OciPlan::prune`).
fn removed_oci(
    s: &DestinationStatus,
    task: Option<&TaskView>,
    pruned: Option<&Result<(), String>>,
    policy: DeletionPolicy,
    events: &mut Vec<Announcement>,
) -> Option<DestinationStatus> {
    let copy = match (&s.registry, &s.repository, &s.digest) {
        (Some(r), Some(repo), Some(d)) => Some(format!(
            "{}/{repo}@{d}",
            r.trim_start_matches("http://").trim_start_matches("https://")
        )),
        _ => None,
    };
    let deletes = policy == DeletionPolicy::Delete && copy.is_some();
    let running = matches!(task, Some(TaskView::Running { .. }));
    let forget = |events: &mut Vec<Announcement>, what: String| {
        events.push(Announcement {
            warning: false,
            reason: "DestinationRemoved".into(),
            note: format!("{}: removed from spec.destinations; {what}", s.region),
        });
        None
    };
    let mut kept = s.clone();
    match pruned {
        Some(Ok(())) if deletes => forget(
            events,
            format!(
                "its copy {} was deleted (deletionPolicy Delete)",
                copy.unwrap_or_default()
            ),
        ),
        Some(Ok(())) => forget(events, "its copy in flight was cancelled".into()),
        Some(Err(e)) => {
            kept.message = Some(format!(
                "removed from spec.destinations: deleting its copy failed (will retry): {e}"
            ));
            Some(kept)
        }
        None if running || deletes => {
            kept.message = Some(if deletes {
                format!(
                    "removed from spec.destinations: deleting its copy {} (deletionPolicy Delete)",
                    copy.unwrap_or_default()
                )
            } else {
                "removed from spec.destinations: cancelling its copy in flight".into()
            });
            Some(kept)
        }
        None => match copy {
            Some(c) => forget(events, format!("its copy {c} is kept (deletionPolicy Retain)")),
            None => forget(events, "it had no copy".into()),
        },
    }
}

/// With no task running for a destination: a drift check when one is due, a failed copy
/// again after its backoff, a copy for one that has none (`Some(drift_check)`); or how long
/// until there is something to do.
fn idle_next(
    s: &DestinationStatus,
    check_key: &str,
    checked: Option<&Time>,
    now: &Time,
    resync: std::time::Duration,
    max_attempts: i32,
) -> (Option<bool>, Option<std::time::Duration>) {
    match s.phase {
        DestinationPhase::Available => {
            let last = last_check(s, checked);
            let due = last.map(|l| next_check(check_key, l, resync));
            if due.is_none_or(|t| t.0.as_second() <= now.0.as_second()) {
                (Some(true), None)
            } else {
                (None, Some(check_wait(check_key, last, now, resync)))
            }
        }
        DestinationPhase::Failed if s.attempts >= max_attempts => (None, None),
        DestinationPhase::Failed => {
            let due = retry_delay(s.attempts).as_secs() as i64;
            match secs_since(&s.completed_at, now) {
                Some(age) if age < due => (None, Some(std::time::Duration::from_secs((due - age) as u64))),
                _ => (Some(false), None),
            }
        }
        _ => (Some(false), None),
    }
}

/// Whether an oci status may wait ([`OciPlan::status_may_wait`]): every destination whose
/// status changes is a young copy (`young`: how long it stays young), and how long until the
/// first of them is young no more.
struct StatusWait {
    only_young_changes: bool,
    left: Option<std::time::Duration>,
}

impl Default for StatusWait {
    fn default() -> Self {
        Self {
            only_young_changes: true,
            left: None,
        }
    }
}

impl StatusWait {
    fn note(&mut self, changed: bool, young: Option<std::time::Duration>) {
        match (changed, young) {
            (false, _) => {}
            (true, Some(left)) => self.left = Some(self.left.map_or(left, |q| q.min(left))),
            (true, None) => self.only_young_changes = false,
        }
    }

    /// How long the status may wait, if nothing else (`otherwise_quiet`: no Event, no retry)
    /// asks for a write.
    fn may_wait(&self, otherwise_quiet: bool) -> Option<std::time::Duration> {
        self.left.filter(|_| self.only_young_changes && otherwise_quiet)
    }
}

/// A copy just started: Copying from 0 %.
fn record_started(s: &mut DestinationStatus, now: &Time) {
    s.phase = DestinationPhase::Copying;
    s.started_at = Some(now.clone());
    s.progress_percent = Some(0);
    s.message = None;
}

/// A task running: a copy shows its progress (a drift check of an Available copy shows
/// nothing). A copy younger than [`QUIET_START`]: how long it stays young.
fn record_running(
    s: &mut DestinationStatus,
    done: u64,
    total: u64,
    drift_check: bool,
    started: &Time,
    now: &Time,
) -> Option<std::time::Duration> {
    if !(drift_check && s.phase == DestinationPhase::Available) {
        record_progress(s, done, total, now);
    }
    Some(QUIET_START.saturating_sub(age(started, now))).filter(|left| !drift_check && !left.is_zero())
}

/// A copy under way: Copying, with its byte counts (never 100 % before it has finished).
fn record_progress(s: &mut DestinationStatus, done: u64, total: u64, now: &Time) {
    s.phase = DestinationPhase::Copying;
    s.started_at.get_or_insert_with(|| now.clone());
    s.bytes_copied = Some(done as i64);
    s.bytes_total = Some(total as i64);
    s.progress_percent = Some((done * 100).checked_div(total).map_or(0, |p| p.min(99) as i32));
    s.message = None;
}

/// A copy (first, repair or check) that succeeded: Available with the copy's digest and byte
/// counts (an up-to-date check reports none: the last real counts stay), counted as an attempt.
fn record_copied(
    s: &mut DestinationStatus,
    digest: &str,
    bytes_total: u64,
    up_to_date: bool,
    now: &Time,
    events: &mut Vec<Announcement>,
) {
    let was = s.phase;
    let held = s.digest.clone();
    // A first copy or a repair is an attempt; the byte counts are the copy's own (an
    // up-to-date check reports none: the last real counts stay).
    s.attempts += 1;
    s.phase = DestinationPhase::Available;
    s.digest = Some(digest.to_string());
    if bytes_total > 0 || s.bytes_total.is_none() {
        s.bytes_total = Some(bytes_total as i64);
        s.bytes_copied = Some(bytes_total as i64);
    }
    s.progress_percent = Some(100);
    s.completed_at = Some(now.clone());
    s.message = None;
    if was != DestinationPhase::Available {
        events.push(Announcement {
            warning: false,
            reason: "DestinationAvailable".into(),
            note: format!("{}: {digest} available", s.region),
        });
    } else if !up_to_date {
        // The copy now holds another digest than before: the source moved (a mutable tag was
        // pushed again); the same digest again: the copy itself had drifted.
        let event = match held.as_deref().filter(|h| *h != digest) {
            Some(old) => Announcement {
                warning: false,
                reason: "SourceChanged".into(),
                note: format!(
                    "{}: the source moved from {old} to {digest}; the copy follows it",
                    s.region
                ),
            },
            None => Announcement {
                warning: false,
                reason: "DriftRepaired".into(),
                note: format!("{}: the copy had drifted and was restored to {digest}", s.region),
            },
        };
        events.push(event);
    }
}

/// A copy that failed: Failed with the reason and the attempt count, retried after a backoff
/// until `max_attempts`.
fn record_failed(
    s: &mut DestinationStatus,
    reason: &str,
    message: &str,
    now: &Time,
    max_attempts: i32,
    events: &mut Vec<Announcement>,
    wake: &mut Vec<std::time::Duration>,
) {
    s.attempts += 1;
    s.phase = DestinationPhase::Failed;
    s.completed_at = Some(now.clone());
    let retry = s.attempts < max_attempts;
    s.message = Some(format!(
        "{reason}: {message} (attempt {}/{max_attempts}{})",
        s.attempts,
        if retry { ", will retry" } else { "" }
    ));
    events.push(Announcement {
        warning: true,
        reason: "DestinationFailed".into(),
        note: format!("{}: {}", s.region, s.message.clone().unwrap_or_default()),
    });
    if retry {
        wake.push(retry_delay(s.attempts));
    }
}

/// The summary (`2/3 available, 1 failed`) and the conditions of an oci ImageReplication's
/// destinations.
fn oci_conditions(destinations: &[DestinationStatus], max_attempts: i32) -> (String, Vec<Desired>) {
    let n = destinations.len();
    let available = destinations
        .iter()
        .filter(|d| d.phase == DestinationPhase::Available)
        .count();
    let failed: Vec<&DestinationStatus> = destinations
        .iter()
        .filter(|d| d.phase == DestinationPhase::Failed)
        .collect();
    let final_failed = failed.iter().filter(|d| d.attempts >= max_attempts).count();
    let in_flight = destinations.iter().any(|d| d.phase == DestinationPhase::Copying) || failed.len() > final_failed;
    let fail_text = failed
        .iter()
        .map(|d| format!("{}: {}", d.region, d.message.as_deref().unwrap_or("failed")))
        .collect::<Vec<_>>()
        .join("; ");
    let mut summary = format!("{available}/{n} available");
    if !failed.is_empty() {
        summary.push_str(&format!(", {} failed", failed.len()));
    }
    let held = destinations.iter().find(|d| d.phase == DestinationPhase::Queued);
    let desired = if available == n {
        standing_conditions(
            Standing::Done,
            reason::SUCCEEDED,
            format!("{n}/{n} destinations hold the source digest"),
        )
    } else if let (Some(h), false) = (held, in_flight) {
        let why = h.message.as_deref().unwrap_or("outside the copy window");
        standing_conditions(Standing::Working, "OutsideCopyWindow", format!("{summary}; {why}"))
    } else if in_flight || held.is_some() {
        let msg = if fail_text.is_empty() {
            summary.clone()
        } else {
            format!("{summary}; {fail_text}")
        };
        standing_conditions(Standing::Working, reason::PROGRESSING, msg)
    } else {
        standing_conditions(Standing::Stuck, "DestinationsFailed", format!("{summary}; {fail_text}"))
    };
    (summary, desired)
}

/// When a destination's copy was last known good: the later of its completion and the last
/// drift check kept in memory.
fn last_check<'a>(s: &'a DestinationStatus, checked: Option<&'a Time>) -> Option<&'a Time> {
    later(s.completed_at.as_ref(), checked)
}

/// How long until the check after `last` is due (at least a second).
fn check_wait(key: &str, last: Option<&Time>, now: &Time, period: std::time::Duration) -> std::time::Duration {
    let due = last.map_or(now.0.as_second(), |l| next_check(key, l, period).0.as_second());
    std::time::Duration::from_secs((due - now.0.as_second()).max(1) as u64)
}

#[cfg(test)]
mod oci_tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    use crate::api::conditions::{READY, RECONCILING, STALLED};
    use crate::plan::test_at as at;
    use crate::plan::{MAX_ATTEMPTS, spread_anchor};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn obj() -> ImageReplication {
        let mut o: ImageReplication = serde_yaml::from_str(
            r#"
apiVersion: replication.imageops.io/v1alpha1
kind: ImageReplication
metadata: {name: web, namespace: default}
spec:
  provider: {kind: oci}
  source: {region: a, reference: "127.0.0.1:5000/team/web:1.4"}
  destinations: [{region: b, registry: "http://127.0.0.1:5001"}, {region: c, registry: "http://127.0.0.1:5002"}]
"#,
        )
        .unwrap();
        o.metadata.generation = Some(1);
        o
    }

    const RESYNC: Duration = Duration::from_secs(300);

    fn step(o: &mut ImageReplication, tasks: &[(&str, TaskView)], now: i64) -> OciPlan {
        let t: HashMap<String, TaskView> = tasks.iter().map(|(r, v)| (r.to_string(), v.clone())).collect();
        let p = oci_plan(o, &t, &HashMap::new(), &HashMap::new(), &at(now), RESYNC, MAX_ATTEMPTS);
        o.status = Some(p.status.clone());
        p
    }

    fn ok(resync: bool, up_to_date: bool) -> TaskView {
        TaskView::Succeeded {
            digest: "sha256:abc".into(),
            bytes_total: 10,
            up_to_date,
            resync,
        }
    }

    fn fail() -> TaskView {
        TaskView::Failed {
            reason: "ConnectionError".into(),
            message: "connection refused".into(),
            resync: false,
        }
    }

    fn cond<'a>(p: &'a OciPlan, t: &str) -> &'a Condition {
        conditions::find(&p.status.conditions, t).unwrap()
    }

    /// A closed copy window (22:00-06:00 UTC; the test clock starts at 08:00) holds new copies
    /// Queued, saying when it opens; they start when it does; drift checks (which follow a
    /// moved tag) are not held.
    #[test]
    fn a_closed_copy_window_holds_new_oci_copies_but_not_drift_checks() {
        let mut o = obj();
        o.spec.schedule = crate::image_replication::window::night();
        let p = step(&mut o, &[], 0);
        assert!(p.start.is_empty());
        let b = &p.status.destinations[0];
        assert_eq!(b.phase, DestinationPhase::Queued);
        assert!(
            b.message
                .as_deref()
                .unwrap()
                .starts_with("outside the copy window (22:00-06:00"),
            "{b:?}"
        );
        let ready = cond(&p, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "OutsideCopyWindow")
        );
        assert_eq!(p.requeue, Some(Duration::from_secs(14 * 3600)));
        // 22:00: the window opens and both start.
        let p = step(&mut o, &[], 14 * 3600);
        assert_eq!(p.start, vec![("b".to_string(), false), ("c".to_string(), false)]);
        step(
            &mut o,
            &[("b", ok(false, false)), ("c", ok(false, false))],
            14 * 3600 + 60,
        );
        // The next day at 08:00 (closed): a drift check that is due still runs.
        let later = due("b", 14 * 3600 + 60).max(24 * 3600);
        let p = step(&mut o, &[], later);
        assert!(p.start.contains(&("b".to_string(), true)), "{:?}", p.start);
    }

    /// A destination removed from the spec: under Delete its copy (named by the status: the
    /// spec no longer has it) is deleted, then it is forgotten with an Event; a delete that
    /// failed is tried again; a copy in flight is cancelled; under Retain it is kept and
    /// forgotten at once.
    #[test]
    fn destinations_removed_from_the_spec_are_pruned_per_policy() {
        for policy in [DeletionPolicy::Delete, DeletionPolicy::Retain] {
            let mut o = obj();
            o.spec.deletion_policy = policy;
            step(&mut o, &[], 0);
            let p = step(&mut o, &[("b", ok(false, false)), ("c", ok(false, false))], 10);
            let c = &p.status.destinations[1];
            assert_eq!(
                (c.registry.as_deref(), c.repository.as_deref()),
                (Some("http://127.0.0.1:5002"), Some("team/web"))
            );
            o.spec.destinations.truncate(1);
            o.metadata.generation = Some(2);
            let p = step(&mut o, &[], 20);
            let removed = |p: &OciPlan| {
                p.events
                    .iter()
                    .find(|e| e.reason == "DestinationRemoved")
                    .map(|e| e.note.clone())
            };
            if policy == DeletionPolicy::Retain {
                assert!(p.prune.is_empty());
                assert_eq!(p.status.destinations.len(), 1);
                assert!(
                    removed(&p)
                        .unwrap()
                        .contains("its copy 127.0.0.1:5002/team/web@sha256:abc is kept"),
                    "{:?}",
                    p.events
                );
                continue;
            }
            assert_eq!(p.prune, vec!["c".to_string()]);
            assert!(
                p.status.destinations[1]
                    .message
                    .as_deref()
                    .unwrap()
                    .contains("deleting its copy")
            );
            let t: HashMap<String, TaskView> = HashMap::new();
            let failed = HashMap::from([("c".to_string(), Err("HTTP 500".to_string()))]);
            let p = oci_plan(&o, &t, &HashMap::new(), &failed, &at(30), RESYNC, MAX_ATTEMPTS);
            assert_eq!(p.prune, vec!["c".to_string()], "tried again");
            assert!(
                p.status.destinations[1]
                    .message
                    .as_deref()
                    .unwrap()
                    .contains("failed (will retry): HTTP 500")
            );
            let done = HashMap::from([("c".to_string(), Ok(()))]);
            let p = oci_plan(&o, &t, &HashMap::new(), &done, &at(40), RESYNC, MAX_ATTEMPTS);
            assert!(p.prune.is_empty());
            assert_eq!(p.status.destinations.len(), 1);
            assert!(removed(&p).unwrap().contains("was deleted (deletionPolicy Delete)"));
        }
        // A copy in flight (no copy yet) under Retain: cancelled, then forgotten.
        let mut o = obj();
        step(&mut o, &[], 0);
        o.spec.destinations.truncate(1);
        let running = TaskView::Running {
            done: 1,
            total: 10,
            resync: false,
            started: at(0),
        };
        let p = step(&mut o, &[("c", running)], 5);
        assert_eq!(p.prune, vec!["c".to_string()]);
        let done = HashMap::from([("c".to_string(), Ok(()))]);
        let p = oci_plan(
            &o,
            &HashMap::new(),
            &HashMap::new(),
            &done,
            &at(6),
            RESYNC,
            MAX_ATTEMPTS,
        );
        assert_eq!(p.status.destinations.len(), 1);
        assert!(
            p.events
                .iter()
                .any(|e| e.note.contains("its copy in flight was cancelled"))
        );
    }

    /// When destination `r` of the test object is due for its next check after one at `last`.
    fn due(r: &str, last: i64) -> i64 {
        next_check(&format!("default/web/{r}"), &at(last), RESYNC).0.as_second() - at(0).0.as_second()
    }

    #[test]
    fn fresh_object_starts_every_destination() {
        let mut o = obj();
        let p = step(&mut o, &[], 0);
        assert_eq!(p.start, vec![("b".to_string(), false), ("c".to_string(), false)]);
        assert!(
            p.status
                .destinations
                .iter()
                .all(|d| d.phase == DestinationPhase::Copying)
        );
        assert_eq!(
            (cond(&p, READY).status.as_str(), cond(&p, RECONCILING).status.as_str()),
            ("False", "True")
        );
        assert_eq!(p.requeue, Some(Duration::from_secs(2)));
    }

    /// A copy's first status waits [`QUIET_START`]: a copy that ends sooner is written once,
    /// finished; one still running then is written as Copying; anything else (a failure, an
    /// Event, an older copy's progress) is written at once.
    #[test]
    fn a_young_copys_status_waits_until_it_ends_or_is_quiet_no_more() {
        let fresh = obj();
        let plan_at = |o: &ImageReplication, tasks: &[(&str, TaskView)], now: i64| {
            let t: HashMap<String, TaskView> = tasks.iter().map(|(r, v)| (r.to_string(), v.clone())).collect();
            oci_plan(o, &t, &HashMap::new(), &HashMap::new(), &at(now), RESYNC, MAX_ATTEMPTS)
        };
        let running = |started: i64| TaskView::Running {
            done: 1,
            total: 10,
            resync: false,
            started: at(started),
        };
        // Both destinations start: the status may wait the whole quiet period.
        let p = plan_at(&fresh, &[], 0);
        assert_eq!(p.start.len(), 2);
        assert_eq!(p.status_may_wait, Some(QUIET_START));
        assert!(p.requeue.unwrap() <= QUIET_START);
        // A second later, still running (not written yet: the object has no status): wait on.
        let p = plan_at(&fresh, &[("b", running(0)), ("c", running(0))], 1);
        assert_eq!(p.status_may_wait, Some(QUIET_START - Duration::from_secs(1)));
        assert_eq!(p.requeue, Some(QUIET_START - Duration::from_secs(1)));
        // Both end within it: the first status written is the final one, Ready.
        let p = plan_at(&fresh, &[("b", ok(false, false)), ("c", ok(false, false))], 1);
        assert_eq!(p.status_may_wait, None);
        assert_eq!(cond(&p, READY).status, "True");
        assert_eq!(p.events.len(), 2, "DestinationAvailable twice");
        // Still running when the quiet period is over: written now, as Copying.
        let p = plan_at(&fresh, &[("b", running(0)), ("c", running(0))], 2);
        assert_eq!(p.status_may_wait, None);
        assert!(
            p.status
                .destinations
                .iter()
                .all(|d| d.phase == DestinationPhase::Copying)
        );
        // One ends (an Event) while the other is young: written now.
        let p = plan_at(&fresh, &[("b", ok(false, false)), ("c", running(0))], 1);
        assert_eq!(p.status_may_wait, None);
        // One fails while the other is young: written now.
        let p = plan_at(&fresh, &[("b", fail()), ("c", running(0))], 1);
        assert_eq!(p.status_may_wait, None);
        // An older copy's progress beside a young one: written now.
        let p = plan_at(&fresh, &[("b", running(-10)), ("c", running(0))], 1);
        assert_eq!(p.status_may_wait, None);
        // Nothing changes (a young copy already shown as Copying): nothing to wait for.
        let mut shown = fresh.clone();
        shown.status = Some(plan_at(&fresh, &[("b", running(-10)), ("c", running(-10))], 1).status);
        let p = plan_at(&shown, &[("b", running(-10)), ("c", running(-10))], 1);
        assert_eq!(Some(&p.status), shown.status.as_ref());
        assert_eq!(p.status_may_wait, None);
    }

    #[test]
    fn all_available_is_ready_and_announced_once() {
        let mut o = obj();
        step(&mut o, &[], 0);
        let running = TaskView::Running {
            done: 5,
            total: 10,
            resync: false,
            started: at(-1000),
        };
        let p = step(&mut o, &[("b", running.clone()), ("c", running)], 1);
        assert_eq!(p.status.destinations[0].progress_percent, Some(50));
        assert!(p.start.is_empty());
        let p = step(&mut o, &[("b", ok(false, false)), ("c", ok(false, false))], 2);
        assert_eq!(cond(&p, READY).status, "True");
        assert_eq!(p.status.summary.as_deref(), Some("2/2 available"));
        assert_eq!(
            p.events.iter().filter(|e| e.reason == "DestinationAvailable").count(),
            2
        );
        // Woken for the first drift check due, half a period to a period and a half away.
        let first = due("b", 2).min(due("c", 2));
        assert_eq!(p.requeue, Some(Duration::from_secs((first - 2) as u64)));
        assert!((2 + 150..2 + 450).contains(&first), "{first}");
        // Nothing new: no start, no event, same status.
        let again = step(&mut o, &[], 3);
        assert!(again.start.is_empty() && again.events.is_empty());
        assert_eq!(again.status, p.status);
    }

    #[test]
    fn a_failed_destination_does_not_block_the_others_and_stalls_after_retries() {
        let mut o = obj();
        step(&mut o, &[], 0);
        let p = step(&mut o, &[("b", ok(false, false)), ("c", fail())], 1);
        assert_eq!(p.status.destinations[0].phase, DestinationPhase::Available);
        assert_eq!(p.status.destinations[1].phase, DestinationPhase::Failed);
        assert_eq!(cond(&p, READY).reason, "Progressing", "a retry is pending");
        assert!(cond(&p, READY).message.contains("c: ConnectionError"));
        assert!(p.events.iter().any(|e| e.warning && e.reason == "DestinationFailed"));
        // Not due yet: no start, wake when due.
        let p = step(&mut o, &[], 5);
        assert!(p.start.is_empty());
        assert_eq!(p.requeue, Some(retry_delay(1) - Duration::from_secs(4)));
        let mut now = 5;
        for _ in 1..MAX_ATTEMPTS {
            now += 400;
            let p = step(&mut o, &[], now);
            assert!(p.start.contains(&("c".to_string(), false)), "{:?}", p.start);
            step(&mut o, &[("b", ok(true, true)), ("c", fail())], now + 1);
        }
        let p = step(&mut o, &[], now + 1000);
        assert!(
            p.start.iter().all(|(r, _)| r != "c"),
            "no more retries after {MAX_ATTEMPTS}"
        );
        assert_eq!(
            (cond(&p, STALLED).status.as_str(), cond(&p, READY).reason.as_str()),
            ("True", "DestinationsFailed")
        );
        assert_eq!(p.status.destinations[0].phase, DestinationPhase::Available);
        // A spec change re-drives it.
        o.metadata.generation = Some(2);
        let p = step(&mut o, &[], now + 1001);
        assert!(p.start.contains(&("c".to_string(), false)));
    }

    #[test]
    fn drift_checks_keep_ready_and_announce_repairs() {
        let mut o = obj();
        step(&mut o, &[], 0);
        step(&mut o, &[("b", ok(false, false)), ("c", ok(false, false))], 1);
        let t = due("b", 1).max(due("c", 1));
        let p = step(&mut o, &[], t);
        assert_eq!(p.start, vec![("b".to_string(), true), ("c".to_string(), true)]);
        assert_eq!(cond(&p, READY).status, "True", "a drift check does not flap Ready");
        let checking = TaskView::Running {
            done: 0,
            total: 0,
            resync: true,
            started: at(-1000),
        };
        let p = step(&mut o, &[("b", checking.clone()), ("c", checking)], t + 1);
        assert_eq!(cond(&p, READY).status, "True");
        let before = o.status.clone().unwrap();
        let p = step(&mut o, &[("b", ok(true, true)), ("c", ok(true, false))], t + 2);
        assert_eq!(p.events.len(), 1);
        assert_eq!(p.events[0].reason, "DriftRepaired");
        let (b, c) = (&p.status.destinations[0], &p.status.destinations[1]);
        assert_eq!(b, &before.destinations[0], "an intact copy's status is left as it was");
        assert_eq!(b.attempts, 1, "drift checks are not attempts");
        assert_eq!(
            (c.attempts, c.completed_at.clone()),
            (2, Some(at(t + 2))),
            "a repair is"
        );
        assert_eq!(c.bytes_copied, before.destinations[1].bytes_copied);

        // The source tag now names another digest: the copy follows it, and the Event says the
        // source moved (not that the copy drifted), with both digests.
        let t2 = due("c", t + 2);
        step(&mut o, &[], t2);
        let moved = TaskView::Succeeded {
            digest: "sha256:def".into(),
            bytes_total: 10,
            up_to_date: false,
            resync: true,
        };
        // b (and c) were checked just now (kept in memory, not status): not due by themselves.
        let plan_with_b_checked = |o: &ImageReplication, tasks: &[(&str, TaskView)]| {
            let t: HashMap<String, TaskView> = tasks.iter().map(|(r, v)| (r.to_string(), v.clone())).collect();
            let checked = HashMap::from([("b".to_string(), at(t2)), ("c".to_string(), at(t2))]);
            oci_plan(o, &t, &checked, &HashMap::new(), &at(t2 + 1), RESYNC, MAX_ATTEMPTS)
        };
        assert!(
            plan_with_b_checked(&o, &[]).start.is_empty(),
            "nothing due without the move"
        );
        let p = plan_with_b_checked(&o, &[("c", moved.clone())]);
        // b is checked at once: the regions take the new digest together (they were up to a
        // drift period apart).
        assert_eq!(p.start, vec![("b".to_string(), true)]);
        let p = step(&mut o, &[("c", moved)], t2 + 1);
        let e = p
            .events
            .iter()
            .find(|e| e.reason == "SourceChanged")
            .expect("SourceChanged");
        assert!(e.note.contains("from sha256:abc to sha256:def"), "{}", e.note);
        assert!(!p.events.iter().any(|e| e.reason == "DriftRepaired"));
        // Once b holds it too, nothing more starts.
        let p = step(
            &mut o,
            &[(
                "b",
                TaskView::Succeeded {
                    digest: "sha256:def".into(),
                    bytes_total: 10,
                    up_to_date: false,
                    resync: true,
                },
            )],
            t2 + 2,
        );
        assert!(p.start.is_empty(), "{:?}", p.start);
    }

    #[test]
    fn an_object_at_rest_plans_the_same_status() {
        let mut o = obj();
        step(&mut o, &[], 0);
        step(&mut o, &[("b", ok(false, false)), ("c", ok(false, false))], 1);
        let rest = o.status.clone().unwrap();
        // Drift checks at each destination's own phase, each finding the copy intact, for ten
        // periods.
        let mut checked: HashMap<String, Time> = HashMap::new();
        let mut last: HashMap<&str, i64> = [("b", 1), ("c", 1)].into();
        let mut previous: HashMap<&str, i64> = HashMap::new();
        for _ in 0..20 {
            let (r, t) = ["b", "c"]
                .iter()
                .map(|r| (*r, due(r, last[r])))
                .min_by_key(|x| x.1)
                .unwrap();
            if let Some(p) = previous.get(r) {
                assert_eq!(t - p, RESYNC.as_secs() as i64, "{r}: checks one period apart");
            }
            previous.insert(r, t);
            let early = oci_plan(
                &o,
                &HashMap::new(),
                &checked,
                &HashMap::new(),
                &at(t - 1),
                RESYNC,
                MAX_ATTEMPTS,
            );
            assert!(early.start.is_empty(), "nothing due before {t}");
            let idle = oci_plan(
                &o,
                &HashMap::new(),
                &checked,
                &HashMap::new(),
                &at(t),
                RESYNC,
                MAX_ATTEMPTS,
            );
            assert_eq!(idle.start, vec![(r.to_string(), true)], "{r} due at {t}");
            assert_eq!(idle.status, rest, "starting a drift check changes nothing");
            let done: HashMap<String, TaskView> = [(r.to_string(), ok(true, true))].into();
            let p = oci_plan(&o, &done, &checked, &HashMap::new(), &at(t + 1), RESYNC, MAX_ATTEMPTS);
            assert_eq!(p.status, rest, "an intact copy changes nothing");
            assert!(p.events.is_empty());
            checked.insert(r.to_string(), at(t + 1));
            last.insert(r, t + 1);
            let next = oci_plan(
                &o,
                &HashMap::new(),
                &checked,
                &HashMap::new(),
                &at(t + 2),
                RESYNC,
                MAX_ATTEMPTS,
            );
            assert!(next.start.is_empty(), "the next check waits for its phase");
            let wake = due("b", last["b"]).min(due("c", last["c"])) - (t + 2);
            assert_eq!(next.requeue, Some(Duration::from_secs(wake as u64)));
        }
    }

    /// 300 copies completed in the same second (a fleet created at once): their drift checks
    /// spread over the period, every period, instead of all falling due together.
    #[test]
    fn checks_of_copies_completed_together_spread_over_the_period() {
        let mut buckets = [0usize; 10];
        for i in 0..300 {
            let key = format!("default/web-{i}/b");
            let first = next_check(&key, &at(1000), RESYNC).0.as_second() - at(0).0.as_second();
            assert!((1000 + 150..1000 + 450).contains(&first), "{first}");
            let second = next_check(&key, &at(first + 3), RESYNC).0.as_second() - at(0).0.as_second();
            assert_eq!(second - first, 300, "then one period apart");
            buckets[((first - 1000 - 150) / 30) as usize] += 1;
        }
        // 30 per 30-second bucket on average; a herd would put most in one.
        assert!(buckets.iter().all(|b| (10..=55).contains(b)), "{buckets:?}");
    }

    #[test]
    fn first_checks_after_a_start_spread_over_the_period() {
        let now = at(10_000);
        let anchors: std::collections::BTreeSet<i64> = (0..200)
            .map(|i| spread_anchor(&format!("default/web-{i}/b"), &now, RESYNC).0.as_second())
            .collect();
        // 200 keys into 300 one-second slots: spread, not bunched (a few share a second).
        assert!(anchors.len() > 120, "distinct anchors: {}", anchors.len());
        assert!(
            anchors
                .iter()
                .all(|a| *a <= now.0.as_second() && *a > now.0.as_second() - 300)
        );
        let span = anchors.last().unwrap() - anchors.first().unwrap();
        assert!(span > 250, "anchors span {span} s of the 300 s period");
    }
}
