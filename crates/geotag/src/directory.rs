//! Which tags the registry knows and who owns them, as ingest asks it: the port, and what a
//! stack does with the tags it does not know. Re-exported from [`crate::store`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use crate::store::{StoreError, lock};

/// What ingest does with the readings of a tag the registry does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnregisteredDevices {
    /// Refuse them as `unregistered_device` (dead-lettered, so that a redrive
    /// after registering the tag stores them): production, where every tag
    /// is provisioned and assigned before it ships.
    Refuse,
    /// Store them, for no customer (their alerts go to the operator only):
    /// a development stack, where tags connect before anyone owns them.
    Admit,
}

impl std::str::FromStr for UnregisteredDevices {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "refuse" => Ok(UnregisteredDevices::Refuse),
            "admit" => Ok(UnregisteredDevices::Admit),
            other => Err(format!("{other:?} is neither \"refuse\" nor \"admit\"")),
        }
    }
}

/// Which tags the registry knows, and whose they are: ingest asks before it
/// stores a tag's readings, and stamps each with its owner.
pub trait DeviceDirectory: Send + Sync {
    /// The owner (customer id) of each of `device_ids` that is registered;
    /// the others are missing from the map.
    fn owners(
        &self,
        device_ids: &[String],
    ) -> impl Future<Output = Result<HashMap<String, String>, StoreError>> + Send;
}

/// A [`DeviceDirectory`] in which no tag is registered: for stacks that admit
/// unregistered tags (their readings are stored for nobody), and for tests
/// about something else.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRegistry;

impl DeviceDirectory for NoRegistry {
    async fn owners(&self, _device_ids: &[String]) -> Result<HashMap<String, String>, StoreError> {
        Ok(HashMap::new())
    }
}

/// An in-memory [`DeviceDirectory`], which can be told to fail.
#[derive(Debug, Default)]
pub struct MemoryDirectory {
    owners: Mutex<HashMap<String, String>>,
    unavailable: Mutex<bool>,
}

impl MemoryDirectory {
    /// A registry of these (device, customer) assignments.
    pub fn with(assignments: &[(&str, &str)]) -> Self {
        let directory = MemoryDirectory::default();
        for (device, customer) in assignments {
            directory.assign(device, customer);
        }
        directory
    }

    pub fn assign(&self, device_id: &str, customer_id: &str) {
        lock(&self.owners).insert(device_id.to_owned(), customer_id.to_owned());
    }

    pub fn set_unavailable(&self, unavailable: bool) {
        *lock(&self.unavailable) = unavailable;
    }
}

impl DeviceDirectory for MemoryDirectory {
    async fn owners(&self, device_ids: &[String]) -> Result<HashMap<String, String>, StoreError> {
        if *lock(&self.unavailable) {
            return Err(StoreError::Service {
                code: "ServiceUnavailable".into(),
                message: "the registry is unavailable (test)".into(),
            });
        }
        let owners = lock(&self.owners);
        Ok(device_ids
            .iter()
            .filter_map(|id| Some((id.clone(), owners.get(id)?.clone())))
            .collect())
    }
}
