//! The media type of a GraphQL response, chosen from the request's `Accept` as GraphQL over HTTP
//! says: `application/graphql-response+json` when the client lists it, otherwise
//! `application/json` (also for `*/*` or no `Accept`: the legacy clients). With the former, a
//! request error (a document that does not parse or validate, variables that do not coerce) is
//! answered 400 without `data`; with `application/json` it stays 200, as those clients expect.

use axum::http::HeaderMap;

use crate::http::{header_text, lists};

/// What the client is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Media {
    /// `application/graphql-response+json`.
    GraphQLResponse,
    /// `application/json`.
    Json,
}

impl Media {
    /// The media type `headers` ask for.
    pub(super) fn negotiate(headers: &HeaderMap) -> Media {
        let accept = header_text(headers, "accept").unwrap_or_default();
        let listed = lists(accept, "application/graphql-response+json");
        if listed {
            Media::GraphQLResponse
        } else {
            Media::Json
        }
    }

    /// The `content-type` of the answer.
    pub(super) fn content_type(self) -> &'static str {
        match self {
            Media::GraphQLResponse => "application/graphql-response+json; charset=utf-8",
            Media::Json => "application/json; charset=utf-8",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(accept: Option<&str>) -> Media {
        let mut headers = HeaderMap::new();
        if let Some(accept) = accept {
            headers.insert("accept", accept.parse().expect("header"));
        }
        Media::negotiate(&headers)
    }

    #[test]
    fn graphql_response_json_only_when_listed() {
        assert_eq!(media(None), Media::Json);
        assert_eq!(media(Some("*/*")), Media::Json);
        assert_eq!(media(Some("application/json")), Media::Json);
        assert_eq!(
            media(Some(
                "application/graphql-response+json, application/json;q=0.9"
            )),
            Media::GraphQLResponse
        );
        assert_eq!(
            media(Some("application/graphql-response+json;q=0")),
            Media::Json
        );
    }
}
