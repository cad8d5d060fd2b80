//! API tests: the real app in-process on a real socket, over real SQLite and Postgres.

mod auth;
mod bots;
mod errors;
mod matrix;
mod openapi;
