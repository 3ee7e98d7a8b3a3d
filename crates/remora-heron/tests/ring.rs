//! The ordered-stream ring between one producer (the launcher's store) and readers attached
//! over `shm` (and one over `tcp`, polling): records reach exactly the consumers of their destinations, in order, across
//! wraparound; the producer never overwrites what a live reader has not read and drops a
//! reader only after its stall budget, handing back what it missed; damaged records are
//! refused with a clear error; a sleeping reader is woken by a push.

use remora_core::region::Region;
use remora_core::{ControlServer, ShmPeer, ShmTransport, Store, StoreConfig, Transport};
use remora_heron::{RecordIn, RingError, RingLayout, RingProducer, RingReader};
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"test-cluster-secret-0123456789";
const LONG: Duration = Duration::from_secs(30);

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Ring {
    dir: Dir,
    store: Arc<Store>,
    producer: RingProducer,
    _control: ControlServer,
}

fn ring(tag: &str, partitions: u32, replicas: u32, capacity: usize) -> Ring {
    let dir = std::env::temp_dir().join(format!("remora-ring-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = StoreConfig::new(&dir, "launcher");
    cfg.region_bytes = 64 * 1024;
    let store = Arc::new(Store::create(&cfg).unwrap());
    let control = ControlServer::start(&store, SECRET).unwrap();
    let layout = RingLayout::new(partitions, replicas, capacity).unwrap();
    let producer = RingProducer::create(&store, layout).unwrap();
    assert_eq!(producer.region(), 0);
    Ring {
        dir: Dir(dir),
        store,
        producer,
        _control: control,
    }
}

fn reader(r: &Ring, consumer: u32) -> RingReader<ShmPeer> {
    let peer = ShmTransport::new(&r.dir.0, SECRET)
        .unwrap()
        .attach("launcher")
        .unwrap();
    let bell = Arc::new(Region::attach(&r.dir.0.join("launcher"), r.producer.region()).unwrap());
    RingReader::attach(peer, r.producer.region(), consumer, Some(bell)).unwrap()
}

fn payload(ts: u64) -> Vec<u8> {
    // Lengths vary so records take 64, 96, ... bytes and pads land at different offsets.
    (0..(ts * 13 % 150) as usize)
        .map(|i| (ts as usize * 31 + i) as u8)
        .collect()
}

fn push(r: &mut Ring, from: u64, to: u64, dest: impl Fn(u64) -> Vec<u32>) {
    let dests: Vec<(u64, Vec<u32>, Vec<u8>)> =
        (from..to).map(|ts| (ts, dest(ts), payload(ts))).collect();
    let recs: Vec<RecordIn<'_>> = dests
        .iter()
        .map(|(ts, d, p)| RecordIn {
            ts: *ts,
            dest: d,
            payload: p,
        })
        .collect();
    assert_eq!(r.producer.push(&recs, LONG).unwrap(), vec![]);
}

fn dest_of(ts: u64) -> Vec<u32> {
    match ts % 4 {
        0 => vec![0],
        1 => vec![1],
        2 => vec![0, 1],
        _ => vec![1, 0],
    }
}

#[test]
fn each_reader_gets_exactly_its_partitions_records_in_order() {
    let mut r = ring("filter", 2, 2, 1 << 16);
    let mut readers: Vec<_> = (0..4).map(|c| reader(&r, c)).collect();
    push(&mut r, 1, 101, dest_of);
    for (c, rd) in readers.iter_mut().enumerate() {
        let h = c as u32 / 2;
        let got = rd.poll(usize::MAX).unwrap();
        let want: Vec<u64> = (1..101).filter(|&ts| dest_of(ts).contains(&h)).collect();
        assert_eq!(got.iter().map(|x| x.ts).collect::<Vec<_>>(), want);
        for rec in &got {
            assert_eq!(rec.dest, dest_of(rec.ts));
            assert_eq!(rec.payload, payload(rec.ts));
        }
        assert_eq!(rd.position(), r.producer.head());
        assert_eq!(r.producer.consumed(c as u32), r.producer.head());
        assert!(rd.poll(usize::MAX).unwrap().is_empty());
    }
    // `max` bounds a batch; the rest comes next time.
    push(&mut r, 101, 111, |_| vec![0]);
    assert_eq!(readers[0].poll(3).unwrap().len(), 3);
    assert_eq!(readers[0].poll(100).unwrap().len(), 7);
}

#[test]
fn records_wrap_around_a_small_ring_many_times() {
    let mut r = ring("wrap", 1, 1, 4096);
    let mut rd = reader(&r, 0);
    let mut next = 1u64;
    let mut seen = Vec::new();
    // Each round fills part of the ring; ~60 KiB in all through 4 KiB.
    for round in 0..200u64 {
        let n = 1 + round % 7;
        push(&mut r, next, next + n, |_| vec![0]);
        next += n;
        for rec in rd.poll(usize::MAX).unwrap() {
            assert_eq!(rec.payload, payload(rec.ts));
            seen.push(rec.ts);
        }
    }
    assert!(r.producer.head() > 10 * 4096, "head {}", r.producer.head());
    assert_eq!(seen, (1..next).collect::<Vec<_>>());
}

#[test]
fn the_producer_waits_for_a_live_reader_and_never_overwrites_it() {
    let mut r = ring("flow", 1, 2, 4096);
    let mut fast = reader(&r, 0);
    let mut slow = reader(&r, 1);
    // 20 records of 160 bytes nearly fill 4 KiB; the next ones need the slow reader's room.
    let big = vec![7u8; 120];
    let fill: Vec<RecordIn<'_>> = (1..=20)
        .map(|ts| RecordIn {
            ts,
            dest: &[0],
            payload: &big,
        })
        .collect();
    assert_eq!(r.producer.push(&fill, LONG).unwrap(), vec![]);
    assert_eq!(fast.poll(usize::MAX).unwrap().len(), 20);
    let Ring {
        producer,
        dir,
        store,
        _control,
        ..
    } = r;
    let (tx, rx) = mpsc::channel();
    let pusher = std::thread::spawn(move || {
        let mut producer = producer;
        let more: Vec<RecordIn<'_>> = (21..=30)
            .map(|ts| RecordIn {
                ts,
                dest: &[0],
                payload: &big,
            })
            .collect();
        let dropped = producer.push(&more, LONG).unwrap();
        tx.send(()).unwrap();
        (producer, dropped)
    });
    // Not done while the slow reader holds the space (a bounded look, not a synchronisation).
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    // The records that fitted were published; the slow reader still finds all of its own.
    let mut seen: Vec<u64> = slow
        .poll(usize::MAX)
        .unwrap()
        .iter()
        .map(|x| x.ts)
        .collect();
    assert!(seen.len() >= 20 && seen.len() < 30, "read {seen:?}");
    rx.recv_timeout(LONG)
        .expect("the push completes once the reader moved on");
    let (_producer, dropped) = pusher.join().unwrap();
    assert_eq!(dropped, vec![]);
    while seen.len() < 30 {
        let rest = slow.wait(usize::MAX, Duration::ZERO, LONG).unwrap();
        assert!(rest.iter().all(|x| x.payload == vec![7u8; 120]));
        seen.extend(rest.iter().map(|x| x.ts));
    }
    assert_eq!(seen, (1..=30).collect::<Vec<_>>());
    drop((dir, store, _control));
}

#[test]
fn a_stalled_reader_is_dropped_with_what_it_missed_and_then_sees_an_overrun() {
    let mut r = ring("drop", 2, 1, 4096);
    let mut busy = reader(&r, 0);
    let mut stalled = reader(&r, 1);
    let body = vec![1u8; 100];
    let recs = |from: u64, to: u64, dest: &'static [u32]| -> Vec<(u64, &'static [u32])> {
        (from..to).map(|ts| (ts, dest)).collect()
    };
    let mut pushed_for_1 = Vec::new();
    let mut next = 1u64;
    let mut dropped = Vec::new();
    // Partition 1's reader never reads; partition 0's keeps up. Push until it is dropped.
    while dropped.is_empty() {
        let dest: &'static [u32] = if next.is_multiple_of(3) {
            &[0, 1]
        } else {
            &[0]
        };
        if dest.contains(&1) {
            pushed_for_1.push(next);
        }
        let batch = recs(next, next + 1, dest);
        let ins: Vec<RecordIn<'_>> = batch
            .iter()
            .map(|(ts, d)| RecordIn {
                ts: *ts,
                dest: d,
                payload: &body,
            })
            .collect();
        dropped = r.producer.push(&ins, Duration::from_millis(20)).unwrap();
        busy.poll(usize::MAX).unwrap();
        next += 1;
        assert!(next < 1000, "never dropped");
    }
    assert_eq!(dropped.len(), 1);
    let d = &dropped[0];
    assert_eq!((d.consumer, d.from, d.lost), (1, 0, false));
    // What it missed: every record for partition 1 published before the drop.
    // What it missed: every record for partition 1 published before the drop (the push that
    // dropped it published its record after).
    let missed: Vec<u64> = d.records.iter().map(|x| x.ts).collect();
    let want: Vec<u64> = pushed_for_1
        .iter()
        .copied()
        .filter(|&ts| ts < next - 1)
        .collect();
    assert_eq!(missed, want);
    assert!(d
        .records
        .iter()
        .all(|x| x.payload == body && x.dest == vec![0, 1]));
    assert!(!r.producer.is_live(1));
    // The producer wrote over it: its next look says so.
    match stalled.poll(usize::MAX) {
        Err(RingError::Overrun {
            consumer: 1,
            pos: 0,
        }) => {}
        other => panic!("expected an overrun, got {other:?}"),
    }
    assert_eq!(
        stalled.poll(1).unwrap_err().to_string(),
        "consumer 1 fell behind the ring at position 0: the producer stopped waiting for it and overwrote what it had not read"
    );
}

#[test]
fn damaged_records_and_foreign_memory_are_refused() {
    let mut r = ring("torn", 1, 1, 4096);
    push(&mut r, 1, 3, |_| vec![0]);
    let mut rd = reader(&r, 0);
    // Flip one payload byte of the first record (data area starts on the page after the
    // control block: find it from the first record's position word).
    let data = find_data(&r.store, r.producer.region());
    let mut b = [0u8; 1];
    r.store.read_region(0, data + 40, &mut b).unwrap();
    r.store.write_region(0, data + 40, &[b[0] ^ 0xff]).unwrap();
    assert_eq!(
        rd.poll(usize::MAX).unwrap_err().to_string(),
        "malformed ring record at position 0: it fails its check (torn or damaged)"
    );
    // A position word that is not the record's own.
    r.store.write_region(0, data + 40, &b).unwrap();
    r.store.write_region(0, data, &5u64.to_le_bytes()).unwrap();
    assert_eq!(
        rd.poll(usize::MAX).unwrap_err().to_string(),
        "malformed ring record at position 0: it carries position 5"
    );
    // A region that holds no ring.
    let other = r.store.add_shared_region(8192).unwrap();
    let peer = ShmTransport::new(&r.dir.0, SECRET)
        .unwrap()
        .attach("launcher")
        .unwrap();
    let e = RingReader::attach(peer, other, 0, None).err().unwrap();
    assert_eq!(
        e.to_string(),
        "the ring's memory is not a ring: region 1 of shm peer 'launcher' has no ring magic"
    );
    // A push naming a partition the ring does not have writes nothing.
    let head = r.producer.head();
    let e = r
        .producer
        .push(
            &[RecordIn {
                ts: 9,
                dest: &[3],
                payload: &[],
            }],
            LONG,
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "bad ring request: transaction 9 is addressed to partition 3, but the ring has 1"
    );
    assert_eq!(r.producer.head(), head);
}

/// The data area's offset in region 0: the first word holding position 0 with the record's
/// timestamp (1) right after it, searched page by page past the control block.
fn find_data(store: &Store, region: u32) -> u64 {
    let mut w = [0u8; 16];
    for page in 2..64u64 {
        store.read_region(region, page * 4096, &mut w).unwrap();
        if w[..8] == 0u64.to_le_bytes() && w[8..] == 1u64.to_le_bytes() {
            return page * 4096;
        }
    }
    panic!("no data area found");
}

#[test]
fn a_push_wakes_a_sleeping_reader() {
    let mut r = ring("wake", 2, 1, 1 << 16);
    let mut rd = reader(&r, 1);
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        let got = rd.wait(usize::MAX, Duration::ZERO, LONG).unwrap();
        tx.send((got, started.elapsed())).unwrap();
    });
    // Wait (bounded) until the reader is counted in on partition 1's doorbell.
    let deadline = Instant::now() + LONG;
    while r.producer.sleepers(1) == 0 {
        assert!(Instant::now() < deadline, "the reader never went to sleep");
        std::thread::yield_now();
    }
    // A record for the other partition does not satisfy it; one for its own does.
    push(&mut r, 1, 2, |_| vec![0]);
    push(&mut r, 2, 3, |_| vec![1]);
    let (got, waited) = rx.recv_timeout(LONG).expect("the reader woke");
    waiter.join().unwrap();
    assert_eq!(got.iter().map(|x| x.ts).collect::<Vec<_>>(), vec![2]);
    assert!(waited < LONG);
}

#[test]
fn a_dropped_consumer_reattaches_at_the_head_and_is_waited_for_again() {
    let mut r = ring("reattach", 1, 2, 4096);
    let mut live = reader(&r, 0);
    let gone = reader(&r, 1);
    let body = vec![3u8; 100];
    let batch = |from: u64, to: u64| -> Vec<u64> { (from..to).collect() };
    let records =
        |ts: &[u64]| -> Vec<(u64, Vec<u8>)> { ts.iter().map(|&t| (t, body.clone())).collect() };
    // Consumer 1 reads nothing and is dropped once the ring fills; then it is retired for good.
    let mut ts = 1u64;
    let mut dropped = Vec::new();
    while dropped.is_empty() {
        let owned = records(&batch(ts, ts + 4));
        let recs: Vec<RecordIn<'_>> = owned
            .iter()
            .map(|(t, p)| RecordIn {
                ts: *t,
                dest: &[0],
                payload: p,
            })
            .collect();
        dropped = r.producer.push(&recs, Duration::from_millis(20)).unwrap();
        ts += 4;
        live.poll(usize::MAX).unwrap();
    }
    assert_eq!(dropped[0].consumer, 1);
    assert!(!r.producer.is_live(1));
    drop(gone);
    assert!(r.producer.retire(1).is_ok());
    // The restarted replica: taken back at the head, attaching from its line.
    let head = r.producer.head();
    assert_eq!(r.producer.reattach(1).unwrap(), head);
    assert!(r.producer.is_live(1));
    assert_eq!(r.producer.consumed(1), head);
    let mut back = reader(&r, 1);
    assert_eq!(back.position(), head);
    assert!(back.poll(usize::MAX).unwrap().is_empty());
    // It gets exactly what is pushed from now on, with no overrun from its old mark.
    let first = ts;
    push(&mut r, first, first + 10, |_| vec![0]);
    let got: Vec<u64> = back
        .poll(usize::MAX)
        .unwrap()
        .iter()
        .map(|x| x.ts)
        .collect();
    assert_eq!(got, (first..first + 10).collect::<Vec<_>>());
    live.poll(usize::MAX).unwrap();
    // And the producer waits for it again: a push needing its room is not done while it does
    // not read (it is dropped only after the stall budget, with exactly what it missed).
    let more: Vec<(u64, Vec<u8>)> = records(&batch(first + 10, first + 40));
    let recs: Vec<RecordIn<'_>> = more
        .iter()
        .map(|(t, p)| RecordIn {
            ts: *t,
            dest: &[0],
            payload: p,
        })
        .collect();
    let started = Instant::now();
    let dropped = r.producer.push(&recs, Duration::from_millis(50)).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(
        dropped.len(),
        2,
        "both readers were in the way: {dropped:?}"
    );
    let missed: Vec<u64> = dropped
        .iter()
        .find(|d| d.consumer == 1)
        .unwrap()
        .records
        .iter()
        .map(|x| x.ts)
        .collect();
    assert_eq!(missed.first(), Some(&(first + 10)));
    // A consumer out of range is refused.
    assert_eq!(
        r.producer.reattach(2).unwrap_err().to_string(),
        "bad ring request: no consumer 2: the ring has 2"
    );
}

#[test]
fn a_reader_over_tcp_polls_its_records_and_an_idle_one_still_gets_the_next() {
    let mut r = ring("tcp", 2, 1, 64 * 1024);
    let server =
        remora_core::TcpServer::start(&r.store, SECRET, "127.0.0.1:0".parse().unwrap()).unwrap();
    let peer = remora_core::TcpTransport::new(SECRET)
        .unwrap()
        .attach(&server.local_addr().to_string())
        .unwrap();
    // No doorbell reaches a reader over the network: its waits poll.
    let mut reader = RingReader::attach(peer, r.producer.region(), 1, None).unwrap();
    push(&mut r, 1, 41, |ts| vec![(ts % 2) as u32]);
    let got = reader.wait(64, Duration::ZERO, LONG).unwrap();
    let ts: Vec<u64> = got.iter().map(|x| x.ts).collect();
    assert_eq!(ts, (1..41).filter(|t| t % 2 == 1).collect::<Vec<_>>());
    assert!(got.iter().all(|x| x.payload == payload(x.ts)));
    // Idle for longer than the backoff's short sleeps (it polls once a millisecond by then).
    assert_eq!(
        reader
            .wait(64, Duration::ZERO, Duration::from_millis(300))
            .unwrap(),
        vec![]
    );
    let waiting = std::thread::spawn(move || {
        let got = reader.wait(64, Duration::ZERO, LONG).unwrap();
        got.iter().map(|x| x.ts).collect::<Vec<_>>()
    });
    push(&mut r, 41, 43, |_| vec![1]);
    assert_eq!(waiting.join().unwrap(), vec![41, 42]);
}
