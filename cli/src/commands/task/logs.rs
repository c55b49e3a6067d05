//! `corral task logs`: one stream of an attempt's output, both as JSON, or both
//! interleaved in the order the task wrote them (`--both`).

use std::io::Write;
use std::time::Duration;

use corral_proto::v1 as pb;
use corral_types::order::{interleave, Piece};
use serde_json::json;

use super::task_ref;
use crate::client::{ApiResult, Client};
use crate::output;

/// Which output: of a job's task (an index or an id), its attempt (0: the latest)
/// and, for a multi-node task, its rank (0: the task's own).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Which<'a> {
    pub job: u64,
    pub task: &'a str,
    pub attempt: u32,
    pub rank: u32,
}

impl<'a> Which<'a> {
    /// The task's own output of its latest attempt.
    pub fn latest(job: u64, task: &'a str) -> Which<'a> {
        Which { job, task, attempt: 0, rank: 0 }
    }

    /// A read of `max_bytes` of one stream from `offset`.
    fn request(self, stderr: bool, offset: u64, max_bytes: u32) -> pb::ReadLogRequest {
        let (index, name) = task_ref(self.task);
        let (job_id, attempt, rank) = (self.job, self.attempt, self.rank);
        pb::ReadLogRequest { job_id, index, attempt, stderr, offset, max_bytes, name, order: false, rank }
    }

    /// Asks for the order of the attempt's stdout and stderr (and whether it has ended).
    fn order(self) -> pb::ReadLogRequest {
        pb::ReadLogRequest { order: true, ..self.request(false, 0, 1) }
    }
}

/// The most of a log `task logs -o json` reads (or the hint counts).
const MAX_READ: u64 = 64 << 20;

/// Goes through a log of one attempt (0: the latest) a chunk at a time, up to
/// `limit` bytes, holding no more than a chunk: returns how many bytes there were,
/// whether there was more, and the attempt read.
pub(crate) async fn each_chunk(
    client: &mut Client,
    (mut which, stderr): (Which<'_>, bool),
    limit: u64,
    mut chunk: impl FnMut(&[u8]),
) -> anyhow::Result<(u64, bool, u32)> {
    let mut read = 0u64;
    loop {
        let resp = client.read_log(which.request(stderr, read, 1 << 20)).await.api()?;
        which.attempt = resp.attempt;
        if resp.data.is_empty() {
            return Ok((read, false, which.attempt));
        }
        let room = usize::try_from(limit - read).unwrap_or(usize::MAX).min(resp.data.len());
        chunk(&resp.data[..room]);
        read += room as u64;
        if read >= limit {
            return Ok((read, true, which.attempt));
        }
    }
}

/// A whole log of one attempt (0: the latest), up to `limit` bytes: its bytes,
/// whether there was more, and the attempt read.
pub(crate) async fn read_whole(
    client: &mut Client,
    of: (Which<'_>, bool),
    limit: u64,
) -> anyhow::Result<(Vec<u8>, bool, u32)> {
    let mut data = Vec::new();
    let (_, more, attempt) = each_chunk(client, of, limit, |c| data.extend_from_slice(c)).await?;
    Ok((data, more, attempt))
}

/// `task logs -o json`: both streams of the attempt, with their sizes.
pub(super) async fn logs_json(client: &mut Client, mut which: Which<'_>) -> anyhow::Result<()> {
    let (stdout, out_cut, attempt) = read_whole(client, (which, false), MAX_READ).await?;
    which.attempt = attempt;
    let (stderr, err_cut, _) = read_whole(client, (which, true), MAX_READ).await?;
    let order = client.read_log(which.order()).await.api()?.order;
    output::json(&json!({
        "job": which.job,
        "task": which.task,
        "attempt": attempt,
        "rank": which.rank,
        "stdout": String::from_utf8_lossy(&stdout),
        "stdout_bytes": stdout.len(),
        "stdout_truncated": out_cut,
        "stderr": String::from_utf8_lossy(&stderr),
        "stderr_bytes": stderr.len(),
        "stderr_truncated": err_cut,
        // Stretches, alternately stdout's and stderr's, stdout's first (`--both`).
        "order": (!order.is_empty()).then_some(order),
    }));
    Ok(())
}

/// Prints one stream of a task's output (following it with `follow`); if stdout
/// was empty and stderr is not, says so on stderr, with the command that shows it.
pub(super) async fn print_logs(
    client: &mut Client,
    mut which: Which<'_>,
    stderr: bool,
    follow: bool,
) -> anyhow::Result<()> {
    let mut offset = 0;
    let mut out = std::io::stdout().lock();
    loop {
        let resp = client.read_log(which.request(stderr, offset, 1 << 20)).await.api()?;
        // Stay on one attempt once chosen, so a retry does not splice two outputs.
        if which.attempt == 0 && resp.attempt > 0 {
            which.attempt = resp.attempt;
        }
        out.write_all(&resp.data)?;
        offset = resp.next_offset;
        if !resp.data.is_empty() {
            out.flush()?;
            continue;
        }
        if !follow || resp.complete {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if offset == 0 && !stderr {
        // Counted a chunk at a time, not held.
        let (bytes, more, _) = each_chunk(client, (which, true), MAX_READ, |_| {}).await?;
        if bytes > 0 {
            let size = if more { format!("more than {bytes} bytes") } else { format!("{bytes} bytes") };
            let rank = if which.rank > 0 { format!(" --rank {}", which.rank) } else { String::new() };
            eprintln!(
                "stdout is empty; stderr has {size}: corral task logs {} {}{rank} --stderr",
                which.job, which.task
            );
        }
    }
    Ok(())
}

/// How `--both` marks each line.
const PREFIXES: [&[u8]; 2] = [b"out| ", b"err| "];

/// Writes pieces of output with each line prefixed by its stream; a line one
/// stream left open when the other wrote is ended there, so every line shown has
/// one prefix. Returns whether the last line is open.
fn write_prefixed(out: &mut impl Write, pieces: &[Piece], mut open: Option<bool>) -> std::io::Result<Option<bool>> {
    for piece in pieces {
        if piece.unordered {
            out.flush()?;
            eprintln!("corral: the order of what follows is not known (the attempt is still running, or switched between stdout and stderr more than {} times): stdout's first, then stderr's", corral_types::order::MAX_RUNS);
        }
        for line in piece.data.split_inclusive(|b| *b == b'\n') {
            match open {
                Some(stderr) if stderr == piece.stderr => {}
                Some(_) => {
                    out.write_all(b"\n")?;
                    out.write_all(PREFIXES[usize::from(piece.stderr)])?;
                }
                None => out.write_all(PREFIXES[usize::from(piece.stderr)])?,
            }
            out.write_all(line)?;
            open = (!line.ends_with(b"\n")).then_some(piece.stderr);
        }
    }
    Ok(open)
}

/// `task logs --both`: stdout and stderr line by line, each line prefixed with its
/// stream, in the order the task wrote them when the attempt has ended (the agent
/// noted it); while following a running attempt, in the order they arrive.
pub(super) async fn print_both(client: &mut Client, mut which: Which<'_>, follow: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    // Which attempt, whether it has ended, and then its order.
    let probe = client.read_log(which.order()).await.api()?;
    which.attempt = probe.attempt;
    let ended = probe.ended;
    if ended || !follow {
        let (stdout, _, _) = read_whole(client, (which, false), MAX_READ).await?;
        let (stderr, _, _) = read_whole(client, (which, true), MAX_READ).await?;
        // Asked again once both are read: an attempt that ended meanwhile has its order.
        let order = match ended {
            true => probe.order,
            false => client.read_log(which.order()).await.api()?.order,
        };
        if write_prefixed(&mut out, &interleave(&stdout, &stderr, &order), None)?.is_some() {
            out.write_all(b"\n")?;
        }
        return Ok(out.flush()?);
    }
    // Following: each stream from where it was, stdout's news then stderr's.
    let (mut offsets, mut open, mut done) = ([0u64; 2], None, [false; 2]);
    while !done.iter().all(|d| *d) {
        let mut news = [Vec::new(), Vec::new()];
        for (s, news) in news.iter_mut().enumerate() {
            let resp = client.read_log(which.request(s == 1, offsets[s], 1 << 20)).await.api()?;
            offsets[s] = resp.next_offset;
            done[s] = resp.complete;
            *news = resp.data;
        }
        let pieces: Vec<Piece> = (0..2)
            .filter(|s| !news[*s].is_empty())
            .map(|s| Piece { stderr: s == 1, data: &news[s], unordered: false })
            .collect();
        open = write_prefixed(&mut out, &pieces, open)?;
        out.flush()?;
        if pieces.is_empty() && !done.iter().all(|d| *d) {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    if open.is_some() {
        out.write_all(b"\n")?;
    }
    Ok(out.flush()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(pieces: &[Piece]) -> String {
        let mut out = Vec::new();
        let open = write_prefixed(&mut out, pieces, None).unwrap();
        format!("{}{}", String::from_utf8_lossy(&out), if open.is_some() { "<open>" } else { "" })
    }

    #[test]
    fn every_line_has_its_streams_prefix_and_a_split_line_is_ended() {
        let p = |stderr: bool, data: &'static [u8]| Piece { stderr, data, unordered: false };
        assert_eq!(
            shown(&[p(false, b"a\nb\n"), p(true, b"oops\n"), p(false, b"c\n")]),
            "out| a\nout| b\nerr| oops\nout| c\n"
        );
        // stdout's line is open when stderr writes: it is ended, then resumed with a prefix.
        assert_eq!(
            shown(&[p(false, b"50%"), p(true, b"warn\n"), p(false, b" 100%\n")]),
            "out| 50%\nerr| warn\nout|  100%\n"
        );
        // A line continued by the same stream keeps one prefix.
        assert_eq!(shown(&[p(false, b"ab"), p(false, b"cd\n")]), "out| abcd\n");
        assert_eq!(shown(&[p(true, b"no end")]), "err| no end<open>");
        assert_eq!(shown(&interleave(b"one\ntwo\n", b"mid\n", &[4, 4, 4])), "out| one\nerr| mid\nout| two\n");
    }
}
