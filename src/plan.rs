//! Pure planning: (object, what the registry of providers offers, now) -> the status to write,
//! and the Event that announces a change. No client, no I/O; the controllers and the no-cluster
//! command use the same functions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::conditions::{self, Desired, READY, RECONCILING, STALLED, SYNCED, VALIDATED, reason};
use crate::api::v1alpha1::*;
use crate::validation::{self, Violation};

pub use crate::schedule::{next_check, spread_anchor};
pub use crate::tasks::TaskView;

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

impl Gate {
    /// Whether work already running must stop (suspended, or the spec became invalid); a
    /// provider that is not built has nothing running.
    pub fn stops_work(&self) -> bool {
        matches!(self, Gate::Suspended | Gate::Invalid(_))
    }
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

/// Plan the status of an ImageReplication its gate `g` holds back.
pub fn image_replication_status(obj: &ImageReplication, g: &Gate, now: &Time) -> ImageReplicationStatus {
    let spec = &obj.spec;
    let old = obj.status.clone().unwrap_or_default();
    let desired = gate_conditions(g, false);
    let generation = obj.metadata.generation;
    let destinations: Vec<DestinationStatus> = match g {
        Gate::Invalid(_) => Vec::new(),
        _ => spec
            .destinations
            .iter()
            .map(|d| old.destination_or_new(&d.region))
            .collect(),
    };
    let available = destinations
        .iter()
        .filter(|d| d.phase == DestinationPhase::Available)
        .count();
    let summary = match g {
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
        // Kept copies of earlier sources stay listed whatever holds the object back.
        previous: old.previous.clone(),
    }
}

/// Plan the status of a ReplicaInstance its gate `g` holds back.
pub fn replica_instance_status(obj: &ReplicaInstance, g: &Gate, now: &Time) -> ReplicaInstanceStatus {
    let old = obj.status.clone().unwrap_or_default();
    let desired = gate_conditions(g, true);
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

// ---------- shared by the planners: task views, attempts, drift-check schedules ----------

/// How long a copy's first status may wait: a status that differs only by copies started less
/// than this long ago is not written yet (the shell looks again when the copies end, or when
/// this has passed). A copy that ends sooner (every blob mounted, nothing to upload) costs one
/// status write, its final one, instead of "Copying 0 %", a progress write and the final one.
pub const QUIET_START: std::time::Duration = std::time::Duration::from_secs(2);

/// How long ago `started` was, at `now` (zero if it lies ahead).
pub fn age(started: &Time, now: &Time) -> std::time::Duration {
    std::time::Duration::from_millis((now.0.as_millisecond() - started.0.as_millisecond()).max(0) as u64)
}

/// Copies of one destination are tried this many times before it is Failed for good (until the
/// spec changes).
pub const MAX_ATTEMPTS: i32 = 5;

/// Delay before retry number `attempts` (1-based): 10 s doubling, at most 5 min.
pub fn retry_delay(attempts: i32) -> std::time::Duration {
    std::time::Duration::from_secs((10u64 << (attempts.clamp(1, 6) - 1)).min(300))
}

pub(crate) fn secs_since(t: &Option<Time>, now: &Time) -> Option<i64> {
    t.as_ref().map(|t| now.0.as_second() - t.0.as_second())
}

/// The later of two times, either of which may be unknown.
pub(crate) fn later<'a>(a: Option<&'a Time>, b: Option<&'a Time>) -> Option<&'a Time> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.0 > a.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Tests' clock: `s` seconds after a fixed instant.
#[cfg(test)]
pub(crate) fn test_at(s: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + s).unwrap())
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

    /// The gate of an object whose provider is not built.
    fn closed(o: &ImageReplication) -> Gate {
        gate(validation::image_replication(&o.spec), "huawei", false, o.spec.suspend)
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
        let s = image_replication_status(&o, &closed(&o), &now(10));
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
        let first = image_replication_status(&o, &closed(&o), &now(10));
        o.status = Some(first.clone());
        let second = image_replication_status(&o, &closed(&o), &now(99));
        assert_eq!(first, second, "no status write when nothing changed");
        assert_eq!(announcement(&first.conditions, &second.conditions), None);
    }

    #[test]
    fn invalid_spec_names_the_rule_and_warns() {
        let mut o = obj(HUAWEI);
        o.spec.destinations[1].region = "cn-east-3".into();
        let s = image_replication_status(&o, &closed(&o), &now(10));
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
        let bad = image_replication_status(&o, &closed(&o), &now(10));
        o.status = Some(bad.clone());
        o.spec.provider.agency = Some("ims_admin".into());
        o.metadata.generation = Some(2);
        let good = image_replication_status(&o, &closed(&o), &now(20));
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
        let s = replica_instance_status(&o, &gate(vec![], "oci", false, false), &now(1));
        assert_eq!(conditions::find(&s.conditions, SYNCED).unwrap().status, "False");
        assert_eq!(s.phase, Some(ReplicaPhase::Pending));
        let suspended = gate(vec![], "oci", true, true);
        let conds = gate_conditions(&suspended, true);
        assert!(conds.iter().any(|d| d.type_ == STALLED && !d.status));
    }
}
