//! The metrics endpoint's HTTP server: `GET /metrics` (and `HEAD`) on a TCP address, answered
//! with the text exposition format by hyper (HTTP/1.1, one request per connection) on a
//! single-threaded tokio runtime of its own thread.
//!
//! The limits are the ones the admin socket has too (`serving::Limits`): at most
//! `max_connections` at once (one more is answered 503 at once, without reading it, and
//! counted); the request head within `request_deadline` of connecting (hyper's header read
//! timeout; then 408, counted) and at most [`MAX_REQUEST_HEAD`] bytes (hyper's 431); the whole
//! exchange within `request_deadline + write_deadline` (then cut, counted). A slow or idle
//! client holds one connection slot and nothing else: every connection is a task, and the
//! runtime serves the others meanwhile.
//!
//! hyper gives no answer to a head cut by its timeout or by the client's close; those two
//! answers (408, 400) and the 503 are fixed texts written here. After answering, the server
//! closes its side and reads what the client still sends for a moment, so that a client
//! still sending (a 431's) gets the answer rather than a reset.

use crate::serving::{Limits, Refusal, Refusals};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use log::{debug, warn};
use prometheus::{Registry, TextEncoder, TEXT_FORMAT};
use std::cell::Cell;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::net::TcpStream;

/// Longest request head (request line and headers) read; longer gets 431. hyper's read
/// buffer limit, whose floor this is.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// The endpoint's limits: 32 connections at once (a few Prometheus servers and people with
/// curl; over it, 503); 5 s to send the request head from connecting (a scraper sends it at
/// once; over it, 408) and 5 s more to take the answer (the text format is a few hundred KiB
/// at most). A client that trickles or idles holds one slot, for 10 s at most.
pub const LIMITS: Limits = Limits {
    max_connections: 32,
    request_deadline: Duration::from_secs(5),
    write_deadline: Duration::from_secs(5),
};
/// How often the accept loop looks at `stop` (and so how soon it ends after).
const STOP_POLL: Duration = Duration::from_millis(20);
/// How long, and how much, to read after answering before closing.
const LINGER: Duration = Duration::from_millis(200);
const MAX_LINGER_BYTES: usize = 64 * 1024;

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
Retry-After: 1\r\nContent-Length: 32\r\nConnection: close\r\n\r\ntoo many connections; try again\n";
const TIMED_OUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 30\r\nConnection: close\r\n\r\nrequest head not sent in time\n";
const INCOMPLETE: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 19\r\nConnection: close\r\n\r\nincomplete request\n";

/// Serves `registry` at `http://LISTEN/metrics` until `stop` is set, within `limits`
/// (refused connections counted in `refusals`). Returns the bound address (`listen` may have
/// port 0) and the server's thread, which ends within 20 ms of `stop` (connections still open
/// then are closed).
pub fn serve(
    listen: SocketAddr,
    registry: Registry,
    limits: Limits,
    refusals: Arc<Refusals>,
    stop: Arc<AtomicBool>,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let server = Server { registry, limits, refusals, open: AtomicUsize::new(0) };
    let handle = std::thread::Builder::new().name("sluice-metrics".into()).spawn(move || {
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, accept_loop(listener, Arc::new(server), stop));
    })?;
    Ok((bound, handle))
}

struct Server {
    registry: Registry,
    limits: Limits,
    refusals: Arc<Refusals>,
    /// Connections being served.
    open: AtomicUsize,
}

async fn accept_loop(listener: TcpListener, server: Arc<Server>, stop: Arc<AtomicBool>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return warn!("metrics: {e}"),
    };
    while !stop.load(Ordering::Relaxed) {
        let accepted = tokio::time::timeout(STOP_POLL, listener.accept()).await;
        match accepted {
            Err(_) => {}
            Ok(Ok((stream, _))) => {
                tokio::task::spawn_local(admit(stream, Arc::clone(&server)));
            }
            Ok(Err(e)) => {
                debug!("metrics: accept: {e}");
                tokio::time::sleep(STOP_POLL).await;
            }
        }
    }
}

/// Serves one connection if there is room for it, else answers 503.
async fn admit(stream: TcpStream, server: Arc<Server>) {
    let stream = Arc::new(stream);
    if server.open.fetch_add(1, Ordering::AcqRel) >= server.limits.max_connections {
        server.open.fetch_sub(1, Ordering::AcqRel);
        server.refusals.count(Refusal::OverCap);
        answer(&stream, BUSY).await;
    } else {
        let cut = server.limits.request_deadline + server.limits.write_deadline;
        if tokio::time::timeout(cut, exchange(&stream, &server)).await.is_err() {
            server.refusals.count(Refusal::TimedOut);
        }
        server.open.fetch_sub(1, Ordering::AcqRel);
    }
    close(&stream).await;
}

/// One request and its answer, through hyper.
async fn exchange(stream: &Arc<TcpStream>, server: &Server) {
    let read = Rc::new(Cell::new(0));
    let io = Shared { stream: Arc::clone(stream), read: Rc::clone(&read) };
    let service = hyper::service::service_fn(|req: Request<Incoming>| {
        let response = route(req.method(), req.uri().path(), &server.registry);
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(server.limits.request_deadline)
        .max_buf_size(MAX_REQUEST_HEAD)
        .keep_alive(false)
        .title_case_headers(true)
        .serve_connection(io, service);
    if let Err(e) = conn.await {
        if e.is_timeout() {
            server.refusals.count(Refusal::TimedOut);
            answer(stream, TIMED_OUT).await;
        } else if e.is_incomplete_message() && read.get() > 0 {
            answer(stream, INCOMPLETE).await;
        } else {
            debug!("metrics: {e}");
        }
    }
}

/// The answer to one request.
fn route(method: &Method, path: &str, registry: &Registry) -> Response<Full<Bytes>> {
    if path != "/metrics" {
        return text(StatusCode::NOT_FOUND, "not found; metrics are at /metrics");
    }
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
        r.headers_mut().insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut body = String::new();
    match TextEncoder::new().encode_utf8(&registry.gather(), &mut body) {
        Ok(()) => with_type(StatusCode::OK, TEXT_FORMAT, body),
        Err(e) => {
            warn!("metrics: encoding: {e}");
            text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics")
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    with_type(status, "text/plain; charset=utf-8", format!("{body}\n"))
}

fn with_type(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    r
}

/// Writes a fixed answer (hyper's own are written by hyper), as far as the client takes it.
async fn answer(stream: &TcpStream, bytes: &[u8]) {
    let mut sent = 0;
    while sent < bytes.len() {
        if stream.writable().await.is_err() {
            return;
        }
        match stream.try_write(&bytes[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Closes the server's side, then reads (and drops) what the client still sends, until it
/// closes or for a short while: closing a socket with unread input resets the connection,
/// and the client may then lose the answer.
async fn close(stream: &TcpStream) {
    let _ = nix::sys::socket::shutdown(stream.as_raw_fd(), nix::sys::socket::Shutdown::Write);
    let drain = async {
        let (mut sink, mut left) = ([0u8; 4096], MAX_LINGER_BYTES);
        while left > 0 && stream.readable().await.is_ok() {
            match stream.try_read(&mut sink) {
                Ok(0) => return,
                Ok(n) => left = left.saturating_sub(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// The connection as hyper reads and writes it, shared with the code that answers what hyper
/// does not and closes it; counts the bytes read.
struct Shared {
    stream: Arc<TcpStream>,
    read: Rc<Cell<usize>>,
}

impl hyper::rt::Read for Shared {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let mut chunk = [0u8; 4096];
        let room = buf.remaining().min(chunk.len());
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            match self.stream.try_read(&mut chunk[..room]) {
                Ok(n) => {
                    buf.put_slice(&chunk[..n]);
                    self.read.set(self.read.get() + n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl hyper::rt::Write for Shared {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The connection is closed by [`close`], after hyper is done with it.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = Registry::new();
        let get = route(&Method::GET, "/metrics", &r);
        assert_eq!(get.status(), 200);
        assert_eq!(get.headers()[hyper::header::CONTENT_TYPE], TEXT_FORMAT);
        assert_eq!(route(&Method::HEAD, "/metrics", &r).status(), 200);
        let post = route(&Method::POST, "/metrics", &r);
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[hyper::header::ALLOW], "GET, HEAD");
        assert_eq!(route(&Method::GET, "/", &r).status(), 404);
        assert_eq!(route(&Method::GET, "/metricsx", &r).status(), 404);
    }

    #[test]
    fn the_fixed_answers_say_their_length() {
        for a in [BUSY, TIMED_OUT, INCOMPLETE] {
            let text = std::str::from_utf8(a).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())), "{text}");
        }
    }
}
