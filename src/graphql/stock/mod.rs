//! Stock levels over GraphQL: the `StockLevel` type (here), the page fast path (`page`), the
//! inputs (`inputs`), and the queries and mutations (`resolvers`).

mod inputs;
mod page;
mod resolvers;

pub use inputs::*;
pub use page::{LevelPage, PageLevel};
pub use resolvers::{StockMutation, StockQuery};

use async_graphql::{Context, ID, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::loaders;
use super::products::Product;
use super::stores::Store;
use crate::domain::stock::{self};
use crate::entity::stock_level;
use crate::error::AppError;

/// How much of one product one store holds.
pub struct StockLevel(pub stock_level::Model);

/// How much of one product one store holds.
#[Object]
impl StockLevel {
    /// The product.
    async fn product_id(&self) -> Uuid {
        self.0.product_id
    }
    /// The store.
    async fn store_id(&self) -> ID {
        ID(self.0.store_id.clone())
    }
    /// The product, batched across a page.
    async fn product(&self, ctx: &Context<'_>) -> Result<Product> {
        let product = loaders::product(ctx, self.0.product_id).await?;
        product
            .map(Product)
            .ok_or_else(|| AppError::not_found("the product of this stock level is gone").into())
    }
    /// The store, batched across a page.
    async fn store(&self, ctx: &Context<'_>) -> Result<Store> {
        let store = loaders::store(ctx, self.0.store_id.clone()).await?;
        store
            .map(Store)
            .ok_or_else(|| AppError::not_found("the store of this stock level is gone").into())
    }
    /// Units on hand, including reserved ones.
    async fn quantity(&self) -> i32 {
        self.0.quantity
    }
    /// Units held by pending reservations.
    async fn reserved(&self) -> i32 {
        self.0.reserved
    }
    /// `quantity - reserved`: what can still be reserved or removed.
    async fn available(&self) -> i32 {
        self.0.available()
    }
    /// At or below this many available units the level is low.
    async fn reorder_point(&self) -> i32 {
        self.0.reorder_point
    }
    /// `available <= reorderPoint`.
    async fn low_stock(&self) -> bool {
        self.0.is_low()
    }
    /// Optimistic-lock version; every change adds one.
    async fn version(&self) -> i32 {
        self.0.version
    }
    /// When the level last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

/// Both sides of a transfer after the move.
pub struct StockTransfer(pub stock::Transfer);

/// Both sides of a transfer after the move.
#[Object]
impl StockTransfer {
    /// The source level after the move.
    async fn from(&self) -> StockLevel {
        StockLevel(self.0.from.clone())
    }
    /// The destination level after the move.
    async fn to(&self) -> StockLevel {
        StockLevel(self.0.to.clone())
    }
    /// Units moved.
    async fn quantity(&self) -> i32 {
        self.0.quantity
    }
}

/// Whether a quantity can be reserved now.
#[derive(SimpleObject)]
pub struct Availability {
    /// The product.
    pub product_id: Uuid,
    /// The store.
    pub store_id: ID,
    /// Units asked about.
    pub requested: i32,
    /// Units available now (0 when the product is not stocked there).
    pub available: i32,
    /// `available >= requested`.
    pub is_available: bool,
}
