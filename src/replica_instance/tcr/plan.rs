//! The pure plan of a tencent ReplicaInstance: (object, what [`super::client`] observed, now) ->
//! status, Events, whether to create the replica. No I/O; table-tested below.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::client::{LogEntry, Observed, Replica};
use crate::api::conditions::{self, Desired, READY, RECONCILING, STALLED, SYNCED, VALIDATED, reason};
use crate::api::v1alpha1::{ReplicaInstance, ReplicaInstanceStatus, ReplicaPhase, SyncFailure};
use crate::cloud::ProviderError;
use crate::plan::Announcement;

/// What a reconcile of a tencent ReplicaInstance decides.
#[derive(Clone, Debug, Default)]
pub struct TcrPlan {
    pub status: ReplicaInstanceStatus,
    pub events: Vec<Announcement>,
    pub requeue: Option<Duration>,
    /// Create the replica once the status is written.
    pub create: bool,
}

fn failed(e: &LogEntry) -> bool {
    e.status.eq_ignore_ascii_case("failed") || e.status.eq_ignore_ascii_case("fail")
}

fn validated_ok() -> Desired {
    Desired::new(VALIDATED, true, reason::VALID, "")
}

/// Conditions while work is under way (`r`: the reason, `m`: the message).
fn working(r: &str, m: String) -> Vec<Desired> {
    vec![
        Desired::new(READY, false, r, m.clone()),
        Desired::new(RECONCILING, true, r, m.clone()),
        Desired::new(STALLED, false, r, ""),
        validated_ok(),
        Desired::new(SYNCED, false, r, m),
    ]
}

/// Conditions of an object that cannot go on until something changes (`valid`: the spec is
/// not at fault).
fn stuck(r: &str, m: String, valid: bool) -> Vec<Desired> {
    vec![
        Desired::new(READY, false, r, m.clone()),
        Desired::new(RECONCILING, false, r, ""),
        Desired::new(STALLED, true, r, m.clone()),
        if valid {
            validated_ok()
        } else {
            Desired::new(VALIDATED, false, r, m.clone())
        },
        Desired::new(SYNCED, false, r, m),
    ]
}

/// The replication failures to show: the API reports only the latest log entry, so failures
/// seen are kept until a later entry for the same artifact succeeds; a failed latest entry is
/// added once.
fn replication_failures(old: &ReplicaInstanceStatus, o: &Observed, r: &Replica, now: &Time) -> Vec<SyncFailure> {
    let mut failures: Vec<SyncFailure> = old
        .recent_failures
        .iter()
        .filter(|f| o.log.as_ref().is_none_or(|e| failed(e) || e.source != f.artifact))
        .cloned()
        .collect();
    if let Some(e) = o.log.as_ref().filter(|e| failed(e)) {
        let f = SyncFailure {
            artifact: e.source.clone(),
            reason: "ReplicationFailed".into(),
            message: format!(
                "{} {} -> {} failed (replica {})",
                e.resource_type, e.source, e.destination, r.id
            ),
            time: e.end_time.clone().unwrap_or_else(|| now.clone()),
        };
        if !failures.iter().any(|x| x.artifact == f.artifact && x.time == f.time) {
            failures.insert(0, f);
        }
    }
    failures
}

/// A running replica: its sync times, the replication failures seen (kept until a later
/// entry for the same artifact succeeds, an Event for each new one), and in sync, replicating
/// or degraded.
fn running_replica(
    p: &mut TcrPlan,
    old: &ReplicaInstanceStatus,
    o: &Observed,
    r: &Replica,
    id: &str,
    now: &Time,
) -> Vec<Desired> {
    p.requeue = Some(Duration::from_secs(30));
    p.status.last_full_sync_time = o.sync_time.clone().or(old.last_full_sync_time.clone());
    p.status.last_event_time = o
        .log
        .as_ref()
        .and_then(|e| e.end_time.clone())
        .or(old.last_event_time.clone());
    p.status.lag_seconds = Some(0);
    let mut failures = replication_failures(old, o, r, now);
    failures.truncate(10);
    p.status.failed = Some(failures.len() as i64);
    p.status.recent_failures = failures;
    for f in &p.status.recent_failures {
        if !old
            .recent_failures
            .iter()
            .any(|o| o.artifact == f.artifact && o.time == f.time)
        {
            p.events.push(Announcement {
                warning: true,
                reason: "ReplicationFailed".into(),
                note: f.message.clone(),
            });
        }
    }
    let syncing = o
        .sync_status
        .as_deref()
        .is_some_and(|s| matches!(s.to_ascii_lowercase().as_str(), "syncing" | "running" | "inprogress"));
    if !p.status.recent_failures.is_empty() {
        p.status.phase = Some(ReplicaPhase::Degraded);
        let m = format!(
            "{} replicated artifacts failed and have not succeeded since; see recentFailures",
            p.status.recent_failures.len()
        );
        vec![
            Desired::new(READY, false, "SyncFailures", m.clone()),
            Desired::new(RECONCILING, false, "SyncFailures", ""),
            Desired::new(STALLED, false, "SyncFailures", ""),
            validated_ok(),
            Desired::new(SYNCED, false, "SyncFailures", m),
        ]
    } else if syncing {
        p.status.phase = Some(ReplicaPhase::Syncing);
        working(
            reason::PROGRESSING,
            format!("replica {} in {} is replicating", r.id, r.region),
        )
    } else {
        if old.phase != Some(ReplicaPhase::InSync) {
            p.events.push(Announcement {
                warning: false,
                reason: "ReplicaInSync".into(),
                note: format!(
                    "replica {} of {id} in {} is running and in sync ({})",
                    r.id,
                    r.region,
                    o.sync_status.as_deref().unwrap_or("no replication yet")
                ),
            });
        }
        p.status.phase = Some(ReplicaPhase::InSync);
        let last = o.log.as_ref().map_or_else(
            || "nothing replicated yet".to_string(),
            |e| format!("last replicated {} {}", e.resource_type, e.source),
        );
        let m = format!("replica {} of {id} in {} is in sync ({last})", r.id, r.region);
        vec![
            Desired::new(READY, true, reason::SUCCEEDED, m.clone()),
            Desired::new(RECONCILING, false, reason::IDLE, ""),
            Desired::new(STALLED, false, reason::IDLE, ""),
            validated_ok(),
            Desired::new(SYNCED, true, "InSync", m),
        ]
    }
}

/// Pure: the status of a tencent ReplicaInstance from what was observed (or the error met).
pub fn plan(obj: &ReplicaInstance, seen: Result<&Observed, &ProviderError>, now: &Time) -> TcrPlan {
    let spec = &obj.spec;
    let old = obj.status.clone().unwrap_or_default();
    let id = spec.primary.instance_id.clone().unwrap_or_default();
    let mut p = TcrPlan {
        status: ReplicaInstanceStatus {
            observed_generation: obj.metadata.generation,
            phase: Some(old.phase.unwrap_or_default()),
            ..old.clone()
        },
        ..Default::default()
    };
    let desired = match seen {
        Err(e) => {
            p.requeue = Some(Duration::from_secs(if e.retryable { 15 } else { 60 }));
            if e.retryable {
                working(reason::PROGRESSING, format!("TCR (will retry): {}", e.message))
            } else {
                stuck("ProviderError", format!("TCR: {}", e.message), true)
            }
        }
        Ok(o) => match &o.instance {
            None => {
                p.requeue = Some(Duration::from_secs(60));
                stuck(
                    "PrimaryNotFound",
                    format!("TCR has no instance {id} in {}", spec.primary.region),
                    true,
                )
            }
            Some(i) if !i.kind.eq_ignore_ascii_case("premium") => stuck(
                "NotPremiumInstance",
                format!(
                    "spec.primary.instanceId: {id} is a {} instance; replica instances need a TCR Enterprise instance of the premium specification (upgrade it first)",
                    i.kind
                ),
                false,
            ),
            Some(i) if !i.region.is_empty() && i.region != spec.primary.region => stuck(
                "PrimaryRegionMismatch",
                format!(
                    "spec.primary.region is {} but instance {id} is in {}",
                    spec.primary.region, i.region
                ),
                false,
            ),
            Some(_) => match &o.replica {
                None => {
                    p.create = true;
                    p.requeue = Some(Duration::from_secs(5));
                    p.status.phase = Some(ReplicaPhase::Pending);
                    working(
                        "CreatingReplica",
                        format!("creating the replica of {id} in {}", spec.region),
                    )
                }
                Some(r) if r.status != "Running" => {
                    p.requeue = Some(Duration::from_secs(5));
                    p.status.phase = Some(ReplicaPhase::Syncing);
                    working(
                        reason::PROGRESSING,
                        format!("replica {} in {} is {}", r.id, r.region, r.status),
                    )
                }
                Some(r) => running_replica(&mut p, &old, o, r, &id, now),
            },
        },
    };
    p.status.conditions = conditions::merge(&old.conditions, &desired, obj.metadata.generation, now);
    p
}

#[cfg(test)]
mod tests {
    use super::super::client::Instance;
    use super::*;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    fn obj() -> ReplicaInstance {
        serde_json::from_value(json!({
            "apiVersion": "replication.imageops.io/v1alpha1", "kind": "ReplicaInstance",
            "metadata": {"name": "r", "namespace": "default", "generation": 1},
            "spec": {"primary": {"provider": "tencent", "region": "ap-guangzhou", "instanceId": "tcr-1"},
                     "region": "ap-shanghai"}
        }))
        .unwrap()
    }

    fn now() -> Time {
        Time(Timestamp::from_second(1_800_000_000).unwrap())
    }

    fn cond<'a>(
        s: &'a ReplicaInstanceStatus,
        t: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    fn premium() -> Option<Instance> {
        Some(Instance {
            id: "tcr-1".into(),
            region: "ap-guangzhou".into(),
            kind: "premium".into(),
            status: "Running".into(),
        })
    }

    #[test]
    fn creates_then_waits_then_reports_in_sync_and_failures() {
        let o = Observed {
            instance: premium(),
            ..Default::default()
        };
        let p = plan(&obj(), Ok(&o), &now());
        assert!(p.create);
        assert_eq!(cond(&p.status, "Ready").reason, "CreatingReplica");

        let mut o = o;
        o.replica = Some(Replica {
            id: "tcr-1-shanghai".into(),
            region_id: 4,
            region: "ap-shanghai".into(),
            status: "Creating".into(),
        });
        let p = plan(&obj(), Ok(&o), &now());
        assert!(!p.create);
        assert_eq!(p.status.phase, Some(ReplicaPhase::Syncing));

        o.replica.as_mut().unwrap().status = "Running".into();
        o.sync_status = Some("Success".into());
        o.sync_time = Some(now());
        o.log = Some(LogEntry {
            resource_type: "image".into(),
            source: "team/web:1".into(),
            destination: "team/web:1".into(),
            status: "Success".into(),
            end_time: Some(now()),
        });
        let p = plan(&obj(), Ok(&o), &now());
        assert_eq!(p.status.phase, Some(ReplicaPhase::InSync));
        assert_eq!(cond(&p.status, "Synced").status, "True");
        // At rest: the same observation later plans the same status and no Event (no write).
        let mut rest = obj();
        rest.status = Some(p.status.clone());
        let later = Time(Timestamp::from_second(now().0.as_second() + 3600).unwrap());
        let again = plan(&rest, Ok(&o), &later);
        assert_eq!(again.status, p.status, "nothing changes at rest");
        assert!(again.events.is_empty());
        assert_eq!(p.status.last_full_sync_time, Some(now()));
        assert_eq!(
            p.events.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(),
            vec!["ReplicaInSync"]
        );

        let mut o2 = o.clone();
        o2.log = Some(LogEntry {
            status: "Failed".into(),
            source: "team/api:2".into(),
            ..o.log.clone().unwrap()
        });
        let mut prev = obj();
        prev.status = Some(p.status.clone());
        let p2 = plan(&prev, Ok(&o2), &now());
        assert_eq!(p2.status.phase, Some(ReplicaPhase::Degraded));
        assert_eq!(p2.status.recent_failures.len(), 1);
        assert_eq!(p2.events.len(), 1, "one Warning per new failure");
        prev.status = Some(p2.status.clone());
        assert!(plan(&prev, Ok(&o2), &now()).events.is_empty(), "not again");
        // Another artifact replicates: the failure stays until team/api:2 succeeds.
        let p3 = plan(&prev, Ok(&o), &now());
        assert_eq!(p3.status.phase, Some(ReplicaPhase::Degraded));
        let mut o4 = o2.clone();
        o4.log.as_mut().unwrap().status = "Success".into();
        prev.status = Some(p3.status.clone());
        let p4 = plan(&prev, Ok(&o4), &now());
        assert_eq!(p4.status.phase, Some(ReplicaPhase::InSync));
        assert!(p4.status.recent_failures.is_empty());
    }

    #[test]
    fn refuses_a_non_premium_or_missing_instance() {
        let mut o = Observed {
            instance: premium(),
            ..Default::default()
        };
        o.instance.as_mut().unwrap().kind = "standard".into();
        let p = plan(&obj(), Ok(&o), &now());
        assert!(!p.create);
        let v = cond(&p.status, "Validated");
        assert_eq!((v.status.as_str(), v.reason.as_str()), ("False", "NotPremiumInstance"));
        assert!(v.message.contains("premium"), "{}", v.message);
        let p = plan(&obj(), Ok(&Observed::default()), &now());
        assert_eq!(cond(&p.status, "Stalled").reason, "PrimaryNotFound");
        let e = ProviderError::transient("RequestLimitExceeded");
        let p = plan(&obj(), Err(&e), &now());
        assert_eq!(cond(&p.status, "Reconciling").status, "True");
    }
}
