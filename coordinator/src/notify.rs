//! Completion callbacks: posting a finished job's JSON summary to the URL it was
//! submitted with, retried with backoff until the endpoint answers 2xx.
//!
//! The core orders a post only once the job's end is durable, and records each
//! post's result (so failures show on the job); once one is accepted, it orders no
//! more. A coordinator that stops mid-way posts again after its restart, so an
//! endpoint may, rarely, receive the same summary twice: the `Corral-Job` header and
//! the `job` field let it tell.
//!
//! Each post carries `Corral-Signature: sha256=HEX`, the HMAC-SHA256 of the body
//! under the secret in `DATA_DIR/notify.secret` (the file's text is the key), so a
//! receiver can check that it came from this coordinator. URLs whose host resolves
//! to a loopback, link-local or private address are refused (at submission and
//! again at each post, which then connects to the address it checked) unless the
//! coordinator runs with `--notify-allow-private`: a job's owner must not be able
//! to make the coordinator call into its own network.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::core::Notification;
use crate::runtime::Input;

/// How long one post may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between posts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How callbacks are posted.
#[derive(Clone)]
pub struct Settings {
    /// The wait after the first failed post; it doubles with each failure.
    pub backoff: Duration,
    /// The HMAC key of `Corral-Signature`.
    pub secret: String,
    /// Post to loopback, link-local and private addresses too.
    pub allow_private: bool,
}

/// Why an address is no place for a callback, if it is not.
pub fn internal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            if v4.is_loopback() {
                Some("a loopback address")
            } else if v4.is_link_local() {
                Some("a link-local address")
            } else if v4.is_private()
                || (a == 100 && (64..128).contains(&b))
                || matches!((a, b, c), (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113))
                || (a == 198 && (b & 0xfe) == 18)
            {
                Some("a private address")
            } else if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() || a == 0 || a >= 240 {
                Some("not a host's address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            // IPv4 inside IPv6: mapped, compatible (::a.b.c.d), NAT64 (64:ff9b::/96)
            // and 6to4 (2002:AABB:CCDD::/48) all lead to the IPv4 address.
            let embedded =
                |hi: u16, lo: u16| std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
            if v6.is_loopback() || v6.is_unspecified() {
                return if v6.is_loopback() { Some("a loopback address") } else { Some("not a host's address") };
            }
            if let Some(v4) = v6.to_ipv4() {
                return internal(IpAddr::V4(v4));
            }
            // 64:ff9b::/96, and the local-use 64:ff9b:1::/48 (RFC 8215).
            if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || seg[..3] == [0x64, 0xff9b, 1] {
                return internal(IpAddr::V4(embedded(seg[6], seg[7])));
            }
            if seg[0] == 0x2002 {
                return internal(IpAddr::V4(embedded(seg[1], seg[2])));
            }
            let first = seg[0];
            if first & 0xffc0 == 0xfe80 {
                Some("a link-local address")
            } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 {
                Some("a private address")
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some("not a host's address")
            } else {
                None
            }
        }
    }
}

/// The addresses `url`'s host resolves to, refused if any is internal (unless
/// allowed).
pub async fn resolve(url: &str, allow_private: bool) -> Result<(String, Vec<SocketAddr>), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("'{url}' is not a URL: {e}"))?;
    let host = parsed.host_str().ok_or_else(|| format!("'{url}' has no host"))?.to_string();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let bare = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let lookup = tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host((bare.as_str(), port)));
    let addrs: Vec<SocketAddr> = match lookup.await {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(e)) => return Err(format!("cannot resolve '{host}': {e}")),
        Err(_) => return Err(format!("resolving '{host}' took more than 5s")),
    };
    if addrs.is_empty() {
        return Err(format!("'{host}' resolves to no address"));
    }
    if !allow_private {
        if let Some((addr, why)) = addrs.iter().find_map(|a| internal(a.ip()).map(|why| (a, why))) {
            return Err(format!(
                "'{host}' resolves to {}, {why}: callbacks to loopback, link-local and private addresses are refused unless the coordinator runs with --notify-allow-private",
                addr.ip()
            ));
        }
    }
    Ok((bare, addrs))
}

/// `sha256=HEX` of the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    format!("sha256={}", crate::auth::secret::hex(tag.as_ref()))
}

/// Delivers every notification it is given until `stop`.
pub async fn run(
    mut orders: mpsc::UnboundedReceiver<Notification>,
    results: mpsc::UnboundedSender<Input>,
    settings: Settings,
    mut stop: watch::Receiver<bool>,
) {
    let mut deliveries = JoinSet::new();
    loop {
        tokio::select! {
            order = orders.recv() => match order {
                Some(order) => {
                    deliveries.spawn(deliver(settings.clone(), order, results.clone()));
                }
                None => break,
            },
            Some(_) = deliveries.join_next(), if !deliveries.is_empty() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    // What is not delivered yet is posted again after a restart.
    deliveries.shutdown().await;
}

/// Posts until accepted, reporting each result to the core.
async fn deliver(settings: Settings, order: Notification, results: mpsc::UnboundedSender<Input>) {
    let mut wait = settings.backoff;
    loop {
        let outcome = post(&settings, &order).await;
        let accepted = outcome.is_ok();
        if let Err(why) = &outcome {
            tracing::warn!(job_id = %order.job, url = %order.url, error = %why, "job callback failed; retrying in {wait:?}");
        } else {
            tracing::info!(job_id = %order.job, url = %order.url, "job callback accepted");
        }
        let job = order.job;
        let report = Input::Call(Box::new(move |core, now, out| {
            core.on_notify_result(now, job, outcome, out);
            Box::new(|_| {})
        }));
        if results.send(report).is_err() || accepted {
            return;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_BACKOFF);
    }
}

/// One post: `Ok` for a 2xx answer, else why not. The host is resolved and checked
/// here, and the connection goes to the addresses checked (no second lookup that a
/// rebinding DNS could answer differently).
async fn post(settings: &Settings, order: &Notification) -> Result<(), String> {
    let (host, addrs) = resolve(&order.url, settings.allow_private).await?;
    let client = reqwest::Client::builder()
        .timeout(POST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would look the name up again, past the check.
        .no_proxy()
        .resolve_to_addrs(&host, &addrs)
        .build()
        .map_err(|e| describe(&e))?;
    let response = client
        .post(&order.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Corral-Job", order.job.to_string())
        .header("Corral-Signature", signature(&settings.secret, order.body.as_bytes()))
        .body(order.body.clone())
        .send()
        .await
        .map_err(|e| describe(&e))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// A transport error with its causes (reqwest's own message is terse).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_named() {
        for (ip, why) in [
            ("127.0.0.1", "a loopback address"),
            ("10.1.2.3", "a private address"),
            ("172.20.0.1", "a private address"),
            ("192.168.1.1", "a private address"),
            ("100.64.0.1", "a private address"),
            ("169.254.169.254", "a link-local address"),
            ("0.0.0.0", "not a host's address"),
            ("::1", "a loopback address"),
            ("fe80::1", "a link-local address"),
            ("fd00::1", "a private address"),
            ("::ffff:10.0.0.1", "a private address"),
            ("::10.0.0.1", "a private address"),
            ("64:ff9b::a9fe:a9fe", "a link-local address"),
            ("64:ff9b:1::a00:1", "a private address"),
            ("192.0.2.1", "a private address"),
            ("2002:c0a8:0101::1", "a private address"),
            ("fec0::1", "a private address"),
            ("198.18.0.1", "a private address"),
            ("240.0.0.1", "not a host's address"),
        ] {
            assert_eq!(internal(ip.parse().unwrap()), Some(why), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1", "172.32.0.1", "100.128.0.1", "192.0.78.9"] {
            assert_eq!(internal(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn the_signature_is_the_hmac_of_the_body() {
        // RFC 4231, test case 2.
        let sig = signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(sig, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[tokio::test]
    async fn loopback_hosts_are_refused_unless_allowed() {
        let err = resolve("http://127.0.0.1:9/hook", false).await.unwrap_err();
        assert!(err.contains("127.0.0.1, a loopback address") && err.contains("--notify-allow-private"), "{err}");
        assert!(resolve("http://localhost:9/hook", false).await.is_err());
        let (host, addrs) = resolve("http://127.0.0.1:9/hook", true).await.unwrap();
        assert_eq!((host.as_str(), addrs[0].port()), ("127.0.0.1", 9));
    }
}
