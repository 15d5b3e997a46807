//! Images over time, pure: `source.follow: Newest` (which image of a name pattern is the
//! source now), what each destination does when a newer source appears, and `retention.keep`
//! (which copies of earlier sources go). The engine lists the candidates and deletes what
//! [`retire`] names; everything here is a function of the status, what was listed and now.
//!
//! A copy in flight when a newer source appears is **cancelled** where the cloud can cancel it
//! (it would be superseded the moment it finished, and its partial image goes with it): the
//! newer source starts at once. Where the cloud cannot cancel (Huawei IMS) it finishes and is
//! then kept as a previous copy, subject to `retention.keep` like any other.

use super::{ImageInfo, ImageState, ProviderError};
use crate::api::v1alpha1::{DeletionPolicy, DestinationPhase, DestinationStatus, ImageReplicationSpec, PreviousCopy};
pub use crate::image_replication::over_time::{
    DEFAULT_CHECK, MIN_CHECK, check_interval, following, outdated, resolved_at,
};
use crate::plan::Announcement;

/// Without `retention.keep`, at most this many earlier copies per region are listed in
/// `status.previous` (older ones are kept in the cloud but no longer listed, with an Event).
pub const LISTED_WITHOUT_KEEP: usize = 10;

/// A creation time as the clouds write it (RFC 3339, or `YYYY-MM-DD HH:MM:SS` in UTC).
fn created(text: &str) -> Option<jiff::Timestamp> {
    text.parse::<jiff::Timestamp>().ok().or_else(|| {
        text.parse::<jiff::civil::DateTime>()
            .ok()
            .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|z| z.timestamp())
    })
}

/// The newest Available image `pattern` names (`follows`: the provider's match, a glob on the
/// name), among what the cloud listed. None matching is "not found"; two newest with the same
/// creation time is an error naming both (a guess could copy the wrong one everywhere).
pub fn newest(
    pattern: &str,
    region: &str,
    listed: Vec<ImageInfo>,
    follows: impl Fn(&ImageInfo) -> bool,
) -> Result<ImageInfo, ProviderError> {
    let mut found: Vec<(jiff::Timestamp, ImageInfo)> = listed
        .into_iter()
        .filter(|i| follows(i) && i.state == Some(ImageState::Available))
        .filter_map(|i| Some((created(i.created_at.as_deref()?)?, i)))
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    match found.as_slice() {
        [] => Err(ProviderError::not_found(format!(
            "no available image matches {pattern:?} in {region}"
        ))),
        [(t, a), (u, b), ..] if t == u => Err(ProviderError::permanent(format!(
            "the newest images matching {pattern:?} in {region}, {} and {}, were both created at {t}; delete or rename one, or set source.imageId",
            a.id, b.id
        ))),
        _ => Ok(found.swap_remove(0).1),
    }
}

/// The source image a destination's copy is of: the one recorded with it, else (a status
/// written before `follow` recorded it) the source the status names.
fn copy_source<'a>(s: &'a DestinationStatus, old_source: Option<&'a str>) -> Option<&'a str> {
    s.source_image_id.as_deref().or(old_source)
}

/// What one destination does now that `current` is the source: an Available copy of an
/// earlier source becomes a previous copy and a new copy is due; a copy in flight is cancelled
/// (`can_cancel`) or left to finish; a destination with no copy simply takes the new source.
/// `Some(region)`: cancel its copy.
pub fn supersede(
    s: &mut DestinationStatus,
    current: &str,
    old_source: Option<&str>,
    can_cancel: bool,
    previous: &mut Vec<PreviousCopy>,
) -> Option<String> {
    let of = copy_source(s, old_source).map(str::to_string)?;
    if of == current {
        return None;
    }
    let note = format!("copying the newer source image {current} (replaces {of})");
    match s.phase {
        DestinationPhase::Available => {
            if let Some(id) = s.image_id.clone() {
                previous.insert(
                    0,
                    PreviousCopy {
                        region: s.region.clone(),
                        image_id: id,
                        source_image_id: Some(of),
                        completed_at: s.completed_at.clone(),
                        owner: s.owner.clone(),
                        shared_with: s
                            .shares
                            .iter()
                            .filter(|x| !super::share::call_failed(x))
                            .map(|x| x.account.clone())
                            .collect(),
                        message: None,
                        failed: false,
                    },
                );
            }
            fresh(s, note);
            None
        }
        DestinationPhase::Starting | DestinationPhase::Copying if can_cancel => {
            s.phase = DestinationPhase::Cancelling;
            s.message = Some(format!(
                "a newer source image {current} replaces {of}: cancelling this copy of it"
            ));
            Some(s.region.clone())
        }
        DestinationPhase::Starting | DestinationPhase::Copying => {
            s.message = Some(format!(
                "a newer source image {current} replaces {of}; this copy of it cannot be cancelled: it finishes, is kept as an earlier copy, then the newer one starts"
            ));
            None
        }
        DestinationPhase::Cancelling => None,
        DestinationPhase::Pending
        | DestinationPhase::Queued
        | DestinationPhase::Failed
        | DestinationPhase::Cancelled => {
            fresh(s, note);
            None
        }
    }
}

/// A destination about to copy a new source: no copy, no attempts (the new source's tokens
/// differ from the old one's), no shares (they belonged to the old copy).
fn fresh(s: &mut DestinationStatus, note: String) {
    *s = DestinationStatus {
        region: s.region.clone(),
        owner: s.owner.clone(),
        message: Some(note),
        ..Default::default()
    };
}

/// The previous copies to delete now: those of a destination removed from the spec under
/// `deletionPolicy: Delete`, and under `retention.keep` per region the oldest beyond `keep`,
/// counting the current copy once it is Available (so a current copy still copying never
/// costs the last good one). Without `keep`, none of a listed destination.
pub fn retire(
    spec: &ImageReplicationSpec,
    destinations: &[DestinationStatus],
    previous: &[PreviousCopy],
) -> Vec<PreviousCopy> {
    let listed = |region: &str| spec.destinations.iter().any(|d| d.region == region);
    // Failed copies go whatever the retention; those of a removed destination under Delete.
    let mut out: Vec<PreviousCopy> = previous
        .iter()
        .filter(|p| p.failed || (!listed(&p.region) && spec.deletion_policy == DeletionPolicy::Delete))
        .cloned()
        .collect();
    let Some(keep) = spec.retention.as_ref().and_then(|r| r.keep) else {
        return out;
    };
    let keep = keep.max(1) as usize;
    let mut regions: Vec<&str> = Vec::new();
    let kept: Vec<&PreviousCopy> = previous.iter().filter(|p| listed(&p.region) && !p.failed).collect();
    for p in &kept {
        if !regions.contains(&p.region.as_str()) {
            regions.push(&p.region);
        }
    }
    for region in regions {
        let current = destinations
            .iter()
            .any(|d| d.region == region && d.phase == DestinationPhase::Available);
        let room = keep.saturating_sub(usize::from(current));
        out.extend(
            kept.iter()
                .filter(|p| p.region == region)
                .skip(room)
                .map(|p| (*p).clone()),
        );
    }
    out
}

/// Previous copies of a destination removed from the spec under `deletionPolicy: Retain` are
/// kept in the cloud and no longer listed, each with an Event.
pub fn forget_removed(spec: &ImageReplicationSpec, previous: &mut Vec<PreviousCopy>, events: &mut Vec<Announcement>) {
    if spec.deletion_policy == DeletionPolicy::Delete {
        return;
    }
    previous.retain(|p| {
        if p.failed || spec.destinations.iter().any(|d| d.region == p.region) {
            return true;
        }
        events.push(Announcement {
            warning: false,
            reason: "DestinationRemoved".into(),
            note: format!(
                "{}: removed from spec.destinations; its earlier copy {} is kept (deletionPolicy Retain)",
                p.region, p.image_id
            ),
        });
        false
    });
}

/// The Event of a newly followed source: which image replaced which.
pub fn source_changed(spec: &ImageReplicationSpec, source: Option<&ImageInfo>, was: &str) -> Announcement {
    let (id, name, created) = source.map_or(("?", "?", "?"), |s| {
        (s.id.as_str(), s.name.as_str(), s.created_at.as_deref().unwrap_or("?"))
    });
    Announcement {
        warning: false,
        reason: "SourceChanged".into(),
        note: format!(
            "the newest image matching {:?} in {} is now {id} ({name}, created {created}), replacing {was}; copying it to {} destinations",
            spec.source.image_name.as_deref().unwrap_or(""),
            spec.source.region,
            spec.destinations.len()
        ),
    }
}

/// The Event of a deleted earlier copy.
pub fn retired_event(spec: &ImageReplicationSpec, c: &PreviousCopy) -> Announcement {
    if c.failed {
        return Announcement {
            warning: false,
            reason: "FailedCopyDeleted".into(),
            note: format!(
                "{}: deleted image {}, a copy that failed ({})",
                c.region,
                c.image_id,
                c.message.as_deref().unwrap_or("no reason recorded")
            ),
        };
    }
    let why = match spec.retention.as_ref().and_then(|r| r.keep) {
        Some(k) if spec.destinations.iter().any(|d| d.region == c.region) => format!("retention.keep is {k}"),
        _ => "its destination was removed (deletionPolicy Delete)".into(),
    };
    Announcement {
        warning: false,
        reason: "PreviousCopyDeleted".into(),
        note: format!(
            "{}: deleted image {} (the copy of {}): {why}",
            c.region,
            c.image_id,
            c.source_image_id.as_deref().unwrap_or("an earlier source")
        ),
    }
}

/// Without `retention.keep`: previous copies beyond [`LISTED_WITHOUT_KEEP`] per region are no
/// longer listed (kept in the cloud), each with an Event.
pub fn forget_beyond_listing(
    spec: &ImageReplicationSpec,
    previous: &mut Vec<PreviousCopy>,
    events: &mut Vec<Announcement>,
) {
    if spec.retention.as_ref().and_then(|r| r.keep).is_some() {
        return;
    }
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    previous.retain(|p| {
        if p.failed {
            return true; // listed until it is deleted
        }
        let n = seen.entry(p.region.clone()).or_default();
        *n += 1;
        if *n <= LISTED_WITHOUT_KEEP {
            return true;
        }
        events.push(Announcement {
            warning: false,
            reason: "PreviousCopyUnlisted".into(),
            note: format!(
                "{}: image {} is kept but no longer listed in status.previous (more than {LISTED_WITHOUT_KEEP} earlier copies and no retention.keep); the operator will not delete it",
                p.region, p.image_id
            ),
        });
        false
    });
}

/// Whether `s` is a copy in flight of another source than `current` that cannot be cancelled:
/// it goes on, and says so.
pub fn superseded_in_flight(s: &DestinationStatus, current: &str, old_source: Option<&str>) -> bool {
    let in_flight = matches!(
        s.phase,
        DestinationPhase::Starting | DestinationPhase::Copying | DestinationPhase::Cancelling
    );
    in_flight && copy_source(s, old_source).is_some_and(|of| of != current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1alpha1::{RetentionSpec, SharePhase, ShareStatus};
    use crate::image_replication::vm::glob::glob_match;

    fn img(id: &str, name: &str, created: &str) -> ImageInfo {
        ImageInfo {
            id: id.into(),
            name: name.into(),
            state: Some(ImageState::Available),
            created_at: Some(created.into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_newest_available_match_is_the_source_and_a_tie_is_an_error() {
        let mut creating = img("i-4", "golden-4", "2026-12-04T00:00:00Z");
        creating.state = Some(ImageState::Creating);
        let listed = vec![
            img("i-1", "golden-1", "2026-12-01T00:00:00Z"),
            img("i-3", "golden-3", "2026-12-03 00:00:00"),
            img("i-x", "other-9", "2026-12-09T00:00:00Z"),
            creating,
            img("i-2", "golden-2", "2026-12-02T00:00:00+08:00"),
        ];
        assert_eq!(
            newest("golden-*", "r1", listed.clone(), |i| glob_match("golden-*", &i.name))
                .unwrap()
                .id,
            "i-3"
        );
        let mut tie = listed.clone();
        tie.push(img("i-3b", "golden-3b", "2026-12-03T00:00:00Z"));
        let e = newest("golden-*", "r1", tie, |i| glob_match("golden-*", &i.name)).unwrap_err();
        assert!(!e.retryable && e.message.contains("i-3 and i-3b"), "{}", e.message);
        let e = newest("nothing-*", "r1", listed, |i| glob_match("nothing-*", &i.name)).unwrap_err();
        assert!(e.not_found && e.message.contains("no available image matches \"nothing-*\" in r1"));
    }

    fn dest(phase: DestinationPhase, source: &str) -> DestinationStatus {
        DestinationStatus {
            region: "r2".into(),
            phase,
            image_id: Some(format!("copy-of-{source}")),
            source_image_id: Some(source.into()),
            attempts: 2,
            client_token: Some("t".into()),
            shares: vec![ShareStatus {
                account: "acct-b".into(),
                state: SharePhase::Shared,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_newer_source_moves_an_available_copy_to_previous_and_starts_afresh() {
        let mut prev = Vec::new();
        let mut s = dest(DestinationPhase::Available, "src-1");
        assert_eq!(supersede(&mut s, "src-2", None, true, &mut prev), None);
        assert_eq!(s.phase, DestinationPhase::Pending);
        assert_eq!((s.attempts, s.client_token.as_deref(), s.shares.len()), (0, None, 0));
        assert_eq!(prev.len(), 1);
        assert_eq!(prev[0].image_id, "copy-of-src-1");
        assert_eq!(prev[0].source_image_id.as_deref(), Some("src-1"));
        assert_eq!(prev[0].shared_with, vec!["acct-b".to_string()]);
        // The same source again changes nothing.
        assert_eq!(supersede(&mut s, "src-2", Some("src-2"), true, &mut prev), None);
        assert_eq!(prev.len(), 1);
    }

    #[test]
    fn a_copy_in_flight_of_an_older_source_is_cancelled_where_the_cloud_can() {
        let mut prev = Vec::new();
        let mut s = dest(DestinationPhase::Copying, "src-1");
        assert_eq!(supersede(&mut s, "src-2", None, true, &mut prev).as_deref(), Some("r2"));
        assert_eq!(s.phase, DestinationPhase::Cancelling);
        // Huawei IMS cannot cancel: it finishes, and says nothing is lost.
        let mut s = dest(DestinationPhase::Copying, "src-1");
        assert_eq!(supersede(&mut s, "src-2", None, false, &mut prev), None);
        assert_eq!(s.phase, DestinationPhase::Copying);
        assert!(superseded_in_flight(&s, "src-2", None));
        assert!(prev.is_empty());
        // A destination that had not started takes the new source.
        let mut s = dest(DestinationPhase::Failed, "src-1");
        supersede(&mut s, "src-2", None, true, &mut prev);
        assert_eq!((s.phase, s.attempts), (DestinationPhase::Pending, 0));
        // A status written before follow recorded the copy's source: the status's source.
        let mut s = dest(DestinationPhase::Available, "x");
        s.source_image_id = None;
        supersede(&mut s, "src-2", Some("src-1"), true, &mut prev);
        assert_eq!(prev[0].source_image_id.as_deref(), Some("src-1"));
    }

    fn prev(region: &str, id: &str) -> PreviousCopy {
        PreviousCopy {
            region: region.into(),
            image_id: id.into(),
            ..Default::default()
        }
    }

    fn spec() -> ImageReplicationSpec {
        serde_yaml::from_str(
            "provider: {kind: alibaba}\nsource: {region: r1, imageName: golden-*, follow: Newest}\ndestinations: [{region: r2}, {region: r3}]",
        )
        .unwrap()
    }

    #[test]
    fn retention_keeps_n_counting_the_current_copy_once_available() {
        let mut spec = spec();
        let previous = vec![prev("r2", "c3"), prev("r2", "c2"), prev("r2", "c1"), prev("r3", "d1")];
        let mut dests = vec![
            dest(DestinationPhase::Available, "s4"),
            dest(DestinationPhase::Copying, "s4"),
        ];
        dests[1].region = "r3".into();
        assert!(retire(&spec, &dests, &previous).is_empty(), "no keep: keep all");
        spec.retention = Some(RetentionSpec { keep: Some(2) });
        let ids: Vec<_> = retire(&spec, &dests, &previous)
            .into_iter()
            .map(|p| p.image_id)
            .collect();
        assert_eq!(
            ids,
            vec!["c2", "c1"],
            "r2: current + c3 kept; r3: still copying, d1 kept"
        );
        spec.retention = Some(RetentionSpec { keep: Some(1) });
        let ids: Vec<_> = retire(&spec, &dests, &previous)
            .into_iter()
            .map(|p| p.image_id)
            .collect();
        assert_eq!(
            ids,
            vec!["c3", "c2", "c1"],
            "keep 1: only the current copy in r2; r3's d1 until its copy is Available"
        );
        // A destination removed from the spec: its earlier copies go under Delete, are
        // forgotten (kept) under Retain.
        spec.destinations.truncate(1);
        let ids: Vec<_> = retire(&spec, &dests, &previous)
            .into_iter()
            .map(|p| p.image_id)
            .collect();
        assert_eq!(ids, vec!["c3", "c2", "c1"], "Retain: r3's d1 is not deleted");
        let (mut listed, mut events) = (previous.clone(), Vec::new());
        forget_removed(&spec, &mut listed, &mut events);
        assert_eq!((listed.len(), events.len()), (3, 1));
        assert!(
            events[0].note.contains("d1 is kept (deletionPolicy Retain)"),
            "{}",
            events[0].note
        );
        spec.deletion_policy = DeletionPolicy::Delete;
        let ids: Vec<_> = retire(&spec, &dests, &previous)
            .into_iter()
            .map(|p| p.image_id)
            .collect();
        assert_eq!(ids, vec!["d1", "c3", "c2", "c1"]);
    }

    #[test]
    fn without_keep_the_listing_is_bounded_and_says_so() {
        let spec = spec();
        let mut previous: Vec<PreviousCopy> = (0..12).map(|i| prev("r2", &format!("c{i}"))).collect();
        let mut events = Vec::new();
        forget_beyond_listing(&spec, &mut previous, &mut events);
        assert_eq!(previous.len(), LISTED_WITHOUT_KEEP);
        assert_eq!(events.len(), 2);
        assert!(events[0].note.contains("c10 is kept but no longer listed"));
    }
}
