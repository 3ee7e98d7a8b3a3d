//! The accept/handshake/serve skeleton both servers share: the control channel (Unix socket)
//! and the `tcp` transport (TCP). A service only answers frames; everything a hostile peer
//! could use to hold the owner's resources is handled here, once.
//!
//! **One event-loop thread per server**, nonblocking sockets (`mio`, epoll on Linux). A
//! request is a bounded memory copy (at most one frame, 1 MiB) or a lookup in the store's
//! index, never a wait, so handing it to a worker thread would only add a thread wake-up (a
//! few µs) to every read, and on the 2-core hosts this runs on a pool would have no core to
//! run on anyway. An idle connection, authenticated or not, costs a slot and a few hundred
//! bytes, never a thread. Fairness between busy connections: each gets a turn of at most
//! [`FRAMES_PER_TURN`] frames, and stops taking requests while [`OUT_HIGH`] bytes of its
//! replies wait for it to read them.
//!
//! Limits ([`ServerLimits`]):
//! - a deadline for the **whole** handshake, counted from the connection's accept;
//! - at most `max_connections` connections and `max_unauthenticated` of them still in their
//!   handshake. Over either cap a new connection is closed at once, unless an address holds
//!   at least two more unauthenticated connections than the newcomer's: then its oldest one
//!   is closed to make room. So a squatting address never starves one that holds none (a
//!   member), an authenticated connection is never displaced, and a member's connection in
//!   its handshake is displaced by no single newcomer;
//! - a connection whose replies sit unread for `stall_timeout` is closed.

use crate::control::MAX_FRAME;
use crate::error::{Error, IoContext, Result};
use crate::handshake::{ServerHandshake, Step};
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Frames one connection may have answered per turn before the others get theirs.
const FRAMES_PER_TURN: usize = 64;
/// A connection whose unread replies reach this many bytes is not read from until they drain.
const OUT_HIGH: usize = 1 << 20;
/// Reads go through one buffer of this size per server.
const SCRATCH: usize = 64 << 10;
/// Buffers grown past this by a large frame are released once empty.
const KEEP: usize = 128 << 10;
/// After a failed `accept` (out of file descriptors, say), wait this long before retrying.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Log lines per window, so a flood of bad peers cannot flood the owner's log.
const LOG_LINES: u32 = 20;
const LOG_WINDOW: Duration = Duration::from_secs(10);

const LISTENER: Token = Token(0);
const WAKE: Token = Token(1);
const FIRST: usize = 2;

/// How much a server lets its peers hold. The defaults suit a cluster of up to a few
/// hundred members per owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Open connections, authenticated or not. Default 256.
    pub max_connections: usize,
    /// Connections still in their handshake. Default 32.
    pub max_unauthenticated: usize,
    /// Time from accept to the end of the handshake. Default 5 s.
    pub handshake_timeout: Duration,
    /// Time a connection may leave its replies unread before it is closed. Default 30 s.
    pub stall_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 256,
            max_unauthenticated: 32,
            handshake_timeout: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(30),
        }
    }
}

impl ServerLimits {
    /// At least one connection of each kind, so a server is always reachable.
    fn normalized(mut self) -> Self {
        self.max_connections = self.max_connections.max(1);
        self.max_unauthenticated = self.max_unauthenticated.clamp(1, self.max_connections);
        self
    }
}

/// What a server has seen, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections open now.
    pub open: usize,
    /// Of those, still in their handshake.
    pub unauthenticated: usize,
    pub accepted: u64,
    /// Closed at once: over a cap.
    pub refused: u64,
    /// Closed in their handshake to make room for an address that held none.
    pub evicted: u64,
    /// Closed at the handshake deadline.
    pub timed_out: u64,
    /// Failed the handshake (not a Remora peer, or the wrong secret).
    pub rejected: u64,
}

#[derive(Default)]
struct Counters {
    open: AtomicUsize,
    unauthenticated: AtomicUsize,
    accepted: AtomicU64,
    refused: AtomicU64,
    evicted: AtomicU64,
    timed_out: AtomicU64,
    rejected: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What to do with a connection after one of its frames.
pub(crate) enum Flow {
    Continue,
    /// Send what was queued, then close; the error, if any, is logged.
    Close(Option<Error>),
}

/// The requests a server answers, on connections that passed the handshake.
pub(crate) trait Service: Send + 'static {
    /// A connection's own state, dropped when it closes.
    type Conn: Send + 'static;
    fn open(&self, peer: &str) -> Self::Conn;
    /// Answers one frame's payload, appending whole reply frames to `out`.
    fn frame(&self, conn: &mut Self::Conn, payload: &[u8], out: &mut Vec<u8>, peer: &str) -> Flow;
}

/// Appends one frame (length, payload) to `out`. Payloads are built under [`MAX_FRAME`].
pub(crate) fn put_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    pub(crate) fn tcp(addr: SocketAddr) -> Result<Self> {
        Ok(Listener::Tcp(
            TcpListener::bind(addr).ctx(|| format!("listening on {addr}"))?,
        ))
    }

    pub(crate) fn unix(path: &std::path::Path) -> Result<Self> {
        Ok(Listener::Unix(
            UnixListener::bind(path).ctx(|| format!("listening on {}", path.display()))?,
        ))
    }

    pub(crate) fn local_addr(&self) -> Result<SocketAddr> {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .ctx(|| "reading the listening address".into()),
            Listener::Unix(_) => Err(Error::Io {
                context: "reading the listening address".into(),
                source: std::io::Error::other("a Unix socket has no IP address"),
            }),
        }
    }

    fn accept(&self) -> std::io::Result<(Stream, Source, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, addr) = l.accept()?;
                // Replies are whole frames written at once: no reason to hold them back.
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), Source::of(addr.ip()), addr.to_string()))
            }
            Listener::Unix(l) => {
                let (s, _) = l.accept()?;
                Ok((Stream::Unix(s), Source::Local, String::new()))
            }
        }
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Listener::Tcp(l) => l,
            Listener::Unix(l) => l,
        }
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
}

/// Who a connection comes from, for sharing the unauthenticated slots fairly: an IPv4
/// address, an IPv6 /64 (one host usually holds a whole /64), or the host itself for Unix
/// sockets (whose peers are all the cluster's user: one source).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    V6(u64),
    Local,
}

impl Source {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4.to_bits()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.to_bits()),
                None => Source::V6((v6.to_bits() >> 64) as u64),
            },
        }
    }
}

enum Phase<C> {
    Handshake(ServerHandshake),
    Serving(C),
}

struct Conn<C> {
    stream: Stream,
    peer: String,
    source: Source,
    phase: Phase<C>,
    /// End of the handshake's time.
    deadline: Instant,
    /// Received, not yet consumed from `consumed` on.
    input: Vec<u8>,
    consumed: usize,
    /// Replies, sent up to `sent`.
    out: Vec<u8>,
    sent: usize,
    /// The last read found the socket empty: nothing to read until the next readable event.
    drained: bool,
    /// The peer hung up (or the socket failed): a short read no longer means empty, the end
    /// of the stream is still to be read, and no event will announce it again.
    hung_up: bool,
    /// Close once `out` is sent.
    closing: bool,
    /// Why, to log then.
    why: Option<String>,
    /// Replies have waited on the peer since then.
    stalled_since: Option<Instant>,
    in_stalled: bool,
}

/// Why a connection ends, for the counters and the log.
enum End {
    /// The peer hung up, or the service finished with it: nothing to report.
    Quiet,
    Failed(String),
    TimedOut,
    Evicted,
    Stalled,
}

/// What a turn of a connection came to.
enum Turn {
    Wait,
    /// Its turn ran out with work left.
    Again,
    Close(End),
}

/// A running server's thread: dropping it stops the loop and closes every connection.
pub(crate) struct Handle {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

impl Handle {
    pub(crate) fn stats(&self) -> ServerStats {
        let c = &self.counters;
        ServerStats {
            open: c.open.load(Ordering::Relaxed),
            unauthenticated: c.unauthenticated.load(Ordering::Relaxed),
            accepted: c.accepted.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
            timed_out: c.timed_out.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if self.waker.wake().is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
        // A waker that failed (it cannot on Linux: an eventfd write) leaves the thread
        // detached; it sees `stop` on its next event.
    }
}

/// Starts the loop serving `listener` on a thread named `thread`; `label` names peers in
/// messages (`"tcp peer #3 (10.0.0.2:4711) of store 'x'"`).
pub(crate) fn spawn<S: Service>(
    mut listener: Listener,
    service: S,
    secret: &[u8],
    limits: ServerLimits,
    thread: String,
    label: (&'static str, String),
) -> Result<Handle> {
    let poll = Poll::new().ctx(|| "creating the server's poller".into())?;
    poll.registry()
        .register(listener.source(), LISTENER, Interest::READABLE)
        .ctx(|| "watching the listening socket".into())?;
    let waker =
        Arc::new(Waker::new(poll.registry(), WAKE).ctx(|| "creating the server's waker".into())?);
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let mut lp = Loop {
        poll,
        listener,
        service,
        secret: secret.to_vec(),
        limits: limits.normalized(),
        kind: label.0,
        store: label.1,
        conns: Vec::new(),
        free: Vec::new(),
        open: 0,
        unauth: Vec::new(),
        stalled: Vec::new(),
        again: Vec::new(),
        scratch: vec![0u8; SCRATCH].into_boxed_slice(),
        counters: counters.clone(),
        stop: stop.clone(),
        numbered: 0,
        accept_at: None,
        log: Log::default(),
    };
    let t = std::thread::Builder::new()
        .name(thread)
        .spawn(move || lp.run())
        .ctx(|| "starting the server thread".into())?;
    Ok(Handle {
        stop,
        waker,
        counters,
        thread: Some(t),
    })
}

/// Rate-limited log lines.
#[derive(Default)]
struct Log {
    window: Option<Instant>,
    lines: u32,
    dropped: u64,
}

impl Log {
    fn line(&mut self, msg: impl FnOnce() -> String) {
        let now = Instant::now();
        if self
            .window
            .is_none_or(|w| now.duration_since(w) >= LOG_WINDOW)
        {
            if self.dropped > 0 {
                eprintln!(
                    "remora: {} more connection messages suppressed",
                    self.dropped
                );
            }
            *self = Log {
                window: Some(now),
                ..Log::default()
            };
        }
        if self.lines < LOG_LINES {
            self.lines += 1;
            eprintln!("remora: {}", msg());
        } else {
            self.dropped += 1;
        }
    }
}

struct Loop<S: Service> {
    poll: Poll,
    listener: Listener,
    service: S,
    secret: Vec<u8>,
    limits: ServerLimits,
    kind: &'static str,
    store: String,
    conns: Vec<Option<Conn<S::Conn>>>,
    free: Vec<usize>,
    open: usize,
    /// Connections in their handshake, oldest (so earliest deadline) first.
    unauth: Vec<usize>,
    /// Connections whose replies wait on their reader.
    stalled: Vec<usize>,
    /// Connections whose turn ran out with work left.
    again: Vec<usize>,
    scratch: Box<[u8]>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    numbered: u64,
    /// When to try `accept` again after it failed.
    accept_at: Option<Instant>,
    log: Log,
}

impl<S: Service> Loop<S> {
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        while !self.stop.load(Ordering::Acquire) {
            let timeout = if self.again.is_empty() {
                self.next_deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != ErrorKind::Interrupted {
                    self.log
                        .line(|| format!("{} server: polling failed: {e}", self.kind));
                    std::thread::sleep(ACCEPT_RETRY);
                }
                continue;
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKE => {}
                    LISTENER => self.accept(),
                    Token(t) => {
                        let i = t - FIRST;
                        if let Some(Some(c)) = self.conns.get_mut(i) {
                            if ev.is_read_closed() || ev.is_error() {
                                c.hung_up = true;
                            }
                            if ev.is_readable() || c.hung_up {
                                c.drained = false;
                            }
                            self.drive(i);
                        }
                    }
                }
            }
            for i in std::mem::take(&mut self.again) {
                self.drive(i);
            }
            if !self.unauth.is_empty() || !self.stalled.is_empty() || self.accept_at.is_some() {
                self.expire();
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let handshake = self
            .unauth
            .first()
            .and_then(|&i| self.conn(i))
            .map(|c| c.deadline);
        let stall = self
            .stalled
            .iter()
            .filter_map(|&i| self.conn(i)?.stalled_since)
            .min()
            .map(|t| t + self.limits.stall_timeout);
        [handshake, stall, self.accept_at]
            .into_iter()
            .flatten()
            .min()
    }

    fn conn(&self, i: usize) -> Option<&Conn<S::Conn>> {
        self.conns.get(i)?.as_ref()
    }

    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(&i) = self.unauth.first() {
            match self.conn(i) {
                Some(c) if c.deadline <= now => self.close(i, End::TimedOut),
                Some(_) => break,
                None => {
                    self.unauth.remove(0);
                }
            }
        }
        let stall = self.limits.stall_timeout;
        for i in std::mem::take(&mut self.stalled) {
            let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            match c.stalled_since {
                Some(t) if t + stall <= now => {
                    c.in_stalled = false;
                    self.close(i, End::Stalled);
                }
                Some(_) => self.stalled.push(i),
                None => c.in_stalled = false,
            }
        }
        if self.accept_at.is_some_and(|t| t <= now) {
            self.accept_at = None;
            self.accept();
        }
    }

    fn accept(&mut self) {
        if self.accept_at.is_some() {
            return;
        }
        loop {
            let (stream, source, who) = match self.listener.accept() {
                Ok(a) => a,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    // Edge-triggered: the pending connections will not be announced again,
                    // so come back for them on a timer.
                    self.log
                        .line(|| format!("{} server: accepting failed: {e}", self.kind));
                    self.accept_at = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            };
            bump(&self.counters.accepted);
            let n = self.numbered;
            self.numbered += 1;
            if !self.admit(source) {
                bump(&self.counters.refused);
                drop(stream);
                continue;
            }
            let peer = if who.is_empty() {
                format!("{} peer #{n} of store '{}'", self.kind, self.store)
            } else {
                format!("{} peer #{n} ({who}) of store '{}'", self.kind, self.store)
            };
            let i = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            let mut conn = Conn {
                stream,
                peer,
                source,
                phase: Phase::Handshake(ServerHandshake::default()),
                deadline: Instant::now() + self.limits.handshake_timeout,
                input: Vec::new(),
                consumed: 0,
                out: Vec::new(),
                sent: 0,
                drained: false,
                hung_up: false,
                closing: false,
                why: None,
                stalled_since: None,
                in_stalled: false,
            };
            let registered = self.poll.registry().register(
                conn.stream.source(),
                Token(FIRST + i),
                Interest::READABLE | Interest::WRITABLE,
            );
            if let Err(e) = registered {
                self.log
                    .line(|| format!("{}: cannot watch the connection: {e}", conn.peer));
                self.free.push(i);
                continue;
            }
            if let Some(slot) = self.conns.get_mut(i) {
                *slot = Some(conn);
            }
            self.open += 1;
            self.unauth.push(i);
            self.publish();
        }
    }

    /// Whether a connection from `source` may open now, closing another one in its handshake
    /// to make room if that is fair (see the module documentation).
    fn admit(&mut self, source: Source) -> bool {
        if self.open < self.limits.max_connections
            && self.unauth.len() < self.limits.max_unauthenticated
        {
            return true;
        }
        let mut held: HashMap<Source, usize> = HashMap::new();
        for c in self.unauth.iter().filter_map(|&i| self.conn(i)) {
            *held.entry(c.source).or_default() += 1;
        }
        let mine = held.get(&source).copied().unwrap_or(0);
        // The oldest connection of the address holding the most (the earliest such address
        // on a tie: `unauth` is oldest first).
        let mut victim: Option<(usize, usize)> = None;
        for &i in &self.unauth {
            let Some(c) = self.conn(i) else { continue };
            let count = held.get(&c.source).copied().unwrap_or(0);
            if victim.is_none_or(|(_, best)| count > best) {
                victim = Some((i, count));
            }
        }
        match victim {
            Some((i, count)) if count > mine + 1 => {
                self.close(i, End::Evicted);
                true
            }
            _ => false,
        }
    }

    fn publish(&self) {
        self.counters.open.store(self.open, Ordering::Relaxed);
        self.counters
            .unauthenticated
            .store(self.unauth.len(), Ordering::Relaxed);
    }

    fn close(&mut self, i: usize, end: End) {
        let Some(mut c) = self.conns.get_mut(i).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(c.stream.source());
        if matches!(c.phase, Phase::Handshake(_)) {
            if let Some(at) = self.unauth.iter().position(|&u| u == i) {
                self.unauth.remove(at);
            }
        }
        if c.in_stalled {
            self.stalled.retain(|&s| s != i);
        }
        self.free.push(i);
        self.open -= 1;
        self.publish();
        match end {
            End::Quiet => {}
            End::Failed(why) => self.log.line(|| format!("{why}; connection closed")),
            End::TimedOut => {
                bump(&self.counters.timed_out);
                let limit = self.limits.handshake_timeout;
                self.log.line(|| {
                    format!(
                        "{} did not complete the handshake within {limit:?}; connection closed",
                        c.peer
                    )
                });
            }
            End::Evicted => bump(&self.counters.evicted),
            End::Stalled => {
                let limit = self.limits.stall_timeout;
                self.log.line(|| {
                    format!(
                        "{} left its replies unread for {limit:?}; connection closed",
                        c.peer
                    )
                });
            }
        }
    }

    fn drive(&mut self, i: usize) {
        let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let was_handshake = matches!(c.phase, Phase::Handshake(_));
        let turn = turn(
            c,
            &self.service,
            &self.secret,
            &mut self.scratch,
            &self.counters,
        );
        let authenticated = was_handshake && matches!(c.phase, Phase::Serving(_));
        let stalled = c.stalled_since.is_some() && !c.in_stalled;
        if stalled {
            c.in_stalled = true;
        }
        if authenticated {
            if let Some(at) = self.unauth.iter().position(|&u| u == i) {
                self.unauth.remove(at);
            }
            self.publish();
        }
        if stalled {
            self.stalled.push(i);
        }
        match turn {
            Turn::Wait => {}
            Turn::Again => self.again.push(i),
            Turn::Close(end) => self.close(i, end),
        }
    }
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
fn turn<S: Service>(
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
