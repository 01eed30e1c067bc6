//! sluice-agent: the backend host agent (Ananta's Host Agent, TGW's vpc module).
//!
//! Runs on each backend host. Appliances tunnel client packets to the host in IPIP or GRE;
//! kernels without the GRE and IPIP modules cannot strip them, so the agent does it in
//! userspace: raw sockets receive the tunneled packets, and the inner packet is written into
//! a TUN device (the physical TUN for IPIP and keyless GRE, a VPC's TUN for GRE with its key),
//! from which the local kernel receives it.
//!
//! For the NAT return path each decapsulated flow is remembered; what the kernel sends back
//! out of a TUN for such a flow is tunneled back to the appliance it came from, the way it
//! came. With direct server return the replies leave by the host's NIC and never touch a TUN.
//!
//! Tunnels are accepted only from the appliances (`--appliance`, [`allow`]), and each appliance
//! gets its own share of the flow memory, so no other sender can move a flow's replies or crowd
//! out an appliance's flows.
//!
//! ICMP errors a backend sends about a flow's packet go back by that flow; fragments of a
//! reply follow their first fragment's flow ([`replies`]).
//!
//! [`tunnel`], [`flows`], [`replies`] and [`allow`] are the pure core (bytes and state in, verdicts out);
//! [`agent`] does the I/O with one blocking thread per raw socket and per TUN.

pub mod agent;
pub mod allow;
pub mod cli;
pub mod echoes;
pub mod flows;
pub mod health;
pub mod replies;
pub mod stats;
#[cfg(test)]
mod testpkt;
pub mod tunnel;
