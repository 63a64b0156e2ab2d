//! Which tags the registry knows, as ingest asks it: the port, and what a
//! stack does with the tags it does not know. Re-exported from [`crate::store`].

use std::collections::HashSet;
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

/// Which tags the registry knows: ingest asks before it stores a tag's readings.
pub trait DeviceDirectory: Send + Sync {
    /// The ones of `device_ids` that are registered.
    fn registered(
        &self,
        device_ids: &[String],
    ) -> impl Future<Output = Result<HashSet<String>, StoreError>> + Send;
}

/// A [`DeviceDirectory`] that knows every tag: for stacks that admit
/// unregistered tags, and for tests about something else.
#[derive(Debug, Default, Clone, Copy)]
pub struct EveryDevice;

impl DeviceDirectory for EveryDevice {
    async fn registered(&self, device_ids: &[String]) -> Result<HashSet<String>, StoreError> {
        Ok(device_ids.iter().cloned().collect())
    }
}

/// An in-memory [`DeviceDirectory`], which can be told to fail.
#[derive(Debug, Default)]
pub struct MemoryDirectory {
    devices: Mutex<HashSet<String>>,
    unavailable: Mutex<bool>,
}

impl MemoryDirectory {
    pub fn with(devices: &[&str]) -> Self {
        let directory = MemoryDirectory::default();
        for device in devices {
            directory.register(device);
        }
        directory
    }

    pub fn register(&self, device_id: &str) {
        lock(&self.devices).insert(device_id.to_owned());
    }

    pub fn set_unavailable(&self, unavailable: bool) {
        *lock(&self.unavailable) = unavailable;
    }
}

impl DeviceDirectory for MemoryDirectory {
    async fn registered(&self, device_ids: &[String]) -> Result<HashSet<String>, StoreError> {
        if *lock(&self.unavailable) {
            return Err(StoreError::Service {
                code: "ServiceUnavailable".into(),
                message: "the registry is unavailable (test)".into(),
            });
        }
        let devices = lock(&self.devices);
        Ok(device_ids
            .iter()
            .filter(|id| devices.contains(*id))
            .cloned()
            .collect())
    }
}
