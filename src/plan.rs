//! Pure planning: (object, what the registry of providers offers, now) -> the status to write,
//! and the Event that announces a change. No client, no I/O; the controllers and the no-cluster
//! command use the same functions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::conditions::{self, Desired, READY, RECONCILING, STALLED, SYNCED, VALIDATED, reason};
use crate::api::v1alpha1::*;
use crate::validation::{self, Violation};

/// Annotation whose new value re-drives Failed destinations without a spec change.
pub const RETRY_ANNOTATION: &str = "replication.imageops.io/retry";

/// Whether a retry was requested with the annotation since the last one handled (both kinds of
/// ImageReplication: oci and VM).
pub fn retry_requested(obj: &ImageReplication) -> Option<String> {
    let v = obj.metadata.annotations.as_ref()?.get(RETRY_ANNOTATION)?;
    let handled = obj.status.as_ref().and_then(|s| s.last_handled_retry.as_ref());
    (handled != Some(v)).then(|| v.clone())
}

/// What stands between the object and progress, decided before any provider is called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// The spec breaks rules; nothing starts until it changes.
    Invalid(Vec<Violation>),
    /// The provider is not in this build.
    ProviderNotImplemented(&'static str),
    /// `suspend: true`.
    Suspended,
    /// Work may proceed.
    Open,
}

/// Decide the gate. Order: invalid, then a missing provider, then suspend.
pub fn gate(violations: Vec<Violation>, provider: &'static str, implemented: bool, suspend: bool) -> Gate {
    if !violations.is_empty() {
        Gate::Invalid(violations)
    } else if !implemented {
        Gate::ProviderNotImplemented(provider)
    } else if suspend {
        Gate::Suspended
    } else {
        Gate::Open
    }
}

/// The owned conditions for a gate that blocks work. `Open` has no fixed conditions: the
/// provider's progress decides them (later issues).
pub fn gate_conditions(gate: &Gate, with_synced: bool) -> Vec<Desired> {
    let (validated, reason_, message, stalled) = match gate {
        Gate::Invalid(v) => {
            let (r, m) = validation::summarize(v);
            (Desired::new(VALIDATED, false, r, m.clone()), r, m, true)
        }
        Gate::ProviderNotImplemented(p) => {
            let m = format!("provider {p} is not implemented in this version of the operator; nothing was started");
            (
                Desired::new(VALIDATED, true, reason::VALID, "the spec passed every rule"),
                reason::PROVIDER_NOT_IMPLEMENTED,
                m,
                true,
            )
        }
        Gate::Suspended => (
            Desired::new(VALIDATED, true, reason::VALID, "the spec passed every rule"),
            reason::SUSPENDED,
            "spec.suspend is true; no new work is started".to_string(),
            false,
        ),
        Gate::Open => (
            Desired::new(VALIDATED, true, reason::VALID, "the spec passed every rule"),
            reason::PROGRESSING,
            "work is under way".to_string(),
            false,
        ),
    };
    let mut out = vec![
        Desired::new(READY, false, reason_, message.clone()),
        Desired::new(RECONCILING, matches!(gate, Gate::Open), reason_, message.clone()),
        Desired::new(
            STALLED,
            stalled,
            reason_,
            if stalled { message.clone() } else { String::new() },
        ),
        validated,
    ];
    if with_synced {
        out.push(Desired::new(SYNCED, false, reason_, message));
    }
    out
}

/// Plan the status of an ImageReplication.
pub fn image_replication_status(obj: &ImageReplication, implemented: bool, now: &Time) -> ImageReplicationStatus {
    let spec = &obj.spec;
    let old = obj.status.clone().unwrap_or_default();
    let g = gate(
        validation::image_replication(spec),
        spec.provider.kind.as_str(),
        implemented,
        spec.suspend,
    );
    let desired = gate_conditions(&g, false);
    let generation = obj.metadata.generation;
    let destinations: Vec<DestinationStatus> = match &g {
        Gate::Invalid(_) => Vec::new(),
        _ => spec
            .destinations
            .iter()
            .map(|d| {
                old.destinations
                    .iter()
                    .find(|s| s.region == d.region)
                    .cloned()
                    .unwrap_or_else(|| DestinationStatus {
                        region: d.region.clone(),
                        ..Default::default()
                    })
            })
            .collect(),
    };
    let available = destinations
        .iter()
        .filter(|d| d.phase == DestinationPhase::Available)
        .count();
    let summary = match &g {
        Gate::Invalid(v) => format!("Invalid: {}", v[0].reason),
        _ => format!("{available}/{} available", spec.destinations.len()),
    };
    ImageReplicationStatus {
        observed_generation: generation,
        conditions: conditions::merge(&old.conditions, &desired, generation, now),
        source: old.source.clone(),
        destinations,
        summary: Some(summary),
        last_handled_retry: old.last_handled_retry.clone(),
    }
}

/// Plan the status of a ReplicaInstance.
pub fn replica_instance_status(obj: &ReplicaInstance, implemented: bool, now: &Time) -> ReplicaInstanceStatus {
    let spec = &obj.spec;
    let old = obj.status.clone().unwrap_or_default();
    let g = gate(
        validation::replica_instance(spec),
        spec.primary.provider.as_str(),
        implemented,
        spec.suspend,
    );
    let desired = gate_conditions(&g, true);
    let generation = obj.metadata.generation;
    ReplicaInstanceStatus {
        observed_generation: generation,
        conditions: conditions::merge(&old.conditions, &desired, generation, now),
        phase: Some(old.phase.unwrap_or_default()),
        ..old
    }
}

/// Where an object's work stands, for its Ready/Reconciling/Stalled conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Everything is done (`Ready=True`).
    Done,
    /// Work is under way (`Reconciling=True`).
    Working,
    /// It cannot progress without a change (`Stalled=True`).
    Stuck,
}

/// Ready, Reconciling and Stalled for a standing, with Validated=True (the spec passed).
pub fn standing_conditions(standing: Standing, reason: &str, message: String) -> Vec<Desired> {
    let (ready, reconciling, stalled) = match standing {
        Standing::Done => (true, false, false),
        Standing::Working => (false, true, false),
        Standing::Stuck => (false, false, true),
    };
    let (rec_reason, rec_msg) = match standing {
        Standing::Done => (reason::IDLE, String::new()),
        Standing::Working => (reason, message.clone()),
        Standing::Stuck => (reason, String::new()),
    };
    let (stall_reason, stall_msg) = match standing {
        Standing::Done => (reason::IDLE, String::new()),
        Standing::Working => (reason, String::new()),
        Standing::Stuck => (reason, message.clone()),
    };
    vec![
        Desired::new(READY, ready, reason, message),
        Desired::new(RECONCILING, reconciling, rec_reason, rec_msg),
        Desired::new(STALLED, stalled, stall_reason, stall_msg),
        Desired::new(VALIDATED, true, reason::VALID, "the spec passed every rule"),
    ]
}

/// An Event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

fn headline(conds: &[Condition]) -> Option<(String, String, String, String)> {
    let ready = conditions::find(conds, READY)?;
    let validated = conditions::find(conds, VALIDATED)?;
    Some((
        ready.status.clone(),
        ready.reason.clone(),
        validated.status.clone(),
        validated.reason.clone(),
    ))
}

/// The Event announcing a state change between two condition sets, if the headline (Ready and
/// Validated, status and reason) changed.
pub fn announcement(old: &[Condition], new: &[Condition]) -> Option<Announcement> {
    let after = headline(new)?;
    if headline(old).as_ref() == Some(&after) {
        return None;
    }
    let ready = conditions::find(new, READY)?;
    let warning = !conditions::is_true(new, VALIDATED) || conditions::is_true(new, STALLED);
    Some(Announcement {
        warning,
        reason: ready.reason.clone(),
        note: ready.message.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn now(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    fn obj(yaml: &str) -> ImageReplication {
        let mut o: ImageReplication = serde_yaml::from_str(yaml).unwrap();
        o.metadata.generation = Some(1);
        o
    }

    const HUAWEI: &str = r#"
apiVersion: replication.imageops.io/v1alpha1
kind: ImageReplication
metadata: {name: web, namespace: default}
spec:
  provider: {kind: huawei, agency: ims_admin, credentialsSecretRef: {name: hw}}
  source: {region: cn-north-4, imageId: img-1}
  destinations: [{region: cn-east-3}, {region: cn-south-1}]
"#;

    #[test]
    fn unimplemented_provider_is_stalled_not_ready() {
        let o = obj(HUAWEI);
        let s = image_replication_status(&o, false, &now(10));
        let c = |t| conditions::find(&s.conditions, t).unwrap();
        assert_eq!(c(READY).status, "False");
        assert_eq!(c(READY).reason, "ProviderNotImplemented");
        assert_eq!(c(STALLED).status, "True");
        assert_eq!(c(VALIDATED).status, "True");
        assert_eq!(c(RECONCILING).status, "False");
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(s.summary.as_deref(), Some("0/2 available"));
        assert_eq!(s.destinations.len(), 2);
        assert!(s.destinations.iter().all(|d| d.phase == DestinationPhase::Pending));
    }

    #[test]
    fn replanning_a_settled_object_changes_nothing() {
        let mut o = obj(HUAWEI);
        let first = image_replication_status(&o, false, &now(10));
        o.status = Some(first.clone());
        let second = image_replication_status(&o, false, &now(99));
        assert_eq!(first, second, "no status write when nothing changed");
        assert_eq!(announcement(&first.conditions, &second.conditions), None);
    }

    #[test]
    fn invalid_spec_names_the_rule_and_warns() {
        let mut o = obj(HUAWEI);
        o.spec.destinations[1].region = "cn-east-3".into();
        let s = image_replication_status(&o, false, &now(10));
        let v = conditions::find(&s.conditions, VALIDATED).unwrap();
        assert_eq!(v.status, "False");
        assert_eq!(v.reason, "DuplicateDestinationRegion");
        assert!(v.message.contains("spec.destinations[1].region"), "{}", v.message);
        assert!(s.destinations.is_empty());
        let a = announcement(&[], &s.conditions).unwrap();
        assert!(a.warning);
        assert_eq!(a.reason, "DuplicateDestinationRegion");
    }

    #[test]
    fn fixing_the_spec_flips_validated_and_announces_it() {
        let mut o = obj(HUAWEI);
        o.spec.provider.agency = None;
        let bad = image_replication_status(&o, false, &now(10));
        o.status = Some(bad.clone());
        o.spec.provider.agency = Some("ims_admin".into());
        o.metadata.generation = Some(2);
        let good = image_replication_status(&o, false, &now(20));
        let v = conditions::find(&good.conditions, VALIDATED).unwrap();
        assert_eq!((v.status.as_str(), v.observed_generation), ("True", Some(2)));
        assert_eq!(v.last_transition_time, now(20));
        // Ready stayed False: its transition time is kept.
        assert_eq!(
            conditions::find(&good.conditions, READY).unwrap().last_transition_time,
            now(10)
        );
        assert_eq!(
            announcement(&bad.conditions, &good.conditions).unwrap().reason,
            "ProviderNotImplemented"
        );
    }

    #[test]
    fn replica_instance_has_synced_condition() {
        let o: ReplicaInstance = serde_yaml::from_str(
            r#"
apiVersion: replication.imageops.io/v1alpha1
kind: ReplicaInstance
metadata: {name: r, namespace: default}
spec:
  primary: {provider: oci, region: region-a, registry: "http://127.0.0.1:5000"}
  region: region-b
  replica: {registry: "http://127.0.0.1:5001"}
"#,
        )
        .unwrap();
        let s = replica_instance_status(&o, false, &now(1));
        assert_eq!(conditions::find(&s.conditions, SYNCED).unwrap().status, "False");
        assert_eq!(s.phase, Some(ReplicaPhase::Pending));
        let suspended = gate(vec![], "oci", true, true);
        let conds = gate_conditions(&suspended, true);
        assert!(conds.iter().any(|d| d.type_ == STALLED && !d.status));
    }
}

// ---------- oci: per-destination copies ----------

/// What is known about one destination's copy task right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskView {
    /// No task in memory (never started, finished and collected, or the operator restarted).
    Idle,
    /// A task runs. `resync` marks a periodic drift check of an Available copy.
    Running { done: u64, total: u64, resync: bool },
    /// The task finished.
    Succeeded {
        digest: String,
        bytes_total: u64,
        up_to_date: bool,
        resync: bool,
    },
    /// The task failed.
    Failed {
        reason: String,
        message: String,
        resync: bool,
    },
}

/// Copies of one destination are tried this many times before it is Failed for good (until the
/// spec changes).
pub const MAX_ATTEMPTS: i32 = 5;

/// Delay before retry number `attempts` (1-based): 10 s doubling, at most 5 min.
pub fn retry_delay(attempts: i32) -> std::time::Duration {
    std::time::Duration::from_secs((10u64 << (attempts.clamp(1, 6) - 1)).min(300))
}

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
}

pub(crate) fn secs_since(t: &Option<Time>, now: &Time) -> Option<i64> {
    t.as_ref().map(|t| now.0.as_second() - t.0.as_second())
}

/// Plan an oci ImageReplication whose gate is open. A destination is tried `max_attempts`
/// times (normally [`MAX_ATTEMPTS`]) before it is Failed for good, until the spec changes.
/// `checked` holds when each destination's copy was last verified (kept in memory, not in
/// status): a drift check that finds the copy intact changes nothing in status, so an object at
/// rest is never written.
pub fn oci_plan(
    obj: &ImageReplication,
    tasks: &std::collections::HashMap<String, TaskView>,
    checked: &std::collections::HashMap<String, Time>,
    now: &Time,
    resync: std::time::Duration,
    max_attempts: i32,
) -> OciPlan {
    let spec = &obj.spec;
    let old = obj.status.clone().unwrap_or_default();
    let retry = retry_requested(obj);
    let spec_changed = old.observed_generation != obj.metadata.generation || retry.is_some();
    // The phase of a destination's drift checks: the same key as its check history.
    let object_key = format!(
        "{}/{}",
        obj.metadata.namespace.as_deref().unwrap_or_default(),
        obj.metadata.name.as_deref().unwrap_or_default()
    );
    let check_key = |d: &DestinationSpec| format!("{object_key}/{}", d.region);
    let mut start = Vec::new();
    let mut events = Vec::new();
    let mut wake: Vec<std::time::Duration> = Vec::new();
    let mut destinations = Vec::new();
    for d in &spec.destinations {
        let mut s = old
            .destinations
            .iter()
            .find(|s| s.region == d.region)
            .cloned()
            .unwrap_or_else(|| DestinationStatus {
                region: d.region.clone(),
                ..Default::default()
            });
        if spec_changed && s.phase == DestinationPhase::Failed {
            s.attempts = 0; // a spec change re-drives failed destinations
        }
        let idle = TaskView::Idle;
        match tasks.get(&d.region).unwrap_or(&idle) {
            TaskView::Running { done, total, resync } => {
                if !(*resync && s.phase == DestinationPhase::Available) {
                    s.phase = DestinationPhase::Copying;
                    s.started_at.get_or_insert_with(|| now.clone());
                    s.bytes_copied = Some(*done as i64);
                    s.bytes_total = Some(*total as i64);
                    s.progress_percent = Some(if *total == 0 {
                        0
                    } else {
                        (done * 100 / total).min(99) as i32
                    });
                    s.message = None;
                }
                wake.push(std::time::Duration::from_secs(2));
            }
            TaskView::Succeeded {
                digest,
                up_to_date: true,
                resync: true,
                ..
            } if s.phase == DestinationPhase::Available && s.digest.as_ref() == Some(digest) => {
                // A drift check that found the copy intact: nothing to say.
                wake.push(check_wait(
                    &check_key(d),
                    last_check(&s, checked.get(&d.region)),
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
                let was = s.phase;
                // A first copy or a repair is an attempt; the byte counts are the copy's own (an
                // up-to-date check reports none: the last real counts stay).
                s.attempts += 1;
                s.phase = DestinationPhase::Available;
                s.digest = Some(digest.clone());
                if *bytes_total > 0 || s.bytes_total.is_none() {
                    s.bytes_total = Some(*bytes_total as i64);
                    s.bytes_copied = Some(*bytes_total as i64);
                }
                s.progress_percent = Some(100);
                s.completed_at = Some(now.clone());
                s.message = None;
                if was != DestinationPhase::Available {
                    events.push(Announcement {
                        warning: false,
                        reason: "DestinationAvailable".into(),
                        note: format!("{}: {digest} available", d.region),
                    });
                } else if !up_to_date {
                    events.push(Announcement {
                        warning: false,
                        reason: "DriftRepaired".into(),
                        note: format!("{}: the copy had drifted and was restored to {digest}", d.region),
                    });
                }
                wake.push(check_wait(&check_key(d), s.completed_at.as_ref(), now, resync));
            }
            TaskView::Failed {
                reason,
                message,
                resync: _,
            } => {
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
                    note: format!("{}: {}", d.region, s.message.clone().unwrap_or_default()),
                });
                if retry {
                    wake.push(retry_delay(s.attempts));
                }
            }
            TaskView::Idle => match s.phase {
                DestinationPhase::Available => {
                    let last = last_check(&s, checked.get(&d.region));
                    let due = last.map(|l| next_check(&check_key(d), l, resync));
                    if due.is_none_or(|t| t.0.as_second() <= now.0.as_second()) {
                        start.push((d.region.clone(), true));
                    } else {
                        wake.push(check_wait(&check_key(d), last, now, resync));
                    }
                }
                DestinationPhase::Failed if s.attempts >= max_attempts => {}
                DestinationPhase::Failed => {
                    let due = retry_delay(s.attempts).as_secs() as i64;
                    match secs_since(&s.completed_at, now) {
                        Some(age) if age < due => wake.push(std::time::Duration::from_secs((due - age) as u64)),
                        _ => start.push((d.region.clone(), false)),
                    }
                }
                _ => start.push((d.region.clone(), false)),
            },
        }
        if start.last().is_some_and(|(r, resync)| r == &d.region && !resync) {
            s.phase = DestinationPhase::Copying;
            s.started_at = Some(now.clone());
            s.progress_percent = Some(0);
            s.message = None;
        }
        destinations.push(s);
    }
    if !start.is_empty() {
        wake.push(std::time::Duration::from_secs(2));
    }

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
    let desired = if available == n {
        standing_conditions(
            Standing::Done,
            reason::SUCCEEDED,
            format!("{n}/{n} destinations hold the source digest"),
        )
    } else if in_flight {
        let msg = if fail_text.is_empty() {
            summary.clone()
        } else {
            format!("{summary}; {fail_text}")
        };
        standing_conditions(Standing::Working, reason::PROGRESSING, msg)
    } else {
        standing_conditions(Standing::Stuck, "DestinationsFailed", format!("{summary}; {fail_text}"))
    };
    let generation = obj.metadata.generation;
    let status = ImageReplicationStatus {
        observed_generation: generation,
        conditions: conditions::merge(&old.conditions, &desired, generation, now),
        source: old.source.clone(),
        destinations,
        summary: Some(summary),
        last_handled_retry: retry.or(old.last_handled_retry.clone()),
    };
    OciPlan {
        status,
        start,
        requeue: wake.into_iter().min(),
        events,
    }
}

/// The later of two times, either of which may be unknown.
pub(crate) fn later<'a>(a: Option<&'a Time>, b: Option<&'a Time>) -> Option<&'a Time> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.0 > a.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// When a destination's copy was last known good: the later of its completion and the last
/// drift check kept in memory.
fn last_check<'a>(s: &'a DestinationStatus, checked: Option<&'a Time>) -> Option<&'a Time> {
    later(s.completed_at.as_ref(), checked)
}

/// The phase of `key` within `period`: each key's drift checks fall at `phase + k * period`
/// (absolute time), so the checks of many objects spread evenly over the period whenever the
/// objects were created or copied.
fn phase(key: &str, period: std::time::Duration) -> i64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % period.as_secs().max(1)) as i64
}

/// The last phase point of `key` at or before `now`: where the check history of a copy this
/// process has not checked yet is anchored when it starts, so its first check falls at the
/// next phase point — after a restart the checks spread over the period instead of all falling
/// due at once.
pub fn spread_anchor(key: &str, now: &Time, period: std::time::Duration) -> Time {
    let p = period.as_secs().max(1) as i64;
    let t = now.0.as_second();
    let back = (t - phase(key, period)).rem_euclid(p);
    Time(k8s_openapi::jiff::Timestamp::from_second(t - back).unwrap_or(now.0))
}

/// When the next drift check of `key` is due after one at `last`: the first phase point at
/// least half a period later. Checks lock onto the key's phase (one period apart) instead of
/// following when each copy happened to complete.
pub fn next_check(key: &str, last: &Time, period: std::time::Duration) -> Time {
    let p = period.as_secs().max(1) as i64;
    let earliest = last.0.as_second() + p / 2;
    let ahead = (phase(key, period) - earliest).rem_euclid(p);
    Time(k8s_openapi::jiff::Timestamp::from_second(earliest + ahead).unwrap_or(last.0))
}

/// How long until the check after `last` is due (at least a second).
fn check_wait(key: &str, last: Option<&Time>, now: &Time, period: std::time::Duration) -> std::time::Duration {
    let due = last.map_or(now.0.as_second(), |l| next_check(key, l, period).0.as_second());
    std::time::Duration::from_secs((due - now.0.as_second()).max(1) as u64)
}

/// Tests' clock: `s` seconds after a fixed instant.
#[cfg(test)]
pub(crate) fn test_at(s: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + s).unwrap())
}

#[cfg(test)]
mod oci_tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    use super::test_at as at;

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
        let p = oci_plan(o, &t, &HashMap::new(), &at(now), RESYNC, MAX_ATTEMPTS);
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

    #[test]
    fn all_available_is_ready_and_announced_once() {
        let mut o = obj();
        step(&mut o, &[], 0);
        let running = TaskView::Running {
            done: 5,
            total: 10,
            resync: false,
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
            let early = oci_plan(&o, &HashMap::new(), &checked, &at(t - 1), RESYNC, MAX_ATTEMPTS);
            assert!(early.start.is_empty(), "nothing due before {t}");
            let idle = oci_plan(&o, &HashMap::new(), &checked, &at(t), RESYNC, MAX_ATTEMPTS);
            assert_eq!(idle.start, vec![(r.to_string(), true)], "{r} due at {t}");
            assert_eq!(idle.status, rest, "starting a drift check changes nothing");
            let done: HashMap<String, TaskView> = [(r.to_string(), ok(true, true))].into();
            let p = oci_plan(&o, &done, &checked, &at(t + 1), RESYNC, MAX_ATTEMPTS);
            assert_eq!(p.status, rest, "an intact copy changes nothing");
            assert!(p.events.is_empty());
            checked.insert(r.to_string(), at(t + 1));
            last.insert(r, t + 1);
            let next = oci_plan(&o, &HashMap::new(), &checked, &at(t + 2), RESYNC, MAX_ATTEMPTS);
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
