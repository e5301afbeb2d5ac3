//! Frame front end (to be written).
