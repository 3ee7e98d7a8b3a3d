//! The sockets a server listens and talks on, Unix and TCP alike, and who a connection comes
//! from.

use crate::error::{Error, IoContext, Result};
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};

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

    pub(super) fn accept(&self) -> std::io::Result<(Stream, Source, String)> {
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

    pub(super) fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Listener::Tcp(l) => l,
            Listener::Unix(l) => l,
        }
    }
}

pub(super) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub(super) fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    pub(super) fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    pub(super) fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
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
pub(super) enum Source {
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
