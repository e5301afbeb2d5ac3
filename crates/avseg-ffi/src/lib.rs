//! The C ABI (`include/avseg.h`, generated from this module by cbindgen).
//!
//! Conventions, stated once here and in the header:
//! * Every fallible function returns an [`avseg_status`]; on failure
//!   `avseg_last_error_message()` describes it (thread-local, valid until the next avseg call on
//!   that thread).
//! * Every pointer argument is checked: NULL gives `AVSEG_ERR_NULL`. Out-parameters are written
//!   only on success, except the "needed size" out-parameters, which are also written with
//!   `AVSEG_ERR_BUFFER_TOO_SMALL`.
//! * No allocation crosses the boundary: the caller owns every input and output buffer and passes
//!   its capacity; strings returned by avseg are static or owned by avseg.
//! * Every entry point runs inside a panic boundary ([`error::guard`]); a bug surfaces as
//!   `AVSEG_ERR_PANIC`, never as an abort or unwinding into C. This needs `panic = "unwind"`
//!   (the default) in the profile the library is built with.
//! * Sessions are opaque tokens checked against a registry on every call ([`registry`]), so a
//!   freed or foreign handle gives `AVSEG_ERR_INVALID_HANDLE`. Each session has its own lock:
//!   calls on one session from several threads are safe and run one at a time; different
//!   sessions run in parallel.

pub mod error;
mod registry;
pub mod session;

use std::ffi::c_char;

pub use error::avseg_status;

/// Version of the library, equal to the crate version (checked by a unit test).
pub const AVSEG_VERSION_MAJOR: u32 = 0;
pub const AVSEG_VERSION_MINOR: u32 = 1;
pub const AVSEG_VERSION_PATCH: u32 = 0;
/// Bumped on every change of the ABI: a function, struct, status value or status meaning. Compare
/// `avseg_abi_version()` with this macro at start-up to catch a header/library mismatch.
///
/// History: 1, the first ABI; 2, an internal invariant failure reports `AVSEG_ERR_PANIC` (the
/// status for bugs) instead of `AVSEG_ERR_INPUT`. No function, struct or status value changed.
/// 3, appended: per-frame streams (`avseg_stream_mode`, `avseg_session_new_with_mode`,
/// `avseg_session_mode`) and result timing (`avseg_result_timing`, `avseg_session_latest_timing`,
/// `avseg_session_popped_timing`). Every existing function and struct is unchanged:
/// `avseg_session_new` keeps streaming in windows.
/// 4, appended: the `avseg_stream_mode` values `AVSEG_STREAM_SLIDING` and
/// `AVSEG_STREAM_SLIDING_PADDED` (sliding windows for official TPAVI), which
/// `avseg_session_new_with_mode` accepts and `avseg_session_mode` reports; and for two-stage
/// packages `avseg_session_label`, `avseg_session_latest_object_sound` and
/// `avseg_session_latest_silent_objects`. Nothing else changed: `AUTO` chooses as before.
pub const AVSEG_ABI_VERSION: u32 = 4;

static VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// The library version as a static string, e.g. "0.1.0". Never NULL; do not free.
#[no_mangle]
pub extern "C" fn avseg_version() -> *const c_char {
    VERSION.as_ptr().cast()
}

/// The ABI version the library was built with; equals `AVSEG_ABI_VERSION` of a matching header.
#[no_mangle]
pub extern "C" fn avseg_abi_version() -> u32 {
    AVSEG_ABI_VERSION
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_macros_follow_the_crate_version() {
        assert_eq!(AVSEG_VERSION_MAJOR.to_string(), env!("CARGO_PKG_VERSION_MAJOR"));
        assert_eq!(AVSEG_VERSION_MINOR.to_string(), env!("CARGO_PKG_VERSION_MINOR"));
        assert_eq!(AVSEG_VERSION_PATCH.to_string(), env!("CARGO_PKG_VERSION_PATCH"));
        let v = unsafe { std::ffi::CStr::from_ptr(avseg_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
