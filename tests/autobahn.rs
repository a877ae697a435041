//! Conformance of roomcast's own WebSocket framing (src/ws: handshake, decoder, writes, close
//! sequences) against the Autobahn testsuite's cases, driven by kosoku (PyPI): a runner that
//! executes Autobahn's own case files under Python 3 and writes Autobahn's report format.
//! Autobahn's `wstest` (PyPI `autobahntestsuite`, 25.10.1 included) runs on Python 2.7 only.
//!
//! The cases expect an echo server; `roomcast::ws::echo` is one on the same framing layer as
//! `/ws`. `scripts/test` installs kosoku (into .tools/venv) when it is missing; without it this
//! test fails, it never skips.
//!
//! `ROOMCAST_AUTOBAHN_REPORT=dir` keeps the suite's report (index.html, one page per case);
//! `ROOMCAST_AUTOBAHN_FULL=1` runs every compression case kosoku can judge (about 15 min), for
//! changes to src/ws/deflate.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The case groups run whole, with their number of cases: framing (1), pings and pongs (2),
/// reserved bits (3), opcodes (4), fragmentation (5), UTF-8 (6), closing (7), limits and
/// performance (9, messages up to 16 MiB), and auto-fragmentation (10).
const GROUPS: &[(u32, usize)] = &[
    (1, 16),
    (2, 11),
    (3, 7),
    (4, 10),
    (5, 20),
    (6, 145),
    (7, 37),
    (9, 54),
    (10, 1),
];

/// permessage-deflate (12.*, 13.*): subgroups, and the cases run of each. Every case echoes
/// 1,000 messages of one size (.1-.10: 16 B to 128 KiB whole; .11-.18: 8 to 128 KiB in frames
/// of 256 B to 32 KiB); all 216 took 14 min here (851 s, two at a time, debug build), so each
/// subgroup runs a few sizes: 16 B and 1 KiB whole and 8 KiB in 256-byte frames (the last two
/// fill context mode's 1 KiB window), and where the server compresses with zlib-rs (shared
/// mode, optimized even in a debug build, see Cargo.toml) also 16 KiB whole and in 256-byte
/// frames (16 KiB is one step of the capped inflate of what the client sends; past it the next
/// step starts). roomcast's own context encoder is unoptimized here: 16 KiB messages through it
/// doubled the run. The echo runs in context mode, and a client that refuses context takeover
/// gets shared compressions, so both modes are checked.
///
/// kosoku 0.1.0 cannot judge a message the server sends uncompressed on a compressed connection
/// (it hands it to the case as a `str`, whose SHA-1 check then raises "Strings must be encoded
/// before hashing": ERROR). RFC 7692 lets a server send any message uncompressed, and roomcast
/// does so in shared mode when compression would not make it shorter or the client's window is
/// too small for a shared compression; those cases are left out, as each line says.
const COMPRESSION: &[(&[&str], &[u32])] = &[
    // JSON, a bitmap, Faust (sent as binary), HTML, a PDF: context mode compresses everything.
    (&["12.1", "12.2", "12.3", "12.4", "12.5"], &[1, 4, 11]),
    // Offers that allow context takeover, with any window, 2^9, 2^15: context mode.
    (&["13.1", "13.3", "13.4"], &[1, 4, 11]),
    // server_no_context_takeover offered (window 2^15 or any): shared; 16 and 64 B go
    // uncompressed.
    (&["13.2", "13.6"], &[4, 7, 11, 12]),
    // server_no_context_takeover and a window of 2^9: shared only up to 512 bytes (256 B here).
    (&["13.5", "13.7"], &[3]),
];

/// With ROOMCAST_AUTOBAHN_FULL=1 (about 15 min): every compression case kosoku can judge, 178
/// of 216, by the same rules as [`COMPRESSION`].
const COMPRESSION_FULL: &[(&[&str], &[u32])] = &[
    (
        &[
            "12.1", "12.2", "12.3", "12.4", "12.5", "13.1", "13.3", "13.4",
        ],
        &[
            1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
        ],
    ),
    (
        &["13.2", "13.6"],
        &[3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18],
    ),
    (&["13.5", "13.7"], &[3]),
];

/// The compression cases run, by id.
fn compression_cases() -> Vec<String> {
    let mut ids = Vec::new();
    for (subgroups, cases) in if full_run() {
        COMPRESSION_FULL
    } else {
        COMPRESSION
    } {
        for subgroup in *subgroups {
            ids.extend(cases.iter().map(|case| format!("{subgroup}.{case}")));
        }
    }
    ids
}

/// What a case may end with. `behavior`: OK; NON-STRICT, which the suite gives for a SHOULD
/// not met (e.g. failing an invalid UTF-8 message only once a whole frame has arrived rather
/// than at the first bad byte); INFORMATIONAL, for cases that only record what the server did.
/// `behaviorClose`: OK, or INFORMATIONAL. Everything else (FAILED, UNIMPLEMENTED, WRONG CODE,
/// UNCLEAN, FAILED BY CLIENT) fails the test.
const ACCEPTED_BEHAVIOR: &[&str] = &["OK", "NON-STRICT", "INFORMATIONAL"];
const ACCEPTED_CLOSE: &[&str] = &["OK", "INFORMATIONAL"];

/// The runner is killed (and the test fails) past this, which only a stuck case could reach: a
/// run took 22-24 s here, two cases at a time on two cores (20 CPU-seconds, the echo's and
/// kosoku's together), and a full one (ROOMCAST_AUTOBAHN_FULL=1) about 15 min.
const DEADLINE: Duration = Duration::from_secs(300);
const DEADLINE_FULL: Duration = Duration::from_secs(1800);

fn full_run() -> bool {
    std::env::var_os("ROOMCAST_AUTOBAHN_FULL").is_some_and(|v| v == "1")
}

/// The echo endpoint's message limit: the suite's largest message is 16 MiB (9.1.6, 9.2.6).
const MAX_MESSAGE_BYTES: usize = 32 << 20;

/// The kosoku command: on PATH, or in the virtualenv `scripts/test` installs Python tools into.
fn kosoku() -> String {
    common::tools::find(
        &["kosoku"],
        "-h",
        "kosoku is not installed: this test needs the `kosoku` command (PyPI), the Autobahn \
         testsuite's cases under Python 3; `scripts/test` installs it (into .tools/venv) when it \
         is missing",
    )
}

/// Runs `command` with its output in `log`, killing it after the deadline. Its exit code is
/// not read: it is 1 whenever a case fails, which the report says in detail.
fn run_bounded(command: Command, log: &Path) {
    let deadline = if full_run() { DEADLINE_FULL } else { DEADLINE };
    common::tools::run_bounded("kosoku", command, log, deadline);
}

/// One case's verdict, from the report's index.
struct Verdict {
    behavior: String,
    close: String,
    remote_close_code: Option<u64>,
    duration_ms: u64,
    /// The case's own report file, beside the index.
    report: String,
}

/// Reads `index.json` (agent → case id → verdict), keyed by case id.
fn read_index(outdir: &Path) -> BTreeMap<String, Verdict> {
    let path = outdir.join("index.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("no report at {}: {err}", path.display()));
    let index: Value = serde_json::from_str(&text).expect("index.json is JSON");
    let mut cases = BTreeMap::new();
    for agent in index.as_object().expect("agents").values() {
        for (id, case) in agent.as_object().expect("cases") {
            let field = |name: &str| case[name].as_str().unwrap_or("?").to_owned();
            cases.insert(
                id.clone(),
                Verdict {
                    behavior: field("behavior"),
                    close: field("behaviorClose"),
                    remote_close_code: case["remoteCloseCode"].as_u64(),
                    duration_ms: case["duration"].as_u64().unwrap_or(0),
                    report: field("reportfile"),
                },
            );
        }
    }
    cases
}

/// Case ids compare by number: 9.10.1 after 9.9.1.
fn case_key(id: &str) -> Vec<u32> {
    id.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// One line per group: its cases' verdicts counted, and the time they took.
fn summary(cases: &BTreeMap<String, Verdict>) -> String {
    let mut groups: BTreeMap<u32, (BTreeMap<&str, usize>, u64)> = BTreeMap::new();
    for (id, verdict) in cases {
        let group = groups.entry(case_key(id)[0]).or_default();
        let accepted = ACCEPTED_CLOSE.contains(&verdict.close.as_str());
        let label = if accepted {
            verdict.behavior.as_str()
        } else {
            "FAILED (close)"
        };
        *group.0.entry(label).or_default() += 1;
        group.1 += verdict.duration_ms;
    }
    let mut out = String::new();
    for (group, (counts, ms)) in groups {
        let counts: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
        out += &format!(
            "  {group}.*: {} in {:.1} s\n",
            counts.join(", "),
            ms as f64 / 1000.0
        );
    }
    out
}

/// What the case's report says of its verdicts: the suite's `result` and `resultClose` prose.
fn why(outdir: &Path, verdict: &Verdict) -> String {
    let text = std::fs::read_to_string(outdir.join(&verdict.report)).unwrap_or_default();
    let case: Value = serde_json::from_str(&text).unwrap_or_default();
    let prose = |name: &str| case[name].as_str().unwrap_or("?").to_owned();
    format!("{} / {}", prose("result"), prose("resultClose"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_cases_pass_against_the_framing_layer() {
    let program = kosoku();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = roomcast::Config::default();
    config.limits.max_message_bytes = MAX_MESSAGE_BYTES;
    config.compression.mode = roomcast::config::CompressionMode::Context;
    config.compression.min_bytes = 0;
    let echo = roomcast::ws::echo::router(&config);
    let server = tokio::spawn(async move { axum::serve(listener, echo).await });

    let work = tempfile::tempdir().unwrap();
    // The report (index.html and one JSON and HTML file per case) goes to a temporary folder,
    // or to ROOMCAST_AUTOBAHN_REPORT to keep it.
    let outdir = std::env::var_os("ROOMCAST_AUTOBAHN_REPORT")
        .map_or_else(|| work.path().join("report"), Into::into);
    let log = work.path().join("kosoku.log");
    let mut command = Command::new(&program);
    command
        .current_dir(work.path())
        .arg("--mode")
        .arg("fuzzingclient")
        // Two cases at a time halve the run (several cases wait on purpose, 5.19 and 6.4.x a
        // second or more); no case depends on another.
        .args(["--parallelism", "2"])
        .arg("--outdir")
        .arg(&outdir);
    for (group, _) in GROUPS {
        command.args(["--include", &format!("{group}.*")]);
    }
    for id in compression_cases() {
        command.args(["--include", &id]);
    }
    command.arg(format!("ws://{addr}/"));
    let started = Instant::now();
    tokio::task::spawn_blocking({
        let log = log.clone();
        move || run_bounded(command, &log)
    })
    .await
    .unwrap();
    let took = started.elapsed();
    server.abort();

    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let cases = read_index(&outdir);
    println!("kosoku ran {} cases in {took:.1?}:", cases.len());
    println!("{}", summary(&cases));
    let mut failed: Vec<(&String, &Verdict)> = cases
        .iter()
        .filter(|(_, v)| {
            !ACCEPTED_BEHAVIOR.contains(&v.behavior.as_str())
                || !ACCEPTED_CLOSE.contains(&v.close.as_str())
        })
        .collect();
    failed.sort_by_key(|(id, _)| case_key(id));
    let failures: Vec<String> = failed
        .iter()
        .map(|(id, v)| {
            format!(
                "  {id}: behavior {}, close {}, server's close code {:?}\n    {}",
                v.behavior,
                v.close,
                v.remote_close_code,
                why(&outdir, v)
            )
        })
        .collect();
    for &(group, count) in GROUPS {
        let ran = cases.keys().filter(|id| case_key(id)[0] == group).count();
        assert_eq!(
            ran, count,
            "cases of group {group} run; kosoku said:\n{output}"
        );
    }
    assert!(
        failures.is_empty(),
        "{} Autobahn cases failed (the whole report is kept with ROOMCAST_AUTOBAHN_REPORT=dir):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
