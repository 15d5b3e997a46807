//! The ReplicaInstance reconcile, in three steps for the generic shell of
//! [`crate::controller`] and for `replicate -f`: [`observe`](Managed::observe) gates the object
//! and hands the I/O to its backend from the registry (the oci primary's sync task and
//! notifications, or the TCR API with the credentials Secret read once), which returns one
//! [`Snapshot`]; [`plan()`] is a pure function of the snapshot and the time (table-tested
//! below); [`act`](Managed::act) has the backend start the [`Work`] once the status is written.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::key_of;
use crate::api::v1alpha1::*;
use crate::controller::{Env, Managed, Planned, blocked_conditions};
use crate::error::Blocked;
use crate::plan::{self, Announcement, Gate};
use crate::replica_instance::provider::{Snapshot, Work};
use crate::replica_instance::tcr::plan as tcr;
use crate::{Error, Result, validation};

fn gate(obj: &ReplicaInstance, env: &Env) -> Gate {
    let kind = obj.spec.primary.provider;
    plan::gate(
        validation::replica_instance(&obj.spec),
        kind.as_str(),
        env.providers.replica(kind).is_some(),
        obj.spec.suspend,
    )
}

/// Plan a ReplicaInstance from what one reconcile saw. Pure.
pub fn plan(obj: &ReplicaInstance, snap: &Snapshot, now: &Time) -> Planned<ReplicaInstanceStatus, Work> {
    match snap {
        Snapshot::Gated(gate) => {
            let work = if gate.stops_work() {
                Work::CancelSync
            } else {
                Work::Nothing
            };
            Planned::new(plan::replica_instance_status(obj, gate, now), work)
        }
        Snapshot::Tencent { seen, .. } => {
            let p = tcr::plan(obj, seen.as_ref(), now);
            let work = if p.create { Work::CreateReplica } else { Work::Nothing };
            Planned {
                requeue: p.requeue,
                events: p.events,
                ..Planned::new(p.status, work)
            }
        }
        Snapshot::Oci {
            sync,
            pending,
            last_full,
            interval,
        } => {
            let p = crate::replica_instance::oci::plan::replica_plan(
                obj,
                sync,
                pending.as_ref().map(|(r, t)| (r, t)),
                last_full.as_ref(),
                now,
                *interval,
            );
            Planned {
                requeue: p.requeue,
                events: p.events,
                ..Planned::new(p.status, p.start.map(Work::Sync).unwrap_or_default())
            }
        }
    }
}

impl Managed for ReplicaInstance {
    type Status = ReplicaInstanceStatus;
    type Snapshot = Snapshot;
    type Work = Work;
    const CONTROLLER: &'static str = "replica_instance";
    fn current_status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn conditions_of(status: &Self::Status) -> &[Condition] {
        &status.conditions
    }
    async fn observe(&self, env: &Env, now: &Time) -> Snapshot {
        match (gate(self, env), env.providers.replica(self.spec.primary.provider)) {
            (Gate::Open, Some(b)) => b.observe(self, env.secrets.as_ref(), now).await,
            (gate, _) => Snapshot::Gated(gate),
        }
    }
    fn plan(&self, snap: &Snapshot, now: &Time) -> Planned<Self::Status, Work> {
        plan(self, snap, now)
    }
    async fn act(&self, env: &Env, snap: &Snapshot, planned: &Planned<Self::Status, Work>) -> Vec<Announcement> {
        if let Snapshot::Oci { .. } = snap {
            let st = &planned.status;
            env.set_replica_gauges(&key_of(self), st.lag_seconds.unwrap_or(0), st.pending.unwrap_or(0));
        }
        match env.providers.replica(self.spec.primary.provider) {
            Some(b) if planned.work != Work::Nothing => b.act(self, env.secrets.as_ref(), snap, &planned.work).await,
            _ => Vec::new(),
        }
    }
    fn blocked_status(&self, blocked: &Blocked, now: &Time) -> Self::Status {
        let mut st = self.status.clone().unwrap_or_default();
        st.conditions = blocked_conditions(&st.conditions, blocked, self.metadata.generation, now);
        st
    }
    async fn cleanup(&self, env: &Env) -> Result<String> {
        env.set_replica_gauges(&key_of(self), 0, 0);
        match env.providers.replica(self.spec.primary.provider) {
            Some(b) => b
                .cleanup(self, env.secrets.as_ref())
                .await
                .map_err(Error::CleanupBlocked),
            None => Ok(format!("deletionPolicy {:?}", self.spec.deletion_policy)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::ProviderError;
    use crate::plan::test_at as at;
    use crate::replica_instance::oci::plan::SyncStart;
    use crate::replica_instance::oci::sync::SyncView;
    use std::time::Duration;

    fn obj(provider: &str) -> ReplicaInstance {
        let mut o: ReplicaInstance = serde_yaml::from_str(&format!(
            r#"
apiVersion: replication.imageops.io/v1alpha1
kind: ReplicaInstance
metadata: {{name: mirror, namespace: default}}
spec:
  region: two
  primary: {{provider: {provider}, region: one, registry: "http://127.0.0.1:5000", instanceId: tcr-1}}
  replica: {{registry: "http://127.0.0.1:5001"}}
"#
        ))
        .unwrap();
        o.metadata.generation = Some(1);
        o
    }

    fn ready(p: &Planned<ReplicaInstanceStatus, Work>) -> String {
        let c = p.status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        format!("{}/{}", c.status, c.reason)
    }

    /// Each snapshot plans the status and the work a user would expect, and planning the same
    /// snapshot twice gives the same plan.
    #[test]
    fn each_snapshot_plans_its_status_and_work() {
        let now = at(1_000);
        let oci = |sync: SyncView| Snapshot::Oci {
            sync,
            pending: None,
            last_full: None,
            interval: Duration::from_secs(600),
        };
        let cases: Vec<(&str, ReplicaInstance, Snapshot, &str, Work)> = vec![
            (
                "suspended: cancel the sync",
                ReplicaInstance {
                    spec: ReplicaInstanceSpec {
                        suspend: true,
                        ..obj("oci").spec
                    },
                    ..obj("oci")
                },
                Snapshot::Gated(Gate::Suspended),
                "False/Suspended",
                Work::CancelSync,
            ),
            (
                "oci, never synced: a full sync starts",
                obj("oci"),
                oci(SyncView::Idle),
                "False/Progressing",
                Work::Sync(SyncStart::Full),
            ),
            (
                "tencent, the account could not be read: nothing is created",
                obj("tencent"),
                Snapshot::Tencent {
                    seen: Err(ProviderError::transient("reading Secret s: NotFound (404)")),
                    account: None,
                },
                "False/Progressing",
                Work::Nothing,
            ),
        ];
        for (what, o, snap, want_ready, work) in cases {
            let p = plan(&o, &snap, &now);
            assert_eq!(ready(&p), want_ready, "{what}");
            assert_eq!(p.work, work, "{what}");
            let again = plan(&o, &snap, &now);
            assert!(again.status == p.status && again.work == p.work, "{what}: plan is pure");
        }
    }
}
