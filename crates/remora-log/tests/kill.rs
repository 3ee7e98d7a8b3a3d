//! Invariant 4 across real process deaths: a child appends in a loop and prints each durable
//! timestamp; the parent SIGKILLs it at a random point, restarts it (resubmitting transactions
//! it may or may not have logged, as a client would), and finally checks that every timestamp
//! ever reported durable is present, with the right transaction, and that no transaction is in
//! the log twice.
//!
//! The child is this test binary itself, selected by an environment variable. Synchronisation
//! is by the lines read from its stdout: no sleeps.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

use common::*;
use remora_log::{Log, Options};

const TEST_NAME: &str = "sigkill_mid_append_loses_nothing_reported_durable";
const CHILD_DIR: &str = "REMORA_LOG_KILL_CHILD_DIR";
const CHILD_START: &str = "REMORA_LOG_KILL_CHILD_START";
/// A child never gets this far unless the parent failed to kill it.
const LAST_ID: u64 = 200_000;

fn options() -> Options {
    Options {
        segment_size: 8 << 10, // roll often, so kills land around segment creation too
        ..Options::default()
    }
}

fn child(dir: &str, start: u64) {
    let mut log = Log::open(dir, options()).expect("child open");
    let mut out = std::io::stdout().lock();
    let r = log.recovery();
    writeln!(out, "RECOVERED {} {}", r.transactions, r.bytes_truncated).unwrap();
    let mut next = start;
    let mut round = 0u64;
    while next < LAST_ID {
        let size = 1 + round % 5;
        let mut ids: Vec<u64> = (next..next + size).collect();
        next += size;
        // Resubmit a recent id now and then: must come back as a duplicate.
        if round.is_multiple_of(3) && start > 0 {
            ids.push(start - 1 - round % start.min(7));
        }
        round += 1;
        let got = append_owned(&mut log, &tx_batch(&ids));
        for (id, a) in ids.iter().zip(got) {
            writeln!(out, "DURABLE {id} {} {}", a.ts, a.duplicate).unwrap();
        }
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_mid_append_loses_nothing_reported_durable() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let start = std::env::var(CHILD_START).unwrap().parse().unwrap();
        child(&dir, start);
        return;
    }
    let mut rng = Rng::new(seed("REMORA_LOG_SEED"));
    let tmp = TempDir::new("kill");
    let dir = tmp.path().to_str().unwrap().to_string();
    let exe = std::env::current_exe().unwrap();
    let mut reported: HashMap<u64, u64> = HashMap::new(); // id -> ts
    let mut start = 0u64;
    for round in 0..4 {
        let lines_wanted = 20 + rng.below(400);
        let mut child = Command::new(&exe)
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, &dir)
            .env(CHILD_START, start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        while seen < lines_wanted {
            let Some(line) = lines.next() else {
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!(
                    "round {round}: child ended after {seen} lines: {:?}\n{err}",
                    child.wait()
                );
            };
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("RECOVERED ") {
                let kept: u64 = rest.split(' ').next().unwrap().parse().unwrap();
                let max_ts = reported.values().max().copied().unwrap_or(0);
                assert!(
                    kept >= max_ts,
                    "round {round}: reopened with {kept}, {max_ts} was durable"
                );
            }
            let Some(rest) = line.strip_prefix("DURABLE ") else {
                continue;
            };
            let f: Vec<&str> = rest.split(' ').collect();
            let (id, ts): (u64, u64) = (f[0].parse().unwrap(), f[1].parse().unwrap());
            if let Some(&before) = reported.get(&id) {
                assert_eq!(before, ts, "round {round}: id {id} got a second timestamp");
                assert_eq!(f[2], "true", "round {round}: id {id} re-appended");
            }
            reported.insert(id, ts);
            seen += 1;
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the child was meant to die"
        );
        // Restart a little behind the newest reported id: those ids, and the batch that was
        // in flight at the kill, are submitted again.
        start = reported
            .keys()
            .max()
            .map_or(0, |&m| m + 1)
            .saturating_sub(3);
    }

    let log = Log::open(&dir, options()).unwrap();
    let entries = replay(&log);
    let mut digests = HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.ts, i as u64 + 1);
        assert!(digests.insert(e.digest), "ts {}: digest logged twice", e.ts);
    }
    for (&id, &ts) in &reported {
        let e = &entries[ts as usize - 1];
        assert_eq!(
            (e.digest, &e.bytes),
            (digest(id), &payload(id)),
            "id {id} at ts {ts}"
        );
    }
    eprintln!(
        "{} transactions logged, {} reported durable, torn bytes at last open {}",
        entries.len(),
        reported.len(),
        log.recovery().bytes_truncated
    );
}
