//! External command-line tools the tests drive (schemathesis, kosoku): found on PATH or in the
//! virtualenv `scripts/test` installs PyPI tools into, and run with a deadline.

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The first of `names` that answers `probe` successfully: each on PATH, then `names[0]` in
/// .tools/venv. Fails with `missing` (which says what the tool is and how to install it).
pub fn find(names: &[&str], probe: &str, missing: &str) -> String {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin");
    let in_venv = venv.join(names[0]).display().to_string();
    let candidates = names.iter().map(|n| (*n).to_owned()).chain([in_venv]);
    for program in candidates {
        let found = Command::new(&program)
            .arg(probe)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return program;
        }
    }
    panic!("{missing}");
}

/// Runs `command` (named `what` in failures) with stdout and stderr in `log`; kills it and
/// fails the test, showing the log, if it runs past `deadline`.
pub fn run_bounded(what: &str, mut command: Command, log: &Path, deadline: Duration) -> ExitStatus {
    let out = std::fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {deadline:?}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
