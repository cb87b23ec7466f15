//! Room on the store's filesystem: what `statvfs` says, and whether it is
//! under the configured floor. A write is not begun under the floor, and
//! readiness reports it, so the store stops filling a disk before the disk
//! fails its writes — and starts again by itself once room returns.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Free and total bytes of one filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes an unprivileged writer may still use (`f_bavail`).
    pub free: u64,
    /// The filesystem's size (`f_blocks`).
    pub total: u64,
}

impl Space {
    /// The filesystem holding `path`; `None` if it cannot be read (the
    /// path is gone, or not a C string). Blocking: one `statvfs` call.
    pub fn of(path: &Path) -> Option<Space> {
        let path = CString::new(path.as_os_str().as_bytes()).ok()?;
        let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
        // SAFETY: `path` is a valid NUL-terminated string and `stat` points
        // to writable memory of the right type; statvfs writes only into it.
        let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
        if rc != 0 {
            return None;
        }
        // SAFETY: statvfs returned 0, so it filled `stat`.
        let stat = unsafe { stat.assume_init() };
        let unit = stat.f_frsize;
        Some(Space {
            free: stat.f_bavail.saturating_mul(unit),
            total: stat.f_blocks.saturating_mul(unit),
        })
    }

    /// Whether less than `percent` of the filesystem is free.
    pub fn is_low(&self, percent: u8) -> bool {
        u128::from(self.free) * 100 < u128::from(self.total) * u128::from(percent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_is_strictly_under_the_floor() {
        let space = |free| Space { free, total: 1000 };
        assert!(space(49).is_low(5));
        assert!(!space(50).is_low(5));
        assert!(!space(0).is_low(0), "a floor of 0 is never low");
        assert!(space(999).is_low(100));
    }

    #[test]
    fn reads_a_real_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let space = Space::of(dir.path()).unwrap();
        assert!(space.total >= space.free && space.total > 0);
        assert!(Space::of(&dir.path().join("missing")).is_none());
    }
}
