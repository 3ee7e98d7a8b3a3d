//! Zeros written ahead of the records (`Options::preallocate`). Each case runs the same appends
//! on a twin log without them: the records must be byte for byte the twin's, so the twin's
//! file lengths say where every record of the preallocated log starts and ends.

mod common;

use common::*;
use remora_log::{Entry, Log, Options};
use std::path::{Path, PathBuf};

const SEG: u64 = 400;
const AHEAD: u64 = 1000;

fn ahead() -> Options {
    Options {
        preallocate: AHEAD,
        ..small(SEG)
    }
}

/// The same batches appended to a plain log in `plain` and a preallocated one in `ahead`,
/// until `done`; the plain log's records (positions) and the entries.
fn twins(
    plain: &Path,
    ahead_dir: &Path,
    done: impl Fn(&[Written]) -> bool,
) -> (Vec<Written>, Vec<Entry>) {
    let mut a = Log::open(plain, small(SEG)).unwrap();
    let mut b = Log::open(ahead_dir, ahead()).unwrap();
    let mut records = Vec::new();
    let mut ignored = Vec::new();
    for n in 0.. {
        let ids: Vec<u64> = (0..1 + n % 3).map(|k| n * 10 + k).collect();
        let batch = tx_batch(&ids);
        let got_a = append_tracked(&mut a, &batch, &mut records);
        let got_b = append_tracked(&mut b, &batch, &mut ignored);
        assert_eq!(got_a, got_b);
        if done(&records) {
            break;
        }
    }
    let entries = replay(&a);
    assert_eq!(replay(&b), entries);
    (records, entries)
}

fn in_dir(dir: &Path, file: &Path) -> PathBuf {
    dir.join(file.file_name().unwrap())
}

/// Overwrites `path` from `at` on with `bytes` (the length stays unless it runs past it).
fn overwrite(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

#[test]
fn records_are_the_plain_logs_and_only_the_last_segment_has_zeros_after_them() {
    let tmp = TempDir::new("ahead-layout");
    let (plain, ahead_dir) = (tmp.sub("plain"), tmp.sub("ahead"));
    let (records, _) = twins(&plain, &ahead_dir, |r| r.len() >= 40);
    let (a, b) = (segments(&plain), segments(&ahead_dir));
    assert!(
        a.len() >= 3,
        "test setup: want several segments, got {}",
        a.len()
    );
    assert_eq!(
        a.iter().map(|p| p.file_name()).collect::<Vec<_>>(),
        b.iter().map(|p| p.file_name()).collect::<Vec<_>>()
    );
    for (i, (pa, pb)) in a.iter().zip(&b).enumerate() {
        let (ba, bb) = (std::fs::read(pa).unwrap(), std::fs::read(pb).unwrap());
        if i + 1 < a.len() {
            // Rolled: cut back to its records.
            assert_eq!(ba, bb, "segment {i}");
        } else {
            assert_eq!(bb[..ba.len()], ba[..], "last segment's records");
            assert!(bb.len() > ba.len(), "zeros written ahead");
            assert!(bb[ba.len()..].iter().all(|&x| x == 0));
        }
    }
    assert_eq!(records.last().unwrap().end, file_len(a.last().unwrap()));
}

#[test]
fn reopening_is_clean_and_appends_go_where_the_records_end() {
    let tmp = TempDir::new("ahead-reopen");
    let (plain, ahead_dir) = (tmp.sub("plain"), tmp.sub("ahead"));
    let (_, mut entries) = twins(&plain, &ahead_dir, |r| r.len() >= 25);
    for round in 0..3u64 {
        let mut log = Log::open(&ahead_dir, ahead()).unwrap();
        let r = log.recovery().clone();
        assert_eq!((r.bytes_truncated, r.torn_tail), (0, None), "round {round}");
        assert_eq!(replay(&log), entries, "round {round}");
        let batch = tx_batch(&[1_000_000 + round]);
        let got = append_owned(&mut log, &batch);
        assert_eq!(
            (got[0].ts, got[0].duplicate),
            (entries.len() as u64 + 1, false)
        );
        entries.push(Entry {
            ts: got[0].ts,
            digest: batch[0].0,
            bytes: batch[0].1.clone(),
        });
        assert_eq!(replay(&log), entries);
    }
}

#[test]
fn a_torn_record_in_the_zeros_is_cut_wherever_it_stops() {
    let tmp = TempDir::new("ahead-torn");
    let (plain, ahead_dir) = (tmp.sub("plain"), tmp.sub("ahead"));
    let (records, all) = twins(&plain, &ahead_dir, |r| {
        let n = r.len();
        n >= 12 && r[n - 1].file == r[n - 2].file
    });
    let last = records.last().unwrap().clone();
    let prev = &records[records.len() - 2];
    let work = tmp.sub("work");
    for kept in last.start + 1..last.end {
        // The record's first `kept - start` bytes reached the disk, the rest stayed zeros.
        copy_dir(&ahead_dir, &work);
        let file = in_dir(&work, &last.file);
        overwrite(&file, kept, &vec![0; (last.end - kept) as usize]);
        let log = Log::open(&work, ahead()).unwrap_or_else(|e| panic!("kept {kept}: {e}"));
        let r = log.recovery().clone();
        let torn = r
            .torn_tail
            .as_ref()
            .unwrap_or_else(|| panic!("kept {kept}: not reported torn"));
        assert_eq!(
            (torn.offset, torn.file_removed),
            (last.start, false),
            "kept {kept}"
        );
        assert_eq!(
            file_len(&file),
            last.start,
            "kept {kept}: cut at the record"
        );
        assert_eq!(log.last_ts(), prev.last_ts);
        assert_eq!(replay(&log), all[..prev.last_ts as usize].to_vec());
    }
    // Its header never reached the disk but a later block did: not free space.
    copy_dir(&ahead_dir, &work);
    let file = in_dir(&work, &last.file);
    overwrite(&file, last.start, &[0; 16]);
    let log = Log::open(&work, ahead()).unwrap();
    assert_eq!(
        log.recovery().torn_tail.as_ref().map(|t| t.offset),
        Some(last.start)
    );
    assert_eq!(log.last_ts(), prev.last_ts);
}

#[test]
fn bytes_after_the_zeros_are_damage_and_cut_with_them() {
    let tmp = TempDir::new("ahead-garbage");
    let (plain, ahead_dir) = (tmp.sub("plain"), tmp.sub("ahead"));
    let (records, all) = twins(&plain, &ahead_dir, |r| r.len() >= 12);
    let last = records.last().unwrap().clone();
    let file = in_dir(&ahead_dir, &last.file);
    let len = file_len(&file);
    assert!(
        len > last.end,
        "test setup: want zeros after the last record"
    );
    append_bytes(&file, &[7]);
    let log = Log::open(&ahead_dir, ahead()).unwrap();
    let r = log.recovery().clone();
    assert_eq!(r.torn_tail.as_ref().map(|t| t.offset), Some(last.end));
    assert_eq!(r.bytes_truncated, len + 1 - last.end);
    assert_eq!(replay(&log), all);
}

#[test]
fn a_segment_left_with_zeros_by_a_crash_before_its_cut_reads_whole() {
    let tmp = TempDir::new("ahead-rolled");
    let (plain, ahead_dir) = (tmp.sub("plain"), tmp.sub("ahead"));
    let (_, all) = twins(&plain, &ahead_dir, |r| r.len() >= 30);
    let segs = segments(&ahead_dir);
    assert!(segs.len() >= 3);
    // As if the crash came after the next segment was made durable and before this one's cut.
    append_bytes(&segs[0], &vec![0; AHEAD as usize]);
    let log = Log::open(&ahead_dir, ahead()).unwrap();
    assert_eq!(
        (
            log.recovery().bytes_truncated,
            log.recovery().torn_tail.clone()
        ),
        (0, None)
    );
    assert_eq!(replay(&log), all);
}

#[test]
fn more_than_a_gibibyte_ahead_is_refused() {
    let tmp = TempDir::new("ahead-limit");
    let over = Options {
        preallocate: (1 << 30) + 1,
        ..small(SEG)
    };
    let err = Log::open(tmp.path(), over).err().expect("refused");
    assert!(
        err.to_string()
            .contains("preallocate must be at most 1 GiB"),
        "{err}"
    );
    assert!(Log::open(
        tmp.path(),
        Options {
            preallocate: 1 << 30,
            ..small(SEG)
        }
    )
    .is_ok());
}
