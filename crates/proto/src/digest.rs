//! Piece digests (sha256) and user-supplied whole-file digests (`sha256:HEX`, md5).

use std::fmt;
use std::str::FromStr;

use md5::Md5;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// The sha256 of one piece, as computed by the seed from the source bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PieceDigest(pub [u8; 32]);

impl PieceDigest {
    /// Hashes `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// Lower-case hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for PieceDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..12])
    }
}

impl FromStr for PieceDigest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| DigestError::BadHex {
            algo: "sha256",
            value: s.chars().take(80).collect(),
        })?;
        Ok(Self(out))
    }
}

impl Serialize for PieceDigest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for PieceDigest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a digest string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    /// Not `ALGO:HEX` with a known algorithm.
    #[error("digest '{0}' must be 'sha256:<64 hex>' or 'md5:<32 hex>'")]
    Format(String),
    /// The hex part is not of the right length or alphabet.
    #[error("{algo} digest '{value}' is not valid hex of the right length")]
    BadHex {
        /// The algorithm named.
        algo: &'static str,
        /// The offending text (cut to 80 characters).
        value: String,
    },
}

/// A whole-file digest the user asks to be checked (`--digest sha256:…` or `--md5 …`).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Digest {
    /// SHA-256.
    Sha256([u8; 32]),
    /// MD5 (Dragonfly's `--md5`).
    Md5([u8; 16]),
}

impl Digest {
    /// Parses a bare md5 hex string, as `--md5` takes it.
    pub fn md5_hex(s: &str) -> Result<Self, DigestError> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|_| DigestError::BadHex {
            algo: "md5",
            value: s.chars().take(80).collect(),
        })?;
        Ok(Self::Md5(out))
    }

    /// A streaming hasher for this digest's algorithm.
    pub fn hasher(&self) -> Hasher {
        match self {
            Digest::Sha256(_) => Hasher::Sha256(Sha256::new()),
            Digest::Md5(_) => Hasher::Md5(Md5::new()),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Digest::Sha256(d) => write!(f, "sha256:{}", hex::encode(d)),
            Digest::Md5(d) => write!(f, "md5:{}", hex::encode(d)),
        }
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (algo, hexpart) = s
            .trim()
            .split_once(':')
            .ok_or_else(|| DigestError::Format(s.chars().take(80).collect()))?;
        match algo.to_ascii_lowercase().as_str() {
            "sha256" => {
                let mut out = [0u8; 32];
                hex::decode_to_slice(hexpart, &mut out).map_err(|_| DigestError::BadHex {
                    algo: "sha256",
                    value: hexpart.chars().take(80).collect(),
                })?;
                Ok(Digest::Sha256(out))
            }
            "md5" => Digest::md5_hex(hexpart),
            _ => Err(DigestError::Format(s.chars().take(80).collect())),
        }
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A running whole-file hash.
pub enum Hasher {
    /// SHA-256 state.
    Sha256(Sha256),
    /// MD5 state.
    Md5(Md5),
}

impl Hasher {
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Md5(h) => h.update(data),
        }
    }

    /// Finishes into a [`Digest`] of the same algorithm.
    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest::Sha256(h.finalize().into()),
            Hasher::Md5(h) => Digest::Md5(h.finalize().into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_sha256() {
        let hex = "a".repeat(64);
        let d: Digest = format!("sha256:{hex}").parse().unwrap();
        assert_eq!(d.to_string(), format!("sha256:{hex}"));
    }

    #[test]
    fn rejects_bad_digests_with_reason() {
        assert!(matches!(
            "sha256:xyz".parse::<Digest>(),
            Err(DigestError::BadHex { .. })
        ));
        assert!(matches!(
            "crc:00".parse::<Digest>(),
            Err(DigestError::Format(_))
        ));
        assert!(matches!(
            "nocolon".parse::<Digest>(),
            Err(DigestError::Format(_))
        ));
        assert!(Digest::md5_hex("0123").is_err());
    }

    #[test]
    fn hasher_matches_known_vector() {
        let mut h = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
            .parse::<Digest>()
            .unwrap()
            .hasher();
        h.update(b"abc");
        assert_eq!(
            h.finish().to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
