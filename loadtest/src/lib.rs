//! # loadtest
//!
//! Drives simulated roomcast users (docs/protocol.md) against one or more loopback URLs and
//! checks what they receive: publish→deliver latency, throughput, and per-member offset
//! accounting (loss, duplicates, disorder, resume recovery).
//!
//! # Layout
//! Dependencies point one way, from the run down to the wire:
//!
//! - [`scenario`]: what a run does (TOML + overrides), validated with the key named.
//! - [`target`]: loopback-only URLs and opening one WebSocket from a chosen source address.
//! - [`auth`]: the HS256 token a connection presents when the scenario has a `jwt_secret`.
//! - [`wire`]: requests and a borrowed view of server frames; the payload in `data`. No I/O.
//! - [`stats`]: counters, HDR histograms, offset range sets, per-room faults and the merge
//!   that finds what only the whole run can see. No I/O.
//! - [`user`]: one simulated user (connect, join, publish, churn, resume); what it reads is
//!   checked in `user::receive`.
//! - [`engine`]: one worker's users on one thread; ticks, drain, close.
//! - [`worker`]: engines as child processes (JSON lines) or as threads.
//! - [`coordinator`]: a whole run: probe, spread, follow, deadline, merge — [`run`].
//! - [`report`]: the merged figures, summary table and verdict; [`plot`]: the SVG.
//! - [`cpu`]: the tester's own CPU time and peak memory.
//! - [`chaos`]: the fault campaign: its own Redis and nodes, a seeded schedule of faults, and
//!   a verdict on every acknowledged message (`loadtest chaos`).

#![deny(unsafe_code)]

pub mod auth;
pub mod chaos;
pub mod coordinator;
pub mod cpu;
pub mod engine;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod target;
pub mod user;
pub mod wire;
pub mod worker;

pub use coordinator::{Live, RunError, RunOptions, run};
pub use report::Report;
pub use scenario::{Overrides, Scenario, ScenarioError};
