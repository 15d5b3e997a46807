//! The copy slots of [`crate::image_replication::vm::slots`] as `coordination.k8s.io` Leases in
//! the operator's namespace: `imgrep-slot-<account hash>-<n>`, one per slot of an account, the
//! holder the copy that holds it. Every write carries the resourceVersion it read (or is a
//! create), so two processes never both take one slot: the loser gets 409 Conflict and its copy
//! waits. Expiry is judged by the renew time on the wall clock (the processes of one cluster).

use std::collections::{BTreeMap, HashSet};

use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tracing::{debug, warn};

use crate::image_replication::vm::slots::{self, SLOT_DURATION, Seen, Slots, Waiter};

/// The label that names the account (hashed) a slot Lease belongs to.
pub const SLOT_LABEL: &str = "replication.imageops.io/copy-slots";

/// The annotation of the account's queue Lease: the copies waiting for a slot, as JSON.
pub const QUEUE_ANNOTATION: &str = "replication.imageops.io/waiting";

/// Slot Leases of one installation.
pub struct KubeSlots {
    api: Api<Lease>,
    installation: String,
}

impl KubeSlots {
    pub fn new(client: Client, namespace: &str, installation: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            installation: installation.to_string(),
        }
    }

    /// The account's hash: Lease names carry no Secret names or endpoints.
    fn account_hash(&self, account: &str) -> String {
        use sha2::Digest as _;
        let h = sha2::Sha256::digest(format!("{}|{account}", self.installation).as_bytes());
        crate::oci::api::hex(&h)[..12].to_string()
    }

    /// Write one of the account's Leases: the one read (`old`, its resourceVersion kept: a
    /// concurrent change is a 409) or a new one, changed by `edit`.
    async fn put(
        &self,
        name: &str,
        hash: &str,
        old: Option<&Lease>,
        edit: impl FnOnce(&mut Lease),
    ) -> Result<(), kube::Error> {
        let mut l = old.cloned().unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(BTreeMap::from([(SLOT_LABEL.to_string(), hash.to_string())])),
                ..Default::default()
            },
            spec: None,
        });
        edit(&mut l);
        match old {
            Some(_) => self.api.replace(name, &PostParams::default(), &l).await.map(|_| ()),
            None => self.api.create(&PostParams::default(), &l).await.map(|_| ()),
        }
    }

    /// Hold a slot for `holder` (renewing it when it holds it already: its acquire time stays),
    /// or let it go (`None`).
    async fn write(
        &self,
        name: &str,
        hash: &str,
        old: Option<&Lease>,
        holder: Option<&str>,
    ) -> Result<(), kube::Error> {
        let now = MicroTime(Timestamp::now());
        let was = old.and_then(|l| l.spec.clone()).unwrap_or_default();
        let acquired = match (&was.holder_identity, holder) {
            (Some(h), Some(n)) if h == n => was.acquire_time.unwrap_or_else(|| now.clone()),
            _ => now.clone(),
        };
        let spec = LeaseSpec {
            holder_identity: holder.map(String::from),
            lease_duration_seconds: Some(SLOT_DURATION.as_secs() as i32),
            acquire_time: Some(acquired),
            renew_time: Some(now),
            ..Default::default()
        };
        self.put(name, hash, old, |l| l.spec = Some(spec)).await
    }

    /// Write the account's queue (a Lease that holds no slot, only the annotation).
    async fn write_queue(
        &self,
        name: &str,
        hash: &str,
        old: Option<&Lease>,
        queue: &[Waiter],
    ) -> Result<(), kube::Error> {
        let text = serde_json::to_string(queue).unwrap_or_else(|_| "[]".into());
        self.put(name, hash, old, |l| {
            l.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(QUEUE_ANNOTATION.into(), text);
        })
        .await
    }
}

fn seen(l: &Lease) -> Seen {
    let spec = l.spec.clone().unwrap_or_default();
    Seen {
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        renewed: spec.renew_time.or(spec.acquire_time).map_or(0, |t| t.0.as_second()),
    }
}

impl Slots for KubeSlots {
    fn sync<'a>(
        &'a self,
        account: &'a str,
        limit: i32,
        key: &'a str,
        running: &'a [String],
        wanting: &'a [(crate::image_replication::vm::quota::Order, String)],
    ) -> BoxFuture<'a, HashSet<String>> {
        Box::pin(async move {
            let hash = self.account_hash(account);
            let name = |i: usize| format!("imgrep-slot-{hash}-{i}");
            let n = limit.clamp(1, 100) as usize;
            let mut leases = Vec::with_capacity(n);
            for i in 0..n {
                match self.api.get_opt(&name(i)).await {
                    Ok(l) => leases.push(l),
                    Err(e) => {
                        warn!(error = %e, "reading the copy slots failed; copies wait");
                        return HashSet::new();
                    }
                }
            }
            let seen: Vec<Option<Seen>> = leases.iter().map(|l| l.as_ref().map(seen)).collect();
            let queue_name = format!("imgrep-slot-{hash}-queue");
            let queue_lease = match self.api.get_opt(&queue_name).await {
                Ok(l) => l,
                Err(e) => {
                    warn!(error = %e, "reading the copy slots' queue failed; copies wait");
                    return HashSet::new();
                }
            };
            let queue: Vec<Waiter> = queue_lease
                .as_ref()
                .and_then(|l| l.metadata.annotations.as_ref()?.get(QUEUE_ANNOTATION))
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or_default();
            let p = slots::plan(&seen, &queue, key, running, wanting, Timestamp::now().as_second());
            if let Some(q) = &p.queue
                && let Err(e) = self.write_queue(&queue_name, &hash, queue_lease.as_ref(), q).await
            {
                debug!(error = %e, "the copy slots' queue changed meanwhile; asked again later");
            }
            let mut granted = p.granted.clone();
            for (i, holder) in &p.hold {
                if let Err(e) = self.write(&name(*i), &hash, leases[*i].as_ref(), Some(holder)).await {
                    debug!(slot = %name(*i), error = %e, "a copy slot was taken by another process first");
                    if let Some(region) = holder.strip_prefix(&format!("{key}/")) {
                        granted.remove(region);
                    }
                }
            }
            for i in &p.release {
                if let Err(e) = self.write(&name(*i), &hash, leases[*i].as_ref(), None).await {
                    debug!(slot = %name(*i), error = %e, "letting go of a copy slot failed; it expires");
                }
            }
            granted
        })
    }
}
