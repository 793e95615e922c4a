//! The HTTP side: listeners and connections (`server`, `http3`; `graceful`
//! tells them to finish), who may connect and how often (`admission`), the
//! request's way through the gateway, and the rules for what crosses it
//! (`canonical`, `forward`, `rewrite`, `request_id`, `client_timeouts`,
//! `framing`).
//!
//! A request's way, one file a step: `session` (accept, finish, log) runs
//! `listener_checks`, then `phases` (route, plugins by phase, the action),
//! which ends in a fixed answer, the path `around` the upstream (a plugin
//! such as the cache standing around the call), or the upstream `exchange`; `errors` names what can go wrong and how it is answered.

pub mod admission;
pub mod around;
pub mod canonical;
pub mod client_timeouts;
pub mod connection;
pub mod errors;
pub mod exchange;
pub mod forward;
pub mod framing;
pub mod graceful;
pub mod grpc;
pub mod grpc_web;
pub mod http1;
pub mod http3;
pub mod listener_checks;
pub mod listeners;
pub mod phases;
pub mod request_id;
pub mod rewrite;
pub mod server;
pub mod session;
pub mod tls;
pub mod tls_socket;
pub mod upgrade;

pub use server::{Drained, Server};
