//! How clients reach a coordinator: plain HTTP/2 for `http://` URLs, TLS (rustls)
//! for `https://` ones, never one for the other.
//!
//! A `https://` coordinator is trusted by one of: a CA certificate file
//! (`--ca-cert`, `CORRAL_CA_CERT`), a pinned CA fingerprint (`--ca-fingerprint
//! sha256:HEX`, `CORRAL_CA_FINGERPRINT`: the certificate whose SHA-256 it is must be
//! in the chain the server sends, and the server's certificate must verify against
//! it, as Kubernetes' CA pinning), or else the system's roots.
//!
//! TLS is done here, with tokio-rustls under a custom tonic connector, rather than
//! with tonic's own TLS settings: those have no hook for pinning.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tonic::transport::{Channel, Endpoint, Uri};

/// How a client decides to trust a `https://` coordinator.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// A PEM file of CA certificates to trust.
    pub ca_cert: Option<PathBuf>,
    /// `sha256:HEX` of a certificate that must be in the server's chain.
    pub ca_fingerprint: Option<String>,
}

/// The crypto that rustls uses everywhere in Corral.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// `sha256:HEX` (colons between bytes allowed, any case) as 32 bytes.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let hex: String = s.trim().strip_prefix("sha256:").unwrap_or(s.trim()).chars().filter(|c| *c != ':').collect();
    let bad = || format!("invalid CA fingerprint '{s}': expected sha256: and 64 hex digits, as the coordinator prints");
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// `sha256:HEX` of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// `sha256:HEX` of the first certificate in a PEM file's contents.
pub fn pem_fingerprint(pem: &[u8]) -> Option<String> {
    CertificateDer::from_pem_slice(pem).ok().map(|c| fingerprint(c.as_ref()))
}

/// Trusts the server if its chain holds the pinned certificate and its own
/// certificate verifies against that one.
#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let sha = |c: &CertificateDer<'_>| ring::digest::digest(&ring::digest::SHA256, c.as_ref());
        let anchor =
            std::iter::once(end_entity).chain(intermediates).find(|c| sha(c).as_ref() == self.pin).ok_or_else(
                || rustls::Error::General("no certificate the server sent has the pinned fingerprint".into()),
            )?;
        let mut roots = RootCertStore::empty();
        roots.add(anchor.clone().into_owned())?;
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        let rest: Vec<CertificateDer<'_>> = intermediates.iter().filter(|c| *c != anchor).cloned().collect();
        verifier.verify_server_cert(end_entity, &rest, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

impl ClientTls {
    /// The rustls settings these options ask for.
    pub fn config(&self) -> Result<rustls::ClientConfig, String> {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let mut config = if let Some(pin) = &self.ca_fingerprint {
            let pin = parse_fingerprint(pin)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned { pin, provider }))
                .with_no_client_auth()
        } else {
            let mut roots = RootCertStore::empty();
            match &self.ca_cert {
                Some(path) => {
                    let certs = CertificateDer::pem_file_iter(path)
                        .map_err(|e| format!("cannot read the CA certificate {}: {e}", path.display()))?;
                    for cert in certs {
                        let cert =
                            cert.map_err(|e| format!("cannot read the CA certificate {}: {e}", path.display()))?;
                        roots
                            .add(cert)
                            .map_err(|e| format!("the CA certificate {} is unusable: {e}", path.display()))?;
                    }
                    if roots.is_empty() {
                        return Err(format!("{} holds no PEM certificate", path.display()));
                    }
                }
                None => {
                    let found = rustls_native_certs::load_native_certs();
                    let (added, _) = roots.add_parsable_certificates(found.certs);
                    if added == 0 {
                        return Err(
                            "no system CA certificates found: pass --ca-cert FILE or --ca-fingerprint sha256:HEX"
                                .to_string(),
                        );
                    }
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// Whether the URL asks for TLS; anything but `http://` and `https://` is refused.
pub fn is_tls(url: &str) -> Result<bool, String> {
    let uri: Uri = url.parse().map_err(|e| format!("invalid coordinator URL '{url}': {e}"))?;
    match uri.scheme_str() {
        Some("https") => Ok(true),
        Some("http") => Ok(false),
        _ => Err(format!("invalid coordinator URL '{url}': use http://HOST:PORT or https://HOST:PORT")),
    }
}

/// An endpoint for `url`, with `tune` applied, and the TLS connector it needs.
pub fn endpoint(url: &str, tls: &ClientTls, tune: impl FnOnce(Endpoint) -> Endpoint) -> Result<Target, String> {
    let secure = is_tls(url)?;
    let uri: Uri = url.parse().map_err(|e| format!("invalid coordinator URL '{url}': {e}"))?;
    let host = uri.host().ok_or_else(|| format!("invalid coordinator URL '{url}': it names no host"))?.to_string();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    // The connector below does TLS itself; tonic sees plain HTTP/2.
    let plain = format!("http://{}", uri.authority().map(|a| a.as_str()).unwrap_or(&host));
    let endpoint = tune(Endpoint::from_shared(plain).map_err(|e| format!("invalid coordinator URL '{url}': {e}"))?);
    let tls = if secure {
        let name = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let server_name =
            ServerName::try_from(name.clone()).map_err(|e| format!("invalid host '{name}' for TLS: {e}"))?;
        Some(Tls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(tls.config()?)),
            server_name,
            host: name,
            port,
        })
    } else {
        None
    };
    Ok(Target { endpoint, tls })
}

#[derive(Clone)]
struct Tls {
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
    host: String,
    port: u16,
}

/// Where to connect and how.
#[derive(Clone)]
pub struct Target {
    endpoint: Endpoint,
    tls: Option<Tls>,
}

/// The message for a failed handshake: what failed and what to do about it.
fn tls_error(host: &str, port: u16, e: std::io::Error) -> std::io::Error {
    let untrusted = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_) | rustls::Error::General(_)));
    let hint = if untrusted {
        "the coordinator's certificate is not trusted: pass --ca-cert with its CA (DATA_DIR/tls/ca.pem) or --ca-fingerprint with the fingerprint it printed"
    } else {
        "is it serving TLS there? An http:// coordinator cannot be reached with https://"
    };
    std::io::Error::other(format!("TLS with {host}:{port} failed ({e}): {hint}"))
}

/// The innermost message of an error's chain: where the connector's own words are.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(e), |e| e.source()).last().map(|e| e.to_string()).unwrap_or_default()
}

impl Target {
    fn connector(
        tls: Tls,
    ) -> impl tower::Service<
        Uri,
        Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
        Error = std::io::Error,
        Future = impl Send,
    > + Send
           + 'static {
        tower::service_fn(move |_: Uri| {
            let tls = tls.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect((tls.host.as_str(), tls.port)).await?;
                tcp.set_nodelay(true)?;
                let stream = tls
                    .connector
                    .connect(tls.server_name.clone(), tcp)
                    .await
                    .map_err(|e| tls_error(&tls.host, tls.port, e))?;
                Ok(hyper_util::rt::TokioIo::new(stream))
            }
        })
    }

    /// Connects now.
    pub async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        match &self.tls {
            Some(tls) => self.endpoint.connect_with_connector(Self::connector(tls.clone())).await,
            None => self.endpoint.connect().await,
        }
    }

    /// Connects on first use.
    pub fn connect_lazy(&self) -> Channel {
        match &self.tls {
            Some(tls) => self.endpoint.connect_with_connector_lazy(Self::connector(tls.clone())),
            None => self.endpoint.connect_lazy(),
        }
    }
}

/// What a TLS port of the coordinator says to a plaintext client.
pub const PLAINTEXT_REFUSAL: &str = "this port serves TLS: use https://";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_the_forms_people_paste() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_fingerprint(&format!("sha256:{hex}")).unwrap(), [0xab; 32]);
        assert_eq!(parse_fingerprint(&hex.to_uppercase()).unwrap(), [0xab; 32]);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&format!("sha256:{colons}")).unwrap(), [0xab; 32]);
        assert!(parse_fingerprint("sha256:abc").unwrap_err().contains("64 hex digits"));
        assert!(parse_fingerprint(&format!("sha256:{}", "zz".repeat(32))).is_err());
        assert_eq!(fingerprint(b"x").len(), "sha256:".len() + 64);
    }

    #[test]
    fn only_http_and_https_urls_are_accepted() {
        assert!(!is_tls("http://127.0.0.1:7070").unwrap());
        assert!(is_tls("https://head:7070").unwrap());
        assert!(is_tls("ftp://head").is_err());
        assert!(endpoint(
            "https://127.0.0.1:1",
            &ClientTls { ca_cert: Some("/nonexistent".into()), ..Default::default() },
            |e| e
        )
        .err()
        .unwrap()
        .contains("cannot read the CA certificate"));
    }
}
