//! JWT keys that rotate: a JWKS served by a real HTTP server on a free loopback port (which the
//! test changes), or a local JWKS file; keys picked by `kid`, a new `kid` fetched on first
//! sight, a removed one refused after the scheduled refresh, a failed fetch keeping the keys,
//! several HS256 secrets at once, and a flood of made-up `kid`s that cannot make the node
//! hammer the issuer.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::{Client, Refusal, TestServer};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use roomcast::config::HsSecret;
use serde_json::{Value, json};

/// A key the test signs with, and the public JWK the issuer publishes for it.
struct Signer {
    kid: &'static str,
    alg: Algorithm,
    key: EncodingKey,
}

impl Signer {
    fn rsa(kid: &'static str) -> Self {
        let pem = std::fs::read(key_path("rsa_private.pem")).unwrap();
        Self::new(
            kid,
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&pem).unwrap(),
        )
    }

    fn ec(kid: &'static str) -> Self {
        let pem = std::fs::read(key_path("ec_private.pem")).unwrap();
        Self::new(
            kid,
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&pem).unwrap(),
        )
    }

    fn ed25519(kid: &'static str) -> Self {
        let pem = std::fs::read(key_path("ed25519_private.pem")).unwrap();
        Self::new(
            kid,
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&pem).unwrap(),
        )
    }

    fn new(kid: &'static str, alg: Algorithm, key: EncodingKey) -> Self {
        Self { kid, alg, key }
    }

    /// The public JWK with this `kid`; with `alg` when `with_alg`, else the key type decides.
    fn jwk(&self, with_alg: bool) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.alg).unwrap();
        jwk.common.key_id = Some(self.kid.into());
        if !with_alg {
            jwk.common.key_algorithm = None;
        }
        serde_json::to_value(jwk).unwrap()
    }

    fn token(&self, sub: &str) -> String {
        self.token_as(self.alg, Some(self.kid), sub)
    }

    fn token_as(&self, alg: Algorithm, kid: Option<&str>, sub: &str) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(Into::into);
        jsonwebtoken::encode(&header, &claims(sub), &self.key).unwrap()
    }
}

fn key_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

fn claims(sub: &str) -> Value {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    json!({ "sub": sub, "exp": now.as_secs() + 60 })
}

fn set(keys: &[Value]) -> Value {
    json!({ "keys": keys })
}

/// An issuer's JWKS endpoint on a free loopback port: `GET /jwks.json` answers the current
/// document (or 500 while `failing`) and counts every request.
struct Issuer {
    addr: SocketAddr,
    state: Arc<IssuerState>,
    task: tokio::task::JoinHandle<()>,
}

struct IssuerState {
    document: Mutex<Value>,
    failing: AtomicBool,
    fetches: AtomicUsize,
}

impl Issuer {
    async fn start(document: Value) -> Self {
        let state = Arc::new(IssuerState {
            document: Mutex::new(document),
            failing: AtomicBool::new(false),
            fetches: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .route("/jwks.json", axum::routing::get(serve_jwks))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state, task }
    }

    fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    fn publish(&self, document: Value) {
        *self.state.document.lock() = document;
    }

    fn fail(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// Waits until the node has fetched more than `seen` times; panics after `limit`.
    async fn wait_for_fetch_after(&self, seen: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.fetches() <= seen {
            assert!(Instant::now() < deadline, "no fetch within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_jwks(State(state): State<Arc<IssuerState>>) -> Response {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    if state.failing.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    axum::Json(state.document.lock().clone()).into_response()
}

async fn node_with_jwks(issuer: &Issuer, refresh_secs: u64, min_refetch_secs: u64) -> TestServer {
    let url = issuer.url();
    TestServer::with(move |c| {
        c.auth.jwks_url = Some(url);
        c.auth.jwks_refresh_secs = refresh_secs;
        c.auth.jwks_min_refetch_secs = min_refetch_secs;
    })
    .await
}

async fn connect(server: &TestServer, token: &str) -> Result<Client, Refusal> {
    Client::try_connect(format!("ws://{}/ws?token={token}", server.addr)).await
}

async fn accepted(server: &TestServer, token: &str, user: &str) {
    match connect(server, token).await {
        Ok(client) => assert_eq!(client.user(), user),
        Err(refusal) => panic!("{user}'s token refused: {refusal:?}"),
    }
}

/// The documented answer to a token no key verifies: 401 `token_invalid`.
async fn refused(server: &TestServer, token: &str) {
    match connect(server, token).await {
        Ok(client) => panic!("connected as {}", client.user()),
        Err(refusal) => {
            assert_eq!(refusal.status, 401, "{refusal:?}");
            assert_eq!(refusal.body["error"], "token_invalid", "{refusal:?}");
        }
    }
}

/// Polls until `token` is refused (`token_invalid`); panics if it is still accepted after
/// `limit`.
async fn refused_within(server: &TestServer, token: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while connect(server, token).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepted after {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    refused(server, token).await;
}

#[tokio::test]
async fn a_new_kid_is_fetched_on_first_sight_and_the_old_one_works_while_published() {
    let (a, b) = (Signer::rsa("key-a"), Signer::ec("key-b"));
    let issuer = Issuer::start(set(&[a.jwk(true)])).await;
    let server = node_with_jwks(&issuer, 300, 60).await;

    accepted(&server, &a.token("alice"), "alice").await;
    assert_eq!(issuer.fetches(), 1, "the fetch at start");

    // The issuer publishes B beside A and starts signing with it: the node has never seen B,
    // fetches once on the first token naming it, and B's users get in at once.
    issuer.publish(set(&[a.jwk(true), b.jwk(true)]));
    accepted(&server, &b.token("bob"), "bob").await;
    assert_eq!(issuer.fetches(), 2, "one fetch for the unknown kid");
    accepted(&server, &b.token("bob"), "bob").await;
    accepted(&server, &a.token("alice"), "alice").await;
    assert_eq!(issuer.fetches(), 2, "known kids fetch nothing");
}

#[tokio::test]
async fn a_removed_kid_is_refused_after_the_scheduled_refresh_and_a_failed_fetch_keeps_the_keys() {
    let (a, b) = (Signer::rsa("key-a"), Signer::ec("key-b"));
    let issuer = Issuer::start(set(&[a.jwk(true), b.jwk(true)])).await;
    let server = node_with_jwks(&issuer, 1, 60).await;
    accepted(&server, &a.token("alice"), "alice").await;
    accepted(&server, &b.token("bob"), "bob").await;

    // Removed: accepted until the schedule (1 s) has fetched the set without it.
    issuer.publish(set(&[b.jwk(true)]));
    refused_within(&server, &a.token("alice"), Duration::from_secs(5)).await;
    accepted(&server, &b.token("bob"), "bob").await;

    // The issuer fails: the node keeps B (and logs and counts the failure).
    issuer.fail(true);
    let seen = issuer.fetches();
    issuer
        .wait_for_fetch_after(seen, Duration::from_secs(5))
        .await;
    accepted(&server, &b.token("bob"), "bob").await;
}

#[tokio::test]
async fn rsa_ec_and_ed25519_jwks_keys_verify_only_their_own_algorithms() {
    let (a, b, c) = (Signer::rsa("rsa"), Signer::ec("ec"), Signer::ed25519("ed"));
    // A without `alg`: its key type allows RS* and PS*. B and C name theirs.
    let issuer = Issuer::start(set(&[a.jwk(false), b.jwk(true), c.jwk(true)])).await;
    let server = node_with_jwks(&issuer, 300, 60).await;
    accepted(&server, &a.token("alice"), "alice").await;
    accepted(
        &server,
        &a.token_as(Algorithm::PS256, Some("rsa"), "alice"),
        "alice",
    )
    .await;
    accepted(&server, &b.token("bob"), "bob").await;
    accepted(&server, &c.token("carol"), "carol").await;

    // B's key under A's kid; an HS256 token whose secret is A's public key (the confusion
    // attack); several keys and no kid.
    refused(
        &server,
        &b.token_as(Algorithm::ES256, Some("rsa"), "mallory"),
    )
    .await;
    let public_pem = std::fs::read(key_path("rsa_public.pem")).unwrap();
    let confused = Signer::new(
        "rsa",
        Algorithm::HS256,
        EncodingKey::from_secret(&public_pem),
    );
    refused(&server, &confused.token("mallory")).await;
    refused(&server, &a.token_as(Algorithm::RS256, None, "alice")).await;
}

#[tokio::test]
async fn a_local_jwks_file_is_read_at_start_on_an_unknown_kid_and_on_schedule() {
    let (a, b) = (Signer::rsa("key-a"), Signer::ed25519("key-b"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let write = |document: Value| {
        // Written aside and renamed, as a config map update is: never read half-written.
        let aside = dir.path().join("jwks.json.new");
        std::fs::write(&aside, document.to_string()).unwrap();
        std::fs::rename(&aside, &path).unwrap();
    };
    write(set(&[a.jwk(true)]));
    let file = path.clone();
    let server = TestServer::with(move |c| {
        c.auth.jwks_file = Some(file);
        c.auth.jwks_refresh_secs = 1;
        c.auth.jwks_min_refetch_secs = 60;
    })
    .await;
    accepted(&server, &a.token("alice"), "alice").await;

    write(set(&[a.jwk(true), b.jwk(true)]));
    accepted(&server, &b.token("bob"), "bob").await;

    // Removed from the file: refused once the schedule has read it again (1 s); the
    // unknown-kid read is spent (B's, under 60 s ago), so only the schedule can do it.
    write(set(&[b.jwk(true)]));
    refused_within(&server, &a.token("alice"), Duration::from_secs(5)).await;
    accepted(&server, &b.token("bob"), "bob").await;
}

#[test]
fn a_missing_or_bad_jwks_file_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let not_jwks = dir.path().join("not-jwks.json");
    std::fs::write(&not_jwks, r#"{"issuer": "x"}"#).unwrap();
    let no_usable_key = dir.path().join("enc-only.json");
    let enc = json!({"kty": "oct", "use": "enc", "kid": "x", "k": "c2VjcmV0"});
    std::fs::write(&no_usable_key, set(&[enc]).to_string()).unwrap();
    for file in [dir.path().join("missing.json"), not_jwks, no_usable_key] {
        let mut config = roomcast::Config::default();
        config.auth.jwks_file = Some(file.clone());
        let err = roomcast::auth::Verifier::new(&config.auth)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("auth.jwks_file"), "{}: {err}", file.display());
    }
    // The binary: exit 2 and the key's name, before binding.
    let child = common::process::spawn_binary(
        &["--listen", "127.0.0.1:0"],
        &[("ROOMCAST_AUTH__JWKS_FILE", "/nonexistent/jwks.json")],
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{:?}", out.status);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("auth.jwks_file"), "{stderr}");
}

const OLD: &str = "the-old-secret-of-at-least-32-bytes-0001";
const NEW: &str = "the-new-secret-of-at-least-32-bytes-0002";
const OTHER: &str = "a-third-secret-never-configured-000003";

fn hs(kid: Option<&str>, secret: &str, sub: &str) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(Into::into);
    let key = EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&header, &claims(sub), &key).unwrap()
}

#[tokio::test]
async fn several_hs256_secrets_are_accepted_during_a_rotation() {
    // With kids: each token is checked against its own secret only.
    let server = TestServer::with(|c| {
        c.auth.secrets = vec![
            HsSecret {
                kid: Some("2025-06".into()),
                secret: NEW.into(),
            },
            HsSecret {
                kid: Some("2025-01".into()),
                secret: OLD.into(),
            },
        ];
    })
    .await;
    accepted(&server, &hs(Some("2025-06"), NEW, "alice"), "alice").await;
    accepted(&server, &hs(Some("2025-01"), OLD, "bob"), "bob").await;
    refused(&server, &hs(Some("2025-01"), NEW, "mallory")).await;
    refused(&server, &hs(Some("2024-01"), OTHER, "mallory")).await;

    // Without kids: `secret` and the kid-less `secrets` are tried in order.
    let server = TestServer::with(|c| {
        c.auth.secret = NEW.into();
        c.auth.secrets = vec![HsSecret {
            kid: None,
            secret: OLD.into(),
        }];
    })
    .await;
    accepted(&server, &hs(None, NEW, "alice"), "alice").await;
    accepted(&server, &hs(None, OLD, "bob"), "bob").await;
    refused(&server, &hs(None, OTHER, "mallory")).await;

    // One secret, as before kids: whatever kid the issuer sets, it is that secret.
    let server = TestServer::with(|c| c.auth.secret = NEW.into()).await;
    accepted(&server, &hs(Some("any"), NEW, "alice"), "alice").await;
    refused(&server, &hs(Some("any"), OTHER, "mallory")).await;
}

/// 200 tokens with made-up kids (validly signed, so only the kid is wrong) in 20 waves within
/// about a second: at most one fetch per `auth.jwks_min_refetch_secs` (default 10 s), all refused,
/// while a connected user and a new one with a good token are served.
#[tokio::test]
async fn a_flood_of_random_kids_fetches_at_most_once_per_min_refetch_interval() {
    // EC: 200 RSA signatures take seconds in a debug build, and only the kid matters here.
    let a = Signer::ec("key-a");
    let issuer = Issuer::start(set(&[a.jwk(true)])).await;
    let server = node_with_jwks(&issuer, 300, 10).await;
    let mut bystander = connect(&server, &a.token("alice")).await.unwrap();
    assert_eq!(issuer.fetches(), 1);

    let tokens: Vec<String> = (0..200)
        .map(|_| {
            let kid = format!("{:016x}", rand::random::<u64>());
            a.token_as(Algorithm::ES256, Some(&kid), "mallory")
        })
        .collect();
    // 20 waves of 10 at once, 50 ms apart: without the bound each wave would fetch.
    let started = Instant::now();
    for wave in tokens.chunks(10) {
        futures_util::future::join_all(wave.iter().map(|token| refused(&server, token))).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "the flood took {elapsed:?}"
    );
    let bound = 1 + 1 + (elapsed.as_secs() / 10) as usize;
    eprintln!(
        "{} JWKS fetches (1 at start) for 200 unknown kids in {elapsed:?}",
        issuer.fetches()
    );
    assert!(
        issuer.fetches() <= bound,
        "{} fetches for 200 unknown kids in {elapsed:?} (bound {bound})",
        issuer.fetches()
    );

    assert_eq!(
        bystander.request(json!({"type": "ping"})).await["type"],
        "pong"
    );
    accepted(&server, &a.token("bob"), "bob").await;
}

/// An issuer that cannot be reached at start: the node starts, refuses tokens, and lets them in
/// once a fetch succeeds (retried every `auth.jwks_min_refetch_secs` after a failure).
#[tokio::test]
async fn with_the_jwks_unreachable_at_start_tokens_are_refused_until_a_fetch_succeeds() {
    let a = Signer::rsa("key-a");
    let issuer = Issuer::start(set(&[a.jwk(true)])).await;
    issuer.fail(true);
    let server = node_with_jwks(&issuer, 300, 1).await;
    refused(&server, &a.token("alice")).await;

    issuer.fail(false);
    let deadline = Instant::now() + Duration::from_secs(5);
    while connect(&server, &a.token("alice")).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "still refused 5 s after the issuer came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
