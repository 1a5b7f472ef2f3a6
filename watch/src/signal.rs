//! A wake-up flag for the sync thread: set from anywhere without blocking on
//! the hub, waited on with a timeout.

use std::time::Duration;

use parking_lot::{Condvar, Mutex};

#[derive(Debug, Default)]
pub(crate) struct Signal {
    woken: Mutex<bool>,
    cond: Condvar,
}

impl Signal {
    pub fn wake(&self) {
        *self.woken.lock() = true;
        self.cond.notify_one();
    }

    /// Waits until woken or `timeout` passes, and clears the flag.
    pub fn wait(&self, timeout: Duration) {
        let mut woken = self.woken.lock();
        if !*woken {
            self.cond.wait_for(&mut woken, timeout);
        }
        *woken = false;
    }
}
