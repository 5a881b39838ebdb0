//! Times in the contract: every timestamp field is milliseconds since the Unix epoch (Avro
//! `timestamp-millis`), and PingOne writes times as RFC 3339 text. These are the one parser and
//! formatter between the two that the producer, the transformer and the simulator share.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX)
}

/// Milliseconds since the Unix epoch of an RFC 3339 time; `None` for anything else.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// RFC 3339 in UTC with milliseconds and `Z`, as PingOne writes and filters times:
/// `2026-11-01T00:00:00.000Z`. Out-of-range values give the epoch.
pub fn format_ms(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_timestamps() {
        assert_eq!(format_ms(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(
            parse_rfc3339_ms("2026-11-18T11:06:40.123Z"),
            Some(1_795_000_000_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-18T12:06:40+01:00"),
            Some(1_795_000_000_000)
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
        assert_eq!(parse_rfc3339_ms("2026-11-18"), None);
    }
}
