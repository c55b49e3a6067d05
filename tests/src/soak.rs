//! What the soak tests share: a seeded generator for their faults, and a client
//! that follows the event feed through them.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use crate::{bin, Cluster};

/// A small, seeded generator (xorshift64*): the faults' schedule, not security.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `SOAK_SEED`, else from the clock; the seed is printed, so that
    /// `SOAK_SEED=N cargo test --test NAME` replays a schedule.
    pub fn from_env() -> (Rng, u64) {
        let seed = std::env::var("SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1
        });
        eprintln!("soak seed: {seed} (replay with SOAK_SEED={seed})");
        (Rng(seed), seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A duration of `from..to` milliseconds.
    pub fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to.saturating_sub(from)))
    }
}

/// `corral -o json events --follow` running in the background, as a program would
/// follow the feed, given the cluster's coordinators.
pub struct Follower {
    child: Child,
    seen: Arc<Mutex<Vec<Value>>>,
    said: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Cluster {
    /// Starts following the event feed from its first event.
    pub fn follow_events(&self) -> Follower {
        let coordinators = self.coordinators.clone().unwrap_or_else(|| self.url.clone());
        let mut child = Command::new(bin("corral"))
            .env("CORRAL_TOKEN_FILE", self.admin_token_file())
            .args(["--coordinator", &coordinators, "-o", "json", "events", "--follow"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start corral events --follow");
        let (seen, said): (Arc<Mutex<Vec<Value>>>, Arc<Mutex<String>>) = Default::default();
        let stdout = child.stdout.take().expect("the follower's stdout");
        let mut stderr = child.stderr.take().expect("the follower's stderr");
        let sink = seen.clone();
        let lines = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let event: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not an event ({e}): {line}"));
                sink.lock().unwrap().push(event);
            }
        });
        // Read as it comes: a follower that says much must not block on a full pipe.
        let heard = said.clone();
        let errors = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                heard.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Follower { child, seen, said, readers: vec![lines, errors] }
    }
}

impl Follower {
    /// The events seen so far, in the order they came.
    pub fn seen(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }

    /// The id of the last event seen.
    pub fn last_id(&self) -> Option<u64> {
        self.seen.lock().unwrap().last().and_then(|e| e["id"].as_u64())
    }

    /// Stops it; returns every event it saw and what it said on stderr.
    pub fn stop(mut self) -> (Vec<Value>, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        (self.seen(), self.said.lock().unwrap().clone())
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
