//! The pure planner of an oci ReplicaInstance: from the object, what its sync is doing and
//! the time, the status to write, the sync to start, when to look again and the Events to
//! publish. No I/O; table-tested below.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::conditions::{self, Desired, READY, RECONCILING, STALLED, SYNCED, VALIDATED, reason};
use crate::api::v1alpha1::*;
use crate::plan::{Announcement, later, secs_since};
/// Wait this long after a whole sync failed before trying again.
pub const SYNC_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// What to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncStart {
    Full,
    /// Only these repositories (from push/delete notifications).
    Repositories(std::collections::BTreeSet<String>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaPlan {
    pub status: ReplicaInstanceStatus,
    pub start: Option<SyncStart>,
    pub requeue: Option<std::time::Duration>,
    pub events: Vec<Announcement>,
}

/// Plan an oci ReplicaInstance whose gate is open. `pending` holds repositories named by
/// notifications not yet applied, with the time of the oldest. `last_full` is when the last full
/// sync finished as the shell remembers it: a periodic full sync that finds the replica in sync
/// changes nothing in status (no write, no Event), so an object at rest is never written.
pub fn replica_plan(
    obj: &ReplicaInstance,
    view: &crate::replica_instance::oci::sync::SyncView,
    pending: Option<(&std::collections::BTreeSet<String>, &Time)>,
    last_full: Option<&Time>,
    now: &Time,
    interval: std::time::Duration,
) -> ReplicaPlan {
    use crate::replica_instance::oci::sync::SyncView;
    let mut st = obj.status.clone().unwrap_or_default();
    let mut events = Vec::new();
    let mut start = None;
    let mut requeue = None;
    let in_sync = st.phase == Some(ReplicaPhase::InSync);
    let mut busy_start = true;
    // A periodic check of a replica in sync, with nothing found to transfer (yet): quiet.
    let quiet_check = in_sync
        && matches!(
            view,
            SyncView::Running {
                full: true,
                done: 0,
                total: 0
            }
        )
        && pending.is_none_or(|(r, _)| r.is_empty());
    let running = matches!(view, SyncView::Running { .. });
    match view {
        SyncView::Running { .. } if quiet_check => {
            requeue = Some(std::time::Duration::from_secs(2));
        }
        SyncView::Finished(Ok(r))
            if in_sync
                && r.full
                && r.copied + r.deleted == 0
                && r.failures.is_empty()
                && r.conflicts.is_empty()
                && st.repositories == Some(r.repositories as i64)
                && st.artifacts == Some(r.artifacts as i64) =>
        {
            // The replica was already in sync: nothing to say.
        }
        SyncView::Running { done, total, .. } => {
            st.pending = Some(total.saturating_sub(*done) as i64);
            if st.phase.is_none_or(|p| p == ReplicaPhase::Pending) {
                st.phase = Some(ReplicaPhase::Syncing);
            }
            requeue = Some(std::time::Duration::from_secs(2));
        }
        SyncView::Finished(Ok(r)) => record_sync(&mut st, r, now, &mut events),
        SyncView::Finished(Err((reason, message))) => record_failed_sync(&mut st, reason, message, now, &mut events),
        SyncView::Idle => {}
    }
    if !running {
        (start, requeue) = next_sync(&st, view, pending, last_full, now, interval);
        if start.is_some() {
            requeue = Some(std::time::Duration::from_secs(2));
            if st.phase.is_none_or(|p| p == ReplicaPhase::Pending) {
                st.phase = Some(ReplicaPhase::Syncing);
            }
        }
        // Starting a periodic full sync of a replica in sync is not work to report yet.
        if in_sync && start == Some(SyncStart::Full) && pending.is_none_or(|(r, _)| r.is_empty()) {
            busy_start = false;
        }
    }
    st.lag_seconds = Some(
        pending
            .and_then(|(r, t)| (!r.is_empty()).then(|| secs_since(&Some(t.clone()), now).unwrap_or(0).max(0)))
            .unwrap_or(0),
    );

    let phase = st.phase.unwrap_or_default();
    let busy = (running && !quiet_check) || (start.is_some() && busy_start);
    let fail_text = st
        .recent_failures
        .iter()
        .take(3)
        .map(|f| format!("{}: {}", f.artifact, f.reason))
        .collect::<Vec<_>>()
        .join("; ");
    let desired = replica_conditions(phase, busy, &fail_text);
    let generation = obj.metadata.generation;
    st.observed_generation = generation;
    st.conditions = conditions::merge(&st.conditions, &desired, generation, now);
    ReplicaPlan {
        status: st,
        start,
        requeue,
        events,
    }
}

/// With no sync running: the sync to start (a full one when due, else the repositories
/// notifications named), or when to look again (the rest of the wait after a sync that failed
/// as a whole, else the time to the next full sync).
fn next_sync(
    st: &ReplicaInstanceStatus,
    view: &crate::replica_instance::oci::sync::SyncView,
    pending: Option<(&std::collections::BTreeSet<String>, &Time)>,
    last_full: Option<&Time>,
    now: &Time,
    interval: std::time::Duration,
) -> (Option<SyncStart>, Option<std::time::Duration>) {
    use crate::replica_instance::oci::sync::SyncView;
    let whole_failed_at = st
        .recent_failures
        .first()
        .filter(|f| f.artifact == "*")
        .map(|f| f.time.clone());
    let retry_wait = whole_failed_at
        .and_then(|t| secs_since(&Some(t), now))
        .filter(|age| *age < SYNC_RETRY.as_secs() as i64)
        .map(|age| std::time::Duration::from_secs((SYNC_RETRY.as_secs() as i64 - age) as u64));
    let full_age = secs_since(&later(st.last_full_sync_time.as_ref(), last_full).cloned(), now);
    let full_due = full_age.is_none_or(|a| a >= interval.as_secs() as i64);
    if let Some(w) = retry_wait.filter(|_| matches!(view, SyncView::Idle) || matches!(view, SyncView::Finished(Err(_))))
    {
        (None, Some(w))
    } else if full_due {
        (Some(SyncStart::Full), None)
    } else if let Some((repos, _)) = pending.filter(|(r, _)| !r.is_empty()) {
        (Some(SyncStart::Repositories(repos.clone())), None)
    } else {
        let left = interval.as_secs() as i64 - full_age.unwrap_or(0);
        (None, Some(std::time::Duration::from_secs(left.max(1) as u64)))
    }
}

/// Record a finished sync in status: its failures and conflicts first in `recentFailures`
/// (an Event for each of the first five), the bytes, the counts, the phase; a full sync also
/// its time and a summary Event, a notification-driven one an Event if it changed anything.
fn record_sync(
    st: &mut ReplicaInstanceStatus,
    r: &crate::replica_instance::oci::sync::SyncReport,
    now: &Time,
    events: &mut Vec<Announcement>,
) {
    let mut fresh: Vec<SyncFailure> = r
        .failures
        .iter()
        .map(|f| SyncFailure {
            artifact: f.artifact.clone(),
            reason: f.reason.clone(),
            message: f.message.clone(),
            time: now.clone(),
        })
        .collect();
    fresh.extend(r.conflicts.iter().map(|(a, replica_d, primary_d)| SyncFailure {
        artifact: a.clone(),
        reason: "OverwriteDisabled".into(),
        message: format!(
            "the replica holds {replica_d}, the primary {primary_d}; left alone because sync.overwrite is false"
        ),
        time: now.clone(),
    }));
    for f in fresh.iter().take(5) {
        events.push(Announcement {
            warning: true,
            reason: if f.reason == "OverwriteDisabled" {
                "OverwriteDisabled".into()
            } else {
                "SyncFailed".into()
            },
            note: format!("{}: {}: {}", f.artifact, f.reason, f.message),
        });
    }
    st.recent_failures = fresh
        .into_iter()
        .chain(st.recent_failures.drain(..))
        .take(MAX_RECENT_FAILURES)
        .collect();
    st.bytes_transferred = Some(st.bytes_transferred.unwrap_or(0) + r.bytes as i64);
    st.failed = Some(r.failures.len() as i64);
    st.pending = Some(0);
    if r.full {
        st.last_full_sync_time = Some(now.clone());
        st.repositories = Some(r.repositories as i64);
        st.artifacts = Some(r.artifacts as i64);
        let summary = format!(
            "{} artifacts in {} repositories; copied {}, deleted {}, {} failed, {} left alone",
            r.artifacts,
            r.repositories,
            r.copied,
            r.deleted,
            r.failures.len(),
            r.conflicts.len()
        );
        // A sync with failures is not "completed": it says so, naming every failed
        // artifact (the note is bounded; the status keeps the most recent ones).
        events.push(if r.failures.is_empty() {
            Announcement {
                warning: false,
                reason: "FullSyncCompleted".into(),
                note: summary,
            }
        } else {
            let names: Vec<&str> = r.failures.iter().map(|f| f.artifact.as_str()).collect();
            Announcement {
                warning: true,
                reason: "FullSyncIncomplete".into(),
                note: format!("{summary}: {}", names.join(", ")),
            }
        });
    } else {
        st.last_event_time = Some(now.clone());
        if r.copied + r.deleted > 0 {
            events.push(Announcement {
                warning: false,
                reason: "EventSynced".into(),
                note: format!("push notifications applied: copied {}, deleted {}", r.copied, r.deleted),
            });
        }
    }
    st.phase = Some(if r.failures.is_empty() {
        ReplicaPhase::InSync
    } else {
        ReplicaPhase::Degraded
    });
}

/// Record a sync that failed as a whole (artifact `*`), for the retry wait to see.
fn record_failed_sync(
    st: &mut ReplicaInstanceStatus,
    reason: &str,
    message: &str,
    now: &Time,
    events: &mut Vec<Announcement>,
) {
    st.recent_failures.insert(
        0,
        SyncFailure {
            artifact: "*".into(),
            reason: reason.to_string(),
            message: message.to_string(),
            time: now.clone(),
        },
    );
    st.recent_failures.truncate(MAX_RECENT_FAILURES);
    st.phase = Some(ReplicaPhase::Degraded);
    events.push(Announcement {
        warning: true,
        reason: "SyncFailed".into(),
        note: format!("{reason}: {message}"),
    });
}

/// The conditions of a ReplicaInstance in `phase`.
fn replica_conditions(phase: ReplicaPhase, busy: bool, fail_text: &str) -> Vec<Desired> {
    let validated = Desired::new(VALIDATED, true, reason::VALID, "the spec passed every rule");
    match phase {
        ReplicaPhase::InSync => vec![
            Desired::new(
                READY,
                true,
                "InSync",
                "the replica holds what the filters select on the primary",
            ),
            Desired::new(
                RECONCILING,
                busy,
                if busy { reason::PROGRESSING } else { reason::IDLE },
                "",
            ),
            Desired::new(STALLED, false, reason::IDLE, ""),
            validated,
            Desired::new(SYNCED, true, "InSync", "the last sync completed without failures"),
        ],
        ReplicaPhase::Degraded => vec![
            Desired::new(READY, false, "SyncFailures", fail_text),
            Desired::new(
                RECONCILING,
                busy,
                if busy { reason::PROGRESSING } else { "SyncFailures" },
                "",
            ),
            Desired::new(STALLED, false, "SyncFailures", ""),
            validated,
            Desired::new(SYNCED, false, "SyncFailures", fail_text),
        ],
        ReplicaPhase::Pending | ReplicaPhase::Syncing => vec![
            Desired::new(READY, false, reason::PROGRESSING, "the first sync is under way"),
            Desired::new(RECONCILING, true, reason::PROGRESSING, "the first sync is under way"),
            Desired::new(STALLED, false, reason::PROGRESSING, ""),
            validated,
            Desired::new(SYNCED, false, reason::PROGRESSING, "the first sync is under way"),
        ],
    }
}

#[cfg(test)]
mod replica_tests {
    use super::*;
    use crate::replica_instance::oci::sync::{Failure, SyncReport, SyncView};
    use std::collections::BTreeSet;
    use std::time::Duration;

    const INTERVAL: Duration = Duration::from_secs(600);

    use crate::plan::test_at as at;

    fn obj() -> ReplicaInstance {
        let mut o: ReplicaInstance = serde_yaml::from_str(
            r#"
apiVersion: replication.imageops.io/v1alpha1
kind: ReplicaInstance
metadata: {name: gz-to-sh, namespace: default}
spec:
  primary: {provider: oci, region: ap-guangzhou, registry: "http://127.0.0.1:5000"}
  region: ap-shanghai
  replica: {registry: "http://127.0.0.1:5001"}
"#,
        )
        .unwrap();
        o.metadata.generation = Some(1);
        o
    }

    fn report(copied: u64, failures: usize) -> SyncView {
        SyncView::Finished(Ok(SyncReport {
            full: true,
            repositories: 2,
            artifacts: 5,
            copied,
            deleted: 0,
            bytes: copied * 100,
            conflicts: vec![],
            failures: (0..failures)
                .map(|i| Failure {
                    artifact: format!("team/app:{i}"),
                    reason: "Unreachable".into(),
                    message: "connection refused".into(),
                })
                .collect(),
        }))
    }

    fn step(o: &mut ReplicaInstance, view: &SyncView, last_full: Option<i64>, now: i64) -> ReplicaPlan {
        let lf = last_full.map(at);
        let p = replica_plan(o, view, None, lf.as_ref(), &at(now), INTERVAL);
        o.status = Some(p.status.clone());
        p
    }

    #[test]
    fn first_sync_then_rest_then_a_change() {
        let mut o = obj();
        // New: a full sync starts at once.
        let p = step(&mut o, &SyncView::Idle, None, 0);
        assert_eq!(p.start, Some(SyncStart::Full));
        assert_eq!(p.status.phase, Some(ReplicaPhase::Syncing));
        step(
            &mut o,
            &SyncView::Running {
                done: 1,
                total: 5,
                full: true,
            },
            None,
            1,
        );
        let p = step(&mut o, &report(5, 0), Some(2), 2);
        assert_eq!(p.status.phase, Some(ReplicaPhase::InSync));
        assert_eq!(p.status.last_full_sync_time, Some(at(2)));
        assert_eq!(p.events[0].reason, "FullSyncCompleted");
        let rest = o.status.clone().unwrap();

        // Ten intervals at rest: each periodic full sync finds nothing to do and changes nothing.
        for k in 1..=10 {
            let t = 2 + k * (INTERVAL.as_secs() as i64 + 5);
            let last = t - INTERVAL.as_secs() as i64 - 5;
            let p = step(&mut o, &SyncView::Idle, Some(last), t);
            assert_eq!(p.start, Some(SyncStart::Full), "due at {t}");
            assert_eq!(p.status, rest, "starting it changes nothing");
            let p = step(
                &mut o,
                &SyncView::Running {
                    done: 0,
                    total: 0,
                    full: true,
                },
                Some(last),
                t + 1,
            );
            assert_eq!(p.status, rest, "running it with nothing to transfer changes nothing");
            let p = step(&mut o, &report(0, 0), Some(t + 2), t + 2);
            assert_eq!(p.status, rest, "finding the replica in sync changes nothing");
            assert!(p.events.is_empty(), "{:?}", p.events);
            let p = step(&mut o, &SyncView::Idle, Some(t + 2), t + 3);
            assert_eq!(p.start, None, "the next one waits an interval");
            assert_eq!(p.status, rest);
        }

        // A full sync that copies something says so.
        let t = 100_000;
        step(
            &mut o,
            &SyncView::Running {
                done: 0,
                total: 2,
                full: true,
            },
            Some(t - 700),
            t,
        );
        let p = step(&mut o, &report(2, 0), Some(t + 1), t + 1);
        assert_eq!(p.status.last_full_sync_time, Some(at(t + 1)));
        assert_eq!(p.status.bytes_transferred, Some(700));
        assert_eq!(p.events[0].reason, "FullSyncCompleted");

        // A failure degrades it, and the sync is not called completed; the next clean sync
        // brings it back in sync.
        let p = step(&mut o, &report(0, 1), Some(t + 700), t + 700);
        assert_eq!(p.status.phase, Some(ReplicaPhase::Degraded));
        let e = p.events.iter().find(|e| e.reason.starts_with("FullSync")).unwrap();
        assert_eq!((e.reason.as_str(), e.warning), ("FullSyncIncomplete", true));
        let failed = match &report(0, 1) {
            SyncView::Finished(Ok(r)) => r.failures[0].artifact.clone(),
            _ => unreachable!(),
        };
        assert!(e.note.contains(&failed), "{}", e.note);
        let p = step(&mut o, &report(1, 0), Some(t + 1400), t + 1400);
        assert_eq!(p.status.phase, Some(ReplicaPhase::InSync));
    }

    #[test]
    fn notifications_sync_their_repositories_between_full_syncs() {
        let mut o = obj();
        step(&mut o, &SyncView::Idle, None, 0);
        step(&mut o, &report(5, 0), Some(1), 1);
        let repos: BTreeSet<String> = ["team/web".to_string()].into();
        let t5 = at(5);
        let p = replica_plan(
            &o,
            &SyncView::Idle,
            Some((&repos, &t5)),
            Some(&at(1)),
            &at(10),
            INTERVAL,
        );
        assert_eq!(p.start, Some(SyncStart::Repositories(repos.clone())));
        assert_eq!(p.status.lag_seconds, Some(5), "the oldest notification waits 5 s");
    }
}
