//! The schedule of one task.

use std::collections::HashMap;
use std::time::Instant;

use odonata_proto::messages::{FailReason, PeerInfo, PieceDone, PieceFailed};
use odonata_proto::{PeerId, PieceDigest};

use crate::Config;

type Idx = usize;

#[derive(Clone, Copy, Debug)]
struct PieceInfo {
    len: u32,
    digest: PieceDigest,
}

#[derive(Debug)]
struct Inflight {
    parents: Vec<Idx>,
    /// Index into `parents` of the one whose upload slot is charged.
    charged: usize,
    since: Instant,
}

#[derive(Debug)]
struct Peer {
    id: PeerId,
    addr: String,
    is_seed: bool,
    have: Vec<bool>,
    have_count: u32,
    inflight: HashMap<u32, Inflight>,
    /// Of this peer's transfers in flight, those charged to the seed.
    from_seed: u32,
    uploading: u32,
    served: u64,
    failures: u32,
    blocked: bool,
    dead: bool,
}

impl Peer {
    fn has(&self, num: u32) -> bool {
        self.have.get(num as usize).copied().unwrap_or(false)
    }
}

/// One piece to fetch and the parents to try, best first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Piece number.
    pub num: u32,
    /// Piece length.
    pub len: u32,
    /// Piece digest.
    pub digest: PieceDigest,
    /// Parents as (id, upload address, is the seed), best first.
    pub parents: Vec<(PeerId, String, bool)>,
}

/// Schedule state of one task.
#[derive(Debug)]
pub struct TaskSchedule {
    cfg: Config,
    pieces: Vec<Option<PieceInfo>>,
    holders: Vec<Vec<Idx>>,
    inflight_count: Vec<u32>,
    /// When each piece was last handed out (for the seed-once rule's window).
    assigned_at: Vec<Option<Instant>>,
    peers: Vec<Peer>,
    index: HashMap<PeerId, Idx>,
}

/// A cheap, well-mixed hash, so tie-breaks differ per peer and per piece.
fn mix(a: u64, b: u64) -> u64 {
    let mut x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_add(0x632B_E59B_D9B4_E019);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 29)
}

impl TaskSchedule {
    /// An empty schedule.
    pub fn new(cfg: Config) -> Self {
        Self {
            cfg,
            pieces: Vec::new(),
            holders: Vec::new(),
            inflight_count: Vec::new(),
            assigned_at: Vec::new(),
            peers: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Adds (or refreshes the address of) a peer; a peer that talks to us is alive again.
    pub fn join(&mut self, id: &PeerId, addr: &str, is_seed: bool) {
        if let Some(&i) = self.index.get(id) {
            let p = &mut self.peers[i];
            p.addr = addr.to_owned();
            p.dead = false;
            p.failures = 0;
            return;
        }
        self.index.insert(id.clone(), self.peers.len());
        self.peers.push(Peer {
            id: id.clone(),
            addr: addr.to_owned(),
            is_seed,
            have: Vec::new(),
            have_count: 0,
            inflight: HashMap::new(),
            from_seed: 0,
            uploading: 0,
            served: 0,
            failures: 0,
            blocked: false,
            dead: false,
        });
    }

    /// Joins `id` at `addr` as a peer, retiring any other live peer at the same address:
    /// one address is one daemon, so that is a restarted daemon under a new id, and the old
    /// id's assignments would otherwise hold upload slots until they expire.
    pub fn join_replacing(&mut self, id: &PeerId, addr: &str) {
        let stale: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|p| !p.is_seed && !p.dead && p.addr == addr && &p.id != id)
            .map(|p| p.id.clone())
            .collect();
        for old in &stale {
            self.leave(old);
        }
        self.join(id, addr, false);
    }

    /// Whether the peer is known.
    pub fn knows(&self, id: &PeerId) -> bool {
        self.index.contains_key(id)
    }

    /// Marks a peer alive (it just talked to the supernode).
    pub fn touch(&mut self, id: &PeerId) {
        if let Some(&i) = self.index.get(id) {
            self.peers[i].dead = false;
        }
    }

    /// `peer` no longer holds piece `num` (its copy failed a re-check): it is no longer a
    /// parent for it, and may be assigned it again.
    pub fn lost(&mut self, peer: &PeerId, num: u32) {
        let Some(&i) = self.index.get(peer) else {
            return;
        };
        let n = num as usize;
        let p = &mut self.peers[i];
        if p.have.get(n).copied().unwrap_or(false) {
            p.have[n] = false;
            p.have_count = p.have_count.saturating_sub(1);
            if let Some(h) = self.holders.get_mut(n) {
                h.retain(|&x| x != i);
            }
        }
    }

    /// Whether `id` holds every piece known so far (with the seed done, the whole task).
    pub fn holds_all(&self, id: &PeerId) -> bool {
        self.index
            .get(id)
            .is_some_and(|&i| self.peers[i].have_count >= self.pieces_known())
    }

    /// Pieces known so far.
    pub fn pieces_known(&self) -> u32 {
        self.pieces.iter().filter(|p| p.is_some()).count() as u32
    }

    /// The seed (or a peer) now holds piece `num` with this length and digest.
    pub fn add_piece(&mut self, holder: &PeerId, num: u32, len: u32, digest: PieceDigest) {
        let n = num as usize;
        if self.pieces.len() <= n {
            self.pieces.resize(n + 1, None);
            self.holders.resize_with(n + 1, Vec::new);
            self.inflight_count.resize(n + 1, 0);
            self.assigned_at.resize(n + 1, None);
        }
        self.pieces[n] = Some(PieceInfo { len, digest });
        if let Some(&i) = self.index.get(holder) {
            self.mark_held(i, num);
        }
    }

    fn mark_held(&mut self, i: Idx, num: u32) {
        let p = &mut self.peers[i];
        let n = num as usize;
        if p.have.len() <= n {
            p.have.resize(n + 1, false);
        }
        if !p.have[n] {
            p.have[n] = true;
            p.have_count += 1;
            self.holders[n].push(i);
        }
    }

    fn eligible(&self, parent: Idx, asker: Idx) -> bool {
        let p = &self.peers[parent];
        let ok = if p.is_seed {
            // A few transfers from the seed per peer, so its one copy of each piece goes
            // to many peers at once and they all start forwarding early.
            p.uploading < self.cfg.seed_upload_slots
                && self.peers[asker].from_seed < self.cfg.seed_slots_per_peer
        } else {
            p.uploading < self.cfg.peer_upload_slots
        };
        parent != asker && !p.blocked && !p.dead && ok
    }

    /// Adds (`up`) or removes one transfer of `asker`'s on `parent`'s upload slots.
    fn charge(&mut self, asker: Idx, parent: Idx, up: bool) {
        let is_seed = self.peers[parent].is_seed;
        let p = &mut self.peers[parent];
        p.uploading = if up {
            p.uploading + 1
        } else {
            p.uploading.saturating_sub(1)
        };
        if is_seed {
            let a = &mut self.peers[asker];
            a.from_seed = if up {
                a.from_seed + 1
            } else {
                a.from_seed.saturating_sub(1)
            };
        }
    }

    fn cost(&self, parent: Idx) -> u32 {
        let p = &self.peers[parent];
        p.uploading * 4
            + if p.is_seed {
                self.cfg.seed_penalty * 4
            } else {
                0
            }
            + p.failures * 2
    }

    /// Up to `want` new pieces for `peer`, rarest first, each with parents best first.
    pub fn assign(&mut self, peer: &PeerId, want: u32, now: Instant) -> Vec<Decision> {
        let Some(&me) = self.index.get(peer) else {
            return Vec::new();
        };
        self.expire_peer(me, now);
        if want == 0 {
            return Vec::new();
        }
        let salt = mix(me as u64, 0x5eed);
        // (rarity, tie-break, num) for every piece this peer may fetch now.
        let mut cands: Vec<(u32, u64, u32)> = Vec::new();
        for (n, info) in self.pieces.iter().enumerate() {
            if info.is_none() {
                continue;
            }
            let num = n as u32;
            let p = &self.peers[me];
            if p.has(num) || p.inflight.contains_key(&num) {
                continue;
            }
            let holders = &self.holders[n];
            if holders.is_empty() {
                continue;
            }
            let rarity = holders.len() as u32 * 2 + self.inflight_count[n];
            cands.push((rarity, mix(salt, n as u64), num));
        }
        cands.sort_unstable();
        let mut out = Vec::new();
        for (_, _, num) in cands {
            if out.len() as u32 >= want {
                break;
            }
            let parents = self.choose_parents(me, num, now);
            if parents.is_empty() {
                continue;
            }
            let n = num as usize;
            let Some(info) = self.pieces[n] else { continue };
            self.charge(me, parents[0], true);
            self.inflight_count[n] += 1;
            self.assigned_at[n] = Some(now);
            out.push(Decision {
                num,
                len: info.len,
                digest: info.digest,
                parents: parents
                    .iter()
                    .map(|&i| {
                        let p = &self.peers[i];
                        (p.id.clone(), p.addr.clone(), p.is_seed)
                    })
                    .collect(),
            });
            self.peers[me].inflight.insert(
                num,
                Inflight {
                    parents,
                    charged: 0,
                    since: now,
                },
            );
        }
        out
    }

    fn choose_parents(&self, me: Idx, num: u32, now: Instant) -> Vec<Idx> {
        let holders = &self.holders[num as usize];
        let total = holders.len();
        let sample = total.min(self.cfg.parent_sample);
        let start = (mix(me as u64, u64::from(num)) % total as u64) as usize;
        // The seed sends each piece once: when another live peer holds the piece or it is
        // already on its way somewhere, the asker waits for a peer copy instead, and the
        // seed is not even a fallback (a failed peer transfer is retried on peers). The
        // seed's uplink is the scarcest link in the swarm; a second copy from it delays a
        // fresh one, and it is what the source side pays for.
        let seed_held_back = self.spread_elsewhere(num, me, now);
        let allowed = |i: Idx| !(seed_held_back && self.peers[i].is_seed);
        let mut scored: Vec<(u32, Idx)> = Vec::with_capacity(sample);
        for k in 0..sample {
            let i = holders[(start + k) % total];
            if self.eligible(i, me) && allowed(i) {
                scored.push((self.cost(i), i));
            }
        }
        scored.sort_unstable();
        // A parent at its slot limit is still a fine fallback after the first choice.
        let mut chosen: Vec<Idx> = scored
            .iter()
            .take(self.cfg.parents_per_piece)
            .map(|&(_, i)| i)
            .collect();
        if chosen.is_empty() {
            return chosen;
        }
        if chosen.len() < self.cfg.parents_per_piece {
            for k in 0..sample {
                let i = holders[(start + k) % total];
                let p = &self.peers[i];
                if i != me && !p.blocked && !p.dead && !chosen.contains(&i) && allowed(i) {
                    chosen.push(i);
                    if chosen.len() == self.cfg.parents_per_piece {
                        break;
                    }
                }
            }
        }
        chosen
    }

    /// Whether piece `num` is held by a live peer other than the seed, or was handed out
    /// recently enough that the transfer is presumably under way. Past the window a
    /// transfer may belong to a peer that died without a word; the seed then sends again.
    fn spread_elsewhere(&self, num: u32, me: Idx, now: Instant) -> bool {
        let n = num as usize;
        let recent = self.assigned_at[n]
            .is_some_and(|t| now.saturating_duration_since(t) < self.cfg.seed_once_window);
        if self.inflight_count[n] > 0 && recent {
            return true;
        }
        self.holders[n]
            .iter()
            .take(self.cfg.parent_sample)
            .any(|&i| {
                i != me && !self.peers[i].is_seed && !self.peers[i].blocked && !self.peers[i].dead
            })
    }

    fn end_inflight(&mut self, me: Idx, num: u32) -> Option<Inflight> {
        let f = self.peers[me].inflight.remove(&num)?;
        if let Some(&c) = f.parents.get(f.charged) {
            self.charge(me, c, false);
        }
        let n = num as usize;
        self.inflight_count[n] = self.inflight_count[n].saturating_sub(1);
        Some(f)
    }

    fn expire_peer(&mut self, me: Idx, now: Instant) {
        let timeout = self.cfg.inflight_timeout;
        let stale: Vec<u32> = self.peers[me]
            .inflight
            .iter()
            .filter(|(_, f)| now.saturating_duration_since(f.since) > timeout)
            .map(|(n, _)| *n)
            .collect();
        for num in stale {
            self.end_inflight(me, num);
        }
    }

    /// Takes back every assignment older than the timeout (call now and then).
    pub fn expire(&mut self, now: Instant) {
        for me in 0..self.peers.len() {
            self.expire_peer(me, now);
        }
    }

    /// Applies a peer's report of pieces now held.
    pub fn finished(&mut self, peer: &PeerId, done: &PieceDone) {
        let Some(&me) = self.index.get(peer) else {
            return;
        };
        let n = done.num as usize;
        // A peer cannot hold a piece the seed has not cut: ignore such claims.
        if self.pieces.get(n).is_none_or(Option::is_none) {
            return;
        }
        self.end_inflight(me, done.num);
        if let Some(parent) = done.parent.as_ref().and_then(|p| self.index.get(p)) {
            let p = &mut self.peers[*parent];
            p.served += 1;
            p.failures = 0;
        }
        self.mark_held(me, done.num);
    }

    /// Applies a failed attempt at a piece from a parent.
    pub fn failed(&mut self, peer: &PeerId, fail: &PieceFailed) {
        let Some(&me) = self.index.get(peer) else {
            return;
        };
        let Some(&parent) = self.index.get(&fail.parent) else {
            return;
        };
        // Move the upload charge off the failed parent to the next candidate.
        let mut moved = None;
        if let Some(f) = self.peers[me].inflight.get_mut(&fail.num) {
            if f.parents.get(f.charged) == Some(&parent) {
                f.charged += 1;
                moved = Some(f.parents.get(f.charged).copied());
            }
        }
        if let Some(next) = moved {
            self.charge(me, parent, false);
            if let Some(next) = next {
                self.charge(me, next, true);
            }
        }
        let p = &mut self.peers[parent];
        match fail.reason {
            FailReason::Corrupt => p.blocked = true,
            FailReason::Unreachable => p.dead = true,
            FailReason::NotFound => {
                let n = fail.num as usize;
                if p.has(fail.num) {
                    p.have[n] = false;
                    p.have_count -= 1;
                    self.holders[n].retain(|&i| i != parent);
                }
            }
            FailReason::Timeout | FailReason::Other => {
                p.failures += 1;
                if p.failures >= self.cfg.failures_before_dead {
                    p.dead = true;
                }
            }
        }
    }

    /// The peer gives back an assignment without a transfer.
    pub fn release(&mut self, peer: &PeerId, num: u32) {
        if let Some(&me) = self.index.get(peer) {
            self.end_inflight(me, num);
        }
    }

    /// The peer leaves: it is no longer a parent and its assignments are taken back.
    pub fn leave(&mut self, peer: &PeerId) {
        let Some(&me) = self.index.get(peer) else {
            return;
        };
        let nums: Vec<u32> = self.peers[me].inflight.keys().copied().collect();
        for num in nums {
            self.end_inflight(me, num);
        }
        self.peers[me].dead = true;
    }

    /// Every peer's standing.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.peers
            .iter()
            .map(|p| PeerInfo {
                peer_id: p.id.clone(),
                addr: p.addr.clone(),
                is_seed: p.is_seed,
                pieces: p.have_count,
                blocked: p.blocked,
                dead: p.dead,
                uploading: p.uploading,
                served: p.served,
            })
            .collect()
    }

    /// Number of peers (including the seed).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }
}
