//! Promo codes: the catalog of codes and their atomic redemption.
//!
//! A code's total limit and each user's limit are enforced by conditions in
//! the same transaction that uses the code (an invoice's creation, or an
//! activation with its bonus tokens), so concurrent users can never take a
//! code past either limit.

use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};

use super::item::{Item, n, parse, record, s};
use super::keys;
use super::transact::Cancelled;
use super::{Applied, BalanceRequest, Store, StoreError};
use crate::domain::ledger::CreditKind;
use crate::domain::notification::{Message, Notification, NotificationId};
use crate::domain::promo::{PromoCode, PromoCodeText, PromoEffect, PromoRejection};
use crate::domain::tariff::Tariff;
use crate::domain::user::User;
use crate::domain::{Currency, IdempotencyKey, UserId};

/// Where a code's items sit in a transaction, to read back why it failed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RedemptionSlots {
    pub promo: usize,
    pub user_uses: usize,
    pub first_purchase: Option<usize>,
}

impl RedemptionSlots {
    /// The user-facing reason, if item `index` (counted like the slots)
    /// failed; `old` is that item as it was.
    pub(crate) fn rejection(&self, index: usize, old: Option<Item>) -> Result<Option<PromoRejection>, StoreError> {
        if index == self.promo {
            return Ok(Some(match old {
                None => PromoRejection::NotFound,
                Some(item) => {
                    let promo: PromoCode = parse("promo code", item)?;
                    if promo.active {
                        PromoRejection::Exhausted
                    } else {
                        PromoRejection::Inactive
                    }
                }
            }));
        }
        if index == self.user_uses {
            return Ok(Some(PromoRejection::AlreadyUsed));
        }
        if self.first_purchase == Some(index) {
            return Ok(Some(PromoRejection::FirstPurchaseOnly));
        }
        Ok(None)
    }

    /// The reason a cancelled transaction refused the code; `offset` is
    /// where the redemption items start in the transaction.
    pub(crate) fn rejection_in(
        &self,
        cancelled: &Cancelled,
        offset: usize,
    ) -> Result<Option<PromoRejection>, StoreError> {
        match cancelled.first_failed(offset) {
            Some(index) => self.rejection(index - offset, cancelled.old_item(index)),
            None => Ok(None),
        }
    }
}

/// A bonus code activated: the credit, and the user's notification
/// committed with it (to publish).
#[derive(Debug, Clone)]
pub struct PromoActivation {
    pub applied: Applied,
    pub notification: NotificationId,
}

impl Store {
    /// Stores a new code; false if the code already exists (nothing changes).
    pub async fn create_promo(&self, promo: &PromoCode) -> Result<bool, StoreError> {
        let mut item = record(&keys::promo(&promo.code), "promo_code", promo)?;
        item.insert(keys::GSI1_PK.into(), s(keys::PROMO_LIST));
        item.insert(keys::GSI1_SK.into(), s(promo.code.as_str()));
        let result = self
            .client
            .put_item()
            .table_name(self.table())
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", keys::PK)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(err) => Err(StoreError::from_sdk("PutItem", err)),
        }
    }

    pub async fn promo(&self, code: &PromoCodeText) -> Result<Option<PromoCode>, StoreError> {
        self.get_record(&keys::promo(code), "promo code", true).await
    }

    /// Every code, in code order.
    pub async fn promos(&self) -> Result<Vec<PromoCode>, StoreError> {
        self.gsi1_list(keys::PROMO_LIST, "promo code").await
    }

    pub async fn set_promo_active(&self, code: &PromoCodeText, active: bool) -> Result<(), StoreError> {
        self.set_flag(
            &keys::promo(code),
            "active",
            active,
            format!("promo code {}", code.as_str()),
        )
        .await
    }

    /// How many times `user` has used (or reserved) `code`.
    pub async fn promo_uses(&self, code: &PromoCodeText, user: UserId) -> Result<u64, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(self.table())
            .set_key(Some(keys::promo_use(code, user).to_item()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("GetItem", e))?;
        output.item.map_or(Ok(0), |item| super::item::get_u64(&item, "uses"))
    }

    /// Whether `user` may use `code` now, for `tariff` in `currency` if a
    /// purchase is meant. The same rules are enforced again, atomically,
    /// when the code is actually used.
    pub async fn check_promo(
        &self,
        user: &User,
        code: &PromoCodeText,
        purchase: Option<(&Tariff, Currency)>,
    ) -> Result<PromoCode, StoreError> {
        let promo = self.promo(code).await?;
        let uses = match &promo {
            Some(_) => self.promo_uses(code, user.id).await?,
            None => 0,
        };
        self.evaluate_promo(user, promo, uses, purchase)
    }

    /// [`Store::check_promo`] on data already read (the code and how often
    /// the user has used it).
    pub fn evaluate_promo(
        &self,
        user: &User,
        promo: Option<PromoCode>,
        uses: u64,
        purchase: Option<(&Tariff, Currency)>,
    ) -> Result<PromoCode, StoreError> {
        let promo = promo.ok_or(PromoRejection::NotFound)?;
        let price = purchase.and_then(|(tariff, currency)| tariff.price(currency));
        promo.check_static(self.now(), purchase.map(|(tariff, _)| &tariff.id), price.as_ref())?;
        if promo.first_purchase_only && user.paid_invoices > 0 {
            return Err(PromoRejection::FirstPurchaseOnly.into());
        }
        if uses >= u64::from(promo.per_user_limit) {
            return Err(PromoRejection::AlreadyUsed.into());
        }
        Ok(promo)
    }

    /// Activates a bonus-tokens code: the tokens, the redemption and the
    /// user's notification are one transaction. Other kinds of code apply
    /// to a purchase instead.
    pub async fn activate_promo(&self, user: &User, code: &PromoCodeText) -> Result<PromoActivation, StoreError> {
        let promo = self.check_promo(user, code, None).await?;
        let uses = self.promo_uses(code, user.id).await?;
        self.activate_checked_promo(user, &promo, uses, Vec::new(), false).await
    }

    /// Activates a code already checked, with `uses` the user's earlier uses
    /// as read; `extra` items join the transaction.
    pub async fn activate_checked_promo(
        &self,
        user: &User,
        promo: &PromoCode,
        uses: u64,
        extra: Vec<TransactWriteItem>,
        extra_touches_profile: bool,
    ) -> Result<PromoActivation, StoreError> {
        let PromoEffect::BonusTokens { tokens } = promo.effect else {
            return Err(crate::domain::DomainError::invalid("promo code", "this code applies to a purchase").into());
        };
        let code = &promo.code;
        // One key per use, so a per-user limit above one grants each use once.
        let key = IdempotencyKey::new(format!("promo:{}:{}", code.as_str(), uses + 1))?;
        // Named by the same use, and in the credit's transaction (an
        // outbox): a replayed activation is cancelled whole, so the user
        // hears of each use once.
        let notification = Notification::new(
            NotificationId::promo_bonus(user.id, code, uses + 1),
            user.id,
            Message::PromoBonus {
                code: code.as_str().to_owned(),
                tokens,
            },
            self.now(),
        );
        // A user registered in this same transaction has bought nothing, and
        // one transaction may not touch the profile twice.
        let registering = extra_touches_profile;
        let (items, slots) = self.take_redemption(promo, user.id, true, true, !registering)?;
        let mut request = BalanceRequest::credit(user.id, CreditKind::Bonus, tokens, key)
            .reference(format!("promo:{}", code.as_str()))
            .description(format!("promo code {}", code.as_str()));
        request.extra = items;
        request.extra.push(self.notification_item(&notification)?);
        request.extra.extend(extra);
        match self.apply(request).await {
            Ok(applied) => Ok(PromoActivation {
                applied,
                notification: notification.id,
            }),
            Err(StoreError::ExtraConditionFailed { index, item }) => match slots.rejection(index, item.map(|i| *i))? {
                Some(rejection) => Err(rejection.into()),
                None => Err(StoreError::ExtraConditionFailed { index, item: None }),
            },
            Err(err) => Err(err),
        }
    }

    /// Items that take one redemption of `promo` for `user`, each guarded
    /// by its limit, and where they sit among themselves.
    pub(crate) fn take_redemption(
        &self,
        promo: &PromoCode,
        user: UserId,
        consume: bool,
        enforce_limits: bool,
        check_first_purchase: bool,
    ) -> Result<(Vec<TransactWriteItem>, RedemptionSlots), StoreError> {
        let mut code_update = Update::builder()
            .table_name(self.table())
            .set_key(Some(keys::promo(&promo.code).to_item()))
            .update_expression(if consume {
                "ADD #redemptions :one, #paid :one"
            } else {
                "ADD #redemptions :one"
            })
            .expression_attribute_names("#redemptions", "redemptions")
            .expression_attribute_values(":one", n(1))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if consume {
            code_update = code_update.expression_attribute_names("#paid", "paid_redemptions");
        }
        code_update = if enforce_limits {
            code_update
                .condition_expression("#active = :true AND (attribute_not_exists(#max) OR #redemptions < #max)")
                .expression_attribute_names("#active", "active")
                .expression_attribute_names("#max", "max_redemptions")
                .expression_attribute_values(":true", AttributeValue::Bool(true))
        } else {
            code_update
                .condition_expression("attribute_exists(#pk)")
                .expression_attribute_names("#pk", keys::PK)
        };
        let mut user_update = Update::builder()
            .table_name(self.table())
            .set_key(Some(keys::promo_use(&promo.code, user).to_item()))
            .update_expression("SET #entity = :entity ADD #uses :one")
            .expression_attribute_names("#entity", keys::ENTITY)
            .expression_attribute_names("#uses", "uses")
            .expression_attribute_values(":entity", s("promo_use"))
            .expression_attribute_values(":one", n(1));
        if enforce_limits {
            user_update = user_update
                .condition_expression("attribute_not_exists(#uses) OR #uses < :limit")
                .expression_attribute_values(":limit", n(promo.per_user_limit));
        }
        let mut items = vec![
            TransactWriteItem::builder()
                .update(code_update.build().map_err(build_error)?)
                .build(),
            TransactWriteItem::builder()
                .update(user_update.build().map_err(build_error)?)
                .build(),
        ];
        let mut slots = RedemptionSlots {
            promo: 0,
            user_uses: 1,
            first_purchase: None,
        };
        if enforce_limits && check_first_purchase && promo.first_purchase_only {
            let check = ConditionCheck::builder()
                .table_name(self.table())
                .set_key(Some(keys::profile(user).to_item()))
                .condition_expression("attribute_not_exists(#paid) OR #paid = :zero")
                .expression_attribute_names("#paid", "paid_invoices")
                .expression_attribute_values(":zero", n(0))
                .build()
                .map_err(build_error)?;
            items.push(TransactWriteItem::builder().condition_check(check).build());
            slots.first_purchase = Some(2);
        }
        Ok((items, slots))
    }

    /// Items that consume a reserved redemption when its invoice is paid.
    pub(crate) fn consume_redemption(&self, code: &PromoCodeText) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(self.table())
            .set_key(Some(keys::promo(code).to_item()))
            .update_expression("ADD #paid :one")
            .expression_attribute_names("#paid", "paid_redemptions")
            .expression_attribute_values(":one", n(1))
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Items that give a reserved redemption back (expired or cancelled invoice).
    pub(crate) fn give_back_redemption(
        &self,
        code: &PromoCodeText,
        user: UserId,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let decrement = |key: keys::Key, attribute: &str| -> Result<TransactWriteItem, StoreError> {
            let update = Update::builder()
                .table_name(self.table())
                .set_key(Some(key.to_item()))
                .update_expression("ADD #counter :minus_one")
                .condition_expression("#counter > :zero")
                .expression_attribute_names("#counter", attribute)
                .expression_attribute_values(":minus_one", n(-1))
                .expression_attribute_values(":zero", n(0))
                .build()
                .map_err(build_error)?;
            Ok(TransactWriteItem::builder().update(update).build())
        };
        Ok(vec![
            decrement(keys::promo(code), "redemptions")?,
            decrement(keys::promo_use(code, user), "uses")?,
        ])
    }
}

fn build_error(err: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::corrupt("promo transaction", err)
}
