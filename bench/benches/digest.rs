//! Digest throughput: the per-piece sha256 every transfer pays on both ends.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use odonata_proto::PieceDigest;

fn digest(c: &mut Criterion) {
    let mut g = c.benchmark_group("digest");
    for size in [1usize << 20, 4 << 20] {
        let data = vec![0x5au8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(
            BenchmarkId::new("piece_sha256", format!("{}MiB", size >> 20)),
            &data,
            |b, d| b.iter(|| PieceDigest::of(std::hint::black_box(d))),
        );
    }
    g.finish();
}

criterion_group!(benches, digest);
criterion_main!(benches);
