//! The ImageReplication reconcile, in three steps for the generic shell of
//! [`crate::controller`]: [`observe`](Managed::observe) does all the I/O (the copy tasks of the
//! oci path, or the cloud and the credentials Secret, read once, of the VM path) and returns
//! one [`Snapshot`]; [`plan`] is a pure function of the snapshot and the time (table-tested
//! below); [`act`](Managed::act) starts or cancels the [`Work`] once the status is written.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use tracing::info;

use crate::api::v1alpha1::*;
use crate::controller::{Context, Managed, Planned, blocked_conditions, key_of, secrets};
use crate::image_replication::oci::SecretCredentials;
use crate::image_replication::vm::plan::{self as vplan, VmPlan};
use crate::image_replication::vm::{Account, ImageService};
use crate::oci::{OciError, Progress};
use crate::plan::{self, Gate, TaskView};
use crate::{Error, Result, validation};

/// What one reconcile of an ImageReplication saw.
// One snapshot lives per reconcile, for its duration: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Snapshot {
    /// Nothing to observe: the gate is closed before any provider (invalid, suspended, the
    /// provider not built).
    Gated(Gate),
    /// oci: what each destination's copy task is doing, and when each was last verified.
    Oci {
        tasks: HashMap<String, TaskView>,
        checked: HashMap<String, Time>,
        resync: Duration,
    },
    /// A VM image service: what the cloud and the quota said, and the account read for it.
    Vm {
        gate: Gate,
        provider: Arc<dyn ImageService>,
        seen: vplan::Snapshot,
        account: Result<Account, String>,
    },
}

/// What `act` does once the planned status is written.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Work {
    #[default]
    Nothing,
    /// Cancel the object's running copies (suspended, or the spec became invalid).
    CancelAll,
    /// oci: start the copy tasks of these destinations (region, drift check?).
    Copy(Vec<(String, bool)>),
    /// VM: the plan whose metrics, starts and cancels `act` carries out.
    Vm(Box<VmPlan>),
}

/// The gate of an ImageReplication: its rules, whether its provider is built, suspend.
fn gate(obj: &ImageReplication, ctx: &Context) -> Gate {
    let kind = obj.spec.provider.kind;
    plan::gate(
        validation::image_replication(&obj.spec),
        kind.as_str(),
        ctx.providers.has_image(kind),
        obj.spec.suspend,
    )
}

/// The VM provider account: the referenced Secret's data and the endpoint override.
async fn account(obj: &ImageReplication, ctx: &Context) -> Result<Account, String> {
    let ns = obj.namespace().unwrap_or_default();
    let secret = match &obj.spec.provider.credentials_secret_ref {
        Some(r) => secrets::data(&ctx.client, &ns, &r.name).await?,
        None => Default::default(),
    };
    Ok(Account {
        secret,
        endpoint: obj.spec.provider.endpoint.clone(),
        agency: obj.spec.provider.agency.clone(),
    })
}

async fn credentials(obj: &ImageReplication, ctx: &Context) -> Result<SecretCredentials, String> {
    secrets::credentials(
        &ctx.client,
        &obj.namespace().unwrap_or_default(),
        obj.spec.provider.credentials_secret_ref.as_ref(),
    )
    .await
}

/// oci: collect the finished copy tasks (counted in the metrics) and the drift-check history.
fn observe_oci(obj: &ImageReplication, ctx: &Context, now: &Time) -> Snapshot {
    let key = key_of(obj);
    let tasks = ctx.tasks.collect(&key, now);
    let regions: Vec<String> = obj.spec.destinations.iter().map(|d| d.region.clone()).collect();
    let checked = ctx.tasks.checked(&key, &regions, now, ctx.resync);
    for v in tasks.values() {
        let outcome = match v {
            TaskView::Succeeded { up_to_date: true, .. } => "up_to_date",
            TaskView::Succeeded { .. } => "copied",
            TaskView::Failed { .. } => "failed",
            TaskView::Running { .. } | TaskView::Idle => continue,
        };
        ctx.metrics.copy_tasks.with_label_values(&["oci", outcome]).inc();
    }
    ctx.metrics.copy_tasks_running.set(ctx.tasks.len() as i64);
    ctx.oci.note_copies(obj);
    Snapshot::Oci {
        tasks,
        checked,
        resync: ctx.resync,
    }
}

/// Plan an ImageReplication from what one reconcile saw. Pure.
pub fn plan(obj: &ImageReplication, snap: &Snapshot, now: &Time) -> Planned<ImageReplicationStatus, Work> {
    match snap {
        Snapshot::Gated(gate) => {
            let implemented = *gate != Gate::ProviderNotImplemented(obj.spec.provider.kind.as_str());
            let work = if matches!(gate, Gate::Suspended | Gate::Invalid(_)) {
                Work::CancelAll
            } else {
                Work::Nothing
            };
            Planned::new(plan::image_replication_status(obj, implemented, now), work)
        }
        Snapshot::Oci { tasks, checked, resync } => {
            let p = crate::image_replication::plan::oci_plan(obj, tasks, checked, now, *resync, plan::MAX_ATTEMPTS);
            let work = if p.start.is_empty() {
                Work::Nothing
            } else {
                Work::Copy(p.start)
            };
            Planned {
                requeue: p.requeue,
                events: p.events,
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

/// oci: start a background copy task per destination (the Secret read once for all).
async fn start_copies(obj: &ImageReplication, ctx: &Context, starts: &[(String, bool)]) {
    let key = key_of(obj);
    let creds = credentials(obj, ctx).await;
    for (region, resync) in starts {
        let Some(dest) = obj.spec.destinations.iter().find(|d| &d.region == region).cloned() else {
            continue;
        };
        let progress = Arc::new(Progress::default());
        let (oci, spec, creds, pr) = (ctx.oci.clone(), obj.spec.clone(), creds.clone(), progress.clone());
        let bytes = ctx.metrics.bytes_transferred.with_label_values(&["oci"]);
        ctx.tasks.start(&key, region, *resync, progress, async move {
            let r = match creds {
                Ok(c) => oci.copy_to(&spec, &dest, &c, &pr).await,
                Err(e) => Err(OciError::Auth(e)),
            };
            if let Ok(report) = &r {
                bytes.inc_by(report.bytes_uploaded);
            }
            r
        });
    }
}

/// oci cleanup: cancel the copies in flight, then remove the copies (`Delete`) or keep them.
async fn cleanup_oci(obj: &ImageReplication, ctx: &Context) -> Result<String> {
    let cancelled = ctx.tasks.cancel_all(&key_of(obj));
    ctx.tasks.forget(&key_of(obj));
    let mut note = format!("deletionPolicy {:?}", obj.spec.deletion_policy);
    if cancelled > 0 {
        note.push_str(&format!("; cancelled {cancelled} copies in flight"));
    }
    if obj.spec.deletion_policy == DeletionPolicy::Delete && obj.spec.provider.kind == ProviderKind::Oci {
        let creds = credentials(obj, ctx).await.map_err(Error::Provider)?;
        let mut removed = Vec::new();
        for st in obj.status.iter().flat_map(|s| s.destinations.iter()) {
            let (Some(digest), Some(dest)) = (&st.digest, obj.spec.destinations.iter().find(|d| d.region == st.region))
            else {
                continue;
            };
            match ctx.oci.delete_copy(&obj.spec, dest, digest, &creds).await {
                Ok(_) => removed.push(st.region.clone()),
                Err(OciError::Http {
                    status: 405 | 403 | 401,
                    ..
                }) => {
                    note.push_str(&format!(
                        "; {}: the registry does not allow deletes, copy kept",
                        st.region
                    ));
                }
                Err(e) => return Err(Error::Provider(format!("removing the copy in {}: {e}", st.region))),
            }
        }
        if !removed.is_empty() {
            note.push_str(&format!("; removed the copies in {}", removed.join(", ")));
        }
    } else if obj.spec.deletion_policy == DeletionPolicy::Retain {
        note.push_str("; destination copies kept");
    }
    Ok(note)
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
    async fn observe(&self, ctx: &Context, now: &Time) -> Snapshot {
        let gate = gate(self, ctx);
        if let Some(provider) = ctx.providers.vm(self.spec.provider.kind) {
            let account = account(self, ctx).await;
            let seen = ctx
                .vm
                .observe(self, &gate, provider.as_ref(), account.clone(), now)
                .await;
            return Snapshot::Vm {
                gate,
                provider,
                seen,
                account,
            };
        }
        if gate == Gate::Open && self.spec.provider.kind == ProviderKind::Oci {
            return observe_oci(self, ctx, now);
        }
        Snapshot::Gated(gate)
    }
    fn plan(&self, snap: &Snapshot, now: &Time) -> Planned<Self::Status, Work> {
        plan(self, snap, now)
    }
    async fn act(&self, ctx: &Context, snap: &Snapshot, planned: &Planned<Self::Status, Work>) -> Result<()> {
        match (&planned.work, snap) {
            (Work::Nothing, _) => {}
            (Work::CancelAll, _) => {
                if ctx.tasks.cancel_all(&key_of(self)) > 0 {
                    info!("suspended or invalid: cancelled running copies");
                }
            }
            (Work::Copy(starts), _) => start_copies(self, ctx, starts).await,
            (Work::Vm(p), Snapshot::Vm { provider, account, .. }) => {
                // Without an account nothing was observed, so nothing is started or cancelled
                // (act still records the plan's metrics).
                let none = Account::default();
                let acct = account.as_ref().unwrap_or(&none);
                ctx.vm.act(self, provider.as_ref(), acct, p).await;
            }
            (Work::Vm(_), _) => {}
        }
        Ok(())
    }
    fn blocked_status(&self, message: &str, now: &Time) -> Self::Status {
        let mut st = self.status.clone().unwrap_or_default();
        // The destination the message is about (cleanup messages name their region first).
        for d in st.destinations.iter_mut() {
            let r = &d.region;
            if message.starts_with(&format!("{r}: ")) || message.contains(&format!(" in {r}: ")) {
                d.message = Some(format!("deletion blocked: {message}"));
            }
        }
        st.conditions = blocked_conditions(&st.conditions, message, self.metadata.generation, now);
        st
    }
    async fn cleanup(&self, ctx: &Context) -> Result<String> {
        if let Some(p) = ctx.providers.vm(self.spec.provider.kind) {
            let acct = account(self, ctx).await;
            return ctx
                .vm
                .cleanup(self, p.as_ref(), acct)
                .await
                .map_err(Error::CleanupBlocked);
        }
        cleanup_oci(self, ctx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::test_at as at;

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
            resync: Duration::from_secs(300),
        }
    }

    fn reason(p: &Planned<ImageReplicationStatus, Work>, type_: &str) -> String {
        let c = p.status.conditions.iter().find(|c| c.type_ == type_).unwrap();
        format!("{}/{}", c.status, c.reason)
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
                Work::Copy(vec![("two".into(), false)]),
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
