//! Work running in the background: the one task registry ([`TaskSet`]) and, on it, the oci
//! copy tasks keyed by object and destination region ([`Tasks`]); the ReplicaInstance syncs and
//! the OpenStack upload streams run on it too. Reconciles never await a copy: they read each
//! task's view, collect finished results, and start or cancel tasks as the plan says.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::oci::{CopyReport, OciError, Progress};

/// What is known about one destination's copy task right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskView {
    /// No task in memory (never started, finished and collected, or the operator restarted).
    Idle,
    /// A task runs. `resync` marks a periodic drift check of an Available copy; `started` is
    /// when the task began.
    Running {
        done: u64,
        total: u64,
        resync: bool,
        started: Time,
    },
    /// The task finished.
    Succeeded {
        digest: String,
        bytes_total: u64,
        up_to_date: bool,
        resync: bool,
    },
    /// The task failed.
    Failed {
        reason: String,
        message: String,
        resync: bool,
    },
}

/// How a task ended: its result, or the reason and message of its error.
pub type Outcome<R> = Result<R, (String, String)>;

/// An oci error as a task's outcome: its reason and message.
pub fn failed(e: OciError) -> (String, String) {
    (e.reason().to_string(), e.to_string())
}

/// Called with the object key when one of its tasks finishes.
pub type OnDone = Arc<dyn Fn(&str) + Send + Sync>;

struct Entry<P, R> {
    progress: Arc<P>,
    /// When the task started.
    started: Time,
    /// What the owner marks a task with: a drift check, a full sync.
    flag: bool,
    result: Arc<Mutex<Option<Outcome<R>>>>,
    handle: tokio::task::AbortHandle,
}

/// A task as its owner sees it.
pub enum Seen<'a, P, R> {
    Running {
        progress: &'a P,
        flag: bool,
        started: &'a Time,
    },
    /// Finished (and collected: gone from the set).
    Finished { outcome: Outcome<R>, flag: bool },
}

/// Background tasks keyed by `K`, each with its progress `P`; one per key at a time. The one
/// task registry of the operator: oci copies ([`Tasks`]) and ReplicaInstance syncs
/// (`SyncTasks` of the ReplicaInstance oci backend) are built on it.
pub struct TaskSet<K, P, R> {
    map: Mutex<HashMap<K, Entry<P, R>>>,
    on_done: OnDone,
}

impl<K: Eq + Hash + Clone, P: Send + Sync + 'static, R: Send + 'static> TaskSet<K, P, R> {
    pub fn new(on_done: OnDone) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            on_done,
        }
    }

    /// Start `work` unless a task runs under `key`; when it ends, `on_done` is called with
    /// `object`. Returns whether it started.
    pub fn start<F>(&self, key: K, object: &str, flag: bool, progress: Arc<P>, work: F) -> bool
    where
        F: Future<Output = Outcome<R>> + Send + 'static,
    {
        let mut map = self.map.lock().expect("tasks lock");
        if map.contains_key(&key) {
            return false;
        }
        let result = Arc::new(Mutex::new(None));
        let (r2, on_done, object) = (result.clone(), self.on_done.clone(), object.to_string());
        let handle = tokio::spawn(async move {
            let outcome = work.await;
            *r2.lock().expect("result lock") = Some(outcome);
            on_done(&object);
        })
        .abort_handle();
        map.insert(
            key,
            Entry {
                progress,
                started: Time(k8s_openapi::jiff::Timestamp::now()),
                flag,
                result,
                handle,
            },
        );
        true
    }

    /// What the tasks whose key `matches` are doing; the finished ones are collected (removed)
    /// here, so the caller must record their results.
    pub fn collect<V>(
        &self,
        matches: impl Fn(&K) -> bool,
        mut see: impl FnMut(&K, Seen<'_, P, R>) -> V,
    ) -> Vec<(K, V)> {
        let mut map = self.map.lock().expect("tasks lock");
        let mut out = Vec::new();
        let mut finished = Vec::new();
        for (k, e) in map.iter().filter(|(k, _)| matches(k)) {
            let seen = Self::seen(e);
            if matches!(seen, Seen::Finished { .. }) {
                finished.push(k.clone());
            }
            out.push((k.clone(), see(k, seen)));
        }
        for k in finished {
            map.remove(&k);
        }
        out
    }

    /// What the task under `key` is doing, if there is one (collected if finished): one lookup,
    /// for owners with one task per object.
    pub fn collect_one<V>(&self, key: &K, see: impl FnOnce(Seen<'_, P, R>) -> V) -> Option<V> {
        let mut map = self.map.lock().expect("tasks lock");
        let e = map.get(key)?;
        let seen = Self::seen(e);
        let finished = matches!(seen, Seen::Finished { .. });
        let v = see(seen);
        if finished {
            map.remove(key);
        }
        Some(v)
    }

    /// A task as its owner sees it; a finished one's result is taken.
    fn seen(e: &Entry<P, R>) -> Seen<'_, P, R> {
        match e.result.lock().expect("result lock").take() {
            None => Seen::Running {
                progress: e.progress.as_ref(),
                flag: e.flag,
                started: &e.started,
            },
            Some(outcome) => Seen::Finished { outcome, flag: e.flag },
        }
    }

    /// The progress of the task under `key` (running, or finished and not yet collected).
    pub fn progress(&self, key: &K) -> Option<Arc<P>> {
        self.map
            .lock()
            .expect("tasks lock")
            .get(key)
            .map(|e| e.progress.clone())
    }

    /// Cancel the task under `key`, after `before` saw its progress (to tell what it feeds
    /// to stop); false when there was none.
    pub fn cancel_one(&self, key: &K, before: impl FnOnce(&P)) -> bool {
        let Some(e) = self.map.lock().expect("tasks lock").remove(key) else {
            return false;
        };
        before(&e.progress);
        e.handle.abort();
        true
    }

    /// Cancel the tasks whose key `matches`; returns how many were cancelled.
    pub fn cancel(&self, matches: impl Fn(&K) -> bool) -> usize {
        let mut map = self.map.lock().expect("tasks lock");
        let keys: Vec<K> = map.keys().filter(|k| matches(k)).cloned().collect();
        for k in &keys {
            if let Some(e) = map.remove(k) {
                e.handle.abort();
            }
        }
        keys.len()
    }

    /// Tasks running in all.
    pub fn len(&self) -> usize {
        self.map.lock().expect("tasks lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The running copy tasks of every object.
pub struct Tasks {
    /// Keyed by (object, destination region); the flag marks a drift check.
    set: TaskSet<(String, String), Progress, CopyReport>,
    /// When each destination's copy was last found good (a copy or a drift check finished).
    checked: Mutex<HashMap<(String, String), Time>>,
}

impl Tasks {
    pub fn new(on_done: OnDone) -> Self {
        Self {
            set: TaskSet::new(on_done),
            checked: Mutex::new(HashMap::new()),
        }
    }

    /// When each of `regions` was last checked. A region never checked by this process is
    /// anchored at a fixed point of the last `period` (see [`crate::schedule::spread_anchor`]), so
    /// that after a start the drift checks of many objects spread over the period.
    pub fn checked(
        &self,
        key: &str,
        regions: &[String],
        now: &Time,
        period: std::time::Duration,
    ) -> HashMap<String, Time> {
        let mut c = self.checked.lock().expect("checked lock");
        regions
            .iter()
            .map(|r| {
                let t = c
                    .entry((key.to_string(), r.clone()))
                    .or_insert_with(|| crate::schedule::spread_anchor(&format!("{key}/{r}"), now, period));
                (r.clone(), t.clone())
            })
            .collect()
    }

    /// What each destination's task is doing; finished tasks are collected (removed) here, so
    /// the caller must record their results. A task that succeeded marks its destination checked
    /// at `now`.
    pub fn collect(&self, key: &str, now: &Time) -> HashMap<String, TaskView> {
        let views = self.set.collect(
            |(k, _)| k == key,
            |_, seen| match seen {
                Seen::Running {
                    progress,
                    flag,
                    started,
                } => {
                    let (done, total) = progress.snapshot();
                    TaskView::Running {
                        done,
                        total,
                        resync: flag,
                        started: started.clone(),
                    }
                }
                Seen::Finished { outcome: Ok(r), flag } => TaskView::Succeeded {
                    digest: r.digest,
                    bytes_total: r.bytes_total,
                    up_to_date: r.up_to_date,
                    resync: flag,
                },
                Seen::Finished {
                    outcome: Err((reason, message)),
                    flag,
                } => TaskView::Failed {
                    reason,
                    message,
                    resync: flag,
                },
            },
        );
        let mut checked = self.checked.lock().expect("checked lock");
        let mut out = HashMap::new();
        for ((_, region), view) in views {
            if matches!(view, TaskView::Succeeded { .. }) {
                checked.insert((key.to_string(), region.clone()), now.clone());
            }
            out.insert(region, view);
        }
        out
    }

    /// Start a task unless one runs for this destination.
    pub fn start<F>(&self, key: &str, region: &str, resync: bool, progress: Arc<Progress>, work: F)
    where
        F: Future<Output = Result<CopyReport, OciError>> + Send + 'static,
    {
        let work = async move { work.await.map_err(failed) };
        self.set
            .start((key.to_string(), region.to_string()), key, resync, progress, work);
    }

    /// Forget an object that is gone (its check times).
    pub fn forget(&self, key: &str) {
        self.checked.lock().expect("checked lock").retain(|(k, _), _| k != key);
    }

    /// Cancel every task of an object; returns how many were cancelled.
    pub fn cancel_all(&self, key: &str) -> usize {
        self.set.cancel(|(k, _)| k == key)
    }

    /// Cancel the task of one destination of an object (a destination removed from the spec),
    /// and forget when it was last checked.
    pub fn cancel_one(&self, key: &str, region: &str) -> usize {
        self.checked
            .lock()
            .expect("checked lock")
            .remove(&(key.to_string(), region.to_string()));
        self.set.cancel(|(k, r)| k == key && r == region)
    }

    /// Call the wake-up of `key` (what a finished task does), to reconcile the object again.
    pub fn wake(&self, key: &str) {
        (self.set.on_done)(key);
    }

    /// Tasks running in all.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}
