//! Secrets handed to clients: API tokens (`bmx_…`), agent tokens (`bmxa_…`), refresh tokens
//! and pairing codes. Only their SHA-256 hashes are stored; a stolen database opens nothing.
//! SHA-256 (not argon2) is right here: these are 240-bit random strings, not passwords.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use rand::{rngs::OsRng, Rng, RngCore};
use sha2::{Digest, Sha256};

pub const API_TOKEN_PREFIX: &str = "bmx_";
pub const AGENT_TOKEN_PREFIX: &str = "bmxa_";

fn random_string() -> String {
    let mut bytes = [0u8; 30];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Hex SHA-256 of a presented secret: the form in which secrets are stored and looked up.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub fn new_api_token() -> String {
    format!("{API_TOKEN_PREFIX}{}", random_string())
}

pub fn new_agent_token() -> String {
    format!("{AGENT_TOKEN_PREFIX}{}", random_string())
}

pub fn new_refresh_token() -> String {
    random_string()
}

/// No 0/O, 1/I/L, U: codes are read aloud and typed by hand.
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTVWXYZ23456789";
const CODE_GROUPS: usize = 3;
const CODE_GROUP_LEN: usize = 4;

/// `K7QX-M2PD-9HFA`: 12 characters from a 30-letter alphabet (59 bits).
pub fn new_pairing_code() -> String {
    let mut rng = OsRng;
    (0..CODE_GROUPS)
        .map(|_| {
            (0..CODE_GROUP_LEN)
                .map(|_| CODE_ALPHABET[rng.gen_range(0..CODE_ALPHABET.len())] as char)
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The canonical form of a typed code (case, spaces and dashes do not matter), or `None` when
/// it cannot be a code at all.
pub fn normalize_pairing_code(typed: &str) -> Option<String> {
    let canonical: String = typed.chars().filter(|c| !matches!(c, '-' | ' ')).map(|c| c.to_ascii_uppercase()).collect();
    let valid =
        canonical.len() == CODE_GROUPS * CODE_GROUP_LEN && canonical.bytes().all(|b| CODE_ALPHABET.contains(&b));
    valid.then_some(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_codes_round_trip_through_sloppy_typing() {
        let code = new_pairing_code();
        assert_eq!(code.len(), 14);
        let canonical = normalize_pairing_code(&code).expect("a generated code is valid");
        assert_eq!(normalize_pairing_code(&code.to_lowercase().replace('-', " ")), Some(canonical));
        assert_eq!(normalize_pairing_code("K7QX-M2PD-9HF"), None);
        assert_eq!(normalize_pairing_code("K7QX-M2PD-9HF0"), None, "0 is not in the alphabet");
    }

    #[test]
    fn tokens_carry_their_kind_and_differ() {
        let (a, b) = (new_api_token(), new_api_token());
        assert!(a.starts_with(API_TOKEN_PREFIX) && a.len() == API_TOKEN_PREFIX.len() + 40);
        assert_ne!(a, b);
        assert!(new_agent_token().starts_with(AGENT_TOKEN_PREFIX));
        assert_eq!(hash("x"), hash("x"));
        assert_eq!(hash("x").len(), 64);
    }
}
