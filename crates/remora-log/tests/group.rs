//! Group commit: `append_many` gives exactly what one `append` per batch gives (timestamps,
//! duplicates, the window, what replay delivers), in fewer records, and rejects a bad batch
//! alone. Random batches; replay a failure with `REMORA_LOG_SEED=<seed>`.

mod common;

use common::*;
use remora_log::{Appended, Digest, Error, Log, Options};

fn refs(batch: &[(Digest, Vec<u8>)]) -> Vec<(Digest, &[u8])> {
    batch.iter().map(|(d, b)| (*d, b.as_slice())).collect()
}

/// Per batch: its results, or the error's message.
fn outcomes(results: Vec<remora_log::Result<Vec<Appended>>>) -> Vec<Result<Vec<Appended>, String>> {
    results
        .into_iter()
        .map(|r| r.map_err(|e| e.to_string()))
        .collect()
}

#[test]
fn append_many_equals_one_append_per_batch() {
    let seed = seed("REMORA_LOG_SEED");
    let mut rng = Rng::new(seed);
    let tmp = TempDir::new("group-equals");
    for (case, window) in [0usize, 3, 50, 1_000_000].into_iter().enumerate() {
        let options = Options {
            dedup_window: window,
            max_tx_size: 40,
            ..Options::default()
        };
        let mut grouped = Log::open(tmp.sub(&format!("grouped-{case}")), options.clone()).unwrap();
        let mut single = Log::open(tmp.sub(&format!("single-{case}")), options).unwrap();
        let mut next = 0u64;
        for call in 0..30 {
            // 1 to 6 batches per call; ids reuse recent ones often, some batches are empty
            // or hold a transaction over the size limit.
            let batches: Vec<Vec<(Digest, Vec<u8>)>> = (0..1 + rng.below(6))
                .map(|_| {
                    if rng.chance(5) {
                        return Vec::new();
                    }
                    let mut batch: Vec<(Digest, Vec<u8>)> = (0..rng.below(12))
                        .map(|_| {
                            let id = if next > 0 && rng.chance(30) {
                                next - 1 - rng.below(next.min(80))
                            } else {
                                next += 1;
                                next
                            };
                            (digest(id), payload(id))
                        })
                        .collect();
                    if batch.is_empty() || rng.chance(5) {
                        batch.push((digest(u64::MAX), vec![0; 41]));
                    }
                    batch
                })
                .collect();
            let borrowed: Vec<Vec<(Digest, &[u8])>> = batches.iter().map(|b| refs(b)).collect();
            let slices: Vec<&[(Digest, &[u8])]> = borrowed.iter().map(|b| b.as_slice()).collect();
            let got = outcomes(grouped.append_many(&slices));
            let want = outcomes(slices.iter().map(|b| single.append(b)).collect());
            assert_eq!(got, want, "seed {seed}, window {window}, call {call}");
        }
        assert_eq!(grouped.last_ts(), single.last_ts(), "seed {seed}");
        let (a, b) = (replay(&grouped), replay(&single));
        assert_eq!(a.len(), b.len(), "seed {seed}");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                (x.ts, x.digest, &x.bytes),
                (y.ts, y.digest, &y.bytes),
                "seed {seed}"
            );
        }
        drop((grouped, single));
        // Reopening verifies every record, and counts them.
        let grouped = Log::open(tmp.sub(&format!("grouped-{case}")), Options::default()).unwrap();
        let single = Log::open(tmp.sub(&format!("single-{case}")), Options::default()).unwrap();
        assert!(
            grouped.recovery().records < single.recovery().records,
            "seed {seed}: {} records grouped, {} one per batch",
            grouped.recovery().records,
            single.recovery().records
        );
        assert_eq!(replay(&grouped).len(), a.len());
    }
}

#[test]
fn a_bad_batch_in_a_group_is_rejected_alone_and_the_rest_is_one_record() {
    let tmp = TempDir::new("group-bad");
    let mut log = Log::open(tmp.path(), Options::default()).unwrap();
    let (a, b) = (tx_batch(&[1, 2]), tx_batch(&[3, 2, 4]));
    let (a, b) = (refs(&a), refs(&b));
    let results = log.append_many(&[&a, &[], &b]);
    assert_eq!(results.len(), 3);
    let fresh = |ts| Appended {
        ts,
        duplicate: false,
    };
    assert_eq!(results[0].as_ref().unwrap(), &vec![fresh(1), fresh(2)]);
    assert!(matches!(results[1], Err(Error::EmptyBatch)));
    assert_eq!(
        results[2].as_ref().unwrap(),
        &vec![
            fresh(3),
            Appended {
                ts: 2,
                duplicate: true
            },
            fresh(4)
        ]
    );
    drop(log);
    let log = Log::open(tmp.path(), Options::default()).unwrap();
    assert_eq!(log.recovery().records, 1, "one write, one fsync");
    let ts: Vec<u64> = replay(&log).iter().map(|e| e.ts).collect();
    assert_eq!(ts, vec![1, 2, 3, 4]);
}
