//! `deploy/compose.stack.yml` describes the topology the native scenario runs ([`TOPOLOGY`]):
//! the same services, the replicas on the port the Caddyfile's upstreams name, health checks
//! on the same path, the same Caddyfile mounted, Postgres unexposed, the master key a secret.
//! No container runtime is needed: the file is parsed (`serde_norway`, a maintained fork of
//! serde_yaml) and read like `docker compose config` would, for what the stack relies on.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::{deploy_dir, TOPOLOGY};

fn compose() -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(deploy_dir().join("compose.stack.yml"))?;
    // Through serde_json's Value: merge keys (`<<: *botmox`) resolved, plain maps to read.
    let yaml: serde_norway::Value = serde_norway::from_str(&text)?;
    let mut yaml = yaml;
    yaml.apply_merge()?;
    Ok(serde_json::to_value(yaml)?)
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
}

#[test]
fn the_compose_file_names_the_topology_the_stack_test_runs() -> anyhow::Result<()> {
    let compose = compose()?;
    let services = &compose["services"];
    let names: BTreeSet<&str> = services.as_object().into_iter().flatten().map(|(name, _)| name.as_str()).collect();
    let expected: BTreeSet<&str> = [TOPOLOGY.proxy, TOPOLOGY.database].into_iter().chain(TOPOLOGY.replicas).collect();
    assert_eq!(names, expected, "services");

    // Caddy: the Caddyfile the native test runs, the published ports, every replica awaited.
    let caddy = &services[TOPOLOGY.proxy];
    let mounts = strings(&caddy["volumes"]);
    assert!(
        mounts.iter().any(|m| m.starts_with(&format!("./{}:/etc/caddy/Caddyfile", TOPOLOGY.caddyfile))),
        "Caddy runs deploy/{}: {mounts:?}",
        TOPOLOGY.caddyfile
    );
    let published: BTreeSet<u16> =
        strings(&caddy["ports"]).iter().filter_map(|p| p.split([':', '/']).nth(1)?.parse().ok()).collect();
    assert_eq!(published, TOPOLOGY.proxy_ports.into_iter().collect(), "Caddy's ports");
    for replica in TOPOLOGY.replicas {
        assert_eq!(caddy["depends_on"][replica]["condition"], "service_healthy", "Caddy waits for {replica}");
    }

    // The Caddyfile's default upstreams are the compose replicas on their port.
    let caddyfile = std::fs::read_to_string(deploy_dir().join(TOPOLOGY.caddyfile))?;
    for (i, replica) in TOPOLOGY.replicas.iter().enumerate() {
        let upstream = format!("{{$BOTMOX_UPSTREAM_{}:{replica}:{}}}", i + 1, TOPOLOGY.replica_port);
        assert!(caddyfile.contains(&upstream), "the Caddyfile proxies to {upstream}");
    }
    assert!(caddyfile.contains(&format!("health_uri {}", TOPOLOGY.health_path)), "Caddy's active health check");

    // Each replica: the image, listening where Caddy looks, health-checked on the same path,
    // restarted, the master key a secret (a file at run time, never in the environment).
    for replica in TOPOLOGY.replicas {
        let service = &services[replica];
        let env = &service["environment"];
        assert_eq!(env["BOTMOX_LISTEN"], format!("0.0.0.0:{}", TOPOLOGY.replica_port), "{replica} listens");
        assert!(env["DATABASE_URL"].as_str().unwrap_or_default().contains(&format!("@{}:5432/", TOPOLOGY.database)));
        assert_eq!(env["BOTMOX_MASTER_KEY_FILE"], "/run/secrets/botmox_master_key");
        assert!(env.get("BOTMOX_MASTER_KEY").is_none(), "{replica}: the key is not in the environment");
        assert!(env["BOTMOX_TRUSTED_PROXIES"].is_string(), "{replica} believes Caddy's X-Forwarded-For only");
        assert_eq!(env["BOTMOX_SHUTDOWN_GRACE"], crate::SHUTDOWN_GRACE, "{replica} drains as the native test's do");
        assert_eq!(strings(&service["secrets"]), ["botmox_master_key"]);
        let probe = strings(&service["healthcheck"]["test"]).join(" ");
        let url = format!("http://127.0.0.1:{}{}", TOPOLOGY.replica_port, TOPOLOGY.health_path);
        assert!(probe.contains(&url), "{replica}'s health check probes {url}: {probe}");
        assert_eq!(service["restart"], "unless-stopped", "{replica}");
        assert_eq!(service["depends_on"][TOPOLOGY.database]["condition"], "service_healthy");
        assert!(service.get("ports").is_none(), "{replica} is reached through Caddy only");
    }
    assert_eq!(compose["secrets"]["botmox_master_key"]["file"], "${BOTMOX_MASTER_KEY_FILE:-./secrets/master.key}");

    // Postgres 15 or newer, on a named volume, health-checked, never published to the host.
    let postgres = &services[TOPOLOGY.database];
    let image = postgres["image"].as_str().unwrap_or_default();
    let major: u32 = image.split(':').nth(1).and_then(|tag| tag.split(['.', '-']).next()?.parse().ok()).unwrap_or(0);
    assert!(major >= 15, "Postgres 15+: {image}");
    assert!(postgres.get("ports").is_none(), "Postgres is not exposed to the host");
    let volume = strings(&postgres["volumes"]).into_iter().find(|v| v.ends_with(":/var/lib/postgresql/data"));
    let volume = volume.unwrap_or_default();
    let named = volume.split(':').next().unwrap_or_default();
    assert!(compose["volumes"].get(named).is_some(), "Postgres' data on a named volume: {volume}");
    assert!(strings(&postgres["healthcheck"]["test"]).iter().any(|t| t == "pg_isready"));
    for service in names {
        assert_eq!(services[service]["restart"], "unless-stopped", "{service} restarts");
    }
    Ok(())
}
