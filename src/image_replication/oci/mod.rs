//! The `oci` provider of ImageReplication ([`Oci`]): the copy tasks, one per object and
//! destination, of the registry-to-registry copy engine in [`replicator`]. Shared by the
//! controller and the no-cluster `replicate` command.

pub mod plan;
pub mod replicator;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tracing::info;

use crate::api::key_of;
use crate::api::v1alpha1::{DeletionPolicy, ImageReplication, ProviderKind};
use crate::controller::secrets::{self, Secrets};
use crate::error::Blocked;
use crate::image_replication::oci::replicator::OciReplicator;
use crate::image_replication::provider::{ImageProvider, Snapshot, Work};
use crate::oci::{OciError, Progress, SecretCredentials};
use crate::plan::{Gate, TaskView};
use crate::server::metrics::Metrics;
use crate::tasks::{OnDone, Tasks};

/// How many oci copies (and drift checks) move at once in one operator; the others wait their
/// turn, oldest first, as small tasks. The registries' request budgets (16 requests per host)
/// bound the requests anyway: copies past them only waited, each holding its whole copy state
/// (about 5 KiB, and what it had read), and 5,000 objects created at once held 2,000 of them
/// (peak RSS 113 MiB on the fake API server, 82 MiB at 2,000 objects, 44 MiB with this bound).
/// At 128 the real-server run was slower (205 s against 180 s to all Ready, one pair): the
/// bound is set well above what the budgets let move.
pub const COPIES_IN_FLIGHT: usize = 512;

/// The `oci` provider: the copy engine, the background copy tasks (one per object and
/// destination) and the drift-check period.
pub struct Oci {
    pub replicator: Arc<OciReplicator>,
    tasks: Tasks,
    /// [`COPIES_IN_FLIGHT`] slots (tokio's semaphore is fair: first come, first served).
    slots: Arc<tokio::sync::Semaphore>,
    resync: Duration,
    max_attempts: i32,
    metrics: Metrics,
    /// Object key -> region -> how stopping a destination removed from the spec went (taken
    /// by the next observe).
    pruned: std::sync::Mutex<std::collections::HashMap<String, Pruned>>,
    freshness: crate::server::metrics::Freshness,
}

/// Region -> how stopping a removed destination went.
type Pruned = std::collections::HashMap<String, Result<(), String>>;

impl Oci {
    /// `wake` is called with the object's key when one of its copies ends.
    pub fn new(
        replicator: Arc<OciReplicator>,
        wake: OnDone,
        resync: Duration,
        max_attempts: i32,
        metrics: Metrics,
    ) -> Self {
        Self {
            replicator,
            tasks: Tasks::new(wake),
            slots: Arc::new(tokio::sync::Semaphore::new(COPIES_IN_FLIGHT)),
            resync,
            max_attempts,
            metrics,
            pruned: Default::default(),
            freshness: Default::default(),
        }
    }

    /// Collect the finished copy tasks (counted in the metrics) and the drift-check history.
    fn observe_open(&self, obj: &ImageReplication, now: &Time) -> Snapshot {
        let key = key_of(obj);
        let tasks = self.tasks.collect(&key, now);
        let regions: Vec<String> = obj.spec.destinations.iter().map(|d| d.region.clone()).collect();
        // `source.checkInterval`: how often this object's tag is looked up (its drift check).
        let resync = match obj.spec.source.check_interval {
            Some(_) => crate::image_replication::over_time::check_interval(&obj.spec.source).unwrap_or(self.resync),
            None => self.resync,
        };
        let checked = self.tasks.checked(&key, &regions, now, resync);
        for v in tasks.values() {
            let outcome = match v {
                TaskView::Succeeded { up_to_date: true, .. } => "up_to_date",
                TaskView::Succeeded { .. } => "copied",
                TaskView::Failed { .. } => "failed",
                TaskView::Running { .. } | TaskView::Idle => continue,
            };
            self.metrics.copy_tasks.with_label_values(&["oci", outcome]).inc();
        }
        self.metrics.copy_tasks_running.set(self.tasks.len() as i64);
        if let Some(st) = &obj.status {
            let outdated = crate::image_replication::over_time::outdated(st);
            self.freshness.record(&self.metrics, &key, "oci", outdated);
        }
        self.replicator.note_copies(obj);
        let pruned = self
            .pruned
            .lock()
            .expect("pruned lock")
            .remove(&key)
            .unwrap_or_default();
        Snapshot::Oci {
            tasks,
            checked,
            pruned,
            resync,
            max_attempts: self.max_attempts,
        }
    }

    /// Start a background copy task per destination (the Secret read once for all).
    async fn start_copies(&self, obj: &ImageReplication, secrets: &dyn Secrets, starts: &[(String, bool)]) {
        let key = key_of(obj);
        let creds = credentials(obj, secrets).await;
        for (region, resync) in starts {
            let Some(dest) = obj.spec.destinations.iter().find(|d| &d.region == region).cloned() else {
                continue;
            };
            let progress = Arc::new(Progress::default());
            let (oci, spec, creds, pr) = (
                self.replicator.clone(),
                obj.spec.clone(),
                creds.clone(),
                progress.clone(),
            );
            let bytes = self.metrics.bytes_transferred.with_label_values(&["oci"]);
            let slots = self.slots.clone();
            self.tasks.start(&key, region, *resync, progress, async move {
                let _slot = slots.acquire_owned().await.expect("copy slots never closed");
                // Boxed: a task waiting for its slot holds only this small future, not the
                // copy's whole state.
                let r = match creds {
                    Ok(c) => Box::pin(oci.copy_to(&spec, &dest, &c, &pr)).await,
                    Err(e) => Err(OciError::Auth(e)),
                };
                if let Ok(report) = &r {
                    bytes.inc_by(report.bytes_uploaded);
                }
                r
            });
        }
    }

    /// Stop destinations removed from the spec: the copy task cancelled; under `Delete` the copy
    /// deleted from its registry (where the status recorded it). The outcome goes to the next
    /// observe, and the object is woken for it.
    async fn prune(&self, obj: &ImageReplication, secrets: &dyn Secrets, regions: &[String]) {
        if regions.is_empty() {
            return;
        }
        let key = key_of(obj);
        let creds = credentials(obj, secrets).await;
        for region in regions {
            self.tasks.cancel_one(&key, region);
            let st = obj
                .status
                .iter()
                .flat_map(|s| s.destinations.iter())
                .find(|s| &s.region == region);
            let r = match st {
                Some(s) if obj.spec.deletion_policy == DeletionPolicy::Delete => {
                    self.delete_removed(obj, s, &creds).await
                }
                _ => Ok(()),
            };
            match &r {
                Ok(()) => info!(region, "stopped a destination removed from the spec"),
                Err(e) => {
                    tracing::warn!(region, error = %e, "deleting a removed destination's copy failed; will try again")
                }
            }
            self.pruned
                .lock()
                .expect("pruned lock")
                .entry(key.clone())
                .or_default()
                .insert(region.clone(), r);
        }
        self.tasks.wake(&key);
    }

    /// Delete the copy of a removed destination, named by its status (the spec no longer has
    /// it); a registry that refuses deletes keeps it.
    async fn delete_removed(
        &self,
        obj: &ImageReplication,
        s: &crate::api::v1alpha1::DestinationStatus,
        creds: &Result<SecretCredentials, String>,
    ) -> Result<(), String> {
        let (Some(registry), Some(repository), Some(digest)) = (&s.registry, &s.repository, &s.digest) else {
            return Ok(());
        };
        let creds = creds.as_ref().map_err(Clone::clone)?;
        let dest = crate::api::v1alpha1::DestinationSpec {
            region: s.region.clone(),
            registry: Some(registry.clone()),
            name: Some(repository.clone()),
            ..Default::default()
        };
        match self.replicator.delete_copy(&obj.spec, &dest, digest, creds).await {
            Ok(_)
            | Err(OciError::Http {
                status: 405 | 403 | 401,
                ..
            }) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Cancel the copies in flight, then remove the copies (`Delete`) or keep them.
    async fn remove(&self, obj: &ImageReplication, secrets: &dyn Secrets) -> Result<String, Blocked> {
        let cancelled = self.tasks.cancel_all(&key_of(obj));
        self.tasks.forget(&key_of(obj));
        self.freshness.forget(&self.metrics, &key_of(obj));
        let mut note = format!("deletionPolicy {:?}", obj.spec.deletion_policy);
        if cancelled > 0 {
            note.push_str(&format!("; cancelled {cancelled} copies in flight"));
        }
        if obj.spec.deletion_policy == DeletionPolicy::Retain {
            note.push_str("; destination copies kept");
            return Ok(note);
        }
        let creds = credentials(obj, secrets).await?;
        let mut removed = Vec::new();
        for st in obj.status.iter().flat_map(|s| s.destinations.iter()) {
            let (Some(digest), Some(dest)) = (&st.digest, obj.spec.destinations.iter().find(|d| d.region == st.region))
            else {
                continue;
            };
            match self.replicator.delete_copy(&obj.spec, dest, digest, &creds).await {
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
                Err(e) => return Err(Blocked::at(&st.region, format!("removing the copy: {e}"))),
            }
        }
        if !removed.is_empty() {
            note.push_str(&format!("; removed the copies in {}", removed.join(", ")));
        }
        Ok(note)
    }
}

async fn credentials(obj: &ImageReplication, secrets: &dyn Secrets) -> Result<SecretCredentials, String> {
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    secrets::credentials(secrets, &ns, obj.spec.provider.credentials_secret_ref.as_ref()).await
}

impl ImageProvider for Oci {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Oci
    }
    fn observe<'a>(
        &'a self,
        obj: &'a ImageReplication,
        gate: Gate,
        _secrets: &'a dyn Secrets,
        now: &'a Time,
    ) -> BoxFuture<'a, Snapshot> {
        let snap = match gate {
            Gate::Open => self.observe_open(obj, now),
            gate => Snapshot::Gated(gate),
        };
        Box::pin(std::future::ready(snap))
    }
    fn act<'a>(
        &'a self,
        obj: &'a ImageReplication,
        secrets: &'a dyn Secrets,
        _snapshot: &'a Snapshot,
        work: &'a Work,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            match work {
                Work::CancelAll => {
                    if self.tasks.cancel_all(&key_of(obj)) > 0 {
                        info!("suspended or invalid: cancelled running copies");
                    }
                }
                Work::Oci { start, prune } => {
                    self.prune(obj, secrets, prune).await;
                    self.start_copies(obj, secrets, start).await;
                }
                Work::Nothing | Work::Vm(_) => {}
            }
        })
    }
    /// Copies of an object that left this process are cancelled: the process that takes it
    /// over copies what is missing (blobs already there are not sent again).
    fn release(&self, obj: &ImageReplication) {
        let key = key_of(obj);
        if self.tasks.cancel_all(&key) > 0 {
            info!(object = %key, "the object left this process: cancelled its copies in flight");
        }
        self.tasks.forget(&key);
        self.freshness.forget(&self.metrics, &key);
    }
    fn cleanup<'a>(
        &'a self,
        obj: &'a ImageReplication,
        secrets: &'a dyn Secrets,
    ) -> BoxFuture<'a, Result<String, Blocked>> {
        Box::pin(self.remove(obj, secrets))
    }
}
