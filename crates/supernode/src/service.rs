//! Task registry and the control API handlers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use odonata_proto::messages::Header;
use odonata_proto::messages::{
    Assignment, ErrorBody, LeaveRequest, Parent, PeerInfo, RegisterRequest, RegisterResponse,
    SyncRequest, SyncResponse, TaskInfo, TaskState,
};
use odonata_proto::{PeerId, PieceLayout, TaskId, TaskKey};
use odonata_scheduler::TaskSchedule;
use odonata_source::{HttpSource, SourceConfig};
use odonata_storage::Store;
use odonata_transfer::UploadStats;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::SupernodeConfig;
use crate::metrics::Metrics;
use crate::StartError;

/// How long a registration waits for the source's first answer.
const REGISTER_WAIT: Duration = Duration::from_secs(60);
/// Longest long-poll a peer may ask for.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// One version of a URL's content as the supernode sees it.
pub(crate) struct Task {
    pub(crate) id: TaskId,
    /// The URL's own task id (what the cache is keyed by).
    pub(crate) url_id: TaskId,
    pub(crate) key: TaskKey,
    /// Last registration or sync asking for work (ms since the epoch).
    pub(crate) last_active_ms: AtomicU64,
    pub(crate) headers: Vec<odonata_proto::messages::Header>,
    pub(crate) inner: Mutex<TaskInner>,
    /// Woken whenever pieces, holders, load or state change.
    pub(crate) changed: Notify,
}

/// Mutable part of a task.
pub(crate) struct TaskInner {
    pub(crate) sched: TaskSchedule,
    pub(crate) state: TaskState,
    /// None until the source has answered.
    pub(crate) layout: Option<PieceLayout>,
    pub(crate) seeding: bool,
}

impl Task {
    pub(crate) fn lock(&self) -> MutexGuard<'_, TaskInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Shared {
    cfg: SupernodeConfig,
    store: Arc<Store>,
    source: HttpSource,
    cache: crate::cache::Cache,
    tasks: Mutex<HashMap<TaskId, Arc<Task>>>,
    seed_id: PeerId,
    upload_port: u16,
    metrics: Metrics,
}

/// The supernode's state; cheap to clone.
#[derive(Clone)]
pub struct Supernode(Arc<Shared>);

/// An error answer with a JSON body.
struct ApiError(StatusCode, ErrorBody);

impl ApiError {
    fn new(code: StatusCode, msg: impl Into<String>) -> Self {
        Self(
            code,
            ErrorBody {
                error: msg.into(),
                source_status: None,
            },
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("bad request body: {}", r.body_text()),
        )
    }
}

impl Supernode {
    /// Builds the supernode around an opened store.
    pub fn new(
        cfg: SupernodeConfig,
        store: Arc<Store>,
        upload_port: u16,
        upload_stats: Arc<UploadStats>,
    ) -> Result<Self, StartError> {
        let source = HttpSource::new(SourceConfig {
            idle_timeout: cfg.cdn.source_idle_timeout,
            ca_bundle: cfg.cdn.ca_bundle.clone(),
            file_roots: cfg.cdn.file_roots.clone(),
            ..SourceConfig::default()
        })?;
        let cache = crate::cache::Cache::open(&cfg.home)?;
        let host = hostname();
        Ok(Self(Arc::new(Shared {
            cfg,
            store,
            source,
            cache,
            tasks: Mutex::new(HashMap::new()),
            seed_id: PeerId(format!("seed-{host}")),
            upload_port,
            metrics: Metrics::new(upload_stats),
        })))
    }

    fn tasks(&self) -> MutexGuard<'_, HashMap<TaskId, Arc<Task>>> {
        self.0.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The control API.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/v1/tasks", post(register))
            .route("/api/v1/tasks/{id}", get(task_info))
            .route("/api/v1/tasks/{id}/sync", post(sync))
            .route("/api/v1/tasks/{id}/leave", post(leave))
            .route("/healthz", get(|| async { "ok" }))
            .route("/metrics", get(metrics))
            .with_state(self.clone())
            .merge(crate::preheat::router(self.clone()))
    }

    /// Takes back stale assignments now and then, until shutdown.
    pub(crate) async fn expire_loop(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let tasks: Vec<Arc<Task>> = self.tasks().values().cloned().collect();
            let now = Instant::now();
            for t in tasks {
                t.lock().sched.expire(now);
                t.changed.notify_waiters();
            }
        }
    }

    /// The task for version `id` of `key`: the one in memory, or a new one when `fresh`
    /// or none exists.
    pub(crate) fn version_task(
        &self,
        id: &TaskId,
        key: &TaskKey,
        headers: &[Header],
        fresh: bool,
    ) -> Arc<Task> {
        let mut tasks = self.tasks();
        if !fresh {
            if let Some(t) = tasks.get(id) {
                return t.clone();
            }
        }
        let mut sched = TaskSchedule::new(self.0.cfg.scheduler.clone());
        sched.join(&self.0.seed_id, "", true);
        let t = Arc::new(Task {
            id: id.clone(),
            url_id: key.id(),
            key: key.clone(),
            last_active_ms: AtomicU64::new(crate::cache::now_ms()),
            headers: headers.to_vec(),
            inner: Mutex::new(TaskInner {
                sched,
                state: TaskState::Running,
                layout: None,
                seeding: false,
            }),
            changed: Notify::new(),
        });
        tasks.insert(id.clone(), t.clone());
        t
    }

    /// Whether a task is being seeded or downloaded, so it must not be evicted.
    pub(crate) fn in_use(&self, id: &TaskId) -> bool {
        let Some(t) = self.tasks().get(id).cloned() else {
            return false;
        };
        let idle_ms =
            crate::cache::now_ms().saturating_sub(t.last_active_ms.load(Ordering::Relaxed));
        let inner = t.lock();
        inner.seeding || idle_ms < self.0.cfg.cdn.idle_after.as_millis() as u64
    }

    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.0.store
    }

    pub(crate) fn source(&self) -> &HttpSource {
        &self.0.source
    }

    pub(crate) fn cdn(&self) -> crate::cache::CdnConfig {
        self.0.cfg.cdn.clone()
    }

    pub(crate) fn cache(&self) -> &crate::cache::Cache {
        &self.0.cache
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub(crate) fn seed_id(&self) -> &PeerId {
        &self.0.seed_id
    }

    fn task(&self, id: &str) -> Result<Arc<Task>, ApiError> {
        let id =
            TaskId::parse(id).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
        self.tasks()
            .get(&id)
            .cloned()
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("unknown task {id}")))
    }

    /// The seed's upload address as the asking peer can reach it.
    fn seed_addr(&self, headers: &HeaderMap) -> String {
        let port = self.0.upload_port;
        if let Some(ip) = self.0.cfg.advertise_ip {
            return SocketAddr::new(ip, port).to_string();
        }
        // The peer reached us by the Host it named; the upload port is on the same host.
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
            .map(|a| a.host().to_owned());
        match host {
            Some(h) if h.contains(':') && !h.starts_with('[') => format!("[{h}]:{port}"),
            Some(h) => format!("{h}:{port}"),
            None => format!("127.0.0.1:{port}"),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "supernode".into())
}

/// Waits for `cond` to hold, re-checking whenever the task changes, up to `limit`.
pub(crate) async fn wait_until(
    task: &Task,
    limit: Duration,
    mut cond: impl FnMut(&mut TaskInner) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let notified = task.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if cond(&mut task.lock()) {
            return true;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return cond(&mut task.lock());
        }
    }
}

fn failed_error(state: &TaskState) -> Option<ApiError> {
    match state {
        TaskState::Failed {
            message,
            source_status,
        } => Some(ApiError(
            StatusCode::BAD_GATEWAY,
            ErrorBody {
                error: message.clone(),
                source_status: *source_status,
            },
        )),
        _ => None,
    }
}

async fn register(
    State(node): State<Supernode>,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> Result<Json<RegisterResponse>, ApiError> {
    let Json(req) = body?;
    let mut key = TaskKey::new(&req.url, &req.filter)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    // Content named by an explicit identity (an OCI blob digest) is one task whatever URL
    // brought it; the daemons derive the same id (TaskId::for_identity).
    if let Some(identity) = &req.task_identity {
        key = key
            .with_identity(identity)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    }
    if req.peer_addr.parse::<SocketAddr>().is_err() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("peer_addr '{}' is not IP:PORT", req.peer_addr),
        ));
    }
    HttpSource::header_map(&req.headers)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    node.0.metrics.registrations.inc();
    let task = crate::cache::resolve(&node, key, req.headers.clone())
        .await
        .map_err(|f| {
            ApiError(
                f.code,
                ErrorBody {
                    error: f.message,
                    source_status: f.source_status,
                },
            )
        })?;
    task.last_active_ms
        .store(crate::cache::now_ms(), Ordering::Relaxed);
    if let Some(d) = node.store().get(&task.id) {
        d.touch();
    }
    let ready = wait_until(&task, REGISTER_WAIT, |i| {
        i.layout.is_some() || matches!(i.state, TaskState::Failed { .. })
    })
    .await;
    let mut inner = task.lock();
    if let Some(e) = failed_error(&inner.state) {
        // Pieces cut before a failure are still good; only refuse when there are none.
        if inner.layout.is_none() || inner.sched.pieces_known() == 0 {
            return Err(e);
        }
    }
    let Some(layout) = inner.layout.filter(|_| ready) else {
        return Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("source {} did not answer in time", task.key.url),
        ));
    };
    inner.sched.join_replacing(&req.peer_id, &req.peer_addr);
    Ok(Json(RegisterResponse {
        task_id: task.id.clone(),
        layout,
    }))
}

async fn sync(
    State(node): State<Supernode>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<SyncRequest>, JsonRejection>,
) -> Result<Json<SyncResponse>, ApiError> {
    let Json(req) = body?;
    let task = node.task(&id)?;
    let want = req.want.min(64);
    let now = Instant::now();
    let mut assigned = {
        let mut inner = task.lock();
        if !inner.sched.knows(&req.peer_id) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "peer {} is not registered for task {}",
                    req.peer_id, task.id
                ),
            ));
        }
        inner.sched.touch(&req.peer_id);
        if req.want > 0 {
            task.last_active_ms
                .store(crate::cache::now_ms(), Ordering::Relaxed);
        }
        for d in &req.finished {
            inner.sched.finished(&req.peer_id, d);
        }
        for f in &req.failed {
            node.0.metrics.piece_failures.inc();
            inner.sched.failed(&req.peer_id, f);
        }
        for n in &req.released {
            inner.sched.release(&req.peer_id, *n);
        }
        for n in &req.lost {
            inner.sched.lost(&req.peer_id, *n);
        }
        inner.sched.assign(&req.peer_id, want, now)
    };
    if !(req.finished.is_empty()
        && req.failed.is_empty()
        && req.released.is_empty()
        && req.lost.is_empty())
    {
        task.changed.notify_waiters();
    }
    if assigned.is_empty() && want > 0 && req.wait_ms > 0 {
        let limit = Duration::from_millis(u64::from(req.wait_ms)).min(MAX_WAIT);
        let peer = req.peer_id.clone();
        wait_until(&task, limit, |inner| {
            assigned = inner.sched.assign(&peer, want, Instant::now());
            // A failed seed with nothing cut will never have work: answer at once.
            let hopeless =
                matches!(inner.state, TaskState::Failed { .. }) && inner.sched.pieces_known() == 0;
            // A peer that reported its last piece on another request has nothing to wait for.
            let done = matches!(inner.state, TaskState::Done) && inner.sched.holds_all(&peer);
            !assigned.is_empty() || hopeless || done
        })
        .await;
    }
    let seed_addr = node.seed_addr(&headers);
    let inner = task.lock();
    let layout = inner.layout.unwrap_or(PieceLayout {
        piece_size: odonata_proto::piece::UNKNOWN_LENGTH_PIECE_SIZE,
        content_length: None,
    });
    let piece_count = match inner.state {
        TaskState::Done => layout.piece_count(),
        _ => None,
    };
    node.0.metrics.assignments.add(assigned.len() as u64);
    let assignments = assigned
        .into_iter()
        .map(|d| Assignment {
            num: d.num,
            len: d.len,
            digest: d.digest,
            parents: d
                .parents
                .into_iter()
                .map(|(peer_id, addr, is_seed)| Parent {
                    peer_id,
                    addr: if is_seed { seed_addr.clone() } else { addr },
                })
                .collect(),
        })
        .collect();
    Ok(Json(SyncResponse {
        state: inner.state.clone(),
        layout,
        piece_count,
        assignments,
    }))
}

async fn leave(
    State(node): State<Supernode>,
    Path(id): Path<String>,
    body: Result<Json<LeaveRequest>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(req) = body?;
    let task = node.task(&id)?;
    task.lock().sched.leave(&req.peer_id);
    task.changed.notify_waiters();
    Ok(StatusCode::NO_CONTENT)
}

async fn task_info(
    State(node): State<Supernode>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<TaskInfo>, ApiError> {
    let task = node.task(&id)?;
    let seed_addr = node.seed_addr(&headers);
    let inner = task.lock();
    let layout = inner.layout.unwrap_or(PieceLayout {
        piece_size: 0,
        content_length: None,
    });
    Ok(Json(TaskInfo {
        task_id: task.id.clone(),
        url: task.key.canonical.clone(),
        state: inner.state.clone(),
        layout,
        pieces_known: inner.sched.pieces_known(),
        peers: inner
            .sched
            .peers()
            .into_iter()
            .map(|p| PeerInfo {
                addr: if p.is_seed {
                    seed_addr.clone()
                } else {
                    p.addr.clone()
                },
                ..p
            })
            .collect(),
    }))
}

async fn metrics(State(node): State<Supernode>) -> impl IntoResponse {
    let tasks = node.tasks().len();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        node.0.metrics.render(tasks),
    )
}
