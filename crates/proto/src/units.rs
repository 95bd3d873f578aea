//! Human-friendly byte-rate and duration values as users type them (`20M`, `30s`).

use std::time::Duration;

/// Why a value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    /// A rate like `20M` did not parse.
    #[error("invalid rate '{0}': use a number with an optional K, M or G suffix (bytes per second), e.g. 20M")]
    Rate(String),
    /// A duration like `30s` did not parse.
    #[error("invalid duration '{0}': use a number with s, m or h, e.g. 30s")]
    Duration(String),
}

/// Parses a byte rate in bytes per second: `1048576`, `512K`, `20M`, `1G` (binary multiples,
/// as Dragonfly's `--locallimit`). `0` means unlimited and yields None.
pub fn parse_rate(s: &str) -> Result<Option<u64>, UnitError> {
    let t = s.trim();
    let err = || UnitError::Rate(s.chars().take(40).collect());
    let t = t
        .strip_suffix("B/s")
        .or_else(|| t.strip_suffix("B"))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1u64 << 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 1u64 << 30),
        Some(_) => (t, 1),
        None => return Err(err()),
    };
    let v: f64 = num.trim().parse().map_err(|_| err())?;
    if !v.is_finite() || v < 0.0 {
        return Err(err());
    }
    let bytes = (v * mult as f64) as u64;
    Ok((bytes > 0).then_some(bytes))
}

/// Parses a duration: `90`, `90s`, `5m`, `1h`, `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let t = s.trim();
    let err = || UnitError::Duration(s.chars().take(40).collect());
    let (num, mult_ms) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3_600_000.0)
    } else {
        (t, 1000.0)
    };
    let v: f64 = num.trim().parse().map_err(|_| err())?;
    if !v.is_finite() || v < 0.0 {
        return Err(err());
    }
    Ok(Duration::from_millis((v * mult_ms) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("20M").unwrap(), Some(20 << 20));
        assert_eq!(parse_rate("512k").unwrap(), Some(512 << 10));
        assert_eq!(parse_rate("100").unwrap(), Some(100));
        assert_eq!(parse_rate("1.5G").unwrap(), Some(3 << 29));
        assert_eq!(parse_rate("0").unwrap(), None);
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("").is_err());
        assert!(parse_rate("-1M").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("15").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
    }
}
