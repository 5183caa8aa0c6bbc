//! A state machine definition, parsed and checked before anything runs: an
//! invalid definition is rejected with the state and the field at fault.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::intrinsics::{is_intrinsic, Call};
use crate::path::Path;

/// The largest number of seconds a state machine may give for a Wait,
/// a timeout, a heartbeat, a retry interval or a number of retries, as
/// Step Functions documents it.
pub const MAX_SECONDS: u64 = 99_999_999;
/// The largest `MaxDelaySeconds` of a retrier (one year and a day).
pub const MAX_DELAY_SECONDS: f64 = 31_622_400.0;

/// What is wrong with a definition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct DefinitionError(pub Vec<String>);

/// How a state's fields read data: JSONPath (`InputPath`, `Parameters`,
/// ..., the default) or JSONata (`Arguments`, `Output`, `{% %}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueryLanguage {
    #[default]
    JsonPath,
    Jsonata,
}

#[derive(Debug, Clone)]
pub struct Definition {
    pub query_language: QueryLanguage,
    pub start_at: String,
    pub states: BTreeMap<String, State>,
    pub timeout_seconds: Option<u64>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Retrier {
    pub errors: Vec<String>,
    pub interval_seconds: f64,
    pub max_attempts: u32,
    pub backoff_rate: f64,
    pub max_delay_seconds: Option<f64>,
    pub full_jitter: bool,
}

#[derive(Debug, Clone)]
pub struct Catcher {
    pub errors: Vec<String>,
    pub result_path: ResultPath,
    pub next: String,
    /// Variables to set when this catcher is taken.
    pub assign: Option<Template>,
    /// JSONata: the state's output when this catcher is taken.
    pub output: Option<Template>,
}

/// `ResultPath`: absent means `$`; `null` discards the result.
#[derive(Debug, Clone)]
pub enum ResultPath {
    Discard,
    At(Path),
}

/// Where a state goes next.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Next(String),
    End,
}

/// The data-flow fields a state may have.
#[derive(Debug, Clone, Default)]
pub struct Flow {
    /// JSONata state: `parameters` holds `Arguments`, `output` the
    /// `Output`, and the JSONPath fields are absent.
    pub jsonata: bool,
    pub input_path: Option<Option<Path>>,
    pub output_path: Option<Option<Path>>,
    pub parameters: Option<Template>,
    pub result_selector: Option<Template>,
    pub result_path: Option<ResultPath>,
    pub output: Option<Template>,
    /// Workflow variables the state sets (`Assign`).
    pub assign: Option<Template>,
}

/// A payload template (`Parameters`, `ResultSelector`, `ItemSelector`):
/// `"key.$"` fields are paths or intrinsic calls.
#[derive(Debug, Clone)]
pub enum Template {
    Object(Vec<(String, TemplateValue)>),
    Literal(Value),
    /// A JSONata state's field: JSON whose `{% %}` strings are expressions.
    Jsonata(Value),
}

#[derive(Debug, Clone)]
pub enum TemplateValue {
    Literal(Value),
    Path(Path),
    Call(Call),
    Nested(Template),
}

// A definition is parsed once and its states are read in place: the size
// of the largest variant (Map) costs nothing worth an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum State {
    Pass {
        flow: Flow,
        result: Option<Value>,
        transition: Transition,
    },
    Task {
        flow: Flow,
        resource: String,
        timeout: Option<Seconds>,
        heartbeat: Option<Seconds>,
        retry: Vec<Retrier>,
        catch: Vec<Catcher>,
        transition: Transition,
    },
    Choice {
        flow: Flow,
        choices: Vec<ChoiceRule>,
        default: Option<String>,
    },
    Wait {
        flow: Flow,
        how: WaitFor,
        transition: Transition,
    },
    Succeed {
        flow: Flow,
    },
    Fail {
        error: Option<Text>,
        cause: Option<Text>,
    },
    Parallel {
        flow: Flow,
        branches: Vec<Definition>,
        retry: Vec<Retrier>,
        catch: Vec<Catcher>,
        transition: Transition,
    },
    Map {
        flow: Flow,
        items_path: Option<Path>,
        /// JSONata: `Items`, an array or an expression giving one.
        items: Option<Template>,
        tolerated_count: Option<Tolerance>,
        tolerated_percentage: Option<Tolerance>,
        item_selector: Option<Template>,
        processor: Box<Definition>,
        max_concurrency: MaxConcurrency,
        retry: Vec<Retrier>,
        catch: Vec<Catcher>,
        transition: Transition,
    },
}

/// A number a state gives as a value, a `...Path` field, or (JSONata) an
/// expression: timeouts, heartbeats, `MaxConcurrency`, tolerated failures.
#[derive(Debug, Clone)]
pub enum Amount<T> {
    Fixed(T),
    Path(Path),
    Expr(String),
}

/// `TimeoutSeconds`, `HeartbeatSeconds`.
pub type Seconds = Amount<u64>;
/// A Map's `MaxConcurrency` (0: no limit).
pub type MaxConcurrency = Amount<u64>;
/// A Map's `ToleratedFailureCount` or `ToleratedFailurePercentage`.
pub type Tolerance = Amount<f64>;

#[derive(Debug, Clone)]
pub enum Text {
    Fixed(String),
    Path(Path),
    Call(Call),
    Expr(String),
}

#[derive(Debug, Clone)]
pub enum WaitFor {
    Seconds(u64),
    SecondsPath(Path),
    Timestamp(String),
    TimestampPath(Path),
    SecondsExpr(String),
    TimestampExpr(String),
}

/// One of a Choice state's rules, where it leads, and (for variables and
/// JSONata) what it assigns and outputs when it matches.
#[derive(Debug, Clone)]
pub struct ChoiceRule {
    pub rule: Rule,
    pub next: String,
    pub assign: Option<Template>,
    pub output: Option<Template>,
}

/// A Choice rule.
#[derive(Debug, Clone)]
pub enum Rule {
    /// JSONata: `Condition`, `true`/`false` or an expression.
    Condition(Template),
    And(Vec<Rule>),
    Or(Vec<Rule>),
    Not(Box<Rule>),
    Compare {
        variable: Path,
        op: String,
        operand: Operand,
    },
}

#[derive(Debug, Clone)]
pub enum Operand {
    Value(Value),
    Path(Path),
}

pub const COMPARATORS: &[&str] = &[
    "StringEquals",
    "StringLessThan",
    "StringGreaterThan",
    "StringLessThanEquals",
    "StringGreaterThanEquals",
    "StringMatches",
    "NumericEquals",
    "NumericLessThan",
    "NumericGreaterThan",
    "NumericLessThanEquals",
    "NumericGreaterThanEquals",
    "BooleanEquals",
    "TimestampEquals",
    "TimestampLessThan",
    "TimestampGreaterThan",
    "TimestampLessThanEquals",
    "TimestampGreaterThanEquals",
    "IsNull",
    "IsPresent",
    "IsNumeric",
    "IsString",
    "IsBoolean",
    "IsTimestamp",
];

/// Error names the runtime knows; `States.*` names outside this list are invalid.
pub const STATES_ERRORS: &[&str] = &[
    "States.ALL",
    "States.DataLimitExceeded",
    "States.ExceedToleratedFailureThreshold",
    "States.HeartbeatTimeout",
    "States.Http.Socket",
    "States.IntrinsicFailure",
    "States.ItemReaderFailed",
    "States.NoChoiceMatched",
    "States.ParameterPathFailure",
    "States.Permissions",
    "States.ResultPathMatchFailure",
    "States.ResultWriterFailed",
    "States.Runtime",
    "States.Timeout",
    "States.TaskFailed",
    "States.BranchFailed",
    "States.QueryEvaluationError",
];

struct Checker {
    problems: Vec<String>,
    /// The query language of the state being checked.
    lang: QueryLanguage,
    /// The state machine's (a branch inherits the machine's).
    machine_lang: QueryLanguage,
    /// Every variable some `Assign` sets, and every JSONPath reference to
    /// one (state, field, name): a name nothing assigns is a mistake.
    assigned: BTreeSet<String>,
    references: Vec<(String, String, String)>,
}

/// Fields only JSONPath states have.
const JSONPATH_ONLY: &[&str] = &[
    "InputPath",
    "OutputPath",
    "Parameters",
    "ResultSelector",
    "ResultPath",
    "Result",
    "ItemsPath",
    "MaxConcurrencyPath",
    "ToleratedFailureCountPath",
    "ToleratedFailurePercentagePath",
    "SecondsPath",
    "TimestampPath",
    "ErrorPath",
    "CausePath",
    "TimeoutSecondsPath",
    "HeartbeatSecondsPath",
];
/// Fields only JSONata states have.
const JSONATA_ONLY: &[&str] = &["Arguments", "Output", "Items"];

/// A field given as a value or as its `...Path` form.
enum Given<'o> {
    Value(&'o Value),
    Path(&'o Value),
    Neither,
}

/// The longest a variable's name may be.
pub const MAX_VARIABLE_NAME: usize = 80;

/// A workflow variable's name: letters, digits and `_`, not starting with
/// a digit, at most 80 characters, and not the reserved `states`.
pub fn variable_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > MAX_VARIABLE_NAME {
        return Err(format!(
            "a variable name has 1 to {MAX_VARIABLE_NAME} characters"
        ));
    }
    if name == "states" {
        return Err("`states` is reserved for `$states`; choose another variable name".into());
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "`{name}`: a variable name cannot start with a digit"
        ));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_alphanumeric() || *c == '_')) {
        return Err(format!(
            "`{name}`: a variable name has letters, digits and `_` only, not `{c}`"
        ));
    }
    Ok(())
}

fn query_language(v: &Value) -> Option<QueryLanguage> {
    match v.as_str()? {
        "JSONPath" => Some(QueryLanguage::JsonPath),
        "JSONata" => Some(QueryLanguage::Jsonata),
        _ => None,
    }
}

impl Checker {
    fn err(&mut self, state: &str, field: &str, msg: impl Into<String>) {
        let msg = msg.into();
        match (state.is_empty(), field.is_empty()) {
            (true, _) => self.problems.push(format!("{field}: {msg}")),
            // A problem of the state as a whole.
            (false, true) => self.problems.push(format!("state `{state}` {msg}")),
            (false, false) => self
                .problems
                .push(format!("state `{state}`, {field}: {msg}")),
        }
    }

    fn reference(&mut self, state: &str, field: &str, p: &Path) {
        if let Some(name) = p.variable() {
            self.references
                .push((state.to_string(), field.to_string(), name.to_string()));
        }
    }

    fn call_references(&mut self, state: &str, field: &str, c: &Call) {
        for a in &c.args {
            match a {
                crate::intrinsics::Arg::Path(p) => self.reference(state, field, p),
                crate::intrinsics::Arg::Call(inner) => self.call_references(state, field, inner),
                crate::intrinsics::Arg::Literal(_) => {}
            }
        }
    }

    fn path(&mut self, state: &str, field: &str, v: Option<&Value>) -> Option<Path> {
        match v? {
            Value::String(s) => match Path::parse(s) {
                Ok(p) => {
                    self.reference(state, field, &p);
                    Some(p)
                }
                Err(e) => {
                    self.err(state, field, e);
                    None
                }
            },
            other => {
                self.err(state, field, format!("must be a path string, not {other}"));
                None
            }
        }
    }

    /// InputPath/OutputPath: absent = `$`, null = `{}`.
    fn io_path(
        &mut self,
        state: &str,
        field: &str,
        obj: &Map<String, Value>,
    ) -> Option<Option<Path>> {
        match obj.get(field) {
            None => None,
            Some(Value::Null) => Some(None),
            Some(v) => Some(self.path(state, field, Some(v))),
        }
    }

    /// A JSONata field's value: every `{% %}` inside is a valid expression.
    fn jsonata(&mut self, state: &str, field: &str, v: &Value) -> Template {
        let mut found = Vec::new();
        crate::jsonata::expressions(v, field, &mut found);
        for (at, expr) in found {
            if let Err(e) = crate::jsonata::check(expr) {
                self.err(
                    state,
                    &at,
                    format!("`{expr}` is not a valid JSONata expression: {e}"),
                );
            }
        }
        Template::Jsonata(v.clone())
    }

    /// A field that is a JSONata expression string (`"{% ... %}"`).
    fn jsonata_expr(&mut self, state: &str, field: &str, v: &Value) -> Option<String> {
        let e = v.as_str().and_then(crate::jsonata::expression)?;
        if let Err(err) = crate::jsonata::check(e) {
            self.err(
                state,
                field,
                format!("`{e}` is not a valid JSONata expression: {err}"),
            );
        }
        Some(e.to_string())
    }

    /// `Assign`: an object of variable names (for JSONPath, `name.$` keys
    /// take a path or an intrinsic function).
    fn assign(&mut self, state: &str, field: &str, v: Option<&Value>) -> Option<Template> {
        let v = v?;
        let Some(map) = v.as_object() else {
            self.err(
                state,
                field,
                "must be an object of variable names and their values",
            );
            return None;
        };
        for key in map.keys() {
            let name = match self.lang {
                QueryLanguage::JsonPath => key.strip_suffix(".$").unwrap_or(key),
                QueryLanguage::Jsonata => key,
            };
            if let Err(e) = variable_name(name) {
                self.err(state, &format!("{field}.{key}"), e);
            }
            self.assigned.insert(name.to_string());
        }
        Some(match self.lang {
            QueryLanguage::JsonPath => self.template(state, field, v),
            QueryLanguage::Jsonata => self.jsonata(state, field, v),
        })
    }

    /// The fields of the other query language, each named with what to use.
    fn language_fields(&mut self, state: &str, field: &str, obj: &Map<String, Value>) {
        let (wrong, hint) = match (self.lang, self.machine_lang) {
            (QueryLanguage::Jsonata, QueryLanguage::Jsonata) => (
                JSONPATH_ONLY,
                "is a JSONPath field: a JSONata state reads its input with `{% %}` expressions in `Arguments`, `Output` and `Assign` (the state machine's QueryLanguage is JSONata)",
            ),
            (QueryLanguage::Jsonata, QueryLanguage::JsonPath) => (
                JSONPATH_ONLY,
                "is a JSONPath field: a JSONata state reads its input with `{% %}` expressions in `Arguments`, `Output` and `Assign` (or leave out the state's \"QueryLanguage\": \"JSONata\")",
            ),
            (QueryLanguage::JsonPath, _) => (
                JSONATA_ONLY,
                "is a JSONata field: set \"QueryLanguage\": \"JSONata\" on the state or the state machine to use it",
            ),
        };
        for k in obj.keys() {
            if wrong.contains(&k.as_str()) {
                let at = if field.is_empty() {
                    k.clone()
                } else {
                    format!("{field}.{k}")
                };
                self.err(state, &at, hint);
            }
        }
    }

    fn template(&mut self, state: &str, field: &str, v: &Value) -> Template {
        match v {
            Value::Object(map) => {
                let mut out = Vec::new();
                for (k, v) in map {
                    if let Some(key) = k.strip_suffix(".$") {
                        let Some(s) = v.as_str() else {
                            self.err(
                                state,
                                &format!("{field}.{k}"),
                                "a `.$` field must be a path or an intrinsic function",
                            );
                            continue;
                        };
                        if is_intrinsic(s) {
                            match Call::parse(s) {
                                Ok(c) => {
                                    self.call_references(state, &format!("{field}.{k}"), &c);
                                    out.push((key.to_string(), TemplateValue::Call(c)))
                                }
                                Err(e) => self.err(state, &format!("{field}.{k}"), e),
                            }
                        } else {
                            match Path::parse(s) {
                                Ok(p) => {
                                    self.reference(state, &format!("{field}.{k}"), &p);
                                    out.push((key.to_string(), TemplateValue::Path(p)))
                                }
                                Err(e) => self.err(state, &format!("{field}.{k}"), e),
                            }
                        }
                    } else if v.is_object() {
                        let nested = self.template(state, &format!("{field}.{k}"), v);
                        out.push((k.clone(), TemplateValue::Nested(nested)));
                    } else {
                        out.push((k.clone(), TemplateValue::Literal(v.clone())));
                    }
                }
                Template::Object(out)
            }
            other => Template::Literal(other.clone()),
        }
    }

    fn result_path(&mut self, state: &str, v: Option<&Value>) -> Option<ResultPath> {
        match v {
            None => None,
            Some(Value::Null) => Some(ResultPath::Discard),
            Some(v) => {
                let p = self.path(state, "ResultPath", Some(v))?;
                if !p.is_definite() || p.is_context() || p.variable().is_some() {
                    self.err(
                        state,
                        "ResultPath",
                        "must be a reference path (`$`, names and indexes)",
                    );
                }
                Some(ResultPath::At(p))
            }
        }
    }

    fn flow(&mut self, name: &str, obj: &Map<String, Value>, allowed: &[&str]) -> Flow {
        let mut f = Flow::default();
        if allowed.contains(&"Assign") {
            f.assign = self.assign(name, "Assign", obj.get("Assign"));
        }
        if self.lang == QueryLanguage::Jsonata {
            f.jsonata = true;
            if allowed.contains(&"Arguments") {
                f.parameters = obj
                    .get("Arguments")
                    .map(|v| self.jsonata(name, "Arguments", v));
            }
            f.output = obj.get("Output").map(|v| self.jsonata(name, "Output", v));
            return f;
        }
        if allowed.contains(&"InputPath") {
            f.input_path = self.io_path(name, "InputPath", obj);
        }
        if allowed.contains(&"OutputPath") {
            f.output_path = self.io_path(name, "OutputPath", obj);
        }
        if allowed.contains(&"Parameters") {
            f.parameters = obj
                .get("Parameters")
                .map(|v| self.template(name, "Parameters", v));
        }
        if allowed.contains(&"ResultSelector") {
            f.result_selector = obj
                .get("ResultSelector")
                .map(|v| self.template(name, "ResultSelector", v));
        }
        if allowed.contains(&"ResultPath") {
            f.result_path = self.result_path(name, obj.get("ResultPath"));
        }
        f
    }

    fn transition(&mut self, name: &str, obj: &Map<String, Value>) -> Transition {
        match (obj.get("Next"), obj.get("End")) {
            (Some(Value::String(n)), None) => Transition::Next(n.clone()),
            (None, Some(Value::Bool(true))) => Transition::End,
            (Some(_), Some(_)) => {
                self.err(name, "Next", "a state has `Next` or `End: true`, not both");
                Transition::End
            }
            (Some(other), None) => {
                self.err(name, "Next", format!("must be a state name, not {other}"));
                Transition::End
            }
            _ => {
                self.err(name, "Next", "missing: give `Next` or `End: true`");
                Transition::End
            }
        }
    }

    fn error_names(&mut self, state: &str, field: &str, v: Option<&Value>) -> Vec<String> {
        let Some(Value::Array(items)) = v else {
            self.err(
                state,
                field,
                "`ErrorEquals` must be a non-empty array of error names",
            );
            return Vec::new();
        };
        if items.is_empty() {
            self.err(state, field, "`ErrorEquals` must not be empty");
        }
        let names: Vec<String> = items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect();
        if names.len() != items.len() {
            self.err(state, field, "error names must be strings");
        }
        for n in &names {
            if n.starts_with("States.") && !STATES_ERRORS.contains(&n.as_str()) {
                self.err(
                    state,
                    field,
                    format!("`{n}` is not a Step Functions error name"),
                );
            }
        }
        if names.iter().any(|n| n == "States.ALL") && names.len() > 1 {
            self.err(
                state,
                field,
                "`States.ALL` must appear alone in its `ErrorEquals`",
            );
        }
        names
    }

    /// The objects of a `Retry` or `Catch` array, each checked for unknown
    /// fields and its `ErrorEquals` (with `States.ALL` only in the last one).
    fn error_rules<'v>(
        &mut self,
        state: &str,
        key: &str,
        what: &str,
        v: Option<&'v Value>,
        known: &[&str],
    ) -> Vec<(String, &'v Map<String, Value>, Vec<String>)> {
        let Some(v) = v else { return Vec::new() };
        let Some(items) = v.as_array() else {
            self.err(state, key, format!("must be an array of {what}s"));
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, r) in items.iter().enumerate() {
            let field = format!("{key}[{i}]");
            let Some(obj) = r.as_object() else {
                self.err(state, &field, "must be an object");
                continue;
            };
            self.unknown(state, &field, obj, known);
            let errors = self.error_names(state, &field, obj.get("ErrorEquals"));
            if errors.iter().any(|e| e == "States.ALL") && i + 1 != items.len() {
                self.err(
                    state,
                    &field,
                    format!("a {what} with `States.ALL` must be the last one"),
                );
            }
            out.push((field, obj, errors));
        }
        out
    }

    fn retriers(&mut self, state: &str, v: Option<&Value>) -> Vec<Retrier> {
        let known = [
            "ErrorEquals",
            "IntervalSeconds",
            "MaxAttempts",
            "BackoffRate",
            "MaxDelaySeconds",
            "JitterStrategy",
            "Comment",
        ];
        let mut out = Vec::new();
        for (field, obj, errors) in self.error_rules(state, "Retry", "retrier", v, &known) {
            let num = |c: &mut Checker, key: &str, default: f64, min: f64, max: f64| -> f64 {
                match obj.get(key) {
                    None => default,
                    Some(v) => match v.as_f64() {
                        Some(n) if n >= min && n <= max => n,
                        _ if max.is_finite() => {
                            c.err(
                                state,
                                &format!("{field}.{key}"),
                                format!("must be a number from {min} to {max}"),
                            );
                            default
                        }
                        _ => {
                            c.err(
                                state,
                                &format!("{field}.{key}"),
                                format!("must be a number of at least {min}"),
                            );
                            default
                        }
                    },
                }
            };
            let most = MAX_SECONDS as f64;
            let interval = num(self, "IntervalSeconds", 1.0, 1.0, most);
            let max_attempts = num(self, "MaxAttempts", 3.0, 0.0, most) as u32;
            let backoff = num(self, "BackoffRate", 2.0, 1.0, f64::INFINITY);
            let max_delay = obj
                .get("MaxDelaySeconds")
                .map(|_| num(self, "MaxDelaySeconds", 0.0, 1.0, MAX_DELAY_SECONDS));
            let full_jitter = match obj.get("JitterStrategy").and_then(|v| v.as_str()) {
                None | Some("NONE") => false,
                Some("FULL") => true,
                Some(other) => {
                    self.err(
                        state,
                        &format!("{field}.JitterStrategy"),
                        format!("`{other}` is not FULL or NONE"),
                    );
                    false
                }
            };
            out.push(Retrier {
                errors,
                interval_seconds: interval,
                max_attempts,
                backoff_rate: backoff,
                max_delay_seconds: max_delay,
                full_jitter,
            });
        }
        out
    }

    fn catchers(&mut self, state: &str, v: Option<&Value>) -> Vec<Catcher> {
        let known = [
            "ErrorEquals",
            "ResultPath",
            "Next",
            "Comment",
            "Assign",
            "Output",
        ];
        let mut out = Vec::new();
        for (field, obj, errors) in self.error_rules(state, "Catch", "catcher", v, &known) {
            self.language_fields(state, &field, obj);
            let assign = self.assign(state, &format!("{field}.Assign"), obj.get("Assign"));
            let output = match self.lang {
                QueryLanguage::Jsonata => obj
                    .get("Output")
                    .map(|v| self.jsonata(state, &format!("{field}.Output"), v)),
                QueryLanguage::JsonPath => None,
            };
            let next = match obj.get("Next").and_then(|v| v.as_str()) {
                Some(n) => n.to_string(),
                None => {
                    self.err(state, &format!("{field}.Next"), "is required");
                    String::new()
                }
            };
            let result_path = self
                .result_path(state, obj.get("ResultPath"))
                .unwrap_or_else(|| ResultPath::At(Path::parse("$").expect("root path")));
            out.push(Catcher {
                errors,
                result_path,
                next,
                assign,
                output,
            });
        }
        out
    }

    fn unknown(&mut self, state: &str, field: &str, obj: &Map<String, Value>, known: &[&str]) {
        for k in obj.keys() {
            if !known.contains(&k.as_str()) {
                let at = if field.is_empty() {
                    k.clone()
                } else {
                    format!("{field}.{k}")
                };
                self.err(state, &at, "is not a field this state type supports");
            }
        }
    }

    /// `key` or `keyPath`, of which a state gives at most one (both: an
    /// error, and neither is used).
    fn value_or_path<'o>(
        &mut self,
        state: &str,
        obj: &'o Map<String, Value>,
        key: &str,
    ) -> (Given<'o>, String) {
        let path_key = format!("{key}Path");
        let given = match (obj.get(key), obj.get(&path_key)) {
            (Some(_), Some(_)) => {
                self.err(
                    state,
                    key,
                    format!("give `{key}` or `{path_key}`, not both"),
                );
                Given::Neither
            }
            (Some(v), None) => Given::Value(v),
            (None, Some(p)) => Given::Path(p),
            (None, None) => Given::Neither,
        };
        (given, path_key)
    }

    fn seconds(&mut self, state: &str, obj: &Map<String, Value>, key: &str) -> Option<Seconds> {
        let (given, path_key) = self.value_or_path(state, obj, key);
        match given {
            Given::Value(v) if self.lang == QueryLanguage::Jsonata && v.is_string() => {
                match self.jsonata_expr(state, key, v) {
                    Some(e) => Some(Seconds::Expr(e)),
                    None => {
                        self.err(
                            state,
                            key,
                            "must be a positive integer or a `{% %}` expression",
                        );
                        None
                    }
                }
            }
            Given::Value(v) => match v.as_u64() {
                Some(n) if n > 0 && n <= MAX_SECONDS => Some(Seconds::Fixed(n)),
                _ => {
                    self.err(
                        state,
                        key,
                        format!("must be a positive integer of at most {MAX_SECONDS}"),
                    );
                    None
                }
            },
            Given::Path(v) => self.path(state, &path_key, Some(v)).map(Seconds::Path),
            Given::Neither => None,
        }
    }

    fn rule(&mut self, state: &str, field: &str, v: &Value, top: bool) -> Option<Rule> {
        let Some(obj) = v.as_object() else {
            self.err(state, field, "a choice rule must be an object");
            return None;
        };
        let list = |c: &mut Checker, key: &str, items: &Value| -> Vec<Rule> {
            match items.as_array() {
                Some(items) if !items.is_empty() => items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, r)| c.rule(state, &format!("{field}.{key}[{i}]"), r, false))
                    .collect(),
                _ => {
                    c.err(
                        state,
                        &format!("{field}.{key}"),
                        "must be a non-empty array of rules",
                    );
                    Vec::new()
                }
            }
        };
        if top {
            self.language_fields(state, field, obj);
        }
        if self.lang == QueryLanguage::Jsonata {
            if !top {
                self.err(
                    state,
                    field,
                    "JSONata rules are a `Condition`; they do not nest",
                );
                return None;
            }
            self.unknown(
                state,
                field,
                obj,
                &["Condition", "Next", "Comment", "Assign", "Output"],
            );
            return match obj.get("Condition") {
                Some(Value::Bool(b)) => Some(Rule::Condition(Template::Jsonata(Value::Bool(*b)))),
                Some(v @ Value::String(_))
                    if self
                        .jsonata_expr(state, &format!("{field}.Condition"), v)
                        .is_some() =>
                {
                    Some(Rule::Condition(Template::Jsonata(v.clone())))
                }
                _ => {
                    self.err(
                        state,
                        &format!("{field}.Condition"),
                        "is required: true, false or a `{% %}` expression",
                    );
                    None
                }
            };
        }
        let allowed_top = if top {
            &["Next", "Comment", "Assign"][..]
        } else {
            &["Comment"][..]
        };
        if let Some(items) = obj.get("And") {
            self.unknown(state, field, obj, &[&["And"][..], allowed_top].concat());
            return Some(Rule::And(list(self, "And", items)));
        }
        if let Some(items) = obj.get("Or") {
            self.unknown(state, field, obj, &[&["Or"][..], allowed_top].concat());
            return Some(Rule::Or(list(self, "Or", items)));
        }
        if let Some(inner) = obj.get("Not") {
            self.unknown(state, field, obj, &[&["Not"][..], allowed_top].concat());
            return self
                .rule(state, &format!("{field}.Not"), inner, false)
                .map(|r| Rule::Not(Box::new(r)));
        }
        let variable = self.path(state, &format!("{field}.Variable"), obj.get("Variable"));
        if obj.get("Variable").is_none() {
            self.err(state, field, "needs `Variable` (or `And`, `Or`, `Not`)");
        }
        let ops: Vec<(&String, &Value)> = obj
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "Variable" | "Next" | "Comment" | "Assign" | "Output"
                )
            })
            .collect();
        if ops.len() != 1 {
            self.err(
                state,
                field,
                format!("needs exactly one comparison operator, found {}", ops.len()),
            );
            return None;
        }
        let (op, value) = ops[0];
        let (base, is_path) = match op.strip_suffix("Path") {
            Some(b) if COMPARATORS.contains(&b) && !b.starts_with("Is") => (b.to_string(), true),
            _ => (op.clone(), false),
        };
        if !COMPARATORS.contains(&base.as_str()) {
            self.err(
                state,
                &format!("{field}.{op}"),
                "is not a comparison operator",
            );
            return None;
        }
        if !top && obj.contains_key("Next") {
            self.err(
                state,
                &format!("{field}.Next"),
                "only top-level rules have `Next`",
            );
        }
        let operand = if is_path {
            Operand::Path(self.path(state, &format!("{field}.{op}"), Some(value))?)
        } else {
            let ok = match base.as_str() {
                b if b.starts_with("String") || b.starts_with("Timestamp") => value.is_string(),
                b if b.starts_with("Numeric") => value.is_number(),
                _ => value.is_boolean(),
            };
            if !ok {
                self.err(
                    state,
                    &format!("{field}.{op}"),
                    format!("{value} is not the type {base} compares"),
                );
            }
            Operand::Value(value.clone())
        };
        Some(Rule::Compare {
            variable: variable?,
            op: base,
            operand,
        })
    }

    fn text(&mut self, state: &str, obj: &Map<String, Value>, key: &str) -> Option<Text> {
        let (given, path_key) = self.value_or_path(state, obj, key);
        match given {
            Given::Value(v @ Value::String(s)) => match self.lang {
                QueryLanguage::Jsonata if crate::jsonata::expression(s).is_some() => {
                    self.jsonata_expr(state, key, v).map(Text::Expr)
                }
                _ => Some(Text::Fixed(s.clone())),
            },
            Given::Value(other) => {
                self.err(state, key, format!("must be a string, not {other}"));
                None
            }
            Given::Path(Value::String(s)) if is_intrinsic(s) => match Call::parse(s) {
                Ok(c) => {
                    self.call_references(state, &path_key, &c);
                    Some(Text::Call(c))
                }
                Err(e) => {
                    self.err(state, &path_key, e);
                    None
                }
            },
            Given::Path(v) => self.path(state, &path_key, Some(v)).map(Text::Path),
            Given::Neither => None,
        }
    }

    /// `ToleratedFailureCount`/`Percentage`, fixed, from a path, or (JSONata)
    /// from an expression.
    fn tolerance(
        &mut self,
        state: &str,
        obj: &Map<String, Value>,
        key: &str,
        max: f64,
    ) -> Option<Tolerance> {
        let (given, path_key) = self.value_or_path(state, obj, key);
        match given {
            Given::Value(v) if self.lang == QueryLanguage::Jsonata && v.is_string() => {
                let e = self.jsonata_expr(state, key, v);
                if e.is_none() {
                    self.err(state, key, "must be a number or a `{% %}` expression");
                }
                e.map(Tolerance::Expr)
            }
            Given::Value(v) => match v.as_f64() {
                Some(n) if (0.0..=max).contains(&n) => Some(Tolerance::Fixed(n)),
                _ => {
                    self.err(state, key, format!("must be a number from 0 to {max}"));
                    None
                }
            },
            Given::Path(v) => self.path(state, &path_key, Some(v)).map(Tolerance::Path),
            Given::Neither => None,
        }
    }

    fn machine(&mut self, v: &Value, scope: &str) -> Option<Definition> {
        let saved = (self.lang, self.machine_lang);
        let def = self.machine_inner(v, scope);
        (self.lang, self.machine_lang) = saved;
        def
    }

    fn machine_inner(&mut self, v: &Value, scope: &str) -> Option<Definition> {
        let Some(obj) = v.as_object() else {
            self.err("", scope, "a state machine must be a JSON object");
            return None;
        };
        let top = scope.is_empty();
        let known: &[&str] = if top {
            &[
                "Comment",
                "StartAt",
                "States",
                "TimeoutSeconds",
                "Version",
                "QueryLanguage",
            ]
        } else {
            &["Comment", "StartAt", "States", "ProcessorConfig"]
        };
        for k in obj.keys() {
            if !known.contains(&k.as_str()) {
                self.err(
                    "",
                    &format!(
                        "{}{k}",
                        if top {
                            String::new()
                        } else {
                            format!("{scope}.")
                        }
                    ),
                    "is not a state machine field",
                );
            }
        }
        if let Some(q) = obj.get("QueryLanguage") {
            match query_language(q) {
                Some(l) => self.machine_lang = l,
                None => self.err(
                    "",
                    "QueryLanguage",
                    format!("{q} is not JSONPath or JSONata"),
                ),
            }
        }
        let start_at = match obj.get("StartAt").and_then(|v| v.as_str()) {
            Some(s) => s.to_string(),
            None => {
                self.err("", &format!("{scope}StartAt"), "is required");
                String::new()
            }
        };
        let Some(states_obj) = obj.get("States").and_then(|v| v.as_object()) else {
            self.err(
                "",
                &format!("{scope}States"),
                "is required and must be an object",
            );
            return None;
        };
        let mut states = BTreeMap::new();
        for (name, s) in states_obj {
            if name.is_empty() || name.chars().count() > 80 {
                self.err(name, "name", "state names are 1-80 characters");
            }
            if let Some(state) = self.state(name, s) {
                states.insert(name.clone(), state);
            }
        }
        if !start_at.is_empty() && !states_obj.contains_key(&start_at) {
            self.err(
                "",
                &format!("{scope}StartAt"),
                format!("`{start_at}` is not a state"),
            );
        }
        let timeout_seconds = match obj.get("TimeoutSeconds") {
            None => None,
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 && n <= MAX_SECONDS => Some(n),
                _ => {
                    self.err(
                        "",
                        "TimeoutSeconds",
                        format!("must be a positive integer of at most {MAX_SECONDS}"),
                    );
                    None
                }
            },
        };
        let def = Definition {
            query_language: self.machine_lang,
            start_at,
            states,
            timeout_seconds,
            comment: obj
                .get("Comment")
                .and_then(|v| v.as_str())
                .map(str::to_string),
        };
        // Every transition target exists, and every state is reachable.
        let mut reachable = BTreeSet::new();
        let mut todo = vec![def.start_at.clone()];
        while let Some(n) = todo.pop() {
            if !reachable.insert(n.clone()) {
                continue;
            }
            if let Some(s) = def.states.get(&n) {
                todo.extend(targets(s));
            }
        }
        for (name, s) in &def.states {
            for t in targets(s) {
                if !def.states.contains_key(&t) {
                    self.err(name, "Next", format!("`{t}` is not a state"));
                }
            }
            if !reachable.contains(name) {
                self.err(name, "", "is not reachable from StartAt");
            }
        }
        Some(def)
    }

    fn state(&mut self, name: &str, v: &Value) -> Option<State> {
        let Some(obj) = v.as_object() else {
            self.err(name, "", "a state must be an object");
            return None;
        };
        let Some(kind) = obj.get("Type").and_then(|t| t.as_str()) else {
            self.err(name, "Type", "is required");
            return None;
        };
        self.lang = match obj.get("QueryLanguage") {
            None => self.machine_lang,
            Some(q) => match query_language(q) {
                Some(l) => l,
                None => {
                    self.err(
                        name,
                        "QueryLanguage",
                        format!("{q} is not JSONPath or JSONata"),
                    );
                    self.machine_lang
                }
            },
        };
        if self.machine_lang == QueryLanguage::Jsonata && self.lang == QueryLanguage::JsonPath {
            self.err(
                name,
                "QueryLanguage",
                "the state machine's QueryLanguage is JSONata, so its states cannot use JSONPath",
            );
        }
        self.language_fields(name, "", obj);
        let io = ["InputPath", "OutputPath", "Output"];
        let trans = ["Next", "End"];
        let common = ["Type", "Comment", "QueryLanguage"];
        let fields =
            |extra: &[&'static str]| -> Vec<&'static str> { [&common[..], extra].concat() };
        Some(match kind {
            "Pass" => {
                self.unknown(
                    name,
                    "",
                    obj,
                    &fields(
                        &[
                            &io[..],
                            &trans[..],
                            &["Parameters", "Result", "ResultPath", "Assign"],
                        ]
                        .concat(),
                    ),
                );
                State::Pass {
                    flow: self.flow(
                        name,
                        obj,
                        &[
                            "InputPath",
                            "OutputPath",
                            "Parameters",
                            "ResultPath",
                            "Assign",
                        ],
                    ),
                    result: obj.get("Result").cloned(),
                    transition: self.transition(name, obj),
                }
            }
            "Task" => {
                self.unknown(
                    name,
                    "",
                    obj,
                    &fields(
                        &[
                            &io[..],
                            &trans[..],
                            &[
                                "Resource",
                                "Parameters",
                                "ResultSelector",
                                "ResultPath",
                                "Retry",
                                "Catch",
                                "TimeoutSeconds",
                                "TimeoutSecondsPath",
                                "HeartbeatSeconds",
                                "HeartbeatSecondsPath",
                                "Credentials",
                                "Arguments",
                                "Assign",
                            ],
                        ]
                        .concat(),
                    ),
                );
                let resource = match obj.get("Resource").and_then(|r| r.as_str()) {
                    Some(r) => r.to_string(),
                    None => {
                        self.err(name, "Resource", "is required");
                        String::new()
                    }
                };
                let timeout = self.seconds(name, obj, "TimeoutSeconds");
                let heartbeat = self.seconds(name, obj, "HeartbeatSeconds");
                if let (Some(Seconds::Fixed(t)), Some(Seconds::Fixed(h))) = (&timeout, &heartbeat) {
                    if h >= t {
                        self.err(
                            name,
                            "HeartbeatSeconds",
                            "must be smaller than TimeoutSeconds",
                        );
                    }
                }
                State::Task {
                    flow: self.flow(
                        name,
                        obj,
                        &[
                            "InputPath",
                            "OutputPath",
                            "Parameters",
                            "ResultSelector",
                            "ResultPath",
                            "Arguments",
                            "Assign",
                        ],
                    ),
                    resource,
                    timeout,
                    heartbeat,
                    retry: self.retriers(name, obj.get("Retry")),
                    catch: self.catchers(name, obj.get("Catch")),
                    transition: self.transition(name, obj),
                }
            }
            "Choice" => {
                self.unknown(
                    name,
                    "",
                    obj,
                    &fields(&[&io[..], &["Choices", "Default", "Assign"]].concat()),
                );
                let mut choices = Vec::new();
                match obj.get("Choices").and_then(|c| c.as_array()) {
                    Some(items) if !items.is_empty() => {
                        for (i, r) in items.iter().enumerate() {
                            let field = format!("Choices[{i}]");
                            let next = r.get("Next").and_then(|n| n.as_str()).map(str::to_string);
                            if next.is_none() {
                                self.err(name, &format!("{field}.Next"), "is required");
                            }
                            let assign =
                                self.assign(name, &format!("{field}.Assign"), r.get("Assign"));
                            let output = match (self.lang, r.get("Output")) {
                                (QueryLanguage::Jsonata, Some(v)) => {
                                    Some(self.jsonata(name, &format!("{field}.Output"), v))
                                }
                                _ => None,
                            };
                            if let (Some(rule), Some(next)) =
                                (self.rule(name, &field, r, true), next)
                            {
                                choices.push(ChoiceRule {
                                    rule,
                                    next,
                                    assign,
                                    output,
                                });
                            }
                        }
                    }
                    _ => self.err(name, "Choices", "must be a non-empty array"),
                }
                State::Choice {
                    flow: self.flow(name, obj, &["InputPath", "OutputPath", "Assign"]),
                    choices,
                    default: obj
                        .get("Default")
                        .and_then(|d| d.as_str())
                        .map(str::to_string),
                }
            }
            "Wait" => {
                self.unknown(
                    name,
                    "",
                    obj,
                    &fields(
                        &[
                            &io[..],
                            &trans[..],
                            &[
                                "Seconds",
                                "SecondsPath",
                                "Timestamp",
                                "TimestampPath",
                                "Assign",
                            ],
                        ]
                        .concat(),
                    ),
                );
                let present: Vec<&str> = ["Seconds", "SecondsPath", "Timestamp", "TimestampPath"]
                    .into_iter()
                    .filter(|k| obj.contains_key(*k))
                    .collect();
                let how = if present.len() != 1 {
                    self.err(
                        name,
                        "Seconds",
                        "give exactly one of Seconds, SecondsPath, Timestamp, TimestampPath",
                    );
                    WaitFor::Seconds(0)
                } else {
                    let expr = match present[0] {
                        "Seconds" | "Timestamp" if self.lang == QueryLanguage::Jsonata => {
                            let v = &obj[present[0]];
                            self.jsonata_expr(name, present[0], v)
                        }
                        _ => None,
                    };
                    match present[0] {
                        "Seconds" if expr.is_some() => {
                            WaitFor::SecondsExpr(expr.unwrap_or_default())
                        }
                        "Timestamp" if expr.is_some() => {
                            WaitFor::TimestampExpr(expr.unwrap_or_default())
                        }
                        "Seconds" => match obj["Seconds"].as_u64() {
                            Some(n) if n <= MAX_SECONDS => WaitFor::Seconds(n),
                            _ => {
                                self.err(
                                    name,
                                    "Seconds",
                                    format!("must be an integer from 0 to {MAX_SECONDS}"),
                                );
                                WaitFor::Seconds(0)
                            }
                        },
                        "Timestamp" => {
                            let t = obj["Timestamp"].as_str().unwrap_or_default().to_string();
                            if crate::choice::parse_timestamp(&t).is_none() {
                                self.err(
                                    name,
                                    "Timestamp",
                                    "must be an RFC 3339 timestamp like 2026-01-01T00:00:00Z",
                                );
                            }
                            WaitFor::Timestamp(t)
                        }
                        "SecondsPath" => self
                            .path(name, "SecondsPath", obj.get("SecondsPath"))
                            .map(WaitFor::SecondsPath)
                            .unwrap_or(WaitFor::Seconds(0)),
                        _ => self
                            .path(name, "TimestampPath", obj.get("TimestampPath"))
                            .map(WaitFor::TimestampPath)
                            .unwrap_or(WaitFor::Seconds(0)),
                    }
                };
                State::Wait {
                    flow: self.flow(name, obj, &["InputPath", "OutputPath", "Assign"]),
                    how,
                    transition: self.transition(name, obj),
                }
            }
            "Succeed" => {
                self.unknown(name, "", obj, &fields(&io));
                State::Succeed {
                    flow: self.flow(name, obj, &["InputPath", "OutputPath"]),
                }
            }
            "Fail" => {
                self.unknown(
                    name,
                    "",
                    obj,
                    &fields(&["Error", "ErrorPath", "Cause", "CausePath"]),
                );
                State::Fail {
                    error: self.text(name, obj, "Error"),
                    cause: self.text(name, obj, "Cause"),
                }
            }
            "Parallel" => {
                self.unknown(
                    name,
                    "",
                    obj,
                    &fields(
                        &[
                            &io[..],
                            &trans[..],
                            &[
                                "Branches",
                                "Parameters",
                                "ResultSelector",
                                "ResultPath",
                                "Retry",
                                "Catch",
                                "Arguments",
                                "Assign",
                            ],
                        ]
                        .concat(),
                    ),
                );
                let mut branches = Vec::new();
                match obj.get("Branches").and_then(|b| b.as_array()) {
                    Some(items) if !items.is_empty() => {
                        for (i, b) in items.iter().enumerate() {
                            if let Some(d) = self.machine(b, &format!("{name}.Branches[{i}].")) {
                                branches.push(d);
                            }
                        }
                    }
                    _ => self.err(
                        name,
                        "Branches",
                        "must be a non-empty array of state machines",
                    ),
                }
                State::Parallel {
                    flow: self.flow(
                        name,
                        obj,
                        &[
                            "InputPath",
                            "OutputPath",
                            "Parameters",
                            "ResultSelector",
                            "ResultPath",
                            "Arguments",
                            "Assign",
                        ],
                    ),
                    branches,
                    retry: self.retriers(name, obj.get("Retry")),
                    catch: self.catchers(name, obj.get("Catch")),
                    transition: self.transition(name, obj),
                }
            }
            "Map" => {
                self.unknown(
                    name,
                    "",
                    obj,
                    &fields(
                        &[
                            &io[..],
                            &trans[..],
                            &[
                                "ItemsPath",
                                "ItemSelector",
                                "Parameters",
                                "Iterator",
                                "ItemProcessor",
                                "MaxConcurrency",
                                "MaxConcurrencyPath",
                                "ResultSelector",
                                "ResultPath",
                                "Retry",
                                "Catch",
                                "Label",
                                "ToleratedFailurePercentage",
                                "ToleratedFailureCount",
                                "ToleratedFailurePercentagePath",
                                "ToleratedFailureCountPath",
                                "Items",
                                "Assign",
                                "ItemReader",
                                "ItemBatcher",
                                "ResultWriter",
                            ],
                        ]
                        .concat(),
                    ),
                );
                for field in ["ItemReader", "ItemBatcher", "ResultWriter"] {
                    if obj.contains_key(field) {
                        self.err(
                            name,
                            field,
                            "is a distributed Map feature (reading items from or writing results to S3) that the local engine does not run; give the items in the state's input, `ItemsPath` or `Items`",
                        );
                    }
                }
                if obj.contains_key("ItemSelector") && obj.contains_key("Parameters") {
                    self.err(
                        name,
                        "ItemSelector",
                        "give `ItemSelector` or the older `Parameters`, not both",
                    );
                }
                let jsonata = self.lang == QueryLanguage::Jsonata;
                let selector = obj
                    .get("ItemSelector")
                    .or_else(|| obj.get("Parameters"))
                    .map(|v| match jsonata {
                        true => self.jsonata(name, "ItemSelector", v),
                        false => self.template(name, "ItemSelector", v),
                    });
                let items = match obj.get("Items") {
                    Some(v @ Value::Array(_)) if jsonata => Some(self.jsonata(name, "Items", v)),
                    Some(v) if jsonata => match self.jsonata_expr(name, "Items", v) {
                        Some(_) => Some(Template::Jsonata(v.clone())),
                        None => {
                            self.err(name, "Items", "must be an array or a `{% %}` expression");
                            None
                        }
                    },
                    _ => None,
                };
                let tolerated_count =
                    self.tolerance(name, obj, "ToleratedFailureCount", f64::INFINITY);
                let tolerated_percentage =
                    self.tolerance(name, obj, "ToleratedFailurePercentage", 100.0);
                let flow = self.flow(
                    name,
                    obj,
                    &[
                        "InputPath",
                        "OutputPath",
                        "ResultSelector",
                        "ResultPath",
                        "Assign",
                    ],
                );
                let processor = obj.get("ItemProcessor").or_else(|| obj.get("Iterator"));
                let processor = match processor {
                    Some(p) => self.machine(p, &format!("{name}.ItemProcessor.")),
                    None => {
                        self.err(name, "ItemProcessor", "is required");
                        None
                    }
                };
                let max_concurrency =
                    match (obj.get("MaxConcurrency"), obj.get("MaxConcurrencyPath")) {
                        (Some(v), None) if jsonata && v.is_string() => {
                            match self.jsonata_expr(name, "MaxConcurrency", v) {
                                Some(e) => MaxConcurrency::Expr(e),
                                None => {
                                    self.err(
                                        name,
                                        "MaxConcurrency",
                                        "must be a non-negative integer or a `{% %}` expression",
                                    );
                                    MaxConcurrency::Fixed(0)
                                }
                            }
                        }
                        (Some(v), None) => match v.as_u64() {
                            Some(n) => MaxConcurrency::Fixed(n),
                            None => {
                                self.err(name, "MaxConcurrency", "must be a non-negative integer");
                                MaxConcurrency::Fixed(0)
                            }
                        },
                        (None, Some(p)) => self
                            .path(name, "MaxConcurrencyPath", Some(p))
                            .map(MaxConcurrency::Path)
                            .unwrap_or(MaxConcurrency::Fixed(0)),
                        (None, None) => MaxConcurrency::Fixed(0),
                        (Some(_), Some(_)) => {
                            self.err(
                                name,
                                "MaxConcurrency",
                                "give MaxConcurrency or MaxConcurrencyPath, not both",
                            );
                            MaxConcurrency::Fixed(0)
                        }
                    };
                State::Map {
                    flow,
                    items_path: self.path(name, "ItemsPath", obj.get("ItemsPath")),
                    items,
                    tolerated_count,
                    tolerated_percentage,
                    item_selector: selector,
                    processor: Box::new(processor.unwrap_or(Definition {
                        query_language: self.machine_lang,
                        start_at: String::new(),
                        states: BTreeMap::new(),
                        timeout_seconds: None,
                        comment: None,
                    })),
                    max_concurrency,
                    retry: self.retriers(name, obj.get("Retry")),
                    catch: self.catchers(name, obj.get("Catch")),
                    transition: self.transition(name, obj),
                }
            }
            other => {
                self.err(name, "Type", format!("`{other}` is not a state type (Task, Pass, Choice, Wait, Succeed, Fail, Parallel, Map)"));
                return None;
            }
        })
    }
}

fn targets(s: &State) -> Vec<String> {
    let mut out = Vec::new();
    let mut trans = |t: &Transition| {
        if let Transition::Next(n) = t {
            out.push(n.clone());
        }
    };
    match s {
        State::Pass { transition, .. } | State::Wait { transition, .. } => trans(transition),
        State::Task {
            transition, catch, ..
        }
        | State::Parallel {
            transition, catch, ..
        }
        | State::Map {
            transition, catch, ..
        } => {
            trans(transition);
            out.extend(catch.iter().map(|c| c.next.clone()));
        }
        State::Choice {
            choices, default, ..
        } => {
            out.extend(choices.iter().map(|c| c.next.clone()));
            out.extend(default.iter().cloned());
        }
        State::Succeed { .. } | State::Fail { .. } => {}
    }
    out
}

impl Definition {
    /// Parses and checks a definition; every problem is reported at once.
    pub fn parse(text: &str) -> Result<Definition, DefinitionError> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| DefinitionError(vec![format!("not valid JSON: {e}")]))?;
        Definition::from_value(&v)
    }

    pub fn from_value(v: &Value) -> Result<Definition, DefinitionError> {
        let mut c = Checker {
            problems: Vec::new(),
            lang: QueryLanguage::JsonPath,
            machine_lang: QueryLanguage::JsonPath,
            assigned: BTreeSet::new(),
            references: Vec::new(),
        };
        let def = c.machine(v, "");
        for (state, field, name) in std::mem::take(&mut c.references) {
            if !c.assigned.contains(&name) {
                c.err(
                    &state,
                    &field,
                    format!("`${name}` is a variable that no state's `Assign` sets"),
                );
            }
        }
        match def {
            Some(d) if c.problems.is_empty() => Ok(d),
            _ => Err(DefinitionError(c.problems)),
        }
    }

    /// Every Task resource in the definition (branches and processors too).
    pub fn resources(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for s in self.states.values() {
            match s {
                State::Task { resource, .. } => {
                    out.insert(resource.clone());
                }
                State::Parallel { branches, .. } => {
                    branches.iter().for_each(|b| out.extend(b.resources()))
                }
                State::Map { processor, .. } => out.extend(processor.resources()),
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_job_state_machine_parses() {
        let text = include_str!("../../statemachines/run-job.asl.json");
        let def = Definition::parse(text).unwrap();
        assert_eq!(def.start_at, "Launch task");
        assert!(def
            .resources()
            .contains("arn:aws:states:::lambda:invoke.waitForTaskToken"));
    }

    #[test]
    fn invalid_definitions_name_the_state_and_the_field() {
        let text = r#"{
          "StartAt": "A",
          "States": {
            "A": {"Type": "Pass", "Next": "Nowhere"},
            "B": {"Type": "Task", "End": true, "Retry": [{"ErrorEquals": ["States.ALL"]}, {"ErrorEquals": ["X"]}]},
            "C": {"Type": "Choice", "Choices": [{"Variable": "$.x", "StringEquals": 3, "Next": "A"}]},
            "D": {"Type": "Wait", "Seconds": 1, "Timestamp": "2026-01-01T00:00:00Z", "End": true},
            "E": {"Type": "Fail", "Error": "x", "ErrorPath": "$.e"},
            "F": {"Type": "Pass", "End": true, "Colour": "red"},
            "G": {"Type": "Pass", "End": true, "InputPath": "no-dollar"}
          }
        }"#;
        let err = Definition::parse(text).unwrap_err().0;
        let all = err.join("\n");
        for want in [
            "state `A`, Next: `Nowhere` is not a state",
            "state `B`, Resource: is required",
            "state `B`, Retry[0]: a retrier with `States.ALL` must be the last one",
            "state `C`, Choices[0].StringEquals: 3 is not the type StringEquals compares",
            "state `D`, Seconds: give exactly one of",
            "state `E`, Error: give `Error` or `ErrorPath`, not both",
            "state `F`, Colour: is not a field this state type supports",
            "state `G`, InputPath:",
            "state `B` is not reachable from StartAt",
        ] {
            assert!(all.contains(want), "missing `{want}` in:\n{all}");
        }
    }
}
