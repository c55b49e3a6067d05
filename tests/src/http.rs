//! The coordinator's HTTP side as a test reaches it: the dashboard's URL, GETs
//! with and without a token, a client that trusts the cluster's CA.

use super::*;

impl Cluster {
    /// The CA clients trust, with TLS on.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.data_dir().join("tls").join("ca.pem"))
    }

    /// The dashboard's base URL (`http://127.0.0.1:PORT`), as the coordinator wrote it.
    pub fn http_url(&self) -> String {
        let addr = std::fs::read_to_string(self.data_dir().join("http.addr")).expect("http.addr");
        format!("{}://{}", self.scheme(), addr.trim())
    }

    /// GETs a path of the dashboard's HTTP server as the admin; returns the status
    /// and body.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        self.http_get_as(path, Some(&self.admin_token()))
    }

    /// GETs a path with `token` as the bearer (none: without one).
    pub fn http_get_as(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let client = self.http_client();
        let mut req = client.get(format!("{}{path}", self.http_url()));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().expect("HTTP request");
        let status = resp.status().as_u16();
        (status, resp.text().expect("HTTP body"))
    }

    /// An HTTP client that follows no redirects and, with TLS on, trusts the CA.
    pub fn http_client(&self) -> reqwest::blocking::Client {
        let mut builder = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = self.ca_file() {
            let pem = std::fs::read(ca).expect("the CA file");
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a PEM CA"));
        }
        builder.build().expect("HTTP client")
    }

    /// With TLS on: the CA's fingerprint, as clients pin it.
    pub fn ca_fingerprint(&self) -> Option<String> {
        corral_proto::tls::pem_fingerprint(&std::fs::read(self.ca_file()?).ok()?)
    }
}
