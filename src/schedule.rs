//! Drift-check schedules: each key's checks lock onto its own phase of the period, so the checks
//! of many objects spread evenly over it whenever they were created or copied. Pure time math,
//! shared by the planners and the task registry.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The phase of `key` within `period`: each key's drift checks fall at `phase + k * period`
/// (absolute time), so the checks of many objects spread evenly over the period whenever the
/// objects were created or copied.
fn phase(key: &str, period: std::time::Duration) -> i64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % period.as_secs().max(1)) as i64
}

/// The last phase point of `key` at or before `now`: where the check history of a copy this
/// process has not checked yet is anchored when it starts, so its first check falls at the
/// next phase point — after a restart the checks spread over the period instead of all falling
/// due at once.
pub fn spread_anchor(key: &str, now: &Time, period: std::time::Duration) -> Time {
    let p = period.as_secs().max(1) as i64;
    let t = now.0.as_second();
    let back = (t - phase(key, period)).rem_euclid(p);
    Time(k8s_openapi::jiff::Timestamp::from_second(t - back).unwrap_or(now.0))
}

/// When the next drift check of `key` is due after one at `last`: the first phase point at
/// least half a period later. Checks lock onto the key's phase (one period apart) instead of
/// following when each copy happened to complete.
pub fn next_check(key: &str, last: &Time, period: std::time::Duration) -> Time {
    let p = period.as_secs().max(1) as i64;
    let earliest = last.0.as_second() + p / 2;
    let ahead = (phase(key, period) - earliest).rem_euclid(p);
    Time(k8s_openapi::jiff::Timestamp::from_second(earliest + ahead).unwrap_or(last.0))
}
