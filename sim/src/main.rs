//! `stevedore-sim`: runs seeds of the control-plane simulation and checks
//! its invariants. `scripts/simulate.sh` is the way in.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use stevedore_sim::{simulate, Breakage, Report};

const USAGE: &str = "usage: stevedore-sim [--seeds N] [--first S] [--seed S] [--break no-sweep|no-reaper|watch-failure-stops|scheduled-twice] [--threads T]

  --seeds N     run seeds FIRST .. FIRST+N-1 (default 1000)
  --first S     the first seed (default 1)
  --seed S      run the one seed S and show what happened in it
  --break WHAT  simulate a deliberately broken control plane (no-sweep, no-reaper,
                watch-failure-stops: a failed watch stops the task, as before issue 23;
                scheduled-twice: a second delivery of a schedule's start runs the job again)
  --threads T   seeds run on T threads (default: the machine's cores)
  --trace       with --seed: print the seed's story (state machine events, runs, tasks)";

struct Args {
    seeds: u64,
    first: u64,
    one: Option<u64>,
    breakage: Breakage,
    threads: usize,
    trace: bool,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        seeds: 1000,
        first: 1,
        one: None,
        breakage: Breakage::default(),
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        trace: false,
    };
    let number = |flag: &str, v: Option<String>| -> Result<u64, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a number"))?;
        v.parse()
            .map_err(|_| format!("{flag} takes a whole number, not `{v}`"))
    };
    while let Some(a) = argv.next() {
        match a.as_str() {
            "--seeds" => args.seeds = number("--seeds", argv.next())?,
            "--first" => args.first = number("--first", argv.next())?,
            "--seed" => args.one = Some(number("--seed", argv.next())?),
            "--threads" => args.threads = number("--threads", argv.next())?.max(1) as usize,
            "--break" => match argv.next().as_deref() {
                Some("no-sweep") => args.breakage.no_sweep = true,
                Some("no-reaper") => args.breakage.no_reaper = true,
                Some("watch-failure-stops") => args.breakage.watch_failure_stops = true,
                Some("scheduled-twice") => args.breakage.scheduled_twice = true,
                other => {
                    return Err(format!(
                        "--break takes no-sweep, no-reaper, watch-failure-stops or scheduled-twice, not {}",
                        other.unwrap_or("nothing")
                    ))
                }
            },
            "--trace" => args.trace = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    if args.seeds == 0 {
        return Err("--seeds must be at least 1".into());
    }
    Ok(args)
}

fn replay_command(seed: u64, breakage: Breakage) -> String {
    let mut cmd = format!("bash scripts/simulate.sh --seed {seed}");
    if breakage.no_sweep {
        cmd.push_str(" --break no-sweep");
    }
    if breakage.no_reaper {
        cmd.push_str(" --break no-reaper");
    }
    if breakage.watch_failure_stops {
        cmd.push_str(" --break watch-failure-stops");
    }
    if breakage.scheduled_twice {
        cmd.push_str(" --break scheduled-twice");
    }
    cmd
}

fn show_violations(report: &Report, breakage: Breakage) {
    for v in &report.violations {
        println!("✘ seed {}: {}: {}", report.seed, v.invariant, v.detail);
    }
    println!("  replay: {}", replay_command(report.seed, breakage));
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.one {
        let r1 = stevedore_sim::simulate_traced(seed, args.breakage, args.trace);
        for line in &r1.story {
            println!("  {line}");
        }
        let r2 = simulate(seed, args.breakage);
        println!("seed {seed}: {:?}", r1.stats);
        if r1.digest != r2.digest {
            println!(
                "✘ seed {seed} did not replay the same way twice (digests {:x} and {:x})",
                r1.digest, r2.digest
            );
            return ExitCode::FAILURE;
        }
        if !r1.violations.is_empty() {
            show_violations(&r1, args.breakage);
        }
        println!(
            "simulated {} executions (1 seeds): {} invariant violations",
            r1.executions,
            r1.violations.len()
        );
        return if r1.violations.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }

    let started = Instant::now();
    let next = AtomicU64::new(args.first);
    let end = args.first + args.seeds;
    let executions = AtomicUsize::new(0);
    let tally = Mutex::new(stevedore_sim::Stats::default());
    let done = AtomicU64::new(0);
    let failing: Mutex<Vec<Report>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..args.threads {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    break;
                }
                let report = simulate(seed, args.breakage);
                executions.fetch_add(report.executions, Ordering::Relaxed);
                {
                    let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                    t.failed += report.stats.failed;
                    t.executions_alerted_twice += report.stats.executions_alerted_twice;
                    t.duplicate_alerts += report.stats.duplicate_alerts;
                    t.outages += report.stats.outages;
                }
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(1000) {
                    eprintln!(
                        "  {n}/{} seeds, {:.0} s",
                        args.seeds,
                        started.elapsed().as_secs_f64()
                    );
                }
                if !report.violations.is_empty() {
                    failing
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(report);
                }
            });
        }
    });
    let mut failing = failing.into_inner().unwrap_or_else(|p| p.into_inner());
    failing.sort_by_key(|r| r.seed);
    for r in failing.iter().take(5) {
        show_violations(r, args.breakage);
    }
    if failing.len() > 5 {
        println!("  ... and {} more failing seeds", failing.len() - 5);
    }
    let violations: usize = failing.iter().map(|r| r.violations.len()).sum();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "  {} seeds in {secs:.1} s ({:.0} seeds/s on {} threads)",
        args.seeds,
        args.seeds as f64 / secs.max(1e-9),
        args.threads
    );
    let t = tally.into_inner().unwrap_or_else(|p| p.into_inner());
    eprintln!(
        "  {} seeds with an outage; {} failed executions, {} of them alerted more than once ({} extra alerts)",
        t.outages, t.failed, t.executions_alerted_twice, t.duplicate_alerts
    );
    println!(
        "simulated {} executions ({} seeds): {violations} invariant violations",
        executions.load(Ordering::Relaxed),
        args.seeds
    );
    if violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
