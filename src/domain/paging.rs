//! Cursor pagination shared by every connection: page sizes and opaque cursors.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use sea_orm::sea_query::{Expr, QueryStatementBuilder};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait, Select,
};

use crate::error::{AppError, AppResult};

/// Page size when `first` is not given.
pub const DEFAULT_PAGE_SIZE: i32 = 20;
/// Largest page size a client may ask for.
pub const MAX_PAGE_SIZE: i32 = 100;

/// A page request: how many rows and after which key.
#[derive(Debug, Clone)]
pub struct PageRequest<K> {
    /// Rows wanted.
    pub size: u64,
    /// Key of the last row already seen.
    pub after: Option<K>,
}

/// One page of rows and whether more follow.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The rows, in order.
    pub items: Vec<T>,
    /// True when rows follow this page.
    pub has_next: bool,
}

/// Validates `first`: default 20 (or `max` when smaller), between 0 and `max`.
pub fn page_size(first: Option<i32>, max: i32) -> AppResult<u64> {
    let size = first.unwrap_or(DEFAULT_PAGE_SIZE.min(max));
    if !(0..=max).contains(&size) {
        return Err(AppError::bad_input(format!(
            "first must be between 0 and {max}, got {size}"
        )));
    }
    Ok(size as u64)
}

/// Builds a page request from GraphQL arguments (at most `max` rows), decoding the cursor with
/// `parse`.
pub fn request<K>(
    first: Option<i32>,
    max: i32,
    after: Option<&str>,
    kind: &str,
    parse: impl Fn(&str) -> Option<K>,
) -> AppResult<PageRequest<K>> {
    let size = page_size(first, max)?;
    let after = after
        .map(|cursor| decode(kind, cursor, &parse))
        .transpose()?;
    Ok(PageRequest { size, after })
}

/// Encodes an opaque cursor for a row key.
pub fn encode(kind: &str, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{key}"))
}

fn decode<K>(kind: &str, cursor: &str, parse: &impl Fn(&str) -> Option<K>) -> AppResult<K> {
    let invalid = || AppError::bad_input(format!("invalid cursor: {cursor:?}"));
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let key = text
        .strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'));
    key.and_then(parse).ok_or_else(invalid)
}

/// Splits `size + 1` fetched rows into a page and the `has_next` flag.
pub fn split<T>(mut rows: Vec<T>, size: u64) -> Page<T> {
    let has_next = rows.len() as u64 > size;
    rows.truncate(size as usize);
    Page {
        items: rows,
        has_next,
    }
}

/// Reads a keyset page of `select` (filtered, not yet ordered or limited) in `key` order: the
/// `size + 1` rows after the cursor. A filtered page is read in two steps within one statement:
/// the keys from the filter's index (an index-only read: `(filter, key)` indexes hold both),
/// then the rows by key. Asked in one step, PostgreSQL's planner, which assumes a filter's
/// matches spread evenly over the key order, may walk the primary key instead and read most
/// of the table when they do not (pending reservations are the newest ones).
pub async fn keyset<E, C>(
    conn: &impl ConnectionTrait,
    select: Select<E>,
    key: C,
    filtered: bool,
    size: u64,
) -> Result<Vec<E::Model>, DbErr>
where
    E: EntityTrait,
    C: ColumnTrait,
{
    if !filtered {
        return select.order_by_asc(key).limit(size + 1).all(conn).await;
    }
    // The limit is written into the statement: as a parameter, a prepared statement's generic
    // plan assumes a tenth of the table and joins the keys to a scan of it.
    let keys = select.select_only().column(key).into_query();
    let name = key.as_str();
    let page_keys = Expr::cust_with_exprs(
        placeholders(
            conn.get_database_backend(),
            &format!(
                "$1 IN (SELECT \"k\".\"{name}\" FROM $2 AS \"k\" ORDER BY \"k\".\"{name}\" LIMIT {})",
                size + 1
            ),
        ),
        [
            Expr::col((E::default(), key)),
            Expr::SubQuery(None, Box::new(keys.into_sub_query_statement())),
        ],
    );
    E::find()
        .filter(page_keys)
        .order_by_asc(key)
        .all(conn)
        .await
}

/// A custom SQL expression's template for `backend`: written with `$1`, `$2`, … for the
/// expressions in order (PostgreSQL's form), which SQLite's query builder takes as `?`.
pub fn placeholders(backend: DatabaseBackend, template: &str) -> String {
    match backend {
        DatabaseBackend::Postgres => template.to_owned(),
        _ => {
            let mut out = String::with_capacity(template.len());
            let mut chars = template.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
                    while chars.peek().is_some_and(char::is_ascii_digit) {
                        chars.next();
                    }
                    out.push('?');
                } else {
                    out.push(c);
                }
            }
            out
        }
    }
}
