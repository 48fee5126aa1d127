//! EdgeHub: the edge's link to CloudHub.
//!
//! - [`certs`]: joining with the token alone — fetch the CA, check it against the token, send a
//!   CSR, write the CA, certificate and key files.
//! - [`module`]: the EdgeHub bus module — the session to CloudHub.

pub mod certs;
pub mod module;
