//! HTTP caching decisions and the storage seam.

pub mod freshness;
pub mod invalidate;
pub mod key;
pub mod outcome;
pub mod purge_bus;
pub mod status;
pub mod store;
