//! Query limits beyond depth and complexity (the number of aliased fields in a document), and a
//! bounded cache of parsed documents.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ServerError, ServerResult, Variables};

/// Refuses documents with more than `max` aliased fields (alias bombs).
pub struct AliasLimit {
    /// Most aliases accepted.
    pub max: usize,
}

impl ExtensionFactory for AliasLimit {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(AliasLimit { max: self.max })
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

#[async_graphql::async_trait::async_trait]
impl Extension for AliasLimit {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let aliases = document
            .operations
            .iter()
            .map(|(_, op)| count_aliases(&op.node.selection_set.node, &document, 0))
            .fold(0usize, usize::saturating_add);
        if aliases > self.max {
            return Err(ServerError::new(
                format!("too many aliases: {aliases}, at most {}", self.max),
                None,
            ));
        }
        Ok(document)
    }
}

/// Remembers parsed documents by query text (bounded), so the same operation sent again and
/// again (a dashboard, a checkout) is not parsed again. Validation and limits still run on
/// every request.
pub struct ParseCache {
    documents: std::sync::Mutex<std::collections::HashMap<String, ExecutableDocument>>,
    capacity: usize,
}

impl ParseCache {
    /// A cache of at most `capacity` documents (cleared when full).
    pub fn new(capacity: usize) -> Self {
        ParseCache {
            documents: Default::default(),
            capacity,
        }
    }
}

/// The per-schema cache, shared by every request.
pub struct SharedParseCache(pub Arc<ParseCache>);

impl ExtensionFactory for SharedParseCache {
    fn create(&self) -> Arc<dyn Extension> {
        self.0.clone()
    }
}

/// Longest query text worth caching.
const CACHEABLE_QUERY_BYTES: usize = 8 * 1024;

#[async_graphql::async_trait::async_trait]
impl Extension for ParseCache {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let cached = self
            .documents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(query)
            .cloned();
        if let Some(document) = cached {
            return Ok(document);
        }
        let document = next.run(ctx, query, variables).await?;
        if query.len() <= CACHEABLE_QUERY_BYTES {
            let mut documents = self.documents.lock().unwrap_or_else(|e| e.into_inner());
            if documents.len() >= self.capacity {
                documents.clear();
            }
            documents.insert(query.to_owned(), document.clone());
        }
        Ok(document)
    }
}
