//! Sliding TPAVI windows (spec §6.6, "streaming"): the state a stream keeps so that each new frame
//! of an official TPAVI model (attention over groups of T frames) costs one frame of work.
//!
//! TPAVI's only coupling between frames is K, one `[C', C']` matrix per block, and K over a window
//! is the sum of one rank-1 term `φ_tᵀ gs_t` per frame (scaled by the graph's 1/N). This keeps
//! each of the last T − 1 frames' `[φ; gs]` per block, as the graph returned them, and for the
//! next frame builds what the graph's window step takes: the older frames' summed terms (`rest`,
//! per block) and how many times the newest frame counts (`weight`).
//!
//! * **Runs.** A window is T consecutive sampling instants. When an instant is missing (dropped by
//!   back-pressure, or never sampled) the kept frames no longer precede the new one, and a new run
//!   starts with it.
//! * **The start of a run.** TPAVI was trained on full windows only, so by default the first T − 1
//!   frames of a run get no result (they are still run, to keep their terms). With padding, the
//!   window is filled by repeating the run's first frame, as batch mode repeats a clip's last
//!   frame: the first frame alone counts T times, and while the run is short its first frame
//!   counts for the missing ones.

use crate::backend::tpavi::add_outer;
use crate::tensor::Tensor;

pub(crate) struct SlidingWindow {
    /// T: frames per window (the TPAVI group).
    group: usize,
    pad_start: bool,
    /// C' per block, and where each block's `[φ; gs]` starts in a frame's terms.
    cps: Vec<usize>,
    offsets: Vec<usize>,
    frame_terms: usize,
    /// The kept frames (at most T − 1, oldest first from `head`): their instants and terms.
    seqs: Vec<u64>,
    terms: Vec<f32>,
    head: usize,
    len: usize,
    /// The step's inputs, and the graph's terms output for the newest frame.
    weight: Tensor,
    rest: Vec<Tensor>,
    newest: Vec<Tensor>,
}

impl SlidingWindow {
    /// Windows of `group` frames over blocks with these C'; everything is allocated here.
    pub fn new(group: usize, cps: &[usize], pad_start: bool) -> Self {
        let keep = group.saturating_sub(1).max(1);
        let offsets: Vec<usize> = cps.iter().scan(0, |o, &cp| { let at = *o; *o += 2 * cp; Some(at) }).collect();
        let frame_terms = cps.iter().map(|cp| 2 * cp).sum();
        Self {
            group,
            pad_start,
            cps: cps.to_vec(),
            offsets,
            frame_terms,
            seqs: vec![0; keep],
            terms: vec![0.0; keep * frame_terms],
            head: 0,
            len: 0,
            weight: Tensor::zeros(vec![1]),
            rest: cps.iter().map(|&cp| Tensor::zeros(vec![cp, cp])).collect(),
            newest: cps.iter().map(|&cp| Tensor::zeros(vec![2, cp])).collect(),
        }
    }

    /// Frames of the current run kept before `seq` (0 when `seq` starts a new run).
    fn run_before(&self, seq: u64) -> usize {
        match self.len {
            0 => 0,
            n if self.seqs[(self.head + n - 1) % self.seqs.len()] + 1 == seq => n,
            _ => 0,
        }
    }

    /// Fills the inputs of the step for instant `seq` ([`SlidingWindow::io`]). A gap before `seq`
    /// ends the run kept so far. Returns whether the newest frame's result is to be reported (its
    /// window is full, or padded).
    pub fn prepare(&mut self, seq: u64) -> bool {
        let before = self.run_before(seq);
        if before == 0 {
            self.len = 0;
        }
        let full = before + 1 >= self.group;
        // How many times each kept frame counts: 1, except that padding gives the run's first frame
        // the window's missing places.
        let missing = self.group.saturating_sub(before + 1);
        let (first_count, newest_count) = match (self.pad_start, before) {
            (true, 0) => (0, self.group),
            (true, _) => (1 + missing, 1),
            (false, _) => (1, 1),
        };
        self.weight.data_mut()[0] = newest_count as f32;
        for (b, rest) in self.rest.iter_mut().enumerate() {
            let (cp, at) = (self.cps[b], self.offsets[b]);
            let r = rest.data_mut();
            r.fill(0.0);
            for i in 0..self.len {
                let frame = (self.head + i) % self.seqs.len();
                let t = &self.terms[frame * self.frame_terms + at..frame * self.frame_terms + at + 2 * cp];
                let count = if i == 0 { first_count } else { 1 };
                add_outer(r, &t[..cp], &t[cp..], count as f32);
            }
        }
        full || self.pad_start
    }

    /// The step's inputs (`weight`, `rest` per block) and where the graph writes the newest frame's
    /// terms (per block).
    pub fn io(&mut self) -> (&Tensor, &[Tensor], &mut [Tensor]) {
        (&self.weight, &self.rest, &mut self.newest)
    }

    /// Keeps the newest frame's terms (as the graph wrote them into [`SlidingWindow::io`])
    /// for the windows after it: call once the step for `seq` has run.
    pub fn commit(&mut self, seq: u64) {
        if self.run_before(seq) == 0 {
            self.len = 0;
        }
        let keep = self.seqs.len();
        if self.group <= 1 {
            return;
        }
        if self.len == keep {
            self.head = (self.head + 1) % keep;
            self.len -= 1;
        }
        let slot = (self.head + self.len) % keep;
        self.seqs[slot] = seq;
        for (b, t) in self.newest.iter().enumerate() {
            let at = slot * self.frame_terms + self.offsets[b];
            self.terms[at..at + 2 * self.cps[b]].copy_from_slice(t.data());
        }
        self.len += 1;
    }

    /// Forgets the kept frames (a failed step leaves its frame out; the next starts a run).
    pub fn reset(&mut self) {
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame's `[φ; gs]` for a block, made up from its sequence number.
    fn terms(seq: u64, block: usize, cp: usize) -> Vec<f32> {
        (0..2 * cp).map(|i| ((seq as usize * 31 + block * 7 + i * 3) % 11) as f32 - 5.0).collect()
    }

    /// Σ count·φᵀgs, the naive way.
    fn expected_rest(frames: &[(u64, usize)], block: usize, cp: usize) -> Vec<f32> {
        let mut r = vec![0.0f32; cp * cp];
        for &(seq, count) in frames {
            let t = terms(seq, block, cp);
            for i in 0..cp {
                for j in 0..cp {
                    r[i * cp + j] += count as f32 * t[i] * t[cp + j];
                }
            }
        }
        r
    }

    fn run(w: &mut SlidingWindow, seq: u64) -> (f32, Vec<Vec<f32>>, bool) {
        let cps = w.cps.clone();
        let emit = w.prepare(seq);
        let (weight, rest, newest) = w.io();
        let out = (weight.data()[0], rest.iter().map(|r| r.data().to_vec()).collect(), emit);
        for (b, t) in newest.iter_mut().enumerate() {
            t.data_mut().copy_from_slice(&terms(seq, b, cps[b]));
        }
        w.commit(seq);
        out
    }

    #[test]
    fn a_full_window_sums_the_four_frames_before() {
        let cps = [3, 2];
        let mut w = SlidingWindow::new(5, &cps, false);
        for seq in 0..4 {
            let (weight, _, emit) = run(&mut w, seq);
            assert_eq!(weight, 1.0);
            assert!(!emit, "instant {seq}: no result before the window is full");
        }
        for seq in 4..12 {
            let (weight, rest, emit) = run(&mut w, seq);
            assert!(emit && weight == 1.0);
            for (b, &cp) in cps.iter().enumerate() {
                let want = expected_rest(&(seq - 4..seq).map(|s| (s, 1)).collect::<Vec<_>>(), b, cp);
                assert_eq!(rest[b], want, "instant {seq} block {b}");
            }
        }
    }

    #[test]
    fn a_gap_starts_a_new_run() {
        let mut w = SlidingWindow::new(5, &[2], false);
        for seq in 0..6 {
            run(&mut w, seq);
        }
        // 6 is missing: 7 starts a run, with nothing before it.
        let (_, rest, emit) = run(&mut w, 7);
        assert!(!emit);
        assert!(rest[0].iter().all(|&v| v == 0.0));
        for seq in 8..11 {
            assert!(!run(&mut w, seq).2, "instant {seq}");
        }
        let (_, rest, emit) = run(&mut w, 11);
        assert!(emit);
        assert_eq!(rest[0], expected_rest(&[(7, 1), (8, 1), (9, 1), (10, 1)], 0, 2));
    }

    #[test]
    fn padding_repeats_the_first_frame_of_the_run() {
        let mut w = SlidingWindow::new(5, &[2], true);
        // Alone: the first frame is the whole window.
        let (weight, rest, emit) = run(&mut w, 3);
        assert!(emit && weight == 5.0 && rest[0].iter().all(|&v| v == 0.0));
        // [3, 3, 3, 3, 4], then [3, 3, 3, 4, 5], ...
        for (seq, first_count) in [(4, 4), (5, 3), (6, 2), (7, 1)] {
            let (weight, rest, emit) = run(&mut w, seq);
            assert!(emit && weight == 1.0, "instant {seq}");
            let mut frames = vec![(3, first_count)];
            frames.extend((4..seq).map(|s| (s, 1)));
            assert_eq!(rest[0], expected_rest(&frames, 0, 2), "instant {seq}");
        }
        // Full windows from then on: [4..8].
        let (_, rest, _) = run(&mut w, 8);
        assert_eq!(rest[0], expected_rest(&[(4, 1), (5, 1), (6, 1), (7, 1)], 0, 2));
    }

    #[test]
    fn a_reset_forgets_the_run() {
        let mut w = SlidingWindow::new(3, &[2], false);
        run(&mut w, 0);
        run(&mut w, 1);
        assert!(run(&mut w, 2).2);
        w.reset();
        assert!(!run(&mut w, 3).2);
    }
}
