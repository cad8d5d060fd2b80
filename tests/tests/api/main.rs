//! API tests: the real app in-process on a real socket, over real SQLite and Postgres.

mod audit;
mod auth;
mod bots;
mod errors;
mod import;
mod matrix;
mod openapi;
mod pairing;
mod panel;
mod proxies;
mod secrets;
mod security;
mod sessions;
mod tenants;
mod tokens;
mod users;
