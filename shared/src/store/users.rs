//! User profiles.
//!
//! Each change is built once as an [`Expression`] and sent either on its
//! own (`UpdateItem`, returning the new profile) or as one item of a larger
//! transaction (with the bot's update mark, a balance change...).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, TransactWriteItem, Update};
use chrono::{DateTime, Utc};

use super::item::{n, parse, s};
use super::keys;
use super::{Store, StoreError};
use crate::domain::UserId;
use crate::domain::user::{Awaiting, Language, Registration, User};

/// One change to a user's profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChange {
    Language(Language),
    /// False when the user blocked the bot.
    Reachable(bool),
    Awaiting(Option<Awaiting>),
}

impl UserChange {
    /// The attribute and its new value (`None` removes it).
    fn attribute(&self) -> Result<(&'static str, Option<AttributeValue>), StoreError> {
        Ok(match self {
            UserChange::Language(language) => ("language", Some(attribute_value(language)?)),
            UserChange::Reachable(reachable) => ("reachable", Some(AttributeValue::Bool(*reachable))),
            UserChange::Awaiting(awaiting) => ("awaiting", awaiting.as_ref().map(attribute_value).transpose()?),
        })
    }
}

fn attribute_value<T: serde::Serialize>(value: &T) -> Result<AttributeValue, StoreError> {
    serde_dynamo::to_attribute_value(value).map_err(|e| StoreError::corrupt("profile change", e))
}

/// An update expression with its names and values.
#[derive(Debug, Default)]
struct Expression {
    update: String,
    condition: Option<&'static str>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expression {
    fn name(mut self, placeholder: &str, attribute: &str) -> Self {
        self.names.insert(placeholder.to_owned(), attribute.to_owned());
        self
    }

    fn value(mut self, placeholder: &str, value: AttributeValue) -> Self {
        self.values.insert(placeholder.to_owned(), value);
        self
    }

    /// First contact creates the profile; later contacts refresh the names
    /// Telegram reports and keep first-seen time, language and referrer.
    fn registration(
        registration: &Registration,
        now: DateTime<Utc>,
        changes: &[UserChange],
    ) -> Result<Self, StoreError> {
        let optional = |value: &Option<String>| value.as_ref().map_or(AttributeValue::Null(true), |v| s(v.clone()));
        let expression = Expression {
            update: "SET #id = :id, #username = :username, #first = :first, #last = :last, #reachable = :true, \
                     #entity = :entity, #language = if_not_exists(#language, :language), \
                     #first_seen = if_not_exists(#first_seen, :now), #referrer = if_not_exists(#referrer, :referrer)"
                .to_owned(),
            ..Default::default()
        };
        let mut expression = expression;
        for (index, change) in changes.iter().enumerate() {
            let (attribute, value) = change.attribute()?;
            let (name, placeholder) = (format!("#c{index}"), format!(":c{index}"));
            // Registration only sets; a change that removes has nothing to remove yet.
            if let Some(value) = value {
                expression.update.push_str(&format!(", {name} = {placeholder}"));
                expression = expression.name(&name, attribute).value(&placeholder, value);
            }
        }
        Ok(expression
            .name("#id", "id")
            .name("#username", "username")
            .name("#first", "first_name")
            .name("#last", "last_name")
            .name("#reachable", "reachable")
            .name("#entity", keys::ENTITY)
            .name("#language", "language")
            .name("#first_seen", "first_seen")
            .name("#referrer", "referrer")
            .value(":id", n(registration.id.get()))
            .value(":username", optional(&registration.username))
            .value(":first", s(registration.first_name.clone()))
            .value(":last", optional(&registration.last_name))
            .value(":true", AttributeValue::Bool(true))
            .value(":entity", s("user"))
            .value(":language", attribute_value(&registration.language)?)
            .value(":now", s(now.to_rfc3339()))
            .value(
                ":referrer",
                registration
                    .referrer
                    .map_or(AttributeValue::Null(true), |id| n(id.get())),
            ))
    }

    /// Changes to an existing profile.
    fn changes(changes: &[UserChange]) -> Result<Self, StoreError> {
        let mut expression = Expression {
            condition: Some("attribute_exists(#pk)"),
            ..Default::default()
        }
        .name("#pk", keys::PK);
        let (mut set, mut remove) = (Vec::new(), Vec::new());
        for (index, change) in changes.iter().enumerate() {
            let (attribute, value) = change.attribute()?;
            let name = format!("#a{index}");
            expression = expression.name(&name, attribute);
            match value {
                Some(value) => {
                    let placeholder = format!(":v{index}");
                    set.push(format!("{name} = {placeholder}"));
                    expression = expression.value(&placeholder, value);
                }
                None => remove.push(name),
            }
        }
        if !set.is_empty() {
            expression.update.push_str(&format!("SET {} ", set.join(", ")));
        }
        if !remove.is_empty() {
            expression.update.push_str(&format!("REMOVE {}", remove.join(", ")));
        }
        if expression.update.is_empty() {
            return Err(StoreError::corrupt("profile change", "no changes"));
        }
        Ok(expression)
    }

    fn into_item(self, store: &Store, user: UserId) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(store.table())
            .set_key(Some(keys::profile(user).to_item()))
            .update_expression(self.update.trim())
            .set_condition_expression(self.condition.map(str::to_owned))
            .set_expression_attribute_names(Some(self.names))
            .set_expression_attribute_values((!self.values.is_empty()).then_some(self.values))
            .build()
            .map_err(|e| StoreError::corrupt("profile update", e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    async fn send(self, store: &Store, user: UserId) -> Result<User, StoreError> {
        let result = store
            .client
            .update_item()
            .table_name(store.table())
            .set_key(Some(keys::profile(user).to_item()))
            .update_expression(self.update.trim())
            .set_condition_expression(self.condition.map(str::to_owned))
            .set_expression_attribute_names(Some(self.names))
            .set_expression_attribute_values((!self.values.is_empty()).then_some(self.values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => parse("user", output.attributes.unwrap_or_default()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::NotFound {
                    what: format!("user {user}"),
                })
            }
            Err(err) => Err(StoreError::from_sdk("UpdateItem", err)),
        }
    }
}

impl Store {
    /// Registers a user, or refreshes the names Telegram reports for one
    /// already known. Returns the user and whether this call created them.
    pub async fn register_user(&self, registration: &Registration) -> Result<(User, bool), StoreError> {
        let now = self.now();
        let user = Expression::registration(registration, now, &[])?
            .send(self, registration.id)
            .await?;
        let created = user.first_seen == now;
        if created {
            self.count_new_user().await?;
        }
        Ok((user, created))
    }

    /// The same registration, with further `changes`, as one item of a
    /// larger transaction. (Count a new user with
    /// [`Store::count_new_user_item`] in the same transaction.)
    pub fn register_user_item(
        &self,
        registration: &Registration,
        changes: &[UserChange],
    ) -> Result<TransactWriteItem, StoreError> {
        Expression::registration(registration, self.now(), changes)?.into_item(self, registration.id)
    }

    /// Applies profile changes together; the user must exist.
    pub async fn update_user(&self, id: UserId, changes: &[UserChange]) -> Result<User, StoreError> {
        Expression::changes(changes)?.send(self, id).await
    }

    /// The same changes, as one item of a larger transaction.
    pub fn update_user_item(&self, id: UserId, changes: &[UserChange]) -> Result<TransactWriteItem, StoreError> {
        Expression::changes(changes)?.into_item(self, id)
    }

    pub async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.get_record(&keys::profile(id), "user", false).await
    }

    /// Like [`Store::user`], but a missing user is an error.
    pub async fn existing_user(&self, id: UserId) -> Result<User, StoreError> {
        self.user(id).await?.ok_or_else(|| StoreError::NotFound {
            what: format!("user {id}"),
        })
    }
}
