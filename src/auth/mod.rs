//! Authentication and cross-origin policy for the inbound listener, as pure
//! functions over values the caller supplies (no sockets, files or runtime).
//!
//! - `jwt`  — JWT settings (`JWT_*`, `CB_JWT_*`, FlowX's Keycloak realm
//!   variables), token verification with a static key or a JWKS the caller
//!   fetches, RIG's `Authorization` header parsing, session ids from claims
//! - `cors` — the `Access-Control-Allow-Origin` policy: RIG's single `CORS`
//!   value or FlowX's `APPLICATION_CORS_ALLOW_ORIGIN` list with wildcard
//!   subdomains
//!
//! Reading the environment, fetching JWKS documents (and rate-limiting the
//! refresh that an unknown `kid` asks for) and writing headers stay with
//! `config`, `runtime` and `api`.

pub mod cors;
pub mod jwt;
