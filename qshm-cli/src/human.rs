//! Numbers as people read them: counts with their noun, ages, durations. One place, so
//! `ls`, `stat`, `create` and `lock` say them alike.

use std::time::Duration;

/// `1 segment`, `2 segments`.
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// `1 byte`, `13 bytes`.
pub fn bytes(n: usize) -> String {
    plural(n, "byte")
}

/// An age in one short unit, as `ls` and `stat` print it: `42s`, `5m`, `3h`, `2d`
/// (the next unit from twice its size on, so `90s`, not `1m`).
pub fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// A duration the way `--hold` takes it: `500ms`, `1m 30s`, `2h` (seconds and up are
/// whole, as `--hold 1.5` gives `1s 500ms`).
pub fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// `--hold`: a number of seconds (`5`, `0.5`) or a duration with units (`500ms`, `2m`,
/// `1h`, `1h30m`: what `humantime` reads).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration: give seconds like 5 or 0.5, or 500ms, 2m, 1h");
    let s = s.trim();
    if s.starts_with(|c: char| c.is_ascii_digit() || c == '.') && s.parse::<f64>().is_ok() {
        return s
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .and_then(|v| Duration::try_from_secs_f64(v).ok())
            .ok_or_else(bad);
    }
    humantime::parse_duration(s).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_have_the_right_noun() {
        assert_eq!(bytes(1), "1 byte");
        assert_eq!(bytes(0), "0 bytes");
        assert_eq!(bytes(13), "13 bytes");
        assert_eq!(plural(2, "orphan"), "2 orphans");
    }

    #[test]
    fn ages_take_one_short_unit() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(119), "119s");
        assert_eq!(age(120), "2m");
        assert_eq!(age(7199), "119m");
        assert_eq!(age(7200), "2h");
        assert_eq!(age(200_000), "2d");
    }

    #[test]
    fn hold_takes_seconds_and_units() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("5"), Ok(ms(5000)));
        assert_eq!(parse_duration("1.5"), Ok(ms(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("2m"), Ok(ms(120_000)));
        assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_duration("1h30m"), Ok(ms(5_400_000)));
        assert_eq!(parse_duration("10s"), Ok(ms(10_000)));
        for bad in ["inf", "NaN", "-1", "1e300", "soon", "", "5 parsecs", "-2m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_read_like_hold_arguments() {
        assert_eq!(duration(Duration::from_millis(500)), "500ms");
        assert_eq!(duration(Duration::from_secs(90)), "1m 30s");
        assert_eq!(duration(Duration::from_secs(3600)), "1h");
    }
}
