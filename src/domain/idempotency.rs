//! Idempotency keys: a repeated key with the same input replays the first result.

use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait};
use serde::{Serialize, de::DeserializeOwned};

use crate::entity::idempotency_key;
use crate::error::{AppError, AppResult};

/// A key scoped to one mutation plus the fingerprint of the input it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    key: String,
    fingerprint: String,
}

impl IdempotencyClaim {
    /// A claim for `operation` when the client sent a key; `None` without one.
    pub fn new(
        operation: &str,
        key: Option<&str>,
        input: &impl Serialize,
    ) -> AppResult<Option<Self>> {
        let Some(key) = key else { return Ok(None) };
        let key = crate::domain::required_text("idempotencyKey", key, 200)?;
        let fingerprint = serde_json::to_string(input)
            .map_err(|e| AppError::Internal(format!("fingerprint: {e}")))?;
        Ok(Some(IdempotencyClaim {
            key: format!("{operation}:{key}"),
            fingerprint,
        }))
    }

    /// The stored result of an earlier call with this key, if any. The same key with another
    /// input is refused.
    pub async fn replay<T: DeserializeOwned>(
        &self,
        conn: &impl ConnectionTrait,
    ) -> AppResult<Option<T>> {
        let Some(stored) = idempotency_key::Entity::find_by_id(self.key.clone())
            .one(conn)
            .await?
        else {
            return Ok(None);
        };
        if stored.request_hash != self.fingerprint {
            return Err(AppError::bad_input(
                "idempotencyKey was already used with a different input",
            ));
        }
        serde_json::from_value(stored.response)
            .map(Some)
            .map_err(|e| AppError::Internal(format!("stored idempotent result: {e}")))
    }

    /// Stores `result` as the answer to this key, in the caller's transaction.
    pub async fn remember<T: Serialize>(
        &self,
        conn: &impl ConnectionTrait,
        result: &T,
    ) -> AppResult<()> {
        let response = serde_json::to_value(result)
            .map_err(|e| AppError::Internal(format!("idempotent result: {e}")))?;
        idempotency_key::Entity::insert(idempotency_key::ActiveModel {
            key: Set(self.key.clone()),
            request_hash: Set(self.fingerprint.clone()),
            response: Set(response),
            created_at: Set(crate::domain::now()),
        })
        .exec_without_returning(conn)
        .await?;
        Ok(())
    }
}

/// Runs `replay` when a claim exists.
pub async fn replay<T: DeserializeOwned>(
    conn: &impl ConnectionTrait,
    claim: &Option<IdempotencyClaim>,
) -> AppResult<Option<T>> {
    match claim {
        Some(claim) => claim.replay(conn).await,
        None => Ok(None),
    }
}

/// Runs `remember` when a claim exists.
pub async fn remember<T: Serialize>(
    conn: &impl ConnectionTrait,
    claim: &Option<IdempotencyClaim>,
    result: &T,
) -> AppResult<()> {
    match claim {
        Some(claim) => claim.remember(conn, result).await,
        None => Ok(()),
    }
}
