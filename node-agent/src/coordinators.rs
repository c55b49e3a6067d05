//! The coordinators an agent may talk to: those `--coordinator` lists, those the
//! leader says are on its database, and leaders that standbys name; which one it
//! talks to now; and the newest leader's epoch it has heard, so that it obeys no
//! deposed leader.

use std::time::Duration;

use corral_proto::leader::Follow;
use tonic::transport::{Channel, Endpoint};

use crate::session::Error;

/// The coordinators this agent may reach (those `--coordinator` lists, and leaders
/// that standbys named), and the one it talks to now.
pub struct Coordinators {
    known: Vec<(String, corral_proto::tls::Target)>,
    at: usize,
    /// What the object transfers go through: switched with the coordinator.
    objects: Follow,
    tls: corral_proto::tls::ClientTls,
    /// How long a coordinator may leave a ping unanswered, and how often one is sent.
    patience: Duration,
    /// The newest epoch a leader spoke for (0: none yet, or a store without
    /// epochs): orders of an older one (a deposed leader) are not obeyed.
    epoch: u64,
}

impl Coordinators {
    /// Takes `epoch`, a leader's, unless a newer one was heard: then `Err` with
    /// that newer one.
    pub fn admit(&mut self, epoch: u64) -> Result<(), u64> {
        if epoch < self.epoch {
            return Err(self.epoch);
        }
        self.epoch = epoch;
        Ok(())
    }

    pub fn new(list: &str, tls: &corral_proto::tls::ClientTls) -> Result<Coordinators, Error> {
        let urls = corral_proto::leader::urls(list);
        if urls.is_empty() {
            return Err(Error::BadUrl { url: list.to_string(), reason: "it names no URL".into() });
        }
        let patience = Duration::from_secs(2);
        let mut known = Vec::new();
        for url in urls {
            let target = target(&url, tls, patience).map_err(|reason| Error::BadUrl { url: url.clone(), reason })?;
            known.push((url, target));
        }
        let objects = Follow::new(known[0].1.connect_lazy());
        Ok(Coordinators { known, at: 0, objects, tls: tls.clone(), patience, epoch: 0 })
    }

    /// Pings each coordinator about every `patience`, and leaves one that has
    /// not answered within it (a third of the heartbeat timeout: a coordinator
    /// that is paused, or whose host hung, keeps its socket open; the agent moves
    /// on before a new leader would declare this node lost).
    pub fn retune(&mut self, patience: Duration) {
        if patience == self.patience {
            return;
        }
        self.patience = patience;
        for (url, target) in &mut self.known {
            if let Ok(tuned) = self::target(url, &self.tls, patience) {
                *target = tuned;
            }
        }
        self.objects.switch(self.connect());
    }

    /// What object transfers go through: it follows the coordinator this agent
    /// talks to.
    pub fn objects(&self) -> Follow {
        self.objects.clone()
    }

    pub fn url(&self) -> &str {
        &self.known[self.at].0
    }

    pub fn connect(&self) -> Channel {
        self.known[self.at].1.connect_lazy()
    }

    fn go_to(&mut self, at: usize) {
        if at != self.at {
            self.at = at;
            self.objects.switch(self.connect());
        }
    }

    /// Moves on to the next one listed (when this one cannot be reached).
    pub fn next(&mut self) {
        self.go_to((self.at + 1) % self.known.len());
    }

    /// Adds the coordinators the leader said are on its database (those it does
    /// not know yet, in the order given), to go down when this one goes away.
    pub fn learn(&mut self, urls: &[String]) {
        for url in urls {
            if self.known.iter().any(|(known, _)| known == url) {
                continue;
            }
            match target(url, &self.tls, self.patience) {
                Ok(target) => {
                    tracing::info!(coordinator = %url, "learned of another coordinator on the leader's database");
                    self.known.push((url.clone(), target));
                }
                Err(why) => {
                    tracing::warn!(coordinator = %url, %why, "the leader named a coordinator this agent cannot use")
                }
            }
        }
    }

    /// Goes to the leader a standby named (remembered from now on); false if that
    /// is where it is already, or not a URL it can use.
    pub fn follow(&mut self, leader: &str) -> bool {
        if let Some(at) = self.known.iter().position(|(url, _)| url == leader) {
            let moved = at != self.at;
            self.go_to(at);
            return moved;
        }
        match target(leader, &self.tls, self.patience) {
            Ok(target) => {
                self.known.push((leader.to_string(), target));
                self.go_to(self.known.len() - 1);
                true
            }
            Err(why) => {
                tracing::warn!(leader, %why, "a standby named a leader this agent cannot reach");
                false
            }
        }
    }
}

/// How every connection to the coordinator at `url` is made: one that leaves a
/// ping unanswered for `patience` is dropped.
fn target(
    url: &str,
    tls: &corral_proto::tls::ClientTls,
    patience: Duration,
) -> Result<corral_proto::tls::Target, String> {
    corral_proto::tls::endpoint(url, tls, |endpoint: Endpoint| {
        endpoint
            .connect_timeout(Duration::from_secs(2))
            .initial_stream_window_size(Some(8 << 20))
            .initial_connection_window_size(Some(16 << 20))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(patience)
            .keep_alive_timeout(patience)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // A runtime only for the connections made lazily (nothing is reached).
    #[tokio::test]
    async fn a_deposed_leader_is_not_obeyed_once_a_newer_one_spoke() {
        let mut c = Coordinators::new("http://a:1,http://b:2", &Default::default()).unwrap();
        assert_eq!(c.admit(0), Ok(()), "a store without epochs");
        assert_eq!(c.admit(3), Ok(()));
        assert_eq!(c.admit(3), Ok(()), "the same leader again");
        assert_eq!(c.admit(2), Err(3), "the leader of epoch 2 was deposed by epoch 3's");
        assert_eq!(c.admit(4), Ok(()));
        assert_eq!(c.admit(3), Err(4));
    }
}
