//! Ids, control-plane messages and piece arithmetic shared by every Odonata component.
//!
//! The control plane is JSON over HTTP/1.1 (see docs/architecture.md for why); every type
//! here is what travels in those bodies. Nothing in this crate does I/O.

#![warn(missing_docs, unreachable_pub)]

pub mod config;
pub mod digest;
pub mod error;
pub mod ids;
pub mod messages;
pub mod piece;
pub mod units;

pub use digest::{Digest, DigestError, PieceDigest};
pub use ids::{PeerId, TaskId, TaskKey, TaskKeyError};
pub use piece::{piece_size_for, PieceLayout};
