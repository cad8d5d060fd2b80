//! botmox control plane: the server behind the API, the panel and the agents' connections.
//! See `docs/ARCHITECTURE.md` for the map.

pub mod store;
