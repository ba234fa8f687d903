use thiserror::Error;

/// Everything that can be wrong with slot ranges or a topology map.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TopologyError {
    #[error("invalid slot range '{0}': expected 'start-end' or a single slot")]
    RangeSyntax(String),
    #[error("slot {0} is out of range (slots are 0-16383)")]
    SlotOutOfRange(u32),
    #[error("slot range {start}-{end} is reversed")]
    ReversedRange { start: u16, end: u16 },
    #[error("slot {slot} is assigned to both shard {first} and shard {second}")]
    SlotAssignedTwice { slot: u16, first: u32, second: u32 },
    #[error("slot {0} is not assigned to any shard")]
    SlotUnassigned(u16),
    #[error("node id '{0}' appears more than once")]
    DuplicateNodeId(String),
    #[error("shard index {0} appears more than once")]
    DuplicateShardIndex(u32),
    #[error("node id must not be empty")]
    EmptyNodeId,
}
