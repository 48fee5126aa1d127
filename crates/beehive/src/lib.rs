//! The module bus: upstream's beehive, kept in spirit and made safe.
//!
//! A daemon is a set of [`Module`]s, each with a name and a group (named exactly as upstream:
//! `websocket`/`hub`, `metamanager`/`meta`, `cloudhub`…). Modules are registered in a
//! [`Registry`], started together by a [`Supervisor`], and talk through the [`Bus`] with the
//! wire [`Message`](kubeedge_model::Message) as the unit, because most messages cross the
//! cloud–edge link unchanged.
//!
//! Semantics, as upstream (`core/channel/context_channel.go`) unless noted:
//! - every module has one inbox, a bounded channel of [`CHANNEL_CAPACITY`] (1024) messages;
//! - [`Bus::send`] waits for room (backpressure); [`Bus::try_send`] drops and counts instead;
//! - [`Bus::send_sync`] marks the message `sync`, waits for the reply whose `parent_msg_id` is
//!   the request's `msg_id`, and gives up after a timeout (30 s by default);
//! - [`Bus::send_resp`] hands a reply to the waiting `send_sync`; a reply nobody waits for is
//!   logged and dropped;
//! - [`Bus::send_to_group`] delivers a copy to every member of a group; [`Bus::send_to_group_sync`]
//!   waits for a reply from each.
//!
//! Unlike upstream, a waiter is removed whatever happens to its caller (reply, timeout, the
//! caller's future being dropped, shutdown), so pending requests never leak; the supervisor
//! restarts failed modules with backoff, and shutdown has a deadline and names the modules that
//! did not stop.

mod bus;
mod module;
mod supervisor;

pub use bus::{Bus, BusError, CHANNEL_CAPACITY, DEFAULT_SYNC_TIMEOUT, ModuleStats, PendingReply, StatsSnapshot};
pub use module::{BoxFuture, Module, ModuleContext, ModuleError, Spawner};
pub use supervisor::{Health, ModuleState, Registry, RestartPolicy, ShutdownReport, Supervisor};
