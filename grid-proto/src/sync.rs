//! Locking shared by every crate of the grid.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, also after a thread panicked while holding it: every guarded value in the
/// grid is left consistent between statements, and one failed task must not take the
/// whole process down with it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
