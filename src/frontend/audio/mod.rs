//! Audio front end (to be written: resample, logmel, patches).
