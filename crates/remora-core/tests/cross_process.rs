//! Torn-read safety across processes: a child process owns the store and rewrites
//! self-checking values as fast as it can (objects grow, move and get deleted); this process
//! reads them one-sidedly over `shm` and verifies every value it accepts.
//!
//! The child is this same test binary, run with `REMORA_STRESS_DIR` set. It prints `ready`
//! once the objects exist and stops when its stdin closes (or after a hard limit).

use remora_core::region::RegionInfo;
use remora_core::stress::{populate, run_reader, run_writer};
use remora_core::{
    Addr, ControlServer, RemoteMemory, RemoteStore, ShmPeer, ShmTransport, Store, StoreConfig,
    Transport,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SECRET: &[u8] = b"stress-cluster-secret-0123456789";
const OBJECTS: u32 = 48;
const CHILD_LIMIT: Duration = Duration::from_secs(300);

fn reads_wanted() -> u64 {
    std::env::var("REMORA_STRESS_READS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Kills the child if the test fails before it ends it.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `shm` restricted to plain byte copies: the validation path of transports that move bytes
/// (it does not pass on `RemoteMemory::mapped`, so reads through handles copy too).
struct ByteCopies(ShmPeer);

impl RemoteMemory for ByteCopies {
    fn peer(&self) -> &str {
        self.0.peer()
    }
    fn region_info(&self, region: u32) -> remora_core::Result<RegionInfo> {
        self.0.region_info(region)
    }
    fn read(&self, region: u32, offset: u64, buf: &mut [u8]) -> remora_core::Result<()> {
        self.0.read(region, offset, buf)
    }
    fn write(&self, region: u32, offset: u64, data: &[u8]) -> remora_core::Result<()> {
        self.0.write(region, offset, data)
    }
    fn lookup(&self, ids: &[&[u8]]) -> remora_core::Result<Vec<Option<Addr>>> {
        self.0.lookup(ids)
    }
}

#[test]
fn writer_child() {
    let Ok(dir) = std::env::var("REMORA_STRESS_DIR") else {
        return; // only meaningful as the child of the test below
    };
    let seed: u64 = std::env::var("REMORA_STRESS_SEED")
        .unwrap()
        .parse()
        .unwrap();
    let mut cfg = StoreConfig::new(&dir, "owner");
    cfg.region_bytes = 256 * 1024;
    let store = Arc::new(Store::create(&cfg).unwrap());
    let _control = ControlServer::start(&store, SECRET).unwrap();
    let start = populate(&store, OBJECTS).unwrap();
    // Straight to the pipe: the test harness's capture would hold `println!` back.
    let say = |line: String| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").and_then(|_| out.flush()).unwrap();
    };
    say("ready".into());
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        stop2.store(true, Ordering::Relaxed);
    });
    let (writes, _) = run_writer(&store, OBJECTS, seed, start, &stop, CHILD_LIMIT).unwrap();
    say(format!("writes {writes}"));
}

#[test]
fn cross_process_reads_never_accept_torn_values() {
    let seed = std::env::var("REMORA_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64 * 2_654_435_761);
    println!("stress seed {seed} (set REMORA_STRESS_SEED to replay)");
    let dir = std::env::temp_dir().join(format!("remora-stress-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "writer_child", "--nocapture", "--test-threads=1"])
        .env("REMORA_STRESS_DIR", &dir)
        .env("REMORA_STRESS_SEED", seed.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reaper(child);
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    while !line.trim_end().ends_with("ready") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "writer child exited early"
        );
    }

    let transport = ShmTransport::new(&dir, SECRET).unwrap();
    // Half the reads validate in place (through handles: a checked read, then seqlock copies
    // with no checksum until the slot's header changes), half from byte copies the way
    // network transports deliver them (checksums and generations only). Each reader takes
    // one read in four through the allocating snapshot path (`stress::run_reader`).
    let in_place = RemoteStore::new(transport.attach("owner").unwrap());
    let copied = RemoteStore::new(ByteCopies(transport.attach("owner").unwrap()));
    let half = reads_wanted() / 2;
    let reports = [
        run_reader(&in_place, OBJECTS, seed ^ 1, half).unwrap(),
        run_reader(&copied, OBJECTS, seed ^ 2, half).unwrap(),
    ];
    drop(child.0.stdin.take()); // tells the writer to stop
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    println!("in place: {:?}\n  {:?}", reports[0], in_place.stats());
    println!("byte copies: {:?}\n  {:?}", reports[1], copied.stats());
    println!("writer: {}", rest.trim());

    for report in &reports {
        assert!(
            report.violations.is_empty(),
            "accepted bad reads: {:#?}",
            report.violations
        );
        assert_eq!(report.reads, half);
        assert!(
            report.verified > half / 2,
            "too few values verified: {report:?}"
        );
    }
    let writes: u64 = rest
        .lines()
        .find_map(|l| l.strip_prefix("writes "))
        .and_then(|n| n.parse().ok())
        .expect("writer reported its writes");
    assert!(writes > 0, "the writer must have raced the reader");
    let _ = std::fs::remove_dir_all(&dir);
}
