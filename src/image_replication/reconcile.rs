//! The ImageReplication reconcile, in three steps for the generic shell of
//! [`crate::controller`] and for `replicate -f`: [`observe`](Managed::observe) gates the object
//! and hands the I/O to its provider from the registry (the copy tasks of the oci provider, or
//! the cloud and the credentials Secret, read once, of a VM provider), which returns one
//! [`Snapshot`]; [`plan()`] is a pure function of the snapshot and the time (table-tested below);
//! [`act`](Managed::act) has the provider start or cancel the [`Work`] once the status is
//! written.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::v1alpha1::*;
use crate::controller::{Env, Managed, Planned, blocked_conditions};
use crate::error::Blocked;
use crate::image_replication::provider::{Snapshot, Work};
use crate::image_replication::vm::plan as vplan;
use crate::plan::{self, Announcement, Gate};
use crate::{Error, Result, validation};

/// The gate of an ImageReplication: its rules, whether its provider is built, suspend.
fn gate(obj: &ImageReplication, env: &Env) -> Gate {
    let kind = obj.spec.provider.kind;
    plan::gate(
        validation::image_replication(&obj.spec),
        kind.as_str(),
        env.providers.image(kind).is_some(),
        obj.spec.suspend,
    )
}

/// Plan an ImageReplication from what one reconcile saw. Pure.
pub fn plan(obj: &ImageReplication, snap: &Snapshot, now: &Time) -> Planned<ImageReplicationStatus, Work> {
    match snap {
        Snapshot::Gated(gate) => {
            let work = if gate.stops_work() {
                Work::CancelAll
            } else {
                Work::Nothing
            };
            Planned::new(plan::image_replication_status(obj, gate, now), work)
        }
        Snapshot::Oci {
            tasks,
            checked,
            pruned,
            resync,
            max_attempts,
        } => {
            let p =
                crate::image_replication::oci::plan::oci_plan(obj, tasks, checked, pruned, now, *resync, *max_attempts);
            let work = if p.start.is_empty() && p.prune.is_empty() {
                Work::Nothing
            } else {
                Work::Oci {
                    start: p.start,
                    prune: p.prune,
                }
            };
            Planned {
                requeue: p.requeue,
                events: p.events,
                status_may_wait: p.status_may_wait,
                ..Planned::new(p.status, work)
            }
        }
        Snapshot::Vm { gate, seen, .. } => {
            let p = vplan::plan(obj, gate, seen, now);
            Planned {
                requeue: p.requeue,
                events: p.events.clone(),
                ..Planned::new(p.status.clone(), Work::Vm(Box::new(p)))
            }
        }
    }
}

/// Write `spec.publish`'s ConfigMap when what it is to hold ([`crate::image_replication::publish::data`])
/// differs from what it holds (read once per object after a start, then remembered): one write
/// per change, none at rest, nothing before a region is Available. The Event says what changed.
async fn publish(obj: &ImageReplication, env: &Env, status: &ImageReplicationStatus) -> Option<Announcement> {
    let name = &obj.spec.publish.as_ref()?.config_map_name;
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    let key = crate::api::key_of(obj);
    let want = crate::image_replication::publish::data(obj, status);
    let known = env.published.lock().expect("published").get(&key).cloned();
    let have = match known {
        Some(h) => Some(h),
        None => match env.config_maps.get(&ns, name).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(configmap = %name, error = %e, "reading the published ConfigMap failed; will try again");
                return None;
            }
        },
    };
    if have.as_ref() == Some(&want) || (have.is_none() && want.is_empty()) {
        if let Some(h) = have {
            env.published.lock().expect("published").insert(key, h);
        }
        return None;
    }
    let owner = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "replication.imageops.io/v1alpha1".into(),
        kind: "ImageReplication".into(),
        name: obj.metadata.name.clone().unwrap_or_default(),
        uid: obj.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    let entries = want
        .iter()
        .map(|(r, v)| format!("{r}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    match env.config_maps.apply(&ns, name, owner, &want).await {
        Ok(()) => {
            env.published.lock().expect("published").insert(key, want);
            let how = if env.config_maps.writes() {
                ""
            } else {
                " (no cluster: not written)"
            };
            Some(Announcement {
                warning: false,
                reason: "Published".into(),
                note: format!("ConfigMap {name}{how}: {entries}"),
            })
        }
        Err(e) => Some(Announcement {
            warning: true,
            reason: "PublishFailed".into(),
            note: format!("ConfigMap {name}: {e}; will try again"),
        }),
    }
}

impl Managed for ImageReplication {
    type Status = ImageReplicationStatus;
    type Snapshot = Snapshot;
    type Work = Work;
    const CONTROLLER: &'static str = "image_replication";
    fn current_status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn conditions_of(status: &Self::Status) -> &[Condition] {
        &status.conditions
    }
    async fn observe(&self, env: &Env, now: &Time) -> Snapshot {
        let gate = gate(self, env);
        match env.providers.image(self.spec.provider.kind) {
            Some(p) => p.observe(self, gate, env.secrets.as_ref(), now).await,
            None => Snapshot::Gated(gate),
        }
    }
    fn plan(&self, snap: &Snapshot, now: &Time) -> Planned<Self::Status, Work> {
        plan(self, snap, now)
    }
    async fn claim(&self, env: &Env, snap: &Snapshot, planned: &Planned<Self::Status, Work>) -> bool {
        match env.providers.image(self.spec.provider.kind) {
            Some(p) => p.claim(self, snap, &planned.work).await,
            None => true,
        }
    }
    async fn act(&self, env: &Env, snap: &Snapshot, planned: &Planned<Self::Status, Work>) -> Vec<Announcement> {
        if !matches!(planned.work, Work::Nothing)
            && let Some(p) = env.providers.image(self.spec.provider.kind)
        {
            p.act(self, env.secrets.as_ref(), snap, &planned.work).await;
        }
        publish(self, env, &planned.status).await.into_iter().collect()
    }
    fn blocked_status(&self, blocked: &Blocked, now: &Time) -> Self::Status {
        let mut st = self.status.clone().unwrap_or_default();
        // The destination that blocks it, as the cleanup named it.
        for d in st.destinations.iter_mut() {
            if blocked.region.as_deref() == Some(d.region.as_str()) {
                d.message = Some(format!("deletion blocked: {}", blocked.message));
            }
        }
        st.conditions = blocked_conditions(&st.conditions, blocked, self.metadata.generation, now);
        st
    }
    async fn cleanup(&self, env: &Env) -> Result<String> {
        // Its ConfigMap goes with it (owner reference); so does what was remembered of it.
        env.published
            .lock()
            .expect("published")
            .remove(&crate::api::key_of(self));
        match env.providers.image(self.spec.provider.kind) {
            Some(p) => p
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
    use crate::plan::{TaskView, test_at as at};
    use std::collections::HashMap;
    use std::time::Duration;

    fn obj(kind: &str, suspend: bool) -> ImageReplication {
        let mut o: ImageReplication = serde_yaml::from_str(&format!(
            r#"
apiVersion: replication.imageops.io/v1alpha1
kind: ImageReplication
metadata: {{name: web, namespace: default}}
spec:
  provider: {{kind: {kind}}}
  source: {{region: one, reference: "127.0.0.1:5000/team/web:1.4"}}
  destinations: [{{region: two, registry: "http://127.0.0.1:5001"}}]
  suspend: {suspend}
"#
        ))
        .unwrap();
        o.metadata.generation = Some(2);
        o
    }

    fn oci(tasks: &[(&str, TaskView)]) -> Snapshot {
        Snapshot::Oci {
            tasks: tasks.iter().map(|(r, v)| (r.to_string(), v.clone())).collect(),
            checked: HashMap::new(),
            pruned: HashMap::new(),
            resync: Duration::from_secs(300),
            max_attempts: plan::MAX_ATTEMPTS,
        }
    }

    fn reason(p: &Planned<ImageReplicationStatus, Work>, type_: &str) -> String {
        let c = p.status.conditions.iter().find(|c| c.type_ == type_).unwrap();
        format!("{}/{}", c.status, c.reason)
    }

    /// A blocked delete marks the destination the cleanup named, from the value and not from
    /// the words: a region named inside another region's message (or a message cut short) marks
    /// nothing else; a cause no destination names marks none.
    #[test]
    fn a_blocked_delete_marks_the_destination_it_names() {
        let mut o = obj("oci", false);
        o.status = Some(ImageReplicationStatus {
            destinations: ["one", "two"]
                .iter()
                .map(|r| DestinationStatus {
                    region: r.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        let now = at(0);
        let msg = |st: &ImageReplicationStatus, r: &str| {
            st.destinations.iter().find(|d| d.region == r).unwrap().message.clone()
        };
        let st = o.blocked_status(&Blocked::at("two", "deleting image i-2 in one: HTTP 503"), &now);
        assert_eq!(msg(&st, "one"), None);
        assert_eq!(
            msg(&st, "two").as_deref(),
            Some("deletion blocked: deleting image i-2 in one: HTTP 503")
        );
        let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.reason, "DeletionBlocked");
        assert!(
            ready.message.starts_with("deleting: two: deleting image i-2"),
            "{}",
            ready.message
        );
        let st = o.blocked_status(&Blocked::from("two: Secret cloud-creds not found".to_string()), &now);
        assert!(st.destinations.iter().all(|d| d.message.is_none()), "{st:?}");
    }

    /// Each snapshot plans the status and the work a user would expect, and planning the same
    /// snapshot twice gives the same plan (collecting finished tasks is observe's, not plan's).
    #[test]
    fn each_snapshot_plans_its_status_and_work() {
        let now = at(1_000);
        let running = TaskView::Running {
            done: 1,
            total: 4,
            resync: false,
            started: at(-1000),
        };
        let failed = TaskView::Failed {
            reason: "ManifestUnknown".into(),
            message: "no such tag".into(),
            resync: false,
        };
        let cases: Vec<(&str, ImageReplication, Snapshot, &str, Work)> = vec![
            (
                "suspended: cancel what runs",
                obj("oci", true),
                Snapshot::Gated(Gate::Suspended),
                "False/Suspended",
                Work::CancelAll,
            ),
            (
                "provider not built: nothing runs, nothing to cancel",
                obj("oci", false),
                Snapshot::Gated(Gate::ProviderNotImplemented("oci")),
                "False/ProviderNotImplemented",
                Work::Nothing,
            ),
            (
                "oci, nothing running: the copy starts",
                obj("oci", false),
                oci(&[]),
                "False/Progressing",
                Work::Oci {
                    start: vec![("two".into(), false)],
                    prune: vec![],
                },
            ),
            (
                "oci, a copy running: nothing new starts",
                obj("oci", false),
                oci(&[("two", running)]),
                "False/Progressing",
                Work::Nothing,
            ),
            (
                "oci, the copy failed: it waits out its backoff",
                obj("oci", false),
                oci(&[("two", failed)]),
                "False/Progressing",
                Work::Nothing,
            ),
        ];
        for (what, o, snap, ready, work) in cases {
            let p = plan(&o, &snap, &now);
            assert_eq!(reason(&p, "Ready"), ready, "{what}");
            assert_eq!(p.work, work, "{what}");
            let again = plan(&o, &snap, &now);
            assert!(again.status == p.status && again.work == p.work, "{what}: plan is pure");
        }
    }
}
