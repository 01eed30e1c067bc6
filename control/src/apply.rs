//! A config apply off the control loop: the file is read, validated and its snapshot built on
//! a thread of its own, one apply at a time, while the loop keeps its cadence (sweeping
//! sessions, answering the admin API). The loop collects the result with [`Applier::poll`]
//! and publishes it; the caller waiting for the answer gets it then.

use crate::admin::Response;
use crate::stage::{Basis, Staged};
use sluice_dataplane::snapshot::Snapshot;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread;

/// The refusal of an apply asked for while another one runs.
pub const BUSY: &str = "an apply is in progress; try again when it is done";

/// An apply running on its thread.
struct Job<T> {
    path: PathBuf,
    caller: Option<Sender<Response>>,
    result: Receiver<Result<T, String>>,
}

/// A finished apply: which file, who waits for the answer, and the validated config or why not.
#[derive(Debug)]
pub struct Finished<T> {
    pub path: PathBuf,
    pub caller: Option<Sender<Response>>,
    pub result: Result<T, String>,
}

/// At most one apply at a time; `T` is what the validation yields (a [`Staged`] config and
/// snapshot).
#[derive(Debug)]
pub struct Applier<T = Staged> {
    job: Option<Job<T>>,
}

impl<T> std::fmt::Debug for Job<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("path", &self.path).finish_non_exhaustive()
    }
}

impl<T> Default for Applier<T> {
    fn default() -> Self {
        Applier { job: None }
    }
}

impl<T: Send + 'static> Applier<T> {
    /// True while an apply runs.
    pub fn busy(&self) -> bool {
        self.job.is_some()
    }

    /// Starts `work` (the validation of `path`) on a thread of its own. While another apply
    /// runs, or if no thread can be started, it is refused: `caller` hears why at once, and
    /// the reason is returned.
    pub fn start_with(
        &mut self,
        path: PathBuf,
        caller: Option<Sender<Response>>,
        work: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Result<(), String> {
        let refuse = |caller: Option<Sender<Response>>, why: String| {
            if let Some(c) = caller {
                let _ = c.send(Response::Refused { text: why.clone() });
            }
            Err(why)
        };
        if let Some(job) = &self.job {
            return refuse(caller, format!("{BUSY} ({})", job.path.display()));
        }
        let (tx, rx) = mpsc::channel();
        let spawned = thread::Builder::new().name("sluice-apply".into()).spawn(move || {
            let _ = tx.send(work());
        });
        if let Err(e) = spawned {
            return refuse(caller, format!("cannot start the apply: {e}"));
        }
        self.job = Some(Job { path, caller, result: rx });
        Ok(())
    }

    /// The apply, if it has finished (without waiting).
    pub fn poll(&mut self) -> Option<Finished<T>> {
        let result = match self.job.as_ref()?.result.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => Err("the validation stopped without an answer".into()),
        };
        let job = self.job.take()?;
        Some(Finished { path: job.path, caller: job.caller, result })
    }
}

impl Applier<Staged> {
    /// Starts validating `path` to replace `running`, and building its snapshot over `basis`
    /// and the running snapshot (see [`Staged::load`]).
    pub fn start(
        &mut self,
        path: PathBuf,
        (running, basis, snapshot): (crate::config::Config, Basis, Option<Arc<Snapshot>>),
        caller: Option<Sender<Response>>,
    ) -> Result<(), String> {
        let file = path.clone();
        self.start_with(path, caller, move || {
            Staged::load(&file, &running, basis, snapshot.as_deref()).map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Polls until the apply finishes (each poll is what one turn of the control loop does).
    fn wait<T: Send + 'static>(a: &mut Applier<T>) -> Finished<T> {
        loop {
            if let Some(f) = a.poll() {
                return f;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_second_apply_while_one_runs_is_refused_and_the_first_completes() {
        let mut a: Applier<u32> = Applier::default();
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let (first_tx, first_rx) = mpsc::channel();
        a.start_with("one.yaml".into(), Some(first_tx), move || {
            gate_rx.recv().map_err(|e| e.to_string())?;
            Ok(1)
        })
        .unwrap();
        // The validation waits on the gate: the loop's poll does not.
        assert!(a.poll().is_none());
        assert!(a.busy());
        let (second_tx, second_rx) = mpsc::channel();
        let e = a.start_with("two.yaml".into(), Some(second_tx), || Ok(2)).unwrap_err();
        assert!(e.starts_with(BUSY) && e.contains("one.yaml"), "{e}");
        assert_eq!(second_rx.try_recv().unwrap(), Response::Refused { text: e });
        gate_tx.send(()).unwrap();
        let done = wait(&mut a);
        assert_eq!(done.path, PathBuf::from("one.yaml"));
        assert_eq!(done.result, Ok(1));
        // The first caller's answer is the control loop's to give, after publishing.
        assert!(first_rx.try_recv().is_err());
        assert!(!a.busy());
        a.start_with("three.yaml".into(), None, || Ok(3)).unwrap();
        assert_eq!(wait(&mut a).result, Ok(3));
    }

    #[test]
    fn a_validation_that_dies_is_an_error_not_a_hang() {
        let mut a: Applier<u32> = Applier::default();
        a.start_with("x.yaml".into(), None, || std::panic::panic_any("boom")).unwrap();
        let done = wait(&mut a);
        assert!(done.result.unwrap_err().contains("without an answer"));
    }

    #[test]
    fn applies_a_real_file_off_the_calling_thread() {
        let dir = std::env::temp_dir().join(format!("sluice-applier-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = "ports: [{ name: a, device: net_null0, address: 198.18.0.1/24 }]\n";
        let running = crate::config::Config::parse(good, "run.yaml").unwrap();
        let file = dir.join("new.yaml");
        std::fs::write(&file, good.replace("net_null0", "net_null1")).unwrap();
        let mut a = Applier::default();
        a.start(file.clone(), (running, Basis::default(), None), None).unwrap();
        let e = wait(&mut a).result.unwrap_err();
        assert!(e.contains("ports[0].device: cannot change while sluiced runs"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
