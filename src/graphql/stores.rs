//! Stores over GraphQL.

use async_graphql::{Context, ID, InputObject, Object, Result, Value};
use chrono::{DateTime, Utc};

use super::auth::{Role, RoleGuard};
use super::state;
use crate::domain::stores;
use crate::entity::store;

/// A store that holds stock.
pub struct Store(pub store::Model);

/// A store that holds stock.
#[Object]
impl Store {
    /// The store's id, chosen at creation (e.g. `berlin-01`).
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// Display name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// When the store was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// The store's fields, for plain resolution (see [`super::plain`]): keep them in step with
/// the resolvers above; a field missing here only takes the slower path.
pub(crate) fn plain_field(store: &store::Model, ctx: &Context<'_>) -> Option<Value> {
    Some(match super::plain::name(ctx) {
        "id" => Value::String(store.id.clone()),
        "name" => Value::String(store.name.clone()),
        "createdAt" => super::plain::time(&store.created_at),
        _ => return None,
    })
}

/// Fields of a new store.
#[derive(InputObject)]
pub struct CreateStoreInput {
    /// Letters, digits, `-`, `_`, `.`; at most 64.
    pub id: ID,
    /// Display name.
    pub name: String,
}

/// Store queries.
#[derive(Default)]
pub struct StoreQuery;

/// Store queries.
#[Object]
impl StoreQuery {
    /// A store by id.
    async fn store(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Store>> {
        Ok(stores::find(&state(ctx).db.conn, &id).await?.map(Store))
    }

    /// Every store, by id.
    #[graphql(complexity = "super::list_cost(child_complexity)")]
    async fn stores(&self, ctx: &Context<'_>) -> Result<Vec<Store>> {
        Ok(stores::list(&state(ctx).db.conn)
            .await?
            .into_iter()
            .map(Store)
            .collect())
    }
}

/// Store mutations (admin).
#[derive(Default)]
pub struct StoreMutation;

/// Store mutations (admin).
#[Object]
impl StoreMutation {
    /// Adds a store. `ALREADY_EXISTS` when the id is taken.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn create_store(&self, ctx: &Context<'_>, input: CreateStoreInput) -> Result<Store> {
        let new = stores::NewStore {
            id: input.id.0,
            name: input.name,
        };
        let created = state(ctx)
            .db
            .write(move |txn| Box::pin(stores::create(txn, new.clone())))
            .await?;
        Ok(Store(created))
    }
}
