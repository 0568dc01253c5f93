//! Durations as people write them for refresh token policies and expiry lead times: whole
//! days, hours, minutes and seconds, largest unit first (`90d`, `36h`, `1d12h`, `45s`).
//! Salesforce states its policies in hours, days and months, and Go's duration syntax (the
//! one `checkInterval` uses) has no days, so this is its own small syntax.

use std::time::Duration;

/// The most digits each unit takes (days, hours, minutes, seconds), as the CRD's pattern
/// [`PATTERN`] says too: the longest duration is under 900 years, so adding one to any time of
/// this century stays a valid timestamp.
const DIGITS: [usize; 4] = [5, 6, 8, 10];

/// The same syntax as a regular expression, for CRD validation (the API server also
/// requires a non-zero digit).
pub const PATTERN: &str = "^([0-9]{1,5}d)?([0-9]{1,6}h)?([0-9]{1,8}m)?([0-9]{1,10}s)?$";

/// A duration that does not read as days, hours, minutes and seconds.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{0:?} is not a duration written as whole days, hours, minutes and seconds, largest first and above zero, for example 90d, 36h, 1d12h or 45s"
)]
pub struct ParseError(pub String);

/// Parses `90d`, `1d12h`, `30m`, `45s` (each unit at most once, largest first, with at most
/// 5, 6, 8 and 10 digits, total above zero).
pub fn parse(text: &str) -> Result<Duration, ParseError> {
    let err = || ParseError(text.to_owned());
    let units = [('d', 86_400u64), ('h', 3_600), ('m', 60), ('s', 1)];
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(err());
    }
    let mut total: u64 = 0;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        if digits == 0 {
            return Err(err());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| err())?;
        let unit = rest[digits..].chars().next().ok_or_else(err)?;
        let position = units[next_unit..]
            .iter()
            .position(|(u, _)| *u == unit)
            .ok_or_else(err)?;
        let (_, seconds) = units[next_unit + position];
        if digits > DIGITS[next_unit + position] {
            return Err(err());
        }
        next_unit += position + 1;
        total = n
            .checked_mul(seconds)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(err)?;
        rest = &rest[digits + 1..];
    }
    let total = Duration::from_secs(total);
    if total.is_zero() {
        return Err(err());
    }
    Ok(total)
}

/// Parses a comma-separated list such as `7d,2d` (the expiry lead times): at least one,
/// returned longest first without repeats.
pub fn parse_list(text: &str) -> Result<Vec<Duration>, ParseError> {
    let mut all = text.split(',').map(parse).collect::<Result<Vec<_>, _>>()?;
    all.sort_unstable_by(|a, b| b.cmp(a));
    all.dedup();
    Ok(all)
}

/// Writes a duration the way [`parse`] reads it (whole seconds): `7d`, `1d12h`, `90s`.
pub fn format(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [('d', 86_400u64), ('h', 3_600), ('m', 60), ('s', 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_days_to_seconds_largest_first() {
        let cases = [
            ("90d", Some(90 * 86_400)),
            ("36h", Some(36 * 3_600)),
            ("1d12h", Some(36 * 3_600)),
            ("1h30m", Some(5_400)),
            ("45s", Some(45)),
            ("2d3h4m5s", Some(2 * 86_400 + 3 * 3_600 + 4 * 60 + 5)),
            ("99999d", Some(99_999 * 86_400)),
            ("100000d", None),
            ("9999999999s", Some(9_999_999_999)),
            ("0s", None),
            ("0d0h", None),
            ("", None),
            ("d", None),
            ("12", None),
            ("1h1d", None),
            ("1d1d", None),
            ("90 days", None),
            ("-1d", None),
            ("1.5h", None),
            ("1w", None),
            ("9999999999999s", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).ok().map(|d| d.as_secs()), want, "{text:?}");
        }
    }

    #[test]
    fn lists_are_sorted_longest_first_and_formatted_back() {
        let got = parse_list("2d,7d,2d").unwrap_or_default();
        assert_eq!(
            got,
            vec![
                Duration::from_secs(7 * 86_400),
                Duration::from_secs(2 * 86_400)
            ]
        );
        assert!(parse_list("7d,").is_err());
        assert!(parse_list("").is_err());
        for text in ["7d", "1d12h", "1m30s", "2h30m", "1d1s"] {
            assert_eq!(parse(text).map(format).as_deref(), Ok(text));
        }
    }
}
