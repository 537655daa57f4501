//! Stock queries (levels, pages, availability) and mutations (initialize, set, adjust,
//! transfer): thin resolvers over `domain::stock`.

use std::sync::Arc;

use async_graphql::{Context, ID, Object, Result};
use uuid::Uuid;

use crate::domain::paging;
use crate::domain::stock::{self, LevelKey, LevelQuery};
use crate::graphql::auth::{Role, RoleGuard};
use crate::graphql::loaders;
use crate::graphql::{connection, state};

use super::{
    AdjustStockInput, Availability, InitializeStockInput, LevelPage, PageLevel, SetStockInput,
    StockLevel, StockLevelFilter, StockTransfer, TransferStockInput,
};

/// Stock queries.
#[derive(Default)]
pub struct StockQuery;

/// Stock queries.
#[Object]
impl StockQuery {
    /// One product's stock in one store.
    async fn stock_level(
        &self,
        ctx: &Context<'_>,
        product_id: Uuid,
        store_id: ID,
    ) -> Result<Option<StockLevel>> {
        let key = LevelKey {
            product_id,
            store_id: store_id.0,
        };
        Ok(stock::find(&state(ctx).db.conn, &key)
            .await?
            .map(StockLevel))
    }

    /// Stock levels in creation order, 20 per page by default, at most 100.
    #[graphql(complexity = "crate::graphql::page_cost(first, child_complexity)")]
    async fn stock_levels(
        &self,
        ctx: &Context<'_>,
        filter: Option<StockLevelFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<LevelPage> {
        let filter = filter.unwrap_or_default();
        let query = LevelQuery {
            store_id: filter.store_id.map(|s| s.0),
            product_id: filter.product_id,
            low_stock: filter.low_stock,
        };
        levels_page(ctx, query, first, after).await
    }

    /// Levels whose available stock is at or below their reorder point.
    #[graphql(complexity = "crate::graphql::page_cost(first, child_complexity)")]
    async fn low_stock(
        &self,
        ctx: &Context<'_>,
        store_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<LevelPage> {
        let query = LevelQuery {
            store_id: store_id.map(|s| s.0),
            product_id: None,
            low_stock: Some(true),
        };
        levels_page(ctx, query, first, after).await
    }

    /// Whether `quantity` units can be reserved now.
    async fn availability(
        &self,
        ctx: &Context<'_>,
        product_id: Uuid,
        store_id: ID,
        #[graphql(default = 1)] quantity: i32,
    ) -> Result<Availability> {
        stock::positive("quantity", quantity)?;
        let key = LevelKey {
            product_id,
            store_id: store_id.0.clone(),
        };
        let available = stock::find(&state(ctx).db.conn, &key)
            .await?
            .map_or(0, |l| l.available());
        Ok(Availability {
            product_id,
            store_id,
            requested: quantity,
            available,
            is_available: available >= quantity,
        })
    }
}

async fn levels_page(
    ctx: &Context<'_>,
    query: LevelQuery,
    first: Option<i32>,
    after: Option<String>,
) -> Result<LevelPage> {
    let page = paging::request(
        first,
        crate::graphql::page_limit(ctx),
        after.as_deref(),
        "stock",
        |s| s.parse().ok(),
    )?;
    let rows = stock::list(&state(ctx).db.conn, &query, &page).await?;
    let node = ctx.look_ahead().field("edges").field("node");
    let refs = Arc::new(loaders::prime_for_levels(ctx, node, &rows.items).await?);
    Ok(LevelPage(connection(
        rows,
        page.after.is_some(),
        |l| paging::encode("stock", &l.id.to_string()),
        |l| PageLevel {
            level: StockLevel(l),
            refs: refs.clone(),
        },
    )))
}

/// Stock mutations (write).
#[derive(Default)]
pub struct StockMutation;

/// Stock mutations (write).
#[Object]
impl StockMutation {
    /// Creates the stock level of a product in a store. Appends `stock.created`.
    #[graphql(guard = "RoleGuard(Role::Write)")]
    async fn initialize_stock(
        &self,
        ctx: &Context<'_>,
        input: InitializeStockInput,
    ) -> Result<StockLevel> {
        let command = stock::InitializeStock {
            key: LevelKey {
                product_id: input.product_id,
                store_id: input.store_id.0,
            },
            quantity: input.quantity,
            reorder_point: input.reorder_point,
        };
        let level = state(ctx)
            .db
            .write(move |txn| Box::pin(stock::initialize(txn, command.clone())))
            .await?;
        Ok(StockLevel(level))
    }

    /// Sets the absolute quantity. Appends `stock.updated`.
    #[graphql(guard = "RoleGuard(Role::Write)")]
    async fn set_stock(&self, ctx: &Context<'_>, input: SetStockInput) -> Result<StockLevel> {
        let command = stock::SetStock {
            key: LevelKey {
                product_id: input.product_id,
                store_id: input.store_id.0,
            },
            quantity: input.quantity,
            expected_version: input.expected_version,
            reason: input.reason,
        };
        let level = state(ctx)
            .db
            .write(move |txn| Box::pin(stock::set(txn, command.clone())))
            .await?;
        Ok(StockLevel(level))
    }

    /// Adds a signed delta. Appends `stock.updated`.
    #[graphql(guard = "RoleGuard(Role::Write)")]
    async fn adjust_stock(&self, ctx: &Context<'_>, input: AdjustStockInput) -> Result<StockLevel> {
        let command = stock::AdjustStock {
            key: LevelKey {
                product_id: input.product_id,
                store_id: input.store_id.0,
            },
            delta: input.delta,
            expected_version: input.expected_version,
            reason: input.reason,
            idempotency_key: input.idempotency_key,
        };
        let level = state(ctx)
            .db
            .write(move |txn| Box::pin(stock::adjust(txn, command.clone())))
            .await?;
        Ok(StockLevel(level))
    }

    /// Moves units between stores in one transaction. Appends `stock.transferred`.
    #[graphql(guard = "RoleGuard(Role::Write)")]
    async fn transfer_stock(
        &self,
        ctx: &Context<'_>,
        input: TransferStockInput,
    ) -> Result<StockTransfer> {
        let command = stock::TransferStock {
            product_id: input.product_id,
            from_store_id: input.from_store_id.0,
            to_store_id: input.to_store_id.0,
            quantity: input.quantity,
            reason: input.reason,
            idempotency_key: input.idempotency_key,
        };
        let transfer = state(ctx)
            .db
            .write(move |txn| Box::pin(stock::transfer(txn, command.clone())))
            .await?;
        Ok(StockTransfer(transfer))
    }
}
