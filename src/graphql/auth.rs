//! API keys and roles: `read` < `write` < `admin`.

use async_graphql::{Context, Guard};
use subtle::ConstantTimeEq;

use crate::error::AppError;

/// What a key may do; each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Every query and subscription.
    Read,
    /// Plus stock and reservation mutations.
    Write,
    /// Plus products, stores and `redriveEvents`.
    Admin,
}

impl Role {
    fn parse(text: &str) -> Option<Role> {
        match text.trim() {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The role's name as configured.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// Who is calling: the role of the key they presented.
#[derive(Debug, Clone, Copy)]
pub struct Principal {
    /// The key's role.
    pub role: Role,
}

/// The configured keys. With none configured every caller is admin (local development only;
/// `app` refuses that unless the server listens on loopback).
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Vec<(Role, Vec<u8>)>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.keys.len())
    }
}

impl ApiKeys {
    /// Parses `role:key,role:key`.
    pub fn parse(spec: &str) -> Result<ApiKeys, String> {
        let mut keys = Vec::new();
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (role, key) = pair
                .split_once(':')
                .ok_or_else(|| "each API key must look like role:key".to_owned())?;
            let role = Role::parse(role)
                .ok_or_else(|| format!("unknown role {role:?}; use read, write or admin"))?;
            if key.trim().len() < 8 {
                return Err("API keys must be at least 8 characters".to_owned());
            }
            keys.push((role, key.trim().as_bytes().to_vec()));
        }
        Ok(ApiKeys { keys })
    }

    /// Keys holding a single generated admin key.
    pub fn single_admin(key: &str) -> ApiKeys {
        ApiKeys {
            keys: vec![(Role::Admin, key.as_bytes().to_vec())],
        }
    }

    /// True when no keys are configured (open, loopback-only mode).
    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// The principal for a presented key, comparing every key in constant time.
    pub fn authenticate(&self, presented: Option<&str>) -> Result<Principal, AppError> {
        if self.is_open() {
            return Ok(Principal { role: Role::Admin });
        }
        let presented = presented.ok_or(AppError::Unauthenticated)?.as_bytes();
        let mut found: Option<Role> = None;
        for (role, key) in &self.keys {
            if bool::from(key.as_slice().ct_eq(presented)) {
                found = Some(*role);
            }
        }
        found
            .map(|role| Principal { role })
            .ok_or(AppError::Unauthenticated)
    }
}

/// Extracts a key from `Authorization: Bearer KEY` or `X-API-Key: KEY` header values.
pub fn key_from_headers(authorization: Option<&str>, api_key: Option<&str>) -> Option<String> {
    let bearer = authorization.and_then(|value| {
        let (scheme, token) = value.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
    });
    bearer.or_else(|| api_key.map(|k| k.trim().to_owned()))
}

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
