//! `lincir serve`: an HTTP JSON API and one web page over an index.
//!
//! - `GET /`: the page (choose or upload a reference, type the change, see the results);
//! - `GET /api/info`: index size, model, whether phi is loaded, the template;
//! - `GET /api/images?offset=&limit=[&containing=ID]`: ids and paths of indexed images, for
//!   choosing a reference;
//! - `GET /api/images/{id}[?max=N]`: the bytes of an indexed image (only indexed files are ever
//!   served), or with `max` a JPEG preview at most N pixels on its long edge (HEIC: always);
//! - `POST /api/search`: multipart (`image` file, or `id`; `text`; `k`) or JSON
//!   `{"id", "text", "k"}` -> hits with scores and timings.
//!
//! Errors are JSON `{"error": "..."}` with a 4xx status (503 with `Retry-After` when the work
//! queue is full); the models are loaded once and shared by concurrent requests. Decoding,
//! encoding and ranking run in a bounded pool (`limits.rs`); docs/RELIABILITY.md has the limits.
//! When `lincir index` updates the index, it is reloaded under the running server (ids are
//! stable, so the page's and clients' ids stay valid).

mod limits;
mod preview;
mod request;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query as UrlQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use lincir::clip::preprocess;
use lincir::search::{Query, Reference, Searcher};
use request::{bad, parse_request, ApiError, RefInput, MAX_K};
use serde::Deserialize;

const PAGE: &str = include_str!("page.html");

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    searcher: crate::search::SearcherArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Largest accepted upload, in MiB.
    #[arg(long, default_value_t = 10)]
    max_upload_mib: usize,
    /// Searches computed at once (decoding, encoding, ranking); default: the number of cores.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    workers: Option<u64>,
    /// Searches waiting for a worker; beyond them a request gets 503 with Retry-After.
    #[arg(long, default_value_t = 16)]
    queue: usize,
    /// Seconds one search may take, upload included; then 503 (the work in progress finishes
    /// in the background, still counted against --workers).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    request_timeout_s: u64,
    /// Open connections at most; more wait in the listen backlog.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Seconds between looks at whether `lincir index` has updated the index; when it has, the
    /// new one is read and searched from then on, without a restart. 0: never.
    #[arg(long, default_value_t = 5)]
    reload_check_s: u64,
}

struct AppState {
    searcher: Searcher,
    max_upload: usize,
    pool: limits::Pool,
}

/// Clients that send headers slower than this are disconnected.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

type Shared = Arc<AppState>;


pub fn run(args: ServeArgs) -> Result<()> {
    let searcher = crate::search::load_searcher(&args.searcher)?;
    // On a GPU each worker thread computes on its own stream: the weights' uploads, queued on
    // this thread's stream, must be complete before any worker reads them.
    searcher.clip.device.synchronize()?;
    let max_upload = args.max_upload_mib * 1024 * 1024;
    let workers = args.workers.map(|w| w as usize).unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let pool = limits::Pool::new(workers, args.queue, Duration::from_secs(args.request_timeout_s));
    let state = Arc::new(AppState { searcher, max_upload, pool });
    if args.reload_check_s > 0 {
        watch_index(state.clone(), Duration::from_secs(args.reload_check_s));
    }
    let app = router(state.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.addr))?;
        let index = state.searcher.index();
        println!(
            "serving {} images of {} on http://{} (phi: {})",
            index.len(),
            index.meta.model,
            listener.local_addr()?,
            if state.searcher.methods.is_empty() { "no: image-only and text-only queries".to_string() } else { state.searcher.method_names().join(", ") }
        );
        limits::serve(listener, app, args.max_connections as usize, HEADER_TIMEOUT).await
    })
}

/// Looks every `every` at whether the index was rewritten, and reloads it (a thread of its own:
/// reading a large `index.json` takes a core for a moment, and searches go on meanwhile).
fn watch_index(state: Shared, every: Duration) {
    std::thread::spawn(move || loop {
        std::thread::sleep(every);
        // A closed stdout or stderr (a service's log gone) must not stop the watching.
        use std::io::Write;
        // A panic while reading a damaged index must not end the watching either.
        let reload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state.searcher.reload_if_changed()))
            .unwrap_or_else(|_| Err(lincir::Error::Invalid("reading the new index failed (a panic, reported above)".into())));
        match reload {
            Ok(Some(r)) => drop(writeln!(std::io::stdout(), "index reloaded: {} images (+{}, -{})", r.images, r.added, r.removed)),
            Ok(None) => {}
            Err(e) => drop(writeln!(std::io::stderr(), "index not reloaded, still serving the one before: {e}")),
        }
    });
}

fn router(state: Shared) -> Router {
    // The body limit leaves room for the multipart framing around the largest image.
    let limit = state.max_upload + 64 * 1024;
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/api/info", get(info))
        .route("/api/images", get(list_images))
        .route("/api/images/{id}", get(image))
        .route("/api/search", post(search))
        // Every answer of the API is JSON, unknown routes and methods included.
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such route: the page is at /, the API under /api/ (docs/SEARCH.md)".into()) })
        .method_not_allowed_fallback(|| async { ApiError(StatusCode::METHOD_NOT_ALLOWED, "this route does not take that method (search is POST /api/search)".into()) })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn info(State(s): State<Shared>) -> Json<serde_json::Value> {
    let index = s.searcher.index();
    Json(serde_json::json!({
        "images": index.len(),
        "model": index.meta.model,
        "phi": !s.searcher.methods.is_empty(),
        "methods": s.searcher.method_names(),
        "template": s.searcher.template.clone().unwrap_or_else(|| s.searcher.methods.first().map_or(lincir::method::Method::Lincir, |(m, _)| *m).template().to_string()),
        "max_upload_bytes": s.max_upload,
        "max_image_pixels": lincir::clip::image_limits::max_pixels(),
        "jpeg_decode": index.meta.jpeg.name(),
        "max_k": MAX_K,
        "workers": s.pool.n_workers,
        "queue": s.pool.queue,
        "in_flight": s.pool.in_flight(),
    }))
}

#[derive(Deserialize)]
struct Page {
    offset: Option<usize>,
    limit: Option<usize>,
    /// The page (of `limit` images, in path order) holding this image id, instead of `offset`.
    containing: Option<usize>,
}

/// The query string's parameters, or the 400 that names the one that is not understood.
fn parameters<T>(q: Result<UrlQuery<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|UrlQuery(t)| t).map_err(|e| bad(e.body_text()))
}

async fn list_images(State(s): State<Shared>, p: Result<UrlQuery<Page>, QueryRejection>) -> Result<Json<serde_json::Value>, ApiError> {
    let p = parameters(p)?;
    let index = s.searcher.index();
    let entries = &index.meta.entries;
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let offset = match p.containing {
        Some(id) => index.position(id).ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no image with id {id}")))? / limit * limit,
        None => p.offset.unwrap_or(0).min(entries.len()),
    };
    let items: Vec<serde_json::Value> = entries[offset..(offset + limit).min(entries.len())].iter().map(|e| serde_json::json!({"id": e.id, "path": e.path})).collect();
    Ok(Json(serde_json::json!({"total": entries.len(), "offset": offset, "items": items})))
}

#[derive(Deserialize)]
struct ImageQuery {
    /// A JPEG preview at most this many pixels on its long edge, instead of the file.
    max: Option<String>,
}

/// A validator of the file's current version: an edited photo keeps its id, so browsers must
/// not keep showing the old one (`no-cache`: they ask again, and get a 304 while it is the same).
fn etag_of(meta: &std::fs::Metadata) -> String {
    let (len, mtime_ns) = lincir::bench::cache::stamp_of(meta).unwrap_or((meta.len(), 0));
    format!("\"{len:x}-{mtime_ns:x}\"")
}

async fn image(State(s): State<Shared>, id: Result<UrlPath<String>, PathRejection>, q: Result<UrlQuery<ImageQuery>, QueryRejection>, headers: HeaderMap) -> Result<Response, ApiError> {
    let UrlPath(id) = id.map_err(|e| bad(e.body_text()))?;
    let q = parameters(q)?;
    let id: usize = id.parse().map_err(|_| bad(format!("`{id}` is not an image id")))?;
    let edge = match q.max.as_deref() {
        None => None,
        Some(m) => Some(m.parse::<usize>().ok().filter(|e| (16..=preview::MAX_EDGE).contains(e)).ok_or_else(|| bad(format!("max must be a number of pixels from 16 to {}, not `{m}`", preview::MAX_EDGE)))?),
    };
    // Only paths recorded in the index are ever opened: no user text reaches the file system.
    let path = s.searcher.index().path_of(id).ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no image with id {id}")))?;
    let gone = || ApiError(StatusCode::NOT_FOUND, format!("image {id} is no longer on disk"));
    let etag = etag_of(&tokio::fs::metadata(&path).await.map_err(|_| gone())?);
    if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let bytes = tokio::fs::read(&path).await.map_err(|_| gone())?;
    // Browsers other than Safari do not show HEIC: the page gets a JPEG of it.
    let edge = edge.or(preprocess::is_heif(&bytes).then_some(preview::HEIC_EDGE));
    if let Some(edge) = edge {
        return jpeg_preview(s, id, bytes, edge, etag).await;
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let mime = match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "bmp" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        _ => "application/octet-stream",
    };
    Ok(([(header::CONTENT_TYPE, mime.to_string()), (header::CACHE_CONTROL, "no-cache".into()), (header::ETAG, etag)], bytes).into_response())
}

/// [`preview::jpeg`] of an indexed image, made in the work pool (a full decode of a phone photo
/// takes a core for a fraction of a second).
async fn jpeg_preview(s: Shared, id: usize, bytes: Vec<u8>, edge: usize, etag: String) -> Result<Response, ApiError> {
    let ticket = admit(&s)?;
    let jpeg = within_time_limit(s.pool.timeout, "preview", async move {
        let ticket = s.pool.worker(ticket).await;
        tokio::task::spawn_blocking(move || {
            let _ticket = ticket; // the worker stays taken until this work ends, even after a timeout
            preview::jpeg(&bytes, &format!("image {id}"), edge)
        })
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("preview failed: {e}")))?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot show it: {e}")))
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "image/jpeg".to_string()), (header::CACHE_CONTROL, "no-cache".into()), (header::ETAG, etag)], jpeg).into_response())
}

/// A place in the work pool's queue, or the 503 that a full queue answers.
fn admit(s: &Shared) -> Result<limits::Ticket, ApiError> {
    s.pool.try_admit().ok_or_else(|| ApiError(StatusCode::SERVICE_UNAVAILABLE, "the server is busy: try again in a moment".into()))
}

/// `work` within the request time limit (`--request-timeout-s`), else a 503 naming `what`.
async fn within_time_limit<T>(timeout: Duration, what: &str, work: impl std::future::Future<Output = Result<T, ApiError>>) -> Result<T, ApiError> {
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("the {what} took longer than {} s", timeout.as_secs()))),
    }
}

async fn search(State(s): State<Shared>, headers: HeaderMap, body: axum::body::Body) -> Result<Json<serde_json::Value>, ApiError> {
    // Admission before the body is read: a full queue costs the server nothing but this answer.
    let ticket = admit(&s)?;
    within_time_limit(s.pool.timeout, "search", search_admitted(s, headers, body, ticket)).await
}

async fn search_admitted(s: Shared, headers: HeaderMap, body: axum::body::Body, ticket: limits::Ticket) -> Result<Json<serde_json::Value>, ApiError> {
    let started = std::time::Instant::now();
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let parsed = parse_request(content_type, body, s.max_upload).await?;
    // An unknown method is the client's mistake, named with the ones this server has.
    if let Some(m) = &parsed.method {
        s.searcher.method(Some(m)).map_err(|e| bad(e.to_string()))?;
    }
    if let Some(RefInput::Indexed(id)) = parsed.reference {
        if s.searcher.index().position(id).is_none() {
            return Err(ApiError(StatusCode::NOT_FOUND, format!("no image with id {id}")));
        }
    }
    let ticket = s.pool.worker(ticket).await;
    let state = s.clone();
    let result = tokio::task::spawn_blocking(move || {
        let _ticket = ticket; // the worker stays taken until this work ends, even after a timeout
        let reference = match parsed.reference {
            // Refused sizes fail on the header, before any pixel buffer exists.
            // HEIF goes through libheif and libde265, C code that this server keeps off the
            // network: uploads are refused (browsers upload an iPhone photo as JPEG anyway).
            Some(RefInput::Upload { name, bytes }) if preprocess::is_heif(&bytes) => {
                return Err(ApiError(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("{name}: HEIC/HEIF uploads are not accepted by this server: upload a JPEG or PNG")));
            }
            Some(RefInput::Upload { name, bytes }) => Some(Reference::Pixels(
                preprocess::decode_rgb8_for(&bytes, &name, &state.searcher.clip.preprocess)
                    .map_err(|e| ApiError(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string()))?,
            )),
            Some(RefInput::Indexed(id)) => Some(Reference::Indexed(id)),
            None => None,
        };
        state.searcher.search(&Query { reference, text: parsed.text, k: parsed.k, method: parsed.method, folder: parsed.folder, taken_from: parsed.taken_from, taken_to: parsed.taken_to, keep_reference: parsed.keep_reference }).map_err(|e| bad(e.to_string()))
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("search failed: {e}")))??;
    let mut json = serde_json::to_value(&result).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    json["total_ms"] = serde_json::json!(started.elapsed().as_secs_f64() * 1e3);
    Ok(Json(json))
}
