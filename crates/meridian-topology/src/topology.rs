use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::{SLOT_COUNT, SlotRange, SlotSet, TopologyError};

/// Where a cache node listens. `id` is the pod name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAddr {
    pub id: String,
    pub ip: String,
    pub port: u16,
}

impl NodeAddr {
    /// `ip:port`, bracketing IPv6 addresses.
    pub fn endpoint(&self) -> String {
        if self.ip.contains(':') {
            format!("[{}]:{}", self.ip, self.port)
        } else {
            format!("{}:{}", self.ip, self.port)
        }
    }
}

/// Where a command on one slot must run, seen from one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// This node serves it.
    Local,
    /// The primary that owns the slot serves it (`-MOVED`).
    Moved(&'a NodeAddr),
    /// No shard owns the slot (`-CLUSTERDOWN`).
    Unserved,
}

/// The 40-hex-digit node id Redis Cluster clients expect, derived from a
/// node's name (pod name) by SHA-1 so every node computes the same id.
pub fn cluster_node_id(name: &str) -> String {
    sha1_smol::Sha1::from(name.as_bytes()).digest().to_string()
}

/// Role of a node inside its shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NodeRole {
    Primary,
    Replica,
}

/// One shard: the slots it owns, its primary and its replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardTopology {
    pub index: u32,
    pub slots: Vec<SlotRange>,
    pub primary: NodeAddr,
    #[serde(default)]
    pub replicas: Vec<NodeAddr>,
}

impl ShardTopology {
    /// Primary first, then replicas.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeAddr> {
        std::iter::once(&self.primary).chain(self.replicas.iter())
    }

    pub fn owns_slot(&self, slot: u16) -> bool {
        self.slots.iter().any(|range| range.contains(slot))
    }

    pub fn slot_set(&self) -> SlotSet {
        SlotSet::from_ranges(&self.slots)
    }

    pub fn role_of(&self, id: &str) -> Option<NodeRole> {
        if self.primary.id == id {
            Some(NodeRole::Primary)
        } else if self.replicas.iter().any(|node| node.id == id) {
            Some(NodeRole::Replica)
        } else {
            None
        }
    }
}

/// The epoch-versioned cluster map the operator pushes to every node of a region.
///
/// A node obeys a map whose epoch is higher than the one it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopologyMap {
    pub epoch: u64,
    pub cluster: String,
    pub region: String,
    pub shards: Vec<ShardTopology>,
}

impl TopologyMap {
    /// Checks that every slot is covered exactly once, ranges are well formed,
    /// shard indexes are unique and node ids are non-empty and unique.
    pub fn validate(&self) -> Result<(), TopologyError> {
        self.validate_structure()?;
        let mut covered = SlotSet::new();
        for shard in &self.shards {
            for range in &shard.slots {
                covered.insert_range(*range);
            }
        }
        if let Some(slot) = (0..SLOT_COUNT).find(|slot| !covered.contains(*slot)) {
            return Err(TopologyError::SlotUnassigned(slot));
        }
        Ok(())
    }

    /// Like [`TopologyMap::validate`] but allows slots that no shard owns (a
    /// node serves such a map and answers CLUSTERDOWN for the uncovered slots).
    pub fn validate_structure(&self) -> Result<(), TopologyError> {
        let mut owner: Vec<Option<u32>> = vec![None; usize::from(SLOT_COUNT)];
        let mut indexes = HashSet::new();
        let mut ids = HashSet::new();
        for shard in &self.shards {
            if !indexes.insert(shard.index) {
                return Err(TopologyError::DuplicateShardIndex(shard.index));
            }
            for node in shard.nodes() {
                if node.id.is_empty() {
                    return Err(TopologyError::EmptyNodeId);
                }
                if !ids.insert(node.id.as_str()) {
                    return Err(TopologyError::DuplicateNodeId(node.id.clone()));
                }
            }
            for range in &shard.slots {
                range.check()?;
                for slot in range.iter() {
                    let cell = &mut owner[usize::from(slot)];
                    if let Some(first) = *cell {
                        return Err(TopologyError::SlotAssignedTwice {
                            slot,
                            first,
                            second: shard.index,
                        });
                    }
                    *cell = Some(shard.index);
                }
            }
        }
        Ok(())
    }

    /// How many of the 16384 slots some shard owns.
    pub fn assigned_slots(&self) -> usize {
        let mut covered = SlotSet::new();
        for shard in &self.shards {
            for range in &shard.slots {
                covered.insert_range(*range);
            }
        }
        covered.len()
    }

    /// Decides whether node `me` may serve a command on `slot`.
    ///
    /// `replica_read` is true when the client sent READONLY and the command
    /// only reads: a replica of the owning shard then serves it itself.
    pub fn route(&self, slot: u16, me: &str, replica_read: bool) -> Route<'_> {
        let Some(owner) = self.owner_of_slot(slot) else {
            return Route::Unserved;
        };
        match owner.role_of(me) {
            Some(NodeRole::Primary) => Route::Local,
            Some(NodeRole::Replica) if replica_read => Route::Local,
            _ => Route::Moved(&owner.primary),
        }
    }

    /// The shard whose ranges contain `slot`.
    pub fn owner_of_slot(&self, slot: u16) -> Option<&ShardTopology> {
        self.shards.iter().find(|shard| shard.owns_slot(slot))
    }

    /// The shard that lists node `id` as primary or replica.
    pub fn shard_of_node(&self, id: &str) -> Option<&ShardTopology> {
        self.shards.iter().find(|shard| shard.role_of(id).is_some())
    }

    /// The address of node `id` wherever it appears.
    pub fn node(&self, id: &str) -> Option<&NodeAddr> {
        self.shards
            .iter()
            .flat_map(ShardTopology::nodes)
            .find(|node| node.id == id)
    }

    /// The role of node `id`, if it is in the map.
    pub fn role_of(&self, id: &str) -> Option<NodeRole> {
        self.shards.iter().find_map(|shard| shard.role_of(id))
    }

    /// Every node of every shard.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeAddr> {
        self.shards.iter().flat_map(ShardTopology::nodes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split_evenly;
    use proptest::prelude::*;

    fn node(id: &str, port: u16) -> NodeAddr {
        NodeAddr {
            id: id.to_string(),
            ip: "127.0.0.1".to_string(),
            port,
        }
    }

    fn map_with(shards: u16, replicas: usize) -> TopologyMap {
        let shards = split_evenly(shards)
            .into_iter()
            .enumerate()
            .map(|(index, range)| ShardTopology {
                index: index as u32,
                slots: vec![range],
                primary: node(&format!("shard-{index}-0"), 6379),
                replicas: (1..=replicas)
                    .map(|r| node(&format!("shard-{index}-{r}"), 6379))
                    .collect(),
            })
            .collect();
        TopologyMap {
            epoch: 1,
            cluster: "demo".into(),
            region: "eu".into(),
            shards,
        }
    }

    #[test]
    fn valid_map_passes_and_answers_lookups() {
        let map = map_with(3, 1);
        assert_eq!(map.validate(), Ok(()));
        assert_eq!(map.owner_of_slot(0).map(|s| s.index), Some(0));
        assert_eq!(map.owner_of_slot(5461).map(|s| s.index), Some(1));
        assert_eq!(map.owner_of_slot(16383).map(|s| s.index), Some(2));
        assert_eq!(map.owner_of_slot(16384), None);
        assert_eq!(map.shard_of_node("shard-1-1").map(|s| s.index), Some(1));
        assert_eq!(map.role_of("shard-2-0"), Some(NodeRole::Primary));
        assert_eq!(map.role_of("shard-2-1"), Some(NodeRole::Replica));
        assert!(map.shard_of_node("nobody").is_none());
        assert_eq!(
            map.node("shard-0-1").map(NodeAddr::endpoint),
            Some("127.0.0.1:6379".into())
        );
        assert_eq!(map.nodes().count(), 6);
    }

    #[test]
    fn validate_reports_gaps_overlaps_and_duplicates() {
        let mut gap = map_with(2, 0);
        gap.shards[1].slots = vec![SlotRange {
            start: 8193,
            end: 16383,
        }];
        assert_eq!(gap.validate(), Err(TopologyError::SlotUnassigned(8192)));

        let mut overlap = map_with(2, 0);
        overlap.shards[1].slots = vec![SlotRange {
            start: 8000,
            end: 16383,
        }];
        assert_eq!(
            overlap.validate(),
            Err(TopologyError::SlotAssignedTwice {
                slot: 8000,
                first: 0,
                second: 1
            })
        );

        let mut duplicate = map_with(2, 1);
        duplicate.shards[1].replicas[0].id = "shard-0-0".into();
        assert_eq!(
            duplicate.validate(),
            Err(TopologyError::DuplicateNodeId("shard-0-0".into()))
        );

        let mut index = map_with(2, 0);
        index.shards[1].index = 0;
        assert_eq!(index.validate(), Err(TopologyError::DuplicateShardIndex(0)));

        let mut reversed = map_with(1, 0);
        reversed.shards[0].slots = vec![SlotRange {
            start: 16383,
            end: 0,
        }];
        assert!(matches!(
            reversed.validate(),
            Err(TopologyError::ReversedRange { .. })
        ));

        let mut outside = map_with(1, 0);
        outside.shards[0].slots = vec![SlotRange {
            start: 0,
            end: 16384,
        }];
        assert_eq!(
            outside.validate(),
            Err(TopologyError::SlotOutOfRange(16384))
        );

        let empty = TopologyMap {
            epoch: 1,
            cluster: "c".into(),
            region: "r".into(),
            shards: vec![],
        };
        assert_eq!(empty.validate(), Err(TopologyError::SlotUnassigned(0)));
    }

    #[test]
    fn json_uses_camel_case_and_roundtrips() {
        let map = map_with(1, 0);
        let json = serde_json::to_value(&map).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "epoch": 1, "cluster": "demo", "region": "eu",
                "shards": [{
                    "index": 0,
                    "slots": [{"start": 0, "end": 16383}],
                    "primary": {"id": "shard-0-0", "ip": "127.0.0.1", "port": 6379},
                    "replicas": []
                }]
            })
        );
        let back: TopologyMap = serde_json::from_value(json).unwrap();
        assert_eq!(back, map);
    }

    #[test]
    fn partial_maps_pass_structure_check_and_route() {
        let mut map = map_with(3, 1);
        map.shards[2].slots.clear();
        assert!(map.validate().is_err());
        assert_eq!(map.validate_structure(), Ok(()));
        assert_eq!(map.assigned_slots(), 10923);
        assert_eq!(map.route(16383, "shard-0-0", false), Route::Unserved);
        assert_eq!(map.route(0, "shard-0-0", false), Route::Local);
        assert_eq!(
            map.route(0, "shard-0-1", false),
            Route::Moved(&map.shards[0].primary)
        );
        assert_eq!(map.route(0, "shard-0-1", true), Route::Local);
        assert_eq!(
            map.route(5461, "shard-0-0", true),
            Route::Moved(&map.shards[1].primary)
        );
        assert_eq!(
            map.route(5461, "deposed", false),
            Route::Moved(&map.shards[1].primary)
        );
    }

    #[test]
    fn a_primary_without_slots_is_valid() {
        // Resharding adds shards empty and drains removed ones before dropping them.
        let mut map = map_with(2, 1);
        map.shards.push(ShardTopology {
            index: 2,
            slots: Vec::new(),
            primary: node("shard-2-0", 6379),
            replicas: vec![node("shard-2-1", 6379)],
        });
        assert_eq!(map.validate(), Ok(()));
        assert_eq!(map.role_of("shard-2-0"), Some(NodeRole::Primary));
        assert_eq!(
            map.route(0, "shard-2-0", false),
            Route::Moved(&map.shards[0].primary)
        );
    }

    #[test]
    fn cluster_ids_are_stable_40_hex() {
        let id = cluster_node_id("demo-eu-shard-0-0");
        assert_eq!(id.len(), 40);
        assert!(id.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_eq!(id, cluster_node_id("demo-eu-shard-0-0"));
        assert_ne!(id, cluster_node_id("demo-eu-shard-0-1"));
        assert_eq!(
            cluster_node_id("abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    proptest! {
        #[test]
        fn split_maps_always_validate(shards in 1u16..=64, replicas in 0usize..3, probe in 0u16..SLOT_COUNT) {
            let map = map_with(shards, replicas);
            prop_assert_eq!(map.validate(), Ok(()));
            let owner = map.owner_of_slot(probe);
            prop_assert!(owner.is_some());
            let covering = map.shards.iter().filter(|shard| shard.owns_slot(probe)).count();
            prop_assert_eq!(covering, 1);
        }

        #[test]
        fn dropping_a_slot_is_detected(shards in 1u16..=16, victim in 0u16..SLOT_COUNT) {
            let mut map = map_with(shards, 0);
            for shard in &mut map.shards {
                let mut set = shard.slot_set();
                set.remove(victim);
                shard.slots = set.ranges().collect();
            }
            prop_assert_eq!(map.validate(), Err(TopologyError::SlotUnassigned(victim)));
        }
    }
}
