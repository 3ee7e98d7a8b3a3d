//! Timestamps, deduplication, limits, rolling, replay, files: the behaviour of a healthy log.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use remora_log::{Appended, Error, Log, Options};

fn new(ts: u64) -> Appended {
    Appended {
        ts,
        duplicate: false,
    }
}

fn dup(ts: u64) -> Appended {
    Appended {
        ts,
        duplicate: true,
    }
}

#[test]
fn timestamps_start_at_one_and_increase_by_one_per_transaction() {
    let tmp = TempDir::new("ts");
    let mut log = Log::open(tmp.path(), Options::default()).unwrap();
    assert_eq!(log.last_ts(), 0);
    assert_eq!(append_owned(&mut log, &tx_batch(&[10])), vec![new(1)]);
    assert_eq!(
        append_owned(&mut log, &tx_batch(&[11, 12, 13])),
        vec![new(2), new(3), new(4)]
    );
    assert_eq!(append_owned(&mut log, &tx_batch(&[14])), vec![new(5)]);
    assert_eq!(log.last_ts(), 5);
    let got: Vec<(u64, u64)> = replay(&log)
        .iter()
        .map(|e| (e.ts, u64::from_le_bytes(e.digest[..8].try_into().unwrap())))
        .collect();
    assert_eq!(got, vec![(1, 10), (2, 11), (3, 12), (4, 13), (5, 14)]);
    for e in replay(&log) {
        let n = u64::from_le_bytes(e.digest[..8].try_into().unwrap());
        assert_eq!(e.bytes, payload(n));
    }
}

#[test]
fn duplicate_within_a_batch_is_delivered_once() {
    let tmp = TempDir::new("dup-batch");
    let mut log = Log::open(tmp.path(), Options::default()).unwrap();
    let got = append_owned(&mut log, &tx_batch(&[1, 2, 1, 3, 2, 1]));
    assert_eq!(got, vec![new(1), new(2), dup(1), new(3), dup(2), dup(1)]);
    assert_eq!(log.last_ts(), 3);
    assert_eq!(replay(&log).len(), 3);
}

#[test]
fn duplicate_across_batches_is_delivered_once_and_all_duplicate_batch_writes_nothing() {
    let tmp = TempDir::new("dup-across");
    let mut log = Log::open(tmp.path(), Options::default()).unwrap();
    append_owned(&mut log, &tx_batch(&[1, 2]));
    let seg = segments(tmp.path());
    let len = file_len(&seg[0]);
    assert_eq!(
        append_owned(&mut log, &tx_batch(&[2, 1])),
        vec![dup(2), dup(1)]
    );
    assert_eq!(
        file_len(&seg[0]),
        len,
        "an all-duplicate batch must not write"
    );
    assert_eq!(
        append_owned(&mut log, &tx_batch(&[3, 1, 4])),
        vec![new(3), dup(1), new(4)]
    );
    let ts: Vec<u64> = replay(&log).iter().map(|e| e.ts).collect();
    assert_eq!(ts, vec![1, 2, 3, 4]);
}

#[test]
fn duplicates_are_recognised_after_reopen_and_numbering_continues() {
    let tmp = TempDir::new("reopen");
    {
        let mut log = Log::open(tmp.path(), small(300)).unwrap();
        for i in 0..20 {
            append_owned(&mut log, &tx_batch(&[2 * i, 2 * i + 1]));
        }
        assert_eq!(log.last_ts(), 40);
        assert!(segments(tmp.path()).len() > 1);
    }
    let mut log = Log::open(tmp.path(), small(300)).unwrap();
    let r = log.recovery().clone();
    assert_eq!((r.records, r.transactions, r.bytes_truncated), (20, 40, 0));
    assert_eq!(r.torn_tail, None);
    assert_eq!(log.last_ts(), 40);
    assert_eq!(
        append_owned(&mut log, &tx_batch(&[0, 39, 100, 17])),
        vec![dup(1), dup(40), new(41), dup(18)]
    );
    drop(log);
    let log = Log::open(tmp.path(), small(300)).unwrap();
    assert_eq!(log.last_ts(), 41);
    let ts: Vec<u64> = replay(&log).iter().map(|e| e.ts).collect();
    assert_eq!(ts, (1..=41).collect::<Vec<_>>());
}

#[test]
fn a_duplicate_older_than_the_window_is_appended_again() {
    let tmp = TempDir::new("window");
    let opts = Options {
        dedup_window: 3,
        ..Options::default()
    };
    let mut log = Log::open(tmp.path(), opts.clone()).unwrap();
    append_owned(&mut log, &tx_batch(&[1, 2, 3]));
    assert_eq!(append_owned(&mut log, &tx_batch(&[1])), vec![dup(1)]);
    append_owned(&mut log, &tx_batch(&[4])); // window now holds 2, 3, 4
    assert_eq!(append_owned(&mut log, &tx_batch(&[1])), vec![new(5)]);
    assert_eq!(append_owned(&mut log, &tx_batch(&[1])), vec![dup(5)]);
    drop(log);
    // The window is rebuilt from the log with the same bound: 3, 4, 1 (at 5).
    let mut log = Log::open(tmp.path(), opts).unwrap();
    assert_eq!(
        append_owned(&mut log, &tx_batch(&[2, 3, 1])),
        vec![new(6), dup(3), dup(5)]
    );
}

#[test]
fn empty_batch_and_oversized_transaction_are_errors_that_change_nothing() {
    let tmp = TempDir::new("limits");
    let opts = Options {
        max_tx_size: 100,
        ..Options::default()
    };
    let mut log = Log::open(tmp.path(), opts.clone()).unwrap();
    append_owned(&mut log, &tx_batch(&[1]));
    let before = file_len(&segments(tmp.path())[0]);

    assert!(matches!(log.append(&[]), Err(Error::EmptyBatch)));
    let big = vec![0u8; 101];
    let ok = vec![0u8; 100];
    let err = log
        .append(&[(digest(2), &ok), (digest(3), &big)])
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TxTooLarge {
                index: 1,
                len: 101,
                max: 100
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("101 bytes"), "{err}");

    assert_eq!(log.last_ts(), 1);
    assert_eq!(file_len(&segments(tmp.path())[0]), before);
    // Not poisoned, and digest 2 was not remembered.
    assert_eq!(log.append(&[(digest(2), &ok)]).unwrap(), vec![new(2)]);
    assert!(matches!(
        Log::open(
            tmp.sub("x"),
            Options {
                max_tx_size: usize::MAX,
                ..opts
            }
        ),
        Err(Error::InvalidOptions(_))
    ));
}

#[test]
fn segments_roll_at_the_size_limit_and_replay_spans_them() {
    let tmp = TempDir::new("roll");
    let limit = 200;
    let mut log = Log::open(tmp.path(), small(limit)).unwrap();
    for i in 0..30 {
        append_owned(&mut log, &tx_batch(&[i]));
    }
    // One oversized record gets a segment of its own.
    let huge = vec![7u8; 1000];
    log.append(&[(digest(1000), &huge)]).unwrap();
    append_owned(&mut log, &tx_batch(&[1001]));
    let segs = segments(tmp.path());
    assert!(segs.len() >= 5, "{} segments", segs.len());
    for (i, seg) in segs.iter().enumerate() {
        let len = file_len(seg);
        let holds_huge = len > 1000;
        assert!(
            len <= limit || holds_huge,
            "segment {i} is {len} bytes, over {limit}"
        );
    }
    // Names carry the first timestamp of each segment.
    let firsts: Vec<u64> = segs
        .iter()
        .map(|p| {
            p.file_name().unwrap().to_str().unwrap()[4..24]
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(firsts[0], 1);
    assert!(firsts.windows(2).all(|w| w[0] < w[1]));
    assert!(
        firsts.contains(&31),
        "the oversized record starts a segment"
    );
    assert!(firsts.contains(&32), "and the next record starts another");
    drop(log);
    let log = Log::open(tmp.path(), small(limit)).unwrap();
    let entries = replay(&log);
    assert_eq!(entries.len(), 32);
    assert_eq!(entries[30].bytes, huge);
    assert!(entries
        .iter()
        .enumerate()
        .all(|(i, e)| e.ts == i as u64 + 1));
}

#[test]
fn read_from_and_read_batch_start_anywhere() {
    let tmp = TempDir::new("read");
    let mut log = Log::open(tmp.path(), small(500)).unwrap();
    let mut n = 0;
    for size in 1..12 {
        let ids: Vec<u64> = (n..n + size).collect();
        n += size;
        append_owned(&mut log, &tx_batch(&ids));
    }
    let last = log.last_ts();
    assert_eq!(last, n);
    for from in 0..=last + 2 {
        let got: Vec<u64> = log
            .read_from(from)
            .unwrap()
            .map(|e| e.unwrap().ts)
            .collect();
        let want: Vec<u64> = (from.max(1)..=last).collect();
        assert_eq!(got, want, "read_from({from})");
    }
    let chunk = log.read_batch(10, 4).unwrap();
    assert_eq!(
        chunk.iter().map(|e| e.ts).collect::<Vec<_>>(),
        vec![10, 11, 12, 13]
    );
    assert_eq!(chunk[0].digest, digest(9));
    assert!(log.read_batch(last + 1, 10).unwrap().is_empty());

    // A reader sees the log as of its creation, even if appends follow.
    let reader = log.read_from(1).unwrap();
    append_owned(&mut log, &tx_batch(&[9999]));
    assert_eq!(reader.count() as u64, last);
}

#[test]
fn files_are_private_and_the_directory_is_locked() {
    let tmp = TempDir::new("perm");
    let dir = tmp.sub("a/b");
    let mut log = Log::open(&dir, small(100)).unwrap();
    for i in 0..5 {
        append_owned(&mut log, &tx_batch(&[i]));
    }
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir) & 0o077, 0, "directory mode {:o}", mode(&dir));
    assert_eq!(mode(&dir) & 0o700, 0o700);
    let segs = segments(&dir);
    assert!(segs.len() > 1);
    for f in segs.iter().chain([&dir.join("LOCK")]) {
        assert_eq!(mode(f) & 0o077, 0, "{} mode {:o}", f.display(), mode(f));
    }
    assert!(matches!(Log::open(&dir, small(100)), Err(Error::Locked(_))));
    drop(log);
    Log::open(&dir, small(100)).unwrap();
}
