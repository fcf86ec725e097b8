//! Lookups in JSON text without building a tree. A published event is read for a handful of
//! attributes (its version, type and id, the fields extractors route on) and then passed on as
//! the bytes it came as; parsing all of it into a `serde_json::Value` (an IndexMap with a
//! SipHash table and a `String` per key, for every object in it) was half of the user-space
//! instructions a targeted publish cost (callgrind). Here a value is parsed only when asked
//! for; what is skipped is still checked to be JSON (serde_json's `RawValue`).
//!
//! Two differences from a full parse, both where text is skipped: a number is checked for
//! syntax, not range, so `1e400` inside `data` is accepted and passed on as it came (RFC 8259
//! sets no range; a full parse into f64 refuses it); and nesting is not limited to serde_json's
//! 128 levels (skipping keeps a stack as long as the text, which the body limit bounds). Looked
//! up, such a value is absent.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

/// A JSON value as text, borrowed from the document it is in (what the deserializer hands out;
/// the functions here take and give `&str`, JSON text the caller vouches for).
type Raw<'a> = &'a RawValue;

/// The members of the object `text`, in order, keys unescaped, values as text. None: `text`
/// is not one JSON object (with nothing after it but whitespace).
pub fn members(text: &str) -> Option<Vec<(Cow<'_, str>, &str)>> {
    let mut de = serde_json::Deserializer::from_str(text);
    let out = de.deserialize_map(MembersVisitor).ok()?;
    de.end().ok()?;
    Some(out)
}

/// The value of member `key` of the object `v`; the last one when the key repeats, as a
/// parse into a map keeps it. None: no such member, or `v` is not an object.
pub fn raw_member<'a>(v: &'a str, key: &str) -> Option<&'a str> {
    if !v.starts_with('{') {
        return None;
    }
    let mut de = serde_json::Deserializer::from_str(v);
    de.deserialize_map(FindMember { key })
        .ok()?
        .map(RawValue::get)
}

/// Element `i` of the array `v`. None: out of range, or `v` is not an array.
fn element(v: &str, i: usize) -> Option<&str> {
    if !v.starts_with('[') {
        return None;
    }
    let mut de = serde_json::Deserializer::from_str(v);
    de.deserialize_seq(FindElement { index: i })
        .ok()?
        .map(RawValue::get)
}

/// RFC 6901 resolution of `pointer` in the text `v`, the way [`pointer`] resolves it in the
/// parsed value.
pub fn raw_pointer<'a>(v: &'a str, pointer: &str) -> Option<&'a str> {
    tokens(pointer)?.try_fold(v, raw_step)
}

/// One reference token resolved in the text `target`.
fn raw_step<'a>(target: &'a str, token: Cow<'_, str>) -> Option<&'a str> {
    match target.as_bytes().first() {
        Some(b'{') => raw_member(target, &token),
        Some(b'[') => index(&token).and_then(|i| element(target, i)),
        _ => None,
    }
}

/// `serde_json::Value::pointer` (RFC 6901) without its allocation per reference token: an
/// extractor's pointer is resolved for every event of its type.
pub fn pointer<'a>(v: &'a Value, pointer: &str) -> Option<&'a Value> {
    tokens(pointer)?.try_fold(v, |target, token| match target {
        Value::Object(map) => map.get(&*token),
        Value::Array(list) => index(&token).and_then(|i| list.get(i)),
        _ => None,
    })
}

/// The reference tokens of a JSON pointer, unescaped; None: not a pointer (no leading `/`).
fn tokens(pointer: &str) -> Option<impl Iterator<Item = Cow<'_, str>>> {
    let rest = if pointer.is_empty() {
        None
    } else {
        Some(pointer.strip_prefix('/')?)
    };
    Some(rest.into_iter().flat_map(|r| r.split('/')).map(|token| {
        if token.contains('~') {
            token.replace("~1", "/").replace("~0", "~").into()
        } else {
            token.into()
        }
    }))
}

/// The canonical form values are compared in: compact JSON. Used for constraint values and for
/// values extracted from events, so equality of the strings is equality of the JSON values.
pub fn canonical(v: &Value) -> Box<str> {
    // Not `to_string`: that goes through `core::fmt`, once per extracted field per event.
    // Serializing a `Value` cannot fail, and serde_json writes UTF-8.
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    String::from_utf8(bytes)
        .unwrap_or_default()
        .into_boxed_str()
}

/// What extractors read an event's fields from: a parsed value, or an event still in its bytes.
pub trait Lookup {
    /// The [`canonical`] form of the value at `pointer`.
    fn canonical_at(&self, pointer: &str) -> Option<Box<str>>;
}

impl Lookup for Value {
    fn canonical_at(&self, p: &str) -> Option<Box<str>> {
        pointer(self, p).map(canonical)
    }
}

/// Where the members of one object are in its text, as byte ranges of key and value: looking
/// one up again costs no scan of the object.
#[derive(Debug, Clone)]
pub struct Index(Vec<[u32; 4]>);

impl Index {
    /// `members` of `text` (as [`members`] gave them). None: a key holds escapes (its text is
    /// not the key), or `text` is 4 GiB or more.
    pub fn of(text: &str, members: &[(Cow<'_, str>, &str)]) -> Option<Index> {
        let base = text.as_ptr() as usize;
        let range = |s: &str| -> Option<[u32; 2]> {
            let start = (s.as_ptr() as usize).checked_sub(base)?;
            let end = start + s.len();
            (end <= text.len()).then_some([u32::try_from(start).ok()?, u32::try_from(end).ok()?])
        };
        let mut out = Vec::with_capacity(members.len());
        for (key, value) in members {
            let Cow::Borrowed(key) = key else {
                return None;
            };
            let ([k0, k1], [v0, v1]) = (range(key)?, range(value)?);
            out.push([k0, k1, v0, v1]);
        }
        Some(Index(out))
    }

    /// The value of member `key` of the indexed object `text` (the last, if it repeats).
    pub fn get<'a>(&self, text: &'a str, key: &str) -> Option<&'a str> {
        let slice = |a: u32, b: u32| text.get(a as usize..b as usize);
        self.0
            .iter()
            .rev()
            .find(|[k0, k1, ..]| slice(*k0, *k1) == Some(key))
            .and_then(|[.., v0, v1]| slice(*v0, *v1))
    }

    /// [`raw_pointer`] in the indexed object `text`.
    pub fn pointer<'a>(&self, text: &'a str, pointer: &str) -> Option<&'a str> {
        let mut tokens = tokens(pointer)?;
        let Some(first) = tokens.next() else {
            return Some(text);
        };
        tokens.try_fold(self.get(text, &first)?, raw_step)
    }
}

/// An array index token: digits, no leading zero (RFC 6901 §4).
pub fn index(token: &str) -> Option<usize> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

/// The text `v` parsed. None only for what a tree cannot hold: a number beyond f64, nesting
/// past 128 levels (see the module's note).
pub fn raw_value(v: &str) -> Option<Value> {
    serde_json::from_str(v).ok()
}

/// [`canonical`] of the text `v` parsed. A string without escapes is already in that form
/// (serde_json escapes only quotes, backslashes and control characters, which JSON text cannot
/// hold unescaped inside a string).
pub fn raw_canonical(text: &str) -> Option<Box<str>> {
    if text.starts_with('"') && !text.contains('\\') {
        return Some(text.into());
    }
    Some(canonical(&raw_value(text)?))
}

/// A key, borrowed unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Vec<(Cow<'de, str>, &'de str)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(Key(k)) = map.next_key::<Key>()? {
            out.push((k, map.next_value::<Raw>()?.get()));
        }
        Ok(out)
    }
}

struct FindMember<'k> {
    key: &'k str,
}

impl<'de> Visitor<'de> for FindMember<'_> {
    type Value = Option<Raw<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(Key(k)) = map.next_key::<Key>()? {
            if k == self.key {
                found = Some(map.next_value::<Raw>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

struct FindElement {
    index: usize,
}

impl<'de> Visitor<'de> for FindElement {
    type Value = Option<Raw<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut i = 0;
        while let Some(v) = seq.next_element_seed(Nth(i == self.index))? {
            if v.is_some() {
                found = v;
            }
            i += 1;
        }
        Ok(found)
    }
}

/// An array element, kept if it is the one asked for, else skipped.
struct Nth(bool);

impl<'de> DeserializeSeed<'de> for Nth {
    type Value = Option<Raw<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        if self.0 {
            <Raw as Deserialize>::deserialize(d).map(Some)
        } else {
            IgnoredAny::deserialize(d).map(|_| None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn raw(text: &str) -> String {
        text.to_owned()
    }

    #[test]
    fn pointers_resolve_as_in_the_parsed_value() {
        let text = r#"{"data": {"user": "alice", "a/b": 1, "m~n": 2, "list": [10, {"x": 11}], "": 3, "e\u0073c": "\"q\""}, "data": {"user": "bob"}, "n": 1.50}"#;
        let v: Value = serde_json::from_str(text).unwrap();
        let r = raw(text);
        for p in [
            "",
            "/data",
            "/data/user",
            "/data/a~1b",
            "/data/m~0n",
            "/data/list/1",
            "/data/list/1/x",
            "/data/list/01",
            "/data/list/-",
            "/data/list/2",
            "/data/",
            "/data/user/x",
            "data",
            "/nope",
            "/n",
        ] {
            let got = raw_pointer(&r, p).map(|x| raw_value(x).unwrap());
            assert_eq!(got.as_ref(), v.pointer(p), "{p:?}");
            assert_eq!(pointer(&v, p), v.pointer(p), "{p:?}");
        }
        // The text before the duplicate key is the first "data"; lookups see the last.
        assert_eq!(
            raw_value(raw_pointer(&r, "/data/user").unwrap()).unwrap(),
            "bob"
        );
    }

    #[test]
    fn an_index_finds_what_a_scan_finds() {
        let text = r#"{"a": 1, "b" : {"c/d": [5], "e~f": 6}, "a": "two"}"#;
        let index = Index::of(text, &members(text).unwrap()).unwrap();
        for p in ["", "/a", "/b", "/b/c~1d/0", "/b/e~0f", "/b/x", "/z", "a"] {
            assert_eq!(index.pointer(text, p), raw_pointer(text, p), "{p:?}");
        }
        assert_eq!(index.get(text, "a"), Some(r#""two""#));
        let escaped = r#"{"\u0061": 1}"#;
        assert!(Index::of(escaped, &members(escaped).unwrap()).is_none());
    }

    #[test]
    fn strings_and_canonical_forms() {
        // A string without escapes is its own canonical form; one with escapes is re-encoded.
        assert_eq!(&*raw_canonical(&raw(r#""plain""#)).unwrap(), r#""plain""#);
        let e = raw(r#""a\nb\u00e9""#);
        assert_eq!(&*raw_canonical(&e).unwrap(), r#""a\nbé""#);
        assert_eq!(&*raw_canonical(&raw("1.50")).unwrap(), "1.5");
        assert_eq!(
            &*raw_canonical(&raw(r#"{ "b" : [1 , null] }"#)).unwrap(),
            r#"{"b":[1,null]}"#
        );
        assert_eq!(raw_canonical(&raw("1e400")), None);
    }

    #[test]
    fn members_refuses_what_is_not_one_object() {
        assert_eq!(members(r#"{"a":1,"a":2}"#).unwrap().len(), 2);
        for bad in [
            "[1]",
            "1",
            r#"{"a":1} x"#,
            r#"{"a":}"#,
            r#"{"a":"\x"}"#,
            "{",
            "",
        ] {
            assert!(members(bad).is_none(), "{bad:?}");
        }
        assert!(members(" {\"a\" : [ ] } \n").is_some());
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e9f64..1e9).prop_map(Value::from),
            "[a-z~/\"\\\\\u{e9}\n]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::vec(("[a-c~/]{0,2}", inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn pointers_in(v: &Value, prefix: String, out: &mut Vec<String>) {
        out.push(prefix.clone());
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let token = k.replace('~', "~0").replace('/', "~1");
                    pointers_in(x, format!("{prefix}/{token}"), out);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    pointers_in(x, format!("{prefix}/{i}"), out);
                }
                out.push(format!("{prefix}/{}", a.len()));
            }
            _ => out.push(format!("{prefix}/x")),
        }
    }

    proptest! {
        #[test]
        fn every_pointer_finds_what_the_tree_finds(v in json_value(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                serde_json::to_string(&v).unwrap()
            };
            let r = raw(&text);
            let index = members(&text).and_then(|m| Index::of(&text, &m));
            // Compared with the same text parsed (serde_json's float parse does not round-trip
            // every f64 exactly; both sides parse alike).
            let v: Value = serde_json::from_str(&text).unwrap();
            let mut ps = Vec::new();
            pointers_in(&v, String::new(), &mut ps);
            for p in ps {
                let got = raw_pointer(&r, &p).map(|x| raw_value(x).unwrap());
                prop_assert_eq!(got.as_ref(), v.pointer(&p), "{}", p);
                if let Some(index) = &index {
                    prop_assert_eq!(index.pointer(&text, &p), raw_pointer(&r, &p), "{}", p);
                }
                if let Some(x) = raw_pointer(&r, &p) {
                    let want = serde_json::to_string(v.pointer(&p).unwrap()).unwrap();
                    prop_assert_eq!(&*raw_canonical(x).unwrap(), want.as_str());
                }
            }
        }
    }
}
