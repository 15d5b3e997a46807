//! ImageReplication: [`reconcile`] (its observe, pure plan and act for the generic shell), and
//! its backends: [`oci`] (registry to registry through the copy engine of
//! [`crate::oci`], planned by the pure [`plan`]) and [`vm`] (cloud image services: the pure rules and planner, the per-account
//! quota, the engine shell, and one module per cloud under [`vm::providers`]).

pub mod oci;
pub mod plan;
pub mod reconcile;
pub mod vm;
