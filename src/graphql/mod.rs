//! GraphQL schema assembly: one file per domain with its types, queries, mutations and
//! subscriptions; loaders; authentication; error codes.

pub mod auth;
pub mod cost;
pub mod document;
pub mod events;
pub mod gateway;
pub mod live;
pub mod loaders;
pub mod metered;
pub mod plain;
pub mod products;
pub mod reservations;
pub mod stock;
pub mod stores;
pub mod system;

use async_graphql::connection::{Connection, Edge};
use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, MergedObject, MergedSubscription, Response, Schema, Value};

use crate::domain::paging::Page;
use crate::error::AppError;
use crate::state::AppState;
pub use gateway::Gateway;
use loaders::{LevelsByProductLoader, ProductLoader, StoreLoader};

/// Every query.
#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct QueryRoot(
    system::SystemQuery,
    products::ProductQuery,
    stores::StoreQuery,
    stock::StockQuery,
    reservations::ReservationQuery,
    events::EventQuery,
);

/// Every mutation.
#[derive(MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct MutationRoot(
    products::ProductMutation,
    stores::StoreMutation,
    stock::StockMutation,
    reservations::ReservationMutation,
    events::EventMutation,
);

/// Every subscription.
#[derive(MergedSubscription, Default)]
#[graphql(name = "Subscription")]
pub struct SubscriptionRoot(events::EventSubscription);

/// The Stockroom schema.
pub type AppSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Limits applied to every operation.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Deepest selection.
    pub max_depth: usize,
    /// Largest complexity (fields, list fields once per item they may return).
    pub max_complexity: usize,
    /// Most aliased fields.
    pub max_aliases: usize,
    /// Most fields once fragments are expanded.
    pub max_fields: usize,
    /// Whether introspection is answered.
    pub introspection: bool,
    /// Largest page a connection returns (`first`), at most 100.
    pub max_page_size: i32,
}

/// The largest page size, in the schema data.
struct PageLimit(i32);

/// The largest page size this server accepts.
pub(crate) fn page_limit(ctx: &Context<'_>) -> i32 {
    ctx.data_opt::<PageLimit>()
        .map_or(crate::domain::paging::MAX_PAGE_SIZE, |l| l.0)
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 15,
            max_complexity: 20_000,
            max_aliases: 30,
            max_fields: 2_000,
            introspection: true,
            max_page_size: crate::domain::paging::MAX_PAGE_SIZE,
        }
    }
}

/// Builds the schema; `state` is absent only when printing the SDL.
pub fn build_schema(state: Option<AppState>, limits: &Limits) -> AppSchema {
    let mut builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot::default(),
    )
    .limit_depth(limits.max_depth)
    .limit_complexity(limits.max_complexity)
    .limit_recursive_depth(32)
    .limit_directives(8)
    .data(PageLimit(
        limits
            .max_page_size
            .clamp(1, crate::domain::paging::MAX_PAGE_SIZE),
    ));
    if !limits.introspection {
        // "Did you mean …?" in validation errors would name fields introspection hides.
        builder = builder.disable_introspection().disable_suggestions();
    }
    if let Some(state) = state {
        let db = state.db.clone();
        builder = builder
            .data(DataLoader::new(ProductLoader(db.clone()), tokio::spawn))
            .data(DataLoader::new(StoreLoader(db.clone()), tokio::spawn))
            .data(DataLoader::new(LevelsByProductLoader(db), tokio::spawn))
            .data(state);
    }
    builder.finish()
}

/// The shared services, from the schema data.
/// Items a list without a page size is expected to hold, for complexity: `stores` and
/// `Product.stockLevels` (one per store).
pub const UNPAGED_LIST_SIZE: usize = 20;

/// Complexity of a connection field: its selection counts once per item of the page it may
/// return (`first`, default 20, at most 100), so nested lists multiply.
pub(crate) fn page_cost(first: Option<i32>, child_complexity: usize) -> usize {
    let items = first
        .unwrap_or(crate::domain::paging::DEFAULT_PAGE_SIZE)
        .clamp(1, crate::domain::paging::MAX_PAGE_SIZE);
    (items as usize)
        .saturating_mul(child_complexity)
        .saturating_add(1)
}

/// Complexity of a list field without a page size: [`UNPAGED_LIST_SIZE`] items.
pub(crate) fn list_cost(child_complexity: usize) -> usize {
    UNPAGED_LIST_SIZE
        .saturating_mul(child_complexity)
        .saturating_add(1)
}

pub(crate) fn state<'a>(ctx: &Context<'a>) -> &'a AppState {
    ctx.data_unchecked::<AppState>()
}

/// Turns a domain page into a Relay connection.
pub(crate) fn connection<M, T>(
    page: Page<M>,
    has_previous: bool,
    cursor: impl Fn(&M) -> String,
    node: impl Fn(M) -> T,
) -> Connection<String, T>
where
    T: async_graphql::OutputType,
{
    let mut connection = Connection::new(has_previous, page.has_next);
    connection.edges.extend(
        page.items
            .into_iter()
            .map(|m| Edge::new(cursor(&m), node(m))),
    );
    connection
}

/// Gives every error its `extensions.code`. Errors from the domain carry an [`AppError`] as their
/// source; internal ones are masked. Errors raised before resolvers run (parse, validation,
/// unknown enum values, wrong types) are the client's: `BAD_USER_INPUT`. Internal messages are
/// masked.
pub(crate) fn assign_codes(mut response: Response) -> Response {
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_some() {
            continue;
        }
        let code = match error
            .source
            .as_deref()
            .and_then(|s| s.downcast_ref::<AppError>())
        {
            Some(app_error) => {
                error.message = app_error.public_message();
                for (name, value) in app_error.details() {
                    extensions.set(name, value);
                }
                app_error.code()
            }
            None if error.source.is_some() => {
                tracing::error!(message = %error.message, "unclassified resolver error");
                error.message = "internal server error".to_owned();
                "INTERNAL_SERVER_ERROR"
            }
            None => "BAD_USER_INPUT",
        };
        extensions.set("code", Value::from(code));
        metrics::counter!("stockroom_errors_total", "code" => code).increment(1);
    }
    response
}
