//! A TCP proxy between one roomcast node and Redis, so that one node's link can fail while
//! Redis and the other nodes are fine: `stall` holds every byte in both directions (a partition
//! that TCP rides out: the bytes flow again afterwards), `cut` closes every proxied connection
//! and refuses new ones until it ends.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Pass,
    Stall,
    Cut,
}

/// A running proxy; dropping it stops accepting (open connections end with the runtime).
pub struct Proxy {
    pub port: u16,
    state: Arc<watch::Sender<Link>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(watch::Sender::new(Link::Pass));
        let link = state.subscribe();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *link.borrow() == Link::Cut {
                    continue; // dropped: the node sees the connection closed at once
                }
                tokio::spawn(relay(client, upstream, link.clone()));
            }
        });
        Ok(Self {
            port,
            state,
            accept,
        })
    }

    pub fn set(&self, link: Link) {
        self.state.send_replace(link);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set(Link::Cut);
        self.accept.abort();
    }
}

async fn relay(client: TcpStream, upstream: u16, link: watch::Receiver<Link>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    // Either direction ending (or a cut) ends both: the halves drop together.
    tokio::select! {
        () = pump(cr, sw, link.clone()) => {}
        () = pump(sr, cw, link) => {}
    }
}

/// Copies one direction, holding bytes while the link stalls and returning on a cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut link: watch::Receiver<Link>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = link.wait_for(|l| *l == Link::Cut) => {
                let _ = changed;
                return;
            }
        };
        // Hold the bytes while stalled; a cut during the stall drops them with the connection.
        match link.wait_for(|l| *l != Link::Stall).await.map(|l| *l) {
            Ok(Link::Pass) => {}
            _ => return,
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
