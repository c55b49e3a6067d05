//! `corral job watch JOB` and `corral job wait JOB`: follow a job (on the coordinator's
//! push, not by polling) until it ends.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use corral_proto::v1 as pb;

use super::super::Context;
use super::render::{counts_line, finished, print_outcome, total, verdict};
use crate::client::{ApiResult, Client};
use crate::Exit;

/// `job watch`: with a live progress bar.
pub async fn watch(ctx: &Context, client: &mut Client, job: u64) -> anyhow::Result<Exit> {
    let j = follow(client, job, !ctx.json()).await?;
    print_outcome(ctx, &j);
    Ok(verdict(&j))
}

/// `job wait`: quietly; the exit status says whether every task succeeded.
pub async fn wait(ctx: &Context, client: &mut Client, job: u64) -> anyhow::Result<Exit> {
    let j = follow(client, job, false).await?;
    print_outcome(ctx, &j);
    Ok(verdict(&j))
}

/// How often a watch without a terminal prints its progress line.
const LINE_EVERY: Duration = Duration::from_secs(5);
/// The width a progress line keeps within.
const WIDTH: usize = 80;

/// Follows a job until it ends. With `progress`: a live bar on a terminal, else a
/// plain line every few seconds (a CI log, a pipe).
pub async fn follow(client: &mut Client, id: u64, progress: bool) -> anyhow::Result<pb::Job> {
    use std::io::IsTerminal;
    let mut stream = client.watch_job(pb::GetJobRequest { job_id: id }).await.api()?;
    let bar = (progress && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} job {prefix} [{bar:20}] {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(id.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let lines = progress && bar.is_none();
    let started = Instant::now();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + LINE_EVERY, LINE_EVERY);
    let mut eta = Eta::default();
    let mut last: Option<pb::Job> = None;
    loop {
        let job = tokio::select! {
            message = stream.message() => match message {
                Ok(Some(job)) => job,
                Ok(None) => break,
                Err(status)
                    if matches!(status.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) =>
                {
                    anyhow::bail!("{}", status.message())
                }
                Err(status) => {
                    return Err(anyhow::anyhow!("{}", status.message()))
                        .context("lost the coordinator while following the job")
                }
            },
            _ = tick.tick(), if lines => {
                if let Some(job) = &last {
                    eprintln!("{}", line(job, started.elapsed(), &eta));
                }
                continue;
            }
        };
        let c = job.counts.unwrap_or_default();
        eta.update(Instant::now(), finished(&c));
        if let Some(bar) = &bar {
            bar.set_length(total(&job));
            bar.set_position(finished(&c));
            let left = eta.left(finished(&c), total(&job)).map(|d| format!(", eta {}", short(d))).unwrap_or_default();
            bar.set_message(format!("{}{left}", counts_line(&c)));
        }
        let done = job.state() != pb::JobState::Active;
        last = Some(job);
        if done {
            break;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    last.ok_or_else(|| anyhow::anyhow!("the coordinator ended the watch of job {id} without a state"))
}

/// One progress line, within [`WIDTH`]: `job 7: 40/100 done, 10 running, 50 ready, 12s, eta 15s`.
fn line(job: &pb::Job, elapsed: Duration, eta: &Eta) -> String {
    let c = job.counts.unwrap_or_default();
    let left = eta.left(finished(&c), total(job)).map(|d| format!(", eta {}", short(d))).unwrap_or_default();
    let head = format!("job {}: {}/{} done", job.id, finished(&c), total(job));
    let tail = format!(", {}{left}", short(elapsed));
    let room = WIDTH.saturating_sub(head.len() + tail.len() + " ()".len());
    let counts: String = counts_line(&c).chars().take(room).collect();
    format!("{head} ({counts}){tail}")
}

/// A duration to the second, as people read it (`42s`, `3m05s`, `2h10m`).
fn short(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// The time a job has left, from how fast its tasks have been finishing, averaged
/// over the updates (an exponential moving average, measured over at least half a
/// second), so that a burst or a pause does not swing it from 0 s to minutes.
#[derive(Debug, Default)]
struct Eta {
    last: Option<(Instant, u64)>,
    /// Tasks finished per second.
    rate: Option<f64>,
}

impl Eta {
    fn update(&mut self, now: Instant, done: u64) {
        let Some((then, before)) = self.last else {
            self.last = Some((now, done));
            return;
        };
        let dt = now.saturating_duration_since(then).as_secs_f64();
        if dt < 0.5 {
            return;
        }
        let rate = done.saturating_sub(before) as f64 / dt;
        self.rate = Some(self.rate.map_or(rate, |old| 0.7 * old + 0.3 * rate));
        self.last = Some((now, done));
    }

    /// `None` until a rate is known, or while nothing finishes.
    fn left(&self, done: u64, total: u64) -> Option<Duration> {
        let rate = self.rate.filter(|r| *r > 0.0)?;
        Some(Duration::from_secs_f64((total.saturating_sub(done) as f64 / rate).min(1e8)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_is_smoothed_not_swung_by_one_burst_or_pause() {
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let mut eta = Eta::default();
        eta.update(at(0.0), 0);
        assert_eq!(eta.left(0, 100), None, "no rate yet");
        eta.update(at(1.0), 10);
        assert_eq!(eta.left(10, 100), Some(Duration::from_secs(9)));
        eta.update(at(1.1), 90);
        assert_eq!(eta.left(10, 100), Some(Duration::from_secs(9)), "an update within half a second changes nothing");
        // A pause of two seconds: slower, not stopped.
        eta.update(at(3.0), 10);
        let left = eta.left(10, 100).unwrap();
        assert!(left > Duration::from_secs(9) && left < Duration::from_secs(20), "{left:?}");
    }

    #[test]
    fn a_progress_line_fits_eighty_columns() {
        let job = pb::Job {
            id: 123_456,
            tasks: 1_000_000,
            counts: Some(pb::TaskCounts {
                succeeded: 123_456,
                failed: 7_890,
                cancelled: 12,
                running: 64,
                assigned: 512,
                ready: 860_000,
                waiting: 8_578,
            }),
            ..Default::default()
        };
        let mut eta = Eta::default();
        eta.update(Instant::now() - Duration::from_secs(10), 0);
        eta.update(Instant::now(), 131_358);
        let shown = line(&job, Duration::from_secs(3725), &eta);
        assert!(shown.chars().count() <= WIDTH, "{} chars: {shown}", shown.chars().count());
        assert!(
            shown.starts_with("job 123456: 131358/1000000 done (123456 succeeded") && shown.contains("1h02m"),
            "{shown}"
        );
    }
}
