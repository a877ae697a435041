//! # roomcast
//!
//! A real-time WebSocket messaging node: clients join rooms, publish, and receive every
//! message of their rooms in one order, with resume after reconnects.
//!
//! # Layout
//! Layers, lowest first. A module uses only modules of lower layers: `tests/layering.rs` reads
//! this list and fails on any `use crate::…` that points sideways or up.
//!
//! 1. [`protocol`], [`net`], `shrink`: the v1 wire format (frames, error and close codes), address
//!    ranges and client addresses (forwarding headers, PROXY protocol headers), returning
//!    memory to the OS. No I/O.
//! 2. [`config`]: layered configuration, one file per section; validation does no I/O.
//! 3. [`auth`], [`session`]: token verification; a session's handle (bounded outbound queue and
//!    close switch).
//! 4. [`hub`], [`broker`], [`backend`]: local room membership and fan-out of encoded frames;
//!    the `Broker` trait (order, history, presence, cross-node delivery) and its engines;
//!    the application's backend asked over HTTP (the connect, join and publish proxies).
//!    None sees another: the broker delivers through the `Deliver` callback the server wires
//!    to the hub.
//! 5. [`node`], [`webhooks`]: request semantics over hub + broker, with each session's room
//!    memberships and their rules; admission (per-IP limits, rate limiters); lifecycle
//!    (draining, shutdown, task tracking). Its `NodeError` is mapped by each endpoint to its
//!    own wire. `webhooks` sends the broker's lifecycle events to the application's backend.
//! 6. [`http`]: the JSON error shape and the health endpoints every endpoint shares.
//! 7. [`ws`], [`api`], [`telemetry`], `accept`, [`demo`]: the endpoints; they call the node.
//!    `accept` takes TCP connections and serves HTTP/1 on them (header timeout, per-IP cap
//!    before the upgrade, a trusted proxy's PROXY header first).
//! 8. [`server`]: wires the concrete engine and serves until shutdown:
//!    `run(config, listener, shutdown)`.

#![forbid(unsafe_code)]

mod accept;
pub mod api;
pub mod auth;
pub mod backend;
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
pub mod webhooks;
pub mod ws;

pub use config::Config;
pub use server::run;
