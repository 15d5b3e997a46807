//! Copy slots shared by every process of an installation (label shards): a cloud's quota of
//! copies in flight per account (Huawei IMS: five) holds across processes, not per process.
//! Each slot is one `coordination.k8s.io` Lease (the controller's `KubeSlots`); its holder is
//! the copy (`<namespace>/<name>/<region>`), not the process, so the process that takes an
//! object over keeps its copies' slots, and a slot nobody renews for the lease duration (its
//! process died) is taken over. The local per-account queue ([`super::quota`]) orders the
//! copies of one process; across processes a shared queue (a list of [`Waiter`]s on one more
//! Lease of the account) keeps the order oldest first: a free slot goes to the oldest copy that
//! waits for one in any process.
//!
//! This module is the pure part: which slot each copy holds, takes or lets go, from what the
//! Leases say and the time.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::future::BoxFuture;

/// How long a slot stays held without renewal: longer than the slowest poll of a copy in flight
/// (the engine renews at each reconcile of a copying object), so only a dead process loses one.
pub const SLOT_DURATION: Duration = Duration::from_secs(300);

/// A slot is renewed when its last renewal is older than this.
pub const RENEW_AFTER: Duration = Duration::from_secs(60);

/// A copy that wanted a slot and found none waits this long before it asks again (a slot freed
/// in another process wakes nobody here).
pub const SLOT_RETRY: Duration = Duration::from_secs(10);

/// A waiter not seen again for this long (its process let it go, or died) leaves the queue.
pub const WAITER_STALE: Duration = Duration::from_secs(35);

/// A copy waiting for a slot, in the account's shared queue: its place (the local queue's
/// order: the object's creation time, key and destination index) and when its process last
/// asked for it (Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Waiter {
    pub copy: String,
    pub created: i64,
    pub index: usize,
    pub seen: i64,
}

impl Waiter {
    /// The local queue's order: the object's creation time, its key, then destination order
    /// (not the copy id: an object's destinations start in the spec's order).
    fn order(&self) -> (i64, &str, usize) {
        let key = self.copy.rsplit_once('/').map_or(self.copy.as_str(), |(k, _)| k);
        (self.created, key, self.index)
    }
}

/// The copy slots of all processes: read by observe, taken by the claim (each write
/// conditional on what was read, so two processes never both take one slot).
pub trait Slots: Send + Sync {
    /// The `limit` slots of `account` and its shared queue; an error when they could not be
    /// read (copies that want a slot wait and ask again).
    fn read<'a>(&'a self, account: &'a str, limit: i32) -> BoxFuture<'a, Result<SlotView, String>>;
    /// Make the writes of `plan` on the slots as `view` read them. Returns the copies (ids)
    /// whose slot another process took first (they wait and ask again).
    fn take<'a>(&'a self, account: &'a str, view: &'a SlotView, plan: &'a SlotPlan) -> BoxFuture<'a, HashSet<String>>;
}

/// What one slot Lease says: its holder (a copy id), when it was taken and last renewed (Unix
/// seconds), and the version read (a write is conditional on it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub holder: Option<String>,
    pub renewed: i64,
    pub acquired: i64,
    pub version: String,
}

/// An account's slots as read: `None` for a slot whose Lease does not exist yet; the shared
/// queue and its Lease's version (`None`: not created yet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotView {
    pub slots: Vec<Option<Seen>>,
    pub queue: Vec<Waiter>,
    pub queue_version: Option<String>,
}

/// What to do with the slots, by slot index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotPlan {
    /// Slot -> the copy that now holds it (take a free or expired slot, or renew an old hold).
    pub hold: BTreeMap<usize, String>,
    /// Slots to let go (their copy is no longer in flight).
    pub release: Vec<usize>,
    /// The wanting copies that got a slot.
    pub granted: HashSet<String>,
    /// The shared queue after this plan, when it changed.
    pub queue: Option<Vec<Waiter>>,
}

/// The copy id of an object's destination: the holder a slot Lease names.
pub fn copy_id(key: &str, region: &str) -> String {
    format!("{key}/{region}")
}

/// Plan the slots of one object from the `limit` slots as seen (`None`: no Lease yet) and the
/// account's shared queue, at `now`.
pub fn plan(
    seen: &[Option<Seen>],
    queue: &[Waiter],
    key: &str,
    running: &[String],
    wanting: &[(super::quota::Order, String)],
    now: i64,
) -> SlotPlan {
    let mut out = SlotPlan::default();
    let mine = format!("{key}/");
    let running: HashSet<String> = running.iter().map(|r| copy_id(key, r)).collect();
    let expired = |s: &Seen| now - s.renewed >= SLOT_DURATION.as_secs() as i64;
    let mut free: Vec<usize> = Vec::new();
    let mut held: HashSet<String> = HashSet::new();
    for (i, s) in seen.iter().enumerate() {
        match s {
            None => free.push(i),
            Some(Seen { holder: None, .. }) => free.push(i),
            Some(s @ Seen { holder: Some(h), .. }) if h.starts_with(&mine) => {
                // Its copy in flight, or a wanting copy whose start was not recorded (a claim
                // that lost another slot, a restart): it keeps the slot.
                let wants = wanting.iter().find(|(_, r)| copy_id(key, r) == *h);
                if running.contains(h) || wants.is_some() {
                    held.insert(h.clone());
                    if let Some((_, r)) = wants {
                        out.granted.insert(r.clone());
                    }
                    if now - s.renewed >= RENEW_AFTER.as_secs() as i64 {
                        out.hold.insert(i, h.clone());
                    }
                } else {
                    out.release.push(i);
                }
            }
            Some(s) if expired(s) => free.push(i),
            Some(_) => {}
        }
    }
    let mut free = free.into_iter();
    // A copy in flight without a slot (its object was taken over, or it started before slots):
    // it takes one if there is one; it runs either way.
    let mut orphans: Vec<&String> = running.iter().filter(|c| !held.contains(*c)).collect();
    orphans.sort();
    for c in orphans {
        match free.next() {
            Some(i) => {
                out.hold.insert(i, c.clone());
            }
            None => break,
        }
    }
    // The queue: others' live waiters and this object's wanting copies, oldest first; the free
    // slots go to its head (another process's waiter there takes its slot at its next ask).
    let mut waiters: Vec<Waiter> = queue
        .iter()
        .filter(|w| !w.copy.starts_with(&mine) && now - w.seen < WAITER_STALE.as_secs() as i64)
        .cloned()
        .collect();
    let ours: Vec<(Waiter, &String)> = wanting
        .iter()
        .filter(|(_, r)| !out.granted.contains(r))
        .map(|(o, r)| {
            let w = Waiter {
                copy: copy_id(key, r),
                created: o.created,
                index: o.index,
                seen: now,
            };
            (w, r)
        })
        .collect();
    let mut all: Vec<&Waiter> = waiters.iter().chain(ours.iter().map(|(w, _)| w)).collect();
    all.sort_by(|a, b| a.order().cmp(&b.order()));
    let head: HashSet<String> = all.iter().take(free.len()).map(|w| w.copy.clone()).collect();
    for (w, region) in &ours {
        if head.contains(&w.copy) {
            let i = free.next().expect("a free slot for each head waiter");
            out.hold.insert(i, w.copy.clone());
            out.granted.insert((*region).clone());
        } else {
            waiters.push(w.clone());
        }
    }
    waiters.sort_by(|a, b| a.order().cmp(&b.order()));
    let mut before: Vec<Waiter> = queue.to_vec();
    before.sort_by(|a, b| a.order().cmp(&b.order()));
    // Rewritten when someone joined or left it, or this object's waiters are due a refresh.
    let stale_mine = queue
        .iter()
        .any(|w| w.copy.starts_with(&mine) && now - w.seen >= SLOT_RETRY.as_secs() as i64);
    let copies = |v: &[Waiter]| v.iter().map(|w| w.copy.clone()).collect::<Vec<_>>();
    if copies(&waiters) != copies(&before) || stale_mine {
        out.queue = Some(waiters);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(by: &str, renewed: i64) -> Option<Seen> {
        Some(Seen {
            holder: Some(by.into()),
            renewed,
            ..Default::default()
        })
    }

    fn regions(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn want(created: i64, key: &str, v: &[&str]) -> Vec<(super::super::quota::Order, String)> {
        v.iter()
            .enumerate()
            .map(|(index, r)| {
                let o = super::super::quota::Order {
                    created,
                    key: key.into(),
                    index,
                };
                (o, r.to_string())
            })
            .collect()
    }

    /// An older copy waiting in another process is served first: a younger copy here waits
    /// behind it and joins the queue; once the older one holds a slot, the next free one is
    /// this object's. A waiter whose process stopped asking leaves the queue.
    #[test]
    fn the_oldest_waiter_of_any_process_is_served_first() {
        let now = 5_000;
        let older = Waiter {
            copy: "ns/old/r".into(),
            created: 1,
            index: 0,
            seen: now - 5,
        };
        let seen = vec![held("ns/b/r1", now), None];
        let p = plan(
            &seen,
            std::slice::from_ref(&older),
            "ns/young",
            &[],
            &want(9, "ns/young", &["x"]),
            now,
        );
        assert!(p.granted.is_empty(), "the one free slot is the older copy's");
        let q = p.queue.expect("joined the queue");
        assert_eq!(
            q.iter().map(|w| w.copy.as_str()).collect::<Vec<_>>(),
            ["ns/old/r", "ns/young/x"]
        );
        // Two free slots: both get one, the younger takes the second.
        let p = plan(
            &[None, None],
            &q,
            "ns/young",
            &[],
            &want(9, "ns/young", &["x"]),
            now + 1,
        );
        assert_eq!(p.granted, HashSet::from(["x".to_string()]));
        assert_eq!(p.hold.len(), 1, "the other free slot stays for the older waiter");
        let left: Vec<String> = p.queue.unwrap().into_iter().map(|w| w.copy).collect();
        assert_eq!(left, ["ns/old/r"], "granted: out of the queue");
        // The older waiter's process stopped asking: it leaves the queue, the slot is ours.
        let stale = Waiter {
            seen: now - WAITER_STALE.as_secs() as i64,
            ..older
        };
        let p = plan(&seen, &[stale], "ns/young", &[], &want(9, "ns/young", &["x"]), now);
        assert_eq!(p.granted, HashSet::from(["x".to_string()]));
        assert_eq!(p.queue, Some(Vec::new()));
        // Nothing changed and nothing due: no write.
        let mine = Waiter {
            copy: "ns/young/x".into(),
            created: 9,
            index: 0,
            seen: now - 1,
        };
        let p = plan(&seen[..1], &[mine], "ns/young", &[], &want(9, "ns/young", &["x"]), now);
        assert_eq!(p.queue, None);
    }

    #[test]
    fn five_slots_across_processes_are_never_more_than_five_copies() {
        // Three slots held by another object's copies (another shard), two free.
        let seen = vec![
            held("ns/b/r1", 1000),
            None,
            held("ns/b/r2", 1000),
            held("ns/b/r3", 1000),
            Some(Seen::default()),
        ];
        let p = plan(&seen, &[], "ns/a", &[], &want(1, "ns/a", &["x", "y", "z"]), 1010);
        assert_eq!(p.granted, HashSet::from(["x".to_string(), "y".to_string()]), "z waits");
        assert_eq!(p.hold.keys().copied().collect::<Vec<_>>(), vec![1, 4]);
        assert!(p.release.is_empty());
    }

    #[test]
    fn held_slots_are_renewed_released_and_taken_over_after_expiry() {
        let now = 10_000;
        let seen = vec![
            held("ns/a/x", now - 10),                             // a's copy in flight, fresh
            held("ns/a/y", now - 120),                            // a's copy in flight, renew
            held("ns/a/done", now - 10),                          // a's copy finished: let go
            held("ns/b/r", now - SLOT_DURATION.as_secs() as i64), // b's process died: expired
        ];
        let p = plan(&seen, &[], "ns/a", &regions(&["x", "y"]), &want(1, "ns/a", &["w"]), now);
        assert_eq!(p.release, vec![2]);
        assert_eq!(p.hold.get(&1).map(String::as_str), Some("ns/a/y"));
        assert!(!p.hold.contains_key(&0), "fresh: no write");
        assert_eq!(
            p.hold.get(&3).map(String::as_str),
            Some("ns/a/w"),
            "the expired slot is taken over"
        );
        assert_eq!(p.granted, HashSet::from(["w".to_string()]));
    }

    /// A wanting copy that already holds its slot (its claim lost another slot, or its start
    /// was never recorded) keeps it: granted, no write while fresh, not queued.
    #[test]
    fn a_wanting_copy_keeps_the_slot_it_holds() {
        let seen = vec![held("ns/a/x", 100), held("ns/b/r", 100)];
        let p = plan(&seen, &[], "ns/a", &[], &want(1, "ns/a", &["x", "y"]), 110);
        assert_eq!(p.granted, HashSet::from(["x".to_string()]), "y finds no free slot");
        assert!(p.hold.is_empty() && p.release.is_empty());
        let queued: Vec<String> = p.queue.unwrap().into_iter().map(|w| w.copy).collect();
        assert_eq!(queued, ["ns/a/y"]);
    }

    #[test]
    fn a_copy_taken_over_in_flight_takes_a_free_slot_first() {
        let seen = vec![None, held("ns/b/r", 100)];
        let p = plan(&seen, &[], "ns/a", &regions(&["x"]), &want(1, "ns/a", &["y"]), 110);
        assert_eq!(p.hold.get(&0).map(String::as_str), Some("ns/a/x"));
        assert!(p.granted.is_empty(), "no slot left for y");
    }
}
