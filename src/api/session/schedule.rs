//! The sampling scheduler: which pushed camera frame each sampling instant takes, which window of
//! instants runs next, and what back-pressure gives up. Timestamps in, decisions out: no images,
//! no audio and no model, so every rule is tested on its own below.
//!
//! * Instant k is at `origin + k + 0.9375` s. It takes the pushed frame nearest to it (ties go to
//!   the earlier frame), final once a frame at or after the instant arrives. Frames no instant
//!   takes are counted as skipped.
//! * Window w covers instants `w·hop .. w·hop + T`; its audio starts at `w·hop` s. Instant k waits
//!   in slot `k mod frame_queue` until the last window that uses it has run.
//! * When a new instant does not fit in the queue, the oldest window is abandoned and its instants
//!   that never got a result are counted as dropped. A camera that stalled for longer than the
//!   queue jumps to the instants that still fit.

use std::time::Instant;

use super::FRAME_TIME_OFFSET_S;

/// Most pre-processed frames a session may queue: the default queue (2·T) of the largest T a
/// manifest may declare (64).
pub(crate) const MAX_FRAME_QUEUE: usize = 128;

/// The frame an instant took, waiting for its window.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SlotInfo {
    pub timestamp: f64,
    /// The slot's pre-processed tensor is up to date (done at the first window that uses it).
    pub prepped: bool,
    pub width: u32,
    pub height: u32,
    pub pushed_at: Instant,
}

/// Instant `instant` takes the pushed frame into queue slot `slot`: the newest frame, or the one
/// held from the push before (`from_held`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Assignment {
    pub instant: u64,
    pub slot: usize,
    pub from_held: bool,
}

/// Assignments of one push (at most one per queue slot).
pub(crate) type Assignments = heapless::Vec<Assignment, MAX_FRAME_QUEUE>;

/// The newest pushed frame, kept until we know whether an instant wants it.
#[derive(Clone, Copy, Debug)]
struct Held {
    timestamp: f64,
    width: u32,
    height: u32,
    pushed_at: Instant,
    used: bool,
}

/// Frame counters of [`super::SessionStats`] that the scheduler keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FrameCounts {
    pub used: u64,
    pub skipped: u64,
    pub dropped: u64,
}

pub(crate) struct Scheduler {
    t: usize,
    hop: usize,
    queue_cap: usize,
    origin: Option<f64>,
    held: Option<Held>,
    last_frame_ts: Option<f64>,
    slots: heapless::Vec<Option<SlotInfo>, MAX_FRAME_QUEUE>,
    /// First instant without a frame yet.
    next_instant: u64,
    /// Next window to run.
    window: u64,
    /// First instant without a result (emitted or dropped).
    emitted_upto: u64,
    counts: FrameCounts,
}

impl Scheduler {
    /// Windows of `t` instants advanced by `hop` (`1..=t`), `queue_cap` slots (`t..=MAX_FRAME_QUEUE`;
    /// the session checks both).
    pub fn new(t: usize, hop: usize, queue_cap: usize) -> Self {
        assert!(hop >= 1 && hop <= t && t <= queue_cap && queue_cap <= MAX_FRAME_QUEUE, "checked by Session::new");
        let mut slots = heapless::Vec::new();
        slots.resize(queue_cap, None).expect("queue_cap <= MAX_FRAME_QUEUE");
        Self {
            t,
            hop,
            queue_cap,
            origin: None,
            held: None,
            last_frame_ts: None,
            slots,
            next_instant: 0,
            window: 0,
            emitted_upto: 0,
            counts: FrameCounts::default(),
        }
    }

    /// The stream's time 0 (the first audio sample's timestamp); instants exist from then on.
    pub fn set_origin(&mut self, origin: f64) {
        self.origin.get_or_insert(origin);
    }

    pub fn counts(&self) -> FrameCounts {
        self.counts
    }

    pub fn window(&self) -> u64 {
        self.window
    }

    /// First instant of the next window.
    pub fn window_base(&self) -> u64 {
        self.window * self.hop as u64
    }

    /// First instant without a frame yet.
    pub fn next_instant(&self) -> u64 {
        self.next_instant
    }

    /// First instant without a result (emitted or dropped).
    pub fn emitted_upto(&self) -> u64 {
        self.emitted_upto
    }

    /// Stream time (s) of the next window's audio start.
    pub fn window_start_seconds(&self) -> u64 {
        self.window_base()
    }

    fn instant_time(&self, k: u64) -> f64 {
        self.origin.unwrap_or(0.0) + k as f64 + FRAME_TIME_OFFSET_S
    }

    pub fn slot_of(&self, instant: u64) -> usize {
        (instant % self.queue_cap as u64) as usize
    }

    pub fn slot(&self, slot: usize) -> Option<&SlotInfo> {
        self.slots[slot].as_ref()
    }

    pub fn slot_mut(&mut self, slot: usize) -> Option<&mut SlotInfo> {
        self.slots[slot].as_mut()
    }

    /// Every instant of the next window has its frame.
    pub fn window_frames_ready(&self) -> bool {
        self.next_instant >= self.window_base() + self.t as u64
    }

    /// A frame was pushed at `timestamp` (already checked for size and finiteness): the instants
    /// that take it or the held frame go into `out`. An error if the timestamp goes backwards.
    pub fn frame(
        &mut self,
        timestamp: f64,
        (width, height): (u32, u32),
        pushed_at: Instant,
        out: &mut Assignments,
    ) -> Result<(), String> {
        out.clear();
        if let Some(prev) = self.last_frame_ts {
            if timestamp < prev {
                return Err(format!("timestamp {timestamp:.6} s goes backwards (previous frame at {prev:.6} s)"));
            }
        }
        self.last_frame_ts = Some(timestamp);
        let mut current_used = false;
        if self.origin.is_some() {
            // A camera that stalled for longer than the queue: instants it cannot fill would only
            // be dropped again, so jump to the ones that still fit.
            let last_k = (timestamp - self.instant_time(0)).floor();
            if last_k >= 0.0 {
                let last_k = last_k as u64;
                if last_k + 1 >= self.next_instant + self.queue_cap as u64 {
                    let first = last_k + 1 - self.queue_cap as u64;
                    self.advance_window_to(first.div_ceil(self.hop as u64));
                    self.next_instant = self.next_instant.max(first);
                }
            }
            while self.instant_time(self.next_instant) <= timestamp {
                let tau = self.instant_time(self.next_instant);
                let k = self.next_instant;
                let held = self.held.filter(|h| (h.timestamp - tau).abs() <= (timestamp - tau).abs());
                let info = match held {
                    Some(h) => {
                        if !h.used {
                            self.counts.used += 1;
                        }
                        self.held.as_mut().expect("checked").used = true;
                        SlotInfo { timestamp: h.timestamp, prepped: false, width: h.width, height: h.height, pushed_at: h.pushed_at }
                    }
                    None => {
                        current_used = true;
                        SlotInfo { timestamp, prepped: false, width, height, pushed_at }
                    }
                };
                out.push(self.assign(k, held.is_some(), info)).expect("at most queue_cap instants per push");
                self.next_instant = k + 1;
            }
        }
        self.retire_held();
        self.held = Some(Held { timestamp, width, height, pushed_at, used: current_used });
        if current_used {
            self.counts.used += 1;
        }
        Ok(())
    }

    /// End of stream: the held frame takes every remaining instant it is nearest to (no later
    /// frame exists), into `out`.
    pub fn finish(&mut self, out: &mut Assignments) {
        out.clear();
        let Some(h) = self.held else { return };
        let k_h = (h.timestamp - self.instant_time(0)).round();
        if self.origin.is_none() || k_h < 0.0 || (k_h as u64) < self.next_instant {
            return;
        }
        let info = SlotInfo { timestamp: h.timestamp, prepped: false, width: h.width, height: h.height, pushed_at: h.pushed_at };
        // Its push took every instant up to its own timestamp, so at most the one after is left.
        let k_h = k_h as u64;
        for k in self.next_instant..=k_h {
            out.push(self.assign(k, true, info)).expect("at most queue_cap instants");
            self.next_instant = k + 1;
        }
        if !h.used {
            self.counts.used += 1;
        }
        self.held.as_mut().expect("held").used = true;
    }

    /// The held frame is being replaced, or the stream ended: skipped if no instant took it.
    pub fn retire_held(&mut self) {
        if let Some(h) = self.held.take() {
            if !h.used {
                self.counts.skipped += 1;
            }
        }
    }

    /// Instant `k` takes a frame into its slot, first making room by abandoning the oldest windows
    /// while the queue is full.
    fn assign(&mut self, k: u64, from_held: bool, info: SlotInfo) -> Assignment {
        while k + 1 > self.window_base() + self.queue_cap as u64 {
            self.advance_window_to(self.window + 1);
        }
        let slot = self.slot_of(k);
        self.slots[slot] = Some(info);
        Assignment { instant: k, slot, from_held }
    }

    /// Abandons windows before `w`; their instants that never got a result are dropped.
    pub fn advance_window_to(&mut self, w: u64) {
        if w <= self.window {
            return;
        }
        let new_base = w * self.hop as u64;
        let from = self.emitted_upto.max(self.window_base());
        let to = new_base.min(self.next_instant);
        if to > from {
            self.counts.dropped += to - from;
            log::debug!("back-pressure: dropped {} frame(s) (instants {from}..{to})", to - from);
        }
        for k in self.window_base()..new_base.min(self.next_instant) {
            let slot = self.slot_of(k);
            self.slots[slot] = None;
        }
        self.window = w;
        self.emitted_upto = self.emitted_upto.max(new_base);
        self.next_instant = self.next_instant.max(new_base);
    }

    /// The audio before `sample` (at `rate` samples per second) is gone: windows starting earlier
    /// are abandoned.
    pub fn audio_lost_before(&mut self, sample: u64, rate: u64) {
        self.advance_window_to(sample.div_ceil(self.hop as u64 * rate));
    }

    /// The next window has run; its results reach up to (not including) instant `real_end`.
    /// Instants no later window uses leave the queue.
    pub fn complete_window(&mut self, real_end: u64) {
        let base = self.window_base();
        for k in base..(base + self.hop as u64).min(self.next_instant) {
            let slot = self.slot_of(k);
            self.slots[slot] = None;
        }
        self.emitted_upto = self.emitted_upto.max(real_end.min(base + self.t as u64));
        self.window += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(s: &mut Scheduler, ts: f64) -> Vec<Assignment> {
        let mut out = Assignments::new();
        s.frame(ts, (4, 3), Instant::now(), &mut out).unwrap();
        out.to_vec()
    }

    fn a(instant: u64, slot: usize, from_held: bool) -> Assignment {
        Assignment { instant, slot, from_held }
    }

    /// A 10 fps camera: each instant (k + 0.9375 s) takes the nearest frame, decided when the first
    /// frame after it arrives; the other nine frames of each second are skipped.
    #[test]
    fn ten_fps_takes_the_nearest_frame() {
        let mut s = Scheduler::new(5, 5, 10);
        s.set_origin(0.0);
        let mut taken = Vec::new();
        for i in 0..30 {
            let ts = i as f64 / 10.0;
            for x in push(&mut s, ts) {
                taken.push((x.instant, s.slot(x.slot).unwrap().timestamp, x.from_held));
            }
        }
        // 0.9 is 0.0375 s from 0.9375, 1.0 is 0.0625 s: the held 0.9 s frame wins, decided at 1.0 s.
        assert_eq!(taken.len(), 2);
        for (k, (inst, ts, held)) in taken.iter().enumerate() {
            assert_eq!((*inst, *held), (k as u64, true));
            assert!((ts - (k as f64 + 0.9)).abs() < 1e-9, "{ts}");
        }
        s.retire_held();
        assert_eq!(s.counts(), FrameCounts { used: 2, skipped: 28, dropped: 0 });
    }

    /// Ties go to the earlier frame; a frame exactly at the instant takes it at once.
    #[test]
    fn ties_and_exact_frames() {
        let mut s = Scheduler::new(1, 1, 2);
        s.set_origin(0.0);
        assert!(push(&mut s, 0.9).is_empty());
        assert_eq!(push(&mut s, 0.975), vec![a(0, 0, true)], "0.0375 s either side: the earlier frame");
        assert_eq!(push(&mut s, 1.9375), vec![a(1, 1, false)]);
    }

    /// Frames before the first audio wait as a candidate for instant 0.
    #[test]
    fn frames_before_the_origin_wait() {
        let mut s = Scheduler::new(1, 1, 2);
        assert!(push(&mut s, 0.5).is_empty());
        s.set_origin(0.0);
        assert_eq!(push(&mut s, 1.5), vec![a(0, 0, true)]);
    }

    /// A full queue abandons the oldest window: its instants without a result are dropped, and
    /// later windows go on.
    #[test]
    fn back_pressure_drops_the_oldest_window() {
        let mut s = Scheduler::new(5, 5, 5);
        s.set_origin(0.0);
        for k in 0..5 {
            push(&mut s, k as f64 + 0.9375);
        }
        assert!(s.window_frames_ready());
        let got = push(&mut s, 5.9375);
        assert_eq!(got, vec![a(5, 0, false)]);
        assert_eq!((s.window(), s.counts().dropped), (1, 5));
        assert!(s.slot(1).is_none(), "window 0's instants left the queue");
    }

    /// A camera silent for longer than the queue jumps to the newest instants that fit.
    #[test]
    fn a_stalled_camera_jumps_ahead() {
        let mut s = Scheduler::new(2, 2, 4);
        s.set_origin(0.0);
        push(&mut s, 0.9375);
        let got = push(&mut s, 20.9375);
        // Instants 17..=20 would fill the queue; windows start at even instants, so window 9 (18..20).
        assert_eq!(got.iter().map(|x| (x.instant, x.from_held)).collect::<Vec<_>>(), vec![(18, false), (19, false), (20, false)]);
        assert_eq!(s.window_base(), 18);
        assert_eq!(s.counts().dropped, 1, "instant 0 never got its window");
    }

    /// Windows with hop < T keep instants queued until the last window using them has run; each
    /// window's results start where the previous ones ended.
    #[test]
    fn overlapping_windows() {
        let mut s = Scheduler::new(3, 1, 6);
        s.set_origin(0.0);
        for k in 0..4 {
            push(&mut s, k as f64 + 0.9375);
        }
        assert!(s.window_frames_ready());
        s.complete_window(3);
        assert_eq!((s.window_base(), s.emitted_upto()), (1, 3));
        assert!(s.slot(s.slot_of(0)).is_none() && s.slot(s.slot_of(1)).is_some());
        assert!(s.window_frames_ready(), "instants 1..4 have frames");
        s.complete_window(4);
        assert_eq!(s.emitted_upto(), 4);
        assert!(!s.window_frames_ready());
    }

    /// Audio lost before a window's start abandons that window.
    #[test]
    fn lost_audio_abandons_windows() {
        let mut s = Scheduler::new(5, 5, 10);
        s.set_origin(0.0);
        push(&mut s, 0.9375);
        s.audio_lost_before(7 * 16_000 + 8_000, 16_000);
        assert_eq!((s.window(), s.counts().dropped), (2, 1));
    }

    /// At the end, the held frame takes the instants it is nearest to.
    #[test]
    fn finish_gives_the_held_frame_its_instants() {
        let mut s = Scheduler::new(5, 5, 10);
        s.set_origin(0.0);
        push(&mut s, 0.9375);
        // Instant 1 (1.9375 s) takes this frame (0.9625 s away; the held one is 1 s away).
        assert_eq!(push(&mut s, 2.9), vec![a(1, 1, false)]);
        let mut out = Assignments::new();
        s.finish(&mut out);
        assert_eq!(out.to_vec(), vec![a(2, 2, true)], "2.9 s is nearest to instant 2 (2.9375 s)");
        s.retire_held();
        assert_eq!(s.counts(), FrameCounts { used: 2, skipped: 0, dropped: 0 });
    }

    #[test]
    fn backwards_timestamps_are_refused() {
        let mut s = Scheduler::new(1, 1, 2);
        push(&mut s, 2.0);
        let mut out = Assignments::new();
        let e = s.frame(1.0, (4, 3), Instant::now(), &mut out).unwrap_err();
        assert!(e.contains("goes backwards"), "{e}");
    }
}
