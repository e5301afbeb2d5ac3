//! The result ring: a fixed number of result slots, written in place so that their mask and object
//! buffers are reused, read newest-first (`latest`) or oldest-first (`pop`).

use super::StreamResult;

pub(crate) struct ResultRing {
    slots: Vec<StreamResult>,
    head: usize,
    len: usize,
    latest: Option<usize>,
    overwritten: u64,
}

impl ResultRing {
    /// `capacity` slots (at least 1), allocated now.
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: (0..capacity.max(1)).map(|_| StreamResult::empty()).collect(),
            head: 0,
            len: 0,
            latest: None,
            overwritten: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Results overwritten before anyone popped them.
    pub fn overwritten(&self) -> u64 {
        self.overwritten
    }

    /// The slot for a new result, which becomes the latest: the oldest untaken one is overwritten
    /// when the ring is full. The slot still holds an old result's buffers, to be written over.
    pub fn push_slot(&mut self) -> &mut StreamResult {
        let cap = self.slots.len();
        if self.len == cap {
            self.head = (self.head + 1) % cap;
            self.len -= 1;
            self.overwritten += 1;
        }
        let idx = (self.head + self.len) % cap;
        self.len += 1;
        self.latest = Some(idx);
        &mut self.slots[idx]
    }

    /// The newest result (still readable after `pop` took it).
    pub fn latest(&self) -> Option<&StreamResult> {
        self.latest.map(|i| &self.slots[i])
    }

    /// Moves out the oldest untaken result. Its slot's buffers go with it (allocated again when
    /// the slot is next written), except for the latest, which stays readable and is cloned.
    pub fn pop(&mut self) -> Option<StreamResult> {
        if self.len == 0 {
            return None;
        }
        let idx = self.head;
        self.head = (self.head + 1) % self.slots.len();
        self.len -= 1;
        Some(if self.latest == Some(idx) {
            self.slots[idx].clone()
        } else {
            std::mem::replace(&mut self.slots[idx], StreamResult::empty())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(r: &mut ResultRing, sequence: u64) {
        r.push_slot().sequence = sequence;
    }

    #[test]
    fn pops_oldest_first_and_keeps_the_latest() {
        let mut r = ResultRing::new(3);
        assert!(r.latest().is_none() && r.pop().is_none());
        for s in 0..3 {
            add(&mut r, s);
        }
        assert_eq!(r.latest().unwrap().sequence, 2);
        assert_eq!(r.pop().unwrap().sequence, 0);
        assert_eq!(r.pop().unwrap().sequence, 1);
        assert_eq!(r.pop().unwrap().sequence, 2);
        assert!(r.pop().is_none());
        assert_eq!(r.latest().unwrap().sequence, 2, "the latest stays readable after it was popped");
        assert_eq!(r.overwritten(), 0);
    }

    /// A caller that never pops: the oldest untaken results are overwritten and counted.
    #[test]
    fn a_full_ring_overwrites_the_oldest() {
        let mut r = ResultRing::new(2);
        for s in 0..5 {
            add(&mut r, s);
        }
        assert_eq!(r.overwritten(), 3);
        assert_eq!(r.latest().unwrap().sequence, 4);
        assert_eq!((r.pop().unwrap().sequence, r.pop().unwrap().sequence), (3, 4));
    }

    /// A slot written again keeps its buffers: no allocation for a result of the same size.
    #[test]
    fn slots_are_reused_in_place() {
        let mut r = ResultRing::new(1);
        r.push_slot().mask.labels.extend_from_slice(&[1u8; 64]);
        let ptr = r.latest().unwrap().mask.labels.as_ptr();
        let slot = r.push_slot();
        assert_eq!(slot.mask.labels.as_ptr(), ptr);
        assert_eq!(r.overwritten(), 1);
    }
}
