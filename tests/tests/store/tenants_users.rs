//! Tenants, users and the liveness of their sessions.

use botmox_contract::auth::Role;
use botmox_control_plane::store::{LiveUser, NewSession, NewUser, StoreError, UserChanges};

use crate::Ctx;

conformance!(
    ensure_tenant_is_idempotent,
    users_round_trip,
    usernames_are_unique_server_wide,
    session_checks_answer_each_in_order
);

fn new_user(tenant_id: botmox_contract::Id, username: &str, role: Role) -> NewUser {
    NewUser {
        tenant_id,
        username: username.to_owned(),
        email: Some(format!("{username}@example.com")),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1${username}"),
        role,
    }
}

async fn ensure_tenant_is_idempotent(t: Ctx) -> anyhow::Result<()> {
    // The harness created "default" at t0; asking again (later) returns the same id.
    assert_eq!(t.store.ensure_tenant("default", t.at(10.0)).await?, t.tenant);
    let acme = t.store.ensure_tenant("acme", t.at(1.0)).await?;
    assert_ne!(acme, t.tenant);
    assert_eq!(t.store.ensure_tenant("acme", t.at(2.0)).await?, acme);
    assert_eq!(acme.get_version_num(), 7, "ids are UUIDv7");
    Ok(())
}

async fn users_round_trip(t: Ctx) -> anyhow::Result<()> {
    let other = t.tenant("other").await?;
    assert_eq!(t.store.count_users(t.tenant).await?, 0);

    let alice = t.store.create_user(new_user(t.tenant, "alice", Role::Admin), t.at(1.0)).await?;
    assert_eq!(alice.tenant_id, t.tenant);
    assert_eq!(alice.user.username, "alice");
    assert_eq!(alice.user.email.as_deref(), Some("alice@example.com"));
    assert_eq!(alice.user.role, Role::Admin);
    assert_eq!(alice.user.created_at, t.at(1.0));
    assert_eq!(alice.password_hash, "$argon2id$v=19$m=19456,t=2,p=1$alice");
    assert_eq!(alice.disabled_at, None);

    let mut no_email = new_user(t.tenant, "bob", Role::Viewer);
    no_email.email = None;
    let bob = t.store.create_user(no_email, t.at(2.0)).await?;
    assert_eq!(bob.user.email, None);
    assert_eq!(bob.user.role, Role::Viewer);
    t.store.create_user(new_user(other, "carol", Role::Operator), t.at(3.0)).await?;

    let got = t.store.get_user(t.tenant, alice.user.id).await?;
    assert_eq!(got.user, alice.user);
    assert_eq!(got.password_hash, alice.password_hash);
    assert_err!(t.store.get_user(other, alice.user.id).await, StoreError::NotFound(_));
    assert_err!(t.store.get_user(t.tenant, uuid::Uuid::now_v7()).await, StoreError::NotFound(_));

    let found = t.store.find_user_by_username("bob").await?.expect("bob exists");
    assert_eq!(found.user, bob.user);
    assert_eq!(found.tenant_id, t.tenant);
    let carol = t.store.find_user_by_username("carol").await?.expect("carol exists");
    assert_eq!(carol.tenant_id, other);
    assert!(t.store.find_user_by_username("nobody").await?.is_none());
    // Usernames are one case-blind namespace (no look-alike logins): any case finds the user.
    let shouted = t.store.find_user_by_username("ALICE").await?.expect("alice, whatever the case");
    assert_eq!(shouted.user, alice.user);

    assert_eq!(t.store.count_users(t.tenant).await?, 2);
    assert_eq!(t.store.count_users(other).await?, 1);
    Ok(())
}

async fn usernames_are_unique_server_wide(t: Ctx) -> anyhow::Result<()> {
    let other = t.tenant("other").await?;
    let first = t.store.create_user(new_user(t.tenant, "alice", Role::Admin), t.at(1.0)).await?;
    assert_err!(
        t.store.create_user(new_user(t.tenant, "alice", Role::Viewer), t.at(2.0)).await,
        StoreError::Conflict(_)
    );
    assert_err!(t.store.create_user(new_user(other, "alice", Role::Viewer), t.at(2.0)).await, StoreError::Conflict(_));
    // The refused creations changed nothing.
    assert_eq!(t.store.count_users(t.tenant).await?, 1);
    assert_eq!(t.store.count_users(other).await?, 0);
    let found = t.store.find_user_by_username("alice").await?.expect("alice exists");
    assert_eq!(found.user, first.user);
    Ok(())
}

async fn session_checks_answer_each_in_order(t: Ctx) -> anyhow::Result<()> {
    let user = t.store.create_user(new_user(t.tenant, "ada", Role::Operator), t.at(0.0)).await?.user;
    let other = t.store.create_user(new_user(t.tenant, "bob", Role::Viewer), t.at(0.0)).await?.user;
    let session = |user_id, expires: f64, hash: &str| NewSession {
        tenant_id: t.tenant,
        user_id,
        expires_at: t.at(expires),
        refresh_hash: hash.into(),
        source_ip: None,
        user_agent: None,
    };
    let live = t.store.create_session(session(user.id, 100.0, "h1"), t.at(1.0)).await?;
    let expired = t.store.create_session(session(user.id, 5.0, "h2"), t.at(1.0)).await?;
    let revoked = t.store.create_session(session(user.id, 100.0, "h3"), t.at(1.0)).await?;
    t.store.revoke_session(revoked, "logout", t.at(2.0)).await?;
    let bobs = t.store.create_session(session(other.id, 100.0, "h4"), t.at(1.0)).await?;
    let unknown = uuid::Uuid::now_v7();

    let checks = [
        (user.id, live),
        (user.id, expired),
        (user.id, revoked),
        (user.id, bobs),
        (other.id, bobs),
        (user.id, unknown),
        (user.id, live),
    ];
    let answers = t.store.live_session_users(&checks, t.at(10.0)).await?;
    let ada = Some(LiveUser { tenant_id: t.tenant, role: Role::Operator });
    let bob = Some(LiveUser { tenant_id: t.tenant, role: Role::Viewer });
    // Expired, revoked, another user's session (named with the wrong user), unknown: none.
    assert_eq!(answers, [ada.clone(), None, None, None, bob, None, ada]);
    assert_eq!(t.store.live_session_users(&[], t.at(10.0)).await?, []);
    // A disabled user's sessions are not live either.
    let disable = UserChanges { email: None, role: None, password_hash: None, disabled: Some(true) };
    t.store.update_user(t.tenant, other.id, disable, t.at(11.0)).await?;
    assert_eq!(t.store.live_session_users(&[(other.id, bobs)], t.at(12.0)).await?, [None]);
    Ok(())
}
