//! The parsed-JSON view: a request body parsed once into a light tree, for keys and the few
//! fields the cache reads, and the [`Json`] trait the key writers read it (or a `Value`) through.
//!
//! Building a `serde_json::Value` allocates a `String` per key and per string and a map per
//! object, which costs more than hashing the key. [`ParsedBody`] borrows strings from the request
//! bytes (only strings with escapes are copied), keeps numbers as `serde_json::Number` (the same
//! values `Value` would hold) and holds each object's entries sorted once by key, exactly the
//! order the key is written in. Arrays and objects live in two arenas, so a body costs a handful
//! of allocations however many messages it has.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// A JSON request body parsed without building a `serde_json::Value`: what a
/// [`KeyPolicy`](crate::KeyPolicy) reads a request's body from.
///
/// Accepts exactly the texts `serde_json::from_slice::<Value>` accepts and holds the same data:
/// [`ParsedBody::to_value`] equals what `serde_json::from_slice` returns.
///
/// ```
/// use holysheep_cache::ParsedBody;
///
/// let text = br#"{"model": "gpt-4o-mini", "messages": [], "stream": true}"#;
/// let body = ParsedBody::parse(text).unwrap();
/// assert_eq!(body.to_value(), serde_json::from_slice::<serde_json::Value>(text).unwrap());
/// assert!(ParsedBody::parse(b"{\"model\":").is_err());
/// ```
pub struct ParsedBody<'a> {
    repr: Repr<'a>,
}

pub(super) enum Repr<'a> {
    Tree(Tree<'a>),
    /// A body that was a `Value` already ([`ParsedBody::from_value`]).
    Value(Value),
}

/// A parsed body: the root and the arenas its arrays and objects point into.
pub(super) struct Tree<'a> {
    root: Node<'a>,
    /// The items of every array, each array's contiguous.
    items: Vec<Node<'a>>,
    /// The entries of every object, each object's contiguous, sorted by key and deduplicated.
    entries: Vec<Entry<'a>>,
}

type Entry<'a> = (Cow<'a, str>, Node<'a>);

/// A JSON value with borrowed strings; containers are ranges of the [`Tree`]'s arenas.
pub(super) enum Node<'a> {
    Null,
    Bool(bool),
    Number(Number),
    Str(Cow<'a, str>),
    Array(Range<usize>),
    Object(Range<usize>),
}

impl<'a> Tree<'a> {
    pub(super) fn root(&self) -> &Node<'a> {
        &self.root
    }
}

/// The arenas and the stacks of unfinished containers, while parsing.
struct Builder<'a> {
    items: Vec<Node<'a>>,
    entries: Vec<Entry<'a>>,
    /// Items of the arrays being parsed, innermost last.
    item_stack: Vec<Node<'a>>,
    /// Entries of the objects being parsed, innermost last.
    entry_stack: Vec<Entry<'a>>,
}

impl<'a> ParsedBody<'a> {
    /// Parses `bytes` as one JSON value (with optional surrounding whitespace).
    ///
    /// # Errors
    ///
    /// When `serde_json::from_slice::<serde_json::Value>` would fail: invalid JSON, trailing
    /// characters, nesting deeper than 128, out-of-range numbers.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, serde_json::Error> {
        // A chat body holds roughly one node per 40 bytes; a guess, the arenas grow as needed.
        let guess = bytes.len() / 64;
        let builder = RefCell::new(Builder {
            items: Vec::with_capacity(guess),
            entries: Vec::with_capacity(guess),
            item_stack: Vec::with_capacity(16),
            entry_stack: Vec::with_capacity(16),
        });
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let parsed = NodeSeed { builder: &builder }
            .deserialize(&mut de)
            .and_then(|node| de.end().map(|()| node));
        match parsed {
            Ok(root) => {
                let Builder { items, entries, .. } = builder.into_inner();
                Ok(ParsedBody {
                    repr: Repr::Tree(Tree {
                        root,
                        items,
                        entries,
                    }),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The body as a `serde_json::Value`.
    pub fn to_value(&self) -> Value {
        match &self.repr {
            Repr::Tree(tree) => tree.root.to_value(tree),
            Repr::Value(value) => value.clone(),
        }
    }

    /// A body held as a `Value`, as [`ParsedBody::parse`] keeps the few texts `Value` reads
    /// specially: the keys of such a body are written from the `Value`. Also how a layer keys a
    /// body it changed (the semantic cache keys a request without its last message).
    pub fn from_value(value: Value) -> ParsedBody<'static> {
        ParsedBody {
            repr: Repr::Value(value),
        }
    }

    /// Whether the body is a JSON object.
    pub fn is_object(&self) -> bool {
        match &self.repr {
            Repr::Tree(tree) => matches!(tree.root, Node::Object(_)),
            Repr::Value(value) => value.is_object(),
        }
    }

    /// The string at `path` (object keys from the top), e.g. `&["model"]`.
    pub fn str_at(&self, path: &[&str]) -> Option<&str> {
        match &self.repr {
            Repr::Tree(tree) => match lookup(tree, &tree.root, path)?.view(tree) {
                View::Str(s, _) => Some(s),
                _ => None,
            },
            Repr::Value(value) => lookup(&(), value, path)?.as_str(),
        }
    }

    /// The boolean at `path` (object keys from the top), e.g. `&["stream_options", "include_usage"]`.
    pub fn bool_at(&self, path: &[&str]) -> Option<bool> {
        match &self.repr {
            Repr::Tree(tree) => match lookup(tree, &tree.root, path)?.view(tree) {
                View::Bool(b) => Some(b),
                _ => None,
            },
            Repr::Value(value) => lookup(&(), value, path)?.as_bool(),
        }
    }

    pub(super) fn repr(&self) -> &Repr<'a> {
        &self.repr
    }
}

impl fmt::Debug for ParsedBody<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ParsedBody").field(&self.to_value()).finish()
    }
}

fn lookup<'v, J: Json>(cx: &'v J::Cx, mut node: &'v J, path: &[&str]) -> Option<&'v J> {
    for key in path {
        let View::Object(obj) = node.view(cx) else {
            return None;
        };
        node = J::get(obj, key)?;
    }
    Some(node)
}

/// A JSON tree the key is written from: a `serde_json::Value`, or the lighter tree of a
/// [`ParsedBody`]. One writer for both is what keeps their keys identical.
pub(super) trait Json: Sized {
    /// An object's entries.
    type Obj: ?Sized;
    /// What nodes are resolved in (the arena of a [`ParsedBody`]; nothing for a `Value`).
    type Cx: ?Sized;

    fn view<'v>(&'v self, cx: &'v Self::Cx) -> View<'v, Self>;

    /// The value of `key` (the last one when the text repeated it, as `serde_json::Map` keeps).
    fn get<'v>(obj: &'v Self::Obj, key: &str) -> Option<&'v Self>;

    /// Whether `f` holds for every key.
    fn all_keys(obj: &Self::Obj, f: impl FnMut(&str) -> bool) -> bool;

    /// Calls `f` for each entry in key order (byte order of the UTF-8 keys, which is code point
    /// order), with the key, whether the key is plain (as in [`View::Str`]) and the value.
    fn for_each_sorted<E>(
        obj: &Self::Obj,
        f: impl FnMut(&str, bool, &Self) -> Result<(), E>,
    ) -> Result<(), E>;
}

/// One node of a [`Json`] tree.
pub(super) enum View<'v, J: Json> {
    Null,
    Bool(bool),
    Number(&'v Number),
    /// A string, and whether it is known to hold no `"`, `\` or control character (so the
    /// canonical form needs no escaping and no scan for it).
    Str(&'v str, bool),
    Array(&'v [J]),
    Object(&'v J::Obj),
}

impl Json for Value {
    type Obj = Map<String, Value>;
    type Cx = ();

    fn view<'v>(&'v self, _: &'v ()) -> View<'v, Self> {
        match self {
            Value::Null => View::Null,
            Value::Bool(b) => View::Bool(*b),
            Value::Number(n) => View::Number(n),
            Value::String(s) => View::Str(s, false),
            Value::Array(items) => View::Array(items),
            Value::Object(map) => View::Object(map),
        }
    }

    fn get<'v>(obj: &'v Self::Obj, key: &str) -> Option<&'v Self> {
        obj.get(key)
    }

    fn all_keys(obj: &Self::Obj, mut f: impl FnMut(&str) -> bool) -> bool {
        obj.keys().all(|k| f(k))
    }

    fn for_each_sorted<E>(
        obj: &Self::Obj,
        mut f: impl FnMut(&str, bool, &Self) -> Result<(), E>,
    ) -> Result<(), E> {
        for_each_sorted(obj, |k, v| f(k, false, v))
    }
}

///
/// serde_json's default map is already sorted; only `preserve_order` maps need sorting, so this
/// checks first and skips the allocation in the common case rather than relying on either.
fn for_each_sorted<E>(
    map: &Map<String, Value>,
    mut f: impl FnMut(&str, &Value) -> Result<(), E>,
) -> Result<(), E> {
    if is_sorted(map) {
        for (k, v) in map {
            f(k, v)?;
        }
    } else {
        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (k, v) in entries {
            f(k, v)?;
        }
    }
    Ok(())
}

fn is_sorted(map: &Map<String, Value>) -> bool {
    let mut keys = map.keys();
    let Some(mut prev) = keys.next() else {
        return true;
    };
    for k in keys {
        if k < prev {
            return false;
        }
        prev = k;
    }
    true
}

impl<'a> Node<'a> {
    fn to_value(&self, tree: &Tree<'a>) -> Value {
        match self.view(tree) {
            View::Null => Value::Null,
            View::Bool(b) => Value::Bool(b),
            View::Number(n) => Value::Number(n.clone()),
            View::Str(s, _) => Value::String(s.to_owned()),
            View::Array(items) => Value::Array(items.iter().map(|v| v.to_value(tree)).collect()),
            View::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.as_ref().to_owned(), v.to_value(tree)))
                    .collect::<Map<String, Value>>(),
            ),
        }
    }
}

impl<'a> Json for Node<'a> {
    type Obj = [Entry<'a>];
    type Cx = Tree<'a>;

    fn view<'v>(&'v self, tree: &'v Tree<'a>) -> View<'v, Self> {
        match self {
            Node::Null => View::Null,
            Node::Bool(b) => View::Bool(*b),
            Node::Number(n) => View::Number(n),
            // serde_json borrows a string only when its text has no escape, and rejects raw control
            // characters, so a borrowed string holds no `"`, `\` or control character.
            Node::Str(s) => View::Str(s, matches!(s, Cow::Borrowed(_))),
            // Ranges are only ever made by the builder for these arenas; `get` rather than
            // indexing all the same, so that no bug can turn into a panic.
            Node::Array(range) => View::Array(tree.items.get(range.clone()).unwrap_or_default()),
            Node::Object(range) => {
                View::Object(tree.entries.get(range.clone()).unwrap_or_default())
            }
        }
    }

    fn get<'v>(obj: &'v Self::Obj, key: &str) -> Option<&'v Self> {
        obj.binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| &obj[i].1)
    }

    fn all_keys(obj: &Self::Obj, mut f: impl FnMut(&str) -> bool) -> bool {
        obj.iter().all(|(k, _)| f(k))
    }

    fn for_each_sorted<E>(
        obj: &Self::Obj,
        mut f: impl FnMut(&str, bool, &Self) -> Result<(), E>,
    ) -> Result<(), E> {
        for (k, v) in obj {
            // Plain for the same reason as strings (see `view`).
            f(k, matches!(k, Cow::Borrowed(_)), v)?;
        }
        Ok(())
    }
}

/// Parses one [`Node`].
#[derive(Clone, Copy)]
struct NodeSeed<'s, 'de> {
    builder: &'s RefCell<Builder<'de>>,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_, 'de> {
    type Value = Node<'de>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Node<'de>, D::Error> {
        de.deserialize_any(self)
    }
}

/// A map key, borrowed when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Cow<'de, str>, D::Error> {
        de.deserialize_str(KeySeed)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// Mirrors `serde_json::Value`'s own visitor, so both read a text alike (but for the private
/// keys `Value` reads specially, which are plain keys here: see [`ParsedBody`]).
impl<'de> Visitor<'de> for NodeSeed<'_, 'de> {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Number::from_f64(v).map_or(Node::Null, Node::Number))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Node::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Node::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Node::Str(Cow::Owned(v)))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Node::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        self.deserialize(de)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // Items wait on a shared stack (nested arrays push theirs above and take them off when
        // they end), then move to the arena together, so each array is one contiguous range.
        let base = self.builder.borrow().item_stack.len();
        while let Some(item) = seq.next_element_seed(self)? {
            self.builder.borrow_mut().item_stack.push(item);
        }
        let mut b = self.builder.borrow_mut();
        let Builder {
            items, item_stack, ..
        } = &mut *b;
        let start = items.len();
        items.extend(item_stack.drain(base.min(item_stack.len())..));
        Ok(Node::Array(start..items.len()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let base = self.builder.borrow().entry_stack.len();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value = map.next_value_seed(self)?;
            self.builder.borrow_mut().entry_stack.push((key, value));
        }
        let mut b = self.builder.borrow_mut();
        let Builder {
            entries,
            entry_stack,
            ..
        } = &mut *b;
        let base = base.min(entry_stack.len());
        let start = entries.len();
        let own = &mut entry_stack[base..];
        // Strictly increasing keys are sorted and unique: the common case costs one pass.
        if own.is_sorted_by(|a, b| a.0 < b.0) {
            entries.extend(entry_stack.drain(base..));
        } else {
            // Stable, so among equal keys the last one in the text ends last, and is the one
            // kept, as `serde_json::Map::insert` keeps the last value.
            own.sort_by(|a, b| a.0.cmp(&b.0));
            for (key, value) in entry_stack.drain(base..) {
                match entries[start..].last_mut() {
                    Some(last) if last.0 == key => last.1 = value,
                    _ => entries.push((key, value)),
                }
            }
        }
        Ok(Node::Object(start..entries.len()))
    }
}
