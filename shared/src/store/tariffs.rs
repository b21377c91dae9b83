//! The tariff catalog.

use super::item::{parse, record};
use super::keys;
use super::{Store, StoreError};
use crate::domain::TariffId;
use crate::domain::tariff::Tariff;

impl Store {
    /// Validates every tariff first, then writes them all: a bad file
    /// changes nothing.
    pub async fn put_tariffs(&self, tariffs: &[Tariff]) -> Result<(), StoreError> {
        for tariff in tariffs {
            tariff.validate()?;
        }
        for tariff in tariffs {
            self.client
                .put_item()
                .table_name(self.table())
                .set_item(Some(record(&keys::tariff(&tariff.id), "tariff", tariff)?))
                .send()
                .await
                .map_err(|e| StoreError::from_sdk("PutItem", e))?;
        }
        Ok(())
    }

    /// The whole catalog in display order, inactive tariffs included.
    pub async fn tariffs(&self) -> Result<Vec<Tariff>, StoreError> {
        let query = self.prefix_query(keys::CATALOG_PK.to_owned(), keys::TARIFF_PREFIX);
        let mut tariffs: Vec<Tariff> = self
            .query_all(query)
            .await?
            .into_iter()
            .map(|item| parse("tariff", item))
            .collect::<Result<_, _>>()?;
        tariffs.sort_by(|a, b| (a.sort_order, &a.id).cmp(&(b.sort_order, &b.id)));
        Ok(tariffs)
    }

    pub async fn tariff(&self, id: &TariffId) -> Result<Option<Tariff>, StoreError> {
        self.get_record(&keys::tariff(id), "tariff", false).await
    }

    /// Turns a tariff off (or on) without touching anything else.
    pub async fn set_tariff_active(&self, id: &TariffId, active: bool) -> Result<(), StoreError> {
        self.set_flag(&keys::tariff(id), "active", active, format!("tariff {id}"))
            .await
    }
}
