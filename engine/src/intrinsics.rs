//! Intrinsic functions (`States.Format('{} of {}', $.a, $.b)`, ...), parsed
//! once and evaluated against the state input and the context object.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use crate::path::{Env, Path};

#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Literal(Value),
    Path(Path),
    Call(Call),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: String,
    pub args: Vec<Arg>,
}

const FUNCTIONS: &[&str] = &[
    "States.Format",
    "States.StringToJson",
    "States.JsonToString",
    "States.Array",
    "States.ArrayPartition",
    "States.ArrayContains",
    "States.ArrayRange",
    "States.ArrayGetItem",
    "States.ArrayLength",
    "States.ArrayUnique",
    "States.Base64Encode",
    "States.Base64Decode",
    "States.Hash",
    "States.JsonMerge",
    "States.MathRandom",
    "States.MathAdd",
    "States.StringSplit",
    "States.UUID",
];

pub fn is_intrinsic(text: &str) -> bool {
    text.trim_start().starts_with("States.")
}

impl Call {
    pub fn parse(text: &str) -> Result<Call, String> {
        let mut p = Parser {
            s: text.trim(),
            pos: 0,
            depth: 0,
        };
        let call = p.call()?;
        p.skip_ws();
        if p.pos != p.s.len() {
            return Err(format!("`{text}`: unexpected text after the call"));
        }
        Ok(call)
    }

    pub fn eval(&self, input: &Value, env: &Env) -> Result<Value, String> {
        let args = self
            .args
            .iter()
            .map(|a| match a {
                Arg::Literal(v) => Ok(v.clone()),
                Arg::Path(p) => p.select(input, env).map_err(String::from),
                Arg::Call(c) => c.eval(input, env),
            })
            .collect::<Result<Vec<Value>, String>>()?;
        apply(&self.name, &args)
    }
}

/// How deep calls may nest inside calls.
pub const MAX_NESTING: usize = 16;

struct Parser<'a> {
    s: &'a str,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.s[self.pos..]
    }
    fn skip_ws(&mut self) {
        while self.rest().starts_with(' ') {
            self.pos += 1;
        }
    }
    fn call(&mut self) -> Result<Call, String> {
        self.skip_ws();
        let end = self
            .rest()
            .find('(')
            .ok_or_else(|| format!("`{}` is not a call", self.s))?;
        let name = self.rest()[..end].trim().to_string();
        if !FUNCTIONS.contains(&name.as_str()) {
            return Err(format!("`{name}` is not an intrinsic function"));
        }
        self.pos += end + 1;
        let mut args = Vec::new();
        self.skip_ws();
        if self.rest().starts_with(')') {
            self.pos += 1;
            return Ok(Call { name, args });
        }
        loop {
            args.push(self.arg()?);
            self.skip_ws();
            if self.rest().starts_with(',') {
                self.pos += 1;
            } else if self.rest().starts_with(')') {
                self.pos += 1;
                return Ok(Call { name, args });
            } else {
                return Err(format!(
                    "`{}`: expected `,` or `)` in the arguments of {name}",
                    self.s
                ));
            }
        }
    }
    fn arg(&mut self) -> Result<Arg, String> {
        self.skip_ws();
        let rest = self.rest();
        if rest.starts_with('\'') {
            let mut out = String::new();
            let mut chars = rest.char_indices().skip(1);
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        // \' and \\ unescape here; \{ and \} stay for States.Format.
                        if let Some((_, n)) = chars.next() {
                            if n == '{' || n == '}' {
                                out.push('\\');
                            }
                            out.push(n);
                        }
                    }
                    '\'' => {
                        self.pos += i + 1;
                        return Ok(Arg::Literal(Value::String(out)));
                    }
                    c => out.push(c),
                }
            }
            return Err(format!("`{}`: unterminated string", self.s));
        }
        if rest.starts_with("States.") {
            if self.depth == MAX_NESTING {
                return Err(format!(
                    "`{}`: intrinsic functions nest more than {MAX_NESTING} deep",
                    self.s
                ));
            }
            self.depth += 1;
            let call = self.call()?;
            self.depth -= 1;
            return Ok(Arg::Call(call));
        }
        let end = arg_end(rest);
        let token = rest[..end].trim().to_string();
        self.pos += end;
        if token.starts_with('$') {
            return Ok(Arg::Path(Path::parse(&token)?));
        }
        match token.as_str() {
            "true" => Ok(Arg::Literal(Value::Bool(true))),
            "false" => Ok(Arg::Literal(Value::Bool(false))),
            "null" => Ok(Arg::Literal(Value::Null)),
            t => serde_json::from_str::<Number>(t)
                .map(|n| Arg::Literal(Value::Number(n)))
                .map_err(|_| format!("`{t}` is not a string, number, boolean, null, path or call")),
        }
    }
}

fn arg_end(s: &str) -> usize {
    let mut depth = 0;
    let mut quote = false;
    for (i, c) in s.char_indices() {
        match c {
            '\'' => quote = !quote,
            '[' | '(' if !quote => depth += 1,
            ']' if !quote => depth -= 1,
            ')' if !quote && depth == 0 => return i,
            ')' if !quote => depth -= 1,
            ',' if !quote && depth == 0 => return i,
            _ => {}
        }
    }
    s.len()
}

fn want_n(name: &str, args: &[Value], n: usize) -> Result<(), String> {
    if args.len() == n {
        Ok(())
    } else {
        Err(format!("{name} takes {n} argument(s), not {}", args.len()))
    }
}

fn as_str<'a>(name: &str, v: &'a Value) -> Result<&'a str, String> {
    v.as_str()
        .ok_or_else(|| format!("{name}: expected a string, got {v}"))
}

fn as_int(name: &str, v: &Value) -> Result<i64, String> {
    v.as_i64()
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
        .ok_or_else(|| format!("{name}: expected an integer, got {v}"))
}

/// A number rounded to an integer as Step Functions' MathAdd does (Java's
/// `Math.round`: halves go up, so 1.5 is 2 and -1.5 is -1).
fn rounded(name: &str, v: &Value) -> Result<i64, String> {
    if let Some(i) = v.as_i64() {
        return Ok(i);
    }
    match v.as_f64() {
        Some(f) if f.is_finite() && f.abs() < 9.2e18 => Ok((f + 0.5).floor() as i64),
        _ => Err(format!("{name}: expected a number, got {v}")),
    }
}

fn as_array<'a>(name: &str, v: &'a Value) -> Result<&'a Vec<Value>, String> {
    v.as_array()
        .ok_or_else(|| format!("{name}: expected an array, got {v}"))
}

/// The hex digest of `data` with one of the algorithms `States.Hash` and
/// JSONata's `$hash` accept.
pub(crate) fn hash_hex(data: &str, algorithm: &str) -> Option<String> {
    use sha2::Digest;
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    Some(match algorithm {
        "MD5" => hex(&md5::Md5::digest(data.as_bytes())),
        "SHA-1" => hex(&sha1::Sha1::digest(data.as_bytes())),
        "SHA-256" => hex(&sha2::Sha256::digest(data.as_bytes())),
        "SHA-384" => hex(&sha2::Sha384::digest(data.as_bytes())),
        "SHA-512" => hex(&sha2::Sha512::digest(data.as_bytes())),
        _ => return None,
    })
}

fn apply(name: &str, args: &[Value]) -> Result<Value, String> {
    match name {
        "States.Format" => {
            let template = as_str(name, args.first().ok_or("States.Format needs a template")?)?;
            let mut out = String::new();
            let mut values = args[1..].iter();
            let mut chars = template.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            out.push(n);
                        }
                    }
                    '{' if chars.peek() == Some(&'}') => {
                        chars.next();
                        let v = values
                            .next()
                            .ok_or("States.Format has more {} than arguments")?;
                        match v {
                            Value::String(s) => out.push_str(s),
                            Value::Object(_) | Value::Array(_) => {
                                return Err("States.Format arguments must be strings, numbers, booleans or null".into())
                            }
                            other => out.push_str(&other.to_string()),
                        }
                    }
                    c => out.push(c),
                }
            }
            if values.next().is_some() {
                return Err("States.Format has more arguments than {}".into());
            }
            Ok(Value::String(out))
        }
        "States.StringToJson" => {
            want_n(name, args, 1)?;
            let text = as_str(name, &args[0])?;
            // An empty (or blank) string is null, as AWS gives.
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            serde_json::from_str(text).map_err(|e| format!("{name}: {e}"))
        }
        "States.JsonToString" => {
            want_n(name, args, 1)?;
            Ok(Value::String(args[0].to_string()))
        }
        "States.Array" => Ok(Value::Array(args.to_vec())),
        "States.ArrayPartition" => {
            want_n(name, args, 2)?;
            let items = as_array(name, &args[0])?;
            let size = as_int(name, &args[1])?;
            if size <= 0 {
                return Err(format!("{name}: the chunk size must be positive"));
            }
            Ok(Value::Array(
                items
                    .chunks(size as usize)
                    .map(|c| Value::Array(c.to_vec()))
                    .collect(),
            ))
        }
        "States.ArrayContains" => {
            want_n(name, args, 2)?;
            Ok(Value::Bool(as_array(name, &args[0])?.contains(&args[1])))
        }
        "States.ArrayRange" => {
            want_n(name, args, 3)?;
            let (start, end, step) = (
                as_int(name, &args[0])?,
                as_int(name, &args[1])?,
                as_int(name, &args[2])?,
            );
            if step == 0 {
                return Err(format!("{name}: the step must not be 0"));
            }
            let mut out = Vec::new();
            let mut i = start;
            while (step > 0 && i <= end) || (step < 0 && i >= end) {
                out.push(Value::from(i));
                if out.len() > 1000 {
                    return Err(format!("{name}: at most 1000 items"));
                }
                match i.checked_add(step) {
                    Some(next) => i = next,
                    None => break,
                }
            }
            Ok(Value::Array(out))
        }
        "States.ArrayGetItem" => {
            want_n(name, args, 2)?;
            let items = as_array(name, &args[0])?;
            let i = as_int(name, &args[1])?;
            items
                .get(usize::try_from(i).map_err(|_| format!("{name}: negative index"))?)
                .cloned()
                .ok_or_else(|| format!("{name}: index {i} is out of range"))
        }
        "States.ArrayLength" => {
            want_n(name, args, 1)?;
            Ok(Value::from(as_array(name, &args[0])?.len()))
        }
        "States.ArrayUnique" => {
            want_n(name, args, 1)?;
            let mut out: Vec<Value> = Vec::new();
            for v in as_array(name, &args[0])? {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            Ok(Value::Array(out))
        }
        "States.Base64Encode" => {
            want_n(name, args, 1)?;
            Ok(Value::String(
                base64::engine::general_purpose::STANDARD.encode(as_str(name, &args[0])?),
            ))
        }
        "States.Base64Decode" => {
            want_n(name, args, 1)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(as_str(name, &args[0])?)
                .map_err(|e| format!("{name}: {e}"))?;
            String::from_utf8(bytes)
                .map(Value::String)
                .map_err(|e| format!("{name}: {e}"))
        }
        "States.Hash" => {
            want_n(name, args, 2)?;
            let data = match &args[0] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let algorithm = as_str(name, &args[1])?;
            let out = hash_hex(&data, algorithm).ok_or_else(|| {
                format!("{name}: `{algorithm}` is not MD5, SHA-1, SHA-256, SHA-384 or SHA-512")
            })?;
            Ok(Value::String(out))
        }
        "States.JsonMerge" => {
            want_n(name, args, 3)?;
            if args[2] != Value::Bool(false) {
                return Err(format!(
                    "{name}: only shallow merges (false) are supported, as in AWS"
                ));
            }
            let (Some(a), Some(b)) = (args[0].as_object(), args[1].as_object()) else {
                return Err(format!("{name}: both arguments must be objects"));
            };
            let mut out: Map<String, Value> = a.clone();
            for (k, v) in b {
                out.insert(k.clone(), v.clone());
            }
            Ok(Value::Object(out))
        }
        "States.MathRandom" => {
            if args.len() < 2 {
                return Err(format!("{name} takes a start and an end"));
            }
            let (start, end) = (as_int(name, &args[0])?, as_int(name, &args[1])?);
            if end <= start {
                return Err(format!("{name}: the end must be greater than the start"));
            }
            Ok(Value::from(rand::random_range(start..end)))
        }
        "States.MathAdd" => {
            want_n(name, args, 2)?;
            let (a, b) = (rounded(name, &args[0])?, rounded(name, &args[1])?);
            a.checked_add(b).map(Value::from).ok_or_else(|| {
                format!("{name}: {a} + {b} is outside the range of a 64-bit integer")
            })
        }
        "States.StringSplit" => {
            want_n(name, args, 2)?;
            let s = as_str(name, &args[0])?;
            let delims: Vec<char> = as_str(name, &args[1])?.chars().collect();
            Ok(Value::Array(
                s.split(|c| delims.contains(&c))
                    .filter(|p| !p.is_empty())
                    .map(|p| Value::String(p.to_string()))
                    .collect(),
            ))
        }
        "States.UUID" => {
            want_n(name, args, 0)?;
            Ok(Value::String(uuid::Uuid::new_v4().to_string()))
        }
        other => Err(format!("`{other}` is not an intrinsic function")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(text: &str, input: Value) -> Result<Value, String> {
        let ctx = json!({"Execution": {"Name": "e1"}});
        Call::parse(text)?.eval(&input, &crate::path::Env::context_only(&ctx))
    }

    #[test]
    fn the_documented_examples() {
        assert_eq!(
            eval(
                "States.Format('Hello, my name is {}.', $.name)",
                json!({"name": "Arnav"})
            )
            .unwrap(),
            json!("Hello, my name is Arnav.")
        );
        assert_eq!(
            eval("States.StringToJson($.s)", json!({"s": "{\"number\": 20}"})).unwrap(),
            json!({"number": 20})
        );
        assert_eq!(
            eval("States.JsonToString($.o)", json!({"o": {"a": 1}})).unwrap(),
            json!("{\"a\":1}")
        );
        assert_eq!(
            eval("States.Array('Foo', 2020, $.x, null)", json!({"x": true})).unwrap(),
            json!(["Foo", 2020, true, null])
        );
        assert_eq!(
            eval(
                "States.ArrayPartition($.a, 4)",
                json!({"a": [1,2,3,4,5,6,7,8,9]})
            )
            .unwrap(),
            json!([[1, 2, 3, 4], [5, 6, 7, 8], [9]])
        );
        assert_eq!(
            eval("States.ArrayContains($.a, 5)", json!({"a": [1,2,5]})).unwrap(),
            json!(true)
        );
        assert_eq!(
            eval("States.ArrayRange(1, 9, 2)", json!({})).unwrap(),
            json!([1, 3, 5, 7, 9])
        );
        assert_eq!(
            eval("States.ArrayGetItem($.a, 1)", json!({"a": [1,2,3]})).unwrap(),
            json!(2)
        );
        assert_eq!(
            eval("States.ArrayLength($.a)", json!({"a": [1,2,3]})).unwrap(),
            json!(3)
        );
        assert_eq!(
            eval("States.ArrayUnique($.a)", json!({"a": [1,2,3,3,3,3,3,3,4]})).unwrap(),
            json!([1, 2, 3, 4])
        );
        assert_eq!(
            eval("States.Base64Encode('Data to encode')", json!({})).unwrap(),
            json!("RGF0YSB0byBlbmNvZGU=")
        );
        assert_eq!(
            eval("States.Base64Decode('RGF0YSB0byBlbmNvZGU=')", json!({})).unwrap(),
            json!("Data to encode")
        );
        assert_eq!(
            eval("States.Hash('input data', 'SHA-1')", json!({})).unwrap(),
            json!("aaff4a450a104cd177d28d18d74485e8cae074b7")
        );
        assert_eq!(
            eval(
                "States.JsonMerge($.a, $.b, false)",
                json!({"a": {"x": 1, "y": 1}, "b": {"y": 2}})
            )
            .unwrap(),
            json!({"x": 1, "y": 2})
        );
        assert_eq!(
            eval("States.MathAdd($.v, -1)", json!({"v": 111})).unwrap(),
            json!(110)
        );
        assert_eq!(
            eval("States.StringSplit('1,2,3,4,5', ',')", json!({})).unwrap(),
            json!(["1", "2", "3", "4", "5"])
        );
        assert_eq!(
            eval(
                "States.Format('{} in {}', States.MathAdd(1, 2), $$.Execution.Name)",
                json!({})
            )
            .unwrap(),
            json!("3 in e1")
        );
        let uuid = eval("States.UUID()", json!({})).unwrap();
        assert_eq!(uuid.as_str().unwrap().len(), 36);
        let r = eval("States.MathRandom(1, 10)", json!({}))
            .unwrap()
            .as_i64()
            .unwrap();
        assert!((1..10).contains(&r));
        assert_eq!(
            eval("States.Format('a \\{\\} b {}', 'c')", json!({})).unwrap(),
            json!("a {} b c")
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(Call::parse("States.Nope(1)")
            .unwrap_err()
            .contains("not an intrinsic"));
        assert!(eval("States.ArrayLength($.a)", json!({"a": 1}))
            .unwrap_err()
            .contains("expected an array"));
        assert!(eval("States.Format('{} {}', 'x')", json!({}))
            .unwrap_err()
            .contains("more {}"));
        assert!(Call::parse("States.Format('x'").is_err());
    }
}
