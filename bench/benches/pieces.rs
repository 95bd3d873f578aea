//! Piece serving and fetching on loopback: the daemon's upload router serving 4 MiB pieces
//! from a store, fetched by the real client into another store (length and sha256 checked), one at a time and
//! four at once; and plain GETs without verification to separate serving from hashing.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use odonata_proto::{PieceDigest, PieceLayout, TaskKey};
use odonata_storage::{Store, TaskMeta};
use odonata_transfer::{upload_router, PieceClient, UploadStats};

const PIECE: u32 = 4 << 20;
const COUNT: u32 = 32;

fn pieces(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let url = "http://198.18.0.1/bench.bin";
    let task = TaskKey::new(url, &[]).unwrap().id();
    let meta = TaskMeta {
        task_id: task.clone(),
        url: url.into(),
        layout: PieceLayout {
            piece_size: PIECE,
            content_length: Some(u64::from(PIECE) * u64::from(COUNT)),
        },
    };
    let data = store.prepare(meta.clone()).unwrap();
    // The fetching side writes into its own store; each iteration gets a fresh (empty) task,
    // made outside the timed part, because a held piece is never overwritten.
    let sink_dir = tempfile::tempdir().unwrap();
    let sink = Store::open(sink_dir.path()).unwrap();
    let fresh = || {
        sink.remove(&task);
        sink.prepare(meta.clone()).unwrap()
    };
    let mut digests = Vec::new();
    for n in 0..COUNT {
        let bytes: Vec<u8> = (0..PIECE).map(|i| (i ^ n).wrapping_mul(31) as u8).collect();
        let d = PieceDigest::of(&bytes);
        data.write_piece(n, &bytes, d).unwrap();
        digests.push(d);
    }
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = upload_router(store.clone(), Arc::new(UploadStats::default()), None);
    rt.spawn(async move { axum::serve(listener, app).await });
    let client = PieceClient::new(Duration::from_secs(10));
    let raw = reqwest::Client::builder().no_proxy().build().unwrap();

    let mut g = c.benchmark_group("pieces_loopback");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(u64::from(PIECE)));
    let mut n = 0u32;
    g.bench_function("fetch_verified_4MiB_x1", |b| {
        b.iter_batched(
            || {
                n = (n + 1) % COUNT;
                (n, fresh())
            },
            |(n, t)| {
                rt.block_on(client.fetch_into(&addr, &task, n, PIECE, digests[n as usize], &[], &t))
                    .unwrap()
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("get_unverified_4MiB_x1", |b| {
        b.iter(|| {
            n = (n + 1) % COUNT;
            rt.block_on(async {
                raw.get(format!("http://{addr}/pieces/{task}/{n}"))
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
            })
        })
    });
    g.throughput(Throughput::Bytes(4 * u64::from(PIECE)));
    g.bench_function("fetch_verified_4MiB_x4_parallel", |b| {
        b.iter_batched(
            || {
                n = (n + 4) % COUNT;
                (n, fresh())
            },
            |(n, t)| {
                rt.block_on(async {
                    let fs = (0..4).map(|k| {
                        let num = (n + k) % COUNT;
                        client.fetch_into(&addr, &task, num, PIECE, digests[num as usize], &[], &t)
                    });
                    for r in futures_util::future::join_all(fs).await {
                        r.unwrap();
                    }
                })
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, pieces);
criterion_main!(benches);
