//! Deterministic tests of the core: chosen `now`s, events fed by hand, assertions on
//! the outbox and the state, and `sanity_check()` after every step.

use std::time::Duration;

use super::*;
use crate::error::Error;
use crate::testing::*;

mod continuous;
mod credentials;
mod explain;
mod gangs;
mod graphs;
mod jobs;
mod nodes;
mod policies;
mod pools;
mod resources;
mod schedules;
mod scheduling;
mod templates;
