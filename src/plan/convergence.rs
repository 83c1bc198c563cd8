//! Is a running live migration converging? A pure rule over the progress
//! samples Nova reports (`memory_total/processed/remaining_bytes`),
//! designed on the real QEMU series in `tests/fixtures/qemu/`.
//!
//! What libvirt/QEMU pre-copy looks like through Nova: the first pass copies
//! the whole memory (remaining falls from the total towards 0); at each
//! pass's end QEMU adds the pages the guest dirtied meanwhile, so remaining
//! **jumps up** and the next pass copies them again (a saw-tooth), while
//! `memory_processed_bytes` keeps growing past the total. A guest that
//! dirties memory slower than the bandwidth converges: each pass leaves less
//! dirty memory, until it fits Nova's downtime budget and the migration
//! switches over. One that dirties as fast leaves the same dirty memory pass
//! after pass (0.1–17 MiB saw-tooth for ever on the recorded 8 and 16 MiB
//! guests). "Remaining has not shrunk" cannot tell the two apart: every pass
//! goes down to nearly 0, and a new minimum comes by chance.
//!
//! The rule (`stall-timeout` = T seconds without progress):
//! * **Passes.** A rise of remaining by more than [`rise_threshold`] above
//!   the lowest value of the current pass starts a new pass; the value after
//!   the rise is the **dirty memory left by the previous pass**.
//! * **Progress** is (a) in the first pass, remaining reaching a new low
//!   (by more than [`low_margin`]); (b) a new pass whose dirty memory is at
//!   most 3/4 of the dirty memory at the last progress (the total memory
//!   for the first such pass). Falls inside a later pass are *not* progress:
//!   they are the same pages copied again.
//! * **Copying** is `memory_processed_bytes` growing (or remaining falling)
//!   by more than [`low_margin`].
//! * **Stalled** when T seconds passed since the last progress and either
//!   at least one pass since then failed to shrink the dirty memory
//!   (*not converging*), or nothing was copied for T seconds either
//!   (*copying stopped*: frozen counters), or memory was copied but
//!   remaining did not fall within the current pass for T seconds
//!   (*not shrinking*: the same pages sent again without a pass ending —
//!   what the fake driver's stall and a guest dirtying faster than the link
//!   inside one pass look like).
//!
//! Repeated samples (the stats refresh is not aligned with the polls) and
//! samples with zero counters (before libvirt's first stats) carry no
//! information: they change nothing. A non-converging migration is therefore
//! stalled at the first pass that ends T seconds or more after the last
//! progress — at most T + one pass after its first pass ended; a converging
//! one makes progress at every pass and is never stalled by it.

use serde::{Deserialize, Serialize};

use super::Millis;

const MIB: u64 = 1 << 20;

/// One progress sample of a running migration (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub total: u64,
    pub processed: u64,
    pub remaining: u64,
}

/// A rise of remaining above the pass's low `low` by more than this starts a
/// new pass: 1 MiB, 1/256 of the memory, or 1/8 of the low, whichever is
/// largest (QEMU's dirty-bitmap syncs near a pass's end add a few pages, not
/// a pass; a pass ends near 0, so a real rise starts from a small low).
pub fn rise_threshold(total: u64, low: u64) -> u64 {
    MIB.max(total / 256).max(low / 8)
}

/// Smallest change that counts as copying or as a new low: 64 KiB, or
/// 1/2048 of the memory.
pub fn low_margin(total: u64) -> u64 {
    (64 * 1024u64).max(total / 2048)
}

/// Why a migration is stalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StallKind {
    /// Passes go on, but the dirty memory left per pass does not shrink.
    NotConverging,
    /// Nothing was copied: the counters are frozen.
    CopyingStopped,
    /// Memory is being copied, but remaining has not fallen within the
    /// current pass: the same pages are sent again and again (a guest that
    /// dirties faster than the link inside one pass, the fake driver's stall).
    NotShrinking,
}

/// The convergence state of one attempt (part of the journal).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Convergence {
    /// Clock origin (first seen running, or a fresh window after a resume).
    pub started_at: Option<Millis>,
    /// Last progress.
    pub progress_at: Option<Millis>,
    /// Last time memory was copied.
    pub copying_at: Option<Millis>,
    /// 0 before the first sample with counters; 1 = the first pass.
    pub pass: u32,
    /// When the current pass began.
    pub pass_at: Option<Millis>,
    /// Lowest remaining in the current pass.
    pub low: u64,
    /// When remaining last reached a new low of the current pass (or the
    /// pass began).
    #[serde(default)]
    pub low_at: Option<Millis>,
    /// Dirty memory left by the previous pass (the value after the rise);
    /// `None` in the first pass.
    pub dirty: Option<u64>,
    /// Dirty memory at the last progress of a later pass.
    pub best_dirty: Option<u64>,
    /// Pass at which `best_dirty` was seen.
    pub best_pass: u32,
    /// Passes since the last progress that did not shrink the dirty memory.
    pub failed_passes: u32,
    /// The latest informative sample.
    pub last: Option<(u64, u64, u64)>,
}

/// What one sample changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Zero counters or a repeat of the previous sample.
    Nothing,
    /// Copying, no progress.
    Copying,
    Progress,
    /// A new pass began (`progress`: its dirty memory shrank enough).
    NewPass {
        pass: u32,
        progress: bool,
    },
}

impl Convergence {
    /// Start the clock at `t` (idempotent: the first call wins).
    pub fn start(&mut self, t: Millis) {
        if self.started_at.is_none() {
            self.started_at = Some(t);
            self.progress_at = Some(t);
            self.copying_at = Some(t);
        }
    }

    /// Feed one sample taken at `t`.
    pub fn observe(&mut self, t: Millis, s: Sample) -> Event {
        self.start(t);
        if s.total == 0 || (s.processed == 0 && s.remaining == 0) {
            return Event::Nothing;
        }
        let key = (s.total, s.processed, s.remaining);
        let Some((_, p0, _)) = self.last else {
            self.last = Some(key);
            self.pass = 1;
            self.pass_at = Some(t);
            self.low = s.remaining;
            self.low_at = Some(t);
            self.progress_at = Some(t);
            self.copying_at = Some(t);
            return Event::Progress;
        };
        if self.last == Some(key) {
            return Event::Nothing;
        }
        self.last = Some(key);
        let margin = low_margin(s.total);
        let copied = s.processed >= p0.saturating_add(margin);
        if s.remaining > self.low.saturating_add(rise_threshold(s.total, self.low)) {
            self.pass += 1;
            self.pass_at = Some(t);
            self.low = s.remaining;
            self.low_at = Some(t);
            self.dirty = Some(s.remaining);
            self.copying_at = Some(t);
            let reference = self.best_dirty.unwrap_or(s.total);
            let progress = s.remaining.saturating_mul(4) <= reference.saturating_mul(3);
            if progress {
                self.best_dirty = Some(s.remaining);
                self.best_pass = self.pass;
                self.failed_passes = 0;
                self.progress_at = Some(t);
            } else {
                self.failed_passes += 1;
            }
            return Event::NewPass {
                pass: self.pass,
                progress,
            };
        }
        // Sampled while the rise was still going on: the pass's dirty memory
        // is the highest value seen since the rise.
        if let Some(d) = self.dirty
            && s.remaining > d
        {
            self.dirty = Some(s.remaining);
            if self.best_pass == self.pass {
                self.best_dirty = Some(s.remaining);
            }
        }
        let new_low = s.remaining.saturating_add(margin) <= self.low;
        if new_low {
            self.low = s.remaining;
            self.low_at = Some(t);
        }
        if new_low || copied {
            self.copying_at = Some(t);
        }
        if self.pass == 1 && new_low {
            self.progress_at = Some(t);
            return Event::Progress;
        }
        if new_low || copied {
            Event::Copying
        } else {
            Event::Nothing
        }
    }

    /// Stalled at `now` with a `stall_ms` window (0 = never)?
    pub fn stalled(&self, now: Millis, stall_ms: u64) -> Option<StallKind> {
        if stall_ms == 0 {
            return None;
        }
        let since = |t: Option<Millis>| now.saturating_sub(t.or(self.started_at).unwrap_or(now));
        if since(self.progress_at) < stall_ms {
            return None;
        }
        if self.failed_passes >= 1 {
            Some(StallKind::NotConverging)
        } else if since(self.copying_at) >= stall_ms {
            Some(StallKind::CopyingStopped)
        } else if since(self.low_at) >= stall_ms {
            Some(StallKind::NotShrinking)
        } else {
            None
        }
    }

    /// Seconds since the last progress.
    pub fn since_progress_s(&self, now: Millis) -> u64 {
        now.saturating_sub(self.progress_at.or(self.started_at).unwrap_or(now)) / 1000
    }

    /// The pass is past the first: show passes, not a cycling percentage.
    pub fn cycling(&self) -> bool {
        self.pass >= 2
    }
}

/// Bytes as MiB: one decimal below 100 MiB, whole MiB above.
pub fn mib(b: u64) -> String {
    let m = b as f64 / MIB as f64;
    if m < 100.0 && !b.is_multiple_of(MIB) {
        format!("{m:.1} MiB")
    } else {
        format!("{m:.0} MiB")
    }
}

/// `processed` as a multiple of `total` (`4.4×`).
pub fn copied_times(processed: u64, total: u64) -> String {
    if total == 0 {
        return "?×".into();
    }
    format!("{:.1}×", processed as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Rec {
        samples: Vec<Raw>,
        action_at: Option<f64>,
    }
    #[derive(Deserialize, Clone)]
    struct Raw {
        t: f64,
        status: String,
        memory_total_bytes: Option<u64>,
        memory_processed_bytes: Option<u64>,
        memory_remaining_bytes: Option<u64>,
    }

    fn series(name: &str) -> Vec<(Millis, Sample)> {
        let text = match name {
            "idle" => include_str!("../../tests/fixtures/qemu/idle.json"),
            "dirty-2-200" => include_str!("../../tests/fixtures/qemu/dirty-2-200.json"),
            "dirty-4-200" => include_str!("../../tests/fixtures/qemu/dirty-4-200.json"),
            "dirty-8-200" => include_str!("../../tests/fixtures/qemu/dirty-8-200.json"),
            "dirty-8-200-abort" => {
                include_str!("../../tests/fixtures/qemu/dirty-8-200-abort.json")
            }
            "dirty-16-200" => include_str!("../../tests/fixtures/qemu/dirty-16-200.json"),
            _ => unreachable!(),
        };
        let rec: Rec = serde_json::from_str(text).unwrap();
        // Only what the rule alone saw: up to the recorded action.
        let end = rec.action_at.unwrap_or(f64::MAX);
        rec.samples
            .iter()
            .filter(|s| s.status == "running" && s.t <= end)
            .map(|s| {
                (
                    (s.t * 1000.0).round() as Millis,
                    Sample {
                        total: s.memory_total_bytes.unwrap_or(0),
                        processed: s.memory_processed_bytes.unwrap_or(0),
                        remaining: s.memory_remaining_bytes.unwrap_or(0),
                    },
                )
            })
            .collect()
    }

    /// The first time the rule says stalled, with the state then.
    fn first_stall(s: &[(Millis, Sample)], stall_ms: u64) -> Option<(Millis, StallKind)> {
        let mut c = Convergence::default();
        for (t, x) in s {
            c.observe(*t, *x);
            if let Some(k) = c.stalled(*t, stall_ms) {
                return Some((*t, k));
            }
        }
        None
    }

    /// When the first pass ended and the longest later pass (ms), from the
    /// saw-tooth itself.
    fn first_pass_end_and_longest(s: &[(Millis, Sample)]) -> (Millis, Millis) {
        let mut c = Convergence::default();
        let mut starts = vec![];
        for (t, x) in s {
            if let Event::NewPass { .. } = c.observe(*t, *x) {
                starts.push(*t);
            }
        }
        let end = s.last().unwrap().0;
        let longest = starts
            .windows(2)
            .map(|w| w[1] - w[0])
            .chain([end - starts[starts.len() - 1]])
            .max()
            .unwrap_or(0);
        (starts[0], longest)
    }

    const CONVERGING: [&str; 3] = ["idle", "dirty-2-200", "dirty-4-200"];
    const DIRTYING: [&str; 3] = ["dirty-8-200", "dirty-8-200-abort", "dirty-16-200"];

    #[test]
    fn converging_series_are_never_stalled() {
        for name in CONVERGING {
            let s = series(name);
            for t in [5, 8, 10, 20, 60, 300] {
                assert_eq!(
                    first_stall(&s, t * 1000),
                    None,
                    "{name}, stall-timeout {t} s"
                );
            }
            // …not even when their last sample repeats until completion.
            let mut c = Convergence::default();
            for (t, x) in &s {
                c.observe(*t, *x);
            }
            assert_eq!(c.pass, 1, "{name}: converged in its first pass");
        }
    }

    #[test]
    fn dirtying_series_are_stalled_within_stall_timeout_plus_one_pass() {
        for name in DIRTYING {
            let s = series(name);
            let (end1, pass) = first_pass_end_and_longest(&s);
            let start = s[0].0;
            for t in [2, 3, 5, 8, 10] {
                let ms = t * 1000;
                let (at, kind) =
                    first_stall(&s, ms).unwrap_or_else(|| panic!("{name}: never stalled at {t} s"));
                // Passes that do not shrink, or a pass whose remaining
                // stays on its floor for T: both are "not converging".
                assert!(
                    matches!(kind, StallKind::NotConverging | StallKind::NotShrinking),
                    "{name} {t} s: {kind:?}"
                );
                assert!(at >= start + ms, "{name} {t} s: stalled too soon at {at}");
                assert!(
                    at <= end1 + ms + pass,
                    "{name} {t} s: stalled at {at}, after {end1} + {ms} + one pass {pass}"
                );
            }
        }
    }

    #[test]
    fn recorded_passes_and_dirty_memory() {
        // dirty-8: the second pass began with 10.6 MiB dirty, the third with
        // 8.6 MiB — not 3/4 of 10.6: the third is a failed pass.
        let mut c = Convergence::default();
        for (t, x) in series("dirty-8-200") {
            c.observe(t, x);
        }
        assert!(c.pass >= 3, "{c:?}");
        assert!(c.failed_passes >= 1, "{c:?}");
        assert_eq!(mib(c.best_dirty.unwrap()), "10.6 MiB");
        // dirty-16: ~16 MiB each pass.
        let mut c = Convergence::default();
        for (t, x) in series("dirty-16-200") {
            c.observe(t, x);
        }
        assert!(c.pass >= 4 && c.failed_passes >= 2, "{c:?}");
    }

    #[test]
    fn the_old_rule_counted_from_one_lucky_sample() {
        // The old rule (no new minimum of remaining for T) on dirty-8 counts
        // from the first pass's luckiest sample (0.04 MiB at 9.2 s), and a
        // later pass that happens to dip lower restarts its clock. The new
        // rule counts from the last pass that shrank the dirty memory (the
        // second, 10.6 MiB at 13.2 s) and stalls once a pass failed to.
        let old = |s: &[(Millis, Sample)], ms: u64| {
            let mut best = u64::MAX;
            let mut at = s[0].0;
            for (t, x) in s {
                if x.total > 0 && x.remaining < best {
                    best = x.remaining;
                    at = *t;
                }
                if t - at >= ms {
                    return Some(*t);
                }
            }
            None
        };
        let mut s = series("dirty-8-200");
        assert_eq!(old(&s, 15_000), Some(24_220));
        assert_eq!(first_stall(&s, 15_000).map(|x| x.0), Some(28_240));
        // One lucky dip in the third pass (0.12 → 0.01 MiB at 21.2 s).
        for (t, x) in s.iter_mut() {
            if *t == 21_220 {
                x.remaining = MIB / 100;
            }
        }
        assert_eq!(old(&s, 15_000), None, "the old rule's clock restarted");
        assert_eq!(first_stall(&s, 15_000).map(|x| x.0), Some(28_240));
    }

    #[test]
    fn flat_remaining_while_copying_is_not_shrinking() {
        // The fake driver's stall (and a guest that dirties faster than the
        // link inside one pass): remaining stays where it is while processed
        // grows (the same pages sent again), no pass ever ends.
        let total = 128 * MIB;
        let mut c = Convergence::default();
        let mut t = 0;
        for i in 0..40u64 {
            let remaining = if i < 5 {
                total - i * 15 * MIB
            } else {
                total - 60 * MIB
            };
            c.observe(
                t,
                Sample {
                    total,
                    processed: i * 15 * MIB,
                    remaining,
                },
            );
            t += 500;
        }
        // Lowest remaining at 2 s; stall-timeout 3 s.
        assert_eq!(c.stalled(4_500, 3_000), None, "{c:?}");
        assert_eq!(
            c.stalled(5_000, 3_000),
            Some(StallKind::NotShrinking),
            "{c:?}"
        );
        // The same flat remaining with frozen counters is copying stopped.
        let mut c = Convergence::default();
        for i in 0..10u64 {
            c.observe(
                i * 500,
                Sample {
                    total,
                    processed: 15 * MIB,
                    remaining: total - 15 * MIB,
                },
            );
        }
        assert_eq!(c.stalled(10_000, 3_000), Some(StallKind::CopyingStopped));
    }

    #[test]
    fn frozen_counters_are_copying_stopped() {
        let mut c = Convergence::default();
        let x = Sample {
            total: 100 * MIB,
            processed: 10 * MIB,
            remaining: 90 * MIB,
        };
        c.observe(1000, x);
        assert_eq!(c.stalled(30_000, 30_000), None);
        c.observe(30_000, x);
        assert_eq!(c.stalled(31_000, 30_000), Some(StallKind::CopyingStopped));
        assert_eq!(c.stalled(31_000, 0), None, "0 = off");
    }

    #[test]
    fn zero_counters_only_start_the_clock() {
        let mut c = Convergence::default();
        let z = Sample {
            total: 0,
            processed: 0,
            remaining: 0,
        };
        assert_eq!(c.observe(0, z), Event::Nothing);
        assert_eq!(c.pass, 0);
        // Counters that never come are no progress either.
        assert_eq!(c.stalled(5000, 5000), Some(StallKind::CopyingStopped));
    }

    #[test]
    fn mib_format() {
        assert_eq!(mib(0), "0 MiB");
        assert_eq!(mib(MIB / 10), "0.1 MiB");
        assert_eq!(mib(2048 * MIB), "2048 MiB");
        assert_eq!(mib(10 * MIB + MIB / 2), "10.5 MiB");
        assert_eq!(mib(100 * MIB + 1), "100 MiB");
        assert_eq!(copied_times(441 * MIB, 128 * MIB), "3.4×");
    }

    /// A recorded series disturbed: each value multiplied by (1 ± noise),
    /// each time shifted by up to ±jitter ms (order kept), samples repeated,
    /// zero samples in front.
    fn disturb(
        s: &[(Millis, Sample)],
        noise: &[i8],
        jitter: &[i16],
        repeat: &[bool],
        zeros: usize,
    ) -> Vec<(Millis, Sample)> {
        let mut out: Vec<(Millis, Sample)> = vec![];
        let t0 = s[0].0;
        for i in 0..zeros {
            out.push((
                t0.saturating_sub(1000 * (zeros - i) as u64),
                Sample {
                    total: 0,
                    processed: 0,
                    remaining: 0,
                },
            ));
        }
        for (i, (t, x)) in s.iter().enumerate() {
            let n = noise[i % noise.len()] as i64; // ‰, ±20
            let j = jitter[i % jitter.len()] as i64; // ±300 ms
            let f = |v: u64| ((v as i64) + (v as i64) * n / 1000).max(0) as u64;
            let t = (*t as i64 + j).max(0) as u64;
            let t = out.last().map_or(t, |(p, _)| t.max(*p + 1));
            let y = Sample {
                total: x.total,
                processed: f(x.processed),
                remaining: f(x.remaining),
            };
            out.push((t, y));
            if repeat[i % repeat.len()] {
                out.push((t + 500, y));
            }
        }
        out
    }

    proptest! {
        #[test]
        fn converging_stay_unstalled_under_noise(
            which in 0usize..3,
            noise in prop::collection::vec(-20i8..=20, 1..20),
            jitter in prop::collection::vec(-300i16..=300, 1..20),
            repeat in prop::collection::vec(any::<bool>(), 1..20),
            zeros in 0usize..3,
            stall_s in 5u64..400,
        ) {
            let s = disturb(&series(CONVERGING[which]), &noise, &jitter, &repeat, zeros);
            prop_assert_eq!(first_stall(&s, stall_s * 1000), None);
        }

        #[test]
        fn dirtying_are_stalled_in_bound_under_noise(
            which in 0usize..3,
            noise in prop::collection::vec(-20i8..=20, 1..20),
            jitter in prop::collection::vec(-300i16..=300, 1..20),
            repeat in prop::collection::vec(any::<bool>(), 1..20),
            zeros in 0usize..3,
            stall_s in 4u64..=10,
        ) {
            let clean = series(DIRTYING[which]);
            let (end1, pass) = first_pass_end_and_longest(&clean);
            let s = disturb(&clean, &noise, &jitter, &repeat, zeros);
            let ms = stall_s * 1000;
            let got = first_stall(&s, ms);
            prop_assert!(got.is_some(), "never stalled");
            let (at, kind) = got.unwrap();
            prop_assert!(matches!(kind, StallKind::NotConverging | StallKind::NotShrinking), "{:?}", kind);
            prop_assert!(at <= end1 + ms + pass + 300, "at {} > {} + {} + {}", at, end1, ms, pass);
        }

        /// Any series: stalled never before stall-timeout after the start,
        /// and a pure function of the samples (same input, same answer).
        #[test]
        fn never_before_the_window_and_deterministic(
            xs in prop::collection::vec((0u64..4096, 0u64..4096, 1u64..3000), 1..60),
            stall_s in 1u64..100,
        ) {
            let total = 4096 * MIB;
            let mut t = 0;
            let s: Vec<(Millis, Sample)> = xs.iter().map(|(p, r, dt)| {
                t += dt;
                (t, Sample { total, processed: p * MIB, remaining: r * MIB })
            }).collect();
            let a = first_stall(&s, stall_s * 1000);
            prop_assert_eq!(a, first_stall(&s, stall_s * 1000));
            if let Some((at, _)) = a {
                prop_assert!(at >= s[0].0 + stall_s * 1000);
            }
        }
    }
}
