//! Human durations as config files and flags write them (`90s`, `30m`, `24h`, `7d`,
//! `250ms`), and as messages say them (`2d 3h`).

use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: expected a whole number followed by ms, s, m, h or d (e.g. 30s, 5m, 24h)"
)]
pub struct DurationError {
    pub input: String,
}

pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let error = || DurationError {
        input: input.to_string(),
    };
    let text = input.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(error)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| error())?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(error()),
    };
    number
        .checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(error)
}

/// The shortest exact rendering (`300s` → `5m`), for messages and generated files.
pub fn format(duration: Duration) -> String {
    let ms = duration.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Roughly how long, in the two largest units: `2d 3h`, `5m 10s`.
pub fn span(seconds: u64) -> String {
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let Some(first) = units.iter().position(|(_, size)| seconds >= *size) else {
        return "0s".into();
    };
    units[first..]
        .iter()
        .take(2)
        .scan(seconds, |left, (unit, size)| {
            let count = *left / size;
            *left %= size;
            Some((count, unit))
        })
        .filter(|(count, _)| *count > 0)
        .map(|(count, unit)| format!("{count}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse("7d").unwrap(), Duration::from_secs(604_800));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for bad in [
            "",
            "h",
            "10",
            "1.5h",
            "-3s",
            "10 minutes",
            "5w",
            "99999999999999999999d",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(
                err.to_string().contains("expected a whole number"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn formats_round_trip() {
        for text in ["250ms", "90s", "5m", "2h", "7d"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}
