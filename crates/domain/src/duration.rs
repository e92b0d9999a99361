//! LiteLLM's duration strings (`30s`, `10m`, `1h`, `7d`, `2w`, `1mo`, `daily`, `monthly`):
//! how long a key lives (`duration`) and when a budget resets (`budget_duration`).
//!
//! Expiry is exact (now + duration). Budget resets are aligned as LiteLLM aligns them, in
//! UTC: `1d` at the next midnight, `7d`/`1w` next Monday, `30d`/`1mo` the 1st of next
//! month, other `Nd` midnight N days on, and `Nh`/`Nm`/`Ns` the next multiple of N counted
//! from midnight.

use chrono::{Datelike, Duration as Span, NaiveDate, NaiveDateTime, NaiveTime};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Minutes,
    Hours,
    Days,
    Weeks,
    Months,
}

/// A parsed duration: an amount of a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Duration {
    pub amount: u32,
    pub unit: Unit,
}

impl Duration {
    /// Parses LiteLLM's forms; text after the unit is ignored, as LiteLLM ignores it.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let normalized = text.trim().to_ascii_lowercase();
        let text = match normalized.as_str() {
            "hourly" => "1h",
            "daily" => "24h",
            "weekly" => "7d",
            "monthly" => "30d",
            other => other,
        };
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("Invalid duration format: {text:?} (use e.g. 30s, 10m, 1h, 7d, 1mo)"));
        }
        let amount: u32 = text[..digits]
            .parse()
            .map_err(|_| format!("Invalid duration format: {text:?} (the number is too large)"))?;
        let rest = &text[digits..];
        let unit = if rest.starts_with("mo") {
            Unit::Months
        } else {
            match rest.bytes().next() {
                Some(b's') => Unit::Seconds,
                Some(b'm') => Unit::Minutes,
                Some(b'h') => Unit::Hours,
                Some(b'd') => Unit::Days,
                Some(b'w') => Unit::Weeks,
                _ => return Err(format!("Unsupported duration unit, passed duration: {text}")),
            }
        };
        Ok(Duration { amount, unit })
    }

    /// The span in seconds; months count as 30 days.
    pub fn seconds(self) -> i64 {
        let amount = i64::from(self.amount);
        match self.unit {
            Unit::Seconds => amount,
            Unit::Minutes => amount * 60,
            Unit::Hours => amount * 3_600,
            Unit::Days => amount * 86_400,
            Unit::Weeks => amount * 604_800,
            Unit::Months => amount * 30 * 86_400,
        }
    }

    /// When something created at `now` with this lifetime expires (calendar months for `mo`).
    pub fn after(self, now: NaiveDateTime) -> NaiveDateTime {
        match self.unit {
            Unit::Months => add_months(now, self.amount),
            _ => now + Span::seconds(self.seconds()),
        }
    }

    /// The next budget reset after `now`, aligned to calendar boundaries as LiteLLM does.
    pub fn next_reset(self, now: NaiveDateTime) -> NaiveDateTime {
        let midnight = now.date().and_time(NaiveTime::MIN);
        let amount = i64::from(self.amount.max(1));
        match (self.unit, self.amount) {
            (_, 0) => now,
            (Unit::Days, 1) => midnight + Span::days(1),
            (Unit::Days, 7) | (Unit::Weeks, 1) => {
                let days_to_monday = 7 - i64::from(now.weekday().num_days_from_monday());
                midnight + Span::days(days_to_monday)
            }
            (Unit::Days, 30) | (Unit::Months, _) => first_of_next_month(now.date()),
            (Unit::Days, _) => midnight + Span::days(amount),
            (Unit::Weeks, _) => midnight + Span::days(amount * 7),
            (Unit::Hours | Unit::Minutes | Unit::Seconds, _) => {
                let step = self.seconds();
                let elapsed = (now - midnight).num_seconds();
                midnight + Span::seconds((elapsed / step + 1) * step)
            }
        }
    }
}

fn first_of_next_month(date: NaiveDate) -> NaiveDateTime {
    let (year, month) =
        if date.month() == 12 { (date.year() + 1, 1) } else { (date.year(), date.month() + 1) };
    NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(date).and_time(NaiveTime::MIN)
}

fn add_months(now: NaiveDateTime, months: u32) -> NaiveDateTime {
    now.checked_add_months(chrono::Months::new(months)).unwrap_or(NaiveDateTime::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn parses_litellm_forms() {
        assert_eq!(Duration::parse("30s").unwrap().seconds(), 30);
        assert_eq!(Duration::parse("10m").unwrap().seconds(), 600);
        assert_eq!(Duration::parse("1h").unwrap().seconds(), 3_600);
        assert_eq!(Duration::parse("7d").unwrap().seconds(), 604_800);
        assert_eq!(Duration::parse("2w").unwrap().seconds(), 1_209_600);
        assert_eq!(Duration::parse("1mo").unwrap(), Duration { amount: 1, unit: Unit::Months });
        assert_eq!(Duration::parse("monthly").unwrap(), Duration { amount: 30, unit: Unit::Days });
        assert_eq!(Duration::parse("Daily").unwrap(), Duration { amount: 24, unit: Unit::Hours });
        assert_eq!(Duration::parse("10min").unwrap().seconds(), 600, "trailing text is ignored");
        assert!(Duration::parse("30").unwrap_err().contains("Unsupported duration unit"));
        assert!(Duration::parse("soon").unwrap_err().contains("Invalid duration format"));
    }

    #[test]
    fn expiry_is_exact_and_months_are_calendar_months() {
        let now = at("2026-01-31 10:00:00");
        assert_eq!(Duration::parse("1h").unwrap().after(now), at("2026-01-31 11:00:00"));
        assert_eq!(Duration::parse("1mo").unwrap().after(now), at("2026-02-28 10:00:00"));
    }

    #[test]
    fn budget_resets_align_to_calendar_boundaries() {
        let now = at("2026-11-22 17:25:00"); // a Sunday
        assert_eq!(Duration::parse("1d").unwrap().next_reset(now), at("2026-11-23 00:00:00"));
        assert_eq!(Duration::parse("7d").unwrap().next_reset(now), at("2026-11-23 00:00:00"), "Monday");
        assert_eq!(Duration::parse("30d").unwrap().next_reset(now), at("2026-12-01 00:00:00"));
        assert_eq!(Duration::parse("monthly").unwrap().next_reset(now), at("2026-12-01 00:00:00"));
        assert_eq!(
            Duration::parse("1mo").unwrap().next_reset(at("2026-12-05 00:00:00")),
            at("2027-01-01 00:00:00")
        );
        assert_eq!(Duration::parse("3d").unwrap().next_reset(now), at("2026-11-25 00:00:00"));
        assert_eq!(Duration::parse("6h").unwrap().next_reset(now), at("2026-11-22 18:00:00"));
        assert_eq!(
            Duration::parse("1h").unwrap().next_reset(at("2026-11-22 23:00:00")),
            at("2026-11-23 00:00:00")
        );
        assert_eq!(Duration::parse("15m").unwrap().next_reset(now), at("2026-11-22 17:30:00"));
        assert_eq!(Duration::parse("30s").unwrap().next_reset(now), at("2026-11-22 17:25:30"));
    }
}
