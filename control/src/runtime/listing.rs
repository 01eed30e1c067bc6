//! What `sluicectl services` and `sluicectl sessions` print.

use super::control::Control;
use crate::admin::Response;
use crate::ctl::{self, services::Services};
use crate::labels::backend_label;
use sluice_dataplane::session::{tick, SessionTable};
use sluice_dataplane::snapshot::Snapshot;
use std::time::Instant;

/// A service's limits as `sluicectl services` shows them: "packets/s 1000 (on_overload), ...".
fn limits_text(l: &sluice_dataplane::limit::Limits) -> String {
    use sluice_dataplane::limit::{Which, RATES};
    let when = |o: bool| if o { " (on_overload)" } else { "" };
    let mut parts: Vec<String> = RATES
        .iter()
        .filter_map(|&r| {
            let lim = l.rate(r)?;
            Some(format!("{}/s {}{}", Which::from(r).label(), lim.value, when(lim.on_overload)))
        })
        .collect();
    if let Some(c) = l.sessions {
        parts.push(format!("sessions {}{}", c.value, when(c.on_overload)));
    }
    parts.join(", ")
}

/// `sluicectl services`: each service and its backends.
pub(super) fn list_services(snap: &Snapshot, sessions: &SessionTable, control: &Control) -> Services {
    let services = snap.services.iter().map(|s| {
        let backends = s.backends.iter().map(|b| ctl::services::Backend {
            id: b.id,
            label: backend_label(s.forwarding, b.address, b.port),
            host: b.host.to_string(),
            weight: b.weight,
            state: ctl::services::state(b.down, control.is_drained(b.id), b.weight).to_string(),
            sessions: sessions.active(b.id),
            check: control.last_check(b.id).map(str::to_string),
        });
        ctl::services::Service {
            id: s.id,
            name: s.name.clone(),
            vip: std::net::SocketAddr::new(s.vip, s.port).to_string(),
            protocol: format!("{:?}", s.protocol),
            forwarding: format!("{:?}", s.forwarding),
            scheduler: format!("{:?}", s.scheduler),
            tunnel: format!("{:?}", s.tunnel),
            synproxy_mss: s.synproxy_mss,
            limits: (!s.limits.is_empty()).then(|| limits_text(&s.limits)),
            sessions: sessions.service_active(s.id),
            backends: backends.collect(),
        }
    });
    Services { generation: snap.generation, services: services.collect() }
}

/// `sluicectl sessions`: live flow sessions, filtered.
pub(super) fn list_sessions(
    snap: &Snapshot,
    sessions: &SessionTable,
    service: Option<String>,
    backend: Option<String>,
    client: Option<String>,
    limit: Option<usize>,
    epoch: Instant,
) -> Response {
    use sluice_dataplane::session::KeyKind;
    let client = match client.as_deref().map(str::parse::<std::net::IpAddr>) {
        Some(Ok(a)) => Some(a),
        Some(Err(_)) => {
            return Response::Refused {
                text: format!("{:?} is not an IPv4 or IPv6 address", client.unwrap_or_default()),
            }
        }
        None => None,
    };
    let limit = limit.unwrap_or(100);
    let now = tick(epoch.elapsed().as_nanos() as u64);
    let (mut shown, mut matched) = (0usize, 0usize);
    let mut out = Vec::new();
    sessions.for_each(|k, s| {
        if k.kind != KeyKind::Flow {
            return;
        }
        let Some(svc) = snap.service_by_id(k.ident as u16) else { return };
        let be = svc.backend_by_id(s.backend).and_then(|i| svc.backends.get(usize::from(i)));
        let label = be.map_or_else(
            || format!("(removed #{})", s.backend),
            |b| backend_label(svc.forwarding, b.address, b.port),
        );
        let addr = k.addr.to_ip();
        if service.as_ref().is_some_and(|n| *n != svc.name)
            || backend.as_ref().is_some_and(|b| *b != label)
            || client.is_some_and(|c| addr != c)
        {
            return;
        }
        matched += 1;
        if shown < limit {
            shown += 1;
            let idle = u64::from(sluice_dataplane::session::idle(now, s.last_seen))
                * (1u64 << sluice_dataplane::session::TICK_SHIFT)
                / 1_000_000_000;
            use sluice_dataplane::session::flags::{PROXIED, SYNCED};
            out.push(ctl::sessions::Session {
                service: svc.name.clone(),
                client: std::net::SocketAddr::new(addr, k.port).to_string(),
                backend: label,
                state: format!("{:?}", s.state),
                proxied: s.flags & PROXIED != 0,
                synced: s.flags & SYNCED != 0,
                idle_s: idle,
            });
        }
    });
    ctl::answer(&ctl::sessions::Sessions { sessions: out, matched, shown })
}
