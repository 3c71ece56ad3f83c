//! What keeps `lincir serve` alive under abuse: a bounded pool for the heavy work (decoding,
//! encoding, ranking) with a bounded queue in front of it, a time limit per request, and an
//! accept loop with a connection limit and header read timeouts.
//!
//! Memory is bounded by configuration, not by clients: at most `workers + queue` requests hold
//! an upload (each at most `--max-upload-mib`), at most `workers` hold a decoded image (each at
//! most `--max-image-pixels`), and at most `--max-connections` connections are open.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Admission to the heavy path: `try_admit` fails fast when the queue is full (the caller
/// answers 503), `worker` waits for one of the workers.
pub struct Pool {
    admission: Arc<Semaphore>,
    workers: Arc<Semaphore>,
    pub n_workers: usize,
    pub queue: usize,
    pub timeout: Duration,
}

/// Held for the life of a request's heavy work, including after a timeout answered the client:
/// the blocking work cannot be cancelled, so its slot stays taken until it really ends.
pub struct Ticket {
    _admitted: OwnedSemaphorePermit,
    _worker: Option<OwnedSemaphorePermit>,
}

impl Pool {
    pub fn new(n_workers: usize, queue: usize, timeout: Duration) -> Self {
        Pool {
            admission: Arc::new(Semaphore::new(n_workers + queue)),
            workers: Arc::new(Semaphore::new(n_workers)),
            n_workers,
            queue,
            timeout,
        }
    }

    /// A place in the queue, or None when `workers + queue` requests are already in.
    pub fn try_admit(&self) -> Option<Ticket> {
        let admitted = self.admission.clone().try_acquire_owned().ok()?;
        Some(Ticket { _admitted: admitted, _worker: None })
    }

    /// Waits for a worker.
    pub async fn worker(&self, mut ticket: Ticket) -> Ticket {
        let permit = self.workers.clone().acquire_owned().await.expect("the pool's semaphore is never closed");
        ticket._worker = Some(permit);
        ticket
    }

    /// Requests admitted and not yet finished (busy + queued).
    pub fn in_flight(&self) -> usize {
        self.n_workers + self.queue - self.admission.available_permits()
    }
}

/// Serves `app` on `listener` until ctrl-c: at most `max_connections` connections at once (more
/// wait in the kernel's backlog), each with a header read timeout.
pub async fn serve(listener: tokio::net::TcpListener, app: Router, max_connections: usize, header_timeout: Duration) -> anyhow::Result<()> {
    let connections = Arc::new(Semaphore::new(max_connections));
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => p.expect("never closed"),
            _ = &mut shutdown => return Ok(()),
        };
        let (stream, _peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of file descriptors and the like: wait a little rather than spin.
                Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(true);
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
