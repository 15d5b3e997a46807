//! `source.follow` and `source.checkInterval` as the spec states them: whether an object follows
//! a name pattern and how often its source is looked up again. Apart from the planner of a newer source (`vm::follow`)
//! (which plans what a newer source does) so that validation reads them without the planner.

use std::time::Duration;

use crate::api::v1alpha1::SourceSpec;

/// `source.checkInterval` when the spec does not say.
pub const DEFAULT_CHECK: Duration = Duration::from_secs(600);
/// The shortest `source.checkInterval`: listing a cloud's images more often buys nothing and
/// costs request budget.
pub const MIN_CHECK: Duration = Duration::from_secs(60);
/// Whether the source follows a name pattern.
pub fn following(spec: &SourceSpec) -> bool {
    spec.follow.is_some()
}

/// `source.checkInterval` as a duration: `<n>s`, `<n>m` or `<n>h`, at least [`MIN_CHECK`].
pub fn check_interval(spec: &SourceSpec) -> Result<Duration, String> {
    let Some(text) = spec.check_interval.as_deref() else {
        return Ok(DEFAULT_CHECK);
    };
    let bad = || format!("source.checkInterval {text:?} must be a duration such as 90s, 10m or 1h");
    let (n, unit) = text.split_at(text.len().saturating_sub(1));
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60).ok_or_else(bad)?,
        "h" => n.checked_mul(3600).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    let d = Duration::from_secs(secs);
    if d < MIN_CHECK {
        return Err(format!(
            "source.checkInterval {text:?} is shorter than the minimum of {}s",
            MIN_CHECK.as_secs()
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_intervals_parse_with_a_floor() {
        let mut s = SourceSpec::default();
        assert_eq!(check_interval(&s), Ok(DEFAULT_CHECK));
        for (t, want) in [("90s", 90), ("10m", 600), ("2h", 7200)] {
            s.check_interval = Some(t.into());
            assert_eq!(check_interval(&s), Ok(Duration::from_secs(want)));
        }
        for t in ["30s", "ten", "5d", "", "m"] {
            s.check_interval = Some(t.into());
            let e = check_interval(&s).unwrap_err();
            assert!(e.contains("source.checkInterval"), "{e}");
        }
    }
}
