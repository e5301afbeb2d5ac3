//! Audio decoding (to be written).
