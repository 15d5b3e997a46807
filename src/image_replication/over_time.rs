//! Images over time, for both kinds and apart from their planners (so that validation and the
//! metrics read them without one): `source.follow` and `source.checkInterval` as the spec
//! states them, and which regions are outdated (no Available copy of the current source).

use std::time::Duration;

use crate::api::v1alpha1::{DestinationPhase, ImageReplicationStatus, SourceSpec, SourceStatus};

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

/// When the source became what it is: what the old status says while it is the same source
/// (`same`: the same image id, oci: the same digest), now when it changed.
pub fn resolved_at(
    old: Option<&SourceStatus>,
    same: impl Fn(&SourceStatus) -> bool,
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    match old {
        Some(o) if same(o) => o.resolved_at.clone().or_else(|| Some(now.clone())),
        _ => Some(now.clone()),
    }
}

/// Per destination: whether it is outdated — no Available copy of the current source (VM: the
/// copy's `sourceImageId`, or the status's source for a copy made before it was recorded; oci:
/// the digest the source tag last resolved to) — and if so since when (the current source's
/// `resolvedAt`, Unix seconds; 0 when unknown).
pub fn outdated(status: &ImageReplicationStatus) -> Vec<(String, Option<i64>)> {
    let src = status.source.as_ref();
    let current = src.and_then(|s| s.image_id.as_deref());
    let digest = src.and_then(|s| s.digest.as_deref()).filter(|_| current.is_none());
    let since = src.and_then(|s| s.resolved_at.as_ref()).map(|t| t.0.as_second());
    status
        .destinations
        .iter()
        .map(|d| {
            let of_current = match digest {
                Some(dg) => d.digest.as_deref() == Some(dg),
                None => d.source_image_id.as_deref().or(current) == current,
            };
            let fresh = d.phase == DestinationPhase::Available && of_current;
            (d.region.clone(), if fresh { None } else { Some(since.unwrap_or(0)) })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1alpha1::DestinationStatus;

    fn dest(phase: DestinationPhase, source: &str) -> DestinationStatus {
        DestinationStatus {
            region: "r2".into(),
            phase,
            source_image_id: Some(source.into()),
            digest: Some(format!("sha256:{source}")),
            ..Default::default()
        }
    }

    #[test]
    fn a_region_is_outdated_until_it_has_an_available_copy_of_the_current_source() {
        let mut st = ImageReplicationStatus {
            source: Some(crate::api::v1alpha1::SourceStatus {
                image_id: Some("s2".into()),
                resolved_at: Some(crate::plan::test_at(100)),
                ..Default::default()
            }),
            destinations: vec![
                dest(DestinationPhase::Available, "s2"),
                dest(DestinationPhase::Available, "s1"),
            ],
            ..Default::default()
        };
        st.destinations[1].region = "r3".into();
        let since = crate::plan::test_at(100).0.as_second();
        assert_eq!(
            outdated(&st),
            vec![("r2".to_string(), None), ("r3".to_string(), Some(since))]
        );
        st.destinations[0].phase = DestinationPhase::Copying;
        assert_eq!(outdated(&st)[0], ("r2".to_string(), Some(since)));
        // A fixed source (no copy source recorded): the status's source.
        st.destinations[1].source_image_id = None;
        assert_eq!(outdated(&st)[1], ("r3".to_string(), None));
    }

    #[test]
    fn an_oci_region_is_outdated_until_it_holds_the_digest_the_tag_last_resolved_to() {
        let st = ImageReplicationStatus {
            source: Some(crate::api::v1alpha1::SourceStatus {
                digest: Some("sha256:s2".into()),
                resolved_at: Some(crate::plan::test_at(100)),
                ..Default::default()
            }),
            destinations: vec![
                dest(DestinationPhase::Available, "s2"),
                DestinationStatus {
                    region: "r3".into(),
                    ..dest(DestinationPhase::Available, "s1")
                },
            ],
            ..Default::default()
        };
        let since = crate::plan::test_at(100).0.as_second();
        assert_eq!(
            outdated(&st),
            vec![("r2".to_string(), None), ("r3".to_string(), Some(since))]
        );
    }

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
