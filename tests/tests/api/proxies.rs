//! Client addresses behind a proxy (`--trusted-proxies`): rate limits key on the hop the
//! trusted proxy appended to `X-Forwarded-For`, so a client cannot dodge them by writing its
//! own entries into the header, and a client that is not a trusted proxy is not believed at all.

use botmox_control_plane::http::TrustedProxies;
use botmox_e2e::{
    app::{send, TestApp},
    both_backends,
    db::Backend,
};
use serde_json::json;

use crate::sessions::client_from;

both_backends!(a_forged_forwarded_for_entry_cannot_dodge_the_login_limit);

/// The proxy's address: the test's "Caddy" connects from it.
const PROXY: u8 = 20;

async fn a_forged_forwarded_for_entry_cannot_dodge_the_login_limit(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn_with(backend, |settings| {
        settings.trusted_proxies = TrustedProxies::new([format!("127.0.0.{PROXY}/32").parse().expect("a CIDR")]);
    })
    .await?;
    let proxy = client_from(PROXY)?;
    // Distinct unknown usernames, so only the per-address limit can refuse.
    let attempt = |client: &reqwest::Client, n: u32, forwarded_for: &str| {
        let body = json!({ "username": format!("nobody-{n}"), "password": "wrong-password" });
        client.post(app.url("/api/v1/auth/login")).header("x-forwarded-for", forwarded_for).json(&body)
    };

    // One client behind the proxy (198.51.100.7, appended by the proxy) writes a new address
    // into the header each time: the limit still counts all of them as that one client.
    for n in 0..10 {
        let (status, body) = send(attempt(&proxy, n, &format!("192.0.2.{n}, 198.51.100.7"))).await?;
        assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "attempt {n}");
    }
    let (status, body) = send(attempt(&proxy, 10, "192.0.2.99, 10.0.0.1, 198.51.100.7")).await?;
    assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")), "a forged leftmost hop dodged the limit");

    // Another client behind the same proxy has its own count: the header is believed.
    let (status, _) = send(attempt(&proxy, 11, "198.51.100.8")).await?;
    assert_eq!(status, 401, "another client behind the proxy is not limited");

    // A peer that is not a trusted proxy is the client, whatever its header says.
    let direct = client_from(PROXY + 1)?;
    for n in 0..10 {
        let (status, _) = send(attempt(&direct, 20 + n, &format!("198.51.100.{}", 20 + n))).await?;
        assert_eq!(status, 401, "attempt {n}");
    }
    let (status, _) = send(attempt(&direct, 30, "198.51.100.30")).await?;
    assert_eq!(status, 429, "an untrusted peer's X-Forwarded-For was believed");
    app.stop().await
}
