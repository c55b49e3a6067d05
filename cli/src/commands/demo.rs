//! `corral demo`: a throwaway coordinator and local pool run a sample array job with
//! a live progress bar, then a summary, then everything is shut down.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use corral_proto::v1 as pb;

use super::job::follow;
use super::up::{ensure_local_pool, start_coordinator};
use crate::client::{self, ApiResult, Client};
use crate::output;
use crate::Exit;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Tasks in the sample job.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    tasks: u32,
    /// Local agents to start.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    nodes: u32,
    /// Slots per agent.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    slots_per_node: u32,
    /// Lines of generated text for the word count.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u32).range(1..=50_000_000))]
    corpus_lines: u32,
}

const MAPPER: &str = r#"tr -s ' ' '\n' | awk 'NF { print $1 "\t1" }'"#;
const REDUCER: &str = r#"awk -F'\t' '{ c[$1] += $2 } END { for (k in c) print k "\t" c[k] }'"#;

/// Writes `lines` lines of text over a few files (word frequencies roughly like a
/// real language's) and returns the files and the counts they should give.
fn write_corpus(
    dir: &std::path::Path,
    lines: u32,
) -> anyhow::Result<(Vec<std::path::PathBuf>, std::collections::BTreeMap<String, u64>)> {
    const WORDS: &[&str] = &[
        "the", "of", "and", "to", "a", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are", "with", "as",
        "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by", "word", "but", "what", "some",
        "we", "can", "out", "other", "were", "all", "there", "when", "up", "use", "your", "how", "said", "an", "each",
        "she", "which", "do", "their", "time", "if", "will", "way", "about", "many", "then", "them", "write", "would",
        "like", "so", "these", "her", "long", "make", "thing", "see", "him", "two", "has", "look", "more", "day",
        "could", "go", "come", "did", "number", "sound", "no", "most", "people", "my", "over", "know", "water", "than",
        "call", "first",
    ];
    let mut seed: u64 = 0x5eed;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut expected = std::collections::BTreeMap::new();
    let mut files = Vec::new();
    let per_file = lines.div_ceil(4);
    for f in 0..4 {
        let mut text = String::new();
        for _ in 0..per_file.min(lines.saturating_sub(f * per_file)) {
            let n = 4 + next() % 9;
            let words: Vec<&str> = (0..n)
                .map(|_| {
                    // Zipf-like: small indices far more often.
                    let r = (next() % 10_000) as f64 / 10_000.0;
                    WORDS[((r * r * r) * WORDS.len() as f64) as usize % WORDS.len()]
                })
                .collect();
            for w in &words {
                *expected.entry(w.to_string()).or_insert(0) += 1;
            }
            text.push_str(&words.join(" "));
            text.push('\n');
        }
        let path = dir.join(format!("corpus-{f}.txt"));
        std::fs::write(&path, text)?;
        files.push(path);
    }
    Ok((files, expected))
}

/// Each task prints a line; every 50th (7, 57, ...) fails its first attempt to show
/// retries.
const SCRIPT: &str = r#"i=$CORRAL_TASK_INDEX
if [ $((i % 50)) -eq 7 ] && [ "$CORRAL_ATTEMPT" = 1 ]; then
  echo "task $i: simulated crash on $CORRAL_NODE_ID" >&2; exit 3
fi
echo "task $i on $CORRAL_NODE_ID (attempt $CORRAL_ATTEMPT): $i squared is $((i * i))"
sleep 0.05"#;

async fn wait_for_nodes(client: &mut Client, pool: &str, want: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let nodes = client.list_nodes(pb::ListNodesRequest { pool: pool.into() }).await.api()?.nodes;
        if nodes.iter().filter(|n| matches!(n.state(), pb::NodeState::Idle | pb::NodeState::Running)).count() >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            let pool = client.get_pool(pb::GetPoolRequest { name: pool.into() }).await.api()?;
            anyhow::bail!("the local agents did not register within 30s ({})", pool.last_error);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl DemoArgs {
    pub async fn run(self) -> anyhow::Result<Exit> {
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        println!("Starting a throwaway coordinator (data in {}) ...", dir.path().display());
        let coordinator = start_coordinator("127.0.0.1:0".parse()?, None, &dir.path().join("data")).await?;
        let url = format!("http://{}", coordinator.addr());
        let result = match super::up::admin_token(&dir.path().join("data")) {
            Ok(token) => self.run_with(&url, &token).await,
            Err(e) => Err(e),
        };
        println!("Shutting down the coordinator and its agents ...");
        coordinator.shutdown().await;
        result
    }

    async fn run_with(&self, url: &str, token: &str) -> anyhow::Result<Exit> {
        let mut client = client::connect(url, Some(token), &Default::default()).await?;
        let pool = "demo";
        ensure_local_pool(&mut client, pool, self.nodes, self.slots_per_node).await?;
        wait_for_nodes(&mut client, pool, self.nodes as usize).await?;
        println!("Pool '{pool}' is up at {url}: {} local agent(s) x {} slot(s).", self.nodes, self.slots_per_node);
        let req = pb::SubmitJobRequest {
            pool: pool.into(),
            name: "squares".into(),
            priority: 0,
            task: Some(pb::TaskSpec {
                argv: vec!["sh".into(), "-c".into(), SCRIPT.into()],
                env: Default::default(),
                slots: 1,
                max_retries: 2,
                timeout_ms: 60_000,
                ..Default::default()
            }),
            is_array: true,
            array_start: 1,
            array_end: self.tasks,
            ..Default::default()
        };
        let started = Instant::now();
        let submitted = client.submit_job(req).await.api()?;
        println!(
            "Submitted job {} with {} tasks (each prints a line; every 50th fails once and is retried).",
            submitted.job_id, submitted.tasks
        );
        let job = follow(&mut client, submitted.job_id, std::io::stderr().is_terminal()).await?;
        let took = started.elapsed();
        self.summary(&mut client, &job, took).await?;
        if job.state() != pb::JobState::Completed {
            return Ok(Exit::Failed);
        }
        self.word_count(url, token, pool, &mut client).await
    }

    /// Part two: a word count over a generated corpus, as a map/reduce job.
    async fn word_count(&self, url: &str, token: &str, pool: &str, client: &mut Client) -> anyhow::Result<Exit> {
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        let (files, expected) = write_corpus(dir.path(), self.corpus_lines)?;
        println!();
        println!(
            "Part two: a word count over {} generated lines in {} files, as a map/reduce job ({} map and {} reduce tasks).",
            self.corpus_lines,
            files.len(),
            self.nodes * 2,
            self.nodes
        );
        let out = dir.path().join("result");
        let args = super::job::mapreduce::MapReduceArgs {
            pool: pool.into(),
            name: "word-count".into(),
            inputs: vec![format!("{}/corpus-*.txt", dir.path().display())],
            map_tasks: self.nodes * 2,
            reduce_tasks: self.nodes,
            mapper: MAPPER.into(),
            reducer: REDUCER.into(),
            combiner: Some(REDUCER.into()),
            max_retries: 1,
            timeout: None,
            priority: 0,
            output_dir: out.clone(),
            no_wait: false,
        };
        let ctx = super::Context {
            coordinator: url.into(),
            format: crate::output::Format::Table,
            token: Some(token.into()),
            tls: Default::default(),
        };
        if let Exit::Failed = args.run(&ctx, client).await? {
            return Ok(Exit::Failed);
        }
        let mut counts: Vec<(String, u64)> = Vec::new();
        for entry in std::fs::read_dir(&out)? {
            for line in std::fs::read_to_string(entry?.path())?.lines() {
                if let Some((word, n)) = line.split_once('\t') {
                    counts.push((word.to_string(), n.parse().unwrap_or(0)));
                }
            }
        }
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let rows: Vec<Vec<String>> = counts.iter().take(8).map(|(w, n)| vec![w.clone(), n.to_string()]).collect();
        crate::output::table(&["WORD", "COUNT"], &rows);
        let got: std::collections::BTreeMap<String, u64> = counts.into_iter().collect();
        if got == expected {
            println!("The counts match a local count of the same text, word for word ({} distinct words).", got.len());
            println!();
            println!("Every task ran, every attempt is recorded. Try it yourself: `corral up`, then `corral job submit --help`.");
            Ok(Exit::Ok)
        } else {
            println!("The counts do NOT match a local count of the same text: this is a bug, please report it.");
            Ok(Exit::Failed)
        }
    }

    async fn summary(&self, client: &mut Client, job: &pb::Job, took: Duration) -> anyhow::Result<()> {
        let c = job.counts.unwrap_or_default();
        println!();
        println!(
            "Job {} {} in {:.2}s: {} succeeded, {} failed ({:.0} tasks/s).",
            job.id,
            job.state().as_word(),
            took.as_secs_f64(),
            c.succeeded,
            c.failed,
            f64::from(c.succeeded + c.failed) / took.as_secs_f64()
        );
        let mut per_node: BTreeMap<String, u32> = BTreeMap::new();
        let mut retried = Vec::new();
        for index in job.array_start..=job.array_end {
            let task =
                client.get_task(pb::GetTaskRequest { job_id: job.id, index, name: String::new() }).await.api()?;
            if let Some(last) = task.attempts.last() {
                *per_node.entry(last.node_id.clone()).or_default() += 1;
            }
            if task.attempts.len() > 1 {
                retried.push(index);
            }
        }
        let rows: Vec<Vec<String>> = per_node.iter().map(|(n, c)| vec![n.clone(), c.to_string()]).collect();
        output::table(&["NODE", "TASKS"], &rows);
        if let Some(&index) = retried.first() {
            println!();
            println!(
                "{} task(s) failed once and succeeded on retry: {:?}. Task {index}, attempt by attempt:",
                retried.len(),
                retried
            );
            for attempt in 1..=2 {
                for stderr in [true, false] {
                    let log = client
                        .read_log(pb::ReadLogRequest {
                            job_id: job.id,
                            index,
                            attempt,
                            stderr,
                            offset: 0,
                            max_bytes: 4096,
                            ..Default::default()
                        })
                        .await
                        .api()?;
                    let text = String::from_utf8_lossy(&log.data);
                    if !text.trim().is_empty() {
                        println!("  attempt {attempt} {}: {}", if stderr { "stderr" } else { "stdout" }, text.trim());
                    }
                }
            }
        }
        Ok(())
    }
}
