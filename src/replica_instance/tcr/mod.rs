//! ReplicaInstance with `primary.provider: tencent` ([`api::Tcr`] as its backend): TCR
//! Enterprise replicates by itself once a replica instance exists, so the backend reads the
//! account, describes the replica, creates it when the plan says so and deletes it on
//! `deletionPolicy: Delete`. The API client and the pure plan are in [`api`].

pub mod client;
pub mod plan;

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tracing::{info, warn};

use crate::api::v1alpha1::{DeletionPolicy, ReplicaInstance, ReplicaProvider};
use crate::cloud::identity;
use crate::cloud::{Account, ProviderError};
use crate::controller::secrets::Secrets;
use crate::image_replication::vm::ImageService as _;
use crate::image_replication::vm::providers::tencent;
use crate::plan::Announcement;
use crate::replica_instance::provider::{ReplicaBackend, Snapshot, Work};
use crate::replica_instance::tcr::client::Tcr;

impl Tcr {
    /// The TCR account: the primary's credentials Secret (`secretId`, `secretKey`, optional
    /// `token`, optional `endpoint` override of `https://tcr.tencentcloudapi.com`), or without
    /// one the pod's workload identity (TKE OIDC, exchanged as for CVM:
    /// [docs/identity.md](../../../docs/identity.md)).
    async fn account(&self, obj: &ReplicaInstance, secrets: &dyn Secrets) -> Result<Account, String> {
        let ns = obj.metadata.namespace.clone().unwrap_or_default();
        let Some(r) = &obj.spec.primary.credentials_secret_ref else {
            let vars = identity::vars(tencent::sts::IDENTITY.variables);
            let key = format!("tcr|workload|{vars:?}");
            let how = identity::Exchange::Workload { vars };
            let keys = self
                .sessions
                .get(&key, || self.sts.exchange(&how), |_| {})
                .await
                .map_err(|e| format!("the operator's workload identity: {}", e.message))?;
            return Ok(Account {
                identity: Some("the operator's workload identity".into()),
                secret: keys.secret,
                // This operator's own override (private clouds, tests), as the Secret's `endpoint`.
                endpoint: std::env::var("TENCENTCLOUD_TCR_ENDPOINT")
                    .ok()
                    .filter(|e| !e.is_empty()),
                agency: None,
            });
        };
        let secret = secrets.data(&ns, &r.name).await?;
        let endpoint = secret
            .get("endpoint")
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
            .filter(|e| !e.is_empty());
        Ok(Account {
            identity: None,
            secret,
            endpoint,
            agency: None,
        })
    }
}

impl Tcr {
    /// Create the replica with the account observe read; what to announce.
    async fn create_replica(&self, obj: &ReplicaInstance, acct: &Account) -> Announcement {
        let spec = &obj.spec;
        let id = spec.primary.instance_id.clone().unwrap_or_default();
        match self.create(acct, &id, &spec.primary.region, &spec.region).await {
            Ok(r) => {
                info!(replica = r, "TCR replica instance created");
                Announcement {
                    warning: false,
                    reason: "ReplicaCreated".into(),
                    note: format!("created replica instance {r} of {id} in {}", spec.region),
                }
            }
            Err(e) => {
                warn!(error = %e, "creating the TCR replica instance failed; will look again");
                Announcement {
                    warning: true,
                    reason: "CreateReplicaFailed".into(),
                    note: format!("creating the replica in {}: {e}", spec.region),
                }
            }
        }
    }

    /// Apply the deletion policy: `Delete` deletes the replica instance (never the primary).
    async fn remove(&self, obj: &ReplicaInstance, secrets: &dyn Secrets) -> Result<String, String> {
        let spec = &obj.spec;
        let mut note = format!("deletionPolicy {:?}", spec.deletion_policy);
        if spec.deletion_policy == DeletionPolicy::Retain {
            note.push_str("; the replica's content is kept");
            return Ok(note);
        }
        let acct = self.account(obj, secrets).await?;
        let id = spec.primary.instance_id.clone().unwrap_or_default();
        let gone = self
            .delete(&acct, &id, &spec.primary.region, &spec.region)
            .await
            .map_err(|e| format!("deleting the TCR replica instance: {e}"))?;
        match gone {
            Some(r) => note.push_str(&format!(
                "; deleted replica instance {r} of {id} in {} (the primary is never touched)",
                spec.region
            )),
            None => note.push_str("; no replica instance to delete"),
        }
        Ok(note)
    }
}

impl ReplicaBackend for Tcr {
    fn kind(&self) -> ReplicaProvider {
        ReplicaProvider::Tencent
    }
    /// Read the account once and describe the replica.
    fn observe<'a>(
        &'a self,
        obj: &'a ReplicaInstance,
        secrets: &'a dyn Secrets,
        _now: &'a Time,
    ) -> BoxFuture<'a, Snapshot> {
        Box::pin(async move {
            let spec = &obj.spec;
            match self.account(obj, secrets).await {
                Ok(acct) => {
                    let id = spec.primary.instance_id.clone().unwrap_or_default();
                    let seen = self.describe(&acct, &id, &spec.primary.region, &spec.region).await;
                    Snapshot::Tencent {
                        seen,
                        account: Some(acct),
                    }
                }
                Err(e) => Snapshot::Tencent {
                    seen: Err(ProviderError::transient(e)),
                    account: None,
                },
            }
        })
    }
    fn act<'a>(
        &'a self,
        obj: &'a ReplicaInstance,
        _secrets: &'a dyn Secrets,
        snapshot: &'a Snapshot,
        work: &'a Work,
    ) -> BoxFuture<'a, Vec<Announcement>> {
        Box::pin(async move {
            match (work, snapshot) {
                (
                    Work::CreateReplica,
                    Snapshot::Tencent {
                        account: Some(acct), ..
                    },
                ) => vec![self.create_replica(obj, acct).await],
                _ => Vec::new(),
            }
        })
    }
    fn cleanup<'a>(
        &'a self,
        obj: &'a ReplicaInstance,
        secrets: &'a dyn Secrets,
    ) -> BoxFuture<'a, Result<String, crate::error::Blocked>> {
        Box::pin(async move { self.remove(obj, secrets).await.map_err(Into::into) })
    }
}
