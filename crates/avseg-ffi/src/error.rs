//! Status codes, the thread-local last-error message, and the panic boundary every entry point
//! goes through.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use avseg_runtime::{Error, ErrorKind};

/// The result of every fallible call. `AVSEG_OK` is 0; every other value is a failure, and
/// `avseg_last_error_message()` then describes it.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum avseg_status {
    AVSEG_OK = 0,
    /// A required pointer argument was NULL.
    AVSEG_ERR_NULL = 1,
    /// An argument is out of range or inconsistent (zero sizes, bad stride, bad option values,
    /// an input buffer shorter than its stated shape, a non-finite timestamp).
    AVSEG_ERR_INVALID_ARGUMENT = 2,
    /// A caller-owned output buffer is too small; the needed size was written to the size
    /// out-parameter.
    AVSEG_ERR_BUFFER_TOO_SMALL = 3,
    /// The session handle is not live: already freed, or never returned by `avseg_session_new`.
    AVSEG_ERR_INVALID_HANDLE = 4,
    /// The model package is missing, unreadable or invalid.
    AVSEG_ERR_MODEL = 5,
    /// A file could not be read or written.
    AVSEG_ERR_IO = 6,
    /// The pushed audio or frames were rejected (e.g. a non-finite sample, audio out of order).
    AVSEG_ERR_INPUT = 7,
    /// The inference backend failed to prepare or run a graph.
    AVSEG_ERR_BACKEND = 8,
    /// No result is available yet.
    AVSEG_ERR_NO_RESULT = 9,
    /// avseg hit an internal bug: a Rust panic caught at the boundary, or a broken internal
    /// invariant that avseg detected and reported. After a panic, a session that was in use at that
    /// moment answers `AVSEG_ERR_PANIC` from then on; in either case, free the session.
    AVSEG_ERR_PANIC = 10,
}

use avseg_status::*;

/// Why a call failed: the status returned to C and the message kept for
/// `avseg_last_error_message`.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: avseg_status,
    pub message: String,
}

impl Failure {
    pub fn new(status: avseg_status, message: impl Into<String>) -> Self {
        Failure { status, message: message.into() }
    }

    pub fn null(function: &str, argument: &str) -> Self {
        Failure::new(AVSEG_ERR_NULL, format!("{function}: `{argument}` is NULL"))
    }

    pub fn invalid(function: &str, detail: impl std::fmt::Display) -> Self {
        Failure::new(AVSEG_ERR_INVALID_ARGUMENT, format!("{function}: {detail}"))
    }

    pub fn from_error(function: &str, e: &Error) -> Self {
        Failure::new(status_of(e), format!("{function}: {e}"))
    }
}

/// Which status a library error maps to: one status per [`ErrorKind`], so a caller's mistake
/// (`AVSEG_ERR_INPUT`, `AVSEG_ERR_INVALID_ARGUMENT`) and a bug in avseg (`AVSEG_ERR_PANIC`) never
/// share a status. A kind added to the runtime later is reported as a bug until it gets a status.
pub(crate) fn status_of(e: &Error) -> avseg_status {
    match e.kind() {
        ErrorKind::InvalidArgument => AVSEG_ERR_INVALID_ARGUMENT,
        ErrorKind::Model => AVSEG_ERR_MODEL,
        ErrorKind::Io => AVSEG_ERR_IO,
        ErrorKind::Input => AVSEG_ERR_INPUT,
        ErrorKind::Backend => AVSEG_ERR_BACKEND,
        ErrorKind::Internal => AVSEG_ERR_PANIC,
        _ => AVSEG_ERR_PANIC,
    }
}

thread_local! {
    // Owned here so the pointer handed to C stays valid until this thread's next avseg call.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // C strings end at the first NUL; a message must not be cut short by an embedded one.
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // `try_with` rather than `with`: during thread teardown the slot may be gone, and a panic
    // here would escape the boundary.
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut slot) = slot.try_borrow_mut() {
            *slot = text;
        }
    });
}

fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut slot) = slot.try_borrow_mut() {
            if !slot.as_bytes().is_empty() {
                *slot = CString::default();
            }
        }
    });
}

/// The panic boundary: runs `body`, turns its `Err` into a status plus message, and a panic into
/// `AVSEG_ERR_PANIC`. Since Rust 1.81 a panic unwinding out of an `extern "C"` function aborts the
/// caller's process, so nothing may escape.
pub(crate) fn guard(function: &str, body: impl FnOnce() -> Result<(), Failure>) -> avseg_status {
    clear_last_error();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => AVSEG_OK,
        Ok(Err(failure)) => {
            set_last_error(&failure.message);
            failure.status
        }
        Err(payload) => {
            let what = panic_text(&*payload);
            // Dropping a payload can itself panic; it is leaked instead (a bug path only).
            std::mem::forget(payload);
            set_last_error(&format!("{function}: internal error (panic): {what}"));
            AVSEG_ERR_PANIC
        }
    }
}

/// Like [`guard`] for the few functions that return a value instead of a status: a panic yields
/// `fallback`.
pub(crate) fn guard_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(payload) => {
            std::mem::forget(payload);
            fallback
        }
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

static EMPTY: &[u8] = b"\0";

/// The message of the last failed avseg call on the calling thread; "" when the last call
/// succeeded. Never NULL. The pointer stays valid until the next avseg call on the same thread
/// (other than `avseg_last_error_message`, `avseg_last_error_copy`, `avseg_status_name`,
/// `avseg_bearing_deg` and the version functions, which leave it alone). Do not free it.
#[no_mangle]
pub extern "C" fn avseg_last_error_message() -> *const c_char {
    guard_value(EMPTY.as_ptr().cast(), || {
        LAST_ERROR
            .try_with(|slot| match slot.try_borrow() {
                // The CString's heap buffer does not move while it stays in the slot.
                Ok(s) => s.as_ptr(),
                Err(_) => EMPTY.as_ptr().cast(),
            })
            .unwrap_or(EMPTY.as_ptr().cast())
    })
}

/// Copies the last error message of the calling thread into `buffer` (NUL-terminated, truncated
/// to `capacity - 1` bytes), like `snprintf`. Returns the full message length in bytes, not
/// counting the NUL; a return value `>= capacity` means it was truncated. `buffer` may be NULL
/// only when `capacity` is 0 (to ask for the length).
///
/// # Safety
/// `buffer` must be NULL or point to `capacity` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn avseg_last_error_copy(buffer: *mut c_char, capacity: usize) -> usize {
    guard_value(0, || {
        LAST_ERROR
            .try_with(|slot| {
                let Ok(s) = slot.try_borrow() else { return 0 };
                let bytes = s.as_bytes();
                if !buffer.is_null() && capacity > 0 {
                    let n = bytes.len().min(capacity - 1);
                    // SAFETY: the caller guarantees `capacity` writable bytes at `buffer`; n < capacity.
                    unsafe {
                        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buffer.cast::<u8>(), n);
                        *buffer.add(n) = 0;
                    }
                }
                bytes.len()
            })
            .unwrap_or(0)
    })
}

/// The name of a status code as a static string (e.g. "AVSEG_ERR_NULL"); "AVSEG_UNKNOWN_STATUS"
/// for a value that is not one. Takes an `int` so that any value a C caller holds is safe to pass.
#[no_mangle]
pub extern "C" fn avseg_status_name(status: i32) -> *const c_char {
    let name: &'static [u8] = match status {
        0 => b"AVSEG_OK\0",
        1 => b"AVSEG_ERR_NULL\0",
        2 => b"AVSEG_ERR_INVALID_ARGUMENT\0",
        3 => b"AVSEG_ERR_BUFFER_TOO_SMALL\0",
        4 => b"AVSEG_ERR_INVALID_HANDLE\0",
        5 => b"AVSEG_ERR_MODEL\0",
        6 => b"AVSEG_ERR_IO\0",
        7 => b"AVSEG_ERR_INPUT\0",
        8 => b"AVSEG_ERR_BACKEND\0",
        9 => b"AVSEG_ERR_NO_RESULT\0",
        10 => b"AVSEG_ERR_PANIC\0",
        _ => b"AVSEG_UNKNOWN_STATUS\0",
    };
    name.as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn panics_become_a_status_with_a_message() {
        let st = guard("avseg_test", || panic!("boom"));
        assert_eq!(st, AVSEG_ERR_PANIC);
        let msg = unsafe { CStr::from_ptr(avseg_last_error_message()) }.to_str().unwrap().to_string();
        assert!(msg.contains("boom") && msg.contains("avseg_test"), "{msg}");
        assert_eq!(guard("avseg_test", || Ok(())), AVSEG_OK);
        assert_eq!(unsafe { CStr::from_ptr(avseg_last_error_message()) }.to_bytes(), b"");
    }

    #[test]
    fn copy_truncates_like_snprintf() {
        let _ = guard("f", || Err(Failure::invalid("f", "abc\0def")));
        let mut buf = [0x7f as c_char; 4];
        let n = unsafe { avseg_last_error_copy(buf.as_mut_ptr(), buf.len()) };
        assert_eq!(n, "f: abc def".len());
        assert_eq!(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_bytes(), b"f: ");
        assert_eq!(unsafe { avseg_last_error_copy(std::ptr::null_mut(), 0) }, n);
    }

    #[test]
    fn every_status_has_a_name() {
        for s in 0..=10 {
            let name = unsafe { CStr::from_ptr(avseg_status_name(s)) }.to_str().unwrap();
            assert!(name.starts_with("AVSEG_") && name != "AVSEG_UNKNOWN_STATUS", "{s}");
        }
        assert_eq!(unsafe { CStr::from_ptr(avseg_status_name(-3)) }.to_bytes(), b"AVSEG_UNKNOWN_STATUS");
    }
}
