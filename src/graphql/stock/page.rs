//! The page fast path: a page of `stockLevels` or `lowStock` whose nodes resolve plainly (see
//! `graphql::plain`) when they can, with products and stores loaded with the page.

use std::borrow::Cow;
use std::sync::Arc;

use async_graphql::connection::Connection;
use async_graphql::parser::types::Field;
use async_graphql::registry::Registry;
use async_graphql::{Context, ContextSelectionSet, OutputType, Positioned, ServerResult, Value};

use crate::graphql::loaders;

use super::StockLevel;

/// A stock level on a page of `stockLevels` or `lowStock`, with the product and store loaded
/// with the page. Its selection resolves plainly (see [`crate::graphql::plain`]) when it can, else
/// through [`StockLevel`]'s resolvers: the same type, the same response.
pub struct PageLevel {
    pub(super) level: StockLevel,
    pub(super) refs: Arc<loaders::PageRefs>,
}

impl PageLevel {
    /// The node as the value of the field `ctx` (`node`, or an item of `nodes`).
    fn plain_nested(&self, ctx: &Context<'_>) -> Option<Value> {
        crate::graphql::plain::nested(ctx, &Self::type_name(), &|f| self.plain_field(f))
    }

    fn plain_field(&self, ctx: &Context<'_>) -> Option<Value> {
        use crate::graphql::plain::{int, nested, time};
        let level = &self.level.0;
        Some(match crate::graphql::plain::name(ctx) {
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
                    crate::graphql::products::plain_field(product, f)
                })?
            }
            "store" => {
                let store = self.refs.stores.get(&level.store_id)?;
                nested(ctx, "Store", &|f| {
                    crate::graphql::stores::plain_field(store, f)
                })?
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
        crate::graphql::plain::or_resolve(ctx, field, &|f| self.plain_field(f), &self.level).await
    }
}

/// A page of `stockLevels` or `lowStock` (`StockLevelConnection`). The whole page resolves
/// plainly (see [`crate::graphql::plain`]) when it can, else as async-graphql's connection, whose nodes
/// still try the plain pass one by one.
pub struct LevelPage(pub(super) Connection<String, PageLevel>);

impl LevelPage {
    fn plain_field(&self, ctx: &Context<'_>) -> Option<Value> {
        let page = &self.0;
        let edge_type = EdgeOf::type_name();
        let edge_field = |edge: &EdgeOf, f: &Context<'_>| match crate::graphql::plain::name(f) {
            "cursor" => Some(Value::String(edge.cursor.clone())),
            "node" => edge.node.plain_nested(f),
            _ => None,
        };
        Some(match crate::graphql::plain::name(ctx) {
            "edges" => Value::List(
                page.edges
                    .iter()
                    .map(|edge| {
                        crate::graphql::plain::nested(ctx, &edge_type, &|f| edge_field(edge, f))
                    })
                    .collect::<Option<_>>()?,
            ),
            "nodes" => Value::List(
                page.edges
                    .iter()
                    .map(|edge| edge.node.plain_nested(ctx))
                    .collect::<Option<_>>()?,
            ),
            "pageInfo" => crate::graphql::plain::nested(ctx, "PageInfo", &|f| {
                Some(match crate::graphql::plain::name(f) {
                    "hasPreviousPage" => Value::Boolean(page.has_previous_page),
                    "hasNextPage" => Value::Boolean(page.has_next_page),
                    "startCursor" => {
                        crate::graphql::plain::text(page.edges.first().map(|e| e.cursor.as_str()))
                    }
                    "endCursor" => {
                        crate::graphql::plain::text(page.edges.last().map(|e| e.cursor.as_str()))
                    }
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
        crate::graphql::plain::or_resolve(ctx, field, &|f| self.plain_field(f), &self.0).await
    }
}
