//! Plain resolution of hot object types: a page of stock levels (its edges, cursors, page info,
//! and each node's scalars with the product and store loaded with the page) resolves in one
//! synchronous pass, instead of one boxed future, one context and one map insert per field
//! through async-graphql's container resolver. That resolver stays the reference: any
//! selection this pass does not handle (a field that needs I/O or arguments, a directive, a
//! fragment on another type, a response key selected twice) is handed to it unchanged, so the
//! response is the same either way.

use async_graphql::indexmap::IndexMap;
use async_graphql::indexmap::map::Entry as IndexMapEntry;
use async_graphql::parser::types::{Field, Selection, SelectionSet};
use async_graphql::{
    Context, ContextSelectionSet, Name, OutputType, Positioned, ServerResult, Value,
};

/// Resolves the selection of `ctx` on an object of GraphQL type `type_name`, taking each
/// selected field's value from `field`. `None` when some selection needs the general resolver
/// (see the module docs), or when `field` answers `None` for a field.
pub fn resolve(
    ctx: &ContextSelectionSet<'_>,
    type_name: &str,
    field: &dyn Fn(&Context<'_>) -> Option<Value>,
) -> Option<Value> {
    let mut object = IndexMap::with_capacity(ctx.item.node.items.len());
    collect(ctx, &ctx.item.node, type_name, field, &mut object)?;
    (!object.is_empty()).then_some(Value::Object(object))
}

/// Resolves the selection of `ctx` plainly with `field` when it can, else through `object`'s
/// own resolvers (`object` is the type the plain pass stands in for: same name, same answer).
pub async fn or_resolve<T: OutputType>(
    ctx: &ContextSelectionSet<'_>,
    selected: &Positioned<Field>,
    field: &(dyn Fn(&Context<'_>) -> Option<Value> + Sync),
    object: &T,
) -> ServerResult<Value> {
    let type_name = T::type_name();
    match resolve(ctx, &type_name, field) {
        Some(value) => Ok(value),
        None => {
            // Counted so that a field without a plain arm cannot slow pages down unnoticed.
            metrics::counter!("stockroom_plain_fallbacks_total", "type" => type_name.into_owned())
                .increment(1);
            object.resolve(ctx, selected).await
        }
    }
}

fn collect<'a>(
    ctx: &'a ContextSelectionSet<'a>,
    set: &'a SelectionSet,
    type_name: &str,
    field: &dyn Fn(&Context<'_>) -> Option<Value>,
    object: &mut IndexMap<Name, Value>,
) -> Option<()> {
    for selection in &set.items {
        if !selection.node.directives().is_empty() {
            return None;
        }
        match &selection.node {
            Selection::Field(selected) => {
                if !selected.node.arguments.is_empty() {
                    return None;
                }
                let key = selected.node.response_key().node.clone();
                let IndexMapEntry::Vacant(slot) = object.entry(key) else {
                    return None;
                };
                let value = if selected.node.name.node == "__typename" {
                    Value::String(type_name.to_owned())
                } else {
                    field(&ctx.with_field(selected))?
                };
                slot.insert(value);
            }
            Selection::FragmentSpread(spread) => {
                let fragment = ctx
                    .query_env
                    .fragments
                    .get(&spread.node.fragment_name.node)?;
                if fragment.node.type_condition.node.on.node != type_name {
                    return None;
                }
                collect(
                    ctx,
                    &fragment.node.selection_set.node,
                    type_name,
                    field,
                    object,
                )?;
            }
            Selection::InlineFragment(inline) => {
                let on_other_type = inline
                    .node
                    .type_condition
                    .as_ref()
                    .is_some_and(|condition| condition.node.on.node != type_name);
                if on_other_type {
                    return None;
                }
                collect(
                    ctx,
                    &inline.node.selection_set.node,
                    type_name,
                    field,
                    object,
                )?;
            }
        }
    }
    Some(())
}

/// The selection of a nested object field (`product { … }`) resolved plainly with `field`.
pub fn nested(
    ctx: &Context<'_>,
    type_name: &str,
    field: &dyn Fn(&Context<'_>) -> Option<Value>,
) -> Option<Value> {
    let selection = ctx.with_selection_set(&ctx.item.node.selection_set);
    resolve(&selection, type_name, field)
}

/// The name (not the alias) of the field `ctx` resolves.
pub fn name<'a>(ctx: &'a Context<'_>) -> &'a str {
    ctx.item.node.name.node.as_str()
}

/// A GraphQL `Int`.
pub fn int(n: i32) -> Value {
    Value::Number(n.into())
}

/// A GraphQL `String`, or `null`.
pub fn text(s: Option<&str>) -> Value {
    s.map_or(Value::Null, |s| Value::String(s.to_owned()))
}

/// A `DateTime`, as async-graphql writes it (RFC 3339).
pub fn time(t: &chrono::DateTime<chrono::Utc>) -> Value {
    Value::String(t.to_rfc3339())
}
