//! Subscriptions as stored: one per user. (Renewal flows come with the
//! renewal sweep.)

use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};

use super::keys;
use super::{Store, StoreError};
use crate::domain::UserId;
use crate::domain::subscription::Subscription;

impl Store {
    pub async fn subscription(&self, user: UserId) -> Result<Option<Subscription>, StoreError> {
        self.get_record(&keys::subscription(user), "subscription", false).await
    }

    /// Turning auto-renewal on or off, as one item of a larger transaction
    /// (the subscription must exist).
    pub fn set_auto_renew_item(&self, user: UserId, auto_renew: bool) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(self.table())
            .set_key(Some(keys::subscription(user).to_item()))
            .update_expression("SET #auto = :auto")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#auto", "auto_renew")
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_values(":auto", AttributeValue::Bool(auto_renew))
            .build()
            .map_err(|e| StoreError::corrupt("subscription update", e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }
}
