//! The Meridian operator: controllers for `CacheCluster` and `CacheRegion`, the pure
//! builders of the Kubernetes objects they own, and the orchestration of cache nodes.

pub mod acl;
pub mod conditions;
pub mod controller;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod nodes;
pub mod peers;
pub mod probe;
pub mod rbac;
pub mod region_plan;
pub mod reshard;
pub mod resources;
pub mod rollout;
pub mod server;
pub mod topology_plan;

pub use error::Error;
