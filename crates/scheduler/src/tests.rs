use std::time::{Duration, Instant};

use odonata_proto::messages::{FailReason, PieceDone, PieceFailed};
use odonata_proto::{PeerId, PieceDigest};
use proptest::prelude::*;

use super::*;

fn seed() -> PeerId {
    PeerId("seed".into())
}

fn peer(i: usize) -> PeerId {
    PeerId(format!("p{i}"))
}

fn schedule(pieces: u32, peers: usize) -> TaskSchedule {
    let mut s = TaskSchedule::new(Config::default());
    s.join(&seed(), "seed:8001", true);
    for n in 0..pieces {
        s.add_piece(&seed(), n, 100, PieceDigest([n as u8; 32]));
    }
    for i in 0..peers {
        s.join(&peer(i), &format!("10.0.0.{i}:65000"), false);
    }
    s
}

fn done(num: u32, parent: &PeerId) -> PieceDone {
    PieceDone {
        num,
        parent: Some(parent.clone()),
        cost_ms: 1,
    }
}

/// Runs rounds in which every peer asks for work and every transfer completes by the next
/// round; returns (rounds, pieces served by the seed).
fn simulate(s: &mut TaskSchedule, pieces: u32, peers: usize, want: u32) -> (u32, u64) {
    let now = Instant::now();
    for round in 1..=10_000u32 {
        let mut reports = Vec::new();
        for i in 0..peers {
            for d in s.assign(&peer(i), want, now) {
                reports.push((i, d.num, d.parents[0].0.clone()));
            }
        }
        for (i, num, parent) in reports {
            s.finished(&peer(i), &done(num, &parent));
        }
        let snap = s.peers();
        if snap
            .iter()
            .filter(|p| !p.is_seed)
            .all(|p| p.pieces == pieces)
        {
            let seed_served = snap.iter().find(|p| p.is_seed).map(|p| p.served);
            return (round, seed_served.unwrap_or(0));
        }
    }
    panic!("swarm did not complete");
}

#[test]
fn swarm_completes_and_spares_the_seed() {
    let (pieces, peers) = (64, 200);
    let mut s = schedule(pieces, peers);
    let (rounds, seed_served) = simulate(&mut s, pieces, peers, 4);
    // Every peer got every piece; the seed sent exactly one copy.
    assert_eq!(
        seed_served,
        u64::from(pieces),
        "seed served {seed_served} pieces"
    );
    assert!(rounds < 200, "took {rounds} rounds");
    // Nothing is left in flight and no upload slot leaks.
    assert!(s.peers().iter().all(|p| p.uploading == 0));
}

#[test]
fn rarest_first_spreads_peers_over_different_pieces() {
    let mut s = schedule(16, 4);
    let now = Instant::now();
    let mut first = Vec::new();
    for i in 0..4 {
        let d = s.assign(&peer(i), 1, now);
        first.push(d[0].num);
    }
    first.sort_unstable();
    first.dedup();
    assert_eq!(first.len(), 4, "peers should start on distinct pieces");
}

#[test]
fn once_a_live_peer_holds_a_piece_the_seed_is_not_even_a_fallback() {
    let mut s = schedule(1, 3);
    let now = Instant::now();
    s.finished(&peer(0), &done(0, &seed()));
    let d = s.assign(&peer(1), 4, now);
    let p0 = d.iter().find(|d| d.num == 0).unwrap();
    assert_eq!(p0.parents[0].0, peer(0));
    // A failed peer transfer is retried on peers, never as a second copy from the seed.
    assert!(p0.parents.iter().all(|p| p.0 != seed()), "{p0:?}");
    // With the only holder dead, the seed sends it again.
    s.failed(
        &peer(1),
        &PieceFailed {
            num: 0,
            parent: peer(0),
            reason: FailReason::Unreachable,
        },
    );
    s.release(&peer(1), 0);
    let d = s.assign(&peer(1), 4, now);
    let p0 = d.iter().find(|d| d.num == 0).unwrap();
    assert_eq!(p0.parents[0].0, seed());
}

#[test]
fn corrupt_parent_is_blocked_and_never_chosen_again() {
    let mut s = schedule(8, 3);
    let now = Instant::now();
    for n in 0..8 {
        s.finished(&peer(0), &done(n, &seed()));
    }
    let d = s.assign(&peer(1), 8, now);
    assert!(d.iter().any(|d| d.parents[0].0 == peer(0)));
    s.failed(
        &peer(1),
        &PieceFailed {
            num: d[0].num,
            parent: peer(0),
            reason: FailReason::Corrupt,
        },
    );
    for x in &d {
        s.release(&peer(1), x.num);
    }
    for i in [1, 2] {
        for d in s.assign(&peer(i), 8, now) {
            assert!(d.parents.iter().all(|p| p.0 != peer(0)));
        }
    }
    assert!(s.peers().iter().any(|p| p.peer_id == peer(0) && p.blocked));
}

#[test]
fn unreachable_parent_is_dead_until_it_talks_again() {
    let mut s = schedule(2, 2);
    let now = Instant::now();
    s.finished(&peer(0), &done(0, &seed()));
    s.failed(
        &peer(1),
        &PieceFailed {
            num: 0,
            parent: peer(0),
            reason: FailReason::Unreachable,
        },
    );
    let d = s.assign(&peer(1), 2, now);
    assert!(d.iter().all(|d| d.parents.iter().all(|p| p.0 != peer(0))));
    s.touch(&peer(0));
    s.release(&peer(1), 0);
    s.release(&peer(1), 1);
    let d = s.assign(&peer(1), 2, now);
    assert!(d.iter().any(|d| d.parents[0].0 == peer(0)));
}

#[test]
fn stale_assignments_are_taken_back() {
    let mut s = schedule(1, 1);
    let now = Instant::now();
    assert_eq!(s.assign(&peer(0), 1, now).len(), 1);
    assert!(s.assign(&peer(0), 1, now).is_empty());
    s.expire(now + Duration::from_secs(120));
    assert!(s.peers().iter().all(|p| p.uploading == 0));
    assert_eq!(
        s.assign(&peer(0), 1, now + Duration::from_secs(120)).len(),
        1
    );
}

#[test]
fn claims_of_unknown_pieces_are_ignored() {
    let mut s = schedule(2, 1);
    s.finished(&peer(0), &done(99, &seed()));
    assert_eq!(
        s.peers()
            .iter()
            .find(|p| p.peer_id == peer(0))
            .unwrap()
            .pieces,
        0
    );
}

#[test]
fn seed_slots_bound_concurrent_uploads() {
    let mut s = schedule(100, 50);
    let now = Instant::now();
    let mut total = 0;
    for i in 0..50 {
        total += s.assign(&peer(i), 8, now).len();
    }
    assert!(s.peers().iter().all(|p| p.uploading <= 8));
    assert_eq!(total as u32, Config::default().seed_upload_slots);
}

/// The seed and peers `p0..p{peers-1}` are honest; the ones after them lie.
fn is_honest(id: &PeerId, peers: usize) -> bool {
    match id.0.strip_prefix('p').and_then(|k| k.parse::<usize>().ok()) {
        Some(k) => k < peers,
        None => true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Whatever the swarm shape and failures, slots never leak and every peer completes.
    #[test]
    fn swarm_always_completes(pieces in 1u32..40, peers in 1usize..30, want in 1u32..6, corrupt in 0usize..3) {
        let mut s = schedule(pieces, peers + corrupt);
        // Corrupt peers claim to hold everything.
        for c in 0..corrupt {
            for n in 0..pieces {
                s.finished(&peer(peers + c), &PieceDone { num: n, parent: None, cost_ms: 0 });
            }
        }
        let now = Instant::now();
        let mut complete = false;
        for _ in 0..2000 {
            let mut reports = Vec::new();
            for i in 0..peers {
                for d in s.assign(&peer(i), want, now) {
                    reports.push((i, d));
                }
            }
            for (i, d) in reports {
                let good = d.parents.iter().find(|p| is_honest(&p.0, peers));
                for p in &d.parents {
                    if Some(p) == good { break; }
                    s.failed(&peer(i), &PieceFailed { num: d.num, parent: p.0.clone(), reason: FailReason::Corrupt });
                }
                match good {
                    Some(p) => s.finished(&peer(i), &done(d.num, &p.0)),
                    None => s.release(&peer(i), d.num),
                }
            }
            let snap = s.peers();
            if (0..peers).all(|i| snap.iter().any(|p| p.peer_id == peer(i) && p.pieces == pieces)) {
                complete = true;
                break;
            }
        }
        prop_assert!(complete);
        prop_assert!(s.peers().iter().all(|p| p.uploading == 0));
    }
}

#[test]
fn the_seed_spreads_its_copy_over_many_peers() {
    // 8 peers each able to take 8 pieces; the seed's 8 slots go to 4 peers, 2 each, not
    // all to the first peer that asks.
    let mut s = schedule(64, 8);
    let now = Instant::now();
    let mut takers = 0;
    for i in 0..8 {
        let n = s.assign(&peer(i), 8, now).len();
        assert!(n <= 2, "peer {i} got {n} transfers from the seed");
        if n > 0 {
            takers += 1;
        }
    }
    assert_eq!(takers, 4);
}

#[test]
fn a_child_that_died_silently_does_not_hold_a_piece_hostage() {
    let mut s = schedule(1, 2);
    let now = Instant::now();
    // p0 takes the only piece from the seed, then dies without reporting.
    assert_eq!(s.assign(&peer(0), 1, now).len(), 1);
    // Right away, p1 waits for p0's copy rather than taking a second one from the seed...
    assert!(s.assign(&peer(1), 1, now).is_empty());
    // ...but not for ever: after the window the seed sends again.
    let later = now + Config::default().seed_once_window + Duration::from_secs(1);
    let d = s.assign(&peer(1), 1, later);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].parents[0].0, seed());
}
