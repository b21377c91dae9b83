//! Robokassa's routes. The protocol (signatures, URLs, parsing) lives in
//! [`tokenbill::payments::robokassa`]; here each handler parses, calls one
//! operation and maps the outcome through [`Failure`].
//!
//! - `pay/{invoice}`: gives the invoice its `InvId` once (an atomic counter,
//!   saved as the invoice's provider reference) and redirects to Robokassa's
//!   payment page with `Shp_invoice` = our invoice id.
//! - `result` (ResultURL): the only route that credits. Verified with
//!   Password #2; `OutSum` must equal the invoice to the kopeck; credited
//!   once through [`tokenbill::Store::confirm_payment_of`]; answered
//!   `OK{InvId}`, also for a repeat. DynamoDB trouble answers 5xx so
//!   Robokassa calls again.
//! - `success` (SuccessURL, Password #1) and `fail` (FailURL, unsigned):
//!   pages for the payer's browser; they never change an invoice.

use http::Response;
use rust_decimal::Decimal;
use tokenbill::domain::invoice::{Invoice, InvoiceStatus, Provider};
use tokenbill::domain::notification::NotificationId;
use tokenbill::domain::{Currency, InvoiceId, Money};
use tokenbill::payments::robokassa::{
    self, FailRedirect, PaymentRequest, ResultCallback, RobokassaConfig, RobokassaError,
};
use tokenbill::store::PaymentProof;

use crate::{Failure, Incoming, PaymentWebhook, redirect, respond};

pub use robokassa::SHP_INVOICE;

/// What the payer's browser sees after SuccessURL.
enum SuccessPage {
    Credited,
    /// ResultURL has not arrived yet (it may come a little later).
    Processing,
}

impl PaymentWebhook {
    fn robokassa_config(&self) -> Result<&RobokassaConfig, Failure> {
        self.config
            .robokassa
            .as_ref()
            .ok_or(Failure::Disabled("Robokassa is not enabled"))
    }

    /// A Robokassa invoice by our id (consistent read).
    async fn robokassa_invoice(&self, id: &str) -> Result<Invoice, Failure> {
        let not_found = || Failure::NotFound(format!("invoice {id}"));
        let id = InvoiceId::new(id).map_err(|_| not_found())?;
        self.store
            .invoice(&id)
            .await?
            .filter(|invoice| invoice.provider == Provider::Robokassa)
            .ok_or_else(not_found)
    }

    /// `GET /payments/robokassa/pay/{invoice}`: the link the bot sends.
    pub(crate) async fn robokassa_pay(&self, invoice: &str) -> Response<String> {
        let result: Result<Result<url::Url, (&str, &str)>, Failure> = async {
            let config = self.robokassa_config()?;
            let invoice = self.robokassa_invoice(invoice).await?;
            let closed = match invoice.status {
                InvoiceStatus::Paid => Some(("Already paid", "This invoice is paid. Your tokens are in your balance.")),
                InvoiceStatus::Expired | InvoiceStatus::Cancelled => Some((
                    "Invoice closed",
                    "This invoice can no longer be paid. Please start a new purchase in the bot.",
                )),
                InvoiceStatus::Pending if invoice.is_expired_at(self.store.now()) => Some((
                    "Invoice expired",
                    "This invoice has expired. Please start a new purchase in the bot.",
                )),
                InvoiceStatus::Refunded => Some((
                    "Invoice refunded",
                    "This invoice was paid and refunded. Please start a new purchase in the bot.",
                )),
                InvoiceStatus::Pending => None,
            };
            if let Some((title, text)) = closed {
                return Ok(Err((title, text)));
            }
            let inv_id = self.store.robokassa_inv_id(&invoice).await?;
            let request = PaymentRequest {
                inv_id,
                out_sum: invoice.amount_due.amount(),
                description: robokassa::description(&invoice),
                shp: robokassa::invoice_shp(&invoice),
                receipt: None,
                // A subscription's first payment: Robokassa keeps the card
                // for `/Recurring` charges that name this InvId.
                recurring: invoice.recurring,
                email: None,
                culture: None,
            };
            Ok(Ok(robokassa::payment_url(config, &request)?))
        }
        .await;
        match result {
            Ok(Ok(url)) => redirect(url.as_str()),
            Ok(Err((title, text))) => self.result_page(title, text),
            Err(failure) => failure.page(),
        }
    }

    /// ResultURL: Robokassa's signed notice that the payer paid.
    pub(crate) async fn robokassa_result(&self, incoming: &Incoming<'_>) -> Response<String> {
        let result = async {
            let config = self.robokassa_config()?;
            let callback = ResultCallback::parse(&encoded_form(incoming)?)?;
            robokassa::verify_result(config, &callback)?;
            self.credit_robokassa(&callback).await
        }
        .await;
        match result {
            Ok(answer) => respond(http::StatusCode::OK, "text/plain; charset=utf-8", answer),
            Err(failure) => failure.text(),
        }
    }

    /// Credits a verified ResultURL callback once; the answer Robokassa
    /// expects, the same for every repeat.
    async fn credit_robokassa(&self, callback: &ResultCallback) -> Result<String, Failure> {
        let invoice_id = shp_invoice(&callback.shp)?;
        let invoice = self
            .store
            .invoice(&invoice_id)
            .await?
            .ok_or_else(|| Failure::NotFound(format!("invoice {invoice_id}")))?;
        // Both are signed, so they agree unless the InvId was given to
        // another invoice: never credit across invoices.
        let inv_id = callback.inv_id.to_string();
        if invoice.provider_ref.as_deref() != Some(inv_id.as_str()) {
            return Err(Failure::Mismatch(format!(
                "InvId {inv_id} is not the Robokassa payment of invoice {invoice_id}"
            )));
        }
        let kopecks = robokassa::amount_in_kopecks(callback.out_sum).ok_or_else(|| {
            Failure::from(RobokassaError::BadAmount {
                received: callback.out_sum_raw.clone(),
                reason: "is not a whole number of kopecks",
            })
        })?;
        let amount =
            Money::new(Decimal::new(kopecks, 2), Currency::Rub).map_err(|e| Failure::Mismatch(e.to_string()))?;
        if invoice.status == InvoiceStatus::Refunded {
            // Credited once, then reversed: a late repeat is acknowledged
            // and credits nothing again.
            invoice
                .check_payment(Provider::Robokassa, &amount)
                .map_err(tokenbill::store::StoreError::from)?;
            tracing::info!(invoice = %invoice.id, inv_id = callback.inv_id, "Robokassa repeat for a refunded invoice");
            return Ok(robokassa::ok_answer(callback.inv_id));
        }
        let proof = PaymentProof {
            invoice_id: invoice_id.clone(),
            provider: Provider::Robokassa,
            amount,
            provider_ref: Some(inv_id),
            renewal: robokassa::renewal_of(&invoice, callback.inv_id),
        };
        let payment = self.store.confirm_payment_of(invoice, &proof, Vec::new()).await?;
        tracing::info!(
            invoice = %payment.invoice.id,
            inv_id = callback.inv_id,
            replayed = payment.replayed,
            paid_late = payment.invoice.paid_late,
            "Robokassa payment credited"
        );
        self.publish(NotificationId::payment(&payment.invoice.id)).await;
        Ok(robokassa::ok_answer(callback.inv_id))
    }

    /// SuccessURL: the payer's browser back from Robokassa. Proves the
    /// redirect came from Robokassa (Password #1) but credits nothing:
    /// only ResultURL does.
    pub(crate) async fn robokassa_success(&self, incoming: &Incoming<'_>) -> Response<String> {
        let result: Result<SuccessPage, Failure> = async {
            let config = self.robokassa_config()?;
            let callback = ResultCallback::parse(&encoded_form(incoming)?)?;
            robokassa::verify_success(config, &callback)?;
            let invoice = self.robokassa_invoice(shp_invoice(&callback.shp)?.as_str()).await?;
            Ok(if invoice.status == InvoiceStatus::Paid {
                SuccessPage::Credited
            } else {
                SuccessPage::Processing
            })
        }
        .await;
        match result {
            Ok(SuccessPage::Credited) => self.result_page(
                "Payment received",
                "Thank you! Your tokens are in your balance. The bot will message you.",
            ),
            Ok(SuccessPage::Processing) => self.result_page(
                "Payment is being confirmed",
                "Thank you! Robokassa is confirming the payment; the bot will message you as soon as the tokens are credited.",
            ),
            Err(failure) => failure.page(),
        }
    }

    /// FailURL: the payer gave up or the payment failed. Robokassa does not
    /// sign it, so it proves nothing and changes nothing.
    pub(crate) async fn robokassa_fail(&self, incoming: &Incoming<'_>) -> Response<String> {
        let result = async {
            self.robokassa_config()?;
            FailRedirect::parse(&encoded_form(incoming)?)?;
            Ok::<_, Failure>(())
        }
        .await;
        match result {
            Ok(()) => self.result_page(
                "Payment not completed",
                "No money was taken. You can try again from the bot.",
            ),
            Err(failure) => failure.page(),
        }
    }
}

/// The callback's fields as one form string: the query, and for a POST
/// the body after it.
fn encoded_form(incoming: &Incoming<'_>) -> Result<String, Failure> {
    let body = std::str::from_utf8(incoming.body).map_err(|_| Failure::Malformed("the form is not UTF-8".into()))?;
    let parts: Vec<&str> = [incoming.query, body]
        .into_iter()
        .take(if incoming.method == http::Method::POST { 2 } else { 1 })
        .filter(|part| !part.is_empty())
        .collect();
    Ok(parts.join("&"))
}

/// Our invoice id from the signed `Shp_invoice` parameter.
fn shp_invoice(shp: &std::collections::BTreeMap<String, String>) -> Result<InvoiceId, Failure> {
    let value = shp
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(SHP_INVOICE))
        .map(|(_, value)| value)
        .ok_or_else(|| Failure::Malformed(format!("missing {SHP_INVOICE}")))?;
    InvoiceId::new(value.as_str()).map_err(|_| Failure::NotFound(format!("invoice {value}")))
}
