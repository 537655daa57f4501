//! Indexes the events the relay has not positioned yet. Positioning takes the next batch of
//! unpositioned events by sequence number; without this index the lookup walks the primary key
//! past every event already positioned, so each batch of a large backlog costs more than the
//! last (on PostgreSQL, a 100,000-event backlog drained at 32k events/s). The index holds only
//! the unpositioned rows, so it stays small and costs positioned events nothing.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const CREATE: &str = "CREATE INDEX IF NOT EXISTS idx_event_delivery_unpositioned \
     ON event_delivery (seq) WHERE position IS NULL";
const DROP: &str = "DROP INDEX IF EXISTS idx_event_delivery_unpositioned";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(CREATE).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(DROP).await?;
        Ok(())
    }
}
