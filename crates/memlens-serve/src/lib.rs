//! `memlens serve`: an OpenMetrics / Prometheus text endpoint (`GET /metrics`) with the
//! reconciled ledger of every Python process tree on the host, read from outside (DESIGN §9:
//! memlens is the per-host agent, Prometheus the fleet engine).
//!
//! - A collector thread ([`collect`]) takes the figures in the background: the trees as `memlens
//!   ps` finds them, each read as `snapshot --tree --nonblocking` reads it (no process is ever
//!   stopped, unless `--census` is asked: a census stops each Python process briefly), with its
//!   copy-on-write sharing. It works within a CPU budget: after a collection that cost `c` CPU
//!   seconds it waits until `c / share` seconds have passed since it began (and at least the
//!   interval), so memlens's collecting averages at most `share` of one core. (The sampler's
//!   token bucket in `memlens-record`'s `budget.rs` schedules many kinds of reads at one tick;
//!   here there is one kind of work, a whole collection, and this duty cycle is that bucket
//!   with one job.)
//! - Each complete collection replaces the one served, under a lock, as one `Arc`: a scrape
//!   always serves one whole collection, never half of one, with its age
//!   (`memlens_collection_age_seconds`) and completion time.
//! - The HTTP side is [hyper] 1.x (HTTP/1.1 only) on a current-thread [tokio] runtime with only
//!   its `rt`, `net`, `time`, `macros` and `signal` parts: hyper is the most used and actively
//!   maintained HTTP implementation in Rust, audited and fuzzed, and with these features it adds
//!   no thread pool, TLS or router. The small synchronous servers (`tiny_http` and what is
//!   built on it) have seen few releases in years; a metrics endpoint faces the network, so its
//!   parser must be the maintained one. Connections are bounded ([`MAX_CONNECTIONS`]) and must
//!   send their headers within [`HEADER_TIMEOUT`].
//! - SIGINT and SIGTERM end the server cleanly: the collector finishes the process it reads
//!   (a census's pause included), so no process is left stopped.

pub mod collect;
pub mod expo;
pub mod metrics;

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};

use crate::collect::{SelfFigures, Totals};
use crate::expo::{Family, Format, Value};
use crate::metrics::Families;

/// The default address: loopback, on the port memlens documents (docs/metrics.md).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";
/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// A connection must send its request headers within this time.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What `memlens serve` collects and how often.
#[derive(Debug, Clone)]
pub struct Config {
    /// At most this many processes are exported (trees largest PSS first; the rest are counted
    /// in `memlens_targets_skipped_total{reason="limit"}`).
    pub max_processes: usize,
    /// Share of one core the collector may use on average (0.05 = 5 %).
    pub cpu_budget: f64,
    /// Collections start at most this often.
    pub interval: Duration,
    /// Take a census of every Python process (stops each one briefly).
    pub census: bool,
    /// Types of each census exported.
    pub census_top: usize,
    /// Memory a census may use.
    pub census_max_memory: u64,
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address cannot be listened on (in use, not local, not permitted).
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The kernel's answer.
        source: std::io::Error,
    },
    /// The HTTP runtime could not start (or the signal handlers could not be installed).
    #[error("cannot start the HTTP server: {0}")]
    Runtime(std::io::Error),
    /// The collector thread could not be started.
    #[error("cannot start the collector: {0}")]
    Collector(std::io::Error),
}

impl Error {
    /// The address is in use by another socket.
    pub fn is_addr_in_use(&self) -> bool {
        matches!(self, Error::Listen { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse)
    }
}

/// Binds `addr` (port 0 picks a free port: see `local_addr`).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).map_err(|source| Error::Listen { addr, source })
}

/// One complete collection, as served.
#[derive(Debug)]
struct Published {
    families: Vec<Family>,
    completed: Instant,
}

#[derive(Debug, Default)]
struct Shared {
    latest: Mutex<Option<Arc<Published>>>,
    connections: AtomicUsize,
}

/// Serves `/metrics` on `listener` until SIGINT or SIGTERM, collecting in the background.
/// `ready` is called once the signal handlers are in place (from then on SIGINT and SIGTERM end
/// the server cleanly, not the process) and the listener accepts.
pub fn serve(listener: TcpListener, cfg: Config, ready: impl FnOnce()) -> Result<(), Error> {
    let shared = Arc::new(Shared::default());
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let collector = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("memlens-collector".into())
            .spawn(move || collector(&cfg, &shared, &stop_rx))
            .map_err(Error::Collector)?
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(Error::Runtime)?;
    let served = rt.block_on(accept_loop(listener, Arc::clone(&shared), ready));
    drop(stop_tx); // the collector stops between two processes
    if collector.join().is_err() {
        log::error!("the collector thread panicked");
    }
    served
}

fn collector(cfg: &Config, shared: &Shared, stop: &Receiver<()>) {
    let share = cfg.cpu_budget.clamp(0.0001, 1.0);
    let stopped = || matches!(stop.try_recv(), Err(TryRecvError::Disconnected));
    let mut totals = Totals::new();
    let mut me = SelfFigures {
        budget: share,
        ..Default::default()
    };
    loop {
        let (w0, c0) = (
            Instant::now(),
            memlens_launch::cputime::process_cpu_seconds(),
        );
        let Some(c) = collect::collect(cfg, &mut totals, &stopped) else {
            return;
        };
        let cpu = (memlens_launch::cputime::process_cpu_seconds() - c0).max(0.0);
        let wall = w0.elapsed();
        me.collections += 1;
        me.duration = wall.as_secs_f64();
        me.cpu = cpu;
        me.cpu_total += cpu;
        me.processes = c.processes;
        me.completed_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut fam: Families = c.families;
        collect::self_figures(&mut fam, &me, &totals);
        let published = Arc::new(Published {
            families: fam.into_vec(),
            completed: Instant::now(),
        });
        if let Ok(mut l) = shared.latest.lock() {
            *l = Some(published);
        }
        // The duty cycle: a collection of `cpu` seconds is followed by a pause that keeps the
        // average at `share` of one core.
        let period = Duration::from_secs_f64(cpu / share).max(cfg.interval);
        let wait = period.saturating_sub(wall);
        log::debug!(
            "collection: {:.3}s CPU, {wall:?} wall; next in {wait:?}",
            cpu
        );
        match stop.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    ready: impl FnOnce(),
) -> Result<(), Error> {
    use tokio::signal::unix::{signal, SignalKind};
    listener.set_nonblocking(true).map_err(Error::Runtime)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(Error::Runtime)?;
    let mut term = signal(SignalKind::terminate()).map_err(Error::Runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Runtime)?;
    ready();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => connection(stream, &shared),
                Err(e) => {
                    // Out of descriptors and the like: a moment later it may work again.
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
}

fn connection(stream: tokio::net::TcpStream, shared: &Arc<Shared>) {
    if shared.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
        shared.connections.fetch_sub(1, Ordering::SeqCst);
        log::debug!("too many connections: one closed");
        return;
    }
    let shared = Arc::clone(shared);
    tokio::task::spawn(async move {
        let io = hyper_util::rt::TokioIo::new(stream);
        let svc = hyper::service::service_fn(|req| {
            let shared = Arc::clone(&shared);
            async move { Ok::<_, Infallible>(respond(&req, &shared)) }
        });
        let r = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(io, svc)
            .await;
        if let Err(e) = r {
            log::debug!("connection: {e}");
        }
        shared.connections.fetch_sub(1, Ordering::SeqCst);
    });
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn respond<B>(req: &Request<B>, shared: &Shared) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET /metrics\n");
    }
    let accept = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = expo::negotiate(accept);
    let body = exposition(shared, format);
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(format.content_type()),
    );
    r
}

/// The exposition of the latest complete collection with its age (before the first one, only
/// `memlens_collections_total 0`).
fn exposition(shared: &Shared, format: Format) -> String {
    let latest = shared.latest.lock().ok().and_then(|l| l.clone());
    let mut now = Families::default();
    let mut out = String::new();
    match &latest {
        Some(p) => {
            let age = p.completed.elapsed().as_secs_f64();
            now.push(&metrics::COLLECTION_AGE, vec![], Value::Float(age));
            let all: Vec<&Family> = p.families.iter().chain(now.list()).collect();
            expo::render(all, format, &mut out);
        }
        None => {
            now.int(&metrics::COLLECTIONS, vec![], 0);
            expo::render(now.list(), format, &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_metrics_is_served() {
        let shared = Shared::default();
        let get = |path: &str| {
            let req = Request::get(path).body(()).expect("request");
            respond(&req, &shared)
        };
        assert_eq!(get("/").status(), StatusCode::NOT_FOUND);
        assert_eq!(get("/metrics/x").status(), StatusCode::NOT_FOUND);
        assert_eq!(get("/metrics").status(), StatusCode::OK);
        let post = Request::post("/metrics").body(()).expect("request");
        assert_eq!(
            respond(&post, &shared).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn before_the_first_collection_only_the_count_is_served() {
        let shared = Shared::default();
        let text = exposition(&shared, Format::OpenMetrics);
        assert!(text.contains("\nmemlens_collections_total 0\n"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
