//! Copy windows (`spec.schedule.window`): whether new copies may start now, and if not when the
//! window opens next. Pure: a function of the window and the time, table-tested across midnight
//! and daylight-saving changes (the IANA database is built in).

use jiff::civil::Time;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::api::v1alpha1::{ImageReplicationSpec, WindowSpec};

/// How a destination held by a closed copy window says so.
pub const NOTE: &str = "outside the copy window";

/// The copy window of the spec, if it is closed at `now`: what a held destination says, and how
/// long until it opens.
pub fn hold(
    spec: &ImageReplicationSpec,
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Option<(String, std::time::Duration)> {
    let w = spec.schedule.as_ref()?.window.as_ref()?;
    let w = parse(w).ok()?;
    let opens = w.closed_until(now.0)?;
    let wait = std::time::Duration::from_secs((opens.as_second() - now.0.as_second()).max(1) as u64);
    Some((format!("{NOTE} ({}); new copies start at {opens}", w.text), wait))
}

/// A parsed daily window.
#[derive(Clone, Debug)]
pub struct Window {
    start: Time,
    end: Time,
    tz: TimeZone,
    /// How the spec says it, for messages: `22:00-06:00 Asia/Shanghai`.
    pub text: String,
}

fn hhmm(s: &str) -> Option<Time> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    Time::new(h.parse().ok()?, m.parse().ok()?, 0, 0).ok()
}

/// Tests' copy window: 22:00 to 06:00 UTC (closed at the test clock's 08:00 start).
#[cfg(test)]
pub fn night() -> Option<crate::api::v1alpha1::ScheduleSpec> {
    Some(crate::api::v1alpha1::ScheduleSpec {
        window: Some(WindowSpec {
            start: "22:00".into(),
            end: "06:00".into(),
            time_zone: None,
        }),
    })
}

/// Parse a window, or say which field is wrong and why.
pub fn parse(w: &WindowSpec) -> Result<Window, (&'static str, String)> {
    let start = hhmm(&w.start).ok_or(("start", format!("{:?} is not a time HH:MM (00:00 to 23:59)", w.start)))?;
    let end = hhmm(&w.end).ok_or(("end", format!("{:?} is not a time HH:MM (00:00 to 23:59)", w.end)))?;
    let zone = w.time_zone.as_deref().unwrap_or("UTC");
    let tz = TimeZone::get(zone).map_err(|_| {
        (
            "timeZone",
            format!("{zone:?} is not an IANA time zone (e.g. Asia/Shanghai)"),
        )
    })?;
    Ok(Window {
        start,
        end,
        tz,
        text: format!("{}-{} {zone}", w.start, w.end),
    })
}

impl Window {
    /// `None`: open at `now`; `Some(t)`: closed, opens at `t`. A start that falls into a
    /// daylight-saving gap opens at the first instant after it.
    pub fn closed_until(&self, now: Timestamp) -> Option<Timestamp> {
        if self.start == self.end || self.open_at(now) {
            return None;
        }
        let local = now.to_zoned(self.tz.clone());
        let date = local.date();
        let day = if local.time() < self.start {
            date
        } else {
            date.checked_add(1.day()).ok()?
        };
        let mut at = day.to_datetime(self.start).to_zoned(self.tz.clone()).ok()?.timestamp();
        // A start inside a daylight-saving gap maps past the gap; the window is open from the
        // gap's end, the first instant whose local time is past the start.
        for _ in 0..180 {
            let before = at.checked_sub(1.minute()).ok()?;
            if before <= now || !self.open_at(before) {
                break;
            }
            at = before;
        }
        Some(at)
    }

    /// Whether local time at `ts` is inside the window.
    fn open_at(&self, ts: Timestamp) -> bool {
        let t = ts.to_zoned(self.tz.clone()).time();
        if self.start < self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start: &str, end: &str, tz: &str) -> Window {
        parse(&WindowSpec {
            start: start.into(),
            end: end.into(),
            time_zone: Some(tz.into()),
        })
        .unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// Open and closed across midnight in Shanghai (UTC+8, no DST), the next opening when closed.
    #[test]
    fn across_midnight() {
        let w = window("22:00", "06:00", "Asia/Shanghai");
        for (now, want) in [
            ("2026-12-03T13:59:00Z", Some("2026-12-03T14:00:00Z")), // 21:59 local
            ("2026-12-03T14:00:00Z", None),                         // 22:00
            ("2026-12-03T21:59:00Z", None),                         // 05:59 next day
            ("2026-12-03T22:00:00Z", Some("2026-12-04T14:00:00Z")), // 06:00: closed till 22:00
            ("2026-12-04T03:00:00Z", Some("2026-12-04T14:00:00Z")), // 11:00
        ] {
            assert_eq!(w.closed_until(at(now)), want.map(at), "at {now}");
        }
        let day = window("09:00", "17:00", "UTC");
        assert_eq!(
            day.closed_until(at("2026-12-03T17:00:00Z")),
            Some(at("2026-12-04T09:00:00Z"))
        );
        assert_eq!(
            day.closed_until(at("2026-12-03T08:59:59Z")),
            Some(at("2026-12-03T09:00:00Z"))
        );
        assert_eq!(day.closed_until(at("2026-12-03T12:00:00Z")), None);
        assert_eq!(
            window("03:00", "03:00", "UTC").closed_until(at("2026-12-03T12:00:00Z")),
            None,
            "always open"
        );
    }

    /// Daylight saving in Berlin: on 2026-03-29 02:00 does not exist (clocks jump to 03:00), on
    /// 2026-10-25 02:00-03:00 happens twice. The window follows local time.
    #[test]
    fn across_daylight_saving() {
        let w = window("02:30", "04:00", "Europe/Berlin");
        // The day the clocks go forward: 02:30 does not exist; the window opens at 03:00 CEST.
        let opens = w.closed_until(at("2026-03-28T23:00:00Z")).unwrap(); // 00:00 CET
        assert_eq!(
            opens,
            at("2026-03-29T01:00:00Z"),
            "03:00 CEST, the first instant after the gap"
        );
        // Summer: 02:30 CEST is 00:30 UTC.
        assert_eq!(
            w.closed_until(at("2026-07-01T00:00:00Z")),
            Some(at("2026-07-01T00:30:00Z"))
        );
        assert_eq!(w.closed_until(at("2026-07-01T01:00:00Z")), None);
        // Winter: 02:30 CET is 01:30 UTC.
        assert_eq!(
            w.closed_until(at("2026-12-03T01:00:00Z")),
            Some(at("2026-12-03T01:30:00Z"))
        );
        // The day the clocks go back: the first 02:30 (CEST, 00:30 UTC).
        assert_eq!(
            w.closed_until(at("2026-10-24T23:00:00Z")),
            Some(at("2026-10-25T00:30:00Z"))
        );
    }

    #[test]
    fn bad_windows_name_their_field() {
        let bad = |s: &str, e: &str, tz: &str| {
            parse(&WindowSpec {
                start: s.into(),
                end: e.into(),
                time_zone: Some(tz.into()),
            })
            .unwrap_err()
            .0
        };
        assert_eq!(bad("24:00", "06:00", "UTC"), "start");
        assert_eq!(bad("22:00", "6:00", "UTC"), "end");
        assert_eq!(bad("22:00", "06:00", "Mars/Olympus"), "timeZone");
    }
}
