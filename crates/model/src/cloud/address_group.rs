//! Address groups: their operations (create, update, delete, adding and
//! removing addresses) with Neutron's checks. Which rules name a group is the
//! rule's index entry (`address_group_rules`); this module only reads it, to
//! refuse deleting a group in use. What the addresses mean on the wire is the
//! compiler's business.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::{Caller, Cloud, Record, set, stored};
use crate::address_group::{normalize, python_list};
use crate::{
    AddressGroup, AddressGroupCreate, AddressGroupUpdate, Kind, ModelError, Resource, Timestamp,
};

/// Visible to its project and admins (sharing by RBAC is not implemented).
impl Record for AddressGroup {
    stored!(AddressGroup in address_groups);
}

impl Cloud {
    pub fn address_groups(&self) -> impl Iterator<Item = &AddressGroup> {
        self.address_groups.values()
    }

    pub fn address_group(&self, id: &str) -> Option<&AddressGroup> {
        self.address_groups.get(id)
    }

    pub fn create_address_group(
        &mut self,
        caller: &Caller,
        req: AddressGroupCreate,
        now: Timestamp,
    ) -> Result<AddressGroup, ModelError> {
        let project_id = self.project_for(caller, req.project_id)?;
        let group = AddressGroup {
            std: self.standard(project_id, req.name, req.description, None, now)?,
            // Neutron adds them as `add_addresses` would, duplicates
            // (after normalising) collapsing.
            addresses: req.addresses.iter().map(normalize).collect(),
        };
        self.put(Resource::AddressGroup(group.clone()));
        Ok(group)
    }

    pub fn update_address_group(
        &mut self,
        caller: &Caller,
        id: &str,
        req: AddressGroupUpdate,
        now: Timestamp,
    ) -> Result<AddressGroup, ModelError> {
        let mut group: AddressGroup = self.writable_as(caller, id)?;
        set(&mut group.std.name, req.name);
        set(&mut group.std.description, req.description);
        group.std.touch(now);
        self.put(Resource::AddressGroup(group.clone()));
        Ok(group)
    }

    /// Refused while a rule names it (whoever's rule: a tenant's rule may
    /// name only its own groups, but an admin's may name anyone's).
    pub fn delete_address_group(&mut self, caller: &Caller, id: &str) -> Result<(), ModelError> {
        self.writable(caller, Kind::AddressGroup, id)?;
        if self
            .address_group_rules
            .get(id)
            .is_some_and(|r| !r.is_empty())
        {
            return Err(ModelError::AddressGroupInUse { id: id.to_owned() });
        }
        self.remove(Kind::AddressGroup, id);
        Ok(())
    }

    /// `add_addresses`: all of `given` (normalised) join the group, or
    /// none does if any is there already.
    pub fn add_addresses(
        &mut self,
        caller: &Caller,
        id: &str,
        given: &[IpNet],
        now: Timestamp,
    ) -> Result<AddressGroup, ModelError> {
        let mut group: AddressGroup = self.writable_as(caller, id)?;
        let given: BTreeSet<IpNet> = given.iter().map(normalize).collect();
        let present: Vec<&IpNet> = given.intersection(&group.addresses).collect();
        if !present.is_empty() {
            return Err(ModelError::AddressesAlreadyExist {
                addresses: python_list(present),
                id: id.to_owned(),
            });
        }
        if given.is_empty() {
            return Ok(group);
        }
        group.addresses.extend(given);
        group.std.touch(now);
        self.put(Resource::AddressGroup(group.clone()));
        Ok(group)
    }

    /// `remove_addresses`: all of `given` (normalised) leave the group, or
    /// none does if any is not in it.
    pub fn remove_addresses(
        &mut self,
        caller: &Caller,
        id: &str,
        given: &[IpNet],
        now: Timestamp,
    ) -> Result<AddressGroup, ModelError> {
        let mut group: AddressGroup = self.writable_as(caller, id)?;
        let given: BTreeSet<IpNet> = given.iter().map(normalize).collect();
        let absent: Vec<&IpNet> = given.difference(&group.addresses).collect();
        if !absent.is_empty() {
            return Err(ModelError::AddressesNotFound {
                addresses: python_list(absent),
                id: id.to_owned(),
            });
        }
        if given.is_empty() {
            return Ok(group);
        }
        group.addresses.retain(|a| !given.contains(a));
        group.std.touch(now);
        self.put(Resource::AddressGroup(group.clone()));
        Ok(group)
    }
}
