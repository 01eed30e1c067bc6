//! What `sluicectl` shows: each view (status, services, sessions, counters, stats, upgrade)
//! is one serializable value, built by sluiced from its state. Its text rendering and its JSON
//! (`sluicectl -o json`, the field names documented in docs/operations.md) both come from that
//! value, so they cannot drift apart. Nothing here needs DPDK.

pub mod client;
pub mod counters;
pub mod output;
pub mod services;
pub mod sessions;
pub mod stats;
pub mod status;
pub mod watch;

use crate::admin::Response;

/// A view: JSON through serde, text through [`View::text`].
pub trait View: serde::Serialize {
    /// The view as `sluicectl` prints it by default, ending with a newline.
    fn text(&self) -> String;
}

/// A view's admin answer: its text and itself as JSON.
pub fn answer<V: View>(view: &V) -> Response {
    match serde_json::to_value(view) {
        Ok(data) => Response::Ok { text: view.text(), data: Some(data) },
        Err(e) => Response::Refused { text: format!("the view could not be encoded: {e}") },
    }
}
