//! The OpenAPI 3.1 document, generated from the handlers' annotations, and the
//! browsable page (Swagger UI, served from the binary; no CDN).

use axum::Router;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::routes::{accounts, control, devices, jobs, library, members, recordings, rooms};

/// Every error response: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `unauthorized`, `invalid_field`, `not_found`, …
    pub code: String,
    pub message: String,
    /// The request field a validation error is about.
    pub field: Option<String>,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Every operation that takes a body can be sent one that is not what it says: a body
/// that is not JSON (400 `malformed_json`, or 400 for an upload the node cannot read),
/// another `Content-Type` (415), JSON of the wrong shape (422). The extractors answer
/// those alike everywhere (`crate::extract`); this says so in each operation.
struct BodyErrors;

impl Modify for BodyErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let error = |text: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(text)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        };
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                if op.request_body.is_none() {
                    continue;
                }
                let r = &mut op.responses.responses;
                r.entry("400".into())
                    .or_insert_with(|| error("the body is not valid JSON (or not readable)"));
                r.entry("415".into())
                    .or_insert_with(|| error("the body's Content-Type is not the one expected"));
                r.entry("422".into()).or_insert_with(|| {
                    error("the body is JSON of the wrong shape, or a field is invalid")
                });
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "StreamCore control API", description = "Accounts, sessions, devices, phone pairing, remote control, rooms, join tokens, recordings, uploads and transcode jobs, and library metadata."),
    paths(
        accounts::register, accounts::complete_signup, accounts::login, accounts::refresh, accounts::logout,
        accounts::forgot_password, accounts::reset_password, accounts::verify_email, accounts::resend_verification, accounts::me, accounts::change_password,
        accounts::admin_list_users, accounts::admin_end_sessions, accounts::admin_mail,
        devices::create, devices::list, devices::get, devices::rename, devices::remove, devices::heartbeat,
        devices::start_pairing, devices::pairing_status, devices::claim,
        rooms::create, rooms::list, rooms::get, rooms::update, rooms::delete, rooms::join_token, rooms::jwks, rooms::device_stream, rooms::new_share_link, rooms::reset, members::list, members::invite, members::remove, members::invitations, members::accept, members::decline,
        recordings::start, recordings::list, recordings::get, recordings::stop, recordings::file,
        jobs::mixdown, jobs::mixdown_file, jobs::upload, jobs::list, jobs::get, jobs::file,
        library::sync, library::list,
        control::command, control::now_playing, control::device_socket, control::browser_socket,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerAuth, &BodyErrors),
)]
pub struct ApiDoc;

/// `/api/openapi.json` and the browsable page at `/api/docs`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::from(
        utoipa_swagger_ui::SwaggerUi::new("/api/docs").url("/api/openapi.json", ApiDoc::openapi()),
    )
}
