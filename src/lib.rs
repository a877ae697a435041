//! # roomcast
//!
//! A real-time WebSocket messaging node: clients join rooms, publish, and receive every
//! message of their rooms in one order, with resume after reconnects.
//!
//! # Layout
//! Dependencies point one way, from the wire inwards:
//!
//! - [`protocol`]: the v1 wire format (frames, error and close codes). No I/O.
//! - [`session`]: a session's handle: bounded outbound queue and close switch.
//! - [`hub`]: local room membership and fan-out of encoded frames to sessions.
//! - [`broker`]: the `Broker` trait (order, history, presence, cross-node delivery) and its
//!   engines. The hub never sees it.
//! - [`node`]: request semantics over hub + broker; lifecycle (draining, shutdown, task tracking).
//! - [`ws`], [`http`], [`api`]: the endpoints; they only call the node. `accept` takes TCP
//!   connections and serves HTTP/1 on them (header timeout, per-IP cap before the upgrade).
//! - [`server`]: wires the concrete engine and serves until shutdown: `run(config, listener, shutdown)`.
//! - [`config`]: layered configuration.

#![forbid(unsafe_code)]

mod accept;
pub mod api;
pub mod auth;
pub mod broker;
pub mod config;
pub mod demo;
pub mod http;
pub mod hub;
pub mod net;
pub mod node;
pub mod protocol;
pub mod server;
pub mod session;
mod shrink;
pub mod telemetry;
pub mod ws;

pub use config::Config;
pub use server::run;
