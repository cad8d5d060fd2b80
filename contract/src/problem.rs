//! `application/problem+json` bodies (RFC 9457), the one error format of the API.

use serde::{Deserialize, Serialize};

pub const CONTENT_TYPE: &str = "application/problem+json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// A URI naming the problem type (`about:blank` or `urn:botmox:problem:<code>`).
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    /// Stable, machine-readable: scripts match on this.
    pub code: String,
    /// For people: what went wrong in this request.
    pub detail: String,
    /// What to do next, where there is something useful to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The offending field, as a JSON path (`exec.program`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The request id, to find the server's log lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Every error of a request made of many items (`POST /bots/import`), each naming its item
    /// and field; absent on every other problem.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ItemError>,
}

/// One refused item of a request made of many (`POST /bots/import`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ItemError {
    /// The item's position in the request's list, from 0.
    pub index: usize,
    /// The offending field within the item, as a JSON path (`exec.program`), when one is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Stable, machine-readable (`validation_failed`, `bot_name_taken`, `unknown_reference`, …).
    pub code: String,
    /// For people: what is wrong with this item.
    pub detail: String,
}
