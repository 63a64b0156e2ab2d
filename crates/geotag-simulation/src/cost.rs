//! What a run's writes cost: each table's item writes, priced in write units
//! at the size its items ended the run with.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;

/// A table's writes and what they cost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WriteUnits {
    pub item_writes: u64,
    /// Write units, each write costed at its item's size as the run left it
    /// (transactional writes count double).
    pub units: f64,
    /// The mean size of the table's items at the end of the run.
    pub mean_item_bytes: f64,
}

/// Costs each table's item writes at its items' mean write units.
pub fn write_units(
    item_writes: &BTreeMap<(String, bool), u64>,
    item_sizes: &BTreeMap<String, ItemSizes>,
) -> BTreeMap<String, WriteUnits> {
    let mut out: BTreeMap<String, WriteUnits> = BTreeMap::new();
    for ((table, transactional), writes) in item_writes {
        let sizes = item_sizes.get(table).filter(|sizes| sizes.items > 0);
        let per_write = sizes.map_or(1.0, |sizes| sizes.write_units as f64 / sizes.items as f64);
        let entry = out.entry(table.clone()).or_default();
        entry.mean_item_bytes = sizes.map_or(0.0, |sizes| sizes.bytes as f64 / sizes.items as f64);
        entry.item_writes += writes;
        entry.units += *writes as f64 * per_write * if *transactional { 2.0 } else { 1.0 };
    }
    out
}

/// The items a table holds at the end of a run, and their sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ItemSizes {
    pub items: u64,
    pub bytes: u64,
    /// Write units of writing each item once.
    pub write_units: u64,
}

impl ItemSizes {
    pub fn add(&mut self, item: &HashMap<String, AttributeValue>) {
        let size = geotag_aws::capacity::item_size(item);
        self.items += 1;
        self.bytes += size as u64;
        self.write_units += geotag_aws::capacity::write_units(size);
    }
}
