//! TLS for the coordinator's two ports (gRPC and HTTP), with rustls.
//!
//! - [`ServerTls::auto`] keeps a CA in `DATA_DIR/tls/` (`ca.pem`, `ca.key`), made on
//!   first start with `rcgen`, and signs a fresh server certificate with it at every
//!   start for the names the coordinator answers to; clients trust the CA by file or
//!   by its SHA-256 fingerprint, which stays the same across restarts.
//! - [`ServerTls::from_files`] serves a certificate chain and key the operator has.
//! - [`incoming`] accepts TCP connections and runs each handshake in its own task
//!   (with a deadline), so one slow client holds up no other. A client that speaks
//!   plaintext to a TLS port gets one line saying so, instead of a broken pipe.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use corral_proto::tls::{fingerprint, provider, PLAINTEXT_REFUSAL};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::auth::bootstrap::write_secret_file;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once; a connection beyond that is closed at once.
const MAX_HANDSHAKES: usize = 256;
/// Handshakes in flight from one address (an IPv6 /64) once they run short: one
/// peer cannot take all the others'.
const MAX_HANDSHAKES_PER_PEER: usize = 16;

/// Where the coordinator's certificate comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TlsMode {
    /// A CA kept in `DATA_DIR/tls/` signs a server certificate at each start.
    Auto,
    /// A PEM chain (server certificate first) and its private key.
    Files { cert: PathBuf, key: PathBuf },
}

/// The coordinator's TLS identity.
#[derive(Clone)]
pub struct ServerTls {
    grpc: Arc<rustls::ServerConfig>,
    http: Arc<rustls::ServerConfig>,
    /// `sha256:HEX` of the last certificate of the served chain (the CA, in auto
    /// mode): what agents the coordinator starts pin.
    pub ca_fingerprint: String,
    /// The CA certificate's file, in auto mode.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("ca_fingerprint", &self.ca_fingerprint).finish()
    }
}

fn io_error(what: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(what.to_string())
}

/// The CA's fixed description: the certificate it signs names it as issuer, so it
/// is rebuilt the same way at every start.
fn ca_params() -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, "Corral coordinator CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    params
}

impl ServerTls {
    /// The CA in `DATA_DIR/tls/` (made now if missing) and a server certificate
    /// for `names` (host names and addresses) signed by it.
    pub fn auto(data_dir: &Path, names: &[String]) -> std::io::Result<ServerTls> {
        let dir = data_dir.join("tls");
        let (ca_file, ca_key_file) = (dir.join("ca.pem"), dir.join("ca.key"));
        if !ca_file.is_file() || !ca_key_file.is_file() {
            let key = rcgen::KeyPair::generate().map_err(io_error)?;
            let cert = ca_params().self_signed(&key).map_err(io_error)?;
            write_secret_file(&ca_key_file, key.serialize_pem().trim_end())?;
            write_secret_file(&ca_file, cert.pem().trim_end())?;
            tracing::info!(path = %ca_file.display(), "made a CA for this coordinator's TLS certificates");
        }
        let ca_pem = std::fs::read_to_string(&ca_file)?;
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| io_error(format!("{}: {e}", ca_file.display())))?;
        let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&ca_key_file)?)
            .map_err(|e| io_error(format!("{}: {e}", ca_key_file.display())))?;
        let issuer = rcgen::Issuer::new(ca_params(), ca_key);
        let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(io_error)?;
        params.distinguished_name.push(rcgen::DnType::CommonName, "Corral coordinator");
        params.use_authority_key_identifier_extension = true;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().map_err(io_error)?;
        let cert = params.signed_by(&key, &issuer).map_err(io_error)?;
        // Kept for people and tools that want to look; the server uses what is in memory.
        write_secret_file(&dir.join("server.key"), key.serialize_pem().trim_end())?;
        write_secret_file(&dir.join("server.pem"), &format!("{}{}", cert.pem(), ca_pem.trim_end()))?;
        let chain = vec![cert.der().clone(), ca_der];
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).map_err(io_error)?;
        let mut tls = ServerTls::new(chain, key)?;
        tls.ca_file = Some(ca_file);
        Ok(tls)
    }

    /// A chain and key from PEM files.
    pub fn from_files(cert: &Path, key: &Path) -> std::io::Result<ServerTls> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| io_error(format!("--tls-cert {}: {e}", cert.display())))?;
        if chain.len() < 2 {
            return Err(io_error(format!(
                "--tls-cert {} must hold the server's certificate followed by the CA (or intermediate) that signed it: clients and the agents the coordinator starts trust that last one",
                cert.display()
            )));
        }
        let key =
            PrivateKeyDer::from_pem_file(key).map_err(|e| io_error(format!("--tls-key {}: {e}", key.display())))?;
        ServerTls::new(chain, key)
    }

    fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> std::io::Result<ServerTls> {
        let ca_fingerprint = fingerprint(chain.last().map(|c| c.as_ref()).unwrap_or_default());
        let config = |alpn: &[&[u8]]| -> std::io::Result<Arc<rustls::ServerConfig>> {
            let mut config = rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(io_error)?
                .with_no_client_auth()
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(|e| io_error(format!("the TLS certificate and key do not fit together: {e}")))?;
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(Arc::new(config))
        };
        Ok(ServerTls { grpc: config(&[b"h2"])?, http: config(&[b"http/1.1"])?, ca_fingerprint, ca_file: None })
    }

    pub fn grpc(&self) -> Arc<rustls::ServerConfig> {
        self.grpc.clone()
    }

    pub fn http(&self) -> Arc<rustls::ServerConfig> {
        self.http.clone()
    }
}

/// The names a server certificate made by [`ServerTls::auto`] is for: loopback,
/// this host's name, the address it listens on, `host.docker.internal` (how
/// containers on this host reach it) and any given.
pub fn certificate_names(listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into(), "host.docker.internal".into()];
    if !listen.ip().is_unspecified() && !listen.ip().is_loopback() {
        names.push(listen.ip().to_string());
    }
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_string());
        }
    }
    names.extend(extra.iter().cloned());
    // Only what can be a DNS name or an address: a host name with other characters
    // would make the certificate fail to build.
    names.retain(|n| {
        n.parse::<std::net::IpAddr>().is_ok()
            || (!n.is_empty() && n.len() <= 253 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
    });
    names.sort();
    names.dedup();
    names
}

/// One accepted TLS connection.
pub struct TlsConn(tokio_rustls::server::TlsStream<TcpStream>);

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

/// Accepts connections on `listener` and hands on those that finish a TLS
/// handshake, until `stop` turns true.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    cap: Arc<tokio::sync::Semaphore>,
    stop: watch::Receiver<bool>,
) -> mpsc::Receiver<(crate::conns::Limited<TlsConn>, SocketAddr)> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let per_peer: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>> = Arc::default();
    tokio::spawn(async move {
        let to = tx.clone();
        let stopping = stop.clone();
        crate::conns::accept(listener, cap, stop, &tx, move |tcp, peer, place| {
            let ready = std::future::ready(true);
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "too many TLS handshakes in flight; closing a new connection");
                return ready;
            };
            // One address (an IPv6 /64) may hold at most a few of the handshakes
            // when they run short; loopback is this host's own and never held back.
            let scarce = handshakes.available_permits() < MAX_HANDSHAKES / 2;
            let Some(slot) = PeerSlot::take(&per_peer, peer.ip(), scarce) else {
                tracing::debug!(%peer, "too many TLS handshakes in flight from this address; closing");
                return ready;
            };
            let (acceptor, tx, stop) = (acceptor.clone(), to.clone(), stopping.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let _slot = slot;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&acceptor, tcp)).await {
                    Ok(Ok(Some(conn))) => {
                        let conn = crate::conns::Limited::new(conn, place, None, stop).from_peer(peer);
                        let _ = tx.send((conn, peer)).await;
                    }
                    Ok(Ok(None)) => tracing::debug!(%peer, "a plaintext client was told this port serves TLS"),
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
            ready
        })
        .await;
    });
    rx
}

/// One handshake's place in its peer's count, given back when dropped.
struct PeerSlot {
    counts: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
}

impl PeerSlot {
    fn take(
        counts: &Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
        ip: std::net::IpAddr,
        scarce: bool,
    ) -> Option<PeerSlot> {
        let local = ip.is_loopback();
        let ip = match ip {
            // One host usually has a whole /64.
            std::net::IpAddr::V6(v6) => {
                let s = v6.segments();
                std::net::IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
            v4 => v4,
        };
        let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if scarce && *n >= MAX_HANDSHAKES_PER_PEER && !local {
            return None;
        }
        *n += 1;
        Some(PeerSlot { counts: counts.clone(), ip })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// A TLS record starts with 0x16 (handshake); anything else is a plaintext client,
/// which is told what to do in its own protocol: a gRPC status for an HTTP/2 client
/// (so the CLI and agents print it as any refusal), a 400 page for HTTP/1.
async fn handshake(acceptor: &tokio_rustls::TlsAcceptor, mut tcp: TcpStream) -> std::io::Result<Option<TlsConn>> {
    let mut first = [0u8; 4];
    let n = tcp.peek(&mut first).await?;
    if n >= 1 && first[0] != 0x16 {
        let answer = if first[..n].starts_with(b"PRI") {
            // Answer the client's first request, not before it exists: HTTP/2
            // forbids a response on a stream the client has not opened.
            first_request(&mut tcp).await?;
            grpc_refusal(&format!("{PLAINTEXT_REFUSAL} (this coordinator's port wants TLS)"))
        } else {
            let body = format!("{PLAINTEXT_REFUSAL} (Corral coordinator)\n");
            format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        };
        let _ = tcp.write_all(&answer).await;
        let _ = tcp.shutdown().await;
        // Read what the client still sends, so that closing does not reset the
        // connection before it has read the answer.
        let mut sink = [0u8; 4096];
        let drain = async {
            use tokio::io::AsyncReadExt;
            while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
        return Ok(None);
    }
    Ok(Some(TlsConn(acceptor.accept(tcp).await?)))
}

/// Reads an HTTP/2 client's preface and frames up to its first HEADERS frame.
async fn first_request(tcp: &mut TcpStream) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut preface = [0u8; 24];
    tcp.read_exact(&mut preface).await?;
    // A handful of frames at most come before it (SETTINGS, WINDOW_UPDATE).
    for _ in 0..16 {
        let mut head = [0u8; 9];
        tcp.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as u64;
        if head[3] == 0x1 {
            return Ok(());
        }
        let skipped = tokio::io::copy(&mut (&mut *tcp).take(len.min(1 << 16)), &mut tokio::io::sink()).await?;
        if skipped < len {
            return Err(std::io::Error::other("a frame longer than a plaintext probe needs"));
        }
    }
    Err(std::io::Error::other("no request in the first frames"))
}

/// An HTTP/2 frame: length, type, flags, stream, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541, 5.1).
fn hpack_int(out: &mut Vec<u8>, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(value as u8);
        return;
    }
    out.push(max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

/// What an HTTP/2 client that spoke plaintext to a TLS port gets: the server's
/// SETTINGS, a trailers-only gRPC answer on its first stream with
/// `grpc-status: 9` (FAILED_PRECONDITION: retrying the same way cannot help) and
/// `message`, then GOAWAY.
fn grpc_refusal(message: &str) -> Vec<u8> {
    let mut headers = Vec::new();
    for (name, value) in
        [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "9"), ("grpc-message", message)]
    {
        // A literal field without indexing, with a new name, no Huffman coding.
        headers.push(0);
        hpack_int(&mut headers, 7, name.len());
        headers.extend_from_slice(name.as_bytes());
        hpack_int(&mut headers, 7, value.len());
        headers.extend_from_slice(value.as_bytes());
    }
    let mut out = frame(0x4, 0, 0, &[]);
    out.extend(frame(0x1, 0x1 | 0x4, 1, &headers));
    let mut goaway = 1u32.to_be_bytes().to_vec();
    goaway.extend_from_slice(&0u32.to_be_bytes());
    out.extend(frame(0x7, 0, 0, &goaway));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpack_integers_follow_the_rfc_examples() {
        let mut out = Vec::new();
        hpack_int(&mut out, 5, 10);
        assert_eq!(out, [10]);
        out.clear();
        hpack_int(&mut out, 5, 1337);
        assert_eq!(out, [31, 154, 10]);
        let refusal = grpc_refusal("x");
        assert_eq!(&refusal[..9], &[0, 0, 0, 4, 0, 0, 0, 0, 0], "SETTINGS first");
    }

    #[test]
    fn the_ca_stays_and_its_fingerprint_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let names = certificate_names("127.0.0.1:7070".parse().unwrap(), &["head.example".into()]);
        assert!(names.contains(&"head.example".to_string()) && names.contains(&"127.0.0.1".to_string()));
        let first = ServerTls::auto(dir.path(), &names).unwrap();
        let again = ServerTls::auto(dir.path(), &names).unwrap();
        assert_eq!(first.ca_fingerprint, again.ca_fingerprint);
        let ca = std::fs::read(dir.path().join("tls/ca.pem")).unwrap();
        let der = CertificateDer::from_pem_slice(&ca).unwrap();
        assert_eq!(fingerprint(der.as_ref()), first.ca_fingerprint);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tls/ca.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
