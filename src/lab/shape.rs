//! Every shape problem of a lab file at once: unknown keys, wrong types, bad enum values and
//! missing keys, found by checking a span-keeping YAML tree against the lab file's JSON
//! Schema (generated from `spec`), after the typed parse stopped at the first one.

use std::collections::BTreeMap;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use miette::SourceSpan;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::diag::{Code, Problem, span_of, suggest};

/// A YAML node with the locations of its keys and values.
#[derive(Debug)]
enum Node {
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Str(String),
    Bool(bool),
    Int(i64),
    Float(f64),
    Null,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(i64::try_from(v).map(Node::Int).unwrap_or(Node::Float(v as f64)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Node::Seq(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(k) = a.next_key::<Spanned<String>>()? {
                    v.push((k, a.next_value()?));
                }
                Ok(Node::Map(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Where a JSON pointer's value (and, for map entries, its key) stands in the file.
#[derive(Clone, Copy)]
struct At {
    key: Option<SourceSpan>,
    value: SourceSpan,
}

fn to_json(
    text: &str,
    node: &Spanned<Node>,
    pointer: String,
    key: Option<SourceSpan>,
    at: &mut BTreeMap<String, At>,
) -> serde_json::Value {
    use serde_json::Value;
    at.insert(pointer.clone(), At { key, value: span_of(text, &node.referenced) });
    match &node.value {
        Node::Map(entries) => {
            let mut m = serde_json::Map::new();
            for (k, v) in entries {
                let p = format!("{pointer}/{}", k.value.replace('~', "~0").replace('/', "~1"));
                let ks = span_of(text, &k.referenced);
                m.insert(k.value.clone(), to_json(text, v, p, Some(ks), at));
            }
            Value::Object(m)
        }
        Node::Seq(items) => Value::Array(
            items.iter().enumerate().map(|(i, v)| to_json(text, v, format!("{pointer}/{i}"), None, at)).collect(),
        ),
        Node::Str(s) => Value::String(s.clone()),
        Node::Bool(b) => Value::Bool(*b),
        Node::Int(i) => Value::from(*i),
        // A whole number beyond 64 bits: kept as its text, so the schema reports it as out
        // of range at its key instead of passing it as a float.
        Node::Float(f) if f.fract() == 0.0 && f.abs() >= 9.2e18 => Value::String(f.to_string()),
        Node::Float(f) => serde_json::Number::from_f64(*f).map(Value::Number).unwrap_or(Value::Null),
        Node::Null => Value::Null,
    }
}

/// The subschema that applies at `path` (following `$ref`s, and taking the non-null branch
/// of optional values, which schemars writes as `anyOf: [T, null]`).
fn schema_at<'s>(schema: &'s serde_json::Value, path: &[&str]) -> Option<&'s serde_json::Value> {
    let resolve = |mut s: &'s serde_json::Value| {
        for _ in 0..8 {
            match s.get("$ref").and_then(|r| r.as_str()).and_then(|r| r.strip_prefix("#/$defs/")) {
                Some(name) => s = &schema["$defs"][name],
                None => break,
            }
        }
        for _ in 0..4 {
            let Some(branches) = s.get("anyOf").and_then(|a| a.as_array()) else { break };
            let deref = |mut b: &'s serde_json::Value| {
                while let Some(name) = b.get("$ref").and_then(|r| r.as_str()).and_then(|r| r.strip_prefix("#/$defs/")) {
                    b = &schema["$defs"][name];
                }
                b
            };
            let branches: Vec<&serde_json::Value> =
                branches.iter().map(deref).filter(|b| b.get("type").and_then(|t| t.as_str()) != Some("null")).collect();
            // A mapping branch (e.g. `dhcp: {start, end}`) is the one whose keys matter.
            // (An `Option` of a choice is two levels of `anyOf`: look through both.)
            match branches.iter().find(|b| b.get("properties").is_some() || b.get("anyOf").is_some()) {
                Some(b) => s = b,
                None => match branches.first() {
                    Some(b) => {
                        s = b;
                        break;
                    }
                    None => break,
                },
            }
        }
        s
    };
    let mut s = resolve(schema);
    for seg in path {
        let next = s
            .get("properties")
            .and_then(|p| p.get(*seg))
            .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
            .or_else(|| s.get("items"))?;
        s = resolve(next);
    }
    Some(s)
}

/// The schema rewritten for reporting: each `anyOf` whose branches are told apart by their
/// JSON type (`Option<T>` is `anyOf: [T, null]`; `dhcp` is `true`, `false` or a mapping)
/// becomes `if type then branch else ...`, so a problem inside the chosen branch (an unknown
/// key, a value of the wrong type) is reported where it is, not as "the whole mapping matches
/// no branch".
fn by_type(schema: &serde_json::Value) -> serde_json::Value {
    use serde_json::{Value, json};
    fn type_of<'v>(defs: &'v Value, b: &'v Value) -> Option<&'v str> {
        let b = match b.get("$ref").and_then(|r| r.as_str()).and_then(|r| r.strip_prefix("#/$defs/")) {
            Some(name) => defs.get(name)?,
            None => b,
        };
        b.get("type")?.as_str()
    }
    fn walk(defs: &Value, v: &mut Value) {
        match v {
            Value::Object(m) => {
                if let Some(Value::Array(branches)) = m.get("anyOf") {
                    let mut types: Option<Vec<&str>> = branches.iter().map(|b| type_of(defs, b)).collect();
                    // `Option<T>` of a T that is itself a choice (`dhcp`): null, else T.
                    if types.is_none() && branches.len() == 2 {
                        let null = branches.iter().position(|b| type_of(defs, b) == Some("null"));
                        if let Some(n) = null {
                            let other = &branches[1 - n];
                            let chain = json!({ "if": { "type": "null" }, "else": other });
                            m.remove("anyOf");
                            if let Value::Object(c) = chain {
                                m.extend(c);
                            }
                            types = None;
                        }
                    }
                    if let Some(Value::Array(branches)) = m.get("anyOf")
                        && let Some(types) = types.filter(|t| {
                            let mut u = t.clone();
                            u.sort_unstable();
                            u.dedup();
                            u.len() == t.len()
                        })
                    {
                        let expected: Vec<&str> = types.iter().copied().filter(|t| *t != "null").collect();
                        let mut chain = json!({ "type": expected });
                        for (b, t) in branches.iter().zip(&types).rev() {
                            chain = json!({ "if": { "type": t }, "then": b, "else": chain });
                        }
                        m.remove("anyOf");
                        if let Value::Object(c) = chain {
                            m.extend(c);
                        }
                    }
                }
                for x in m.values_mut() {
                    walk(defs, x);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| walk(defs, x)),
            _ => {}
        }
    }
    let defs = schema.get("$defs").cloned().unwrap_or(Value::Null);
    let mut out = schema.clone();
    walk(&defs, &mut out);
    out
}

/// `vms.b.nics[1]`: where a JSON pointer's segments lead, as a user reads it.
fn dotted(segs: &[&str]) -> String {
    let mut out = String::new();
    for s in segs {
        if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() {
            out.push_str(&format!("[{s}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&s.replace("~1", "/").replace("~0", "~"));
        }
    }
    out
}

/// The keys allowed at `path`.
fn allowed_keys(schema: &serde_json::Value, path: &[&str]) -> Vec<String> {
    schema_at(schema, path)
        .and_then(|s| s.get("properties"))
        .and_then(|p| p.as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// The allowed values at `path` when it is a closed vocabulary (`oneOf` of `const`s).
fn allowed_values(schema: &serde_json::Value, path: &[&str]) -> Vec<String> {
    schema_at(schema, path)
        .and_then(|s| s.get("oneOf").or_else(|| s.get("enum")))
        .and_then(|v| v.as_array())
        .map(|v| v.iter().filter_map(|o| o.get("const").unwrap_or(o).as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Checks `text` against the lab file schema. `Err` with the parser's error when it cannot
/// even be read as a tree (a YAML syntax error or a resource limit).
pub fn check(text: &str, options: serde_saphyr::Options) -> Result<Vec<Problem>, serde_saphyr::Error> {
    let root: Spanned<Node> = serde_saphyr::from_str_with_options(text, options)?;
    let mut at = BTreeMap::new();
    let value = to_json(text, &root, String::new(), None, &mut at);
    let schema = crate::lab::spec::json_schema();
    // The schema is generated from our own types: it always compiles (a unit test says so).
    let Ok(validator) = jsonschema::validator_for(&by_type(&schema)) else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for err in validator.iter_errors(&value) {
        let pointer = err.instance_path().to_string();
        let Some(here) = at.get(&pointer).copied() else { continue };
        let segs: Vec<&str> = pointer.split('/').skip(1).collect();
        let name = if segs.is_empty() { "the lab file".to_owned() } else { format!("`{}`", dotted(&segs)) };
        let place = Place { pointer: &pointer, segs: &segs, here, name, instance: err.instance() };
        match err.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                out.extend(unknown_keys(&schema, &at, &place, unexpected));
            }
            ValidationErrorKind::Required { property } => out.push(missing_key(&schema, &place, property)),
            ValidationErrorKind::Enum { options } => out.push(bad_value(&place, options)),
            ValidationErrorKind::Type { kind } => out.extend(bad_type(text, &place, kind)),
            ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. } => {
                out.push(no_choice(&schema, &place));
            }
            _ => out.push(Problem::at(
                Code::BadValue,
                here.value,
                format!("{}: {err}", place.name),
                "this value",
                "see docs/lab-file.md",
            )),
        }
    }
    out.sort_by_key(|p| p.labels.first().map(|l| l.offset()).unwrap_or(0));
    Ok(out)
}

/// Where one schema error stands: the value's JSON pointer and its segments, its spans, how
/// a message names it (`vms.b.nics[1].network`, or "the lab file"), and the value itself.
struct Place<'e> {
    pointer: &'e str,
    segs: &'e [&'e str],
    here: At,
    name: String,
    instance: &'e serde_json::Value,
}

/// The value as the file wrote it: a string without quotes, anything else as JSON.
fn written_value(v: &serde_json::Value) -> String {
    v.as_str().map(String::from).unwrap_or_else(|| v.to_string())
}

/// `additionalProperties`: each key the schema does not allow here, at its key.
fn unknown_keys(
    schema: &serde_json::Value,
    at: &BTreeMap<String, At>,
    place: &Place<'_>,
    unexpected: &[String],
) -> Vec<Problem> {
    let allowed = allowed_keys(schema, place.segs);
    unexpected
        .iter()
        .map(|key| {
            let key_at = at.get(&format!("{}/{key}", place.pointer)).and_then(|a| a.key).unwrap_or(place.here.value);
            let help = suggest(key, &allowed, "Allowed here", "allowed here");
            Problem::at(Code::UnknownKey, key_at, format!("unknown key `{key}`"), "not a lab file key here", help)
        })
        .collect()
}

/// `required`: a key the mapping needs; a near miss among its unknown keys (`netwrk:`
/// written for `network:`) is named in the help.
fn missing_key(schema: &serde_json::Value, place: &Place<'_>, property: &serde_json::Value) -> Problem {
    let prop = property.as_str().unwrap_or_default();
    let allowed = allowed_keys(schema, place.segs);
    let typo = place.instance.as_object().and_then(|m| {
        m.keys()
            .filter(|k| !allowed.contains(k))
            .find(|k| crate::diag::did_you_mean(k, std::iter::once(prop)).is_some())
            .cloned()
    });
    let help = match typo {
        Some(t) => format!("rename `{t}` to `{prop}` (`{t}` is not a key here)"),
        None => format!("add `{prop}:`; see docs/lab-file.md"),
    };
    Problem::at(
        Code::MissingKey,
        place.here.key.unwrap_or(place.here.value),
        format!("{} needs the key `{prop}`", place.name),
        "in this mapping",
        help,
    )
}

/// `enum`: a value outside the listed ones, with the nearest as a suggestion.
fn bad_value(place: &Place<'_>, options: &serde_json::Value) -> Problem {
    let opts: Vec<String> =
        options.as_array().into_iter().flatten().filter_map(|o| o.as_str().map(String::from)).collect();
    let got = written_value(place.instance);
    let help = suggest(&got, &opts, "One of", "use one of");
    Problem::at(
        Code::BadValue,
        place.here.value,
        format!("`{got}` is not allowed for {}", place.name),
        "unknown value",
        help,
    )
}

/// `type`: a value of the wrong JSON type, said in the lab file's words; YAML 1.1 booleans,
/// quoted numbers and out-of-range whole numbers get their own message. `None` where text is
/// expected and a scalar is given: the typed parse reads any scalar as text.
fn bad_type(text: &str, place: &Place<'_>, kind: &TypeKind) -> Option<Problem> {
    let expected: Vec<&str> = match kind {
        TypeKind::Single(t) => vec![type_name(*t)],
        TypeKind::Multiple(ts) => ts.iter().map(type_name).collect(),
    };
    // `null` is allowed for optional keys only as "leave it out": not worth saying.
    let expected: Vec<&str> = expected.into_iter().filter(|t| *t != "nothing").collect();
    if expected.contains(&"text") && !place.instance.is_object() && !place.instance.is_array() {
        return None;
    }
    let here = place.here.value;
    let name = &place.name;
    let raw = text[here.offset()..here.offset() + here.len()].trim();
    let written = raw.trim_matches(|c| c == '"' || c == '\'');
    let (message, help) = if expected.contains(&"true or false")
        && let Some(b) = yaml11_bool(written)
    {
        let what = if raw != written { "quoted text" } else { "text in YAML 1.2" };
        (
            format!("`{raw}` is {what}, not true or false, for {name}"),
            format!("did you mean `{b}`? Lab files are YAML 1.2: only unquoted `true` and `false` are booleans"),
        )
    } else if raw != written
        && (expected.contains(&"a whole number") || expected.contains(&"a number"))
        && written.parse::<f64>().is_ok()
    {
        (
            format!("`{raw}` is quoted text, not a number, for {name}"),
            format!("write `{written}` without quotes (lab files are YAML 1.2: quoted means text)"),
        )
    } else if expected == ["a whole number"]
        && raw == written
        && !written.is_empty()
        && written.trim_start_matches(['-', '+']).chars().all(|c| c.is_ascii_digit())
        && !place.instance.is_number()
    {
        (format!("`{written}` is out of range for {name}"), "see docs/lab-file.md for the range of each key".to_owned())
    } else if place.segs.last() == Some(&"dhcp") {
        (
            format!("wrong type for {name}: expected true, false or a range"),
            "write `true`, `false` or a range such as `{start: 10.0.0.100, end: 10.0.0.200}`".to_owned(),
        )
    } else {
        (
            format!("wrong type for {name}: expected {}", expected.join(" or ")),
            "see docs/lab-file.md for the type of each key".to_owned(),
        )
    };
    Some(Problem::at(Code::BadType, here, message, "this value", help))
}

/// `anyOf`/`oneOf`: a value no branch takes (`dhcp:` as true, false or a range; a value
/// outside a choice of names; else the wrong type).
fn no_choice(schema: &serde_json::Value, place: &Place<'_>) -> Problem {
    let choices = allowed_values(schema, place.segs);
    let got = written_value(place.instance);
    let (code, message, label, help) = if place.segs.last() == Some(&"dhcp") {
        (
            Code::BadType,
            "`dhcp` must be true, false or a range".to_string(),
            "not a valid dhcp value",
            "write `true`, `false` or a range such as `{start: 10.0.0.100, end: 10.0.0.200}`".to_string(),
        )
    } else if !choices.is_empty() {
        let help = suggest(&got, &choices, "One of", "use one of");
        (Code::BadValue, format!("`{got}` is not allowed for {}", place.name), "unknown value", help)
    } else {
        (
            Code::BadType,
            format!("{} has the wrong type", place.name),
            "this value",
            "see docs/lab-file.md for the type of each key".to_string(),
        )
    };
    Problem::at(code, place.here.value, message, label, help)
}

/// What a YAML 1.1 parser would have read as a boolean (`yes`, `no`, `on`, `off`, `y`, `n`
/// and quoted `"true"`/`"false"`), which YAML 1.2 reads as text.
fn yaml11_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "y" | "yes" | "on" | "true" => Some(true),
        "n" | "no" | "off" | "false" => Some(false),
        _ => None,
    }
}

fn type_name(t: jsonschema::types::JsonType) -> &'static str {
    use jsonschema::types::JsonType::*;
    match t {
        Array => "a list",
        Boolean => "true or false",
        Integer => "a whole number",
        Null => "nothing",
        Number => "a number",
        Object => "a mapping",
        String => "text",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every choice in the lab file's schema (`Option<T>`, `dhcp`) is decided by the value's
    /// JSON type, so no problem is ever reported as "the whole mapping matches no branch".
    #[test]
    fn no_choice_is_left_undecided() {
        fn any_of(v: &serde_json::Value) -> usize {
            match v {
                serde_json::Value::Object(m) => {
                    usize::from(m.contains_key("anyOf")) + m.values().map(any_of).sum::<usize>()
                }
                serde_json::Value::Array(a) => a.iter().map(any_of).sum(),
                _ => 0,
            }
        }
        let schema = crate::lab::spec::json_schema();
        assert!(any_of(&schema) > 0, "the generated schema has choices to decide");
        assert_eq!(any_of(&by_type(&schema)), 0);
    }

    #[test]
    fn paths_read_as_written() {
        assert_eq!(dotted(&["vms", "b", "nics", "1", "network"]), "vms.b.nics[1].network");
        assert_eq!(dotted(&["networks", "a~1b"]), "networks.a/b");
    }
}
