//! The bounded per-agent window a threshold rule aggregates over: samples older than the window
//! fall out, and at most [`MAX_WINDOW_SAMPLES`] are kept whatever the sample rate.

use std::collections::VecDeque;

use crate::alerts::rule::Aggregation;

/// Most samples one agent's window holds (an hour at one sample every 5 s is 720).
pub const MAX_WINDOW_SAMPLES: usize = 1024;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    samples: VecDeque<(i64, f64)>,
}

impl Window {
    /// Adds a sample taken at `at` and drops those older than `at - window_ms`. A sample older
    /// than the newest one held is ignored (replays after an outage arrive in order).
    pub fn push(&mut self, at: i64, value: f64, window_ms: i64) {
        if self.samples.back().is_some_and(|(t, _)| *t > at) {
            return;
        }
        self.samples.push_back((at, value));
        while self.samples.len() > MAX_WINDOW_SAMPLES {
            self.samples.pop_front();
        }
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| *t <= at - window_ms)
        {
            self.samples.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The aggregated value, `None` while empty.
    pub fn value(&self, aggregation: Aggregation) -> Option<f64> {
        let values = self.samples.iter().map(|(_, v)| *v);
        match aggregation {
            Aggregation::Last => self.samples.back().map(|(_, v)| *v),
            Aggregation::Min => values.reduce(f64::min),
            Aggregation::Max => values.reduce(f64::max),
            Aggregation::Avg => {
                let n = self.samples.len();
                (n > 0).then(|| values.sum::<f64>() / n as f64)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_samples_fall_out_and_the_count_is_capped() {
        let mut w = Window::default();
        w.push(0, 10.0, 60_000);
        w.push(30_000, 20.0, 60_000);
        assert_eq!(w.value(Aggregation::Avg), Some(15.0));
        w.push(60_000, 30.0, 60_000);
        assert_eq!(w.len(), 2, "the sample at 0 is a full window old");
        assert_eq!(w.value(Aggregation::Min), Some(20.0));
        assert_eq!(w.value(Aggregation::Max), Some(30.0));
        assert_eq!(w.value(Aggregation::Last), Some(30.0));
        w.push(10_000, 99.0, 60_000);
        assert_eq!(
            w.value(Aggregation::Max),
            Some(30.0),
            "out of order is ignored"
        );
        for i in 0..(MAX_WINDOW_SAMPLES as i64 + 10) {
            w.push(100_000 + i, 1.0, 3_600_000);
        }
        assert_eq!(w.len(), MAX_WINDOW_SAMPLES);
        assert_eq!(Window::default().value(Aggregation::Avg), None);
    }
}
