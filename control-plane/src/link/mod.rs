//! The agents' side of the control plane: their connections ([`ws`], [`poll`]), the protocol
//! logic both transports share ([`session`]), command dispatch ([`dispatch`]), the registry of
//! connections on this replica ([`hub`]), batched heartbeats ([`presence`]) and the signals
//! between replicas ([`cluster`]). Deciding what the fleet's state means is `supervisor`'s.

pub mod cluster;
pub mod dispatch;
pub mod hub;
pub mod logs;
pub mod poll;
pub mod presence;
pub mod session;
pub mod ws;

use axum::extract::DefaultBodyLimit;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    let frames =
        OpenApiRouter::new().routes(routes!(poll::frames)).layer(DefaultBodyLimit::max(2 * ws::MAX_FRAME_BYTES));
    OpenApiRouter::new().routes(routes!(ws::connect)).routes(routes!(poll::next)).merge(frames)
}
