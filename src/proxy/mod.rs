//! The HTTP side: listeners and connections (`server`), who may connect and
//! how often (`admission`), the request's way through the gateway
//! (`handler`), and the rules for what crosses it (`forward`, `rewrite`,
//! `request_id`, `client_timeouts`, `framing`).

pub mod admission;
pub mod canonical;
pub mod client_timeouts;
pub mod forward;
pub mod framing;
pub mod grpc;
pub mod grpc_web;
pub mod handler;
pub mod http3;
pub mod request_id;
pub mod rewrite;
pub mod server;
pub mod tls;
pub mod upgrade;

pub use server::{Drained, Server};
