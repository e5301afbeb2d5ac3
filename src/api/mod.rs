//! API (to be written).
