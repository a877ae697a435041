//! Property-based fuzzing of the server API from its own OpenAPI document with schemathesis
//! (PyPI): generated valid and invalid requests against a real node must never get a 5xx, and
//! every answer must match the schema documented for its status. `scripts/test` installs
//! schemathesis when it is missing; without it this test fails, it never skips.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::TestServer;

const KEY: &str = "fuzz-api-key-0123456789";

/// Test cases per operation and phase: enough to reach every error path, small enough that the
/// run stays well under a minute on two cores (about 1,500 requests, 15-25 s).
const MAX_EXAMPLES: &str = "100";

/// What every answer is checked for. Beyond no 5xx and the documented body for each status:
/// only documented statuses, content types and headers; invalid input refused; every operation
/// refused without the key; other methods answered 405 with a correct `Allow`. Left out:
/// `positive_data_acceptance`, since OpenAPI cannot say that `since` and `epoch` go together.
const CHECKS: &str = "not_a_server_error,response_schema_conformance,status_code_conformance,\
content_type_conformance,response_headers_conformance,negative_data_rejection,ignored_auth,\
unsupported_method,allow_header_conformance";

/// A fixed seed keeps CI reproducible; set `ROOMCAST_FUZZ_SEED` to explore others.
const DEFAULT_SEED: &str = "20251125";

/// The run is killed (and the test fails) past this.
const DEADLINE: Duration = Duration::from_secs(180);

/// The schemathesis command: on PATH (`schemathesis`, or its short name `st`), or in the
/// virtualenv `scripts/test` installs Python tools into.
fn schemathesis() -> String {
    common::tools::find(
        &["schemathesis", "st"],
        "--version",
        "schemathesis is not installed: this test needs the `schemathesis` command (PyPI); \
         `scripts/test` installs it (into .tools/venv) when it is missing",
    )
}

/// Runs `command` with its output in `log`, killing it after `DEADLINE`; returns whether it
/// exited 0.
fn run_bounded(command: Command, log: &Path) -> bool {
    common::tools::run_bounded("schemathesis", command, log, DEADLINE).success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let program = schemathesis();
    let server = TestServer::with(|c| c.api.keys = vec![KEY.into()]).await;
    common::wait_ready(&server.url(""), 200).await;
    // Its example database (.hypothesis) and any report go here, not into the work tree.
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("schemathesis.log");
    let seed = std::env::var("ROOMCAST_FUZZ_SEED").unwrap_or_else(|_| DEFAULT_SEED.into());
    let mut command = Command::new(&program);
    command
        .current_dir(work.path())
        .env("NO_COLOR", "1")
        .env("COLUMNS", "120")
        .args(["run", &server.url("/api/openapi.json")])
        .args(["--url", &server.url("/api")])
        .args(["--header", &format!("Authorization: Bearer {KEY}")])
        .args(["--checks", CHECKS])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", &seed])
        // One worker: CPython 3.11.7's ast.parse (used by hypothesis) is not thread-safe and
        // fails with "AST constructor recursion depth mismatch" under several (gh-106905).
        .args(["--workers", "1"])
        .args(["--request-timeout", "10"]);
    let started = Instant::now();
    let ok = tokio::task::spawn_blocking({
        let log = log.clone();
        move || run_bounded(command, &log)
    })
    .await
    .unwrap();
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    println!("{output}");
    println!("schemathesis took {:.1?}", started.elapsed());
    assert!(ok, "schemathesis reported failures (output above)");
    server.shutdown().await.unwrap();
}
