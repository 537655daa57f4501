//! Products: the catalogue. `search` finds products by a substring of their name or SKU.

mod search;

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel,
    PaginatorTrait, QueryFilter,
};
use uuid::Uuid;

use super::paging::{Page, PageRequest, keyset, split};
use super::{now, optional_text, required_text};
use crate::entity::{product, reservation, stock_level};
use crate::error::{AppError, AppResult, is_unique_violation};

/// Fields of a new product.
#[derive(Debug, Clone)]
pub struct NewProduct {
    /// Unique stock-keeping unit.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Grouping used by filters.
    pub category: Option<String>,
    /// Decimal price as text, e.g. `12.50`.
    pub price: Option<String>,
}

/// Changes to a product; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProductChanges {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New category.
    pub category: Option<String>,
    /// New price.
    pub price: Option<String>,
}

/// Which products to list.
#[derive(Debug, Clone, Default)]
pub struct ProductQuery {
    /// Exact category.
    pub category: Option<String>,
    /// Case-insensitive substring of the name or SKU.
    pub search: Option<String>,
}

/// Checks a price is a non-negative decimal with at most 4 fraction digits.
fn valid_price(price: Option<String>) -> AppResult<Option<String>> {
    let Some(price) = price else { return Ok(None) };
    let text = price.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let ok = !whole.is_empty()
        && whole.len() <= 15
        && digits(whole)
        && digits(fraction)
        && fraction.len() <= 4
        && !(text.contains('.') && fraction.is_empty());
    if !ok {
        return Err(AppError::bad_input(format!(
            "price must be a non-negative decimal such as 12.50, got {price:?}"
        )));
    }
    Ok(Some(text.to_owned()))
}

/// Creates a product; a duplicate SKU is `ALREADY_EXISTS`.
pub async fn create(conn: &impl ConnectionTrait, input: NewProduct) -> AppResult<product::Model> {
    let at = now();
    let row = product::ActiveModel {
        id: Set(Uuid::now_v7()),
        sku: Set(required_text("sku", &input.sku, 64)?),
        name: Set(required_text("name", &input.name, 200)?),
        description: Set(optional_text("description", input.description, 4000)?),
        category: Set(optional_text("category", input.category, 100)?),
        price: Set(valid_price(input.price)?),
        created_at: Set(at),
        updated_at: Set(at),
    };
    row.insert(conn).await.map_err(|e| {
        if is_unique_violation(&e) {
            AppError::AlreadyExists(format!(
                "a product with SKU {:?} already exists",
                input.sku.trim()
            ))
        } else {
            e.into()
        }
    })
}

/// Updates the given fields of a product.
pub async fn update(
    conn: &impl ConnectionTrait,
    id: Uuid,
    changes: ProductChanges,
) -> AppResult<product::Model> {
    let mut row = require(conn, id).await?.into_active_model();
    if let Some(name) = changes.name {
        row.name = Set(required_text("name", &name, 200)?);
    }
    if let Some(description) = changes.description {
        row.description = Set(optional_text("description", Some(description), 4000)?);
    }
    if let Some(category) = changes.category {
        row.category = Set(optional_text("category", Some(category), 100)?);
    }
    if changes.price.is_some() {
        row.price = Set(valid_price(changes.price)?);
    }
    row.updated_at = Set(now());
    Ok(row.update(conn).await?)
}

/// Deletes a product that holds no stock and has no reservations.
pub async fn delete(conn: &impl ConnectionTrait, id: Uuid) -> AppResult<bool> {
    require(conn, id).await?;
    let stocked = stock_level::Entity::find()
        .filter(stock_level::Column::ProductId.eq(id))
        .filter(stock_level::Column::Quantity.gt(0))
        .count(conn)
        .await?;
    if stocked > 0 {
        return Err(AppError::invalid_state(
            "the product still has stock; set it to zero first",
        ));
    }
    let reserved = reservation::Entity::find()
        .filter(reservation::Column::ProductId.eq(id))
        .count(conn)
        .await?;
    if reserved > 0 {
        return Err(AppError::invalid_state(
            "the product has reservations and is kept for their history",
        ));
    }
    stock_level::Entity::delete_many()
        .filter(stock_level::Column::ProductId.eq(id))
        .exec(conn)
        .await?;
    product::Entity::delete_by_id(id).exec(conn).await?;
    Ok(true)
}

/// A product by id.
pub async fn find(conn: &impl ConnectionTrait, id: Uuid) -> AppResult<Option<product::Model>> {
    Ok(product::Entity::find_by_id(id).one(conn).await?)
}

/// A product by id, or `NOT_FOUND`.
pub async fn require(conn: &impl ConnectionTrait, id: Uuid) -> AppResult<product::Model> {
    find(conn, id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("product {id} does not exist")))
}

/// A product by SKU.
pub async fn find_by_sku(
    conn: &impl ConnectionTrait,
    sku: &str,
) -> AppResult<Option<product::Model>> {
    let sku = required_text("sku", sku, 64)?;
    Ok(product::Entity::find()
        .filter(product::Column::Sku.eq(sku))
        .one(conn)
        .await?)
}

/// Products by id, for the loader.
pub async fn find_many(
    conn: &impl ConnectionTrait,
    ids: &[Uuid],
) -> AppResult<Vec<product::Model>> {
    Ok(product::Entity::find()
        .filter(product::Column::Id.is_in(ids.iter().copied()))
        .all(conn)
        .await?)
}

/// A page of products in creation order.
pub async fn list(
    conn: &impl ConnectionTrait,
    query: &ProductQuery,
    page: &PageRequest<Uuid>,
) -> AppResult<Page<product::Model>> {
    let mut select = product::Entity::find();
    if let Some(after) = page.after {
        select = select.filter(product::Column::Id.gt(after));
    }
    let search = query
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    if let Some(category) = &query.category {
        select = select.filter(product::Column::Category.eq(category.clone()));
    }
    if let Some(search) = search {
        select = select.filter(search::condition(conn.get_database_backend(), search));
    }
    let filtered = query.category.is_some() || search.is_some();
    let rows = keyset(conn, select, product::Column::Id, filtered, page.size).await?;
    Ok(split(rows, page.size))
}
