//! Rate limits for repeated log lines: one line per key per period, so a peer that stays
//! unreachable (or a library that reports every failed RPC of every group) costs a line
//! every few seconds, not one per attempt.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use grid_proto::sync::lock;

use tracing::callsite::Identifier;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata};
use tracing_subscriber::layer::{Context, Filter};

/// Keys remembered at most: a bound on memory whatever the keys are. Past it, keys not
/// seen within the period are forgotten; if all are recent, new keys are let through
/// unrecorded (a line too many beats a line lost).
const MAX_KEYS: usize = 4096;

/// Lets one line per key through per period, counting the ones it held back. Time is
/// passed in, so the rule is tested without waiting.
#[derive(Debug)]
pub struct RateLimit<K> {
    period: Duration,
    /// Key -> (when a line last went through, lines held back since).
    last: Mutex<HashMap<K, (Instant, u64)>>,
}

impl<K: Hash + Eq> RateLimit<K> {
    /// One line per key per `period`.
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(held back since the last line)` when a line for `key` may be written at
    /// `now`; `None` (and one more held back) when it is a repeat within the period.
    pub fn allow(&self, key: K, now: Instant) -> Option<u64> {
        let mut last = lock(&self.last);
        if let Some((at, held)) = last.get_mut(&key) {
            if now.saturating_duration_since(*at) < self.period {
                *held += 1;
                return None;
            }
            let suppressed = *held;
            *at = now;
            *held = 0;
            return Some(suppressed);
        }
        if last.len() >= MAX_KEYS {
            let period = self.period;
            last.retain(|_, (at, _)| now.saturating_duration_since(*at) < period);
            if last.len() >= MAX_KEYS {
                return Some(0);
            }
        }
        last.insert(key, (now, 0));
        Some(0)
    }
}

/// A log filter that lets warnings and errors of targets under `prefix` through at most
/// once per call site per period; everything else passes. Meant for libraries that log
/// every failed attempt (openraft reports each failed RPC of each group, many per second
/// while a peer is unreachable).
#[derive(Debug)]
pub struct QuietRepeats {
    prefix: &'static str,
    limit: RateLimit<Identifier>,
}

impl QuietRepeats {
    /// Warnings and errors of targets starting with `prefix`, one per call site per
    /// `period`.
    pub fn new(prefix: &'static str, period: Duration) -> Self {
        Self {
            prefix,
            limit: RateLimit::new(period),
        }
    }

    fn applies(&self, meta: &Metadata<'_>) -> bool {
        meta.is_event() && *meta.level() <= Level::WARN && meta.target().starts_with(self.prefix)
    }
}

impl<S> Filter<S> for QuietRepeats {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        !self.applies(meta) || self.limit.allow(meta.callsite(), Instant::now()).is_some()
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.applies(meta) {
            // Decided per event: the answer changes with time.
            Interest::sometimes()
        } else {
            Interest::always()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_per_period_with_the_count_held_back() {
        let limit = RateLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.allow("a", t0), Some(0));
        assert_eq!(limit.allow("a", t0 + Duration::from_secs(1)), None);
        assert_eq!(limit.allow("a", t0 + Duration::from_secs(9)), None);
        // Another key is not held back by the first.
        assert_eq!(limit.allow("b", t0 + Duration::from_secs(9)), Some(0));
        // After the period the line goes through and says how many were held back.
        assert_eq!(limit.allow("a", t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(limit.allow("a", t0 + Duration::from_secs(11)), None);
    }

    #[test]
    fn memory_is_bounded_whatever_the_keys() {
        let limit = RateLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        for k in 0..MAX_KEYS {
            assert!(limit.allow(k, t0).is_some());
        }
        // Full of recent keys: a new one passes, unrecorded.
        assert_eq!(limit.allow(MAX_KEYS, t0), Some(0));
        assert_eq!(limit.allow(MAX_KEYS, t0), Some(0));
        // Once the old keys are stale they are forgotten and new keys are recorded again.
        let later = t0 + Duration::from_secs(20);
        assert_eq!(limit.allow(MAX_KEYS + 1, later), Some(0));
        assert_eq!(limit.allow(MAX_KEYS + 1, later), None);
        assert!(lock(&limit.last).len() < 2);
    }
}
