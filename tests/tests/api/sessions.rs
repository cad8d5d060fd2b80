//! Login sessions end to end, as a browser sees them: the refresh cookie's attributes, rotation
//! and reuse detection, logout, password change, disabling a user, and login rate limits.

use std::{net::IpAddr, sync::Arc};

use botmox_e2e::{
    app::{send, TestApp, ADMIN_PASSWORD},
    both_backends,
    db::Backend,
};
use reqwest::{
    cookie::{CookieStore, Jar},
    header, Url,
};
use serde_json::{json, Value};

both_backends!(login_sets_a_strict_http_only_refresh_cookie, refresh_rotates_and_a_replay_ends_the_family);
both_backends!(
    racing_refreshes_with_one_cookie_get_one_token,
    logout_ends_the_session,
    password_change_ends_every_session
);
both_backends!(disabling_a_user_cuts_sessions_and_tokens_at_once, deleting_a_user_ends_their_credentials);
both_backends!(login_brute_force_is_rate_limited);

const REFRESH_PATH: &str = "/api/v1/auth/refresh";

/// A client whose connections come from `127.0.0.<last_octet>`: rate limits count per client
/// address, so a scenario that counts attempts starts from a clean slate on its own address.
pub fn client_from(last_octet: u8) -> anyhow::Result<reqwest::Client> {
    let address = IpAddr::from([127, 0, 0, last_octet]);
    Ok(reqwest::Client::builder().local_address(address).build()?)
}

/// One browser: its own cookie jar (kept by the client, as a browser would).
struct Browser {
    client: reqwest::Client,
    jar: Arc<Jar>,
}

impl Browser {
    fn new() -> anyhow::Result<Self> {
        let jar = Arc::new(Jar::default());
        let client = reqwest::Client::builder().cookie_provider(jar.clone()).build()?;
        Ok(Self { client, jar })
    }

    /// Logs in; returns the access token.
    async fn login(&self, app: &TestApp, username: &str, password: &str) -> anyhow::Result<String> {
        let (status, body) = send(
            self.client
                .post(app.url("/api/v1/auth/login"))
                .json(&json!({ "username": username, "password": password })),
        )
        .await?;
        anyhow::ensure!(status == 200, "login of {username} answered {status}: {body}");
        Ok(body["access_token"].as_str().unwrap_or_default().to_owned())
    }

    /// The refresh cookie's value as the browser would send it to `/api/v1/auth/refresh`.
    fn refresh_cookie(&self, app: &TestApp) -> Option<String> {
        let url = Url::parse(&app.url(REFRESH_PATH)).ok()?;
        let header = self.jar.cookies(&url)?;
        let value = header.to_str().ok()?.strip_prefix("botmox_refresh=")?.to_owned();
        Some(value)
    }

    async fn refresh(&self, app: &TestApp) -> anyhow::Result<(u16, Value)> {
        send(self.client.post(app.url(REFRESH_PATH))).await
    }
}

/// Presents a refresh cookie by hand (an attacker who copied it, or a replay).
async fn refresh_with(app: &TestApp, cookie: &str) -> anyhow::Result<(u16, Value)> {
    send(app.client.post(app.url(REFRESH_PATH)).header(header::COOKIE, format!("botmox_refresh={cookie}"))).await
}

/// Status of `GET /auth/me` with `token`: 200 while the credential lives, 401 once it is dead.
async fn me_status(app: &TestApp, token: &str) -> anyhow::Result<u16> {
    Ok(send(app.client.get(app.url("/api/v1/auth/me")).bearer_auth(token)).await?.0)
}

/// Creates a user through the API (as the admin); returns its id.
async fn create_user(app: &TestApp, username: &str, password: &str, role: &str) -> anyhow::Result<String> {
    let body = json!({ "username": username, "password": password, "role": role });
    let (status, user) = send(app.post("/api/v1/users", &body)).await?;
    anyhow::ensure!(status == 201, "user creation answered {status}: {user}");
    Ok(user["id"].as_str().unwrap_or_default().to_owned())
}

async fn login_sets_a_strict_http_only_refresh_cookie(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let response = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({ "username": "admin", "password": ADMIN_PASSWORD }))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let cookies: Vec<String> = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let attributes: Vec<&str> = cookies[0].split(';').map(str::trim).collect();
    let (name, value) = attributes[0].split_once('=').unwrap_or_default();
    assert_eq!(name, "botmox_refresh");
    assert_eq!(value.len(), 40, "a 240-bit random value");
    assert!(attributes.contains(&"HttpOnly"), "{attributes:?}");
    assert!(attributes.contains(&"SameSite=Strict"), "{attributes:?}");
    assert!(attributes.contains(&"Path=/api/v1/auth"), "{attributes:?}");
    assert!(attributes.contains(&"Max-Age=604800"), "a session lasts 7 days: {attributes:?}");
    assert!(!attributes.contains(&"Secure"), "the test server is plain http: {attributes:?}");
    let body: Value = response.json().await?;
    assert!(!body.to_string().contains(value), "the refresh token is never in a body readable by scripts");

    // A browser sends it to the auth endpoints only, never with ordinary API calls.
    let browser = Browser::new()?;
    browser.login(&app, "admin", ADMIN_PASSWORD).await?;
    assert!(browser.refresh_cookie(&app).is_some());
    let bots_url = Url::parse(&app.url("/api/v1/bots"))?;
    assert!(browser.jar.cookies(&bots_url).is_none(), "the cookie is scoped to /api/v1/auth");
    app.stop().await
}

async fn refresh_rotates_and_a_replay_ends_the_family(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let browser = Browser::new()?;
    let first_access = browser.login(&app, "admin", ADMIN_PASSWORD).await?;
    let first_cookie = browser.refresh_cookie(&app).unwrap_or_default();
    assert!(!first_cookie.is_empty());

    let (status, refreshed) = browser.refresh(&app).await?;
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(refreshed["token_type"], "Bearer");
    assert_eq!(refreshed["user"]["username"], "admin");
    let second_access = refreshed["access_token"].as_str().unwrap_or_default().to_owned();
    assert_eq!(me_status(&app, &second_access).await?, 200, "the refreshed access token works");
    let second_cookie = browser.refresh_cookie(&app).unwrap_or_default();
    assert!(!second_cookie.is_empty());
    assert_ne!(second_cookie, first_cookie, "every refresh rotates the cookie");

    // Someone replays the rotated-away cookie: refused, and the whole family ends with it.
    let (status, body) = refresh_with(&app, &first_cookie).await?;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "unauthorized");
    let (status, _) = browser.refresh(&app).await?;
    assert_eq!(status, 401, "the newer refresh cookie of the family is dead too");
    assert_eq!(me_status(&app, &first_access).await?, 401);
    assert_eq!(me_status(&app, &second_access).await?, 401);
    let (status, _) = refresh_with(&app, &second_cookie).await?;
    assert_eq!(status, 401);

    // Other sessions of the same user live on; the reuse is on record.
    assert_eq!(me_status(&app, &app.token).await?, 200);
    let (status, audit) = send(app.get("/api/v1/audit?action=session_revoked_refresh_reuse")).await?;
    assert_eq!(status, 200);
    let items = audit["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{audit}");
    assert_eq!(items[0]["outcome"], "failure");
    assert_eq!(items[0]["actor"]["kind"], "user");
    app.stop().await
}

async fn racing_refreshes_with_one_cookie_get_one_token(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let browser = Browser::new()?;
    let access = browser.login(&app, "admin", ADMIN_PASSWORD).await?;
    let cookie = browser.refresh_cookie(&app).unwrap_or_default();

    // A thief and the owner (or many copies of a stolen cookie) present it at the same moment:
    // the family may hand out one successor at most, and the reuse must still end it.
    let attempts = (0..8).map(|_| {
        app.client.post(app.url(REFRESH_PATH)).header(header::COOKIE, format!("botmox_refresh={cookie}")).send()
    });
    let mut winners = Vec::new();
    for response in futures::future::join_all(attempts).await {
        let response = response?;
        if response.status() == 200 {
            let set = response.headers().get(header::SET_COOKIE).and_then(|v| v.to_str().ok()).unwrap_or_default();
            let value = set.split(';').next().and_then(|c| c.strip_prefix("botmox_refresh=")).unwrap_or_default();
            let value = value.to_owned();
            let body: Value = response.json().await?;
            winners.push((value, body["access_token"].as_str().unwrap_or_default().to_owned()));
        } else {
            assert_eq!(response.status(), 401);
        }
    }
    assert_eq!(winners.len(), 1, "one refresh token, one successor");
    let (next_cookie, next_access) = &winners[0];
    let (status, _) = refresh_with(&app, next_cookie).await?;
    assert_eq!(status, 401, "the reuse ended the family, the winner's successor included");
    assert_eq!(me_status(&app, next_access).await?, 401);
    assert_eq!(me_status(&app, &access).await?, 401);
    app.stop().await
}

async fn logout_ends_the_session(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;

    // Logout with the bearer token and the cookie.
    let browser = Browser::new()?;
    let access = browser.login(&app, "admin", ADMIN_PASSWORD).await?;
    let cookie = browser.refresh_cookie(&app).unwrap_or_default();
    assert_eq!(me_status(&app, &access).await?, 200);
    let response = browser.client.post(app.url("/api/v1/auth/logout")).bearer_auth(&access).send().await?;
    assert_eq!(response.status(), 204);
    let cleared = response.headers().get(header::SET_COOKIE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(cleared.starts_with("botmox_refresh=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(me_status(&app, &access).await?, 401, "the access token dies with its session");
    let (status, _) = refresh_with(&app, &cookie).await?;
    assert_eq!(status, 401, "so does the refresh token");
    let (status, _) = browser.refresh(&app).await?;
    assert_eq!(status, 401, "the browser's jar no longer holds a live cookie");

    // Logout with the cookie only (a page reload lost the access token): same effect.
    let browser = Browser::new()?;
    let access = browser.login(&app, "admin", ADMIN_PASSWORD).await?;
    let (status, _) = send(browser.client.post(app.url("/api/v1/auth/logout"))).await?;
    assert_eq!(status, 204);
    assert_eq!(me_status(&app, &access).await?, 401);

    assert_eq!(me_status(&app, &app.token).await?, 200, "other sessions are untouched");

    // Each ended session is on record once; a second logout with a dead cookie ends nothing.
    let (status, _) = send(
        app.client.post(app.url("/api/v1/auth/logout")).header(header::COOKIE, format!("botmox_refresh={cookie}")),
    )
    .await?;
    assert_eq!(status, 204);
    let (_, me) = send(app.get("/api/v1/auth/me")).await?;
    let (_, audit) = send(app.get("/api/v1/audit?action=logout")).await?;
    let items = audit["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 2, "{audit}");
    for entry in &items {
        assert_eq!(entry["actor"], json!({ "kind": "user", "id": me["id"] }));
        assert_eq!(entry["outcome"], "success");
    }
    app.stop().await
}

async fn password_change_ends_every_session(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    create_user(&app, "olga", "olga-old-password", "operator").await?;
    let (laptop, phone) = (Browser::new()?, Browser::new()?);
    let laptop_access = laptop.login(&app, "olga", "olga-old-password").await?;
    let phone_access = phone.login(&app, "olga", "olga-old-password").await?;
    let (status, token) = send(
        app.client
            .post(app.url("/api/v1/tokens"))
            .bearer_auth(&laptop_access)
            .json(&json!({ "name": "olga's script", "scopes": ["bots:read"] })),
    )
    .await?;
    assert_eq!(status, 201, "{token}");
    let api_token = token["secret"].as_str().unwrap_or_default().to_owned();
    let change = |token: &str, current: &str, new: &str| {
        app.client
            .post(app.url("/api/v1/auth/password"))
            .bearer_auth(token)
            .json(&json!({ "current_password": current, "new_password": new }))
    };

    let (status, body) = send(change(&laptop_access, "not-her-password", "olga-new-password")).await?;
    assert_eq!(status, 403);
    assert_eq!(body["code"], "forbidden");
    let (status, body) = send(change(&api_token, "olga-old-password", "olga-new-password")).await?;
    assert_eq!(status, 403, "an API token cannot change the password: {body}");
    let (status, body) = send(change(&laptop_access, "olga-old-password", "short")).await?;
    assert_eq!(status, 422);
    assert_eq!(body["field"], "new_password");
    assert_eq!(me_status(&app, &laptop_access).await?, 200, "refused changes end nothing");
    assert_eq!(me_status(&app, &phone_access).await?, 200);

    let (status, _) = send(change(&laptop_access, "olga-old-password", "olga-new-password")).await?;
    assert_eq!(status, 204);
    assert_eq!(me_status(&app, &laptop_access).await?, 401, "the session that changed it ends too");
    assert_eq!(me_status(&app, &phone_access).await?, 401, "every other session ends");
    let (status, _) = phone.refresh(&app).await?;
    assert_eq!(status, 401, "and cannot be refreshed");
    assert!(app.login("olga", "olga-old-password").await.is_err(), "the old password is gone");
    let fresh = app.login("olga", "olga-new-password").await?;
    assert_eq!(me_status(&app, &fresh).await?, 200);
    app.stop().await
}

async fn disabling_a_user_cuts_sessions_and_tokens_at_once(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let id = create_user(&app, "ivan", "ivan-password", "operator").await?;
    let browser = Browser::new()?;
    let access = browser.login(&app, "ivan", "ivan-password").await?;
    let (status, token) = send(
        app.client
            .post(app.url("/api/v1/tokens"))
            .bearer_auth(&access)
            .json(&json!({ "name": "ivan's script", "scopes": ["bots:read"] })),
    )
    .await?;
    assert_eq!(status, 201, "{token}");
    let api_token = token["secret"].as_str().unwrap_or_default().to_owned();
    for credential in [&access, &api_token] {
        let (status, _) = send(app.client.get(app.url("/api/v1/bots")).bearer_auth(credential)).await?;
        assert_eq!(status, 200);
    }

    let (status, user) = send(app.patch(&format!("/api/v1/users/{id}"), &json!({ "disabled": true }))).await?;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["disabled"], true);
    for (what, credential) in [("session", &access), ("API token", &api_token)] {
        let (status, body) = send(app.client.get(app.url("/api/v1/bots")).bearer_auth(credential)).await?;
        assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "the {what} of a disabled user");
    }
    let (status, _) = browser.refresh(&app).await?;
    assert_eq!(status, 401, "a disabled user cannot refresh");
    assert!(app.login("ivan", "ivan-password").await.is_err(), "nor log in");

    // The last enabled admin cannot be disabled (nobody could undo it).
    let (_, me) = send(app.get("/api/v1/auth/me")).await?;
    let admin_id = me["id"].as_str().unwrap_or_default();
    let (status, body) = send(app.patch(&format!("/api/v1/users/{admin_id}"), &json!({ "disabled": true }))).await?;
    assert_eq!((status, body["code"].as_str()), (409, Some("last_admin")));

    let (status, user) = send(app.patch(&format!("/api/v1/users/{id}"), &json!({ "disabled": false }))).await?;
    assert_eq!(status, 200);
    assert_eq!(user["disabled"], false);
    let fresh = app.login("ivan", "ivan-password").await?;
    assert_eq!(me_status(&app, &fresh).await?, 200, "re-enabled: login works again");
    assert_eq!(me_status(&app, &access).await?, 401, "the sessions ended by disabling stay ended");
    app.stop().await
}

async fn deleting_a_user_ends_their_credentials(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let id = create_user(&app, "leaver", "leaver-password", "admin").await?;
    let browser = Browser::new()?;
    let access = browser.login(&app, "leaver", "leaver-password").await?;
    let (status, token) = send(
        app.client
            .post(app.url("/api/v1/tokens"))
            .bearer_auth(&access)
            .json(&json!({ "name": "leaver's script", "scopes": ["admin"] })),
    )
    .await?;
    assert_eq!(status, 201, "{token}");
    let api_token = token["secret"].as_str().unwrap_or_default().to_owned();

    let (status, _) = send(app.delete(&format!("/api/v1/users/{id}"))).await?;
    assert_eq!(status, 204);
    for (what, credential) in [("session", &access), ("API token", &api_token)] {
        let (status, _) = send(app.client.get(app.url("/api/v1/bots")).bearer_auth(credential)).await?;
        assert_eq!(status, 401, "the {what} of a deleted user");
    }
    let (status, _) = browser.refresh(&app).await?;
    assert_eq!(status, 401);
    let (status, body) = send(app.delete(&format!("/api/v1/users/{id}"))).await?;
    assert_eq!((status, body["code"].as_str()), (404, Some("user_not_found")));

    // Now the admin is the last one: they cannot delete themselves.
    let (_, me) = send(app.get("/api/v1/auth/me")).await?;
    let (status, body) = send(app.delete(&format!("/api/v1/users/{}", me["id"].as_str().unwrap_or_default()))).await?;
    assert_eq!((status, body["code"].as_str()), (409, Some("last_admin")));
    assert_eq!(me_status(&app, &app.token).await?, 200);
    app.stop().await
}

async fn login_brute_force_is_rate_limited(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    create_user(&app, "victim", "victim-password", "viewer").await?;
    let attempt = |client: &reqwest::Client, username: &str, password: &str| {
        client.post(app.url("/api/v1/auth/login")).json(&json!({ "username": username, "password": password }))
    };

    // Ten wrong guesses from one address, sent together so the minute cannot run out meanwhile.
    let attacker = client_from(2)?;
    let guesses = (0..10).map(|i| send(attempt(&attacker, "victim", &format!("guess-{i}"))));
    for result in futures::future::join_all(guesses).await {
        let (status, body) = result?;
        assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    }

    // The eleventh is refused before the password is even looked at, right or not.
    let response = attempt(&attacker, "victim", "victim-password").send().await?;
    assert_eq!(response.status(), 429);
    let retry_after: u64 =
        response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
    assert!(retry_after >= 1, "Retry-After: {retry_after}");
    let body: Value = response.json().await?;
    assert_eq!(body["code"], "rate_limited");
    assert!(body.get("access_token").is_none());

    // The username is limited too, whatever address the guesses come from...
    let elsewhere = client_from(3)?;
    let (status, body) = send(attempt(&elsewhere, "victim", "victim-password")).await?;
    assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")));
    // ...while other people log in as usual.
    let (status, body) = send(attempt(&elsewhere, "admin", ADMIN_PASSWORD)).await?;
    assert_eq!(status, 200, "{body}");
    app.stop().await
}
