//! Crash simulation by file surgery: torn tails are cut and reported, every other kind of
//! damage is a hard error that names the file and offset and leaves the files alone.

mod common;

use common::*;
use remora_log::{Entry, Error, Log, Options};

const SEG: u64 = 400;

/// Appends batches of 1 to 3 transactions to a new log in `dir` until `done` says so;
/// returns where the records went and the entries.
fn build_until(
    dir: &std::path::Path,
    done: impl Fn(&[Written]) -> bool,
) -> (Vec<Written>, Vec<Entry>) {
    let mut log = Log::open(dir, small(SEG)).unwrap();
    let mut records = Vec::new();
    for b in 0.. {
        let ids: Vec<u64> = (0..1 + b % 3).map(|k| b * 10 + k).collect();
        append_tracked(&mut log, &tx_batch(&ids), &mut records);
        if done(&records) {
            break;
        }
    }
    let entries = replay(&log);
    (records, entries)
}

/// A log of at least 20 records over 3 or more segments whose last `k` records share the last
/// segment.
fn build_ending_with(dir: &std::path::Path, k: usize) -> (Vec<Written>, Vec<Entry>) {
    build_until(dir, |records| {
        let n = records.len();
        let segments = records
            .windows(2)
            .filter(|w| w[0].file != w[1].file)
            .count()
            + 1;
        n >= 20.max(k)
            && segments >= 3
            && records[n - k..]
                .iter()
                .all(|r| r.file == records[n - 1].file)
    })
}

fn open(dir: &std::path::Path) -> Result<Log, Error> {
    Log::open(dir, small(SEG))
}

/// After recovery to `kept_ts`: the replay is exactly the prefix, numbering continues, and a
/// later reopen is clean.
fn check_recovered(dir: &std::path::Path, log: Log, all: &[Entry], kept_ts: u64) {
    assert_eq!(log.last_ts(), kept_ts);
    assert_eq!(replay(&log), all[..kept_ts as usize].to_vec());
    let mut log = log;
    let got = append_owned(&mut log, &tx_batch(&[777_777]));
    assert_eq!((got[0].ts, got[0].duplicate), (kept_ts + 1, false));
    drop(log);
    let log = open(dir).unwrap();
    assert_eq!(log.recovery().bytes_truncated, 0);
    assert_eq!(log.recovery().torn_tail, None);
    assert_eq!(log.last_ts(), kept_ts + 1);
    assert_eq!(replay(&log)[..kept_ts as usize], all[..kept_ts as usize]);
}

#[test]
fn torn_last_record_is_cut_at_every_byte_offset() {
    let tmp = TempDir::new("torn-every");
    let base = tmp.sub("base");
    let (records, all) = build_ending_with(&base, 2);
    let last = records.last().unwrap().clone();
    let prev = &records[records.len() - 2];
    assert_eq!(
        prev.file, last.file,
        "test setup: want a record mid-segment"
    );
    let work = tmp.sub("work");
    for cut in last.start..=last.end {
        copy_dir(&base, &work);
        truncate(&work.join(last.file.file_name().unwrap()), cut);
        let log = open(&work).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let r = log.recovery().clone();
        if cut == last.end || cut == last.start {
            // On a record boundary: nothing torn.
            assert_eq!((r.bytes_truncated, r.torn_tail.is_none()), (0, true));
            let kept = if cut == last.end {
                last.last_ts
            } else {
                prev.last_ts
            };
            check_recovered(&work, log, &all, kept);
        } else {
            assert_eq!(r.bytes_truncated, cut - last.start, "cut at {cut}");
            let torn = r.torn_tail.as_ref().unwrap();
            assert_eq!((torn.offset, torn.file_removed), (last.start, false));
            check_recovered(&work, log, &all, prev.last_ts);
        }
    }
}

#[test]
fn torn_first_record_of_a_new_segment_removes_the_segment() {
    let tmp = TempDir::new("torn-new-seg");
    let base = tmp.sub("base");
    // Grow until the last append rolled into a new segment.
    let (records, all) = build_until(&base, |r| {
        let n = r.len();
        n >= 10 && r[n - 1].file != r[n - 2].file
    });
    let last = records.last().unwrap().clone();
    assert_eq!(last.start, SEGMENT_HEADER);
    let prev_ts = records[records.len() - 2].last_ts;
    let work = tmp.sub("work");
    for cut in 0..last.end {
        copy_dir(&base, &work);
        truncate(&work.join(last.file.file_name().unwrap()), cut);
        let log = open(&work).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let r = log.recovery().clone();
        assert_eq!(r.bytes_truncated, cut, "cut at {cut}");
        assert!(r.torn_tail.as_ref().unwrap().file_removed, "cut at {cut}");
        assert!(!work.join(last.file.file_name().unwrap()).exists());
        check_recovered(&work, log, &all, prev_ts);
    }
}

#[test]
fn garbage_after_the_last_record_is_cut() {
    let mut rng = Rng::new(seed("REMORA_LOG_SEED"));
    let tmp = TempDir::new("garbage");
    let base = tmp.sub("base");
    let (records, all) = build_until(&base, |r| r.len() == 17);
    let last = records.last().unwrap().clone();
    let work = tmp.sub("work");
    let mut cases: Vec<Vec<u8>> = [1usize, 5, 11, 12, 13, 47, 48, 100, 5000]
        .iter()
        .map(|&n| rng.bytes(n))
        .collect();
    cases.push(vec![0xff; 64]);
    // A plausible header claiming a huge body.
    let mut lying = u32::MAX.to_le_bytes().to_vec();
    lying.extend_from_slice(&rng.bytes(40));
    cases.push(lying);
    // A copy of the last record with its final byte missing.
    let bytes = std::fs::read(&last.file).unwrap();
    cases.push(bytes[last.start as usize..last.end as usize - 1].to_vec());
    for garbage in cases {
        copy_dir(&base, &work);
        append_bytes(&work.join(last.file.file_name().unwrap()), &garbage);
        let log = open(&work).unwrap_or_else(|e| panic!("{} bytes: {e}", garbage.len()));
        let r = log.recovery().clone();
        assert_eq!(r.bytes_truncated, garbage.len() as u64);
        assert_eq!(r.torn_tail.as_ref().unwrap().offset, last.end);
        check_recovered(&work, log, &all, last.last_ts);
    }
}

#[test]
fn zeros_after_the_last_record_are_free_space_not_damage() {
    let tmp = TempDir::new("zeros");
    let base = tmp.sub("base");
    let (records, all) = build_until(&base, |r| r.len() == 17);
    let last = records.last().unwrap().clone();
    let work = tmp.sub("work");
    // A block the file system extended but never wrote, or space written ahead.
    for n in [1usize, 11, 12, 4096, 300_000] {
        copy_dir(&base, &work);
        append_bytes(&work.join(last.file.file_name().unwrap()), &vec![0; n]);
        let log = open(&work).unwrap_or_else(|e| panic!("{n} zeros: {e}"));
        let r = log.recovery().clone();
        assert_eq!((r.bytes_truncated, r.torn_tail), (0, None), "{n} zeros");
        check_recovered(&work, log, &all, last.last_ts);
    }
}

fn expect_corrupt(dir: &std::path::Path, file: &std::path::Path, offset: u64, needle: &str) {
    let lens: Vec<u64> = segments(dir).iter().map(|p| file_len(p)).collect();
    let err = match open(dir) {
        Err(e) => e,
        Ok(_) => panic!("open succeeded; expected corruption at {offset}"),
    };
    match &err {
        Error::Corrupt {
            file: f, offset: o, ..
        } => {
            assert_eq!((f.file_name(), *o), (file.file_name(), offset), "{err}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&format!("offset {offset}")), "{msg}");
    assert!(msg.contains(needle), "{msg}");
    let after: Vec<u64> = segments(dir).iter().map(|p| file_len(p)).collect();
    assert_eq!(lens, after, "a failed open must not modify the files");
}

#[test]
fn damage_in_a_middle_record_of_the_last_segment_is_an_error() {
    let tmp = TempDir::new("mid-last");
    let base = tmp.sub("base");
    let (records, _) = build_ending_with(&base, 3);
    let n = records.len();
    let mid = records[n - 2].clone();
    assert_eq!(mid.file, records[n - 1].file);
    let work = tmp.sub("work");
    let name = mid.file.file_name().unwrap();
    // A payload byte, a checksum byte, and each byte of the length field.
    for at in [
        mid.end - 1,
        mid.start + 6,
        mid.start,
        mid.start + 1,
        mid.start + 3,
    ] {
        copy_dir(&base, &work);
        flip_byte(&work.join(name), at);
        expect_corrupt(&work, &work.join(name), mid.start, "not a torn tail");
    }
}

#[test]
fn damage_in_an_earlier_segment_is_an_error() {
    let tmp = TempDir::new("mid-seg");
    let base = tmp.sub("base");
    let (records, _) = build_ending_with(&base, 1);
    let first = &records[0].file;
    let name = first.file_name().unwrap();
    let in_first: Vec<&Written> = records.iter().filter(|r| &r.file == first).collect();
    let last_of_first = in_first.last().unwrap();
    let work = tmp.sub("work");

    copy_dir(&base, &work);
    flip_byte(&work.join(name), last_of_first.end - 1);
    expect_corrupt(
        &work,
        &work.join(name),
        last_of_first.start,
        "followed by others",
    );

    // Even a cut that looks like a torn write is not one outside the last segment.
    copy_dir(&base, &work);
    truncate(&work.join(name), last_of_first.end - 1);
    expect_corrupt(
        &work,
        &work.join(name),
        last_of_first.start,
        "not a torn tail",
    );

    copy_dir(&base, &work);
    flip_byte(&work.join(name), 3); // the segment header
    expect_corrupt(&work, &work.join(name), 0, "magic");
}

#[test]
fn a_missing_segment_is_an_error() {
    let tmp = TempDir::new("missing");
    let base = tmp.sub("base");
    build_ending_with(&base, 1);
    let segs = segments(&base);
    assert!(segs.len() >= 3);
    std::fs::remove_file(&segs[1]).unwrap();
    expect_corrupt(&base, &segs[2], 0, "missing");
    // The first segment must start at timestamp 1.
    std::fs::remove_file(&segs[0]).unwrap();
    expect_corrupt(&base, &segs[2], 0, "missing");
}

#[test]
fn a_log_of_only_torn_bytes_opens_empty() {
    let tmp = TempDir::new("only-torn");
    let dir = tmp.path();
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(dir)
        .unwrap();
    let seg = dir.join("seg-00000000000000000001.log");
    std::fs::write(&seg, [0u8; 20]).unwrap();
    let mut log = Log::open(dir, Options::default()).unwrap();
    assert_eq!(log.last_ts(), 0);
    assert_eq!(log.recovery().bytes_truncated, 20);
    assert!(!seg.exists());
    assert_eq!(append_owned(&mut log, &tx_batch(&[5]))[0].ts, 1);
}
