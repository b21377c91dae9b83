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
