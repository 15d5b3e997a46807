//! The per-account quota queue: at most N copies in flight per account across all objects; the
//! rest wait, oldest first, and start as slots free up.
//!
//! A slot is held by one (object, destination region). The ledger is rebuilt from what each
//! reconcile reports (its destinations in flight and those that want to start), so it never
//! drifts from the objects' statuses; after a restart the controller seeds it from a list of
//! every object before the first copy is admitted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Called with an object key when one of its waiting copies may now start.
pub type Wake = crate::tasks::OnDone;

/// The order of waiting copies: older objects first, then destination order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Order {
    pub created: i64,
    pub key: String,
    pub index: usize,
}

/// What the ledger says about a copy that wants to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    Granted,
    /// 1-based position among the account's waiting copies.
    Queued(i32),
}

#[derive(Default)]
struct AccountQueue {
    running: HashSet<(String, String)>,
    waiting: BTreeMap<Order, String>,
}

/// The ledger of every account's copies in flight.
pub struct Quota {
    accounts: Mutex<HashMap<String, AccountQueue>>,
    wake: Wake,
}

impl Default for Quota {
    fn default() -> Self {
        Self::new(Arc::new(|_| {}))
    }
}

impl Quota {
    pub fn new(wake: Wake) -> Self {
        Self {
            accounts: Mutex::new(HashMap::new()),
            wake,
        }
    }

    /// Record copies known to be in flight (start-up seeding from the objects' statuses).
    pub fn seed(&self, account: &str, key: &str, running: &[String]) {
        let mut m = self.accounts.lock().expect("quota lock");
        let q = m.entry(account.to_string()).or_default();
        for r in running {
            q.running.insert((key.to_string(), r.clone()));
        }
    }

    /// Replace what object `key` holds in `account` with `running` (in flight) and `wanting`
    /// (ready to start, with their order), and decide which of `wanting` may start now under
    /// `limit`. Granted copies count as running from here on.
    pub fn admit(
        &self,
        account: &str,
        key: &str,
        limit: i32,
        running: &[String],
        wanting: &[(Order, String)],
    ) -> HashMap<String, Admission> {
        let mut wake = Vec::new();
        let mut out = HashMap::new();
        {
            let mut m = self.accounts.lock().expect("quota lock");
            let q = m.entry(account.to_string()).or_default();
            let before = q.running.len();
            q.running.retain(|(k, _)| k != key);
            q.waiting.retain(|o, _| o.key != key);
            for r in running {
                q.running.insert((key.to_string(), r.clone()));
            }
            for (o, r) in wanting {
                q.waiting.insert(o.clone(), r.clone());
            }
            let free = (limit.max(1) as usize).saturating_sub(q.running.len());
            let head: Vec<(Order, String)> = q
                .waiting
                .iter()
                .take(free)
                .map(|(o, r)| (o.clone(), r.clone()))
                .collect();
            for (o, r) in head {
                if o.key == key {
                    q.waiting.remove(&o);
                    q.running.insert((key.to_string(), r.clone()));
                    out.insert(r, Admission::Granted);
                } else {
                    wake.push(o.key.clone());
                }
            }
            for (pos, (o, r)) in q.waiting.iter().enumerate() {
                if o.key == key {
                    out.insert(r.clone(), Admission::Queued(pos as i32 + 1));
                }
            }
            if q.running.len() < before && wake.is_empty() {
                wake.extend(q.waiting.keys().take(1).map(|o| o.key.clone()));
            }
        }
        wake.dedup();
        for k in wake {
            (self.wake)(&k);
        }
        out
    }

    /// A copy granted here that found no shared slot (another process holds them all): it
    /// waits again in its place. Returns its 1-based position among the account's waiting copies.
    pub fn requeue(&self, account: &str, key: &str, region: &str, order: Order) -> i32 {
        let mut m = self.accounts.lock().expect("quota lock");
        let q = m.entry(account.to_string()).or_default();
        q.running.remove(&(key.to_string(), region.to_string()));
        q.waiting.insert(order.clone(), region.to_string());
        q.waiting.keys().position(|o| *o == order).map_or(1, |p| p as i32 + 1)
    }

    /// Forget object `key` everywhere (deleted); wakes the next waiters.
    pub fn release(&self, key: &str) {
        let mut wake = Vec::new();
        {
            let mut m = self.accounts.lock().expect("quota lock");
            for q in m.values_mut() {
                q.running.retain(|(k, _)| k != key);
                q.waiting.retain(|o, _| o.key != key);
                wake.extend(q.waiting.keys().take(1).map(|o| o.key.clone()));
            }
        }
        for k in wake {
            (self.wake)(&k);
        }
    }

    /// Copies in flight and waiting for an account.
    pub fn depth(&self, account: &str) -> (usize, usize) {
        let m = self.accounts.lock().expect("quota lock");
        m.get(account)
            .map(|q| (q.running.len(), q.waiting.len()))
            .unwrap_or((0, 0))
    }

    /// Copies waiting across all accounts (the queue-depth gauge).
    pub fn waiting_total(&self) -> usize {
        self.accounts
            .lock()
            .expect("quota lock")
            .values()
            .map(|q| q.waiting.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(created: i64, key: &str, index: usize) -> Order {
        Order {
            created,
            key: key.into(),
            index,
        }
    }

    fn want(created: i64, key: &str, regions: &[&str]) -> Vec<(Order, String)> {
        regions
            .iter()
            .enumerate()
            .map(|(i, r)| (order(created, key, i), r.to_string()))
            .collect()
    }

    #[test]
    fn at_most_limit_in_flight_then_oldest_first() {
        let woken = Arc::new(Mutex::new(Vec::<String>::new()));
        let w = woken.clone();
        let q = Quota::new(Arc::new(move |k: &str| w.lock().unwrap().push(k.to_string())));
        let regions: Vec<String> = (0..12).map(|i| format!("r{i}")).collect();
        let refs: Vec<&str> = regions.iter().map(String::as_str).collect();
        let a = q.admit("acct", "ns/a", 5, &[], &want(1, "ns/a", &refs));
        let granted: Vec<&String> = a
            .iter()
            .filter(|(_, v)| **v == Admission::Granted)
            .map(|(k, _)| k)
            .collect();
        assert_eq!(granted.len(), 5);
        assert_eq!(a["r5"], Admission::Queued(1));
        assert_eq!(a["r11"], Admission::Queued(7));
        // A younger object waits behind the older one's queue.
        let b = q.admit("acct", "ns/b", 5, &[], &want(2, "ns/b", &["x"]));
        assert_eq!(b["x"], Admission::Queued(8));
        // Another account is independent.
        let c = q.admit("other", "ns/c", 5, &[], &want(3, "ns/c", &["y"]));
        assert_eq!(c["y"], Admission::Granted);
        // Two of a's copies finish: its next two start, in destination order.
        let running: Vec<String> = ["r2", "r3", "r4"].iter().map(|s| s.to_string()).collect();
        let rest: Vec<&str> = refs[5..].to_vec();
        let mut wanting = want(1, "ns/a", &rest);
        for (i, w) in wanting.iter_mut().enumerate() {
            w.0.index = i + 5;
        }
        let a = q.admit("acct", "ns/a", 5, &running, &wanting);
        assert_eq!(a["r5"], Admission::Granted);
        assert_eq!(a["r6"], Admission::Granted);
        assert_eq!(a["r7"], Admission::Queued(1));
        assert_eq!(q.depth("acct"), (5, 6));
    }

    #[test]
    fn a_freed_slot_wakes_the_next_waiter() {
        let woken = Arc::new(Mutex::new(Vec::<String>::new()));
        let w = woken.clone();
        let q = Quota::new(Arc::new(move |k: &str| w.lock().unwrap().push(k.to_string())));
        assert_eq!(
            q.admit("acct", "ns/a", 1, &[], &want(1, "ns/a", &["r"]))["r"],
            Admission::Granted
        );
        assert_eq!(
            q.admit("acct", "ns/b", 1, &[], &want(2, "ns/b", &["r"]))["r"],
            Admission::Queued(1)
        );
        // a finishes: b is woken, and b's next admit is granted.
        q.admit("acct", "ns/a", 1, &[], &[]);
        assert_eq!(woken.lock().unwrap().as_slice(), ["ns/b"]);
        assert_eq!(
            q.admit("acct", "ns/b", 1, &[], &want(2, "ns/b", &["r"]))["r"],
            Admission::Granted
        );
        // Seeded copies count against the limit.
        q.release("ns/b");
        q.seed("acct", "ns/c", &["r".to_string()]);
        assert_eq!(
            q.admit("acct", "ns/d", 1, &[], &want(4, "ns/d", &["r"]))["r"],
            Admission::Queued(1)
        );
        q.release("ns/c");
        assert!(woken.lock().unwrap().contains(&"ns/d".to_string()));
    }
}
