//! CloudHub: where edges join and connect.
//!
//! - [`certs`]: the CA, CloudCore's serving certificate and the join token, loaded from files,
//!   else from Secrets in namespace `kubeedge`, else generated and stored there — so every
//!   cloudcore replica uses the same CA (create-if-absent; a replica that loses the race adopts
//!   the winner's, unlike upstream #5922).
//! - [`https`]: the join API on :10002, and [`task_report`]: node task reports on it.
//! - [`queue`]: one node's downstream queues (ACK rules, one in flight, resends, dedup).
//! - [`session`]: the edge sessions on :10000; [`module`]: CloudHub as a bus module.
//!
//! The edges its tests and benchmarks connect are `kubeedge_hollow::ack_fleet`'s.

pub mod certs;
pub mod https;
pub mod module;
pub mod queue;
pub mod session;
pub mod task_report;
