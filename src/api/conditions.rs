//! Condition types and reasons, and pure helpers that merge conditions the kstatus way:
//! `lastTransitionTime` changes only when a condition's status flips, conditions of types this
//! operator does not own are kept, and a status that differs only in timestamps is "unchanged".

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Summary condition: True when every destination / the replica is done.
pub const READY: &str = "Ready";
/// True while work is under way (kstatus).
pub const RECONCILING: &str = "Reconciling";
/// True when the object cannot progress without a change (kstatus).
pub const STALLED: &str = "Stalled";
/// Whether the spec passed validation and the provider's rules.
pub const VALIDATED: &str = "Validated";
/// ReplicaInstance: whether the replica holds what the primary holds.
pub const SYNCED: &str = "Synced";

/// The condition types this operator owns; others on the object are left alone.
pub const OWNED: [&str; 5] = [READY, RECONCILING, STALLED, VALIDATED, SYNCED];

/// Reasons shared by both kinds.
pub mod reason {
    /// The spec passed every rule.
    pub const VALID: &str = "Valid";
    /// The spec passed every rule that can be checked without the source; the source image's
    /// own rules wait until it can be read (`Validated=Unknown`).
    pub const SOURCE_NOT_CHECKED: &str = "SourceNotChecked";
    /// The provider named in the spec is not built yet.
    pub const PROVIDER_NOT_IMPLEMENTED: &str = "ProviderNotImplemented";
    /// `suspend: true`.
    pub const SUSPENDED: &str = "Suspended";
    /// Work under way.
    pub const PROGRESSING: &str = "Progressing";
    /// Nothing is under way.
    pub const IDLE: &str = "Idle";
    /// Everything is done.
    pub const SUCCEEDED: &str = "Succeeded";
    /// Cleanup after delete.
    pub const DELETING: &str = "Deleting";
}

/// A condition as the planner wants it, before timestamps are decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    /// Status `Unknown` (then `status` is ignored): not yet known either way.
    pub unknown: bool,
    pub reason: String,
    pub message: String,
}

impl Desired {
    pub fn new(type_: &'static str, status: bool, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status,
            unknown: false,
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    /// A condition whose status is `Unknown`.
    pub fn unknown(type_: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            unknown: true,
            ..Self::new(type_, false, reason, message)
        }
    }

    fn status_str(&self) -> &'static str {
        match (self.unknown, self.status) {
            (true, _) => "Unknown",
            (false, true) => "True",
            (false, false) => "False",
        }
    }
}

/// Merge the desired conditions into the existing ones.
///
/// A condition whose status is unchanged keeps its `lastTransitionTime`; reason, message and
/// observedGeneration are updated. Conditions of types not in `desired` and not owned by this
/// operator are kept as they are; owned types not desired any more are dropped.
pub fn merge(existing: &[Condition], desired: &[Desired], generation: Option<i64>, now: &Time) -> Vec<Condition> {
    let mut out: Vec<Condition> = desired
        .iter()
        .map(|d| {
            let status = d.status_str().to_string();
            let last_transition_time = existing
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: d.type_.to_string(),
                status,
                reason: d.reason.clone(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect();
    for c in existing {
        if !OWNED.contains(&c.type_.as_str()) && !out.iter().any(|o| o.type_ == c.type_) {
            out.push(c.clone());
        }
    }
    out
}

/// Find a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of `type_` exists and is True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Equal apart from `lastTransitionTime`.
pub fn eq_ignoring_time(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.type_ == y.type_
                && x.status == y.status
                && x.reason == y.reason
                && x.message == y.message
                && x.observed_generation == y.observed_generation
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_changes_only_when_status_flips() {
        let first = merge(
            &[],
            &[Desired::new(READY, false, "Progressing", "0/2")],
            Some(1),
            &t(100),
        );
        assert_eq!(first[0].last_transition_time, t(100));
        // Same status, new message and generation: time kept.
        let second = merge(
            &first,
            &[Desired::new(READY, false, "Progressing", "1/2")],
            Some(2),
            &t(200),
        );
        assert_eq!(second[0].last_transition_time, t(100));
        assert_eq!(second[0].message, "1/2");
        assert_eq!(second[0].observed_generation, Some(2));
        // Status flips: time moves.
        let third = merge(
            &second,
            &[Desired::new(READY, true, "Succeeded", "2/2")],
            Some(2),
            &t(300),
        );
        assert_eq!(third[0].last_transition_time, t(300));
        assert_eq!(third[0].status, "True");
    }

    #[test]
    fn foreign_conditions_are_kept_and_owned_stale_ones_dropped() {
        let foreign = Condition {
            type_: "example.com/Audited".into(),
            status: "True".into(),
            reason: "Ok".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: t(5),
        };
        let stale = Condition {
            type_: SYNCED.into(),
            ..foreign.clone()
        };
        let out = merge(
            &[foreign.clone(), stale],
            &[Desired::new(READY, true, "Succeeded", "")],
            Some(1),
            &t(9),
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[1], foreign);
    }

    #[test]
    fn equality_ignores_only_timestamps() {
        let a = merge(&[], &[Desired::new(READY, false, "Progressing", "x")], Some(1), &t(1));
        let b = merge(&[], &[Desired::new(READY, false, "Progressing", "x")], Some(1), &t(2));
        assert!(eq_ignoring_time(&a, &b));
        let c = merge(&[], &[Desired::new(READY, false, "Progressing", "y")], Some(1), &t(1));
        assert!(!eq_ignoring_time(&a, &c));
    }
}
