//! The one drain signal of a node. Shutdown raises it once; every subsystem that admits new work
//! (the QUIC gateway, the HTTP server, job dispatch) watches the same signal and stops admitting,
//! while work already admitted is allowed to finish (see `RootSupervisor`'s shutdown sequence).

use tokio::sync::watch;

/// Raises the signal. Held by whoever owns shutdown (the node).
#[derive(Debug, Clone)]
pub struct Drain(watch::Sender<bool>);

/// Watches the signal. Cheap to clone; handed to every subsystem.
#[derive(Debug, Clone)]
pub struct DrainSignal(watch::Receiver<bool>);

impl Default for Drain {
    fn default() -> Self {
        Self(watch::Sender::new(false))
    }
}

impl Drain {
    pub fn signal(&self) -> DrainSignal {
        DrainSignal(self.0.subscribe())
    }

    /// Starts draining; idempotent.
    pub fn start(&self) {
        self.0.send_replace(true);
    }
}

impl DrainSignal {
    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once draining has started (at once if it already has, or if the owner is gone).
    pub async fn started(&mut self) {
        let _ = self.0.wait_for(|d| *d).await;
    }
}

/// Waits, up to `grace`, until `active()` is 0, woken by `ended` each time some work ends;
/// returns what is still active then (0: all ended). For subsystems that end their own work at
/// shutdown and wait for its records (shell relays, file transfers).
pub(crate) async fn wait_until_idle(
    ended: &tokio::sync::Notify,
    grace: std::time::Duration,
    active: impl Fn() -> usize,
) -> usize {
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        // Registered before the check, so an end between the two is not missed.
        let woken = ended.notified();
        let left = active();
        if left == 0 || tokio::time::timeout_at(deadline, woken).await.is_err() {
            return left;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_watcher_sees_the_one_signal() {
        let drain = Drain::default();
        let mut a = drain.signal();
        let b = drain.signal();
        assert!(!a.is_draining());
        let waiter = tokio::spawn(async move {
            a.started().await;
            a.is_draining()
        });
        drain.start();
        drain.start();
        assert!(waiter.await.unwrap());
        assert!(b.is_draining());
        let mut late = drain.signal();
        late.started().await;
    }
}
