//! The daemon's HTTP endpoints: `/metrics`, `/-/healthy`, `/-/ready` and a status page at `/`.
//!
//! Routing is a plain function from request to response ([`respond`]) so it is testable without
//! a socket; [`serve`] only accepts connections, bounds how many are open at once and how long a
//! client may take to send its request head, and stops on shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::body::{Bytes, Frame};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::clock;
use crate::pages;
use crate::probe::Probe;
use crate::state::Store;
use crate::web_config::{Verdict, WebConfig};

/// What the endpoints answer with: a whole text, or `/metrics` in pieces as it is written.
/// The error is a render that ended before the body did: the connection is cut so that a
/// scraper never takes a cut body for a whole one.
pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// Content type of the Prometheus text format this agent emits.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Asks the daemon to read its config again; answered with what changed or why nothing did.
pub type ReloadRequest = tokio::sync::oneshot::Sender<Result<String, String>>;

/// What the endpoints read.
pub struct WebState {
    /// Rendered on `/metrics` and the status page; replaced whole by a reload.
    pub probes: std::sync::RwLock<Arc<[Arc<Probe>]>>,
    /// Its error count is rendered too.
    pub store: Store,
    /// Set once every probe task has started.
    pub ready: AtomicBool,
    /// Where `POST /-/reload` asks for a reload; `None` unless the lifecycle API is enabled
    /// (`--web.enable-lifecycle`, as Prometheus): anyone who can reach the port could
    /// otherwise make the daemon stop and start its probes at will.
    pub reload: Option<tokio::sync::mpsc::Sender<ReloadRequest>>,
}

impl WebState {
    /// The probes now (a reload replaces the list, not the probes in it).
    pub fn probes(&self) -> Arc<[Arc<Probe>]> {
        Arc::clone(&self.probes.read().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Serves until `shutdown` is cancelled, over TLS and behind basic auth when `web` says so.
pub async fn serve(
    listener: TcpListener,
    state: Arc<WebState>,
    web: Arc<WebConfig>,
    shutdown: CancellationToken,
) {
    serve_at_most(MAX_CONNECTIONS, listener, state, web, shutdown).await;
}

/// [`serve`] with another connection limit.
async fn serve_at_most(
    max_connections: usize,
    listener: TcpListener,
    state: Arc<WebState>,
    web: Arc<WebConfig>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        // At the limit, stop accepting: new connections wait in the kernel's backlog until a
        // slot frees, rather than being accepted only to be dropped.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => return,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Typically EMFILE; back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (state, web) = (Arc::clone(&state), Arc::clone(&web));
        tokio::spawn(async move {
            let _slot = slot;
            let Some(acceptor) = &web.tls else {
                return connection(stream, state, web, peer).await;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => connection(tls, state, web, peer).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Bound on a client's TLS handshake and on sending each request head; hyper also applies it to
/// an idle keep-alive connection waiting for its next request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most connections served at once. Each costs a file descriptor and a task; the bound keeps a
/// flood from taking the descriptors the probes need for their SMTP and IMAP connections (256
/// leaves three quarters of the common soft limit of 1024). Prometheus needs one per scraper,
/// kept alive between scrapes, and requests are short: credentials are cached once verified,
/// and an uncached one waits at most [`crate::web_config::HASH_WAIT`] for hashing.
pub const MAX_CONNECTIONS: usize = 256;

/// Serves one connection, plain or TLS.
async fn connection<S>(stream: S, state: Arc<WebState>, web: Arc<WebConfig>, peer: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let (state, web) = (Arc::clone(&state), Arc::clone(&web));
        async move {
            let authorization = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
            Ok::<_, Infallible>(match web.authorize(authorization).await {
                Verdict::Allowed if req.uri().path() == "/-/reload" => reload(&req, &state).await,
                Verdict::Allowed
                    if req.method() == Method::GET && req.uri().path() == "/metrics" =>
                {
                    metrics_in_pieces(state)
                }
                Verdict::Allowed => respond_off_the_runtime(&req, state).await,
                Verdict::Denied => unauthorized(),
                Verdict::Busy => busy(),
            })
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

fn unauthorized() -> Response<Body> {
    let mut response = text(
        StatusCode::UNAUTHORIZED,
        "text/plain",
        "Unauthorized\n".into(),
    );
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Basic realm=\"mailcanary\""),
    );
    response
}

/// Every hashing slot stayed busy: most likely a flood of wrong passwords.
fn busy() -> Response<Body> {
    let mut response = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain",
        "Too many authentication attempts, try again\n".into(),
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, hyper::header::HeaderValue::from_static("1"));
    response
}

/// `/-/reload`: with the lifecycle API enabled, a `POST` (or `PUT`) reloads the config and is
/// answered once the reload is done: 200 with what changed, 500 with why nothing did.
pub async fn reload<B>(req: &Request<B>, state: &WebState) -> Response<Body> {
    let Some(requests) = &state.reload else {
        return text(
            StatusCode::FORBIDDEN,
            "text/plain",
            "Lifecycle API is not enabled (start with --web.enable-lifecycle)\n".into(),
        );
    };
    if req.method() != Method::POST && req.method() != Method::PUT {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only POST or PUT\n".into(),
        );
    }
    let (answer, answered) = tokio::sync::oneshot::channel();
    if requests.send(answer).await.is_err() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "shutting down\n".into(),
        );
    }
    match answered.await {
        Ok(Ok(changes)) => text(StatusCode::OK, "text/plain", format!("{changes}\n")),
        Ok(Err(e)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("failed to reload config: {e}\n"),
        ),
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "shutting down\n".into(),
        ),
    }
}

/// [`respond`] on the blocking pool: rendering 1,000 probes' metrics takes tens of
/// milliseconds, which on the runtime's worker would hold up every mailbox and submission
/// waiting to be served meanwhile (and with it the delays they measure).
async fn respond_off_the_runtime<B>(req: &Request<B>, state: Arc<WebState>) -> Response<Body> {
    let mut head = Request::new(());
    *head.method_mut() = req.method().clone();
    *head.uri_mut() = req.uri().clone();
    match tokio::task::spawn_blocking(move || respond(&head, &state)).await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(error = %e, "answering a request failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                "internal error\n".into(),
            )
        }
    }
}

/// Answers one request.
pub fn respond<B>(req: &Request<B>, state: &WebState) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    let probes = state.probes();
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            METRICS_CONTENT_TYPE,
            Agent::render(&probes, &state.store),
        ),
        "/-/healthy" => text(StatusCode::OK, "text/plain", "Healthy\n".into()),
        "/-/ready" if state.ready.load(Ordering::Acquire) => {
            text(StatusCode::OK, "text/plain", "Ready\n".into())
        }
        "/-/ready" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "Not ready\n".into(),
        ),
        "/" => text(
            StatusCode::OK,
            "text/html; charset=utf-8",
            pages::overview(&probes, page_asked(req), clock::now_ms()),
        ),
        "/api/status" => {
            let agent = probes.first().map_or("", |p| p.agent());
            // `?probe=NAME`: that probe alone (a script watching one path need not take
            // 1,000 probes' histories, 1.4 MiB, on every call).
            let asked = query_value(req, "probe");
            let chosen: Vec<Arc<Probe>> = probes
                .iter()
                .filter(|p| asked.is_none_or(|name| p.config().name == name))
                .cloned()
                .collect();
            if asked.is_some() && chosen.is_empty() {
                return text(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    "no such probe\n".into(),
                );
            }
            let status = crate::overview::status(agent, &chosen, clock::now_ms());
            let body = serde_json::to_string(&status).expect("status serialises");
            text(StatusCode::OK, "application/json", body)
        }
        path => match path
            .strip_prefix("/probe/")
            .and_then(|name| pages::probe(&probes, name, clock::now_ms()))
        {
            Some(page) => text(StatusCode::OK, "text/html; charset=utf-8", page),
            None => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        },
    }
}

/// `page=N` of the query, 1 without one.
fn page_asked<B>(req: &Request<B>) -> usize {
    query_value(req, "page")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

/// The value of `name=…` in the query, as written (probe names need no decoding: they are
/// `[a-z0-9_-]+`).
fn query_value<'a, B>(req: &'a Request<B>, name: &str) -> Option<&'a str> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    let body = Full::new(Bytes::from(body)).map_err(|never| match never {});
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .body(body.boxed())
        .expect("static response parts are valid")
}

/// A piece of a `/metrics` body on its way from the render to the connection.
enum Piece {
    Text(Bytes),
    /// The render finished: what came before is the whole body.
    End,
}

/// Pieces rendered ahead of the connection: bounds a scrape's memory to a few pieces (of
/// [`metrics::Pieces::STREAM`]) whatever the number of probes, while the render never waits
/// on a client that reads as fast as loopback.
const PIECES_AHEAD: usize = 4;

/// `GET /metrics`, rendered on the blocking pool and sent as it is written (chunked): the
/// first bytes leave at once, the scrape takes about as long as the render instead of the
/// render and then the transfer, and the agent holds a few pieces of the body instead of all
/// of it (20 MiB at 1,000 probes: most of a scrape's peak memory).
fn metrics_in_pieces(state: Arc<WebState>) -> Response<Body> {
    let (pieces, received) = tokio::sync::mpsc::channel(PIECES_AHEAD);
    tokio::task::spawn_blocking(move || {
        let probes = state.probes();
        let mut send = |piece: String| pieces.blocking_send(Piece::Text(piece.into())).is_ok();
        if Agent::render_in_pieces(&probes, &state.store, &mut send) {
            let _ = pieces.blocking_send(Piece::End);
        }
    });
    let body = http_body_util::StreamBody::new(futures::stream::unfold(
        (received, false),
        |(mut received, ended)| async move {
            if ended {
                return None;
            }
            match received.recv().await {
                Some(Piece::Text(text)) => Some((Ok(Frame::data(text)), (received, false))),
                Some(Piece::End) => None,
                None => Some((
                    Err(std::io::Error::other("the metrics render ended early")),
                    (received, true),
                )),
            }
        },
    ));
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, METRICS_CONTENT_TYPE)
        .body(body.boxed())
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics;

    fn state(ready: bool) -> (WebState, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let opened = Store::open(dir.path()).unwrap();
        let state = WebState {
            probes: std::sync::RwLock::new(Vec::new().into()),
            store: opened.store,
            ready: AtomicBool::new(ready),
            reload: None,
        };
        (state, dir)
    }

    fn get(path: &str, state: &WebState) -> Response<Body> {
        respond(&Request::get(path).body(()).unwrap(), state)
    }

    /// Sends a GET on `stream` and reads the status line.
    async fn status_of(mut stream: tokio::net::TcpStream) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        stream
            .write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        String::from_utf8_lossy(&response)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// A chunked HTTP/1.1 body, put together again.
    fn dechunk(mut body: &[u8]) -> Vec<u8> {
        let mut whole = Vec::new();
        loop {
            let line_end = body
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("a size line");
            let size = std::str::from_utf8(&body[..line_end]).unwrap();
            let size = usize::from_str_radix(size, 16).expect("a hex size");
            body = &body[line_end + 2..];
            if size == 0 {
                assert_eq!(body, b"\r\n", "the last chunk ends the body");
                return whole;
            }
            whole.extend_from_slice(&body[..size]);
            body = &body[size + 2..];
        }
    }

    #[tokio::test]
    async fn status_json_answers_for_one_probe_when_asked() {
        use crate::testing::{FakeServer, probe_named};
        let (mut s, _dir) = state(true);
        let server = FakeServer::default();
        let probes: Vec<Arc<Probe>> = ["a", "b"]
            .iter()
            .map(|n| probe_named(n, &server, &s.store, "\"bulk\"", "1h"))
            .collect();
        s.probes = std::sync::RwLock::new(probes.into());
        let names = |path: &str| -> Vec<String> {
            let response = get(path, &s);
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let body = futures::executor::block_on(response.into_body().collect());
            let json: serde_json::Value =
                serde_json::from_slice(&body.unwrap().to_bytes()).unwrap();
            json["probes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names("/api/status"), ["a", "b"]);
        assert_eq!(names("/api/status?probe=b"), ["b"]);
        assert_eq!(names("/api/status?x=1&probe=a"), ["a"]);
        assert_eq!(
            get("/api/status?probe=c", &s).status(),
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn metrics_leave_in_chunks_that_make_the_same_body_as_one_render() {
        use crate::testing::{FakeServer, probe_named};
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut s, _dir) = state(true);
        let server = FakeServer::default();
        let classes = "\"interpersonal\", \"transactional\", \"bulk\"";
        let probes: Vec<Arc<Probe>> = (0..80)
            .map(|i| probe_named(&format!("p{i:02}"), &server, &s.store, classes, "1h"))
            .collect();
        for probe in &probes {
            probe.open_books().await;
        }
        s.probes = std::sync::RwLock::new(probes.clone().into());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let web = Arc::new(WebConfig::unprotected());
        tokio::spawn(serve(listener, Arc::new(s), web, shutdown.clone()));
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let head_end = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&response[..head_end]).to_lowercase();
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        let body = String::from_utf8(dechunk(&response[head_end + 4..])).unwrap();
        assert!(
            body.len() > 3 * metrics::Pieces::STREAM.len,
            "{} bytes",
            body.len()
        );
        // The same text as one render (nothing moved: no canary was sent).
        let store = Store::acknowledging();
        let whole = Agent::render(&probes, &store);
        let strip_time = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with("mailcanary_oldest_in_flight_age"))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(strip_time(&body), strip_time(&whole));
        shutdown.cancel();
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_wait_for_a_free_slot() {
        let (s, _dir) = state(true);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let web = Arc::new(WebConfig::unprotected());
        tokio::spawn(serve_at_most(
            2,
            listener,
            Arc::new(s),
            web,
            shutdown.clone(),
        ));
        let connect = || tokio::net::TcpStream::connect(addr);
        // Two clients that say nothing hold both slots (for up to the header timeout).
        let (idle_1, _idle_2) = (connect().await.unwrap(), connect().await.unwrap());
        let third = tokio::spawn(status_of(connect().await.unwrap()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!third.is_finished(), "a third connection is not served yet");
        drop(idle_1);
        let status = tokio::time::timeout(Duration::from_secs(5), third).await;
        assert_eq!(status.unwrap().unwrap(), "HTTP/1.1 200 OK");
        shutdown.cancel();
    }

    #[test]
    fn routes() {
        let (s, _dir) = state(false);
        let metrics = get("/metrics", &s);
        assert_eq!(metrics.status(), StatusCode::OK);
        assert_eq!(metrics.headers()[CONTENT_TYPE], METRICS_CONTENT_TYPE);
        assert_eq!(get("/-/healthy", &s).status(), StatusCode::OK);
        assert_eq!(
            get("/-/ready", &s).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get("/-/ready", &state(true).0).status(), StatusCode::OK);
        assert_eq!(get("/nope", &s).status(), StatusCode::NOT_FOUND);
        assert_eq!(get("/", &s).status(), StatusCode::OK);
        let post = respond(&Request::post("/metrics").body(()).unwrap(), &s);
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn reload_needs_the_lifecycle_flag_and_a_post_and_answers_what_the_daemon_says() {
        let (mut s, _dir) = state(true);
        let post = || Request::post("/-/reload").body(()).unwrap();
        assert_eq!(reload(&post(), &s).await.status(), StatusCode::FORBIDDEN);
        let (requests, mut reloads) = tokio::sync::mpsc::channel::<ReloadRequest>(1);
        s.reload = Some(requests);
        let daemon = tokio::spawn(async move {
            let answers = [
                Ok("1 probes; added a".to_string()),
                Err("x.toml:3: bad".into()),
            ];
            for answer in answers {
                let request = reloads.recv().await.expect("a reload request");
                request.send(answer).expect("the endpoint waits");
            }
        });
        let get = Request::get("/-/reload").body(()).unwrap();
        assert_eq!(
            reload(&get, &s).await.status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let done = reload(&post(), &s).await;
        assert_eq!(done.status(), StatusCode::OK);
        let failed = reload(&post(), &s).await;
        assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
        use http_body_util::BodyExt as _;
        let body = failed.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"failed to reload config: x.toml:3: bad\n");
        daemon.await.unwrap();
        // The daemon gone (shutting down): answered, not hung.
        assert_eq!(
            reload(&post(), &s).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
