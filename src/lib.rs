//! Portico: an API gateway. One binary, one YAML file.
//!
//! The request's way: `proxy::server` accepts, `proxy::session` serves a
//! request and logs it, `proxy::phases` drives the phases (`router` matches,
//! `plugins` run by phase), and `proxy::exchange` has `upstream` pick and
//! reach a target. `config` turns the file into the immutable `gateway`
//! model the proxy serves from. `control` runs it: start, reload (signal,
//! admin API, file change), shutdown; `admin` is the operators' HTTP API.

// No unsafe code, but for one call to glibc's malloc_trim
// (`control::memory`) and the optional binding to libmodsecurity (`waf::crs`),
// each allowed where it stands.
#![deny(unsafe_code)]

pub mod admin;
pub mod aggregate;
pub mod around;
pub mod body;
pub mod cache;
pub mod clock;
pub mod config;
pub mod consumers;
pub mod context;
pub mod control;
pub mod error;
pub mod explain;
pub mod gateway;
pub mod header_maps;
pub mod ip_text;
pub mod openapi;
pub mod password;
pub mod plugins;
pub mod proxy;
pub mod ratelimit;
pub mod router;
pub mod schema;
pub mod telemetry;
pub mod transcode;
pub mod transform;
pub mod upstream;
pub mod waf;
