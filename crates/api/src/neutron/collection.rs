//! [`Collection`]: what a Neutron resource's module says about itself (its
//! names, request types, model operations and view), rendering, and the
//! handlers every collection shares: list, show, create, update, delete and
//! tags. Nothing
//! here knows a particular resource; a resource's own calls (router actions,
//! port forwardings) are its module's, through [`Collection::call`].

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use model::{Caller, Cloud, Facet, FacetIds, ModelError, Stored, TagEdit, Timestamp};
use serde_json::{Value, json};

use super::body::{self, Attrs};
use super::query::{self, ListQuery};
use super::request::{base_url, caller, if_match, query_pairs};
use super::views::{STANDARD, View, standard_attribute};
use crate::error::ApiError;
use crate::state::{App, now};

/// A Neutron collection, implemented by its model type in its own module.
/// Its kind, standard attributes, visibility and lookups come from the
/// model's [`Stored`].
pub trait Collection: Stored + Send + Sync {
    /// Its URL segment (`security-groups`) and JSON keys.
    const PATH: &'static str;
    const SINGULAR: &'static str;
    const PLURAL: &'static str;
    /// The standard attributes it has: all of them by default; fewer for
    /// resources Neutron gives no standard attributes (metering, RBAC
    /// policies, rule templates), which then have no tags either.
    const STANDARD: &'static [&'static str] = &STANDARD;
    /// The attributes beyond the standard ones, in the order Neutron shows them.
    const ATTRIBUTES: &'static [&'static str];
    /// Attributes a list may filter on that no view shows (Neutron's
    /// `is_visible: False, is_filter: True`), read through `own_attribute`.
    const FILTER_ONLY: &'static [&'static str] = &[];
    /// Whether it has the standard `name` (rules and floating IPs do not).
    const NAMED: bool = true;
    /// Listing it gives the caller's project its default security group
    /// first, as Neutron's listing of security groups does (the only read
    /// that writes).
    const LIST_ENSURES_DEFAULT_GROUP: bool = false;

    type Create: Send;
    type Update: Send;

    fn parse_create(a: Attrs) -> Result<Self::Create, ApiError>;
    fn parse_update(a: Attrs) -> Result<Self::Update, ApiError>;

    /// Apply `action` to the model; the resource as it then is (`None`
    /// once deleted).
    fn apply(
        cloud: &mut Cloud,
        caller: &Caller,
        action: Action<Self>,
        now: Timestamp,
    ) -> Result<Option<Self>, ModelError>;

    /// One attribute of its own (not a standard one); `None` if hidden from `caller`.
    fn own_attribute(&self, cloud: &Cloud, caller: &Caller, name: &str) -> Option<Value>;

    /// Checks of a create that need facts beyond the model (the zones hosts
    /// registered in): none by default.
    fn check_create(_app: &App, _req: &Self::Create) -> Result<(), ApiError> {
        Ok(())
    }

    /// Gives an attribute the value facts beyond the model make it (a port's
    /// binding), the same for filters, sorting and views. As is by default.
    fn adjust(&self, _app: &App, _cloud: &Cloud, _name: &str, _value: &mut Value) {}

    /// The model's facet, and the value to look up in it, that holds every
    /// record whose attribute `name` as shown can be `wanted`: a superset of
    /// the filter's matches, which the list then checks one by one (`None`:
    /// the list scans). The project and the name by default; an attribute
    /// `adjust` changes must have none.
    fn facet<'w>(name: &str, wanted: &'w str) -> Option<(Facet, &'w str)> {
        standard_facet::<Self>(name, wanted)
    }

    /// Its calls beyond CRUD and tags, `/{id}/{sub}[/{item}]`: none by default.
    fn call(
        _app: Arc<App>,
        _headers: HeaderMap,
        _call: Call,
    ) -> impl Future<Output = Result<Response, ApiError>> + Send {
        async { Err(ApiError::not_found()) }
    }
}

/// What a request asks of a collection, parsed.
pub enum Action<C: Collection> {
    Create(C::Create),
    /// The resource's id and the changes.
    Update(String, C::Update),
    Delete(String),
}

/// A request below one resource that is not about its tags.
pub struct Call {
    pub method: Method,
    pub id: String,
    pub sub: String,
    pub item: Option<String>,
    pub body: Bytes,
}

/// An attribute of `r` as `caller` sees it, standard or its own.
pub fn attribute<C: Collection>(
    r: &C,
    cloud: &Cloud,
    caller: &Caller,
    name: &str,
) -> Option<Value> {
    if (name == "name" && !C::NAMED) || (STANDARD.contains(&name) && !C::STANDARD.contains(&name)) {
        return None;
    }
    if STANDARD.contains(&name) {
        return C::STANDARD
            .contains(&name)
            .then(|| standard_attribute(r.standard(), name))
            .flatten();
    }
    r.own_attribute(cloud, caller, name)
}

/// The facets of the standard attributes a collection shows: its project
/// (`tenant_id` too) and its name.
pub fn standard_facet<'w, C: Collection>(name: &str, wanted: &'w str) -> Option<(Facet, &'w str)> {
    if !C::STANDARD.contains(&name) {
        return None;
    }
    match name {
        "project_id" | "tenant_id" => Some((Facet::Project, wanted)),
        "name" if C::NAMED => Some((Facet::Name, wanted)),
        _ => None,
    }
}

/// Every attribute name a list may filter on: what it shows, and its
/// filter-only attributes.
pub fn attribute_names<C: Collection>() -> Vec<&'static str> {
    C::STANDARD
        .iter()
        .chain(C::ATTRIBUTES)
        .chain(C::FILTER_ONLY)
        .copied()
        .collect()
}

/// The whole object, or only `fields` when some are asked for.
pub fn render<C: Collection>(r: &C, cloud: &Cloud, caller: &Caller, fields: &[String]) -> View {
    let names = C::STANDARD.iter().chain(C::ATTRIBUTES);
    names
        .filter(|n| fields.is_empty() || fields.iter().any(|f| f == *n))
        .filter_map(|n| attribute(r, cloud, caller, n).map(|v| ((*n).to_owned(), v)))
        .collect()
}

/// An attribute as shown: the model's value, adjusted.
fn shown<C: Collection>(
    app: &App,
    cloud: &Cloud,
    caller: &Caller,
    r: &C,
    name: &str,
) -> Option<Value> {
    let mut value = attribute(r, cloud, caller, name)?;
    r.adjust(app, cloud, name, &mut value);
    Some(value)
}

/// The whole view of `r` (or only `fields`), adjusted.
fn view<C: Collection>(
    app: &App,
    cloud: &Cloud,
    caller: &Caller,
    r: &C,
    fields: &[String],
) -> View {
    let mut view = render(r, cloud, caller, fields);
    for (name, value) in &mut view {
        r.adjust(app, cloud, name, value);
    }
    view
}

pub async fn list<C: Collection>(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&app, &headers)?;
    let q = ListQuery::parse(query_pairs(raw)?, &attribute_names::<C>())?;
    if C::LIST_ENSURES_DEFAULT_GROUP {
        app.ensure_project(&caller).await?;
    }
    let url = format!("{}/v2.0/{}", base_url(&headers), C::PATH);
    let (items, links) = {
        let cloud = app.read();
        list_page::<C>(&app, &cloud, &caller, &q, &url)?
    };
    let mut out = serde_json::Map::new();
    out.insert(C::PLURAL.into(), Value::Array(items));
    if !links.is_empty() {
        out.insert(format!("{}_links", C::PLURAL), Value::Array(links));
    }
    Ok(Json(Value::Object(out)))
}

/// Filter, sort and page the collection reading only the attributes the
/// query names, then render the page: a list costs one whole render per item
/// returned. Only the candidates of the narrowest index are read: a filter
/// the model indexes, or what the caller may see (a tenant's project and
/// what is shared with it); in id order (the default), with or without
/// them, only up to the page's end.
fn list_page<C: Collection>(
    app: &App,
    cloud: &Cloud,
    caller: &Caller,
    q: &ListQuery,
    url: &str,
) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
    let attribute = |r: &C, name: &str| shown(app, cloud, caller, r, name);
    let matches = |r: &&C| {
        r.visible_to(cloud, caller) && q.matches(&r.standard().tags, |name| attribute(r, name))
    };
    let id = id_of::<C>;
    let candidates = narrowest::<C>(cloud, caller, q);
    let item = |id: &str| C::get(cloud, id).filter(matches);
    let (page, links) = match (&candidates, q.id_order()) {
        (Some(sets), Some(ascending)) => q.page_by_id(sets, ascending, item, id, url)?,
        (None, Some(ascending)) => q.page_by_id(&[cloud.ids(C::KIND)], ascending, item, id, url)?,
        (Some(sets), None) => {
            let ids: BTreeSet<&str> = sets.iter().flat_map(|s| s.iter().map(|id| &**id)).collect();
            let matching = ids
                .into_iter()
                .filter_map(|id| C::get(cloud, id))
                .filter(matches)
                .collect();
            q.page(matching, id, |r, name| attribute(r, name), url)?
        }
        (None, _) => {
            let matching = C::all(cloud).filter(matches).collect();
            q.page(matching, id, |r, name| attribute(r, name), url)?
        }
    };
    let items = page
        .into_iter()
        .map(|r| Value::Object(view(app, cloud, caller, r, q.fields())))
        .collect();
    Ok((items, links))
}

fn id_of<'a, C: Collection>(r: &'a &C) -> &'a str {
    r.standard().id.as_str()
}

/// The smallest of the candidate id sets: those of each indexed filter (one
/// set per value it allows: every record that filter can match is in one),
/// and those of what `caller` may see. `None` when neither is indexed (an
/// admin's list without an indexed filter). A value that matches an absent
/// attribute (empty, `None`) is in no index.
fn narrowest<'c, C: Collection>(
    cloud: &'c Cloud,
    caller: &Caller,
    q: &ListQuery,
) -> Option<Vec<&'c FacetIds>> {
    q.filters()
        .filter_map(|(name, wanted)| {
            wanted
                .iter()
                .map(|w| {
                    let (facet, value) = C::facet(name, w).filter(|_| w != "None")?;
                    cloud.faceted(C::KIND, facet, value)
                })
                .collect::<Option<Vec<_>>>()
        })
        .chain(C::candidates(cloud, caller))
        .min_by_key(|sets| sets.iter().map(|s| s.len()).sum::<usize>())
}

/// The resource `id` if `caller` may see it, else `NotFound`.
fn visible<'a, C: Collection>(
    cloud: &'a Cloud,
    caller: &Caller,
    id: &str,
) -> Result<&'a C, ApiError> {
    C::get(cloud, id)
        .filter(|r| r.visible_to(cloud, caller))
        .ok_or_else(|| ModelError::not_found(C::KIND, id).into())
}

pub async fn show<C: Collection>(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&app, &headers)?;
    let fields: Vec<String> = query_pairs(raw)?
        .into_iter()
        .filter(|(k, _)| k == "fields")
        .flat_map(|(_, v)| query::field_names(&v).collect::<Vec<_>>())
        .collect();
    let cloud = app.read();
    let r = visible::<C>(&cloud, &caller, &id)?;
    Ok(Json(
        json!({ C::SINGULAR: view(&app, &cloud, &caller, r, &fields) }),
    ))
}

pub async fn create<C: Collection>(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = caller(&app, &headers)?;
    let (items, bulk) = body::resources(&body, C::SINGULAR, C::PLURAL)?;
    let requests = items
        .into_iter()
        .map(|m| C::parse_create(Attrs::new(m, "POST")))
        .collect::<Result<Vec<_>, ApiError>>()?;
    for req in &requests {
        C::check_create(&app, req)?;
    }
    let now = now();
    let created = app
        .write(|cloud| {
            let mut made = Vec::with_capacity(requests.len());
            for req in requests {
                made.extend(C::apply(cloud, &caller, Action::Create(req), now)?);
            }
            Ok(made
                .iter()
                .map(|r| Value::Object(view(&app, cloud, &caller, r, &[])))
                .collect::<Vec<_>>())
        })
        .await?;
    let body = if bulk {
        json!({ C::PLURAL: created })
    } else {
        json!({ C::SINGULAR: created.into_iter().next() })
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn update<C: Collection>(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&app, &headers)?;
    let revision = if_match(&headers)?;
    let (mut items, bulk) = body::resources(&body, C::SINGULAR, C::PLURAL)?;
    let (Some(attrs), false) = (items.pop(), bulk) else {
        return Err(ApiError::bad_request(format!(
            "Unable to find '{}' in request body",
            C::SINGULAR
        )));
    };
    let req = C::parse_update(Attrs::new(attrs, "PUT"))?;
    let now = now();
    let view = app
        .write(|cloud| {
            if let Some(r) = revision {
                cloud.check_revision(&caller, C::KIND, &id, r)?;
            }
            let r = C::apply(cloud, &caller, Action::Update(id.clone(), req), now)?;
            Ok(r.map(|r| view(&app, cloud, &caller, &r, &[])))
        })
        .await?;
    Ok(Json(json!({ C::SINGULAR: view })))
}

pub async fn delete<C: Collection>(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let caller = caller(&app, &headers)?;
    let revision = if_match(&headers)?;
    let now = now();
    app.write(|cloud| {
        if let Some(r) = revision {
            cloud.check_revision(&caller, C::KIND, &id, r)?;
        }
        C::apply(cloud, &caller, Action::Delete(id.clone()), now)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// === /{id}/{sub}[/{item}]: tags here, anything else the collection's `call` ===

pub async fn sub<C: Collection>(
    State(app): State<Arc<App>>,
    method: Method,
    Path((id, sub)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    below::<C>(
        app,
        headers,
        Call {
            method,
            id,
            sub,
            item: None,
            body,
        },
    )
    .await
}

pub async fn item<C: Collection>(
    State(app): State<Arc<App>>,
    method: Method,
    Path((id, sub, item)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let call = Call {
        method,
        id,
        sub,
        item: Some(item),
        body,
    };
    below::<C>(app, headers, call).await
}

/// `/{id}/tags[/{tag}]`, or else the collection's own call.
async fn below<C: Collection>(
    app: Arc<App>,
    headers: HeaderMap,
    call: Call,
) -> Result<Response, ApiError> {
    if call.sub != "tags" || !C::STANDARD.contains(&"tags") {
        return C::call(app, headers, call).await;
    }
    let (id, headers) = (call.id.as_str(), &headers);
    match (call.method, call.item) {
        (Method::GET, None) => {
            let tags = current_tags::<C>(&app, id, headers).await?;
            Ok(Json(json!({ "tags": tags })).into_response())
        }
        (Method::PUT, None) => {
            let edit = TagEdit::Replace(tag_list(&call.body)?);
            let tags = edit_tags::<C>(&app, id, headers, edit).await?;
            Ok(Json(json!({ "tags": tags })).into_response())
        }
        (Method::DELETE, None) => {
            edit_tags::<C>(&app, id, headers, TagEdit::Replace(Vec::new())).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Method::GET, Some(tag)) => {
            if current_tags::<C>(&app, id, headers).await?.contains(&tag) {
                Ok(StatusCode::NO_CONTENT.into_response())
            } else {
                Err(ModelError::TagNotFound { tag }.into())
            }
        }
        (Method::PUT, Some(tag)) => {
            edit_tags::<C>(&app, id, headers, TagEdit::Add(tag)).await?;
            Ok(StatusCode::CREATED.into_response())
        }
        (Method::DELETE, Some(tag)) => {
            edit_tags::<C>(&app, id, headers, TagEdit::Remove(tag)).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(ApiError::not_found()),
    }
}

async fn edit_tags<C: Collection>(
    app: &App,
    id: &str,
    headers: &HeaderMap,
    edit: TagEdit,
) -> Result<Vec<String>, ApiError> {
    let caller = caller(app, headers)?;
    let now = now();
    app.write(|cloud| cloud.edit_tags(&caller, C::KIND, id, edit, now))
        .await
}

async fn current_tags<C: Collection>(
    app: &App,
    id: &str,
    headers: &HeaderMap,
) -> Result<Vec<String>, ApiError> {
    let caller = caller(app, headers)?;
    let cloud = app.read();
    Ok(visible::<C>(&cloud, &caller, id)?.standard().tags.clone())
}

/// The body of `PUT …/tags`: `{"tags": [...]}`.
fn tag_list(body: &[u8]) -> Result<Vec<String>, ApiError> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::bad_request("Body contains invalid data"))?;
    body.get("tags")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::bad_request("Unable to find 'tags' in request body"))?
        .iter()
        .map(|t| {
            t.as_str()
                .map(str::to_owned)
                .ok_or_else(|| ApiError::invalid_input(format!("'{t}' is not a valid string")))
        })
        .collect()
}
