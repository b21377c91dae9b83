//! Subscriptions as stored: one per user. (Renewal flows come with the
//! renewal sweep.)

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, TransactWriteItem, Update};

use super::item::parse;
use super::keys;
use super::{Store, StoreError};
use crate::domain::UserId;
use crate::domain::subscription::Subscription;

impl Store {
    pub async fn subscription(&self, user: UserId) -> Result<Option<Subscription>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(self.table())
            .set_key(Some(keys::subscription(user).to_item()))
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("GetItem", e))?;
        output.item.map(|item| parse("subscription", item)).transpose()
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

    /// Turns auto-renewal on or off.
    pub async fn set_auto_renew(&self, user: UserId, auto_renew: bool) -> Result<Subscription, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(self.table())
            .set_key(Some(keys::subscription(user).to_item()))
            .update_expression("SET #auto = :auto")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#auto", "auto_renew")
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_values(":auto", AttributeValue::Bool(auto_renew))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => parse("subscription", output.attributes.unwrap_or_default()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::NotFound {
                    what: format!("subscription of user {user}"),
                })
            }
            Err(err) => Err(StoreError::from_sdk("UpdateItem", err)),
        }
    }
}
