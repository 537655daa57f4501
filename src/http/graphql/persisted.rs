//! Automatic persisted queries, as Apollo's protocol defines them: a client sends
//! `extensions.persistedQuery = {version: 1, sha256Hash}` without the query; a server that
//! knows the hash runs the query it names, otherwise it answers `PERSISTED_QUERY_NOT_FOUND` and
//! the client sends the query with the hash once, which the server checks and remembers. The
//! store is bounded in bytes (oldest forgotten first), so clients cannot fill the memory.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_graphql::{ErrorExtensions, Request, ServerError, Value};
use sha2::{Digest, Sha256};

/// Most query text remembered, in bytes.
const STORE_BYTES: usize = 4 * 1024 * 1024;
/// Longest query worth remembering.
const LONGEST_QUERY: usize = 64 * 1024;

/// Queries by their SHA-256, oldest first out.
#[derive(Clone, Default)]
pub struct PersistedQueries {
    store: Arc<Mutex<Store>>,
}

#[derive(Default)]
struct Store {
    queries: HashMap<String, Arc<str>>,
    order: VecDeque<String>,
    bytes: usize,
}

/// Why a persisted query could not be used.
pub(super) enum Refusal {
    /// The hash is unknown: the client should send the query with it (answered 200, as
    /// Apollo's clients expect).
    NotFound(ServerError),
    /// A malformed or mismatched `persistedQuery` (answered 400).
    Invalid(ServerError),
}

impl PersistedQueries {
    /// Fills in `request`'s query from its `persistedQuery` extension, or remembers the query
    /// it carries under its hash. A request without the extension is left as it is.
    pub(super) fn apply(&self, request: &mut Request) -> Result<(), Refusal> {
        let Some(extension) = request.extensions.get("persistedQuery") else {
            return Ok(());
        };
        let Value::Object(fields) = extension else {
            return Err(invalid("extensions.persistedQuery must be an object"));
        };
        if fields.get("version") != Some(&Value::from(1)) {
            return Err(invalid("persistedQuery: only version 1 is supported"));
        }
        let Some(Value::String(hash)) = fields.get("sha256Hash") else {
            return Err(invalid("persistedQuery needs a sha256Hash"));
        };
        let hash = hash.to_ascii_lowercase();
        if request.query.is_empty() {
            let known = self
                .store
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .queries
                .get(&hash)
                .cloned();
            return match known {
                Some(query) => {
                    metrics::counter!("stockroom_persisted_queries_total", "outcome" => "hit")
                        .increment(1);
                    request.query = query.to_string();
                    Ok(())
                }
                None => {
                    metrics::counter!("stockroom_persisted_queries_total", "outcome" => "miss")
                        .increment(1);
                    Err(Refusal::NotFound(not_found()))
                }
            };
        }
        let actual = format!("{:x}", Sha256::digest(request.query.as_bytes()));
        if actual != hash {
            return Err(invalid("provided sha does not match query"));
        }
        self.remember(hash, &request.query);
        Ok(())
    }

    fn remember(&self, hash: String, query: &str) {
        if query.len() > LONGEST_QUERY {
            return;
        }
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if store.queries.contains_key(&hash) {
            return;
        }
        while store.bytes + query.len() > STORE_BYTES {
            let Some(oldest) = store.order.pop_front() else {
                break;
            };
            if let Some(gone) = store.queries.remove(&oldest) {
                store.bytes -= gone.len();
            }
        }
        store.bytes += query.len();
        store.order.push_back(hash.clone());
        store.queries.insert(hash, Arc::from(query));
    }
}

/// The error Apollo's clients look for: message `PersistedQueryNotFound`, code
/// `PERSISTED_QUERY_NOT_FOUND`.
fn not_found() -> ServerError {
    let mut error = ServerError::new("PersistedQueryNotFound", None);
    error.extensions = async_graphql::Error::new("")
        .extend_with(|_, e| e.set("code", "PERSISTED_QUERY_NOT_FOUND"))
        .extensions;
    error
}

fn invalid(message: &str) -> Refusal {
    let mut error = ServerError::new(message, None);
    error.extensions = async_graphql::Error::new("")
        .extend_with(|_, e| e.set("code", "BAD_USER_INPUT"))
        .extensions;
    Refusal::Invalid(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_hash(query: &str, hash: &str) -> Request {
        let mut request = Request::new(query);
        request.extensions.insert(
            "persistedQuery".into(),
            Value::from_json(serde_json::json!({ "version": 1, "sha256Hash": hash }))
                .expect("value"),
        );
        request
    }

    #[test]
    fn unknown_then_registered_then_served_by_hash() {
        let store = PersistedQueries::default();
        let query = "{ health { database } }";
        let hash = format!("{:x}", Sha256::digest(query.as_bytes()));
        assert!(matches!(
            store.apply(&mut with_hash("", &hash)),
            Err(Refusal::NotFound(_))
        ));
        assert!(matches!(
            store.apply(&mut with_hash("{ stores { id } }", &hash)),
            Err(Refusal::Invalid(_))
        ));
        assert!(store.apply(&mut with_hash(query, &hash)).is_ok());
        let mut by_hash = with_hash("", &hash);
        assert!(store.apply(&mut by_hash).is_ok());
        assert_eq!(by_hash.query, query);
    }

    #[test]
    fn the_store_forgets_the_oldest_past_its_size() {
        let store = PersistedQueries::default();
        let padding = " ".repeat(LONGEST_QUERY - 100);
        let mut hashes = Vec::new();
        for i in 0..(STORE_BYTES / LONGEST_QUERY) * 2 {
            let query = format!("query Q{i} {{ __typename }}{padding}");
            let hash = format!("{:x}", Sha256::digest(query.as_bytes()));
            assert!(store.apply(&mut with_hash(&query, &hash)).is_ok());
            hashes.push(hash);
        }
        assert!(store.store.lock().expect("lock").bytes <= STORE_BYTES);
        assert!(matches!(
            store.apply(&mut with_hash("", &hashes[0])),
            Err(Refusal::NotFound(_))
        ));
        assert!(
            store
                .apply(&mut with_hash("", hashes.last().expect("last")))
                .is_ok()
        );
    }
}
