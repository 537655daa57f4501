//! The events outbox (the audit log) and the relay lease.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Events {
    Table,
    Seq,
    Id,
    EventType,
    AggregateType,
    AggregateId,
    StoreId,
    ProductId,
    Payload,
    OccurredAt,
    Position,
    PublishedAt,
    Attempts,
    LastError,
    DeadAt,
}

#[derive(DeriveIden)]
enum RelayLeases {
    Table,
    Name,
    Holder,
    ExpiresAt,
}

fn events() -> TableCreateStatement {
    Table::create()
        .table(Events::Table)
        .col(
            ColumnDef::new(Events::Seq)
                .big_integer()
                .not_null()
                .auto_increment()
                .primary_key(),
        )
        .col(ColumnDef::new(Events::Id).uuid().not_null().unique_key())
        .col(ColumnDef::new(Events::EventType).string().not_null())
        .col(ColumnDef::new(Events::AggregateType).string().not_null())
        .col(ColumnDef::new(Events::AggregateId).string().not_null())
        .col(ColumnDef::new(Events::StoreId).string())
        .col(ColumnDef::new(Events::ProductId).uuid())
        .col(ColumnDef::new(Events::Payload).json().not_null())
        .col(
            ColumnDef::new(Events::OccurredAt)
                .timestamp_with_time_zone()
                .not_null(),
        )
        .col(ColumnDef::new(Events::Position).big_integer().unique_key())
        .col(ColumnDef::new(Events::PublishedAt).timestamp_with_time_zone())
        .col(
            ColumnDef::new(Events::Attempts)
                .integer()
                .not_null()
                .default(0),
        )
        .col(ColumnDef::new(Events::LastError).text())
        .col(ColumnDef::new(Events::DeadAt).timestamp_with_time_zone())
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_table(events()).await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_events_unpublished")
                    .table(Events::Table)
                    .col(Events::PublishedAt)
                    .col(Events::Position)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RelayLeases::Table)
                    .col(
                        ColumnDef::new(RelayLeases::Name)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(RelayLeases::Holder).string().not_null())
                    .col(
                        ColumnDef::new(RelayLeases::ExpiresAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RelayLeases::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Events::Table).to_owned())
            .await
    }
}
