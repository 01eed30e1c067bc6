//! The local admin API: a Unix socket on which `sluicectl` (or anything that writes a line of
//! JSON) asks sluiced for its state or tells it to change. One request per connection: a JSON
//! [`Request`] on one line, answered by a JSON [`Response`] on one line.
//!
//! The socket thread only carries requests: it hands each to the control thread over a
//! channel and waits for the answer, so everything that reads or changes the running state
//! happens on the control thread, between its other duties.

use crate::serving::{self, Endpoint, Input, Limits, Refusals};
use serde::{Deserialize, Serialize};
use std::fs::{self, DirBuilder, Permissions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Where sluiced listens unless told otherwise (`sluiced --admin-socket`, `sluicectl --socket`).
pub const DEFAULT_SOCKET: &str = "/run/sluiced.sock";
/// Longest request line accepted, newline included: 64 KiB (a request is a short JSON object).
const MAX_REQUEST: usize = 64 * 1024;
/// The admin socket's limits: 16 connections at once (sluicectl uses one per command, scripts
/// a few: more means something is stuck or hostile); 5 s to send the request line from
/// connecting and 5 s to take the answer (a person or script writes at once; a client that
/// trickles or idles must not hold its slot longer). The control thread's own time to answer
/// ([`ANSWER_WAIT`]) is not the client's and is not in either.
pub const LIMITS: Limits = Limits {
    max_connections: 16,
    request_deadline: Duration::from_secs(5),
    write_deadline: Duration::from_secs(5),
};
/// How long a connection waits for the control thread's answer: 30 s (an apply of a large
/// config may take seconds; longer means the control thread is stuck).
const ANSWER_WAIT: Duration = Duration::from_secs(30);
/// The socket's mode: its owner only (sluiced's user; root can always).
const MODE_OWNER: u32 = 0o600;
/// The socket's mode with `--admin-group`: its owner and that group.
const MODE_GROUP: u32 = 0o660;
/// The private directory the socket is bound in before it is moved into place: its owner only.
const MODE_PRIVATE_DIR: u32 = 0o700;

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
    /// Withdraw every VIP, wait until traffic has moved to the other appliances (bounded by
    /// `routing.drain`), then stop: the graceful way out of a cluster.
    DrainAppliance,
    /// Packets, bytes and connections made so far per service and backend, and drops by reason.
    Stats,
    /// The session region the running sluiced uses and the upgrade procedure.
    Upgrade,
}

/// An answer: `text` as `sluicectl` prints it, and for views (status, services, sessions,
/// counters, stats, upgrade) `data`, the same view as a JSON object (`sluicectl -o json`),
/// from which the text was rendered (the `ctl` module). Without `data` the field is left out,
/// so clients that know only `text` read every answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<serde_json::Value>,
    },
    Refused {
        text: String,
    },
}

impl Response {
    /// A plain answer: text only.
    pub fn ok(text: impl Into<String>) -> Response {
        Response::Ok { text: text.into(), data: None }
    }
}

/// A request waiting for the control thread, with the way back to its caller.
pub type Pending = (Request, Sender<Response>);

/// How the admin socket is made and guarded.
#[derive(Debug, Clone)]
pub struct SocketOptions {
    /// A group whose members may use the socket too (mode 0660, `sluiced --admin-group`);
    /// `None`: sluiced's user only (0600).
    pub group: Option<u32>,
    pub limits: Limits,
    /// Where refused connections are counted (`sluice_control_connections_refused_total`).
    pub refusals: Arc<Refusals>,
}

impl SocketOptions {
    /// The default [`LIMITS`], fresh counters.
    pub fn new(group: Option<u32>) -> SocketOptions {
        SocketOptions { group, limits: LIMITS, refusals: Arc::default() }
    }
}

/// The id of group `name`, from the system's group database (or `name` as a number).
pub fn group_id(name: &str) -> Result<u32, String> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => name.parse().map_err(|_| format!("there is no group named {name:?}")),
        Err(e) => Err(format!("looking up group {name:?}: {e}")),
    }
}

/// Listens on `path` (replacing a stale socket file) until `stop` is set; every request goes
/// to `to_control`. The socket has mode 0600 (0660 with a group) whatever the umask, and never
/// a wider one: see [`bind_private`]. Connections are served each on a thread of their own,
/// within `options.limits`. The socket file is removed when the listening thread ends.
pub fn serve(
    path: &Path,
    options: &SocketOptions,
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
        fs::remove_file(path)?;
    }
    let mode = if options.group.is_some() { MODE_GROUP } else { MODE_OWNER };
    let listener =
        SocketFile { listener: bind_private(path, mode, options.group)?, path: path.to_path_buf() };
    let endpoint = Admin { to_control, request_deadline: options.limits.request_deadline };
    serving::spawn("sluice-admin", listener, endpoint, options.limits, Arc::clone(&options.refusals), stop)
}

/// Private directories made so far by this process, to name the next one.
static PRIVATE_DIRS: AtomicU64 = AtomicU64::new(0);

/// Binds a socket at `path` with `mode` and `group`, never reachable with another mode: it is
/// bound in a new directory beside `path` that only its owner can enter, given its mode and
/// group there, then linked into place (which fails if something took `path` meanwhile).
/// (Binding where it belongs and changing the mode after leaves a moment with the umask's.)
fn bind_private(path: &Path, mode: u32, group: Option<u32>) -> std::io::Result<UnixListener> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let n = PRIVATE_DIRS.fetch_add(1, Ordering::Relaxed);
    let private = parent.join(format!(".sluiced-{}-{n}", std::process::id()));
    // Fails if it exists: never a directory someone else made. The umask can only narrow it.
    DirBuilder::new().mode(MODE_PRIVATE_DIR).create(&private)?;
    let inner = private.join("s");
    let bound = fs::set_permissions(&private, Permissions::from_mode(MODE_PRIVATE_DIR))
        .and_then(|()| bind_there(&inner, path, mode, group));
    // The socket stays reachable at `path` alone.
    let _ = fs::remove_file(&inner);
    let _ = fs::remove_dir(&private);
    bound
}

fn bind_there(inner: &Path, path: &Path, mode: u32, group: Option<u32>) -> std::io::Result<UnixListener> {
    let listener = UnixListener::bind(inner)?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(inner, None, Some(gid))?;
    }
    fs::set_permissions(inner, Permissions::from_mode(mode))?;
    fs::hard_link(inner, path)?;
    Ok(listener)
}

/// The listening socket and its file, removed when the listener is dropped.
struct SocketFile {
    listener: UnixListener,
    path: PathBuf,
}

impl serving::Listen for SocketFile {
    type Conn = UnixStream;
    fn nonblocking(&self) -> std::io::Result<()> {
        self.listener.set_nonblocking(true)
    }
    fn accept_conn(&self) -> std::io::Result<UnixStream> {
        self.listener.accept().map(|(s, _)| s)
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The admin endpoint: one JSON request line in, one JSON answer line out.
struct Admin {
    to_control: Sender<Pending>,
    /// For the message to a client that was too slow.
    request_deadline: Duration,
}

impl Endpoint for Admin {
    type Conn = UnixStream;
    const END: &'static [u8] = b"\n";
    const MAX_REQUEST: usize = MAX_REQUEST;

    fn answer(&self, input: Input) -> Option<Vec<u8>> {
        let response = match input {
            Input::Closed(line) if line.is_empty() => return None,
            // A request without its newline counts once the client closes its side.
            Input::Complete(line) | Input::Closed(line) => {
                match serde_json::from_slice::<Request>(line.trim_ascii()) {
                    Err(e) => Response::Refused { text: format!("not a request: {e}") },
                    Ok(req) => ask(&self.to_control, req),
                }
            }
            Input::TooLarge => Response::Refused { text: format!("request longer than {MAX_REQUEST} bytes") },
            Input::TimedOut => Response::Refused {
                text: format!("the request line did not arrive within {:?}", self.request_deadline),
            },
        };
        Some(answer_line(&response))
    }

    fn busy(&self) -> Vec<u8> {
        answer_line(&Response::Refused {
            text: "sluiced is serving too many admin connections; try again".into(),
        })
    }
}

fn answer_line(response: &Response) -> Vec<u8> {
    let mut out = serde_json::to_vec(response).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    out
}

fn ask(to_control: &Sender<Pending>, req: Request) -> Response {
    let (tx, rx) = mpsc::channel();
    if to_control.send((req, tx)).is_err() {
        return Response::Refused { text: "sluiced is stopping".into() };
    }
    rx.recv_timeout(ANSWER_WAIT).unwrap_or(Response::Refused {
        text: format!("sluiced did not answer in {} s", ANSWER_WAIT.as_secs()),
    })
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
    use std::thread;

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

    /// A fresh directory for one test's socket, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("sluice-admin-{test}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A control thread answering every request with its debug form until the senders go.
    fn echo_control() -> (Sender<Pending>, thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<Pending>();
        let h = thread::spawn(move || {
            for (req, back) in rx {
                let _ = back.send(Response::ok(format!("{req:?}")));
            }
        });
        (tx, h)
    }

    /// The server on `path` with `options`, stopped and joined by the returned closure.
    fn start(path: &Path, options: &SocketOptions) -> impl FnOnce() {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, control) = echo_control();
        let h = serve(path, options, tx, Arc::clone(&stop)).unwrap();
        move || {
            stop.store(true, Ordering::Relaxed);
            h.join().unwrap();
            control.join().unwrap();
        }
    }

    fn options(max_connections: usize, request_deadline: Duration) -> SocketOptions {
        SocketOptions {
            limits: Limits { max_connections, request_deadline, write_deadline: Duration::from_secs(5) },
            ..SocketOptions::new(None)
        }
    }

    /// A client that sends `{"cmd":` then one byte every 50 ms, never a newline, until the
    /// server closes or the value is dropped.
    struct Trickler {
        stream: UnixStream,
        stop: Arc<AtomicBool>,
        thread: Option<thread::JoinHandle<()>>,
    }

    impl Trickler {
        fn start(path: &Path) -> Trickler {
            let stream = UnixStream::connect(path).unwrap();
            let mut writer = stream.try_clone().unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let stopped = Arc::clone(&stop);
            let thread = thread::spawn(move || {
                let _ = writer.write_all(b"{\"cmd\":");
                while !stopped.load(Ordering::Relaxed) && writer.write_all(b" ").is_ok() {
                    thread::sleep(Duration::from_millis(50));
                }
            });
            Trickler { stream, stop, thread: Some(thread) }
        }

        /// The server's answer line; an error if none came in 20 s.
        fn answer(&self) -> std::io::Result<String> {
            self.stream.set_read_timeout(Some(Duration::from_secs(20)))?;
            let mut answer = String::new();
            BufReader::new(&self.stream).read_line(&mut answer)?;
            Ok(answer)
        }
    }

    impl Drop for Trickler {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    #[test]
    fn a_request_reaches_the_control_side_and_its_answer_comes_back() {
        let dir = TempDir::new("roundtrip");
        let path = dir.0.join("a.sock");
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Pending>();
        let h = serve(&path, &SocketOptions::new(None), tx, Arc::clone(&stop)).unwrap();
        let control = thread::spawn(move || {
            let (req, back) = rx.recv().unwrap();
            back.send(Response::ok(format!("{req:?}"))).unwrap();
        });
        let got = call(&path, &Request::Status).unwrap();
        assert_eq!(got, Response::ok("Status"));
        control.join().unwrap();
        // A second server on the same live path is refused.
        let (tx2, _rx2) = mpsc::channel::<Pending>();
        assert!(serve(&path, &SocketOptions::new(None), tx2, Arc::clone(&stop)).is_err());
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
        assert!(!path.exists(), "the socket file is removed on stop");
        let e = call(&path, &Request::Status).unwrap_err();
        assert!(e.contains("sluiced is not running"), "{e}");
        // Nothing left beside it (the private directory it was bound in).
        assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 0);
    }

    #[test]
    fn a_trickling_client_is_cut_at_the_request_deadline() {
        let dir = TempDir::new("trickle");
        let path = dir.0.join("a.sock");
        let opts = options(4, Duration::from_millis(300));
        let stop = start(&path, &opts);
        let answer = Trickler::start(&path).answer().expect("cut off with an answer");
        let got: Response = serde_json::from_str(answer.trim()).unwrap();
        assert!(
            matches!(&got, Response::Refused { text } if text.contains("did not arrive within")),
            "{got:?}"
        );
        assert_eq!(opts.refusals.get(serving::Refusal::TimedOut), 1);
        assert_eq!(call(&path, &Request::Status).unwrap(), Response::ok("Status"));
        stop();
    }

    #[test]
    fn a_client_is_answered_while_slow_ones_hold_connections() {
        let dir = TempDir::new("slow");
        let path = dir.0.join("a.sock");
        let opts = options(4, Duration::from_secs(60));
        let stop = start(&path, &opts);
        // Three clients that trickle a request that never ends.
        let slow: Vec<Trickler> = (0..3).map(|_| Trickler::start(&path)).collect();
        let mut s = UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
        let mut answer = String::new();
        BufReader::new(&s).read_line(&mut answer).expect("answered while the slow clients wait");
        assert_eq!(answer, "{\"result\":\"ok\",\"text\":\"Status\"}\n");
        drop(slow);
        stop();
    }

    #[test]
    fn connections_over_the_cap_are_refused_and_counted() {
        let dir = TempDir::new("cap");
        let path = dir.0.join("a.sock");
        let opts = options(2, Duration::from_secs(60));
        let stop = start(&path, &opts);
        let held: Vec<UnixStream> = (0..2).map(|_| UnixStream::connect(&path).unwrap()).collect();
        // Accepted in order: the two above hold both slots.
        let got = call(&path, &Request::Status).unwrap();
        assert!(matches!(&got, Response::Refused { text } if text.contains("too many")), "{got:?}");
        assert_eq!(opts.refusals.get(serving::Refusal::OverCap), 1);
        drop(held);
        // Their slots come back once their threads see them gone.
        let mut answered = false;
        for _ in 0..500 {
            if call(&path, &Request::Status) == Ok(Response::ok("Status")) {
                answered = true;
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        assert!(answered, "slots never given back");
        stop();
    }

    /// Sets the umask for the life of the value (it is the whole process's).
    struct Umask(nix::sys::stat::Mode);

    impl Umask {
        fn set(bits: u32) -> Umask {
            let mode = nix::sys::stat::Mode::from_bits_truncate(bits);
            Umask(nix::sys::stat::umask(mode))
        }
    }

    impl Drop for Umask {
        fn drop(&mut self) {
            nix::sys::stat::umask(self.0);
        }
    }

    fn mode_and_group(path: &Path) -> (u32, u32) {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(path).unwrap();
        (m.mode() & 0o777, m.gid())
    }

    #[test]
    fn the_socket_is_0600_under_umask_000_and_0660_with_a_group() {
        let dir = TempDir::new("mode");
        let path = dir.0.join("a.sock");
        let stop = {
            let _open = Umask::set(0);
            start(&path, &SocketOptions::new(None))
        };
        assert_eq!(mode_and_group(&path).0, MODE_OWNER);
        stop();

        let gid = nix::unistd::getgid().as_raw();
        let stop = {
            let _open = Umask::set(0);
            start(&path, &SocketOptions::new(Some(gid)))
        };
        assert_eq!(mode_and_group(&path), (MODE_GROUP, gid));
        assert_eq!(call(&path, &Request::Status).unwrap(), Response::ok("Status"));
        stop();
    }

    #[test]
    fn groups_are_looked_up_by_name_or_number() {
        assert_eq!(group_id("root"), Ok(0));
        assert_eq!(group_id("4242"), Ok(4242));
        let e = group_id("no-such-group-here").unwrap_err();
        assert!(e.contains("no group named"), "{e}");
    }
}
