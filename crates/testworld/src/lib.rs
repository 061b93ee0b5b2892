//! Test world (being written).
