//! The life of `botmox serve`: open and migrate the store, bootstrap the first admin, build the
//! state, listen, serve until SIGINT/SIGTERM, then drain and close the store.

use std::{future::Future, time::Duration};

use anyhow::Context as _;

use crate::{
    auth::{
        bootstrap::{self, Bootstrap},
        rate_limit,
    },
    clock::Clock,
    config::ServeArgs,
    http, link,
    secrets::vault,
    state::{AppState, Settings},
    store::{redact_url, DatabaseUrl, PoolOptions, Store},
};

pub use crate::state::EVENT_BACKLOG;

/// Opens the configured database and applies pending migrations.
pub async fn open_store(url: &DatabaseUrl) -> anyhow::Result<Store> {
    let described = match url {
        DatabaseUrl::Sqlite(path) => format!("the SQLite database {}", path.display()),
        DatabaseUrl::Postgres(url) => format!("Postgres at {}", redact_url(url)),
    };
    let store =
        Store::connect(url, &PoolOptions::default()).await.with_context(|| format!("cannot open {described}"))?;
    store.migrate().await.with_context(|| format!("cannot migrate {described}"))?;
    Ok(store)
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    // Bind first: a taken port fails fast, before anything touches the database.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let url = args.database.resolve()?;
    let store = open_store(&url).await?;
    let master_key = vault::load(args.keys.source(&args.database.data_dir, &url).as_ref(), &store).await?;
    if master_key.is_none() {
        tracing::warn!(
            "no master key configured: the secrets vault is off (set --master-key-file or BOTMOX_MASTER_KEY)"
        );
    }
    let clock = Clock::System;

    match bootstrap::ensure_admin(&store, &clock, &args.admin_username, args.admin_password.as_deref()).await? {
        Bootstrap::Created { username, generated_password: Some(password), .. } => {
            println!("Created the first admin user `{username}` with password: {password}");
            println!(
                "(shown once; set BOTMOX_ADMIN_PASSWORD to choose it, `botmox admin reset-password` to change it)"
            );
        }
        Bootstrap::Created { username, generated_password: None, .. } => {
            println!("Created the first admin user `{username}` with the password from BOTMOX_ADMIN_PASSWORD");
        }
        Bootstrap::Existing { .. } => {}
    }

    let local = listener.local_addr()?;
    let public_url = args.public_url.clone().unwrap_or_else(|| format!("http://{local}"));
    let settings = Settings {
        trusted_proxies: args.trusted_proxies(),
        cors_origins: args.cors_origins.clone(),
        heartbeat_interval: Duration::from_secs(args.heartbeat_interval),
        command_lease: Duration::from_secs(args.command_lease),
        command_ttl: Duration::from_secs(args.command_ttl),
        metrics_token_hash: args.metrics_token.as_deref().map(crate::auth::credentials::hash),
        ..Settings::new(public_url.clone())
    };
    let state = AppState::new(store.clone(), clock, settings, master_key).await?;
    let limits = state.limits.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(rate_limit::PRUNE_EVERY);
        loop {
            every.tick().await;
            limits.prune();
        }
    });

    println!("botmox listening on http://{local} ({} store)", store.backend_name());
    println!("API docs: {public_url}/docs");
    tracing::info!(%local, store = store.backend_name(), "listening");

    let background = spawn_background(&state);
    let flushing = state.clone();
    let closing = state.clone();
    let grace = Duration::from_secs(args.shutdown_grace);
    let shutdown = async move {
        shutdown.await;
        closing.draining.cancel();
        if !grace.is_zero() {
            tracing::info!(?grace, "shutting down: /readyz answers 503 while load balancers move away");
            tokio::time::sleep(grace).await;
        }
        begin_shutdown(&closing);
    };
    http::serve(listener, http::app(state), shutdown).await.context("the HTTP server failed")?;
    for task in background {
        task.abort();
    }
    // The audit entries of the last requests answered are written after their responses.
    flushing.audit_log.flush().await;
    tracing::info!("shutting down: closing the store");
    store.close().await;
    Ok(())
}

/// Ends what would keep the graceful drain waiting: agents are asked to reconnect (to another
/// replica, or to us after a restart), and event streams, log follows and long polls end.
pub fn begin_shutdown(state: &AppState) {
    state.draining.cancel();
    state.shutdown.cancel();
    link::ws::close_all(state);
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is *called* (not when
/// the future is first polled), so a signal that arrives right after start-up is not lost.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        (signal(SignalKind::terminate()).ok(), signal(SignalKind::interrupt()).ok())
    };
    async move {
        #[cfg(unix)]
        {
            let (mut terminate, mut interrupt) = signals;
            let terminated = async {
                match terminate.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let interrupted = async {
                match interrupt.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = terminated => {},
                () = interrupted => {},
            }
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        tracing::info!("shutdown signal received: draining requests");
    }
}

/// Starts the background work of a server: heartbeat batches, the supervisor (when this replica
/// leads) and (on Postgres) the cluster listener.
pub fn spawn_background(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let presence = tokio::spawn(link::presence::run(state.clone()));
    let supervisor = tokio::spawn(crate::supervisor::run(state.clone()));
    let listener_state = state.clone();
    let listener = tokio::spawn(async move {
        if let Err(e) = link::cluster::listen(listener_state).await {
            tracing::error!(error = %e, "the cluster listener stopped");
        }
    });
    vec![presence, supervisor, listener]
}
