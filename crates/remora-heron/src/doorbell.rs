//! A doorbell: one 64-bit word of a coordination region that lets a replica sleep until a
//! peer on the same host announces, instead of polling.
//!
//! - low 32 bits (`bell`): bumped by every peer after it writes an entry in this region;
//! - high 32 bits (`sleepers`): how many waiters of the owner are (about to be) asleep.
//!
//! A waiter counts itself in, reads `bell`, checks the entries, and only then sleeps in
//! `FUTEX_WAIT` on `bell`, if it still holds the value read. A ringer writes its entry, bumps
//! `bell`, then wakes only if `sleepers` is nonzero. All four steps are sequentially
//! consistent, so either the ringer sees the sleeper (and wakes it, or the bump makes its
//! `FUTEX_WAIT` return at once) or the sleeper's check sees the entry. A ring with nobody
//! asleep costs one atomic add and no system call.
//!
//! The region is a file mapped shared by every process, so the futex is a shared one (keyed by
//! file and offset, no `FUTEX_PRIVATE_FLAG`): each side uses its own mapping of the same page.
//! Peers may write anything here; a bad value costs a spurious wake or a timed-out sleep, never
//! more (sleeps are bounded by the caller).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// The two halves of a doorbell word.
pub struct Doorbell<'a> {
    bell: &'a AtomicU32,
    sleepers: &'a AtomicU32,
}

/// How a sleep ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Woke {
    /// Woken, or the bell had already moved: something was announced.
    Rung,
    /// The timeout passed.
    TimedOut,
}

impl<'a> Doorbell<'a> {
    /// The doorbell at `word`, which must live in shared memory every party maps.
    pub fn new(word: &'a AtomicU64) -> Self {
        let base = word as *const AtomicU64 as *const AtomicU32;
        // SAFETY: an `AtomicU64` is 8 bytes, 8-aligned, so it holds two 4-aligned `AtomicU32`
        // at offsets 0 and 4, valid for as long as `word`. Nothing accesses this word as a
        // 64-bit atomic (the region's bulk reads and writes touch entries, not the doorbell),
        // so no mixed-size atomic access happens. The low half is at offset 0 on little-endian
        // targets, the high half on big-endian ones: either way each half is one field.
        let (bell, sleepers) = unsafe { (&*base, &*base.add(1)) };
        Doorbell { bell, sleepers }
    }

    /// After writing an entry: moves the bell and wakes the owner's sleepers, if any.
    pub fn ring(&self) {
        self.bell.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            futex::wake(self.bell);
        }
    }

    /// Counts a waiter in and returns the bell's value to sleep on: check the entries after
    /// this, then [`Sleeper::sleep`] with it.
    pub fn prepare(&self) -> Sleeper<'_> {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let seen = self.bell.load(Ordering::SeqCst);
        Sleeper { bell: self, seen }
    }

    /// Waiters counted in now (for tests and diagnostics; peers may write it too).
    pub fn sleepers(&self) -> u32 {
        self.sleepers.load(Ordering::SeqCst)
    }
}

/// A counted-in waiter; counts itself out when dropped.
pub struct Sleeper<'b> {
    bell: &'b Doorbell<'b>,
    seen: u32,
}

impl Sleeper<'_> {
    /// Sleeps until the bell moves from the value read by `prepare`, or `timeout` passes.
    pub fn sleep(&self, timeout: Duration) -> Woke {
        if self.bell.bell.load(Ordering::SeqCst) != self.seen {
            return Woke::Rung;
        }
        futex::wait(self.bell.bell, self.seen, timeout)
    }
}

impl Drop for Sleeper<'_> {
    fn drop(&mut self) {
        self.bell.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(target_os = "linux")]
mod futex {
    use super::Woke;
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    pub fn wake(word: &AtomicU32) {
        // SAFETY: `word` is a valid, aligned 32-bit word for the duration of the call;
        // FUTEX_WAKE only uses its address as a key. The other arguments are ignored.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAKE,
                i32::MAX,
                std::ptr::null::<libc::timespec>(),
                std::ptr::null::<u32>(),
                0u32,
            );
        }
    }

    pub fn wait(word: &AtomicU32, seen: u32, timeout: Duration) -> Woke {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: `word` is a valid, aligned 32-bit word and `ts` a valid timespec, both live
        // across the call; FUTEX_WAIT (shared: the word is in a file mapping other processes
        // map) only reads them.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                seen,
                &ts as *const libc::timespec,
                std::ptr::null::<u32>(),
                0u32,
            )
        };
        if r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT) {
            Woke::TimedOut
        } else {
            // Woken, the value moved (EAGAIN) or a signal (EINTR): the caller checks again.
            Woke::Rung
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod futex {
    use super::Woke;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    pub fn wake(_: &AtomicU32) {}

    /// Without futexes: short sleeps until the value moves.
    pub fn wait(word: &AtomicU32, seen: u32, timeout: Duration) -> Woke {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if word.load(Ordering::SeqCst) != seen {
                return Woke::Rung;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        Woke::TimedOut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_ring_wakes_a_sleeper_and_a_moved_bell_does_not_sleep() {
        let word: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
        let (tx, rx) = mpsc::channel();
        let sleeper = std::thread::spawn(move || {
            let bell = Doorbell::new(word);
            let s = bell.prepare();
            tx.send(()).unwrap();
            s.sleep(Duration::from_secs(30))
        });
        rx.recv().unwrap();
        let bell = Doorbell::new(word);
        // The sleeper is counted in: the ring must wake it (or stop it from sleeping).
        assert_eq!(bell.sleepers(), 1);
        bell.ring();
        assert_eq!(sleeper.join().unwrap(), Woke::Rung);
        assert_eq!(bell.sleepers(), 0);

        let s = bell.prepare();
        bell.ring();
        assert_eq!(s.sleep(Duration::from_secs(30)), Woke::Rung);
        drop(s);
        let s = bell.prepare();
        assert_eq!(s.sleep(Duration::from_millis(1)), Woke::TimedOut);
    }
}
