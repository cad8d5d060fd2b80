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
}
