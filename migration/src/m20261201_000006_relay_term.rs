//! Gives the relay lease a term: a number that grows by one every time another process (or a
//! new session) takes the relay over. Positioning and publishing are fenced with it, so a relay
//! whose term has ended (it was frozen, partitioned, or slow) can change nothing.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RelayLeases {
    Table,
    Term,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RelayLeases::Table)
                    .add_column(
                        ColumnDef::new(RelayLeases::Term)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RelayLeases::Table)
                    .drop_column(RelayLeases::Term)
                    .to_owned(),
            )
            .await
    }
}
