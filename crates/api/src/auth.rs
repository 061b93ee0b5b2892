//! Who is calling. `noauth` mode (development only): the project comes from
//! `X-Project-Id` (or `X-Tenant-Id`) and the roles from `X-Roles`; a request
//! with no project acts as admin of the configured default project.

use axum::http::HeaderMap;
use model::Caller;

pub fn noauth_caller(headers: &HeaderMap, default_project: &str) -> Caller {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    match header("x-project-id").or_else(|| header("x-tenant-id")) {
        Some(project) => Caller {
            project_id: project.to_owned(),
            is_admin: header("x-roles").is_some_and(|roles| {
                roles
                    .split(',')
                    .any(|r| r.trim().eq_ignore_ascii_case("admin"))
            }),
        },
        None => Caller {
            project_id: default_project.to_owned(),
            is_admin: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_header_scopes_and_roles_grant_admin() {
        let mut h = HeaderMap::new();
        assert_eq!(
            noauth_caller(&h, "admin"),
            Caller {
                project_id: "admin".into(),
                is_admin: true
            }
        );
        h.insert("X-Tenant-Id", "t1".parse().unwrap());
        assert_eq!(
            noauth_caller(&h, "admin"),
            Caller {
                project_id: "t1".into(),
                is_admin: false
            }
        );
        h.insert("X-Project-Id", "p1".parse().unwrap());
        h.insert("X-Roles", "member, Admin".parse().unwrap());
        assert_eq!(
            noauth_caller(&h, "admin"),
            Caller {
                project_id: "p1".into(),
                is_admin: true
            }
        );
    }
}
