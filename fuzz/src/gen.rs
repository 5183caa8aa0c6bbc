//! Random building blocks: JSON values with the awkward cases mixed in
//! (extreme numbers, multi-byte and control characters, long strings,
//! paths and intrinsic calls where text is expected), and mutation of a
//! well-formed value.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Number, Value};

pub struct Gen {
    rng: StdRng,
}

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p.clamp(0.0, 1.0))
    }

    /// A number in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            self.rng.random_range(0..n)
        }
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// An integer, often an edge.
    pub fn int(&mut self) -> i64 {
        match self.below(10) {
            0 => *self.pick(&[i64::MIN, i64::MAX, i64::MIN + 1, i64::MAX - 1]),
            1 => *self.pick(&[0, -1, 1, 2, 255, 256, 1000, 1001]),
            2 => *self.pick(&[
                99_999_999,
                100_000_000,
                31_622_400,
                86_400,
                2_147_483_647,
                -2_147_483_648,
            ]),
            3 => self.rng.random(),
            _ => self.rng.random_range(-5..50),
        }
    }

    pub fn number(&mut self) -> Value {
        match self.below(8) {
            0 => json!(u64::MAX),
            1 => Number::from_f64(*self.pick(&[
                0.5,
                -0.0,
                1e308,
                -1e308,
                1.5e300,
                f64::MIN_POSITIVE,
                2.000_000_1,
                99_999_999.5,
            ]))
            .map(Value::Number)
            .unwrap_or(Value::Null),
            _ => json!(self.int()),
        }
    }

    /// A string, often one of the shapes Stevedore reads specially.
    pub fn string(&mut self) -> String {
        match self.below(14) {
            0 => String::new(),
            1 => "é".repeat(self.below(300)),
            2 => "x".repeat(self.below(5000)),
            3 => (*self.pick(&[
                "\u{0}", "\u{7f}", "\n", "\t", "\r\n", "\"", "\\", "'", "𝄞", "\u{202e}",
            ]))
            .to_string(),
            4 => (*self.pick(&[
                "$",
                "$$",
                "$.a",
                "$.a[0]",
                "$..b",
                "$.a[*]",
                "$$.Execution.Id",
                "$[?(@.n > 1)]",
            ]))
            .to_string(),
            5 => (*self.pick(&[
                "States.Format('{}', $.a)",
                "States.MathAdd(1, 2)",
                "States.ArrayRange(1, 5, 1)",
                "States.UUID()",
            ]))
            .to_string(),
            6 => (*self.pick(&[
                "2026-01-01T00:00:00Z",
                "2026-13-01T00:00:00Z",
                "9999-12-31T23:59:59Z",
                "0000-01-01T00:00:00Z",
                "2026-01-01T00:00:00+25:00",
                "2026-01-01",
            ]))
            .to_string(),
            7 => (*self.pick(&[
                "5m",
                "1h30m",
                "0s",
                "90d",
                "99999999999d",
                "-5m",
                "1.5h",
                "m",
                "5 m",
            ]))
            .to_string(),
            8 => (*self.pick(&[
                "arn:aws:ecs:eu-west-1:111122223333:task/c/abc",
                "arn:aws:states:::lambda:invoke",
                "arn:",
                "stevedore/run-1",
                "stevedore/",
            ]))
            .to_string(),
            9 => (*self.pick(&["{% $states.input %}", "{}", "{{}}", "\\{", "%s%n"])).to_string(),
            10 => (*self.pick(&[
                "States.ALL",
                "States.Timeout",
                "States.TaskFailed",
                "ExitedNonZero",
                "StartFailed",
            ]))
            .to_string(),
            _ => {
                let n = self.below(12);
                (0..n)
                    .map(|_| {
                        *self.pick(&[
                            'a', 'b', 'Z', '0', '9', '-', '_', '.', ' ', 'é', '$', '[', ']', '(',
                            ')', ':', '?', '@', '\'', '*', ',',
                        ])
                    })
                    .collect()
            }
        }
    }

    pub fn key(&mut self) -> String {
        if self.chance(0.7) {
            (*self.pick(&[
                "a",
                "b",
                "n",
                "items",
                "Type",
                "Next",
                "End",
                "Resource",
                "Parameters",
                "x.$",
                "value",
                "job",
                "id",
            ]))
            .to_string()
        } else {
            self.string()
        }
    }

    /// Any JSON value, at most `depth` deep.
    pub fn value(&mut self, depth: usize) -> Value {
        let top = if depth == 0 { 4 } else { 6 };
        match self.below(top) {
            0 => Value::Null,
            1 => Value::Bool(self.chance(0.5)),
            2 => self.number(),
            3 => Value::String(self.string()),
            4 => {
                let n = self.below(5);
                Value::Array((0..n).map(|_| self.value(depth - 1)).collect())
            }
            _ => {
                let n = self.below(5);
                let mut m = Map::new();
                for _ in 0..n {
                    let k = self.key();
                    m.insert(k, self.value(depth - 1));
                }
                Value::Object(m)
            }
        }
    }

    /// `v` with up to `n` random changes: a node replaced, a key removed or
    /// added, an array item duplicated.
    pub fn mutate(&mut self, mut v: Value, n: usize) -> Value {
        for _ in 0..self.below(n + 1) {
            let paths = nodes(&v);
            let at = self.pick(&paths).clone();
            let op = self.below(4);
            let replacement = self.value(2);
            let key = self.key();
            if let Some(node) = node_mut(&mut v, &at) {
                match (op, node) {
                    (0, node) => *node = replacement,
                    (1, Value::Object(m)) if !m.is_empty() => {
                        let k = m
                            .keys()
                            .nth(self.below(m.len()))
                            .cloned()
                            .unwrap_or_default();
                        m.remove(&k);
                    }
                    (2, Value::Object(m)) => {
                        m.insert(key, replacement);
                    }
                    (3, Value::Array(a)) if !a.is_empty() => {
                        let i = self.below(a.len());
                        let item = a[i].clone();
                        a.push(item);
                    }
                    (_, node) => *node = replacement,
                }
            }
        }
        v
    }
}

#[derive(Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// The location of every node of `v` (the root first).
fn nodes(v: &Value) -> Vec<Vec<Step>> {
    let mut out = vec![Vec::new()];
    let mut stack = vec![(Vec::new(), v)];
    while let Some((path, node)) = stack.pop() {
        match node {
            Value::Object(m) => {
                for (k, child) in m {
                    let mut p = path.clone();
                    p.push(Step::Key(k.clone()));
                    out.push(p.clone());
                    stack.push((p, child));
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    let mut p = path.clone();
                    p.push(Step::Index(i));
                    out.push(p.clone());
                    stack.push((p, child));
                }
            }
            _ => {}
        }
    }
    out
}

fn node_mut<'a>(v: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    let mut node = v;
    for step in path {
        node = match step {
            Step::Key(k) => node.get_mut(k.as_str())?,
            Step::Index(i) => node.get_mut(*i)?,
        };
    }
    Some(node)
}
