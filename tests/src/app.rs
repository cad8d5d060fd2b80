//! `TestApp`: the real control plane app, in this process, on a fresh database and a real
//! socket (port 0), with an admin logged in and typed helpers so tests read like scenarios.

use botmox_contract::{agents::Agent, auth::Role};
use botmox_control_plane::{
    auth::{bootstrap, password},
    clock::Clock,
    http, link,
    secrets::vault::MasterKey,
    state::{AppState, Settings},
    store::{NewAgent, NewUser, Store},
};
use reqwest::{header, Method, RequestBuilder};
use serde_json::Value;
use tokio::{sync::oneshot, task::JoinHandle};

use crate::db::{Backend, TestDb};

pub const ADMIN_PASSWORD: &str = "test-admin-password";

pub struct TestApp {
    pub base_url: String,
    pub client: reqwest::Client,
    pub store: Store,
    pub clock: Clock,
    pub tenant_id: uuid::Uuid,
    /// Access token of the bootstrap admin.
    pub token: String,
    /// The server's state (session keys, master key, …) for tests that forge or inspect.
    pub state: AppState,
    db: TestDb,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
    background: Vec<JoinHandle<()>>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> anyhow::Result<Self> {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Like [`TestApp::spawn`], with settings adjusted first (short leases, fast heartbeats, …).
    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> anyhow::Result<Self> {
        Self::build(backend, Clock::System, true, adjust).await
    }

    /// A server on a manual clock with no background tasks: the test moves time
    /// ([`Clock::advance`] on `app.clock`) and runs the supervisor itself ([`TestApp::tick`]).
    /// The admin acts with an API token here: moving the clock past 15 minutes would expire a
    /// session's access token.
    pub async fn spawn_manual(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> anyhow::Result<Self> {
        let mut app = Self::build(backend, Clock::manual(chrono::Utc::now()), false, adjust).await?;
        app.token = app.api_token(&["admin"]).await?;
        Ok(app)
    }

    /// The test's database (to inject faults with [`TestDb::execute`]).
    pub fn db(&self) -> &TestDb {
        &self.db
    }

    /// One round of what the background tasks do: write heartbeats, then a supervisor tick
    /// (`n` = 0 includes reconciliation and retention).
    pub async fn tick(&self, n: u64) -> anyhow::Result<()> {
        link::presence::flush(&self.state).await?;
        botmox_control_plane::supervisor::tick(&self.state, n).await
    }

    async fn build(
        backend: Backend,
        clock: Clock,
        background: bool,
        adjust: impl FnOnce(&mut Settings),
    ) -> anyhow::Result<Self> {
        crate::init_test_logging();
        let db = TestDb::new(backend).await?;
        let store = db.store().await?;
        let tenant_id = match bootstrap::ensure_admin(&store, &clock, "admin", Some(ADMIN_PASSWORD)).await? {
            bootstrap::Bootstrap::Created { tenant_id, .. } | bootstrap::Bootstrap::Existing { tenant_id } => tenant_id,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let mut settings = Settings::new(base_url.clone());
        adjust(&mut settings);
        let state = AppState::new(store.clone(), clock.clone(), settings, Some(MasterKey::generate())).await?;
        let background = if background { botmox_control_plane::server::spawn_background(&state) } else { Vec::new() };
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(http::serve(listener, http::app(state.clone()), async {
            let _ = stopped.await;
        }));
        // No cookie store: the refresh cookie of one login must not ride along on other requests.
        let client = reqwest::Client::new();
        let mut app = Self {
            base_url,
            client,
            store,
            clock,
            tenant_id,
            token: String::new(),
            state,
            db,
            shutdown,
            server,
            background,
        };
        app.token = app.login("admin", ADMIN_PASSWORD).await?;
        Ok(app)
    }

    /// Logs in and returns the access token.
    pub async fn login(&self, username: &str, password: &str) -> anyhow::Result<String> {
        let response = self
            .client
            .post(self.url("/api/v1/auth/login"))
            .json(&serde_json::json!({ "username": username, "password": password }))
            .send()
            .await?;
        anyhow::ensure!(response.status() == 200, "login of {username} failed: {}", response.status());
        let body: Value = response.json().await?;
        body["access_token"].as_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("no access_token in {body}"))
    }

    /// Creates a user with `role` in the admin's tenant and returns its access token.
    pub async fn login_as(&self, role: Role) -> anyhow::Result<String> {
        let username = format!("{}-{}", role.as_str(), uuid::Uuid::now_v7().simple());
        let hash = password::hash("role-user-password".into()).await?;
        let new =
            NewUser { tenant_id: self.tenant_id, username: username.clone(), email: None, password_hash: hash, role };
        self.store.create_user(new, self.clock.now()).await?;
        self.login(&username, "role-user-password").await
    }

    /// Creates an API token through the API (as the admin) and returns its secret.
    pub async fn api_token(&self, scopes: &[&str]) -> anyhow::Result<String> {
        let (status, body) =
            send(self.post("/api/v1/tokens", &serde_json::json!({ "name": "test token", "scopes": scopes }))).await?;
        anyhow::ensure!(status == 201, "token creation answered {status}: {body}");
        body["secret"].as_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("no secret in {body}"))
    }

    /// Pairs an agent through the API (pairing code, then pair) and returns (agent id, token).
    pub async fn pair_agent(&self, name: &str) -> anyhow::Result<(uuid::Uuid, String)> {
        let (status, code) =
            send(self.post("/api/v1/agents/pairing-codes", &serde_json::json!({ "name": name }))).await?;
        anyhow::ensure!(status == 201, "pairing code answered {status}: {code}");
        let (status, paired) = send(self.client.post(self.url("/api/v1/agents/pair")).json(&serde_json::json!({
            "code": code["code"], "hostname": format!("{name}.test"), "os": "linux", "arch": "x86_64", "version": "test",
        })))
        .await?;
        anyhow::ensure!(status == 201, "pairing answered {status}: {paired}");
        let id = paired["agent_id"].as_str().unwrap_or_default().parse()?;
        Ok((id, paired["agent_token"].as_str().unwrap_or_default().to_owned()))
    }

    /// A second tenant with its own admin; returns (tenant id, the admin's access token).
    pub async fn second_tenant(&self) -> anyhow::Result<(uuid::Uuid, String)> {
        let tenant_id = self.store.ensure_tenant("second", self.clock.now()).await?;
        let hash = password::hash("second-admin-password".into()).await?;
        let new =
            NewUser { tenant_id, username: "second-admin".into(), email: None, password_hash: hash, role: Role::Admin };
        self.store.create_user(new, self.clock.now()).await?;
        Ok((tenant_id, self.login("second-admin", "second-admin-password").await?))
    }

    /// A request with any bearer token (or none).
    pub fn request_as(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let request = self.client.request(method, self.url(path));
        match token {
            Some(token) => request.header(header::AUTHORIZATION, format!("Bearer {token}")),
            None => request,
        }
    }

    /// Registers an agent directly in the store (without pairing).
    pub async fn create_agent(&self, name: &str) -> anyhow::Result<Agent> {
        self.create_agent_in(self.tenant_id, name).await
    }

    pub async fn create_agent_in(&self, tenant_id: uuid::Uuid, name: &str) -> anyhow::Result<Agent> {
        let new = NewAgent {
            tenant_id,
            name: name.into(),
            hostname: format!("{name}.test"),
            os: "linux".into(),
            arch: "x86_64".into(),
            version: "test".into(),
            labels: Default::default(),
            token_hash: None,
        };
        Ok(self.store.create_agent(new, self.clock.now()).await?)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// A request with the admin's bearer token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path)).header(header::AUTHORIZATION, format!("Bearer {}", self.token))
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    pub fn post(&self, path: &str, body: &Value) -> RequestBuilder {
        self.request(Method::POST, path).json(body)
    }

    pub fn patch(&self, path: &str, body: &Value) -> RequestBuilder {
        self.request(Method::PATCH, path).json(body)
    }

    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.request(Method::DELETE, path)
    }

    /// Stops the server, closes the store and drops the database.
    pub async fn stop(self) -> anyhow::Result<()> {
        for task in &self.background {
            task.abort();
        }
        botmox_control_plane::server::begin_shutdown(&self.state);
        let _ = self.shutdown.send(());
        self.server.await??;
        self.store.close().await;
        self.db.cleanup().await
    }
}

/// Sends a request and returns the status and the JSON body (`Value::Null` when empty).
pub async fn send(request: RequestBuilder) -> anyhow::Result<(u16, Value)> {
    let response = request.send().await?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await?;
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes)? };
    Ok((status, body))
}
