//! The master key and the AEAD around every secret value: XChaCha20-Poly1305 (RustCrypto's
//! `chacha20poly1305`, audited, pure Rust), a random 192-bit nonce per encryption, and the
//! tenant id + secret name as associated data, so a ciphertext moved to another row or tenant
//! fails to open.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::{engine::general_purpose::STANDARD, Engine as _};
use botmox_contract::Id;
use chacha20poly1305::{
    aead::{Aead, KeyInit, OsRng, Payload},
    AeadCore, XChaCha20Poly1305,
};
use sha2::{Digest, Sha256};

use crate::store::{SealedSecret, Store};

/// A 256-bit master key. Debug never prints it.
#[derive(Clone)]
pub struct MasterKey {
    key: [u8; 32],
    /// First 8 bytes of SHA-256(key), hex: stored with each secret to detect a wrong key.
    pub id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl MasterKey {
    pub fn generate() -> Self {
        Self::from_bytes(XChaCha20Poly1305::generate_key(&mut OsRng).into())
    }

    fn from_bytes(key: [u8; 32]) -> Self {
        let id = hex::encode(&Sha256::digest(key)[..8]);
        Self { key, id }
    }

    /// Parses the base64 form (what key files and `BOTMOX_MASTER_KEY` hold).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let bytes = STANDARD.decode(text.trim()).context("the master key is not base64")?;
        let key: [u8; 32] =
            bytes.try_into().map_err(|_| anyhow::anyhow!("the master key must be 32 bytes (44 base64 characters)"))?;
        Ok(Self::from_bytes(key))
    }

    pub fn encode(&self) -> String {
        STANDARD.encode(self.key)
    }

    pub fn read_file(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read the master key {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("the master key file {} is invalid", path.display()))
    }

    /// Writes the key to a new file readable by its owner only (0600 on Unix).
    pub fn write_new_file(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file =
            options.open(path).with_context(|| format!("cannot create the master key {}", path.display()))?;
        file.write_all(self.encode().as_bytes())?;
        file.sync_all()?;
        Ok(())
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.key.into())
    }
}

fn aad(tenant_id: Id, name: &str) -> Vec<u8> {
    format!("botmox-secret-v1/{tenant_id}/{name}").into_bytes()
}

pub fn seal(key: &MasterKey, tenant_id: Id, name: &str, value: &str) -> anyhow::Result<SealedSecret> {
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let ciphertext = key
        .cipher()
        .encrypt(&nonce, Payload { msg: value.as_bytes(), aad: &aad(tenant_id, name) })
        .map_err(|_| anyhow::anyhow!("encryption failed"))?;
    Ok(SealedSecret { tenant_id, name: name.to_owned(), key_id: key.id.clone(), nonce: nonce.to_vec(), ciphertext })
}

pub fn open(key: &MasterKey, sealed: &SealedSecret) -> anyhow::Result<String> {
    anyhow::ensure!(
        sealed.key_id == key.id,
        "secret {} was sealed with master key {}, not {}",
        sealed.name,
        sealed.key_id,
        key.id
    );
    anyhow::ensure!(sealed.nonce.len() == 24, "secret {} has a malformed nonce", sealed.name);
    let nonce = chacha20poly1305::XNonce::from_slice(&sealed.nonce);
    let plain = key
        .cipher()
        .decrypt(nonce, Payload { msg: &sealed.ciphertext, aad: &aad(sealed.tenant_id, &sealed.name) })
        .map_err(|_| anyhow::anyhow!("secret {} does not open with the master key {}", sealed.name, key.id))?;
    String::from_utf8(plain).context("a secret is not UTF-8")
}

/// Where the master key comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `BOTMOX_MASTER_KEY` (base64).
    Inline(String),
    /// `--master-key-file`: must exist.
    File(PathBuf),
    /// The embedded (SQLite) default: `<data-dir>/master.key`, generated on first start. Never
    /// used with Postgres: replicas must share one key, so it is configured explicitly.
    DataDir(PathBuf),
}

/// Loads the master key and checks it against the stored secrets. The server refuses to start
/// when secrets exist and the key is missing or is not the one they were sealed with. Without
/// a source (Postgres with no key configured) there is no vault: `None`, unless secrets exist.
pub async fn load(source: Option<&KeySource>, store: &Store) -> anyhow::Result<Option<MasterKey>> {
    let sealed = store.all_sealed_secrets().await?;
    let Some(source) = source else {
        anyhow::ensure!(
            sealed.is_empty(),
            "{} secret(s) exist but no master key is configured: set --master-key-file or BOTMOX_MASTER_KEY",
            sealed.len()
        );
        return Ok(None);
    };
    let key = match source {
        KeySource::Inline(text) => MasterKey::parse(text).context("BOTMOX_MASTER_KEY is invalid")?,
        KeySource::File(path) => MasterKey::read_file(path)?,
        KeySource::DataDir(dir) => {
            let path = dir.join("master.key");
            if path.exists() {
                MasterKey::read_file(&path)?
            } else if sealed.is_empty() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
                let key = MasterKey::generate();
                key.write_new_file(&path)?;
                tracing::info!(path = %path.display(), key_id = %key.id, "generated the master key");
                key
            } else {
                anyhow::bail!(
                    "{} secret(s) exist but the master key file {} is missing: restore it from your backup, \
                     or point --master-key-file / BOTMOX_MASTER_KEY at it",
                    sealed.len(),
                    path.display()
                );
            }
        }
    };
    if let Some(other) = sealed.iter().find(|s| s.key_id != key.id) {
        anyhow::bail!(
            "the configured master key ({}) is not the one the secrets were sealed with ({}): \
             configure the right key (secrets cannot be read without it)",
            key.id,
            other.key_id
        );
    }
    // Sealed with this key id but failing to open means tampering or corruption: say so now.
    if let Some(first) = sealed.first() {
        open(&key, first)?;
    }
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip_and_bind_to_their_row() -> anyhow::Result<()> {
        let key = MasterKey::generate();
        let tenant = uuid::Uuid::now_v7();
        let sealed = seal(&key, tenant, "db-password", "hunter2")?;
        assert_eq!(open(&key, &sealed)?, "hunter2");
        assert!(!sealed.ciphertext.windows(7).any(|w| w == b"hunter2"));

        let moved = SealedSecret { name: "other".into(), ..sealed.clone() };
        assert!(open(&key, &moved).is_err(), "a ciphertext does not open under another name");
        let other_tenant = SealedSecret { tenant_id: uuid::Uuid::now_v7(), ..sealed.clone() };
        assert!(open(&key, &other_tenant).is_err(), "nor in another tenant");
        let wrong_key = MasterKey::generate();
        assert!(open(&wrong_key, &SealedSecret { key_id: wrong_key.id.clone(), ..sealed }).is_err());
        Ok(())
    }

    #[test]
    fn keys_parse_from_their_encoding_only() -> anyhow::Result<()> {
        let key = MasterKey::generate();
        assert_eq!(MasterKey::parse(&key.encode())?.id, key.id);
        assert!(MasterKey::parse("c2hvcnQ=").is_err());
        assert!(MasterKey::parse("not base64!").is_err());
        assert!(!format!("{key:?}").contains(&key.encode()));
        Ok(())
    }
}
