//! The executor every transport goes through: it parses (with a cache of documents that
//! validated, bounded in bytes), sizes the document before anything expands it (fields and
//! aliases, fragment cycles), runs the schema and gives every error its `extensions.code`.
//! Doing this around the schema rather than as async-graphql extensions keeps field resolution
//! on the fast path (any extension costs a registry lookup and a boxed future per field).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{Data, Executor, Request, Response, ServerError};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::cost::CostModel;
use super::{AppSchema, Limits, assign_codes, document};

/// Longest query text worth caching.
const CACHEABLE_QUERY_BYTES: usize = 8 * 1024;
/// Most query text the cache holds, in bytes, before it starts over.
const CACHE_BYTES: usize = 2 * 1024 * 1024;

/// Documents that parsed and validated, by their text; bounded in bytes.
#[derive(Default)]
struct DocumentCache {
    documents: HashMap<String, ExecutableDocument>,
    bytes: usize,
}

/// The schema plus parsing, limits and error codes.
#[derive(Clone)]
pub struct Gateway {
    schema: AppSchema,
    parsed: Arc<Mutex<DocumentCache>>,
    limits: Limits,
    /// The schema's field types, for what operations cost.
    pub(super) cost: Arc<CostModel>,
}

impl Gateway {
    /// The limits the schema was built with.
    pub(super) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The schema itself.
    pub(super) fn schema(&self) -> &AppSchema {
        &self.schema
    }

    /// Wraps `schema` (built with `limits`); documents with more aliased fields than allowed,
    /// or more fields once their fragments are expanded, are refused before validation.
    pub fn new(schema: AppSchema, limits: &Limits) -> Self {
        let cost = Arc::new(CostModel::from_sdl(&schema.sdl()));
        Gateway {
            schema,
            parsed: Default::default(),
            limits: limits.clone(),
            cost,
        }
    }

    /// Names the limit in async-graphql's own refusals.
    pub(super) fn explain_limits(&self, mut response: Response) -> Response {
        for error in &mut response.errors {
            if error.message == "Query is too complex." {
                error.message = format!(
                    "query too complex: it may cost more than {} (each list field counts its \
                     selection once per item it may return; --max-complexity)",
                    self.limits.max_complexity
                );
            } else if error.message == "Query is nested too deep." {
                error.message = format!(
                    "query nested too deep: more than {} levels (--max-depth)",
                    self.limits.max_depth
                );
            }
        }
        response
    }

    /// The type of the operation `request` runs, when its document parses and names one.
    pub fn operation_type(&self, request: &Request) -> Option<OperationType> {
        let (document, _) = self.parse(&request.query).ok()?;
        let operation = document::operation(&document, request.operation_name.as_deref())?;
        Some(operation.node.ty)
    }

    /// The SDL of the wrapped schema.
    pub fn sdl(&self) -> String {
        self.schema.sdl()
    }

    /// Attaches the parsed document: from the cache when seen before (it was sized and
    /// validated then), else freshly parsed and sized. Also returns a copy of a freshly parsed
    /// document, to remember if it validates.
    pub(super) fn prepare(
        &self,
        request: Request,
    ) -> Result<(Request, Option<ExecutableDocument>), ServerError> {
        self.prepare_with(request, |_, _| {})
    }

    /// [`Gateway::prepare`], letting `inspect` read the document (sized) and the request first.
    pub(super) fn prepare_with(
        &self,
        mut request: Request,
        inspect: impl FnOnce(&ExecutableDocument, &Request),
    ) -> Result<(Request, Option<ExecutableDocument>), ServerError> {
        let (document, cached) = self.parse(&request.query)?;
        if !cached {
            self.check_size(&document)?;
        }
        inspect(&document, &request);
        let fresh =
            (!cached && request.query.len() <= CACHEABLE_QUERY_BYTES).then(|| document.clone());
        request.set_parsed_query(document);
        Ok((request, fresh))
    }

    /// Refuses a document too large once its fragments are expanded: the expanded field and
    /// alias counts are computed once per fragment, so a document built to explode is refused
    /// in time linear in its length.
    fn check_size(&self, document: &ExecutableDocument) -> Result<(), ServerError> {
        let expanded = document::expand(document).map_err(|error| match error {
            document::Unmeasurable::FragmentCycle(name) => ServerError::new(
                format!("fragment cycle: fragment {name:?} spreads itself"),
                None,
            ),
        })?;
        if expanded.fields > self.limits.max_fields as u64 {
            return Err(ServerError::new(
                format!(
                    "too many fields: {} once fragments are expanded, at most {} (--max-fields)",
                    expanded.fields, self.limits.max_fields
                ),
                None,
            ));
        }
        if expanded.aliases > self.limits.max_aliases as u64 {
            return Err(ServerError::new(
                format!(
                    "too many aliases: {}, at most {} (--max-aliases)",
                    expanded.aliases, self.limits.max_aliases
                ),
                None,
            ));
        }
        Ok(())
    }

    /// The parsed document, and whether it came from the cache.
    pub(super) fn parse(&self, query: &str) -> Result<(ExecutableDocument, bool), ServerError> {
        if let Some(document) = self
            .parsed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .documents
            .get(query)
        {
            return Ok((document.clone(), true));
        }
        let document = async_graphql::parser::parse_query(query).map_err(ServerError::from)?;
        Ok((document, false))
    }

    /// Keeps a document that validated (the response has no error outside a resolver), so
    /// neither invalid documents nor one-off giants can fill the cache.
    pub(super) fn remember(
        &self,
        query: String,
        document: ExecutableDocument,
        response: &Response,
    ) {
        if query.len() > CACHEABLE_QUERY_BYTES || !validated(response) {
            return;
        }
        let mut cache = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        if cache.bytes + query.len() > CACHE_BYTES {
            cache.documents.clear();
            cache.bytes = 0;
        }
        let bytes = query.len();
        if cache.documents.insert(query, document).is_none() {
            cache.bytes += bytes;
        }
    }
}

/// True when the operation passed validation: every error (if any) came from a resolver,
/// which gives it a path.
pub fn validated(response: &Response) -> bool {
    response.errors.iter().all(|error| !error.path.is_empty())
}

impl Executor for Gateway {
    async fn execute(&self, request: Request) -> Response {
        let response = match self.prepare(request) {
            Ok((request, fresh)) => {
                let query = fresh.is_some().then(|| request.query.clone());
                let response = self.schema.execute(request).await;
                if let (Some(query), Some(document)) = (query, fresh) {
                    self.remember(query, document, &response);
                }
                response
            }
            Err(error) => Response::from_errors(vec![error]),
        };
        assign_codes(self.explain_limits(response))
    }

    fn execute_stream(
        &self,
        request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        match self.prepare(request) {
            Ok((request, _)) => {
                let gateway = self.clone();
                Executor::execute_stream(&self.schema, request, session_data)
                    .map(move |response| assign_codes(gateway.explain_limits(response)))
                    .boxed()
            }
            Err(error) => futures_util::stream::once(async move {
                assign_codes(Response::from_errors(vec![error]))
            })
            .boxed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graphql::{Limits, build_schema};

    fn gateway() -> Gateway {
        let limits = Limits::default();
        Gateway::new(build_schema(None, &limits), &limits)
    }

    fn cached(gateway: &Gateway) -> (usize, usize) {
        let cache = gateway.parsed.lock().unwrap_or_else(|e| e.into_inner());
        (cache.documents.len(), cache.bytes)
    }

    #[tokio::test]
    async fn caches_only_documents_that_validated() {
        let gateway = gateway();
        for i in 0..20 {
            let invalid = format!("{{ noSuchField{i} }}");
            let response = gateway.execute(Request::new(invalid)).await;
            assert!(!response.errors.is_empty());
        }
        let unparsable = gateway.execute(Request::new("{ health ")).await;
        assert!(!unparsable.errors.is_empty());
        assert_eq!(cached(&gateway), (0, 0), "nothing invalid is kept");
        let valid = "{ __typename }";
        assert!(gateway.execute(Request::new(valid)).await.errors.is_empty());
        assert!(gateway.execute(Request::new(valid)).await.errors.is_empty());
        assert_eq!(cached(&gateway), (1, valid.len()));
    }

    #[tokio::test]
    async fn the_cache_is_bounded_in_bytes() {
        let gateway = gateway();
        let padding = " ".repeat(CACHEABLE_QUERY_BYTES - 40);
        for i in 0..(CACHE_BYTES / CACHEABLE_QUERY_BYTES) * 2 {
            let query = format!("query Q{i} {{ __typename }}{padding}");
            assert!(gateway.execute(Request::new(query)).await.errors.is_empty());
            assert!(cached(&gateway).1 <= CACHE_BYTES);
        }
    }
}
