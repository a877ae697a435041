//! # loadtest
//!
//! Drives simulated roomcast users (docs/protocol.md) against one or more `ws://` or `wss://`
//! URLs and checks what they receive: publish→deliver latency, throughput, and per-member offset
//! accounting (loss, duplicates, disorder, resume recovery).
//!
//! # Layout
//! Layers, lowest first. A module uses only modules of lower layers: the root crate's
//! `tests/layering.rs` reads this list and fails on any `use crate::…` that points sideways or up.
//!
//! 1. [`auth`], [`cpu`], [`deflate`], [`rng`], [`wire`]: the HS256 token a connection presents;
//!    the tester's own CPU time and peak memory; the permessage-deflate offer and inflater;
//!    seeded randomness; requests and a borrowed view of server frames, the payload in `data`,
//!    the clock. No I/O.
//! 2. [`tls`], [`socket`], [`pad`]: the rustls client (system roots, or `insecure`: any
//!    certificate) and the plain or TLS stream a socket runs over; the byte stream under each
//!    WebSocket, counting wire bytes and inflating compressed messages; message padding that
//!    compresses like chat lines or JSON payloads.
//! 3. [`target`]: `ws://`/`wss://` URLs, resolved once per process, and opening one WebSocket
//!    (from a chosen 127.0.0.N source address for loopback targets).
//! 4. [`scenario`]: what a run does (TOML + overrides), validated with the key named.
//! 5. [`stats`]: counters, HDR histograms, offset range sets, per-room faults and the merge that
//!    finds what only the whole run can see. No I/O.
//! 6. [`user`]: one simulated user (connect, join, publish, churn, resume) and the state a
//!    worker's users share; what it reads is checked in `user::receive`.
//! 7. [`engine`]: one worker's users on one thread; ticks, drain, close.
//! 8. [`worker`]: engines as child processes (JSON lines) or as threads.
//! 9. [`report`]: the merged figures, summary table and verdict.
//! 10. [`coordinator`], [`plot`], [`chaos`], [`webhooks`]: a whole run (probe, spread, follow,
//!     deadline, merge: [`run`]); the SVG; the fault campaign (its own Redis and nodes, a seeded
//!     schedule of faults, a verdict on every acknowledged message: `loadtest chaos`); a
//!     receiver counting the nodes' lifecycle webhooks against the run's truth.

#![deny(unsafe_code)]

pub mod auth;
pub mod chaos;
pub mod coordinator;
pub mod cpu;
pub mod deflate;
pub mod engine;
pub mod pad;
pub mod plot;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod socket;
pub mod stats;
pub mod target;
pub mod tls;
pub mod user;
pub mod webhooks;
pub mod wire;
pub mod worker;

pub use coordinator::{Live, RunError, RunOptions, run};
pub use report::Report;
pub use scenario::{Overrides, Scenario, ScenarioError};
