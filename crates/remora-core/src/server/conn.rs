//! One connection's turn: send what it is owed, run its handshake or answer its frames, read
//! more, until it has to wait for its peer or its turn runs out.

use super::limits::{bump, Counters};
use super::socket::{Source, Stream};
use super::{Flow, Service, MAX_FRAME};
use crate::handshake::{ServerHandshake, Step};
use std::io::ErrorKind;
use std::time::Instant;

/// Frames one connection may have answered per turn before the others get theirs.
pub(super) const FRAMES_PER_TURN: usize = 64;
/// A connection whose unread replies reach this many bytes is not read from until they drain.
pub(super) const OUT_HIGH: usize = 1 << 20;
/// Buffers grown past this by a large frame are released once empty.
const KEEP: usize = 128 << 10;

pub(super) enum Phase<C> {
    Handshake(ServerHandshake),
    Serving(C),
}

pub(super) struct Conn<C> {
    pub(super) stream: Stream,
    pub(super) peer: String,
    pub(super) source: Source,
    pub(super) phase: Phase<C>,
    /// End of the handshake's time.
    pub(super) deadline: Instant,
    /// Received, not yet consumed from `consumed` on.
    pub(super) input: Vec<u8>,
    pub(super) consumed: usize,
    /// Replies, sent up to `sent`.
    pub(super) out: Vec<u8>,
    pub(super) sent: usize,
    /// The last read found the socket empty: nothing to read until the next readable event.
    pub(super) drained: bool,
    /// The peer hung up (or the socket failed): a short read no longer means empty, the end
    /// of the stream is still to be read, and no event will announce it again.
    pub(super) hung_up: bool,
    /// Close once `out` is sent.
    pub(super) closing: bool,
    /// Why, to log then.
    pub(super) why: Option<String>,
    /// Replies have waited on the peer since then.
    pub(super) stalled_since: Option<Instant>,
    pub(super) in_stalled: bool,
}

/// Why a connection ends, for the counters and the log.
pub(super) enum End {
    /// The peer hung up, or the service finished with it: nothing to report.
    Quiet,
    Failed(String),
    TimedOut,
    Evicted,
    Stalled,
}

/// What a turn of a connection came to.
pub(super) enum Turn {
    Wait,
    /// Its turn ran out with work left.
    Again,
    Close(End),
}

/// Sends what `c` owes, as far as its socket takes it.
fn flush<C>(c: &mut Conn<C>) -> std::io::Result<()> {
    let mut progress = false;
    while c.sent < c.out.len() {
        let left = c.out.len() - c.sent;
        match c.stream.write(&c.out[c.sent..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => {
                c.sent += n;
                progress = true;
                if n < left {
                    // The socket buffer is full; writability comes back as an event.
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if c.sent == c.out.len() {
        c.sent = 0;
        c.out.clear();
        if c.out.capacity() > KEEP {
            c.out = Vec::new();
        }
        c.stalled_since = None;
    } else if progress || c.stalled_since.is_none() {
        c.stalled_since = Some(Instant::now());
    }
    Ok(())
}

/// One turn of a connection: send what it is owed, take its input, answer, until it has to
/// wait for its peer or its turn runs out.
pub(super) fn turn<S: Service>(
    c: &mut Conn<S::Conn>,
    service: &S,
    secret: &[u8],
    scratch: &mut [u8],
    counters: &Counters,
) -> Turn {
    let mut frames = 0;
    loop {
        if let Err(e) = flush(c) {
            return Turn::Close(End::Failed(format!("replying to {}: {e}", c.peer)));
        }
        if c.closing {
            if !c.out.is_empty() {
                return Turn::Wait;
            }
            return Turn::Close(c.why.take().map_or(End::Quiet, End::Failed));
        }
        if c.out.len() - c.sent >= OUT_HIGH {
            return Turn::Wait;
        }
        if frames == FRAMES_PER_TURN {
            return Turn::Again;
        }
        let buffered = &c.input[c.consumed..];
        // Answer what is buffered; else how many more bytes the next step needs.
        let need = match &mut c.phase {
            Phase::Handshake(hs) => {
                let need = hs.need();
                if buffered.len() >= need {
                    let step = hs.step(&buffered[..need], secret, &mut c.out, &c.peer);
                    c.consumed += need;
                    match step {
                        Ok(Step::More) => {}
                        Ok(Step::Accepted) => c.phase = Phase::Serving(service.open(&c.peer)),
                        Ok(Step::Rejected(e)) => {
                            // The verdict goes out first, so the peer learns why.
                            bump(&counters.rejected);
                            c.closing = true;
                            c.why = Some(e.to_string());
                        }
                        Err(e) => {
                            bump(&counters.rejected);
                            return Turn::Close(End::Failed(e.to_string()));
                        }
                    }
                    continue;
                }
                // Never more than the step needs: a peer in its handshake buffers nothing.
                need - buffered.len()
            }
            Phase::Serving(state) => {
                if buffered.len() >= 4 {
                    let len =
                        u32::from_le_bytes([buffered[0], buffered[1], buffered[2], buffered[3]])
                            as usize;
                    if len > MAX_FRAME {
                        return Turn::Close(End::Failed(format!(
                            "malformed frame from {}: frame of {len} bytes exceeds the limit of {MAX_FRAME}",
                            c.peer
                        )));
                    }
                    if buffered.len() >= 4 + len {
                        let flow = service.frame(state, &buffered[4..4 + len], &mut c.out, &c.peer);
                        c.consumed += 4 + len;
                        frames += 1;
                        if let Flow::Close(e) = flow {
                            // The error reply, if any, goes out first.
                            c.closing = true;
                            c.why = e.map(|e| e.to_string());
                        }
                        continue;
                    }
                }
                scratch.len()
            }
        };
        if c.drained {
            return Turn::Wait;
        }
        // Keep only the unconsumed part, so the buffer holds at most one partial frame.
        if c.consumed > 0 {
            c.input.drain(..c.consumed);
            c.consumed = 0;
        }
        if c.input.is_empty() && c.input.capacity() > KEEP {
            c.input = Vec::new();
        }
        let want = need.min(scratch.len());
        match c.stream.read(&mut scratch[..want]) {
            Ok(0) => c.closing = true,
            Ok(n) => {
                c.input.extend_from_slice(&scratch[..n]);
                // A short read emptied the socket: new data comes back as an event (edge-
                // triggered epoll reports every arrival after the event was taken).
                c.drained = n < want && !c.hung_up;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => c.drained = true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Turn::Close(End::Failed(format!("reading from {}: {e}", c.peer))),
        }
    }
}
