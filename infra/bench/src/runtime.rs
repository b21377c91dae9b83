//! A local Lambda Runtime API (the `2018-06-01` interface a custom runtime
//! such as `lambda_runtime` polls): what the bench runs each function's
//! binary against. `invoke` queues an event and waits for the function's
//! answer; the first `GET .../invocation/next` marks the end of init.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{mpsc, oneshot, watch};

/// What the function answered: the response body, or its error body.
pub type Answer = Result<Bytes, Bytes>;

struct Shared {
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<(String, Bytes)>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    /// When the first `next` arrived (the function finished its init).
    ready: watch::Sender<Option<Instant>>,
    /// The body of `/init/error`, if the function reported one.
    init_error: Mutex<Option<Bytes>>,
}

pub struct RuntimeApi {
    /// `host:port`, as `AWS_LAMBDA_RUNTIME_API` takes it.
    pub address: String,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<(String, Bytes)>,
    server: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    pub async fn start() -> std::io::Result<Self> {
        let (events, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            events: tokio::sync::Mutex::new(receiver),
            waiting: Mutex::new(HashMap::new()),
            ready: watch::channel(None).0,
            init_error: Mutex::new(None),
        });
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self {
            address,
            shared,
            events,
            server,
        })
    }

    /// Waits until the function asks for its first event; when it did.
    /// Fails if it reported an init error or `timeout` passed.
    pub async fn ready(&self, timeout: Duration) -> Result<Instant, String> {
        let mut ready = self.shared.ready.subscribe();
        let waited = tokio::time::timeout(timeout, ready.wait_for(Option::is_some)).await;
        if let Some(error) = self.shared.init_error.lock().expect("init error").as_ref() {
            return Err(format!("init error: {}", String::from_utf8_lossy(error)));
        }
        match waited {
            Ok(Ok(at)) => Ok(at.expect("waited for Some")),
            _ => Err(format!("no request for an event within {timeout:?}")),
        }
    }

    /// Hands the function `event` and waits for its answer.
    pub async fn invoke(&self, event: &serde_json::Value, timeout: Duration) -> Result<Answer, String> {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.shared.waiting.lock().expect("waiting").insert(id.clone(), tx);
        self.events
            .send((id, Bytes::from(event.to_string())))
            .map_err(|_| "the runtime API stopped")?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            _ => Err(format!("no answer within {timeout:?}")),
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    shared
        .ready
        .send_if_modified(|at| at.is_none() && at.replace(Instant::now()).is_none());
    let Some((id, body)) = shared.events.lock().await.recv().await else {
        return StatusCode::GONE.into_response();
    };
    let mut headers = HeaderMap::new();
    let deadline = std::time::SystemTime::now() + Duration::from_secs(30);
    let deadline_ms = deadline
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let header = |value: String| HeaderValue::from_str(&value).expect("header value");
    headers.insert("lambda-runtime-aws-request-id", header(id));
    headers.insert("lambda-runtime-deadline-ms", header(deadline_ms.to_string()));
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        HeaderValue::from_static("arn:aws:lambda:us-east-1:000000000000:function:bench"),
    );
    headers.insert(
        "lambda-runtime-trace-id",
        HeaderValue::from_static("Root=1-00000000-000000000000000000000000;Sampled=0"),
    );
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    (StatusCode::OK, headers, body).into_response()
}

fn answer(shared: &Shared, id: &str, answer: Answer) -> StatusCode {
    match shared.waiting.lock().expect("waiting").remove(id) {
        Some(waiter) => {
            let _ = waiter.send(answer);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn response(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    answer(&shared, &id, Ok(body))
}

async fn error(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    answer(&shared, &id, Err(body))
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    *shared.init_error.lock().expect("init error") = Some(body);
    // Wake `ready`, which then reports the error.
    shared.ready.send_replace(Some(Instant::now()));
    StatusCode::ACCEPTED
}
