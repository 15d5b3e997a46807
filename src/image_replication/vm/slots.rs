//! Copy slots shared by every process of an installation (label shards): a cloud's quota of
//! copies in flight per account (Huawei IMS: five) holds across processes, not per process.
//! Each slot is one `coordination.k8s.io` Lease (the controller's `KubeSlots`); its holder is
//! the copy (`<namespace>/<name>/<region>`), not the process, so the process that takes an
//! object over keeps its copies' slots, and a slot nobody renews for the lease duration (its
//! process died) is taken over. The local per-account queue ([`super::quota`]) still orders
//! the copies of one process; across processes it is first come, first served.
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

/// The copy slots of all processes.
pub trait Slots: Send + Sync {
    /// For object `key` in `account` (at most `limit` slots): keep (and renew) the slots of its
    /// copies in flight (`running`, regions), take free or expired slots for `wanting` (in
    /// order), and let go of the slots of its copies no longer in flight. Returns the regions
    /// of `wanting` that got one; on an API error, none (they wait and ask again).
    fn sync<'a>(
        &'a self,
        account: &'a str,
        limit: i32,
        key: &'a str,
        running: &'a [String],
        wanting: &'a [String],
    ) -> BoxFuture<'a, HashSet<String>>;
}

/// What one slot Lease says: its holder (a copy id) and when it was last renewed (Unix
/// seconds); `None` for a slot whose Lease does not exist yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub holder: Option<String>,
    pub renewed: i64,
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
}

/// The copy id of an object's destination: the holder a slot Lease names.
pub fn copy_id(key: &str, region: &str) -> String {
    format!("{key}/{region}")
}

/// Plan the slots of one object from the `limit` slots as seen (`None`: no Lease yet) at `now`.
pub fn plan(seen: &[Option<Seen>], key: &str, running: &[String], wanting: &[String], now: i64) -> SlotPlan {
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
                if running.contains(h) {
                    held.insert(h.clone());
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
    for r in wanting {
        match free.next() {
            Some(i) => {
                out.hold.insert(i, copy_id(key, r));
                out.granted.insert(r.clone());
            }
            None => break,
        }
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
        })
    }

    fn regions(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn five_slots_across_processes_are_never_more_than_five_copies() {
        // Three slots held by another object's copies (another shard), two free.
        let seen = vec![
            held("ns/b/r1", 1000),
            None,
            held("ns/b/r2", 1000),
            held("ns/b/r3", 1000),
            Some(Seen {
                holder: None,
                renewed: 0,
            }),
        ];
        let p = plan(&seen, "ns/a", &[], &regions(&["x", "y", "z"]), 1010);
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
        let p = plan(&seen, "ns/a", &regions(&["x", "y"]), &regions(&["w"]), now);
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

    #[test]
    fn a_copy_taken_over_in_flight_takes_a_free_slot_first() {
        let seen = vec![None, held("ns/b/r", 100)];
        let p = plan(&seen, "ns/a", &regions(&["x"]), &regions(&["y"]), 110);
        assert_eq!(p.hold.get(&0).map(String::as_str), Some("ns/a/x"));
        assert!(p.granted.is_empty(), "no slot left for y");
    }
}
