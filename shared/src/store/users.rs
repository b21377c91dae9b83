//! User profiles.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::item::{n, parse, s};
use super::keys;
use super::{Store, StoreError};
use crate::domain::UserId;
use crate::domain::user::{Registration, User};

impl Store {
    /// Registers a user, or refreshes the names Telegram reports for one
    /// already known. First-seen time, language choice and referrer are
    /// kept from the first registration. Returns the user and whether this
    /// call created them.
    pub async fn register_user(&self, registration: &Registration) -> Result<(User, bool), StoreError> {
        let now = self.now();
        let optional = |value: &Option<String>| value.as_ref().map_or(AttributeValue::Null(true), |v| s(v.clone()));
        let referrer = registration
            .referrer
            .map_or(AttributeValue::Null(true), |id| n(id.get()));
        let language =
            serde_dynamo::to_attribute_value(registration.language).map_err(|e| StoreError::corrupt("language", e))?;
        let output = self
            .client
            .update_item()
            .table_name(self.table())
            .set_key(Some(keys::profile(registration.id).to_item()))
            .update_expression(
                "SET #id = :id, #username = :username, #first = :first, #last = :last, #reachable = :true, \
                 #entity = :entity, #language = if_not_exists(#language, :language), \
                 #first_seen = if_not_exists(#first_seen, :now), #referrer = if_not_exists(#referrer, :referrer)",
            )
            .expression_attribute_names("#id", "id")
            .expression_attribute_names("#username", "username")
            .expression_attribute_names("#first", "first_name")
            .expression_attribute_names("#last", "last_name")
            .expression_attribute_names("#reachable", "reachable")
            .expression_attribute_names("#entity", keys::ENTITY)
            .expression_attribute_names("#language", "language")
            .expression_attribute_names("#first_seen", "first_seen")
            .expression_attribute_names("#referrer", "referrer")
            .expression_attribute_values(":id", n(registration.id.get()))
            .expression_attribute_values(":username", optional(&registration.username))
            .expression_attribute_values(":first", s(registration.first_name.clone()))
            .expression_attribute_values(":last", optional(&registration.last_name))
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":entity", s("user"))
            .expression_attribute_values(":language", language)
            .expression_attribute_values(":now", s(now.to_rfc3339()))
            .expression_attribute_values(":referrer", referrer)
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("UpdateItem", e))?;
        let user: User = parse("user", output.attributes.unwrap_or_default())?;
        let created = user.first_seen == now;
        Ok((user, created))
    }

    pub async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(self.table())
            .set_key(Some(keys::profile(id).to_item()))
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("GetItem", e))?;
        output.item.map(|item| parse("user", item)).transpose()
    }

    /// Like [`Store::user`], but a missing user is an error.
    pub async fn existing_user(&self, id: UserId) -> Result<User, StoreError> {
        self.user(id).await?.ok_or_else(|| StoreError::NotFound {
            what: format!("user {id}"),
        })
    }
}
