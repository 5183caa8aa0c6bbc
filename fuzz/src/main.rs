//! `stevedore-fuzz [--seconds N] [--seed S] [--target NAME] [--jobs J]`
//!
//! Runs every target for its share of N seconds (J at a time, so the whole
//! run takes about N seconds), each in a
//! child process so that even an abort (a stack overflow) is caught: the
//! child reports the index of each input before it runs it, and the parent
//! makes the input that killed it again from (seed, index). Every input that
//! panics, aborts or breaks an invariant is saved under
//! `fuzz/regressions/<target>/`, where the regression test replays it. The
//! last line is `fuzz: N inputs, P panics`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stevedore_fuzz::{gen::Gen, input_seed, run_one, target, targets, Outcome, Target};

struct Options {
    seconds: f64,
    seed: u64,
    only: Option<String>,
    jobs: usize,
    save: PathBuf,
}

fn usage() -> ! {
    eprintln!(
        "usage: stevedore-fuzz [--seconds N] [--seed S] [--target NAME] [--jobs J] [--save DIR]"
    );
    eprintln!(
        "targets: {}",
        targets()
            .iter()
            .map(|t| t.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    std::process::exit(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return child(&args[1..]);
    }
    let mut o = Options {
        seconds: 60.0,
        seed: 1,
        only: None,
        jobs: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        save: Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions"),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_else(|| usage());
        match a.as_str() {
            "--seconds" => o.seconds = value().parse().unwrap_or_else(|_| usage()),
            "--seed" => o.seed = value().parse().unwrap_or_else(|_| usage()),
            "--target" => o.only = Some(value()),
            "--jobs" => o.jobs = value().parse().unwrap_or_else(|_| usage()),
            "--save" => o.save = PathBuf::from(value()),
            _ => usage(),
        }
    }
    let chosen: Vec<Target> = targets()
        .into_iter()
        .filter(|t| o.only.as_deref().is_none_or(|n| n == t.name))
        .collect();
    if chosen.is_empty() {
        usage();
    }
    let jobs = o.jobs.clamp(1, chosen.len());
    // The targets run `jobs` at a time, in rounds: the rounds share the time.
    let rounds = chosen.len().div_ceil(jobs);
    let share = Duration::from_secs_f64((o.seconds / rounds as f64).max(1.0));
    let names: Vec<&'static str> = chosen.iter().map(|t| t.name).collect();
    let queue = std::sync::Mutex::new(names.into_iter());
    let reports: Vec<Report> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let Some(name) = queue.lock().unwrap().next() else {
                            break;
                        };
                        let r = fuzz_target(name, o.seed, share, &o.save);
                        println!("{}", r.line());
                        done.push(r);
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let inputs: u64 = reports.iter().map(|r| r.inputs).sum();
    let panics: usize = reports.iter().map(|r| r.panics).sum();
    let violations: usize = reports.iter().map(|r| r.violations).sum();
    if violations > 0 {
        println!(
            "{violations} invariant violations (saved under {})",
            o.save.display()
        );
    }
    println!("fuzz: {inputs} inputs, {panics} panics");
    if panics == 0 && violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

struct Report {
    name: &'static str,
    inputs: u64,
    elapsed: Duration,
    panics: usize,
    violations: usize,
}

impl Report {
    fn line(&self) -> String {
        let secs = self.elapsed.as_secs_f64();
        format!(
            "{:<11} {:>9} inputs in {:>5.1} s ({:>7.0}/s), {} panics, {} violations",
            self.name,
            self.inputs,
            secs,
            self.inputs as f64 / secs.max(1e-9),
            self.panics,
            self.violations
        )
    }
}

/// Runs one target in child processes until its time is up.
fn fuzz_target(name: &'static str, seed: u64, budget: Duration, save: &Path) -> Report {
    let started = Instant::now();
    let mut report = Report {
        name,
        inputs: 0,
        elapsed: Duration::ZERO,
        panics: 0,
        violations: 0,
    };
    let mut from = 0u64;
    while started.elapsed() < budget {
        let left = budget - started.elapsed();
        let mut child = match Command::new(std::env::current_exe().expect("own path"))
            .args([
                "--child",
                name,
                &seed.to_string(),
                &from.to_string(),
                &left.as_secs_f64().to_string(),
                &save.display().to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{name}: cannot start a child: {e}");
                report.panics += 1;
                break;
            }
        };
        // The index of each input, before it runs.
        let mut progress = child.stdout.take().expect("piped");
        let mut last: Option<u64> = None;
        let mut buf = [0u8; 8 * 1024];
        let mut carry = Vec::new();
        loop {
            match progress.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    carry.extend_from_slice(&buf[..n]);
                    let whole = carry.len() / 8 * 8;
                    if whole >= 8 {
                        let b: [u8; 8] = carry[whole - 8..whole].try_into().expect("8 bytes");
                        last = Some(u64::from_le_bytes(b));
                    }
                    carry.drain(..whole);
                }
            }
        }
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let status = child.wait().expect("wait for the child");
        let summary: Option<Value> = err.lines().rev().find_map(|l| serde_json::from_str(l).ok());
        match (status.success(), summary) {
            (true, Some(s)) => {
                report.inputs += s["inputs"].as_u64().unwrap_or(0);
                report.panics += s["panics"].as_u64().unwrap_or(0) as usize;
                report.violations += s["violations"].as_u64().unwrap_or(0) as usize;
                break;
            }
            _ => {
                // The child died on an input: make it again and keep it.
                let index = last.unwrap_or(from);
                let input =
                    (target(name).expect("known").generate)(&mut Gen::new(input_seed(seed, index)));
                let why = format!(
                    "the process died ({status}): {}",
                    err.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
                );
                let file = save_found(save, name, seed, index, "abort", &why, &input);
                eprintln!(
                    "{name}: input {index} killed the process; saved {}",
                    file.display()
                );
                report.inputs += index.saturating_sub(from) + 1;
                report.panics += 1;
                from = index + 1;
            }
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// Saves an input that broke something; returns its file.
fn save_found(
    dir: &Path,
    target: &str,
    seed: u64,
    index: u64,
    kind: &str,
    why: &str,
    input: &Value,
) -> PathBuf {
    let text = input.to_string();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&text, &mut h);
    let dir = dir.join(target);
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(format!("{:016x}.json", std::hash::Hasher::finish(&h)));
    let record = json!({
        "target": target,
        "found": format!("{kind}: {why}"),
        "seed": seed,
        "index": index,
        "input": input,
    });
    let _ = std::fs::write(
        &file,
        serde_json::to_string_pretty(&record).unwrap_or_default() + "\n",
    );
    file
}

/// `--child NAME SEED FROM SECONDS SAVE_DIR`: runs inputs FROM, FROM+1, ...
/// until the time is up; prints each index (8 bytes, little-endian) on
/// standard output before running it, and a JSON summary on standard error.
fn child(args: &[String]) -> ExitCode {
    let [name, seed, from, seconds, save] = args else {
        usage()
    };
    let Some(t) = target(name) else { usage() };
    let seed: u64 = seed.parse().unwrap_or_else(|_| usage());
    let from: u64 = from.parse().unwrap_or_else(|_| usage());
    let seconds: f64 = seconds.parse().unwrap_or_else(|_| usage());
    let save = PathBuf::from(save);
    // Panics are counted and saved, not printed.
    std::panic::set_hook(Box::new(|_| {}));
    // The smallest stack a Stevedore thread gets (tokio's workers: 2 MiB).
    let worker = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let deadline = Instant::now() + Duration::from_secs_f64(seconds);
            let mut out = std::io::stdout().lock();
            let (mut inputs, mut panics, mut violations) = (0u64, 0u64, 0u64);
            let mut i = from;
            while Instant::now() < deadline {
                let _ = out.write_all(&i.to_le_bytes());
                let _ = out.flush();
                let input = (t.generate)(&mut Gen::new(input_seed(seed, i)));
                let found = match run_one(&t, &input) {
                    Outcome::Ok => None,
                    Outcome::Panic(why) => {
                        panics += 1;
                        Some(("panic", "panicked", why))
                    }
                    Outcome::Violation(why) => {
                        violations += 1;
                        Some(("violation", "broke an invariant", why))
                    }
                };
                if let Some((kind, what, why)) = found {
                    let f = save_found(&save, t.name, seed, i, kind, &why, &input);
                    eprintln!("{}: input {i} {what}: {why}; saved {}", t.name, f.display());
                }
                inputs += 1;
                i += 1;
            }
            json!({"inputs": inputs, "panics": panics, "violations": violations})
        })
        .expect("a worker thread");
    match worker.join() {
        Ok(summary) => {
            eprintln!("{summary}");
            ExitCode::SUCCESS
        }
        Err(_) => ExitCode::from(101),
    }
}
