//! Typed configuration of `botmox`, from CLI flags with environment fallbacks (clap `env`).

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, ValueEnum};

use crate::store::DatabaseUrl;

/// Where the data lives.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Directory for the SQLite database and local keys.
    #[arg(long, env = "BOTMOX_DATA_DIR", default_value = ".botmox")]
    pub data_dir: PathBuf,

    /// `postgres://user@host:port/db` for Postgres; unset = SQLite file `<data-dir>/botmox.db`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl DatabaseArgs {
    /// Resolves the database, creating the data dir when SQLite lives in it.
    pub fn resolve(&self) -> anyhow::Result<DatabaseUrl> {
        let url = match &self.database_url {
            Some(url) if !url.trim().is_empty() => DatabaseUrl::parse(url.trim()).map_err(anyhow::Error::msg)?,
            _ => DatabaseUrl::Sqlite(self.data_dir.join("botmox.db")),
        };
        if let DatabaseUrl::Sqlite(path) = &url {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create the data directory {}: {e}", dir.display()))?;
            ensure_writable(dir)?;
        }
        Ok(url)
    }
}

/// SQLite would fail later with a vaguer message; say it plainly up front.
fn ensure_writable(dir: &std::path::Path) -> anyhow::Result<()> {
    let probe = dir.join(format!(".botmox-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| anyhow::anyhow!("the data directory {} is not writable: {e}", dir.display()))
}

/// Where the secrets vault's master key comes from.
#[derive(Debug, Clone, Args)]
pub struct KeyArgs {
    /// File holding the master key (base64, 32 bytes). Default: `<data-dir>/master.key`,
    /// generated on first start.
    #[arg(long, env = "BOTMOX_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,

    /// The master key itself (base64). Prefer a file; this is for container secrets.
    #[arg(long, env = "BOTMOX_MASTER_KEY", hide_env_values = true, hide = true)]
    pub master_key: Option<String>,
}

impl KeyArgs {
    /// The configured key, else (SQLite only) the data dir's key file; `None` = no vault.
    pub fn source(&self, data_dir: &std::path::Path, url: &DatabaseUrl) -> Option<crate::secrets::vault::KeySource> {
        use crate::secrets::vault::KeySource;
        match (&self.master_key, &self.master_key_file, url) {
            (Some(inline), _, _) => Some(KeySource::Inline(inline.clone())),
            (None, Some(file), _) => Some(KeySource::File(file.clone())),
            (None, None, DatabaseUrl::Sqlite(_)) => Some(KeySource::DataDir(data_dir.to_path_buf())),
            (None, None, DatabaseUrl::Postgres(_)) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `botmox serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "BOTMOX_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The URL people and agents use to reach this server (behind a proxy: the proxy's URL).
    #[arg(long, env = "BOTMOX_PUBLIC_URL")]
    pub public_url: Option<String>,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub keys: KeyArgs,

    /// Proxies whose `X-Forwarded-For` is believed (addresses or CIDR blocks, comma-separated,
    /// e.g. `10.0.0.0/8,127.0.0.1`): a request from one of them is taken to come from the
    /// rightmost hop in the header that is not itself a trusted proxy.
    #[arg(long = "trusted-proxies", env = "BOTMOX_TRUSTED_PROXIES", value_delimiter = ',', value_parser = trusted_proxy)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Shorthand for a proxy on this machine: `--trusted-proxies 127.0.0.0/8,::1`.
    #[arg(long, env = "BOTMOX_TRUST_PROXY_HEADERS")]
    pub trust_proxy_headers: bool,

    /// Origins allowed to call the API from a browser (comma-separated); none = CORS off.
    #[arg(long = "cors-origin", env = "BOTMOX_CORS_ORIGINS", value_delimiter = ',', value_parser = cors_origin)]
    pub cors_origins: Vec<axum::http::HeaderValue>,

    /// Seconds between agent heartbeats (three missed: offline).
    #[arg(long, env = "BOTMOX_HEARTBEAT_INTERVAL", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub heartbeat_interval: u64,

    /// Seconds an agent has to acknowledge a command before it is sent again.
    #[arg(long, env = "BOTMOX_COMMAND_LEASE", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub command_lease: u64,

    /// Seconds a command waits for its agent before it expires.
    #[arg(long, env = "BOTMOX_COMMAND_TTL", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub command_ttl: u64,

    /// A bearer token for `GET /metrics` with the whole server's figures (a scraper's
    /// credential; at least 16 characters). Without it, only tenant admins read `/metrics`,
    /// each seeing their own tenant.
    #[arg(long, env = "BOTMOX_METRICS_TOKEN", hide_env_values = true, value_parser = metrics_token)]
    pub metrics_token: Option<String>,

    /// Seconds between SIGTERM and closing the listener, serving on while `/readyz` answers
    /// 503, so a load balancer's health checks move new requests to other replicas first
    /// (behind one: a little more than its check interval; alone: 0).
    #[arg(long, env = "BOTMOX_SHUTDOWN_GRACE", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub shutdown_grace: u64,

    #[arg(long, env = "BOTMOX_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Username of the admin created on first start.
    #[arg(long, env = "BOTMOX_ADMIN_USERNAME", default_value = "admin")]
    pub admin_username: String,

    /// Password of the admin created on first start; generated and printed once when unset.
    #[arg(long, env = "BOTMOX_ADMIN_PASSWORD", hide_env_values = true, value_parser = admin_password)]
    pub admin_password: Option<String>,
}

fn admin_password(value: &str) -> Result<String, String> {
    use crate::auth::password::{MAX_LENGTH, MIN_LENGTH};
    if (MIN_LENGTH..=MAX_LENGTH).contains(&value.len()) {
        Ok(value.to_owned())
    } else {
        Err(format!("the admin password must be {MIN_LENGTH} to {MAX_LENGTH} characters long"))
    }
}

impl ServeArgs {
    /// The proxies to believe: those listed, plus loopback with `--trust-proxy-headers`.
    pub fn trusted_proxies(&self) -> crate::http::TrustedProxies {
        let mut trusted = crate::http::TrustedProxies::new(self.trusted_proxies.iter().copied());
        if self.trust_proxy_headers {
            trusted.extend(crate::http::TrustedProxies::loopback());
        }
        trusted
    }
}

/// An address (`10.0.0.7`, `::1`) or a CIDR block (`10.0.0.0/8`).
fn trusted_proxy(value: &str) -> Result<ipnet::IpNet, String> {
    let value = value.trim();
    value
        .parse::<ipnet::IpNet>()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| format!("`{value}` is not an address or a CIDR block such as 10.0.0.0/8"))
}

fn cors_origin(value: &str) -> Result<axum::http::HeaderValue, String> {
    let value = value.trim().trim_end_matches('/');
    let ok = (value.starts_with("https://") || value.starts_with("http://")) && !value.contains(['*', ' ']);
    if !ok {
        return Err(format!("`{value}` is not an origin such as https://panel.example.com"));
    }
    axum::http::HeaderValue::from_str(value).map_err(|e| e.to_string())
}

fn metrics_token(value: &str) -> Result<String, String> {
    if value.len() >= 16 && value.chars().all(|c| c.is_ascii_graphic()) {
        Ok(value.to_owned())
    } else {
        Err("the metrics token must be at least 16 printable characters without spaces".into())
    }
}
