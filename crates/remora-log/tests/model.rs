//! Randomized property test: random appends (new, resubmitted and repeated digests, oversized
//! transactions), reopens, crashes that cut the last segment anywhere, and garbage tails,
//! checked after every step against an in-memory model of what must be delivered.
//!
//! Replay a failure with the printed seed: `REMORA_LOG_SEED=<seed> cargo test --test model`
//! (failure messages name the case's own seed); run longer with `REMORA_LOG_CASES=<n>`.

mod common;

use std::collections::HashMap;

use common::*;
use remora_log::{Appended, Digest, Error, Log, Options};

const MAX_TX: usize = 64;

struct Model {
    /// Delivered transactions; index = ts - 1.
    entries: Vec<(Digest, Vec<u8>)>,
    window: usize,
}

impl Model {
    fn in_window(&self, digest: &Digest) -> Option<u64> {
        let n = self.entries.len();
        let start = n.saturating_sub(self.window);
        (start..n)
            .rev()
            .find(|&i| &self.entries[i].0 == digest)
            .map(|i| i as u64 + 1)
    }

    fn append(&mut self, txs: &[(Digest, Vec<u8>)]) -> Vec<Appended> {
        let mut in_batch: HashMap<Digest, u64> = HashMap::new();
        let mut out = Vec::new();
        let mut fresh = Vec::new();
        for (d, b) in txs {
            if let Some(ts) = self.in_window(d).or_else(|| in_batch.get(d).copied()) {
                out.push(Appended {
                    ts,
                    duplicate: true,
                });
            } else {
                let ts = (self.entries.len() + fresh.len()) as u64 + 1;
                in_batch.insert(*d, ts);
                fresh.push((*d, b.clone()));
                out.push(Appended {
                    ts,
                    duplicate: false,
                });
            }
        }
        self.entries.extend(fresh);
        out
    }
}

fn check_replay(log: &Log, model: &Model, what: &str) {
    let got = replay(log);
    assert_eq!(got.len(), model.entries.len(), "{what}: length");
    for (i, e) in got.iter().enumerate() {
        assert_eq!(e.ts, i as u64 + 1, "{what}");
        assert_eq!(
            (&e.digest, &e.bytes),
            (&model.entries[i].0, &model.entries[i].1),
            "{what}: ts {}",
            e.ts
        );
    }
    assert_eq!(log.last_ts(), model.entries.len() as u64, "{what}");
}

fn run_case(seed: u64) {
    let mut rng = Rng::new(seed);
    let tmp = TempDir::new("model");
    let dir = tmp.path();
    let opts = Options {
        segment_size: 150 + rng.below(2000),
        max_tx_size: MAX_TX,
        dedup_window: if rng.chance(50) {
            1 + rng.below(40) as usize
        } else {
            1_000_000
        },
        // The crash steps cut files where records end by their length (tests/preallocate.rs
        // covers the zeros written ahead).
        preallocate: 0,
    };
    let mut model = Model {
        entries: Vec::new(),
        window: opts.dedup_window,
    };
    let mut records: Vec<Written> = Vec::new();
    let mut payloads: Vec<Vec<u8>> = Vec::new(); // by id: every id ever submitted
    let mut log = Some(Log::open(dir, opts.clone()).unwrap());
    let steps = 120 + rng.below(80);
    for step in 0..steps {
        let what = format!("seed {seed} step {step}");
        let roll = rng.below(100);
        if roll < 60 {
            let l = log.as_mut().unwrap();
            let n = 1 + rng.below(6) as usize;
            let mut ids: Vec<usize> = Vec::new();
            for _ in 0..n {
                let pick = rng.below(10);
                if pick < 3 && !payloads.is_empty() {
                    ids.push(rng.below(payloads.len() as u64) as usize);
                } else if pick < 4 && !ids.is_empty() {
                    ids.push(ids[rng.below(ids.len() as u64) as usize]);
                } else {
                    let len = rng.below(MAX_TX as u64 + 1) as usize;
                    payloads.push(rng.bytes(len));
                    ids.push(payloads.len() - 1);
                }
            }
            let txs: Vec<(Digest, Vec<u8>)> = ids
                .iter()
                .map(|&id| (digest(id as u64), payloads[id].clone()))
                .collect();
            if rng.chance(5) {
                let mut bad = txs.clone();
                let i = rng.below(bad.len() as u64) as usize;
                bad[i].1 = vec![1; MAX_TX + 1];
                let refs: Vec<(Digest, &[u8])> = bad.iter().map(|(d, b)| (*d, &b[..])).collect();
                assert!(
                    matches!(l.append(&refs), Err(Error::TxTooLarge { .. })),
                    "{what}"
                );
            }
            let want = model.append(&txs);
            let got = append_tracked(l, &txs, &mut records);
            assert_eq!(got, want, "{what}: append");
        } else if roll < 70 {
            drop(log.take()); // release the lock before reopening
            let l = Log::open(dir, opts.clone()).unwrap();
            assert_eq!(l.recovery().bytes_truncated, 0, "{what}: clean reopen");
            check_replay(&l, &model, &what);
            log = Some(l);
        } else if roll < 82 {
            // Crash: cut the last segment anywhere.
            drop(log.take()); // release the lock before reopening
            if let Some(file) = segments(dir).pop() {
                let len = file_len(&file);
                let cut = if rng.chance(50) {
                    // Inside the last record, where a real torn write lands.
                    let start = records.last().map_or(0, |r| r.start);
                    start + rng.below(len - start + 1)
                } else {
                    rng.below(len + 1)
                };
                truncate(&file, cut);
                records.retain(|r| r.file != file || r.end <= cut);
                let kept_here = records.last().filter(|r| r.file == file).map(|r| r.end);
                let want_cut = kept_here.map_or(cut, |end| cut - end);
                let kept_ts = records.last().map_or(0, |r| r.last_ts);
                model.entries.truncate(kept_ts as usize);
                let l = Log::open(dir, opts.clone()).unwrap();
                assert_eq!(
                    l.recovery().bytes_truncated,
                    want_cut,
                    "{what}: cut {cut} of {len}"
                );
                check_replay(&l, &model, &what);
                log = Some(l);
            } else {
                log = Some(Log::open(dir, opts.clone()).unwrap());
            }
        } else if roll < 87 {
            drop(log.take()); // release the lock before reopening
            if let Some(file) = segments(dir).pop() {
                let len = 1 + rng.below(200) as usize;
                let garbage = rng.bytes(len);
                append_bytes(&file, &garbage);
                let l = Log::open(dir, opts.clone()).unwrap();
                assert_eq!(
                    l.recovery().bytes_truncated,
                    garbage.len() as u64,
                    "{what}: garbage"
                );
                check_replay(&l, &model, &what);
                log = Some(l);
            } else {
                log = Some(Log::open(dir, opts.clone()).unwrap());
            }
        } else {
            let l = log.as_ref().unwrap();
            let from = rng.below(model.entries.len() as u64 + 3);
            let max = 1 + rng.below(20) as usize;
            let got = l.read_batch(from, max).unwrap();
            let start = from.max(1) as usize - 1;
            let want: Vec<(u64, Digest, Vec<u8>)> = model
                .entries
                .iter()
                .enumerate()
                .skip(start)
                .take(max)
                .map(|(i, (d, b))| (i as u64 + 1, *d, b.clone()))
                .collect();
            let got: Vec<(u64, Digest, Vec<u8>)> =
                got.into_iter().map(|e| (e.ts, e.digest, e.bytes)).collect();
            assert_eq!(got, want, "{what}: read_batch({from}, {max})");
        }
    }
    drop(log);
    let l = Log::open(dir, opts).unwrap();
    check_replay(&l, &model, &format!("seed {seed} final"));
}

#[test]
fn random_appends_reopens_and_crashes_match_the_model() {
    let seed = seed("REMORA_LOG_SEED");
    let cases: u64 = std::env::var("REMORA_LOG_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    for case in 0..cases {
        // Case `i` alone replays with REMORA_LOG_SEED=<seed + i> REMORA_LOG_CASES=1.
        run_case(seed.wrapping_add(case));
    }
}
