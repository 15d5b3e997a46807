//! ReplicaInstance with an oci primary ([`Oci`]): one background sync per object by the
//! executor of [`sync`] (inventory, [`diff`], copy), started by the plan and by the primaries'
//! push [`notify`]ications.

pub mod diff;
pub mod notify;
pub mod plan;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tracing::info;

use crate::api::key_of;
use crate::api::v1alpha1::{DeletionPolicy, ReplicaInstance, ReplicaProvider};
use crate::controller::secrets::{Secrets, credentials};
use crate::oci::{OciError, RegistryAddr, SecretCredentials};
use crate::plan::Announcement;
use crate::replica_instance::oci::notify::Notifications;
use crate::replica_instance::oci::plan::SyncStart;
use crate::replica_instance::oci::sync::{ReplicaSyncer, SyncProgress, SyncReport, SyncTasks, SyncView};
use crate::replica_instance::provider::{ReplicaBackend, Snapshot, Work};
use crate::server::metrics::Metrics;
use crate::tasks::OnDone;

/// The `oci` backend of ReplicaInstance: the sync executor, the background syncs (one per
/// object), the primaries' push notifications.
pub struct Oci {
    pub syncer: Arc<ReplicaSyncer>,
    tasks: SyncTasks,
    notifications: Arc<Notifications>,
    metrics: Metrics,
    /// The time between full syncs instead of each spec's `sync.interval` (`replicate -f`:
    /// back to back, until one is clean).
    interval: Option<Duration>,
}

impl Oci {
    /// `wake` is called with the object's key when its sync ends.
    pub fn new(syncer: Arc<ReplicaSyncer>, wake: OnDone, notifications: Arc<Notifications>, metrics: Metrics) -> Self {
        Self {
            syncer,
            tasks: SyncTasks::new(wake),
            notifications,
            metrics,
            interval: None,
        }
    }

    /// Full syncs this often, whatever the specs say.
    pub fn with_interval(self, interval: Duration) -> Self {
        Self {
            interval: Some(interval),
            ..self
        }
    }

    fn count(&self, r: &SyncReport) {
        let m = &self.metrics;
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

    /// Subscribe to the primary's notifications, collect the finished sync (counted in the
    /// metrics), the notifications not yet applied and the last full sync.
    fn observe_now(&self, obj: &ReplicaInstance, now: &Time) -> Snapshot {
        let key = key_of(obj);
        if let Some(host) = primary_host(obj) {
            self.notifications.subscribe(&host, &key);
        }
        let sync = self.tasks.collect(&key, now);
        if let SyncView::Finished(Ok(r)) = &sync {
            self.count(r);
        }
        let interval = self.interval.unwrap_or_else(|| {
            crate::validation::parse_duration(&obj.spec.sync.interval).unwrap_or(Duration::from_secs(600))
        });
        let synced_before = obj.status.as_ref().is_some_and(|s| s.last_full_sync_time.is_some());
        Snapshot::Oci {
            sync,
            pending: self.notifications.pending(&key),
            last_full: self.tasks.last_full(&key, synced_before, now, interval),
            interval,
        }
    }

    /// Start a background sync (the notifications it covers are taken now).
    async fn start_sync(&self, obj: &ReplicaInstance, secrets: &dyn Secrets, start: &SyncStart) {
        let key = key_of(obj);
        let repos = match start {
            SyncStart::Full => {
                self.notifications.take(&key); // a full sync covers them
                None
            }
            SyncStart::Repositories(_) => self.notifications.take(&key).map(|(r, _)| r),
        };
        let ns = obj.metadata.namespace.clone().unwrap_or_default();
        let pc = credentials(secrets, &ns, obj.spec.primary.credentials_secret_ref.as_ref()).await;
        let rc = replica_credentials(obj, secrets).await;
        let progress = Arc::new(SyncProgress::default());
        let (syncer, spec, pr) = (self.syncer.clone(), obj.spec.clone(), progress.clone());
        let full = repos.is_none();
        self.tasks.start(&key, full, progress, async move {
            let (pc, rc) = (pc.map_err(OciError::Auth)?, rc.map_err(OciError::Auth)?);
            syncer.sync(&spec, repos, &pc, &rc, &pr).await
        });
    }

    /// Stop the sync, forget the object, and remove what was replicated (`Delete`).
    async fn remove(&self, obj: &ReplicaInstance, secrets: &dyn Secrets) -> Result<String, String> {
        let key = key_of(obj);
        let cancelled = self.tasks.cancel(&key);
        self.tasks.forget(&key);
        self.notifications.unsubscribe(&key);
        let spec = &obj.spec;
        let mut note = format!("deletionPolicy {:?}", spec.deletion_policy);
        if cancelled {
            note.push_str("; cancelled the running sync");
        }
        if spec.deletion_policy == DeletionPolicy::Retain {
            note.push_str("; the replica's content is kept");
            return Ok(note);
        }
        let rc = replica_credentials(obj, secrets).await?;
        let n = self
            .syncer
            .remove_replicated(spec, &rc)
            .await
            .map_err(|e| format!("removing replicated content: {e}"))?;
        note.push_str(&format!("; removed {n} replicated artifacts from the replica"));
        Ok(note)
    }
}

fn primary_host(obj: &ReplicaInstance) -> Option<String> {
    RegistryAddr::parse(obj.spec.primary.registry.as_deref()?)
        .ok()
        .map(|a| a.host)
}

async fn replica_credentials(obj: &ReplicaInstance, secrets: &dyn Secrets) -> Result<SecretCredentials, String> {
    let r = obj
        .spec
        .replica
        .as_ref()
        .and_then(|r| r.credentials_secret_ref.as_ref());
    credentials(secrets, &obj.metadata.namespace.clone().unwrap_or_default(), r).await
}

impl ReplicaBackend for Oci {
    fn kind(&self) -> ReplicaProvider {
        ReplicaProvider::Oci
    }
    fn observe<'a>(
        &'a self,
        obj: &'a ReplicaInstance,
        _secrets: &'a dyn Secrets,
        now: &'a Time,
    ) -> BoxFuture<'a, Snapshot> {
        Box::pin(std::future::ready(self.observe_now(obj, now)))
    }
    fn act<'a>(
        &'a self,
        obj: &'a ReplicaInstance,
        secrets: &'a dyn Secrets,
        _snapshot: &'a Snapshot,
        work: &'a Work,
    ) -> BoxFuture<'a, Vec<Announcement>> {
        Box::pin(async move {
            match work {
                Work::CancelSync => {
                    if self.tasks.cancel(&key_of(obj)) {
                        info!("suspended or invalid: cancelled the running sync");
                    }
                }
                Work::Sync(start) => self.start_sync(obj, secrets, start).await,
                Work::Nothing | Work::CreateReplica => {}
            }
            Vec::new()
        })
    }
    fn cleanup<'a>(
        &'a self,
        obj: &'a ReplicaInstance,
        secrets: &'a dyn Secrets,
    ) -> BoxFuture<'a, Result<String, crate::error::Blocked>> {
        Box::pin(async move { self.remove(obj, secrets).await.map_err(Into::into) })
    }
}
