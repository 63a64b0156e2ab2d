//! DynamoDB stream events as stats and alerts read them: each record's
//! event name, sequence number and images, and nothing else.
//!
//! `aws_lambda_events::dynamodb::Event` parses every record whole (region,
//! ARNs, keys, sizes, creation time) and every image into a `serde_dynamo`
//! map, a heap `String` and a hash entry for each attribute, which the
//! readers then copied into the SDK's map to read it. On a full batch that
//! was most of stats' and alerts' time and memory. Here an image is a short
//! list of attributes in the order the record gives them, and a name or
//! value of up to 24 bytes (every attribute name and number, tag ids,
//! sequence numbers) is kept inline, without an allocation of its own. The
//! table modules read it through [`ItemView`], as they read the SDK's items.
//! Everything else in a record is skipped by the parser.
//!
//! An image that is not DynamoDB JSON fails the event's parse, as it did
//! with `aws_lambda_events`: DynamoDB writes these, and a record that is not
//! one cannot be judged.

use std::fmt;

use compact_str::CompactString;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::item::{ItemView, ValueView};

/// A DynamoDB stream event, as Lambda delivers it to a function, its images
/// read as `I`: an [`Image`], or [`ReadAs`] a table's own type (as
/// [`crate::telemetry::TelemetryStreamEvent`] reads readings), which turns
/// each image into what the function needs while the event is parsed, so
/// that a full batch is never held as attribute lists (a 6 MB batch of
/// `latest` changes was 50 MB so).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(bound(deserialize = "I: Deserialize<'de> + Default"))]
pub struct StreamEvent<I = Image> {
    #[serde(rename = "Records")]
    pub records: Vec<StreamRecord<I>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(bound(deserialize = "I: Deserialize<'de> + Default"))]
pub struct StreamRecord<I = Image> {
    #[serde(rename = "eventID", default)]
    pub event_id: CompactString,
    /// `INSERT`, `MODIFY` or `REMOVE`.
    #[serde(rename = "eventName", default)]
    pub event_name: CompactString,
    #[serde(rename = "dynamodb", default)]
    pub change: StreamChange<I>,
}

/// The record's `dynamodb` part: what changed.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(bound(deserialize = "I: Deserialize<'de> + Default"))]
pub struct StreamChange<I = Image> {
    /// What a batch item failure names; Lambda retries from the lowest.
    #[serde(rename = "SequenceNumber", default)]
    pub sequence_number: Option<CompactString>,
    #[serde(rename = "NewImage", default)]
    pub new_image: I,
    #[serde(rename = "OldImage", default)]
    pub old_image: I,
}

/// An image read straight into what a table's reader makes of it: `None`
/// when the image is absent or is not one of the table's items. The
/// [`Image`] is parsed, read and dropped at once.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadAs<T>(pub Option<T>);

impl<T> Default for ReadAs<T> {
    fn default() -> Self {
        ReadAs(None)
    }
}

/// How a table's reader reads an image (see [`ReadAs`]).
pub trait FromImage: Sized {
    fn from_image(image: &Image) -> Option<Self>;
}

impl<'de, T: FromImage> Deserialize<'de> for ReadAs<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ReadAs<T>, D::Error> {
        let image = Image::deserialize(deserializer)?;
        Ok(ReadAs(if image.is_empty() {
            None
        } else {
            T::from_image(&image)
        }))
    }
}

/// An item as a stream record shows it: its attributes in the record's
/// order (an absent image is empty).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Image(Vec<(CompactString, ImageValue)>);

/// One attribute of an [`Image`]. Sets, binaries, booleans and nulls are
/// kept only as [`ImageValue::Other`]: no table layout of geotag uses them.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageValue {
    S(CompactString),
    N(CompactString),
    L(Vec<ImageValue>),
    M(Image),
    Other,
}

impl Image {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl ItemView for Image {
    type Value = ImageValue;

    fn attribute(&self, name: &str) -> Option<&ImageValue> {
        self.0
            .iter()
            .find(|(attribute, _)| attribute == name)
            .map(|(_, value)| value)
    }
}

impl ValueView for ImageValue {
    type Map = Image;

    fn as_s(&self) -> Option<&str> {
        match self {
            ImageValue::S(text) => Some(text),
            _ => None,
        }
    }

    fn as_n(&self) -> Option<&str> {
        match self {
            ImageValue::N(text) => Some(text),
            _ => None,
        }
    }

    fn as_l(&self) -> Option<&[ImageValue]> {
        match self {
            ImageValue::L(values) => Some(values),
            _ => None,
        }
    }

    fn as_m(&self) -> Option<&Image> {
        match self {
            ImageValue::M(map) => Some(map),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Image {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Image, D::Error> {
        struct ImageVisitor;
        impl<'de> Visitor<'de> for ImageVisitor {
            type Value = Image;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a DynamoDB item: attribute names to typed values")
            }

            fn visit_unit<E: de::Error>(self) -> Result<Image, E> {
                Ok(Image::default())
            }

            fn visit_none<E: de::Error>(self) -> Result<Image, E> {
                Ok(Image::default())
            }

            fn visit_some<D: Deserializer<'de>>(self, inner: D) -> Result<Image, D::Error> {
                inner.deserialize_map(ImageVisitor)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Image, A::Error> {
                let mut attributes = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(name) = map.next_key::<CompactString>()? {
                    attributes.push((name, map.next_value::<ImageValue>()?));
                }
                Ok(Image(attributes))
            }
        }
        deserializer.deserialize_option(ImageVisitor)
    }
}

/// The type descriptor of an attribute value (`{"S": "..."}`).
#[derive(Deserialize)]
enum Descriptor {
    S,
    N,
    L,
    M,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for ImageValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ImageValue, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = ImageValue;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a DynamoDB attribute value such as {\"S\": \"text\"}")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ImageValue, A::Error> {
                let value = match map.next_key::<Descriptor>()? {
                    None => return Err(de::Error::custom("an attribute value without a type")),
                    Some(Descriptor::S) => ImageValue::S(map.next_value()?),
                    Some(Descriptor::N) => ImageValue::N(map.next_value()?),
                    Some(Descriptor::L) => ImageValue::L(map.next_value::<ValueList>()?.0),
                    Some(Descriptor::M) => ImageValue::M(map.next_value()?),
                    Some(Descriptor::Other) => {
                        map.next_value::<IgnoredAny>()?;
                        ImageValue::Other
                    }
                };
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(value)
            }
        }
        deserializer.deserialize_map(ValueVisitor)
    }
}

/// An `L` value's elements.
struct ValueList(Vec<ImageValue>);

impl<'de> Deserialize<'de> for ValueList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ValueList, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = ValueList;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of DynamoDB attribute values")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ValueList, A::Error> {
                // A trail is `geotag::stats::TRAIL_MAX` (100) points at most;
                // a hostile size hint is not trusted.
                let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(8).min(64));
                while let Some(value) = seq.next_element()? {
                    values.push(value);
                }
                Ok(ValueList(values))
            }
        }
        deserializer.deserialize_seq(ListVisitor)
    }
}

impl Serialize for Image {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl Serialize for ImageValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1))?;
        match self {
            ImageValue::S(text) => map.serialize_entry("S", text)?,
            ImageValue::N(text) => map.serialize_entry("N", text)?,
            ImageValue::L(values) => map.serialize_entry("L", values)?,
            ImageValue::M(image) => map.serialize_entry("M", image)?,
            ImageValue::Other => map.serialize_entry("NULL", &true)?,
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORD: &str = r#"{"Records": [{
        "eventID": "e-1", "eventName": "MODIFY", "eventVersion": "1.1",
        "eventSource": "aws:dynamodb", "awsRegion": "eu-west-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1795161600,
            "Keys": {"device_id": {"S": "tag-1"}, "sk": {"S": "latest"}},
            "NewImage": {
                "device_id": {"S": "tag-1"}, "ts": {"N": "1795161600000"},
                "ok": {"BOOL": true}, "tags": {"SS": ["a", "b"]}, "nothing": {"NULL": true},
                "trail": {"L": [{"M": {"t": {"N": "1"}, "k": {"S": "a-key-longer-than-twenty-four-bytes"}}}]}
            },
            "SequenceNumber": "442158450000000001745043909100",
            "SizeBytes": 120, "StreamViewType": "NEW_AND_OLD_IMAGES"
        },
        "eventSourceARN": "arn:aws:dynamodb:eu-west-1:123456789012:table/t/stream/x"
    }]}"#;

    #[test]
    fn a_record_reads_its_name_sequence_and_images() {
        let event: StreamEvent = serde_json::from_str(RECORD).unwrap();
        let record = &event.records[0];
        assert_eq!(record.event_name, "MODIFY");
        assert_eq!(record.event_id, "e-1");
        assert_eq!(
            record.change.sequence_number.as_deref(),
            Some("442158450000000001745043909100")
        );
        assert!(record.change.old_image.is_empty());
        let image = &record.change.new_image;
        assert_eq!(image.len(), 6);
        assert_eq!(image.text("device_id"), Some("tag-1"));
        assert_eq!(image.number::<i64>("ts"), Some(1_795_161_600_000));
        assert_eq!(image.attribute("ok"), Some(&ImageValue::Other));
        assert_eq!(image.attribute("tags"), Some(&ImageValue::Other));
        let trail = image.attribute("trail").and_then(ValueView::as_l).unwrap();
        let point = trail[0].as_m().unwrap();
        assert_eq!(point.number::<i64>("t"), Some(1));
        assert_eq!(point.text("k"), Some("a-key-longer-than-twenty-four-bytes"));
    }

    #[test]
    fn an_image_reads_back_what_it_writes() {
        let event: StreamEvent = serde_json::from_str(RECORD).unwrap();
        let image = &event.records[0].change.new_image;
        let again: Image = serde_json::from_str(&serde_json::to_string(image).unwrap()).unwrap();
        assert_eq!(&again, image);
    }

    #[test]
    fn an_image_read_as_a_table_type_is_none_when_it_is_not_one() {
        let event: StreamEvent<ReadAs<Reading>> = serde_json::from_str(RECORD).unwrap();
        assert_eq!(event.records[0].change.new_image, ReadAs(None));
        assert_eq!(event.records[0].change.old_image, ReadAs(None));
        let item = crate::telemetry::reading_item(&reading("tag-1"), 30, 7);
        let text = serde_json::json!({"Records": [{"dynamodb": {"NewImage": stream_json(&item)}}]});
        let event: StreamEvent<ReadAs<Reading>> = serde_json::from_value(text).unwrap();
        assert_eq!(
            event.records[0].change.new_image,
            ReadAs(Some(reading("tag-1")))
        );
    }

    fn reading(device_id: &str) -> Reading {
        Reading {
            device_id: device_id.into(),
            ts_ms: 1_795_161_600_000,
            lat: 48.5,
            lon: 2.25,
            alt: None,
            speed: Some(3.0),
            heading: None,
            battery: Some(80.0),
            accuracy: None,
            seq: Some(4),
            received_at_ms: None,
            owner: Some("acme".into()),
        }
    }

    #[test]
    fn an_image_that_is_not_dynamodb_json_is_refused() {
        for image in [
            r#"{"device_id": "tag-1"}"#,
            r#"{"device_id": {}}"#,
            r#"{"ts": {"N": 5}}"#,
            r#"{"trail": {"L": {"S": "x"}}}"#,
        ] {
            let event = format!(r#"{{"Records": [{{"dynamodb": {{"NewImage": {image}}}}}]}}"#);
            assert!(
                serde_json::from_str::<StreamEvent>(&event).is_err(),
                "{image} was read"
            );
        }
        let null = r#"{"Records": [{"dynamodb": {"OldImage": null}}]}"#;
        let event: StreamEvent = serde_json::from_str(null).unwrap();
        assert!(event.records[0].change.old_image.is_empty());
    }

    /// An SDK item as DynamoDB's stream writes it: typed JSON.
    fn stream_json(item: &std::collections::HashMap<String, AttributeValue>) -> serde_json::Value {
        fn value(attribute: &AttributeValue) -> serde_json::Value {
            match attribute {
                AttributeValue::S(text) => serde_json::json!({ "S": text }),
                AttributeValue::N(text) => serde_json::json!({ "N": text }),
                AttributeValue::L(values) => {
                    serde_json::json!({ "L": values.iter().map(value).collect::<Vec<_>>() })
                }
                AttributeValue::M(map) => serde_json::json!({ "M": stream_json(map) }),
                other => panic!("no geotag layout writes {other:?}"),
            }
        }
        item.iter()
            .map(|(name, attribute)| (name.clone(), value(attribute)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    fn image_of(item: &std::collections::HashMap<String, AttributeValue>) -> Image {
        let event = serde_json::json!({"Records": [{"dynamodb": {"NewImage": stream_json(item)}}]});
        let mut event: StreamEvent = serde_json::from_value(event).unwrap();
        event.records.remove(0).change.new_image
    }

    use aws_sdk_dynamodb::types::AttributeValue;
    use geotag::Reading;
    use proptest::prelude::*;

    fn readings() -> impl Strategy<Value = Vec<Reading>> {
        let optional = |range: std::ops::Range<f64>| proptest::option::of(range);
        proptest::collection::vec(
            (
                "[a-z0-9-]{1,40}",
                0i64..4_000_000_000_000,
                -90.0f64..90.0,
                -180.0f64..180.0,
                (
                    optional(0.0..80.0),
                    optional(0.0..360.0),
                    optional(0.0..100.0),
                ),
                (
                    proptest::option::of(any::<u64>()),
                    proptest::option::of("[a-z]{1,30}"),
                ),
            )
                .prop_map(
                    |(device_id, ts_ms, lat, lon, (speed, heading, battery), (seq, owner))| {
                        Reading {
                            device_id,
                            ts_ms,
                            lat,
                            lon,
                            alt: None,
                            speed,
                            heading,
                            battery,
                            accuracy: Some(5.0),
                            seq,
                            received_at_ms: Some(ts_ms + 1_000),
                            owner,
                        }
                    },
                ),
            1..30,
        )
    }

    proptest! {
        /// Telemetry items and DeviceStats `latest` items (with their
        /// trails) read the same from a stream image as from the SDK.
        #[test]
        fn stream_images_read_as_sdk_items_do(readings in readings()) {
            for reading in &readings {
                let item = crate::telemetry::reading_item(reading, 30, 7);
                let from_sdk = crate::telemetry::reading_from_item(&item);
                prop_assert!(from_sdk.is_some());
                prop_assert_eq!(crate::telemetry::reading_from_item(&image_of(&item)), from_sdk);
            }
            let mut same_tag = readings.clone();
            for reading in &mut same_tag {
                reading.device_id = "tag-1".into();
            }
            if let Some(state) = geotag::stats::LatestState::apply(None, &same_tag) {
                let stats = geotag::store::StatsItem {
                    device_id: "tag-1".into(),
                    revision: 3,
                    body: geotag::store::StatsBody::Latest(state),
                };
                let item = crate::device_stats::stats_item(&stats);
                prop_assert_eq!(crate::device_stats::stats_item_from(&image_of(&item)), Some(stats));
            }
        }

        /// Whatever text arrives, the parser answers: an event or an error.
        #[test]
        fn no_text_panics_the_parser(text in "[{}\\[\\]\":,SNLM0-9a-zA-Z ]{0,200}") {
            let _ = serde_json::from_str::<StreamEvent>(&text);
            let wrapped = format!(r#"{{"Records": [{{"dynamodb": {{"NewImage": {text}}}}}]}}"#);
            let _ = serde_json::from_str::<StreamEvent>(&wrapped);
        }
    }
}
