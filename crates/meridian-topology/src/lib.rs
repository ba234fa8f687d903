//! Pure cluster logic shared by the operator and the cache node.
//!
//! Nothing in here performs I/O: it is hashing of keys to slots
//! ([`key_slot`]), sets of slots ([`SlotRange`], [`SlotSet`]), the even
//! split used when a cluster is created ([`split_evenly`]) and the
//! epoch-versioned [`TopologyMap`] the operator pushes to every node.

mod error;
mod slots;
mod topology;

pub use error::TopologyError;
pub use slots::{SLOT_COUNT, SlotRange, SlotRanges, SlotSet, crc16_xmodem, key_slot, split_evenly};
pub use topology::{NodeAddr, NodeRole, Route, ShardTopology, TopologyMap, cluster_node_id};
