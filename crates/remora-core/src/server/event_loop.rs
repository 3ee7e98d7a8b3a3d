//! The loop itself: one thread, one poller, every connection of a server. It accepts and
//! admits connections (the caps and the fair eviction), drives each one's turn on its events,
//! and closes those past their handshake deadline or stalled too long.

use super::conn::{turn, Conn, End, Phase, Turn};
use super::limits::{bump, Counters, ServerLimits};
use super::log::Log;
use super::socket::{Listener, Source};
use super::{Handle, Service};
use crate::error::{IoContext, Result};
use crate::handshake::ServerHandshake;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reads go through one buffer of this size per server.
const SCRATCH: usize = 64 << 10;
/// After a failed `accept` (out of file descriptors, say), wait this long before retrying.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

const LISTENER: Token = Token(0);
const WAKE: Token = Token(1);
/// Connection `i` is token `FIRST + i`.
const FIRST: usize = 2;

/// Starts the loop on a thread of its own; the handle stops it.
pub(super) fn spawn<S: Service>(
    mut listener: Listener,
    service: S,
    secret: &[u8],
    limits: ServerLimits,
    kind: &'static str,
    store: &str,
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
        kind,
        store: store.to_string(),
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
        .name(format!("remora-{kind}-{store}"))
        .spawn(move || lp.run())
        .ctx(|| "starting the server thread".into())?;
    Ok(Handle {
        stop,
        waker,
        counters,
        thread: Some(t),
    })
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
