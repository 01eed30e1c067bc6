//! What the admin socket and the metrics endpoint share: a cap on the connections served at
//! once, a deadline for each whole request and each whole answer, and counters of the
//! connections refused.
//!
//! An endpoint says where its requests end and how it answers them ([`Endpoint`]); [`spawn`]
//! runs its accept loop and gives every admitted connection a thread of its own, so a slow or
//! idle client holds one slot at most, never the endpoint. A connection over the cap is told
//! so (without waiting on it) and closed at once. Deadlines run from accept for the whole
//! request, however the client trickles it, and from the answer for the whole answer, however
//! slowly the client reads it.

use log::{debug, warn};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often the accept loop looks at `stop` while idle (and so how soon it ends after).
const ACCEPT_POLL: Duration = Duration::from_millis(20);
/// Bytes read per `read` call while reading a request.
const CHUNK: usize = 1024;

/// The limits of one endpoint (each endpoint declares its defaults beside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; one more is refused at once, and counted.
    pub max_connections: usize,
    /// Time from accept for the client to send its whole request.
    pub request_deadline: Duration,
    /// Time for the whole answer to be taken by the client once it is ready.
    pub write_deadline: Duration,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The endpoint was already serving its most connections.
    OverCap,
    /// The request did not arrive, or the answer was not taken, by its deadline.
    TimedOut,
}

impl Refusal {
    pub const ALL: [Refusal; 2] = [Refusal::OverCap, Refusal::TimedOut];

    /// The `reason` label of `sluice_control_connections_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::OverCap => "over_cap",
            Refusal::TimedOut => "timed_out",
        }
    }
}

/// The connections one endpoint refused, by reason.
#[derive(Debug, Default)]
pub struct Refusals([AtomicU64; Refusal::ALL.len()]);

impl Refusals {
    pub fn count(&self, r: Refusal) {
        self.0[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, r: Refusal) -> u64 {
        self.0[r as usize].load(Ordering::Relaxed)
    }
}

/// A connected stream whose reads and writes can be given a timeout.
pub trait Conn: Read + Write + Send + 'static {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    fn set_nonblocking(&self, on: bool) -> io::Result<()>;
}

/// A listening socket, accepting without blocking once [`Listen::nonblocking`] was called.
pub trait Listen: Send + 'static {
    type Conn: Conn;
    fn nonblocking(&self) -> io::Result<()>;
    fn accept_conn(&self) -> io::Result<Self::Conn>;
}

macro_rules! socket_pair {
    ($listener:ty, $stream:ty) => {
        impl Conn for $stream {
            fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
                <$stream>::set_read_timeout(self, t)
            }
            fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
                <$stream>::set_write_timeout(self, t)
            }
            fn set_nonblocking(&self, on: bool) -> io::Result<()> {
                <$stream>::set_nonblocking(self, on)
            }
        }
        impl Listen for $listener {
            type Conn = $stream;
            fn nonblocking(&self) -> io::Result<()> {
                self.set_nonblocking(true)
            }
            fn accept_conn(&self) -> io::Result<$stream> {
                self.accept().map(|(s, _)| s)
            }
        }
    };
}

socket_pair!(TcpListener, TcpStream);
socket_pair!(UnixListener, UnixStream);

/// What a client sent, read by the request deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Up to and including the end of the request.
    Complete(Vec<u8>),
    /// Longer than the endpoint's longest request, end not seen.
    TooLarge,
    /// The client closed its side first, having sent this (perhaps nothing).
    Closed(Vec<u8>),
    /// The request deadline passed first.
    TimedOut,
}

/// One kind of endpoint: where its requests end and what it answers.
pub trait Endpoint: Send + Sync + 'static {
    type Conn: Conn;
    /// Where a request ends (`b"\n"`, `b"\r\n\r\n"`); not empty.
    const END: &'static [u8];
    /// The longest request read, its end included; longer is [`Input::TooLarge`].
    const MAX_REQUEST: usize;
    /// The answer to `input`; `None`: close without one.
    fn answer(&self, input: Input) -> Option<Vec<u8>>;
    /// What a connection over the cap is told (written without waiting) before it is closed.
    fn busy(&self) -> Vec<u8>;
    /// After the answer is written, before the connection is closed.
    fn finish(&self, _conn: &mut Self::Conn) {}
}

/// An endpoint with its limits and counters, shared by its accept loop and connections.
struct Shared<E> {
    name: String,
    endpoint: E,
    limits: Limits,
    refusals: Arc<Refusals>,
    /// Connections being served now (at most `limits.max_connections`).
    active: AtomicUsize,
}

/// One of the endpoint's connection slots, given back when dropped.
struct Slot<E>(Arc<Shared<E>>);

impl<E> Slot<E> {
    fn take(shared: &Arc<Shared<E>>) -> Option<Slot<E>> {
        let max = shared.limits.max_connections;
        shared
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Slot(Arc::clone(shared)))
    }
}

impl<E> Drop for Slot<E> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `endpoint` on `listener` until `stop` is set, on a thread named `name` (and one
/// thread per connection). The accept thread ends within [`ACCEPT_POLL`] of `stop` and then
/// drops `listener`; connections in hand finish on their own threads, within their deadlines.
pub fn spawn<L, E>(
    name: &str,
    listener: L,
    endpoint: E,
    limits: Limits,
    refusals: Arc<Refusals>,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>>
where
    L: Listen<Conn = E::Conn>,
    E: Endpoint,
{
    listener.nonblocking()?;
    let shared =
        Arc::new(Shared { name: name.to_string(), endpoint, limits, refusals, active: AtomicUsize::new(0) });
    thread::Builder::new().name(name.into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept_conn() {
                Ok(conn) => admit(&shared, conn),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    warn!("{}: accept: {e}", shared.name);
                    thread::sleep(ACCEPT_POLL * 10);
                }
            }
        }
    })
}

/// Serves `conn` on a thread of its own if a slot is free; refuses it at once if not.
fn admit<E: Endpoint>(shared: &Arc<Shared<E>>, conn: E::Conn) {
    let Some(slot) = Slot::take(shared) else {
        shared.refusals.count(Refusal::OverCap);
        debug!("{}: {} connections already; one refused", shared.name, shared.limits.max_connections);
        refuse(conn, &shared.endpoint.busy());
        return;
    };
    let spawned = thread::Builder::new().name(format!("{}-conn", shared.name)).spawn(move || {
        let slot = slot;
        slot.0.serve(conn);
    });
    // On failure the closure, its slot and the connection are dropped: the client sees it close.
    if let Err(e) = spawned {
        warn!("{}: cannot start a connection thread: {e}", shared.name);
    }
}

/// Tells a connection over the cap `busy` without waiting on it, then closes it.
fn refuse<C: Conn>(mut conn: C, busy: &[u8]) {
    if conn.set_nonblocking(true).is_err() {
        return;
    }
    // What already arrived is read first: closing TCP with unread input resets the
    // connection, and the client may lose the answer.
    let mut sink = [0u8; CHUNK];
    let _ = conn.read(&mut sink);
    let _ = conn.write(busy);
}

impl<E: Endpoint> Shared<E> {
    fn serve(&self, mut conn: E::Conn) {
        let deadline = Instant::now() + self.limits.request_deadline;
        let input = match conn.set_nonblocking(false).and_then(|()| read_request::<E>(&mut conn, deadline)) {
            Ok(input) => input,
            Err(e) => return debug!("{}: reading a request: {e}", self.name),
        };
        if input == Input::TimedOut {
            self.refusals.count(Refusal::TimedOut);
        }
        let Some(answer) = self.endpoint.answer(input) else { return };
        match write_by(&mut conn, &answer, Instant::now() + self.limits.write_deadline) {
            Ok(()) => self.endpoint.finish(&mut conn),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                self.refusals.count(Refusal::TimedOut);
                debug!("{}: {e}", self.name);
            }
            Err(e) => debug!("{}: writing an answer: {e}", self.name),
        }
    }
}

/// A socket timeout: `WouldBlock` (EAGAIN) on Unix, `TimedOut` elsewhere.
fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Where `needle` first starts in `haystack` (an empty needle: at 0).
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads a request of `E` from `conn` by `deadline`, however slowly it comes.
fn read_request<E: Endpoint>(conn: &mut E::Conn, deadline: Instant) -> io::Result<Input> {
    let mut buf = Vec::with_capacity(CHUNK);
    let mut chunk = [0u8; CHUNK];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Input::TimedOut);
        }
        conn.set_read_timeout(Some(left))?;
        let n = match conn.read(&mut chunk) {
            Ok(0) => return Ok(Input::Closed(buf)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => return Ok(Input::TimedOut),
            Err(e) => return Err(e),
        };
        // Only the new bytes, and the few before them, can complete the end.
        let from = buf.len().saturating_sub(E::END.len().saturating_sub(1));
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if let Some(at) = buf.get(from..).and_then(|new| find(new, E::END)) {
            buf.truncate(from + at + E::END.len());
            return Ok(if buf.len() > E::MAX_REQUEST { Input::TooLarge } else { Input::Complete(buf) });
        }
        if buf.len() > E::MAX_REQUEST {
            return Ok(Input::TooLarge);
        }
    }
}

/// Writes all of `bytes` to `conn` by `deadline` (a `TimedOut` error if not).
fn write_by<C: Conn>(conn: &mut C, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    let late = || io::Error::new(io::ErrorKind::TimedOut, "the client did not take the answer in time");
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(late());
        }
        conn.set_write_timeout(Some(left))?;
        match conn.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Err(late()),
            Err(e) => return Err(e),
        }
    }
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_the_end() {
        assert_eq!(find(b"GET / HTTP/1.1\r\n", b"\r\n\r\n"), None);
        assert_eq!(find(b"GET / HTTP/1.1\r\n\r\nbody", b"\r\n\r\n"), Some(14));
        assert_eq!(find(b"{}\n{}\n", b"\n"), Some(2));
        assert_eq!(find(b"ab", b""), Some(0));
    }

    #[test]
    fn refusals_count_by_reason() {
        let r = Refusals::default();
        r.count(Refusal::TimedOut);
        r.count(Refusal::TimedOut);
        r.count(Refusal::OverCap);
        assert_eq!((r.get(Refusal::OverCap), r.get(Refusal::TimedOut)), (1, 2));
        assert_eq!(Refusal::ALL.map(Refusal::label), ["over_cap", "timed_out"]);
    }
}
