//! Kubernetes REST API machinery shared by apiserver-lite and edgecore's MetaServer.
//!
//! Everything here is pure: no I/O, no async, objects are `serde_json::Value`s. The modules
//! cover request decoding ([`request`]), selectors ([`selector`]), the four patch flavours
//! ([`patch`]), `Status` errors ([`status`]), server-side tables ([`table`]), discovery
//! documents ([`discovery`]), watch-event encoding ([`watch`]), object helpers ([`object`]) and
//! Kubernetes timestamps ([`time`]).

pub mod discovery;
pub mod object;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod request;
pub mod selector;
pub mod status;
pub mod table;
pub mod time;
pub mod watch;

pub use discovery::{
    ResourceInfo, aggregated_discovery, api_group, api_group_list, api_resource_list, api_versions, version_info,
};
pub use patch::{PatchError, PatchType, apply, json_patch, merge_patch, strategic_merge_patch};
pub use request::{ApiPath, ListOptions, ResourceRequest, Verb, parse_path, parse_query, verb};
pub use selector::{FieldSelector, LabelSelector, NameProblem, SelectorError};
pub use status::{ApiError, success_status};
pub use table::{AcceptKind, IncludeObject, parse_accept, to_table};
pub use watch::{EventType, bookmark, encode_event};
