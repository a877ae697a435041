//! The OpenAPI document's frame: info, the API-key scheme, and the error responses every
//! operation shares. Operations themselves are documented on their handlers (`#[utoipa::path]`)
//! and collected by the router, so the document cannot drift from the routes.

use std::collections::BTreeMap;

use serde_json::json;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, RefOr, Response, ResponseBuilder, Type};
use utoipa::{IntoResponses, Modify, OpenApi};

use super::error::{ErrorBody, ErrorCode};

/// Name of the security scheme every operation requires.
const SCHEME: &str = "api_key";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "roomcast server API",
        description = "The application's own backend publishes to rooms, sends to users, reads \
presence and history, and disconnects users, on any node of a cluster (docs/api.md).\n\n\
Every operation needs `Authorization: Bearer <key>` with a key from `api.keys`. Request bodies \
are `application/json`, at most `api.max_body_bytes`. Every error is JSON \
`{\"error\": code, \"message\": text}`: see `components.responses`. An unknown path answers \
404 and a known path with another method 405 (with `Allow`), both before authentication. \
While the node drains (shutdown began) the API keeps working until the node stops listening.",
        license(name = "MIT OR Apache-2.0"),
    ),
    servers((url = "/api", description = "The API is mounted under /api of every node")),
    security(("api_key" = [])),
    modifiers(&Shared),
    components(schemas(ErrorBody, ErrorCode)),
    tags(
        (name = "rooms", description = "Publish to rooms, read their presence and history"),
        (name = "users", description = "Direct messages and disconnection"),
        (name = "node", description = "The answering node itself"),
    ),
)]
pub struct ApiDoc;

/// Adds what the derive cannot express: the bearer scheme and the shared error responses.
struct Shared;

impl Modify for Shared {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.security_schemes.insert(
            SCHEME.into(),
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("One of the keys configured in `api.keys`"))
                    .build(),
            ),
        );
        for (name, response) in shared_responses() {
            components.responses.insert(name.into(), RefOr::T(response));
        }
    }
}

/// Each shared response, by component name. Longer than 70 lines on purpose: it is one
/// declarative table of responses with an example per error code, which reads best whole.
fn shared_responses() -> Vec<(&'static str, Response)> {
    let bad_request = error_response(
        "The request is malformed; nothing was done",
        &[
            (
                ErrorCode::BadJson,
                "body is not a JSON object: expected value at line 1 column 1",
            ),
            (
                ErrorCode::BadRequest,
                "missing field `data` at line 1 column 2",
            ),
            (ErrorCode::BadQuery, "since and epoch go together"),
            (
                ErrorCode::InvalidRoom,
                "room must be 1-128 characters of [A-Za-z0-9_.:@-]",
            ),
            (
                ErrorCode::InvalidUser,
                "from must be 1-128 characters of [A-Za-z0-9_.:@-]",
            ),
            (
                ErrorCode::DataTooComplex,
                "data nests arrays and objects deeper than 64 levels",
            ),
        ],
    );
    let unauthorized = error_response(
        "No `Authorization: Bearer <key>` header, or a key not in `api.keys`",
        &[(
            ErrorCode::Unauthorized,
            "missing or unknown API key (send Authorization: Bearer <key>)",
        )],
    );
    let unauthorized = with_header(unauthorized, "WWW-Authenticate", "Always `Bearer`");
    let unavailable = error_response(
        "The broker (Redis) could not complete the request; nothing was done",
        &[(ErrorCode::Unavailable, "broker unavailable: timed out")],
    );
    let unavailable = with_header(unavailable, "Retry-After", "Seconds to wait: `1`");
    let method_not_allowed = error_response(
        "The path exists, but not for this method",
        &[(ErrorCode::MethodNotAllowed, "method not allowed here")],
    );
    let method_not_allowed =
        with_header(method_not_allowed, "Allow", "The methods the path accepts");
    vec![
        ("BadRequest", bad_request),
        ("Unauthorized", unauthorized),
        (
            "NotFound",
            error_response(
                "No API endpoint at this path",
                &[(ErrorCode::NotFound, "no such API endpoint")],
            ),
        ),
        ("MethodNotAllowed", method_not_allowed),
        (
            "PayloadTooLarge",
            error_response(
                "The body is larger than `api.max_body_bytes`, or `data` larger than \
                 `limits.max_message_bytes`",
                &[
                    (
                        ErrorCode::PayloadTooLarge,
                        "body is larger than 1048576 bytes",
                    ),
                    (
                        ErrorCode::MessageTooLarge,
                        "data is larger than 65536 bytes (limits.max_message_bytes)",
                    ),
                ],
            ),
        ),
        (
            "RequestTimeout",
            error_response(
                "The body did not arrive within `api.body_timeout_ms`",
                &[(
                    ErrorCode::RequestTimeout,
                    "the body did not arrive within 10000 ms",
                )],
            ),
        ),
        (
            "UnsupportedMediaType",
            error_response(
                "The body is not declared `Content-Type: application/json`",
                &[(
                    ErrorCode::UnsupportedMediaType,
                    "body must be application/json",
                )],
            ),
        ),
        ("Unavailable", unavailable),
        (
            "Internal",
            error_response(
                "Stored data could not be read back (never caused by the request)",
                &[(ErrorCode::Internal, "a stored message is not JSON")],
            ),
        ),
    ]
}

fn error_response(description: &str, examples: &[(ErrorCode, &str)]) -> Response {
    let mut content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody")));
    content = content.examples_from_iter(examples.iter().map(|(code, message)| {
        let example = ExampleBuilder::new()
            .value(Some(json!({ "error": code.as_str(), "message": message })))
            .build();
        (code.as_str(), example)
    }));
    ResponseBuilder::new()
        .description(description)
        .content("application/json", content.build())
        .build()
}

fn with_header(response: Response, name: &str, description: &str) -> Response {
    let header = HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(description))
        .build();
    let mut response = response;
    response.headers.insert(name.into(), header);
    response
}

/// The shared responses an operation can give, by status.
fn refs(responses: &[(&str, &str)]) -> BTreeMap<String, RefOr<Response>> {
    responses
        .iter()
        .map(|(status, name)| {
            (
                (*status).to_owned(),
                RefOr::Ref(Ref::from_response_name(*name)),
            )
        })
        .collect()
}

/// Errors of an operation without path parameters or body.
pub struct AuthErrors;

impl IntoResponses for AuthErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        refs(&[("401", "Unauthorized"), ("404", "NotFound")])
    }
}

/// Errors of an operation with path parameters and no body.
pub struct PathErrors;

impl IntoResponses for PathErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        refs(&[
            ("400", "BadRequest"),
            ("401", "Unauthorized"),
            ("404", "NotFound"),
            ("503", "Unavailable"),
        ])
    }
}

/// Errors of the history operation: those of [`PathErrors`] and a stored frame unreadable.
pub struct HistoryErrors;

impl IntoResponses for HistoryErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut responses = PathErrors::responses();
        responses.extend(refs(&[("500", "Internal")]));
        responses
    }
}

/// Errors of an operation with a JSON body.
pub struct BodyErrors;

impl IntoResponses for BodyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut responses = BatchErrors::responses();
        responses.extend(refs(&[("503", "Unavailable")]));
        responses
    }
}

/// Errors of the multi-room publish: a body, and broker failures reported per room instead.
pub struct BatchErrors;

impl IntoResponses for BatchErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        refs(&[
            ("400", "BadRequest"),
            ("401", "Unauthorized"),
            ("404", "NotFound"),
            ("408", "RequestTimeout"),
            ("413", "PayloadTooLarge"),
            ("415", "UnsupportedMediaType"),
        ])
    }
}
