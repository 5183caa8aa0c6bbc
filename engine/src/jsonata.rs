//! JSONata, as `QueryLanguage: JSONata` states use it: `{% expression %}`
//! strings anywhere in a field's value, the reserved `$states` variable,
//! workflow variables, and the functions Step Functions adds (`$partition`,
//! `$range`, `$hash`, `$random`, `$uuid`, `$parse`).
//!
//! The expression language itself is the `jsonata-rs` crate (0.3). Its own
//! test suite runs 835 of the 1,229 cases of the JSONata test suite and
//! skips the rest (among them `$formatNumber`, `$average`, `$type`,
//! `$sift`, `$eval`, the parent operator `%`, and some cases of sorting,
//! grouping and transforms). This module contains it:
//! - it runs on one thread of its own with a 4 GiB stack (reserved, not
//!   committed), because its parser and evaluator recurse once per nested
//!   construct (an expression is at most 16 KiB, so its nesting is bounded);
//! - a panic (it panics on the parent operator, for one) is caught and is
//!   an error, its message kept off stderr;
//! - evaluation stops at a depth of 200 and after 1 s (JSONata's U1001);
//! - the objects it builds come back with their keys sorted (its objects
//!   keep no order). What JSONata lists in an object's order (`*`,
//!   `$keys`, `$each`, `$string` of an object) comes in the crate's hash
//!   order instead, which may differ from run to run.
//!
//! Known gap: a function that recurses without end *through a higher-order
//! function* (`$f := function($n){ $map([1], function($x){ $f($n) }) }`)
//! escapes the crate's depth limit; the time limit stops it, after it has
//! used a few hundred MB of stack and memory (the stack pages stay with the
//! thread). Replacing the crate with an evaluator of our own is the way to
//! close it (see the README's JSONata section).

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Mutex, Once, OnceLock};

use bumpalo::Bump;
use jsonata_rs::{ArrayFlags, FunctionContext, JsonAta, Value as JValue};
use serde_json::{Map, Number, Value};

use crate::path::Lookup;

/// How deep evaluation may recurse (a recursive function that never ends
/// stops here, with JSONata's U1001, long before the thread's stack).
pub const MAX_DEPTH: usize = 200;
/// How long one expression may run, in milliseconds. It is what stops a
/// function that recurses without end through a higher-order function
/// (`$map(..., function(){ $f() })`), which the crate's depth limit misses:
/// in one second such a recursion uses a few hundred MB of stack and
/// memory, in ten it used 8 GB.
pub const TIME_LIMIT_MS: usize = 1_000;
/// How deep a value an expression returns may nest.
const MAX_RESULT_DEPTH: usize = 128;

/// The expression inside a `{% ... %}` string, or None for a plain string.
pub fn expression(s: &str) -> Option<&str> {
    let inner = s.strip_prefix("{%")?.strip_suffix("%}")?;
    Some(inner.trim())
}

/// Why an expression gave no usable value.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// JSONata raised an error (`T1006: Attempted to invoke a non-function`).
    Threw(String),
    /// The value is not JSON (a function, a regex).
    Unsupported,
    /// Nothing: the expression's value is undefined.
    Undefined,
}

thread_local! {
    static CONTAINED: Cell<bool> = const { Cell::new(false) };
}

/// The longest expression Stevedore evaluates (the crate's parser and
/// evaluator recurse once per nested construct, so length bounds the depth).
pub const MAX_EXPRESSION_CHARS: usize = 16 * 1024;
/// The stack the crate runs on, largest first (reserved, not committed,
/// until it is used): 4 GiB holds any expression of [`MAX_EXPRESSION_CHARS`]
/// and a runaway recursion until [`TIME_LIMIT_MS`]; a machine that will not
/// reserve that much gets the next size.
const STACK_BYTES: [usize; 3] = [4 << 30, 1 << 30, 256 << 20];

type Job = Box<dyn FnOnce() + Send>;

/// The thread the crate runs on, with a stack deep enough for its recursion
/// (one thread, started once: a thread per expression would cost more than
/// most expressions).
fn worker() -> Option<&'static Mutex<mpsc::Sender<Job>>> {
    static WORKER: OnceLock<Option<Mutex<mpsc::Sender<Job>>>> = OnceLock::new();
    WORKER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            STACK_BYTES.iter().find_map(|&bytes| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name("jsonata".into())
                    .stack_size(bytes)
                    .spawn(move || {
                        let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
                        // Expressions come in bursts (a state has several, a
                        // Map many): wait a moment spinning before sleeping,
                        // so the next one does not pay for waking the thread.
                        while let Some(job) = receive(&rx) {
                            job();
                        }
                    })
                    .ok()
            })?;
            Some(Mutex::new(tx))
        })
        .as_ref()
}

/// Runs `f` on the JSONata thread, turning a panic of the crate into an
/// error (and keeping its message off stderr).
fn contained<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let Some(worker) = worker() else {
        return Err("could not start the JSONata evaluator's thread".into());
    };
    let (tx, rx) = mpsc::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(contained_here(f));
    });
    let sent = worker
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(job)
        .is_ok();
    if !sent {
        return Err("the JSONata evaluator's thread has stopped".into());
    }
    receive(&rx).unwrap_or_else(|| Err("the JSONata evaluator's thread has stopped".into()))
}

/// How long a side of the hand-off spins before it sleeps.
const SPIN: std::time::Duration = std::time::Duration::from_micros(100);

/// The next message: spinning for up to [`SPIN`] (a message usually comes
/// within microseconds), then sleeping until one comes.
fn receive<T>(rx: &mpsc::Receiver<T>) -> Option<T> {
    let start = std::time::Instant::now();
    loop {
        match rx.try_recv() {
            Ok(m) => return Some(m),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) if start.elapsed() < SPIN => std::hint::spin_loop(),
            Err(mpsc::TryRecvError::Empty) => return rx.recv().ok(),
        }
    }
}

fn contained_here<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CONTAINED.with(|c| c.get()) {
                previous(info);
            }
        }));
    });
    CONTAINED.with(|c| c.set(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    CONTAINED.with(|c| c.set(false));
    r.unwrap_or_else(|_| {
        Err("the expression uses a JSONata feature Stevedore's evaluator does not support".into())
    })
}

/// `T1006: Attempted to invoke a non-function`: the error's code and text,
/// without the character position the crate puts in its message.
fn describe(e: &jsonata_rs::Error) -> String {
    let text = e.to_string();
    let code = e.code();
    let mut rest = text.as_str();
    if let Some(r) = rest.strip_prefix(code) {
        rest = r.trim_start_matches(" @ ");
    }
    let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
    if digits > 0 {
        if let Some(r) = rest[digits..].strip_prefix(": ") {
            rest = r;
        }
    }
    // Some messages end with the offending value in the crate's own
    // notation, its objects in no fixed order: leave it out, so the same
    // expression always fails with the same text.
    if let Some(i) = rest.find("got: ") {
        if rest[i..].contains('\n') {
            rest = rest[..i].trim_end_matches([' ', ';', ',']);
        }
    }
    format!("{code}: {rest}")
}

fn too_long(expr: &str) -> Result<(), String> {
    if expr.len() > MAX_EXPRESSION_CHARS {
        return Err(format!(
            "the expression has {} bytes; Stevedore evaluates expressions of at most {MAX_EXPRESSION_CHARS}",
            expr.len()
        ));
    }
    Ok(())
}

/// JSONata's functions the crate does not have.
pub const MISSING_FUNCTIONS: &[&str] = &[
    "formatNumber",
    "formatBase",
    "formatInteger",
    "parseInteger",
    "average",
    "type",
    "sift",
    "spread",
    "shuffle",
    "eval",
    "encodeUrl",
    "encodeUrlComponent",
    "decodeUrl",
    "decodeUrlComponent",
];

/// "Attempted to invoke a non-function" names the JSONata function the
/// evaluator lacks, when the expression calls one.
fn missing_function(expr: &str, e: String) -> String {
    if !e.starts_with("T1006") {
        return e;
    }
    match MISSING_FUNCTIONS
        .iter()
        .find(|f| expr.contains(&format!("${f}(")))
    {
        Some(f) => {
            format!("{e} (`${f}` is a JSONata function Stevedore's evaluator does not have yet)")
        }
        None => e,
    }
}

/// Checks an expression's syntax (at validation, before anything runs).
pub fn check(expr: &str) -> Result<(), String> {
    too_long(expr)?;
    let expr = expr.to_string();
    contained(move || {
        let arena = Bump::new();
        JsonAta::new(&expr, &arena)
            .map(|_| ())
            .map_err(|e| describe(&e))
    })
}

/// Every `{% %}` string inside `v`, with where it is (`Output/key/0`).
pub fn expressions<'v>(v: &'v Value, at: &str, out: &mut Vec<(String, &'v str)>) {
    match v {
        Value::String(s) => {
            if let Some(e) = expression(s) {
                out.push((at.to_string(), e));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                expressions(item, &format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                expressions(item, &format!("{at}/{k}"), out);
            }
        }
        _ => {}
    }
}

/// Variable names an expression mentions (`$name`): only these are bound.
fn mentioned(expr: &str) -> Vec<&str> {
    expr.split('$')
        .skip(1)
        .filter_map(|rest| {
            // A name is letters (any script), digits and `_`, as variable
            // names are.
            let len: usize = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .map(char::len_utf8)
                .sum();
            (len > 0).then(|| &rest[..len])
        })
        .collect()
}

/// Evaluates one expression with `$states` and the workflow variables.
pub fn eval(expr: &str, states: Value, vars: &dyn Lookup) -> Result<Value, Problem> {
    // Step Functions' `$random` takes an optional seed; the crate's own
    // takes none and is bound last, so ours is bound in a block around the
    // expression (where JSONata's scoping finds it first).
    let text = if expr.contains("$random") {
        format!("($random := $sfn_random; {expr})")
    } else {
        expr.to_string()
    };
    if let Err(e) = too_long(expr) {
        return Err(Problem::Threw(e));
    }
    let bound: Vec<(String, Value)> = mentioned(expr)
        .into_iter()
        .filter(|n| *n != "states")
        .filter_map(|n| vars.lookup(n).map(|v| (n.to_string(), v)))
        .collect();
    let r = contained(move || {
        let arena = Bump::new();
        let ata = JsonAta::new(&text, &arena).map_err(|e| describe(&e))?;
        ata.assign_var("states", to_jsonata(&arena, &states));
        for (name, v) in &bound {
            ata.assign_var(name, to_jsonata(&arena, v));
        }
        register(&ata);
        let out = ata
            .evaluate_timeboxed(None, Some(MAX_DEPTH), Some(TIME_LIMIT_MS))
            .map_err(|e| describe(&e))?;
        Ok(from_jsonata(out, 0))
    });
    let r = r.map_err(|e| missing_function(expr, e));
    match r {
        Ok(Ok(Some(v))) => Ok(v),
        Ok(Ok(None)) => Err(Problem::Undefined),
        Ok(Err(())) => Err(Problem::Unsupported),
        Err(message) => Err(Problem::Threw(message)),
    }
}

fn to_jsonata<'a>(arena: &'a Bump, v: &Value) -> &'a JValue<'a> {
    match v {
        Value::Null => JValue::null(arena),
        Value::Bool(b) => JValue::bool(*b),
        Value::Number(n) => JValue::number(arena, n.as_f64().unwrap_or(0.0)),
        Value::String(s) => JValue::string(arena, s),
        Value::Array(items) => {
            let out = JValue::array_with_capacity(arena, items.len(), ArrayFlags::empty());
            for i in items {
                out.push(to_jsonata(arena, i));
            }
            out
        }
        Value::Object(map) => {
            let out = JValue::object_with_capacity(arena, map.len());
            for (k, i) in map {
                out.insert(k, to_jsonata(arena, i));
            }
            out
        }
    }
}

/// JSON from a JSONata value: `Ok(None)` for undefined, `Err` for what JSON
/// cannot hold (functions, regexes, non-finite numbers, too deep a value).
fn from_jsonata<'a>(v: &'a JValue<'a>, depth: usize) -> Result<Option<Value>, ()> {
    if depth > MAX_RESULT_DEPTH {
        return Err(());
    }
    Ok(Some(match v {
        JValue::Undefined => return Ok(None),
        JValue::Null => Value::Null,
        JValue::Bool(b) => Value::Bool(*b),
        JValue::Number(n) => number(*n).ok_or(())?,
        JValue::String(s) => Value::String(s.to_string()),
        JValue::Array(..) | JValue::Range(..) => {
            let mut out = Vec::new();
            for item in v.members() {
                if let Some(x) = from_jsonata(item, depth + 1)? {
                    out.push(x);
                }
            }
            out.into()
        }
        JValue::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
            let mut out = Map::new();
            for (k, item) in entries {
                if let Some(x) = from_jsonata(item, depth + 1)? {
                    out.insert(k.to_string(), x);
                }
            }
            Value::Object(out)
        }
        _ => return Err(()),
    }))
}

/// A JSON number as JavaScript writes it: integral values as integers.
fn number(n: f64) -> Option<Value> {
    if !n.is_finite() {
        return None;
    }
    if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
        return Some(Value::Number(Number::from(n as i64)));
    }
    Number::from_f64(n).map(Value::Number)
}

type Native = for<'a, 'e> fn(
    FunctionContext<'a, 'e>,
    &[&'a JValue<'a>],
) -> jsonata_rs::Result<&'a JValue<'a>>;

fn register(ata: &JsonAta<'_>) {
    let functions: [(&str, usize, Native); 5] = [
        ("partition", 2, fn_partition),
        ("range", 3, fn_range),
        ("hash", 2, fn_hash),
        ("sfn_random", 1, fn_random),
        ("parse", 1, fn_parse),
    ];
    for (name, arity, f) in functions {
        ata.register_function(name, arity, f);
    }
}

fn fail<'a>(name: &str, message: impl std::fmt::Display) -> jsonata_rs::Result<&'a JValue<'a>> {
    Err(jsonata_rs::Error::D3137Error(format!("${name}: {message}")))
}

fn arg<'a>(args: &[&'a JValue<'a>], i: usize) -> &'a JValue<'a> {
    args.get(i).copied().unwrap_or_else(JValue::undefined)
}

fn integer(v: &JValue<'_>) -> Option<i64> {
    match v {
        JValue::Number(n) if n.fract() == 0.0 && n.abs() < 9e15 => Some(*n as i64),
        _ => None,
    }
}

/// `$partition(array, size)`: the array in chunks of `size`.
fn fn_partition<'a>(
    ctx: FunctionContext<'a, '_>,
    args: &[&'a JValue<'a>],
) -> jsonata_rs::Result<&'a JValue<'a>> {
    let items = arg(args, 0);
    let Some(size) = integer(arg(args, 1)).filter(|n| *n > 0) else {
        return fail("partition", "the size must be a positive integer");
    };
    let members: Vec<&JValue> = match items {
        JValue::Array(..) | JValue::Range(..) => items.members().collect(),
        JValue::Undefined => return Ok(JValue::undefined()),
        single => vec![single],
    };
    let out = JValue::array(ctx.arena, ArrayFlags::empty());
    for chunk in members.chunks(size as usize) {
        let part = JValue::array_with_capacity(ctx.arena, chunk.len(), ArrayFlags::empty());
        for item in chunk {
            part.push(item);
        }
        out.push(part);
    }
    Ok(out)
}

/// The most elements `$range` builds (as `States.ArrayRange`).
const MAX_RANGE: i64 = 1000;

/// `$range(start, end, step)`: integers from start to end, inclusive.
fn fn_range<'a>(
    ctx: FunctionContext<'a, '_>,
    args: &[&'a JValue<'a>],
) -> jsonata_rs::Result<&'a JValue<'a>> {
    let (Some(start), Some(end), Some(step)) = (
        integer(arg(args, 0)),
        integer(arg(args, 1)),
        integer(arg(args, 2)),
    ) else {
        return fail("range", "start, end and step must be integers");
    };
    if step == 0 {
        return fail("range", "the step must not be 0");
    }
    // A sequence, as JSONata's own functions return: one element is that
    // element.
    let out = JValue::array(ctx.arena, ArrayFlags::SEQUENCE);
    let mut n = start;
    let mut count = 0;
    while (step > 0 && n <= end) || (step < 0 && n >= end) {
        count += 1;
        if count > MAX_RANGE {
            return fail(
                "range",
                format!("the range has more than {MAX_RANGE} elements"),
            );
        }
        out.push(JValue::number(ctx.arena, n as f64));
        match n.checked_add(step) {
            Some(next) => n = next,
            None => break,
        }
    }
    Ok(match out.len() {
        0 => JValue::undefined(),
        1 => out.get_member(0),
        _ => out,
    })
}

/// `$hash(data, algorithm)`: the hex digest (MD5, SHA-1, SHA-256, SHA-384, SHA-512).
fn fn_hash<'a>(
    ctx: FunctionContext<'a, '_>,
    args: &[&'a JValue<'a>],
) -> jsonata_rs::Result<&'a JValue<'a>> {
    let (JValue::String(data), JValue::String(algorithm)) = (arg(args, 0), arg(args, 1)) else {
        return fail("hash", "give the data and the algorithm as strings");
    };
    match crate::intrinsics::hash_hex(data, algorithm) {
        Some(hex) => Ok(JValue::string(ctx.arena, &hex)),
        None => fail(
            "hash",
            format!("`{algorithm}` is not MD5, SHA-1, SHA-256, SHA-384 or SHA-512"),
        ),
    }
}

/// `$random([seed])`: a number in [0, 1); the same seed gives the same number.
fn fn_random<'a>(
    ctx: FunctionContext<'a, '_>,
    args: &[&'a JValue<'a>],
) -> jsonata_rs::Result<&'a JValue<'a>> {
    use rand::{Rng, SeedableRng};
    let n: f64 = match arg(args, 0) {
        JValue::Undefined => rand::random(),
        seed => {
            let Some(seed) = integer(seed) else {
                return fail("random", "the seed must be an integer");
            };
            rand::rngs::StdRng::seed_from_u64(seed as u64).random()
        }
    };
    Ok(JValue::number(ctx.arena, n))
}

/// `$parse(json)`: the JSON value a string holds.
fn fn_parse<'a>(
    ctx: FunctionContext<'a, '_>,
    args: &[&'a JValue<'a>],
) -> jsonata_rs::Result<&'a JValue<'a>> {
    let JValue::String(text) = arg(args, 0) else {
        return fail("parse", "the argument must be a string");
    };
    match serde_json::from_str::<Value>(text) {
        Ok(v) => Ok(to_jsonata(ctx.arena, &v)),
        Err(e) => fail("parse", format!("not valid JSON: {e}")),
    }
}

/// The JSON type name Step Functions uses in its messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(expr: &str, input: Value) -> Result<Value, Problem> {
        let vars = Map::new();
        eval(expr, json!({"input": input}), &vars)
    }

    #[test]
    fn expressions_are_only_whole_strings_in_braces() {
        assert_eq!(expression("{% $x %}"), Some("$x"));
        assert_eq!(expression("{%$x%}"), Some("$x"));
        assert_eq!(expression(" {% $x %}"), None);
        assert_eq!(expression("{% $x %} "), None);
        assert_eq!(expression("$x"), None);
    }

    #[test]
    fn the_step_functions_functions() {
        assert_eq!(
            run("$range(0, 9, 3)", json!({})).unwrap(),
            json!([0, 3, 6, 9])
        );
        assert_eq!(run("$range(1, 9, 9)", json!({})).unwrap(), json!(1));
        assert_eq!(
            run("$partition([1,2,3,4,5], 2)", json!({})).unwrap(),
            json!([[1, 2], [3, 4], [5]])
        );
        assert_eq!(
            run("$hash('input data', 'SHA-1')", json!({})).unwrap(),
            json!("aaff4a450a104cd177d28d18d74485e8cae074b7")
        );
        assert_eq!(
            run("$parse($states.input.s)", json!({"s": "{\"a\": [1, 2]}"})).unwrap(),
            json!({"a": [1, 2]})
        );
        let a = run("$random(7)", json!({})).unwrap();
        assert_eq!(run("$random(7)", json!({})).unwrap(), a);
        let f = a.as_f64().unwrap();
        assert!((0.0..1.0).contains(&f));
        let u = run("$uuid()", json!({})).unwrap();
        assert_eq!(u.as_str().unwrap().len(), 36);
    }

    #[test]
    fn errors_name_jsonata_s_code_without_a_position() {
        assert_eq!(
            run("$nothing($states.input)", json!({})),
            Err(Problem::Threw(
                "T1006: Attempted to invoke a non-function".into()
            ))
        );
        assert_eq!(
            run("$states.input.missing", json!({})),
            Err(Problem::Undefined)
        );
        assert_eq!(
            run("function($x){$x}", json!({})),
            Err(Problem::Unsupported)
        );
        assert!(matches!(check("1 +"), Err(e) if e.starts_with("S0")));
    }

    #[test]
    fn what_the_crate_cannot_do_is_an_error_not_a_panic() {
        // The parent operator makes the crate's parser panic.
        assert!(check("a.%.b").is_err());
        assert!(matches!(run("a.%.b", json!({})), Err(Problem::Threw(_))));
        // Endless recursion stops at the depth limit.
        let r = run("($f := function($n){ $f($n + 1) + 1 }; $f(0))", json!({}));
        assert!(
            matches!(&r, Err(Problem::Threw(e)) if e.starts_with("U1001")),
            "{r:?}"
        );
    }

    /// Nesting as deep as the length limit allows, on a thread with a
    /// tokio worker's 2 MiB stack: an error or a value, never an overflow.
    #[test]
    fn deep_expressions_do_not_overflow_the_caller_s_stack() {
        let half = MAX_EXPRESSION_CHARS / 2 - 2;
        let cases = [
            format!("{}1{}", "(".repeat(half), ")".repeat(half)),
            format!("{}1{}", "[".repeat(half), "]".repeat(half)),
            "-".repeat(MAX_EXPRESSION_CHARS - 1) + "1",
            "1+".repeat(half) + "1",
            "$f(".repeat(MAX_EXPRESSION_CHARS / 4) + &")".repeat(MAX_EXPRESSION_CHARS / 4),
            "1?".repeat(half / 2) + "1" + &":2".repeat(half / 2),
            "a".repeat(MAX_EXPRESSION_CHARS + 1),
        ];
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                for e in cases {
                    let _ = check(&e);
                    let _ = eval(&e, json!({}), &Map::new());
                }
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(check(&"1".repeat(MAX_EXPRESSION_CHARS + 1)).is_err());
    }

    /// The recursion the crate's depth limit misses ends at the time limit,
    /// with an error, not a crash.
    #[test]
    fn runaway_recursion_through_map_ends_at_the_time_limit() {
        let r = run(
            "($f := function($n){ $map([1], function($x){ $f($n) }) }; $f(0))",
            json!({}),
        );
        assert!(
            matches!(&r, Err(Problem::Threw(e)) if e.starts_with("U1001")),
            "{r:?}"
        );
    }

    #[test]
    fn only_mentioned_variables_are_bound() {
        assert_eq!(
            mentioned("$a.b + $c_1 & $states.input"),
            vec!["a", "c_1", "states"]
        );
        let mut vars = Map::new();
        vars.insert("x".into(), json!({"y": 2}));
        assert_eq!(eval("$x.y * 2", json!({}), &vars).unwrap(), json!(4));
        vars.insert("café".into(), json!(3));
        assert_eq!(eval("$café + 1", json!({}), &vars).unwrap(), json!(4));
    }
}
