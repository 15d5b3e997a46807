//! Registry notifications (the CNCF distribution `notifications` format) turned into immediate
//! ReplicaInstance syncs. The endpoint is authenticated with a shared bearer token; payloads are
//! bounded by the HTTP layer and bad ones are rejected with 4xx and counted.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;

/// Largest accepted notification body.
pub const MAX_BODY: usize = 1 << 20;

#[derive(Deserialize)]
struct Envelope {
    events: Vec<RegistryEvent>,
}

#[derive(Deserialize)]
struct RegistryEvent {
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: Target,
    #[serde(default)]
    request: Request,
}

#[derive(Deserialize, Default)]
struct Target {
    #[serde(default)]
    repository: String,
    #[serde(default)]
    url: String,
}

#[derive(Deserialize, Default)]
struct Request {
    #[serde(default)]
    host: String,
}

/// Why a notification was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    NotConfigured,
    /// This instance does not reconcile (standby, or shutting down): the registry should retry.
    Standby,
    Unauthorized,
    BadPayload(String),
}

/// Notification state shared by the HTTP endpoint and the ReplicaInstance controller.
pub struct Notifications {
    token: Option<String>,
    /// primary registry host -> ReplicaInstance keys (namespace/name) that follow it.
    subscribers: Mutex<HashMap<String, BTreeSet<String>>>,
    /// key -> repositories to sync and when the oldest notification arrived.
    pending: Mutex<HashMap<String, (BTreeSet<String>, Time)>>,
    trigger: Mutex<Option<tokio::sync::mpsc::UnboundedSender<String>>>,
    active: std::sync::atomic::AtomicBool,
}

fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    Some(rest.split('/').next()?.to_string())
}

impl Notifications {
    /// `token`: the shared bearer token; None disables the endpoint (503).
    pub fn new(token: Option<String>) -> Self {
        Self {
            token: token.filter(|t| !t.is_empty()),
            subscribers: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            trigger: Mutex::new(None),
            active: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether this instance's controllers run (the leader). A standby answers 503 so that the
    /// registry retries and reaches the leader instead of losing the event.
    pub fn set_active(&self, active: bool) {
        self.active.store(active, std::sync::atomic::Ordering::SeqCst);
    }

    /// Keys of affected objects are sent here (the controller reconciles them at once).
    pub fn set_trigger(&self, tx: tokio::sync::mpsc::UnboundedSender<String>) {
        *self.trigger.lock().expect("trigger lock") = Some(tx);
    }

    /// A ReplicaInstance follows a primary host (called on every reconcile).
    pub fn subscribe(&self, host: &str, key: &str) {
        let mut subs = self.subscribers.lock().expect("subscribers lock");
        for keys in subs.values_mut() {
            keys.remove(key);
        }
        subs.entry(host.to_string()).or_default().insert(key.to_string());
    }

    /// Forget an object (deleted).
    pub fn unsubscribe(&self, key: &str) {
        for keys in self.subscribers.lock().expect("subscribers lock").values_mut() {
            keys.remove(key);
        }
        self.pending.lock().expect("pending lock").remove(key);
    }

    /// Repositories waiting for an object, and the time of the oldest notification.
    pub fn pending(&self, key: &str) -> Option<(BTreeSet<String>, Time)> {
        self.pending.lock().expect("pending lock").get(key).cloned()
    }

    /// Take the pending repositories of an object (a sync for them is starting).
    pub fn take(&self, key: &str) -> Option<(BTreeSet<String>, Time)> {
        self.pending.lock().expect("pending lock").remove(key)
    }

    /// Handle one POST: check the token, parse, queue. Returns how many events were queued.
    pub fn handle(&self, authorization: Option<&str>, body: &[u8]) -> Result<usize, Rejected> {
        let Some(token) = &self.token else {
            return Err(Rejected::NotConfigured);
        };
        let expected = format!("Bearer {token}");
        if !constant_time_eq(authorization.unwrap_or("").as_bytes(), expected.as_bytes()) {
            return Err(Rejected::Unauthorized);
        }
        if !self.active.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Rejected::Standby);
        }
        let env: Envelope = serde_json::from_slice(body)
            .map_err(|e| Rejected::BadPayload(format!("not a notification envelope: {e}")))?;
        let now = Time(Timestamp::now());
        let mut queued = 0;
        let mut touched = BTreeSet::new();
        for ev in env.events {
            if !(ev.action == "push" || ev.action == "delete") || ev.target.repository.is_empty() {
                continue;
            }
            let host = host_of(&ev.target.url).unwrap_or(ev.request.host);
            let keys: Vec<String> = self
                .subscribers
                .lock()
                .expect("subscribers lock")
                .get(&host)
                .map(|k| k.iter().cloned().collect())
                .unwrap_or_default();
            for key in &keys {
                let mut pending = self.pending.lock().expect("pending lock");
                let e = pending
                    .entry(key.clone())
                    .or_insert_with(|| (BTreeSet::new(), now.clone()));
                e.0.insert(ev.target.repository.clone());
                touched.insert(key.clone());
                queued += 1;
            }
        }
        if let Some(tx) = self.trigger.lock().expect("trigger lock").as_ref() {
            for k in touched {
                let _ = tx.send(k);
            }
        }
        Ok(queued)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUSH: &str = r#"{"events":[{"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"team/web","tag":"1.4","url":"http://127.0.0.1:5000/v2/team/web/manifests/sha256:abc"},"request":{"host":"127.0.0.1:5000"}},{"action":"pull","target":{"repository":"team/api"}}]}"#;

    #[test]
    fn queues_pushes_for_subscribers_of_the_host() {
        let n = Notifications::new(Some("t0k".into()));
        assert_eq!(
            n.handle(Some("Bearer t0k"), PUSH.as_bytes()),
            Err(Rejected::Standby),
            "a standby asks for a retry"
        );
        n.set_active(true);
        n.subscribe("127.0.0.1:5000", "default/r1");
        n.subscribe("127.0.0.1:6000", "default/r2");
        assert_eq!(n.handle(Some("Bearer t0k"), PUSH.as_bytes()), Ok(1));
        assert_eq!(
            n.pending("default/r1").unwrap().0.into_iter().collect::<Vec<_>>(),
            vec!["team/web"]
        );
        assert!(n.pending("default/r2").is_none());
        assert!(n.take("default/r1").is_some());
        assert!(n.pending("default/r1").is_none());
    }

    #[test]
    fn rejects_bad_tokens_and_payloads() {
        let n = Notifications::new(Some("t0k".into()));
        n.set_active(true);
        assert_eq!(n.handle(None, PUSH.as_bytes()), Err(Rejected::Unauthorized));
        assert_eq!(
            n.handle(Some("Bearer nope"), PUSH.as_bytes()),
            Err(Rejected::Unauthorized)
        );
        assert!(matches!(
            n.handle(Some("Bearer t0k"), b"{not json"),
            Err(Rejected::BadPayload(_))
        ));
        assert_eq!(
            Notifications::new(None).handle(Some("Bearer t0k"), PUSH.as_bytes()),
            Err(Rejected::NotConfigured)
        );
    }
}
