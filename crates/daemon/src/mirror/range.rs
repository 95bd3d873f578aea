//! `Range` request headers on blobs.

/// What a `Range` header asks of content of a known length.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum RangeAsk {
    /// No (usable) range: the whole content, 200.
    Whole,
    /// Bytes `start..=end`, 206.
    Part(u64, u64),
    /// Nothing of the content is in range: 416.
    Unsatisfiable,
}

/// Parses `bytes=A-B`, `bytes=A-` and `bytes=-N` against `len`. Multiple ranges and other
/// units are ignored (answered whole), as RFC 9110 allows.
pub(crate) fn parse_range(header: Option<&str>, len: u64) -> RangeAsk {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeAsk::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = if a.is_empty() {
        match b.parse::<u64>() {
            Ok(0) => return RangeAsk::Unsatisfiable,
            Ok(n) if len == 0 => {
                return if n > 0 {
                    RangeAsk::Unsatisfiable
                } else {
                    RangeAsk::Whole
                }
            }
            Ok(n) => Some((len.saturating_sub(n), len - 1)),
            Err(_) => None,
        }
    } else {
        match (a.parse::<u64>(), b.is_empty()) {
            (Ok(start), true) => Some((start, len.saturating_sub(1))),
            (Ok(start), false) => match b.parse::<u64>() {
                Ok(end) if end >= start => Some((start, end.min(len.saturating_sub(1)))),
                _ => None,
            },
            _ => None,
        }
    };
    match parsed {
        None => RangeAsk::Whole,
        Some((start, _)) if start >= len => RangeAsk::Unsatisfiable,
        Some((start, end)) => RangeAsk::Part(start, end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forms() {
        assert_eq!(parse_range(None, 10), RangeAsk::Whole);
        assert_eq!(parse_range(Some("bytes=2-5"), 10), RangeAsk::Part(2, 5));
        assert_eq!(parse_range(Some("bytes=2-"), 10), RangeAsk::Part(2, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), RangeAsk::Part(7, 9));
        assert_eq!(parse_range(Some("bytes=-30"), 10), RangeAsk::Part(0, 9));
        assert_eq!(parse_range(Some("bytes=5-100"), 10), RangeAsk::Part(5, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), RangeAsk::Whole);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), RangeAsk::Whole);
        assert_eq!(parse_range(Some("items=0-1"), 10), RangeAsk::Whole);
        assert_eq!(parse_range(Some("bytes=x-"), 10), RangeAsk::Whole);
    }

    proptest! {
        #[test]
        fn parts_stay_inside(h in "bytes=[0-9-]{0,12}", len in 0u64..1000) {
            if let RangeAsk::Part(a, b) = parse_range(Some(&h), len) {
                prop_assert!(a <= b && b < len);
            }
        }
    }
}
