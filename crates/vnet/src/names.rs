//! Names where a human types an id: a resource given by name or id is
//! resolved to its id through the API (as the caller sees it), and ids in
//! output are shown as "name (short id)". It owns that wording and those
//! look-ups only; it must not decide anything about the resources.

use std::collections::HashMap;

use crate::lab::http_as;

/// A kind of resource as the Neutron API names it.
pub struct Collection {
    /// The path under /v2.0, e.g. `ports`.
    pub path: &'static str,
    /// One of them in a sentence, e.g. `port`.
    pub word: &'static str,
    /// The JSON key of one, e.g. `port`.
    pub key: &'static str,
}

pub const PORTS: &Collection = &Collection {
    path: "ports",
    word: "port",
    key: "port",
};
pub const NETWORKS: &Collection = &Collection {
    path: "networks",
    word: "network",
    key: "network",
};
pub const ROUTERS: &Collection = &Collection {
    path: "routers",
    word: "router",
    key: "router",
};
pub const SECURITY_GROUPS: &Collection = &Collection {
    path: "security-groups",
    word: "security group",
    key: "security_group",
};

#[derive(Debug, thiserror::Error)]
pub enum NameError {
    #[error("no {word} named or with id '{given}'")]
    NotFound { word: &'static str, given: String },
    #[error("{count} {word}s are named '{given}' ({ids}): give the id")]
    Ambiguous {
        word: &'static str,
        given: String,
        count: usize,
        ids: String,
    },
    #[error("looking up {word} '{given}': {reason}")]
    Api {
        word: &'static str,
        given: String,
        reason: String,
    },
}

/// The id of the `kind` the caller (`project`, or the default project's
/// admin) calls `given`: an id it can see, else the one resource it can see
/// by that name.
pub fn resolve(
    api: &str,
    project: Option<&str>,
    kind: &Collection,
    given: &str,
) -> Result<String, NameError> {
    let api_error = |reason: String| NameError::Api {
        word: kind.word,
        given: given.to_owned(),
        reason,
    };
    let query: String = url_encoded(given);
    let by_id = http_as(
        api,
        project,
        "GET",
        &format!("/v2.0/{}/{query}", kind.path),
        None,
    )
    .map_err(|e| api_error(e.to_string()))?;
    if by_id.0 == 200 && by_id.1[kind.key]["id"].as_str() == Some(given) {
        return Ok(given.to_owned());
    }
    let (status, found) = http_as(
        api,
        project,
        "GET",
        &format!(
            "/v2.0/{}?name={query}&fields=id&fields=project_id",
            kind.path
        ),
        None,
    )
    .map_err(|e| api_error(e.to_string()))?;
    if status != 200 {
        return Err(api_error(format!("the server answered {status}: {found}")));
    }
    let ids: Vec<&str> = found[kind.path.replace('-', "_")]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_str())
        .collect();
    match ids.as_slice() {
        [] => Err(NameError::NotFound {
            word: kind.word,
            given: given.to_owned(),
        }),
        [id] => Ok((*id).to_owned()),
        many => Err(NameError::Ambiguous {
            word: kind.word,
            given: given.to_owned(),
            count: many.len(),
            ids: many.join(", "),
        }),
    }
}

/// The names of `ids` the caller can see, across ports, networks, routers
/// and security groups; an id it cannot see, or without a name, is absent.
pub fn names_of(api: &str, project: Option<&str>, ids: &[String]) -> HashMap<String, String> {
    let mut names = HashMap::new();
    if ids.is_empty() {
        return names;
    }
    let filter: String = ids
        .iter()
        .map(|id| format!("id={}", url_encoded(id)))
        .collect::<Vec<_>>()
        .join("&");
    for kind in [PORTS, NETWORKS, ROUTERS, SECURITY_GROUPS] {
        let path = format!("/v2.0/{}?{filter}&fields=id&fields=name", kind.path);
        let Ok((200, found)) = http_as(api, project, "GET", &path, None) else {
            continue;
        };
        for r in found[kind.path.replace('-', "_")]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let (Some(id), Some(name)) = (r["id"].as_str(), r["name"].as_str())
                && !name.is_empty()
            {
                names.insert(id.to_owned(), name.to_owned());
            }
        }
    }
    names
}

/// "name (short id)", or the short id alone when it has no name.
pub fn label(name: &str, id: &str) -> String {
    let short = short(id);
    if name.is_empty() {
        short.to_owned()
    } else {
        format!("{name} ({short})")
    }
}

/// The first 8 characters of an id (a UUID's first group), enough to tell
/// objects apart on one screen.
pub fn short(id: &str) -> &str {
    id.get(..8).filter(|_| id.len() > 12).unwrap_or(id)
}

/// Percent-encoding for a path segment or query value.
fn url_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_is_the_name_and_the_short_id() {
        assert_eq!(
            label("web80", "d46ecc83-1b2a-4c3d-9e8f-0a1b2c3d4e5f"),
            "web80 (d46ecc83)"
        );
        assert_eq!(
            label("", "d46ecc83-1b2a-4c3d-9e8f-0a1b2c3d4e5f"),
            "d46ecc83"
        );
    }

    #[test]
    fn names_are_encoded_for_a_url() {
        assert_eq!(url_encoded("vm1 port/x"), "vm1%20port%2Fx");
    }
}
