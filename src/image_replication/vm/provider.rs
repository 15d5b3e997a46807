//! A cloud image service as an ImageReplication provider: [`Vm`] pairs one cloud's
//! [`ImageService`] with the VM engine every cloud shares (one quota ledger per account, the
//! polling and drift clocks), and reads the account (a Secret's keys, the workload identity's
//! or a role's) once per reconcile.

use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::v1alpha1::{ImageReplication, OwnerSpec, ProviderKind};
use crate::controller::secrets::Secrets;
use crate::image_replication::provider::{ImageProvider, Snapshot, Work};
use crate::image_replication::vm::credentials::{Reader, Source};
use crate::image_replication::vm::engine::{OtherAccounts, VmEngine};
use crate::image_replication::vm::{Account, ImageService, ProviderError};
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

impl Vm {
    fn reader<'a>(&'a self, obj: &'a ImageReplication, secrets: &'a dyn Secrets) -> Reader<'a> {
        Reader {
            obj,
            secrets,
            service: self.service.as_ref(),
            engine: &self.engine,
        }
    }

    /// The provider's account: its Secret's keys, or its workload identity's, or a role's.
    async fn account(&self, obj: &ImageReplication, secrets: &dyn Secrets) -> Result<Account, ProviderError> {
        self.reader(obj, secrets).read(&Source::provider(obj)).await
    }

    /// The accounts of the destinations' owners (`account`), each read once; a role of theirs
    /// is assumed with the provider's account, as read.
    async fn owners(
        &self,
        obj: &ImageReplication,
        secrets: &dyn Secrets,
        provider: &Result<Account, ProviderError>,
    ) -> OtherAccounts {
        let owners: Vec<OwnerSpec> = obj.spec.destinations.iter().filter_map(|d| d.account.clone()).collect();
        let mut into = OtherAccounts::new();
        self.read_into(obj, secrets, provider, &owners, &mut into).await;
        into
    }

    /// The accounts `who` name (a Secret, a role), each read once, into `into`.
    async fn read_into(
        &self,
        obj: &ImageReplication,
        secrets: &dyn Secrets,
        provider: &Result<Account, ProviderError>,
        who: &[OwnerSpec],
        into: &mut OtherAccounts,
    ) {
        let reader = self.reader(obj, secrets);
        for owner in who {
            if let std::collections::hash_map::Entry::Vacant(e) = into.entry(owner.credentials_key()) {
                e.insert(
                    reader
                        .owner(owner, provider)
                        .await
                        .map(|a| Account { agency: None, ..a }),
                );
            }
        }
    }
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
            let account = self.account(obj, secrets).await;
            let owners = self.owners(obj, secrets, &account).await;
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
    fn claim<'a>(&'a self, obj: &'a ImageReplication, snapshot: &'a Snapshot, work: &'a Work) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            match (work, snapshot) {
                (Work::Vm(p), Snapshot::Vm { seen, .. }) => {
                    self.engine.claim(obj, self.service.as_ref(), seen, p).await
                }
                _ => true,
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
                    let members: Vec<OwnerSpec> = obj
                        .spec
                        .destinations
                        .iter()
                        .flat_map(|d| d.share_with.iter())
                        .filter_map(|w| w.accept_with.as_ref())
                        .filter(|a| accepting.contains(&&a.credentials_key()))
                        .map(|a| a.as_owner())
                        .collect();
                    let mut all = owners.clone();
                    self.read_into(obj, secrets, account, &members, &mut all).await;
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
            let acct = self.account(obj, secrets).await;
            let owners = self.owners(obj, secrets, &acct).await;
            self.engine.cleanup(obj, self.service.as_ref(), acct, &owners).await
        })
    }
}
