//! Stock levels, reservations (batches are groups of reservation lines) and idempotency keys.

use sea_orm_migration::prelude::*;

use crate::m20261123_000001_create_catalog::{Products, Stores};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum StockLevels {
    Table,
    Id,
    ProductId,
    StoreId,
    Quantity,
    Reserved,
    ReorderPoint,
    Version,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ReservationBatches {
    Table,
    Id,
    CustomerId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Reservations {
    Table,
    Id,
    BatchId,
    ProductId,
    StoreId,
    Quantity,
    Status,
    CustomerId,
    Reason,
    ExpiresAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Key,
    RequestHash,
    Response,
    CreatedAt,
}

fn stock_levels() -> TableCreateStatement {
    Table::create()
        .table(StockLevels::Table)
        .col(
            ColumnDef::new(StockLevels::Id)
                .big_integer()
                .not_null()
                .auto_increment()
                .primary_key(),
        )
        .col(ColumnDef::new(StockLevels::ProductId).uuid().not_null())
        .col(ColumnDef::new(StockLevels::StoreId).string().not_null())
        .col(ColumnDef::new(StockLevels::Quantity).integer().not_null())
        .col(
            ColumnDef::new(StockLevels::Reserved)
                .integer()
                .not_null()
                .default(0),
        )
        .col(
            ColumnDef::new(StockLevels::ReorderPoint)
                .integer()
                .not_null()
                .default(0),
        )
        .col(
            ColumnDef::new(StockLevels::Version)
                .integer()
                .not_null()
                .default(1),
        )
        .col(
            ColumnDef::new(StockLevels::CreatedAt)
                .timestamp_with_time_zone()
                .not_null(),
        )
        .col(
            ColumnDef::new(StockLevels::UpdatedAt)
                .timestamp_with_time_zone()
                .not_null(),
        )
        .check(Expr::col(StockLevels::Reserved).gte(0))
        .check(Expr::col(StockLevels::Quantity).gte(Expr::col(StockLevels::Reserved)))
        .check(Expr::col(StockLevels::ReorderPoint).gte(0))
        .foreign_key(
            ForeignKey::create()
                .from(StockLevels::Table, StockLevels::ProductId)
                .to(Products::Table, Products::Id)
                .on_delete(ForeignKeyAction::Restrict),
        )
        .foreign_key(
            ForeignKey::create()
                .from(StockLevels::Table, StockLevels::StoreId)
                .to(Stores::Table, Stores::Id)
                .on_delete(ForeignKeyAction::Restrict),
        )
        .index(
            Index::create()
                .name("uq_stock_levels_product_store")
                .col(StockLevels::ProductId)
                .col(StockLevels::StoreId)
                .unique(),
        )
        .to_owned()
}

fn reservations() -> TableCreateStatement {
    Table::create()
        .table(Reservations::Table)
        .col(
            ColumnDef::new(Reservations::Id)
                .uuid()
                .not_null()
                .primary_key(),
        )
        .col(ColumnDef::new(Reservations::BatchId).uuid())
        .col(ColumnDef::new(Reservations::ProductId).uuid().not_null())
        .col(ColumnDef::new(Reservations::StoreId).string().not_null())
        .col(ColumnDef::new(Reservations::Quantity).integer().not_null())
        .col(
            ColumnDef::new(Reservations::Status)
                .string_len(16)
                .not_null(),
        )
        .col(ColumnDef::new(Reservations::CustomerId).string())
        .col(ColumnDef::new(Reservations::Reason).string())
        .col(
            ColumnDef::new(Reservations::ExpiresAt)
                .timestamp_with_time_zone()
                .not_null(),
        )
        .col(
            ColumnDef::new(Reservations::CreatedAt)
                .timestamp_with_time_zone()
                .not_null(),
        )
        .col(
            ColumnDef::new(Reservations::UpdatedAt)
                .timestamp_with_time_zone()
                .not_null(),
        )
        .check(Expr::col(Reservations::Quantity).gt(0))
        .check(Expr::col(Reservations::Status).is_in([
            "PENDING",
            "CONFIRMED",
            "CANCELLED",
            "EXPIRED",
        ]))
        .foreign_key(
            ForeignKey::create()
                .from(Reservations::Table, Reservations::BatchId)
                .to(ReservationBatches::Table, ReservationBatches::Id),
        )
        .foreign_key(
            ForeignKey::create()
                .from(Reservations::Table, Reservations::ProductId)
                .to(Products::Table, Products::Id),
        )
        .foreign_key(
            ForeignKey::create()
                .from(Reservations::Table, Reservations::StoreId)
                .to(Stores::Table, Stores::Id),
        )
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_table(stock_levels()).await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_stock_levels_store")
                    .table(StockLevels::Table)
                    .col(StockLevels::StoreId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ReservationBatches::Table)
                    .col(
                        ColumnDef::new(ReservationBatches::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ReservationBatches::CustomerId).string())
                    .col(
                        ColumnDef::new(ReservationBatches::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager.create_table(reservations()).await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_reservations_status_expires")
                    .table(Reservations::Table)
                    .col(Reservations::Status)
                    .col(Reservations::ExpiresAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_reservations_store")
                    .table(Reservations::Table)
                    .col(Reservations::StoreId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .col(
                        ColumnDef::new(IdempotencyKeys::Key)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(IdempotencyKeys::RequestHash)
                            .string()
                            .not_null(),
                    )
                    .col(ColumnDef::new(IdempotencyKeys::Response).json().not_null())
                    .col(
                        ColumnDef::new(IdempotencyKeys::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            IdempotencyKeys::Table.into_iden(),
            Reservations::Table.into_iden(),
            ReservationBatches::Table.into_iden(),
            StockLevels::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
