//! Host bindings for the `stavka:policy` world, generated once from `wit/`.
//!
//! The items are generated: their documentation is the WIT's own comments,
//! which `bindgen!` does not carry onto every field.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "stavka:policy/policy",
    // Guests run as fibers inside pingora's async hooks: WASI's sync
    // bindings would block on a runtime from within the runtime.
    exports: { default: async },
});
