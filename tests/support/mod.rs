//! Test support shared by the integration tests.

#![allow(dead_code)]

pub mod fake_apiserver;
pub mod faulty;
pub mod operator;
pub mod registry;
