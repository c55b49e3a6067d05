//! The core with its real store: restarts rebuild the state from what was written,
//! and both backends hold what the core asks of them. The core's own tests
//! (`corral-core`) need no store; these use its test environment (`testing`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use corral_core::testing::*;

use crate::core::*;
use crate::model::*;

mod backends;
mod graphs;
mod jobs;
mod lease;
mod policies;
mod pools;
mod resources;
mod restore;
mod templates;
