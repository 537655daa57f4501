//! DataLoaders: a page of stock levels with products and stores costs one query per kind.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;
use uuid::Uuid;

use crate::db::Db;
use crate::domain::{products, stock, stores};
use crate::entity::{product, stock_level, store};

/// Loads products by id.
pub struct ProductLoader(pub Db);
/// Loads stores by id.
pub struct StoreLoader(pub Db);
/// Loads the stock levels of products.
pub struct LevelsByProductLoader(pub Db);

impl Loader<Uuid> for ProductLoader {
    type Value = product::Model;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        let rows = products::find_many(&self.0.conn, keys).await?;
        Ok(rows.into_iter().map(|p| (p.id, p)).collect())
    }
}

impl Loader<String> for StoreLoader {
    type Value = store::Model;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let rows = stores::find_many(&self.0.conn, keys).await?;
        Ok(rows.into_iter().map(|s| (s.id.clone(), s)).collect())
    }
}

impl Loader<Uuid> for LevelsByProductLoader {
    type Value = Vec<stock_level::Model>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        let mut grouped: HashMap<Uuid, Vec<stock_level::Model>> = HashMap::new();
        for level in stock::for_products(&self.0.conn, keys).await? {
            grouped.entry(level.product_id).or_default().push(level);
        }
        Ok(grouped)
    }
}
