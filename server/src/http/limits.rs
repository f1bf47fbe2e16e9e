//! Per-client rate limits (GCRA, the `governor` crate), keyed by the client's address.
//! Registration is limited (`REGISTRATION_RATE_PER_MIN`, burst `REGISTRATION_BURST`): without
//! it, one client could mint a thousand agents a second, and five of them pass the approval
//! gate. So are writes that carry no token at all (`ANON_WRITE_RATE_PER_MIN`, burst
//! `ANON_WRITE_BURST`): a submit without `submitted_by`, and operator calls (cancel, roles, a
//! person's vote) while ADMIN_TOKEN is unset.
//! A refused call gets 429 `RATE_LIMITED` with `Retry-After`.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// Distinct clients remembered before idle ones are forgotten.
const MAX_TRACKED: usize = 10_000;

/// One limit, per client address; `None` when turned off (a rate of 0).
pub struct Limit {
    what: &'static str,
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl Limit {
    pub fn per_minute(what: &'static str, rate: u32, burst: u32) -> Limit {
        let limiter = NonZeroU32::new(rate).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst))
        });
        Limit { what, limiter }
    }

    /// Counts a call of `client`; 429 with the wait when it is over its limit.
    pub fn check(&self, client: Option<IpAddr>) -> Result<(), ApiError> {
        let (Some(limiter), Some(ip)) = (&self.limiter, client) else {
            return Ok(());
        };
        if limiter.len() > MAX_TRACKED {
            limiter.retain_recent();
        }
        limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::Throttled {
                what: self.what,
                retry_after: wait.max(Duration::from_secs(1)),
            }
        })
    }
}

/// The limits a server applies.
pub struct Limits {
    pub registration: Limit,
    pub anonymous_write: Limit,
}

impl Limits {
    pub fn from_config(c: &crate::config::Config) -> Limits {
        Limits {
            registration: Limit::per_minute(
                "registrations from this address",
                c.registration_rate_per_min,
                c.registration_burst,
            ),
            anonymous_write: Limit::per_minute(
                "writes without a token from this address",
                c.anon_write_rate_per_min,
                c.anon_write_burst,
            ),
        }
    }
}

/// The client's address, when the server knows it (it does when serving TCP).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(parts)))
    }
}

/// The address the request came from (none in tests that call the router directly).
pub fn client_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusals_with_a_wait_per_client() {
        let limit = Limit::per_minute("calls", 60, 3);
        let a = Some(IpAddr::from([127, 0, 0, 1]));
        let b = Some(IpAddr::from([127, 0, 0, 2]));
        for _ in 0..3 {
            assert!(limit.check(a).is_ok());
        }
        match limit.check(a) {
            Err(ApiError::Throttled { retry_after, .. }) => {
                assert!(retry_after >= Duration::from_secs(1));
            }
            other => panic!("{other:?}"),
        }
        assert!(limit.check(b).is_ok(), "another client has its own budget");
        let off = Limit::per_minute("calls", 0, 0);
        for _ in 0..1000 {
            assert!(off.check(a).is_ok());
        }
    }
}
