//! Image decoding (to be written).
