//! Address groups (Neutron's `address-group`): a project's named list of
//! CIDRs that security group rules name as their remote
//! (`remote_address_group_id`). Plain values and the normalisation Neutron
//! applies; which rules name a group is `Cloud`'s index, and the checks
//! against it are `cloud/address_group.rs`'s.

use std::collections::BTreeSet;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::Standard;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressGroup {
    pub std: Standard,
    /// Normalised (host bits cleared), unique, sorted: a set, as Neutron
    /// keeps one row per (group, address).
    pub addresses: BTreeSet<IpNet>,
}

#[derive(Clone, Debug, Default)]
pub struct AddressGroupCreate {
    pub project_id: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub addresses: Vec<IpNet>,
}

/// `addresses` is not updatable by PUT, as in Neutron: it changes only
/// through `add_addresses` and `remove_addresses`.
#[derive(Clone, Debug, Default)]
pub struct AddressGroupUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
}

/// An address as Neutron stores it: `network/prefixlen`, so `10.1.0.5/24`
/// is `10.1.0.0/24` (a host address is already `/32` or `/128`).
pub fn normalize(address: &IpNet) -> IpNet {
    address.trunc()
}

/// How Neutron's messages list addresses: a Python list of strings.
pub fn python_list<'a>(addresses: impl IntoIterator<Item = &'a IpNet>) -> String {
    let items: Vec<String> = addresses.into_iter().map(|a| format!("'{a}'")).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_lose_their_host_bits_and_list_as_python_does() {
        let a: IpNet = "10.1.0.5/24".parse().unwrap();
        assert_eq!(normalize(&a).to_string(), "10.1.0.0/24");
        let h: IpNet = "fd00::1/128".parse().unwrap();
        assert_eq!(normalize(&h), h);
        assert_eq!(python_list([&a, &h]), "['10.1.0.5/24', 'fd00::1/128']");
    }
}
