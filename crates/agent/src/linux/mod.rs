//! The Linux kernel backend (being written).
