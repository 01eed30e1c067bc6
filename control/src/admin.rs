//! The local admin API: a Unix socket on which `sluicectl` (or anything that writes a line of
//! JSON) asks sluiced for its state or tells it to change. One request per connection: a JSON
//! [`Request`] on one line, answered by a JSON [`Response`] on one line.
//!
//! The socket thread only carries requests: it hands each to the control thread over a
//! channel and waits for the answer, so everything that reads or changes the running state
//! happens on the control thread, between its other duties.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Where sluiced listens unless told otherwise (`sluiced --admin-socket`, `sluicectl --socket`).
pub const DEFAULT_SOCKET: &str = "/run/sluiced.sock";
/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Generation, config file, workers, uptime, last apply.
    Status,
    /// Services with their backends, weights, drain state and active sessions.
    Services,
    /// Live sessions, optionally of one service, one backend (its label as `services`
    /// prints it) or one client address; at most `limit`.
    Sessions {
        service: Option<String>,
        backend: Option<String>,
        client: Option<String>,
        limit: Option<usize>,
    },
    /// Every counter, `name{labels} value` per line.
    Counters,
    /// Give a backend weight 0 (no new flows; its sessions stay) until restored.
    Drain { service: String, backend: String },
    /// Undo a drain.
    Restore { service: String, backend: String },
    /// Validate and apply a pipeline file (`None`: the one sluiced runs, re-read).
    Apply { file: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok { text: String },
    Refused { text: String },
}

/// A request waiting for the control thread, with the way back to its caller.
pub type Pending = (Request, Sender<Response>);

/// Listens on `path` (replacing a stale socket file) until `stop` is set; every request goes
/// to `to_control`.
pub fn serve(
    path: &Path,
    to_control: Sender<Pending>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    if path.exists() {
        // A live sluiced answers a connection; then the path is taken.
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by another sluiced", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    listener.set_nonblocking(true)?;
    let path: PathBuf = path.to_path_buf();
    thread::Builder::new().name("sluice-admin".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => handle(stream, &to_control),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(20))
                }
                Err(e) => {
                    log::warn!("admin socket: {e}");
                    thread::sleep(Duration::from_millis(200));
                }
            }
        }
        let _ = std::fs::remove_file(&path);
    })
}

fn handle(stream: UnixStream, to_control: &Sender<Pending>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let read = BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line);
    let response = match read {
        Err(e) => Response::Refused { text: format!("reading the request: {e}") },
        Ok(_) => match serde_json::from_str::<Request>(line.trim()) {
            Err(e) => Response::Refused { text: format!("not a request: {e}") },
            Ok(req) => ask(to_control, req),
        },
    };
    let mut out = serde_json::to_string(&response).unwrap_or_else(|_| "{}".into());
    out.push('\n');
    let _ = (&stream).write_all(out.as_bytes());
}

fn ask(to_control: &Sender<Pending>, req: Request) -> Response {
    let (tx, rx) = mpsc::channel();
    if to_control.send((req, tx)).is_err() {
        return Response::Refused { text: "sluiced is stopping".into() };
    }
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or(Response::Refused { text: "sluiced did not answer in 30 s".into() })
}

/// The control thread's side: requests waiting now, without blocking.
pub fn pending(rx: &Receiver<Pending>) -> Vec<Pending> {
    rx.try_iter().collect()
}

/// Sends one request to the sluiced listening on `path` and returns its answer. The error
/// says plainly when no sluiced is there.
pub fn call(path: &Path, req: &Request) -> Result<Response, String> {
    let mut stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            format!("sluiced is not running (nothing listens on {}: {e})", path.display())
        }
        _ => format!("cannot reach sluiced at {}: {e}", path.display()),
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(40))).map_err(|e| e.to_string())?;
    let mut line = serde_json::to_string(req).map_err(|e| e.to_string())?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(|e| format!("sending to sluiced: {e}"))?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(|e| format!("reading sluiced's answer: {e}"))?;
    serde_json::from_str(answer.trim())
        .map_err(|e| format!("sluiced answered something else ({e}): {answer:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_one_json_line() {
        let r =
            Request::Sessions { service: Some("web".into()), backend: None, client: None, limit: Some(5) };
        let s = serde_json::to_string(&r).unwrap();
        assert!(!s.contains('\n'));
        assert_eq!(s, r#"{"cmd":"sessions","service":"web","backend":null,"client":null,"limit":5}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"reboot"}"#).is_err());
    }

    #[test]
    fn a_request_reaches_the_control_side_and_its_answer_comes_back() {
        let dir = std::env::temp_dir().join(format!("sluice-admin-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.sock");
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Pending>();
        let h = serve(&path, tx, Arc::clone(&stop)).unwrap();
        let control = thread::spawn(move || {
            let (req, back) = rx.recv().unwrap();
            back.send(Response::Ok { text: format!("{req:?}") }).unwrap();
        });
        let got = call(&path, &Request::Status).unwrap();
        assert_eq!(got, Response::Ok { text: "Status".into() });
        control.join().unwrap();
        // A second server on the same live path is refused.
        let (tx2, _rx2) = mpsc::channel::<Pending>();
        assert!(serve(&path, tx2, Arc::clone(&stop)).is_err());
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
        assert!(!path.exists(), "the socket file is removed on stop");
        let e = call(&path, &Request::Status).unwrap_err();
        assert!(e.contains("sluiced is not running"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
