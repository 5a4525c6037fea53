//! The dashboard's page and JSON API. Every read is cut to the caller's
//! [`Scope`]; every action checks it again on the server's side.

use std::convert::Infallible;
use std::error::Error as _;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use fleet::dead::{self, DeadTask};
use fleet::{contract, Error};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{AppState, Refused, Scope, Snapshot};

/// Dead letters shown at most, newest first.
const DEAD_SHOWN: usize = 500;
/// Payload shown of a dead letter or a result: characters of text, bytes of hex.
const PREVIEW_CHARS: usize = 200;
const PREVIEW_BYTES: usize = 64;

pub(super) async fn page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("page/index.html"),
    )
}

pub(super) async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("page/app.js"),
    )
}

pub(super) async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("page/app.css"),
    )
}

/// A snapshot as `scope` may see it: a tenant sees its own kinds and dead
/// letters, not the groups, nodes or throughput every tenant shares.
pub(super) fn scoped(snapshot: &Snapshot, scope: &Scope) -> Value {
    let Scope::Tenant(tenant) = scope else {
        let mut all = serde_json::to_value(snapshot).unwrap_or_default();
        all["scope"] = json!({ "operator": true });
        return all;
    };
    let status = snapshot.status.as_ref().map(|s| {
        let own = |counts: &[fleet::status::KindCount]| -> Vec<Value> {
            counts
                .iter()
                .filter(|c| c.tenant.as_deref() == Some(tenant))
                .map(|c| json!({ "kind": c.kind, "count": c.count }))
                .collect()
        };
        let sum = |v: &[Value]| v.iter().filter_map(|c| c["count"].as_u64()).sum::<u64>();
        let (kinds, dead_kinds) = (own(&s.kinds), own(&s.dead_kinds));
        json!({
            "tasks": sum(&kinds), "dead": sum(&dead_kinds), "kinds": kinds,
            "dead_kinds": dead_kinds, "groups": [],
        })
    });
    json!({
        "at": snapshot.at, "status": status, "error": snapshot.error,
        "nodes": [], "throughput": [], "scope": { "tenant": tenant },
    })
}

pub(super) async fn state(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, Refused> {
    let scope = app.tokens.read(&headers)?;
    let snapshot = app.snapshot.borrow().clone();
    Ok(Json(scoped(&snapshot, &scope)))
}

/// Server-sent events: one `state` event per reading of the fleet.
pub(super) async fn events(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Refused> {
    let scope = app.tokens.read(&headers)?;
    let mut rx = app.snapshot.clone();
    rx.mark_changed();
    let stream = futures::stream::unfold((rx, scope), |(mut rx, scope)| async move {
        rx.changed().await.ok()?;
        let snapshot = rx.borrow_and_update().clone();
        let event = Event::default()
            .event("state")
            .data(scoped(&snapshot, &scope).to_string());
        Some((Ok(event), (rx, scope)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A payload as a person may look at it: text when it is printable UTF-8,
/// else hex; cut short either way.
pub(super) fn preview(payload: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(payload) {
        Ok(text) if !text.chars().any(|c| c.is_control() && !c.is_whitespace()) => {
            let mut shown: String = text.chars().take(PREVIEW_CHARS).collect();
            if shown.len() < text.len() {
                shown.push('…');
            }
            (shown, "text")
        }
        _ => {
            let mut shown = hex::encode(&payload[..payload.len().min(PREVIEW_BYTES)]);
            if payload.len() > PREVIEW_BYTES {
                shown.push('…');
            }
            (shown, "hex")
        }
    }
}

#[derive(Serialize)]
struct DeadView<'a> {
    #[serde(flatten)]
    letter: &'a DeadTask,
    preview: String,
    preview_as: &'static str,
}

fn visible(letter: &DeadTask, scope: &Scope) -> bool {
    match scope {
        Scope::Operator => true,
        Scope::Tenant(t) => letter.tenant.as_deref() == Some(t.as_str()),
    }
}

/// What a library error means over HTTP: the user's permission, a missing
/// setup, or the server out of reach.
fn failed(err: Error) -> Refused {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    if text.to_lowercase().contains("permission") {
        return Refused(StatusCode::FORBIDDEN, text);
    }
    // A refused publish only times out its request; the refusal itself
    // came on the side.
    if let Some(violation) = fleet::connect::recent_permission_violation(Duration::from_secs(60)) {
        return Refused(
            StatusCode::FORBIDDEN,
            format!("{text}: NATS refused the dashboard's user ({violation}); run it as a user allowed to do this"),
        );
    }
    Refused(StatusCode::BAD_GATEWAY, text)
}

async fn letters(app: &AppState, scope: &Scope) -> Result<Vec<DeadTask>, Refused> {
    let js = async_nats::jetstream::new(app.client.clone());
    let all = dead::list(&js, None).await.map_err(failed)?;
    Ok(all.into_iter().filter(|d| visible(d, scope)).collect())
}

pub(super) async fn dead_letters(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, Refused> {
    let scope = app.tokens.read(&headers)?;
    let letters = letters(&app, &scope).await?;
    let views: Vec<DeadView> = letters
        .iter()
        .rev()
        .take(DEAD_SHOWN)
        .map(|letter| {
            let (preview, preview_as) = preview(&letter.payload);
            DeadView {
                letter,
                preview,
                preview_as,
            }
        })
        .collect();
    Ok(Json(json!({ "total": letters.len(), "letters": views })))
}

#[derive(Deserialize)]
pub(super) struct Chosen {
    seqs: Vec<u64>,
}

/// The `DEAD` sequences of `chosen` that `scope` may act on, as ids for
/// [`dead::replay`] and [`dead::delete`]; refused if any is not its own.
async fn own(app: &AppState, scope: &Scope, chosen: &Chosen) -> Result<Vec<String>, Refused> {
    if chosen.seqs.is_empty() {
        return Err(Refused(
            StatusCode::BAD_REQUEST,
            "choose at least one dead letter".into(),
        ));
    }
    if let Scope::Tenant(_) = scope {
        let mine: Vec<u64> = letters(app, scope).await?.iter().map(|d| d.seq).collect();
        if let Some(other) = chosen.seqs.iter().find(|s| !mine.contains(s)) {
            return Err(Refused(
                StatusCode::FORBIDDEN,
                format!("dead letter {other} is not yours"),
            ));
        }
    }
    Ok(chosen.seqs.iter().map(u64::to_string).collect())
}

pub(super) async fn replay(
    State(app): State<AppState>,
    headers: HeaderMap,
    Json(chosen): Json<Chosen>,
) -> Result<Json<Value>, Refused> {
    let scope = app.tokens.act(&headers)?;
    let ids = own(&app, &scope, &chosen).await?;
    let js = async_nats::jetstream::new(app.client.clone());
    let done = dead::replay(&js, None, &ids).await.map_err(failed)?;
    let replayed: Vec<Value> = done
        .replayed
        .iter()
        .map(|d| json!({ "seq": d.seq, "id": d.id }))
        .collect();
    let skipped: Vec<Value> = done
        .skipped
        .iter()
        .map(|(d, why)| json!({ "seq": d.seq, "id": d.id, "why": why }))
        .collect();
    Ok(Json(json!({ "replayed": replayed, "skipped": skipped })))
}

pub(super) async fn delete(
    State(app): State<AppState>,
    headers: HeaderMap,
    Json(chosen): Json<Chosen>,
) -> Result<Json<Value>, Refused> {
    let scope = app.tokens.act(&headers)?;
    let ids = own(&app, &scope, &chosen).await?;
    let js = async_nats::jetstream::new(app.client.clone());
    let gone = dead::delete(&js, None, &ids).await.map_err(failed)?;
    Ok(Json(
        json!({ "deleted": gone.iter().map(|d| d.seq).collect::<Vec<_>>() }),
    ))
}

#[derive(Deserialize)]
pub(super) struct Lookup {
    id: String,
}

/// A task's kept result, by task id: its headers and a preview.
pub(super) async fn task(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(lookup): Query<Lookup>,
) -> Result<Json<Value>, Refused> {
    let scope = app.tokens.read(&headers)?;
    fleet::check_task_id(&lookup.id)
        .map_err(|e| Refused(StatusCode::BAD_REQUEST, e.to_string()))?;
    let own = contract::default_reply(&lookup.id);
    let subjects = match &scope {
        Scope::Operator => vec![own.clone(), contract::in_tenant(Some("*"), &own)],
        Scope::Tenant(t) => vec![contract::in_tenant(Some(t), &own)],
    };
    let js = async_nats::jetstream::new(app.client.clone());
    let results = js
        .get_stream_no_info(contract::RESULTS_STREAM)
        .await
        .map_err(|e| Refused(StatusCode::BAD_GATEWAY, e.to_string()))?;
    for subject in subjects {
        let Ok(msg) = results
            .direct_get_next_for_subject(subject.as_str(), None)
            .await
        else {
            continue;
        };
        let headers: serde_json::Map<String, Value> = msg
            .headers
            .iter()
            .map(|(name, values)| {
                let joined: Vec<&str> = values.iter().map(|v| v.as_str()).collect();
                (name.to_string(), Value::from(joined.join(", ")))
            })
            .collect();
        let payload: &Bytes = &msg.payload;
        let (preview, preview_as) = preview(payload);
        return Ok(Json(json!({
            "found": true, "id": lookup.id, "subject": msg.subject.to_string(), "seq": msg.sequence,
            "headers": headers, "bytes": payload.len(), "preview": preview, "preview_as": preview_as,
        })));
    }
    Ok(Json(json!({ "found": false, "id": lookup.id })))
}

/// Asks one node (by its service id) to drain.
pub(super) async fn drain(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let scope = match app.tokens.act(&headers) {
        Ok(scope) => scope,
        Err(refused) => return refused.into_response(),
    };
    if scope != Scope::Operator {
        return Refused(
            StatusCode::FORBIDDEN,
            "only the operator drains nodes".into(),
        )
        .into_response();
    }
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Refused(StatusCode::BAD_REQUEST, "not a node id".into()).into_response();
    }
    let subject = format!("{}{id}.drain", contract::CONTROL_PREFIX);
    let request = app.client.request(subject, Bytes::new());
    match tokio::time::timeout(Duration::from_secs(3), request).await {
        Ok(Ok(answer)) => {
            let body: Value =
                serde_json::from_slice(&answer.payload).unwrap_or(json!({ "draining": true }));
            Json(body).into_response()
        }
        Ok(Err(err)) => Refused(
            StatusCode::BAD_GATEWAY,
            format!("the node did not answer: {err}"),
        )
        .into_response(),
        Err(_) => Refused(
            StatusCode::GATEWAY_TIMEOUT,
            "the node did not answer within 3s".into(),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_show_text_as_text_and_bytes_as_hex() {
        assert_eq!(preview(b"hello <b>"), ("hello <b>".to_string(), "text"));
        assert_eq!(preview(&[0, 159, 1]), ("009f01".to_string(), "hex"));
        let long = "x".repeat(500);
        let (shown, _) = preview(long.as_bytes());
        assert_eq!(shown.chars().count(), PREVIEW_CHARS + 1);
        assert!(preview(&[7u8; 100]).0.ends_with('…'));
    }

    #[test]
    fn a_tenant_sees_only_its_own_kinds() {
        use fleet::status::{KindCount, Status};
        let count = |tenant: Option<&str>, kind: &str, count| KindCount {
            tenant: tenant.map(str::to_string),
            kind: kind.into(),
            priority: None,
            count,
        };
        let snapshot = Snapshot {
            status: Some(Status {
                tasks: 9,
                results: 4,
                dead: 3,
                groups: Vec::new(),
                kinds: vec![
                    count(None, "echo", 5),
                    count(Some("alice"), "echo", 3),
                    count(Some("bob"), "sha256", 1),
                ],
                dead_kinds: vec![count(Some("bob"), "fail", 3)],
            }),
            ..Snapshot::default()
        };
        let alice = scoped(&snapshot, &Scope::Tenant("alice".into()));
        assert_eq!(alice["status"]["tasks"], 3);
        assert_eq!(
            alice["status"]["kinds"],
            json!([{ "kind": "echo", "count": 3 }])
        );
        assert_eq!(alice["status"]["dead"], 0);
        assert!(alice["status"]["results"].is_null() && alice["nodes"] == json!([]));
        let all = scoped(&snapshot, &Scope::Operator);
        assert_eq!(all["status"]["tasks"], 9);
    }
}
