//! When an unacknowledged result goes out again on the same connection. A result stays in the
//! outbox until the server's `JobResultAck`; it is replayed after every `Welcome`, but a live
//! connection whose ack went missing (routed to a session of this agent that was already gone,
//! lost in a server-side failure) would otherwise hold it until the connection ends, which with
//! heartbeats may be never. So a result still unacknowledged [`RESEND_AFTER_MS`] after it was
//! last sent (or first seen here) is sent again; the server stores a result once and
//! acknowledges every copy, so a resend costs one frame and changes nothing else.

use std::collections::BTreeMap;

/// A result without its ack for this long is sent again, on the live connection.
pub const RESEND_AFTER_MS: u64 = 10_000;

/// Per unacknowledged job id: when its result last went out on the live connection.
#[derive(Debug, Default)]
pub(crate) struct Resends {
    since: BTreeMap<[u8; 16], u64>,
}

impl Resends {
    /// A new connection (its `Welcome` replays everything) or none: forget what was sent.
    pub(crate) fn clear(&mut self) {
        self.since.clear();
    }

    /// The result of `job_id` was acknowledged.
    pub(crate) fn acked(&mut self, job_id: &[u8; 16]) {
        self.since.remove(job_id);
    }

    /// Given the ids in the outbox at `now_ms`, returns those to send again (and counts them as
    /// sent now). An id seen for the first time starts its wait now.
    pub(crate) fn due(
        &mut self,
        outbox: impl IntoIterator<Item = [u8; 16]>,
        now_ms: u64,
    ) -> Vec<[u8; 16]> {
        let mut kept = BTreeMap::new();
        let mut due = Vec::new();
        for id in outbox {
            let since = match self.since.get(&id) {
                Some(&t) if now_ms.saturating_sub(t) >= RESEND_AFTER_MS => {
                    due.push(id);
                    now_ms
                }
                Some(&t) => t,
                None => now_ms,
            };
            kept.insert(id, since);
        }
        // Ids no longer in the outbox (acknowledged meanwhile) are dropped.
        self.since = kept;
        due
    }
}

#[cfg(test)]
mod tests {
    use reap3r_wire::Message;

    use super::super::rig::{NOW_MS, check, job};
    use super::*;

    /// Issue 17, defect 2: the server stored a result, its `JobResultAck` never reached the
    /// agent, and the connection stayed up, so nothing replayed it: the agent held the result
    /// for good (the flaky bench smoke "1 without JobResultAck"). Now it goes again on the live
    /// connection once its wait is over, until the ack comes; a new connection starts a new wait.
    #[test]
    fn an_unacknowledged_result_goes_again_on_the_live_connection() {
        let t = NOW_MS;
        check(
            |r| {
                r.connect();
                r.dispatch(1, r.grant(job(1)));
                r.finish(job(1), Some(1));
                r.resend(t);
                r.resend(t + RESEND_AFTER_MS - 1);
                r.resend(t + RESEND_AFTER_MS);
                r.resend(t + RESEND_AFTER_MS + 1);
                r.disconnect();
                r.resend(t + 3 * RESEND_AFTER_MS);
                r.connect();
                r.resend(t + 4 * RESEND_AFTER_MS);
                r.resend(t + 5 * RESEND_AFTER_MS);
                r.control(Message::JobResultAck { job_id: job(1) });
                r.resend(t + 7 * RESEND_AFTER_MS);
            },
            "
            welcome c1: config 30s
            c1 job#1: ack j1 accepted; start j1 on #1
            j1 finished: send c1 job#1 result j1; finish #1
            resend: -
            resend: -
            resend: send c1 uni result j1
            resend: -
            c1 down
            resend: -
            welcome c2: config 30s; send c2 uni result j1
            resend: -
            resend: send c2 uni result j1
            c2 control: acked j1 kept
            resend: -
            ",
        );
    }

    #[test]
    fn a_result_goes_again_once_per_wait_until_acked() {
        let mut r = Resends::default();
        let (a, b) = ([1; 16], [2; 16]);
        assert!(r.due([a], 0).is_empty(), "first seen: its wait starts");
        assert!(r.due([a, b], RESEND_AFTER_MS - 1).is_empty());
        assert_eq!(r.due([a, b], RESEND_AFTER_MS), vec![a]);
        assert!(r.due([a, b], RESEND_AFTER_MS + 1).is_empty(), "just sent");
        r.acked(&b);
        assert!(r.due([a], 2 * RESEND_AFTER_MS - 1).is_empty(), "{r:?}");
        assert_eq!(r.due([a], 2 * RESEND_AFTER_MS), vec![a]);
        r.clear();
        assert!(r.due([a], 5 * RESEND_AFTER_MS).is_empty(), "a new wait");
    }
}
