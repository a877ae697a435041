//! The `roomcast` binary: settle glibc's allocator, parse flags and configuration, set up
//! logging, bind, serve.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use roomcast::config::{Config, LogFormat, Overrides};
use tracing_subscriber::EnvFilter;

/// A real-time WebSocket messaging node.
///
/// Configuration layers: built-in defaults, then config/default.toml (or --config FILE), then
/// ROOMCAST_* environment variables (ROOMCAST_LIMITS__MAX_MESSAGE_BYTES=...), then these flags.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Configuration file (TOML). Without it, config/default.toml is read if present.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Node id shown to clients and in logs.
    #[arg(long)]
    node_id: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    reexec_without_thread_caches();
    let cli = Cli::parse();
    let overrides = Overrides {
        listen: cli.listen,
        node_id: cli.node_id,
        log_format: cli.log_json.then_some(LogFormat::Json),
    };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("roomcast: configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    // The runtime comes after the configuration because `worker_threads` sizes it.
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("roomcast: cannot start the runtime (`worker_threads`): {err}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(config.log_format);
    let unknown = Config::unknown_env_vars();
    if !unknown.is_empty() {
        tracing::warn!(
            variables = %unknown.join(", "),
            "ignoring ROOMCAST_* variables that name no configuration key"
        );
    }
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> ExitCode {
    spawn_memory_trimmer();
    let listen = config.listen;
    let stop = tokio_util::sync::CancellationToken::new();
    let node = match roomcast::server::build(config, &stop) {
        Ok(node) => node,
        Err(roomcast::server::ServerError::Config(err)) => {
            eprintln!("roomcast: configuration error: {err}");
            return ExitCode::from(2);
        }
        Err(err) => {
            eprintln!("roomcast: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match bind(listen) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("roomcast: cannot listen on `listen` = {listen}: {err}");
            return ExitCode::from(2);
        }
    };
    // Handlers go in before the "listening" line: a signal sent as soon as a supervisor sees
    // that line must drain the node, not kill it with the default action.
    let shutdown = match shutdown_signal() {
        Ok(shutdown) => shutdown,
        Err(err) => {
            eprintln!("roomcast: cannot install signal handlers: {err}");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .map_or_else(|_| listen.to_string(), |a| a.to_string());
    // One plain line on stdout so scripts and tests can find the port when `listen` used port 0.
    println!("roomcast listening on {addr}");
    tracing::info!(%addr, broker = ?node.config().broker, "listening");
    match roomcast::server::serve(node, stop, listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(%err, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// Connections the kernel may hold for the node before it accepts them. tokio's `bind` asks for
/// 1,024: when a reconnect storm or a load test's ramp outran a busy node, the queue overflowed
/// (432 overflows in one 10,000-user ramp on a single-threaded node, connects delayed up to 2 s
/// by SYN retries). The kernel caps the figure at `net.core.somaxconn` (docs/operations.md).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds like `TcpListener::bind` (address reuse on, so a restart can take the port while old
/// connections linger in TIME_WAIT), with [`LISTEN_BACKLOG`].
fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// glibc keeps the memory of closed connections in its arenas, so after a crowd leaves the
/// process would stay at its peak size. Trimming every 30 s hands free pages back to the
/// system, so memory follows the number of connections down (docs/BENCHMARKS.md, idle).
fn spawn_memory_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            tick.tick().await;
            // SAFETY: malloc_trim only walks glibc's own heap under its locks; no Rust state.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    });
}

/// What the node asks of glibc's allocator unless the operator set `GLIBC_TUNABLES`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_TUNABLES: &str = "glibc.malloc.tcache_count=0";

/// glibc gives each thread a cache of up to 7 freed chunks per size (tcache), and neither
/// `free` nor `malloc_trim` returns the pages those chunks sit on: after a crowd of 19,000 left,
/// the heap held nothing from the load, yet 3 MB of its pages stayed resident. With the caches
/// off the node came back to its start-up size (8,064 against 8,136 KiB in the memory bench),
/// and the chat and broadcast benches showed no CPU cost (docs/BENCHMARKS.md, memory). glibc reads the setting
/// only when a process starts, so the node re-executes itself once with it, first thing, while
/// it is still one thread. A `GLIBC_TUNABLES` already set, even empty, is left as it is.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn reexec_without_thread_caches() {
    use std::os::unix::process::CommandExt;
    const VAR: &str = "GLIBC_TUNABLES";
    if std::env::var_os(VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    // `exec` returns only if it failed; the node then runs with the caches on.
    let err = command.args(args).env(VAR, MALLOC_TUNABLES).exec();
    eprintln!("roomcast: could not re-execute with {VAR}={MALLOC_TUNABLES}: {err}");
}

/// Installs SIGTERM and SIGINT handlers now; the future resolves on either.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
