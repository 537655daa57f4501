//! Sizes a parsed document before anything walks it field by field. A fragment spread twice in
//! a fragment that is spread twice, and so on, is a 1 KB document that expands to millions of
//! fields; every later walk (validation, complexity, execution) follows the expansion. Here each
//! fragment is measured once and its size reused at every spread, so the cost is linear in the
//! document's text, and a fragment cycle is named as such.

use std::collections::HashMap;

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, Selection, SelectionSet,
};
use async_graphql::{Name, Positioned};

/// The operation a request runs: the one named, or the only one; `None` when there is no such
/// operation (validation says why).
pub fn operation<'d>(
    document: &'d ExecutableDocument,
    name: Option<&str>,
) -> Option<&'d Positioned<OperationDefinition>> {
    match (&document.operations, name) {
        (DocumentOperations::Single(operation), None) => Some(operation),
        (DocumentOperations::Single(_), Some(_)) => None,
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name),
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next()
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// What a document amounts to once every fragment spread is expanded (saturating counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expanded {
    /// Fields, counting each field of a fragment once per place it is spread.
    pub fields: u64,
    /// Aliased fields, counted the same way.
    pub aliases: u64,
}

impl Expanded {
    fn add(self, other: Expanded) -> Expanded {
        Expanded {
            fields: self.fields.saturating_add(other.fields),
            aliases: self.aliases.saturating_add(other.aliases),
        }
    }
}

/// Why a document could not be measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmeasurable {
    /// A fragment spreads itself, directly or through others.
    FragmentCycle(String),
}

/// Measures every operation of `document`, in time linear in its size.
pub fn expand(document: &ExecutableDocument) -> Result<Expanded, Unmeasurable> {
    let mut measure = Measure {
        document,
        sizes: HashMap::new(),
        visiting: Vec::new(),
    };
    let mut total = Expanded::default();
    for (_, operation) in document.operations.iter() {
        total = total.add(measure.selection_set(&operation.node.selection_set.node)?);
    }
    Ok(total)
}

struct Measure<'d> {
    document: &'d ExecutableDocument,
    /// Fragments measured so far.
    sizes: HashMap<&'d Name, Expanded>,
    /// Fragments being measured (the path of spreads that led here).
    visiting: Vec<&'d Name>,
}

impl<'d> Measure<'d> {
    fn selection_set(&mut self, set: &'d SelectionSet) -> Result<Expanded, Unmeasurable> {
        let mut total = Expanded::default();
        for selection in &set.items {
            let size = match &selection.node {
                Selection::Field(field) => {
                    let own = Expanded {
                        fields: 1,
                        aliases: u64::from(field.node.alias.is_some()),
                    };
                    own.add(self.selection_set(&field.node.selection_set.node)?)
                }
                Selection::InlineFragment(fragment) => {
                    self.selection_set(&fragment.node.selection_set.node)?
                }
                Selection::FragmentSpread(spread) => {
                    self.fragment(&spread.node.fragment_name.node)?
                }
            };
            total = total.add(size);
        }
        Ok(total)
    }

    /// A named fragment's size: measured on first use, reused after. An unknown fragment counts
    /// nothing here (validation reports it).
    fn fragment(&mut self, name: &'d Name) -> Result<Expanded, Unmeasurable> {
        if let Some(size) = self.sizes.get(name) {
            return Ok(*size);
        }
        if self.visiting.contains(&name) {
            return Err(Unmeasurable::FragmentCycle(name.to_string()));
        }
        let Some(definition) = self.document.fragments.get(name) else {
            return Ok(Expanded::default());
        };
        self.visiting.push(name);
        let size = self.selection_set(&definition.node.selection_set.node);
        self.visiting.pop();
        let size = size?;
        self.sizes.insert(name, size);
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expanded(query: &str) -> Result<Expanded, Unmeasurable> {
        expand(&async_graphql::parser::parse_query(query).expect("parses"))
    }

    #[test]
    fn counts_fields_and_aliases_of_plain_selections() {
        let size = expanded("{ a: health { version } products { edges { node { id } } } }");
        assert_eq!(
            size,
            Ok(Expanded {
                fields: 6,
                aliases: 1
            })
        );
    }

    #[test]
    fn counts_a_fragment_once_per_spread() {
        let size = expanded(
            "{ x: health { ...v } y: health { ...v } } fragment v on Health { a: version b: version }",
        );
        assert_eq!(
            size,
            Ok(Expanded {
                fields: 6,
                aliases: 6
            })
        );
    }

    #[test]
    fn measures_an_exponential_document_without_expanding_it() {
        let query = (0..60)
            .map(|i| format!("fragment f{i} on Query {{ ...f{n} ...f{n} }}", n = i + 1))
            .collect::<Vec<_>>()
            .join(" ");
        let query = format!("{{ ...f0 }} {query} fragment f60 on Query {{ health {{ version }} }}");
        // 2^61 fields could not be walked one by one: this finishes only because it is not.
        let size = expanded(&query).expect("measured");
        assert_eq!(size.fields, 2u64.pow(61));
    }

    #[test]
    fn names_a_fragment_cycle() {
        let size = expanded("{ ...a } fragment a on Query { ...b } fragment b on Query { ...a }");
        assert!(matches!(size, Err(Unmeasurable::FragmentCycle(_))));
    }
}
