//! droid2api: a gateway that puts Factory.ai credentials behind the OpenAI Chat Completions,
//! Anthropic Messages and OpenAI Responses wire formats.
//!
//! The binary (`src/main.rs`) is a thin shell over this library; `ARCHITECTURE.md` has the code
//! map and the invariants each module keeps.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod error;
pub mod inbound;
pub mod json_scan;
pub mod proxy;
pub mod reasoning_cache;
pub mod secret;
pub mod server;
pub mod sse;
pub mod store;
pub mod telemetry;
pub mod translate;
pub mod ui;
pub mod upstream;
pub mod usage;
