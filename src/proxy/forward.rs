//! What an HTTP target receives and what the client gets back, as headers and framing: RIG's
//! header rules (`host` is the upstream's, `forwarded: for=<client>;by=<gateway>` replaces any
//! given, the trace context is set, hop-by-hop fields are dropped both ways, the version's
//! `add_headers` override same-named fields when the endpoint asks for it) and how a body is
//! framed on each side. Values in, bytes out.

use super::table::Upstream;
use crate::proto::headers::Headers;
use crate::proto::http1;
use crate::proto::http1_client::{
    connection_tokens, end_head, is_hop_by_hop, push_field, push_field_with, push_own_field,
    request_line, RequestBody, ResponseBody, ResponseHead,
};
use crate::proto::trace::TraceContext;
use std::net::IpAddr;

/// The gateway's side of the `forwarded` header and its trace context.
pub struct Hop<'a> {
    pub client_ip: IpAddr,
    pub gateway_ip: IpAddr,
    pub upstream: &'a Upstream,
    /// The version's `add_headers` when the endpoint sets `transform_request_headers`.
    pub add_headers: Option<&'a [(String, String)]>,
    pub trace: &'a TraceContext,
}

/// The `forwarded` node identifier of an address (RFC 7239 §6: IPv6 quoted in brackets).
fn push_node(out: &mut Vec<u8>, ip: IpAddr) {
    use std::io::Write;
    match ip {
        IpAddr::V4(v4) => crate::proto::push_ipv4(out, v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => crate::proto::push_ipv4(out, v4),
            None => {
                let _ = write!(out, "\"[{v6}]\"");
            }
        },
    }
}

/// The head for the upstream: the request line, then the client's fields (without
/// hop-by-hop, framing and the fields the gateway sets), `host`, `forwarded`, the trace
/// context, the version's `add_headers` last so they win (a configured `host` included: RIG
/// replaced it with the upstream's after merging, contrary to its documentation), and the
/// body's framing. Written straight into the head: no list of fields in between.
pub fn upstream_head(
    method: &str,
    target: &str,
    request: &Headers,
    hop: &Hop<'_>,
    body: RequestBody,
) -> Vec<u8> {
    let listed = connection_tokens(request.values("connection"));
    let added = |n: &str| {
        hop.add_headers
            .is_some_and(|a| a.iter().any(|(k, _)| k == n))
    };
    let mut out = Vec::with_capacity(256 + request.byte_len());
    request_line(&mut out, method, target);
    for (n, v) in request {
        let skip = is_hop_by_hop(n)
            || listed.iter().any(|l| l == n)
            || matches!(
                n,
                "host" | "content-length" | "forwarded" | "traceparent" | "tracestate" | "expect"
            )
            || added(n);
        if !skip {
            push_field(&mut out, n, v);
        }
    }
    if !added("host") {
        push_field_with(&mut out, "host", |b| hop.upstream.write_authority(b));
    }
    push_own_field(&mut out, "forwarded", |b| {
        b.extend_from_slice(b"for=");
        push_node(b, hop.client_ip);
        b.extend_from_slice(b";by=");
        push_node(b, hop.gateway_ip);
    });
    push_own_field(&mut out, "traceparent", |b| hop.trace.write_traceparent(b));
    if let Some(state) = &hop.trace.tracestate {
        push_field(&mut out, "tracestate", state.as_bytes());
    }
    for (k, v) in hop.add_headers.unwrap_or_default() {
        push_field(&mut out, k, v.as_bytes());
    }
    end_head(&mut out, body);
    out
}

/// The upstream request target: the (rewritten) path and the client's query; with a
/// correlation token, `correlation=<token>` replaces any the client sent.
/// Borrowed when there is nothing to add: the common proxied GET allocates nothing here.
pub fn upstream_target<'a>(
    path: &'a str,
    query: Option<&str>,
    correlation: Option<&str>,
) -> std::borrow::Cow<'a, str> {
    let path = if path.is_empty() { "/" } else { path };
    if correlation.is_none() && query.is_none_or(|q| q.split('&').all(str::is_empty)) {
        return path.into();
    }
    let mut pairs: Vec<&str> = query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .collect();
    let own;
    if let Some(token) = correlation {
        pairs.retain(|p| p.split('=').next() != Some("correlation"));
        own = format!("correlation={token}");
        pairs.push(&own);
    }
    if pairs.is_empty() {
        path.into()
    } else {
        format!("{path}?{}", pairs.join("&")).into()
    }
}

/// How the request body goes upstream: as it came (length or chunked); a POST, PUT or PATCH
/// without a body says `content-length: 0` (servers may refuse it otherwise, 411).
pub fn request_framing(body: http1::BodyKind, method: &str) -> RequestBody {
    match body {
        http1::BodyKind::Length(n) => RequestBody::Length(n),
        http1::BodyKind::Chunked => RequestBody::Chunked,
        http1::BodyKind::None if matches!(method, "POST" | "PUT" | "PATCH") => {
            RequestBody::Length(0)
        }
        http1::BodyKind::None => RequestBody::None,
    }
}

/// How the response body goes to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientBody {
    None,
    Length(u64),
    Chunked,
    /// HTTP/1.0 client and no length: the body ends when we close.
    UntilClose,
}

/// The client's response head for an upstream response, its body framing, and whether the
/// client connection can carry another request afterwards.
/// The head is written into `out` (cleared first).
pub fn client_head(
    out: &mut Vec<u8>,
    resp: &ResponseHead,
    client_keep_alive: bool,
    client_http11: bool,
    extra: &[(&str, String)],
) -> (ClientBody, bool) {
    let listed = connection_tokens(resp.headers.values("connection"));
    let body = match resp.body {
        ResponseBody::None => ClientBody::None,
        ResponseBody::Length(n) => ClientBody::Length(n),
        ResponseBody::Chunked | ResponseBody::UntilClose if client_http11 => ClientBody::Chunked,
        ResponseBody::Chunked | ResponseBody::UntilClose => ClientBody::UntilClose,
    };
    let keep_alive = client_keep_alive && body != ClientBody::UntilClose;
    out.clear();
    http1::push_status_line(out, resp.status);
    for (n, v) in &resp.headers {
        // A response without a body (HEAD, 304) keeps the upstream's content-length: it
        // describes the representation, not this message.
        let framing = n == "content-length" && body != ClientBody::None;
        if is_hop_by_hop(n) || framing || listed.iter().any(|l| l == n) {
            continue;
        }
        push_field(out, n, v);
    }
    for (n, v) in extra {
        push_field(out, n, v.as_bytes());
    }
    match body {
        ClientBody::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            crate::proto::push_dec(out, n);
            out.extend_from_slice(b"\r\n");
        }
        ClientBody::Chunked => push_field(out, "transfer-encoding", b"chunked"),
        ClientBody::None | ClientBody::UntilClose => {}
    }
    if !keep_alive {
        push_field(out, "connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    (body, keep_alive)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http1_client::{parse_response_head, ResponseLimits};

    fn h(n: &str, v: &str) -> (String, Vec<u8>) {
        (n.to_string(), v.as_bytes().to_vec())
    }

    #[test]
    fn rigs_request_header_rules() {
        let up = Upstream {
            tls: false,
            host: "backend".into(),
            port: 8080,
        };
        let trace = TraceContext::continue_or_start(None, None);
        let add = vec![("x-api-key".to_string(), "k".to_string())];
        let hop = Hop {
            client_ip: "10.1.2.3".parse().unwrap(),
            gateway_ip: "::1".parse().unwrap(),
            upstream: &up,
            add_headers: Some(&add),
            trace: &trace,
        };
        let req: Headers = [
            h("host", "gw:4000"),
            h("connection", "keep-alive, x-hop"),
            h("x-hop", "drop me"),
            h("keep-alive", "timeout=5"),
            h("transfer-encoding", "chunked"),
            h("forwarded", "for=evil"),
            h("x-api-key", "client's"),
            h("accept", "*/*"),
        ]
        .into_iter()
        .collect();
        let wire = upstream_head("GET", "/x", &req, &hop, RequestBody::Length(2));
        let text = String::from_utf8(wire).unwrap();
        let mut lines = text.split("\r\n");
        assert_eq!(lines.next(), Some("GET /x HTTP/1.1"));
        let fields: Vec<&str> = lines.take_while(|l| !l.is_empty()).collect();
        assert_eq!(fields.len(), 6, "{fields:?}");
        assert_eq!(fields[0], "accept: */*");
        assert_eq!(fields[1], "host: backend:8080");
        assert_eq!(fields[2], "forwarded: for=10.1.2.3;by=\"[::1]\"");
        assert_eq!(fields[3], format!("traceparent: {}", trace.traceparent()));
        assert_eq!(fields[4], "x-api-key: k");
        assert_eq!(fields[5], "content-length: 2");
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn targets_keep_the_query_and_own_the_correlation() {
        assert_eq!(upstream_target("/a", None, None), "/a");
        assert_eq!(upstream_target("/a", Some("x=1&y=2"), None), "/a?x=1&y=2");
        assert_eq!(
            upstream_target("/a", Some("correlation=forged&x=1"), Some("T")),
            "/a?x=1&correlation=T"
        );
    }

    #[test]
    fn response_framing_towards_the_client() {
        let l = ResponseLimits {
            max_head_bytes: 4096,
            max_headers: 32,
        };
        let (r, _) = parse_response_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close, x-priv\r\nX-Priv: 1\r\nX-Keep: 2\r\n\r\n",
            &l,
            false,
        )
        .unwrap()
        .unwrap();
        let mut head = Vec::new();
        let (body, keep) = client_head(&mut head, &r, true, true, &[]);
        assert_eq!((body, keep), (ClientBody::Chunked, true));
        assert_eq!(
            String::from_utf8(head.clone()).unwrap(),
            "HTTP/1.1 200 OK\r\nx-keep: 2\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let (body, keep) = client_head(&mut head, &r, true, false, &[]);
        assert_eq!(
            (body, keep),
            (ClientBody::UntilClose, false),
            "HTTP/1.0 client"
        );
        let (r, _) =
            parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n", &l, true)
                .unwrap()
                .unwrap();
        let (body, _) = client_head(&mut head, &r, true, true, &[]);
        assert_eq!(body, ClientBody::None);
        assert!(
            String::from_utf8(head)
                .unwrap()
                .contains("content-length: 42\r\n"),
            "HEAD keeps the length"
        );
    }
}
