//! Entry points for the fuzz targets in `fuzz/`: the parsers an untrusted
//! request reaches (a body into a model request, a query string into a list
//! query), driven without a server or a store. Nothing else calls them.

use model::{
    AddressGroup, DefaultSecurityGroupRule, FloatingIp, MeteringLabel, MeteringLabelRule, Network,
    Port, RbacPolicy, Router, SecurityGroup, SecurityGroupRule, Subnet, SubnetPool,
};

use super::body::{self, Attrs};
use super::collection::{Collection, attribute_names};
use super::query::ListQuery;
use super::request::query_pairs;

type Parser = fn(u8, &[u8]);

/// Every collection the router mounts.
const PARSERS: [Parser; 13] = [
    parse::<Network>,
    parse::<Subnet>,
    parse::<SubnetPool>,
    parse::<Port>,
    parse::<SecurityGroup>,
    parse::<SecurityGroupRule>,
    parse::<DefaultSecurityGroupRule>,
    parse::<AddressGroup>,
    parse::<Router>,
    parse::<FloatingIp>,
    parse::<MeteringLabel>,
    parse::<MeteringLabelRule>,
    parse::<RbacPolicy>,
];

/// Parses `input` as a request to one collection. Its first byte picks the
/// collection (bits 2..) and what is parsed (bits 0..2: a create body, an
/// update body, a list query); the rest is that body or query. Refusals are
/// expected; a panic is a bug.
pub fn neutron_request(input: &[u8]) {
    let Some((&selector, text)) = input.split_first() else {
        return;
    };
    PARSERS[usize::from(selector >> 2) % PARSERS.len()](selector & 3, text);
}

fn parse<C: Collection>(what: u8, text: &[u8]) {
    match what {
        0 | 1 => {
            let Ok((maps, _)) = body::resources(text, C::SINGULAR, C::PLURAL) else {
                return;
            };
            for map in maps {
                let _ = if what == 0 {
                    C::parse_create(Attrs::new(map, "POST")).map(drop)
                } else {
                    C::parse_update(Attrs::new(map, "PUT")).map(drop)
                };
            }
        }
        _ => {
            let raw = String::from_utf8_lossy(text).into_owned();
            if let Ok(pairs) = query_pairs(Some(raw)) {
                let _ = ListQuery::parse(pairs, &attribute_names::<C>());
            }
        }
    }
}
