//! Test kit shared by botmox's integration and end-to-end tests and by the benchmark: fresh
//! databases on both backends, the in-process app, and the real binaries.

pub mod db;
