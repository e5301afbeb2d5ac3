//! Clip folder discovery (to be written).
