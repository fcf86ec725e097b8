//! Authentication and cross-origin policy for the inbound listener, as pure
//! functions over values the caller supplies (no sockets, files or runtime).
//!
//! - `jwt`  — JWT settings (`JWT_*`, `CB_JWT_*`, FlowX's Keycloak realm
//!   variables), token verification with a static key or a JWKS the caller
//!   fetches, RIG's `Authorization` header parsing, session ids from claims
//! - `blacklist` — the session blacklist: entries, expiry, and which connections each JWT
//!   session used (the registry ends them; the control-topic codec is `proto::control`)
//! - `cors` — the `Access-Control-Allow-Origin` policy: RIG's single `CORS`
//!   value or FlowX's `APPLICATION_CORS_ALLOW_ORIGIN` list with wildcard
//!   subdomains
//!
//! Reading the environment, fetching JWKS documents (and rate-limiting the
//! refresh that an unknown `kid` asks for) and writing headers stay with
//! `config`, `runtime` and `api`.

pub mod blacklist;
pub mod cors;
pub mod jwt;
pub mod privacy;
