//! One parser for every size, offset and length argument.
//!
//! A size is a number of bytes, optionally with a binary unit: `K`, `M`, `G`, `T` (also
//! written `Ki`/`KiB` and so on) are powers of 1024, as for memory. `KB`, `MB`, `GB`, `TB`
//! are refused: they mean powers of 1000 to some tools and 1024 to others. A fraction
//! is fine when the result is a whole number of bytes (`1.5M` = 1572864). The number
//! itself is read by `parse-size` (exact, overflow-checked); this module decides what
//! is accepted and says exactly what is wrong.

/// What every message about a size ends with.
pub const EXAMPLES: &str = "give a number of bytes like 4096, 64K or 1.5M";

/// The largest size, offset or length: no segment can be larger.
pub const MAX: u64 = isize::MAX as u64;

/// A size, offset or length (0 allowed).
pub fn parse(s: &str) -> Result<usize, String> {
    if s.is_empty() {
        return Err(format!("\"\" is empty: {EXAMPLES}"));
    }
    if s.starts_with('-') {
        return Err(format!("{s:?} is negative: {EXAMPLES}"));
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let well_formed = !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
        && !(number.contains('.') && fraction.is_empty());
    if !well_formed {
        return Err(format!("{s:?} is not a size: {EXAMPLES}"));
    }
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "ki" | "kib" => 10,
        "m" | "mi" | "mib" => 20,
        "g" | "gi" | "gib" => 30,
        "t" | "ti" | "tib" => 40,
        "kb" | "mb" | "gb" | "tb" => return Err(ambiguous(s, number, unit)),
        _ => {
            return Err(format!(
                "{s:?} has an unknown unit {unit:?}: {EXAMPLES} (K, M, G, T are powers of 1024)"
            ));
        }
    };
    if !is_whole(fraction, shift) {
        return Err(format!("{s:?} is not a whole number of bytes: {EXAMPLES}"));
    }
    let bytes = parse_size::Config::new()
        .with_binary()
        .parse_size(s)
        .map_err(|e| match e {
            parse_size::Error::PosOverflow => too_large(s),
            _ => format!("{s:?} is not a size: {EXAMPLES}"),
        })?;
    if bytes > MAX {
        return Err(too_large(s));
    }
    usize::try_from(bytes).map_err(|_| too_large(s))
}

/// The size of a new segment: at least 1 byte.
pub fn parse_nonzero(s: &str) -> Result<usize, String> {
    match parse(s)? {
        0 => Err(format!("{s:?} is too small: a segment needs at least 1 byte")),
        n => Ok(n),
    }
}

fn too_large(s: &str) -> String {
    format!("{s:?} is too large: at most {MAX} bytes")
}

/// `10MB`: say both readings.
fn ambiguous(s: &str, number: &str, unit: &str) -> String {
    let prefix = unit[..1].to_ascii_uppercase();
    let binary = parse(&format!("{number}{prefix}")).ok();
    let power = match prefix.as_str() {
        "K" => 1,
        "M" => 2,
        "G" => 3,
        _ => 4,
    };
    let decimal = parse_size::Config::new()
        .with_decimal()
        .parse_size(format!("{number}{prefix}"))
        .ok()
        .filter(|_| is_whole_decimal(number, power));
    match (binary, decimal) {
        (Some(b), Some(d)) => format!(
            "{s:?} is ambiguous: write {number}{prefix} or {number}{prefix}iB for {b} bytes \
             (K, M, G, T are powers of 1024), or {d} for {number} x 1000^{power}"
        ),
        _ => format!("{s:?} is ambiguous: write {number}{prefix} or {number}{prefix}iB (powers of 1024)"),
    }
}

/// `0.fraction * 2^shift` is a whole number.
fn is_whole(fraction: &str, shift: u32) -> bool {
    let digits = fraction.trim_end_matches('0');
    if digits.is_empty() {
        return true;
    }
    // fraction / 10^n * 2^shift is whole iff 5^n * 2^(n - shift) divides the fraction's digits
    let n = digits.len() as u32;
    if n > 38 {
        return false;
    }
    let Ok(f) = digits.parse::<u128>() else {
        return false;
    };
    let divisor = 5u128.pow(n) << n.saturating_sub(shift);
    f % divisor == 0
}

/// `number * 1000^power` is a whole number.
fn is_whole_decimal(number: &str, power: u32) -> bool {
    let fraction = number.split_once('.').map_or("", |(_, f)| f);
    fraction.trim_end_matches('0').len() <= 3 * power as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_units_and_exact_fractions() {
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("64K"), Ok(64 << 10));
        assert_eq!(parse("64k"), Ok(64 << 10));
        assert_eq!(parse("1MiB"), Ok(1 << 20));
        assert_eq!(parse("2Gi"), Ok(2 << 30));
        assert_eq!(parse("1T"), Ok(1 << 40));
        assert_eq!(parse("1.5M"), Ok(3 << 19));
        assert_eq!(parse("0.5K"), Ok(512));
        assert_eq!(parse("1.250K"), Ok(1280));
        assert_eq!(parse("100B"), Ok(100));
        assert_eq!(parse(&MAX.to_string()), Ok(isize::MAX as usize));
    }

    #[test]
    fn every_refusal_says_why() {
        let says = |s: &str, what: &str| {
            let e = parse(s).expect_err(s);
            assert!(e.contains(what), "{s}: {e}");
        };
        says("", "is empty");
        says("-5", "is negative");
        says("-1K", "is negative");
        says("1.1K", "not a whole number of bytes");
        says("1.5", "not a whole number of bytes");
        says(
            "99999999999999999999",
            "too large: at most 9223372036854775807 bytes",
        );
        says(&(MAX + 1).to_string(), "too large");
        says("18446744073709551615G", "too large");
        says("10PiB", "unknown unit");
        says("ten", "not a size");
        says("1e3", "unknown unit");
        says("0x10", "unknown unit");
        says("1 000", "unknown unit");
        says(".5K", "not a size");
        says("5.K", "not a size");
        says("1..2K", "not a size");
        assert_eq!(
            parse("10MB").unwrap_err(),
            "\"10MB\" is ambiguous: write 10M or 10MiB for 10485760 bytes (K, M, G, T are powers of \
             1024), or 10000000 for 10 x 1000^2"
        );
        says("1.5kb", "write 1.5K or 1.5KiB for 1536 bytes");
        says("0.0001KB", "write 0.0001K or 0.0001KiB (powers of 1024)");
        assert_eq!(parse_nonzero("1"), Ok(1));
        assert!(parse_nonzero("0").unwrap_err().contains("at least 1 byte"));
    }

    #[test]
    fn whole_bytes() {
        assert!(is_whole("", 0));
        assert!(is_whole("000", 0));
        assert!(!is_whole("5", 0));
        assert!(is_whole("5", 1));
        assert!(is_whole("25", 2));
        assert!(!is_whole("125", 2));
        assert!(is_whole("0009765625", 10)); // 10 / 1024 of a K
        assert!(!is_whole("1", 40));
    }
}
