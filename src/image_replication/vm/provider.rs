//! A cloud image service as an ImageReplication provider: [`Vm`] pairs one cloud's
//! [`ImageService`] with the VM engine every cloud shares (one quota ledger per account, the
//! polling and drift clocks), and reads the account from the credentials Secret once per
//! reconcile.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::v1alpha1::{ImageReplication, ProviderKind};
use crate::controller::secrets::Secrets;
use crate::image_replication::provider::{ImageProvider, Snapshot, Work};
use crate::image_replication::vm::engine::VmEngine;
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

/// The member accounts the plan's accept calls use: each `acceptWith` Secret named, read once,
/// with the provider's endpoint (the member is on the same cloud).
async fn member_accounts(
    obj: &ImageReplication,
    secrets: &dyn Secrets,
    plan: &crate::image_replication::vm::plan::VmPlan,
) -> HashMap<String, Result<Account, String>> {
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    let mut out = HashMap::new();
    for name in plan.shares.iter().filter_map(|w| w.secret.as_ref()) {
        if out.contains_key(name) {
            continue;
        }
        let r = secrets.data(&ns, name).await.map(|secret| Account {
            secret,
            endpoint: obj.spec.provider.endpoint.clone(),
            agency: None,
        });
        out.insert(name.clone(), r);
    }
    out
}

impl ImageProvider for Vm {
    fn kind(&self) -> ProviderKind {
        self.service.kind()
    }
    fn seed(&self, obj: &ImageReplication) {
        self.engine.seed(obj);
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
            let seen = self
                .engine
                .observe(obj, &gate, self.service.as_ref(), account.clone(), now)
                .await;
            Snapshot::Vm { gate, seen, account }
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
            if let (Work::Vm(p), Snapshot::Vm { account, .. }) = (work, snapshot) {
                // Without an account nothing was observed, so nothing is started or cancelled
                // (act still records the plan's metrics).
                let none = Account::default();
                let acct = account.as_ref().unwrap_or(&none);
                let members = member_accounts(obj, secrets, p).await;
                self.engine.act(obj, self.service.as_ref(), acct, &members, p).await;
            }
        })
    }
    fn cleanup<'a>(
        &'a self,
        obj: &'a ImageReplication,
        secrets: &'a dyn Secrets,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let acct = account(obj, secrets).await;
            self.engine.cleanup(obj, self.service.as_ref(), acct).await
        })
    }
}
