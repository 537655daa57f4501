//! Products over GraphQL: the `Product` type, its queries and admin mutations.

use async_graphql::connection::Connection;
use async_graphql::{Context, InputObject, Object, Result, Value};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::auth::{Role, RoleGuard};
use super::loaders;
use super::stock::StockLevel;
use super::{connection, state};
use crate::domain::{paging, products};
use crate::entity::product;

/// A product of the catalogue.
pub struct Product(pub product::Model);

/// A product of the catalogue.
#[Object]
impl Product {
    /// Unique id (UUID v7, so ids sort by creation time).
    async fn id(&self) -> Uuid {
        self.0.id
    }
    /// Stock-keeping unit, unique.
    async fn sku(&self) -> &str {
        &self.0.sku
    }
    /// Display name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Free text.
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    /// Grouping used by filters.
    async fn category(&self) -> Option<&str> {
        self.0.category.as_deref()
    }
    /// Decimal price as text, e.g. `12.50`.
    async fn price(&self) -> Option<&str> {
        self.0.price.as_deref()
    }
    /// When the product was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When the product was last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// The product's stock in every store that carries it.
    #[graphql(complexity = "super::list_cost(child_complexity)")]
    async fn stock_levels(&self, ctx: &Context<'_>) -> Result<Vec<StockLevel>> {
        let levels = loaders::levels_of(ctx, self.0.id).await?;
        Ok(levels.into_iter().map(StockLevel).collect())
    }
    /// Units available across all stores.
    async fn total_available(&self, ctx: &Context<'_>) -> Result<i32> {
        let levels = loaders::levels_of(ctx, self.0.id).await?;
        let total: i64 = levels.iter().map(|l| i64::from(l.available())).sum();
        Ok(total.clamp(0, i64::from(i32::MAX)) as i32)
    }
}

/// The product's fields that need no I/O, for plain resolution (see [`super::plain`]): keep
/// them in step with the resolvers above; a field missing here only takes the slower path.
pub(crate) fn plain_field(product: &product::Model, ctx: &Context<'_>) -> Option<Value> {
    use super::plain::{text, time};
    Some(match super::plain::name(ctx) {
        "id" => Value::String(product.id.to_string()),
        "sku" => Value::String(product.sku.clone()),
        "name" => Value::String(product.name.clone()),
        "description" => text(product.description.as_deref()),
        "category" => text(product.category.as_deref()),
        "price" => text(product.price.as_deref()),
        "createdAt" => time(&product.created_at),
        "updatedAt" => time(&product.updated_at),
        _ => return None,
    })
}

/// Filters for `products`.
#[derive(InputObject, Default)]
pub struct ProductFilter {
    /// Exact category.
    pub category: Option<String>,
    /// Case-insensitive substring of the name or SKU.
    pub search: Option<String>,
}

/// Fields of a new product.
#[derive(InputObject)]
pub struct CreateProductInput {
    /// Unique stock-keeping unit (1–64 characters).
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Grouping used by filters.
    pub category: Option<String>,
    /// Non-negative decimal, e.g. `12.50`.
    pub price: Option<String>,
}

/// Changes to a product; omitted fields stay as they are.
#[derive(InputObject)]
pub struct UpdateProductInput {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New category.
    pub category: Option<String>,
    /// New price.
    pub price: Option<String>,
}

/// Product queries.
#[derive(Default)]
pub struct ProductQuery;

/// Product queries.
#[Object]
impl ProductQuery {
    /// A product by id.
    async fn product(&self, ctx: &Context<'_>, id: Uuid) -> Result<Option<Product>> {
        Ok(products::find(&state(ctx).db.conn, id).await?.map(Product))
    }

    /// A product by SKU.
    async fn product_by_sku(&self, ctx: &Context<'_>, sku: String) -> Result<Option<Product>> {
        Ok(products::find_by_sku(&state(ctx).db.conn, &sku)
            .await?
            .map(Product))
    }

    /// Products in creation order, 20 per page by default, at most 100.
    #[graphql(complexity = "super::page_cost(first, child_complexity)")]
    async fn products(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<ProductFilter>,
    ) -> Result<Connection<String, Product>> {
        let page = paging::request(
            first,
            super::page_limit(ctx),
            after.as_deref(),
            "product",
            |s| s.parse().ok(),
        )?;
        let filter = filter.unwrap_or_default();
        let query = products::ProductQuery {
            category: filter.category,
            search: filter.search,
        };
        let rows = products::list(&state(ctx).db.conn, &query, &page).await?;
        let node = ctx.look_ahead().field("edges").field("node");
        if node.field("stockLevels").exists() || node.field("totalAvailable").exists() {
            let ids: Vec<Uuid> = rows.items.iter().map(|p| p.id).collect();
            loaders::prime_levels_of(ctx, &ids).await?;
        }
        Ok(connection(
            rows,
            page.after.is_some(),
            |p| paging::encode("product", &p.id.to_string()),
            Product,
        ))
    }
}

/// Product mutations (admin).
#[derive(Default)]
pub struct ProductMutation;

/// Product mutations (admin).
#[Object]
impl ProductMutation {
    /// Adds a product. `ALREADY_EXISTS` when the SKU is taken.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn create_product(
        &self,
        ctx: &Context<'_>,
        input: CreateProductInput,
    ) -> Result<Product> {
        let new = products::NewProduct {
            sku: input.sku,
            name: input.name,
            description: input.description,
            category: input.category,
            price: input.price,
        };
        let created = state(ctx)
            .db
            .write(move |txn| Box::pin(products::create(txn, new.clone())))
            .await?;
        Ok(Product(created))
    }

    /// Changes a product's fields.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn update_product(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        input: UpdateProductInput,
    ) -> Result<Product> {
        let changes = products::ProductChanges {
            name: input.name,
            description: input.description,
            category: input.category,
            price: input.price,
        };
        let updated = state(ctx)
            .db
            .write(move |txn| Box::pin(products::update(txn, id, changes.clone())))
            .await?;
        Ok(Product(updated))
    }

    /// Deletes a product. `INVALID_STATE` while it has stock or reservations.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn delete_product(&self, ctx: &Context<'_>, id: Uuid) -> Result<bool> {
        Ok(state(ctx)
            .db
            .write(move |txn| Box::pin(products::delete(txn, id)))
            .await?)
    }
}
