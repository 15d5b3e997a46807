//! What a ReplicaInstance backend does for the kind's reconcile, and what it hands the pure
//! planner: [`ReplicaBackend`] observes (all the I/O of one reconcile, one [`Snapshot`]), carries
//! out the planned [`Work`] and cleans up before the finalizer goes. The provider registry holds
//! one per primary provider: `oci` (registry to registry, in `replica_instance/oci/`) and
//! `tencent` (Tencent Container Registry's own replication, in `replica_instance/tcr/`).

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::v1alpha1::{ReplicaInstance, ReplicaProvider};
use crate::cloud::{Account, ProviderError};
use crate::controller::secrets::Secrets;
use crate::plan::{Announcement, Gate};
use crate::replica_instance::oci::plan::SyncStart;
use crate::replica_instance::oci::sync::SyncView;
use crate::replica_instance::tcr::client as tcr;

/// What one reconcile of a ReplicaInstance saw.
// One snapshot lives per reconcile, for its duration: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Snapshot {
    /// Nothing to observe: the gate is closed (invalid, suspended, the provider not built).
    Gated(Gate),
    /// oci: the sync task, the notifications not yet applied, the last full sync.
    Oci {
        sync: SyncView,
        pending: Option<(BTreeSet<String>, Time)>,
        last_full: Option<Time>,
        interval: Duration,
    },
    /// tencent: the TCR replica as the API describes it, and the account read for it.
    Tencent {
        seen: Result<tcr::Observed, ProviderError>,
        account: Option<Account>,
    },
}

/// What `act` does once the planned status is written.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Work {
    #[default]
    Nothing,
    /// Cancel the running sync (suspended, or the spec became invalid).
    CancelSync,
    /// oci: start this sync.
    Sync(SyncStart),
    /// tencent: create the TCR replica instance.
    CreateReplica,
}

/// A registry service ReplicaInstance keeps a replica of.
pub trait ReplicaBackend: Send + Sync {
    /// The primary provider this implementation serves.
    fn kind(&self) -> ReplicaProvider;
    /// All the I/O of one reconcile of an object whose gate is open.
    fn observe<'a>(
        &'a self,
        obj: &'a ReplicaInstance,
        secrets: &'a dyn Secrets,
        now: &'a Time,
    ) -> BoxFuture<'a, Snapshot>;
    /// Start or cancel the planned work once its status is written; what it has to announce
    /// (a create the cloud refused) comes back as Events.
    fn act<'a>(
        &'a self,
        obj: &'a ReplicaInstance,
        secrets: &'a dyn Secrets,
        snapshot: &'a Snapshot,
        work: &'a Work,
    ) -> BoxFuture<'a, Vec<Announcement>>;
    /// Before the finalizer goes: stop what runs and apply the deletion policy to the replica.
    /// Returns the note of the CleanupComplete Event; `Err`: it cannot finish yet, and why.
    fn cleanup<'a>(
        &'a self,
        obj: &'a ReplicaInstance,
        secrets: &'a dyn Secrets,
    ) -> BoxFuture<'a, Result<String, crate::error::Blocked>>;
}
