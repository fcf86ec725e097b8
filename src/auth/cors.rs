//! CORS `Access-Control-Allow-Origin` policy for the inbound endpoints.
//!
//! Two configurations are accepted, so deployments of either product move
//! over without renaming anything:
//!
//! * RIG's `CORS`: one value, `*` by default, sent as-is on every response
//!   whatever the request's `Origin` (RIG does no matching).
//! * FlowX's `APPLICATION_CORS_ALLOW_ORIGIN`: a comma list of origins, where a
//!   host may start with `*.` to allow every subdomain. The request's origin
//!   is echoed when it matches, and nothing is sent when it does not, so the
//!   browser blocks the response.
//!
//! When `APPLICATION_CORS_ALLOW_ORIGIN` is set it is used; otherwise `CORS`;
//! otherwise `*`. A `CORS` value that is a list or has a wildcard is treated
//! like the FlowX list (RIG would have sent such a value verbatim, which no
//! browser accepts, so nothing that worked changes).
//!
//! No I/O here: the caller passes the variables' values and the request's
//! `Origin` header.

use std::borrow::Cow;

/// The CORS policy. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    policy: Policy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Policy {
    /// `Access-Control-Allow-Origin: *` on every response.
    Any,
    /// RIG style: this exact value on every response.
    Fixed(String),
    /// FlowX style: echo the request's origin when it matches one entry.
    List(Vec<OriginPattern>),
}

/// One allowed origin, lower-cased, with default ports removed so that
/// `https://a.com:443` and `https://a.com` are the same entry (browsers
/// never send a default port in `Origin`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct OriginPattern {
    scheme: String,
    /// `*.` prefix: any subdomain, at any depth, of `host` (but not `host`).
    wildcard: bool,
    host: String,
    port: Option<u16>,
}

impl OriginPattern {
    fn matches(&self, origin: &OriginPattern) -> bool {
        if self.scheme != origin.scheme || self.port != origin.port {
            return false;
        }
        if !self.wildcard {
            return self.host == origin.host;
        }
        // "a.b.example.com" ends with ".example.com"; "evil-example.com" and
        // "example.com" do not. The dot is part of the suffix on purpose.
        origin.host.len() > self.host.len() + 1
            && origin.host.ends_with(&self.host)
            && origin.host.as_bytes()[origin.host.len() - self.host.len() - 1] == b'.'
    }
}

impl Default for Cors {
    /// RIG's default: `*`.
    fn default() -> Self {
        Cors {
            policy: Policy::Any,
        }
    }
}

impl Cors {
    /// Builds the policy from `CORS` (`rig`) and `APPLICATION_CORS_ALLOW_ORIGIN`
    /// (`flowx`); `None` or blank means unset. Entries are trimmed and empty
    /// entries (a trailing comma) skipped; every invalid entry (not `*`, not
    /// `scheme://host[:port]` with an optional leading `*.` on the host, or
    /// containing whitespace or control characters) is pushed to `problems`
    /// and left out, so a bad entry never widens the policy.
    pub fn load(rig: Option<&str>, flowx: Option<&str>, problems: &mut Vec<String>) -> Cors {
        let flowx = flowx.map(str::trim).filter(|v| !v.is_empty());
        let rig = rig.map(str::trim).filter(|v| !v.is_empty());
        let (name, value, from_flowx) = match (flowx, rig) {
            (Some(v), _) => ("APPLICATION_CORS_ALLOW_ORIGIN", v, true),
            (None, Some(v)) => ("CORS", v, false),
            (None, None) => return Cors::default(),
        };

        let mut any = false;
        let mut entries = 0;
        let mut patterns = Vec::new();
        let mut last = "";
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            entries += 1;
            last = entry;
            if entry == "*" {
                any = true;
                continue;
            }
            match parse_origin(entry, true) {
                Ok(p) => patterns.push(p),
                Err(why) => problems.push(format!("{name}: entry {entry:?} {why}")),
            }
        }

        let policy = if any {
            // "*" allows everything; other entries add nothing.
            Policy::Any
        } else if !from_flowx && entries == 1 && patterns.len() == 1 && !patterns[0].wildcard {
            // The entry, not the whole value: "https://a.example," must not
            // send its trailing comma.
            Policy::Fixed(last.to_owned())
        } else {
            Policy::List(patterns)
        };
        Cors { policy }
    }

    /// The `Access-Control-Allow-Origin` value for a request whose `Origin`
    /// header is `origin` (`None`: no header). `*` and RIG's fixed value are
    /// returned whatever the request says (RIG sends them regardless); a list
    /// returns the request's origin if it matches an entry (scheme and host
    /// compared case-insensitively, ports exactly), else `None`.
    pub fn allow_origin<'a>(&'a self, origin: Option<&'a str>) -> Option<Cow<'a, str>> {
        match &self.policy {
            Policy::Any => Some(Cow::Borrowed("*")),
            Policy::Fixed(value) => Some(Cow::Borrowed(value.as_str())),
            Policy::List(patterns) => {
                let origin = origin?.trim();
                // Parsing first means only a well-formed origin (no CR/LF,
                // no path) is ever reflected into a response header.
                let parsed = parse_origin(origin, false).ok()?;
                patterns
                    .iter()
                    .any(|p| p.matches(&parsed))
                    .then_some(Cow::Borrowed(origin))
            }
        }
    }

    /// True when the answer depends on the request's `Origin` (lists): such
    /// responses must carry `Vary: Origin`, or a shared cache would serve one
    /// origin's answer to another.
    pub fn varies(&self) -> bool {
        matches!(self.policy, Policy::List(_))
    }
}

/// Parses `scheme://host[:port]`; `*.` before the host only if
/// `allow_wildcard` (configuration, not requests). The error says what is
/// wrong, for the operator.
fn parse_origin(s: &str, allow_wildcard: bool) -> Result<OriginPattern, &'static str> {
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or control characters");
    }
    let (scheme, rest) = s
        .split_once("://")
        .ok_or("is not an origin: expected scheme://host[:port] or *")?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err("has an invalid scheme");
    }
    if rest.contains(['/', '?', '#']) {
        return Err(
            "has a path, query or fragment (an origin is scheme://host[:port], no trailing slash)",
        );
    }
    if rest.contains('@') {
        return Err("has user info (an origin is scheme://host[:port])");
    }
    let (wildcard, rest) = match rest.strip_prefix("*.") {
        Some(_) if !allow_wildcard => return Err("has a wildcard"),
        Some(r) => (true, r),
        None => (false, rest),
    };

    let (host, port) = if rest.starts_with('[') {
        // IPv6 literal: [::1]:8080
        let close = rest.find(']').ok_or("has an unclosed IPv6 '['")?;
        let (host, after) = rest.split_at(close + 1);
        let inner = &host[1..host.len() - 1];
        if inner.is_empty()
            || !inner
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err("has an invalid IPv6 address");
        }
        if wildcard {
            return Err("puts a wildcard before an IP address");
        }
        match after {
            "" => (host, None),
            p => (
                host,
                Some(
                    p.strip_prefix(':')
                        .ok_or("has junk after the IPv6 address")?,
                ),
            ),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if !host.starts_with('[') {
        let labels_ok = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !labels_ok {
            return Err("has an invalid host (letters, digits, '-' and '.' between non-empty labels; '*' only as a leading '*.')");
        }
    }
    let port = match port {
        None => None,
        Some(p) => {
            let n = p
                .parse::<u16>()
                .ok()
                .filter(|n| *n != 0 && p.bytes().all(|b| b.is_ascii_digit()))
                .ok_or("has an invalid port (1 to 65535)")?;
            Some(n)
        }
    };
    let scheme = scheme.to_ascii_lowercase();
    let port = match (scheme.as_str(), port) {
        ("http", Some(80)) | ("https", Some(443)) => None,
        (_, p) => p,
    };
    Ok(OriginPattern {
        scheme,
        wildcard,
        host: host.to_ascii_lowercase(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(rig: Option<&str>, flowx: Option<&str>) -> (Cors, Vec<String>) {
        let mut problems = Vec::new();
        let cors = Cors::load(rig, flowx, &mut problems);
        (cors, problems)
    }

    fn list(value: &str) -> Cors {
        let (cors, problems) = load(None, Some(value));
        assert!(problems.is_empty(), "{problems:?}");
        cors
    }

    fn allowed(cors: &Cors, origin: &str) -> bool {
        match cors.allow_origin(Some(origin)) {
            Some(v) => {
                assert_eq!(v, origin, "a list echoes the request's origin");
                true
            }
            None => false,
        }
    }

    #[test]
    fn default_is_star_for_any_request() {
        for (rig, flowx) in [(None, None), (Some(""), Some("  ")), (Some("*"), None)] {
            let (cors, problems) = load(rig, flowx);
            assert!(problems.is_empty());
            assert_eq!(cors.allow_origin(None).as_deref(), Some("*"));
            assert_eq!(
                cors.allow_origin(Some("https://x.example")).as_deref(),
                Some("*")
            );
            assert!(!cors.varies());
        }
        assert_eq!(Cors::default(), load(None, None).0);
    }

    #[test]
    fn rig_single_origin_is_sent_regardless() {
        let (cors, problems) = load(Some(" https://app.example.com ,"), None);
        assert!(problems.is_empty(), "{problems:?}");
        for origin in [
            None,
            Some("https://other.example"),
            Some("https://app.example.com"),
        ] {
            assert_eq!(
                cors.allow_origin(origin).as_deref(),
                Some("https://app.example.com")
            );
        }
        assert!(!cors.varies());
    }

    #[test]
    fn flowx_list_wins_over_cors() {
        let (cors, problems) = load(Some("https://rig.example"), Some("https://flowx.example"));
        assert!(problems.is_empty());
        assert!(cors.varies());
        assert!(allowed(&cors, "https://flowx.example"));
        assert!(!allowed(&cors, "https://rig.example"));
    }

    #[test]
    fn flowx_single_origin_is_matched_not_fixed() {
        let cors = list("https://app.example.com");
        assert!(cors.varies());
        assert!(!allowed(&cors, "https://other.example"));
        assert!(allowed(&cors, "https://app.example.com"));
    }

    #[test]
    fn list_exact_match_is_case_insensitive_and_echoes() {
        let cors = list("https://a.example.com, http://localhost:3000");
        assert!(allowed(&cors, "https://a.example.com"));
        assert!(allowed(&cors, "HTTPS://A.Example.COM"));
        assert!(allowed(&cors, "http://localhost:3000"));
        assert!(!allowed(&cors, "https://b.example.com"));
    }

    #[test]
    fn wildcard_matches_any_subdomain_depth_only() {
        let cors = list("https://*.example.com");
        assert!(allowed(&cors, "https://a.example.com"));
        assert!(allowed(&cors, "https://a.b.example.com"));
        assert!(!allowed(&cors, "https://example.com"));
        assert!(!allowed(&cors, "https://evil-example.com"));
        assert!(!allowed(&cors, "https://example.com.evil.com"));
        assert!(!allowed(&cors, "https://a.example.com.evil.com"));
        assert!(!allowed(&cors, "https://.example.com"));
    }

    #[test]
    fn port_and_scheme_must_match() {
        let cors = list("https://app.example.com:8443, https://*.example.org");
        assert!(allowed(&cors, "https://app.example.com:8443"));
        assert!(!allowed(&cors, "https://app.example.com"));
        assert!(!allowed(&cors, "https://app.example.com:9443"));
        assert!(!allowed(&cors, "http://app.example.com:8443"));
        assert!(!allowed(&cors, "http://a.example.org"));
        assert!(!allowed(&cors, "https://a.example.org:8443"));
    }

    #[test]
    fn default_ports_are_the_same_origin() {
        let cors = list("https://a.example:443, http://b.example");
        assert!(allowed(&cors, "https://a.example"));
        assert!(allowed(&cors, "http://b.example:80"));
        assert!(!allowed(&cors, "https://b.example"));
    }

    #[test]
    fn no_origin_header_with_a_list_gets_nothing() {
        let cors = list("https://a.example");
        assert_eq!(cors.allow_origin(None), None);
    }

    #[test]
    fn malformed_request_origins_are_never_reflected() {
        let cors = list("https://*.example.com");
        for origin in [
            "null",
            "https://a.example.com\r\nSet-Cookie: x=1",
            "https://a.example.com/",
            "https://*.example.com",
            "https://user@a.example.com",
            "a.example.com",
            "",
        ] {
            assert_eq!(cors.allow_origin(Some(origin)), None, "{origin:?}");
        }
    }

    #[test]
    fn ipv6_origins() {
        let cors = list("http://[::1]:8080");
        assert!(allowed(&cors, "http://[::1]:8080"));
        assert!(!allowed(&cors, "http://[::1]"));
    }

    #[test]
    fn star_in_a_list_allows_everything() {
        let (cors, problems) = load(None, Some("https://a.example, *"));
        assert!(problems.is_empty());
        assert_eq!(cors.allow_origin(None).as_deref(), Some("*"));
        assert!(!cors.varies());
    }

    #[test]
    fn rig_cors_with_a_list_or_wildcard_is_matched() {
        let (cors, problems) = load(Some("https://*.example.com"), None);
        assert!(problems.is_empty());
        assert!(cors.varies());
        assert!(allowed(&cors, "https://a.example.com"));
        assert!(!allowed(&cors, "https://b.example.org"));

        let (cors, _) = load(Some("https://a.example,https://b.example"), None);
        assert!(cors.varies());
        assert!(allowed(&cors, "https://b.example"));
    }

    #[test]
    fn invalid_entries_are_problems_and_left_out() {
        let (cors, problems) = load(
            None,
            Some(
                "https://good.example, https://slash.example/, example.com, https://a b.example, \
                 https://x.*.example, https://p.example:99999, https://p.example:0, ,ht!tp://x, \
                 null",
            ),
        );
        assert_eq!(problems.len(), 8, "{problems:#?}");
        assert!(problems
            .iter()
            .all(|p| p.starts_with("APPLICATION_CORS_ALLOW_ORIGIN: entry ")));
        assert!(problems[0].contains("no trailing slash"), "{problems:?}");
        assert!(problems[2].contains("whitespace"), "{problems:?}");
        assert!(allowed(&cors, "https://good.example"));
        assert!(!allowed(&cors, "https://slash.example"));

        let (cors, problems) = load(Some("https://app.example/\r\n"), None);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("CORS: "));
        // A broken single value denies rather than sending it.
        assert_eq!(cors.allow_origin(Some("https://app.example")), None);

        let (_, problems) = load(None, Some("https://a.example\nhttps://b.example"));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("whitespace or control"),
            "{problems:?}"
        );
    }
}
