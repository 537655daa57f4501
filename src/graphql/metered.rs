//! Operations paid for: before an operation runs, its requested cost (see [`super::cost`]) is
//! taken from the caller's bucket; after, the part it did not use is refunded, and the
//! response tells the client in `extensions.cost` (the shape Shopify's API uses):
//! `{requestedQueryCost, actualQueryCost, throttleStatus: {maximumAvailable,
//! currentlyAvailable, restoreRate}}`. An operation the bucket cannot pay, or an expensive read
//! while the server sheds load, gets `THROTTLED` and does not run.

use std::sync::Arc;

use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{Request, Response, ServerError, Value};

use super::Gateway;
use super::assign_codes;
use super::cost::{self, MUTATION_COST, Measured};
use crate::auth::Principal;
use crate::error::AppError;
use crate::fair_use::{Charge, FairUse};

impl Gateway {
    /// The kind and requested cost of `request`'s operation, or the error that refuses its
    /// document (unparsable, too large); `None` inside when it names no operation.
    pub fn measure(&self, request: &Request) -> Result<Option<Measured>, ServerError> {
        let (document, _) = self.parse(&request.query)?;
        Ok(self.measure_document(&document, request))
    }

    /// The measure of `request`'s operation in `document`, its cost at most the complexity
    /// limit: a larger one is refused by validation, having paid that much.
    fn measure_document(
        &self,
        document: &ExecutableDocument,
        request: &Request,
    ) -> Option<Measured> {
        let measured = self.cost.measure(
            document,
            request.operation_name.as_deref(),
            &request.variables,
        )?;
        Some(Measured {
            cost: measured.cost.min(self.limits().max_complexity as u64),
            ..measured
        })
    }

    /// Runs `request` for `principal` once its cost is paid (see the module documentation).
    pub async fn execute_metered(
        &self,
        request: Request,
        principal: Principal,
        fair_use: &FairUse,
    ) -> Response {
        let mut measured = None;
        let prepared = self.prepare_with(request, |document, request| {
            measured = self.measure_document(document, request);
        });
        let (request, fresh) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => return assign_codes(Response::from_errors(vec![error])),
        };
        // A document without the named operation costs 1: validation refuses it.
        let measured = measured.unwrap_or(Measured {
            kind: OperationType::Query,
            cost: 1,
        });
        if let Err(refused) = admit(fair_use, principal, measured) {
            return assign_codes(Response::from_errors(vec![refused]));
        }
        let query = fresh.is_some().then(|| request.query.clone());
        let mut response = self.schema().execute(request).await;
        if let (Some(query), Some(document)) = (query, fresh) {
            self.remember(query, document, &response);
        }
        let mut used = cost::actual(&response.data);
        if measured.kind == OperationType::Mutation {
            let fields = match &response.data {
                Value::Object(fields) => fields.len() as u64,
                _ => 0,
            };
            used = used.saturating_add(MUTATION_COST.saturating_mul(fields));
        }
        let used = used.clamp(1, measured.cost);
        let status = fair_use.refund(principal, measured.cost - used);
        response.extensions.insert(
            "cost".to_owned(),
            cost_extension(measured.cost, used, status),
        );
        assign_codes(self.explain_limits(response))
    }
}

/// Refuses an expensive read while load is shed, then charges the bucket.
fn admit(fair_use: &FairUse, principal: Principal, measured: Measured) -> Result<(), ServerError> {
    let expensive =
        measured.kind == OperationType::Query && measured.cost > fair_use.limits().shed_read_cost;
    let admitted = if expensive {
        fair_use.shed("expensive reads (over --shed-read-cost)")
    } else {
        Ok(())
    };
    admitted
        .and_then(|()| fair_use.charge(principal, measured.cost).map(drop))
        .map_err(server_error)
}

/// An [`AppError`] as a GraphQL error (`assign_codes` gives it its code and details).
pub fn server_error(error: AppError) -> ServerError {
    let mut server_error = ServerError::new(error.to_string(), None);
    server_error.source = Some(Arc::new(error));
    server_error
}

/// `extensions.cost` (`throttleStatus` only for roles with a cost limit).
fn cost_extension(requested: u64, actual: u64, status: Charge) -> Value {
    let mut cost = serde_json::json!({
        "requestedQueryCost": requested,
        "actualQueryCost": actual,
    });
    if status.restore_rate > 0 {
        cost["throttleStatus"] = serde_json::json!({
            "maximumAvailable": status.maximum,
            "currentlyAvailable": status.available,
            "restoreRate": status.restore_rate,
        });
    }
    Value::from_json(cost).unwrap_or_default()
}
