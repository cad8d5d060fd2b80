//! Rate limits on the doors that take guesses: login (per client address and per username) and
//! pairing (per client address). `governor` (GCRA, keyed) does the counting; a refusal is a 429
//! with `Retry-After`. Limits are per replica, which bounds guessing per replica and is enough
//! to make brute force hopeless against argon2id passwords and 59-bit pairing codes.

use std::{hash::Hash, net::IpAddr, num::NonZeroU32, time::Duration};

use governor::{
    clock::{Clock as _, DefaultClock},
    DefaultKeyedRateLimiter, Quota, RateLimiter,
};

use crate::http::error::ApiError;

/// Attempts allowed per minute, per key (a burst of that many, then one per `60/n` seconds).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub login_per_minute: u32,
    pub pair_per_minute: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self { login_per_minute: 10, pair_per_minute: 10 }
    }
}

pub struct RateLimits {
    login_by_ip: DefaultKeyedRateLimiter<IpAddr>,
    login_by_user: DefaultKeyedRateLimiter<String>,
    pair_by_ip: DefaultKeyedRateLimiter<IpAddr>,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

fn check<K: Hash + Eq + Clone>(limiter: &DefaultKeyedRateLimiter<K>, key: &K, what: &str) -> Result<(), ApiError> {
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let retry_after_seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        tracing::warn!(what, retry_after_seconds, "rate limited");
        ApiError::TooManyRequests { retry_after_seconds: retry_after_seconds.max(1) }
    })
}

impl RateLimits {
    pub fn new(limits: Limits) -> Self {
        Self {
            login_by_ip: RateLimiter::keyed(per_minute(limits.login_per_minute)),
            login_by_user: RateLimiter::keyed(per_minute(limits.login_per_minute)),
            pair_by_ip: RateLimiter::keyed(per_minute(limits.pair_per_minute)),
        }
    }

    pub fn login(&self, ip: Option<IpAddr>, username: &str) -> Result<(), ApiError> {
        if let Some(ip) = ip {
            check(&self.login_by_ip, &ip, "login by address")?;
        }
        check(&self.login_by_user, &username.to_lowercase(), "login by username")
    }

    pub fn pair(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        match ip {
            Some(ip) => check(&self.pair_by_ip, &ip, "pairing"),
            None => Ok(()),
        }
    }

    /// Forgets keys that have fully recovered, so the maps do not grow without bound.
    pub fn prune(&self) {
        self.login_by_ip.retain_recent();
        self.login_by_user.retain_recent();
        self.pair_by_ip.retain_recent();
    }
}

/// How often [`RateLimits::prune`] runs.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);
