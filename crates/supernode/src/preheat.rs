//! Preheat: warm the cache ahead of a release. `POST /api/v1/preheat` with a URL (and
//! headers) or an OCI image reference starts seeding every file in the background;
//! `GET /api/v1/preheat/{id}` reports progress and the result.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use odonata_proto::messages::{ErrorBody, Header, TaskState};
use odonata_proto::{TaskId, TaskKey};
use serde::{Deserialize, Serialize};

use crate::service::{wait_until, Supernode};

/// Longest a preheat waits for one file.
const FILE_LIMIT: Duration = Duration::from_secs(3600);
/// Preheat jobs remembered (oldest finished ones are forgotten first).
const MAX_JOBS: usize = 1024;

/// What to preheat: a URL, or an OCI image (its manifest, config and every layer).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PreheatRequest {
    /// A file URL.
    #[serde(default)]
    pub url: Option<String>,
    /// An image reference, `HOST[:PORT]/REPO[:TAG|@DIGEST]`.
    #[serde(default)]
    pub image: Option<String>,
    /// Headers for the source (auth), as for a download.
    #[serde(default)]
    pub headers: Vec<Header>,
    /// Query parameters ignored for identity.
    #[serde(default)]
    pub filter: Vec<String>,
    /// Talk plain HTTP to the registry (default: only for loopback hosts).
    #[serde(default)]
    pub plain_http: Option<bool>,
}

/// Where a preheat job, or one of its files, stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreheatState {
    /// Still working.
    Running,
    /// Every file is cached.
    Done,
    /// Something failed; see the message.
    Failed,
}

/// One file of a preheat job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreheatFile {
    /// Its URL.
    pub url: String,
    /// The task version seeded, once known.
    pub task_id: Option<TaskId>,
    /// Bytes cached so far.
    pub done_bytes: u64,
    /// Its length, once known.
    pub total: Option<u64>,
    /// Where it stands.
    pub state: PreheatState,
    /// Why it failed.
    #[serde(default)]
    pub message: Option<String>,
}

/// A preheat job's progress and result (`GET /api/v1/preheat/{id}`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreheatStatus {
    /// Job id.
    pub id: String,
    /// Where it stands.
    pub state: PreheatState,
    /// Why it failed, one line.
    #[serde(default)]
    pub message: Option<String>,
    /// Every file, once known.
    pub files: Vec<PreheatFile>,
}

type Job = Arc<Mutex<PreheatStatus>>;

struct Jobs {
    node: Supernode,
    jobs: Mutex<HashMap<String, Job>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The preheat API, to merge into the control API.
pub(crate) fn router(node: Supernode) -> Router {
    let st = Arc::new(Jobs {
        node,
        jobs: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/api/v1/preheat", post(start))
        .route("/api/v1/preheat/{id}", get(status))
        .with_state(st)
}

type ApiResult<T> = Result<Json<T>, (StatusCode, Json<ErrorBody>)>;

fn bad(code: StatusCode, msg: String) -> (StatusCode, Json<ErrorBody>) {
    (
        code,
        Json(ErrorBody {
            error: msg,
            source_status: None,
        }),
    )
}

async fn start(
    State(st): State<Arc<Jobs>>,
    body: Result<Json<PreheatRequest>, JsonRejection>,
) -> ApiResult<PreheatStatus> {
    let Json(req) = body.map_err(|r| {
        bad(
            StatusCode::BAD_REQUEST,
            format!("bad request body: {}", r.body_text()),
        )
    })?;
    odonata_source::HttpSource::header_map(&req.headers)
        .map_err(|e| bad(StatusCode::BAD_REQUEST, e.to_string()))?;
    let target = match (&req.url, &req.image) {
        (Some(u), None) => {
            TaskKey::new(u, &req.filter)
                .map_err(|e| bad(StatusCode::BAD_REQUEST, e.to_string()))?;
            Target::Url(u.clone())
        }
        (None, Some(i)) => Target::Image(
            crate::oci::ImageRef::parse(i, req.plain_http)
                .map_err(|e| bad(StatusCode::BAD_REQUEST, e))?,
        ),
        _ => {
            return Err(bad(
                StatusCode::BAD_REQUEST,
                "give exactly one of \"url\" or \"image\"".into(),
            ))
        }
    };
    let id = format!("{:016x}", rand_id());
    let job: Job = Arc::new(Mutex::new(PreheatStatus {
        id: id.clone(),
        state: PreheatState::Running,
        message: None,
        files: Vec::new(),
    }));
    {
        let mut jobs = lock(&st.jobs);
        if jobs.len() >= MAX_JOBS {
            jobs.retain(|_, j| lock(j).state == PreheatState::Running);
        }
        jobs.insert(id.clone(), job.clone());
    }
    let snapshot = lock(&job).clone();
    tokio::spawn(run(st.node.clone(), job, target, req));
    Ok(Json(snapshot))
}

async fn status(State(st): State<Arc<Jobs>>, Path(id): Path<String>) -> ApiResult<PreheatStatus> {
    let job = lock(&st.jobs).get(&id).cloned();
    match job {
        Some(j) => Ok(Json(lock(&j).clone())),
        None => Err(bad(
            StatusCode::NOT_FOUND,
            format!(
                "unknown preheat job '{}'",
                id.chars().take(40).collect::<String>()
            ),
        )),
    }
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

enum Target {
    Url(String),
    Image(crate::oci::ImageRef),
}

async fn run(node: Supernode, job: Job, target: Target, req: PreheatRequest) {
    let image = matches!(target, Target::Image(_));
    let urls = match target {
        Target::Url(u) => vec![u],
        Target::Image(img) => match crate::oci::blob_urls(&node, &img, &req.headers).await {
            Ok(v) => v,
            Err(e) => {
                let mut j = lock(&job);
                j.state = PreheatState::Failed;
                j.message = Some(e);
                return;
            }
        },
    };
    lock(&job).files = urls
        .iter()
        .map(|u| PreheatFile {
            url: u.clone(),
            task_id: None,
            done_bytes: 0,
            total: None,
            state: PreheatState::Running,
            message: None,
        })
        .collect();
    let all = urls.into_iter().enumerate().map(|(i, url)| {
        let (node, job, req) = (node.clone(), job.clone(), req.clone());
        // An image's blobs are keyed by digest, as the registry mirror keys them, so a
        // pull through any daemon's mirror finds the preheated copy.
        let identity = image.then(|| blob_identity(&url)).flatten();
        async move { one(&node, &job, i, &url, identity.as_deref(), &req).await }
    });
    futures_util::future::join_all(all).await;
    let mut j = lock(&job);
    let failed = j.files.iter().find(|f| f.state == PreheatState::Failed);
    match failed {
        Some(f) => {
            j.message = Some(format!(
                "{}: {}",
                f.url,
                f.message.clone().unwrap_or_default()
            ));
            j.state = PreheatState::Failed;
        }
        None => j.state = PreheatState::Done,
    }
}

/// `oci-blob:sha256:HEX` for a registry blob URL (`…/blobs/sha256:HEX`).
fn blob_identity(url: &str) -> Option<String> {
    let digest = url.rsplit_once("/blobs/")?.1;
    let hex = digest.strip_prefix("sha256:")?;
    let ok = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| format!("oci-blob:{digest}"))
}

/// Seeds one file and records its progress in slot `i` of the job.
async fn one(
    node: &Supernode,
    job: &Job,
    i: usize,
    url: &str,
    identity: Option<&str>,
    req: &PreheatRequest,
) {
    let set = |f: &dyn Fn(&mut PreheatFile)| {
        if let Some(file) = lock(job).files.get_mut(i) {
            f(file);
        }
    };
    let key = match TaskKey::new(url, &req.filter).and_then(|k| match identity {
        Some(id) => k.with_identity(id),
        None => Ok(k),
    }) {
        Ok(k) => k,
        Err(e) => {
            set(&|f| {
                f.state = PreheatState::Failed;
                f.message = Some(e.to_string());
            });
            return;
        }
    };
    let task = match crate::cache::resolve(node, key, req.headers.clone()).await {
        Ok(t) => t,
        Err(e) => {
            set(&|f| {
                f.state = PreheatState::Failed;
                f.message = Some(e.message.clone());
            });
            return;
        }
    };
    set(&|f| f.task_id = Some(task.id.clone()));
    let deadline = tokio::time::Instant::now() + FILE_LIMIT;
    loop {
        let finished = wait_until(&task, Duration::from_millis(500), |i| {
            !matches!(i.state, TaskState::Running)
        })
        .await;
        let held = node
            .store()
            .get(&task.id)
            .map(|d| (d.held_bytes(), d.layout().content_length));
        if let Some((done, total)) = held {
            set(&|f| {
                f.done_bytes = done;
                f.total = total;
            });
        }
        if finished {
            let state = task.lock().state.clone();
            set(&|f| match &state {
                TaskState::Failed { message, .. } => {
                    f.state = PreheatState::Failed;
                    f.message = Some(message.clone());
                }
                _ => f.state = PreheatState::Done,
            });
            return;
        }
        if tokio::time::Instant::now() > deadline {
            set(&|f| {
                f.state = PreheatState::Failed;
                f.message = Some(format!("not cached after {}s", FILE_LIMIT.as_secs()));
            });
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::blob_identity;

    #[test]
    fn blob_urls_map_to_the_mirrors_identity() {
        let hex = "ab".repeat(32);
        assert_eq!(
            blob_identity(&format!("http://r:5000/v2/team/app/blobs/sha256:{hex}")),
            Some(format!("oci-blob:sha256:{hex}"))
        );
        assert_eq!(blob_identity("http://r/v2/a/manifests/v1"), None);
        assert_eq!(blob_identity("http://r/v2/a/blobs/sha256:xyz"), None);
    }
}
