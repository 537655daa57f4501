//! The role guard on GraphQL fields: the caller's [`Principal`] (attached per request or per
//! WebSocket connection) must hold at least the field's role.

use async_graphql::{Context, Guard};

pub use crate::auth::{Principal, Role};
use crate::error::AppError;

/// Refuses a field unless the caller's role is at least `0`.
pub struct RoleGuard(pub Role);

impl Guard for RoleGuard {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        match ctx.data_opt::<Principal>() {
            None => Err(AppError::Unauthenticated.into()),
            Some(p) if p.role >= self.0 => Ok(()),
            Some(_) => Err(AppError::Forbidden(self.0.name()).into()),
        }
    }
}
