//! EAL (Environment Abstraction Layer) start-up, threads and time.

use std::ffi::{c_char, CString};
use std::sync::atomic::{AtomicU8, Ordering};

use crate::error::Error;
use crate::raw;

const EAL_NOT_STARTED: u8 = 0;
const EAL_STARTING: u8 = 1;
const EAL_READY: u8 = 2;
const EAL_FAILED: u8 = 3;

/// Where `rte_eal_init` stands in this process.
static EAL_STATE: AtomicU8 = AtomicU8::new(EAL_NOT_STARTED);

/// `SOCKET_ID_ANY`: "no NUMA preference". Ports of virtual devices and
/// machines without NUMA information report it.
pub const SOCKET_ID_ANY: i32 = raw::SOCKET_ID_ANY;

/// `LCORE_ID_ANY`: the lcore id of a thread that is not an EAL thread and
/// was not registered.
pub const LCORE_ID_ANY: u32 = raw::LCORE_ID_ANY;

/// Proof that the EAL was initialised in this process.
///
/// There is at most one successful [`Eal::init`] per process. The EAL is
/// never cleaned up: `Eal` has no `Drop`, and `rte_eal_cleanup` is not
/// called, so ports, pools and mbufs can never outlive the memory they
/// live in. The OS reclaims everything at process exit. (DPDK leaves its
/// runtime directory, `/var/run/dpdk/<file-prefix>`, behind unless the EAL
/// is started with `--no-shconf`.)
#[derive(Debug, Clone, Copy)]
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Start the EAL with `args`, exactly as a C program would pass `argv`.
    ///
    /// **The first element is the program name** (`argv[0]`), it is used
    /// as-is and is not parsed as an option; e.g.
    /// `["myapp", "-l", "0", "--no-huge", "-m", "256", "--no-pci"]`.
    ///
    /// Only one call per process can succeed. A second call (or any call after
    /// a failed one, because DPDK itself cannot retry) returns an `Error`.
    /// DPDK pins the calling thread to the main lcore's CPU and may start one
    /// thread per extra lcore in the core list (`-l`).
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal, Error> {
        if args.is_empty() {
            return Err(Error::refused("rte_eal_init", "the argument list must start with the program name"));
        }
        let mut owned = Vec::with_capacity(args.len());
        for a in args {
            match CString::new(a.as_ref()) {
                Ok(c) => owned.push(c),
                Err(_) => {
                    return Err(Error::refused(
                        "rte_eal_init",
                        format!("argument {:?} contains a NUL byte", a.as_ref()),
                    ))
                }
            }
        }
        let argc =
            i32::try_from(owned.len()).map_err(|_| Error::refused("rte_eal_init", "too many arguments"))?;

        if EAL_STATE
            .compare_exchange(EAL_NOT_STARTED, EAL_STARTING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Error::refused("rte_eal_init", "the EAL can be initialised only once per process"));
        }

        // DPDK may keep pointers into argv (and getopt permutes the array),
        // so both the strings and the array are leaked on purpose: this
        // happens once per process.
        let mut argv: Vec<*mut c_char> = owned.into_iter().map(CString::into_raw).collect();
        argv.push(std::ptr::null_mut());
        let argv = Box::leak(argv.into_boxed_slice());

        // SAFETY: argv holds `argc` valid NUL-terminated strings followed by a
        // NULL, all leaked so they stay valid for the life of the process.
        // The EAL_STATE compare-exchange above guarantees this is the only
        // call to rte_eal_init made through this crate.
        let rc = unsafe { raw::rte_eal_init(argc, argv.as_mut_ptr()) };
        if rc < 0 {
            let err = Error::from_rte_errno("rte_eal_init");
            let err = if err.errno() == Some(0) { silent_failure(args) } else { err };
            EAL_STATE.store(EAL_FAILED, Ordering::Release);
            return Err(err);
        }
        EAL_STATE.store(EAL_READY, Ordering::Release);
        Ok(Eal { _private: () })
    }

    /// The `Eal` token if [`Eal::init`] succeeded in this process.
    pub fn get() -> Option<Eal> {
        is_ready().then_some(Eal { _private: () })
    }

    /// Register the calling (non-EAL) thread with the EAL
    /// (`rte_thread_register`) and return its lcore id.
    ///
    /// Threads started with `std::thread` have no lcore id, so they get no
    /// per-lcore mempool cache; registered ones do. Call it at the start of a
    /// worker thread, and [`Eal::unregister_thread`] before it exits. If the
    /// thread already has an lcore id (the main thread, or a second call), that
    /// id is returned and nothing is changed.
    ///
    /// DPDK refuses this while multi-process is in use (a secondary process
    /// attached) and when all `RTE_MAX_LCORE` ids are taken.
    pub fn register_thread() -> Result<u32, Error> {
        require_eal("rte_thread_register")?;
        if let Some(id) = Eal::lcore_id() {
            return Ok(id);
        }
        // SAFETY: the EAL is initialised (checked above); rte_thread_register
        // only touches EAL state and this thread's thread-locals.
        let rc = unsafe { raw::rte_thread_register() };
        if rc < 0 {
            return Err(Error::from_rte_errno("rte_thread_register"));
        }
        Eal::lcore_id().ok_or_else(|| Error::refused("rte_thread_register", "no lcore id after registration"))
    }

    /// Give back the lcore id taken by [`Eal::register_thread`]. Does nothing
    /// for EAL threads or unregistered threads.
    pub fn unregister_thread() {
        if !is_ready() {
            return;
        }
        // SAFETY: the EAL is initialised; rte_thread_unregister only releases
        // an lcore id that this thread got from rte_thread_register, and is a
        // no-op for EAL lcores and threads without an id.
        unsafe { raw::rte_thread_unregister() };
    }

    /// The calling thread's lcore id, or `None` for an unregistered thread.
    pub fn lcore_id() -> Option<u32> {
        // SAFETY: reads a thread-local; valid before and after EAL init.
        let id = unsafe { raw::shim_rte_lcore_id() };
        (id != LCORE_ID_ANY).then_some(id)
    }

    /// Timestamp-counter frequency in Hz (`rte_get_tsc_hz`); 0 before
    /// [`Eal::init`].
    pub fn tsc_hz() -> u64 {
        if !is_ready() {
            return 0;
        }
        // SAFETY: reads a value computed during EAL init.
        unsafe { raw::rte_get_tsc_hz() }
    }
}

/// Read the CPU timestamp counter (`rte_rdtsc`). Works without the EAL.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: rte_rdtsc executes the rdtsc instruction and touches no memory.
    unsafe { raw::shim_rte_rdtsc() }
}

/// True once `rte_eal_init` has succeeded.
pub(crate) fn is_ready() -> bool {
    EAL_STATE.load(Ordering::Acquire) == EAL_READY
}

/// Error unless the EAL is up. Every safe entry point that would touch EAL
/// state (memory, devices) calls this first, so using the crate before
/// `Eal::init` is an `Error`, never undefined behaviour.
pub(crate) fn require_eal(op: &str) -> Result<(), Error> {
    if is_ready() {
        Ok(())
    } else {
        Err(Error::refused(op, "the EAL is not initialised (call Eal::init first)"))
    }
}

/// What to say when `rte_eal_init` failed without setting `rte_errno` (it does so, among
/// others, when another primary process holds the runtime directory's lock): name the
/// holder if there is one, else point to DPDK's own log lines.
fn silent_failure<S: AsRef<str>>(args: &[S]) -> Error {
    let prefix = file_prefix(args);
    let config = runtime_dir().join(&prefix).join("config");
    match lock_holder(&config) {
        Some(pid) => Error::refused(
            "rte_eal_init",
            format!(
                "file prefix {prefix:?} is in use by process {pid} (another DPDK primary process); \
                 give each process its own --file-prefix"
            ),
        ),
        None => Error::refused("rte_eal_init", "DPDK set no error code; its log lines above say why"),
    }
}

/// The `--file-prefix` among EAL arguments (DPDK's default: `rte`).
fn file_prefix<S: AsRef<str>>(args: &[S]) -> String {
    let mut it = args.iter().map(AsRef::as_ref).skip(1);
    while let Some(a) = it.next() {
        if let Some(p) = a.strip_prefix("--file-prefix=") {
            return p.to_string();
        }
        if a == "--file-prefix" {
            return it.next().unwrap_or("rte").to_string();
        }
    }
    "rte".to_string()
}

/// Where DPDK keeps its runtime files: `/var/run/dpdk` for root, else under
/// `$XDG_RUNTIME_DIR` (or `/tmp`).
fn runtime_dir() -> std::path::PathBuf {
    // SAFETY: getuid has no preconditions and cannot fail.
    if unsafe { libc::getuid() } == 0 {
        return "/var/run/dpdk".into();
    }
    std::env::var_os("XDG_RUNTIME_DIR").map_or_else(|| "/tmp".into(), std::path::PathBuf::from).join("dpdk")
}

/// The process holding a POSIX write lock on `path` (DPDK's primary-process lock), if any.
fn lock_holder(path: &std::path::Path) -> Option<i32> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).ok()?;
    // SAFETY: flock is a plain C struct for which all-zero bytes are a valid value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: the descriptor is open for the duration of the call and `lock` is a valid,
    // exclusively borrowed flock that F_GETLK fills in.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut lock) };
    (rc == 0 && lock.l_type != libc::F_UNLCK as libc::c_short).then_some(lock.l_pid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    #[test]
    fn the_file_prefix_is_found_in_either_spelling_or_defaults() {
        assert_eq!(file_prefix(&["app", "--no-huge", "--file-prefix=a1"]), "a1");
        assert_eq!(file_prefix(&["app", "--file-prefix", "b2", "-m", "64"]), "b2");
        assert_eq!(file_prefix(&["app", "--file-prefix"]), "rte");
        assert_eq!(file_prefix(&["--file-prefix=argv0-is-not-an-option"]), "rte");
    }

    #[test]
    fn a_lock_held_by_another_process_names_that_process() {
        let path = std::env::temp_dir().join(format!("sluice-eal-lock-{}", std::process::id()));
        std::fs::write(&path, b"").unwrap();
        assert_eq!(lock_holder(&path), None, "nobody holds it yet");
        let mut child = std::process::Command::new("python3")
            .args(["-c", "import fcntl,sys,time; f=open(sys.argv[1],'r+'); fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(30)"])
            .arg(&path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "locked");
        let holder = lock_holder(&path);
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(&path);
        assert_eq!(holder, Some(child.id() as i32));
    }
}
