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

/// A link from a response to an operation on what it made: the operation's path and
/// method, and where each of its parameters comes from (an OpenAPI runtime expression).
struct LinkSpec {
    name: &'static str,
    path: &'static str,
    method: &'static str,
    parameters: &'static [(&'static str, &'static str)],
}

const ROOM: &[(&str, &str)] = &[("name", "$response.body#/id")];
const ID: &[(&str, &str)] = &[("id", "$response.body#/id")];
const IN_ROOM: &[(&str, &str)] = &[("name", "$request.path.name"), ("id", "$response.body#/id")];

/// What each creating response leads to (path, method, status → links): for clients,
/// and for schemathesis's stateful phase, which follows them from a create to the
/// operations on what it made instead of guessing ids.
const LINKS: &[(&str, &str, &str, &[LinkSpec])] = &[
    (
        "/api/v1/rooms",
        "post",
        "201",
        &[
            LinkSpec {
                name: "GetRoom",
                path: "/api/v1/rooms/{name}",
                method: "get",
                parameters: ROOM,
            },
            LinkSpec {
                name: "UpdateRoom",
                path: "/api/v1/rooms/{name}",
                method: "patch",
                parameters: ROOM,
            },
            LinkSpec {
                name: "DeleteRoom",
                path: "/api/v1/rooms/{name}",
                method: "delete",
                parameters: ROOM,
            },
            LinkSpec {
                name: "JoinToken",
                path: "/api/v1/rooms/{name}/token",
                method: "post",
                parameters: ROOM,
            },
            LinkSpec {
                name: "ResetRoom",
                path: "/api/v1/rooms/{name}/reset",
                method: "post",
                parameters: ROOM,
            },
            LinkSpec {
                name: "NewShareLink",
                path: "/api/v1/rooms/{name}/share-link",
                method: "post",
                parameters: ROOM,
            },
            LinkSpec {
                name: "ListMembers",
                path: "/api/v1/rooms/{name}/members",
                method: "get",
                parameters: ROOM,
            },
            LinkSpec {
                name: "InviteMember",
                path: "/api/v1/rooms/{name}/members",
                method: "post",
                parameters: ROOM,
            },
            LinkSpec {
                name: "ListRecordings",
                path: "/api/v1/rooms/{name}/recordings",
                method: "get",
                parameters: ROOM,
            },
            LinkSpec {
                name: "StartRecording",
                path: "/api/v1/rooms/{name}/recordings",
                method: "post",
                parameters: ROOM,
            },
        ],
    ),
    (
        "/api/v1/rooms/{name}/members",
        "post",
        "201",
        &[LinkSpec {
            name: "RemoveMember",
            path: "/api/v1/rooms/{name}/members/{email}",
            method: "delete",
            parameters: &[
                ("name", "$request.path.name"),
                ("email", "$response.body#/email"),
            ],
        }],
    ),
    (
        "/api/v1/rooms/{name}/recordings",
        "post",
        "201",
        &[
            LinkSpec {
                name: "GetRecording",
                path: "/api/v1/rooms/{name}/recordings/{id}",
                method: "get",
                parameters: IN_ROOM,
            },
            LinkSpec {
                name: "StopRecording",
                path: "/api/v1/rooms/{name}/recordings/{id}/stop",
                method: "post",
                parameters: IN_ROOM,
            },
            LinkSpec {
                name: "Mixdown",
                path: "/api/v1/rooms/{name}/recordings/{id}/mixdown",
                method: "post",
                parameters: IN_ROOM,
            },
        ],
    ),
    (
        "/api/v1/devices",
        "post",
        "201",
        &[
            LinkSpec {
                name: "GetDevice",
                path: "/api/v1/devices/{id}",
                method: "get",
                parameters: ID,
            },
            LinkSpec {
                name: "RenameDevice",
                path: "/api/v1/devices/{id}",
                method: "patch",
                parameters: ID,
            },
            LinkSpec {
                name: "RemoveDevice",
                path: "/api/v1/devices/{id}",
                method: "delete",
                parameters: ID,
            },
            LinkSpec {
                name: "Command",
                path: "/api/v1/devices/{id}/commands",
                method: "post",
                parameters: ID,
            },
            LinkSpec {
                name: "NowPlaying",
                path: "/api/v1/devices/{id}/now-playing",
                method: "get",
                parameters: ID,
            },
            LinkSpec {
                name: "Stream",
                path: "/api/v1/devices/{id}/stream",
                method: "post",
                parameters: ID,
            },
        ],
    ),
    (
        "/api/v1/pairings",
        "post",
        "201",
        &[LinkSpec {
            name: "PairingStatus",
            path: "/api/v1/pairings/{id}",
            method: "get",
            parameters: ID,
        }],
    ),
    (
        "/api/v1/uploads",
        "post",
        "202",
        &[LinkSpec {
            name: "GetUpload",
            path: "/api/v1/uploads/{id}",
            method: "get",
            parameters: ID,
        }],
    ),
];

/// An operation of the document by path and method.
fn operation_mut<'a>(
    openapi: &'a mut utoipa::openapi::OpenApi,
    path: &str,
    method: &str,
) -> Option<&'a mut utoipa::openapi::path::Operation> {
    let item = openapi.paths.paths.get_mut(path)?;
    match method {
        "get" => item.get.as_mut(),
        "post" => item.post.as_mut(),
        "patch" => item.patch.as_mut(),
        "delete" => item.delete.as_mut(),
        _ => None,
    }
}

/// `#/paths/<path>/<method>`, the path escaped as a JSON pointer (RFC 6901).
fn operation_ref(path: &str, method: &str) -> String {
    format!(
        "#/paths/{}/{method}",
        path.replace('~', "~0").replace('/', "~1")
    )
}

struct Links;

impl Modify for Links {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::link::LinkBuilder;
        for (path, method, status, links) in LINKS {
            let Some(RefOr::T(response)) = operation_mut(openapi, path, method)
                .and_then(|op| op.responses.responses.get_mut(*status))
            else {
                // Caught by the test below; a missing link is no reason to fail start-up.
                continue;
            };
            for l in *links {
                let mut link = LinkBuilder::new().operation_ref(operation_ref(l.path, l.method));
                for (name, value) in l.parameters {
                    link = link.parameter(*name, *value);
                }
                response.links.insert(l.name.into(), RefOr::T(link.build()));
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "StreamCore control API", description = "Accounts, sessions, devices, phone pairing, remote control, rooms, join tokens, recordings, uploads and transcode jobs, library metadata, listening history, and podcasts (shows, episodes, public RSS feeds)."),
    paths(
        accounts::register, accounts::complete_signup, accounts::login, accounts::refresh, accounts::logout,
        accounts::forgot_password, accounts::reset_password, accounts::verify_email, accounts::resend_verification, accounts::me, accounts::change_password,
        accounts::admin_list_users, accounts::admin_end_sessions, accounts::admin_mail, crate::cluster::list_nodes, crate::cluster::drain_node, crate::cluster::remove_node,
        devices::create, devices::list, devices::get, devices::rename, devices::remove, devices::heartbeat,
        devices::start_pairing, devices::pairing_status, devices::claim,
        rooms::create, rooms::list, rooms::get, rooms::update, rooms::delete, rooms::join_token, rooms::jwks, rooms::device_stream, rooms::new_share_link, rooms::reset, members::list, members::invite, members::remove, members::invitations, members::accept, members::decline,
        recordings::start, recordings::list, recordings::get, recordings::stop, recordings::file, recordings::delete, crate::routes::retention::get, crate::routes::retention::put,
        jobs::mixdown, jobs::mixdown_file, jobs::upload, jobs::list, jobs::get, jobs::delete, jobs::file,
        library::sync, library::list, crate::routes::history::plays, crate::routes::history::stats,
        control::command, control::now_playing, control::device_socket, control::browser_socket,
        crate::routes::podcasts::categories, crate::routes::podcasts::sources, crate::routes::podcasts::create_show, crate::routes::podcasts::list_shows,
        crate::routes::podcasts::get_show, crate::routes::podcasts::update_show, crate::routes::podcasts::delete_show, crate::routes::podcasts::put_artwork,
        crate::routes::podcasts::create_episode, crate::routes::podcasts::list_episodes, crate::routes::podcasts::get_episode, crate::routes::podcasts::update_episode,
        crate::routes::podcasts::publish, crate::routes::podcasts::unpublish, crate::routes::podcasts::delete_episode,
        crate::routes::podcasts::create_marker, crate::routes::podcasts::list_markers,
        crate::routes::oidc::providers, crate::routes::oidc::start, crate::routes::oidc::callback, crate::routes::oidc::link_start,
        crate::routes::oidc::link, crate::routes::oidc::pending, crate::routes::oidc::mine, crate::routes::oidc::unlink,
        crate::routes::feeds::feed, crate::routes::feeds::artwork, crate::routes::feeds::audio, crate::routes::feeds::chapters,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerAuth, &BodyErrors, &Links),
)]
pub struct ApiDoc;

/// `/api/openapi.json` and the browsable page at `/api/docs`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::from(
        utoipa_swagger_ui::SwaggerUi::new("/api/docs").url("/api/openapi.json", ApiDoc::openapi()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every link starts at a response the document has and leads to an operation it
    /// has, with parameters that operation takes: a renamed route breaks this test,
    /// not the document.
    #[test]
    fn links_start_and_end_at_real_operations() {
        let mut doc = ApiDoc::openapi();
        let mut count = 0;
        for (path, method, status, links) in LINKS {
            let op = operation_mut(&mut doc, path, method)
                .unwrap_or_else(|| panic!("no {method} {path}"));
            let utoipa::openapi::RefOr::T(response) = &op.responses.responses[*status] else {
                panic!("{method} {path} {status} is a reference");
            };
            assert_eq!(
                response.links.len(),
                links.len(),
                "{method} {path} {status}"
            );
            for l in *links {
                let target = operation_mut(&mut doc, l.path, l.method)
                    .unwrap_or_else(|| panic!("{}: no {} {}", l.name, l.method, l.path));
                let names: Vec<String> = target
                    .parameters
                    .iter()
                    .flatten()
                    .filter_map(|p| match p {
                        utoipa::openapi::RefOr::T(p) => Some(p.name.clone()),
                        utoipa::openapi::RefOr::Ref(_) => None,
                    })
                    .collect();
                for (name, _) in l.parameters {
                    assert!(
                        names.iter().any(|n| n == name),
                        "{}: {name} not in {names:?}",
                        l.name
                    );
                }
                count += 1;
            }
        }
        let json = serde_json::to_value(&doc).unwrap();
        let link = &json["paths"]["/api/v1/rooms"]["post"]["responses"]["201"]["links"]["GetRoom"];
        assert_eq!(link["operationRef"], "#/paths/~1api~1v1~1rooms~1{name}/get");
        assert_eq!(link["parameters"]["name"], "$response.body#/id");
        assert_eq!(count, 22);
    }
}
