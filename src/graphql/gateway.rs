//! The executor every transport goes through: it parses (with a bounded cache of documents),
//! enforces the alias limit, runs the schema and gives every error its `extensions.code`.
//! Doing this around the schema rather than as async-graphql extensions keeps field resolution
//! on the fast path (any extension costs a registry lookup and a boxed future per field).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Data, Executor, Request, Response, ServerError};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::{AppSchema, assign_codes};

/// Longest query text worth caching.
const CACHEABLE_QUERY_BYTES: usize = 8 * 1024;
/// Documents kept before the cache starts over.
const CACHE_CAPACITY: usize = 512;

/// The schema plus parsing, limits and error codes.
#[derive(Clone)]
pub struct Gateway {
    schema: AppSchema,
    parsed: Arc<Mutex<HashMap<String, ExecutableDocument>>>,
    max_aliases: usize,
}

impl Gateway {
    /// Wraps `schema`; documents with more than `max_aliases` aliased fields are refused.
    pub fn new(schema: AppSchema, max_aliases: usize) -> Self {
        Gateway {
            schema,
            parsed: Default::default(),
            max_aliases,
        }
    }

    /// The SDL of the wrapped schema.
    pub fn sdl(&self) -> String {
        self.schema.sdl()
    }

    /// Attaches the parsed document (from the cache when seen before) after checking aliases.
    fn prepare(&self, mut request: Request) -> Result<Request, ServerError> {
        let document = self.parse(&request.query)?;
        let aliases = document
            .operations
            .iter()
            .map(|(_, op)| count_aliases(&op.node.selection_set.node, &document, 0))
            .fold(0usize, usize::saturating_add);
        if aliases > self.max_aliases {
            return Err(ServerError::new(
                format!("too many aliases: {aliases}, at most {}", self.max_aliases),
                None,
            ));
        }
        request.set_parsed_query(document);
        Ok(request)
    }

    fn parse(&self, query: &str) -> Result<ExecutableDocument, ServerError> {
        if let Some(document) = self
            .parsed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(query)
        {
            return Ok(document.clone());
        }
        let document = async_graphql::parser::parse_query(query).map_err(ServerError::from)?;
        if query.len() <= CACHEABLE_QUERY_BYTES {
            let mut parsed = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
            if parsed.len() >= CACHE_CAPACITY {
                parsed.clear();
            }
            parsed.insert(query.to_owned(), document.clone());
        }
        Ok(document)
    }
}

impl Executor for Gateway {
    async fn execute(&self, request: Request) -> Response {
        let response = match self.prepare(request) {
            Ok(request) => self.schema.execute(request).await,
            Err(error) => Response::from_errors(vec![error]),
        };
        assign_codes(response)
    }

    fn execute_stream(
        &self,
        request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        match self.prepare(request) {
            Ok(request) => Executor::execute_stream(&self.schema, request, session_data)
                .map(assign_codes)
                .boxed(),
            Err(error) => futures_util::stream::once(async move {
                assign_codes(Response::from_errors(vec![error]))
            })
            .boxed(),
        }
    }
}

fn count_aliases(set: &SelectionSet, document: &ExecutableDocument, depth: usize) -> usize {
    if depth > 64 {
        return usize::MAX / 2;
    }
    set.items
        .iter()
        .map(|selection| match &selection.node {
            Selection::Field(field) => {
                usize::from(field.node.alias.is_some())
                    + count_aliases(&field.node.selection_set.node, document, depth + 1)
            }
            Selection::InlineFragment(fragment) => {
                count_aliases(&fragment.node.selection_set.node, document, depth + 1)
            }
            Selection::FragmentSpread(spread) => document
                .fragments
                .get(&spread.node.fragment_name.node)
                .map_or(0, |f| {
                    count_aliases(&f.node.selection_set.node, document, depth + 1)
                }),
        })
        .fold(0usize, usize::saturating_add)
}
