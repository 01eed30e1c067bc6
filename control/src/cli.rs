//! The command lines of `sluiced` and `sluicectl`, defined here rather than in their binaries
//! so that the man pages and shell completions are generated from the same definitions
//! (`sluice-pkg-gen`). The binaries parse with these and do the work.

pub mod sluicectl;
pub mod sluiced;
