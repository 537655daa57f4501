//! DataLoaders: a page of stock levels with products and stores costs one query per kind.

use std::collections::HashMap;

use async_graphql::dataloader::{DataLoader, Loader};
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

/// The three loaders with a cache scoped to one request: a row loaded (or primed) once is not
/// loaded again while the request runs, and nothing is cached across requests.
pub fn attach_request_loaders(request: async_graphql::Request, db: &Db) -> async_graphql::Request {
    use async_graphql::dataloader::HashMapCache;
    request
        .data(DataLoader::with_cache(
            ProductLoader(db.clone()),
            tokio::spawn,
            HashMapCache::default(),
        ))
        .data(DataLoader::with_cache(
            StoreLoader(db.clone()),
            tokio::spawn,
            HashMapCache::default(),
        ))
        .data(DataLoader::with_cache(
            LevelsByProductLoader(db.clone()),
            tokio::spawn,
            HashMapCache::default(),
        ))
}

/// The products and stores of a page of stock levels, as loaded with it.
#[derive(Default)]
pub struct PageRefs {
    /// Products by id (empty when the selection does not ask for `product`).
    pub products: HashMap<Uuid, product::Model>,
    /// Stores by id (empty when the selection does not ask for `store`).
    pub stores: HashMap<String, store::Model>,
}

/// Loads, in one query each, the products and stores a page of stock levels will ask for
/// (when the selection asks for them), so a page costs a fixed number of statements however
/// the resolvers are scheduled. The loaders are primed with them, and they are returned for the
/// page's plain resolution.
pub async fn prime_for_levels(
    ctx: &async_graphql::Context<'_>,
    node: async_graphql::Lookahead<'_>,
    levels: &[stock_level::Model],
) -> async_graphql::Result<PageRefs> {
    let mut refs = PageRefs::default();
    if node.field("product").exists() {
        let ids: Vec<Uuid> = unique(levels.iter().map(|l| l.product_id));
        let rows = prime_products(ctx, node.field("product"), &ids).await?;
        refs.products = rows.into_iter().map(|p| (p.id, p)).collect();
    }
    if node.field("store").exists() {
        let ids: Vec<String> = unique(levels.iter().map(|l| l.store_id.clone()));
        let rows = stores::find_many(&db(ctx).conn, &ids).await?;
        if let Some(loader) = ctx.data_opt::<Cached<StoreLoader>>() {
            loader
                .feed_many(rows.iter().map(|s| (s.id.clone(), s.clone())))
                .await;
        }
        refs.stores = rows.into_iter().map(|s| (s.id.clone(), s)).collect();
    }
    Ok(refs)
}

/// Loads the given products (and their stock levels, when `product` selects them) in one query
/// each; returns the products.
pub async fn prime_products(
    ctx: &async_graphql::Context<'_>,
    product: async_graphql::Lookahead<'_>,
    ids: &[Uuid],
) -> async_graphql::Result<Vec<product::Model>> {
    let rows = products::find_many(&db(ctx).conn, ids).await?;
    if let Some(loader) = ctx.data_opt::<Cached<ProductLoader>>() {
        loader
            .feed_many(rows.iter().map(|p| (p.id, p.clone())))
            .await;
    }
    if product.field("stockLevels").exists() || product.field("totalAvailable").exists() {
        prime_levels_of(ctx, ids).await?;
    }
    Ok(rows)
}

/// Loads the stock levels of the given products in one query.
pub async fn prime_levels_of(
    ctx: &async_graphql::Context<'_>,
    ids: &[Uuid],
) -> async_graphql::Result<()> {
    let mut grouped: HashMap<Uuid, Vec<stock_level::Model>> =
        ids.iter().map(|id| (*id, Vec::new())).collect();
    for level in stock::for_products(&db(ctx).conn, ids).await? {
        grouped.entry(level.product_id).or_default().push(level);
    }
    if let Some(loader) = ctx.data_opt::<Cached<LevelsByProductLoader>>() {
        loader.feed_many(grouped).await;
    }
    Ok(())
}

fn db<'a>(ctx: &async_graphql::Context<'a>) -> &'a Db {
    &ctx.data_unchecked::<crate::state::AppState>().db
}

fn unique<T: Eq + std::hash::Hash + Clone>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut seen = std::collections::HashSet::new();
    items.filter(|i| seen.insert(i.clone())).collect()
}

/// Spends one unit of the task's cooperative budget, yielding when it runs out. A loader hit
/// from the request's cache is ready at once, so a large nested selection could otherwise
/// resolve in one long poll that neither yields to other requests nor lets the request timeout
/// fire; every nested object passes through here.
async fn take_turn() {
    tokio::task::consume_budget().await;
}

/// Per-request loader types (cached for one request).
type Cached<T> = DataLoader<T, async_graphql::dataloader::HashMapCache>;

/// A product through the request's cached loader, or the shared uncached one (WebSocket).
pub async fn product(
    ctx: &async_graphql::Context<'_>,
    id: Uuid,
) -> async_graphql::Result<Option<product::Model>> {
    take_turn().await;
    match ctx.data_opt::<Cached<ProductLoader>>() {
        Some(loader) => loader.load_one(id).await,
        None => {
            ctx.data_unchecked::<DataLoader<ProductLoader>>()
                .load_one(id)
                .await
        }
    }
}

/// A store through the request's cached loader, or the shared uncached one (WebSocket).
pub async fn store(
    ctx: &async_graphql::Context<'_>,
    id: String,
) -> async_graphql::Result<Option<store::Model>> {
    take_turn().await;
    match ctx.data_opt::<Cached<StoreLoader>>() {
        Some(loader) => loader.load_one(id).await,
        None => {
            ctx.data_unchecked::<DataLoader<StoreLoader>>()
                .load_one(id)
                .await
        }
    }
}

/// A product's stock levels through the request's cached loader, or the shared uncached one.
pub async fn levels_of(
    ctx: &async_graphql::Context<'_>,
    id: Uuid,
) -> async_graphql::Result<Vec<stock_level::Model>> {
    take_turn().await;
    let levels = match ctx.data_opt::<Cached<LevelsByProductLoader>>() {
        Some(loader) => loader.load_one(id).await?,
        None => {
            ctx.data_unchecked::<DataLoader<LevelsByProductLoader>>()
                .load_one(id)
                .await?
        }
    };
    Ok(levels.unwrap_or_default())
}
