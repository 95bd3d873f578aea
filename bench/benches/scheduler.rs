//! Scheduler decisions per second: one `assign` of one piece (rarest-first choice plus
//! parent choice) with 10,000 peers on one task, and spread over 1,000 tasks. Each decision
//! is handed back with `release`, so the swarm's state stays the same across iterations.

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use odonata_proto::messages::PieceDone;
use odonata_proto::{PeerId, PieceDigest};
use odonata_scheduler::{Config, TaskSchedule};

const PIECES: u32 = 256;

/// A task in mid-swarm: the seed holds every piece and peer `i` holds a pseudo-random
/// `fill` of them (so rarity differs per piece and parents are many).
fn swarm(peers: usize, fill: f64, salt: u64) -> (TaskSchedule, Vec<PeerId>) {
    let mut s = TaskSchedule::new(Config::default());
    let seed = PeerId(format!("seed-{salt}"));
    s.join(&seed, "198.18.0.1:8001", true);
    for n in 0..PIECES {
        s.add_piece(&seed, n, 1 << 20, PieceDigest([n as u8; 32]));
    }
    let ids: Vec<PeerId> = (0..peers).map(|i| PeerId(format!("p{salt}-{i}"))).collect();
    let mut x = salt.wrapping_add(0x9E37_79B9_7F4A_7C15);
    for (i, id) in ids.iter().enumerate() {
        s.join(id, &format!("198.19.{}.{}:65000", i / 250, i % 250), false);
        for n in 0..PIECES {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (x % 1000) as f64 / 1000.0 < fill {
                let parent = if i > 0 {
                    ids[i - 1].clone()
                } else {
                    seed.clone()
                };
                s.finished(
                    id,
                    &PieceDone {
                        num: n,
                        parent: Some(parent),
                        cost_ms: 1,
                    },
                );
            }
        }
    }
    (s, ids)
}

fn one_task(c: &mut Criterion) {
    let (mut s, ids) = swarm(10_000, 0.5, 1);
    let now = Instant::now();
    let mut i = 0usize;
    let mut g = c.benchmark_group("scheduler");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decision_10k_peers_one_task", |b| {
        b.iter(|| {
            let id = &ids[i % ids.len()];
            i = i.wrapping_add(7919);
            let d = s.assign(id, 1, now);
            for x in &d {
                s.release(id, x.num);
            }
            d.len()
        })
    });
    g.finish();
}

fn many_tasks(c: &mut Criterion) {
    let tasks: Vec<(TaskSchedule, Vec<PeerId>)> =
        (0..1000).map(|t| swarm(10, 0.5, t as u64 + 10)).collect();
    let mut tasks = tasks;
    let now = Instant::now();
    let mut i = 0usize;
    let mut g = c.benchmark_group("scheduler");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decision_1000_tasks_10_peers_each", |b| {
        b.iter(|| {
            let t = i % tasks.len();
            let p = (i / tasks.len()) % 10;
            i = i.wrapping_add(1);
            let (s, ids) = &mut tasks[t];
            let d = s.assign(&ids[p], 1, now);
            for x in &d {
                s.release(&ids[p], x.num);
            }
            d.len()
        })
    });
    g.finish();
}

criterion_group!(benches, one_task, many_tasks);
criterion_main!(benches);
