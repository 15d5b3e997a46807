//! OpenStack end to end on a real Keystone and real Glance (one per region), started by the
//! suite: streamed copies, sharing, following, restarts.
//!
//! One test binary per harness (issue #32): each suite is a module of it, sharing one build of
//! `support`. Run it with `cargo test --test openstack`.

mod support;

#[path = "suites/vm_openstack.rs"]
mod vm_openstack;
