//! Opaque page cursors.
//!
//! A cursor is base64url of a small versioned JSON document: the route it
//! belongs to, the customer and device it was issued for, a digest of the
//! query it continues, and where the page stopped ([`Position`]). Clients must
//! treat it as opaque; no table key is in it as DynamoDB spells one.
//!
//! It is not signed, and need not be: isolation never rests on it. Every
//! request is scoped to its token's customer before the cursor is read, a
//! cursor only says where to continue inside that scope, and one issued for
//! another customer, device, route or query is refused rather than followed.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use geotag::read::Position;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::problem::Problem;

const VERSION: u8 = 1;
/// Longer than any cursor this API issues (a 64-byte id and a 46-byte key).
pub const MAX_CURSOR_BYTES: usize = 512;

/// What a cursor continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope<'a> {
    pub route: &'static str,
    pub customer: &'a str,
    pub device: Option<&'a str>,
    /// The query's own parameters (times, filters), not the cursor or limit.
    pub query: &'a [(&'a str, String)],
}

#[derive(Serialize, Deserialize)]
struct Document {
    v: u8,
    r: String,
    c: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<String>,
    q: String,
    p: Stop,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "k")]
enum Stop {
    #[serde(rename = "d")]
    Device { id: String },
    #[serde(rename = "r")]
    Reading { key: String },
    #[serde(rename = "a")]
    Alert { at: i64, id: String },
}

fn query_digest(query: &[(&str, String)]) -> String {
    let mut hash = Sha256::new();
    for (name, value) in query {
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update(value.as_bytes());
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..8])
}

pub fn encode(scope: &Scope, position: &Position) -> String {
    let stop = match position {
        Position::Device(id) => Stop::Device { id: id.clone() },
        Position::Reading(key) => Stop::Reading { key: key.clone() },
        Position::Alert(at, id) => Stop::Alert {
            at: *at,
            id: id.clone(),
        },
    };
    let document = Document {
        v: VERSION,
        r: scope.route.to_owned(),
        c: scope.customer.to_owned(),
        d: scope.device.map(str::to_owned),
        q: query_digest(scope.query),
        p: stop,
    };
    // Serializing a struct of strings and numbers cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&document).unwrap_or_default())
}

fn invalid(detail: &str) -> Problem {
    Problem::invalid("cursor", "invalid_cursor", detail)
}

/// The position a cursor continues from, if it was issued for this scope.
pub fn decode(cursor: &str, scope: &Scope) -> Result<Position, Problem> {
    if cursor.len() > MAX_CURSOR_BYTES {
        return Err(invalid("the cursor is longer than any this API issues"));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| invalid("the cursor is not one this API issued (not base64url)"))?;
    let document: Document = serde_json::from_slice(&bytes)
        .map_err(|_| invalid("the cursor is not one this API issued"))?;
    if document.v != VERSION {
        return Err(invalid("the cursor is of another version of this API"));
    }
    if document.r != scope.route
        || document.c != scope.customer
        || document.d.as_deref() != scope.device
    {
        return Err(Problem::invalid(
            "cursor",
            "foreign_cursor",
            "the cursor was issued for another listing",
        ));
    }
    if document.q != query_digest(scope.query) {
        return Err(Problem::invalid(
            "cursor",
            "foreign_cursor",
            "the cursor continues a query with other parameters; repeat them unchanged",
        ));
    }
    let valid_text = |text: &str| !text.is_empty() && text.len() <= 128 && !text.contains('\0');
    match document.p {
        Stop::Device { id } if geotag::reading::is_valid_device_id(&id) => Ok(Position::Device(id)),
        Stop::Reading { key } if valid_text(&key) => Ok(Position::Reading(key)),
        Stop::Alert { at, id } if valid_text(&id) => Ok(Position::Alert(at, id)),
        _ => Err(invalid("the cursor's position is not one this API issues")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scope<'a>(customer: &'a str, query: &'a [(&'a str, String)]) -> Scope<'a> {
        Scope {
            route: "track",
            customer,
            device: Some("tag-1"),
            query,
        }
    }

    #[test]
    fn a_cursor_continues_its_own_listing_only() {
        let query = [("from", "1".to_owned())];
        let position = Position::Reading("2026-12-01T00:00:00.000Z#00000000000000000001".into());
        let cursor = encode(&scope("acme", &query), &position);
        assert_eq!(decode(&cursor, &scope("acme", &query)), Ok(position));
        let code = |result: Result<Position, Problem>| result.map_err(|p| p.code);
        assert_eq!(
            code(decode(&cursor, &scope("globex", &query))),
            Err("foreign_cursor")
        );
        let other_query = [("from", "2".to_owned())];
        assert_eq!(
            code(decode(&cursor, &scope("acme", &other_query))),
            Err("foreign_cursor")
        );
        let other_device = Scope {
            device: Some("tag-2"),
            ..scope("acme", &query)
        };
        assert_eq!(code(decode(&cursor, &other_device)), Err("foreign_cursor"));
        assert!(!cursor.contains("sk") && !cursor.contains("device_id"));
    }

    proptest! {
        /// Any string is refused with a 400 or decodes to a position; nothing panics.
        #[test]
        fn any_text_is_a_position_or_a_400(text in ".{0,600}") {
            let query = [];
            if let Err(problem) = decode(&text, &scope("acme", &query)) {
                prop_assert_eq!(problem.status.as_u16(), 400);
            }
        }

        /// A cursor with any bit flipped is refused with a 400, or still
        /// names this scope (the check is against the request's scope, which
        /// the cursor does not choose).
        #[test]
        fn tampered_cursors_are_a_400_or_in_scope(flip in 0usize..200, bit in 0u8..8) {
            let query = [];
            let cursor = encode(&scope("acme", &query), &Position::Alert(5, "a#b".into()));
            let mut bytes = URL_SAFE_NO_PAD.decode(&cursor).unwrap();
            let index = flip % bytes.len();
            bytes[index] ^= 1 << bit;
            let tampered = URL_SAFE_NO_PAD.encode(&bytes);
            if let Err(problem) = decode(&tampered, &scope("acme", &query)) {
                prop_assert_eq!(problem.status.as_u16(), 400);
            }
            prop_assert!(decode(&tampered, &scope("globex", &query)).is_err());
        }
    }
}
