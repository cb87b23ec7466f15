//! Test guest: a component that exports no hook at all. Every hook is
//! optional, so it must load and change nothing.
