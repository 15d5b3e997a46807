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

use crate::image_replication::vm::slots::{SLOT_DURATION, Seen, SlotPlan, SlotView, Slots};

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

    /// The account's hash and the prefix of its Leases' names: `<prefix>-<n>` for slot n,
    /// `<prefix>-queue` for its queue (a Lease that holds no slot, only the annotation).
    fn names(&self, account: &str) -> (String, String) {
        let hash = self.account_hash(account);
        let prefix = format!("imgrep-slot-{hash}");
        (hash, prefix)
    }

    /// Write one of the account's Leases: the one read (`version` kept: a concurrent change is
    /// a 409) or a new one (`None`: a create, a 409 when another process created it first).
    async fn put(
        &self,
        name: &str,
        hash: &str,
        version: Option<&str>,
        edit: impl FnOnce(&mut Lease),
    ) -> Result<(), kube::Error> {
        let mut l = Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(BTreeMap::from([(SLOT_LABEL.to_string(), hash.to_string())])),
                resource_version: version.map(String::from),
                ..Default::default()
            },
            spec: None,
        };
        edit(&mut l);
        match version {
            Some(_) => self.api.replace(name, &PostParams::default(), &l).await.map(|_| ()),
            None => self.api.create(&PostParams::default(), &l).await.map(|_| ()),
        }
    }

    /// Hold a slot for `holder` (renewing it when it holds it already: its acquire time stays),
    /// or let it go (`None`).
    async fn write(&self, name: &str, hash: &str, was: Option<&Seen>, holder: Option<&str>) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let acquired = match (was, holder) {
            (Some(w), Some(n)) if w.holder.as_deref() == Some(n) && w.acquired > 0 => {
                Timestamp::from_second(w.acquired).unwrap_or(now)
            }
            _ => now,
        };
        let spec = LeaseSpec {
            holder_identity: holder.map(String::from),
            lease_duration_seconds: Some(SLOT_DURATION.as_secs() as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        };
        self.put(name, hash, was.map(|w| w.version.as_str()), |l| l.spec = Some(spec))
            .await
    }
}

fn seen(l: &Lease) -> Seen {
    let spec = l.spec.clone().unwrap_or_default();
    let secs = |t: Option<MicroTime>| t.map_or(0, |t| t.0.as_second());
    Seen {
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        renewed: secs(spec.renew_time.or(spec.acquire_time.clone())),
        acquired: secs(spec.acquire_time),
        version: l.metadata.resource_version.clone().unwrap_or_default(),
    }
}

impl Slots for KubeSlots {
    fn read<'a>(&'a self, account: &'a str, limit: i32) -> BoxFuture<'a, Result<SlotView, String>> {
        Box::pin(async move {
            let (_, prefix) = self.names(account);
            let name = |i: usize| format!("{prefix}-{i}");
            let n = limit.clamp(1, 100) as usize;
            let mut view = SlotView::default();
            for i in 0..n {
                let l = self.api.get_opt(&name(i)).await.map_err(|e| e.to_string())?;
                view.slots.push(l.as_ref().map(seen));
            }
            let q = self
                .api
                .get_opt(&format!("{prefix}-queue"))
                .await
                .map_err(|e| e.to_string())?;
            view.queue_version = q.as_ref().and_then(|l| l.metadata.resource_version.clone());
            view.queue = q
                .as_ref()
                .and_then(|l| l.metadata.annotations.as_ref()?.get(QUEUE_ANNOTATION))
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or_default();
            Ok(view)
        })
    }

    fn take<'a>(&'a self, account: &'a str, view: &'a SlotView, plan: &'a SlotPlan) -> BoxFuture<'a, HashSet<String>> {
        Box::pin(async move {
            let (hash, prefix) = self.names(account);
            let name = |i: usize| format!("{prefix}-{i}");
            if let Some(q) = &plan.queue {
                let text = serde_json::to_string(q).unwrap_or_else(|_| "[]".into());
                let r = self
                    .put(&format!("{prefix}-queue"), &hash, view.queue_version.as_deref(), |l| {
                        l.metadata.annotations = Some(BTreeMap::from([(QUEUE_ANNOTATION.into(), text)]));
                    })
                    .await;
                if let Err(e) = r {
                    debug!(error = %e, "the copy slots' queue changed meanwhile; asked again later");
                }
            }
            let was = |i: usize| view.slots.get(i).and_then(Option::as_ref);
            let mut lost = HashSet::new();
            for (i, holder) in &plan.hold {
                if let Err(e) = self.write(&name(*i), &hash, was(*i), Some(holder)).await {
                    debug!(slot = %name(*i), error = %e, "a copy slot was taken by another process first");
                    lost.insert(holder.clone());
                }
            }
            for i in &plan.release {
                if let Err(e) = self.write(&name(*i), &hash, was(*i), None).await {
                    warn!(slot = %name(*i), error = %e, "letting go of a copy slot failed; it expires");
                }
            }
            lost
        })
    }
}
