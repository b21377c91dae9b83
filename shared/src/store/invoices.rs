//! Invoices: created from the catalog (prices never come from a client),
//! paid exactly once, cancelled or expired with their promo redemption
//! given back.

use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem, Update};
use chrono::{DateTime, Duration, Utc};

use super::item::{Item, n, parse, record, s};
use super::keys;
use super::subscriptions::period_of;
use super::{BalanceRequest, Receipt, Store, StoreError};
use crate::domain::invoice::{Invoice, InvoiceEvent, InvoiceStatus, Provider};
use crate::domain::ledger::{CreditKind, DebitKind};
use crate::domain::notification::{Message, Notification, NotificationId};
use crate::domain::pricing;
use crate::domain::promo::PromoCodeText;
use crate::domain::subscription::{PeriodPurchase, RenewalMethod, SubscriptionRecord};
use crate::domain::tariff::TariffKind;
use crate::domain::{DomainError, IdempotencyKey, InvoiceId, TariffId, UserId};

/// How long an invoice waits for payment unless configured otherwise.
pub const DEFAULT_INVOICE_TTL: Duration = Duration::hours(1);
/// Robokassa's `InvId` is a signed 32-bit integer.
pub const ROBOKASSA_INV_ID_MAX: u64 = 2_147_483_647;
/// Attempts when an invoice changes between its read and its write.
const ATTEMPTS: usize = 5;

/// What the user chose: the price comes from the catalog, never from here.
#[derive(Debug, Clone)]
pub struct NewInvoice {
    pub user: UserId,
    pub tariff_id: TariffId,
    pub provider: Provider,
    pub promo: Option<PromoCodeText>,
}

/// A priced invoice and the items that would store it.
#[derive(Debug, Clone)]
pub struct InvoiceDraft {
    pub invoice: Invoice,
    items: Vec<TransactWriteItem>,
    slots: Option<super::promos::RedemptionSlots>,
}

/// A provider's proof that money arrived for an invoice, already verified
/// (signature, replay window) by the provider's adapter.
#[derive(Debug, Clone)]
pub struct PaymentProof {
    pub invoice_id: InvoiceId,
    pub provider: Provider,
    pub amount: crate::domain::Money,
    /// The provider's id of the payment (Robokassa `InvId`, Stars charge id...).
    pub provider_ref: Option<String>,
    /// How the provider can charge again, when it kept the payment method
    /// (saved on the paid invoice).
    pub renewal: Option<RenewalMethod>,
}

/// The message a paid invoice sends its user: a renewal says until when
/// the subscription now runs.
fn payment_notification(
    invoice: &Invoice,
    tokens: crate::domain::Tokens,
    subscription: Option<&SubscriptionRecord>,
    now: DateTime<Utc>,
) -> Notification {
    let message = match (invoice.period, subscription) {
        (Some(period), Some(record)) if period.renewal => Message::SubscriptionRenewed {
            title: invoice.title.clone(),
            tokens,
            period_end: record.subscription.period_end,
        },
        _ => Message::PaymentReceived {
            invoice_id: invoice.id.clone(),
            title: invoice.title.clone(),
            tokens,
            amount: invoice.amount_due,
        },
    };
    Notification::new(NotificationId::payment(&invoice.id), invoice.user, message, now)
}

/// A renewal's tokens are a `renewal` entry; everything else bought is a
/// `purchase`.
fn credit_kind(invoice: &Invoice) -> CreditKind {
    if invoice.period.is_some_and(|period| period.renewal) {
        CreditKind::Renewal
    } else {
        CreditKind::Purchase
    }
}

/// The outcome of a confirmed payment.
#[derive(Debug, Clone)]
pub struct Payment {
    pub invoice: Invoice,
    pub receipt: Receipt,
    /// True when the payment had already been credited before this call.
    pub replayed: bool,
}

impl Store {
    /// Creates a pending invoice from the catalog and reserves its promo
    /// code's redemption in the same transaction. An invoice with nothing
    /// to pay (a full discount) is completed at once, without a provider.
    pub async fn create_invoice(&self, new: NewInvoice, ttl: Duration) -> Result<Invoice, StoreError> {
        let user = self.existing_user(new.user).await?;
        let tariff = self.tariff(&new.tariff_id).await?;
        let promo = match &new.promo {
            Some(code) => {
                let promo = self.promo(code).await?;
                let uses = if promo.is_some() {
                    self.promo_uses(code, user.id).await?
                } else {
                    0
                };
                Some((promo, uses))
            }
            None => None,
        };
        let draft = self.draft_invoice(&user, &new, tariff, promo, ttl)?;
        self.commit_invoice(draft, Vec::new()).await
    }

    /// Prices an invoice from data already read: the user, the tariff as
    /// stored (prices only ever come from there) and, when a code is given,
    /// the code and the user's uses of it. Nothing is written.
    pub fn draft_invoice(
        &self,
        user: &crate::domain::user::User,
        new: &NewInvoice,
        tariff: Option<crate::domain::tariff::Tariff>,
        promo: Option<(Option<crate::domain::promo::PromoCode>, u64)>,
        ttl: Duration,
    ) -> Result<InvoiceDraft, StoreError> {
        let tariff = tariff
            .filter(|tariff| tariff.active)
            .ok_or_else(|| StoreError::NotFound {
                what: format!("tariff {}", new.tariff_id),
            })?;
        let currency = new.provider.currency();
        let promo = match promo {
            Some((promo, uses)) => Some(self.evaluate_promo(user, promo, uses, Some((&tariff, currency)))?),
            None => None,
        };
        let quote = pricing::quote(&tariff, currency, promo.as_ref())?;
        let now = self.now();
        let invoice = Invoice {
            id: InvoiceId::new(uuid::Uuid::now_v7().simple().to_string())?,
            user: user.id,
            tariff_id: tariff.id.clone(),
            title: tariff.title.clone(),
            tokens: quote.tokens,
            bonus_tokens: quote.bonus_tokens,
            price: quote.price,
            discount: quote.discount,
            amount_due: quote.amount_due,
            provider: if quote.is_free() { Provider::Free } else { new.provider },
            promo_code: promo.as_ref().map(|p| p.code.clone()),
            promo_reserved: promo.is_some(),
            status: InvoiceStatus::Pending,
            paid_late: false,
            created_at: now,
            expires_at: now + ttl,
            paid_at: None,
            provider_ref: None,
            // A subscription's first payment asks the provider to keep the
            // payment method, so the period can be charged again.
            recurring: matches!(tariff.kind, TariffKind::Subscription { .. }) && !quote.is_free(),
            renewal: None,
            period: match tariff.kind {
                TariffKind::Subscription { period_days } => Some(PeriodPurchase {
                    period_days,
                    renewal: false,
                }),
                TariffKind::TokenPack => None,
            },
        };
        // Nothing to pay: the invoice is created paid, in the same
        // transaction that credits its tokens.
        let free = quote.is_free();
        let mut invoice = invoice;
        if free {
            invoice.apply(InvoiceEvent::PaymentConfirmed, now)?;
            invoice.promo_reserved = false;
        }
        let mut items = vec![self.put_invoice(&invoice, None)?];
        let slots = match &promo {
            Some(promo) => {
                let (redemption, slots) = self.take_redemption(promo, user.id, free, true, !free)?;
                items.extend(redemption);
                Some(slots)
            }
            None => None,
        };
        if free {
            let first_purchase_only = promo.as_ref().is_some_and(|p| p.first_purchase_only);
            items.push(self.count_paid_invoice(user.id, first_purchase_only)?);
            items.push(self.count_paid_invoice_today()?);
        }
        Ok(InvoiceDraft { invoice, items, slots })
    }

    /// Writes a drafted invoice and its promo reservation, with `extra`
    /// items in the same transaction. A free invoice is then completed.
    pub async fn commit_invoice(
        &self,
        draft: InvoiceDraft,
        extra: Vec<TransactWriteItem>,
    ) -> Result<Invoice, StoreError> {
        let InvoiceDraft {
            invoice,
            mut items,
            slots,
        } = draft;
        let redemption_items = slots.map_or(0, |slots| slots.first_purchase.map_or(2, |_| 3));
        if invoice.status == InvoiceStatus::Paid {
            let key = IdempotencyKey::new(format!("invoice:{}", invoice.id))?;
            let mut request = BalanceRequest::credit(
                invoice.user,
                credit_kind(&invoice),
                invoice.tokens.checked_add(invoice.bonus_tokens)?,
                key,
            )
            .reference(format!("invoice:{}", invoice.id))
            .description(invoice.title.en.clone());
            // A free subscription starts (or extends) in the same transaction.
            let (subscription_index, subscription) = match self.subscription_payment_item(&invoice).await? {
                Some((item, record)) => {
                    items.push(item);
                    (Some(items.len() - 1), Some(record))
                }
                None => (None, None),
            };
            items.extend(extra);
            request.extra = items;
            return match self.apply(request).await {
                Ok(_) => {
                    if let Some(record) = &subscription {
                        self.retime_subscription(&record.subscription).await;
                    }
                    Ok(invoice)
                }
                // The subscription changed since it was read: nothing was
                // written, and the same request again reads it anew.
                Err(StoreError::ExtraConditionFailed { index, .. }) if Some(index) == subscription_index => {
                    Err(StoreError::Contention {
                        what: format!("subscription of {}", invoice.user),
                    })
                }
                Err(StoreError::ExtraConditionFailed { index, item }) => {
                    let rejection = match (slots, index) {
                        (Some(slots), index) if (1..=redemption_items).contains(&index) => {
                            slots.rejection(index - 1, item.map(|i| *i))?
                        }
                        // The paid-invoice counter refused: not a first purchase.
                        (Some(_), index) if index == 1 + redemption_items => {
                            Some(crate::domain::promo::PromoRejection::FirstPurchaseOnly)
                        }
                        _ => None,
                    };
                    Err(rejection.map_or(StoreError::ExtraConditionFailed { index, item: None }, StoreError::from))
                }
                Err(err) => Err(err),
            };
        }
        items.extend(extra);
        if let Err(cancelled) = self.transact(items).await? {
            if let Some(rejection) = slots
                .map(|slots| slots.rejection_in(&cancelled, 1))
                .transpose()?
                .flatten()
            {
                return Err(rejection.into());
            }
            return Err(StoreError::corrupt(
                format!("invoice {}", invoice.id),
                "new invoice id already taken",
            ));
        }
        Ok(invoice)
    }

    pub async fn invoice(&self, id: &InvoiceId) -> Result<Option<Invoice>, StoreError> {
        self.get_record(&keys::invoice(id), "invoice", true).await
    }

    pub(super) async fn existing_invoice(&self, id: &InvoiceId) -> Result<Invoice, StoreError> {
        self.invoice(id).await?.ok_or_else(|| StoreError::NotFound {
            what: format!("invoice {id}"),
        })
    }

    /// Credits a payment a provider proved, exactly once: the proof is
    /// checked against the invoice (provider, currency, amount to the
    /// kopeck), then [`Store::pay_invoice_with`] commits it. `extra` items
    /// join the same transaction (the bot's update mark).
    pub async fn confirm_payment(
        &self,
        proof: &PaymentProof,
        extra: Vec<TransactWriteItem>,
    ) -> Result<Payment, StoreError> {
        let invoice = self.existing_invoice(&proof.invoice_id).await?;
        self.confirm_payment_of(invoice, proof, extra).await
    }

    /// [`Store::confirm_payment`] for an invoice the caller has just read
    /// (consistently), saving a read.
    pub async fn confirm_payment_of(
        &self,
        invoice: Invoice,
        proof: &PaymentProof,
        extra: Vec<TransactWriteItem>,
    ) -> Result<Payment, StoreError> {
        if invoice.id != proof.invoice_id {
            return Err(StoreError::NotFound {
                what: format!("invoice {}", proof.invoice_id),
            });
        }
        invoice.check_payment(proof.provider, &proof.amount)?;
        let reference = (proof.provider_ref.clone(), proof.renewal.clone());
        self.pay_loaded_invoice(Some(invoice), &proof.invoice_id, reference, extra)
            .await
    }

    /// [`Store::pay_invoice_with`] with nothing else in the transaction.
    pub async fn pay_invoice(&self, id: &InvoiceId, provider_ref: Option<String>) -> Result<Payment, StoreError> {
        self.pay_invoice_with(id, provider_ref, Vec::new()).await
    }

    /// Credits a confirmed payment exactly once: the invoice turns paid, the
    /// tokens (with any promo bonus) are credited with their ledger entry,
    /// the promo redemption is consumed and the user's notification is put
    /// in the outbox — all in one transaction. Repeats answer with the
    /// first payment. A payment confirmed after the invoice expired or was
    /// cancelled is still credited, marked late.
    pub async fn pay_invoice_with(
        &self,
        id: &InvoiceId,
        provider_ref: Option<String>,
        extra: Vec<TransactWriteItem>,
    ) -> Result<Payment, StoreError> {
        self.pay_loaded_invoice(None, id, (provider_ref, None), extra).await
    }

    /// `reference`: the provider's payment id and the renewal method it
    /// gave, both saved on the paid invoice.
    async fn pay_loaded_invoice(
        &self,
        mut loaded: Option<Invoice>,
        id: &InvoiceId,
        reference: (Option<String>, Option<RenewalMethod>),
        extra: Vec<TransactWriteItem>,
    ) -> Result<Payment, StoreError> {
        let (provider_ref, renewal) = reference;
        for _ in 0..ATTEMPTS {
            let invoice = match loaded.take() {
                Some(invoice) => invoice,
                None => self.existing_invoice(id).await?,
            };
            let key = IdempotencyKey::new(format!("invoice:{id}"))?;
            let tokens = invoice.tokens.checked_add(invoice.bonus_tokens)?;
            let mut request = BalanceRequest::credit(invoice.user, credit_kind(&invoice), tokens, key)
                .reference(format!("invoice:{id}"))
                .description(invoice.title.en.clone());
            let mut paid = invoice.clone();
            // The subscription this payment writes, if any (its schedule
            // moves once the payment commits).
            let mut extended = None;
            if invoice.status != InvoiceStatus::Paid {
                let now = self.now();
                paid.apply(InvoiceEvent::PaymentConfirmed, now)?;
                paid.provider_ref = provider_ref.clone().or(invoice.provider_ref.clone());
                paid.renewal = renewal.clone().or(invoice.renewal.clone());
                paid.promo_reserved = false;
                request = request.with_item(self.put_invoice(&paid, Some(invoice.status))?);
                // Item 1: a subscription tariff's subscription, created or
                // extended by one period, over the revision just read.
                let subscription = match self.subscription_payment_item(&paid).await? {
                    Some((item, record)) => {
                        request = request.with_item(item);
                        Some(record)
                    }
                    None => None,
                };
                request = request.with_item(self.count_paid_invoice(invoice.user, false)?);
                request = request.with_item(self.count_paid_invoice_today()?);
                request = request.with_item(self.notification_item(&payment_notification(
                    &paid,
                    tokens,
                    subscription.as_ref(),
                    now,
                ))?);
                extended = subscription;
                if let Some(code) = &invoice.promo_code {
                    if invoice.promo_reserved {
                        request = request.with_item(self.consume_redemption(code)?);
                    } else {
                        // Paid after its redemption was given back: the money
                        // was taken at the discounted price, so it counts again,
                        // limits or not.
                        let promo = self
                            .promo(code)
                            .await?
                            .ok_or(crate::domain::promo::PromoRejection::NotFound)?;
                        request
                            .extra
                            .extend(self.take_redemption(&promo, invoice.user, true, false, false)?.0);
                    }
                }
                request.extra.extend(extra.iter().cloned());
            }
            match self.apply(request).await {
                Ok(applied) => {
                    if let (false, Some(record)) = (applied.replayed, &extended) {
                        self.retime_subscription(&record.subscription).await;
                    }
                    let invoice = if applied.replayed {
                        self.existing_invoice(id).await?
                    } else {
                        paid
                    };
                    return Ok(Payment {
                        invoice,
                        receipt: applied.receipt,
                        replayed: applied.replayed,
                    });
                }
                // The invoice changed between the read and the write, or
                // its subscription did (a sweep, another payment): read again.
                Err(StoreError::ExtraConditionFailed { index: 0, .. }) => continue,
                Err(StoreError::ExtraConditionFailed { index: 1, .. }) if period_of(&paid).is_some() => continue,
                Err(err) => return Err(err),
            }
        }
        Err(StoreError::Contention {
            what: format!("invoice {id}"),
        })
    }

    /// Records that a paid invoice's money went back: the invoice turns
    /// refunded and its tokens (with any promo bonus) are taken back with a
    /// ledger entry, in one transaction. Refused, with nothing changed, when
    /// the user no longer has those tokens. Repeats answer with the first
    /// reversal.
    pub async fn refund_invoice(&self, id: &InvoiceId) -> Result<Payment, StoreError> {
        let invoice = self.existing_invoice(id).await?;
        let key = IdempotencyKey::new(format!("refund:invoice:{id}"))?;
        let tokens = invoice.tokens.checked_add(invoice.bonus_tokens)?;
        let mut request = BalanceRequest::debit(invoice.user, DebitKind::Adjustment, tokens, key)
            .reference(format!("refund:invoice:{id}"))
            .description(format!("refund: {}", invoice.title.en));
        let mut refunded = invoice.clone();
        if invoice.status != InvoiceStatus::Refunded {
            refunded.apply(InvoiceEvent::Refund, self.now())?;
            request = request.with_item(self.put_invoice(&refunded, Some(InvoiceStatus::Paid))?);
        }
        match self.apply(request).await {
            Ok(applied) => Ok(Payment {
                invoice: refunded,
                receipt: applied.receipt,
                replayed: applied.replayed,
            }),
            Err(StoreError::ExtraConditionFailed { index: 0, .. }) => Err(DomainError::InvalidInvoiceTransition {
                from: self.existing_invoice(id).await?.status.as_str(),
                event: InvoiceEvent::Refund.as_str(),
            }
            .into()),
            Err(err) => Err(err),
        }
    }

    /// Saves the provider's reference for a pending invoice (a Robokassa
    /// `InvId` allocated when the user opens the payment page), once: the
    /// reference already saved is returned if there is one.
    pub async fn set_provider_ref(&self, id: &InvoiceId, provider_ref: &str) -> Result<Invoice, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(self.table())
            .set_key(Some(keys::invoice(id).to_item()))
            .update_expression("SET #ref = :ref")
            .condition_expression("attribute_exists(#pk) AND (attribute_not_exists(#ref) OR #ref = :null)")
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_names("#ref", "provider_ref")
            .expression_attribute_values(":ref", s(provider_ref))
            .expression_attribute_values(":null", AttributeValue::Null(true))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => parse("invoice", output.attributes.unwrap_or_default()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                self.existing_invoice(id).await
            }
            Err(err) => Err(StoreError::from_sdk("UpdateItem", err)),
        }
    }

    /// The user gives up on a pending invoice; its promo redemption returns.
    pub async fn cancel_invoice(&self, id: &InvoiceId, user: UserId) -> Result<Invoice, StoreError> {
        self.close_unpaid(id, InvoiceEvent::Cancel, Some(user)).await
    }

    /// Marks a pending invoice whose time ran out as expired, giving its
    /// promo redemption back. An invoice that is no longer pending is
    /// returned unchanged, so a sweep may repeat this safely.
    pub async fn expire_invoice(&self, id: &InvoiceId) -> Result<Invoice, StoreError> {
        self.close_unpaid(id, InvoiceEvent::Expire, None).await
    }

    async fn close_unpaid(
        &self,
        id: &InvoiceId,
        event: InvoiceEvent,
        owner: Option<UserId>,
    ) -> Result<Invoice, StoreError> {
        for _ in 0..ATTEMPTS {
            let invoice = self.existing_invoice(id).await?;
            if owner.is_some_and(|owner| owner != invoice.user) {
                return Err(StoreError::NotFound {
                    what: format!("invoice {id}"),
                });
            }
            if event == InvoiceEvent::Expire {
                if invoice.status != InvoiceStatus::Pending {
                    return Ok(invoice);
                }
                if !invoice.is_expired_at(self.now()) {
                    return Err(DomainError::invalid("invoice", format!("{id} has not expired yet")).into());
                }
            }
            let mut closed = invoice.clone();
            closed.apply(event, self.now())?;
            closed.promo_reserved = false;
            let mut items = vec![self.put_invoice(&closed, Some(InvoiceStatus::Pending))?];
            if let (Some(code), true) = (&invoice.promo_code, invoice.promo_reserved) {
                items.extend(self.give_back_redemption(code, invoice.user)?);
            }
            match self.transact(items).await? {
                Ok(()) => return Ok(closed),
                // Paid or closed meanwhile: read again and decide from there.
                Err(cancelled) if cancelled.failed(0) => continue,
                Err(_) => {
                    return Err(StoreError::corrupt(
                        format!("promo of invoice {id}"),
                        "redemption counters out of step",
                    ));
                }
            }
        }
        Err(StoreError::Contention {
            what: format!("invoice {id}"),
        })
    }

    /// Pending invoices whose expiry has passed (from the sparse `due` index).
    pub async fn expired_pending_invoices(&self, now: DateTime<Utc>, limit: i32) -> Result<Vec<InvoiceId>, StoreError> {
        let invoices: Vec<Invoice> = self.due_items(keys::INVOICE_EXPIRY_DUE, now, limit, "invoice").await?;
        Ok(invoices.into_iter().map(|invoice| invoice.id).collect())
    }

    /// The next value of a named counter, never above `max`.
    pub async fn next_counter(&self, name: &str, max: u64) -> Result<u64, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(self.table())
            .set_key(Some(keys::counter(name).to_item()))
            .update_expression("SET #entity = :entity ADD #value :one")
            .condition_expression("attribute_not_exists(#value) OR #value < :max")
            .expression_attribute_names("#entity", keys::ENTITY)
            .expression_attribute_names("#value", "value")
            .expression_attribute_values(":entity", s("counter"))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":max", n(max))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        match result {
            Ok(output) => super::item::get_u64(&output.attributes.unwrap_or_default(), "value"),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(DomainError::invalid("counter", format!("{name} reached its maximum {max}")).into())
            }
            Err(err) => Err(StoreError::from_sdk("UpdateItem", err)),
        }
    }

    /// A Robokassa `InvId`: unique, increasing, at most 2147483647.
    pub async fn next_robokassa_inv_id(&self) -> Result<u32, StoreError> {
        let value = self.next_counter("robokassa_inv_id", ROBOKASSA_INV_ID_MAX).await?;
        u32::try_from(value).map_err(|_| StoreError::corrupt("robokassa_inv_id counter", value))
    }

    /// The invoice's Robokassa `InvId`: the one it has, or a fresh one from
    /// the counter saved with it (the pay link and a recurring charge both
    /// need one). Two first requests racing both draw a number; the first
    /// saved wins and both get it.
    pub async fn robokassa_inv_id(&self, invoice: &Invoice) -> Result<u32, StoreError> {
        let parse = |text: &str| {
            text.parse::<u32>().map_err(|_| {
                StoreError::corrupt(
                    format!("invoice {}", invoice.id),
                    "its provider reference is not an InvId",
                )
            })
        };
        if let Some(saved) = &invoice.provider_ref {
            return parse(saved);
        }
        let fresh = self.next_robokassa_inv_id().await?;
        let saved = self.set_provider_ref(&invoice.id, &fresh.to_string()).await?;
        parse(saved.provider_ref.as_deref().unwrap_or_default())
    }

    /// The invoice item, written only if its status is still `expected`
    /// (or, with `None`, only if it is new).
    pub(super) fn put_invoice(
        &self,
        invoice: &Invoice,
        expected: Option<InvoiceStatus>,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut item: Item = record(&keys::invoice(&invoice.id), "invoice", invoice)?;
        item.insert(keys::GSI1_PK.into(), s(keys::user_pk(invoice.user)));
        item.insert(
            keys::GSI1_SK.into(),
            s(format!("INVOICE#{}", invoice.created_at.to_rfc3339())),
        );
        if invoice.status == InvoiceStatus::Pending {
            item.insert(keys::DUE_PK.into(), s(keys::INVOICE_EXPIRY_DUE));
            item.insert(keys::DUE_AT.into(), n(invoice.expires_at.timestamp()));
        }
        let put = Put::builder().table_name(self.table()).set_item(Some(item));
        let put = match expected {
            None => put
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", keys::PK),
            Some(status) => put
                .condition_expression("#status = :expected")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":expected", AttributeValue::S(status.as_str().to_owned())),
        };
        let put = put.build().map_err(|e| StoreError::corrupt("invoice put", e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Counts a paid invoice on the profile; with `first_purchase`, only if
    /// it is the user's first.
    fn count_paid_invoice(&self, user: UserId, first_purchase: bool) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(self.table())
            .set_key(Some(keys::profile(user).to_item()))
            .update_expression("ADD #paid :one")
            .expression_attribute_names("#paid", "paid_invoices")
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_values(":one", n(1));
        let update = if first_purchase {
            update
                .condition_expression("attribute_exists(#pk) AND (attribute_not_exists(#paid) OR #paid = :zero)")
                .expression_attribute_values(":zero", n(0))
        } else {
            update.condition_expression("attribute_exists(#pk)")
        };
        let update = update.build().map_err(|e| StoreError::corrupt("profile update", e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }
}
