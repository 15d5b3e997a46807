//! Copy tasks running in the background, keyed by object and destination region. Reconciles
//! never await a copy: they read each task's view, collect finished results, and start or cancel
//! tasks as the plan says.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::oci::{CopyReport, OciError, Progress};
use crate::plan::TaskView;

type Outcome = Result<CopyReport, (String, String)>;

struct Entry {
    progress: Arc<Progress>,
    resync: bool,
    result: Arc<Mutex<Option<Outcome>>>,
    handle: tokio::task::AbortHandle,
}

/// Called with the object key when one of its tasks finishes.
pub type OnDone = Arc<dyn Fn(&str) + Send + Sync>;

/// The running copy tasks of every object.
pub struct Tasks {
    map: Mutex<HashMap<(String, String), Entry>>,
    /// When each destination's copy was last found good (a copy or a drift check finished).
    checked: Mutex<HashMap<(String, String), Time>>,
    on_done: OnDone,
}

impl Tasks {
    pub fn new(on_done: OnDone) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            checked: Mutex::new(HashMap::new()),
            on_done,
        }
    }

    /// When each of `regions` was last checked. A region never checked by this process is
    /// anchored at a fixed point of the last `period` (see [`crate::plan::spread_anchor`]), so
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
                    .or_insert_with(|| crate::plan::spread_anchor(&format!("{key}/{r}"), now, period));
                (r.clone(), t.clone())
            })
            .collect()
    }

    /// What each destination's task is doing; finished tasks are collected (removed) here, so
    /// the caller must record their results. A task that succeeded marks its destination checked
    /// at `now`.
    pub fn collect(&self, key: &str, now: &Time) -> HashMap<String, TaskView> {
        let mut map = self.map.lock().expect("tasks lock");
        let mut out = HashMap::new();
        let mut finished = Vec::new();
        for ((k, region), e) in map.iter() {
            if k != key {
                continue;
            }
            let view = match e.result.lock().expect("result lock").take() {
                None => {
                    let (done, total) = e.progress.snapshot();
                    TaskView::Running {
                        done,
                        total,
                        resync: e.resync,
                    }
                }
                Some(Ok(r)) => {
                    finished.push(region.clone());
                    TaskView::Succeeded {
                        digest: r.digest,
                        bytes_total: r.bytes_total,
                        up_to_date: r.up_to_date,
                        resync: e.resync,
                    }
                }
                Some(Err((reason, message))) => {
                    finished.push(region.clone());
                    TaskView::Failed {
                        reason,
                        message,
                        resync: e.resync,
                    }
                }
            };
            out.insert(region.clone(), view);
        }
        let mut checked = self.checked.lock().expect("checked lock");
        for region in finished {
            if matches!(out.get(&region), Some(TaskView::Succeeded { .. })) {
                checked.insert((key.to_string(), region.clone()), now.clone());
            }
            map.remove(&(key.to_string(), region));
        }
        out
    }

    /// Start a task unless one runs for this destination.
    pub fn start<F>(&self, key: &str, region: &str, resync: bool, progress: Arc<Progress>, work: F)
    where
        F: Future<Output = Result<CopyReport, OciError>> + Send + 'static,
    {
        let mut map = self.map.lock().expect("tasks lock");
        let k = (key.to_string(), region.to_string());
        if map.contains_key(&k) {
            return;
        }
        let result = Arc::new(Mutex::new(None));
        let (r2, on_done, key2) = (result.clone(), self.on_done.clone(), key.to_string());
        let handle = tokio::spawn(async move {
            let outcome = work.await.map_err(|e| (e.reason().to_string(), e.to_string()));
            *r2.lock().expect("result lock") = Some(outcome);
            on_done(&key2);
        })
        .abort_handle();
        map.insert(
            k,
            Entry {
                progress,
                resync,
                result,
                handle,
            },
        );
    }

    /// Forget an object that is gone (its check times).
    pub fn forget(&self, key: &str) {
        self.checked.lock().expect("checked lock").retain(|(k, _), _| k != key);
    }

    /// Cancel every task of an object; returns how many were cancelled.
    pub fn cancel_all(&self, key: &str) -> usize {
        let mut map = self.map.lock().expect("tasks lock");
        let keys: Vec<_> = map.keys().filter(|(k, _)| k == key).cloned().collect();
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
