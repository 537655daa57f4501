//! The stock commands: initialize, set, adjust and transfer, each with its events (and its
//! idempotency key where it takes one), in the caller's transaction.

use super::*;

/// `stock.updated` plus any threshold events for a change.
pub(super) fn updated_events(change: &Change, reason: &Option<String>) -> Vec<NewEvent> {
    let Change { before, after } = change;
    let mut events = vec![types::stock_event(
        types::STOCK_UPDATED,
        after,
        json!({
            "product_id": after.product_id,
            "store_id": after.store_id,
            "previous_quantity": before.quantity,
            "new_quantity": after.quantity,
            "change": after.quantity - before.quantity,
            "reserved": after.reserved,
            "available": after.available(),
            "version": after.version,
            "reason": reason,
        }),
    )];
    events.extend(types::threshold_events(before, after));
    events
}

/// Creates a stock level for an existing product and store.
pub async fn initialize(
    conn: &impl ConnectionTrait,
    input: InitializeStock,
) -> AppResult<stock_level::Model> {
    let quantity = non_negative("quantity", input.quantity)?;
    let reorder_point = non_negative("reorderPoint", input.reorder_point.unwrap_or(0))?;
    products::require(conn, input.key.product_id).await?;
    stores::require(conn, &input.key.store_id).await?;
    let at = now();
    let row = stock_level::ActiveModel {
        product_id: Set(input.key.product_id),
        store_id: Set(input.key.store_id.clone()),
        quantity: Set(quantity),
        reserved: Set(0),
        reorder_point: Set(reorder_point),
        version: Set(1),
        created_at: Set(at),
        updated_at: Set(at),
        ..Default::default()
    };
    let level = row.insert(conn).await.map_err(|e| {
        if is_unique_violation(&e) {
            AppError::AlreadyExists(format!(
                "product {} already has a stock level in store {:?}",
                input.key.product_id, input.key.store_id
            ))
        } else {
            e.into()
        }
    })?;
    let event = types::stock_event(
        types::STOCK_CREATED,
        &level,
        json!({
            "product_id": level.product_id,
            "store_id": level.store_id,
            "quantity": level.quantity,
            "reserved": level.reserved,
            "available": level.available(),
            "reorder_point": level.reorder_point,
            "version": level.version,
            "reason": "initialized",
        }),
    );
    events::append(conn, vec![event]).await?;
    Ok(level)
}

/// Sets the absolute quantity; it may not drop below what is reserved.
pub async fn set(conn: &impl ConnectionTrait, input: SetStock) -> AppResult<stock_level::Model> {
    let target = non_negative("quantity", input.quantity)?;
    let change = change_level(conn, &input.key, input.expected_version, |level| {
        if target < level.reserved {
            return Err(AppError::InsufficientStock {
                requested: level.quantity - target,
                available: level.available(),
            });
        }
        Ok(Delta {
            quantity: target - level.quantity,
            reserved: 0,
        })
    })
    .await?;
    events::append(conn, updated_events(&change, &input.reason)).await?;
    Ok(change.after)
}

/// Adds a signed delta; a negative one may not take more than is available.
pub async fn adjust(
    conn: &impl ConnectionTrait,
    input: AdjustStock,
) -> AppResult<stock_level::Model> {
    if input.delta == 0 {
        return Err(AppError::bad_input("delta must not be zero"));
    }
    let claim = IdempotencyClaim::new("adjustStock", input.idempotency_key.as_deref(), &input)?;
    if let Some(first) = idempotency::replay(conn, &claim).await? {
        return Ok(first);
    }
    let delta = input.delta;
    let change = if delta < 0 {
        let units = delta.checked_neg().ok_or_else(|| {
            AppError::bad_input(format!("delta must be greater than {}", i32::MIN))
        })?;
        change_level(
            conn,
            &input.key,
            input.expected_version,
            take_available(units),
        )
        .await?
    } else {
        change_level(conn, &input.key, input.expected_version, |_| {
            Ok(Delta {
                quantity: delta,
                reserved: 0,
            })
        })
        .await?
    };
    events::append(conn, updated_events(&change, &input.reason)).await?;
    idempotency::remember(conn, &claim, &change.after).await?;
    Ok(change.after)
}

/// Moves units between two stores of one product, in the caller's transaction.
pub async fn transfer(conn: &impl ConnectionTrait, input: TransferStock) -> AppResult<Transfer> {
    let quantity = positive("quantity", input.quantity)?;
    if input.from_store_id == input.to_store_id {
        return Err(AppError::bad_input("fromStoreId and toStoreId must differ"));
    }
    let claim = IdempotencyClaim::new("transferStock", input.idempotency_key.as_deref(), &input)?;
    if let Some(first) = idempotency::replay(conn, &claim).await? {
        return Ok(first);
    }
    let from_key = LevelKey {
        product_id: input.product_id,
        store_id: input.from_store_id.clone(),
    };
    let to_key = LevelKey {
        product_id: input.product_id,
        store_id: input.to_store_id.clone(),
    };
    require(conn, &to_key).await?;
    let source = change_level(conn, &from_key, None, take_available(quantity)).await?;
    let destination = change_level(conn, &to_key, None, |_| {
        Ok(Delta {
            quantity,
            reserved: 0,
        })
    })
    .await?;
    let mut events = vec![types::stock_event(
        types::STOCK_TRANSFERRED,
        &source.after,
        json!({
            "product_id": input.product_id,
            "from_store": input.from_store_id,
            "to_store": input.to_store_id,
            "quantity": quantity,
            "reason": input.reason,
        }),
    )];
    events[0].payload["levels"] = json!([
        types::level_state(&source.after),
        types::level_state(&destination.after)
    ]);
    events.extend(types::threshold_events(&source.before, &source.after));
    events::append(conn, events).await?;
    let transfer = Transfer {
        from: source.after,
        to: destination.after,
        quantity,
    };
    idempotency::remember(conn, &claim, &transfer).await?;
    Ok(transfer)
}
