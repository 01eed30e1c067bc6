//! The one error type of the safe layer.

use std::ffi::CStr;
use std::fmt;

use crate::raw;

/// A failed DPDK call, or a request the safe layer refused before calling
/// DPDK.
///
/// `op` names what failed (usually the DPDK function, e.g.
/// `"rte_eth_dev_configure(port 0)"`), `errno` is the DPDK error number when
/// there is one, and the text is `rte_strerror(errno)` or the reason for a
/// refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    op: String,
    errno: Option<i32>,
    text: String,
}

impl Error {
    /// An error from a DPDK call that reported `errno` (positive; a negative
    /// return code is negated here).
    pub fn from_errno(op: impl Into<String>, errno: i32) -> Error {
        let errno = errno.saturating_abs();
        // SAFETY: rte_strerror accepts any int and returns a pointer to a
        // NUL-terminated string (a static string or a per-thread buffer); we
        // copy it out before doing anything else on this thread.
        let text = unsafe {
            let p = raw::rte_strerror(errno);
            if p.is_null() {
                format!("errno {errno}")
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        Error { op: op.into(), errno: Some(errno), text }
    }

    /// An error from a DPDK call that signals failure through `rte_errno`
    /// (read it right after the failing call, on the same thread).
    pub fn from_rte_errno(op: impl Into<String>) -> Error {
        // SAFETY: shim_rte_errno only reads the calling thread's rte_errno.
        let errno = unsafe { raw::shim_rte_errno() };
        Error::from_errno(op, errno)
    }

    /// An error with a DPDK errno but a more specific text than
    /// `rte_strerror` gives.
    pub fn with_text(op: impl Into<String>, errno: i32, text: impl Into<String>) -> Error {
        Error { op: op.into(), errno: Some(errno.saturating_abs()), text: text.into() }
    }

    /// A request refused by the safe layer itself (no DPDK errno).
    pub fn refused(op: impl Into<String>, text: impl Into<String>) -> Error {
        Error { op: op.into(), errno: None, text: text.into() }
    }

    /// What failed.
    pub fn op(&self) -> &str {
        &self.op
    }

    /// The DPDK / libc error number, if the error came from DPDK.
    pub fn errno(&self) -> Option<i32> {
        self.errno
    }

    /// The human-readable reason.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errno {
            Some(n) => write!(f, "{} failed: {} (errno {})", self.op, self.text, n),
            None => write!(f, "{} refused: {}", self.op, self.text),
        }
    }
}

impl std::error::Error for Error {}

/// Map a DPDK `int` return code (0 or positive = success, negative = -errno)
/// to a `Result`.
pub(crate) fn check(op: impl FnOnce() -> String, rc: i32) -> Result<i32, Error> {
    if rc < 0 {
        Err(Error::from_errno(op(), rc))
    } else {
        Ok(rc)
    }
}
