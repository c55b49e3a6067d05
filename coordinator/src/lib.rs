//! The Corral coordinator: it keeps pools, nodes, jobs, tasks and every attempt in a
//! durable store, schedules ready tasks onto the free slots of its nodes, watches the
//! nodes through heartbeats, and starts local agents for `local` pools.
//!
//! The dependency rule: `corral-types` ← `corral-core` ([`core`], [`model`]) ←
//! {[`store`], the runtime's handle ([`runtime::Input`], [`runtime::Handle`])} ←
//! [`app`] (the operations both edges offer, in domain types) ←
//! {[`service`], [`agent_service`], [`objects`], [`http`], [`provider`], [`notify`],
//! [`feed`]} ← {the loop ([`runtime::event_loop`]), [`start`]}. The first arrow is a
//! crate boundary, so the compiler keeps the core free of tonic, tokio and the
//! databases; the edges reach the core only through the handle.
//!
//! Read the modules in this order:
//! - [`model`]: the shared vocabulary (`corral-types`) and the coordinator's own specs
//!   (from `corral-core`, re-exported);
//! - [`auth`]: tokens, roles and node secrets; the gate in front of every gRPC call;
//! - [`mapreduce`]: map/reduce jobs planned as graphs of map and reduce tasks;
//! - [`core`]: every decision, as synchronous functions of the state and `now` that
//!   write their effects into an outbox (the `corral-core` crate, re-exported);
//! - [`error`]: the core's refusals and the shell's own failures, as gRPC statuses;
//! - [`store`]: SQLite with group commit, and the log files;
//! - [`events`]: the numbered feed of every change, written with the change;
//! - [`runtime`]: what reaches the event loop and the handle to it; the pure dispatch
//!   of events into the core; the loop that owns the core and carries out its outbox;
//! - [`shared`]: what the gRPC and HTTP edges share;
//! - [`app`]: the operations both edges call in domain types (dispatch, schedule
//!   pause/resume/run, a task list's last attempts): neither edge calls the other;
//! - [`convert`], [`service`], [`agent_service`]: the gRPC edge;
//! - [`feed`]: the event feed read as a stream (gRPC and the dashboard);
//! - [`metrics`], [`http`]: Prometheus metrics, the dashboard and its JSON API;
//! - [`notify`]: completion callbacks, posted until accepted;
//! - [`objects`]: the object store for task inputs and outputs, and its service;
//! - [`provider`]: starting and stopping nodes: local agents, commands, containers;
//! - [`tls`], [`conns`]: TLS on both ports, and the cap on connections;
//! - [`standby`]: what a coordinator that does not lead serves (refusals that name
//!   the leader, redirects to its dashboard);
//! - [`start`]: the composition root that starts all of the above.
//!
//! The state machines and vocabulary are drawn in `coordinator/README.md`.
#![deny(clippy::await_holding_lock)]

pub mod agent_service;
pub mod app;
pub mod auth;
pub mod conns;
pub mod convert;
#[cfg(test)]
mod core_tests;
/// The core is its own crate (`corral-core`): decisions, state and the domain model.
pub use corral_core as core;
pub mod error;
pub mod events;
pub mod feed;
pub mod http;
pub mod mapreduce;
pub mod metrics;
pub use corral_core::model;
pub mod notify;
pub mod objects;
pub mod provider;
pub mod queues;
pub mod runtime;
pub mod service;
pub mod shared;
pub mod standby;
pub mod start;
pub mod store;
pub mod tls;
pub mod triggers;

pub use error::{Error, Result};
pub use start::{Config, Coordinator};
