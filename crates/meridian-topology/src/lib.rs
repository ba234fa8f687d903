//! meridian-topology
