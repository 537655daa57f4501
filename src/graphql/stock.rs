//! Stock levels over GraphQL: the `StockLevel` type, its queries and the stock mutations.

use std::borrow::Cow;
use std::sync::Arc;

use async_graphql::connection::Connection;
use async_graphql::parser::types::Field;
use async_graphql::registry::Registry;
use async_graphql::{
    Context, ContextSelectionSet, ID, InputObject, Object, OutputType, Positioned, Result,
    ServerResult, SimpleObject, Value,
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::auth::{Role, RoleGuard};
use super::loaders;
use super::products::Product;
use super::stores::Store;
use super::{connection, state};
use crate::domain::paging;
use crate::domain::stock::{self, LevelKey, LevelQuery};
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

/// A stock level on a page of `stockLevels` or `lowStock`, with the product and store loaded
/// with the page. Its selection resolves plainly (see [`super::plain`]) when it can, else
/// through [`StockLevel`]'s resolvers: the same type, the same response.
pub struct PageLevel {
    level: StockLevel,
    refs: Arc<loaders::PageRefs>,
}

impl PageLevel {
    /// The node as the value of the field `ctx` (`node`, or an item of `nodes`).
    fn plain_nested(&self, ctx: &Context<'_>) -> Option<Value> {
        super::plain::nested(ctx, &Self::type_name(), &|f| self.plain_field(f))
    }

    fn plain_field(&self, ctx: &Context<'_>) -> Option<Value> {
        use super::plain::{int, nested, time};
        let level = &self.level.0;
        Some(match super::plain::name(ctx) {
            "productId" => Value::String(level.product_id.to_string()),
            "storeId" => Value::String(level.store_id.clone()),
            "quantity" => int(level.quantity),
            "reserved" => int(level.reserved),
            "available" => int(level.available()),
            "reorderPoint" => int(level.reorder_point),
            "lowStock" => Value::Boolean(level.is_low()),
            "version" => int(level.version),
            "updatedAt" => time(&level.updated_at),
            "product" => {
                let product = self.refs.products.get(&level.product_id)?;
                nested(ctx, "Product", &|f| {
                    super::products::plain_field(product, f)
                })?
            }
            "store" => {
                let store = self.refs.stores.get(&level.store_id)?;
                nested(ctx, "Store", &|f| super::stores::plain_field(store, f))?
            }
            _ => return None,
        })
    }
}

impl OutputType for PageLevel {
    fn type_name() -> Cow<'static, str> {
        StockLevel::type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        StockLevel::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        super::plain::or_resolve(ctx, field, &|f| self.plain_field(f), &self.level).await
    }
}

/// A page of `stockLevels` or `lowStock` (`StockLevelConnection`). The whole page resolves
/// plainly (see [`super::plain`]) when it can, else as async-graphql's connection, whose nodes
/// still try the plain pass one by one.
pub struct LevelPage(Connection<String, PageLevel>);

impl LevelPage {
    fn plain_field(&self, ctx: &Context<'_>) -> Option<Value> {
        let page = &self.0;
        let edge_type = EdgeOf::type_name();
        let edge_field = |edge: &EdgeOf, f: &Context<'_>| match super::plain::name(f) {
            "cursor" => Some(Value::String(edge.cursor.clone())),
            "node" => edge.node.plain_nested(f),
            _ => None,
        };
        Some(match super::plain::name(ctx) {
            "edges" => Value::List(
                page.edges
                    .iter()
                    .map(|edge| super::plain::nested(ctx, &edge_type, &|f| edge_field(edge, f)))
                    .collect::<Option<_>>()?,
            ),
            "nodes" => Value::List(
                page.edges
                    .iter()
                    .map(|edge| edge.node.plain_nested(ctx))
                    .collect::<Option<_>>()?,
            ),
            "pageInfo" => super::plain::nested(ctx, "PageInfo", &|f| {
                Some(match super::plain::name(f) {
                    "hasPreviousPage" => Value::Boolean(page.has_previous_page),
                    "hasNextPage" => Value::Boolean(page.has_next_page),
                    "startCursor" => {
                        super::plain::text(page.edges.first().map(|e| e.cursor.as_str()))
                    }
                    "endCursor" => super::plain::text(page.edges.last().map(|e| e.cursor.as_str())),
                    _ => return None,
                })
            })?,
            _ => return None,
        })
    }
}

type EdgeOf =
    async_graphql::connection::Edge<String, PageLevel, async_graphql::connection::EmptyFields>;

impl OutputType for LevelPage {
    fn type_name() -> Cow<'static, str> {
        Connection::<String, PageLevel>::type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        Connection::<String, PageLevel>::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        super::plain::or_resolve(ctx, field, &|f| self.plain_field(f), &self.0).await
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

/// Filters for `stockLevels`.
#[derive(InputObject, Default)]
pub struct StockLevelFilter {
    /// Only this store.
    pub store_id: Option<ID>,
    /// Only this product.
    pub product_id: Option<Uuid>,
    /// Only low (`true`) or only not low (`false`) levels.
    pub low_stock: Option<bool>,
}

/// Creates the stock level of a product in a store.
#[derive(InputObject)]
pub struct InitializeStockInput {
    /// The product.
    pub product_id: Uuid,
    /// The store.
    pub store_id: ID,
    /// Starting quantity (≥ 0).
    pub quantity: i32,
    /// Reorder point (≥ 0), default 0.
    pub reorder_point: Option<i32>,
}

/// Sets the absolute quantity.
#[derive(InputObject)]
pub struct SetStockInput {
    /// The product.
    pub product_id: Uuid,
    /// The store.
    pub store_id: ID,
    /// New quantity (≥ reserved).
    pub quantity: i32,
    /// Refuse with `VERSION_CONFLICT` unless the level is at this version.
    pub expected_version: Option<i32>,
    /// Why, for the audit log.
    pub reason: Option<String>,
}

/// Adds a signed delta.
#[derive(InputObject)]
pub struct AdjustStockInput {
    /// The product.
    pub product_id: Uuid,
    /// The store.
    pub store_id: ID,
    /// Signed change, not zero.
    pub delta: i32,
    /// Refuse with `VERSION_CONFLICT` unless the level is at this version.
    pub expected_version: Option<i32>,
    /// Why, for the audit log.
    pub reason: Option<String>,
    /// Repeating a key with the same input returns the first result and changes nothing.
    pub idempotency_key: Option<String>,
}

/// Moves units of one product between two stores, atomically.
#[derive(InputObject)]
pub struct TransferStockInput {
    /// The product.
    pub product_id: Uuid,
    /// Source store.
    pub from_store_id: ID,
    /// Destination store (must already stock the product).
    pub to_store_id: ID,
    /// Units to move (> 0).
    pub quantity: i32,
    /// Why, for the audit log.
    pub reason: Option<String>,
    /// Repeating a key with the same input returns the first result and changes nothing.
    pub idempotency_key: Option<String>,
}

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
    #[graphql(complexity = "super::page_cost(first, child_complexity)")]
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
    #[graphql(complexity = "super::page_cost(first, child_complexity)")]
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
        super::page_limit(ctx),
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
