//! Query limits beyond depth and complexity: the number of aliased fields in a document.

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
