//! ReplicaInstance: [`reconcile`] (its observe, pure plan and act, for the generic shell and
//! for `replicate -f`), [`provider`] (the trait every backend implements, and the snapshot and
//! work it hands the planner), and the backends: [`oci`] (a replica registry kept in sync with a
//! primary: the pure plan, the sync executor, the diff, push notifications, background syncs) and [`tcr`]
//! (Tencent Container Registry replica instances: the TCR API client and its pure plan).

pub mod oci;
pub mod provider;
pub mod reconcile;
pub mod tcr;
