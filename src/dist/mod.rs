//! Distributed execution: the process [`World`] (MPI), collectives on tensors, gradient buckets.

pub mod smoke;
pub mod world;

pub use world::{DistError, World};
