//! Host bindings for the `stavka:policy` world, generated once from `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "stavka:policy/policy",
    // Guests run as fibers inside pingora's async hooks: WASI's sync
    // bindings would block on a runtime from within the runtime.
    exports: { default: async },
});
