//! The authentication matrix against a real server: every way a token can be good or bad,
//! where it may travel, room permissions, expiry while connected and refresh, and the origin
//! allow-list. Every refusal has a stable code and reveals nothing more.

mod common;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Client, Ended, Refusal, TestServer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use roomcast::config::JwtAlgorithm;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const SECRET: &str = "a-test-secret-that-is-long-enough-0123456789";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn key_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

fn claims(sub: &str, ttl: i64) -> Value {
    json!({ "sub": sub, "exp": (now() as i64 + ttl) })
}

async fn hs256_server() -> TestServer {
    TestServer::with(|c| {
        c.auth.secret = SECRET.into();
        c.auth.leeway_secs = 0;
    })
    .await
}

async fn connect_token(server: &TestServer, token: &str) -> Result<Client, Refusal> {
    Client::try_connect(format!("ws://{}/ws?token={token}", server.addr)).await
}

fn refused_with(result: Result<Client, Refusal>, status: u16, code: &str) {
    match result {
        Ok(client) => panic!(
            "expected {status} {code}, but connected as {}",
            client.user()
        ),
        Err(refusal) => {
            assert_eq!(refusal.status, status, "{refusal:?}");
            assert_eq!(refusal.body["error"], code, "{refusal:?}");
        }
    }
}

#[tokio::test]
async fn a_valid_token_names_the_user_wherever_it_travels() {
    let server = hs256_server().await;
    let token = hs256(&claims("alice", 60));

    let by_query = connect_token(&server, &token).await.unwrap();
    assert_eq!(by_query.user(), "alice");

    let mut request = format!("ws://{}/ws", server.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    let by_header = Client::try_connect(request).await.unwrap();
    assert_eq!(by_header.user(), "alice");

    // Browsers cannot set headers: the token rides in the subprotocol list, and the server
    // selects `roomcast.v1`, as a browser requires.
    let mut request = format!("ws://{}/ws", server.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("roomcast.v1, bearer.{token}")).unwrap(),
    );
    let by_protocol = Client::try_connect(request).await.unwrap();
    assert_eq!(by_protocol.user(), "alice");
    assert_eq!(by_protocol.protocol.as_deref(), Some("roomcast.v1"));
}

#[tokio::test]
async fn bad_tokens_are_refused_with_a_stable_code() {
    let server = hs256_server().await;
    let t = now() as i64;

    refused_with(
        Client::try_connect(format!("ws://{}/ws", server.addr)).await,
        401,
        "token_missing",
    );
    refused_with(
        connect_token(&server, &hs256(&claims("alice", -30))).await,
        401,
        "token_expired",
    );
    let future = json!({"sub": "alice", "exp": t + 600, "nbf": t + 300});
    refused_with(
        connect_token(&server, &hs256(&future)).await,
        401,
        "token_not_yet_valid",
    );
    // Forged: signed with another secret.
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"not-the-secret-not-the-secret-not-the-secret"),
        &claims("alice", 60),
    );
    refused_with(connect_token(&server, &forged).await, 401, "token_invalid");
    // `alg: none`, unsigned.
    let none = unsigned(&json!({"alg": "none", "typ": "JWT"}), &claims("alice", 60));
    refused_with(connect_token(&server, &none).await, 401, "token_invalid");
    // The right key material under the wrong algorithm (HS384 with the same secret).
    let wrong_alg = sign(
        Algorithm::HS384,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        &claims("alice", 60),
    );
    refused_with(
        connect_token(&server, &wrong_alg).await,
        401,
        "token_invalid",
    );
    // Missing claims: no `sub`, no `exp`; a `sub` that is not a valid user name.
    let no_sub = hs256(&json!({"exp": t + 60}));
    refused_with(connect_token(&server, &no_sub).await, 401, "token_invalid");
    let no_exp = hs256(&json!({"sub": "alice"}));
    refused_with(connect_token(&server, &no_exp).await, 401, "token_invalid");
    let bad_sub = hs256(&json!({"sub": "a b/c", "exp": t + 60}));
    refused_with(connect_token(&server, &bad_sub).await, 401, "token_invalid");
    // Garbage and oversized tokens.
    refused_with(
        connect_token(&server, "not.a.jwt").await,
        401,
        "token_invalid",
    );
    let padding = "x".repeat(5000);
    let big = hs256(&json!({"sub": "alice", "exp": t + 60, "pad": padding}));
    refused_with(connect_token(&server, &big).await, 401, "token_too_large");
    // With authentication on, `?user=` cannot pick a user.
    let token = hs256(&claims("alice", 60));
    refused_with(
        Client::try_connect(format!(
            "ws://{}/ws?user=mallory&token={token}",
            server.addr
        ))
        .await,
        400,
        "user_not_allowed",
    );
    // The refusal never says more than its code.
    let Err(refusal) = connect_token(&server, &forged).await else {
        panic!("forged token accepted")
    };
    assert_eq!(refusal.body["message"], "the token is invalid");
}

fn unsigned(header: &Value, claims: &Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string())
    )
}

#[tokio::test]
async fn rs256_and_es256_verify_with_a_public_key_and_refuse_the_wrong_key() {
    for (alg, config_alg, private, public) in [
        (
            Algorithm::RS256,
            JwtAlgorithm::RS256,
            "rsa_private.pem",
            "rsa_public.pem",
        ),
        (
            Algorithm::ES256,
            JwtAlgorithm::ES256,
            "ec_private.pem",
            "ec_public.pem",
        ),
    ] {
        let server = TestServer::with(|c| {
            c.auth.algorithm = config_alg;
            c.auth.public_key_file = Some(key_path(public));
        })
        .await;
        let pem = std::fs::read(key_path(private)).unwrap();
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        let client = connect_token(&server, &sign(alg, &key, &claims("bob", 60)))
            .await
            .unwrap();
        assert_eq!(client.user(), "bob");
        // An HS256 token using the public key as its secret (the classic confusion attack).
        let public_pem = std::fs::read(key_path(public)).unwrap();
        let confused = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(&public_pem),
            &claims("bob", 60),
        );
        refused_with(
            connect_token(&server, &confused).await,
            401,
            "token_invalid",
        );
    }
}

#[tokio::test]
async fn room_claims_limit_join_and_publish() {
    let server = hs256_server().await;
    let token = hs256(&json!({
        "sub": "carol", "exp": now() + 60,
        "rooms": {"join": ["team:*", "lobby"], "publish": ["team:*"]},
    }));
    let mut carol = connect_token(&server, &token).await.unwrap();
    let denied = carol
        .request(json!({"type": "join", "room": "secret"}))
        .await;
    assert_eq!(denied["type"], "error");
    assert_eq!(denied["code"], "forbidden");
    carol.join("team:red").await;
    carol.join("lobby").await;
    carol.publish("team:red", json!("ok")).await;
    let denied = carol
        .request(json!({"type": "publish", "room": "lobby", "data": 1}))
        .await;
    assert_eq!(denied["code"], "forbidden", "{denied}");
    // The connection stays usable after a refusal.
    assert_eq!(carol.request(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn a_token_expiring_while_connected_closes_the_session_with_4001() {
    let server = hs256_server().await;
    let mut dave = connect_token(&server, &hs256(&claims("dave", 1)))
        .await
        .unwrap();
    let (_, ended) = dave.read_to_end(Duration::from_secs(5)).await;
    assert_eq!(ended, Ended::Closed(4001));
}

#[tokio::test]
async fn refresh_extends_the_session_and_checks_the_new_token() {
    let server = hs256_server().await;
    let mut erin = connect_token(&server, &hs256(&claims("erin", 2)))
        .await
        .unwrap();
    erin.join("lobby").await;

    let wrong_user = erin
        .request(json!({"type": "refresh", "token": hs256(&claims("frank", 60))}))
        .await;
    assert_eq!(wrong_user["code"], "token_wrong_user", "{wrong_user}");
    let expired = erin
        .request(json!({"type": "refresh", "token": hs256(&claims("erin", -10))}))
        .await;
    assert_eq!(expired["code"], "token_expired", "{expired}");
    let forged = erin
        .request(json!({"type": "refresh", "token": "a.b.c"}))
        .await;
    assert_eq!(forged["code"], "token_invalid", "{forged}");

    let reply = erin
        .request(json!({"type": "refresh", "token": hs256(&claims("erin", 60))}))
        .await;
    assert_eq!(reply["type"], "refreshed", "{reply}");
    assert!(reply["expires_at"].as_u64().unwrap() >= now() + 59);
    // Past the first token's expiry the session lives on, rooms intact.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(erin.publish("lobby", json!("still here")).await, 1);
}

/// A refresh to a token that expires sooner than the current one moves the session's end
/// forward at once: the session closes with 4001 at the new `expires_at`, not at the next
/// heartbeat tick (25 s later, before the timer followed refresh).
#[tokio::test]
async fn a_refresh_to_an_earlier_expiry_closes_the_session_at_the_new_expiry() {
    let server = hs256_server().await;
    let mut ivan = connect_token(&server, &hs256(&claims("ivan", 60)))
        .await
        .unwrap();
    let reply = ivan
        .request(json!({"type": "refresh", "token": hs256(&claims("ivan", 2))}))
        .await;
    assert_eq!(reply["type"], "refreshed", "{reply}");
    let expires_at = reply["expires_at"].as_u64().unwrap();
    let (_, ended) = ivan.read_to_end(Duration::from_secs(6)).await;
    assert_eq!(ended, Ended::Closed(4001));
    let late_ms = roomcast_now_ms().saturating_sub(expires_at * 1000);
    assert!(late_ms < 1500, "closed {late_ms} ms after expires_at");
}

fn roomcast_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn origins_outside_the_allow_list_are_refused() {
    let server = TestServer::with(|c| {
        c.auth.allowed_origins = vec!["https://chat.example.com".into()];
    })
    .await;
    let with_origin = |origin: &str| {
        let mut request = server.ws_url("gina").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("origin", HeaderValue::from_str(origin).unwrap());
        request
    };
    Client::try_connect(with_origin("https://chat.example.com"))
        .await
        .unwrap();
    refused_with(
        Client::try_connect(with_origin("https://evil.example.net")).await,
        403,
        "origin_forbidden",
    );
    // Non-browser clients send no Origin and are not affected.
    Client::try_connect(server.ws_url("gina")).await.unwrap();
}

#[test]
fn bad_auth_configuration_names_the_key() {
    let mut config = roomcast::Config::default();
    config.auth.secret = "short".into();
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("auth.secret"), "{err}");

    // The key file is read when the node starts (validation does no I/O): a missing file, or
    // one that is not a key of that kind, stops it naming the key.
    let mut config = roomcast::Config::default();
    config.auth.algorithm = JwtAlgorithm::RS256;
    config.auth.public_key_file = Some("/nonexistent/key.pem".into());
    let err = roomcast::auth::Verifier::new(&config.auth)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("auth.public_key_file"), "{err}");

    let mut config = roomcast::Config::default();
    config.auth.algorithm = JwtAlgorithm::ES256;
    config.auth.public_key_file = Some(key_path("README.md"));
    let err = roomcast::auth::Verifier::new(&config.auth)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("auth.public_key_file"), "{err}");
}
