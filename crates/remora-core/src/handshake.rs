//! The mutual HMAC-SHA256 challenge-response every connection between cluster members starts
//! with, on the control channel and on the `tcp` transport alike:
//!
//! ```text
//! client → server   "RMRA" | protocol u16 = 1 | client nonce (32 B)
//! server → client   server nonce (32 B) | HMAC(secret, "remora-server" | nc | ns)
//! client → server   HMAC(secret, "remora-client" | nc | ns)
//! server → client   1 (accepted) or 0 (rejected)
//! ```
//!
//! Both ends prove they hold the cluster secret without sending it; labels differ per side so
//! neither proof can be reflected. The server side is a state machine fed whole steps, so the
//! event loop (`server`) can run it on nonblocking sockets under a deadline for the whole
//! exchange; [`handshake_server`] drives the same machine over a blocking stream.

use crate::error::{Error, Result};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

pub const MIN_SECRET: usize = 16;
const MAGIC: &[u8; 4] = b"RMRA";
const PROTOCOL: u16 = 1;
const NONCE: usize = 32;
const MAC: usize = 32;
/// The client's first message.
pub(crate) const HELLO: usize = MAGIC.len() + 2 + NONCE;
const ACCEPTED: u8 = 1;
const REJECTED: u8 = 0;

pub fn check_secret(secret: &[u8]) -> Result<()> {
    if secret.len() < MIN_SECRET {
        return Err(Error::WeakSecret);
    }
    Ok(())
}

fn mac(secret: &[u8], label: &[u8], a: &[u8], b: &[u8]) -> Result<Hmac<Sha256>> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| Error::WeakSecret)?;
    m.update(label);
    m.update(a);
    m.update(b);
    Ok(m)
}

fn nonce() -> Result<[u8; NONCE]> {
    let mut n = [0u8; NONCE];
    getrandom::getrandom(&mut n).map_err(|e| Error::Io {
        context: "drawing a handshake nonce".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(n)
}

fn hs_err(peer: &str, why: impl Into<String>) -> Error {
    Error::Handshake {
        peer: peer.to_string(),
        why: why.into(),
    }
}

/// Client side of the challenge-response.
pub fn handshake_client<S: Read + Write>(s: &mut S, secret: &[u8], peer: &str) -> Result<()> {
    let io = |e: std::io::Error| hs_err(peer, e.to_string());
    let nc = nonce()?;
    let mut hello = Vec::with_capacity(HELLO);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&PROTOCOL.to_le_bytes());
    hello.extend_from_slice(&nc);
    s.write_all(&hello).map_err(io)?;
    let mut reply = [0u8; NONCE + MAC];
    s.read_exact(&mut reply).map_err(io)?;
    let (ns, proof) = reply.split_at(NONCE);
    mac(secret, b"remora-server", &nc, ns)?
        .verify_slice(proof)
        .map_err(|_| hs_err(peer, "the peer does not hold the cluster secret"))?;
    let mine = mac(secret, b"remora-client", &nc, ns)?
        .finalize()
        .into_bytes();
    s.write_all(&mine).map_err(io)?;
    let mut verdict = [0u8; 1];
    s.read_exact(&mut verdict)
        .map_err(|_| hs_err(peer, "the peer rejected our proof of the cluster secret"))?;
    if verdict[0] != ACCEPTED {
        return Err(hs_err(
            peer,
            "the peer rejected our proof of the cluster secret",
        ));
    }
    Ok(())
}

/// What one step of [`ServerHandshake`] decided.
#[derive(Debug)]
pub(crate) enum Step {
    /// The reply is in `out`; feed the next [`ServerHandshake::need`] bytes.
    More,
    /// The peer proved it holds the secret; the verdict byte is in `out`.
    Accepted,
    /// The peer's proof is wrong; the rejection byte is in `out`, send it and hang up.
    Rejected(Error),
}

/// Server side of the challenge-response, fed one whole step of input at a time.
#[derive(Debug, Default)]
pub(crate) struct ServerHandshake {
    /// (client nonce, server nonce) once the hello was answered.
    nonces: Option<([u8; NONCE], [u8; NONCE])>,
}

impl ServerHandshake {
    /// Bytes of input the next step takes.
    pub(crate) fn need(&self) -> usize {
        if self.nonces.is_some() {
            MAC
        } else {
            HELLO
        }
    }

    /// Takes exactly [`ServerHandshake::need`] bytes and appends what to send to `out`. An
    /// `Err` means input that is not a Remora peer's: hang up without a word.
    pub(crate) fn step(
        &mut self,
        input: &[u8],
        secret: &[u8],
        out: &mut Vec<u8>,
        peer: &str,
    ) -> Result<Step> {
        if input.len() != self.need() {
            return Err(hs_err(peer, "handshake step of the wrong length"));
        }
        match self.nonces {
            None => {
                if &input[..MAGIC.len()] != MAGIC {
                    return Err(hs_err(peer, "not a Remora peer (bad magic)"));
                }
                let version = u16::from_le_bytes([input[4], input[5]]);
                if version != PROTOCOL {
                    return Err(hs_err(
                        peer,
                        format!("protocol version {version}, expected {PROTOCOL}"),
                    ));
                }
                let mut nc = [0u8; NONCE];
                nc.copy_from_slice(&input[6..]);
                let ns = nonce()?;
                let proof = mac(secret, b"remora-server", &nc, &ns)?
                    .finalize()
                    .into_bytes();
                out.extend_from_slice(&ns);
                out.extend_from_slice(&proof);
                self.nonces = Some((nc, ns));
                Ok(Step::More)
            }
            Some((nc, ns)) => {
                if mac(secret, b"remora-client", &nc, &ns)?
                    .verify_slice(input)
                    .is_err()
                {
                    out.push(REJECTED);
                    return Ok(Step::Rejected(hs_err(
                        peer,
                        "the peer does not hold the cluster secret",
                    )));
                }
                out.push(ACCEPTED);
                Ok(Step::Accepted)
            }
        }
    }
}

/// Server side of [`handshake_client`] over a blocking stream (the servers themselves run
/// `ServerHandshake` on nonblocking sockets).
pub fn handshake_server<S: Read + Write>(s: &mut S, secret: &[u8], peer: &str) -> Result<()> {
    let io = |e: std::io::Error| hs_err(peer, e.to_string());
    let mut hs = ServerHandshake::default();
    let mut input = [0u8; HELLO];
    let mut out = Vec::new();
    loop {
        let need = hs.need();
        s.read_exact(&mut input[..need]).map_err(io)?;
        out.clear();
        match hs.step(&input[..need], secret, &mut out, peer)? {
            Step::More => s.write_all(&out).map_err(io)?,
            Step::Accepted => return s.write_all(&out).map_err(io),
            Step::Rejected(e) => {
                let _ = s.write_all(&out);
                return Err(e);
            }
        }
    }
}

/// Streams whose blocking calls can be bounded in time.
pub(crate) trait Timeouts {
    fn set_timeouts(&self, t: Option<Duration>) -> std::io::Result<()>;
}

impl Timeouts for std::net::TcpStream {
    fn set_timeouts(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(t)?;
        self.set_write_timeout(t)
    }
}

impl Timeouts for std::os::unix::net::UnixStream {
    fn set_timeouts(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(t)?;
        self.set_write_timeout(t)
    }
}

/// A stream whose every call gets only the time left until one deadline, so a peer that
/// answers a byte at a time cannot stretch the exchange past it.
struct Deadline<'a, S> {
    s: &'a mut S,
    until: Instant,
    limit: Duration,
}

impl<S: Timeouts> Deadline<'_, S> {
    fn arm(&mut self) -> std::io::Result<()> {
        match self.until.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => self.s.set_timeouts(Some(left)),
            _ => Err(self.expired()),
        }
    }

    fn expired(&self) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no complete answer within {:?}", self.limit),
        )
    }

    fn bounded<T>(&mut self, r: std::io::Result<T>) -> std::io::Result<T> {
        r.map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => self.expired(),
            _ => e,
        })
    }
}

impl<S: Read + Timeouts> Read for Deadline<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.arm()?;
        let r = self.s.read(buf);
        self.bounded(r)
    }
}

impl<S: Write + Timeouts> Write for Deadline<'_, S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.arm()?;
        let r = self.s.write(buf);
        self.bounded(r)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.s.flush()
    }
}

/// [`handshake_client`] bounded by `limit` for the whole exchange. Leaves the stream's
/// timeouts set to whatever was left: callers set their own afterwards.
pub(crate) fn handshake_client_within<S: Read + Write + Timeouts>(
    s: &mut S,
    secret: &[u8],
    peer: &str,
    limit: Duration,
) -> Result<()> {
    let mut d = Deadline {
        s,
        until: Instant::now() + limit,
        limit,
    };
    handshake_client(&mut d, secret, peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::net::UnixStream;

    const SECRET: &[u8] = b"handshake-test-secret-0123456789";

    /// A client's hello and proof for the server nonce in `challenge`.
    fn client_proof(nc: &[u8; NONCE], challenge: &[u8]) -> Vec<u8> {
        mac(SECRET, b"remora-client", nc, &challenge[..NONCE])
            .unwrap()
            .finalize()
            .into_bytes()
            .to_vec()
    }

    fn hello(nc: &[u8; NONCE]) -> Vec<u8> {
        let mut h = MAGIC.to_vec();
        h.extend_from_slice(&PROTOCOL.to_le_bytes());
        h.extend_from_slice(nc);
        h
    }

    #[test]
    fn the_state_machine_speaks_the_blocking_clients_protocol() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || handshake_server(&mut b, SECRET, "client"));
        handshake_client(&mut a, SECRET, "server").unwrap();
        server.join().unwrap().unwrap();

        let (mut a, mut b) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || handshake_server(&mut b, SECRET, "client"));
        let e = handshake_client(&mut a, b"some-other-secret-0123456789", "server").unwrap_err();
        assert!(
            e.to_string().contains("does not hold the cluster secret"),
            "{e}"
        );
        drop(a);
        assert!(server.join().unwrap().is_err());
    }

    #[test]
    fn a_client_deadline_bounds_the_whole_exchange() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let start = Instant::now();
        let e = handshake_client_within(&mut a, SECRET, "mute", Duration::from_millis(200))
            .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(e.to_string().contains("no complete answer within"), "{e}");
        drop(b);
    }

    proptest! {
        /// Whatever the bytes, a step never panics; only a real hello gets an answer, and only
        /// the right proof is accepted.
        #[test]
        fn arbitrary_steps_never_panic(first in proptest::collection::vec(any::<u8>(), 0..80),
                                       second in proptest::collection::vec(any::<u8>(), 0..80)) {
            let mut hs = ServerHandshake::default();
            let mut out = Vec::new();
            match hs.step(&first, SECRET, &mut out, "fuzz") {
                Ok(Step::More) => {
                    prop_assert_eq!(&first[..4], MAGIC);
                    prop_assert_eq!(out.len(), NONCE + MAC);
                    out.clear();
                    match hs.step(&second, SECRET, &mut out, "fuzz") {
                        Ok(Step::Accepted) => prop_assert!(false, "a random proof was accepted"),
                        Ok(Step::Rejected(_)) => prop_assert_eq!(out, vec![REJECTED]),
                        Ok(Step::More) => prop_assert!(false, "a third step"),
                        Err(_) => prop_assert_ne!(second.len(), MAC),
                    }
                }
                Ok(other) => prop_assert!(false, "a hello got {:?}", other),
                Err(_) => prop_assert!(out.is_empty()),
            }
        }

        /// A valid exchange is accepted; flipping any bit of the hello's header or of the proof
        /// is refused.
        #[test]
        fn valid_exchanges_pass_and_flipped_ones_fail(nc in any::<[u8; NONCE]>(), bit in 0usize..(6 + MAC) * 8) {
            let mut hs = ServerHandshake::default();
            let mut challenge = Vec::new();
            prop_assert!(matches!(hs.step(&hello(&nc), SECRET, &mut challenge, "p"), Ok(Step::More)));
            let proof = client_proof(&nc, &challenge);
            let mut verdict = Vec::new();
            let mut ok = ServerHandshake { nonces: hs.nonces };
            prop_assert!(matches!(ok.step(&proof, SECRET, &mut verdict, "p"), Ok(Step::Accepted)));
            prop_assert_eq!(verdict, vec![ACCEPTED]);

            let (byte, mask) = (bit / 8, 1u8 << (bit % 8));
            if byte < 6 {
                let mut h = hello(&nc);
                h[byte] ^= mask;
                prop_assert!(ServerHandshake::default().step(&h, SECRET, &mut Vec::new(), "p").is_err());
            } else {
                let mut p = proof;
                p[byte - 6] ^= mask;
                let mut again = ServerHandshake { nonces: hs.nonces };
                prop_assert!(matches!(again.step(&p, SECRET, &mut Vec::new(), "p"), Ok(Step::Rejected(_))));
            }
        }
    }
}
