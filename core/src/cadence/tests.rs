use corral_types::Overlap;

use super::*;

fn ms(rfc3339: &str) -> u64 {
    rfc3339.parse::<Timestamp>().unwrap().as_millisecond() as u64
}

fn ny(expr: &str) -> Cadence {
    Cadence::cron(expr, "America/New_York").unwrap()
}

#[test]
fn a_fixed_time_in_the_hour_that_spring_forward_skips_fires_once_right_after_the_change() {
    // 2026-03-08: New York's clocks go from 02:00 EST to 03:00 EDT; 02:30 never happens.
    let c = ny("30 2 * * *");
    let slots = c.upcoming(ms("2026-03-07T00:00:00Z"), 3);
    assert_eq!(
        slots,
        vec![
            ms("2026-03-07T07:30:00Z"), // 02:30 EST
            ms("2026-03-08T07:00:00Z"), // 03:00 EDT, the first instant after the gap
            ms("2026-03-09T06:30:00Z"), // 02:30 EDT
        ]
    );
}

#[test]
fn a_fixed_time_in_the_hour_that_fall_back_repeats_fires_once_the_first_time() {
    // 2026-11-01: New York's clocks go from 02:00 EDT back to 01:00 EST; 01:30 happens twice.
    let c = ny("30 1 * * *");
    let slots = c.upcoming(ms("2026-10-31T12:00:00Z"), 2);
    assert_eq!(slots, vec![ms("2026-11-01T05:30:00Z"), ms("2026-11-02T06:30:00Z")]);
}

#[test]
fn an_interval_keeps_its_pace_in_real_time_through_the_repeated_hour() {
    let c = ny("*/30 * * * *");
    let slots = c.upcoming(ms("2026-11-01T04:45:00Z"), 5);
    assert_eq!(
        slots,
        vec![
            ms("2026-11-01T05:00:00Z"), // 01:00 EDT
            ms("2026-11-01T05:30:00Z"), // 01:30 EDT
            ms("2026-11-01T06:00:00Z"), // 01:00 EST
            ms("2026-11-01T06:30:00Z"), // 01:30 EST
            ms("2026-11-01T07:00:00Z"), // 02:00 EST
        ]
    );
}

#[test]
fn an_interval_through_the_skipped_hour_has_no_duplicate_and_no_hole_in_real_time() {
    let c = ny("0 * * * *");
    let slots = c.upcoming(ms("2026-03-08T05:30:00Z"), 3);
    // 01:00 EST, then 03:00 EDT (02:00 does not exist), then 04:00 EDT.
    assert_eq!(slots, vec![ms("2026-03-08T06:00:00Z"), ms("2026-03-08T07:00:00Z"), ms("2026-03-08T08:00:00Z")]);
}

#[test]
fn a_leading_seconds_field_is_accepted() {
    let c = Cadence::cron("*/10 * * * * *", "UTC").unwrap();
    let t = ms("2026-01-01T00:00:03Z");
    assert_eq!(c.upcoming(t, 2), vec![ms("2026-01-01T00:00:10Z"), ms("2026-01-01T00:00:20Z")]);
    // A time with milliseconds: the next slot is still strictly after it.
    assert_eq!(c.next_after(ms("2026-01-01T00:00:10Z") + 500), Some(ms("2026-01-01T00:00:20Z")));
}

#[test]
fn nicknames_stand_for_their_five_fields() {
    let at = ms("2026-03-14T15:09:26Z");
    for (nick, next) in [
        ("@yearly", "2027-01-01T00:00:00Z"),
        ("@annually", "2027-01-01T00:00:00Z"),
        ("@monthly", "2026-04-01T00:00:00Z"),
        ("@weekly", "2026-03-15T00:00:00Z"),
        ("@daily", "2026-03-15T00:00:00Z"),
        ("@midnight", "2026-03-15T00:00:00Z"),
        ("@hourly", "2026-03-14T16:00:00Z"),
        ("@DAILY", "2026-03-15T00:00:00Z"),
    ] {
        let c = Cadence::cron(nick, "UTC").unwrap();
        assert_eq!(c.next_after(at), Some(ms(next)), "{nick}");
        assert!(format!("{c:?}").contains(nick), "shown as written: {c:?}");
    }
    assert_eq!(ny("@daily").next_after(ms("2026-03-14T15:09:26Z")), Some(ms("2026-03-15T04:00:00Z")), "in its zone");
}

#[test]
fn every_counts_from_its_anchor() {
    let c = Cadence::every(60_000, 1_000_000).unwrap();
    assert_eq!(c.next_after(0), Some(1_000_000));
    assert_eq!(c.next_after(1_000_000), Some(1_060_000));
    assert_eq!(c.next_after(1_059_999), Some(1_060_000));
    assert_eq!(c.upcoming(1_000_000, 3), vec![1_060_000, 1_120_000, 1_180_000]);
    assert_eq!(Cadence::every(999, 0).unwrap_err().field, "every");
}

#[test]
fn bad_expressions_and_zones_are_refused_naming_the_field() {
    for (expr, zone, field, says) in [
        ("* * * *", "UTC", "cron", "4 fields"),
        ("61 * * * *", "UTC", "cron", "minute field: 61 is out of range 0-59"),
        ("0 24 * * *", "UTC", "cron", "hour field: 24 is out of range 0-23"),
        ("0 0 0 * *", "UTC", "cron", "day-of-month field: 0 is out of range 1-31"),
        ("0 0 * 1-13 *", "UTC", "cron", "month field: 13 is out of range 1-12"),
        ("0 0 * * 8", "UTC", "cron", "day-of-week field: 8 is out of range 0-7"),
        ("60 0 0 * * *", "UTC", "cron", "second field: 60 is out of range 0-59"),
        ("*/0 * * * *", "UTC", "cron", "minute field: a step of 0 never advances"),
        ("0 0 * * FUNDAY", "UTC", "cron", "not a valid cron expression"),
        ("@fortnightly", "UTC", "cron", "not a nickname cron knows"),
        ("0 0 31 2 *", "UTC", "cron", "matches no time"),
        ("0 * * * * * *", "UTC", "cron", "7 fields"),
        ("0 3 * * *", "Mars/Olympus", "tz", "not a known IANA time zone"),
    ] {
        let err = Cadence::cron(expr, zone).unwrap_err();
        assert_eq!(err.field, field, "{expr} {zone}");
        assert!(err.reason.contains(says), "{expr}: {}", err.reason);
    }
}

#[test]
fn a_slot_is_shown_in_its_zone() {
    let c = ny("30 1 * * *");
    assert_eq!(c.show(ms("2026-11-01T05:30:00Z")), "2026-11-01T01:30:00-04:00[America/New_York]");
}

#[test]
fn jitter_is_within_bounds_and_the_same_every_time() {
    for slot in 0..200u64 {
        let j = jitter_ms("nightly", slot * 1000, 5000);
        assert!(j < 5000);
        assert_eq!(j, jitter_ms("nightly", slot * 1000, 5000));
    }
    assert_eq!(jitter_ms("nightly", 1, 0), 0);
    let spread: std::collections::BTreeSet<u64> = (0..100).map(|s| jitter_ms("n", s, 1000) / 100).collect();
    assert!(spread.len() >= 8, "jitter spreads over its range: {spread:?}");
}

#[test]
fn each_overlap_policy_decides_as_temporal_does() {
    use Due::*;
    let cases = [
        (Overlap::Skip, false, 0, Start),
        (Overlap::Skip, true, 0, Skip),
        (Overlap::BufferOne, true, 0, Buffer),
        (Overlap::BufferOne, true, 1, Skip),
        (Overlap::BufferOne, false, 1, Skip),
        (Overlap::BufferAll, true, 5, Buffer),
        (Overlap::BufferAll, false, 5, Buffer),
        (Overlap::BufferAll, true, MAX_BUFFERED, Skip),
        (Overlap::CancelOther, true, 0, CancelThenStart),
        (Overlap::CancelOther, false, 0, Start),
        (Overlap::Allow, true, 0, Start),
    ];
    for (overlap, active, buffered, due) in cases {
        assert_eq!(on_due(overlap, active, buffered), due, "{overlap} active={active} buffered={buffered}");
    }
}
