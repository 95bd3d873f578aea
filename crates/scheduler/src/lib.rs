//! Piece and parent scheduling for one task, with no I/O and no clock of its own.
//!
//! The supernode feeds events (a piece cut by the seed, a peer's report) and asks for
//! decisions (which pieces a peer should fetch next, from whom). Time is passed in, so the
//! same code runs under a simulator with thousands of peers (see the tests).
//!
//! Policy:
//! - **Rarest first**: a peer is offered the pieces held by the fewest peers, counting
//!   transfers in flight, with a per-peer tie-break so peers spread over different pieces.
//! - **Several parents**: each assignment names up to `parents_per_piece` candidates, best
//!   first; the peer tries them in order.
//! - **Load**: a parent's in-flight uploads are counted and capped; the least loaded wins.
//! - **Seed last**: the seed carries a penalty, so once peers hold a piece they serve it.
//! - **Isolation**: a parent reported corrupt is blocked for the task; an unreachable one is
//!   dead until it talks to the supernode again; repeated timeouts make it dead too.

#![warn(missing_docs, unreachable_pub)]

mod task;

pub use task::{Decision, TaskSchedule};

use std::time::Duration;

/// Tunables of the scheduler.
#[derive(Clone, Debug)]
pub struct Config {
    /// Candidate parents named per assignment.
    pub parents_per_piece: usize,
    /// Concurrent uploads a peer is asked to serve at most.
    pub peer_upload_slots: u32,
    /// Concurrent uploads the seed is asked to serve at most.
    pub seed_upload_slots: u32,
    /// Transfers one peer may have in flight from the seed at once.
    pub seed_slots_per_peer: u32,
    /// How long a piece in flight keeps the seed from sending it again.
    pub seed_once_window: Duration,
    /// Extra cost of the seed as a parent, in units of one in-flight upload.
    pub seed_penalty: u32,
    /// An assignment not reported within this time is taken back.
    pub inflight_timeout: Duration,
    /// Timeouts or other failures after which a parent is treated as dead.
    pub failures_before_dead: u32,
    /// Holders examined per piece when choosing parents (bounds work with huge swarms).
    pub parent_sample: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            parents_per_piece: 3,
            peer_upload_slots: 8,
            seed_upload_slots: 8,
            seed_slots_per_peer: 2,
            seed_once_window: Duration::from_secs(10),
            seed_penalty: 3,
            inflight_timeout: Duration::from_secs(60),
            failures_before_dead: 3,
            parent_sample: 24,
        }
    }
}

#[cfg(test)]
mod tests;
