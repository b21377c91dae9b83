//! One consistent batch read of everything a screen needs about a user,
//! plus any other items the caller names (a promo code, a tariff...).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::TransactWriteItem;

use super::balance::AccountRecord;
use super::item::{Item, get_u64, parse};
use super::keys::{self, Key};
use super::{Store, StoreError};
use crate::domain::promo::{PromoCode, PromoCodeText};
use crate::domain::subscription::Subscription;
use crate::domain::tariff::Tariff;
use crate::domain::user::User;
use crate::domain::{Balance, TariffId, UserId};

#[derive(Debug, Clone)]
pub struct UserView {
    pub user: Option<User>,
    pub balance: Balance,
    pub subscription: Option<Subscription>,
    /// The code entered for the next purchase: a snapshot of its terms,
    /// which never change once a code exists. Whether it is still active
    /// and within its limits is enforced when it is used.
    pub pending_promo: Option<PromoCode>,
    items: HashMap<Key, Item>,
}

impl UserView {
    fn get<T: serde::de::DeserializeOwned>(&self, key: &Key, what: &str) -> Result<Option<T>, StoreError> {
        self.items.get(key).cloned().map(|item| parse(what, item)).transpose()
    }

    pub fn promo(&self, code: &PromoCodeText) -> Result<Option<PromoCode>, StoreError> {
        self.get(&keys::promo(code), "promo code")
    }

    pub fn promo_uses(&self, code: &PromoCodeText, user: UserId) -> Result<u64, StoreError> {
        self.items
            .get(&keys::promo_use(code, user))
            .map_or(Ok(0), |item| get_u64(item, "uses"))
    }

    pub fn tariff(&self, id: &TariffId) -> Result<Option<Tariff>, StoreError> {
        self.get(&keys::tariff(id), "tariff")
    }

    pub fn invoice(
        &self,
        id: &crate::domain::InvoiceId,
    ) -> Result<Option<crate::domain::invoice::Invoice>, StoreError> {
        self.get(&keys::invoice(id), "invoice")
    }

    pub fn other_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.get(&keys::profile(id), "user")
    }

    pub fn balance_of(&self, id: UserId) -> Result<Balance, StoreError> {
        let account: AccountRecord = self.get(&keys::account(id), "account")?.unwrap_or_default();
        Ok(Balance {
            available: account.available,
            held: account.held,
        })
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PendingPromo {
    promo: PromoCode,
}

impl Store {
    /// Remembers (or, with `None`, forgets) the code a user entered for
    /// their next purchase, as one item of a larger transaction.
    pub fn pending_promo_item(&self, user: UserId, promo: Option<&PromoCode>) -> Result<TransactWriteItem, StoreError> {
        let key = keys::pending_promo(user);
        Ok(match promo {
            Some(promo) => {
                let item = super::item::record(&key, "pending_promo", &PendingPromo { promo: promo.clone() })?;
                let put = aws_sdk_dynamodb::types::Put::builder()
                    .table_name(self.table())
                    .set_item(Some(item))
                    .build();
                TransactWriteItem::builder()
                    .put(put.map_err(|e| StoreError::corrupt("pending promo", e))?)
                    .build()
            }
            None => {
                let delete = aws_sdk_dynamodb::types::Delete::builder()
                    .table_name(self.table())
                    .set_key(Some(key.to_item()))
                    .build();
                TransactWriteItem::builder()
                    .delete(delete.map_err(|e| StoreError::corrupt("pending promo", e))?)
                    .build()
            }
        })
    }

    /// The user's profile, balance and subscription and the `extra` items,
    /// in one consistent batch read.
    pub async fn user_view(&self, user: UserId, extra: Vec<Key>) -> Result<UserView, StoreError> {
        let mut wanted = vec![
            keys::profile(user),
            keys::account(user),
            keys::subscription(user),
            keys::pending_promo(user),
        ];
        for key in extra {
            if !wanted.contains(&key) {
                wanted.push(key);
            }
        }
        let mut items: HashMap<Key, Item> = HashMap::new();
        for item in self.batch_get(wanted).await? {
            if let Some(key) = Key::of(&item) {
                items.insert(key, item);
            }
        }
        let mut view = UserView {
            user: None,
            balance: Balance::default(),
            subscription: None,
            pending_promo: None,
            items,
        };
        view.user = view.get(&keys::profile(user), "user")?;
        view.balance = view.balance_of(user)?;
        view.subscription = view.get(&keys::subscription(user), "subscription")?;
        view.pending_promo = view
            .get::<PendingPromo>(&keys::pending_promo(user), "pending promo")?
            .map(|p| p.promo);
        Ok(view)
    }

    /// Writes `items` atomically. A failed condition is reported as
    /// [`StoreError::ExtraConditionFailed`] with the item's index.
    pub async fn write_all(&self, items: Vec<TransactWriteItem>) -> Result<(), StoreError> {
        match self.transact(items).await? {
            Ok(()) => Ok(()),
            Err(cancelled) => {
                let index = cancelled.first_failed(0).unwrap_or(0);
                Err(StoreError::ExtraConditionFailed {
                    index,
                    item: cancelled.old_item(index).map(Box::new),
                })
            }
        }
    }
}
