//! The loop: waits for complete caches, debounces bursts of changes, resyncs, and keeps the per-object
//! back-off of failed steps.

use crate::informers::{Informers, Signal};
use futures::stream::{BoxStream, SelectAll};
use futures::{FutureExt, StreamExt};
use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// How a loop paces its passes.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Quiet time after a change before a pass runs, so a burst gives one pass.
    pub debounce: Duration,
    /// A pass runs at least this often even without changes (time-based decisions, retries of plans
    /// that depend on other objects).
    pub resync: Duration,
    /// First back-off of a failed step; it doubles per consecutive failure of the same object.
    pub backoff_base: Duration,
    /// The longest back-off.
    pub backoff_max: Duration,
}

impl Default for Settings {
    /// 20 ms debounce, 5 s resync, back-off 200 ms doubling to 60 s.
    fn default() -> Self {
        Settings {
            debounce: Duration::from_millis(20),
            resync: Duration::from_secs(5),
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(60),
        }
    }
}

impl Settings {
    /// The back-off after `failures` consecutive failures of one object: `backoff_base` doubling per
    /// failure, at most `backoff_max`.
    #[must_use]
    pub fn backoff(&self, failures: u32) -> Duration {
        backoff(self, failures)
    }
}

#[derive(Debug, Clone, Copy)]
struct Retry {
    failures: u32,
    not_before: Instant,
}

/// A running loop over [`Informers`]: call [`Loop::next_pass`] forever.
pub struct Loop {
    name: &'static str,
    events: SelectAll<BoxStream<'static, (usize, Signal)>>,
    kinds: Vec<String>,
    synced: Vec<bool>,
    settings: Settings,
    resync: tokio::time::Interval,
    retries: HashMap<String, Retry>,
    /// Whether the loop has said it waits for caches (or has not planned yet): the next pass on complete
    /// caches is logged.
    announce: bool,
    /// When the last pass ended, and how long it spent outside its steps (planning over the caches).
    last: Option<(Instant, Duration)>,
}

/// A pass that planned for `d` is followed by at least `PACE × d` of quiet: a loop plans at most about a
/// quarter of the time, however fast changes come. Upstream's controllers are incremental (a work queue of
/// changed keys); Berth's passes are level-based over whole caches, so with 10,000 pods one pass costs
/// milliseconds and a change every few milliseconds would otherwise keep a core busy re-planning.
const PACE: u32 = 3;

impl Informers {
    /// Start the loop named `name` (used in logs) over these watches.
    #[must_use]
    pub fn into_loop(self, name: &'static str, settings: Settings) -> Loop {
        let synced = vec![false; self.streams.len()];
        let mut resync = tokio::time::interval(settings.resync);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Loop {
            name,
            events: futures::stream::select_all(self.streams),
            kinds: self.kinds,
            synced,
            settings,
            resync,
            retries: HashMap::new(),
            announce: true,
            last: None,
        }
    }
}

impl Loop {
    fn apply(&mut self, (i, signal): (usize, Signal)) {
        match signal {
            Signal::Relisting => self.synced[i] = false,
            Signal::Synced => self.synced[i] = true,
            Signal::Changed | Signal::Failed => {}
        }
    }

    /// Whether every cache holds a complete list.
    #[must_use]
    pub fn is_synced(&self) -> bool {
        self.synced.iter().all(|s| *s)
    }

    /// Wait for the next pass: after a change (debounced), a resync tick or a retry falling due, once
    /// every cache is complete. `None` only when every watch stream ended (kube's watchers never do).
    pub async fn next_pass(&mut self) -> Option<Pass<'_>> {
        loop {
            let retry_at = self.retries.values().map(|r| r.not_before).min();
            tokio::select! {
                ev = self.events.next() => match ev {
                    None => return None,
                    Some(ev) => self.apply(ev),
                },
                _ = self.resync.tick() => {}
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {}
            }
            // Let a burst of changes settle, and space passes by their planning time.
            let mut until = Instant::now() + self.settings.debounce;
            if let Some((ended, planned)) = self.last {
                until = until.max(ended + planned.saturating_mul(PACE));
            }
            tokio::time::sleep_until(until).await;
            while let Some(Some(ev)) = self.events.next().now_or_never() {
                self.apply(ev);
            }
            if self.is_synced() {
                if self.announce {
                    tracing::info!(loop_ = self.name, "caches complete; planning");
                    self.announce = false;
                }
                return Some(Pass {
                    lp: self,
                    seen: HashSet::new(),
                    started: Instant::now(),
                    in_steps: Duration::ZERO,
                });
            }
            if !self.announce {
                let waiting: Vec<&str> = self
                    .kinds
                    .iter()
                    .zip(&self.synced)
                    .filter(|(_, s)| !**s)
                    .map(|(k, _)| k.as_str())
                    .collect();
                tracing::info!(
                    loop_ = self.name,
                    ?waiting,
                    "waiting for complete caches before planning"
                );
                self.announce = true;
            }
        }
    }
}

/// One pass over complete caches: run the plan's steps through [`Pass::step`].
pub struct Pass<'a> {
    lp: &'a mut Loop,
    seen: HashSet<String>,
    started: Instant,
    /// Time spent awaiting steps (API requests), not planning.
    in_steps: Duration,
}

impl Pass<'_> {
    /// Run `step` for the object `key` (for example `"Pod default/web-0"`), unless an earlier failure of
    /// that object is still backing off, in which case `step` is dropped unpolled. Returns whether it ran
    /// and succeeded. A failure is logged at warn with the object and the error and backs the object off
    /// (doubling from [`Settings::backoff_base`] to [`Settings::backoff_max`]); a success clears it.
    pub async fn step<T, E: Display>(&mut self, key: &str, step: impl Future<Output = Result<T, E>>) -> bool {
        self.seen.insert(key.to_string());
        let now = Instant::now();
        if self.lp.retries.get(key).is_some_and(|r| r.not_before > now) {
            return false;
        }
        let result = step.await;
        self.in_steps += now.elapsed();
        match result {
            Ok(_) => {
                self.lp.retries.remove(key);
                true
            }
            Err(e) => {
                let failures = self.lp.retries.get(key).map_or(0, |r| r.failures) + 1;
                let delay = backoff(&self.lp.settings, failures);
                tracing::warn!(loop_ = self.lp.name, object = key, error = %e, retry_in = ?delay, "step failed");
                self.lp.retries.insert(
                    key.to_string(),
                    Retry {
                        failures,
                        not_before: Instant::now() + delay,
                    },
                );
                false
            }
        }
    }
}

impl Drop for Pass<'_> {
    /// Objects the plan no longer asks about are forgotten.
    fn drop(&mut self) {
        let seen = &self.seen;
        self.lp.retries.retain(|k, _| seen.contains(k));
        let planned = self.started.elapsed().saturating_sub(self.in_steps);
        self.lp.last = Some((Instant::now(), planned));
    }
}

/// The back-off after `failures` consecutive failures.
fn backoff(s: &Settings, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(20);
    s.backoff_base.saturating_mul(factor).min(s.backoff_max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    /// Real time, scaled down: 1 ms debounce, 1 s resync, back-off 50 ms doubling to 1 s.
    const FAST: Settings = Settings {
        debounce: Duration::from_millis(1),
        resync: Duration::from_secs(1),
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_secs(1),
    };

    fn lp(signals: Vec<(usize, Signal)>, kinds: usize) -> Loop {
        let streams: Vec<BoxStream<'static, (usize, Signal)>> = (0..kinds)
            .map(|k| {
                let mine: Vec<_> = signals.iter().copied().filter(|(i, _)| *i == k).collect();
                stream::iter(mine).chain(stream::pending()).boxed()
            })
            .collect();
        Informers {
            streams,
            kinds: (0..kinds).map(|k| format!("K{k}")).collect(),
        }
        .into_loop("test", FAST)
    }

    #[tokio::test]
    async fn no_pass_until_every_cache_has_listed() {
        let mut l = lp(
            vec![
                (0, Signal::Relisting),
                (0, Signal::Synced),
                (1, Signal::Relisting),
            ],
            2,
        );
        let timed_out = tokio::time::timeout(Duration::from_millis(1500), l.next_pass())
            .await
            .is_err();
        assert!(timed_out, "one cache never completed its list: no pass");
        let mut l = lp(
            vec![
                (0, Signal::Relisting),
                (0, Signal::Synced),
                (1, Signal::Relisting),
                (1, Signal::Changed),
                (1, Signal::Synced),
            ],
            2,
        );
        assert!(l.next_pass().await.is_some());
    }

    #[tokio::test]
    async fn a_relist_stops_passes_until_it_completes() {
        let mut l = lp(vec![(0, Signal::Relisting), (0, Signal::Synced)], 1);
        assert!(l.next_pass().await.is_some());
        l.apply((0, Signal::Relisting));
        assert!(!l.is_synced());
        let timed_out = tokio::time::timeout(Duration::from_millis(1500), l.next_pass())
            .await
            .is_err();
        assert!(timed_out);
        l.apply((0, Signal::Failed));
        assert!(!l.is_synced(), "an error alone does not complete a relist");
        l.apply((0, Signal::Synced));
        assert!(l.next_pass().await.is_some());
    }

    #[tokio::test]
    async fn a_failed_object_backs_off_while_others_run_and_its_retry_wakes_the_loop() {
        let mut l = lp(vec![(0, Signal::Relisting), (0, Signal::Synced)], 1);
        let failed_at;
        {
            let mut p = l.next_pass().await.expect("pass");
            assert!(!p.step("a", async { Err::<(), _>("boom") }).await);
            failed_at = Instant::now();
            let mut polled = false;
            let ran = p
                .step("a", async {
                    polled = true;
                    Ok::<(), &str>(())
                })
                .await;
            assert!(!ran && !polled, "a is backing off: its step is not even polled");
            assert!(
                p.step("b", async { Ok::<(), &str>(()) }).await,
                "b is not held up"
            );
        }
        // No change and no resync due for 1 s: the retry itself wakes the loop, once it is due.
        loop {
            let mut p = l.next_pass().await.expect("pass");
            let ran = p.step("a", async { Ok::<(), &str>(()) }).await;
            let waited = Instant::now() - failed_at;
            if ran {
                assert!(
                    waited >= Duration::from_millis(50) && waited < Duration::from_millis(500),
                    "{waited:?}"
                );
                break;
            }
            assert!(
                waited < Duration::from_millis(60),
                "due after 50 ms but not run at {waited:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_long_plan_spaces_the_next_pass_but_step_time_does_not() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<(usize, Signal)>();
        let mut l = Informers {
            streams: vec![
                stream::iter([(0, Signal::Relisting), (0, Signal::Synced)])
                    .chain(rx)
                    .boxed(),
            ],
            kinds: vec!["K0".into()],
        }
        .into_loop("test", FAST);
        // 60 ms of planning: the next pass comes no sooner than 3 × 60 ms after it, changes or not.
        {
            let _p = l.next_pass().await.expect("pass");
            std::thread::sleep(Duration::from_millis(60));
        }
        let ended = Instant::now();
        tx.unbounded_send((0, Signal::Changed)).expect("send");
        drop(l.next_pass().await.expect("pass"));
        let gap = ended.elapsed();
        assert!(gap >= Duration::from_millis(180), "{gap:?}");
        // 200 ms awaiting a step is not planning: the next pass follows a change after the debounce.
        {
            tx.unbounded_send((0, Signal::Changed)).expect("send");
            let mut p = l.next_pass().await.expect("pass");
            p.step("a", async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok::<(), &str>(())
            })
            .await;
        }
        let ended = Instant::now();
        tx.unbounded_send((0, Signal::Changed)).expect("send");
        drop(l.next_pass().await.expect("pass"));
        let gap = ended.elapsed();
        assert!(gap < Duration::from_millis(150), "{gap:?}");
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        let s = Settings::default();
        assert_eq!(backoff(&s, 1), Duration::from_millis(200));
        assert_eq!(backoff(&s, 2), Duration::from_millis(400));
        assert_eq!(backoff(&s, 30), Duration::from_secs(60));
    }
}
