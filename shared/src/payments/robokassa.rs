//! The Robokassa protocol on plain values: signatures, the payment URL, the
//! ResultURL / SuccessURL / FailURL callbacks, recurring charges and the
//! `OpStateExt` status check. No storage here: callers look invoices up and
//! credit them; this module only says what Robokassa sent and whether to
//! trust it.
//!
//! Signatures (the hash is the shop's setting, md5 by default):
//! - request (payment URL, recurring charge):
//!   `MerchantLogin:OutSum:InvId[:Receipt]:Password1[:Shp_k=v...]`
//! - ResultURL: `OutSum:InvId:Password2[:Shp_k=v...]`
//! - SuccessURL: `OutSum:InvId:Password1[:Shp_k=v...]`
//! - OpStateExt: `MerchantLogin:InvoiceID:Password2`
//!
//! `Shp_` parameters follow the password as `key=value`, sorted by key.
//! In test mode (`IsTest=1`) the shop's separate test passwords sign.
//!
//! [`RobokassaRecurring`] charges a subscription's card again; it is the
//! one piece here that touches storage (a new invoice's `InvId`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use subtle::ConstantTimeEq;
use url::form_urlencoded;

use super::{ChargeError, ChargeOutcome, RecurringCharge};
use crate::Store;
use crate::domain::invoice::{Invoice, InvoiceStatus};
use crate::domain::subscription::RenewalMethod;

pub const DEFAULT_BASE_URL: &str = "https://auth.robokassa.ru/Merchant";

/// Robokassa keeps invoice ids in a signed 32-bit integer.
pub const MAX_INV_ID: u32 = i32::MAX as u32;

/// Robokassa's limit on `Description`.
const MAX_DESCRIPTION_CHARS: usize = 100;

/// The `Shp_` parameter carrying our invoice id through Robokassa.
pub const SHP_INVOICE: &str = "Shp_invoice";

/// `OpStateExt` state of a paid operation.
pub const STATE_PAID: i32 = 100;

/// `OpStateExt` result code of a failure on Robokassa's side.
const RESULT_INTERNAL_ERROR: i32 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum RobokassaError {
    #[error("unknown Robokassa hash algorithm {0:?}")]
    UnknownAlgorithm(String),
    #[error("missing {0}")]
    MissingField(&'static str),
    #[error("invalid {field}: {reason}")]
    InvalidField { field: String, reason: &'static str },
    #[error("the Robokassa signature does not match")]
    BadSignature,
    #[error("amount {received} {reason}")]
    BadAmount { received: String, reason: &'static str },
    #[error("Robokassa HTTP error{}: {message}", .status.map(|s| format!(" {s}")).unwrap_or_default())]
    Http {
        retryable: bool,
        status: Option<u16>,
        message: String,
    },
    #[error("Robokassa declined: {0}")]
    Declined(String),
    #[error("Robokassa answered code {code}: {description}")]
    Service { code: i32, description: String },
    #[error("unexpected Robokassa answer: {0}")]
    UnexpectedAnswer(String),
}

impl RobokassaError {
    /// Whether the same call may succeed later (network trouble, 5xx, 429,
    /// Robokassa's internal error).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Http { retryable, .. } => *retryable,
            Self::Service { code, .. } => *code == RESULT_INTERNAL_ERROR,
            _ => false,
        }
    }

    fn invalid(field: &str, reason: &'static str) -> Self {
        Self::InvalidField {
            field: field.to_owned(),
            reason,
        }
    }

    fn bad_amount(received: impl fmt::Display, reason: &'static str) -> Self {
        Self::BadAmount {
            received: received.to_string(),
            reason,
        }
    }

    fn from_http(err: reqwest::Error) -> Self {
        let retryable = err.is_timeout()
            || err.is_connect()
            || err.is_request()
            || err.status().is_some_and(|s| s.is_server_error() || s.as_u16() == 429);
        let status = err.status().map(|s| s.as_u16());
        // The URL carries the signature: keep it out of messages and logs.
        let message = err.without_url().to_string();
        Self::Http {
            retryable,
            status,
            message,
        }
    }
}

// ---------------------------------------------------------------------------
// Hashing

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashAlgorithm {
    #[default]
    Md5,
    Sha1,
    Sha256,
    Sha384,
    Sha512,
    Ripemd160,
}

impl HashAlgorithm {
    pub const ALL: [HashAlgorithm; 6] = [
        Self::Md5,
        Self::Sha1,
        Self::Sha256,
        Self::Sha384,
        Self::Sha512,
        Self::Ripemd160,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "md5",
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
            Self::Ripemd160 => "ripemd160",
        }
    }
}

impl fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Accepts the names of the shop's settings page in any case, with or
/// without a dash (`MD5`, `sha-256`, `RIPEMD160`).
impl FromStr for HashAlgorithm {
    type Err = RobokassaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim().to_ascii_lowercase().replace('-', "");
        Self::ALL
            .into_iter()
            .find(|algorithm| algorithm.as_str() == name)
            .ok_or_else(|| RobokassaError::UnknownAlgorithm(s.to_owned()))
    }
}

/// The lowercase hex digest of `text` (UTF-8).
pub fn sign(algorithm: HashAlgorithm, text: &str) -> String {
    use sha2::Digest;
    let bytes = text.as_bytes();
    match algorithm {
        HashAlgorithm::Md5 => lower_hex(&md5::Md5::digest(bytes)),
        HashAlgorithm::Sha1 => lower_hex(&sha1::Sha1::digest(bytes)),
        HashAlgorithm::Sha256 => lower_hex(&sha2::Sha256::digest(bytes)),
        HashAlgorithm::Sha384 => lower_hex(&sha2::Sha384::digest(bytes)),
        HashAlgorithm::Sha512 => lower_hex(&sha2::Sha512::digest(bytes)),
        HashAlgorithm::Ripemd160 => lower_hex(&ripemd::Ripemd160::digest(bytes)),
    }
}

fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        hex.push(DIGITS[usize::from(byte >> 4)] as char);
        hex.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
    hex
}

/// Case-insensitive, constant-time comparison of a received hex signature
/// with the expected lowercase one.
pub fn signatures_match(expected: &str, received: &str) -> bool {
    let received = received.trim().to_ascii_lowercase();
    expected.as_bytes().ct_eq(received.as_bytes()).into()
}

/// `parts:password[:Shp_k=v...]`, the shape of every Robokassa signature.
fn signature_base(parts: &[&str], password: &str, shp: &BTreeMap<String, String>) -> String {
    let mut base = parts.join(":");
    base.push(':');
    base.push_str(password);
    for (key, value) in shp {
        base.push(':');
        base.push_str(key);
        base.push('=');
        base.push_str(value);
    }
    base
}

fn is_shp_key(key: &str) -> bool {
    key.get(..4).is_some_and(|prefix| prefix.eq_ignore_ascii_case("shp_"))
}

// ---------------------------------------------------------------------------
// Configuration

#[derive(Clone, PartialEq, Eq)]
pub struct RobokassaConfig {
    pub merchant_login: String,
    /// Password #1: signs requests and SuccessURL. In test mode, the shop's
    /// test Password #1 (Robokassa keeps separate test passwords).
    pub password1: String,
    /// Password #2: signs ResultURL and `OpStateExt`. In test mode, the
    /// shop's test Password #2.
    pub password2: String,
    /// Sends `IsTest=1`: nothing is charged, and the passwords above must
    /// be the shop's test passwords.
    pub is_test: bool,
    pub algorithm: HashAlgorithm,
    /// `https://auth.robokassa.ru/Merchant` unless tests point it at a fake.
    pub base_url: String,
    /// The payment page's language (`ru`, `en`), when not Robokassa's guess.
    pub culture: Option<String>,
}

impl fmt::Debug for RobokassaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const REDACTED: &str = "<redacted>";
        f.debug_struct("RobokassaConfig")
            .field("merchant_login", &self.merchant_login)
            .field("password1", &REDACTED)
            .field("password2", &REDACTED)
            .field("is_test", &self.is_test)
            .field("algorithm", &self.algorithm)
            .field("base_url", &self.base_url)
            .field("culture", &self.culture)
            .finish()
    }
}

impl RobokassaConfig {
    /// Reads `ROBOKASSA_LOGIN`, `ROBOKASSA_PASSWORD1`, `ROBOKASSA_PASSWORD2`
    /// (all required), and the optional `ROBOKASSA_HASH` (md5 by default),
    /// `ROBOKASSA_TEST` (`1` sends `IsTest=1`; set the test passwords then),
    /// `ROBOKASSA_URL` (the `.../Merchant` base, for a fake) and
    /// `ROBOKASSA_CULTURE`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, RobokassaError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let is_test = match get("ROBOKASSA_TEST").as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("0" | "false" | "no") => false,
            Some("1" | "true" | "yes") => true,
            Some(_) => return Err(RobokassaError::invalid("ROBOKASSA_TEST", "expected 1 or 0")),
        };
        let required = |name: &'static str| get(name).ok_or(RobokassaError::MissingField(name));
        let base_url = get("ROBOKASSA_URL").unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        url::Url::parse(&base_url).map_err(|_| RobokassaError::invalid("ROBOKASSA_URL", "not a URL"))?;
        Ok(Self {
            merchant_login: required("ROBOKASSA_LOGIN")?,
            password1: required("ROBOKASSA_PASSWORD1")?,
            password2: required("ROBOKASSA_PASSWORD2")?,
            is_test,
            algorithm: get("ROBOKASSA_HASH")
                .map(|name| name.parse())
                .transpose()?
                .unwrap_or_default(),
            base_url,
            culture: get("ROBOKASSA_CULTURE"),
        })
    }

    /// Password #1: signs requests and SuccessURL.
    fn password1(&self) -> &str {
        &self.password1
    }

    /// Password #2: signs ResultURL and `OpStateExt`.
    fn password2(&self) -> &str {
        &self.password2
    }

    fn endpoint(&self, path: &str) -> Result<url::Url, RobokassaError> {
        let base = self.base_url.trim_end_matches('/');
        url::Url::parse(&format!("{base}/{path}")).map_err(|_| RobokassaError::invalid("base_url", "not a URL"))
    }

    /// The signature of a payment or recurring request.
    fn request_signature(
        &self,
        out_sum: &str,
        inv_id: u32,
        receipt: Option<&str>,
        shp: &BTreeMap<String, String>,
    ) -> String {
        let inv_id = inv_id.to_string();
        let mut parts = vec![self.merchant_login.as_str(), out_sum, &inv_id];
        parts.extend(receipt);
        sign(self.algorithm, &signature_base(&parts, self.password1(), shp))
    }
}

// ---------------------------------------------------------------------------
// Amounts

/// `amount` as a whole number of kopecks; `None` for fractions of a kopeck,
/// negative amounts or amounts beyond `i64`.
pub fn amount_in_kopecks(amount: Decimal) -> Option<i64> {
    let kopecks = amount.checked_mul(Decimal::ONE_HUNDRED)?;
    if !kopecks.fract().is_zero() || (kopecks.is_sign_negative() && !kopecks.is_zero()) {
        return None;
    }
    kopecks.to_i64()
}

/// `OutSum` for requests: rubles with exactly two decimals.
fn format_out_sum(amount: Decimal) -> Result<String, RobokassaError> {
    if amount_in_kopecks(amount).is_none_or(|kopecks| kopecks <= 0) {
        return Err(RobokassaError::bad_amount(
            amount,
            "is not a positive whole number of kopecks",
        ));
    }
    let mut amount = amount.normalize();
    amount.rescale(2);
    Ok(amount.to_string())
}

fn check_inv_id(inv_id: u32, field: &str) -> Result<(), RobokassaError> {
    if inv_id == 0 || inv_id > MAX_INV_ID {
        return Err(RobokassaError::invalid(field, "must be between 1 and 2147483647"));
    }
    Ok(())
}

fn check_shp(shp: &BTreeMap<String, String>) -> Result<(), RobokassaError> {
    match shp.keys().find(|key| !is_shp_key(key) || key.contains(['=', ':'])) {
        Some(key) => Err(RobokassaError::invalid(key, "user parameters are named Shp_...")),
        None => Ok(()),
    }
}

/// A 54-FZ receipt, URL-encoded once: the form in which it is signed and
/// sent as a field value (a URL query encodes it a second time).
fn encode_receipt(receipt: &serde_json::Value) -> String {
    form_urlencoded::byte_serialize(receipt.to_string().as_bytes()).collect()
}

// ---------------------------------------------------------------------------
// Payment URL

#[derive(Debug, Clone, PartialEq)]
pub struct PaymentRequest {
    /// Our number for this payment (1..=2147483647).
    pub inv_id: u32,
    /// Rubles; at most two decimals.
    pub out_sum: Decimal,
    pub description: String,
    /// Returned in every callback, e.g. `Shp_invoice` = our invoice id.
    pub shp: BTreeMap<String, String>,
    /// A 54-FZ receipt (`{"items": [...]}`), signed with the request.
    pub receipt: Option<serde_json::Value>,
    /// The first payment of a series that [`charge_recurring`] continues.
    pub recurring: bool,
    pub email: Option<String>,
    /// Overrides [`RobokassaConfig::culture`].
    pub culture: Option<String>,
}

/// The `Index.aspx` URL that sends the user to pay.
pub fn payment_url(config: &RobokassaConfig, request: &PaymentRequest) -> Result<url::Url, RobokassaError> {
    check_inv_id(request.inv_id, "InvId")?;
    check_shp(&request.shp)?;
    if request.description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(RobokassaError::invalid("Description", "longer than 100 characters"));
    }
    let out_sum = format_out_sum(request.out_sum)?;
    let receipt = request.receipt.as_ref().map(encode_receipt);
    let signature = config.request_signature(&out_sum, request.inv_id, receipt.as_deref(), &request.shp);

    let mut url = config.endpoint("Index.aspx")?;
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("MerchantLogin", &config.merchant_login)
            .append_pair("OutSum", &out_sum)
            .append_pair("InvId", &request.inv_id.to_string())
            .append_pair("Description", &request.description)
            .append_pair("SignatureValue", &signature);
        if config.is_test {
            query.append_pair("IsTest", "1");
        }
        if let Some(culture) = request.culture.as_ref().or(config.culture.as_ref()) {
            query.append_pair("Culture", culture);
        }
        if let Some(email) = &request.email {
            query.append_pair("Email", email);
        }
        if request.recurring {
            query.append_pair("Recurring", "true");
        }
        if let Some(receipt) = &receipt {
            query.append_pair("Receipt", receipt);
        }
        for (key, value) in &request.shp {
            query.append_pair(key, value);
        }
    }
    Ok(url)
}

// ---------------------------------------------------------------------------
// Callbacks: ResultURL, SuccessURL, FailURL

/// What Robokassa sends to ResultURL (signed with Password #2) and to
/// SuccessURL (signed with Password #1).
#[derive(Clone, PartialEq)]
pub struct ResultCallback {
    /// `OutSum` exactly as received (`100.000000`): the signature covers it.
    pub out_sum_raw: String,
    pub out_sum: Decimal,
    pub inv_id: u32,
    pub signature: String,
    /// `Shp_` parameters with their names as received.
    pub shp: BTreeMap<String, String>,
    pub fee: Option<Decimal>,
    pub email: Option<String>,
    pub inc_curr_label: Option<String>,
    pub payment_method: Option<String>,
    pub is_test: bool,
    pub culture: Option<String>,
}

impl fmt::Debug for ResultCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResultCallback")
            .field("out_sum_raw", &self.out_sum_raw)
            .field("inv_id", &self.inv_id)
            .field("signature", &"<redacted>")
            .field("shp", &self.shp)
            .field("fee", &self.fee)
            .field("email", &self.email)
            .field("inc_curr_label", &self.inc_curr_label)
            .field("payment_method", &self.payment_method)
            .field("is_test", &self.is_test)
            .field("culture", &self.culture)
            .finish()
    }
}

/// What Robokassa sends to FailURL when the user gives up. It carries no
/// signature: it proves nothing and must never change an invoice; it only
/// tells which invoice to show the user.
#[derive(Debug, Clone, PartialEq)]
pub struct FailRedirect {
    pub inv_id: u32,
    pub out_sum_raw: Option<String>,
    pub shp: BTreeMap<String, String>,
    pub culture: Option<String>,
}

/// The parameters of a callback, named case-insensitively except `Shp_`.
#[derive(Default)]
struct CallbackParams {
    known: BTreeMap<&'static str, String>,
    shp: BTreeMap<String, String>,
}

const CALLBACK_FIELDS: [&str; 10] = [
    "OutSum",
    "InvId",
    "SignatureValue",
    "Fee",
    "EMail",
    "IncCurrLabel",
    "PaymentMethod",
    "IsTest",
    "Culture",
    "Description",
];

impl CallbackParams {
    /// `encoded` is a POST `application/x-www-form-urlencoded` body or a GET
    /// query string (without `?`). Repeated fields are rejected: two
    /// `OutSum`s could sign one and credit the other.
    fn parse(encoded: &str) -> Result<Self, RobokassaError> {
        let mut params = Self::default();
        for (key, value) in form_urlencoded::parse(encoded.trim_start_matches('?').as_bytes()) {
            let duplicate = if is_shp_key(&key) {
                params.shp.insert(key.to_string(), value.into_owned()).is_some()
            } else if let Some(field) = CALLBACK_FIELDS.iter().find(|f| f.eq_ignore_ascii_case(&key)) {
                params.known.insert(field, value.into_owned()).is_some()
            } else {
                false
            };
            if duplicate {
                return Err(RobokassaError::invalid(&key, "repeated"));
            }
        }
        Ok(params)
    }

    fn take(&mut self, field: &'static str) -> Option<String> {
        self.known.remove(field).filter(|value| !value.is_empty())
    }

    fn require(&mut self, field: &'static str) -> Result<String, RobokassaError> {
        self.take(field).ok_or(RobokassaError::MissingField(field))
    }

    fn inv_id(&mut self) -> Result<u32, RobokassaError> {
        let text = self.require("InvId")?;
        // Only canonical digits: the signature is over the text, the
        // invoice lookup over the number, and both must be the same.
        let inv_id: u32 = text
            .parse()
            .ok()
            .filter(|id: &u32| id.to_string() == text)
            .ok_or_else(|| RobokassaError::invalid("InvId", "not a canonical integer"))?;
        check_inv_id(inv_id, "InvId")?;
        Ok(inv_id)
    }

    fn decimal(text: &str, field: &str) -> Result<Decimal, RobokassaError> {
        Decimal::from_str_exact(text.trim()).map_err(|_| RobokassaError::invalid(field, "not a decimal number"))
    }
}

impl ResultCallback {
    /// Parses a ResultURL or SuccessURL callback from a POST form body or a
    /// GET query string. Checks the shape only: call [`verify_result`] or
    /// [`verify_success`] before trusting it.
    pub fn parse(encoded: &str) -> Result<Self, RobokassaError> {
        let mut params = CallbackParams::parse(encoded)?;
        let out_sum_raw = params.require("OutSum")?;
        let out_sum = CallbackParams::decimal(&out_sum_raw, "OutSum")?;
        let fee = params
            .take("Fee")
            .map(|fee| CallbackParams::decimal(&fee, "Fee"))
            .transpose()?;
        Ok(Self {
            out_sum,
            out_sum_raw,
            inv_id: params.inv_id()?,
            signature: params.require("SignatureValue")?,
            fee,
            email: params.take("EMail"),
            inc_curr_label: params.take("IncCurrLabel"),
            payment_method: params.take("PaymentMethod"),
            is_test: params.take("IsTest").as_deref() == Some("1"),
            culture: params.take("Culture"),
            shp: params.shp,
        })
    }

    /// `Ok` when `OutSum` is exactly `expected_kopecks`; fractions of a
    /// kopeck never match.
    pub fn check_amount(&self, expected_kopecks: i64) -> Result<(), RobokassaError> {
        match amount_in_kopecks(self.out_sum) {
            Some(kopecks) if kopecks == expected_kopecks => Ok(()),
            Some(_) => Err(RobokassaError::bad_amount(
                &self.out_sum_raw,
                "differs from the invoice",
            )),
            None => Err(RobokassaError::bad_amount(
                &self.out_sum_raw,
                "is not a whole number of kopecks",
            )),
        }
    }

    fn verify(&self, password: &str, algorithm: HashAlgorithm) -> Result<(), RobokassaError> {
        let inv_id = self.inv_id.to_string();
        let expected = sign(
            algorithm,
            &signature_base(&[&self.out_sum_raw, &inv_id], password, &self.shp),
        );
        if signatures_match(&expected, &self.signature) {
            Ok(())
        } else {
            Err(RobokassaError::BadSignature)
        }
    }
}

impl FailRedirect {
    pub fn parse(encoded: &str) -> Result<Self, RobokassaError> {
        let mut params = CallbackParams::parse(encoded)?;
        Ok(Self {
            inv_id: params.inv_id()?,
            out_sum_raw: params.take("OutSum"),
            culture: params.take("Culture"),
            shp: params.shp,
        })
    }
}

/// Checks a ResultURL callback: `OutSum:InvId:Password2[:Shp_...]`.
pub fn verify_result(config: &RobokassaConfig, callback: &ResultCallback) -> Result<(), RobokassaError> {
    callback.verify(config.password2(), config.algorithm)
}

/// Checks a SuccessURL redirect: `OutSum:InvId:Password1[:Shp_...]`. The
/// user's browser brings it, so it only decides what page to show; money
/// is credited on ResultURL alone.
pub fn verify_success(config: &RobokassaConfig, callback: &ResultCallback) -> Result<(), RobokassaError> {
    callback.verify(config.password1(), config.algorithm)
}

/// The ResultURL answer Robokassa expects, exactly.
pub fn ok_answer(inv_id: u32) -> String {
    format!("OK{inv_id}")
}

// ---------------------------------------------------------------------------
// Recurring charges

#[derive(Debug, Clone, PartialEq)]
pub struct RecurringRequest {
    /// A new invoice id for this charge.
    pub inv_id: u32,
    /// The first payment of the series (made with `Recurring=true`).
    pub previous_inv_id: u32,
    pub out_sum: Decimal,
    pub description: String,
    pub shp: BTreeMap<String, String>,
    pub receipt: Option<serde_json::Value>,
}

/// Robokassa took the charge; it is not paid until ResultURL says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecurringAccepted {
    pub inv_id: u32,
}

/// The form fields to POST to `{base_url}/Recurring`, signed like a payment
/// request (`PreviousInvoiceID` is not signed).
pub fn recurring_form(
    config: &RobokassaConfig,
    request: &RecurringRequest,
) -> Result<Vec<(String, String)>, RobokassaError> {
    check_inv_id(request.inv_id, "InvoiceID")?;
    check_inv_id(request.previous_inv_id, "PreviousInvoiceID")?;
    check_shp(&request.shp)?;
    let out_sum = format_out_sum(request.out_sum)?;
    let receipt = request.receipt.as_ref().map(encode_receipt);
    let signature = config.request_signature(&out_sum, request.inv_id, receipt.as_deref(), &request.shp);
    let mut form = vec![
        ("MerchantLogin".to_owned(), config.merchant_login.clone()),
        ("InvoiceID".to_owned(), request.inv_id.to_string()),
        ("PreviousInvoiceID".to_owned(), request.previous_inv_id.to_string()),
        ("OutSum".to_owned(), out_sum),
        ("Description".to_owned(), request.description.clone()),
        ("SignatureValue".to_owned(), signature),
    ];
    if config.is_test {
        form.push(("IsTest".to_owned(), "1".to_owned()));
    }
    form.extend(receipt.map(|receipt| ("Receipt".to_owned(), receipt)));
    form.extend(request.shp.clone());
    Ok(form)
}

/// Asks Robokassa to charge the card of `previous_inv_id` again. An `OK...`
/// answer means accepted; the ResultURL callback then confirms the payment.
pub async fn charge_recurring(
    http: &reqwest::Client,
    config: &RobokassaConfig,
    request: &RecurringRequest,
) -> Result<RecurringAccepted, RobokassaError> {
    let form = recurring_form(config, request)?;
    let body = send(http.post(config.endpoint("Recurring")?).form(&form)).await?;
    let answer = body.trim();
    if answer.starts_with("OK") {
        Ok(RecurringAccepted { inv_id: request.inv_id })
    } else {
        Err(RobokassaError::Declined(shorten(answer)))
    }
}

/// The `Shp_` parameters of a request for `invoice`: our invoice id.
pub fn invoice_shp(invoice: &Invoice) -> BTreeMap<String, String> {
    [(SHP_INVOICE.to_owned(), invoice.id.to_string())].into()
}

/// The `Description` of a request for `invoice`, within Robokassa's limit.
pub fn description(invoice: &Invoice) -> String {
    invoice.title.ru.chars().take(MAX_DESCRIPTION_CHARS).collect()
}

/// The renewal method a paid invoice leaves: a subscription's first
/// payment (made with `Recurring=true`) is the parent that `/Recurring`
/// charges name in `PreviousInvoiceID`.
pub fn renewal_of(invoice: &Invoice, inv_id: u32) -> Option<RenewalMethod> {
    invoice
        .recurring
        .then_some(RenewalMethod::Robokassa { parent_inv_id: inv_id })
}

/// Charges a Robokassa subscription's card again (`/Recurring`).
#[derive(Debug, Clone)]
pub struct RobokassaRecurring {
    config: RobokassaConfig,
    http: reqwest::Client,
    store: Store,
}

impl RobokassaRecurring {
    pub fn new(config: RobokassaConfig, http: reqwest::Client, store: Store) -> Self {
        Self { config, http, store }
    }
}

impl RecurringCharge for RobokassaRecurring {
    /// Gives the invoice its own `InvId` (once, like the pay link) and asks
    /// Robokassa to charge the parent payment's card. `OK` only means
    /// accepted: ResultURL credits the invoice later.
    async fn charge_again(&self, method: &RenewalMethod, invoice: &Invoice) -> Result<ChargeOutcome, ChargeError> {
        let RenewalMethod::Robokassa { parent_inv_id } = method else {
            return Err(ChargeError::NotChargeable {
                provider: method.provider().as_str(),
                reason: "Robokassa charges only its own parent payments",
            });
        };
        ChargeError::check_provider(invoice, method)?;
        match invoice.status {
            // Already charged and confirmed: never ask Robokassa twice.
            InvoiceStatus::Paid => {
                return Ok(ChargeOutcome::Paid {
                    provider_ref: invoice.provider_ref.clone().unwrap_or_default(),
                });
            }
            InvoiceStatus::Pending => {}
            other => return Err(ChargeError::invoice(invoice, format!("it is {other}"))),
        }
        let request = RecurringRequest {
            inv_id: self.store.robokassa_inv_id(invoice).await?,
            previous_inv_id: *parent_inv_id,
            out_sum: invoice.amount_due.amount(),
            description: description(invoice),
            shp: invoice_shp(invoice),
            receipt: None,
        };
        match charge_recurring(&self.http, &self.config, &request).await {
            Ok(accepted) => Ok(ChargeOutcome::Accepted {
                provider_ref: accepted.inv_id.to_string(),
            }),
            Err(RobokassaError::Declined(reason)) => Ok(ChargeOutcome::Declined { reason }),
            Err(err) if err.is_retryable() => Ok(ChargeOutcome::Unavailable {
                reason: err.to_string(),
            }),
            Err(err) => Err(ChargeError::Refused(err.to_string())),
        }
    }
}

/// The body of a 2xx answer; any other status is an error.
async fn send(request: reqwest::RequestBuilder) -> Result<String, RobokassaError> {
    let response = request.send().await.map_err(RobokassaError::from_http)?;
    let response = response.error_for_status().map_err(RobokassaError::from_http)?;
    response.text().await.map_err(RobokassaError::from_http)
}

/// Provider text kept in errors and logs stays short.
fn shorten(text: &str) -> String {
    const MAX_CHARS: usize = 200;
    match text.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

// ---------------------------------------------------------------------------
// OpStateExt

/// An operation's state as `OpStateExt` reports it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OpState {
    /// `Result/Code`: 0 when the answer holds the operation.
    pub result_code: i32,
    /// `State/Code`: 5 initiated, 10 cancelled, 20 on hold, 50 paid and
    /// being credited, 60 refunded, 80 suspended, 100 paid.
    pub state_code: Option<i32>,
    pub request_date: Option<String>,
    pub state_date: Option<String>,
    pub inc_curr_label: Option<String>,
    pub inc_sum: Option<Decimal>,
    pub out_sum: Option<Decimal>,
    pub payment_method: Option<String>,
    pub op_key: Option<String>,
    /// The `Shp_` parameters of the operation (`UserField`).
    pub user_fields: BTreeMap<String, String>,
}

impl OpState {
    pub fn is_paid(&self) -> bool {
        self.result_code == 0 && self.state_code == Some(STATE_PAID)
    }

    /// Parses the XML answer. A result code other than 0 is an error
    /// ([`RobokassaError::Service`]; 3 is "no such invoice").
    pub fn parse_xml(xml: &str) -> Result<Self, RobokassaError> {
        let unexpected = || RobokassaError::UnexpectedAnswer(shorten(xml.trim()));
        let result = xml_element(xml, "Result").ok_or_else(unexpected)?;
        let result_code = xml_int(result, "Code").ok_or_else(unexpected)?;
        if result_code != 0 {
            return Err(RobokassaError::Service {
                code: result_code,
                description: xml_text(result, "Description").map(|d| shorten(&d)).unwrap_or_default(),
            });
        }
        let state = xml_element(xml, "State").unwrap_or_default();
        let info = xml_element(xml, "Info").unwrap_or_default();
        let decimal = |name: &str| -> Result<Option<Decimal>, RobokassaError> {
            xml_text(info, name)
                .map(|text| Decimal::from_str_exact(&text).map_err(|_| unexpected()))
                .transpose()
        };
        let mut user_fields = BTreeMap::new();
        let mut rest = xml_element(xml, "UserField").unwrap_or_default();
        while let Some((field, after)) = xml_element_and_rest(rest, "Field") {
            if let (Some(name), Some(value)) = (xml_text(field, "Name"), xml_text(field, "Value")) {
                user_fields.insert(name, value);
            }
            rest = after;
        }
        Ok(Self {
            result_code,
            state_code: xml_int(state, "Code"),
            request_date: xml_text(state, "RequestDate"),
            state_date: xml_text(state, "StateDate"),
            inc_curr_label: xml_text(info, "IncCurrLabel"),
            inc_sum: decimal("IncSum")?,
            out_sum: decimal("OutSum")?,
            payment_method: xml_element(info, "PaymentMethod").and_then(|method| xml_text(method, "Code")),
            op_key: xml_text(info, "OpKey"),
            user_fields,
        })
    }
}

/// Asks Robokassa for the state of invoice `inv_id`.
pub async fn op_state(
    http: &reqwest::Client,
    config: &RobokassaConfig,
    inv_id: u32,
) -> Result<OpState, RobokassaError> {
    check_inv_id(inv_id, "InvoiceID")?;
    let inv_id_text = inv_id.to_string();
    let signature = sign(
        config.algorithm,
        &signature_base(
            &[&config.merchant_login, &inv_id_text],
            config.password2(),
            &BTreeMap::new(),
        ),
    );
    let mut url = config.endpoint("WebService/Service.asmx/OpStateExt")?;
    url.query_pairs_mut()
        .append_pair("MerchantLogin", &config.merchant_login)
        .append_pair("InvoiceID", &inv_id_text)
        .append_pair("Signature", &signature);
    let body = send(http.get(url)).await?;
    OpState::parse_xml(&body)
}

/// The content of the first `<name ...>...</name>` (or `""` for `<name/>`).
/// Enough for Robokassa's flat, namespace-free answers.
fn xml_element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    xml_element_and_rest(xml, name).map(|(content, _)| content)
}

/// The content of the first `name` element and the text after it.
fn xml_element_and_rest<'a>(xml: &'a str, name: &str) -> Option<(&'a str, &'a str)> {
    let open = format!("<{name}");
    let mut from = 0;
    loop {
        let start = from + xml[from..].find(&open)?;
        let after_name = &xml[start + open.len()..];
        let tag_end = after_name.find('>')?;
        let is_this_tag = after_name
            .chars()
            .next()
            .is_some_and(|c| c == '>' || c == '/' || c.is_whitespace());
        if !is_this_tag {
            from = start + open.len();
            continue;
        }
        let content_start = start + open.len() + tag_end + 1;
        if after_name[..tag_end].ends_with('/') {
            return Some(("", &xml[content_start..]));
        }
        let close = format!("</{name}>");
        let content_len = xml[content_start..].find(&close)?;
        let content_end = content_start + content_len;
        return Some((&xml[content_start..content_end], &xml[content_end + close.len()..]));
    }
}

/// The unescaped, trimmed text of element `name`; `None` when absent or empty.
fn xml_text(xml: &str, name: &str) -> Option<String> {
    let text = xml_element(xml, name)?.trim();
    (!text.is_empty()).then(|| {
        text.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
    })
}

fn xml_int(xml: &str, name: &str) -> Option<i32> {
    xml_text(xml, name)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn config() -> RobokassaConfig {
        RobokassaConfig {
            merchant_login: "robo-demo".to_owned(),
            password1: "password_1".to_owned(),
            password2: "password#2".to_owned(),
            is_test: false,
            algorithm: HashAlgorithm::Md5,
            base_url: DEFAULT_BASE_URL.to_owned(),
            culture: None,
        }
    }

    fn shp(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn payment(inv_id: u32, out_sum: Decimal) -> PaymentRequest {
        PaymentRequest {
            inv_id,
            out_sum,
            description: "100 tokens".to_owned(),
            shp: shp(&[("Shp_invoice", "inv-1")]),
            receipt: None,
            recurring: false,
            email: None,
            culture: None,
        }
    }

    /// A ResultURL body as Robokassa would send it, signed with `password`.
    fn signed_callback(out_sum: &str, inv_id: u32, password: &str, shp: &BTreeMap<String, String>) -> String {
        let signature = sign(
            HashAlgorithm::Md5,
            &signature_base(&[out_sum, &inv_id.to_string()], password, shp),
        );
        let mut body = form_urlencoded::Serializer::new(String::new());
        body.append_pair("out_summ", out_sum)
            .append_pair("OutSum", out_sum)
            .append_pair("InvId", &inv_id.to_string())
            .append_pair("SignatureValue", &signature.to_ascii_uppercase())
            .append_pair("Fee", "3.900000")
            .append_pair("EMail", "user@example.com")
            .append_pair("PaymentMethod", "BankCard");
        body.extend_pairs(shp);
        body.finish()
    }

    fn query(url: &url::Url) -> BTreeMap<String, String> {
        url.query_pairs().into_owned().collect()
    }

    #[test]
    fn design_test_vectors() {
        assert_eq!(
            sign(HashAlgorithm::Md5, "10:1:password#2"),
            "f38a17bc0db36343789587e4e5abf33c"
        );
        assert_eq!(
            sign(HashAlgorithm::Sha256, "10:1:password#2"),
            "6229bb8aa8f4e431fc43022f2847ae3296a9d7fe649b97cb65755abc90d15f0c"
        );
        assert_eq!(
            sign(
                HashAlgorithm::Md5,
                "10:1:password#2:shp_email=user@example.com:shp_user_id=1"
            ),
            "9c4b932169d6b683e2b76e31bae35aeb"
        );
        assert_eq!(
            sign(HashAlgorithm::Md5, "robo-demo:100.00:1:password_1"),
            "8ca1d1c1a6f9353bebe5b087697ba797"
        );
    }

    #[test]
    fn signature_base_sorts_shp_after_the_password() {
        let shp = shp(&[("shp_user_id", "1"), ("shp_email", "user@example.com")]);
        assert_eq!(
            signature_base(&["10", "1"], "password#2", &shp),
            "10:1:password#2:shp_email=user@example.com:shp_user_id=1"
        );
    }

    #[test]
    fn every_algorithm_has_its_digest_length_and_parses_from_config() {
        for (algorithm, hex_len) in HashAlgorithm::ALL.into_iter().zip([32, 40, 64, 96, 128, 40]) {
            let signature = sign(algorithm, "robo-demo:100.00:1:password_1");
            assert_eq!(signature.len(), hex_len, "{algorithm}");
            assert!(
                signature
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            assert_eq!(algorithm.as_str().parse::<HashAlgorithm>().unwrap(), algorithm);
            assert_eq!(
                algorithm.as_str().to_uppercase().parse::<HashAlgorithm>().unwrap(),
                algorithm
            );
        }
        assert_eq!("sha-256".parse::<HashAlgorithm>().unwrap(), HashAlgorithm::Sha256);
        assert_eq!(
            sign(HashAlgorithm::Sha1, "abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            sign(HashAlgorithm::Ripemd160, "abc"),
            "8eb208f7e05d987a9b044a8e98c6b087f15a0bfc"
        );
        assert!("crc32".parse::<HashAlgorithm>().is_err());
        assert_eq!(HashAlgorithm::default(), HashAlgorithm::Md5);
    }

    #[test]
    fn signatures_compare_case_insensitively() {
        let expected = sign(HashAlgorithm::Md5, "10:1:password#2");
        assert!(signatures_match(&expected, "F38A17BC0DB36343789587E4E5ABF33C"));
        assert!(signatures_match(&expected, "f38a17bc0db36343789587e4e5abf33c"));
        assert!(!signatures_match(&expected, "f38a17bc0db36343789587e4e5abf33d"));
        assert!(!signatures_match(&expected, "f38a17bc"));
        assert!(!signatures_match(&expected, ""));
    }

    #[test]
    fn payment_url_matches_the_design_vector() {
        let mut request = payment(1, dec!(100));
        request.shp.clear();
        let url = payment_url(&config(), &request).unwrap();
        assert!(
            url.as_str()
                .starts_with("https://auth.robokassa.ru/Merchant/Index.aspx?")
        );
        let query = query(&url);
        assert_eq!(query["MerchantLogin"], "robo-demo");
        assert_eq!(query["OutSum"], "100.00");
        assert_eq!(query["InvId"], "1");
        assert_eq!(query["Description"], "100 tokens");
        assert_eq!(query["SignatureValue"], "8ca1d1c1a6f9353bebe5b087697ba797");
        assert!(!query.contains_key("IsTest"));
        assert!(!query.contains_key("Recurring"));
        assert!(!query.contains_key("Receipt"));
    }

    #[test]
    fn payment_url_signs_shp_sorted_and_sends_them() {
        let mut request = payment(7, dec!(199.5));
        request.shp = shp(&[("Shp_user", "42"), ("Shp_invoice", "inv 1&2")]);
        let url = payment_url(&config(), &request).unwrap();
        let query = query(&url);
        assert_eq!(query["OutSum"], "199.50");
        assert_eq!(query["Shp_invoice"], "inv 1&2");
        assert_eq!(query["Shp_user"], "42");
        let expected = sign(
            HashAlgorithm::Md5,
            "robo-demo:199.50:7:password_1:Shp_invoice=inv 1&2:Shp_user=42",
        );
        assert_eq!(query["SignatureValue"], expected);
    }

    #[test]
    fn test_mode_sends_is_test_and_signs_with_the_test_password() {
        let config = RobokassaConfig {
            is_test: true,
            password1: "test_password_1".to_owned(),
            password2: "test_password#2".to_owned(),
            culture: Some("en".to_owned()),
            ..config()
        };
        let mut request = payment(1, dec!(100.00));
        request.shp.clear();
        request.recurring = true;
        request.email = Some("a+b@example.com".to_owned());
        let query = query(&payment_url(&config, &request).unwrap());
        assert_eq!(query["IsTest"], "1");
        assert_eq!(query["Culture"], "en");
        assert_eq!(query["Recurring"], "true");
        assert_eq!(query["Email"], "a+b@example.com");
        assert_eq!(
            query["SignatureValue"],
            sign(HashAlgorithm::Md5, "robo-demo:100.00:1:test_password_1")
        );
    }

    #[test]
    fn receipt_is_url_encoded_signed_and_encoded_again_in_the_url() {
        let receipt = serde_json::json!({
            "items": [{ "name": "100 токенов", "quantity": 1, "sum": 100, "tax": "none" }]
        });
        let mut request = payment(3, dec!(100));
        request.receipt = Some(receipt.clone());
        let url = payment_url(&config(), &request).unwrap();
        let encoded_once: String = form_urlencoded::byte_serialize(receipt.to_string().as_bytes()).collect();
        assert!(encoded_once.starts_with("%7B%22items%22"));
        let params = query(&url);
        assert_eq!(
            params["Receipt"], encoded_once,
            "the query decodes to the once-encoded form"
        );
        assert!(url.as_str().contains("Receipt=%257B%2522items"), "{url}");
        let expected = sign(
            HashAlgorithm::Md5,
            &format!("robo-demo:100.00:3:{encoded_once}:password_1:Shp_invoice=inv-1"),
        );
        assert_eq!(params["SignatureValue"], expected);
        let without_receipt = payment_url(&config(), &payment(3, dec!(100))).unwrap();
        assert_ne!(query(&without_receipt)["SignatureValue"], expected);
    }

    #[test]
    fn payment_requests_reject_bad_values() {
        let config = config();
        for out_sum in [dec!(0), dec!(-1), dec!(10.001)] {
            let err = payment_url(&config, &payment(1, out_sum)).unwrap_err();
            assert!(matches!(err, RobokassaError::BadAmount { .. }), "{out_sum}: {err}");
        }
        assert!(payment_url(&config, &payment(0, dec!(1))).is_err());
        assert!(payment_url(&config, &payment(MAX_INV_ID + 1, dec!(1))).is_err());
        assert!(payment_url(&config, &payment(MAX_INV_ID, dec!(1))).is_ok());
        let mut request = payment(1, dec!(1));
        request.shp = shp(&[("invoice", "x")]);
        assert!(payment_url(&config, &request).is_err());
        request.shp.clear();
        request.description = "x".repeat(101);
        assert!(payment_url(&config, &request).is_err());
        assert!(payment_url(&config, &payment(1, dec!(10.000))).is_ok());
    }

    #[test]
    fn result_callback_with_six_decimals_verifies_and_matches_in_kopecks() {
        let config = config();
        let shp = shp(&[("Shp_invoice", "inv-1")]);
        let body = signed_callback("100.000000", 5, "password#2", &shp);
        let callback = ResultCallback::parse(&body).unwrap();
        assert_eq!(callback.out_sum_raw, "100.000000");
        assert_eq!(callback.out_sum, dec!(100));
        assert_eq!(callback.inv_id, 5);
        assert_eq!(callback.shp, shp);
        assert_eq!(callback.fee, Some(dec!(3.9)));
        assert_eq!(callback.email.as_deref(), Some("user@example.com"));
        assert_eq!(callback.payment_method.as_deref(), Some("BankCard"));
        verify_result(&config, &callback).unwrap();
        callback.check_amount(10_000).unwrap();
        assert!(matches!(
            callback.check_amount(10_001),
            Err(RobokassaError::BadAmount { .. })
        ));
        assert_eq!(ok_answer(callback.inv_id), "OK5");
        // ResultURL is signed with Password #2, not #1.
        assert!(matches!(
            verify_success(&config, &callback),
            Err(RobokassaError::BadSignature)
        ));
    }

    #[test]
    fn result_callback_from_a_get_query_with_lowercase_names() {
        let signature = sign(
            HashAlgorithm::Md5,
            "10:1:password#2:shp_email=user@example.com:shp_user_id=1",
        );
        let query = format!("?outsum=10&invid=1&signaturevalue={signature}&shp_email=user%40example.com&shp_user_id=1");
        let callback = ResultCallback::parse(&query).unwrap();
        assert_eq!(callback.signature, "9c4b932169d6b683e2b76e31bae35aeb");
        verify_result(&config(), &callback).unwrap();
    }

    #[test]
    fn forged_or_altered_callbacks_fail_verification() {
        let config = config();
        let shp = shp(&[("Shp_invoice", "inv-1")]);
        let genuine = signed_callback("100.000000", 5, "password#2", &shp);

        let forged = signed_callback("100.000000", 5, "guessed", &shp);
        let callback = ResultCallback::parse(&forged).unwrap();
        assert!(matches!(
            verify_result(&config, &callback),
            Err(RobokassaError::BadSignature)
        ));

        let changed_sum = genuine.replace("OutSum=100.000000", "OutSum=1.000000");
        let callback = ResultCallback::parse(&changed_sum).unwrap();
        assert!(matches!(
            verify_result(&config, &callback),
            Err(RobokassaError::BadSignature)
        ));

        let other_invoice = genuine.replace("Shp_invoice=inv-1", "Shp_invoice=inv-2");
        let callback = ResultCallback::parse(&other_invoice).unwrap();
        assert!(matches!(
            verify_result(&config, &callback),
            Err(RobokassaError::BadSignature)
        ));

        let other_inv_id = genuine.replace("InvId=5", "InvId=6");
        let callback = ResultCallback::parse(&other_inv_id).unwrap();
        assert!(matches!(
            verify_result(&config, &callback),
            Err(RobokassaError::BadSignature)
        ));

        // Shp_ names are case-sensitive in the signature.
        let renamed = genuine.replace("Shp_invoice", "shp_invoice");
        let callback = ResultCallback::parse(&renamed).unwrap();
        assert!(matches!(
            verify_result(&config, &callback),
            Err(RobokassaError::BadSignature)
        ));

        let callback = ResultCallback::parse(&genuine).unwrap();
        let test_mode = RobokassaConfig {
            is_test: true,
            password1: "test_password_1".to_owned(),
            password2: "test_password#2".to_owned(),
            ..config
        };
        assert!(verify_result(&test_mode, &callback).is_err());
    }

    #[test]
    fn success_redirect_verifies_with_password_one() {
        let shp = shp(&[("Shp_invoice", "inv-1")]);
        let body = format!(
            "{}&Culture=ru&IsTest=1",
            signed_callback("100.00", 5, "test_password_1", &shp)
        );
        let callback = ResultCallback::parse(&body).unwrap();
        assert!(callback.is_test);
        assert_eq!(callback.culture.as_deref(), Some("ru"));
        let test_mode = RobokassaConfig {
            is_test: true,
            password1: "test_password_1".to_owned(),
            password2: "test_password#2".to_owned(),
            ..config()
        };
        verify_success(&test_mode, &callback).unwrap();
        assert!(verify_result(&test_mode, &callback).is_err());
    }

    #[test]
    fn fail_redirect_needs_only_inv_id() {
        let redirect = FailRedirect::parse("OutSum=100.00&InvId=9&Culture=ru&Shp_invoice=inv-9").unwrap();
        assert_eq!(redirect.inv_id, 9);
        assert_eq!(redirect.out_sum_raw.as_deref(), Some("100.00"));
        assert_eq!(redirect.shp["Shp_invoice"], "inv-9");
        assert!(matches!(
            FailRedirect::parse("OutSum=1"),
            Err(RobokassaError::MissingField("InvId"))
        ));
    }

    #[test]
    fn malformed_callbacks_are_errors_not_panics() {
        for (body, expected) in [
            ("InvId=1&SignatureValue=ab", "missing OutSum"),
            ("OutSum=1&SignatureValue=ab", "missing InvId"),
            ("OutSum=1&InvId=1", "missing SignatureValue"),
            (
                "OutSum=abc&InvId=1&SignatureValue=ab",
                "invalid OutSum: not a decimal number",
            ),
            (
                "OutSum=1&InvId=-1&SignatureValue=ab",
                "invalid InvId: not a canonical integer",
            ),
            (
                "OutSum=1&InvId=01&SignatureValue=ab",
                "invalid InvId: not a canonical integer",
            ),
            (
                "OutSum=1&InvId=0&SignatureValue=ab",
                "invalid InvId: must be between 1 and 2147483647",
            ),
            (
                "OutSum=1&InvId=4294967296&SignatureValue=ab",
                "invalid InvId: not a canonical integer",
            ),
            (
                "OutSum=1&outsum=2&InvId=1&SignatureValue=ab",
                "invalid outsum: repeated",
            ),
            (
                "OutSum=1&InvId=1&SignatureValue=ab&Shp_a=1&Shp_a=2",
                "invalid Shp_a: repeated",
            ),
            ("%FF%FE=%FF&OutSum=1", "missing InvId"),
            ("", "missing OutSum"),
        ] {
            let err = ResultCallback::parse(body).unwrap_err();
            assert_eq!(err.to_string(), expected, "{body}");
        }
    }

    #[test]
    fn kopecks_are_exact() {
        assert_eq!(amount_in_kopecks(dec!(100.000000)), Some(10_000));
        assert_eq!(amount_in_kopecks(dec!(0.01)), Some(1));
        assert_eq!(amount_in_kopecks(dec!(0)), Some(0));
        assert_eq!(amount_in_kopecks(dec!(100.001)), None);
        assert_eq!(amount_in_kopecks(dec!(-1)), None);
        assert_eq!(amount_in_kopecks(Decimal::MAX), None);
        let fractional = ResultCallback::parse(&signed_callback("100.005", 5, "password#2", &BTreeMap::new())).unwrap();
        let err = fractional.check_amount(10_000).unwrap_err();
        assert_eq!(err.to_string(), "amount 100.005 is not a whole number of kopecks");
    }

    #[test]
    fn debug_never_shows_passwords_or_signatures() {
        let config = config();
        let shown = format!("{config:?} {config:#?}");
        for secret in ["password_1", "password#2"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("robo-demo"));
        let callback = ResultCallback::parse(&signed_callback("100.00", 5, "password#2", &BTreeMap::new())).unwrap();
        assert!(!format!("{callback:?}").contains(&callback.signature));
    }

    #[test]
    fn config_from_lookup() {
        let vars = BTreeMap::from([
            ("ROBOKASSA_LOGIN", "shop"),
            ("ROBOKASSA_PASSWORD1", "t1"),
            ("ROBOKASSA_PASSWORD2", "t2"),
            ("ROBOKASSA_TEST", "1"),
            ("ROBOKASSA_HASH", "SHA256"),
        ]);
        let config = RobokassaConfig::from_lookup(|name| vars.get(name).map(|v| (*v).to_owned())).unwrap();
        assert!(config.is_test);
        assert_eq!(config.algorithm, HashAlgorithm::Sha256);
        assert_eq!(config.base_url, DEFAULT_BASE_URL);
        assert_eq!((config.password1(), config.password2()), ("t1", "t2"));
        let live = RobokassaConfig::from_lookup(|name| {
            (name == "ROBOKASSA_LOGIN" || name == "ROBOKASSA_PASSWORD1").then(|| "x".to_owned())
        });
        assert!(matches!(live, Err(RobokassaError::MissingField("ROBOKASSA_PASSWORD2"))));
        let live = RobokassaConfig::from_lookup(|name| match name {
            "ROBOKASSA_LOGIN" | "ROBOKASSA_PASSWORD1" | "ROBOKASSA_PASSWORD2" => Some("x".to_owned()),
            "ROBOKASSA_URL" => Some("http://127.0.0.1:9/Merchant".to_owned()),
            _ => None,
        })
        .unwrap();
        assert!(!live.is_test);
        assert_eq!(live.algorithm, HashAlgorithm::Md5, "md5 by default");
        assert_eq!(live.base_url, "http://127.0.0.1:9/Merchant");
        let bad = |name: &'static str, value: &'static str| {
            RobokassaConfig::from_lookup(move |n| match n {
                "ROBOKASSA_LOGIN" | "ROBOKASSA_PASSWORD1" | "ROBOKASSA_PASSWORD2" => Some("x".to_owned()),
                n if n == name => Some(value.to_owned()),
                _ => None,
            })
            .is_err()
        };
        assert!(bad("ROBOKASSA_TEST", "maybe"));
        assert!(bad("ROBOKASSA_HASH", "crc32"));
        assert!(bad("ROBOKASSA_URL", "not a url"));
    }

    #[test]
    fn recurring_form_signs_like_a_payment_without_the_previous_invoice() {
        let request = RecurringRequest {
            inv_id: 1,
            previous_inv_id: 77,
            out_sum: dec!(100),
            description: "renewal".to_owned(),
            shp: BTreeMap::new(),
            receipt: None,
        };
        let form: BTreeMap<_, _> = recurring_form(&config(), &request).unwrap().into_iter().collect();
        assert_eq!(form["InvoiceID"], "1");
        assert_eq!(form["PreviousInvoiceID"], "77");
        assert_eq!(form["OutSum"], "100.00");
        assert_eq!(form["SignatureValue"], "8ca1d1c1a6f9353bebe5b087697ba797");
        assert!(!form.contains_key("IsTest"));
    }

    const OP_STATE_PAID: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<OperationStateResponse xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns="http://merchant.roboxchange.com/WebService/">
  <Result><Code>0</Code></Result>
  <State>
    <Code>100</Code>
    <RequestDate>2024-05-01T10:21:22.05+03:00</RequestDate>
    <StateDate>2024-05-01T10:20:54.68+03:00</StateDate>
  </State>
  <Info xsi:type="OperationInfoExt">
    <IncCurrLabel>BankCardPSR</IncCurrLabel>
    <IncSum>100.000000</IncSum>
    <IncAccount>220000******0000</IncAccount>
    <PaymentMethod><Code>BankCard</Code><Description>Банковская карта</Description></PaymentMethod>
    <OutCurrLabel>BankCardPSR</OutCurrLabel>
    <OutSum>100.000000</OutSum>
    <OpKey>ABC-123</OpKey>
    <BankCardRRN/>
  </Info>
  <UserField>
    <Field><Name>Shp_invoice</Name><Value>inv-1 &amp; more</Value></Field>
    <Field><Name>Shp_user</Name><Value>42</Value></Field>
  </UserField>
</OperationStateResponse>"#;

    #[test]
    fn op_state_parses_a_paid_operation() {
        let state = OpState::parse_xml(OP_STATE_PAID).unwrap();
        assert!(state.is_paid());
        assert_eq!(state.state_code, Some(100));
        assert_eq!(state.out_sum, Some(dec!(100)));
        assert_eq!(state.inc_sum, Some(dec!(100)));
        assert_eq!(state.inc_curr_label.as_deref(), Some("BankCardPSR"));
        assert_eq!(state.payment_method.as_deref(), Some("BankCard"));
        assert_eq!(state.op_key.as_deref(), Some("ABC-123"));
        assert_eq!(state.state_date.as_deref(), Some("2024-05-01T10:20:54.68+03:00"));
        assert_eq!(state.user_fields["Shp_invoice"], "inv-1 & more");
        assert_eq!(state.user_fields["Shp_user"], "42");
    }

    #[test]
    fn op_state_errors() {
        let pending = OP_STATE_PAID.replace("<Code>100</Code>", "<Code>5</Code>");
        assert!(!OpState::parse_xml(&pending).unwrap().is_paid());
        let not_found = "<OperationStateResponse><Result><Code>3</Code><Description>Invoice not found</Description></Result></OperationStateResponse>";
        let err = OpState::parse_xml(not_found).unwrap_err();
        assert!(matches!(err, RobokassaError::Service { code: 3, .. }), "{err}");
        assert!(!err.is_retryable());
        let internal = "<OperationStateResponse><Result><Code>1000</Code></Result></OperationStateResponse>";
        assert!(OpState::parse_xml(internal).unwrap_err().is_retryable());
        for garbage in [
            "",
            "<html>502</html>",
            "<Result><Code>x</Code></Result>",
            "<Result><Code>0",
        ] {
            assert!(matches!(
                OpState::parse_xml(garbage),
                Err(RobokassaError::UnexpectedAnswer(_))
            ));
        }
    }

    #[test]
    fn xml_element_skips_longer_names() {
        assert_eq!(xml_element("<Codes>1</Codes><Code>2</Code>", "Code"), Some("2"));
        assert_eq!(xml_element("<Code/>", "Code"), Some(""));
        assert_eq!(xml_element("<Code a=\"1\">3</Code>", "Code"), Some("3"));
    }
}
