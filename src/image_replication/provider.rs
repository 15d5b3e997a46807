//! What an ImageReplication provider does for the kind's reconcile, and what it hands the pure
//! planner: [`ImageProvider`] observes (all the I/O of one reconcile, one [`Snapshot`]), carries
//! out the planned [`Work`] and cleans up before the finalizer goes. The provider registry
//! holds one per [`ProviderKind`]: `oci` (in `image_replication/oci/`) and one VM provider per
//! cloud on the shared VM engine (`image_replication/vm/provider.rs`).

use std::collections::HashMap;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::v1alpha1::{ImageReplication, ProviderKind};
use crate::controller::secrets::Secrets;
use crate::image_replication::vm::Account;
use crate::image_replication::vm::plan::{self as vplan, VmPlan};
use crate::plan::{Gate, TaskView};

/// What one reconcile of an ImageReplication saw.
// One snapshot lives per reconcile, for its duration: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Snapshot {
    /// Nothing to observe: the gate is closed before any provider (invalid, suspended, the
    /// provider not built).
    Gated(Gate),
    /// oci: what each destination's copy task is doing, and when each was last verified.
    Oci {
        tasks: HashMap<String, TaskView>,
        checked: HashMap<String, Time>,
        /// Destinations removed from the spec that were stopped (and deleted) since the last
        /// reconcile: region -> the outcome.
        pruned: HashMap<String, Result<(), String>>,
        resync: Duration,
        /// Copy attempts per destination before it is Failed for good.
        max_attempts: i32,
    },
    /// A VM image service: what the cloud and the quota said, and the account read for it.
    Vm {
        gate: Gate,
        seen: vplan::Snapshot,
        account: Result<Account, crate::cloud::ProviderError>,
        /// The accounts that own destinations' copies (`account`), by what their credentials
        /// are known by (`OwnerSpec::credentials_key`).
        owners: crate::image_replication::vm::engine::OtherAccounts,
    },
}

/// What `act` does once the planned status is written.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Work {
    #[default]
    Nothing,
    /// Cancel the object's running copies (suspended, or the spec became invalid).
    CancelAll,
    /// oci: start the copy tasks of these destinations (region, drift check?), and stop those
    /// removed from the spec (`prune`: cancel, and delete the copy under `deletionPolicy:
    /// Delete`).
    Oci {
        start: Vec<(String, bool)>,
        prune: Vec<String>,
    },
    /// VM: the plan whose metrics, starts and cancels `act` carries out.
    Vm(Box<VmPlan>),
}

/// An image service ImageReplication copies between regions.
pub trait ImageProvider: Send + Sync {
    /// The provider kind this implementation serves.
    fn kind(&self) -> ProviderKind;
    /// An object found at start-up, before anything new starts (copies in flight hold their
    /// quota slots).
    fn seed(&self, _obj: &ImageReplication) {}
    /// The object left this process's watch (deleted, or moved to another shard): forget what
    /// is held for it in memory (quota slots, oci copy tasks). Copies in the clouds go on; the
    /// process that takes the object over finds them by their idempotency tokens.
    fn release(&self, _obj: &ImageReplication) {}
    /// All the I/O of one reconcile (`gate`: the object's rules and suspend, already checked).
    fn observe<'a>(
        &'a self,
        obj: &'a ImageReplication,
        gate: Gate,
        secrets: &'a dyn Secrets,
        now: &'a Time,
    ) -> BoxFuture<'a, Snapshot>;
    /// Before the planned status is written: take what the plan granted from what it shares
    /// with other objects and processes (copy slots). False: taken first by another; nothing
    /// is written and the object plans again.
    fn claim<'a>(
        &'a self,
        _obj: &'a ImageReplication,
        _snapshot: &'a Snapshot,
        _work: &'a Work,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async { true })
    }
    /// Start or cancel the planned work once its status is written.
    fn act<'a>(
        &'a self,
        obj: &'a ImageReplication,
        secrets: &'a dyn Secrets,
        snapshot: &'a Snapshot,
        work: &'a Work,
    ) -> BoxFuture<'a, ()>;
    /// Before the finalizer goes: stop what runs and apply the deletion policy. Returns the
    /// note of the CleanupComplete Event; `Err`: it cannot finish yet, and why.
    fn cleanup<'a>(
        &'a self,
        obj: &'a ImageReplication,
        secrets: &'a dyn Secrets,
    ) -> BoxFuture<'a, Result<String, crate::error::Blocked>>;
}
