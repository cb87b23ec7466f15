//! The wasmtime engine every module shares, and the linker with the host's
//! imports.
//!
//! Instantiation must cost microseconds, since per-request modules
//! instantiate on every request: the pooling allocator with memory and
//! tables kept resident, and PAGEMAP_SCAN to reset only dirtied pages.
//! Deadlines use epoch interruption, advanced by one thread every
//! [`EPOCH_TICK`]; at each tick a running call's CPU time decides whether it
//! is stopped (see `host::CallBudget`).

use anyhow::Context;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::{v01, v02};
use super::host::{HostState, EPOCH_TICK};
use crate::policy_settings::MAX_MEMORY;

/// Instances that may exist at once, over all modules: per-request calls in
/// flight plus long-lived pools.
const MAX_INSTANCES: u32 = 1000;

/// The engine and the linker every module is instantiated through.
pub struct Runtime {
    /// Compiles and runs modules.
    pub engine: Engine,
    /// WASI (no filesystem, network or environment) and the `host` interface.
    pub linker: Linker<HostState>,
}

impl Runtime {
    /// Build the engine, start its epoch ticker and link the host imports.
    pub fn new() -> anyhow::Result<Runtime> {
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_component_instances(MAX_INSTANCES)
            .total_core_instances(4 * MAX_INSTANCES)
            // A policy component has one linear memory. Each slot reserves
            // 4 GiB of address space (not memory) so guest code needs no
            // bounds checks: ~4 TiB virtual for the pool.
            .total_memories(MAX_INSTANCES)
            .total_tables(4 * MAX_INSTANCES)
            .total_stacks(MAX_INSTANCES)
            .max_memory_size(MAX_MEMORY)
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(1 << 16)
            .pagemap_scan(Enabled::Auto);
        let mut wasm = Config::new();
        wasm.epoch_interruption(true)
            .concurrency_support(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&wasm).map_err(|e| wasmtime_error("wasmtime engine", &e))?;

        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .context("epoch ticker thread")?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| wasmtime_error("linking WASI", &e))?;
        // Every version of the package the host speaks, side by side.
        v01::Policy::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(|e| wasmtime_error("linking the host interface 0.1", &e))?;
        v02::Policy::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(|e| wasmtime_error("linking the host interface 0.2", &e))?;
        Ok(Runtime { engine, linker })
    }
}

/// wasmtime has its own error type; carry its message into `anyhow`.
fn wasmtime_error(what: &str, e: &wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{what}: {e:?}")
}
