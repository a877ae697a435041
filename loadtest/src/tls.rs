//! TLS for `wss://` targets: one rustls client config per process, verifying servers against
//! the system's trust store or, with `insecure`, not at all; and [`Stream`], the plain or TLS
//! byte stream a WebSocket runs over. Uses no other module of the crate.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

mod insecure;

/// Why TLS could not be set up or completed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "no trusted root certificates on this system ({detail}); install ca-certificates, \
         point SSL_CERT_FILE at a CA bundle, or pass --insecure"
    )]
    NoRoots { detail: String },
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
    #[error("`{host}` is not a valid TLS server name")]
    ServerName { host: String },
    /// The server's certificate did not verify. The hint names both ways out, since a
    /// self-signed staging front end is the usual cause.
    #[error(
        "certificate refused: {0} (self-signed, or signed by a private CA? point \
         SSL_CERT_FILE at that CA, or pass --insecure to skip verification)"
    )]
    Certificate(rustls::Error),
    #[error("TLS handshake: {0}")]
    Handshake(io::Error),
}

impl TlsError {
    /// A short label for counting failures by cause.
    pub fn kind(&self) -> &'static str {
        match self {
            TlsError::Certificate(_) => "tls: certificate",
            _ => "tls",
        }
    }
}

/// The TLS client side, built once per process: loading the trust store per connection would
/// cost a file read and ~150 certificate parses for each of 100k users. A cheap handle.
#[derive(Clone)]
pub struct Tls(TlsConnector);

impl Tls {
    /// Verifies servers against the system's roots (`SSL_CERT_FILE`/`SSL_CERT_DIR` override
    /// them), or, when `insecure`, accepts any certificate: see [`insecure`] for the danger.
    pub fn new(insecure: bool) -> Result<Self, TlsError> {
        // ring is deprecated in rustls 0.23.48 for lacking post-quantum key exchange, which a
        // load test's traffic does not need; aws-lc-rs, which has it, would need cmake here.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?;
        let config = if insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(insecure::AnyCertificate::new(provider)))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(system_roots()?)
                .with_no_client_auth()
        };
        Ok(Self(TlsConnector::from(Arc::new(config))))
    }

    /// Runs the TLS handshake over `tcp` with `host` as the server name (an IP address or a
    /// DNS name, without brackets).
    pub async fn wrap(&self, host: &str, tcp: TcpStream) -> Result<Stream, TlsError> {
        let name = ServerName::try_from(host.to_string()).map_err(|_| TlsError::ServerName {
            host: host.to_string(),
        })?;
        match self.0.connect(name, tcp).await {
            Ok(tls) => Ok(Stream::Tls(Box::new(tls))),
            Err(e) => Err(classify(e)),
        }
    }
}

/// tokio-rustls reports a refused handshake as an `io::Error` carrying the `rustls::Error`;
/// a certificate problem gets its own variant (and hint), anything else stays I/O.
fn classify(e: io::Error) -> TlsError {
    let certificate = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .filter(|r| {
            matches!(
                r,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        })
        .cloned();
    match certificate {
        Some(r) => TlsError::Certificate(r),
        None => TlsError::Handshake(e),
    }
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let detail = if found.errors.is_empty() {
            "none found".to_string()
        } else {
            format!("{:?}", found.errors)
        };
        return Err(TlsError::NoRoots { detail });
    }
    Ok(roots)
}

/// What a WebSocket runs over.
pub enum Stream {
    Plain(TcpStream),
    // Boxed: a TLS session is ~1 KiB, which every plain connection would otherwise carry too
    // (a whole idle user's socket is ~300 bytes besides its buffers).
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
