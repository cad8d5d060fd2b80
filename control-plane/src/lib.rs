//! botmox control plane: the server behind the API, the panel and the agents' connections.
//! See `docs/ARCHITECTURE.md` for the map.

pub mod agents;
pub mod audit;
pub mod auth;
pub mod bots;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod control;
pub mod events;
pub mod group;
pub mod guide;
pub mod health;
pub mod http;
pub mod incidents;
pub mod link;
pub mod metrics;
pub mod secrets;
pub mod server;
pub mod state;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub mod tokens;
pub mod users;
