//! Replaces the `(published_at, position)` index on events with a partial index on `position`
//! over pending events only: the relay's queries read the same rows, and marking an event
//! published removes its entry instead of moving it, so the index stays as small as the backlog.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const CREATE_PENDING: &str = "CREATE INDEX idx_events_pending ON events (position) \
     WHERE published_at IS NULL AND dead_at IS NULL";
const CREATE_UNPUBLISHED: &str =
    "CREATE INDEX idx_events_unpublished ON events (published_at, position)";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX idx_events_unpublished")
            .await?;
        db.execute_unprepared(CREATE_PENDING).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX idx_events_pending")
            .await?;
        db.execute_unprepared(CREATE_UNPUBLISHED).await?;
        Ok(())
    }
}
