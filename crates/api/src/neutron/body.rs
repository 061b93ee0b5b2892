//! Request bodies: `{"network": {...}}` or a bulk `{"networks": [...]}`, and
//! typed access to their attributes with Neutron's conversions and messages.
//! Every attribute must be consumed: what is left over is refused by name.

use std::net::IpAddr;

use serde_json::{Map, Value};

use model::{FixedIpRequest, MacAddr};

use crate::error::ApiError;

/// Split a body into the attribute maps it carries: one, or several for a bulk
/// request. `bulk` is true when the plural key was used.
pub fn resources(
    bytes: &[u8],
    singular: &str,
    plural: &str,
) -> Result<(Vec<Map<String, Value>>, bool), ApiError> {
    let body: Value = serde_json::from_slice(bytes)
        .map_err(|_| ApiError::bad_request("Body contains invalid data"))?;
    let Value::Object(mut top) = body else {
        return Err(ApiError::bad_request("Body contains invalid data"));
    };
    if let Some(one) = top.remove(singular) {
        let Value::Object(attrs) = one else {
            return Err(ApiError::bad_request(format!(
                "Unable to find '{singular}' in request body"
            )));
        };
        return Ok((vec![attrs], false));
    }
    if let Some(Value::Array(many)) = top.remove(plural) {
        let maps = many
            .into_iter()
            .map(|v| match v {
                Value::Object(m) => Ok(m),
                _ => Err(ApiError::bad_request("Body contains invalid data")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if maps.is_empty() {
            return Err(ApiError::bad_request(format!(
                "Resources required: '{plural}' is empty"
            )));
        }
        return Ok((maps, true));
    }
    Err(ApiError::bad_request(format!(
        "Unable to find '{singular}' in request body"
    )))
}

/// The attributes of one resource in a request.
pub struct Attrs {
    map: Map<String, Value>,
    method: &'static str,
}

/// A JSON value as Neutron quotes it in messages: strings without their quotes.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A value a validator refused (Neutron answers `HTTPBadRequest`).
pub fn invalid(attr: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Invalid input for {attr}. Reason: {reason}."))
}

/// A value a converter could not convert (Neutron answers `InvalidInput`).
fn unconvertible(attr: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::BAD_REQUEST,
        "InvalidInput",
        format!("Invalid input for {attr}. Reason: {reason}."),
    )
}

impl Attrs {
    pub fn new(map: Map<String, Value>, method: &'static str) -> Self {
        Attrs { map, method }
    }

    /// Refuse what no getter consumed: read-only attributes by name, unknown
    /// ones as Neutron does.
    pub fn finish(self, read_only: &[&str]) -> Result<(), ApiError> {
        if self.map.is_empty() {
            return Ok(());
        }
        let mut keys: Vec<&String> = self.map.keys().collect();
        keys.sort();
        if let Some(k) = keys.iter().find(|k| read_only.contains(&k.as_str())) {
            return Err(ApiError::bad_request(format!(
                "Attribute '{k}' not allowed in {}",
                self.method
            )));
        }
        let names: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
        Err(ApiError::bad_request(format!(
            "Unrecognized attribute(s) '{}'",
            names.join(", ")
        )))
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name)
    }

    /// An attribute's JSON as given, for a resource's own converter.
    pub fn value(&mut self, name: &str) -> Option<Value> {
        self.take(name)
    }

    /// Neutron's `convert_none_to_empty_list`: for the list attributes that
    /// have it (routes, host routes, DNS servers, address pairs, a port's
    /// groups), null means "none".
    pub fn null_as_empty(&mut self, name: &str) -> &mut Self {
        if let Some(v @ Value::Null) = self.map.get_mut(name) {
            *v = Value::Array(Vec::new());
        }
        self
    }

    /// An attribute a create must name, read with `get` (e.g. `Attrs::string`).
    pub fn required<T>(
        &mut self,
        name: &str,
        get: impl FnOnce(&mut Self, &str) -> Result<Option<T>, ApiError>,
    ) -> Result<T, ApiError> {
        get(self, name)?.ok_or_else(|| {
            ApiError::bad_request(format!(
                "Failed to parse request. Required attribute '{name}' not specified"
            ))
        })
    }

    pub fn string(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) if s.len() <= 255 => Ok(Some(s)),
            Some(Value::String(s)) => Err(invalid(
                name,
                format!("'{s}' exceeds maximum length of 255"),
            )),
            Some(v) => Err(invalid(
                name,
                format!("'{}' is not a valid string", shown(&v)),
            )),
        }
    }

    /// A string where JSON null means "empty" (Neutron accepts null descriptions).
    pub fn string_or_null(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        if self.map.get(name) == Some(&Value::Null) {
            self.map.remove(name);
            return Ok(Some(String::new()));
        }
        self.string(name)
    }

    /// A string where JSON null means "not given".
    pub fn nullable_string(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        if self.map.get(name) == Some(&Value::Null) {
            self.map.remove(name);
            return Ok(None);
        }
        self.string(name)
    }

    /// A string or a number (taken as its decimal text); null is "not given".
    pub fn string_or_number(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        match self.take(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(v) => Err(invalid(
                name,
                format!("'{}' is not a valid string", shown(&v)),
            )),
        }
    }

    pub fn bool(&mut self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(Some(true)),
            Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(Some(false)),
            Some(v) => Err(unconvertible(
                name,
                format!("'{}' cannot be converted to boolean", shown(&v)),
            )),
        }
    }

    /// A non-negative integer, given as a number or a decimal string; null is "not given".
    pub fn u32(&mut self, name: &str) -> Result<Option<u32>, ApiError> {
        match self.take(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| unconvertible(name, format!("'{n}' is not a valid integer"))),
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| unconvertible(name, format!("'{s}' is not an integer"))),
            Some(v) => Err(unconvertible(
                name,
                format!("'{}' is not an integer", shown(&v)),
            )),
        }
    }

    pub fn list(&mut self, name: &str) -> Result<Option<Vec<Value>>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(v) => Err(invalid(name, format!("'{}' is not a list", shown(&v)))),
        }
    }

    pub fn string_list(&mut self, name: &str) -> Result<Option<Vec<String>>, ApiError> {
        let Some(items) = self.list(name)? else {
            return Ok(None);
        };
        items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                other => Err(invalid(name, format!("'{other}' is not a valid string"))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    pub fn ip_list(&mut self, name: &str) -> Result<Option<Vec<IpAddr>>, ApiError> {
        let Some(items) = self.string_list(name)? else {
            return Ok(None);
        };
        items
            .iter()
            .map(|s| parse_ip(name, s))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// An IP where null is meaningful: `Some(None)`.
    pub fn nullable_ip(&mut self, name: &str) -> Result<Option<Option<IpAddr>>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) => parse_ip(name, &s).map(|ip| Some(Some(ip))),
            Some(v) => Err(invalid(
                name,
                format!("'{}' is not a valid IP address", shown(&v)),
            )),
        }
    }

    /// A string where null is meaningful (e.g. disassociate): `Some(None)`.
    pub fn nullable_id(&mut self, name: &str) -> Result<Option<Option<String>>, ApiError> {
        if self.map.get(name) == Some(&Value::Null) {
            self.map.remove(name);
            return Ok(Some(None));
        }
        Ok(self.string(name)?.map(Some))
    }

    /// A nested object, as attributes of its own; null (or `{}`) is
    /// `Some(None)`, as Neutron reads a cleared router gateway.
    pub fn nested(&mut self, name: &str) -> Result<Option<Option<Attrs>>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::Object(map)) if map.is_empty() => Ok(Some(None)),
            Some(Value::Object(map)) => Ok(Some(Some(Attrs::new(map, self.method)))),
            Some(v) => Err(invalid(
                name,
                format!("'{}' is not a dictionary", shown(&v)),
            )),
        }
    }

    /// An arbitrary JSON object, returned as its text.
    pub fn object_text(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some("{}".into())),
            Some(v @ Value::Object(_)) => Ok(Some(v.to_string())),
            Some(v) => Err(invalid(
                name,
                format!("'{}' is not a dictionary", shown(&v)),
            )),
        }
    }

    /// `project_id`, or its older name `tenant_id`; both must agree.
    pub fn project(&mut self) -> Result<Option<String>, ApiError> {
        let project = self.string("project_id")?;
        let tenant = self.string("tenant_id")?;
        match (project, tenant) {
            (Some(p), Some(t)) if p != t => Err(ApiError::bad_request(
                "'project_id' and 'tenant_id' do not match",
            )),
            (p, t) => Ok(p.or(t)),
        }
    }
}

fn parse_ip(attr: &str, s: &str) -> Result<IpAddr, ApiError> {
    s.parse()
        .map_err(|_| invalid(attr, format!("'{s}' is not a valid IP address")))
}

/// One object of a list attribute (an allocation pool, a fixed IP, …).
pub struct Fields<'a> {
    attr: &'a str,
    map: &'a Map<String, Value>,
}

impl Fields<'_> {
    /// A string field; null or absent is `None`.
    pub fn str(&self, key: &str) -> Result<Option<&str>, ApiError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(invalid(
                self.attr,
                format!("'{}' is not a valid string", shown(v)),
            )),
        }
    }

    pub fn raw(&self, key: &str) -> Option<&Value> {
        self.map.get(key)
    }

    pub fn ip(&self, key: &str) -> Result<Option<IpAddr>, ApiError> {
        self.str(key)?.map(|s| parse_ip(self.attr, s)).transpose()
    }
}

impl Attrs {
    /// A list of objects that may carry only `keys`, each made into a `T` by `each`.
    pub fn objects<T>(
        &mut self,
        name: &str,
        keys: &[&str],
        each: impl Fn(&Fields) -> Result<T, ApiError>,
    ) -> Result<Option<Vec<T>>, ApiError> {
        let Some(items) = self.list(name)? else {
            return Ok(None);
        };
        items
            .iter()
            .map(|v| {
                let map = v
                    .as_object()
                    .ok_or_else(|| invalid(name, format!("'{}' is not a dictionary", shown(v))))?;
                if let Some(k) = map.keys().find(|k| !keys.contains(&k.as_str())) {
                    return Err(invalid(name, format!("Unrecognized attribute '{k}'")));
                }
                each(&Fields { attr: name, map })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// Attributes every resource shows but no request may set.
const STANDARD_READ_ONLY: [&str; 4] = ["id", "created_at", "updated_at", "revision_number"];

/// The read-only attributes of a resource: the standard ones and `extra`.
pub fn read_only<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    STANDARD_READ_ONLY
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect()
}

pub fn mac(attr: &str, s: &str) -> Result<MacAddr, ApiError> {
    s.parse()
        .map_err(|_| invalid(attr, format!("'{s}' is not a valid MAC address")))
}

/// A list of `{"subnet_id", "ip_address"}` (a port's `fixed_ips`, a
/// gateway's `external_fixed_ips`).
pub fn fixed_ips(a: &mut Attrs, name: &str) -> Result<Option<Vec<FixedIpRequest>>, ApiError> {
    a.objects(name, &["subnet_id", "ip_address"], |f| {
        Ok(FixedIpRequest {
            subnet_id: f.str("subnet_id")?.map(str::to_owned),
            ip_address: f.ip("ip_address")?,
        })
    })
}
