//! Distributed execution: the process [`World`] (MPI), collectives on tensors, gradient buckets.

pub mod buckets;
pub mod collectives;
pub mod nccl;
pub mod shards;
pub mod smoke;
pub mod world;

pub use collectives::Collectives;
pub use world::{DistError, World};
#[cfg(test)]
pub(crate) mod threads;
