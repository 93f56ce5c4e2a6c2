//! The drain gate of a group's leader: before it hands the group over or votes itself
//! out, it stops new proposals (they wait, then go to the new leader or run here if the
//! hand-over did not happen) and waits for those in flight, so none ends with an unknown
//! outcome. Waiting is on a count that notifies, not a poll.

use std::time::Duration;

use tokio::sync::watch;

/// Longest one wait for a hand-over lasts before the flag is looked at again.
const WAIT_LIMIT: Duration = Duration::from_secs(5);

/// Proposals in flight and whether the group is draining.
#[derive(Debug)]
pub(super) struct DrainGate {
    draining: watch::Sender<bool>,
    in_flight: watch::Sender<usize>,
}

impl Default for DrainGate {
    fn default() -> Self {
        Self {
            draining: watch::Sender::new(false),
            in_flight: watch::Sender::new(0),
        }
    }
}

/// One proposal counted in flight; counted out when dropped, however it ends.
pub(super) struct Pass<'a>(&'a DrainGate);

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.0.in_flight.send_modify(|n| *n -= 1);
    }
}

impl DrainGate {
    /// Lets a proposal in, once the group is not draining. Counted in flight
    /// before the drain flag is looked at, so a drain that starts meanwhile either waits
    /// for this proposal or is seen by it.
    pub(super) async fn enter(&self) -> Pass<'_> {
        loop {
            self.in_flight.send_modify(|n| *n += 1);
            let pass = Pass(self);
            if !*self.draining.borrow() {
                return pass;
            }
            drop(pass);
            self.wait_while_draining().await;
        }
    }

    /// Holds the caller while a hand-over is under way (bounded).
    pub(super) async fn wait_while_draining(&self) {
        let mut rx = self.draining.subscribe();
        let _ = tokio::time::timeout(WAIT_LIMIT, rx.wait_for(|draining| !*draining)).await;
    }

    /// Starts draining and waits up to `limit` for the proposals in flight. False if some
    /// are still out.
    pub(super) async fn drain(&self, limit: Duration) -> bool {
        self.draining.send_replace(true);
        let mut rx = self.in_flight.subscribe();
        let idle = tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await;
        matches!(idle, Ok(Ok(_)))
    }

    /// Lets proposals in again.
    pub(super) fn undrain(&self) {
        self.draining.send_replace(false);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_drain_waits_for_the_proposals_in_flight_and_holds_new_ones() {
        let gate = Arc::new(DrainGate::default());
        let pass = gate.enter().await;
        let drained = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move { gate.drain(Duration::from_secs(60)).await }
        });
        // The drain has started once the flag is up; a new proposal now waits.
        let mut flag = gate.draining.subscribe();
        flag.wait_for(|d| *d).await.expect("the gate lives");
        let entered = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move {
                let _pass = gate.enter().await;
            }
        });
        tokio::task::yield_now().await;
        assert!(!drained.is_finished() && !entered.is_finished());
        drop(pass);
        assert!(drained.await.expect("drain runs"));
        assert!(!entered.is_finished(), "entered while draining");
        gate.undrain();
        entered.await.expect("enters once undrained");
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_gives_up_after_its_limit() {
        let gate = DrainGate::default();
        let stuck = gate.enter().await;
        assert!(!gate.drain(Duration::from_secs(1)).await);
        gate.undrain();
        drop(stuck);
        let _pass = gate.enter().await;
        assert!(!gate.drain(Duration::from_secs(1)).await);
    }
}
