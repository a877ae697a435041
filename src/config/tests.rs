// figment::Jail closures must return figment::Error, which is large; that is its API.
#![allow(clippy::result_large_err)]

use super::*;
use std::io::Write;

/// Loads `toml` as the config file with no environment layer.
fn load(toml: &str) -> Result<Config, ConfigError> {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(toml.as_bytes()).unwrap();
    Config::load_with_env(Some(file.path()), &Overrides::default(), no_env())
}

fn no_env() -> Env {
    Env::raw().only(&[])
}

#[test]
fn defaults_are_valid_and_documented_values() {
    let c = Config::default();
    c.validate().unwrap();
    assert_eq!(c.limits.max_message_bytes, 65536);
    assert_eq!(c.heartbeat.interval_ms, 25_000);
    assert_eq!(c.history.size, 100);
    assert_eq!(c.history.ttl_secs, 300);
}

#[test]
fn the_shipped_default_file_matches_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_FILE);
    let loaded = Config::load_with_env(Some(&path), &Overrides::default(), no_env()).unwrap();
    assert_eq!(loaded, Config::default());
}

#[test]
fn file_values_override_defaults() {
    let c = load("[limits]\nmax_rooms_per_connection = 7\n").unwrap();
    assert_eq!(c.limits.max_rooms_per_connection, 7);
}

#[test]
fn errors_name_the_key() {
    let err = load("[limits]\nmax_message_bytes = \"big\"\n").unwrap_err();
    assert!(
        err.to_string().contains("limits.max_message_bytes"),
        "{err}"
    );
    let err = load("[limits]\nmax_mesage_bytes = 5\n").unwrap_err();
    assert!(err.to_string().contains("max_mesage_bytes"), "{err}");
    let err = load("[heartbeat]\ninterval_ms = 100\ntimeout_ms = 50\n").unwrap_err();
    assert!(err.to_string().contains("heartbeat.timeout_ms"), "{err}");
    let err = load("[socket]\nwrite_delay_ms = 5000\n").unwrap_err();
    assert!(err.to_string().contains("socket.write_delay_ms"), "{err}");
    let err = load("[socket]\nread_buffer_bytes = 65537\n").unwrap_err();
    assert!(
        err.to_string().contains("socket.read_buffer_bytes"),
        "{err}"
    );
    let err = load("[socket]\nwrite_buffer_bytes = 0\n").unwrap_err();
    assert!(
        err.to_string().contains("socket.write_buffer_bytes"),
        "{err}"
    );
    for (toml, key) in [
        (
            "[limits]\noutbound_queue_bytes = 100000\n",
            "limits.outbound_queue_bytes",
        ),
        (
            "[limits]\nwrite_timeout_ms = 0\n",
            "limits.write_timeout_ms",
        ),
        (
            "[limits]\nmessage_timeout_ms = 0\n",
            "limits.message_timeout_ms",
        ),
        (
            "[limits]\nmax_pending_connections_per_ip = 0\n",
            "limits.max_pending_connections_per_ip",
        ),
        (
            "[limits]\nheader_timeout_ms = 0\n",
            "limits.header_timeout_ms",
        ),
        ("[limits]\ndirect_burst = 0\n", "limits.direct_burst"),
        ("[api]\nbody_timeout_ms = 0\n", "api.body_timeout_ms"),
        ("[history]\nmax_bytes = 1000\n", "history.max_bytes"),
        ("[history]\nmax_room_bytes = 0\n", "history.max_room_bytes"),
    ] {
        let err = load(toml).unwrap_err();
        assert!(err.to_string().contains(key), "{toml}: {err}");
    }
    let err = load("trusted_proxies = [\"10.0.0.0/40\"]\n").unwrap_err();
    assert!(err.to_string().contains("trusted_proxies"), "{err}");
    let err = load("proxy_protocol = true\n").unwrap_err();
    assert!(err.to_string().contains("`proxy_protocol`"), "{err}");
    let c = load("proxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\"]\n").unwrap();
    assert!(c.proxy_protocol);
    let err = load("serve_client = false\n").unwrap_err();
    assert!(err.to_string().contains("serve_client"), "{err}");
    let err = load("broker = \"carrier-pigeon\"\n").unwrap_err();
    assert!(err.to_string().contains("broker"), "{err}");
    let err = load("listen = \"nowhere\"\n").unwrap_err();
    assert!(err.to_string().contains("listen"), "{err}");
}

#[test]
fn publish_batching_values_are_checked() {
    let redis = |body: &str| load(&format!("broker = \"redis\"\n[redis]\n{body}\n"));
    let c = redis("publish_batch_max = 1\npublish_batches_in_flight = 4").unwrap();
    assert_eq!(c.redis.publish_batch_max, 1);
    assert_eq!(c.redis.publish_batches_in_flight, 4);
    for (body, key) in [
        ("publish_batch_max = 0", "redis.publish_batch_max"),
        ("publish_batch_max = 1025", "redis.publish_batch_max"),
        ("publish_batch_max = -1", "redis.publish_batch_max"),
        ("publish_batch_max = \"many\"", "redis.publish_batch_max"),
        (
            "publish_batches_in_flight = 0",
            "redis.publish_batches_in_flight",
        ),
        (
            "publish_batches_in_flight = 65",
            "redis.publish_batches_in_flight",
        ),
        ("publish_batch_window_us = 150", "publish_batch_window_us"),
    ] {
        let err = redis(body).unwrap_err();
        assert!(err.to_string().contains(key), "{body}: {err}");
    }
}

#[test]
fn env_overrides_file_and_flags_override_env() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "c.toml",
            "listen = \"127.0.0.1:1000\"\n[limits]\ninbound_burst = 5\n",
        )?;
        jail.set_env("ROOMCAST_LIMITS__INBOUND_BURST", "9");
        jail.set_env("ROOMCAST_LISTEN", "127.0.0.1:2000");
        let flags = Overrides {
            listen: Some("127.0.0.1:3000".parse().unwrap()),
            ..Overrides::default()
        };
        let c = Config::load(Some(Path::new("c.toml")), &flags).map_err(|e| e.to_string())?;
        assert_eq!(c.limits.inbound_burst, 9);
        assert_eq!(c.listen.port(), 3000);
        Ok(())
    });
}

#[test]
fn environment_variables_that_name_no_key_are_left_out_and_reported() {
    figment::Jail::expect_with(|jail| {
        // What Kubernetes sets for a Service named roomcast.
        jail.set_env("ROOMCAST_PORT", "tcp://10.0.0.7:8080");
        jail.set_env("ROOMCAST_SERVICE_HOST", "10.0.0.7");
        jail.set_env("ROOMCAST_PORT_8080_TCP_ADDR", "10.0.0.7");
        jail.set_env("ROOMCAST_LIMITS__INBOUND_BURST", "9");
        jail.set_env("ROOMCAST_NODE_ID", "n-k8s");
        let c = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
        assert_eq!(c.limits.inbound_burst, 9);
        assert_eq!(
            c.node_id.as_deref(),
            Some("n-k8s"),
            "an Option field is a key too"
        );
        let unknown = Config::unknown_env_vars();
        for name in [
            "ROOMCAST_PORT",
            "ROOMCAST_PORT_8080_TCP_ADDR",
            "ROOMCAST_SERVICE_HOST",
        ] {
            assert!(unknown.iter().any(|u| u == name), "{unknown:?}");
        }
        assert!(
            !unknown
                .iter()
                .any(|u| u.contains("INBOUND_BURST") || u.contains("NODE_ID"))
        );
        Ok(())
    });
}

#[test]
fn a_missing_config_file_is_an_error() {
    let err = Config::load(
        Some(Path::new("/nonexistent/roomcast.toml")),
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ConfigError::MissingFile(_)));
}

/// The PROXY protocol set up as docker-compose.yml does, through the environment.
#[test]
fn proxy_protocol_and_its_trusted_proxies_load_from_the_environment() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("ROOMCAST_TRUSTED_PROXIES", r#"["172.28.0.10"]"#);
        jail.set_env("ROOMCAST_PROXY_PROTOCOL", "true");
        let c = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
        assert!(c.proxy_protocol);
        assert_eq!(c.trusted_proxies, ["172.28.0.10"]);
        Ok(())
    });
}

#[test]
fn rebalance_settings_are_checked() {
    let err = load("[rebalance]\nmargin_percent = 150\n").unwrap_err();
    assert!(
        err.to_string().contains("rebalance.margin_percent"),
        "{err}"
    );
    let err = load("[rebalance]\nmax_shed_per_sec = 0\n").unwrap_err();
    assert!(
        err.to_string().contains("rebalance.max_shed_per_sec"),
        "{err}"
    );
}

#[test]
fn proxies_load_from_toml_and_the_secret_from_the_environment() {
    let toml = r#"
        [proxy]
        on_failure = "allow"
        [proxy.connect]
        url = "http://127.0.0.1:9000/connect"
        [[proxy.join]]
        room = "team:*"
        url = "http://127.0.0.1:9000/join"
        timeout_ms = 250
        [[proxy.publish]]
        room = "chat:*"
        url = "https://backend.example.com/publish"
    "#;
    let err = load(toml).unwrap_err();
    assert!(err.to_string().contains("`proxy.secret`"), "{err}");
    figment::Jail::expect_with(|jail| {
        jail.create_file("proxied.toml", toml)?;
        jail.set_env("ROOMCAST_PROXY__SECRET", "s".repeat(32));
        let c = Config::load(Some(Path::new("proxied.toml")), &Overrides::default()).unwrap();
        assert_eq!(c.proxy.on_failure, OnFailure::Allow);
        assert_eq!(c.proxy.join[0].timeout_ms, 250);
        assert_eq!(c.proxy.publish[0].timeout_ms, 1000, "the default");
        assert_eq!(c.proxy.secret.as_deref(), Some(&*"s".repeat(32)));
        Ok(())
    });
}
