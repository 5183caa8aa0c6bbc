//! Choice rule evaluation, with the comparison semantics of the States
//! Language: a comparison of values of the wrong type is false, a missing
//! variable is an error (use `IsPresent`).

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::definition::{Operand, Rule};
use crate::path::Env;

/// A timestamp as the States Language requires it: RFC 3339 with an
/// uppercase `T` between date and time and an uppercase `Z` when there is
/// no numeric offset (`2016-03-14T01:59:00Z`, `2016-03-14T01:59:00.5+01:00`).
pub fn parse_timestamp(s: &str) -> Option<OffsetDateTime> {
    if s.as_bytes().get(10) != Some(&b'T') || s.ends_with('z') {
        return None;
    }
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// Evaluates a rule; `Err` is a runtime error (a path that is not there).
pub fn matches(rule: &Rule, input: &Value, env: &Env) -> Result<bool, String> {
    match rule {
        // JSONata conditions are evaluated by the interpreter, with `$states`.
        Rule::Condition(_) => Err("a JSONata Condition in a JSONPath rule".into()),
        Rule::And(rules) => {
            for r in rules {
                if !matches(r, input, env)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Rule::Or(rules) => {
            for r in rules {
                if matches(r, input, env)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Rule::Not(r) => Ok(!matches(r, input, env)?),
        Rule::Compare {
            variable,
            op,
            operand,
        } => {
            if op == "IsPresent" {
                let want = operand_bool(operand);
                return Ok(variable.exists(input, env)? == want);
            }
            let value = variable
                .select(input, env)
                .map_err(|e| format!("Invalid path `{}`: {e}", variable.text()))?;
            let other = match operand {
                Operand::Value(v) => v.clone(),
                Operand::Path(p) => p.select(input, env)?,
            };
            Ok(compare(op, &value, &other))
        }
    }
}

fn operand_bool(o: &Operand) -> bool {
    matches!(o, Operand::Value(Value::Bool(true)))
}

fn compare(op: &str, value: &Value, other: &Value) -> bool {
    let want = other.as_bool().unwrap_or(false);
    match op {
        "IsNull" => value.is_null() == want,
        "IsNumeric" => value.is_number() == want,
        "IsString" => value.is_string() == want,
        "IsBoolean" => value.is_boolean() == want,
        "IsTimestamp" => value.as_str().and_then(parse_timestamp).is_some() == want,
        "BooleanEquals" => value.is_boolean() && value == other,
        "StringMatches" => match (value.as_str(), other.as_str()) {
            (Some(s), Some(p)) => wildcard_match(p, s),
            _ => false,
        },
        op if op.starts_with("String") => match (value.as_str(), other.as_str()) {
            (Some(a), Some(b)) => ordered(&op["String".len()..], a.cmp(b)),
            _ => false,
        },
        op if op.starts_with("Numeric") => match (value.as_f64(), other.as_f64()) {
            (Some(a), Some(b)) => a
                .partial_cmp(&b)
                .is_some_and(|o| ordered(&op["Numeric".len()..], o)),
            _ => false,
        },
        op if op.starts_with("Timestamp") => {
            match (
                value.as_str().and_then(parse_timestamp),
                other.as_str().and_then(parse_timestamp),
            ) {
                (Some(a), Some(b)) => ordered(&op["Timestamp".len()..], a.cmp(&b)),
                _ => false,
            }
        }
        _ => false,
    }
}

fn ordered(suffix: &str, o: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match suffix {
        "Equals" => o == Equal,
        "LessThan" => o == Less,
        "GreaterThan" => o == Greater,
        "LessThanEquals" => o != Greater,
        "GreaterThanEquals" => o != Less,
        _ => false,
    }
}

/// `*` matches any run of characters; `\*` and `\\` are literal.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    #[derive(PartialEq)]
    enum Tok {
        Star,
        Ch(char),
    }
    let mut toks = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => toks.push(Tok::Ch(chars.next().unwrap_or('\\'))),
            '*' => toks.push(Tok::Star),
            c => toks.push(Tok::Ch(c)),
        }
    }
    let text: Vec<char> = text.chars().collect();
    // Classic two-pointer wildcard match.
    let (mut t, mut p) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        if p < toks.len() && toks[p] == Tok::Ch(text[t]) {
            t += 1;
            p += 1;
        } else if p < toks.len() && toks[p] == Tok::Star {
            star = Some(p);
            mark = t;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    while p < toks.len() && toks[p] == Tok::Star {
        p += 1;
    }
    p == toks.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::Definition;
    use serde_json::json;

    fn rule(r: Value) -> Rule {
        let def = json!({"StartAt": "C", "States": {"C": {"Type": "Choice", "Choices": [r], "Default": "D"}, "D": {"Type": "Succeed"}, "N": {"Type": "Succeed"}}});
        let mut def = def;
        def["States"]["C"]["Choices"][0]["Next"] = json!("N");
        let d = Definition::from_value(&def).unwrap();
        match d.states.get("C").unwrap() {
            crate::definition::State::Choice { choices, .. } => choices[0].rule.clone(),
            _ => unreachable!(),
        }
    }

    fn check(r: Value, input: Value) -> Result<bool, String> {
        matches(&rule(r), &input, &Env::context_only(&json!({})))
    }

    #[test]
    fn every_operator_and_its_path_form() {
        let input = json!({"s": "beta", "n": 5, "b": true, "t": "2026-11-24T06:00:00Z", "other": 5, "z": null, "later": "2026-11-25T00:00:00Z"});
        let yes = [
            json!({"Variable": "$.s", "StringEquals": "beta"}),
            json!({"Variable": "$.s", "StringLessThan": "gamma"}),
            json!({"Variable": "$.s", "StringGreaterThan": "alpha"}),
            json!({"Variable": "$.s", "StringLessThanEquals": "beta"}),
            json!({"Variable": "$.s", "StringGreaterThanEquals": "beta"}),
            json!({"Variable": "$.s", "StringMatches": "b*a"}),
            json!({"Variable": "$.n", "NumericEquals": 5}),
            json!({"Variable": "$.n", "NumericLessThan": 5.5}),
            json!({"Variable": "$.n", "NumericGreaterThan": 4}),
            json!({"Variable": "$.n", "NumericLessThanEquals": 5}),
            json!({"Variable": "$.n", "NumericGreaterThanEquals": 5}),
            json!({"Variable": "$.n", "NumericEqualsPath": "$.other"}),
            json!({"Variable": "$.b", "BooleanEquals": true}),
            json!({"Variable": "$.t", "TimestampEquals": "2026-11-24T06:00:00Z"}),
            json!({"Variable": "$.t", "TimestampLessThanPath": "$.later"}),
            json!({"Variable": "$.t", "TimestampGreaterThan": "2026-01-01T00:00:00Z"}),
            json!({"Variable": "$.z", "IsNull": true}),
            json!({"Variable": "$.missing", "IsPresent": false}),
            json!({"Variable": "$.n", "IsPresent": true}),
            json!({"Variable": "$.n", "IsNumeric": true}),
            json!({"Variable": "$.s", "IsString": true}),
            json!({"Variable": "$.b", "IsBoolean": true}),
            json!({"Variable": "$.t", "IsTimestamp": true}),
            json!({"Variable": "$.s", "IsTimestamp": false}),
            json!({"And": [{"Variable": "$.n", "NumericEquals": 5}, {"Not": {"Variable": "$.s", "StringEquals": "x"}}]}),
            json!({"Or": [{"Variable": "$.n", "NumericEquals": 6}, {"Variable": "$.b", "BooleanEquals": true}]}),
        ];
        for r in yes {
            assert_eq!(check(r.clone(), input.clone()), Ok(true), "{r}");
        }
        let no = [
            json!({"Variable": "$.n", "StringEquals": "5"}),
            json!({"Variable": "$.s", "NumericEquals": 5}),
            json!({"Variable": "$.s", "StringMatches": "a*"}),
            json!({"Variable": "$.s", "TimestampEquals": "2026-11-24T06:00:00Z"}),
        ];
        for r in no {
            assert_eq!(check(r.clone(), input.clone()), Ok(false), "{r}");
        }
        assert!(check(json!({"Variable": "$.missing", "StringEquals": "x"}), input).is_err());
    }

    #[test]
    fn string_matches_wildcards_and_escapes() {
        assert!(wildcard_match("log-*.txt", "log-2026.txt"));
        assert!(wildcard_match("*.log", "a.log"));
        assert!(wildcard_match("a\\*b", "a*b"));
        assert!(!wildcard_match("a\\*b", "axb"));
        assert!(wildcard_match("*", ""));
        assert!(!wildcard_match("a*c", "abd"));
    }
}
