//! The tokio island: one bootstrap for every tokio-based client (rskafka, reqwest, later the
//! AWS SDKs and rdkafka). Such a client does not run on a shard, although shards run tokio
//! too: its work (decompression, SDK signing, retries with back-off, librdkafka's callbacks)
//! would sit between a shard's deliveries, and one slow call would hold every connection of
//! that shard. So each gets a thread of its own with a current-thread tokio runtime, and
//! shards reach it only through a [`Handle`]: a
//! bounded, runtime-agnostic channel of [`Job`]s, each carrying its own reply slot. A full
//! channel makes the caller wait (back-pressure); a stopped island is an error, never a hang.

use std::future::Future;

/// One request to an island and the slot its answer goes to.
pub struct Job<Q, R> {
    pub req: Q,
    reply: async_channel::Sender<R>,
}

/// Where an island puts its answer to one job.
pub struct Reply<R>(async_channel::Sender<R>);

impl<R> Reply<R> {
    /// A caller that gave up (timeout, closed connection) is no error.
    pub fn send(self, r: R) {
        let _ = self.0.try_send(r);
    }
}

impl<Q, R> Job<Q, R> {
    pub fn split(self) -> (Q, Reply<R>) {
        (self.req, Reply(self.reply))
    }
}

/// The island thread stopped (it panicked, or the process is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {0} thread has stopped")]
pub struct IslandGone(pub &'static str);

impl crate::error::Blame for IslandGone {
    fn fault(&self) -> crate::error::Fault {
        crate::error::Fault::Ours
    }
}

/// What a shard holds of an island: cheap to clone, `Send`.
pub struct Handle<Q, R> {
    name: &'static str,
    jobs: async_channel::Sender<Job<Q, R>>,
}

impl<Q, R> Clone for Handle<Q, R> {
    fn clone(&self) -> Self {
        Handle {
            name: self.name,
            jobs: self.jobs.clone(),
        }
    }
}

impl<Q, R> Handle<Q, R> {
    /// Sends a request and awaits the answer; works from any executor.
    pub async fn call(&self, req: Q) -> Result<R, IslandGone> {
        let (tx, rx) = async_channel::bounded(1);
        self.jobs
            .send(Job { req, reply: tx })
            .await
            .map_err(|_| IslandGone(self.name))?;
        rx.recv().await.map_err(|_| IslandGone(self.name))
    }
}

/// A second job queue into an island that [`spawn`] started (its `main` serves both).
pub fn channel<Q, R>(
    name: &'static str,
    depth: usize,
) -> (Handle<Q, R>, async_channel::Receiver<Job<Q, R>>) {
    let (tx, rx) = async_channel::bounded(depth);
    (Handle { name, jobs: tx }, rx)
}

/// Starts the thread `name` with a current-thread tokio runtime running `main` over the jobs
/// channel (`depth` jobs may wait in it). `main` usually spawns a task per job so that one slow
/// answer does not hold up the others.
pub fn spawn<Q, R, F, Fut>(name: &'static str, depth: usize, main: F) -> Handle<Q, R>
where
    Q: Send + 'static,
    R: Send + 'static,
    F: FnOnce(async_channel::Receiver<Job<Q, R>>) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let (tx, rx) = async_channel::bounded(depth);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("tokio runtime for {name}: {e}"));
            rt.block_on(main(rx));
        })
        .unwrap_or_else(|e| panic!("spawn the {name} thread: {e}"));
    Handle { name, jobs: tx }
}
