//! Events as kube's `Recorder` writes them (events.k8s.io/v1: a repeat of an event within six
//! minutes patches the first one's `series` instead of creating another), keeping per event
//! only what a repeat needs. A repeat is the same happening: same type, action, reason, object,
//! reporter *and note* — kube's `Recorder` leaves the note out, so a source that moved v1 -> v2
//! -> v3 -> v4 showed one `SourceChanged` "now v2, replacing v1" counted three times; here each
//! move is its own Event, and the same words again only count.
//!
//! kube's `Recorder` keeps every Event it wrote in the last six minutes whole, in a table of
//! about 4 KB an entry: with 5,000 objects that table was 70 MB of the operator's 119 MiB peak
//! (heaptrack, `make bench` (e)). A repeat needs the event's name, its count and when it was
//! last seen: about 200 bytes.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::{Api, Client};

/// How long a repeat patches the first event's series (kube's `Recorder` uses six minutes).
const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);
/// How often entries older than the TTL are dropped.
const PRUNE_EVERY: SignedDuration = SignedDuration::from_mins(1);

/// What a repeat of one event needs.
struct Recent {
    namespace: String,
    name: String,
    count: i32,
    last: Timestamp,
}

struct Seen {
    by_key: HashMap<String, Recent>,
    pruned: Timestamp,
}

/// Publishes Events for every object of the operator.
pub struct Events {
    client: Client,
    reporter: Reporter,
    seen: Mutex<Seen>,
}

impl Events {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            seen: Mutex::new(Seen {
                by_key: HashMap::new(),
                pruned: Timestamp::now(),
            }),
        }
    }

    /// The events it remembers for repeats (for tests and the scale run).
    pub fn remembered(&self) -> usize {
        self.seen.lock().expect("events lock").by_key.len()
    }

    /// What makes two events one series: kube's `EventKey`, and the note (as a hash: an entry
    /// stays about 200 bytes whatever the note's length).
    fn key(&self, ev: &Event, regarding: &ObjectReference) -> String {
        use std::hash::{Hash, Hasher};
        let r = regarding;
        let part = |s: &Option<String>| s.clone().unwrap_or_default();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ev.note.hash(&mut h);
        format!(
            "{:?}\n{}\n{}\n{}\n{}/{}/{}/{}\n{}\n{:x}",
            ev.type_,
            ev.action,
            ev.reason,
            part(&self.reporter.instance),
            part(&r.api_version),
            part(&r.kind),
            part(&r.namespace),
            part(&r.name),
            part(&r.uid),
            h.finish(),
        )
    }

    /// Publish one event: create it, or, if the same event was published within six minutes,
    /// count it in that one's `series`. An event patched away meanwhile is created again.
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = self.key(ev, regarding);
        let repeat = {
            let mut seen = self.seen.lock().expect("events lock");
            if now.duration_since(seen.pruned) >= PRUNE_EVERY {
                seen.by_key.retain(|_, r| r.last + SERIES_TTL > now);
                seen.pruned = now;
            }
            seen.by_key
                .get(&key)
                .filter(|r| r.last + SERIES_TTL > now)
                .map(|r| (r.namespace.clone(), r.name.clone(), r.count + 1))
        };
        if let Some((namespace, name, count)) = repeat {
            let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
            let patch = serde_json::json!({
                "series": {"count": count, "lastObservedTime": MicroTime(now)}
            });
            match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    self.remember(key, namespace, name, count, now);
                    return Ok(());
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let event = self.event(ev, regarding, now);
        let namespace = event.metadata.namespace.clone().unwrap_or_default();
        let name = event.metadata.name.clone().unwrap_or_default();
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        api.create(&PostParams::default(), &event).await?;
        self.remember(key, namespace, name, 1, now);
        Ok(())
    }

    fn remember(&self, key: String, namespace: String, name: String, count: i32, last: Timestamp) {
        let recent = Recent {
            namespace,
            name,
            count,
            last,
        };
        self.seen.lock().expect("events lock").by_key.insert(key, recent);
    }

    /// The Event as kube's `Recorder` builds it (cluster-scoped objects' events go to
    /// `default`).
    fn event(&self, ev: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".into());
        let base = regarding.name.as_ref().unwrap_or(&self.reporter.controller);
        K8sEvent {
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            note: ev.note.clone(),
            metadata: ObjectMeta {
                namespace: Some(namespace),
                name: Some(format!("{base}.{:x}", now.as_nanosecond())),
                ..Default::default()
            },
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(match ev.type_ {
                EventType::Normal => "Normal".into(),
                EventType::Warning => "Warning".into(),
            }),
            related: ev.secondary.clone(),
            ..Default::default()
        }
    }
}
