//! The peer engine: one download, through the swarm or, failing that, from the source.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use odonata_proto::messages::{
    Assignment, PieceDone, PieceFailed, RegisterRequest, SyncRequest, TaskState,
};
use odonata_proto::{PeerId, TaskId, TaskKey};
use odonata_source::HttpSource;
use odonata_storage::{Store, TaskData, TaskMeta};
use odonata_transfer::{Limiter, PieceClient};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::api::{DownloadRequest, Event, Outcome, Via};
use crate::control::{local_ip_towards, ControlClient, ControlError};
use crate::export;

/// Long-polls in a row with no work, the task complete at the seed, before we give up.
const IDLE_ROUNDS_BEFORE_STUCK: u32 = 10;

/// Why a download failed. Each renders as one line for the user.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DownloadError {
    /// The request itself is wrong (URL, header, output path).
    #[error("{0}")]
    BadRequest(String),
    /// The source refused or failed, seen by the seed or directly.
    #[error("{message}")]
    Source {
        /// One line, naming the URL and status.
        message: String,
        /// HTTP status, when the source answered.
        status: Option<u16>,
    },
    /// The swarm failed and the user forbade the source.
    #[error("P2P download failed and --notbs forbids going to the source: {0}")]
    NoSource(String),
    /// The content does not match the digest the user gave.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    Digest {
        /// What the user asked for.
        expected: String,
        /// What the content hashes to.
        actual: String,
    },
    /// Writing the output failed.
    #[error("{0}")]
    Io(String),
    /// The client went away before the output was written.
    #[error("cancelled")]
    Cancelled,
    /// The swarm could not deliver (the caller may go to the source itself).
    #[error("P2P download failed: {0}")]
    Swarm(String),
}

/// Why the swarm could not deliver (the caller may fall back to the source).
#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum P2pError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("storage: {0}")]
    Storage(String),
    #[error("no peer can serve piece(s) {0:?} any more")]
    Stuck(Vec<u32>),
    #[error("{0}")]
    SourceFailed(String),
}

impl P2pError {
    /// The source answered the supernode with an error status (after the supernode's own
    /// retries): going there ourselves cannot help, and N peers doing so is the request
    /// storm the supernode's single-flight exists to prevent.
    fn source_refusal(&self) -> Option<DownloadError> {
        match self {
            P2pError::Control(ControlError::Source {
                message,
                status: Some(s),
            }) if (400..600).contains(s) => Some(DownloadError::Source {
                message: message.clone(),
                status: Some(*s),
            }),
            _ => None,
        }
    }
}

/// Static settings of an engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Default supernodes (`host:port`), nearest first.
    pub supernodes: Vec<String>,
    /// Pieces fetched at once.
    pub parallel: usize,
    /// Whole-host download limit, bytes per second.
    pub total_limit: Option<u64>,
    /// IP other peers reach us by; None: the route towards the supernode decides.
    pub advertise_ip: Option<std::net::IpAddr>,
    /// Port of our upload server.
    pub upload_port: u16,
    /// Leave each task when done (an in-process dfget that exits afterwards).
    pub leave_when_done: bool,
}

type TaskFuture = Shared<BoxFuture<'static, Result<P2pDone, P2pError>>>;

#[derive(Clone)]
struct P2pDone {
    data: Arc<TaskData>,
    reused: u32,
    from_peers: u32,
    from_seed: u32,
}

struct Inner {
    cfg: EngineConfig,
    store: Arc<Store>,
    control: ControlClient,
    pieces: PieceClient,
    source: HttpSource,
    peer_id: PeerId,
    total_limit: Option<Limiter>,
    running: Mutex<HashMap<TaskId, TaskFuture>>,
    stats: Arc<EngineStats>,
}

/// Counters of what an engine moved.
#[derive(Default, Debug)]
pub struct EngineStats {
    /// Bytes fetched from peers and seeds.
    pub p2p_bytes: AtomicU64,
    /// Bytes fetched directly from sources (fallback).
    pub source_bytes: AtomicU64,
    /// Downloads completed.
    pub downloads: AtomicU64,
    /// Downloads failed.
    pub failures: AtomicU64,
}

/// The peer engine; cheap to clone.
#[derive(Clone)]
pub struct Engine(Arc<Inner>);

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "peer".into())
}

impl Engine {
    /// An engine over an opened store.
    pub fn new(cfg: EngineConfig, store: Arc<Store>) -> Result<Self, DownloadError> {
        let source =
            HttpSource::new(Default::default()).map_err(|e| DownloadError::Io(e.to_string()))?;
        let total_limit = cfg.total_limit.map(odonata_transfer::limiter);
        Ok(Self(Arc::new(Inner {
            peer_id: PeerId::generate(&hostname(), rand::random()),
            cfg,
            store,
            control: ControlClient::new(),
            pieces: PieceClient::new(Duration::from_secs(20)),
            source,
            total_limit,
            running: Mutex::new(HashMap::new()),
            stats: Arc::new(EngineStats::default()),
        })))
    }

    /// This engine's peer id.
    pub fn peer_id(&self) -> &PeerId {
        &self.0.peer_id
    }

    /// Counters.
    pub fn stats(&self) -> Arc<EngineStats> {
        self.0.stats.clone()
    }

    /// Runs one download to its end, sending events to `events`.
    pub async fn download(
        &self,
        req: DownloadRequest,
        events: mpsc::Sender<Event>,
    ) -> Result<Outcome, DownloadError> {
        let r = self.download_inner(req, &events).await;
        let counter = if r.is_ok() {
            &self.0.stats.downloads
        } else {
            &self.0.stats.failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
        r
    }

    async fn download_inner(
        &self,
        req: DownloadRequest,
        events: &mpsc::Sender<Event>,
    ) -> Result<Outcome, DownloadError> {
        let key = TaskKey::new(&req.url, &req.filter)
            .map_err(|e| DownloadError::BadRequest(e.to_string()))?;
        HttpSource::header_map(&req.headers)
            .map_err(|e| DownloadError::BadRequest(e.to_string()))?;
        export::check_output(&req.output)?;
        let nodes = if req.supernodes.is_empty() {
            self.0.cfg.supernodes.clone()
        } else {
            req.supernodes.clone()
        };
        let mut limits: Vec<Limiter> = self.0.total_limit.iter().cloned().collect();
        if let Some(l) = req.rate_limit {
            limits.push(odonata_transfer::limiter(l));
        }
        let mut p2p = if nodes.is_empty() {
            Err(P2pError::Control(ControlError::NoSupernode))
        } else {
            self.p2p(&key, &req, None, nodes.clone(), limits.clone(), events)
                .await
        };
        // An earlier output is a hard link to this file and may have been edited in place:
        // check the cached bytes before handing them out again, and fetch what no longer
        // verifies (once; the second round starts from a freshly verified store).
        if let Ok(done) = &p2p {
            if done.data.shared_with_output() {
                let d = done.data.clone();
                let dropped = tokio::task::spawn_blocking(move || d.reverify())
                    .await
                    .map_err(|e| DownloadError::Io(e.to_string()))?
                    .map_err(|e| DownloadError::Io(e.to_string()))?;
                if dropped > 0 {
                    tracing::warn!(
                        dropped,
                        "cached copy was edited through an earlier output; fetching those pieces again"
                    );
                    p2p = self
                        .p2p(&key, &req, None, nodes, limits.clone(), events)
                        .await;
                }
            }
        }
        match p2p {
            Ok(done) => {
                if events.is_closed() {
                    return Err(DownloadError::Cancelled);
                }
                let data = done.data.clone();
                let output = req.output.clone();
                let digest = req.digest.clone();
                let range = req.range;
                let started = Instant::now();
                tracing::debug!("all pieces held; exporting");
                let bytes = tokio::task::spawn_blocking(move || match range {
                    Some(r) => export::export_range(&data, &output, r, digest.as_ref()),
                    None => export::export(&data, &output, digest.as_ref()),
                })
                .await
                .map_err(|e| DownloadError::Io(e.to_string()))??;
                tracing::debug!(ms = started.elapsed().as_millis() as u64, "exported");
                Ok(Outcome {
                    bytes,
                    via: Via::P2p,
                    reused_pieces: done.reused,
                    from_peers: done.from_peers,
                    from_seed: done.from_seed,
                    fallback_reason: None,
                })
            }
            Err(e) => {
                if let Some(refusal) = e.source_refusal() {
                    return Err(refusal);
                }
                if req.no_source {
                    return Err(DownloadError::NoSource(e.to_string()));
                }
                tracing::warn!(url = %key.url, error = %e, "P2P failed, falling back to the source");
                let bytes = export::from_source(
                    &self.0.source,
                    &key.url,
                    &req,
                    &limits,
                    events,
                    &self.0.stats.source_bytes,
                )
                .await?;
                Ok(Outcome {
                    bytes,
                    via: Via::Source,
                    reused_pieces: 0,
                    from_peers: 0,
                    from_seed: 0,
                    fallback_reason: Some(e.to_string()),
                })
            }
        }
    }

    /// Joins the swarm for the task named by `identity` (a digest, e.g.
    /// `oci-blob:sha256:HEX`; None: the URL) with `req.url` as its source, and returns the
    /// task's data once
    /// every piece is held, writing no output: the registry mirror streams pieces from the
    /// store while this runs. The run goes on to the end even if the caller drops this.
    pub async fn swarm(
        &self,
        req: &DownloadRequest,
        identity: Option<&str>,
    ) -> Result<Arc<TaskData>, DownloadError> {
        let key = TaskKey::new(&req.url, &req.filter)
            .map_err(|e| DownloadError::BadRequest(e.to_string()))?;
        HttpSource::header_map(&req.headers)
            .map_err(|e| DownloadError::BadRequest(e.to_string()))?;
        if let Some(i) = identity {
            TaskId::for_identity(i).map_err(|e| DownloadError::BadRequest(e.to_string()))?;
        }
        let nodes = if req.supernodes.is_empty() {
            self.0.cfg.supernodes.clone()
        } else {
            req.supernodes.clone()
        };
        if nodes.is_empty() {
            return Err(DownloadError::Swarm(ControlError::NoSupernode.to_string()));
        }
        let limits: Vec<Limiter> = self.0.total_limit.iter().cloned().collect();
        // Nobody listens to progress here: the ticker stops at its first send.
        let (events, _) = mpsc::channel(1);
        match self.p2p(&key, req, identity, nodes, limits, &events).await {
            Ok(done) => Ok(done.data),
            Err(e) => Err(e
                .source_refusal()
                .unwrap_or(DownloadError::Swarm(e.to_string()))),
        }
    }

    /// Tasks this engine is running in the swarm right now.
    pub fn running_tasks(&self) -> usize {
        self.0
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Joins the swarm for `key` (sharing a run already going on this host).
    async fn p2p(
        &self,
        key: &TaskKey,
        req: &DownloadRequest,
        identity: Option<&str>,
        nodes: Vec<String>,
        limits: Vec<Limiter>,
        events: &mpsc::Sender<Event>,
    ) -> Result<P2pDone, P2pError> {
        let id = match identity {
            Some(i) => TaskId::for_identity(i).map_err(|e| P2pError::Storage(e.to_string()))?,
            None => key.id(),
        };
        let fut = {
            let mut running = self.0.running.lock().unwrap_or_else(|p| p.into_inner());
            running
                .entry(id.clone())
                .or_insert_with(|| {
                    let me = self.clone();
                    let reg = RegisterRequest {
                        url: req.url.clone(),
                        headers: req.headers.clone(),
                        filter: req.filter.clone(),
                        digest: req.digest.clone(),
                        peer_id: self.0.peer_id.clone(),
                        peer_addr: String::new(),
                        task_identity: identity.map(str::to_owned),
                    };
                    let span = tracing::info_span!("task", task = ?id);
                    let id2 = id.clone();
                    async move {
                        let r = me.clone().run_task(reg, nodes, limits).await;
                        me.0.running
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&id2);
                        r
                    }
                    .instrument(span)
                    .boxed()
                    .shared()
                })
                .clone()
        };
        // Report progress from the store while the run goes on.
        let store = self.0.store.clone();
        let ev = events.clone();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                if let Some(d) = store.get(&id) {
                    let e = Event::Progress {
                        done: d.held_bytes(),
                        total: d.layout().content_length,
                    };
                    if ev.send(e).await.is_err() {
                        return;
                    }
                }
            }
        });
        let r = fut.await;
        ticker.abort();
        if let Ok(d) = &r {
            let _ = events
                .send(Event::Progress {
                    done: d.data.held_bytes(),
                    total: d.data.layout().content_length,
                })
                .await;
        }
        r
    }

    fn advertise(&self, node: &str) -> String {
        let ip = self
            .0
            .cfg
            .advertise_ip
            .or_else(|| local_ip_towards(node))
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
        SocketAddr::new(ip, self.0.cfg.upload_port).to_string()
    }

    async fn register(
        &self,
        reg: &mut RegisterRequest,
        nodes: &[String],
    ) -> Result<(String, Arc<TaskData>, TaskId), P2pError> {
        // The advertised address depends on which supernode we reach: try each in turn.
        let mut last = P2pError::Control(ControlError::NoSupernode);
        for (i, node) in nodes.iter().enumerate() {
            reg.peer_addr = self.advertise(node);
            match self.0.control.register(&nodes[i..=i], reg).await {
                Ok((node, resp)) => {
                    let meta = TaskMeta {
                        task_id: resp.task_id.clone(),
                        url: TaskKey::new(&reg.url, &reg.filter)
                            .map(|k| k.canonical)
                            .unwrap_or_default(),
                        layout: resp.layout,
                    };
                    let store = self.0.store.clone();
                    let data = tokio::task::spawn_blocking(move || store.prepare(meta))
                        .await
                        .map_err(|e| P2pError::Storage(e.to_string()))?
                        .map_err(|e| P2pError::Storage(e.to_string()))?;
                    return Ok((node, data, resp.task_id));
                }
                Err(e @ ControlError::Unreachable { .. }) => last = e.into(),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last)
    }

    /// The swarm download loop for one task.
    async fn run_task(
        self,
        mut reg: RegisterRequest,
        nodes: Vec<String>,
        limits: Vec<Limiter>,
    ) -> Result<P2pDone, P2pError> {
        let (mut node, data, task) = self.register(&mut reg, &nodes).await?;
        let parallel = self.0.cfg.parallel.max(1);
        let mut jobs: JoinSet<JobResult> = JoinSet::new();
        let mut rep = Reports::default();
        let mut idle_rounds = 0u32;
        let mut sync_errors = 0u32;
        // One long-poll for work is kept outstanding while slots are free, even with
        // transfers running: a parent's slot that frees up is then taken within one round
        // trip instead of when one of our own transfers happens to end. Reports of ended
        // transfers do not wait for it; they go at once on a short sync of their own.
        // A set of at most one: dropping the loop (a cancelled download) aborts the poll.
        let mut poll: JoinSet<PollResult> = JoinSet::new();
        loop {
            rep.lost.extend(data.take_lost());
            let complete = data.is_complete();
            if complete && poll.is_empty() {
                // Every piece is on disk; collect the last transfers so they are reported.
                while let Some(r) = jobs.join_next().await {
                    if let Ok(r) = r {
                        rep.absorb(r);
                    }
                }
            }
            if poll.is_empty() {
                let want = if complete {
                    0
                } else {
                    (parallel - jobs.len()) as u32
                };
                if want > 0 || complete || rep.pending() {
                    let sreq = rep.request(&self.0.peer_id, want, if want > 0 { 2000 } else { 0 });
                    let (me, node, task) = (self.clone(), node.clone(), task.clone());
                    poll.spawn(async move {
                        let res = me.0.control.sync(&node, &task, &sreq).await;
                        PollResult { sreq, res }
                    });
                }
            } else if rep.pending() {
                let sreq = rep.request(&self.0.peer_id, 0, 0);
                if let Err(e) = self.0.control.sync(&node, &task, &sreq).await {
                    tracing::debug!(error = %e, "report failed; it goes with the next poll");
                    rep.restore(sreq);
                }
            }
            let event = tokio::select! {
                Some(r) = poll.join_next(), if !poll.is_empty() => Wake::Polled(r),
                Some(r) = jobs.join_next(), if !jobs.is_empty() => Wake::Job(r),
                // Not reached (a free slot always opens a poll); the next round would.
                else => continue,
            };
            let PollResult { sreq, res } = match event {
                Wake::Job(r) => {
                    if let Ok(r) = r {
                        rep.absorb(r);
                    }
                    while let Some(Ok(r)) = jobs.try_join_next() {
                        rep.absorb(r);
                    }
                    if let Some(e) = rep.local_error.take() {
                        jobs.shutdown().await;
                        poll.abort_all();
                        return Err(P2pError::Storage(e));
                    }
                    continue;
                }
                Wake::Polled(r) => r.map_err(|e| P2pError::Storage(format!("sync task: {e}")))?,
            };
            let resp = match res {
                Ok(r) => {
                    sync_errors = 0;
                    r
                }
                Err(e) => {
                    sync_errors += 1;
                    tracing::warn!(error = %e, attempt = sync_errors, "sync failed");
                    if sync_errors > 3 {
                        jobs.shutdown().await;
                        return Err(e.into());
                    }
                    // Keep the reports for the next attempt; re-register in case the
                    // supernode restarted and forgot us.
                    rep.restore(sreq);
                    tokio::time::sleep(Duration::from_millis(300 * u64::from(sync_errors))).await;
                    if let Ok((n, _, _)) = self.register(&mut reg, &nodes).await {
                        node = n;
                    }
                    continue;
                }
            };
            if let Some(len) = resp.layout.content_length {
                if data.layout().content_length.is_none() {
                    let d = data.clone();
                    tokio::task::spawn_blocking(move || d.set_content_length(len))
                        .await
                        .map_err(|e| P2pError::Storage(e.to_string()))?
                        .map_err(|e| P2pError::Storage(e.to_string()))?;
                }
            }
            let got_work = !resp.assignments.is_empty();
            for a in resp.assignments {
                if data.piece(a.num).is_some_and(|(_, d)| d == a.digest) {
                    rep.reused += 1;
                    rep.finished.push(PieceDone {
                        num: a.num,
                        parent: None,
                        cost_ms: 0,
                    });
                    continue;
                }
                let me = self.clone();
                let data = data.clone();
                let task = task.clone();
                let limits = limits.clone();
                jobs.spawn(async move { me.fetch_piece(&task, &data, a, &limits).await });
            }
            if data.is_complete() && jobs.is_empty() {
                if rep.pending() {
                    continue; // the last reports (or reused pieces) go out, then we stop
                }
                break;
            }
            if got_work || !jobs.is_empty() || sreq.wait_ms == 0 {
                idle_rounds = 0;
                continue;
            }
            match &resp.state {
                TaskState::Running => idle_rounds = 0,
                TaskState::Done | TaskState::Failed { .. } => {
                    idle_rounds += 1;
                    // Each idle round is a long-poll that found nothing for 2 s;
                    // parents free up as transfers end, so only a long drought is fatal.
                    if idle_rounds > IDLE_ROUNDS_BEFORE_STUCK {
                        if let TaskState::Failed { message, .. } = &resp.state {
                            return Err(P2pError::SourceFailed(message.clone()));
                        }
                        let layout = data.layout();
                        let missing: Vec<u32> = (0..layout.piece_count().unwrap_or(0))
                            .filter(|n| data.piece(*n).is_none())
                            .take(8)
                            .collect();
                        return Err(P2pError::Stuck(missing));
                    }
                }
            }
        }
        if self.0.cfg.leave_when_done {
            self.0.control.leave(&node, &task, &self.0.peer_id).await;
        }
        Ok(P2pDone {
            data,
            reused: rep.reused,
            from_peers: rep.from_peers,
            from_seed: rep.from_seed,
        })
    }

    /// Tries the parents of one assignment in order; writes the first verified copy.
    async fn fetch_piece(
        &self,
        task: &TaskId,
        data: &Arc<TaskData>,
        a: Assignment,
        limits: &[Limiter],
    ) -> JobResult {
        let mut failed = Vec::new();
        for (i, parent) in a.parents.iter().enumerate() {
            let start = Instant::now();
            match self
                .0
                .pieces
                .fetch_into(&parent.addr, task, a.num, a.len, a.digest, limits, data)
                .await
            {
                Ok(len) => {
                    self.0
                        .stats
                        .p2p_bytes
                        .fetch_add(u64::from(len), Ordering::Relaxed);
                    let is_seed = parent.peer_id.0.starts_with("seed-");
                    tracing::debug!(piece = a.num, parent = %parent.addr, ms = start.elapsed().as_millis() as u64, "fetched");
                    return JobResult {
                        num: a.num,
                        done: Some((
                            PieceDone {
                                num: a.num,
                                parent: Some(parent.peer_id.clone()),
                                cost_ms: start.elapsed().as_millis() as u32,
                            },
                            is_seed,
                        )),
                        failed,
                        local_error: None,
                    };
                }
                Err(e @ odonata_transfer::FetchError::Local { .. }) => {
                    // Our disk, not the parent: trying others would fail the same way.
                    tracing::error!(piece = a.num, error = %e, "storing piece failed");
                    return JobResult {
                        num: a.num,
                        done: None,
                        failed,
                        local_error: Some(e.to_string()),
                    };
                }
                Err(e) => {
                    tracing::warn!(piece = a.num, parent = %parent.peer_id, attempt = i, error = %e, "piece fetch failed");
                    failed.push(PieceFailed {
                        num: a.num,
                        parent: parent.peer_id.clone(),
                        reason: e.reason(),
                    });
                }
            }
        }
        JobResult {
            num: a.num,
            done: None,
            failed,
            local_error: None,
        }
    }

    /// The store behind this engine.
    pub fn store(&self) -> &Arc<Store> {
        &self.0.store
    }
}

struct JobResult {
    num: u32,
    done: Option<(PieceDone, bool)>,
    failed: Vec<PieceFailed>,
    /// Our own storage failed: the swarm cannot help, stop.
    local_error: Option<String>,
}

/// A finished sync and the request it carried (its reports are kept if it failed).
struct PollResult {
    sreq: SyncRequest,
    res: Result<odonata_proto::messages::SyncResponse, ControlError>,
}

/// What woke the task loop.
enum Wake {
    Polled(Result<PollResult, tokio::task::JoinError>),
    Job(Result<JobResult, tokio::task::JoinError>),
}

/// What finished transfers tell the supernode at the next sync, and the tallies.
#[derive(Default)]
struct Reports {
    finished: Vec<PieceDone>,
    failed: Vec<PieceFailed>,
    released: Vec<u32>,
    lost: Vec<u32>,
    reused: u32,
    from_peers: u32,
    from_seed: u32,
    local_error: Option<String>,
}

impl Reports {
    /// Whether reports are waiting to be sent.
    fn pending(&self) -> bool {
        !(self.finished.is_empty()
            && self.failed.is_empty()
            && self.released.is_empty()
            && self.lost.is_empty())
    }

    /// A sync request carrying every waiting report.
    fn request(&mut self, peer: &PeerId, want: u32, wait_ms: u32) -> SyncRequest {
        SyncRequest {
            peer_id: peer.clone(),
            finished: std::mem::take(&mut self.finished),
            failed: std::mem::take(&mut self.failed),
            released: std::mem::take(&mut self.released),
            lost: std::mem::take(&mut self.lost),
            want,
            wait_ms,
        }
    }

    /// Takes back the reports of a request that did not arrive.
    fn restore(&mut self, r: SyncRequest) {
        self.finished.extend(r.finished);
        self.failed.extend(r.failed);
        self.released.extend(r.released);
        self.lost.extend(r.lost);
    }

    fn absorb(&mut self, r: JobResult) {
        self.failed.extend(r.failed);
        if r.local_error.is_some() {
            self.local_error = r.local_error;
        }
        match r.done {
            Some((d, seed)) => {
                if seed {
                    self.from_seed += 1;
                } else {
                    self.from_peers += 1;
                }
                self.finished.push(d);
            }
            None => self.released.push(r.num),
        }
    }
}

/// Absolute form of a user's output path (relative to the caller's working directory).
pub fn absolute(output: &Path) -> PathBuf {
    if output.is_absolute() {
        output.to_owned()
    } else {
        std::env::current_dir()
            .map(|d| d.join(output))
            .unwrap_or_else(|_| output.to_owned())
    }
}
