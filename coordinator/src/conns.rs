//! Connections are bounded: at most `max` at once, each holding a permit, and a
//! plaintext connection that says nothing for [`SILENT_FOR`] is closed. The
//! process's file limit is raised to its hard limit at start, and the cap kept
//! below it, so a crowd of idle sockets can never leave the coordinator without
//! descriptors for its store, its logs or the next client.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

/// How long a new plaintext connection may stay silent before it is closed (a TLS
/// one has its handshake deadline instead).
pub const SILENT_FOR: Duration = Duration::from_secs(10);

/// Descriptors kept for everything but client connections.
const RESERVED_FDS: u64 = 1024;

/// Raises the soft limit on open files to the hard limit; returns the limit now.
pub fn raise_file_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit fill and read a plain struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// The default connection cap for a file limit: what is left after the reserve,
/// at least 64 and at most 100,000.
pub fn default_cap(file_limit: u64) -> usize {
    file_limit.saturating_sub(RESERVED_FDS).clamp(64, 100_000) as usize
}

/// How long a server that was told to stop lets its open connections (agents'
/// streams, watchers) go on before it cuts them.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// A connection that holds its place under the cap until it is dropped, and is cut
/// [`STOP_GRACE`] after its server was told to stop: a coordinator that steps
/// down and stands by in the same process must not keep serving agents on
/// connections its old server left open.
pub struct Limited<T> {
    io: T,
    /// The peer's address, for requests to read (`Request::remote_addr`).
    peer: Option<std::net::SocketAddr>,
    _permit: OwnedSemaphorePermit,
    /// Until the first byte arrives: when it must have.
    silent_until: Option<Pin<Box<tokio::time::Sleep>>>,
    cut: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl<T> Limited<T> {
    pub fn new(
        io: T,
        permit: OwnedSemaphorePermit,
        silent_for: Option<Duration>,
        mut stop: watch::Receiver<bool>,
    ) -> Self {
        let cut = Box::pin(async move {
            if stop.wait_for(|s| *s).await.is_ok() {
                tokio::time::sleep(STOP_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        });
        let silent_until = silent_for.map(|d| Box::pin(tokio::time::sleep(d)));
        Limited { io, peer: None, _permit: permit, silent_until, cut }
    }

    /// Says where the connection comes from.
    pub fn from_peer(self, peer: std::net::SocketAddr) -> Self {
        Limited { peer: Some(peer), ..self }
    }

    fn is_cut(&mut self, cx: &mut Context<'_>) -> bool {
        self.cut.as_mut().poll(cx).is_ready()
    }
}

fn cut_error() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "the server stopped; connection cut")
}

impl<T: AsyncRead + Unpin> AsyncRead for Limited<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.is_cut(cx) {
            return Poll::Ready(Err(cut_error()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.silent_until = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.silent_until.as_mut().map(|s| s.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the connection said nothing; closed",
                ))),
                _ => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Limited<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.is_cut(cx) {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.is_cut(cx) {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<T> tonic::transport::server::Connected for Limited<T> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo { local_addr: None, remote_addr: self.peer }
    }
}

/// Accepts connections on `listener` until `stop` turns true or `tx` closes,
/// handing each that finds room under `cap` to `take` with its place (false from
/// `take`: stop). One beyond the cap is closed at once, never left waiting in the
/// kernel's backlog, and nothing here waits on a connection: a crowd of silent
/// ones must not stop the accepting of others.
pub async fn accept<T, F>(
    listener: TcpListener,
    cap: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    tx: &mpsc::Sender<T>,
    mut take: impl FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit) -> F,
) where
    F: Future<Output = bool>,
{
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
            _ = tx.closed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(place) = cap.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "at the connection cap (--max-connections); closing a new connection");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        if !take(tcp, peer, place).await {
            return;
        }
    }
}

/// Accepts plaintext connections on `listener` while there is room under `cap`.
pub fn incoming(
    listener: TcpListener,
    cap: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
) -> mpsc::Receiver<(Limited<TcpStream>, SocketAddr)> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let to = tx.clone();
        let stopping = stop.clone();
        accept(listener, cap, stop, &tx, move |tcp, peer, place| {
            let (to, stop) = (to.clone(), stopping.clone());
            async move { to.send((Limited::new(tcp, place, Some(SILENT_FOR), stop).from_peer(peer), peer)).await.is_ok() }
        })
        .await;
    });
    rx
}

/// Connections from an acceptor above, for `axum::serve`.
pub struct Listener<T> {
    pub conns: mpsc::Receiver<(T, SocketAddr)>,
    pub local: SocketAddr,
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> axum::serve::Listener for Listener<T> {
    type Io = T;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.conns.recv().await {
            Some(conn) => conn,
            // The acceptor stopped (shutdown): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
