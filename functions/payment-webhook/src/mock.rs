//! The mock provider's routes: its checkout page plays the provider (a
//! person pays or declines, the provider sends its signed callback), and
//! the callback route is where the provider's word is checked and acted on.

use http::{Response, StatusCode};
use serde_json::json;
use tokenbill::domain::InvoiceId;
use tokenbill::domain::invoice::{InvoiceStatus, Provider};
use tokenbill::domain::notification::{Message, Notification, NotificationId};
use tokenbill::payments::mock::{MockEvent, MockEventKind, MockProvider, SIGNATURE_HEADER};

use crate::{Failure, Incoming, PaymentWebhook, pages, respond};

impl PaymentWebhook {
    fn mock_provider(&self) -> Result<&MockProvider, Failure> {
        self.config
            .mock
            .as_ref()
            .ok_or(Failure::Disabled("the mock provider is not enabled"))
    }

    async fn mock_invoice(&self, id: &str) -> Result<tokenbill::domain::invoice::Invoice, Failure> {
        let not_found = || Failure::NotFound(format!("invoice {id}"));
        let id = InvoiceId::new(id).map_err(|_| not_found())?;
        self.store
            .invoice(&id)
            .await?
            .filter(|invoice| invoice.provider == Provider::Mock)
            .ok_or_else(not_found)
    }

    pub(crate) async fn mock_checkout_page(&self, invoice: &str) -> Response<String> {
        let result = async {
            self.mock_provider()?;
            self.mock_invoice(invoice).await
        }
        .await;
        match result {
            Ok(invoice) if invoice.status == InvoiceStatus::Paid => {
                self.result_page("Already paid", "This invoice is paid. Your tokens are in your balance.")
            }
            // Only a pending invoice in its time is offered for payment (a
            // late payment can still arrive by callback and is credited).
            Ok(invoice) if !self.offered(&invoice) => self.not_payable_page(),
            Ok(invoice) => respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                pages::mock_checkout(&invoice),
            ),
            Err(failure) => failure.page(),
        }
    }

    /// Pay or Decline pressed: the mock provider sends its signed callback
    /// (in-process, through the same verification as an HTTP callback).
    pub(crate) async fn mock_checkout_action(&self, invoice: &str, incoming: &Incoming<'_>) -> Response<String> {
        let result = async {
            let provider = self.mock_provider()?;
            let invoice = self.mock_invoice(invoice).await?;
            if invoice.status != InvoiceStatus::Paid && !self.offered(&invoice) {
                return Ok(None);
            }
            let action = incoming.form().into_iter().find(|(k, _)| k == "action").map(|(_, v)| v);
            let event = match action.as_deref() {
                Some("pay") => MockEventKind::Succeeded,
                Some("decline") => MockEventKind::Declined,
                _ => return Err(Failure::Malformed("action must be pay or decline".into())),
            };
            let event = MockEvent {
                event,
                invoice_id: invoice.id.clone(),
                // One payment per invoice: pressing Pay twice pays once.
                payment_id: format!("mock_{}", invoice.id),
                amount: invoice.amount_due.amount(),
                currency: invoice.amount_due.currency().code().to_owned(),
                recurring: false,
            };
            let (signature, body) = provider.callback(&event, self.store.now());
            self.mock_event(provider.verify(Some(&signature), &body, self.store.now())?)
                .await
                .map(Some)
        }
        .await;
        match result {
            Ok(None) => self.not_payable_page(),
            Ok(Some(MockEventKind::Succeeded)) => self.result_page(
                "Payment succeeded",
                "Your tokens are in your balance. The bot will message you.",
            ),
            Ok(Some(MockEventKind::Declined)) => self.result_page(
                "Payment declined",
                "No money was taken. You can try again from the bot.",
            ),
            Err(failure) => failure.page(),
        }
    }

    /// `POST /payments/mock/callback`: signed by the mock provider.
    pub(crate) async fn mock_callback(&self, incoming: &Incoming<'_>) -> Response<String> {
        let result = async {
            let provider = self.mock_provider()?;
            let event = provider.verify(incoming.header(SIGNATURE_HEADER), incoming.body, self.store.now())?;
            self.mock_event(event).await
        }
        .await;
        match result {
            Ok(kind) => {
                let status = match kind {
                    MockEventKind::Succeeded => "credited",
                    MockEventKind::Declined => "declined",
                };
                respond(
                    StatusCode::OK,
                    "application/json",
                    json!({ "status": status }).to_string(),
                )
            }
            Err(failure) => failure.json(),
        }
    }

    /// Acts on a verified event: credits a payment, or tells the user a
    /// payment was declined (the invoice stays payable).
    async fn mock_event(&self, event: MockEvent) -> Result<MockEventKind, Failure> {
        match event.event {
            MockEventKind::Succeeded => {
                let proof = event.proof()?;
                let payment = self.store.confirm_payment(&proof, Vec::new()).await?;
                tracing::info!(invoice = %payment.invoice.id, replayed = payment.replayed, "mock payment credited");
                self.publish(NotificationId::payment(&payment.invoice.id)).await;
            }
            MockEventKind::Declined => {
                let invoice = self.mock_invoice(event.invoice_id.as_str()).await?;
                if invoice.status == InvoiceStatus::Pending {
                    let id = NotificationId::payment_declined(&invoice.id);
                    let message = Message::PaymentDeclined {
                        invoice_id: invoice.id.clone(),
                        title: invoice.title.clone(),
                    };
                    let notification = Notification::new(id.clone(), invoice.user, message, self.store.now());
                    if self.store.add_notification(&notification).await? {
                        self.publish(id).await;
                    }
                }
            }
        }
        Ok(event.event)
    }

    /// Only a pending invoice in its time is offered for payment on the
    /// checkout page (a late payment can still arrive by callback and is
    /// credited).
    fn offered(&self, invoice: &tokenbill::domain::invoice::Invoice) -> bool {
        invoice.status == InvoiceStatus::Pending && !invoice.is_expired_at(self.store.now())
    }

    fn not_payable_page(&self) -> Response<String> {
        self.result_page(
            "Not payable",
            "This invoice is no longer waiting for payment. Start a new purchase in the bot.",
        )
    }

    pub(crate) fn result_page(&self, title: &str, text: &str) -> Response<String> {
        respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            pages::message(title, text, Some(&self.config.bot_url)),
        )
    }
}
