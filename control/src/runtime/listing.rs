//! What `sluicectl services` and `sluicectl sessions` print.

use super::control::Control;
use crate::admin::Response;
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

/// `sluicectl services`: one line per service, then one per backend.
pub(super) fn list_services(snap: &Snapshot, sessions: &SessionTable, control: &Control) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "generation {}", snap.generation);
    for s in &snap.services {
        let _ = writeln!(
            out,
            "service {} {} {:?} {:?} scheduler {:?} tunnel {:?}{}",
            s.name,
            std::net::SocketAddr::new(s.vip, s.port),
            s.protocol,
            s.forwarding,
            s.scheduler,
            s.tunnel,
            s.synproxy_mss.map_or_else(String::new, |mss| format!(" synproxy mss {mss}"))
        );
        if !s.limits.is_empty() {
            let _ = writeln!(
                out,
                "  limits {} (sessions now {})",
                limits_text(&s.limits),
                sessions.service_active(s.id)
            );
        }
        for b in &s.backends {
            let label = backend_label(s.forwarding, b.address, b.port);
            let state = if b.down {
                "down"
            } else if control.is_drained(b.id) {
                "drained"
            } else if b.weight == 0 {
                "weight-0"
            } else {
                "up"
            };
            let check = control
                .last_check(b.id)
                .map_or_else(|| "unchecked".to_string(), |last| format!("check: {last}"));
            let _ = writeln!(
                out,
                "  backend {label} host {} weight {} {state} sessions {} {check}",
                b.host,
                b.weight,
                sessions.active(b.id)
            );
        }
    }
    out
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
    use std::fmt::Write;
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
    let mut out = String::new();
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
            let _ = writeln!(
                out,
                "{} {} -> {label} {:?}{}{} idle {idle}s",
                svc.name,
                std::net::SocketAddr::new(addr, k.port),
                s.state,
                if s.flags & PROXIED != 0 { " proxied" } else { "" },
                if s.flags & SYNCED != 0 { " synced" } else { "" }
            );
        }
    });
    let _ = writeln!(out, "{matched} sessions matched, {shown} shown");
    Response::Ok { text: out }
}
