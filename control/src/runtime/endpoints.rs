//! The local endpoints, each on its own thread: the admin API (a Unix socket whose requests
//! the control loop answers) and the Prometheus endpoint.

use crate::admin::{self, Pending};
use crate::metrics::{self, MetricsSource};
use crate::serving::Refusals;
use log::{info, warn};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

/// An endpoint's thread (`None`: not running) and the flag that stops it.
pub(super) struct Endpoint {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Endpoint {
    fn idle() -> Endpoint {
        Endpoint { stop: Arc::new(AtomicBool::new(false)), thread: None }
    }

    /// Stops the thread and waits for it.
    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.thread {
            let _ = h.join();
        }
    }
}

/// The admin API on `socket` (open to `group` too), if given and if it can listen there
/// (otherwise sluiced runs without it); its requests arrive on the receiver. The refusals are
/// its connections' when it runs, for the metrics.
pub(super) fn admin(
    socket: Option<&Path>,
    group: Option<u32>,
) -> (Endpoint, mpsc::Receiver<Pending>, Option<Arc<Refusals>>) {
    let mut endpoint = Endpoint::idle();
    let (admin_tx, admin_rx) = mpsc::channel::<Pending>();
    let admin_options = admin::SocketOptions::new(group);
    if let Some(path) = socket {
        match admin::serve(path, &admin_options, admin_tx, Arc::clone(&endpoint.stop)) {
            Ok(h) => {
                info!("admin API on {}", path.display());
                endpoint.thread = Some(h);
            }
            Err(e) => warn!("admin API: {}: {e}; running without it", path.display()),
        }
    }
    let refusals = endpoint.thread.is_some().then(|| Arc::clone(&admin_options.refusals));
    (endpoint, admin_rx, refusals)
}

/// The Prometheus endpoint on `listen`, reading what `source` gives it (which is handed the
/// endpoint's own connection refusals) at each scrape.
pub(super) fn metrics(
    listen: SocketAddr,
    source: impl FnOnce(Arc<Refusals>) -> MetricsSource,
) -> Result<Endpoint, String> {
    let mut endpoint = Endpoint::idle();
    let refusals = Arc::new(Refusals::default());
    let source = source(Arc::clone(&refusals));
    let (addr, h) = metrics::registry(source).map_err(|e| e.to_string()).and_then(|r| {
        metrics::serve(listen, r, metrics::LIMITS, refusals, Arc::clone(&endpoint.stop))
            .map_err(|e| e.to_string())
    })?;
    info!("metrics on http://{addr}/metrics");
    endpoint.thread = Some(h);
    Ok(endpoint)
}
