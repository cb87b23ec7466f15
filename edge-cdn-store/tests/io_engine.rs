//! The segment ring's read engine on a kernel without io_uring: a thread
//! whose `io_uring_setup` a seccomp filter refuses, as a container runtime's
//! default profile or `kernel.io_uring_disabled` would. (The rest of the
//! suite runs on each engine: `EDGE_STORE_TEST_IO_ENGINE`.)

mod common;

use bytes::Bytes;
use bytesize::ByteSize;
use common::*;
use edge_cdn_store::{IoEngine, IoEngineChoice, StoreConfig, TieredStore};

/// Refuse `io_uring_setup` with `EPERM` on this thread (and the threads it
/// starts) from now on.
fn refuse_io_uring_here() {
    const NR: u32 = 0; // offset of `nr` in `struct seccomp_data`
    let filter = [
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: NR,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `program` points at `filter`, which outlives both calls; the
    // filter applies to this thread only (no SECCOMP_FILTER_FLAG_TSYNC).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &program as *const libc::sock_fprog,
            ),
            0,
            "seccomp filter: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn open_with(dir: &std::path::Path, io_engine: IoEngineChoice) -> Result<TieredStore, String> {
    TieredStore::open(
        StoreConfig {
            io_engine,
            // Nothing kept in memory: every hit reads the ring.
            memory_bytes: ByteSize::b(0),
            ..config(dir)
        },
        std::sync::Arc::new(edge_cdn_store::NoopObserver),
    )
    .map_err(|e| e.to_string())
}

#[test]
fn without_io_uring_auto_reads_on_the_blocking_pool_and_io_uring_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_path_buf();
    std::thread::spawn(move || {
        refuse_io_uring_here();
        let error = match open_with(&dir.join("forced"), IoEngineChoice::IoUring) {
            Ok(_) => panic!("io_engine = io-uring opened without io_uring"),
            Err(error) => error,
        };
        assert!(error.contains("io_engine"), "names the setting: {error}");

        let store: &'static TieredStore =
            Box::leak(Box::new(open_with(&dir, IoEngineChoice::Auto).unwrap()));
        assert_eq!(store.io_engine(), IoEngine::BlockingPool);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let data = Bytes::from(vec![7u8; 3000]);
            put(store, "/small", &data).await;
            assert_eq!(get_body(store, "/small").await, Some(data));
        });
    })
    .join()
    .unwrap();
}

#[test]
fn auto_reads_through_io_uring_where_the_kernel_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), IoEngineChoice::Auto).unwrap();
    // Linux 5.8 and later, where nothing refuses io_uring (the machines
    // this runs on): the store takes it.
    let kernel_has_it = io_uring::IoUring::new(8).is_ok_and(|ring| {
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe).is_ok()
            && probe.is_supported(io_uring::opcode::Tee::CODE)
    });
    let expected = if kernel_has_it {
        IoEngine::IoUring
    } else {
        IoEngine::BlockingPool
    };
    assert_eq!(store.io_engine(), expected);
}
