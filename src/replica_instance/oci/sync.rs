//! The sync of an oci ReplicaInstance: list both registries, diff ([`super::diff`]), copy what
//! is missing or changed, delete what the primary deleted (when asked), never write to the
//! primary; and the background syncs ([`SyncTasks`]) with what each is doing ([`SyncView`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};

use crate::api::v1alpha1::ReplicaInstanceSpec;
use crate::oci::SecretCredentials;
use crate::oci::{Budgets, CopyOptions, Engine, OciError, Progress, Registry, RegistryAddr};
use crate::replica_instance::oci::diff::{self, Inventory, Item};

/// One artifact that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub artifact: String,
    pub reason: String,
    pub message: String,
}

/// What a sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub full: bool,
    pub repositories: u64,
    /// Tags selected on the primary (in the synced repositories).
    pub artifacts: u64,
    pub copied: u64,
    pub deleted: u64,
    pub bytes: u64,
    /// Left alone because overwrite is off: (artifact, replica digest, primary digest).
    pub conflicts: Vec<(String, String, String)>,
    pub failures: Vec<Failure>,
}

/// Live progress of a sync.
#[derive(Default, Debug)]
pub struct SyncProgress {
    pub done: AtomicU64,
    pub total: AtomicU64,
}

/// List the selected tags of a registry with their digests (`repos`: only these repositories).
pub async fn inventory(
    reg: &Registry,
    spec: &ReplicaInstanceSpec,
    repos: Option<&BTreeSet<String>>,
    concurrency: usize,
) -> Result<Inventory, OciError> {
    let names: Vec<String> = match repos {
        Some(r) => r.iter().cloned().collect(),
        None => reg.catalog().await?,
    };
    let names: Vec<String> = names
        .into_iter()
        .filter(|r| diff::selects_repo(&spec.sync.filters, r))
        .collect();
    // Every repository's tags, then every tag's digest, `concurrency` requests at a time
    // across repositories: one after another, each request that waited out a 429 or a
    // backoff held up the whole listing.
    let tags: Vec<(String, Vec<String>)> = futures::stream::iter(names.into_iter().map(|repo| async move {
        let tags = reg.tags(&repo).await?;
        let tags = tags
            .into_iter()
            .filter(|t| diff::selects(&spec.sync.filters, &repo, t))
            .collect();
        Ok::<_, OciError>((repo, tags))
    }))
    .buffer_unordered(concurrency.max(1))
    .try_collect()
    .await?;
    let mut inv = Inventory::new();
    let mut wanted = Vec::new();
    for (repo, tags) in tags {
        inv.entry(repo.clone()).or_default();
        wanted.extend(tags.into_iter().map(|t| (repo.clone(), t)));
    }
    let heads: Vec<(String, String, Option<String>)> =
        futures::stream::iter(wanted.into_iter().map(|(repo, t)| async move {
            let d = reg.head_manifest(&repo, &t).await?;
            Ok::<_, OciError>((repo, t, d))
        }))
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    for (repo, t, d) in heads {
        if let Some(d) = d {
            inv.entry(repo).or_default().insert(t, d);
        }
    }
    Ok(inv)
}

/// Runs ReplicaInstance syncs; one per operator, sharing budgets and mount knowledge.
#[derive(Default)]
pub struct ReplicaSyncer {
    pub engine: Engine,
    pub budgets: Budgets,
    pub opts: CopyOptions,
}

impl ReplicaSyncer {
    pub fn with_budgets(budgets: Budgets) -> Self {
        Self {
            budgets,
            ..Default::default()
        }
    }

    async fn copy_one(
        &self,
        primary: &Registry,
        replica: &Registry,
        item: Item,
        opts: &CopyOptions,
        progress: &SyncProgress,
    ) -> Result<u64, Failure> {
        let p = Progress::default();
        let r = self
            .engine
            .copy(
                primary,
                &item.repository,
                &item.tag,
                replica,
                &item.repository,
                Some(&item.tag),
                opts,
                &p,
            )
            .await;
        progress.done.fetch_add(1, Ordering::Relaxed);
        r.map(|rep| rep.bytes_uploaded).map_err(|e| Failure {
            artifact: format!("{}:{}", item.repository, item.tag),
            reason: e.reason().to_string(),
            message: e.to_string(),
        })
    }

    /// The copy options of one sync: `sync.bandwidthLimit` is one limiter for all its
    /// transfers; `maxConcurrentTransfers` (`n`) bounds the blobs moving bytes at once across it.
    fn sync_options(&self, spec: &ReplicaInstanceSpec, n: usize) -> CopyOptions {
        let mut opts = self.opts.clone();
        opts.bandwidth = spec
            .sync
            .bandwidth_limit
            .as_deref()
            .and_then(crate::validation::parse_quantity)
            .map(|b| std::sync::Arc::new(crate::oci::copy::RateLimiter::new(b)));
        opts.transfer_slots = Some(std::sync::Arc::new(tokio::sync::Semaphore::new(n)));
        opts
    }

    /// Sync the replica from the primary: everything (`repos` None) or only some repositories
    /// (push notifications).
    pub async fn sync(
        &self,
        spec: &ReplicaInstanceSpec,
        repos: Option<BTreeSet<String>>,
        primary_creds: &SecretCredentials,
        replica_creds: &SecretCredentials,
        progress: &SyncProgress,
    ) -> Result<SyncReport, OciError> {
        let paddr =
            RegistryAddr::parse(spec.primary.registry.as_deref().unwrap_or("")).map_err(OciError::Unsupported)?;
        let raddr = RegistryAddr::parse(spec.replica.as_ref().and_then(|r| r.registry.as_deref()).unwrap_or(""))
            .map_err(OciError::Unsupported)?;
        let primary = self.budgets.registry(&paddr, primary_creds.for_host(&paddr.host))?;
        let replica = self.budgets.registry(&raddr, replica_creds.for_host(&raddr.host))?;
        let n = spec.sync.max_concurrent_transfers.max(1) as usize;
        let full = repos.is_none();
        let opts = self.sync_options(spec, n);
        // Listing requests are light: as many at once as artifacts in progress.
        let pinv = inventory(&primary, spec, repos.as_ref(), n * ARTIFACTS_PER_SLOT).await?;
        // The replica is listed only for the repositories the primary has, unless deletions
        // propagate (then a repository emptied on the primary matters too).
        let replica_repos: BTreeSet<String> = match (&repos, spec.sync.deletes) {
            (Some(r), _) => r.clone(),
            (None, crate::api::v1alpha1::DeletesPolicy::Propagate) => {
                pinv.keys().cloned().chain(replica.catalog().await?).collect()
            }
            (None, _) => pinv.keys().cloned().collect(),
        };
        let rinv = inventory(&replica, spec, Some(&replica_repos), n * ARTIFACTS_PER_SLOT).await?;
        let plan = diff::diff(&pinv, &rinv, &spec.sync);
        progress
            .total
            .store(plan.copy.len() as u64 + plan.delete.len() as u64, Ordering::Relaxed);

        let artifact = |i: &Item| format!("{}:{}", i.repository, i.tag);
        // `maxConcurrentTransfers` blobs move bytes at once (the transfer slots above); up to
        // ARTIFACTS_PER_SLOT times as many artifacts are worked on, so those reading manifests,
        // looking for blobs or waiting out a 429 or a backoff do not hold a slot while they
        // wait. Artifacts are taken round-robin across the repositories (the first tag of every
        // repository, then the second, ...), so a repository with many tags does not hold the
        // others back. Tags of one repository that share layers may run together: the engine
        // uploads a blob once and the others wait for it.
        let results: Vec<Result<u64, Failure>> = futures::stream::iter(round_robin(plan.copy.clone()))
            .map(|item| self.copy_one(&primary, &replica, item, &opts, progress))
            .buffer_unordered(n * ARTIFACTS_PER_SLOT)
            .collect()
            .await;
        let (mut bytes, mut copied) = (0u64, 0u64);
        let mut failures = Vec::new();
        for r in results {
            match r {
                Ok(b) => {
                    bytes += b;
                    copied += 1;
                }
                Err(f) => failures.push(f),
            }
        }

        let mut deleted = 0;
        for item in &plan.delete {
            match replica.delete_manifest(&item.repository, &item.digest).await {
                Ok(_) => deleted += 1,
                Err(e) => failures.push(Failure {
                    artifact: artifact(item),
                    reason: format!("Delete{}", e.reason()),
                    message: e.to_string(),
                }),
            }
            progress.done.fetch_add(1, Ordering::Relaxed);
        }
        for item in &plan.delete_blocked {
            failures.push(Failure {
                artifact: artifact(item),
                reason: "DeleteBlocked".into(),
                message: "deleted on the primary, but another synced tag on the replica shares its digest; the registry deletes by digest, so it was kept".into(),
            });
        }
        Ok(SyncReport {
            full,
            repositories: plan.repositories as u64,
            artifacts: plan.selected as u64,
            copied,
            deleted,
            bytes,
            conflicts: plan
                .conflicts
                .iter()
                .map(|(i, replica_digest)| (artifact(i), replica_digest.clone(), i.digest.clone()))
                .collect(),
            failures,
        })
    }
}

impl ReplicaSyncer {
    /// deletionPolicy Delete: remove from the replica every selected artifact. Returns how many.
    pub async fn remove_replicated(
        &self,
        spec: &ReplicaInstanceSpec,
        replica_creds: &SecretCredentials,
    ) -> Result<u64, OciError> {
        let raddr = RegistryAddr::parse(spec.replica.as_ref().and_then(|r| r.registry.as_deref()).unwrap_or(""))
            .map_err(OciError::Unsupported)?;
        let replica = self.budgets.registry(&raddr, replica_creds.for_host(&raddr.host))?;
        let inv = inventory(&replica, spec, None, spec.sync.max_concurrent_transfers.max(1) as usize).await?;
        let mut n = 0;
        for (repo, tags) in inv {
            let digests: BTreeSet<String> = tags.into_values().collect();
            for d in digests {
                if replica.delete_manifest(&repo, &d).await? {
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

/// Artifacts in progress per transfer slot of a ReplicaInstance sync (see `sync`).
const ARTIFACTS_PER_SLOT: usize = 4;

/// Items reordered round-robin by repository: the first item of each repository (in order),
/// then the second of each, and so on; within a repository the order is kept.
fn round_robin(items: Vec<Item>) -> Vec<Item> {
    let mut by_repo: std::collections::BTreeMap<String, std::collections::VecDeque<Item>> = Default::default();
    for item in items {
        by_repo.entry(item.repository.clone()).or_default().push_back(item);
    }
    let mut out = Vec::new();
    while !by_repo.is_empty() {
        by_repo.retain(|_, q| {
            if let Some(i) = q.pop_front() {
                out.push(i);
            }
            !q.is_empty()
        });
    }
    out
}

/// A finished sync: the report, or (reason, message) of a failure of the whole sync.
pub type SyncOutcome = crate::tasks::Outcome<SyncReport>;

/// What a ReplicaInstance's sync is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncView {
    Idle,
    Running { done: u64, total: u64, full: bool },
    Finished(SyncOutcome),
}

/// The running syncs of every ReplicaInstance.
pub struct SyncTasks {
    /// Keyed by object; the flag marks a full sync.
    set: crate::tasks::TaskSet<String, SyncProgress, SyncReport>,
    /// When each object's last full sync finished (in memory: a full sync that finds the
    /// replica in sync writes nothing to status).
    last_full: Mutex<HashMap<String, Time>>,
}

impl SyncTasks {
    pub fn new(on_done: crate::tasks::OnDone) -> Self {
        Self {
            set: crate::tasks::TaskSet::new(on_done),
            last_full: Mutex::new(HashMap::new()),
        }
    }

    /// The view of an object's sync; a finished one is collected here (a full one that
    /// succeeded marks the object's last full sync at `now`).
    pub fn collect(&self, key: &str, now: &Time) -> SyncView {
        use crate::tasks::Seen;
        self.set
            .collect_one(&key.to_string(), |seen| match seen {
                Seen::Running { progress, flag, .. } => SyncView::Running {
                    done: progress.done.load(Ordering::Relaxed),
                    total: progress.total.load(Ordering::Relaxed),
                    full: flag,
                },
                Seen::Finished { outcome, flag } => {
                    if flag && outcome.is_ok() {
                        self.last_full
                            .lock()
                            .expect("last full lock")
                            .insert(key.to_string(), now.clone());
                    }
                    SyncView::Finished(outcome)
                }
            })
            .unwrap_or(SyncView::Idle)
    }

    /// When the object's last full sync finished, as this process knows it. An object that
    /// synced before this process started (`synced_before`) is anchored at a fixed point of the
    /// last `interval`, so that after a start the full syncs of many objects spread out.
    pub fn last_full(&self, key: &str, synced_before: bool, now: &Time, interval: std::time::Duration) -> Option<Time> {
        let mut m = self.last_full.lock().expect("last full lock");
        if let Some(t) = m.get(key) {
            return Some(t.clone());
        }
        synced_before.then(|| {
            let t = crate::plan::spread_anchor(key, now, interval);
            m.insert(key.to_string(), t.clone());
            t
        })
    }

    /// Forget an object that is gone.
    pub fn forget(&self, key: &str) {
        self.last_full.lock().expect("last full lock").remove(key);
    }

    pub fn start<F>(&self, key: &str, full: bool, progress: Arc<SyncProgress>, work: F)
    where
        F: Future<Output = Result<SyncReport, OciError>> + Send + 'static,
    {
        let work = async move { work.await.map_err(crate::tasks::failed) };
        self.set.start(key.to_string(), key, full, progress, work);
    }

    pub fn cancel(&self, key: &str) -> bool {
        self.set.cancel(|k| k == key) > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_are_taken_round_robin_across_repositories() {
        let item = |r: &str, t: &str| Item {
            repository: r.into(),
            tag: t.into(),
            digest: String::new(),
        };
        let order: Vec<String> = round_robin(vec![
            item("a", "1"),
            item("a", "2"),
            item("a", "3"),
            item("b", "1"),
            item("c", "1"),
            item("c", "2"),
        ])
        .into_iter()
        .map(|i| format!("{}:{}", i.repository, i.tag))
        .collect();
        assert_eq!(order, ["a:1", "b:1", "c:1", "a:2", "c:2", "a:3"]);
        assert!(round_robin(Vec::new()).is_empty());
    }
}
