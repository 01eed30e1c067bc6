//! The session region from the control thread's side (`sessions.region`): opened before
//! anything else is made, it gives the registry the ids the previous process gave, the session
//! table its slots and seeds, the SYN proxy its cookie keys and the clock its epoch; the
//! control thread keeps the ids and the cookie keys in it up to date. See
//! `sluice_dataplane::region` for what is in it.

use crate::config::Config;
use log::{info, warn};
use sluice_dataplane::region::{Header, Opened, Region, LAYOUT_VERSION};
use sluice_dataplane::session::SessionTable;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The monotonic clock (`CLOCK_MONOTONIC`, what `Instant` reads on Linux), in nanoseconds.
fn monotonic_ns() -> Result<u64, String> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_err(|e| format!("clock_gettime: {e}"))?;
    Ok(Duration::from(t).as_nanos() as u64)
}

/// A session region as this process found it.
pub(super) struct Found {
    pub(super) region: Arc<Region>,
    /// How it was found: "attached", "new", or "replaced (why)".
    pub(super) how: String,
}

/// Opens the region `config` names (`None` if it names none): attached if the file there is
/// one this binary can use, else new (or, with `on_mismatch: refuse`, the error). Says which
/// in one line.
pub(super) fn open(config: &Config, seed: u64) -> Result<Option<Found>, String> {
    let Some(spec) = &config.session_region else { return Ok(None) };
    let header = Header {
        layout: LAYOUT_VERSION,
        slots: SessionTable::slots_for(config.session_capacity) as u64,
        capacity: config.session_capacity as u64,
        seeds: SessionTable::seeds_of(seed),
        epoch_ns: monotonic_ns()?,
    };
    let (region, opened) = Region::open(&spec.path, header, !spec.refuse_mismatch)?;
    let at = spec.path.display();
    let how = match opened {
        Opened::Attached => {
            info!("session region {at}: attached (layout {LAYOUT_VERSION})");
            "attached".to_string()
        }
        Opened::Fresh { why: None } => {
            info!("session region {at}: new");
            "new".to_string()
        }
        Opened::Fresh { why: Some(why) } => {
            warn!("session region {at}: {why}; starting with no sessions");
            format!("replaced ({why})")
        }
    };
    Ok(Some(Found { region: Arc::new(region), how }))
}

/// The moment the sessions' clock started: the region's epoch (so ticks go on from the last
/// process's), or now without a region.
pub(super) fn epoch(region: Option<&Region>) -> Result<Instant, String> {
    let now = Instant::now();
    let Some(r) = region else { return Ok(now) };
    let since = monotonic_ns()?.saturating_sub(r.header().epoch_ns);
    now.checked_sub(Duration::from_nanos(since))
        .ok_or_else(|| "the region's clock epoch is out of range".into())
}
