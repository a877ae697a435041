//! A TLS front end on loopback: a throwaway CA and a server certificate it signs for 127.0.0.1
//! and localhost, made with the real `openssl`, and a real haproxy terminating TLS on a free
//! port in front of one node. A second CA, which signed nothing, stands for "some other trust
//! store" so that a refusal does not depend on this machine's roots.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// haproxy with `bind 127.0.0.1:PORT ssl crt …` before one backend; killed when dropped.
pub struct TlsFrontEnd {
    pub port: u16,
    /// The CA that signed the front end's certificate (PEM).
    pub ca: PathBuf,
    /// A CA that did not (PEM).
    pub other_ca: PathBuf,
    child: Child,
    dir: tempfile::TempDir,
}

impl TlsFrontEnd {
    /// Makes the certificates and starts haproxy forwarding to `backend`; returns once it
    /// accepts TCP connections.
    pub fn start(backend: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ca = make_ca(d, "ca");
        let other_ca = make_ca(d, "other-ca");
        let combined = make_server_cert(d);
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "global\n  maxconn 1024\n\
             defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  \
             timeout server 30s\n  timeout tunnel 1h\n\
             frontend tls\n  bind 127.0.0.1:{port} ssl crt {}\n  default_backend node\n\
             backend node\n  server n0 {backend}\n",
            combined.display()
        );
        let cfg = d.join("haproxy.cfg");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(d.join("haproxy.log")).unwrap();
        let child = Command::new(haproxy())
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting haproxy");
        let mut front = Self {
            port,
            ca,
            other_ca,
            child,
            dir,
        };
        front.wait_listening();
        front
    }

    /// The front end's WebSocket URL through `host` (`127.0.0.1` or `localhost`).
    pub fn url(&self, host: &str) -> String {
        format!("wss://{host}:{}/ws", self.port)
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let log = || std::fs::read_to_string(self.dir.path().join("haproxy.log"));
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("haproxy exited ({status}): {:?}", log());
            }
            assert!(
                Instant::now() < deadline,
                "haproxy did not listen on {} within 10 s: {:?}",
                self.port,
                log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TlsFrontEnd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// haproxy from PATH, or Debian's /usr/sbin, which a non-root PATH often lacks.
fn haproxy() -> PathBuf {
    let on_path = Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if on_path {
        return "haproxy".into();
    }
    let sbin = PathBuf::from("/usr/sbin/haproxy");
    assert!(
        sbin.exists(),
        "this test needs haproxy (with OpenSSL) on PATH or at /usr/sbin/haproxy; \
         `scripts/test` installs it (apt-get install haproxy)"
    );
    sbin
}

/// A self-signed CA certificate `NAME.pem` (key `NAME.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    openssl(
        dir,
        &format!(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
             -subj /CN=loadtest-{name} -keyout {name}.key -out {name}.pem"
        ),
    );
    dir.join(format!("{name}.pem"))
}

/// A server certificate for 127.0.0.1 and localhost signed by `ca`, with its key appended
/// (`server-combined.pem`, the form haproxy's `crt` takes).
fn make_server_cert(dir: &Path) -> PathBuf {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        "req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 \
         -keyout server.key -out server.csr",
    );
    openssl(
        dir,
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
         -extfile server.ext -out server.pem",
    );
    let combined = dir.join("server-combined.pem");
    let mut text = std::fs::read_to_string(dir.join("server.pem")).unwrap();
    text.push_str(&std::fs::read_to_string(dir.join("server.key")).unwrap());
    std::fs::write(&combined, text).unwrap();
    combined
}

/// Runs `openssl` in `dir` with `args` (split on whitespace; none contains a space).
fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("this test needs openssl on PATH: {e}"));
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
