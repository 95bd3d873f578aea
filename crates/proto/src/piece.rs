//! Piece arithmetic: how a file of a given length is cut.

use serde::{Deserialize, Serialize};

const MIB: u64 = 1024 * 1024;

/// Piece size used when the source does not say how long the file is.
pub const UNKNOWN_LENGTH_PIECE_SIZE: u32 = 4 * MIB as u32;

/// Piece size for a file of `len` bytes (see docs/architecture.md, "Piece size").
///
/// Aims at about 256 pieces, at least 1 MiB and at most 16 MiB, a power of two.
/// Small pieces let a piece be forwarded soon after it arrives; the floor keeps the
/// per-piece cost (one request, one report) small next to the transfer time.
pub fn piece_size_for(len: Option<u64>) -> u32 {
    let Some(len) = len else {
        return UNKNOWN_LENGTH_PIECE_SIZE;
    };
    let target = (len / 256).max(1);
    let size = target.next_power_of_two().clamp(MIB, 16 * MIB);
    size as u32
}

/// How a file is cut: piece size and, once known, total length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceLayout {
    /// Bytes per piece (the last piece may be shorter).
    pub piece_size: u32,
    /// Total length, when known.
    pub content_length: Option<u64>,
}

impl PieceLayout {
    /// Number of pieces, when the length is known.
    pub fn piece_count(&self) -> Option<u32> {
        self.content_length
            .map(|len| len.div_ceil(u64::from(self.piece_size)) as u32)
    }

    /// Byte offset of piece `num`.
    pub fn offset(&self, num: u32) -> u64 {
        u64::from(num) * u64::from(self.piece_size)
    }

    /// Length of piece `num`, when the total length is known; None past the end.
    pub fn piece_len(&self, num: u32) -> Option<u32> {
        let len = self.content_length?;
        let start = self.offset(num);
        if start >= len {
            return None;
        }
        Some((len - start).min(u64::from(self.piece_size)) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn piece_sizes() {
        assert_eq!(piece_size_for(Some(0)), MIB as u32);
        assert_eq!(piece_size_for(Some(64 * MIB)), MIB as u32);
        assert_eq!(piece_size_for(Some(256 * MIB)), MIB as u32);
        assert_eq!(piece_size_for(Some(1024 * MIB)), 4 * MIB as u32);
        assert_eq!(piece_size_for(Some(1 << 40)), 16 * MIB as u32);
        assert_eq!(piece_size_for(None), 4 * MIB as u32);
    }

    proptest! {
        #[test]
        fn pieces_tile_the_file(len in 0u64..(1u64 << 36)) {
            let layout = PieceLayout { piece_size: piece_size_for(Some(len)), content_length: Some(len) };
            let n = layout.piece_count().unwrap();
            let mut total = 0u64;
            for i in [0, n / 2, n.saturating_sub(1)] {
                if i < n {
                    let l = layout.piece_len(i).unwrap();
                    prop_assert!(l > 0 && l <= layout.piece_size);
                    prop_assert!(layout.offset(i) + u64::from(l) <= len);
                }
            }
            if n > 0 {
                total = layout.offset(n - 1) + u64::from(layout.piece_len(n - 1).unwrap());
            }
            prop_assert_eq!(total, len);
            prop_assert!(layout.piece_len(n).is_none());
        }
    }
}
