//! A rollout's rules, pure: which agents update when (canaries first, then waves with a wait
//! between them), when a target counts as failed (it reported a failure, or did not come back
//! on the new version in time), and when the rollout halts (a failure while `halt_on_failure`)
//! or completes. It takes `now` and events and returns effects; the driver carries them out.

use reap3r_store::Uuid;

/// How a rollout proceeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutPlan {
    /// Agents updated first, alone; the rest waits until every canary is done.
    pub canary: usize,
    /// Agents updated at once after the canaries, per wave.
    pub wave_size: usize,
    /// Wait after the canaries, and after each wave, before the next wave starts.
    pub wave_wait_ms: i64,
    /// A failed target halts the rollout: nothing more starts.
    pub halt_on_failure: bool,
    /// A target that has not come back on the new version this long after its update
    /// started has failed (its watchdog reverted it, or it is gone).
    pub confirm_timeout_ms: i64,
}

/// The canary count of `percent` of `targets` agents: rounded up, at least 1.
pub fn canary_of_percent(targets: usize, percent: u8) -> usize {
    (targets * usize::from(percent.min(100)))
        .div_ceil(100)
        .max(1)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetState {
    Waiting,
    Updating { since_ms: i64 },
    Updated,
    Failed(String),
}

impl TargetState {
    fn is_done(&self) -> bool {
        matches!(self, Self::Updated | Self::Failed(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Canaries or a wave are updating.
    Updating,
    /// Between waves, until this time.
    Waiting {
        until_ms: i64,
    },
    Halted(String),
    Completed,
}

/// What the driver does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send the update to this agent.
    Update(Uuid),
    /// The rollout stopped: nothing more starts (targets updating finish on their own).
    Halt(String),
    Complete,
}

#[derive(Debug, Clone)]
pub struct Rollout {
    plan: RolloutPlan,
    targets: Vec<(Uuid, TargetState)>,
    phase: Phase,
}

impl Rollout {
    /// A rollout over `targets`, in order (the first `plan.canary` are the canaries).
    pub fn new(plan: RolloutPlan, targets: Vec<Uuid>) -> Self {
        Self {
            plan,
            targets: targets
                .into_iter()
                .map(|t| (t, TargetState::Waiting))
                .collect(),
            phase: Phase::Waiting { until_ms: 0 },
        }
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    pub fn targets(&self) -> &[(Uuid, TargetState)] {
        &self.targets
    }

    /// Starts the canaries.
    pub fn start(&mut self, now_ms: i64) -> Vec<Effect> {
        let canary = self.plan.canary.max(1);
        self.start_next(canary, now_ms)
    }

    /// The agent came back on the new version.
    pub fn updated(&mut self, agent: Uuid, now_ms: i64) -> Vec<Effect> {
        self.finish(agent, TargetState::Updated, now_ms)
    }

    /// The agent reported that the update failed (refused, or reverted by its watchdog).
    pub fn failed(&mut self, agent: Uuid, why: String, now_ms: i64) -> Vec<Effect> {
        self.finish(agent, TargetState::Failed(why), now_ms)
    }

    /// Timeouts and the wait between waves.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Effect> {
        let timeout = self.plan.confirm_timeout_ms;
        let late: Vec<Uuid> = self
            .targets
            .iter()
            .filter_map(|(id, state)| match state {
                TargetState::Updating { since_ms } if now_ms - since_ms >= timeout => Some(*id),
                _ => None,
            })
            .collect();
        let mut effects = Vec::new();
        for id in late {
            let why = format!(
                "did not come back on the new version within {} s",
                timeout / 1000
            );
            effects.extend(self.finish(id, TargetState::Failed(why), now_ms));
        }
        if let Phase::Waiting { until_ms } = self.phase
            && now_ms >= until_ms
        {
            effects.extend(self.start_next(self.plan.wave_size.max(1), now_ms));
        }
        effects
    }

    /// Stops starting updates (an operator's halt).
    pub fn halt(&mut self, why: String) -> Vec<Effect> {
        if matches!(self.phase, Phase::Halted(_) | Phase::Completed) {
            return Vec::new();
        }
        self.phase = Phase::Halted(why.clone());
        vec![Effect::Halt(why)]
    }

    fn finish(&mut self, agent: Uuid, state: TargetState, now_ms: i64) -> Vec<Effect> {
        let Some((_, current)) = self.targets.iter_mut().find(|(id, _)| *id == agent) else {
            return Vec::new();
        };
        // Only an update in flight can end (a late or repeated report changes nothing).
        if !matches!(current, TargetState::Updating { .. }) {
            return Vec::new();
        }
        let failure = match &state {
            TargetState::Failed(why) => Some(why.clone()),
            _ => None,
        };
        *current = state;
        if let (Some(why), true) = (failure, self.plan.halt_on_failure)
            && !matches!(self.phase, Phase::Halted(_))
        {
            return self.halt(format!("agent {agent} failed: {why}"));
        }
        let in_flight = self
            .targets
            .iter()
            .any(|(_, s)| matches!(s, TargetState::Updating { .. }));
        if in_flight || self.phase != Phase::Updating {
            return Vec::new();
        }
        if self.targets.iter().all(|(_, s)| s.is_done()) {
            self.phase = Phase::Completed;
            return vec![Effect::Complete];
        }
        self.phase = Phase::Waiting {
            until_ms: now_ms + self.plan.wave_wait_ms,
        };
        Vec::new()
    }

    /// Starts up to `n` waiting targets.
    fn start_next(&mut self, n: usize, now_ms: i64) -> Vec<Effect> {
        if matches!(self.phase, Phase::Halted(_) | Phase::Completed) {
            return Vec::new();
        }
        let mut effects = Vec::new();
        for (id, state) in self
            .targets
            .iter_mut()
            .filter(|(_, s)| *s == TargetState::Waiting)
            .take(n)
        {
            *state = TargetState::Updating { since_ms: now_ms };
            effects.push(Effect::Update(*id));
        }
        if effects.is_empty() {
            self.phase = Phase::Completed;
            return vec![Effect::Complete];
        }
        self.phase = Phase::Updating;
        effects
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agents(n: u8) -> Vec<Uuid> {
        (1..=n).map(|i| Uuid::from_bytes([i; 16])).collect()
    }

    fn plan(canary: usize, wave_size: usize) -> RolloutPlan {
        RolloutPlan {
            canary,
            wave_size,
            wave_wait_ms: 1_000,
            halt_on_failure: true,
            confirm_timeout_ms: 60_000,
        }
    }

    /// The effects as text: `update N` (N: the agent's byte), `halt`, `complete`.
    fn check(effects: Vec<Effect>, want: &[&str]) {
        let got: Vec<String> = effects
            .iter()
            .map(|e| match e {
                Effect::Update(id) => format!("update {}", id.as_bytes()[0]),
                Effect::Halt(_) => "halt".into(),
                Effect::Complete => "complete".into(),
            })
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn canaries_first_then_waves_after_the_wait_then_complete() {
        let a = agents(5);
        let mut r = Rollout::new(plan(1, 2), a.clone());
        check(r.start(0), &["update 1"]);
        check(r.tick(500), &[]);
        check(r.updated(a[0], 600), &[]);
        assert_eq!(r.phase(), &Phase::Waiting { until_ms: 1_600 });
        check(r.tick(1_599), &[]);
        check(r.tick(1_600), &["update 2", "update 3"]);
        check(r.updated(a[1], 2_000), &[]);
        check(r.updated(a[2], 2_100), &[]);
        check(r.tick(3_100), &["update 4", "update 5"]);
        check(r.updated(a[3], 3_200), &[]);
        check(r.updated(a[4], 3_300), &["complete"]);
        assert_eq!(r.phase(), &Phase::Completed);
        check(r.tick(10_000), &[]);
    }

    #[test]
    fn a_failed_canary_halts_and_the_others_are_untouched() {
        let a = agents(3);
        let mut r = Rollout::new(plan(1, 10), a.clone());
        check(r.start(0), &["update 1"]);
        check(
            r.failed(a[0], "reverted by the watchdog".into(), 10),
            &["halt"],
        );
        assert!(matches!(r.phase(), Phase::Halted(why) if why.contains("reverted")));
        check(r.tick(100_000), &[]);
        let waiting = r
            .targets()
            .iter()
            .filter(|(_, s)| *s == TargetState::Waiting)
            .count();
        assert_eq!(waiting, 2);
    }

    #[test]
    fn a_target_that_does_not_come_back_in_time_fails() {
        let a = agents(2);
        let mut r = Rollout::new(plan(1, 1), a.clone());
        check(r.start(0), &["update 1"]);
        check(r.tick(59_999), &[]);
        check(r.tick(60_000), &["halt"]);
        assert!(matches!(&r.targets()[0].1, TargetState::Failed(why) if why.contains("60 s")));
        // A late report of the timed-out target changes nothing.
        check(r.updated(a[0], 70_000), &[]);
        assert!(matches!(&r.targets()[0].1, TargetState::Failed(_)));
    }

    #[test]
    fn without_halt_on_failure_failures_are_counted_and_the_rollout_goes_on() {
        let a = agents(3);
        let mut r = Rollout::new(
            RolloutPlan {
                halt_on_failure: false,
                ..plan(1, 5)
            },
            a.clone(),
        );
        check(r.start(0), &["update 1"]);
        check(r.failed(a[0], "refused".into(), 5), &[]);
        check(r.tick(1_005), &["update 2", "update 3"]);
        check(r.updated(a[1], 1_100), &[]);
        check(r.updated(a[2], 1_200), &["complete"]);
        // An operator's halt after the end changes nothing; reports for unknown agents neither.
        check(r.halt("late".into()), &[]);
        check(r.updated(Uuid::from_bytes([9; 16]), 2_000), &[]);
    }

    #[test]
    fn canary_percentages_round_up_and_an_empty_rollout_completes() {
        assert_eq!(canary_of_percent(3, 10), 1);
        assert_eq!(canary_of_percent(100, 10), 10);
        assert_eq!(canary_of_percent(101, 10), 11);
        assert_eq!(canary_of_percent(5, 0), 1);
        assert_eq!(canary_of_percent(5, 200), 5);
        let mut r = Rollout::new(plan(1, 1), Vec::new());
        check(r.start(0), &["complete"]);
    }
}
