//! When a message may go: quiet hours in the shopper's time zone, and the frequency
//! cap over a rolling window. Both only ever move a message later, never drop it.

use chrono::{Duration, NaiveTime, TimeZone as _, Timelike};
use serde::{Deserialize, Serialize};

use crate::values::TimeZone;

/// A daily window in local time during which nothing is sent, `[start, end)` in
/// minutes after midnight. `start > end` crosses midnight (22:00–08:00);
/// `start == end` is no window at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietHours {
    pub start_minute: u16,
    pub end_minute: u16,
}

impl QuietHours {
    /// Parses `"22:00"` and `"08:00"`.
    pub fn parse(start: &str, end: &str) -> Option<QuietHours> {
        let m = |s: &str| -> Option<u16> {
            let t = NaiveTime::parse_from_str(s.trim(), "%H:%M").ok()?;
            u16::try_from(t.hour() * 60 + t.minute()).ok()
        };
        Some(QuietHours {
            start_minute: m(start)?,
            end_minute: m(end)?,
        })
    }

    pub fn format(minute: u16) -> String {
        format!("{:02}:{:02}", minute / 60, minute % 60)
    }

    fn contains(&self, minute_of_day: u32) -> bool {
        let (s, e, m) = (
            u32::from(self.start_minute),
            u32::from(self.end_minute),
            minute_of_day,
        );
        match s.cmp(&e) {
            std::cmp::Ordering::Less => s <= m && m < e,
            std::cmp::Ordering::Greater => m >= s || m < e,
            std::cmp::Ordering::Equal => false,
        }
    }

    /// Whether `t_ms` falls inside the quiet window in `tz`.
    pub fn is_quiet(&self, t_ms: i64, tz: TimeZone) -> bool {
        let Some(utc) = chrono::DateTime::from_timestamp_millis(t_ms) else {
            return false;
        };
        let local = utc.with_timezone(&tz.tz());
        self.contains(local.hour() * 60 + local.minute())
    }

    /// The earliest instant at or after `t_ms` outside the quiet window in `tz`.
    pub fn next_allowed(&self, t_ms: i64, tz: TimeZone) -> i64 {
        if !self.is_quiet(t_ms, tz) {
            return t_ms;
        }
        let Some(utc) = chrono::DateTime::from_timestamp_millis(t_ms) else {
            return t_ms;
        };
        let local = utc.with_timezone(&tz.tz()).naive_local();
        let minute = local.hour() * 60 + local.minute();
        let end = NaiveTime::from_hms_opt(
            u32::from(self.end_minute) / 60,
            u32::from(self.end_minute) % 60,
            0,
        )
        .unwrap_or(NaiveTime::MIN);
        // Inside a window that crosses midnight and before midnight: it ends tomorrow.
        let day = if self.start_minute > self.end_minute && minute >= u32::from(self.start_minute) {
            local.date() + Duration::days(1)
        } else {
            local.date()
        };
        let mut end_local = day.and_time(end);
        // A daylight-saving gap can swallow the end time; the first instant after the
        // gap is the end then.
        for _ in 0..180 {
            match tz.tz().from_local_datetime(&end_local).earliest() {
                Some(t) => return t.timestamp_millis().max(t_ms),
                None => end_local += Duration::minutes(1),
            }
        }
        t_ms
    }
}

/// At most `max_messages` back-in-stock messages per shopper in any window of
/// `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrequencyCap {
    pub max_messages: u32,
    pub window_ms: i64,
}

impl FrequencyCap {
    /// Whether one more message at `t` keeps every window containing `t` within
    /// the cap, given the shopper's other messages (sent or scheduled) at `times`.
    pub fn fits(&self, t: i64, times: &[i64]) -> bool {
        let w = self.window_ms.max(1);
        let max = i64::from(self.max_messages);
        // Windows [a, a + w) containing t; the fullest starts at t - w + 1 or at a
        // message inside (t - w, t].
        let starts = std::iter::once(t.saturating_sub(w - 1)).chain(
            times
                .iter()
                .copied()
                .filter(|m| *m > t.saturating_sub(w) && *m <= t),
        );
        starts.into_iter().all(|a| {
            let end = a.saturating_add(w);
            let count = times.iter().filter(|m| **m >= a && **m < end).count() as i64;
            count < max
        })
    }

    /// The earliest instant at or after `t` at which one more message fits.
    pub fn next_slot(&self, t: i64, times: &[i64]) -> i64 {
        if self.max_messages == 0 {
            return t;
        }
        let mut candidates: Vec<i64> = std::iter::once(t)
            .chain(
                times
                    .iter()
                    .map(|m| m.saturating_add(self.window_ms.max(1)))
                    .filter(|c| *c > t),
            )
            .collect();
        candidates.sort_unstable();
        candidates
            .iter()
            .copied()
            .find(|c| self.fits(*c, times))
            .unwrap_or_else(|| {
                times
                    .iter()
                    .copied()
                    .max()
                    .unwrap_or(t)
                    .saturating_add(self.window_ms.max(1))
                    .max(t)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: i64 = 3_600_000;

    fn ny() -> TimeZone {
        TimeZone::parse("America/New_York").expect("tz")
    }

    #[test]
    fn quiet_hours_crossing_midnight_defer_to_the_local_morning() {
        let q = QuietHours::parse("22:00", "08:00").expect("valid");
        // 2026-03-02 03:30 UTC is 22:30 on 1 March in New York (EST, UTC-5).
        let t = 1_772_422_200_000;
        assert!(q.is_quiet(t, ny()));
        // 08:00 New York on 2 March is 13:00 UTC.
        assert_eq!(q.next_allowed(t, ny()), 1_772_456_400_000);
        // The same instant is 03:30 in UTC: also quiet, ending at 08:00 UTC.
        assert_eq!(q.next_allowed(t, TimeZone::UTC), 1_772_438_400_000);
        // Mid-afternoon is not quiet.
        assert_eq!(q.next_allowed(t + 12 * H, ny()), t + 12 * H);
    }

    #[test]
    fn quiet_hours_survive_a_daylight_saving_gap() {
        // Window 01:00–02:30 in New York; on 2026-03-08 clocks jump 02:00 → 03:00, so
        // 02:30 does not exist that night: the window ends at 03:00 EDT (07:00 UTC).
        let q = QuietHours::parse("01:00", "02:30").expect("valid");
        let t = 1_772_950_800_000; // 2026-03-08 06:20 UTC = 01:20 EST
        assert!(q.is_quiet(t, ny()));
        assert_eq!(q.next_allowed(t, ny()), t + 40 * 60_000);
    }

    #[test]
    fn cap_defers_to_when_the_oldest_message_leaves_the_window() {
        let cap = FrequencyCap {
            max_messages: 2,
            window_ms: 24 * H,
        };
        assert_eq!(cap.next_slot(10 * H, &[H, 5 * H]), 25 * H);
        assert_eq!(cap.next_slot(10 * H, &[H]), 10 * H);
        // A message already scheduled later in the window counts too.
        assert_eq!(cap.next_slot(10 * H, &[H, 20 * H]), 25 * H);
    }

    proptest! {
        #[test]
        fn next_allowed_is_never_quiet_and_never_earlier(
            t in 1_700_000_000_000i64..1_900_000_000_000,
            start in 0u16..1440, end in 0u16..1440,
            zone in prop::sample::select(vec!["UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata", "Australia/Lord_Howe", "Pacific/Chatham"]),
        ) {
            let q = QuietHours { start_minute: start, end_minute: end };
            let tz = TimeZone::parse(zone).expect("tz");
            let n = q.next_allowed(t, tz);
            prop_assert!(n >= t);
            prop_assert!(!q.is_quiet(n, tz), "{} quiet in {}", n, zone);
            prop_assert!(n - t <= 26 * H);
            if !q.is_quiet(t, tz) { prop_assert_eq!(n, t); }
            // Nothing earlier than n (by minute) after t is allowed.
            let mut probe = t;
            while probe + 60_000 <= n {
                prop_assert!(q.is_quiet(probe, tz), "{} allowed before {}", probe, n);
                probe += 60_000 * 17;
            }
        }

        #[test]
        fn next_slot_keeps_every_window_within_the_cap(
            t in 0i64..100 * H,
            times in prop::collection::vec(0i64..100 * H, 0..8),
            max in 1u32..4, window_h in 1i64..30,
        ) {
            let cap = FrequencyCap { max_messages: max, window_ms: window_h * H };
            let s = cap.next_slot(t, &times);
            prop_assert!(s >= t);
            prop_assert!(cap.fits(s, &times));
            if cap.fits(t, &times) { prop_assert_eq!(s, t); }
        }
    }
}
