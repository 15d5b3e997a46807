//! ReplicaInstance backends: [`oci`] (a replica registry kept in sync with a primary: inventory,
//! the sync executor and background syncs), with [`diff`] (pure: filters and the
//! primary/replica diff) and [`notify`] (registry push notifications); [`tcr`] (Tencent
//! Container Registry replica instances: the TCR API client and its pure plan).

pub mod diff;
pub mod notify;
pub mod oci;
pub mod tcr;
