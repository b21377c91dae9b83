//! User profiles.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::item::{n, parse, s};
use super::keys;
use super::{Store, StoreError};
use crate::domain::UserId;
use crate::domain::promo::PromoCodeText;
use crate::domain::user::{Awaiting, Language, Registration, User};

/// One change to a user's profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChange {
    Language(Language),
    /// False when the user blocked the bot.
    Reachable(bool),
    PendingPromo(Option<PromoCodeText>),
    Awaiting(Option<Awaiting>),
}

impl UserChange {
    /// The attribute and its new value (`None` removes it).
    fn attribute(&self) -> Result<(&'static str, Option<AttributeValue>), StoreError> {
        Ok(match self {
            UserChange::Language(language) => ("language", Some(attribute_value(language)?)),
            UserChange::Reachable(reachable) => ("reachable", Some(AttributeValue::Bool(*reachable))),
            UserChange::PendingPromo(code) => ("pending_promo", code.as_ref().map(|c| s(c.as_str()))),
            UserChange::Awaiting(awaiting) => ("awaiting", awaiting.as_ref().map(attribute_value).transpose()?),
        })
    }
}

fn attribute_value<T: serde::Serialize>(value: &T) -> Result<AttributeValue, StoreError> {
    serde_dynamo::to_attribute_value(value).map_err(|e| StoreError::corrupt("profile change", e))
}

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
        if created {
            self.count_new_user().await?;
        }
        Ok((user, created))
    }

    /// Applies profile changes together; the user must exist.
    pub async fn update_user(&self, id: UserId, changes: &[UserChange]) -> Result<User, StoreError> {
        let mut set = Vec::new();
        let mut remove = Vec::new();
        let mut request = self
            .client
            .update_item()
            .table_name(self.table())
            .set_key(Some(keys::profile(id).to_item()))
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", keys::PK)
            .return_values(ReturnValue::AllNew);
        for (index, change) in changes.iter().enumerate() {
            let (attribute, value) = change.attribute()?;
            let name = format!("#a{index}");
            request = request.expression_attribute_names(&name, attribute);
            match value {
                Some(value) => {
                    let placeholder = format!(":v{index}");
                    set.push(format!("{name} = {placeholder}"));
                    request = request.expression_attribute_values(placeholder, value);
                }
                None => remove.push(name),
            }
        }
        let mut expression = String::new();
        if !set.is_empty() {
            expression.push_str(&format!("SET {}", set.join(", ")));
        }
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        if expression.is_empty() {
            return self.existing_user(id).await;
        }
        match request.update_expression(expression.trim()).send().await {
            Ok(output) => parse("user", output.attributes.unwrap_or_default()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::NotFound {
                    what: format!("user {id}"),
                })
            }
            Err(err) => Err(StoreError::from_sdk("UpdateItem", err)),
        }
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
