//! edgecore's modules. The binary (`main.rs`) wires them into the daemon; integration tests use
//! them directly.
//!
//! Built so far: EdgeHub's certificate bootstrap from the join token. EdgeHub's connection
//! comes next; until then the module cannot be enabled.

pub mod edgehub;
