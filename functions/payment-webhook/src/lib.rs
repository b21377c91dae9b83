//! `/payments/...`: where money arrives. Each provider's adapter verifies
//! its proof of payment; the store credits it in one transaction; the
//! user's notification, committed with it, is then published to the queue.
//!
//! | route | what |
//! |---|---|
//! | `GET /payments/mock/checkout/{invoice}` | the mock provider's checkout page |
//! | `POST /payments/mock/checkout/{invoice}` | Pay / Decline on that page |
//! | `POST /payments/mock/callback` | the mock provider's signed callback |
//! | `POST /payments/mock/recurring` | the mock provider's API: charge a saved card |
//! | `GET /payments/robokassa/pay/{invoice}` | allocates the `InvId`, redirects to Robokassa |
//! | `POST\|GET /payments/robokassa/result` | ResultURL: Robokassa's signed word that money arrived |
//! | `GET\|POST /payments/robokassa/success` | SuccessURL: the page the payer returns to |
//! | `GET\|POST /payments/robokassa/fail` | FailURL: the payer gave up |

mod failure;
mod mock;
mod pages;
mod robokassa;

use http::{Method, Response, StatusCode};
use tokenbill::Store;
use tokenbill::domain::notification::NotificationId;
use tokenbill::payments::mock::MockProvider;
use tokenbill::payments::robokassa::RobokassaConfig;
use tokenbill::queue::NotificationQueue;

pub use failure::Failure;

/// Bodies larger than this are refused before parsing (providers send a
/// few hundred bytes).
pub const MAX_BODY: usize = 64 * 1024;

/// The secrets this function needs (see [`tokenbill::secrets`]).
pub const SECRETS: [&str; 3] = ["MOCK_PROVIDER_SECRET", "ROBOKASSA_PASSWORD1", "ROBOKASSA_PASSWORD2"];

#[derive(Debug, Clone)]
pub struct PaymentConfig {
    /// The mock provider, when enabled (its secret is set).
    pub mock: Option<MockProvider>,
    /// Robokassa, when enabled (`ROBOKASSA_LOGIN` is set).
    pub robokassa: Option<RobokassaConfig>,
    /// Where users go back to after paying: `https://t.me/<bot>`.
    pub bot_url: String,
}

impl PaymentConfig {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mock = var("MOCK_PROVIDER_SECRET").map(MockProvider::new).transpose()?;
        // Enabled by its login; then its passwords are required, and a
        // half-configured Robokassa stops the cold start rather than
        // failing payments one by one.
        let robokassa = match var("ROBOKASSA_LOGIN") {
            Some(_) => Some(RobokassaConfig::from_lookup(&lookup).map_err(|e| format!("Robokassa: {e}"))?),
            None => None,
        };
        // `BOT_URL` sends people elsewhere (the local runner's sandbox).
        let bot_url = var("BOT_URL").unwrap_or_else(|| {
            var("TELEGRAM_BOT_USERNAME").map_or_else(
                || "https://t.me/".to_owned(),
                |name| format!("https://t.me/{}", name.trim_start_matches('@')),
            )
        });
        Ok(Self {
            mock,
            robokassa,
            bot_url,
        })
    }
}

pub struct PaymentWebhook {
    store: Store,
    queue: NotificationQueue,
    config: PaymentConfig,
}

/// A request as the handlers see it.
pub(crate) struct Incoming<'a> {
    pub method: &'a Method,
    pub headers: &'a http::HeaderMap,
    pub query: &'a str,
    pub body: &'a [u8],
}

impl Incoming<'_> {
    /// Form fields from the query string and, for form posts, the body.
    pub fn form(&self) -> Vec<(String, String)> {
        let mut fields: Vec<(String, String)> = url::form_urlencoded::parse(self.query.as_bytes())
            .into_owned()
            .collect();
        if self.method == Method::POST {
            fields.extend(url::form_urlencoded::parse(self.body).into_owned());
        }
        fields
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl PaymentWebhook {
    pub fn new(store: Store, queue: NotificationQueue, config: PaymentConfig) -> Self {
        Self { store, queue, config }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Handles one HTTP request from API Gateway (or the local runner).
    pub async fn handle(&self, request: http::Request<impl AsRef<[u8]>>) -> Response<String> {
        let (parts, body) = request.into_parts();
        let body = body.as_ref();
        if body.len() > MAX_BODY {
            return Failure::TooLarge.json();
        }
        let incoming = Incoming {
            method: &parts.method,
            headers: &parts.headers,
            query: parts.uri.query().unwrap_or(""),
            body,
        };
        let path = parts.uri.path().trim_end_matches('/');
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match (parts.method.clone(), segments.as_slice()) {
            (Method::GET, ["payments", "mock", "checkout", invoice]) => self.mock_checkout_page(invoice).await,
            (Method::POST, ["payments", "mock", "checkout", invoice]) => {
                self.mock_checkout_action(invoice, &incoming).await
            }
            (Method::POST, ["payments", "mock", "callback"]) => self.mock_callback(&incoming).await,
            (Method::POST, ["payments", "mock", "recurring"]) => self.mock_recurring(&incoming).await,
            (Method::GET, ["payments", "robokassa", "pay", invoice]) => self.robokassa_pay(invoice).await,
            (Method::GET | Method::POST, ["payments", "robokassa", "result"]) => self.robokassa_result(&incoming).await,
            (Method::GET | Method::POST, ["payments", "robokassa", "success"]) => {
                self.robokassa_success(&incoming).await
            }
            (Method::GET | Method::POST, ["payments", "robokassa", "fail"]) => self.robokassa_fail(&incoming).await,
            _ => Failure::NoRoute.json(),
        }
    }

    /// Publishes a committed notification; the outbox sweep covers a failure.
    async fn publish(&self, id: NotificationId) {
        self.queue.publish_or_log(&[id]).await;
    }
}

/// `302 Found` to `location` (a payment page).
pub(crate) fn redirect(location: &str) -> Response<String> {
    Response::builder()
        .status(StatusCode::FOUND)
        .header(http::header::LOCATION, location)
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(String::new())
        .unwrap_or_else(|_| Failure::Internal("unusable redirect location".into()).page())
}

pub(crate) fn respond(status: StatusCode, content_type: &str, body: String) -> Response<String> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body)
        .expect("a status, headers and a body always make a response")
}
