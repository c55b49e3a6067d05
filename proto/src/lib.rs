//! Corral's wire API, `corral.v1`, as generated tonic/prost code.
//!
//! Two services live here: [`v1::corral_client`]/[`v1::corral_server`] for users
//! (pools, nodes, jobs, tasks, logs) and
//! [`v1::agent_client`]/[`v1::agent_server`] for node agents (register, then one
//! bidirectional stream). Generated types stop at the edge: the coordinator converts
//! them into its own domain types once, where requests arrive.
//!
//! [`credentials`] is how every client presents its token, [`tls`] how it reaches
//! a coordinator (plain or TLS), [`leader`] how it finds the one that leads among
//! several, [`methods`] lists every method the protos declare, and [`words`]
//! converts the vocabulary's states, outcomes and array indices (`corral-types`) to
//! and from their protobuf forms.

pub mod credentials;
pub mod leader;
pub mod methods;
pub mod tls;
pub mod words;

/// Version 1 of the API. Additive changes only; a breaking change is `v2`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("corral.v1");

    /// The encoded descriptors of every message and service, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("corral_descriptor");
}
