//! Durations, byte sizes and CPU counts, spelled the way Compose files spell them.

use std::time::Duration;

/// Longest duration a stack file may give (a week): anything longer is a typo, and every
/// duration must stay addable to the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

const HINT_DURATION: &str = "write a duration such as 10s, 1m30s, 500ms or 2h";

/// Go-style duration as Compose accepts it: `10s`, `1m30s`, `1.5s`, `500ms`, `2h`, `1us`; a bare
/// `0` means zero. Every other number needs a unit (a bare `10` is ambiguous).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(format!("empty duration; {HINT_DURATION}"));
    }
    let mut nanos: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_end);
        let unit_end = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("{s:?} is missing a unit; {HINT_DURATION}")),
            other => return Err(format!("{s:?} has an unknown unit {other:?}; {HINT_DURATION}")),
        };
        let part =
            scaled_decimal(number, scale).ok_or_else(|| format!("{s:?} is not a valid duration; {HINT_DURATION}"))?;
        nanos = nanos.checked_add(part).ok_or_else(|| format!("{s:?} is too long"))?;
        rest = tail;
    }
    if nanos > MAX_DURATION.as_nanos() {
        return Err(format!("{s:?} is too long; the limit is {}h", MAX_DURATION.as_secs() / 3600));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// `number × scale` for a non-negative decimal `number` (`12`, `1.5`, `.5`), truncating
/// digits beyond what `scale` can represent. `None` when it is not such a number or overflows.
fn scaled_decimal(number: &str, scale: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    // Digits only, so every slice below falls on a character boundary.
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return None;
    }
    let whole_value: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let mut value = whole_value.checked_mul(scale)?;
    // Fractions finer than 1e-30 of the unit cannot matter for nanoseconds or bytes.
    let fraction = &fraction[..fraction.len().min(30)];
    if !fraction.is_empty() {
        let digits: u128 = fraction.parse().ok()?;
        let denominator = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
        value = value.checked_add(digits.checked_mul(scale)? / denominator)?;
    }
    Some(value)
}

const HINT_BYTES: &str = "write a size such as 64M, 1g, 512k or 100b (plain numbers are bytes)";

/// Byte size as Docker's `RAMInBytes` reads it: binary multiples, case-insensitive units, an
/// optional `i` and `b` (`64M`, `64MiB`, `1g`, `512k`, `100b`, `1.5g`, `1048576`).
pub fn parse_bytes(text: &str) -> Result<i64, String> {
    let s = text.trim();
    let number_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(number_end);
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let power = match unit {
        "" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        _ => return Err(format!("{s:?} is not a size; {HINT_BYTES}")),
    };
    let bytes =
        scaled_decimal(number, 1024u128.pow(power)).ok_or_else(|| format!("{s:?} is not a size; {HINT_BYTES}"))?;
    i64::try_from(bytes).map_err(|_| format!("{s:?} is too large"))
}

/// CPU count (`0.5`, `"2"`) as nano-CPUs. Must be positive.
pub fn parse_cpus(text: &str) -> Result<i64, String> {
    let s = text.trim();
    let nanos = scaled_decimal(s, 1_000_000_000)
        .ok_or_else(|| format!("{s:?} is not a CPU count; write a decimal number such as 0.5 or 2"))?;
    if nanos == 0 {
        return Err(format!("{s:?} CPUs: the limit must be greater than 0; remove it for no limit"));
    }
    i64::try_from(nanos).map_err(|_| format!("{s:?} CPUs is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("10s", ms(10_000)),
            ("1m30s", ms(90_000)),
            ("500ms", ms(500)),
            ("2h", ms(7_200_000)),
            ("1us", Duration::from_micros(1)),
            ("1µs", Duration::from_micros(1)),
            ("7ns", Duration::from_nanos(7)),
            ("1.5s", ms(1500)),
            (".5s", ms(500)),
            ("1h2m3s4ms", ms(3_723_004)),
            ("0", Duration::ZERO),
            (" 3s ", ms(3000)),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_durations_say_how_to_write_one() {
        for text in ["", "10", "s", "10x", "1..5s", "-1s", "1.5.5s", "1s 2s", "99999999999999h", "169h", "5000000m"] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains("10s") || err.contains("too long"), "{text}: {err}");
        }
    }

    #[test]
    fn sizes() {
        for (text, want) in [
            ("64M", 64 << 20),
            ("1g", 1 << 30),
            ("512k", 512 << 10),
            ("100b", 100),
            ("1048576", 1 << 20),
            ("64MiB", 64 << 20),
            ("64mb", 64 << 20),
            ("1.5g", 3 << 29),
            ("2 GB", 2 << 30),
        ] {
            assert_eq!(parse_bytes(text), Ok(want), "{text}");
        }
        for text in ["", "M", "64X", "64MM", "-1", "1.2.3k", "99999999999p"] {
            assert!(parse_bytes(text).is_err(), "{text}");
        }
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("0.25"), Ok(250_000_000));
        assert_eq!(parse_cpus("2"), Ok(2_000_000_000));
        assert_eq!(parse_cpus("0.000000001"), Ok(1));
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("half").is_err());
        assert!(parse_cpus("-1").is_err());
        // Found by the hostile corpus: a multi-byte character inside the cut-off fraction.
        assert!(parse_cpus(&format!("1.{}é", "0".repeat(29))).is_err());
        assert!(parse_cpus("1.é").is_err());
        assert!(parse_bytes(&format!("1.{}é", "0".repeat(29))).is_err());
    }
}
