//! HTTP caching decisions and the storage seam.

pub mod freshness;
pub mod key;
pub mod status;
pub mod store;
