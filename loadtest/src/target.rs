//! Target URLs: parsing, the loopback-only rule, and opening one WebSocket from a chosen
//! 127.0.0.N source address, as `?user=` or with a token from `auth`. The tester never sends a
//! byte anywhere but this machine.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::auth::{Credentials, TokenError};

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// Why a URL cannot be a target.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("`{0}` is not a ws:// URL (expected ws://127.0.0.1:PORT/ws)")]
    NotWs(String),
    #[error("`{url}` has an invalid port")]
    BadPort { url: String },
    #[error(
        "`{url}` is not a loopback address: loadtest only targets 127.0.0.0/8, localhost or [::1]"
    )]
    NotLoopback { url: String },
}

/// A parsed, loopback-checked target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    /// Path and query of the URL, e.g. `/ws`.
    pub path: String,
}

impl Target {
    /// Parses `ws://HOST[:PORT][/PATH]` where HOST is an address in 127.0.0.0/8, `localhost` or
    /// `[::1]`. Names are not resolved (nothing but `localhost` is accepted), so a target can
    /// never turn out to be off the machine.
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| TargetError::NotWs(url.to_string()))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path
        };
        let (host, port) = split_host_port(authority, url)?;
        let ip = match host {
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            h if h.starts_with('[') && h.ends_with(']') => h[1..h.len() - 1]
                .parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| TargetError::NotLoopback {
                    url: url.to_string(),
                })?,
            h => h
                .parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| TargetError::NotLoopback {
                    url: url.to_string(),
                })?,
        };
        if !ip.is_loopback() {
            return Err(TargetError::NotLoopback {
                url: url.to_string(),
            });
        }
        Ok(Self {
            url: url.to_string(),
            addr: SocketAddr::new(ip, port),
            path,
        })
    }

    /// The request URI, naming `user` in the query if given.
    fn request_uri(&self, user: Option<&str>) -> String {
        let base = format!("ws://{}{}", self.addr, self.path);
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
        Ok(request)
    }
}

fn split_host_port<'a>(authority: &'a str, url: &str) -> Result<(&'a str, u16), TargetError> {
    let bad_port = || TargetError::BadPort {
        url: url.to_string(),
    };
    if authority.starts_with('[') {
        let close = authority
            .find(']')
            .ok_or_else(|| TargetError::NotWs(url.to_string()))?;
        let host = &authority[..=close];
        return match &authority[close + 1..] {
            "" => Ok((host, 80)),
            p => Ok((
                host,
                p.strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(bad_port)?,
            )),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Ok((host, port.parse().map_err(|_| bad_port())?)),
        None => Ok((authority, 80)),
    }
}

/// The source address for the `n`-th spread slot: 127.0.0.(1+n) for IPv4 targets when spreading
/// over `count` > 1 addresses, else none (the kernel picks). Each source address has its own
/// ~28k ephemeral ports, which is what lets one machine open 100k connections.
pub fn source_addr(target: &Target, n: u64, count: u32) -> Option<IpAddr> {
    if count <= 1 || !target.addr.is_ipv4() {
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

/// Small buffers: an idle connection should cost a few KiB, not tungstenite's 128 KiB default.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// Opens a WebSocket to `target` as `user`, from `source` if given, with a token from
/// `credentials` if given. The whole attempt (TCP and handshake) is bounded by `limit`.
pub async fn connect(
    target: &Target,
    source: Option<IpAddr>,
    user: &str,
    credentials: Option<&Credentials>,
    limit: Duration,
) -> Result<Ws, ConnectError> {
    let attempt = async {
        let request = target.request(user, credentials)?;
        let socket = if target.addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|source| ConnectError::Tcp {
            addr: target.addr,
            source,
        })?;
        if let Some(ip) = source {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|source| ConnectError::Bind {
                    source_ip: ip,
                    source,
                })?;
        }
        let stream = socket
            .connect(target.addr)
            .await
            .map_err(|source| ConnectError::Tcp {
                addr: target.addr,
                source,
            })?;
        stream.set_nodelay(true).ok();
        let (ws, _response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
                .await
                .map_err(|e| ConnectError::from_handshake(&target.url, e))?;
        Ok(ws)
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Timeout {
            addr: target.addr,
            ms: limit.as_millis(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_loopback_forms() {
        let t = Target::parse("ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.path, "/ws");
        assert!(Target::parse("ws://127.3.4.5:1/ws").is_ok());
        assert_eq!(Target::parse("ws://localhost:9/ws").unwrap().addr.port(), 9);
        assert!(Target::parse("ws://[::1]:9/ws").unwrap().addr.is_ipv6());
        assert_eq!(
            Target::parse("ws://127.0.0.1:1/ws?x=1")
                .unwrap()
                .request_uri(Some("u")),
            "ws://127.0.0.1:1/ws?x=1&user=u"
        );
    }

    #[test]
    fn a_token_replaces_the_user_in_the_query() {
        let t = Target::parse("ws://127.0.0.1:1/ws").unwrap();
        let plain = t.request("u1", None).unwrap();
        assert_eq!(plain.uri(), "ws://127.0.0.1:1/ws?user=u1");
        assert!(plain.headers().get(AUTHORIZATION).is_none());
        let c = Credentials::hs256("0123456789abcdef0123456789abcdef", Duration::from_secs(60));
        let signed = t.request("u1", Some(&c)).unwrap();
        assert_eq!(signed.uri(), "ws://127.0.0.1:1/ws");
        let auth = signed.headers()[AUTHORIZATION].to_str().unwrap();
        assert!(auth.starts_with("Bearer ey"), "{auth}");
    }

    #[test]
    fn refuses_anything_else() {
        for url in [
            "ws://10.0.0.1:80/ws",
            "ws://192.168.1.1/ws",
            "ws://example.com/ws",
            "ws://[::2]:80/ws",
            "ws://8.8.8.8:53/ws",
        ] {
            assert!(
                matches!(Target::parse(url), Err(TargetError::NotLoopback { .. })),
                "{url}"
            );
        }
        assert!(matches!(
            Target::parse("wss://127.0.0.1/ws"),
            Err(TargetError::NotWs(_))
        ));
        assert!(matches!(
            Target::parse("ws://127.0.0.1:x/ws"),
            Err(TargetError::BadPort { .. })
        ));
    }
}
