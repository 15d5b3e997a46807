//! Tests that need no server of their own, or only short-lived ones: CEL, CRD drift, the chart, the
//! SDK conformance of signers and codes, fuzz regressions, the layout rules, the operator binary,
//! security, the image.
//!
//! One test binary per harness (issue #32): each suite is a module of it, sharing one build of
//! `support`. Run one suite with `cargo test --test fast <suite>::`.

mod support;

#[path = "suites/cel.rs"]
mod cel;
#[path = "suites/chart.rs"]
mod chart;
#[path = "suites/conformance.rs"]
mod conformance;
#[path = "suites/crds.rs"]
mod crds;
#[path = "suites/fuzz.rs"]
mod fuzz;
#[path = "suites/image.rs"]
mod image;
#[path = "suites/layout.rs"]
mod layout;
#[path = "suites/operator.rs"]
mod operator;
#[path = "suites/security.rs"]
mod security;
