//! List queries: attribute filters (repeated key = OR), tag filters, `fields`,
//! `sort_key`/`sort_dir`, and `limit`/`marker` pagination with `*_links`.
//! Any attribute a client sees can be used; only the ones a query names are read.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound;
use std::sync::Arc;

use model::FacetIds;
use serde_json::{Value, json};

use crate::error::ApiError;

/// A parsed list query.
#[derive(Debug, Default)]
pub struct ListQuery {
    filters: BTreeMap<String, Vec<String>>,
    tags_all: Vec<String>,
    tags_any: Vec<String>,
    not_tags_all: Vec<String>,
    not_tags_any: Vec<String>,
    fields: Vec<String>,
    sort: Vec<(String, bool)>,
    limit: Option<usize>,
    marker: Option<String>,
    page_reverse: bool,
    /// The query as given, minus marker/page_reverse, to build page links.
    link_base: Vec<(String, String)>,
}

fn tag_list(v: &str) -> impl Iterator<Item = String> + '_ {
    v.split(',').filter(|t| !t.is_empty()).map(str::to_owned)
}

impl ListQuery {
    /// Parse `pairs`; `attributes` are the names this collection can filter and sort on.
    pub fn parse(pairs: Vec<(String, String)>, attributes: &[&str]) -> Result<Self, ApiError> {
        let mut q = ListQuery::default();
        let mut dirs = Vec::new();
        let mut keys = Vec::new();
        for (k, v) in pairs {
            if k != "marker" && k != "page_reverse" {
                q.link_base.push((k.clone(), v.clone()));
            }
            match k.as_str() {
                "fields" => q.fields.extend(field_names(&v)),
                "sort_key" => keys.push(v),
                "sort_dir" => dirs.push(v),
                "limit" => {
                    let n: usize = v.parse().map_err(|_| {
                        ApiError::bad_request(format!(
                            "Limit must be an integer 0 or greater and not '{v}'"
                        ))
                    })?;
                    q.limit = (n > 0).then_some(n);
                }
                "marker" => q.marker = Some(v),
                "page_reverse" => q.page_reverse = v.eq_ignore_ascii_case("true"),
                "tags" => q.tags_all.extend(tag_list(&v)),
                "tags-any" => q.tags_any.extend(tag_list(&v)),
                "not-tags" => q.not_tags_all.extend(tag_list(&v)),
                "not-tags-any" => q.not_tags_any.extend(tag_list(&v)),
                _ => {
                    if !attributes.contains(&k.as_str()) {
                        return Err(ApiError::bad_request(format!(
                            "[{k}] is invalid attribute for filtering"
                        )));
                    }
                    q.filters.entry(k).or_default().push(v);
                }
            }
        }
        if !dirs.is_empty() && dirs.len() != keys.len() {
            return Err(ApiError::bad_request(
                "The number of sort_keys and sort_dirs must be same",
            ));
        }
        for (i, key) in keys.into_iter().enumerate() {
            if !attributes.contains(&key.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "{key} is an invalid attribute for sort_keys"
                )));
            }
            let asc = match dirs.get(i).map(String::as_str) {
                None | Some("asc") => true,
                Some("desc") => false,
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "{other} is an invalid value for sort_dirs, valid values are: 'asc', 'desc'"
                    )));
                }
            };
            q.sort.push((key, asc));
        }
        Ok(q)
    }

    /// Whether a resource passes the filters; `attribute` gives its attributes
    /// by name (`None`: absent), and only those the query names are asked for.
    pub fn matches(&self, tags: &[String], attribute: impl Fn(&str) -> Option<Value>) -> bool {
        let has = |t: &String| tags.contains(t);
        if !self.tags_all.iter().all(has)
            || (!self.tags_any.is_empty() && !self.tags_any.iter().any(has))
            || (!self.not_tags_all.is_empty() && self.not_tags_all.iter().all(has))
            || self.not_tags_any.iter().any(has)
        {
            return false;
        }
        self.filters.iter().all(|(attr, wanted)| {
            let value = attribute(attr).unwrap_or(Value::Null);
            wanted.iter().any(|w| value_matches(attr, &value, w))
        })
    }

    /// The attributes to render (empty: all of them).
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// Sort and paginate `items` (already filtered): returns the page and its
    /// links. `id` and `attribute` read an item; only sort keys are read.
    pub fn page<T>(
        &self,
        items: Vec<T>,
        id: impl Fn(&T) -> &str,
        attribute: impl Fn(&T, &str) -> Option<Value>,
        collection_url: &str,
    ) -> Result<(Vec<T>, Vec<Value>), ApiError> {
        let mut keyed: Vec<(Vec<Option<Value>>, T)> = items
            .into_iter()
            .map(|item| {
                let keys = self.sort.iter().map(|(k, _)| attribute(&item, k)).collect();
                (keys, item)
            })
            .collect();
        keyed.sort_by(|(ka, a), (kb, b)| {
            ka.iter()
                .zip(kb)
                .zip(&self.sort)
                .map(|((x, y), (_, asc))| {
                    let o = compare(x.as_ref(), y.as_ref());
                    if *asc { o } else { o.reverse() }
                })
                .find(|o| o.is_ne())
                .unwrap_or_else(|| id(a).cmp(id(b)))
        });
        let mut items: Vec<T> = keyed.into_iter().map(|(_, item)| item).collect();
        if self.limit.is_none() && self.marker.is_none() {
            return Ok((items, Vec::new()));
        }
        let at = match &self.marker {
            None => None,
            Some(m) => Some(
                items
                    .iter()
                    .position(|i| id(i) == m)
                    .ok_or_else(|| marker_not_found(m))?,
            ),
        };
        let limit = self.limit.unwrap_or(usize::MAX);
        let (start, end) = match (at, self.page_reverse) {
            (Some(i), true) => (i.saturating_sub(limit), i),
            (Some(i), false) => (i + 1, items.len().min((i + 1).saturating_add(limit))),
            (None, _) => (0, items.len().min(limit)),
        };
        let (more_before, more_after) = (start > 0, end < items.len());
        let page: Vec<T> = items.drain(start..end).collect();
        let links = self.links(&page, id, more_before, more_after, collection_url);
        Ok((page, links))
    }

    /// Whether the list is in id order, and ascending: no sort key, or `id`
    /// alone (ties are broken by id, so these are the same order).
    pub fn id_order(&self) -> Option<bool> {
        match self.sort.as_slice() {
            [] => Some(true),
            [(key, ascending)] if key == "id" => Some(*ascending),
            _ => None,
        }
    }

    /// The attribute filters: a name and the values any of which it may have.
    pub fn filters(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.filters.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// What [`ListQuery::page`] answers for a list in id order
    /// ([`ListQuery::id_order`]), read from `candidates` (sets of ids, in
    /// order, holding at least every match) from the marker on: a page costs
    /// the candidates it walks past, not the collection. `item` is the item
    /// of an id if it matches.
    pub fn page_by_id<T>(
        &self,
        candidates: &[&FacetIds],
        ascending: bool,
        item: impl Fn(&str) -> Option<T>,
        id: impl Fn(&T) -> &str,
        collection_url: &str,
    ) -> Result<(Vec<T>, Vec<Value>), ApiError> {
        let marker = match &self.marker {
            Some(m) if item(m).is_none() => return Err(marker_not_found(m)),
            m => m.as_deref(),
        };
        // A reversed page is the one before the marker, walked toward the start.
        let backward = marker.is_some() && self.page_reverse;
        let limit = self.limit.unwrap_or(usize::MAX);
        let mut page: Vec<T> = merged(candidates, marker, ascending != backward)
            .filter_map(&item)
            .take(limit.saturating_add(1))
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        if backward {
            page.reverse();
        }
        let (more_before, more_after) = if backward {
            (more, true)
        } else {
            (marker.is_some(), more)
        };
        let links = self.links(&page, id, more_before, more_after, collection_url);
        Ok((page, links))
    }

    /// A page's `next` and `previous` links (only when a limit is given).
    fn links<T>(
        &self,
        page: &[T],
        id: impl Fn(&T) -> &str,
        more_before: bool,
        more_after: bool,
        collection_url: &str,
    ) -> Vec<Value> {
        let mut links = Vec::new();
        if self.limit.is_none() {
            return links;
        }
        let link = |rel: &str, marker: &str, reverse: bool| {
            let mut pairs = self.link_base.clone();
            pairs.push(("marker".into(), marker.to_owned()));
            if reverse {
                pairs.push(("page_reverse".into(), "True".into()));
            }
            let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
            json!({"rel": rel, "href": format!("{collection_url}?{query}")})
        };
        if more_after && let Some(last) = page.last() {
            links.push(link("next", id(last), false));
        }
        if (more_before || self.marker.is_some())
            && let Some(first) = page.first()
        {
            links.push(link("previous", id(first), true));
        }
        links
    }

    /// A list answer built from rendered views of things that are no stored
    /// collection (agents, service providers): filtered, paged, trimmed to
    /// `fields`, with `{plural}_links`. Views without an `id` page by their
    /// `name`, or their `subnet_id`.
    pub fn render_values(
        &self,
        views: Vec<Value>,
        collection_url: &str,
        plural: &str,
    ) -> Result<Value, ApiError> {
        let views: Vec<Value> = views
            .into_iter()
            .filter(|v| self.matches(&[], |name| v.get(name).cloned()))
            .collect();
        let (page, links) = self.page(views, view_key, |v, k| v.get(k).cloned(), collection_url)?;
        let page: Vec<Value> = page
            .into_iter()
            .map(|mut v| {
                if let (false, Some(m)) = (self.fields.is_empty(), v.as_object_mut()) {
                    m.retain(|k, _| self.fields.iter().any(|f| f == k));
                }
                v
            })
            .collect();
        let mut out = json!({ plural: page });
        if !links.is_empty() {
            out[format!("{plural}_links")] = Value::Array(links);
        }
        Ok(out)
    }
}

/// What orders and marks a rendered view in a page: its id, else its name,
/// else its subnet (a floating IP pool).
fn view_key(v: &Value) -> &str {
    ["id", "name", "subnet_id"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
        .unwrap_or_default()
}

fn marker_not_found(marker: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "HTTPNotFound",
        format!("Marker {marker} could not be found."),
    )
}

/// One ordered run of candidate ids, from a marker on.
type Run<'s> = Peekable<Box<dyn Iterator<Item = &'s Arc<str>> + 's>>;

/// The ids of `sets`, each once, in ascending order (`up`) or descending,
/// strictly beyond `from` in that direction.
fn merged<'s>(
    sets: &[&'s FacetIds],
    from: Option<&str>,
    up: bool,
) -> impl Iterator<Item = &'s str> {
    let mut runs: Vec<Run<'s>> = sets
        .iter()
        .map(|set| {
            let bounds: (Bound<&str>, Bound<&str>) = match (from, up) {
                (None, _) => (Bound::Unbounded, Bound::Unbounded),
                (Some(m), true) => (Bound::Excluded(m), Bound::Unbounded),
                (Some(m), false) => (Bound::Unbounded, Bound::Excluded(m)),
            };
            let range = set.range::<str, _>(bounds);
            let run: Box<dyn Iterator<Item = &'s Arc<str>> + 's> = if up {
                Box::new(range)
            } else {
                Box::new(range.rev())
            };
            run.peekable()
        })
        .collect();
    std::iter::from_fn(move || {
        let next = runs
            .iter_mut()
            .filter_map(|run| run.peek().copied())
            .reduce(|a, b| if (a <= b) == up { a } else { b })?;
        for run in &mut runs {
            if run.peek() == Some(&next) {
                run.next();
            }
        }
        Some(&**next)
    })
}

fn value_matches(attr: &str, value: &Value, wanted: &str) -> bool {
    match value {
        Value::String(s) => s == wanted,
        Value::Bool(b) => parse_bool(wanted) == Some(*b),
        Value::Number(n) => n.to_string() == wanted,
        Value::Null => wanted.is_empty() || wanted == "None",
        Value::Array(items) if attr == "fixed_ips" => fixed_ip_matches(items, wanted),
        Value::Array(items) => items.iter().any(|i| value_matches(attr, i, wanted)),
        Value::Object(_) => false,
    }
}

/// `fixed_ips=ip_address=10.0.0.5` / `fixed_ips=subnet_id=X` / `ip_address_substr=10.0`.
fn fixed_ip_matches(items: &[Value], wanted: &str) -> bool {
    let Some((key, val)) = wanted.split_once('=') else {
        return false;
    };
    items.iter().any(|i| match key {
        "ip_address_substr" => i
            .get("ip_address")
            .and_then(Value::as_str)
            .is_some_and(|ip| ip.contains(val)),
        _ => i.get(key).and_then(Value::as_str) == Some(val),
    })
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (None | Some(Value::Null), None | Some(Value::Null)) => Ordering::Equal,
        (None | Some(Value::Null), _) => Ordering::Less,
        (_, None | Some(Value::Null)) => Ordering::Greater,
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

/// The attribute names of one `fields` value. Empty names are dropped, as
/// Neutron drops empty query values: `?fields=` asks for every attribute.
pub fn field_names(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    type View = serde_json::Map<String, Value>;

    fn view(id: &str, name: &str) -> View {
        match json!({"id": id, "name": name, "admin_state_up": true,
                     "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.5"}]})
        {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn q(s: &str) -> ListQuery {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(s).unwrap();
        ListQuery::parse(pairs, &["id", "name", "admin_state_up", "fixed_ips"]).unwrap()
    }

    fn matches(q: &ListQuery, v: &View, tags: &[&str]) -> bool {
        let tags: Vec<String> = tags.iter().map(|t| (*t).to_owned()).collect();
        q.matches(&tags, |name| v.get(name).cloned())
    }

    fn page(q: &ListQuery, views: Vec<View>) -> (Vec<String>, Vec<Value>) {
        let (items, links) = q
            .page(
                views,
                |v| v["id"].as_str().unwrap(),
                |v, k| v.get(k).cloned(),
                "http://x/v2.0/networks",
            )
            .unwrap();
        (
            items
                .iter()
                .map(|v| v["id"].as_str().unwrap().to_owned())
                .collect(),
            links,
        )
    }

    #[test]
    fn repeated_keys_or_and_distinct_keys_and() {
        let v = view("1", "a");
        assert!(matches(&q("name=a&name=b"), &v, &[]));
        assert!(!matches(&q("name=a&admin_state_up=False"), &v, &[]));
        assert!(matches(&q("admin_state_up=True"), &v, &[]));
        assert!(matches(&q("fixed_ips=ip_address%3D10.0.0.5"), &v, &[]));
        assert!(!matches(&q("fixed_ips=subnet_id%3Ds2"), &v, &[]));
    }

    #[test]
    fn tag_filters() {
        let v = view("1", "a");
        let t = ["red", "blue"];
        assert!(matches(&q("tags=red,blue"), &v, &t));
        assert!(!matches(&q("tags=red,green"), &v, &t));
        assert!(matches(&q("tags-any=green,blue"), &v, &t));
        assert!(!matches(&q("not-tags=red,blue"), &v, &t));
        assert!(matches(&q("not-tags=red,green"), &v, &t));
        assert!(!matches(&q("not-tags-any=green,blue"), &v, &t));
    }

    #[test]
    fn pages_follow_markers_with_links() {
        let views: Vec<View> = ["c", "a", "b", "d"].iter().map(|n| view(n, n)).collect();
        let (ids, links) = page(&q("limit=2&sort_key=name&sort_dir=desc"), views.clone());
        assert_eq!(ids, ["d", "c"]);
        assert_eq!(links.len(), 1);
        assert!(links[0]["href"].as_str().unwrap().ends_with("marker=c"));
        let (ids, links) = page(
            &q("limit=2&sort_key=name&sort_dir=desc&marker=c"),
            views.clone(),
        );
        assert_eq!(ids, ["b", "a"]);
        assert_eq!(links.len(), 1, "no next page, a previous one");
        assert_eq!(links[0]["rel"], "previous");
        let (ids, _) = page(&q(""), views);
        assert_eq!(ids, ["a", "b", "c", "d"], "by id when no sort key is given");
    }

    #[test]
    fn unknown_filters_and_sort_keys_are_refused() {
        let pairs = vec![("bogus".to_owned(), "1".to_owned())];
        assert!(ListQuery::parse(pairs, &["id"]).is_err());
        let pairs = vec![("sort_key".to_owned(), "bogus".to_owned())];
        assert!(ListQuery::parse(pairs, &["id"]).is_err());
    }
}
