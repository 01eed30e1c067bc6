//! What `sluicectl stats` reads: the workers' per-service and per-backend traffic (as the
//! metrics endpoint's `sluice_service_packets_total` and kin), the connections made from the
//! session table, and the drops.

use crate::ctl::stats::{BackendStats, Counts, ServiceStats, Stats};
use crate::labels::backend_label;
use crate::report::Totals;
use sluice_dataplane::session::SessionTable;
use sluice_dataplane::snapshot::Snapshot;
use sluice_dataplane::stats::{DropReason, Traffic, WorkerStats};
use std::sync::Arc;
use std::time::Duration;

/// Every service and backend of `snap` with its totals, and `totals`' drops, at `uptime`.
pub(super) fn read(
    snap: &Snapshot,
    workers: &[Arc<WorkerStats>],
    sessions: &SessionTable,
    (totals, uptime): (&Totals, Duration),
) -> Stats<u64> {
    // Packets and bytes of traffic `id` in the table `table` picks, over the workers.
    let traffic = |table: fn(&WorkerStats) -> &[Traffic], id: usize| {
        workers
            .iter()
            .filter_map(|w| table(w).get(id))
            .fold((0, 0), |(p, b), t| (p + t.packets.get(), b + t.bytes.get()))
    };
    let services = snap.services.iter().map(|s| {
        let backends: Vec<BackendStats<u64>> = s
            .backends
            .iter()
            .map(|b| {
                let (packets, bytes) = traffic(|w| &w.per_backend, b.id as usize);
                BackendStats {
                    id: b.id,
                    label: backend_label(s.forwarding, b.address, b.port),
                    counts: Counts { packets, bytes, connections: sessions.created(b.id) },
                }
            })
            .collect();
        let (packets, bytes) = traffic(|w| &w.per_service, usize::from(s.id));
        let connections = backends.iter().map(|b| b.counts.connections).sum();
        ServiceStats {
            id: s.id,
            name: s.name.clone(),
            vip: std::net::SocketAddr::new(s.vip, s.port).to_string(),
            counts: Counts { packets, bytes, connections },
            backends,
        }
    });
    let drops = DropReason::ALL.iter().map(|r| (r.label().to_string(), totals.drops[*r as usize]));
    Stats {
        uptime_ms: uptime.as_millis() as u64,
        interval_ms: None,
        services: services.collect(),
        drops: drops.collect(),
    }
}
