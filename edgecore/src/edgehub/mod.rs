//! EdgeHub: the edge's link to CloudHub.
//!
//! - [`certs`]: joining with the token alone — fetch the CA, check it against the token, send a
//!   CSR, write the CA, certificate and key files.

pub mod certs;
pub mod module;
