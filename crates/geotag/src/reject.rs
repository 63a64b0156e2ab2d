//! Why a message or a reading was refused.
//!
//! Every refusal carries a [`Reason`] (a stable, snake_case code that log
//! queries, metrics and dead-lettered messages' attributes group by) and the
//! path of the offending field, such as `readings[3].lat`. The codes are part
//! of the public interface: renaming one breaks users' dashboards and alarms,
//! so add new ones rather than change old ones.

use std::fmt;

/// The stable reason code of a [`Rejection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The SQS record had no body at all.
    BodyMissing,
    /// The body is larger than the configured message limit.
    BodyTooLarge,
    /// The body (or the SNS envelope's `Message`) is not well-formed JSON.
    MalformedJson,
    /// The body looks like an SNS envelope but is not a usable notification.
    InvalidEnvelope,
    /// A field has the wrong JSON type (a string where a number belongs, ...).
    InvalidType,
    /// A required field is absent (or null).
    MissingField,
    /// A message mixes the single-reading and the batch forms.
    AmbiguousMessage,
    /// A batch message with an empty `readings` array.
    EmptyBatch,
    /// A device id that is empty, too long, or uses characters outside the allowed set.
    InvalidDeviceId,
    /// A reading names a different device than its batch, or than the
    /// device the connection authenticated.
    DeviceIdMismatch,
    /// A number outside its physical range (latitude above 90, battery above 100, ...).
    OutOfRange,
    /// A timestamp string that is not RFC 3339.
    InvalidTimestamp,
    /// A timestamp further in the future than the allowed clock skew.
    TimestampInFuture,
    /// A timestamp older than the retention: it would expire on arrival.
    TimestampTooOld,
    /// A message that does not say which device the edge authenticated: it
    /// came neither through the IoT topic rule nor from a gateway.
    Unauthenticated,
    /// The authenticated device is not in the registry, and the stack refuses
    /// unregistered devices.
    UnregisteredDevice,
    /// The tag sent more readings stamped in one minute than its budget (see
    /// `geotag::budget`): the message is parked in the quarantine queue, not
    /// refused, and can be redriven.
    RateExceeded,
}

impl Reason {
    /// Every reason, in declaration order (for reports that list zero counts too).
    pub const ALL: [Reason; 17] = [
        Reason::BodyMissing,
        Reason::BodyTooLarge,
        Reason::MalformedJson,
        Reason::InvalidEnvelope,
        Reason::InvalidType,
        Reason::MissingField,
        Reason::AmbiguousMessage,
        Reason::EmptyBatch,
        Reason::InvalidDeviceId,
        Reason::DeviceIdMismatch,
        Reason::OutOfRange,
        Reason::InvalidTimestamp,
        Reason::TimestampInFuture,
        Reason::TimestampTooOld,
        Reason::Unauthenticated,
        Reason::UnregisteredDevice,
        Reason::RateExceeded,
    ];

    /// The code as it appears in logs, metrics and message attributes.
    pub const fn code(self) -> &'static str {
        match self {
            Reason::BodyMissing => "body_missing",
            Reason::BodyTooLarge => "body_too_large",
            Reason::MalformedJson => "malformed_json",
            Reason::InvalidEnvelope => "invalid_envelope",
            Reason::InvalidType => "invalid_type",
            Reason::MissingField => "missing_field",
            Reason::AmbiguousMessage => "ambiguous_message",
            Reason::EmptyBatch => "empty_batch",
            Reason::InvalidDeviceId => "invalid_device_id",
            Reason::DeviceIdMismatch => "device_id_mismatch",
            Reason::OutOfRange => "out_of_range",
            Reason::InvalidTimestamp => "invalid_timestamp",
            Reason::TimestampInFuture => "timestamp_in_future",
            Reason::TimestampTooOld => "timestamp_too_old",
            Reason::Unauthenticated => "unauthenticated",
            Reason::UnregisteredDevice => "unregistered_device",
            Reason::RateExceeded => "rate_exceeded",
        }
    }

    /// The reason for a code, as read back from a dead-lettered message.
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|reason| reason.code() == code)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A refused message or reading: what was wrong, where, and a human detail.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason} at `{field}`: {detail}")]
pub struct Rejection {
    pub reason: Reason,
    /// Path of the offending field (`lat`, `readings[3].ts`); `$` for the whole body.
    pub field: String,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: Reason, field: impl Into<String>, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            field: field.into(),
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut codes: Vec<_> = Reason::ALL.iter().map(|r| r.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Reason::ALL.len());
        for reason in Reason::ALL {
            assert_eq!(Reason::from_code(reason.code()), Some(reason));
        }
        assert_eq!(Reason::from_code("no_such_reason"), None);
    }

    #[test]
    fn display_names_reason_and_field() {
        let rejection = Rejection::new(
            Reason::OutOfRange,
            "readings[2].lat",
            "91 is not in [-90, 90]",
        );
        assert_eq!(
            rejection.to_string(),
            "out_of_range at `readings[2].lat`: 91 is not in [-90, 90]"
        );
    }
}
