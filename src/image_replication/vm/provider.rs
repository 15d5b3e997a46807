//! A cloud image service as an ImageReplication provider: [`Vm`] pairs one cloud's
//! [`ImageService`] with the VM engine every cloud shares (one quota ledger per account, the
//! polling and drift clocks), and reads the account from the credentials Secret once per
//! reconcile.

use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::v1alpha1::{ImageReplication, ProviderKind};
use crate::controller::secrets::Secrets;
use crate::image_replication::provider::{ImageProvider, Snapshot, Work};
use crate::image_replication::vm::engine::{Others, VmEngine};
use crate::image_replication::vm::{Account, ImageService};
use crate::plan::Gate;

/// One cloud on the shared engine.
pub struct Vm {
    engine: Arc<VmEngine>,
    service: Arc<dyn ImageService>,
}

impl Vm {
    pub fn new(engine: Arc<VmEngine>, service: Arc<dyn ImageService>) -> Self {
        Self { engine, service }
    }
}

/// The provider account: the referenced Secret's data and the endpoint override.
async fn account(obj: &ImageReplication, secrets: &dyn Secrets) -> Result<Account, String> {
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    let secret = match &obj.spec.provider.credentials_secret_ref {
        Some(r) => secrets.data(&ns, &r.name).await?,
        None => Default::default(),
    };
    Ok(Account {
        secret,
        endpoint: obj.spec.provider.endpoint.clone(),
        agency: obj.spec.provider.agency.clone(),
    })
}

/// Accounts read from other Secrets of the object's namespace (each read once), with the
/// provider's endpoint (they are on the same cloud).
async fn others<'n>(
    obj: &ImageReplication,
    secrets: &dyn Secrets,
    names: impl Iterator<Item = &'n String>,
    into: &mut Others,
) {
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    for name in names {
        if into.contains_key(name) {
            continue;
        }
        let r = secrets.data(&ns, name).await.map(|secret| Account {
            secret,
            endpoint: obj.spec.provider.endpoint.clone(),
            agency: None,
        });
        into.insert(name.clone(), r);
    }
}

/// The Secrets of the destinations' owners (`account`).
fn owner_secrets(obj: &ImageReplication) -> impl Iterator<Item = &String> {
    obj.spec
        .destinations
        .iter()
        .filter_map(|d| d.account.as_ref().map(|a| &a.credentials_secret_ref.name))
}

impl ImageProvider for Vm {
    fn kind(&self) -> ProviderKind {
        self.service.kind()
    }
    fn seed(&self, obj: &ImageReplication) {
        self.engine.seed(obj);
    }
    fn release(&self, obj: &ImageReplication) {
        self.engine.release(obj);
    }
    fn observe<'a>(
        &'a self,
        obj: &'a ImageReplication,
        gate: Gate,
        secrets: &'a dyn Secrets,
        now: &'a Time,
    ) -> BoxFuture<'a, Snapshot> {
        Box::pin(async move {
            let account = account(obj, secrets).await;
            let mut owners = Others::new();
            others(obj, secrets, owner_secrets(obj), &mut owners).await;
            let seen = self
                .engine
                .observe(obj, &gate, self.service.as_ref(), account.clone(), &owners, now)
                .await;
            Snapshot::Vm {
                gate,
                seen,
                account,
                owners,
            }
        })
    }
    fn act<'a>(
        &'a self,
        obj: &'a ImageReplication,
        secrets: &'a dyn Secrets,
        snapshot: &'a Snapshot,
        work: &'a Work,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let (Work::Vm(p), Snapshot::Vm { account, owners, .. }) = (work, snapshot) {
                // Without an account nothing was observed, so nothing is started or cancelled
                // (act still records the plan's metrics).
                let none = Account::default();
                let acct = account.as_ref().unwrap_or(&none);
                // The owners read by observe, and the members whose shares are accepted now
                // (read only when there are such).
                let accepting: Vec<&String> = p.shares.iter().filter_map(|w| w.secret.as_ref()).collect();
                if accepting.is_empty() {
                    self.engine.act(obj, self.service.as_ref(), acct, owners, p).await;
                } else {
                    let mut all = owners.clone();
                    others(obj, secrets, accepting.into_iter(), &mut all).await;
                    self.engine.act(obj, self.service.as_ref(), acct, &all, p).await;
                }
            }
        })
    }
    fn cleanup<'a>(
        &'a self,
        obj: &'a ImageReplication,
        secrets: &'a dyn Secrets,
    ) -> BoxFuture<'a, Result<String, crate::error::Blocked>> {
        Box::pin(async move {
            let acct = account(obj, secrets).await;
            let mut owners = Others::new();
            others(obj, secrets, owner_secrets(obj), &mut owners).await;
            self.engine.cleanup(obj, self.service.as_ref(), acct, &owners).await
        })
    }
}
