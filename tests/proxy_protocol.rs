//! PROXY protocol (`proxy_protocol = true`): behind a real haproxy with `send-proxy-v2` and
//! `send-proxy`, per-IP limits count each client's own address (several 127.0.0.x sources), not
//! the balancer's; a trusted peer must open with a valid header in time or is closed; an
//! untrusted peer's `PROXY` line is just a bad request; the pending-connection cap charges the
//! client the header names.

mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use common::haproxy::Haproxy;
use common::{RECV_TIMEOUT, TestServer, wait_ready};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

const PROXY: [u8; 4] = [127, 0, 0, 1];
const REQUEST: &str = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// A node that reads PROXY headers from `trusted`, with `adjust` on top.
async fn node(trusted: &str, adjust: impl FnOnce(&mut roomcast::Config)) -> TestServer {
    TestServer::with(|c| {
        c.trusted_proxies = vec![trusted.into()];
        c.proxy_protocol = true;
        adjust(c);
    })
    .await
}

/// A TCP connection to `addr` from the loopback address `from`.
async fn tcp_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((Ipv4Addr::from(from), 0).into()).unwrap();
    tokio::time::timeout(RECV_TIMEOUT, socket.connect(addr))
        .await
        .expect("connect timed out")
        .unwrap()
}

/// A WebSocket handshake on `stream` (to `addr`, as user `user`, with `X-Forwarded-For` if
/// given): the HTTP status (101 when upgraded), the refusal's body, and the open socket.
async fn handshake(
    stream: TcpStream,
    addr: SocketAddr,
    user: &str,
    forwarded_for: Option<&str>,
) -> (u16, String, Option<Ws>) {
    let mut request = format!("ws://{addr}/ws?user={user}")
        .into_client_request()
        .unwrap();
    if let Some(xff) = forwarded_for {
        request
            .headers_mut()
            .insert("x-forwarded-for", xff.parse().unwrap());
    }
    let result = tokio_tungstenite::client_async(request, stream);
    match tokio::time::timeout(RECV_TIMEOUT, result)
        .await
        .expect("handshake timed out")
    {
        Ok((ws, response)) => (response.status().as_u16(), String::new(), Some(ws)),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            let body = String::from_utf8_lossy(body).into_owned();
            (response.status().as_u16(), body, None)
        }
        Err(err) => panic!("handshake failed: {err}"),
    }
}

/// A WebSocket from the loopback address `from` to `addr`.
async fn ws_from(from: [u8; 4], addr: SocketAddr, user: &str) -> (u16, String, Option<Ws>) {
    handshake(tcp_from(from, addr).await, addr, user, None).await
}

/// Sends `bytes` from `from` and reads until the node closes: what it answered and how long
/// the connection lasted.
async fn exchange(from: [u8; 4], addr: SocketAddr, bytes: &[u8]) -> (String, Duration) {
    let started = Instant::now();
    let mut tcp = tcp_from(from, addr).await;
    tcp.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    // A reset instead of a FIN (unread bytes at close) also ends it.
    let _ = tokio::time::timeout(RECV_TIMEOUT, tcp.read_to_end(&mut answer))
        .await
        .expect("the node did not close the connection");
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

/// A v1 header naming `client`.
fn v1(client: &str) -> String {
    format!("PROXY TCP4 {client} 127.0.0.1 40000 8080\r\n")
}

/// A v2 `PROXY` header naming `client`, with a NOOP TLV after the addresses.
fn v2(client: SocketAddrV4) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n\x21\x11".to_vec();
    let mut block = client.ip().octets().to_vec();
    block.extend_from_slice(&[127, 0, 0, 1]);
    block.extend_from_slice(&client.port().to_be_bytes());
    block.extend_from_slice(&8080u16.to_be_bytes());
    block.extend_from_slice(&[0x04, 0, 2, 0, 0]);
    out.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&block);
    out
}

/// `roomcast_proxy_header_errors_total{reason}`, scraped from an untrusted address (a trusted
/// one would have to send a header first). Process-wide: other tests may add to it.
async fn header_errors(addr: SocketAddr, reason: &str) -> f64 {
    let request = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (text, _) = exchange([127, 0, 0, 2], addr, request.as_bytes()).await;
    let label = format!("reason=\"{reason}\"");
    text.lines()
        .filter(|l| l.starts_with("roomcast_proxy_header_errors_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// haproxy with `server_options` (and `backend_lines`) in front of a node allowing 2
/// connections per address: two clients from 127.0.0.2 are upgraded, a third is refused, and a
/// client from 127.0.0.3 still gets in. Were the node counting haproxy's address, the bystander
/// would be the third.
async fn per_ip_limit_counts_each_client_behind(server_options: &str, backend_lines: &str) {
    let proxy_protocol = server_options.contains("send-proxy");
    let node = node("127.0.0.1/32", |c| {
        c.limits.max_connections_per_ip = 2;
        c.proxy_protocol = proxy_protocol;
    })
    .await;
    let lb = Haproxy::start_configured(&[node.addr.to_string()], backend_lines, server_options);
    // The health checks carry a header too (v2 LOCAL): the server must be up.
    wait_ready(&lb.base(), 200).await;
    let lb_addr: SocketAddr = ([127, 0, 0, 1], lb.port).into();
    let mut open = Vec::new();
    for i in 0..2 {
        let (status, body, ws) = ws_from([127, 0, 0, 2], lb_addr, &format!("two{i}")).await;
        assert_eq!(status, 101, "client {i} from 127.0.0.2: {body}");
        open.push(ws);
    }
    let (status, body, _) = ws_from([127, 0, 0, 2], lb_addr, "two2").await;
    assert_eq!(status, 429, "the third from 127.0.0.2: {body}");
    assert!(body.contains("too_many_connections"), "{body}");
    let (status, body, ws) = ws_from([127, 0, 0, 3], lb_addr, "three").await;
    assert_eq!(status, 101, "a bystander from 127.0.0.3: {body}");
    open.push(ws);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_send_proxy_v2_per_ip_limits_count_the_real_clients() {
    per_ip_limit_counts_each_client_behind("check send-proxy-v2", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_send_proxy_v1_per_ip_limits_count_the_real_clients() {
    per_ip_limit_counts_each_client_behind("check send-proxy", "").await;
}

/// The same through haproxy's `X-Forwarded-For` (`option forwardfor`), PROXY protocol off: the
/// node counts the client the trusted balancer names in the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_x_forwarded_for_per_ip_limits_count_the_real_clients() {
    per_ip_limit_counts_each_client_behind("check", "option forwardfor").await;
}

/// The request after a header is read whole (nothing of it taken with the header), and the
/// header's address wins over `X-Forwarded-For`, which a trusted proxy's client could set.
#[tokio::test]
async fn the_header_names_the_peer_and_x_forwarded_for_is_not_applied_on_top() {
    let node = node("127.0.0.1/32", |c| c.limits.max_connections_per_ip = 1).await;
    let addr = node.addr;
    let (answer, _) = exchange(
        PROXY,
        addr,
        format!("{}{REQUEST}", v1("198.51.100.9")).as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "v1: {answer}");
    let mut bytes = v2("198.51.100.9:1234".parse().unwrap());
    bytes.extend_from_slice(REQUEST.as_bytes());
    let (answer, _) = exchange(PROXY, addr, &bytes).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "v2: {answer}");

    let proxied = |client: &'static str, xff: &'static str| async move {
        let mut tcp = tcp_from(PROXY, addr).await;
        tcp.write_all(v1(client).as_bytes()).await.unwrap();
        handshake(tcp, addr, client, Some(xff)).await
    };
    let (status, body, _first) = proxied("198.51.100.7", "203.0.113.1").await;
    assert_eq!(status, 101, "{body}");
    let (status, body, _) = proxied("198.51.100.7", "203.0.113.2").await;
    assert_eq!(
        status, 429,
        "the header's client, whatever X-Forwarded-For says: {body}"
    );
    let (status, body, _other) = proxied("198.51.100.8", "203.0.113.1").await;
    assert_eq!(
        status, 101,
        "another client, the same X-Forwarded-For: {body}"
    );
}

#[tokio::test]
async fn a_trusted_peer_without_a_valid_header_is_closed_unanswered_and_counted() {
    let node = node("127.0.0.1/32", |_| {}).await;
    let addr = node.addr;
    let before = header_errors(addr, "invalid").await;
    let mut bad_version = v2("198.51.100.9:1234".parse().unwrap());
    bad_version[12] = 0x31;
    for bytes in [
        REQUEST.as_bytes().to_vec(),
        format!("PROXY TCP4 nonsense\r\n{REQUEST}").into_bytes(),
        format!("PROXY TCP4 198.51.100.9 127.0.0.1 99999 80\r\n{REQUEST}").into_bytes(),
        [&bad_version[..], REQUEST.as_bytes()].concat(),
    ] {
        let (answer, _) = exchange(PROXY, addr, &bytes).await;
        assert_eq!(answer, "", "closed without an answer: {bytes:?}");
    }
    let after = header_errors(addr, "invalid").await;
    assert!(after >= before + 4.0, "{before} -> {after}");
    // The node still serves a proxy that sends its header.
    let (answer, _) = exchange(
        PROXY,
        addr,
        format!("{}{REQUEST}", v1("198.51.100.9")).as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// A direct client cannot spoof: it is never read for a header, so its `PROXY` line is the
/// start of a bad HTTP request.
#[tokio::test]
async fn an_untrusted_peers_proxy_header_is_a_bad_request_not_an_address() {
    let node = node("127.0.0.9/32", |c| c.limits.max_connections_per_ip = 1).await;
    let addr = node.addr;
    let from = [127, 0, 0, 2];
    let mut binary = v2("198.51.100.9:1234".parse().unwrap());
    binary.extend_from_slice(REQUEST.as_bytes());
    for bytes in [
        format!("{}{REQUEST}", v1("198.51.100.9")).into_bytes(),
        binary,
    ] {
        let (answer, _) = exchange(from, addr, &bytes).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            "{answer}"
        );
    }
    // Its own address is what counts: one socket, then refused.
    let (status, body, _open) = ws_from(from, addr, "direct").await;
    assert_eq!(status, 101, "{body}");
    let (status, body, _) = ws_from(from, addr, "direct2").await;
    assert_eq!(status, 429, "{body}");
}

/// The pending-connection cap (connections that have not upgraded yet) charges the client a
/// header names, not the proxy: one client's idle connections cannot use up the proxy's
/// address for everyone, and that client still meets its own cap.
#[tokio::test]
async fn the_pending_cap_charges_the_client_the_header_names() {
    let node = node("127.0.0.1/32", |c| {
        c.limits.max_pending_connections_per_ip = 1
    })
    .await;
    let addr = node.addr;
    let mut idle = tcp_from(PROXY, addr).await;
    idle.write_all(v1("198.51.100.20").as_bytes())
        .await
        .unwrap();
    // Once the node holds the idle one, a second from the same client is refused.
    let deadline = Instant::now() + RECV_TIMEOUT;
    loop {
        let bytes = format!("{}{REQUEST}", v1("198.51.100.20"));
        let (answer, _) = exchange(PROXY, addr, bytes.as_bytes()).await;
        if answer.starts_with("HTTP/1.1 429") {
            assert!(answer.contains("too_many_pending_connections"), "{answer}");
            break;
        }
        assert!(Instant::now() < deadline, "never refused: {answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bytes = format!("{}{REQUEST}", v1("198.51.100.21"));
    let (answer, _) = exchange(PROXY, addr, bytes.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "another client: {answer}"
    );
    drop(idle);
}

/// A proxy connection that sends half a header (or none) and stalls holds its descriptor no
/// longer than `limits.header_timeout_ms`, and is read in its own task: others are served
/// meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_header_is_closed_after_the_header_timeout_while_others_are_served() {
    const TIMEOUT: Duration = Duration::from_millis(1_000);
    let node = node("127.0.0.1/32", |c| {
        c.limits.header_timeout_ms = TIMEOUT.as_millis() as u64;
    })
    .await;
    let addr = node.addr;
    let before = header_errors(addr, "timeout").await;
    let half = tokio::spawn(exchange(PROXY, addr, b"PROXY TCP4 198.51"));
    let half_v2 = tokio::spawn(exchange(PROXY, addr, b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00"));
    let silent = tokio::spawn(exchange(PROXY, addr, b""));
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    let (status, body, _direct) = ws_from([127, 0, 0, 2], addr, "bystander").await;
    assert_eq!(status, 101, "{body}");
    let mut tcp = tcp_from(PROXY, addr).await;
    tcp.write_all(&v2("198.51.100.30:5000".parse().unwrap()))
        .await
        .unwrap();
    let (status, body, _proxied) = handshake(tcp, addr, "proxied", None).await;
    assert_eq!(status, 101, "{body}");
    assert!(
        started.elapsed() < TIMEOUT / 2,
        "others waited {:?}",
        started.elapsed()
    );

    for (name, stalled) in [("half v1", half), ("half v2", half_v2), ("silent", silent)] {
        let (answer, lasted) = stalled.await.unwrap();
        assert_eq!(answer, "", "{name}");
        assert!(
            lasted >= TIMEOUT - Duration::from_millis(50) && lasted < TIMEOUT * 3,
            "{name} lasted {lasted:?}"
        );
    }
    let after = header_errors(addr, "timeout").await;
    assert!(after >= before + 3.0, "{before} -> {after}");
}
