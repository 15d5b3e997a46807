//! The ReplicaInstance reconcile, in three steps for the generic shell of
//! [`crate::controller`]: [`observe`](Managed::observe) does all the I/O (the oci primary's
//! sync task and notifications, or the TCR API with the credentials Secret read once) and
//! returns one [`Snapshot`]; [`plan`] is a pure function of the snapshot and the time
//! (table-tested below); [`act`](Managed::act) starts the [`Work`] once the status is written.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use tracing::{info, warn};

use crate::api::v1alpha1::*;
use crate::controller::{Context, Managed, Planned, blocked_conditions, key_of, publish, secrets};
use crate::image_replication::oci::SecretCredentials;
use crate::image_replication::vm::{Account, ProviderError};
use crate::oci::OciError;
use crate::plan::{self, Gate};
use crate::replica_instance::oci::{SyncProgress, SyncView};
use crate::replica_instance::plan::SyncStart;
use crate::replica_instance::tcr;
use crate::{Error, Result, validation};

/// What one reconcile of a ReplicaInstance saw.
// One snapshot lives per reconcile, for its duration: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Snapshot {
    /// Nothing to observe: the gate is closed (invalid, suspended, the provider not built).
    Gated(Gate),
    /// oci: the sync task, the notifications not yet applied, the last full sync.
    Oci {
        sync: SyncView,
        pending: Option<(BTreeSet<String>, Time)>,
        last_full: Option<Time>,
        interval: Duration,
    },
    /// tencent: the TCR replica as the API describes it, and the account read for it.
    Tencent {
        seen: Result<tcr::Observed, ProviderError>,
        account: Option<Account>,
    },
}

/// What `act` does once the planned status is written.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Work {
    #[default]
    Nothing,
    /// Cancel the running sync (suspended, or the spec became invalid).
    CancelSync,
    /// oci: start this sync.
    Sync(SyncStart),
    /// tencent: create the TCR replica instance.
    CreateReplica,
}

fn gate(obj: &ReplicaInstance, ctx: &Context) -> Gate {
    let kind = obj.spec.primary.provider;
    plan::gate(
        validation::replica_instance(&obj.spec),
        kind.as_str(),
        ctx.providers.replica(kind).is_some(),
        obj.spec.suspend,
    )
}

async fn replica_credentials(obj: &ReplicaInstance, ctx: &Context) -> Result<SecretCredentials, String> {
    let r = obj
        .spec
        .replica
        .as_ref()
        .and_then(|r| r.credentials_secret_ref.as_ref());
    secrets::credentials(&ctx.client, &obj.namespace().unwrap_or_default(), r).await
}

/// The TCR account: the primary's credentials Secret (`secretId`, `secretKey`, optional
/// `token`, optional `endpoint` override of `https://tcr.tencentcloudapi.com`).
async fn tencent_account(obj: &ReplicaInstance, ctx: &Context) -> Result<Account, String> {
    let ns = obj.namespace().unwrap_or_default();
    let secret = match &obj.spec.primary.credentials_secret_ref {
        Some(r) => secrets::data(&ctx.client, &ns, &r.name).await?,
        None => return Err("spec.primary.credentialsSecretRef is required for tencent".into()),
    };
    let endpoint = secret
        .get("endpoint")
        .map(|v| String::from_utf8_lossy(v).trim().to_string())
        .filter(|e| !e.is_empty());
    Ok(Account {
        secret,
        endpoint,
        agency: None,
    })
}

fn primary_host(obj: &ReplicaInstance) -> Option<String> {
    crate::oci::RegistryAddr::parse(obj.spec.primary.registry.as_deref()?)
        .ok()
        .map(|a| a.host)
}

/// tencent: read the account once and describe the replica.
async fn observe_tencent(obj: &ReplicaInstance, ctx: &Context) -> Snapshot {
    let spec = &obj.spec;
    match tencent_account(obj, ctx).await {
        Ok(acct) => {
            let id = spec.primary.instance_id.clone().unwrap_or_default();
            let seen = ctx.tcr.observe(&acct, &id, &spec.primary.region, &spec.region).await;
            Snapshot::Tencent {
                seen,
                account: Some(acct),
            }
        }
        Err(e) => Snapshot::Tencent {
            seen: Err(ProviderError::transient(e)),
            account: None,
        },
    }
}

/// oci: subscribe to the primary's notifications, collect the finished sync (counted in the
/// metrics), the notifications not yet applied and the last full sync.
fn observe_oci(obj: &ReplicaInstance, ctx: &Context, now: &Time) -> Snapshot {
    let key = key_of(obj);
    if let Some(host) = primary_host(obj) {
        ctx.notifications.subscribe(&host, &key);
    }
    let sync = ctx.sync_tasks.collect(&key, now);
    if let SyncView::Finished(Ok(r)) = &sync {
        let m = &ctx.metrics;
        m.replica_artifacts.with_label_values(&["copied"]).inc_by(r.copied);
        m.replica_artifacts.with_label_values(&["deleted"]).inc_by(r.deleted);
        m.replica_artifacts
            .with_label_values(&["failed"])
            .inc_by(r.failures.len() as u64);
        m.replica_artifacts
            .with_label_values(&["conflict"])
            .inc_by(r.conflicts.len() as u64);
        m.bytes_transferred.with_label_values(&["oci_replica"]).inc_by(r.bytes);
    }
    let interval = validation::parse_duration(&obj.spec.sync.interval).unwrap_or(Duration::from_secs(600));
    let synced_before = obj.status.as_ref().is_some_and(|s| s.last_full_sync_time.is_some());
    Snapshot::Oci {
        sync,
        pending: ctx.notifications.pending(&key),
        last_full: ctx.sync_tasks.last_full(&key, synced_before, now, interval),
        interval,
    }
}

/// Plan a ReplicaInstance from what one reconcile saw. Pure.
pub fn plan(obj: &ReplicaInstance, snap: &Snapshot, now: &Time) -> Planned<ReplicaInstanceStatus, Work> {
    match snap {
        Snapshot::Gated(gate) => {
            let implemented = *gate != Gate::ProviderNotImplemented(obj.spec.primary.provider.as_str());
            let work = if matches!(gate, Gate::Suspended | Gate::Invalid(_)) {
                Work::CancelSync
            } else {
                Work::Nothing
            };
            Planned::new(plan::replica_instance_status(obj, implemented, now), work)
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
            let p = crate::replica_instance::plan::replica_plan(
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

/// tencent: create the replica with the account observe read.
async fn create_replica(obj: &ReplicaInstance, ctx: &Context, account: Option<&Account>) {
    let spec = &obj.spec;
    let Some(acct) = account else { return };
    let id = spec.primary.instance_id.clone().unwrap_or_default();
    match ctx.tcr.create(acct, &id, &spec.primary.region, &spec.region).await {
        Ok(r) => info!(replica = r, "TCR replica instance created"),
        Err(e) => {
            warn!(error = %e, "creating the TCR replica instance failed; will look again");
            let note = format!("creating the replica in {}: {e}", spec.region);
            publish(ctx, obj, true, "CreateReplicaFailed", note).await;
        }
    }
}

/// oci: start a background sync (the notifications it covers are taken now).
async fn start_sync(obj: &ReplicaInstance, ctx: &Context, start: &SyncStart) {
    let key = key_of(obj);
    let repos = match start {
        SyncStart::Full => {
            ctx.notifications.take(&key); // a full sync covers them
            None
        }
        SyncStart::Repositories(_) => ctx.notifications.take(&key).map(|(r, _)| r),
    };
    let ns = obj.namespace().unwrap_or_default();
    let pc = secrets::credentials(&ctx.client, &ns, obj.spec.primary.credentials_secret_ref.as_ref()).await;
    let rc = replica_credentials(obj, ctx).await;
    let progress = Arc::new(SyncProgress::default());
    let (syncer, spec, pr) = (ctx.syncer.clone(), obj.spec.clone(), progress.clone());
    let full = repos.is_none();
    ctx.sync_tasks.start(&key, full, progress, async move {
        let (pc, rc) = (pc.map_err(OciError::Auth)?, rc.map_err(OciError::Auth)?);
        syncer.sync(&spec, repos, &pc, &rc, &pr).await
    });
}

/// Apply the deletion policy to the replica: TCR deletes the replica instance (never the
/// primary); oci removes what was replicated.
async fn cleanup_replica(obj: &ReplicaInstance, ctx: &Context, note: &mut String) -> Result<()> {
    let spec = &obj.spec;
    match (spec.primary.provider, spec.deletion_policy) {
        (ReplicaProvider::Tencent, DeletionPolicy::Delete) => {
            let acct = tencent_account(obj, ctx).await.map_err(Error::Provider)?;
            let id = spec.primary.instance_id.clone().unwrap_or_default();
            let gone = ctx
                .tcr
                .delete(&acct, &id, &spec.primary.region, &spec.region)
                .await
                .map_err(|e| Error::Provider(format!("deleting the TCR replica instance: {e}")))?;
            match gone {
                Some(r) => note.push_str(&format!(
                    "; deleted replica instance {r} of {id} in {} (the primary is never touched)",
                    spec.region
                )),
                None => note.push_str("; no replica instance to delete"),
            }
        }
        (ReplicaProvider::Oci, DeletionPolicy::Delete) => {
            let rc = replica_credentials(obj, ctx).await.map_err(Error::Provider)?;
            let n = ctx
                .syncer
                .remove_replicated(spec, &rc)
                .await
                .map_err(|e| Error::Provider(format!("removing replicated content: {e}")))?;
            note.push_str(&format!("; removed {n} replicated artifacts from the replica"));
        }
        (_, DeletionPolicy::Retain) => note.push_str("; the replica's content is kept"),
    }
    Ok(())
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
    async fn observe(&self, ctx: &Context, now: &Time) -> Snapshot {
        match (gate(self, ctx), self.spec.primary.provider) {
            (Gate::Open, ReplicaProvider::Tencent) => observe_tencent(self, ctx).await,
            (Gate::Open, ReplicaProvider::Oci) => observe_oci(self, ctx, now),
            (gate, _) => Snapshot::Gated(gate),
        }
    }
    fn plan(&self, snap: &Snapshot, now: &Time) -> Planned<Self::Status, Work> {
        plan(self, snap, now)
    }
    async fn act(&self, ctx: &Context, snap: &Snapshot, planned: &Planned<Self::Status, Work>) -> Result<()> {
        let key = key_of(self);
        if let Snapshot::Oci { .. } = snap {
            let st = &planned.status;
            ctx.set_replica_gauges(&key, st.lag_seconds.unwrap_or(0), st.pending.unwrap_or(0));
        }
        match (&planned.work, snap) {
            (Work::Nothing, _) => {}
            (Work::CancelSync, _) => {
                if ctx.sync_tasks.cancel(&key) {
                    info!("suspended or invalid: cancelled the running sync");
                }
            }
            (Work::Sync(start), _) => start_sync(self, ctx, start).await,
            (Work::CreateReplica, Snapshot::Tencent { account, .. }) => {
                create_replica(self, ctx, account.as_ref()).await
            }
            (Work::CreateReplica, _) => {}
        }
        Ok(())
    }
    fn blocked_status(&self, message: &str, now: &Time) -> Self::Status {
        let mut st = self.status.clone().unwrap_or_default();
        st.conditions = blocked_conditions(&st.conditions, message, self.metadata.generation, now);
        st
    }
    async fn cleanup(&self, ctx: &Context) -> Result<String> {
        let key = key_of(self);
        let cancelled = ctx.sync_tasks.cancel(&key);
        ctx.sync_tasks.forget(&key);
        ctx.notifications.unsubscribe(&key);
        ctx.set_replica_gauges(&key, 0, 0);
        let mut note = format!("deletionPolicy {:?}", self.spec.deletion_policy);
        if cancelled {
            note.push_str("; cancelled the running sync");
        }
        cleanup_replica(self, ctx, &mut note).await?;
        Ok(note)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::test_at as at;

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
