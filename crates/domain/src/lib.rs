//! Tollgate's pure core: LiteLLM's `config.yaml` read into typed deployments, the provider
//! catalogue, the one error type every layer speaks, and the JSON surgery the hot path uses
//! to rewrite a body without re-encoding it.
//!
//! This crate performs no I/O: it knows nothing about sockets, files, HTTP or the process
//! environment (variables come in through [`config::EnvSource`]).

pub mod board_sync;
pub mod config;
pub mod deployment;
pub mod duration;
pub mod error;
pub mod json;
pub mod pii;
pub mod pricing;
pub mod provider_catalog;
pub mod routing;
pub mod secret;
pub mod sse;
pub mod tokens;
pub mod trim;

pub use config::{
    BackgroundHealthChecks, CacheBackend, CacheConfig, CacheScope, ConfigError, EnvSource, GatewayConfig,
};
pub use deployment::{Deployment, Endpoint, ProviderKind};
pub use error::{ErrorKind, GatewayError};
pub use secret::Secret;
