//! Enough of CloudFormation's intrinsic functions (`!Ref`, `!GetAtt`, `!Sub`,
//! `!Join`, `!Split`, `!Select`, `!If` and the condition functions) to read
//! Stevedore's templates as a deploy would: a value as CloudFormation would
//! render it for given parameters and resource attributes. What the tests of
//! the schedule input and of the IAM policies read.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};
use serde_yaml::Value as Yaml;

/// A template read from the repository.
pub fn load(path: &str) -> Yaml {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// What `!Ref` and `!GetAtt` give: parameters, pseudo parameters
/// (`AWS::Region`), resources (`Queue`, `Queue.Arn`).
pub struct Env<'a> {
    pub template: &'a Yaml,
    pub values: BTreeMap<String, Value>,
}

/// `AWS::NoValue`: dropped from the list or map it is in.
const NO_VALUE: &str = "\u{0}AWS::NoValue";

impl<'a> Env<'a> {
    pub fn new(template: &'a Yaml) -> Env<'a> {
        let mut values = BTreeMap::new();
        for (k, v) in [
            ("AWS::Partition", "aws"),
            ("AWS::Region", "us-east-1"),
            ("AWS::AccountId", "123456789012"),
            ("AWS::URLSuffix", "amazonaws.com"),
            ("AWS::StackName", "stevedore"),
            ("AWS::StackId", "arn:aws:cloudformation:us-east-1:123456789012:stack/stevedore/0f1e2d3c-1111-2222-3333-444455556666"),
        ] {
            values.insert(k.to_string(), json!(v));
        }
        values.insert("AWS::NoValue".into(), json!(NO_VALUE));
        // Parameters take their defaults until set.
        if let Some(params) = template["Parameters"].as_mapping() {
            for (k, p) in params {
                let default = match &p["Default"] {
                    Yaml::String(s) => Some(json!(s)),
                    Yaml::Number(n) => Some(json!(n.to_string())),
                    _ => None,
                };
                let list = p["Type"].as_str() == Some("CommaDelimitedList");
                if let (Some(k), Some(d)) = (k.as_str(), default) {
                    let d = match d {
                        Value::String(s) if list => json!(s.split(',').collect::<Vec<_>>()),
                        other => other,
                    };
                    values.insert(k.to_string(), d);
                }
            }
        }
        Env { template, values }
    }

    pub fn set(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.values.insert(name.to_string(), value.into());
        self
    }

    fn lookup(&self, name: &str) -> Result<Value, String> {
        self.values
            .get(name)
            .cloned()
            .ok_or_else(|| format!("no value for `{name}` (set it in the test's Env)"))
    }

    /// Whether a condition of the template's `Conditions` holds.
    pub fn condition(&self, name: &str) -> Result<bool, String> {
        let c = &self.template["Conditions"][name];
        if c.is_null() {
            return Err(format!("no condition `{name}`"));
        }
        self.truth(c)
    }

    fn truth(&self, v: &Yaml) -> Result<bool, String> {
        match self.eval(v)? {
            Value::Bool(b) => Ok(b),
            other => Err(format!("a condition evaluated to {other}")),
        }
    }

    /// The value CloudFormation renders for `v`.
    pub fn eval(&self, v: &Yaml) -> Result<Value, String> {
        match v {
            Yaml::Null => Ok(Value::Null),
            Yaml::Bool(b) => Ok(json!(b)),
            Yaml::Number(n) => Ok(json!(n.to_string())),
            Yaml::String(s) => Ok(json!(s)),
            Yaml::Sequence(items) => {
                let mut out = Vec::new();
                for item in items {
                    let item = self.eval(item)?;
                    if item != json!(NO_VALUE) {
                        out.push(item);
                    }
                }
                Ok(Value::Array(out))
            }
            Yaml::Mapping(map) => {
                if map.len() == 1 {
                    let (k, arg) = map.iter().next().expect("one entry");
                    if let Some(k) = k.as_str() {
                        if k == "Ref" || k == "Condition" || k.starts_with("Fn::") {
                            let tag = match k {
                                "Ref" => "!Ref".to_string(),
                                "Condition" => "!Condition".to_string(),
                                other => format!("!{}", other.trim_start_matches("Fn::")),
                            };
                            return self.function(&tag, arg);
                        }
                    }
                }
                let mut out = serde_json::Map::new();
                for (k, item) in map {
                    let key = k.as_str().ok_or("a non-string key")?.to_string();
                    let item = self.eval(item)?;
                    if item != json!(NO_VALUE) {
                        out.insert(key, item);
                    }
                }
                Ok(Value::Object(out))
            }
            Yaml::Tagged(t) => self.function(&t.tag.to_string(), &t.value),
        }
    }

    fn string(&self, v: &Yaml) -> Result<String, String> {
        match self.eval(v)? {
            Value::String(s) => Ok(s),
            other => Err(format!("expected a string, found {other}")),
        }
    }

    fn function(&self, tag: &str, arg: &Yaml) -> Result<Value, String> {
        let list = |n: usize| -> Result<&Vec<Yaml>, String> {
            arg.as_sequence()
                .filter(|s| s.len() == n)
                .ok_or_else(|| format!("{tag} takes a list of {n}"))
        };
        match tag {
            "!Ref" => self.lookup(arg.as_str().ok_or("!Ref takes a name")?),
            "!GetAtt" => {
                let name = match arg {
                    Yaml::String(s) => s.clone(),
                    Yaml::Sequence(parts) => parts
                        .iter()
                        .map(|p| p.as_str().unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join("."),
                    _ => return Err("!GetAtt takes X.Attr".into()),
                };
                self.lookup(&name)
            }
            "!Sub" => {
                let (text, local) = match arg {
                    Yaml::String(s) => (s.clone(), BTreeMap::new()),
                    Yaml::Sequence(parts) if parts.len() == 2 => {
                        let mut local = BTreeMap::new();
                        for (k, v) in parts[1].as_mapping().ok_or("!Sub's variables")? {
                            local.insert(
                                k.as_str().ok_or("a variable name")?.to_string(),
                                self.eval(v)?,
                            );
                        }
                        (parts[0].as_str().ok_or("!Sub's text")?.to_string(), local)
                    }
                    _ => return Err("!Sub takes a text, or [text, variables]".into()),
                };
                Ok(json!(self.sub(&text, &local)?))
            }
            "!Join" => {
                let l = list(2)?;
                let sep = self.string(&l[0])?;
                let items = match self.eval(&l[1])? {
                    Value::Array(items) => items,
                    other => return Err(format!("!Join of {other}")),
                };
                let parts: Vec<String> = items
                    .into_iter()
                    .map(|i| match i {
                        Value::String(s) => Ok(s),
                        other => Err(format!("!Join of {other}")),
                    })
                    .collect::<Result<_, _>>()?;
                Ok(json!(parts.join(&sep)))
            }
            "!Split" => {
                let l = list(2)?;
                let sep = self.string(&l[0])?;
                let text = self.string(&l[1])?;
                Ok(json!(text.split(sep.as_str()).collect::<Vec<_>>()))
            }
            "!Select" => {
                let l = list(2)?;
                let i: usize = self.string(&l[0])?.parse().map_err(|_| "!Select's index")?;
                match self.eval(&l[1])? {
                    Value::Array(items) => items
                        .get(i)
                        .cloned()
                        .ok_or_else(|| format!("!Select {i} of {} items", items.len())),
                    other => Err(format!("!Select of {other}")),
                }
            }
            "!If" => {
                let l = list(3)?;
                let name = l[0].as_str().ok_or("!If's condition name")?;
                if self.condition(name)? {
                    self.eval(&l[1])
                } else {
                    self.eval(&l[2])
                }
            }
            "!Equals" => {
                let l = list(2)?;
                Ok(json!(self.eval(&l[0])? == self.eval(&l[1])?))
            }
            "!Not" => Ok(json!(!self.truth(&list(1)?[0])?)),
            "!And" | "!Or" => {
                let items = arg.as_sequence().ok_or("a list of conditions")?;
                let values = items
                    .iter()
                    .map(|c| self.truth(c))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(json!(if tag == "!And" {
                    values.iter().all(|b| *b)
                } else {
                    values.iter().any(|b| *b)
                }))
            }
            "!Condition" => Ok(json!(
                self.condition(arg.as_str().ok_or("a condition name")?)?
            )),
            other => Err(format!("{other} is not one this reader knows")),
        }
    }

    fn sub(&self, text: &str, local: &BTreeMap<String, Value>) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .ok_or_else(|| format!("an unclosed ${{ in {text}"))?
                + start;
            let name = &rest[start + 2..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str(&format!("${{{literal}}}"));
            } else {
                let value = match local.get(name) {
                    Some(v) => v.clone(),
                    None => self.lookup(name)?,
                };
                match value {
                    Value::String(s) => out.push_str(&s),
                    other => return Err(format!("${{{name}}} is {other}, not a string")),
                }
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}
