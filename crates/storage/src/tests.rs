use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;

use odonata_proto::{PieceDigest, PieceLayout, TaskKey};

use super::*;

fn meta(len: Option<u64>) -> TaskMeta {
    TaskMeta {
        task_id: TaskKey::new("http://h/f", &[]).unwrap().id(),
        url: "http://h/f".into(),
        layout: PieceLayout {
            piece_size: 1024,
            content_length: len,
        },
    }
}

fn piece(i: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| i.wrapping_mul(31).wrapping_add(k as u8))
        .collect()
}

#[test]
fn pieces_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let m = meta(Some(2500));
    {
        let store = Store::open(dir.path()).unwrap();
        let t = store.prepare(m.clone()).unwrap();
        for (i, len) in [(0u32, 1024usize), (2, 452)] {
            let p = piece(i as u8, len);
            t.write_piece(i, &p, PieceDigest::of(&p)).unwrap();
        }
        assert_eq!(t.held(), vec![0, 2]);
        assert!(!t.is_complete());
    }
    let store = Store::open(dir.path()).unwrap();
    let t = store.get(&m.task_id).unwrap();
    assert_eq!(t.held(), vec![0, 2]);
    assert_eq!(t.read_piece(2).unwrap().unwrap(), piece(2, 452));
    assert!(t.read_piece(1).unwrap().is_none());
    let p = piece(1, 1024);
    t.write_piece(1, &p, PieceDigest::of(&p)).unwrap();
    assert!(t.is_complete());
    assert_eq!(t.held_bytes(), 2500);
}

#[test]
fn wrong_length_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let t = store.prepare(meta(Some(2500))).unwrap();
    let p = piece(0, 1000);
    assert!(matches!(
        t.write_piece(0, &p, PieceDigest::of(&p)),
        Err(StorageError::OutOfRange { .. })
    ));
    assert!(t.write_piece(7, &p, PieceDigest::of(&p)).is_err());
}

#[test]
fn corrupted_bytes_and_torn_log_are_dropped_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let m = meta(Some(3072));
    {
        let store = Store::open(dir.path()).unwrap();
        let t = store.prepare(m.clone()).unwrap();
        for i in 0..3u32 {
            let p = piece(i as u8, 1024);
            t.write_piece(i, &p, PieceDigest::of(&p)).unwrap();
        }
        // Flip a byte of piece 1 behind the store's back, and tear the log's tail.
        let f = OpenOptions::new().write(true).open(t.data_path()).unwrap();
        f.write_all_at(&[0xff, 0xfe], 1500).unwrap();
        let mut log = OpenOptions::new()
            .append(true)
            .open(
                dir.path()
                    .join("meta")
                    .join(format!("{}.pieces", m.task_id)),
            )
            .unwrap();
        log.write_all(&[1, 2, 3]).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let t = store.get(&m.task_id).unwrap();
    assert_eq!(t.held(), vec![0, 2]);
}

#[test]
fn changed_layout_starts_afresh_and_unknown_length_is_learnt() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let t = store.prepare(meta(None)).unwrap();
    let p = piece(0, 1024);
    t.write_piece(0, &p, PieceDigest::of(&p)).unwrap();
    // The length becomes known: pieces stay.
    let t = store.prepare(meta(Some(1500))).unwrap();
    assert_eq!(t.held(), vec![0]);
    // A different length means different content: start again.
    let t = store.prepare(meta(Some(4000))).unwrap();
    assert!(t.held().is_empty());
}

#[test]
fn streamed_pieces_are_invisible_until_committed_and_held_ones_are_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let t = store.prepare(meta(Some(2500))).unwrap();
    let p = piece(1, 1024);
    t.write_unverified(1, 0, &p[..600]).unwrap();
    assert!(t.read_piece(1).unwrap().is_none());
    t.write_unverified(1, 600, &p[600..]).unwrap();
    assert!(
        t.write_unverified(1, 1000, &p[..100]).is_err(),
        "past the piece's end"
    );
    t.commit_piece(1, 1024, PieceDigest::of(&p)).unwrap();
    assert_eq!(t.read_piece(1).unwrap().unwrap(), p);
    assert!(
        t.write_unverified(1, 0, &[0u8; 10]).is_err(),
        "held pieces are immutable"
    );
    assert!(
        t.write_unverified(9, 0, &[0u8; 10]).is_err(),
        "past the file's end"
    );
    assert!(
        t.commit_piece(2, 1000, PieceDigest::of(&p)).is_err(),
        "wrong length"
    );
}

#[test]
fn a_task_started_afresh_never_truncates_a_hard_linked_output() {
    // Export links the data file to the user's output; starting the task again (here a
    // changed layout) must leave that output's bytes alone.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let t = store.prepare(meta(Some(1024))).unwrap();
    let p = piece(7, 1024);
    t.write_piece(0, &p, PieceDigest::of(&p)).unwrap();
    let out = dir.path().join("output.bin");
    std::fs::hard_link(t.data_path(), &out).unwrap();
    let t2 = store.prepare(meta(Some(3000))).unwrap();
    let q = piece(9, 1024);
    t2.write_piece(0, &q, PieceDigest::of(&q)).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), p);
    assert_eq!(std::fs::metadata(t2.data_path()).unwrap().len(), 3000);
}

#[test]
fn reverify_drops_pieces_edited_through_a_linked_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("output.bin");
    {
        let store = Store::open(dir.path()).unwrap();
        let t = store.prepare(meta(Some(2500))).unwrap();
        for (i, len) in [(0u32, 1024usize), (1, 1024), (2, 452)] {
            let p = piece(i as u8, len);
            t.write_piece(i, &p, PieceDigest::of(&p)).unwrap();
        }
        assert!(!t.shared_with_output());
        std::fs::hard_link(t.data_path(), &out).unwrap();
        assert!(t.shared_with_output());
        assert_eq!(t.reverify().unwrap(), 0);
        // The user edits their output in place: the cache's bytes change with it.
        let f = OpenOptions::new().write(true).open(&out).unwrap();
        f.write_all_at(b"edited", 1030).unwrap();
        assert_eq!(t.reverify().unwrap(), 1);
        assert_eq!(t.held(), vec![0, 2]);
        assert_eq!(t.held_bytes(), 1024 + 452);
    }
    let store = Store::open(dir.path()).unwrap();
    let t = store.get(&meta(None).task_id).unwrap();
    assert_eq!(t.held(), vec![0, 2]);
}
