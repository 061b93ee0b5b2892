//! DHCPv4 for local ports (being written).
