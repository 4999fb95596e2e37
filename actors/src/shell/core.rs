//! The rules of one shell session, pure: when it starts, when it ends, and when the server
//! tries to reattach to the agent. The relay feeds it what happens (an operator's socket
//! attaching or going away, keystrokes, the agent's answers, the channel to the agent
//! dropping) with the time, and carries out the [`Effect`]s it returns.
//!
//! A session ends when
//! - no operator attaches and no shell starts before the grant's deadline;
//! - nothing was typed for the idle timeout, or it ran for its maximum duration;
//! - the operator's socket went away and did not come back within the reattach grace;
//! - the channel to the agent dropped and no reattach succeeded within the grace.

/// Between two attempts to reattach to the agent after its channel dropped.
pub const AGENT_RETRY_MS: i64 = 2_000;

/// The limits one session runs under (from [`super::ShellSettings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub idle_timeout_ms: i64,
    pub max_duration_ms: i64,
    /// How long the session waits for a socket (or the agent's channel) to come back.
    pub reattach_grace_ms: i64,
}

/// What the relay does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Open the channel to the agent: start the shell (`None`) or reattach from an offset.
    OpenAgent { resume_from: Option<u64> },
    /// End the session for this reason.
    End(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Never attached yet.
    Never,
    Attached,
    /// Gone since this time.
    Detached(i64),
}

#[derive(Debug, Clone)]
pub struct ShellCore {
    limits: Limits,
    expires_at_ms: i64,
    started_at_ms: Option<i64>,
    last_input_ms: i64,
    client: Link,
    agent: Link,
    /// An open (or reattach) is in flight: no other is asked for until it is answered.
    opening: bool,
    next_retry_ms: i64,
    /// Output offset the next byte from the agent has.
    next_offset: u64,
    bytes_in: u64,
    ended: bool,
}

impl ShellCore {
    pub fn new(limits: Limits, created_at_ms: i64, expires_at_ms: i64) -> Self {
        Self {
            limits,
            expires_at_ms,
            started_at_ms: None,
            last_input_ms: created_at_ms,
            client: Link::Never,
            agent: Link::Never,
            opening: false,
            next_retry_ms: 0,
            next_offset: 0,
            bytes_in: 0,
            ended: false,
        }
    }

    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    pub fn bytes_out(&self) -> u64 {
        self.next_offset
    }

    pub fn is_started(&self) -> bool {
        self.started_at_ms.is_some()
    }

    /// An operator's socket attached. The first one starts the shell.
    pub fn client_attached(&mut self, now: i64) -> Vec<Effect> {
        self.client = Link::Attached;
        if self.agent == Link::Never && !self.opening {
            if now > self.expires_at_ms {
                return self.end("the shell was not opened before its grant expired".into());
            }
            self.opening = true;
            return vec![Effect::OpenAgent { resume_from: None }];
        }
        Vec::new()
    }

    /// The operator's socket went away without closing the session.
    pub fn client_detached(&mut self, now: i64) {
        if self.client == Link::Attached {
            self.client = Link::Detached(now);
        }
    }

    /// Keystrokes went to the agent.
    pub fn input(&mut self, now: i64, len: usize) {
        self.last_input_ms = now;
        self.bytes_in += len as u64;
    }

    /// The agent started the shell (or reattached to it).
    pub fn agent_opened(&mut self, now: i64) {
        self.opening = false;
        self.agent = Link::Attached;
        if self.started_at_ms.is_none() {
            self.started_at_ms = Some(now);
            self.last_input_ms = now;
        }
    }

    /// The agent refused the open (or reattach); the session ends.
    pub fn agent_refused(&mut self, why: &str) -> Vec<Effect> {
        self.opening = false;
        self.end(format!("the agent refused: {why}"))
    }

    /// Output from the agent at `offset`; what it repeats of what was already seen (after a
    /// reattach) is cut. Returns the new bytes' start within `len` (the relay forwards and
    /// records only those).
    pub fn output(&mut self, offset: u64, len: usize) -> usize {
        // A hostile offset near u64::MAX counts as all seen.
        let Some(end) = offset.checked_add(len as u64) else {
            return len;
        };
        if end <= self.next_offset {
            return len;
        }
        let skip = self.next_offset.saturating_sub(offset) as usize;
        self.next_offset = end;
        skip
    }

    /// The channel to the agent dropped (or an open failed) before the shell exited.
    pub fn agent_lost(&mut self, now: i64) {
        self.opening = false;
        // A failed reattach keeps the retry schedule (one attempt per AGENT_RETRY_MS).
        if (self.agent != Link::Never || self.started_at_ms.is_some())
            && !matches!(self.agent, Link::Detached(_))
        {
            self.agent = Link::Detached(now);
            self.next_retry_ms = now;
        }
    }

    /// Checks the clocks; call about once a second.
    pub fn tick(&mut self, now: i64) -> Vec<Effect> {
        if self.ended {
            return Vec::new();
        }
        let Some(started) = self.started_at_ms else {
            if now > self.expires_at_ms && !self.opening {
                return self.end("the shell was not opened before its grant expired".into());
            }
            if self.agent == Link::Never && self.opening && now > self.expires_at_ms + 30_000 {
                return self.end("the agent did not answer the shell grant".into());
            }
            return Vec::new();
        };
        let limits = self.limits;
        if now - started >= limits.max_duration_ms {
            return self.end(format!(
                "the session reached its maximum duration ({} s)",
                limits.max_duration_ms / 1000
            ));
        }
        if now - self.last_input_ms >= limits.idle_timeout_ms {
            return self.end(format!("no input for {} s", limits.idle_timeout_ms / 1000));
        }
        if let Link::Detached(since) = self.client
            && now - since >= limits.reattach_grace_ms
        {
            return self.end("the operator's connection did not come back".into());
        }
        if let Link::Detached(since) = self.agent {
            if now - since >= limits.reattach_grace_ms {
                return self.end("the connection to the agent did not come back".into());
            }
            if !self.opening && now >= self.next_retry_ms {
                self.opening = true;
                self.next_retry_ms = now + AGENT_RETRY_MS;
                return vec![Effect::OpenAgent {
                    resume_from: Some(self.next_offset),
                }];
            }
        }
        Vec::new()
    }

    /// Ends the session (once).
    pub fn end(&mut self, reason: String) -> Vec<Effect> {
        if self.ended {
            return Vec::new();
        }
        self.ended = true;
        vec![Effect::End(reason)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        idle_timeout_ms: 60_000,
        max_duration_ms: 600_000,
        reattach_grace_ms: 30_000,
    };

    fn core() -> ShellCore {
        ShellCore::new(LIMITS, 0, 10_000)
    }

    /// The effects of a tick at `now`, as text.
    fn check(core: &mut ShellCore, now: i64, expected: &[&str]) {
        let got: Vec<String> = core
            .tick(now)
            .into_iter()
            .map(|e| match e {
                Effect::OpenAgent { resume_from } => format!("open {resume_from:?}"),
                Effect::End(why) => format!("end: {why}"),
            })
            .collect();
        assert_eq!(got, expected, "at {now} ms");
    }

    fn started() -> ShellCore {
        let mut c = core();
        assert_eq!(
            c.client_attached(1_000),
            [Effect::OpenAgent { resume_from: None }]
        );
        c.agent_opened(1_100);
        c
    }

    #[test]
    fn the_first_socket_opens_the_shell_once() {
        let mut c = core();
        assert_eq!(c.client_attached(1_000).len(), 1);
        c.client_detached(1_500);
        assert!(c.client_attached(1_600).is_empty(), "an open is in flight");
        c.agent_opened(1_700);
        assert!(c.is_started());
        assert!(c.client_attached(2_000).is_empty());
    }

    #[test]
    fn an_unopened_session_ends_at_its_deadline() {
        let mut c = core();
        check(&mut c, 10_000, &[]);
        check(
            &mut c,
            10_001,
            &["end: the shell was not opened before its grant expired"],
        );
        check(&mut c, 20_000, &[]);
        let mut late = core();
        assert_eq!(
            late.client_attached(10_001),
            [Effect::End(
                "the shell was not opened before its grant expired".into()
            )]
        );
    }

    #[test]
    fn idle_and_maximum_duration_end_it() {
        let mut c = started();
        c.input(30_000, 3);
        check(&mut c, 89_999, &[]);
        check(&mut c, 90_000, &["end: no input for 60 s"]);
        let mut c = started();
        for t in (1..12).map(|i| i * 50_000) {
            c.input(t, 1);
            check(&mut c, t, &[]);
        }
        check(
            &mut c,
            601_100,
            &["end: the session reached its maximum duration (600 s)"],
        );
        assert_eq!(c.bytes_in(), 11);
    }

    #[test]
    fn a_socket_that_goes_away_has_the_grace_to_come_back() {
        let mut c = started();
        c.client_detached(5_000);
        check(&mut c, 34_999, &[]);
        assert!(c.client_attached(34_999).is_empty());
        c.input(60_000, 1);
        check(&mut c, 60_000, &[]);
        c.client_detached(61_000);
        check(
            &mut c,
            91_000,
            &["end: the operator's connection did not come back"],
        );
    }

    #[test]
    fn a_lost_agent_channel_is_reopened_from_the_last_offset_until_the_grace_ends() {
        let mut c = started();
        assert_eq!(c.output(0, 10), 0);
        c.agent_lost(5_000);
        check(&mut c, 5_000, &["open Some(10)"]);
        check(&mut c, 6_000, &[]);
        c.agent_lost(6_500); // the reattach failed
        check(&mut c, 6_999, &[]);
        check(&mut c, 7_000, &["open Some(10)"]);
        c.agent_lost(7_100);
        check(&mut c, 8_000, &[]);
        check(&mut c, 9_000, &["open Some(10)"]);
        c.agent_opened(9_100);
        // The agent repeats from what it kept: only the new part counts.
        assert_eq!(c.output(4, 10), 6);
        assert_eq!(c.output(8, 4), 4, "all seen already");
        assert_eq!(c.bytes_out(), 14);
        check(&mut c, 40_000, &[]);
        let mut c = started();
        c.agent_lost(5_000);
        check(&mut c, 5_000, &["open Some(0)"]);
        c.agent_lost(5_100);
        check(
            &mut c,
            35_000,
            &["end: the connection to the agent did not come back"],
        );
    }

    #[test]
    fn a_refusal_ends_it_once() {
        let mut c = core();
        c.client_attached(1_000);
        assert_eq!(
            c.agent_refused("bad grant"),
            [Effect::End("the agent refused: bad grant".into())]
        );
        assert!(c.end("again".into()).is_empty());
        check(&mut c, 99_000, &[]);
    }
}
