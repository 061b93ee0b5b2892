//! What code outside the model reads of one kind of stored record (the API's
//! collections): its kind, standard attributes, who may see it, all of them
//! and one by id. Read-only: changes go through the cloud's operations. Kept
//! apart from `cloud`, where `Record` says the same for the model itself, so
//! that the two never meet in one scope.

use crate::cloud::{Caller, Cloud, FacetIds, Record};
use crate::{Kind, Standard};

pub trait Stored: Sized + 'static {
    const KIND: Kind;
    fn standard(&self) -> &Standard;
    /// Whether `caller` may see it at all (others get 404).
    fn visible_to(&self, cloud: &Cloud, caller: &Caller) -> bool;
    /// Id sets, in order, holding at least every record `caller` may see
    /// (`None`: every id); `visible_to` still decides each.
    fn candidates<'c>(cloud: &'c Cloud, caller: &Caller) -> Option<Vec<&'c FacetIds>>;
    fn all(cloud: &Cloud) -> impl Iterator<Item = &Self>;
    fn get<'a>(cloud: &'a Cloud, id: &str) -> Option<&'a Self>;
}

impl<R: Record + 'static> Stored for R {
    const KIND: Kind = <R as Record>::KIND;

    fn standard(&self) -> &Standard {
        Record::standard(self)
    }

    fn visible_to(&self, cloud: &Cloud, caller: &Caller) -> bool {
        Record::visible_to(self, cloud, caller)
    }

    fn candidates<'c>(cloud: &'c Cloud, caller: &Caller) -> Option<Vec<&'c FacetIds>> {
        <R as Record>::candidates(cloud, caller)
    }

    fn all(cloud: &Cloud) -> impl Iterator<Item = &Self> {
        R::table(cloud).values()
    }

    fn get<'a>(cloud: &'a Cloud, id: &str) -> Option<&'a Self> {
        R::table(cloud).get(id)
    }
}
