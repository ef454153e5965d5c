//! WHIP (RFC 9725) and WHEP resources.
//!
//! | method | path | does |
//! |---|---|---|
//! | `POST` | `/whip/{room}` | publish: SDP offer in, `201` + answer + `Location` out |
//! | `POST` | `/whep/{room}` | play: likewise, for a player |
//! | `PATCH` | `/whip/{room}/{session}`, `/whep/…` | trickle ICE candidates (`application/trickle-ice-sdpfrag`); with `If-Match: *`, an ICE restart |
//! | `DELETE` | `/whip/{room}/{session}`, `/whep/…` | end the session |
//! | `POST` | `/whip/{room}/{session}/events`, `/whep/…` | ask for the session's events (`["reconnect"]`): `201` + `Location` of the stream |
//! | `GET` | `…/events/{key}` | the events, `text/event-stream`, no token ([`crate::session_events`]) |
//! | `OPTIONS` | any of the above | `204` with the allowed methods (a CORS preflight) |
//!
//! Every request carries `Authorization: Bearer <join token>`. The token must name the
//! room, and grant `publish` (WHIP) or `subscribe` (WHEP). `PATCH` and `DELETE` need a
//! token for the same identity and room as the session.
//!
//! ICE sessions (RFC 9725 §4.3–4.4): the `ETag` of a resource names its current ICE
//! session (the node's ufrag). A trickle PATCH whose `If-Match` names an older one is
//! refused with `412`; a PATCH with `If-Match: *` and new credentials restarts ICE
//! (a client that changed network) and answers `200` with the node's new credentials
//! and candidates, and the new `ETag`. The session, its tracks and its subscribers
//! are kept.
//!
//! CORS (RFC 9725 §4.2): a page of any origin may publish and play, since the bearer
//! token, not the origin, is the authority; no cookie is ever read. Every answer,
//! errors included, allows any origin and exposes `Location`, `Link` and `ETag`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use media_core::{PeerRole, RemoteIceCreds, RoomId, SfuError};
use tracing::info;

use crate::backend::{BackendError, MediaBackend, OpenSession, SessionId, SessionOwner};
use crate::error::ApiError;
use crate::ice_servers::{IceServerConfig, link_headers};
use crate::sdpfrag::{self, IceFragment};
use crate::session_events::{EVENTS, EVENTS_REL, SessionEvents};
use crate::token::{JoinGrant, JoinTokenVerifier, TokenError};

/// How often a session's event stream checks that its session still lives (it ends
/// within this of the session).
const SESSION_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Largest SDP body accepted.
pub const MAX_SDP_BYTES: usize = 64 * 1024;

pub struct SignalingState<B> {
    pub backend: Arc<B>,
    pub verifier: JoinTokenVerifier,
    /// Handed to each new session as `Link: rel="ice-server"` headers.
    pub ice_servers: Arc<IceServerConfig>,
    /// Most live WHIP/WHEP sessions one join token may hold; one more answers
    /// `429 too_many_sessions`.
    pub sessions_per_token: usize,
    /// Asked whether a token's room is still the one it was issued for.
    pub rooms: crate::room_authority::SharedRoomAuthority,
    /// Asked which node a room lives on; requests for another node's room are
    /// redirected there…
    pub placement: crate::placement::SharedPlacement,
    /// … or, for WHEP players, served here over the relay from that node.
    pub cascade: crate::placement::SharedCascade,
    /// Tells sessions where to reconnect when the node drains.
    pub events: Arc<SessionEvents>,
}

impl<B> Clone for SignalingState<B> {
    fn clone(&self) -> Self {
        SignalingState {
            backend: self.backend.clone(),
            verifier: self.verifier.clone(),
            ice_servers: self.ice_servers.clone(),
            sessions_per_token: self.sessions_per_token,
            rooms: self.rooms.clone(),
            placement: self.placement.clone(),
            cascade: self.cascade.clone(),
            events: self.events.clone(),
        }
    }
}

/// The WHIP and WHEP routes.
pub fn router<B: MediaBackend>(state: SignalingState<B>) -> Router {
    Router::new()
        .route("/whip/{room}", post(publish::<B>).options(options_endpoint))
        .route("/whep/{room}", post(play::<B>).options(options_endpoint))
        .route(
            "/whip/{room}/{session}",
            axum::routing::patch(patch_session::<B>)
                .delete(delete_session::<B>)
                .options(options_resource),
        )
        .route(
            "/whep/{room}/{session}",
            axum::routing::patch(patch_session::<B>)
                .delete(delete_session::<B>)
                .options(options_resource),
        )
        .route(
            "/whip/{room}/{session}/events",
            post(open_events::<B>).options(options_endpoint),
        )
        .route(
            "/whep/{room}/{session}/events",
            post(open_events::<B>).options(options_endpoint),
        )
        .route("/whip/{room}/{session}/events/{key}", get(events::<B>))
        .route("/whep/{room}/{session}/events/{key}", get(events::<B>))
        .layer(DefaultBodyLimit::max(MAX_SDP_BYTES))
        .layer(axum::middleware::map_response(allow_any_origin))
        .with_state(state)
}

/// What every WHIP/WHEP answer carries for pages of other origins.
async fn allow_any_origin(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, Link, ETag, Retry-After"),
    );
    resp
}

/// A preflight's answer: what may be sent, and for how long the browser may cache it.
fn preflight(methods: &'static str) -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ALLOW, methods),
            (header::ACCESS_CONTROL_ALLOW_METHODS, methods),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "Authorization, Content-Type, If-Match",
            ),
            (header::ACCESS_CONTROL_MAX_AGE, "86400"),
        ],
    )
        .into_response()
}

async fn options_endpoint() -> Response {
    let mut r = preflight("POST, OPTIONS");
    r.headers_mut().insert(
        header::HeaderName::from_static("accept-post"),
        HeaderValue::from_static("application/sdp"),
    );
    r
}

async fn options_resource() -> Response {
    let mut r = preflight("PATCH, DELETE, OPTIONS");
    r.headers_mut().insert(
        header::HeaderName::from_static("accept-patch"),
        HeaderValue::from_static("application/trickle-ice-sdpfrag"),
    );
    r
}

async fn publish<B: MediaBackend>(
    State(st): State<SignalingState<B>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    open(st, room, headers, body, PeerRole::Publisher).await
}

async fn play<B: MediaBackend>(
    State(st): State<SignalingState<B>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    open(st, room, headers, body, PeerRole::Subscriber).await
}

async fn open<B: MediaBackend>(
    st: SignalingState<B>,
    room: String,
    headers: HeaderMap,
    body: Bytes,
    role: PeerRole,
) -> Result<Response, ApiError> {
    let room = parse_room(&room)?;
    let grant = authorize(&st.verifier, &headers, &room)?;
    let whep = role == PeerRole::Subscriber;
    let allowed = if whep {
        grant.grants.subscribe
    } else {
        grant.grants.publish
    };
    if !allowed {
        return Err(ApiError::forbidden(if whep {
            "the token does not grant subscribe"
        } else {
            "the token does not grant publish"
        }));
    }
    require_content_type(&headers, "application/sdp")?;
    crate::room_authority::check(&st.rooms, &grant).await?;
    let prefix = if whep { "whep" } else { "whip" };
    let remote = crate::placement::elsewhere(&st.placement, &room).await?;
    let cascaded = remote.as_ref().is_some_and(|r| {
        whep && st
            .cascade
            .as_ref()
            .is_some_and(|c| c.import(&room, &r.node_id))
    });
    if let (Some(remote), false) = (remote, cascaded) {
        // RFC 9725 §4.5: the client sends the same offer to the room's node.
        let to = format!("{}/{prefix}/{room}", remote.base_url.trim_end_matches('/'));
        info!(%room, identity = %grant.identity, to = %to, "session sent to the room's node");
        let mut resp = StatusCode::TEMPORARY_REDIRECT.into_response();
        let location = HeaderValue::from_str(&to)
            .map_err(|_| ApiError::internal("a node's public URL is not a valid header"))?;
        resp.headers_mut().insert(header::LOCATION, location);
        return Ok(resp);
    }
    let live = st.backend.sessions_of_token(&grant.token_id);
    if live >= st.sessions_per_token {
        info!(%room, identity = %grant.identity, live, "session refused: its join token holds the most sessions");
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_sessions",
            format!(
                "this join token already has {live} live sessions, the most allowed; end one (DELETE its resource) or use another token"
            ),
        ));
    }
    let offer_sdp = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("malformed_sdp", "the SDP offer is not UTF-8"))?;
    if offer_sdp.trim().is_empty() {
        return Err(ApiError::bad_request(
            "malformed_sdp",
            "the request body is empty; send an SDP offer",
        ));
    }
    let opened = st
        .backend
        .open_session(OpenSession {
            room: room.clone(),
            identity: grant.identity.clone(),
            name: grant.name.clone(),
            role,
            offer_sdp,
            room_limit: grant.room_limit,
            token_id: grant.token_id.clone(),
        })
        .await
        .map_err(backend_error)?;
    let location = format!("/{prefix}/{room}/{}", opened.id.as_str());
    info!(%room, identity = %grant.identity, session = %opened.id, ?role, "session created");
    let etag = sdpfrag::ice_ufrag(&opened.answer_sdp).map(sdpfrag::etag);
    let mut resp = (StatusCode::CREATED, opened.answer_sdp).into_response();
    let h = resp.headers_mut();
    if let Some(v) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        h.insert(header::ETAG, v);
    }
    // STUN/TURN for this client (RFC 9725 §4.6): used for its ICE restarts.
    let servers = st
        .ice_servers
        .servers_for(&grant.identity, std::time::SystemTime::now());
    for link in link_headers(&servers) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.append(header::LINK, v);
        }
    }
    // Where the client hears that it should reconnect elsewhere (the node drains).
    if let Ok(v) = HeaderValue::from_str(&format!(
        "<{location}/events>; rel=\"{EVENTS_REL}\"; events=\"{}\"",
        EVENTS.join(",")
    )) {
        h.append(header::LINK, v);
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("room and session ids are URL-safe ASCII"), // both are parsed to safe alphabets
    );
    Ok(resp)
}

async fn patch_session<B: MediaBackend>(
    State(st): State<SignalingState<B>>,
    Path((room, session)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (room, id, owner) = owned_session(&st, &room, &session, &headers)?;
    require_content_type(&headers, "application/trickle-ice-sdpfrag")?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("malformed_sdpfrag", "the body is not UTF-8"))?;
    let frag = IceFragment::parse(text);
    let if_match = headers
        .get(header::IF_MATCH)
        .map(|v| v.to_str().unwrap_or("").trim());
    if if_match == Some("*") {
        return restart_ice(&st, &room, &id, frag).await;
    }
    if let Some(tag) = if_match
        && tag != sdpfrag::etag(&owner.ice_ufrag)
    {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "ice_session_changed",
            "the ICE session named by If-Match has been restarted; send candidates of the current one",
        ));
    }
    if !frag.candidates.is_empty() {
        st.backend
            .add_candidates(&id, frag.candidates)
            .await
            .map_err(backend_error)?;
    }
    info!(%room, session = %id, "trickle candidates added");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// An ICE restart (RFC 9725 §4.4): the client's new credentials and candidates in,
/// the node's new ones out.
async fn restart_ice<B: MediaBackend>(
    st: &SignalingState<B>,
    room: &RoomId,
    id: &SessionId,
    frag: IceFragment,
) -> Result<Response, ApiError> {
    let (Some(ufrag), Some(pwd)) = (&frag.ufrag, &frag.pwd) else {
        return Err(ApiError::bad_request(
            "malformed_sdpfrag",
            "an ICE restart (If-Match: *) must carry a=ice-ufrag and a=ice-pwd",
        ));
    };
    let creds = RemoteIceCreds::new(ufrag, pwd).ok_or_else(|| {
        ApiError::bad_request(
            "malformed_sdpfrag",
            "a=ice-ufrag must be 4-256 and a=ice-pwd 22-256 ICE characters (letters, digits, + and /)",
        )
    })?;
    let answer = st
        .backend
        .restart_ice(id, creds)
        .await
        .map_err(backend_error)?;
    if !frag.candidates.is_empty() {
        st.backend
            .add_candidates(id, frag.candidates)
            .await
            .map_err(backend_error)?;
    }
    info!(%room, session = %id, "ICE restarted");
    let mut resp = (StatusCode::OK, sdpfrag::restart_answer(&answer)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/trickle-ice-sdpfrag"),
    );
    if let Some(v) = sdpfrag::ice_ufrag(&answer)
        .map(sdpfrag::etag)
        .and_then(|e| HeaderValue::from_str(&e).ok())
    {
        h.insert(header::ETAG, v);
    }
    Ok(resp)
}

async fn delete_session<B: MediaBackend>(
    State(st): State<SignalingState<B>>,
    Path((room, session)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (room, id, _) = owned_session(&st, &room, &session, &headers)?;
    st.backend.close_session(&id).await.map_err(backend_error)?;
    st.events.forget(&id);
    info!(%room, session = %id, "session deleted");
    Ok(StatusCode::OK.into_response())
}

/// Asks for a session's events: a JSON list of event names in, the stream's URL out
/// (`201`, `Location`). Names this node does not send are ignored.
async fn open_events<B: MediaBackend>(
    State(st): State<SignalingState<B>>,
    Path((room, session)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (room, id, owner) = owned_session(&st, &room, &session, &headers)?;
    let malformed = || {
        ApiError::bad_request(
            "malformed_events",
            format!(
                "send a JSON list of event names, such as [\"reconnect\"]; this node sends {}",
                EVENTS.join(", ")
            ),
        )
    };
    if !body.is_empty() {
        let wanted: Vec<String> = serde_json::from_slice(&body).map_err(|_| malformed())?;
        if !wanted.iter().any(|w| EVENTS.contains(&w.as_str())) {
            return Err(malformed());
        }
    }
    let backend = st.backend.clone();
    let key = st.events.open(&id, |s| backend.session_owner(s).is_some());
    let prefix = resource_prefix(owner.role);
    let location = format!("/{prefix}/{room}/{}/events/{key}", id.as_str());
    info!(%room, session = %id, "session events asked for");
    let mut resp = StatusCode::CREATED.into_response();
    resp.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("room, session and key are URL-safe ASCII"),
    );
    Ok(resp)
}

/// The path prefix of a session's resources: `whep` for players, `whip` for publishers.
fn resource_prefix(role: PeerRole) -> &'static str {
    if role == PeerRole::Subscriber {
        "whep"
    } else {
        "whip"
    }
}

/// A session's events, as `text/event-stream`; ends when the session does.
async fn events<B: MediaBackend>(
    State(st): State<SignalingState<B>>,
    Path((room, session, key)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let unknown = || ApiError::not_found("no such event stream");
    let room = parse_room(&room)?;
    let id = SessionId::parse(&session).ok_or_else(unknown)?;
    let owner = st.backend.session_owner(&id).ok_or_else(unknown)?;
    if owner.room != room || !st.events.check(&id, &key) {
        return Err(unknown());
    }
    let prefix = resource_prefix(owner.role);
    let moves = st.events.watch(room.clone());
    let backend = st.backend.clone();
    let stream = futures_util::stream::unfold(
        (moves, backend, id, room),
        move |(mut moves, backend, id, room)| async move {
            // Whether the session still lives is asked every few seconds, not each one:
            // the session table's lock is the media workers' too.
            let mut alive = tokio::time::interval(SESSION_CHECK);
            loop {
                tokio::select! {
                    to = moves.next() => {
                        let url = format!("{}/{prefix}/{room}", to.base_url.trim_end_matches('/'));
                        info!(%room, session = %id, to = %url, "session told to reconnect");
                        let data = serde_json::json!({"url": url, "reason": "node_draining"});
                        let event = Event::default().event("reconnect").data(data.to_string());
                        return Some((Ok::<_, std::convert::Infallible>(event), (moves, backend, id, room)));
                    }
                    _ = alive.tick() => {
                        // The session ended: so does its stream.
                        backend.session_owner(&id)?;
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Checks that the session exists in this room and that the caller's token is for
/// the same identity.
fn owned_session<B: MediaBackend>(
    st: &SignalingState<B>,
    room: &str,
    session: &str,
    headers: &HeaderMap,
) -> Result<(RoomId, SessionId, SessionOwner), ApiError> {
    let room = parse_room(room)?;
    let grant = authorize(&st.verifier, headers, &room)?;
    let unknown = || ApiError::not_found("no such session in this room");
    let id = SessionId::parse(session).ok_or_else(unknown)?;
    let owner = st.backend.session_owner(&id).ok_or_else(unknown)?;
    if owner.room != room {
        return Err(unknown());
    }
    if owner.identity != grant.identity {
        return Err(ApiError::forbidden(
            "the token's identity does not own this session",
        ));
    }
    Ok((room, id, owner))
}

fn parse_room(s: &str) -> Result<RoomId, ApiError> {
    RoomId::parse(s).map_err(|e| ApiError::bad_request("invalid_room", e.to_string()))
}

fn authorize(
    verifier: &JoinTokenVerifier,
    headers: &HeaderMap,
    room: &RoomId,
) -> Result<JoinGrant, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <join token>"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::unauthorized("the Authorization header must be 'Bearer <join token>'")
        })?;
    let grant = verifier.verify(token).map_err(token_error)?;
    if grant.room != *room {
        return Err(ApiError::forbidden(format!(
            "the token is for room '{}', not '{room}'",
            grant.room
        )));
    }
    Ok(grant)
}

fn require_content_type(headers: &HeaderMap, want: &str) -> Result<(), ApiError> {
    let got = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = got.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(want) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Type must be {want}, got '{got}'"),
        ))
    }
}

pub(crate) fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::Expired => {
            ApiError::new(StatusCode::UNAUTHORIZED, "token_expired", e.to_string())
        }
        other => ApiError::unauthorized(other.to_string()),
    }
}

/// The one mapping of media-plane errors to client errors (HTTP and the room protocol).
/// How long a client refused for load is asked to wait: the worker measures its
/// load over one second, so sooner would meet the same figure.
const OVERLOAD_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

pub(crate) fn backend_error(e: BackendError) -> ApiError {
    match e {
        BackendError::Sfu(SfuError::MalformedSdp(m)) => ApiError::bad_request(
            "malformed_sdp",
            format!("the SDP offer could not be parsed: {m}"),
        ),
        BackendError::Sfu(SfuError::UnusableSdp(m)) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unusable_sdp",
            format!("the SDP offer cannot be answered: {m}"),
        ),
        BackendError::Sfu(SfuError::NoUsableMedia(m)) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "no_usable_media", m)
        }
        BackendError::Sfu(SfuError::BadCandidate(m)) => {
            ApiError::bad_request("malformed_sdpfrag", format!("bad ICE candidate: {m}"))
        }
        BackendError::Sfu(SfuError::Full(n)) => ApiError::unavailable(
            "node_full",
            format!("this node is at its limit of {n} peers per worker"),
        ),
        BackendError::Sfu(SfuError::UnknownPeer) | BackendError::UnknownSession => {
            ApiError::not_found("no such session")
        }
        BackendError::Sfu(SfuError::RoomFull(n)) => ApiError::new(
            StatusCode::FORBIDDEN,
            "room_full",
            format!("the room is full ({n} participants)"),
        ),
        BackendError::Sfu(SfuError::UnknownTrack) => ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_track",
            "no such track in this room",
        ),
        BackendError::Sfu(SfuError::UnknownMid(m)) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_mid",
            format!("no negotiated m-line {m} that can carry this; renegotiate first"),
        ),
        e @ BackendError::Sfu(SfuError::WrongKind { .. }) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "wrong_kind",
            e.to_string(),
        ),
        BackendError::Sfu(SfuError::NotAllowed(m)) => ApiError::forbidden(m),
        BackendError::Draining => ApiError::unavailable(
            "draining",
            "this node is draining and accepts no new sessions",
        ),
        BackendError::Unavailable(m) => ApiError::unavailable("media_unavailable", m),
        BackendError::Overloaded { load_percent } => ApiError::unavailable(
            "node_full",
            format!(
                "this node's media worker for the room is at {load_percent} % of its capacity; try again shortly"
            ),
        )
        .with_retry_after(OVERLOAD_RETRY_AFTER),
    }
}
