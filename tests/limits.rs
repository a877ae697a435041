//! Connection limits against abuse: per-IP open connections and connect rate, and the per-user
//! limit, which holds across the cluster with the Redis broker. Each refusal is a 429 with a
//! documented code, and capacity comes back when connections close.

mod common;

use std::time::Duration;

use common::redis::{RedisServer, unique_prefix, use_redis};
use common::{Client, Refusal, TestServer, wait_ready};

fn assert_refused(result: Result<Client, Refusal>, code: &str) {
    match result {
        Ok(client) => panic!("expected 429 {code}, connected as {}", client.user()),
        Err(refusal) => {
            assert_eq!(refusal.status, 429, "{refusal:?}");
            assert_eq!(refusal.body["error"], code, "{refusal:?}");
        }
    }
}

/// Retries `connect` until it succeeds (releases happen in the background); panics after 5 s.
async fn eventually_connects(url: &str) -> Client {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match Client::try_connect(url).await {
            Ok(client) => return client,
            Err(refusal) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "still refused: {refusal:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test]
async fn open_connections_per_ip_are_capped() {
    let server = TestServer::with(|c| c.limits.max_connections_per_ip = 3).await;
    let mut open = Vec::new();
    for i in 0..3 {
        open.push(server.connect(&format!("u{i}")).await);
    }
    assert_refused(
        Client::try_connect(server.ws_url("u3")).await,
        "too_many_connections",
    );
    // Those already connected are untouched.
    assert_eq!(
        open[0].request(serde_json::json!({"type": "ping"})).await["type"],
        "pong"
    );
    open.pop().unwrap().close().await;
    eventually_connects(&server.ws_url("u3")).await;
}

#[tokio::test]
async fn connect_rate_per_ip_is_capped() {
    let server = TestServer::with(|c| {
        c.limits.connect_rate_per_ip = 1;
        c.limits.connect_burst_per_ip = 3;
    })
    .await;
    let mut open = Vec::new();
    for i in 0..3 {
        open.push(server.connect(&format!("u{i}")).await);
    }
    assert_refused(
        Client::try_connect(server.ws_url("u3")).await,
        "connect_rate_limited",
    );
    // The bucket refills at 1 per second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    Client::try_connect(server.ws_url("u3")).await.unwrap();
}

#[tokio::test]
async fn connections_per_user_are_capped_on_one_node() {
    let server = TestServer::with(|c| c.limits.max_connections_per_user = 2).await;
    let first = server.connect("hank").await;
    let _second = server.connect("hank").await;
    assert_refused(
        Client::try_connect(server.ws_url("hank")).await,
        "too_many_sessions",
    );
    // Other users are not affected.
    server.connect("ivy").await;
    first.close().await;
    eventually_connects(&server.ws_url("hank")).await;
}

/// Two nodes on `redis` under `prefix`, allowing 2 sessions per user across both.
async fn capped_nodes(redis: &RedisServer, prefix: &str) -> Vec<TestServer> {
    let mut nodes = Vec::new();
    for i in 0..2 {
        let node = TestServer::with(|c| {
            use_redis(c, redis, prefix);
            c.node_id = Some(format!("n{i}"));
            c.limits.max_connections_per_user = 2;
        })
        .await;
        wait_ready(&node.url(""), 200).await;
        nodes.push(node);
    }
    nodes
}

/// Open sessions keep counting past their lease (1.5 s here): each node renews the leases of
/// all its users, many per call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_leases_are_renewed_while_open() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let nodes = capped_nodes(&redis, &prefix).await;
    let mut open = Vec::new();
    for i in 0..20 {
        open.push(nodes[i % 2].connect(&format!("u{i}")).await);
    }
    open.push(nodes[0].connect("jack").await);
    open.push(nodes[1].connect("jack").await);
    // Past the lease and the keys' 3 s time to live.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for node in &nodes {
        assert_refused(
            Client::try_connect(node.ws_url("jack")).await,
            "too_many_sessions",
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    for i in 0..20 {
        let key = format!("{prefix}:sess:u{i}");
        let live: u64 = redis.query(&["ZCOUNT", &key, &now, "+inf"]).await;
        assert_eq!(live, 1, "u{i}'s session lease");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_user_are_capped_across_the_cluster() {
    let redis = RedisServer::start();
    let nodes = capped_nodes(&redis, &unique_prefix()).await;
    let on_n0 = nodes[0].connect("jack").await;
    let _on_n1 = nodes[1].connect("jack").await;
    // The limit counts sessions on every node, not per node.
    for node in &nodes {
        assert_refused(
            Client::try_connect(node.ws_url("jack")).await,
            "too_many_sessions",
        );
    }
    on_n0.close().await;
    eventually_connects(&nodes[1].ws_url("jack")).await;
}

/// Connects from the loopback address `from` with `X-Forwarded-For: forwarded_for`; the HTTP
/// status of the answer (101 when upgraded). The socket is kept open by returning it.
async fn connect_via(
    addr: std::net::SocketAddr,
    from: [u8; 4],
    forwarded_for: &str,
) -> (u16, Option<impl Sized>) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind((std::net::Ipv4Addr::from(from), 0).into())
        .unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-for", forwarded_for.parse().unwrap());
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((ws, response)) => (response.status().as_u16(), Some(ws)),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            (response.status().as_u16(), None)
        }
        Err(err) => panic!("handshake failed: {err}"),
    }
}

/// Behind a trusted proxy the per-IP limits count the client named in `X-Forwarded-For`: two
/// clients behind one balancer address each get their own allowance. From an untrusted peer the
/// header is ignored and the peer itself is counted, so a client cannot dodge its limit by
/// naming another address. Before, every client behind the balancer shared its one address.
#[tokio::test]
async fn per_ip_limits_count_the_forwarded_client_behind_a_trusted_proxy_only() {
    let server = TestServer::with(|c| {
        c.trusted_proxies = vec!["127.0.0.1".into()];
        c.limits.max_connections_per_ip = 2;
    })
    .await;
    let addr = server.addr;
    let mut open = Vec::new();
    // Through the balancer (127.0.0.1): client .1 twice, then refused; client .2 still fine.
    for _ in 0..2 {
        let (status, ws) = connect_via(addr, [127, 0, 0, 1], "198.51.100.1").await;
        assert_eq!(status, 101);
        open.push(ws);
    }
    let (status, _) = connect_via(addr, [127, 0, 0, 1], "198.51.100.1").await;
    assert_eq!(status, 429, "the third connection of one forwarded client");
    let (status, ws) = connect_via(addr, [127, 0, 0, 1], "198.51.100.2").await;
    assert_eq!(status, 101, "another client behind the same balancer");
    open.push(ws);
    // An untrusted peer (127.0.0.2) naming other addresses is counted as itself.
    for client in ["198.51.100.3", "198.51.100.4"] {
        let (status, ws) = connect_via(addr, [127, 0, 0, 2], client).await;
        assert_eq!(status, 101);
        open.push(ws);
    }
    let (status, _) = connect_via(addr, [127, 0, 0, 2], "198.51.100.5").await;
    assert_eq!(status, 429, "the header of an untrusted peer is ignored");
}
