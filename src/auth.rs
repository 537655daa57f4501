//! API keys and roles: `read` < `write` < `admin`. Used by `http` (headers, `/metrics`) and by
//! `graphql` (field guards, WebSocket `connection_init`).

use subtle::ConstantTimeEq;

use crate::error::AppError;

/// What a key may do; each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

/// Which configured key a caller presented (its place in the list; 0 in open mode, where
/// every caller shares one identity). Fair-use caps and buckets are kept per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub u32);

/// Who is calling: the key they presented and its role.
#[derive(Debug, Clone, Copy)]
pub struct Principal {
    /// The key's role.
    pub role: Role,
    /// The key.
    pub key: KeyId,
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
    /// Parses `role:key,role:key` (the `--api-keys` flag).
    pub fn parse(spec: &str) -> Result<ApiKeys, String> {
        let mut keys = ApiKeys::default();
        keys.add_line(spec, "--api-keys")?;
        Ok(keys)
    }

    /// Adds the keys of a key file: `role:key` pairs, one per line or comma-separated; blank
    /// lines and comments (a line starting with `#`, or ` #` to the end of a line) are skipped.
    /// Errors name the file and line.
    pub fn add_file(&mut self, text: &str, file: &str) -> Result<(), String> {
        for (number, line) in text.lines().enumerate() {
            let line = match line.find('#') {
                Some(0) => "",
                Some(at) if line[..at].ends_with(char::is_whitespace) => &line[..at],
                _ => line,
            };
            self.add_line(line, &format!("{file} line {}", number + 1))?;
        }
        Ok(())
    }

    /// Adds comma-separated `role:key` pairs from `source` (named in errors). A key may not hold
    /// whitespace, be shorter than 8 characters, or be listed again with another role.
    fn add_line(&mut self, line: &str, source: &str) -> Result<(), String> {
        for pair in line.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (role, key) = pair
                .split_once(':')
                .ok_or_else(|| format!("{source}: each API key must look like role:key"))?;
            let role = Role::parse(role).ok_or_else(|| {
                format!("{source}: unknown role {role:?}; use read, write or admin")
            })?;
            let key = key.trim();
            if key.chars().any(char::is_whitespace) {
                return Err(format!("{source}: an API key may not contain whitespace"));
            }
            if key.len() < 8 {
                return Err(format!("{source}: API keys must be at least 8 characters"));
            }
            match self.keys.iter().find(|(_, known)| known == key.as_bytes()) {
                Some((known, _)) if *known != role => {
                    return Err(format!(
                        "{source}: a key is listed again with another role ({} and {})",
                        known.name(),
                        role.name()
                    ));
                }
                Some(_) => {}
                None => self.keys.push((role, key.as_bytes().to_vec())),
            }
        }
        Ok(())
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
            return Ok(Principal {
                role: Role::Admin,
                key: KeyId(0),
            });
        }
        let presented = presented.ok_or(AppError::Unauthenticated)?.as_bytes();
        let mut found: Option<Principal> = None;
        for (index, (role, key)) in self.keys.iter().enumerate() {
            if bool::from(key.as_slice().ct_eq(presented)) {
                found = Some(Principal {
                    role: *role,
                    key: KeyId(index as u32),
                });
            }
        }
        found.ok_or(AppError::Unauthenticated)
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
