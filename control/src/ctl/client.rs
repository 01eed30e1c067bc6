//! `sluicectl`'s readings that take more than one request: rates from two readings.

use super::stats::Stats;
use crate::admin::{call, Request, Response};
use std::path::Path;
use std::time::Duration;

/// What went wrong: sluiced refused (its answer) or was not reached (why).
pub type Failure = Result<Response, String>;

/// One `stats` reading.
pub fn stats(socket: &Path) -> Result<Stats<u64>, Failure> {
    match call(socket, &Request::Stats) {
        Ok(Response::Ok { data: Some(d), .. }) => serde_json::from_value(d)
            .map_err(|e| Err(format!("sluiced answered stats in another shape: {e}"))),
        Ok(Response::Ok { .. }) => Err(Err("sluiced answered stats without data (an older sluiced?)".into())),
        other => Err(other),
    }
}

/// `sluicectl stats --rate`: two readings `interval` apart, as the answer to print.
pub fn rates(socket: &Path, interval: Duration) -> Result<Response, String> {
    let read = || stats(socket);
    let first = match read() {
        Ok(s) => s,
        Err(f) => return f,
    };
    std::thread::sleep(interval);
    match read() {
        Ok(second) => Ok(super::answer(&second.rate_since(&first))),
        Err(f) => f,
    }
}
