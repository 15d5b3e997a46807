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

/// One account's ledger: the copies in flight and those waiting, oldest first. The plan
/// decides on a copy of it (observed); the claim replays the same decision on the live one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    running: HashSet<(String, String)>,
    waiting: BTreeMap<Order, String>,
}

impl Ledger {
    /// Replace what object `key` holds with `running` (in flight) and `wanting` (ready to
    /// start, with their order), and decide which of `wanting` may start now under `limit`.
    /// Granted copies count as running from here on. Also returns the other objects whose
    /// waiting copies may now start (to wake).
    pub fn admit(
        &mut self,
        key: &str,
        limit: i32,
        running: &[String],
        wanting: &[(Order, String)],
    ) -> (HashMap<String, Admission>, Vec<String>) {
        let mut wake = Vec::new();
        let mut out = HashMap::new();
        let before = self.running.len();
        self.running.retain(|(k, _)| k != key);
        self.waiting.retain(|o, _| o.key != key);
        for r in running {
            self.running.insert((key.to_string(), r.clone()));
        }
        for (o, r) in wanting {
            self.waiting.insert(o.clone(), r.clone());
        }
        let free = (limit.max(1) as usize).saturating_sub(self.running.len());
        let head: Vec<(Order, String)> = self
            .waiting
            .iter()
            .take(free)
            .map(|(o, r)| (o.clone(), r.clone()))
            .collect();
        for (o, r) in head {
            if o.key == key {
                self.waiting.remove(&o);
                self.running.insert((key.to_string(), r.clone()));
                out.insert(r, Admission::Granted);
            } else {
                wake.push(o.key.clone());
            }
        }
        for (pos, (o, r)) in self.waiting.iter().enumerate() {
            if o.key == key {
                out.insert(r.clone(), Admission::Queued(pos as i32 + 1));
            }
        }
        if self.running.len() < before && wake.is_empty() {
            wake.extend(self.waiting.keys().take(1).map(|o| o.key.clone()));
        }
        wake.dedup();
        (out, wake)
    }

    /// A copy granted here that found no shared slot (another process holds them all): it
    /// waits again in its place. Returns its 1-based position among the waiting copies.
    pub fn requeue(&mut self, key: &str, region: &str, order: Order) -> i32 {
        self.running.remove(&(key.to_string(), region.to_string()));
        self.waiting.insert(order.clone(), region.to_string());
        self.waiting
            .keys()
            .position(|o| *o == order)
            .map_or(1, |p| p as i32 + 1)
    }
}

/// The ledger of every account's copies in flight.
pub struct Quota {
    accounts: Mutex<HashMap<String, Ledger>>,
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

    /// The account's ledger as it is now (what observe reads).
    pub fn view(&self, account: &str) -> Ledger {
        let m = self.accounts.lock().expect("quota lock");
        m.get(account).cloned().unwrap_or_default()
    }

    /// Record object `key`'s plan in the live ledger: its copies in flight, those wanting a
    /// slot, and the grants the plan made on the ledger it observed (`granted`). False when
    /// the live ledger no longer gives exactly those (another object of the account took or
    /// freed a slot meanwhile): then nothing is granted, every wanting copy waits, and the
    /// object plans again. Wakes the objects whose turn came.
    pub fn commit(
        &self,
        account: &str,
        key: &str,
        limit: i32,
        running: &[String],
        wanting: &[(Order, String)],
        granted: &[String],
    ) -> bool {
        let (held, wake) = {
            let mut m = self.accounts.lock().expect("quota lock");
            let q = m.entry(account.to_string()).or_default();
            let (adm, wake) = q.admit(key, limit, running, wanting);
            let live: HashSet<&String> = adm
                .iter()
                .filter(|(_, a)| **a == Admission::Granted)
                .map(|(r, _)| r)
                .collect();
            let held = live == granted.iter().collect::<HashSet<_>>();
            if !held {
                for (o, r) in wanting.iter().filter(|(_, r)| live.contains(r)) {
                    q.requeue(key, r, o.clone());
                }
            }
            (held, wake)
        };
        for k in wake {
            (self.wake)(&k);
        }
        held
    }

    /// A copy granted by the ledger that found no shared slot waits again in its place.
    pub fn requeue(&self, account: &str, key: &str, region: &str, order: Order) {
        let mut m = self.accounts.lock().expect("quota lock");
        m.entry(account.to_string()).or_default().requeue(key, region, order);
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

    /// One reconcile: plan on the observed ledger, then claim what the plan granted.
    fn admit(
        q: &Quota,
        account: &str,
        key: &str,
        limit: i32,
        running: &[String],
        wanting: &[(Order, String)],
    ) -> HashMap<String, Admission> {
        let (adm, _) = q.view(account).admit(key, limit, running, wanting);
        let granted: Vec<String> = adm
            .iter()
            .filter(|(_, a)| **a == Admission::Granted)
            .map(|(r, _)| r.clone())
            .collect();
        assert!(q.commit(account, key, limit, running, wanting, &granted));
        adm
    }

    /// Two objects of one account plan on the same ledger and both see the one free slot: the
    /// first to claim it starts, the other's claim fails and it plans again, queued behind.
    #[test]
    fn of_two_plans_granted_the_same_slot_only_the_first_claim_holds() {
        let q = Quota::default();
        let (a, _) = q.view("acct").admit("ns/a", 1, &[], &want(1, "ns/a", &["r"]));
        let (b, _) = q.view("acct").admit("ns/b", 1, &[], &want(2, "ns/b", &["r"]));
        assert_eq!((&a["r"], &b["r"]), (&Admission::Granted, &Admission::Granted));
        let r = vec!["r".to_string()];
        assert!(q.commit("acct", "ns/a", 1, &[], &want(1, "ns/a", &["r"]), &r));
        assert!(!q.commit("acct", "ns/b", 1, &[], &want(2, "ns/b", &["r"]), &r));
        assert_eq!(q.depth("acct"), (1, 1), "a runs, b waits");
        let (b, _) = q.view("acct").admit("ns/b", 1, &[], &want(2, "ns/b", &["r"]));
        assert_eq!(b["r"], Admission::Queued(1));
        // a's copy finishes. b's plan from before (queued) no longer matches the ledger, which
        // would now grant it: that claim fails too, b waits in its place and plans again.
        assert!(q.commit("acct", "ns/a", 1, &[], &[], &[]));
        assert!(!q.commit("acct", "ns/b", 1, &[], &want(2, "ns/b", &["r"]), &[]));
        assert_eq!(q.depth("acct"), (0, 1));
        let (b, _) = q.view("acct").admit("ns/b", 1, &[], &want(2, "ns/b", &["r"]));
        assert_eq!(b["r"], Admission::Granted);
    }

    #[test]
    fn at_most_limit_in_flight_then_oldest_first() {
        let woken = Arc::new(Mutex::new(Vec::<String>::new()));
        let w = woken.clone();
        let q = Quota::new(Arc::new(move |k: &str| w.lock().unwrap().push(k.to_string())));
        let regions: Vec<String> = (0..12).map(|i| format!("r{i}")).collect();
        let refs: Vec<&str> = regions.iter().map(String::as_str).collect();
        let a = admit(&q, "acct", "ns/a", 5, &[], &want(1, "ns/a", &refs));
        let granted: Vec<&String> = a
            .iter()
            .filter(|(_, v)| **v == Admission::Granted)
            .map(|(k, _)| k)
            .collect();
        assert_eq!(granted.len(), 5);
        assert_eq!(a["r5"], Admission::Queued(1));
        assert_eq!(a["r11"], Admission::Queued(7));
        // A younger object waits behind the older one's queue.
        let b = admit(&q, "acct", "ns/b", 5, &[], &want(2, "ns/b", &["x"]));
        assert_eq!(b["x"], Admission::Queued(8));
        // Another account is independent.
        let c = admit(&q, "other", "ns/c", 5, &[], &want(3, "ns/c", &["y"]));
        assert_eq!(c["y"], Admission::Granted);
        // Two of a's copies finish: its next two start, in destination order.
        let running: Vec<String> = ["r2", "r3", "r4"].iter().map(|s| s.to_string()).collect();
        let rest: Vec<&str> = refs[5..].to_vec();
        let mut wanting = want(1, "ns/a", &rest);
        for (i, w) in wanting.iter_mut().enumerate() {
            w.0.index = i + 5;
        }
        let a = admit(&q, "acct", "ns/a", 5, &running, &wanting);
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
            admit(&q, "acct", "ns/a", 1, &[], &want(1, "ns/a", &["r"]))["r"],
            Admission::Granted
        );
        assert_eq!(
            admit(&q, "acct", "ns/b", 1, &[], &want(2, "ns/b", &["r"]))["r"],
            Admission::Queued(1)
        );
        // a finishes: b is woken, and b's next admit is granted.
        admit(&q, "acct", "ns/a", 1, &[], &[]);
        assert_eq!(woken.lock().unwrap().as_slice(), ["ns/b"]);
        assert_eq!(
            admit(&q, "acct", "ns/b", 1, &[], &want(2, "ns/b", &["r"]))["r"],
            Admission::Granted
        );
        // Seeded copies count against the limit.
        q.release("ns/b");
        q.seed("acct", "ns/c", &["r".to_string()]);
        assert_eq!(
            admit(&q, "acct", "ns/d", 1, &[], &want(4, "ns/d", &["r"]))["r"],
            Admission::Queued(1)
        );
        q.release("ns/c");
        assert!(woken.lock().unwrap().contains(&"ns/d".to_string()));
    }
}
