//! Live session handles.
//!
//! A handle given to C is a token, never the address of Rust memory: it is looked up here on
//! every call and never dereferenced. A freed, forged or never-issued handle therefore reads as
//! `AVSEG_ERR_INVALID_HANDLE` instead of undefined behaviour. Tokens come from a counter and are
//! never reused, so a stale handle cannot alias a session created later at the same address.
//!
//! Each session sits behind its own `Mutex`: calls on one session from several threads are
//! serialised. The registry lock is held only for the lookup, and the `Arc` keeps a session alive
//! for a call already under way when another thread frees it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::error::{avseg_status, Failure};

/// Spacing between tokens, so that a handle has the alignment C code may expect of a pointer.
const TOKEN_STRIDE: usize = 16;

struct Registry<T> {
    next: usize,
    live: BTreeMap<usize, Arc<Mutex<T>>>,
}

pub(crate) struct Handles<T> {
    inner: Mutex<Registry<T>>,
}

impl<T> Handles<T> {
    pub const fn new() -> Self {
        Handles { inner: Mutex::new(Registry { next: 1, live: BTreeMap::new() }) }
    }

    fn registry(&self) -> MutexGuard<'_, Registry<T>> {
        // Only map inserts and removals run under this lock, so a poisoned lock still holds a
        // consistent map.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `value` and returns its token (never 0).
    pub fn insert(&self, value: T) -> Result<usize, Failure> {
        let mut reg = self.registry();
        let token = reg.next.checked_mul(TOKEN_STRIDE).ok_or_else(|| {
            Failure::new(avseg_status::AVSEG_ERR_INVALID_ARGUMENT, "avseg_session_new: handle space exhausted")
        })?;
        reg.next += 1;
        reg.live.insert(token, Arc::new(Mutex::new(value)));
        Ok(token)
    }

    pub fn get(&self, token: usize, function: &str) -> Result<Arc<Mutex<T>>, Failure> {
        self.registry().live.get(&token).cloned().ok_or_else(|| invalid_handle(function, token))
    }

    /// Forgets the token. The value is dropped once no call still holds it.
    pub fn remove(&self, token: usize, function: &str) -> Result<Arc<Mutex<T>>, Failure> {
        self.registry().live.remove(&token).ok_or_else(|| invalid_handle(function, token))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.registry().live.len()
    }
}

fn invalid_handle(function: &str, token: usize) -> Failure {
    Failure::new(
        avseg_status::AVSEG_ERR_INVALID_HANDLE,
        format!("{function}: session handle {token:#x} is not live (already freed, or not from avseg_session_new)"),
    )
}

/// Runs `body` with the session locked. A session whose lock was poisoned by a panic is refused:
/// its state may be half-updated.
pub(crate) fn with_locked<T, R>(
    cell: &Mutex<T>,
    function: &str,
    body: impl FnOnce(&mut T) -> Result<R, Failure>,
) -> Result<R, Failure> {
    match cell.lock() {
        Ok(mut guard) => body(&mut guard),
        Err(_) => Err(Failure::new(
            avseg_status::AVSEG_ERR_PANIC,
            format!("{function}: this session was interrupted by an internal error (panic) earlier; free it"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_freed_ones_are_refused() {
        let h: Handles<u32> = Handles::new();
        let a = h.insert(1).unwrap();
        let b = h.insert(2).unwrap();
        assert_ne!(a, b);
        assert_eq!(a % TOKEN_STRIDE, 0);
        assert!(h.remove(a, "t").is_ok());
        assert_eq!(h.get(a, "t").unwrap_err().status, avseg_status::AVSEG_ERR_INVALID_HANDLE);
        assert_eq!(h.remove(a, "t").unwrap_err().status, avseg_status::AVSEG_ERR_INVALID_HANDLE);
        let c = h.insert(3).unwrap();
        assert!(c != a && c != b);
        assert_eq!(*h.get(c, "t").unwrap().lock().unwrap(), 3);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn a_poisoned_session_is_refused() {
        let cell = Arc::new(Mutex::new(0u32));
        let c2 = cell.clone();
        let _ = std::thread::spawn(move || {
            let _g = c2.lock().unwrap();
            panic!("poison");
        })
        .join();
        let r = with_locked(&cell, "f", |_| Ok(()));
        assert_eq!(r.unwrap_err().status, avseg_status::AVSEG_ERR_PANIC);
    }
}
