//! Host bindings for each version of the `stavka:policy` world the host
//! speaks, generated from `wit/`.
//!
//! The items are generated: their documentation is the WIT's own comments,
//! which `bindgen!` does not carry onto every field.
#![allow(missing_docs)]

/// `stavka:policy@0.1.1` (`wit/v0.1/`): the request is a record, lowered
/// whole into every call.
pub mod v01 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1",
        world: "stavka:policy/policy",
        // Guests run as fibers inside pingora's async hooks: WASI's sync
        // bindings would block on a runtime from within the runtime.
        exports: { default: async },
    });
}

/// `stavka:policy@0.2.0` (`wit/`): the request is a resource read field by
/// field. Its value types are 0.1's, so both versions' decisions are the
/// same Rust types.
pub mod v02 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "stavka:policy/policy",
        exports: { default: async },
        with: {
            "stavka:policy/types": super::v01::stavka::policy::types,
            "stavka:policy/incoming.request": crate::policy::request::RequestHandle,
        },
    });
}
