//! ImageReplication: [`reconcile`] (its observe, pure plan and act, for the generic shell and
//! for `replicate -f`), [`provider`] (the trait every provider implements, and the snapshot and
//! work it hands the planner), and the providers: [`oci`] (registry to registry through the copy
//! engine of [`crate::oci`], planned by the pure [`oci::plan`]) and [`vm`] (cloud image services: the
//! pure rules and planner, the per-account quota, the engine shell, one provider per cloud on
//! it, and one module per cloud under [`vm::providers`]).

pub mod oci;
pub mod over_time;
pub mod provider;
pub mod publish;
pub mod reconcile;
pub mod vm;
pub mod window;
