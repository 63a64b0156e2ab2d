//! Whose data is whose.
//!
//! Tags are sold to many customers, and a tag can pass from one customer to
//! another (resold, returned, moved between subsidiaries). Its history must
//! not go with it: where another company's vehicles went is that company's
//! data. So ownership is decided per reading, once: ingest stamps every
//! reading with the customer the registry names for its tag at that moment
//! ([`crate::Reading::owner`]), and nothing changes the stamp afterwards.
//! Everything built from readings carries whose readings it holds:
//!
//! - a device's latest state is its newest reading's, so it has that
//!   reading's owner;
//! - an hourly or daily rollup has one owner if every reading in it had that
//!   owner, and is [`Holder::Mixed`] (shown to no customer, only to the
//!   operator) if its bucket saw the tag change hands;
//! - an alert is raised for the customer the registry names when it is raised.
//!
//! The API shows a customer only what carries that customer's id. A reading
//! stored for nobody (a development stack admits unregistered tags) is the
//! operator's alone.

/// The `customer_id` alerts of tags missing from the registry carry; no
/// customer may take this id.
pub const UNASSIGNED: &str = "unassigned";

/// Whether `id` may name a customer: what a device id may be
/// ([`crate::reading::is_valid_device_id`]), less the reserved names.
pub fn is_valid_customer_id(id: &str) -> bool {
    crate::reading::is_valid_device_id(id)
        && id != UNASSIGNED
        && id != crate::geofence::GLOBAL_SCOPE
}

/// The marker a [`Holder::Mixed`] aggregate is stored with. `*` is not a
/// character of any customer id, so no customer can hold this one.
pub const MIXED: &str = "*mixed";

/// Whose readings an aggregate holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Holder {
    /// No readings yet.
    #[default]
    Empty,
    /// Every reading had this owner (`None`: nobody's).
    One(Option<String>),
    /// Readings of more than one owner.
    Mixed,
}

impl Holder {
    /// The holder once a reading of `owner` is added.
    pub fn absorb(&mut self, owner: &Option<String>) {
        *self = match std::mem::take(self) {
            Holder::Empty => Holder::One(owner.clone()),
            Holder::One(held) if held == *owner => Holder::One(held),
            Holder::One(_) | Holder::Mixed => Holder::Mixed,
        };
    }

    /// The holder of two aggregates' readings together.
    pub fn join(&mut self, other: &Holder) {
        *self = match (std::mem::take(self), other) {
            (held, Holder::Empty) => held,
            (Holder::Empty, other) => other.clone(),
            (Holder::One(held), Holder::One(owner)) if held == *owner => Holder::One(held),
            _ => Holder::Mixed,
        };
    }

    /// The customer whose data this is, if it is one customer's alone.
    pub fn customer(&self) -> Option<&str> {
        match self {
            Holder::One(Some(customer)) => Some(customer),
            _ => None,
        }
    }

    /// The stored form (absent for nobody's or no readings).
    pub fn stored(&self) -> Option<&str> {
        match self {
            Holder::Empty | Holder::One(None) => None,
            Holder::One(Some(customer)) => Some(customer),
            Holder::Mixed => Some(MIXED),
        }
    }

    /// Reads the stored form of an aggregate that holds readings; items
    /// written before readings carried owners read as nobody's.
    pub fn from_stored(stored: Option<&str>) -> Holder {
        match stored {
            None => Holder::One(None),
            Some(MIXED) => Holder::Mixed,
            Some(customer) => Holder::One(Some(customer.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(id: &str) -> Option<String> {
        Some(id.to_owned())
    }

    #[test]
    fn one_owners_readings_are_that_owners_and_a_change_of_hands_is_nobodys() {
        let mut holder = Holder::default();
        holder.absorb(&owner("acme"));
        holder.absorb(&owner("acme"));
        assert_eq!(holder.customer(), Some("acme"));
        holder.absorb(&owner("globex"));
        assert_eq!(holder, Holder::Mixed);
        holder.absorb(&owner("acme"));
        assert_eq!(holder.customer(), None);

        let mut unowned_then_owned = Holder::default();
        unowned_then_owned.absorb(&None);
        unowned_then_owned.absorb(&owner("acme"));
        assert_eq!(unowned_then_owned, Holder::Mixed);
    }

    #[test]
    fn the_stored_form_reads_back() {
        for holder in [Holder::One(None), Holder::One(owner("acme")), Holder::Mixed] {
            assert_eq!(Holder::from_stored(holder.stored()), holder);
        }
    }
}
