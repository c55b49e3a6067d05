//! Just enough of the W3C WebDriver protocol to drive Debian's headless Chromium
//! through `chromedriver`: open a page, run a script in it, resize the window,
//! take a screenshot.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::wait_until;

/// A `chromedriver` process and one browser session in it; both end on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
}

fn find(names: &[&str]) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    names.iter().find_map(|name| {
        std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file()).map(|p| p.display().to_string())
    })
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session.
    pub fn start() -> Browser {
        let driver_bin = find(&["chromedriver"])
            .expect("chromedriver is missing: install Debian's chromium and chromium-driver (as .ci/run does)");
        let chrome = find(&["chromium", "chromium-browser"])
            .expect("chromium is missing: install Debian's chromium and chromium-driver (as .ci/run does)");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
        let base = format!("http://127.0.0.1:{port}");
        wait_until(Duration::from_secs(20), "chromedriver to answer", || {
            http.get(format!("{base}/status")).send().is_ok_and(|r| r.status().is_success())
        });
        let mut browser = Browser { driver, base, session: String::new(), http };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chrome,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"],
            },
        }}});
        let created = browser.call("POST", "/session", caps);
        browser.session = created["sessionId"].as_str().expect("a session id").to_string();
        browser
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "POST" => self.http.post(url).header("content-type", "application/json").body(body.to_string()),
            "DELETE" => self.http.delete(url),
            _ => self.http.get(url),
        };
        let response = request.send().unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = response.status();
        let value: Value = response.text().ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null);
        assert!(status.is_success(), "WebDriver {method} {path}: {status} {value}");
        value["value"].clone()
    }

    /// Opens `url`.
    pub fn open(&self, url: &str) {
        self.call("POST", &format!("/session/{}/url", self.session), json!({ "url": url }));
    }

    /// Runs `script` (a function body: `return ...`) in the page and returns its value.
    pub fn eval(&self, script: &str) -> Value {
        self.call("POST", &format!("/session/{}/execute/sync", self.session), json!({ "script": script, "args": [] }))
    }

    /// Waits until `script` returns true, then returns.
    pub fn wait_for(&self, timeout: Duration, what: &str, script: &str) {
        wait_until(timeout, what, || self.eval(script) == Value::Bool(true));
    }

    /// Sets the window's size in CSS pixels (a phone's, say).
    pub fn resize(&self, width: u32, height: u32) {
        let rect = json!({ "width": width, "height": height });
        self.call("POST", &format!("/session/{}/window/rect", self.session), rect);
    }

    /// A PNG of the window, base64-encoded as WebDriver sends it.
    pub fn screenshot_base64(&self) -> String {
        self.call("GET", &format!("/session/{}/screenshot", self.session), Value::Null)
            .as_str()
            .expect("screenshot data")
            .to_string()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.http.delete(format!("{}/session/{}", self.base, self.session)).send();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
