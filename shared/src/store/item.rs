//! Small helpers to build and read DynamoDB items.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;
use super::keys::{ENTITY, Key};

pub type Item = HashMap<String, AttributeValue>;

pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A record serialized with its key and entity name.
pub fn record<T: Serialize>(key: &Key, entity: &str, value: &T) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::to_item(value).map_err(|e| StoreError::corrupt(entity, e))?;
    item.extend(key.to_item());
    item.insert(ENTITY.to_owned(), s(entity));
    Ok(item)
}

/// Reads a record back, ignoring the key and bookkeeping attributes.
pub fn parse<T: DeserializeOwned>(entity: &str, item: Item) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::corrupt(entity, e))
}

pub fn get_u64(item: &Item, name: &str) -> Result<u64, StoreError> {
    match item.get(name) {
        None => Ok(0),
        Some(AttributeValue::N(value)) => value.parse().map_err(|_| StoreError::corrupt(name, value)),
        Some(other) => Err(StoreError::corrupt(name, format!("{other:?}"))),
    }
}

impl super::Store {
    /// Reads one record; `consistent` for reads that must see the latest write.
    pub(crate) async fn get_record<T: DeserializeOwned>(
        &self,
        key: &Key,
        entity: &str,
        consistent: bool,
    ) -> Result<Option<T>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(self.table())
            .set_key(Some(key.to_item()))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("GetItem", e))?;
        output.item.map(|item| parse(entity, item)).transpose()
    }

    /// Sets a boolean attribute of an existing item; `NotFound` names `what`
    /// when there is no such item.
    pub(crate) async fn set_flag(
        &self,
        key: &Key,
        attribute: &str,
        value: bool,
        what: String,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(self.table())
            .set_key(Some(key.to_item()))
            .update_expression("SET #flag = :value")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#flag", attribute)
            .expression_attribute_names("#pk", super::keys::PK)
            .expression_attribute_values(":value", aws_sdk_dynamodb::types::AttributeValue::Bool(value))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::NotFound { what })
            }
            Err(err) => Err(StoreError::from_sdk("UpdateItem", err)),
        }
    }
}

impl super::Store {
    /// A query for the items of partition `pk` whose sort key starts with `prefix`.
    pub(crate) fn prefix_query(
        &self,
        pk: String,
        prefix: &str,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(self.table())
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
            .expression_attribute_names("#pk", super::keys::PK)
            .expression_attribute_names("#sk", super::keys::SK)
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":prefix", s(prefix))
    }

    /// Every item a query matches, following its pages.
    pub(crate) async fn query_all(
        &self,
        query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let output = query
                .clone()
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| StoreError::from_sdk("Query", e))?;
            items.extend(output.items.unwrap_or_default());
            match output.last_evaluated_key {
                Some(key) => start = Some(key),
                None => return Ok(items),
            }
        }
    }

    /// Every item of one `gsi1` partition (a list such as all promo codes),
    /// in sort key order.
    pub(crate) async fn gsi1_list<T: DeserializeOwned>(
        &self,
        partition: &str,
        entity: &str,
    ) -> Result<Vec<T>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(self.table())
            .index_name(super::keys::GSI1)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", super::keys::GSI1_PK)
            .expression_attribute_values(":pk", s(partition));
        self.query_all(query)
            .await?
            .into_iter()
            .map(|item| parse(entity, item))
            .collect()
    }

    /// Up to `limit` items of one partition of the sparse `due` index whose
    /// time (`due_at`, epoch seconds) is at or before `now`, soonest first.
    pub(crate) async fn due_items<T: DeserializeOwned>(
        &self,
        partition: &str,
        now: chrono::DateTime<chrono::Utc>,
        limit: i32,
        entity: &str,
    ) -> Result<Vec<T>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(self.table())
            .index_name(super::keys::DUE_INDEX)
            .key_condition_expression("#due = :due AND #at <= :now")
            .expression_attribute_names("#due", super::keys::DUE_PK)
            .expression_attribute_names("#at", super::keys::DUE_AT)
            .expression_attribute_values(":due", s(partition))
            .expression_attribute_values(":now", n(now.timestamp()))
            .limit(limit.clamp(1, 1000))
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("Query", e))?;
        output
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| parse(entity, item))
            .collect()
    }
}
