//! A backend for a flow without a session: the service's scheduler, or the client's
//! remembered backend under `ip_hash` persistence.

use super::context::{Ctx, ToService};
use crate::flow::SELECT_SEED;
use crate::sched;
use crate::session::{Session, SessionKey, TcpState};
use crate::snapshot::{Scheduler, Service};

/// The backend (an index) for a new flow of service `svc` (at snapshot index `si`), at
/// session tick `now`. For `ip_hash` with persistence, the client's remembered backend is
/// kept as a `Persist` session, refreshed by each new flow of the client.
pub fn backend(cx: &mut Ctx<'_>, svc: &Service, si: usize, p: &ToService, now: u32) -> Option<u16> {
    let (table, flow) = (cx.sessions, p.flow(svc));
    if svc.scheduler == Scheduler::IpHash && svc.persistence_ticks > 0 {
        let key = SessionKey::persist(p.src, svc.id);
        let hash = table.hash(&key);
        if let Some((slot, s)) = table.lookup(&key, hash) {
            match svc.backend_by_id(s.backend) {
                Some(bi) if svc.backends.get(usize::from(bi)).is_some_and(|b| b.takes_new_flows()) => {
                    table.touch(slot, &s, now, TcpState::NotTcp);
                    return Some(bi);
                }
                _ => {
                    table.remove(slot, &key);
                }
            }
        }
        let bi = sched::choose(svc, si, &flow, flow.hash(SELECT_SEED), cx.sched, table)?;
        let id = svc.backends.get(usize::from(bi))?.id;
        let s = Session { timeout: svc.persistence_ticks, ..Session::new(id, TcpState::NotTcp, now) };
        table.insert(&key, hash, &s);
        return Some(bi);
    }
    sched::choose(svc, si, &flow, flow.hash(SELECT_SEED), cx.sched, table)
}
