//! `dfget --range`: a byte range of the file, as `START-END` (inclusive) or `START-`.
//!
//! The swarm still moves the whole file (one task, cached once by the supernode and shared
//! by every range of it); only the output is cut. Falling back to the source asks it for
//! just the range.

use serde::{Deserialize, Serialize};

/// An inclusive byte range; `end` None means to the end of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Last byte, inclusive.
    pub end: Option<u64>,
}

impl ByteRange {
    /// Parses `START-END` or `START-` (an optional `bytes=` prefix is accepted).
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("range '{s}' must be START-END or START- (bytes, END inclusive)");
        let t = s.trim();
        let t = t.strip_prefix("bytes=").unwrap_or(t);
        let (a, b) = t.split_once('-').ok_or_else(bad)?;
        let start: u64 = a.trim().parse().map_err(|_| bad())?;
        let end = match b.trim() {
            "" => None,
            e => Some(e.parse::<u64>().map_err(|_| bad())?),
        };
        if end.is_some_and(|e| e < start) {
            return Err(format!("range '{s}' ends before it starts"));
        }
        Ok(Self { start, end })
    }

    /// The `[start, end)` span within a file of `len` bytes; an error past its end.
    pub fn within(&self, len: u64) -> Result<(u64, u64), String> {
        if self.start >= len {
            return Err(format!(
                "range starts at byte {} but the file has {len} bytes",
                self.start
            ));
        }
        let end = self.end.map_or(len, |e| (e + 1).min(len));
        Ok((self.start, end))
    }

    /// The `Range` header value asking for it.
    pub fn header_value(&self) -> String {
        match self.end {
            Some(e) => format!("bytes={}-{e}", self.start),
            None => format!("bytes={}-", self.start),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_bounds_ranges() {
        let r = ByteRange::parse("10-19").unwrap();
        assert_eq!(r.within(100).unwrap(), (10, 20));
        assert_eq!(r.within(15).unwrap(), (10, 15));
        assert!(r.within(10).is_err());
        assert_eq!(
            ByteRange::parse("bytes=5-").unwrap().within(8).unwrap(),
            (5, 8)
        );
        assert!(ByteRange::parse("9-3").unwrap_err().contains("ends before"));
        assert!(ByteRange::parse("x-3").is_err());
        assert!(ByteRange::parse("3").is_err());
        assert_eq!(ByteRange::parse("0-0").unwrap().header_value(), "bytes=0-0");
    }
}
