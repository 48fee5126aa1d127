//! cloudcore's modules. The binary (`main.rs`) wires them into the daemon; integration tests
//! use them directly.
//!
//! Built so far: the CloudHub PKI (CA, serving certificate and join token kept in the
//! Kubernetes API) and its HTTPS server on :10002 (`/ca.crt`, `/edge.crt`, `/node/{name}`).
//! CloudHub's WebSocket sessions come next; until then the module cannot be enabled.

pub mod cloudhub;
