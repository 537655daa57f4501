//! Stores: the places stock is held.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder,
};

use super::{now, required_text};
use crate::entity::store;
use crate::error::{AppError, AppResult, is_unique_violation};

/// Fields of a new store.
#[derive(Debug, Clone)]
pub struct NewStore {
    /// Chosen id, e.g. `berlin-01`: letters, digits, `-`, `_`, `.`.
    pub id: String,
    /// Display name.
    pub name: String,
}

fn valid_store_id(id: &str) -> AppResult<String> {
    let id = required_text("store id", id, 64)?;
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(AppError::bad_input(format!(
            "store id may hold only letters, digits, '-', '_' and '.', got {id:?}"
        )));
    }
    Ok(id)
}

/// Creates a store; a duplicate id is `ALREADY_EXISTS`.
pub async fn create(conn: &impl ConnectionTrait, input: NewStore) -> AppResult<store::Model> {
    let id = valid_store_id(&input.id)?;
    let row = store::ActiveModel {
        id: Set(id.clone()),
        name: Set(required_text("name", &input.name, 200)?),
        created_at: Set(now()),
    };
    row.insert(conn).await.map_err(|e| {
        if is_unique_violation(&e) {
            AppError::AlreadyExists(format!("store {id:?} already exists"))
        } else {
            e.into()
        }
    })
}

/// A store by id.
pub async fn find(conn: &impl ConnectionTrait, id: &str) -> AppResult<Option<store::Model>> {
    Ok(store::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

/// A store by id, or `NOT_FOUND`.
pub async fn require(conn: &impl ConnectionTrait, id: &str) -> AppResult<store::Model> {
    find(conn, id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("store {id:?} does not exist")))
}

/// Every store, by id.
pub async fn list(conn: &impl ConnectionTrait) -> AppResult<Vec<store::Model>> {
    Ok(store::Entity::find()
        .order_by_asc(store::Column::Id)
        .all(conn)
        .await?)
}

/// Stores by id, for the loader.
pub async fn find_many(
    conn: &impl ConnectionTrait,
    ids: &[String],
) -> AppResult<Vec<store::Model>> {
    Ok(store::Entity::find()
        .filter(store::Column::Id.is_in(ids.iter().cloned()))
        .all(conn)
        .await?)
}
