//! ReplicaInstance: [`reconcile`] (its observe, pure plan and act for the generic shell), and
//! its backends: [`oci`] (a replica registry kept in sync with a primary: inventory,
//! the sync executor and background syncs), with [`plan`] (pure: status, syncs to start and
//! Events from what the sync is doing), [`diff`] (pure: filters and the primary/replica diff)
//! and [`notify`] (registry push notifications); [`tcr`] (Tencent Container Registry replica
//! instances: the TCR API client and its pure plan).

pub mod diff;
pub mod notify;
pub mod oci;
pub mod plan;
pub mod reconcile;
pub mod tcr;
