//! Target URLs: parsing `ws://` and `wss://`, resolving each once into an [`Endpoint`], and
//! opening one WebSocket to it (over TLS for `wss://`, from a chosen 127.0.0.N source address
//! for loopback targets), as `?user=` or with a token from `auth`, offering permessage-deflate
//! when asked (the `socket` under it inflates what the server compresses).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::{AUTHORIZATION, SEC_WEBSOCKET_EXTENSIONS};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::auth::{Credentials, TokenError};
use crate::deflate;
use crate::socket::Socket;
use crate::tls::{Stream, Tls, TlsError};

/// A client WebSocket over TCP, plain or TLS, counting what it reads (`Socket`).
pub type Ws = WebSocketStream<Socket<Stream>>;

/// Why a URL cannot be a target.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("`{0}` is not a ws:// or wss:// URL (expected e.g. ws://127.0.0.1:8080/ws)")]
    Scheme(String),
    #[error("`{url}` names no host")]
    NoHost { url: String },
    #[error("`{url}` has an invalid port")]
    BadPort { url: String },
}

/// Plain WebSocket or WebSocket over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scheme {
    Ws,
    Wss,
}

/// A parsed target URL. Parsing does no I/O; [`endpoints`] resolves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub url: String,
    pub scheme: Scheme,
    /// As written, brackets of an IPv6 address included: the Host header, and (unbracketed)
    /// the TLS server name the certificate must match.
    pub host: String,
    pub port: u16,
    /// Path and query of the URL, e.g. `/ws`.
    pub path: String,
}

impl Target {
    /// Parses `ws://HOST[:PORT][/PATH]` or `wss://…`, HOST a name, an IPv4 address or an
    /// `[IPv6]` address; the port defaults to 80 and 443.
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("ws://") {
            (Scheme::Ws, rest)
        } else if let Some(rest) = url.strip_prefix("wss://") {
            (Scheme::Wss, rest)
        } else {
            return Err(TargetError::Scheme(url.to_string()));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path
        };
        let default_port = match scheme {
            Scheme::Ws => 80,
            Scheme::Wss => 443,
        };
        let (host, port) = split_host_port(authority, default_port, url)?;
        if host.is_empty() || host == "[]" || host.contains(['@', ' ']) {
            return Err(TargetError::NoHost {
                url: url.to_string(),
            });
        }
        Ok(Self {
            url: url.to_string(),
            scheme,
            host: host.to_string(),
            port,
            path,
        })
    }

    /// The host without IPv6 brackets, as DNS and TLS want it.
    fn bare_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }

    /// The request URI, naming `user` in the query if given.
    fn request_uri(&self, user: Option<&str>) -> String {
        let scheme = match self.scheme {
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        };
        let base = format!("{scheme}://{}:{}{}", self.host, self.port, self.path);
        match user {
            Some(user) => {
                let sep = if self.path.contains('?') { '&' } else { '?' };
                format!("{base}{sep}user={user}")
            }
            None => base,
        }
    }

    /// The handshake request for `user`: with `credentials`, a bearer token and no `?user=`
    /// (a node with authentication takes the user from the token and refuses `?user=` with 400
    /// `user_not_allowed`); without, the user in the query.
    fn request(
        &self,
        user: &str,
        credentials: Option<&Credentials>,
        deflate: bool,
    ) -> Result<Request, ConnectError> {
        let uri = self.request_uri(credentials.is_none().then_some(user));
        let mut request = uri
            .into_client_request()
            .map_err(|e| ConnectError::from_handshake(&self.url, e))?;
        if let Some(c) = credentials {
            let value = c
                .authorization(user)
                .map_err(|source| ConnectError::Token {
                    user: user.to_string(),
                    source,
                })?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        if deflate {
            request.headers_mut().insert(
                SEC_WEBSOCKET_EXTENSIONS,
                HeaderValue::from_static(deflate::OFFER),
            );
        }
        Ok(request)
    }
}

fn split_host_port<'a>(
    authority: &'a str,
    default_port: u16,
    url: &str,
) -> Result<(&'a str, u16), TargetError> {
    let bad_port = || TargetError::BadPort {
        url: url.to_string(),
    };
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(bad_port)
    };
    if authority.starts_with('[') {
        let close = authority.find(']').ok_or_else(|| TargetError::NoHost {
            url: url.to_string(),
        })?;
        let host = &authority[..=close];
        return match &authority[close + 1..] {
            "" => Ok((host, default_port)),
            p => Ok((host, port(p.strip_prefix(':').ok_or_else(bad_port)?)?)),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, p)) => Ok((host, port(p)?)),
        None => Ok((authority, default_port)),
    }
}

/// Why a target could not be made ready to dial.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot resolve {url}: {source}")]
    Lookup { url: String, source: std::io::Error },
    #[error("{url}: its host resolves to no address")]
    NoAddress { url: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A target ready to dial: its address, resolved once (per connection would be one DNS query
/// per simulated user), and for `wss://` the process's TLS client.
#[derive(Clone)]
pub struct Endpoint {
    pub target: Target,
    pub addr: SocketAddr,
    tls: Option<Tls>,
    /// Offer permessage-deflate in the handshake (`--deflate`).
    pub deflate: bool,
}

/// Resolves `targets`, building the TLS client once if any is `wss://` (`insecure`: accept
/// any certificate, see `tls::insecure`). A name takes its first IPv4 address if it has one,
/// so `localhost` is 127.0.0.1 whatever order the resolver gives. `deflate`: every connection
/// offers permessage-deflate.
pub async fn endpoints(
    targets: &[Target],
    insecure: bool,
    deflate: bool,
) -> Result<Vec<Endpoint>, ResolveError> {
    let tls = if targets.iter().any(|t| t.scheme == Scheme::Wss) {
        Some(Tls::new(insecure)?)
    } else {
        None
    };
    let mut out = Vec::with_capacity(targets.len());
    for t in targets {
        let addr = match t.bare_host().parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, t.port),
            Err(_) => lookup(t).await?,
        };
        out.push(Endpoint {
            target: t.clone(),
            addr,
            tls: (t.scheme == Scheme::Wss).then(|| tls.clone()).flatten(),
            deflate,
        });
    }
    Ok(out)
}

async fn lookup(t: &Target) -> Result<SocketAddr, ResolveError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((t.bare_host(), t.port))
        .await
        .map_err(|source| ResolveError::Lookup {
            url: t.url.clone(),
            source,
        })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| ResolveError::NoAddress { url: t.url.clone() })
}

/// The source address for the `n`-th spread slot: 127.0.0.(1+n) for IPv4 loopback targets when
/// spreading over `count` > 1 addresses, else none (the kernel picks). Each source address has
/// its own ~28k ephemeral ports, which is what lets one machine open 100k connections; a
/// remote target is never reachable from 127.0.0.N, so it gets none.
pub fn source_addr(endpoint: &Endpoint, n: u64, count: u32) -> Option<IpAddr> {
    if count <= 1 || !endpoint.addr.is_ipv4() || !endpoint.addr.ip().is_loopback() {
        return None;
    }
    let host = 1 + (n % u64::from(count)) as u8;
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)))
}

/// Why one connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("tcp connect to {addr}: {source}")]
    Tcp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("bind to source {source_ip}: {source}")]
    Bind {
        source_ip: IpAddr,
        source: std::io::Error,
    },
    #[error("connect to {addr} timed out after {ms} ms")]
    Timeout { addr: SocketAddr, ms: u128 },
    /// The server answered the upgrade with an HTTP refusal (docs/protocol.md, "Connecting").
    #[error("{url} refused the upgrade: {status} {code}")]
    Refused {
        url: String,
        status: u16,
        code: String,
    },
    #[error("TLS with {url}: {source}")]
    Tls { url: String, source: TlsError },
    #[error("websocket handshake with {url}: {source}")]
    Handshake {
        url: String,
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    #[error("token for {user}: {source}")]
    Token { user: String, source: TokenError },
}

impl ConnectError {
    /// A short label for counting failures by cause, e.g. `429 too_many_connections`.
    pub fn kind(&self) -> String {
        match self {
            ConnectError::Tcp { source, .. } => format!("tcp: {}", source.kind()),
            ConnectError::Bind { .. } => "bind to source address".into(),
            ConnectError::Timeout { .. } => "timeout".into(),
            ConnectError::Refused { status, code, .. } => format!("{status} {code}"),
            ConnectError::Tls { source, .. } => source.kind().into(),
            ConnectError::Handshake { .. } => "handshake".into(),
            ConnectError::Token { .. } => "token".into(),
        }
    }

    fn from_handshake(url: &str, e: tokio_tungstenite::tungstenite::Error) -> Self {
        use tokio_tungstenite::tungstenite::Error;
        match e {
            Error::Http(response) => {
                // Refusals carry `{"error": code, ...}`; anything else is named by its status.
                let code = response
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice::<RefusalBody>(b).ok())
                    .map_or_else(|| "(no error code)".to_string(), |b| b.error);
                ConnectError::Refused {
                    url: url.to_string(),
                    status: response.status().as_u16(),
                    code,
                }
            }
            other => ConnectError::Handshake {
                url: url.to_string(),
                source: Box::new(other),
            },
        }
    }
}

#[derive(Deserialize)]
struct RefusalBody {
    error: String,
}

/// The largest message or frame read, inflated or not.
const MAX_MESSAGE: usize = 1 << 20;

/// Small buffers: an idle connection should cost a few KiB, not tungstenite's 128 KiB default.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// Opens a WebSocket to `endpoint` as `user`, from `source` if given, with a token from
/// `credentials` if given. The whole attempt (TCP, TLS and handshake) is bounded by `limit`.
pub async fn connect(
    endpoint: &Endpoint,
    source: Option<IpAddr>,
    user: &str,
    credentials: Option<&Credentials>,
    limit: Duration,
) -> Result<Ws, ConnectError> {
    let target = &endpoint.target;
    let attempt = async {
        let request = target.request(user, credentials, endpoint.deflate)?;
        let tcp = tcp(endpoint.addr, source).await?;
        let stream = match &endpoint.tls {
            Some(tls) => {
                tls.wrap(target.bare_host(), tcp)
                    .await
                    .map_err(|source| ConnectError::Tls {
                        url: target.url.clone(),
                        source,
                    })?
            }
            None => Stream::Plain(tcp),
        };
        let stream = Socket::new(stream, endpoint.deflate, MAX_MESSAGE);
        let (ws, _response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
                .await
                .map_err(|e| ConnectError::from_handshake(&target.url, e))?;
        Ok(ws)
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Timeout {
            addr: endpoint.addr,
            ms: limit.as_millis(),
        }),
    }
}

/// A TCP connection to `addr`, from `source` if given, without Nagle's delay.
async fn tcp(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, ConnectError> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|source| ConnectError::Tcp { addr, source })?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|source| ConnectError::Bind {
                source_ip: ip,
                source,
            })?;
    }
    let stream = socket
        .connect(addr)
        .await
        .map_err(|source| ConnectError::Tcp { addr, source })?;
    stream.set_nodelay(true).ok();
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> Endpoint {
        let t = Target::parse(url).unwrap();
        // IP literals and `localhost` only: resolving them sends nothing off this machine.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(endpoints(&[t], true, false)).unwrap().remove(0)
    }

    #[test]
    fn parses_both_schemes_with_their_default_ports() {
        let t = Target::parse("ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!(
            (t.scheme, t.host.as_str(), t.port),
            (Scheme::Ws, "127.0.0.1", 8080)
        );
        assert_eq!(t.path, "/ws");
        let t = Target::parse("wss://staging.example.com/ws").unwrap();
        assert_eq!((t.scheme, t.port), (Scheme::Wss, 443));
        assert_eq!(t.bare_host(), "staging.example.com");
        assert_eq!(Target::parse("ws://example.com").unwrap().port, 80);
        let t = Target::parse("wss://[2001:db8::1]:9443/ws").unwrap();
        assert_eq!(
            (t.host.as_str(), t.bare_host()),
            ("[2001:db8::1]", "2001:db8::1")
        );
        assert_eq!(
            Target::parse("ws://127.0.0.1:1/ws?x=1")
                .unwrap()
                .request_uri(Some("u")),
            "ws://127.0.0.1:1/ws?x=1&user=u"
        );
        // The Host header and TLS server name are the host as written, not its address.
        assert_eq!(
            Target::parse("wss://localhost:9/ws")
                .unwrap()
                .request_uri(None),
            "wss://localhost:9/ws"
        );
    }

    #[test]
    fn a_token_replaces_the_user_in_the_query() {
        let t = Target::parse("ws://127.0.0.1:1/ws").unwrap();
        let plain = t.request("u1", None, false).unwrap();
        assert_eq!(plain.uri(), "ws://127.0.0.1:1/ws?user=u1");
        assert!(plain.headers().get(AUTHORIZATION).is_none());
        let c = Credentials::hs256("0123456789abcdef0123456789abcdef", Duration::from_secs(60));
        let signed = t.request("u1", Some(&c), true).unwrap();
        assert_eq!(signed.uri(), "ws://127.0.0.1:1/ws");
        let auth = signed.headers()[AUTHORIZATION].to_str().unwrap();
        assert!(auth.starts_with("Bearer ey"), "{auth}");
        assert!(plain.headers().get(SEC_WEBSOCKET_EXTENSIONS).is_none());
        assert_eq!(signed.headers()[SEC_WEBSOCKET_EXTENSIONS], deflate::OFFER);
    }

    #[test]
    fn refuses_other_schemes_and_broken_authorities() {
        for url in ["http://127.0.0.1/ws", "127.0.0.1:80/ws", "WS://x/ws"] {
            assert!(
                matches!(Target::parse(url), Err(TargetError::Scheme(_))),
                "{url}"
            );
        }
        for url in ["ws:///ws", "wss://:443/ws", "ws://[::1/ws", "ws://u@h/ws"] {
            assert!(
                matches!(Target::parse(url), Err(TargetError::NoHost { .. })),
                "{url}"
            );
        }
        for url in [
            "ws://127.0.0.1:x/ws",
            "ws://h:0/ws",
            "ws://h:70000/ws",
            "ws://[::1]x/ws",
        ] {
            assert!(
                matches!(Target::parse(url), Err(TargetError::BadPort { .. })),
                "{url}"
            );
        }
    }

    #[test]
    fn addresses_resolve_once_and_only_wss_gets_tls() {
        let e = endpoint("ws://127.3.4.5:1/ws");
        assert_eq!(e.addr, "127.3.4.5:1".parse().unwrap());
        assert!(e.tls.is_none());
        let e = endpoint("wss://[::1]:9/ws");
        assert_eq!(e.addr, "[::1]:9".parse().unwrap());
        assert!(e.tls.is_some());
        // Whatever order the resolver lists them in, `localhost` is its IPv4 address.
        assert_eq!(
            endpoint("ws://localhost:9/ws").addr,
            "127.0.0.1:9".parse().unwrap()
        );
    }

    #[test]
    fn source_addresses_spread_only_over_loopback_targets() {
        let local = endpoint("ws://127.0.0.1:1/ws");
        assert_eq!(source_addr(&local, 0, 1), None);
        assert_eq!(
            source_addr(&local, 5, 4),
            Some("127.0.0.2".parse().unwrap())
        );
        // 127.0.0.N cannot reach another machine: the kernel picks the source.
        let remote = endpoint("ws://10.0.0.1:80/ws");
        assert_eq!(source_addr(&remote, 5, 4), None);
        assert_eq!(source_addr(&endpoint("ws://[::1]:1/ws"), 5, 4), None);
    }
}
