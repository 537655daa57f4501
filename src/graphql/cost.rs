//! What an operation costs, for the fair-use buckets: the same arithmetic as the complexity
//! limit (`page_cost`, `list_cost`), computed before execution from the document, the schema's
//! field types and the request's variables. Every field counts 1; a connection field (one with a
//! `first` argument) counts its selection once per item it may return (`first`, default and
//! cap as for pages; its `edges` and `nodes` are that page); any other list field counts it
//! [`UNPAGED_LIST_SIZE`] times. Each
//! mutation field adds [`MUTATION_COST`], since a write costs more than a read. Every operation
//! costs at least 1, so even a refused document is paid for.
//!
//! The actual cost, after execution, counts the fields of the response the same way: lists by
//! the items they really returned. What was requested but not used is refunded.

use std::collections::HashMap;

use async_graphql::parser::types::{
    BaseType, ExecutableDocument, OperationType, Selection, SelectionSet, TypeKind,
    TypeSystemDefinition,
};
use async_graphql::{Name, Value, Variables};

use super::UNPAGED_LIST_SIZE;
use crate::domain::paging::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};

/// What each mutation field adds to its operation's cost.
pub const MUTATION_COST: u64 = 10;

/// How a field multiplies the cost of its selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Multiplies {
    /// Once.
    Once,
    /// A list without a page size: [`UNPAGED_LIST_SIZE`] times.
    List,
    /// A connection: once per item of the page (`first`).
    Page,
}

#[derive(Debug, Clone)]
struct FieldShape {
    /// The named type the field returns.
    returns: String,
    multiplies: Multiplies,
}

/// The field types of a schema, read from its SDL.
#[derive(Debug, Clone, Default)]
pub struct CostModel {
    roots: HashMap<&'static str, String>,
    fields: HashMap<String, HashMap<String, FieldShape>>,
}

/// A measured operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measured {
    /// Query, mutation or subscription.
    pub kind: OperationType,
    /// Its requested cost.
    pub cost: u64,
}

impl CostModel {
    /// Reads the object and interface fields of `sdl`.
    pub fn from_sdl(sdl: &str) -> CostModel {
        let mut model = CostModel::default();
        for (kind, name) in [
            ("query", "Query"),
            ("mutation", "Mutation"),
            ("subscription", "Subscription"),
        ] {
            model.roots.insert(kind, name.to_owned());
        }
        let Ok(document) = async_graphql::parser::parse_schema(sdl) else {
            tracing::error!("the schema's own SDL does not parse; operations cost their fields");
            return model;
        };
        for definition in document.definitions {
            match definition {
                TypeSystemDefinition::Schema(schema) => {
                    let schema = schema.node;
                    for (kind, root) in [
                        ("query", schema.query),
                        ("mutation", schema.mutation),
                        ("subscription", schema.subscription),
                    ] {
                        if let Some(root) = root {
                            model.roots.insert(kind, root.node.to_string());
                        }
                    }
                }
                TypeSystemDefinition::Type(definition) => {
                    let definition = definition.node;
                    let fields = match definition.kind {
                        TypeKind::Object(object) => object.fields,
                        TypeKind::Interface(interface) => interface.fields,
                        _ => continue,
                    };
                    // A connection's `edges` and `nodes` are its page: counted by `first` on
                    // the field that returns the connection.
                    let connection = definition.name.node.ends_with("Connection");
                    let shapes = fields
                        .into_iter()
                        .map(|field| {
                            let field = field.node;
                            let paged = field.arguments.iter().any(|a| a.node.name.node == "first");
                            let mut ty = &field.ty.node.base;
                            let mut list = false;
                            while let BaseType::List(inner) = ty {
                                list = true;
                                ty = &inner.base;
                            }
                            let returns = match ty {
                                BaseType::Named(name) => name.to_string(),
                                BaseType::List(_) => String::new(),
                            };
                            let multiplies = match (paged, list && !connection) {
                                (true, _) => Multiplies::Page,
                                (false, true) => Multiplies::List,
                                (false, false) => Multiplies::Once,
                            };
                            let shape = FieldShape {
                                returns,
                                multiplies,
                            };
                            (field.name.node.to_string(), shape)
                        })
                        .collect();
                    model
                        .fields
                        .insert(definition.name.node.to_string(), shapes);
                }
                TypeSystemDefinition::Directive(_) => {}
            }
        }
        model
    }

    /// The operation `operation_name` of `document` with `variables`: its kind and requested
    /// cost; `None` when the document holds no such operation (validation says why).
    pub fn measure(
        &self,
        document: &ExecutableDocument,
        operation_name: Option<&str>,
        variables: &Variables,
    ) -> Option<Measured> {
        let operation = super::document::operation(document, operation_name)?;
        let kind = operation.node.ty;
        let root = self.roots.get(match kind {
            OperationType::Query => "query",
            OperationType::Mutation => "mutation",
            OperationType::Subscription => "subscription",
        });
        let mut walk = Walk {
            model: self,
            document,
            variables,
            fragments: HashMap::new(),
            visiting: Vec::new(),
        };
        let set = &operation.node.selection_set.node;
        let mut cost = walk.selection_set(set, root.map(String::as_str));
        if kind == OperationType::Mutation {
            cost = cost.saturating_add(MUTATION_COST.saturating_mul(root_fields(set)));
        }
        Some(Measured {
            kind,
            cost: cost.max(1),
        })
    }
}

/// Fields at the top of a selection (mutation fields; fragments at the root are rare).
fn root_fields(set: &SelectionSet) -> u64 {
    set.items
        .iter()
        .filter(|item| matches!(item.node, Selection::Field(_)))
        .count() as u64
}

/// The cost of what a response holds: every field counts 1, lists by their items.
pub fn actual(value: &Value) -> u64 {
    match value {
        Value::Object(fields) => fields
            .values()
            .map(|field| actual(field).saturating_add(1))
            .fold(0u64, u64::saturating_add),
        Value::List(items) => items.iter().map(actual).fold(0u64, u64::saturating_add),
        _ => 0,
    }
}

struct Walk<'a> {
    model: &'a CostModel,
    document: &'a ExecutableDocument,
    variables: &'a Variables,
    /// Fragments costed so far (a fragment always applies to its own type condition).
    fragments: HashMap<&'a Name, u64>,
    visiting: Vec<&'a Name>,
}

impl<'a> Walk<'a> {
    fn selection_set(&mut self, set: &'a SelectionSet, parent: Option<&str>) -> u64 {
        let mut total = 0u64;
        for selection in &set.items {
            let cost = match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let shape = parent
                        .and_then(|parent| self.model.fields.get(parent))
                        .and_then(|fields| fields.get(field.name.node.as_str()));
                    let returns = shape.map(|shape| shape.returns.clone());
                    let inner = self.selection_set(&field.selection_set.node, returns.as_deref());
                    let times = match shape.map(|shape| shape.multiplies) {
                        Some(Multiplies::Page) => self.page_size(field),
                        Some(Multiplies::List) => UNPAGED_LIST_SIZE as u64,
                        _ => 1,
                    };
                    times.saturating_mul(inner).saturating_add(1)
                }
                Selection::InlineFragment(fragment) => {
                    let fragment = &fragment.node;
                    let on = fragment
                        .type_condition
                        .as_ref()
                        .map(|condition| condition.node.on.node.to_string());
                    self.selection_set(&fragment.selection_set.node, on.as_deref().or(parent))
                }
                Selection::FragmentSpread(spread) => self.fragment(&spread.node.fragment_name.node),
            };
            total = total.saturating_add(cost);
        }
        total
    }

    /// A named fragment's cost: once per fragment, reused at each spread. A cycle or an unknown
    /// fragment costs nothing here (validation refuses both).
    fn fragment(&mut self, name: &'a Name) -> u64 {
        if let Some(cost) = self.fragments.get(name) {
            return *cost;
        }
        if self.visiting.contains(&name) {
            return 0;
        }
        let Some(definition) = self.document.fragments.get(name) else {
            return 0;
        };
        self.visiting.push(name);
        let on = definition.node.type_condition.node.on.node.to_string();
        let cost = self.selection_set(&definition.node.selection_set.node, Some(&on));
        self.visiting.pop();
        self.fragments.insert(name, cost);
        cost
    }

    /// The items a connection field may return: its `first` (a literal or a variable),
    /// defaulted and capped as the page itself is.
    fn page_size(&self, field: &async_graphql::parser::types::Field) -> u64 {
        let first = field.get_argument("first").and_then(|value| {
            let value = value
                .node
                .clone()
                .into_const_with(|name| self.variables.get(&name).cloned().ok_or(()))
                .ok()?;
            match value {
                Value::Number(n) => n.as_i64(),
                _ => None,
            }
        });
        first
            .unwrap_or(DEFAULT_PAGE_SIZE.into())
            .clamp(1, MAX_PAGE_SIZE.into()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graphql::{Limits, build_schema};

    fn cost(query: &str, variables: serde_json::Value) -> u64 {
        let model = CostModel::from_sdl(&build_schema(None, &Limits::default()).sdl());
        let document = async_graphql::parser::parse_query(query).expect("parses");
        model
            .measure(&document, None, &Variables::from_json(variables))
            .expect("one operation")
            .cost
    }

    #[test]
    fn pages_count_their_selection_per_item_and_lists_per_expected_item() {
        // stockLevels 1 + 10 × (edges 1 + node 1 + quantity 1).
        let page = "{ stockLevels(first: 10) { edges { node { quantity } } } }";
        assert_eq!(cost(page, serde_json::json!({})), 31);
        let by_variable = "query($n: Int) { stockLevels(first: $n) { nodes { quantity } } }";
        assert_eq!(
            cost(by_variable, serde_json::json!({ "n": 50 })),
            1 + 50 * 2
        );
        // Without `first`: the default page; over the cap: the cap.
        assert_eq!(cost(by_variable, serde_json::json!({})), 1 + 20 * 2);
        assert_eq!(
            cost(by_variable, serde_json::json!({ "n": 5000 })),
            1 + 100 * 2
        );
        // A list without a page size: 20 expected items.
        assert_eq!(
            cost("{ stores { id name } }", serde_json::json!({})),
            1 + 20 * 2
        );
    }

    #[test]
    fn fragments_count_where_they_are_spread_and_mutations_cost_more() {
        let spread = "{ a: stores { ...s } b: stores { ...s } } fragment s on Store { id }";
        assert_eq!(cost(spread, serde_json::json!({})), 2 * (1 + 20));
        let mutation = "mutation { adjustStock(input: {productId: \"p\", storeId: \"s\", delta: 1}) { version } }";
        assert_eq!(cost(mutation, serde_json::json!({})), 2 + MUTATION_COST);
    }

    #[test]
    fn the_actual_cost_counts_what_came_back() {
        let data = async_graphql::Value::from_json(serde_json::json!({
            "stockLevels": { "edges": [ { "node": { "quantity": 1 } }, { "node": { "quantity": 2 } } ] }
        }))
        .expect("value");
        assert_eq!(actual(&data), 1 + 1 + 2 * 2);
    }
}
