//! Telling systemd how sluiced is doing (`Type=notify`, sd_notify(3)): `READY=1` once every
//! worker forwards, `STOPPING=1` when it stops. Without `NOTIFY_SOCKET` in the environment
//! (not started by systemd) nothing is sent.
//!
//! The workers' word that they forward is a [`Startup`]: each worker sends on its [`Sender`]
//! once it is in its loop, then drops it; a worker that ends before that only drops it.

use log::warn;
use sd_notify::NotifyState;
use std::sync::mpsc::{self, Receiver, Sender};

/// Waits for every worker's word that it forwards.
#[derive(Debug)]
pub struct Startup {
    up: Receiver<()>,
    workers: usize,
}

impl Startup {
    /// A startup of `workers` workers, and the sender to clone to each of them.
    pub fn new(workers: usize) -> (Startup, Sender<()>) {
        let (tx, up) = mpsc::channel();
        (Startup { up, workers }, tx)
    }

    /// Waits until every worker has said it forwards, then tells systemd `READY=1` with
    /// `status`. A worker that ended first (every sender gone before every word came) is an
    /// error, and nothing is sent.
    pub fn ready_when_up(self, status: &str) -> Result<(), String> {
        for seen in 0..self.workers {
            if self.up.recv().is_err() {
                return Err(format!(
                    "{} of {} workers ended before they forwarded",
                    self.workers - seen,
                    self.workers
                ));
            }
        }
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
        Ok(())
    }
}

/// Tells systemd sluiced is stopping (`STOPPING=1`).
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Sends `states` to `NOTIFY_SOCKET`, if there is one; a failure is logged, not fatal (systemd
/// then times the start out).
fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!("systemd notification: {e}");
    }
}
