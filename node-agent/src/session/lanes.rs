//! The stream's plumbing: the two lanes the agent sends on, and the task that
//! reports results after their output.

use std::pin::Pin;
use std::task::{Context, Poll};

use corral_proto::v1 as pb;
use tokio::sync::{mpsc, watch};

use crate::attempts::Unacked;
use crate::runner::{Lane, Output};

/// The agent's half of its stream: control messages (hello, heartbeats, the start
/// task's end) before anything on the bounded data lane (output and results).
pub(super) struct Lanes {
    pub(super) control: mpsc::UnboundedReceiver<pb::AgentMessage>,
    pub(super) data: mpsc::Receiver<pb::AgentMessage>,
}

impl tokio_stream::Stream for Lanes {
    type Item = pb::AgentMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<pb::AgentMessage>> {
        match self.control.poll_recv(cx) {
            Poll::Ready(Some(msg)) => return Poll::Ready(Some(msg)),
            // The session ended: so does the stream.
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        match self.data.poll_recv(cx) {
            Poll::Ready(Some(msg)) => Poll::Ready(Some(msg)),
            _ => Poll::Pending,
        }
    }
}

/// Sends results on the data lane, each after its output: an attempt whose output
/// went out on this stream is reported at once; any other (it finished while the
/// agent was disconnected, or before this stream opened) has its output shipped
/// again from its directory first, through the same bounded lane. Ends when the
/// lane does.
pub(super) async fn report_results(
    mut reports: mpsc::UnboundedReceiver<(Unacked, bool)>,
    data: mpsc::Sender<pb::AgentMessage>,
    lane: watch::Receiver<Lane>,
) {
    let send = |finished: Vec<pb::TaskResult>| {
        let data = data.clone();
        async move { finished.is_empty() || data.send(pb::AgentMessage { finished, ..Default::default() }).await.is_ok() }
    };
    while let Some(first) = reports.recv().await {
        // Whatever else is waiting goes in the same message: one per batch of
        // short tasks, not one per task.
        let waiting = std::iter::once(first).chain(std::iter::from_fn(|| reports.try_recv().ok()));
        let mut finished = Vec::new();
        for (u, shipped) in waiting.collect::<Vec<_>>() {
            if !shipped {
                // The results before it go first, so each still follows its output.
                if !send(std::mem::take(&mut finished)).await {
                    return;
                }
                if let Some(task) = u.result.task {
                    // A directory already gone was acknowledged meanwhile: only the
                    // result goes again, which the coordinator takes once.
                    if let Ok(mut output) = Output::open(task, u.rank, &u.dir, u.max_output, lane.clone()) {
                        output.ship_all().await;
                    }
                }
            }
            finished.push(u.result);
        }
        if !send(finished).await {
            return;
        }
    }
}

/// Aborts a task when dropped: what a session started ends with it.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
