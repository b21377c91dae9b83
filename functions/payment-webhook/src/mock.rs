//! The mock provider's routes: its checkout page plays the provider (a
//! person pays or declines, and may save the card for renewals; the
//! provider sends its signed callback), the callback route is where the
//! provider's word is checked and acted on, and the recurring route plays
//! the provider's API for charging a saved card again.

use http::{Response, StatusCode};
use serde_json::json;
use tokenbill::domain::InvoiceId;
use tokenbill::domain::invoice::{InvoiceStatus, Provider};
use tokenbill::domain::notification::{Message, Notification, NotificationId};
use tokenbill::payments::mock::{
    self, CardBehaviour, MockChargeAnswer, MockEvent, MockEventKind, MockProvider, SIGNATURE_HEADER,
};

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
            let form = incoming.form();
            let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
            let event = match field("action") {
                Some("pay") => MockEventKind::Succeeded,
                Some("decline") => MockEventKind::Declined,
                _ => return Err(Failure::Malformed("action must be pay or decline".into())),
            };
            // A saved card comes back as a recurring token in the callback,
            // minted with the outcome its later charges get.
            let saved_card = match (event, field("save_card")) {
                (MockEventKind::Succeeded, Some(_)) => {
                    let behaviour = match field("card") {
                        None => CardBehaviour::Approve,
                        Some(name) => CardBehaviour::parse(name)
                            .ok_or_else(|| Failure::Malformed("card must be approve, decline or unavailable".into()))?,
                    };
                    Some((behaviour, provider.mint_token(invoice.user, behaviour)))
                }
                _ => None,
            };
            let event = MockEvent {
                event,
                invoice_id: invoice.id.clone(),
                // One payment per invoice: pressing Pay twice pays once.
                payment_id: format!("mock_{}", invoice.id),
                amount: invoice.amount_due.amount(),
                currency: invoice.amount_due.currency().code().to_owned(),
                recurring: false,
                recurring_token: saved_card.as_ref().map(|(_, token)| token.clone()),
            };
            self.send_mock_event(provider, &event).await?;
            Ok(Some((event.event, saved_card.map(|(behaviour, _)| behaviour))))
        }
        .await;
        match result {
            Ok(None) => self.not_payable_page(),
            Ok(Some((MockEventKind::Succeeded, None))) => self.result_page(
                "Payment succeeded",
                "Your tokens are in your balance. The bot will message you.",
            ),
            Ok(Some((MockEventKind::Succeeded, Some(behaviour)))) => self.result_page(
                "Payment succeeded",
                &format!(
                    "Your tokens are in your balance. The bot will message you. \
                     The card is saved for renewals (test card: {}).",
                    behaviour.as_str()
                ),
            ),
            Ok(Some((MockEventKind::Declined, _))) => self.result_page(
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

    /// The provider's signed callback for `event`, delivered in process
    /// through the same verification as an HTTP callback.
    async fn send_mock_event(&self, provider: &MockProvider, event: &MockEvent) -> Result<MockEventKind, Failure> {
        let (signature, body) = provider.callback(event, self.store.now());
        self.mock_event(provider.verify(Some(&signature), &body, self.store.now())?)
            .await
    }

    /// `POST /payments/mock/recurring`: the provider's API for charging a
    /// saved card (signed like its callbacks, by whoever holds the secret:
    /// our renewals). A card approves, declines or is unavailable as it
    /// was minted; an approved charge is paid with the provider's signed
    /// callback, so it credits through the one exactly-once path.
    pub(crate) async fn mock_recurring(&self, incoming: &Incoming<'_>) -> Response<String> {
        let result = async {
            let provider = self.mock_provider()?;
            let charge = provider.verify_charge(incoming.header(SIGNATURE_HEADER), incoming.body, self.store.now())?;
            let invoice = self.mock_invoice(charge.invoice_id.as_str()).await?;
            let declined = |reason: &str| {
                Ok(MockChargeAnswer::Declined {
                    reason: reason.to_owned(),
                })
            };
            // Only the customer the card was saved for can be charged.
            match provider.card(&charge.recurring_token, invoice.user) {
                None => return declined("unknown card"),
                Some(CardBehaviour::Decline) => return declined("card declined"),
                Some(CardBehaviour::Unavailable) => {
                    return Err(Failure::Unavailable("the mock card's bank is unavailable".into()));
                }
                Some(CardBehaviour::Approve) => {}
            }
            if invoice.status != InvoiceStatus::Paid && !self.offered(&invoice) {
                return Err(Failure::Malformed(format!("invoice {} is not payable", invoice.id)));
            }
            let payment_id = mock::recurring_payment_id(&invoice.id);
            let event = MockEvent {
                event: MockEventKind::Succeeded,
                invoice_id: invoice.id.clone(),
                payment_id: payment_id.clone(),
                amount: charge.amount,
                currency: charge.currency,
                recurring: true,
                recurring_token: None,
            };
            self.send_mock_event(provider, &event).await?;
            Ok(MockChargeAnswer::Paid { payment_id })
        }
        .await;
        match result {
            Ok(answer) => respond(
                StatusCode::OK,
                "application/json",
                serde_json::to_string(&answer).unwrap_or_default(),
            ),
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
