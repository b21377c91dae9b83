//! A stand-in for Robokassa on loopback, for tests and the local runner.
//! Point [`RobokassaConfig::base_url`] at it; it serves
//! - `/Index.aspx` (GET or POST): checks the payment request's signature,
//!   remembers the invoice and shows a payment page with Pay and Cancel;
//!   Pay ([`FakeRobokassa::pay`]) POSTs a signed ResultURL callback, as
//!   Robokassa does, then sends the browser to SuccessURL (signed with
//!   Password #1); Cancel sends it to FailURL;
//! - `/Recurring` (POST): accepts a child charge with `OK{InvId}` (and pays
//!   it unless told otherwise) or declines it, as each test chooses;
//! - `/WebService/Service.asmx/OpStateExt`: the state of invoices it knows.
//!
//! It records every request it receives and every callback it sends. Its
//! signature checks are written out here, apart from the protocol module,
//! so a mistake there is not mirrored here.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::{RawQuery, State};
use axum::http::{Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use rust_decimal::Decimal;
use tokenbill::payments::robokassa::{HashAlgorithm, RobokassaConfig, STATE_PAID, sign, signatures_match};
use url::form_urlencoded;

/// `OpStateExt` state of an invoice created but not paid.
const STATE_INITIATED: i32 = 5;
/// `OpStateExt` state of an invoice the payer gave up on.
const STATE_CANCELLED: i32 = 10;

/// The shop `make dev` pays into when no real Robokassa is configured:
/// test mode, md5, passwords nobody else uses.
pub fn dev_config() -> RobokassaConfig {
    RobokassaConfig {
        merchant_login: "tokenbill-dev".to_owned(),
        password1: "dev-robokassa-password-1".to_owned(),
        password2: "dev-robokassa-password-2".to_owned(),
        is_test: true,
        algorithm: HashAlgorithm::Md5,
        base_url: String::new(),
        culture: None,
    }
}

/// Starts a fake Robokassa for [`dev_config`] whose callbacks and
/// redirects go to the shop at `shop_base`; returns it with the settings
/// the payment webhook reads (`ROBOKASSA_LOGIN`, ... `ROBOKASSA_URL`).
pub async fn start_for_dev(shop_base: &str) -> std::io::Result<(FakeRobokassa, Vec<(&'static str, String)>)> {
    let config = dev_config();
    let fake = FakeRobokassa::new(config.clone());
    let url = fake.start().await?;
    fake.set_shop(shop_base);
    let settings = vec![
        ("ROBOKASSA_LOGIN", config.merchant_login),
        ("ROBOKASSA_PASSWORD1", config.password1),
        ("ROBOKASSA_PASSWORD2", config.password2),
        ("ROBOKASSA_HASH", config.algorithm.as_str().to_owned()),
        ("ROBOKASSA_TEST", "1".to_owned()),
        ("ROBOKASSA_URL", url),
    ];
    Ok((fake, settings))
}

/// One request the fake received.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: String,
    /// `/Index.aspx`, `/Recurring`, `/WebService/Service.asmx/OpStateExt`.
    pub path: String,
    /// Query and form parameters, in order, decoded.
    pub params: Vec<(String, String)>,
    pub signature_valid: bool,
}

impl Request {
    /// The first value of `name` (case-insensitive, as Robokassa reads it).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// An invoice the fake knows from a payment or recurring request.
#[derive(Debug, Clone, PartialEq)]
pub struct Invoice {
    pub inv_id: u32,
    pub out_sum: Decimal,
    pub shp: BTreeMap<String, String>,
    pub recurring: bool,
    pub previous_inv_id: Option<u32>,
    pub state_code: i32,
}

/// A ResultURL callback the fake sent, and what the shop answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Callback {
    pub inv_id: u32,
    pub body: String,
    /// The shop's answer body, or why there was none.
    pub answer: Result<String, String>,
}

/// What the next `/Recurring` request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecurringOutcome {
    /// `OK{InvId}`; with `then_pay`, the ResultURL callback follows.
    Accept { then_pay: bool },
    /// This body instead of `OK...`.
    Decline(String),
}

#[derive(Debug, Default)]
struct Inner {
    requests: Vec<Request>,
    invoices: BTreeMap<u32, Invoice>,
    callbacks: Vec<Callback>,
    recurring_outcomes: VecDeque<RecurringOutcome>,
    result_url: Option<String>,
    success_url: Option<String>,
    fail_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct FakeRobokassa {
    config: Arc<RobokassaConfig>,
    http: reqwest::Client,
    inner: Arc<Mutex<Inner>>,
}

impl FakeRobokassa {
    /// A fake shop account with `config`'s login, passwords, mode and hash.
    pub fn new(config: RobokassaConfig) -> Self {
        Self {
            config: Arc::new(config),
            http: reqwest::Client::new(),
            inner: Arc::default(),
        }
    }

    /// Serves on a fresh loopback port; returns the base URL to put in
    /// [`RobokassaConfig::base_url`].
    pub async fn start(&self) -> std::io::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(self.clone().serve(listener));
        Ok(url)
    }

    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/Index.aspx", get(index).post(index))
            .route("/fake/pay", post(pay_pressed))
            .route("/fake/cancel", post(cancel_pressed))
            .route("/Recurring", post(recurring))
            .route(
                "/WebService/Service.asmx/OpStateExt",
                get(op_state_ext).post(op_state_ext),
            )
            .with_state(self.clone())
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    /// Where [`pay`](Self::pay) posts ResultURL callbacks.
    pub fn set_result_url(&self, url: impl Into<String>) {
        self.lock().result_url = Some(url.into());
    }

    /// The shop's ResultURL, SuccessURL and FailURL under `shop_base`
    /// (`{shop_base}/payments/robokassa/result`, `/success`, `/fail`), as
    /// they are registered in a shop's technical settings.
    pub fn set_shop(&self, shop_base: &str) {
        let base = shop_base.trim_end_matches('/');
        let mut inner = self.lock();
        inner.result_url = Some(format!("{base}/payments/robokassa/result"));
        inner.success_url = Some(format!("{base}/payments/robokassa/success"));
        inner.fail_url = Some(format!("{base}/payments/robokassa/fail"));
    }

    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    pub fn take_requests(&self) -> Vec<Request> {
        std::mem::take(&mut self.lock().requests)
    }

    pub fn callbacks(&self) -> Vec<Callback> {
        self.lock().callbacks.clone()
    }

    pub fn invoice(&self, inv_id: u32) -> Option<Invoice> {
        self.lock().invoices.get(&inv_id).cloned()
    }

    /// Adds or replaces an invoice, as if it had been created earlier.
    pub fn insert_invoice(&self, invoice: Invoice) {
        self.lock().invoices.insert(invoice.inv_id, invoice);
    }

    /// The next `/Recurring` requests get these outcomes, in order; after
    /// them, `Accept { then_pay: true }`.
    pub fn next_recurring(&self, outcomes: impl IntoIterator<Item = RecurringOutcome>) {
        self.lock().recurring_outcomes.extend(outcomes);
    }

    /// The ResultURL body Robokassa would send for `inv_id`: `OutSum` with
    /// six decimals, the signature in uppercase hex.
    pub fn result_callback_body(&self, inv_id: u32) -> Option<String> {
        let invoice = self.invoice(inv_id)?;
        let mut out_sum = invoice.out_sum;
        out_sum.rescale(6);
        let out_sum = out_sum.to_string();
        let signature = self.sign_with_shp(&format!("{out_sum}:{inv_id}:{}", self.password2()), &invoice.shp);
        let mut body = form_urlencoded::Serializer::new(String::new());
        body.append_pair("out_summ", &out_sum)
            .append_pair("OutSum", &out_sum)
            .append_pair("InvId", &inv_id.to_string())
            .append_pair("Fee", "0.000000")
            .append_pair("EMail", "buyer@example.com")
            .append_pair("SignatureValue", &signature.to_ascii_uppercase())
            .append_pair("PaymentMethod", "BankCard")
            .append_pair("IncCurrLabel", "BankCardPSR");
        if self.config.is_test {
            body.append_pair("IsTest", "1");
        }
        body.extend_pairs(&invoice.shp);
        Some(body.finish())
    }

    /// The SuccessURL query Robokassa sends the browser to after paying
    /// `inv_id`: signed `OutSum:InvId:Password1[:Shp_...]`.
    pub fn success_query(&self, inv_id: u32) -> Option<String> {
        let invoice = self.invoice(inv_id)?;
        let mut out_sum = invoice.out_sum;
        out_sum.rescale(6);
        let out_sum = out_sum.to_string();
        let signature = self.sign_with_shp(&format!("{out_sum}:{inv_id}:{}", self.password1()), &invoice.shp);
        let mut query = form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("OutSum", &out_sum)
            .append_pair("InvId", &inv_id.to_string())
            .append_pair("SignatureValue", &signature)
            .append_pair("Culture", "ru");
        if self.config.is_test {
            query.append_pair("IsTest", "1");
        }
        query.extend_pairs(&invoice.shp);
        Some(query.finish())
    }

    /// The FailURL query: no signature, as Robokassa sends it.
    pub fn fail_query(&self, inv_id: u32) -> Option<String> {
        let invoice = self.invoice(inv_id)?;
        let mut query = form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("OutSum", &invoice.out_sum.to_string())
            .append_pair("InvId", &inv_id.to_string())
            .append_pair("Culture", "ru");
        query.extend_pairs(&invoice.shp);
        Some(query.finish())
    }

    /// Marks `inv_id` paid and POSTs its ResultURL callback; returns the
    /// shop's answer body.
    pub async fn pay(&self, inv_id: u32) -> Result<String, String> {
        let result_url = self.lock().result_url.clone().ok_or("no result URL set")?;
        let body = self
            .result_callback_body(inv_id)
            .ok_or_else(|| format!("unknown invoice {inv_id}"))?;
        if let Some(invoice) = self.lock().invoices.get_mut(&inv_id) {
            invoice.state_code = STATE_PAID;
        }
        let answer = self.post_callback(&result_url, body.clone()).await;
        self.lock().callbacks.push(Callback {
            inv_id,
            body,
            answer: answer.clone(),
        });
        answer
    }

    async fn post_callback(&self, url: &str, body: String) -> Result<String, String> {
        let response = self
            .http
            .post(url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(format!("{status}: {text}"))
        }
    }

    fn password1(&self) -> &str {
        &self.config.password1
    }

    fn password2(&self) -> &str {
        &self.config.password2
    }

    fn algorithm(&self) -> HashAlgorithm {
        self.config.algorithm
    }

    /// Signs `base` followed by `:key=value` for each `Shp_` parameter.
    fn sign_with_shp(&self, base: &str, shp: &BTreeMap<String, String>) -> String {
        let shp: String = shp.iter().map(|(key, value)| format!(":{key}={value}")).collect();
        sign(self.algorithm(), &format!("{base}{shp}"))
    }

    /// Checks a payment or recurring request's `SignatureValue`:
    /// `MerchantLogin:OutSum:<id>[:Receipt]:Password1[:Shp_...]`.
    fn request_signature_valid(&self, params: &Params, id_field: &str) -> bool {
        let receipt = params.get("Receipt").map(|r| format!(":{r}")).unwrap_or_default();
        let base = format!(
            "{}:{}:{}{receipt}:{}",
            params.get("MerchantLogin").unwrap_or_default(),
            params.get("OutSum").unwrap_or_default(),
            params.get(id_field).unwrap_or_default(),
            self.password1(),
        );
        params.get("MerchantLogin") == Some(self.config.merchant_login.as_str())
            && signatures_match(
                &self.sign_with_shp(&base, &params.shp()),
                params.get("SignatureValue").unwrap_or_default(),
            )
    }

    fn record(&self, method: &Method, path: &str, params: &Params, signature_valid: bool) {
        self.lock().requests.push(Request {
            method: method.to_string(),
            path: path.to_owned(),
            params: params.0.clone(),
            signature_valid,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Query and form parameters together, looked up case-insensitively.
struct Params(Vec<(String, String)>);

impl Params {
    fn new(query: Option<&str>, body: &str) -> Self {
        let pairs = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .chain(form_urlencoded::parse(body.as_bytes()))
            .map(|(key, value)| (key.into_owned(), value.into_owned()));
        Self(pairs.collect())
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn shp(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .filter(|(key, _)| key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("shp_")))
            .cloned()
            .collect()
    }

    fn inv_id(&self, field: &str) -> Option<u32> {
        self.get(field)?.parse().ok()
    }

    fn out_sum(&self) -> Option<Decimal> {
        Decimal::from_str_exact(self.get("OutSum")?).ok()
    }
}

async fn index(
    State(fake): State<FakeRobokassa>,
    method: Method,
    RawQuery(query): RawQuery,
    body: String,
) -> axum::response::Response {
    let params = Params::new(query.as_deref(), &body);
    let valid = fake.request_signature_valid(&params, "InvId");
    fake.record(&method, "/Index.aspx", &params, valid);
    let (Some(inv_id), Some(out_sum), true) = (params.inv_id("InvId"), params.out_sum(), valid) else {
        return (
            StatusCode::BAD_REQUEST,
            "Fake Robokassa: bad payment request (signature or fields)".to_owned(),
        )
            .into_response();
    };
    fake.insert_invoice(Invoice {
        inv_id,
        out_sum,
        shp: params.shp(),
        recurring: params.get("Recurring").is_some_and(|r| r.eq_ignore_ascii_case("true")),
        previous_inv_id: None,
        state_code: STATE_INITIATED,
    });
    let description = params.get("Description").unwrap_or_default();
    let test = if params.get("IsTest") == Some("1") {
        " (test mode)"
    } else {
        ""
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Fake Robokassa</title></head><body>\
             <h1>Fake Robokassa{test}</h1><p id=\"description\">{description}</p>\
             <p id=\"amount\">{out_sum} RUB · invoice {inv_id}</p>\
             <form method=\"post\" action=\"fake/pay\"><input type=\"hidden\" name=\"InvId\" value=\"{inv_id}\">\
             <button id=\"pay\">Pay</button></form>\
             <form method=\"post\" action=\"fake/cancel\"><input type=\"hidden\" name=\"InvId\" value=\"{inv_id}\">\
             <button id=\"cancel\">Cancel</button></form>\
             <p><small>A stand-in for Robokassa on loopback: no money moves.</small></p></body></html>",
            description = escape(description),
        ),
    )
        .into_response()
}

/// Pay pressed: ResultURL first (as Robokassa does), then the browser
/// goes to SuccessURL whatever the shop answered (Robokassa retries
/// ResultURL on its own).
async fn pay_pressed(State(fake): State<FakeRobokassa>, body: String) -> axum::response::Response {
    let params = Params::new(None, &body);
    let Some(inv_id) = params.inv_id("InvId").filter(|id| fake.invoice(*id).is_some()) else {
        return (StatusCode::NOT_FOUND, "Fake Robokassa: unknown invoice").into_response();
    };
    let answer = fake.pay(inv_id).await;
    let success_url = fake.lock().success_url.clone();
    match (success_url, fake.success_query(inv_id)) {
        (Some(url), Some(query)) => see_other(&format!("{url}?{query}")),
        _ => (
            StatusCode::OK,
            format!("Fake Robokassa: paid; the shop answered {answer:?}"),
        )
            .into_response(),
    }
}

/// Cancel pressed: the browser goes to FailURL; the shop hears nothing else.
async fn cancel_pressed(State(fake): State<FakeRobokassa>, body: String) -> axum::response::Response {
    let params = Params::new(None, &body);
    let Some(inv_id) = params.inv_id("InvId").filter(|id| fake.invoice(*id).is_some()) else {
        return (StatusCode::NOT_FOUND, "Fake Robokassa: unknown invoice").into_response();
    };
    if let Some(invoice) = fake.lock().invoices.get_mut(&inv_id) {
        invoice.state_code = STATE_CANCELLED;
    }
    let fail_url = fake.lock().fail_url.clone();
    match (fail_url, fake.fail_query(inv_id)) {
        (Some(url), Some(query)) => see_other(&format!("{url}?{query}")),
        _ => (StatusCode::OK, "Fake Robokassa: cancelled").into_response(),
    }
}

fn see_other(location: &str) -> axum::response::Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, location.to_owned())]).into_response()
}

async fn recurring(
    State(fake): State<FakeRobokassa>,
    method: Method,
    RawQuery(query): RawQuery,
    body: String,
) -> impl IntoResponse {
    let params = Params::new(query.as_deref(), &body);
    let valid = fake.request_signature_valid(&params, "InvoiceID");
    fake.record(&method, "/Recurring", &params, valid);
    let (Some(inv_id), Some(previous), Some(out_sum), true) = (
        params.inv_id("InvoiceID"),
        params.inv_id("PreviousInvoiceID"),
        params.out_sum(),
        valid,
    ) else {
        return "ERROR: bad recurring request (signature or fields)".to_owned();
    };
    let parent_is_paid_recurring = fake
        .invoice(previous)
        .is_some_and(|parent| parent.recurring && parent.state_code == STATE_PAID);
    if !parent_is_paid_recurring {
        return format!("ERROR: no paid recurring invoice {previous}");
    }
    let outcome = fake
        .lock()
        .recurring_outcomes
        .pop_front()
        .unwrap_or(RecurringOutcome::Accept { then_pay: true });
    match outcome {
        RecurringOutcome::Decline(answer) => answer,
        RecurringOutcome::Accept { then_pay } => {
            fake.insert_invoice(Invoice {
                inv_id,
                out_sum,
                shp: params.shp(),
                recurring: false,
                previous_inv_id: Some(previous),
                state_code: STATE_INITIATED,
            });
            if then_pay {
                // Robokassa answers first and calls ResultURL later.
                let fake = fake.clone();
                tokio::spawn(async move { fake.pay(inv_id).await });
            }
            format!("OK{inv_id}")
        }
    }
}

async fn op_state_ext(
    State(fake): State<FakeRobokassa>,
    method: Method,
    RawQuery(query): RawQuery,
    body: String,
) -> impl IntoResponse {
    let params = Params::new(query.as_deref(), &body);
    let inv_id = params.get("InvoiceID").unwrap_or_default();
    let expected = sign(
        fake.algorithm(),
        &format!("{}:{inv_id}:{}", fake.config.merchant_login, fake.password2()),
    );
    let valid = params.get("MerchantLogin") == Some(fake.config.merchant_login.as_str())
        && signatures_match(&expected, params.get("Signature").unwrap_or_default());
    fake.record(&method, "/WebService/Service.asmx/OpStateExt", &params, valid);
    let invoice = params.inv_id("InvoiceID").and_then(|id| fake.invoice(id));
    let content = match (valid, invoice) {
        (false, _) => "<Result><Code>1</Code><Description>Invalid signature</Description></Result>".to_owned(),
        (true, None) => "<Result><Code>3</Code><Description>Invoice not found</Description></Result>".to_owned(),
        (true, Some(invoice)) => operation_xml(&invoice),
    };
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<OperationStateResponse \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         xmlns=\"http://merchant.roboxchange.com/WebService/\">{content}</OperationStateResponse>"
    );
    ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], xml)
}

fn operation_xml(invoice: &Invoice) -> String {
    let now = chrono::Utc::now().to_rfc3339();
    let mut out_sum = invoice.out_sum;
    out_sum.rescale(6);
    let fields: String = invoice
        .shp
        .iter()
        .map(|(name, value)| {
            format!(
                "<Field><Name>{}</Name><Value>{}</Value></Field>",
                escape(name),
                escape(value)
            )
        })
        .collect();
    format!(
        "<Result><Code>0</Code></Result>\
         <State><Code>{state}</Code><RequestDate>{now}</RequestDate><StateDate>{now}</StateDate></State>\
         <Info xsi:type=\"OperationInfoExt\"><IncCurrLabel>BankCardPSR</IncCurrLabel><IncSum>{out_sum}</IncSum>\
         <PaymentMethod><Code>BankCard</Code><Description>Bank card</Description></PaymentMethod>\
         <OutCurrLabel>BankCardPSR</OutCurrLabel><OutSum>{out_sum}</OutSum><OpKey>fake-{inv_id}</OpKey></Info>\
         <UserField>{fields}</UserField>",
        state = invoice.state_code,
        inv_id = invoice.inv_id,
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
