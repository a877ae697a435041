//! Parsing, validation (each rule's key and message) and room placement.

use super::*;

#[test]
fn unknown_key_is_named() {
    let err = Scenario::from_toml("userz = 5\n").unwrap_err().to_string();
    assert!(err.contains("userz"), "{err}");
}

#[test]
fn wrong_type_is_named() {
    let err = Scenario::from_toml("users = \"many\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("users"), "{err}");
}

#[test]
fn invalid_value_is_named() {
    let err = Scenario::from_toml("churn = 2.0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`churn`"), "{err}");
    let err = Scenario::from_toml("urls = [\"http://10.1.2.3:80/ws\"]\n").unwrap_err();
    assert!(
        err.to_string().contains("not a ws:// or wss:// URL"),
        "{err}"
    );
    // Any host, either scheme.
    let s = Scenario::from_toml("urls = [\"ws://10.1.2.3/ws\", \"wss://example.com/ws\"]\n");
    assert!(s.is_ok(), "{s:?}");
}

#[test]
fn placement_fills_groups_in_order() {
    let s = Scenario::from_toml(
        "users = 10\n[[rooms]]\ncount = 2\nsize = 3\npublishers = 1\n[[rooms]]\ncount = 1\nsize = 2\n",
    )
    .unwrap();
    let p: Vec<_> = (0..10).map(|i| s.placement(i)).collect();
    assert_eq!(
        p[0],
        Some(Placement {
            group: 0,
            room: 0,
            publishes: true
        })
    );
    assert_eq!(
        p[1],
        Some(Placement {
            group: 0,
            room: 1,
            publishes: true
        })
    );
    assert_eq!(
        p[2],
        Some(Placement {
            group: 0,
            room: 1,
            publishes: false
        })
    );
    assert_eq!(
        p[3],
        Some(Placement {
            group: 0,
            room: 0,
            publishes: false
        })
    );
    assert_eq!(
        p[6],
        Some(Placement {
            group: 1,
            room: 0,
            publishes: true
        })
    );
    assert_eq!(p[8], None);
}

#[test]
fn rooms_are_full_and_span_urls() {
    let s = Scenario::from_toml(
        "users = 24
[[rooms]]
count = 4
size = 6
",
    )
    .unwrap();
    let mut members = vec![Vec::new(); 4];
    for i in 0..24 {
        members[s.placement(i).unwrap().room as usize].push(i);
    }
    for m in &members {
        assert_eq!(m.len(), 6);
        // With two URLs (user i goes to URL i % 2), every room has members on both.
        assert!(
            m.iter().any(|i| i % 2 == 0) && m.iter().any(|i| i % 2 == 1),
            "{m:?}"
        );
    }
}

#[test]
fn jwt_secret_from_the_file_or_the_flag() {
    let mut s = Scenario::from_toml("jwt_secret = \"from-the-file\"\n").unwrap();
    assert_eq!(s.jwt_secret.as_deref(), Some("from-the-file"));
    assert!(s.credentials().is_some());
    s.apply(&Overrides {
        jwt_secret: Some("from-the-flag".into()),
        ..Overrides::default()
    })
    .unwrap();
    assert_eq!(s.jwt_secret.as_deref(), Some("from-the-flag"));
    assert!(Scenario::default().credentials().is_none());
    let err = Scenario::from_toml("jwt_secret = \"\"\n").unwrap_err();
    assert!(err.to_string().contains("`jwt_secret`"), "{err}");
}

#[test]
fn too_many_users_per_worker_is_refused() {
    let err = Scenario::from_toml("users = 100000\nworkers = 2\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`workers`"), "{err}");
    assert_eq!(
        Scenario::from_toml("users = 100000\n")
            .unwrap()
            .worker_count(),
        7
    );
}

/// Asserts each scenario is refused with `scenario key `key`: rule`. Pins what a user sees
/// for a bad value, whatever shape the checks take.
fn assert_refused(cases: &[(&str, &str, &str)]) {
    for &(toml, key, rule) in cases {
        let err = Scenario::from_toml(toml).unwrap_err().to_string();
        assert_eq!(err, format!("scenario key `{key}`: {rule}"), "for {toml:?}");
    }
}

#[test]
fn load_rules_name_their_key_just_past_their_bounds() {
    let users = "must be between 1 and 1000000";
    let ramp = "must be > 0 and at most 100000";
    let rate = "must be between 0 and 1000";
    assert_refused(&[
        ("users = 0", "users", users),
        ("users = 1000001", "users", users),
        ("ramp_per_sec = 0.0", "ramp_per_sec", ramp),
        ("ramp_per_sec = nan", "ramp_per_sec", ramp),
        (
            "duration_secs = 86400.5",
            "duration_secs",
            "must be > 0 and at most 86400",
        ),
        (
            "drain_secs = -0.5",
            "drain_secs",
            "must be between 0 and 600",
        ),
        ("publish_per_sec = 1000.5", "publish_per_sec", rate),
        ("direct_per_sec = -1.0", "direct_per_sec", rate),
        (
            "message_bytes = 1048577",
            "message_bytes",
            "must be at most 1048576",
        ),
        ("churn = 1.5", "churn", "must be a fraction between 0 and 1"),
        (
            "churn_down_ms = 600001",
            "churn_down_ms",
            "must be at most 600000",
        ),
    ]);
}

#[test]
fn connection_and_room_rules_name_their_key_just_past_their_bounds() {
    let timeout = "must be between 1 and 120000";
    assert_refused(&[
        ("workers = 65", "workers", "must be at most 64"),
        ("source_ips = 0", "source_ips", "must be between 1 and 254"),
        (
            "source_ips = 255",
            "source_ips",
            "must be between 1 and 254",
        ),
        ("connect_timeout_ms = 0", "connect_timeout_ms", timeout),
        ("connect_timeout_ms = 120001", "connect_timeout_ms", timeout),
        (
            "jwt_secret = \"\"",
            "jwt_secret",
            "must not be empty (leave it out for a node without authentication)",
        ),
        (
            "urls = []",
            "urls",
            "needs at least one ws:// or wss:// URL",
        ),
        (
            "rooms = [{ count = 0, size = 1 }]",
            "rooms",
            "`count` and `size` must be at least 1",
        ),
        (
            "rooms = [{ count = 1, size = 2, publishers = 3 }]",
            "rooms",
            "`publishers` cannot exceed `size`",
        ),
        (
            "users = 20000\nworkers = 1",
            "workers",
            "1 worker(s) for 20000 users exceeds 19000 per process (open-files cap); \
             raise `workers` or set it to 0",
        ),
    ]);
}

#[test]
fn the_first_broken_rule_is_reported_and_the_bounds_themselves_pass() {
    assert_refused(&[
        (
            "users = 0\nchurn = 2.0\nurls = []",
            "users",
            "must be between 1 and 1000000",
        ),
        (
            "source_ips = 0\nrooms = [{ count = 0, size = 1 }]",
            "source_ips",
            "must be between 1 and 254",
        ),
    ]);
    let at_the_bounds = "users = 1000000\ndrain_secs = 0.0\npublish_per_sec = 1000.0\n\
        message_bytes = 1048576\nchurn = 1.0\nchurn_down_ms = 600000\nworkers = 64\n\
        source_ips = 254\nconnect_timeout_ms = 120000\n\
        rooms = [{ count = 1, size = 2, publishers = 2 }]\n";
    Scenario::from_toml(at_the_bounds).unwrap();
}

#[test]
fn the_deflate_bench_scenarios_load_with_their_padding() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    for (name, pad) in [
        ("deflate-chat", PadKind::Words),
        ("deflate-broadcast", PadKind::Words),
        ("deflate-json", PadKind::Json),
        ("deflate-idle", PadKind::X),
    ] {
        let s = Scenario::from_file(&dir.join(format!("{name}.toml"))).unwrap();
        assert_eq!((s.name.as_str(), s.pad, s.deflate), (name, pad, false));
    }
    let s = Scenario::from_toml("pad = \"json\"\ndeflate = true\n").unwrap();
    assert_eq!((s.pad, s.deflate), (PadKind::Json, true));
    let err = Scenario::from_toml("pad = \"lorem\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("pad"), "{err}");
}
