//! JSONPath as the States Language uses it: `$` (state input) and `$$`
//! (context object) roots, children by name or bracket, indexes, slices,
//! wildcards, recursive descent and simple filters. Reference paths (for
//! `ResultPath`) are the definite subset: names and indexes only.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Child(String),
    Index(i64),
    Wildcard,
    Slice(Option<i64>, Option<i64>, Option<i64>),
    Descend(String),
    DescendAll,
    Filter(Filter),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    path: Vec<Segment>,
    op: Option<(String, Value)>,
}

/// Where a path starts: the state's input (`$`), the context object (`$$`)
/// or a workflow variable (`$name`).
#[derive(Debug, Clone, PartialEq)]
enum Root {
    Input,
    Context,
    Variable(String),
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    text: String,
    root: Root,
    segments: Vec<Segment>,
}

/// Workflow variables, by name.
pub trait Lookup: Sync {
    fn lookup(&self, name: &str) -> Option<Value>;
}

impl Lookup for Map<String, Value> {
    fn lookup(&self, name: &str) -> Option<Value> {
        self.get(name).cloned()
    }
}

/// What a path reads besides the state's input: the context object and the
/// workflow variables in scope.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    pub context: &'a Value,
    pub vars: &'a dyn Lookup,
}

/// No variables (for places that have none, and tests).
pub static NO_VARIABLES: std::sync::LazyLock<Map<String, Value>> =
    std::sync::LazyLock::new(Map::new);

impl<'a> Env<'a> {
    pub fn new(context: &'a Value, vars: &'a dyn Lookup) -> Env<'a> {
        Env { context, vars }
    }

    /// The context object alone, without variables.
    pub fn context_only(context: &'a Value) -> Env<'a> {
        Env {
            context,
            vars: &*NO_VARIABLES,
        }
    }
}

/// Why a path selected nothing usable.
#[derive(Debug, Clone, PartialEq)]
pub enum PathError {
    /// A definite path found nothing in `input` (abbreviated).
    Missing { path: String, input: String },
    /// A `$name` path names a variable that has no value where it is read.
    Undefined { path: String, name: String },
    /// Anything else (a slice that overflows).
    Invalid(String),
}

impl PathError {
    /// AWS's wording, with the field that holds the path.
    pub fn for_field(&self, field: &str) -> String {
        match self {
            PathError::Missing { path, input } => format!(
                "The JSONPath '{path}' specified for the field '{field}' could not be found in the input '{input}'"
            ),
            PathError::Undefined { path, name } => format!(
                "The JSONPath '{path}' specified for the field '{field}' refers to the variable '{name}', which has no value here (no earlier state of this scope or an outer one assigned it)"
            ),
            PathError::Invalid(e) => format!("The field '{field}': {e}"),
        }
    }
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathError::Missing { path, input } => write!(
                f,
                "the JSONPath `{path}` could not be found in the input {input}"
            ),
            PathError::Undefined { path, name } => write!(
                f,
                "`{path}` refers to the variable `${name}`, which has no value here (no earlier state of this scope or an outer one assigned it)"
            ),
            PathError::Invalid(e) => f.write_str(e),
        }
    }
}

impl From<PathError> for String {
    fn from(e: PathError) -> String {
        e.to_string()
    }
}

impl Path {
    pub fn parse(text: &str) -> Result<Path, String> {
        let (root, rest) = if let Some(r) = text.strip_prefix("$$") {
            (Root::Context, r)
        } else if let Some(r) = text.strip_prefix('$') {
            let name_len: usize = r
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .map(char::len_utf8)
                .sum();
            if name_len == 0 {
                (Root::Input, r)
            } else if r.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(format!(
                    "`{text}`: a variable name cannot start with a digit"
                ));
            } else {
                (Root::Variable(r[..name_len].to_string()), &r[name_len..])
            }
        } else {
            return Err(format!(
                "`{text}` is not a path: paths start with `$` or `$$`"
            ));
        };
        let segments = parse_segments(rest, 0).map_err(|e| format!("`{text}`: {e}"))?;
        Ok(Path {
            text: text.to_string(),
            root,
            segments,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn is_context(&self) -> bool {
        self.root == Root::Context
    }

    /// The variable a `$name...` path reads.
    pub fn variable(&self) -> Option<&str> {
        match &self.root {
            Root::Variable(n) => Some(n),
            _ => None,
        }
    }

    /// The path in bracket notation, as AWS's messages write it:
    /// `$['a']['b'][0]`.
    pub fn bracketed(&self) -> String {
        let mut out = match &self.root {
            Root::Input => "$".to_string(),
            Root::Context => "$$".to_string(),
            Root::Variable(n) => format!("${n}"),
        };
        for s in &self.segments {
            match s {
                Segment::Child(n) => out.push_str(&format!("['{n}']")),
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
                _ => return self.text.clone(),
            }
        }
        out
    }

    /// A definite path selects at most one value (no wildcards, slices,
    /// filters or recursive descent).
    pub fn is_definite(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Child(_) | Segment::Index(_)))
    }

    fn variable_value(&self, name: &str, env: &Env) -> Result<Value, PathError> {
        env.vars.lookup(name).ok_or_else(|| PathError::Undefined {
            path: self.text.clone(),
            name: name.to_string(),
        })
    }

    /// Selects from `input`, the context object (`$$`) or a variable
    /// (`$name`). A definite path gives its value or an error naming the
    /// path; an indefinite one gives the array of every match.
    pub fn select(&self, input: &Value, env: &Env) -> Result<Value, PathError> {
        let owned;
        let root = match &self.root {
            Root::Input => input,
            Root::Context => env.context,
            Root::Variable(name) => {
                owned = self.variable_value(name, env)?;
                &owned
            }
        };
        let found = select_all(root, &self.segments)
            .map_err(|e| PathError::Invalid(format!("`{}`: {e}", self.text)))?;
        if self.is_definite() {
            found
                .into_iter()
                .next()
                .cloned()
                .ok_or_else(|| PathError::Missing {
                    path: self.text.clone(),
                    input: abbreviate(root),
                })
        } else {
            Ok(Value::Array(found.into_iter().cloned().collect()))
        }
    }

    /// Whether the path selects something (for `IsPresent`).
    pub fn exists(&self, input: &Value, env: &Env) -> Result<bool, String> {
        let owned;
        let root = match &self.root {
            Root::Input => input,
            Root::Context => env.context,
            Root::Variable(name) => match self.variable_value(name, env) {
                Ok(v) => {
                    owned = v;
                    &owned
                }
                Err(_) => return Ok(false),
            },
        };
        select_all(root, &self.segments)
            .map(|found| !found.is_empty())
            .map_err(|e| format!("`{}`: {e}", self.text))
    }

    /// Writes `value` at this (reference) path inside `target`, creating
    /// objects on the way, as `ResultPath` does.
    pub fn set(&self, target: Value, value: Value) -> Result<Value, String> {
        if self.root != Root::Input {
            return Err(format!(
                "`{}`: ResultPath writes into the state's input (`$...`), not the context object or a variable",
                self.text
            ));
        }
        if self.segments.is_empty() {
            return Ok(value);
        }
        let mut root = target;
        if !root.is_object() && !matches!(self.segments[0], Segment::Index(_)) {
            return Err(format!(
                "ResultPath `{}` cannot be applied: the state's input is not an object ({})",
                self.text,
                abbreviate(&root)
            ));
        }
        set_in(&mut root, &self.segments, value, &self.text)?;
        Ok(root)
    }
}

fn set_in(node: &mut Value, segments: &[Segment], value: Value, text: &str) -> Result<(), String> {
    let Some((first, rest)) = segments.split_first() else {
        *node = value;
        return Ok(());
    };
    match first {
        Segment::Child(name) => {
            if node.is_null() {
                *node = Value::Object(Map::new());
            }
            let Some(map) = node.as_object_mut() else {
                return Err(format!(
                    "ResultPath `{text}`: `{name}` is inside a value that is not an object"
                ));
            };
            let child = map.entry(name.clone()).or_insert(Value::Null);
            set_in(child, rest, value, text)
        }
        Segment::Index(i) => {
            let Some(items) = node.as_array_mut() else {
                return Err(format!(
                    "ResultPath `{text}`: [{i}] is inside a value that is not an array"
                ));
            };
            let len = items.len() as i64;
            let idx = if *i < 0 { len + i } else { *i };
            match items.get_mut(idx as usize) {
                Some(child) if idx >= 0 => set_in(child, rest, value, text),
                _ => Err(format!("ResultPath `{text}`: index {i} is out of range")),
            }
        }
        _ => Err(format!(
            "ResultPath `{text}` must be a reference path (names and indexes only)"
        )),
    }
}

pub fn abbreviate(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s
    }
}

fn select_all<'a>(root: &'a Value, segments: &[Segment]) -> Result<Vec<&'a Value>, String> {
    let mut current = vec![root];
    for seg in segments {
        let mut next = Vec::new();
        for node in current {
            apply(node, seg, &mut next)?;
        }
        current = next;
    }
    Ok(current)
}

fn apply<'a>(node: &'a Value, seg: &Segment, out: &mut Vec<&'a Value>) -> Result<(), String> {
    match seg {
        Segment::Child(name) => {
            if let Some(v) = node.get(name.as_str()) {
                out.push(v);
            }
        }
        Segment::Index(i) => {
            if let Some(items) = node.as_array() {
                let idx = if *i < 0 { items.len() as i64 + i } else { *i };
                if idx >= 0 {
                    if let Some(v) = items.get(idx as usize) {
                        out.push(v);
                    }
                }
            }
        }
        Segment::Wildcard => match node {
            Value::Array(items) => out.extend(items.iter()),
            Value::Object(map) => out.extend(map.values()),
            _ => {}
        },
        Segment::Slice(start, end, step) => {
            if let Some(items) = node.as_array() {
                let len = items.len() as i64;
                let norm = |v: i64| if v < 0 { (len + v).max(0) } else { v.min(len) };
                let step = step.unwrap_or(1);
                if step > 0 {
                    let (s, e) = (norm(start.unwrap_or(0)), norm(end.unwrap_or(len)));
                    let mut i = s;
                    while i < e {
                        out.push(&items[i as usize]);
                        i = i.checked_add(step).ok_or_else(|| {
                            format!("the slice step {step} goes past the largest index a path can reach")
                        })?;
                    }
                }
            }
        }
        Segment::Descend(name) => descend(node, &mut |v| {
            if let Some(found) = v.get(name.as_str()) {
                out.push(found);
            }
        }),
        Segment::DescendAll => descend(node, &mut |v| match v {
            Value::Array(items) => out.extend(items.iter()),
            Value::Object(map) => out.extend(map.values()),
            _ => {}
        }),
        Segment::Filter(filter) => {
            let candidates: Vec<&Value> = match node {
                Value::Array(items) => items.iter().collect(),
                Value::Object(map) => map.values().collect(),
                _ => Vec::new(),
            };
            for c in candidates {
                if filter_matches(c, filter)? {
                    out.push(c);
                }
            }
        }
    }
    Ok(())
}

fn descend<'a>(node: &'a Value, f: &mut dyn FnMut(&'a Value)) {
    f(node);
    match node {
        Value::Array(items) => items.iter().for_each(|v| descend(v, f)),
        Value::Object(map) => map.values().for_each(|v| descend(v, f)),
        _ => {}
    }
}

fn filter_matches(item: &Value, filter: &Filter) -> Result<bool, String> {
    let found = select_all(item, &filter.path)?;
    let Some(value) = found.first() else {
        return Ok(false);
    };
    let Some((op, literal)) = &filter.op else {
        return Ok(true);
    };
    use std::cmp::Ordering::*;
    let ordering = match (value, literal) {
        (Value::Number(a), Value::Number(b)) => a
            .as_f64()
            .zip(b.as_f64())
            .and_then(|(a, b)| a.partial_cmp(&b)),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        // Other types only compare for (in)equality.
        (a, b) => {
            return Ok(match op.as_str() {
                "==" => *a == b,
                "!=" => *a != b,
                _ => false,
            });
        }
    };
    Ok(ordering.is_some_and(|o| match op.as_str() {
        "==" => o == Equal,
        "!=" => o != Equal,
        "<" => o == Less,
        "<=" => o != Greater,
        ">" => o == Greater,
        ">=" => o != Less,
        _ => false,
    }))
}

/// How deep filters may nest inside filters.
pub const MAX_FILTER_DEPTH: usize = 16;
/// How many steps a path may have: no JSON value a state sees is deeper
/// (inputs are read with a nesting limit of 128), and a longer `ResultPath`
/// would build a value too deep to read back.
pub const MAX_SEGMENTS: usize = 128;

fn parse_segments(mut rest: &str, depth: usize) -> Result<Vec<Segment>, String> {
    if depth > MAX_FILTER_DEPTH {
        return Err(format!("filters nest more than {MAX_FILTER_DEPTH} deep"));
    }
    let mut out = Vec::new();
    while !rest.is_empty() {
        if out.len() == MAX_SEGMENTS {
            return Err(format!("a path has at most {MAX_SEGMENTS} steps"));
        }
        if let Some(r) = rest.strip_prefix("..") {
            if let Some(r2) = r.strip_prefix('*') {
                out.push(Segment::DescendAll);
                rest = r2;
            } else {
                let (name, r2) = take_name(r);
                if name.is_empty() {
                    return Err("`..` needs a name or `*` after it".into());
                }
                out.push(Segment::Descend(name));
                rest = r2;
            }
        } else if let Some(r) = rest.strip_prefix('.') {
            if let Some(r2) = r.strip_prefix('*') {
                out.push(Segment::Wildcard);
                rest = r2;
            } else {
                let (name, r2) = take_name(r);
                if name.is_empty() {
                    return Err("a `.` must be followed by a field name".into());
                }
                out.push(Segment::Child(name));
                rest = r2;
            }
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = find_bracket_end(r).ok_or("unclosed `[`")?;
            let inner = r[..end].trim();
            rest = &r[end + 1..];
            out.push(parse_bracket(inner, depth)?);
        } else {
            return Err(format!(
                "unexpected `{}`",
                rest.chars().next().unwrap_or(' ')
            ));
        }
    }
    Ok(out)
}

fn take_name(s: &str) -> (String, &str) {
    let end = s
        .char_indices()
        .find(|(_, c)| *c == '.' || *c == '[')
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    (s[..end].to_string(), &s[end..])
}

fn find_bracket_end(s: &str) -> Option<usize> {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[' | '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ']') if depth == 0 => return Some(i),
            (None, ']') => depth -= 1,
            _ => {}
        }
    }
    None
}

fn parse_bracket(inner: &str, depth: usize) -> Result<Segment, String> {
    if inner == "*" {
        return Ok(Segment::Wildcard);
    }
    if let Some(q) = inner
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
    {
        return Ok(Segment::Child(q.to_string()));
    }
    if let Some(f) = inner.strip_prefix("?(").and_then(|s| s.strip_suffix(')')) {
        return parse_filter(f.trim(), depth + 1);
    }
    if inner.contains(':') {
        let parts: Vec<&str> = inner.split(':').collect();
        if parts.len() > 3 {
            return Err(format!("bad slice `[{inner}]`"));
        }
        let num = |s: &str| -> Result<Option<i64>, String> {
            let s = s.trim();
            if s.is_empty() {
                Ok(None)
            } else {
                s.parse()
                    .map(Some)
                    .map_err(|_| format!("bad slice `[{inner}]`"))
            }
        };
        return Ok(Segment::Slice(
            num(parts[0])?,
            num(parts.get(1).copied().unwrap_or(""))?,
            num(parts.get(2).copied().unwrap_or(""))?,
        ));
    }
    inner.parse::<i64>().map(Segment::Index).map_err(|_| {
        format!("`[{inner}]` is not an index, a quoted name, a slice, `*` or a filter")
    })
}

fn parse_filter(f: &str, depth: usize) -> Result<Segment, String> {
    let f = f.strip_prefix('@').ok_or("a filter must start with `@`")?;
    for op in ["==", "!=", "<=", ">=", "<", ">"] {
        if let Some((left, right)) = f.split_once(op) {
            let path = parse_segments(left.trim(), depth)?;
            let right = right.trim();
            let literal =
                if let Some(s) = right.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
                    Value::String(s.to_string())
                } else {
                    serde_json::from_str(right)
                        .map_err(|_| format!("cannot read `{right}` in a filter"))?
                };
            return Ok(Segment::Filter(Filter {
                path,
                op: Some((op.to_string(), literal)),
            }));
        }
    }
    Ok(Segment::Filter(Filter {
        path: parse_segments(f.trim(), depth)?,
        op: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(path: &str, input: &Value) -> Result<Value, String> {
        let ctx = json!({"Execution": {"Id": "x"}});
        Path::parse(path)
            .unwrap()
            .select(input, &Env::context_only(&ctx))
            .map_err(String::from)
    }

    #[test]
    fn definite_paths_select_one_value_or_fail() {
        let v = json!({"a": {"b": [10, 20, {"c": "x"}]}, "odd key": 1});
        assert_eq!(sel("$", &v).unwrap(), v);
        assert_eq!(sel("$.a.b[1]", &v).unwrap(), json!(20));
        assert_eq!(sel("$.a.b[-1].c", &v).unwrap(), json!("x"));
        assert_eq!(sel("$['odd key']", &v).unwrap(), json!(1));
        assert_eq!(sel("$$.Execution.Id", &v).unwrap(), json!("x"));
        assert!(sel("$.a.missing", &v)
            .unwrap_err()
            .contains("could not be found"));
    }

    #[test]
    fn indefinite_paths_select_arrays() {
        let v = json!({"items": [{"n": 1, "k": "a"}, {"n": 5, "k": "b"}, {"n": 9, "k": "c"}]});
        assert_eq!(sel("$.items[*].n", &v).unwrap(), json!([1, 5, 9]));
        assert_eq!(sel("$.items[0:2].k", &v).unwrap(), json!(["a", "b"]));
        assert_eq!(sel("$.items[?(@.n > 2)].k", &v).unwrap(), json!(["b", "c"]));
        assert_eq!(sel("$.items[?(@.k == 'a')].n", &v).unwrap(), json!([1]));
        assert_eq!(sel("$..k", &v).unwrap(), json!(["a", "b", "c"]));
        assert_eq!(sel("$.missing[*]", &v).unwrap(), json!([]));
    }

    #[test]
    fn result_paths_write_and_create_objects() {
        let p = Path::parse("$.result.inner").unwrap();
        assert_eq!(
            p.set(json!({"a": 1}), json!(2)).unwrap(),
            json!({"a": 1, "result": {"inner": 2}})
        );
        assert_eq!(
            Path::parse("$")
                .unwrap()
                .set(json!({"a": 1}), json!(3))
                .unwrap(),
            json!(3)
        );
        assert!(p.set(json!("text"), json!(1)).is_err());
        assert!(Path::parse("$.a[*]")
            .unwrap()
            .set(json!({"a": [1]}), json!(1))
            .is_err());
    }

    #[test]
    fn bad_paths_are_rejected_with_a_reason() {
        for bad in ["a.b", "$.", "$[", "$[x]", "$..", "$.a[1:2:3:4]"] {
            assert!(Path::parse(bad).is_err(), "{bad}");
        }
    }
}
