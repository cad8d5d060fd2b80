//! What a principal may see and do *inside* a route it may call: the one place that decides
//! which events reach it on a stream, which command kinds it may submit, and which command
//! rows (and their results) it may read. Route-level rules are `policy`'s; these are the
//! finer rules those routes share.
//!
//! `agent.exec` runs any program on a host (it can read a bot's environment, secrets
//! included) and `agent.drain` takes a host out of service: both are admin-only, and so are
//! their rows and results — a viewer or operator never learns what an exec printed.

use botmox_contract::{auth::Scope, commands::CommandKind, events::EventPayload};

use super::Principal;

/// Whether a kind is the admin's alone, to submit and to read: what acts on the host rather
/// than on one bot.
fn admin_only(kind: CommandKind) -> bool {
    matches!(kind, CommandKind::AgentExec | CommandKind::AgentDrain)
}

/// The scope needed to submit a command of `kind` through `POST /commands`.
pub fn submit_scope(kind: CommandKind) -> Scope {
    if admin_only(kind) {
        Scope::Admin
    } else {
        Scope::CommandsWrite
    }
}

/// The scope needed to read a command of `kind`: its row, its result, its events.
pub fn read_scope(kind: CommandKind) -> Scope {
    if admin_only(kind) {
        Scope::Admin
    } else {
        Scope::CommandsRead
    }
}

/// The command kinds whose rows `principal` may not read (to leave out of a listing).
pub fn hidden_kinds(principal: &Principal) -> Vec<CommandKind> {
    CommandKind::ALL.into_iter().filter(|kind| !principal.allows(read_scope(*kind))).collect()
}

/// The scope needed to receive an event: the one its resource's read route needs.
pub fn event_scope(payload: &EventPayload) -> Scope {
    match payload {
        EventPayload::BotState(_) | EventPayload::BotRemoved { .. } | EventPayload::Incident(_) => Scope::BotsRead,
        EventPayload::AgentPresence { .. } => Scope::AgentsRead,
        EventPayload::CommandStatus(command) => read_scope(command.kind),
    }
}

/// The scope needed to read a panel page (`/agents/…`, `/commands…`, …): what the guide's
/// recommendations pointing there need, so a `bots:read` token is not told about agents.
pub fn page_scope(page: &str) -> Scope {
    let section = page.trim_start_matches('/').split(['/', '?']).next().unwrap_or_default();
    match section {
        "agents" => Scope::AgentsRead,
        "commands" => Scope::CommandsRead,
        _ => Scope::BotsRead,
    }
}

#[cfg(test)]
mod tests {
    use botmox_contract::auth::Role;
    use uuid::Uuid;

    use super::*;
    use crate::auth::Credential;

    fn token(role: Role, scopes: &[Scope]) -> Principal {
        Principal {
            tenant_id: Uuid::now_v7(),
            role: Some(role),
            credential: Credential::ApiToken {
                token_id: Uuid::now_v7(),
                user_id: Uuid::now_v7(),
                scopes: scopes.to_vec(),
            },
        }
    }

    #[test]
    fn exec_and_drain_are_for_admins_only() {
        let operator = token(Role::Operator, &[Scope::CommandsWrite, Scope::CommandsRead]);
        let scoped_admin = token(Role::Admin, &[Scope::CommandsWrite, Scope::CommandsRead]);
        let admin = token(Role::Admin, &[Scope::Admin]);
        for kind in [CommandKind::AgentExec, CommandKind::AgentDrain] {
            assert!(!operator.allows(submit_scope(kind)) && !scoped_admin.allows(submit_scope(kind)));
            assert!(admin.allows(submit_scope(kind)) && admin.allows(read_scope(kind)));
        }
        assert!(operator.allows(submit_scope(CommandKind::BotSync)));
        assert_eq!(hidden_kinds(&operator), vec![CommandKind::AgentExec, CommandKind::AgentDrain]);
        assert!(hidden_kinds(&admin).is_empty());
    }

    #[test]
    fn pages_need_their_sections_scope() {
        assert_eq!(page_scope("/agents/123"), Scope::AgentsRead);
        assert_eq!(page_scope("/commands?status=dead_lettered"), Scope::CommandsRead);
        assert_eq!(page_scope("/bots/1"), Scope::BotsRead);
        assert_eq!(page_scope("/incidents"), Scope::BotsRead);
    }
}
