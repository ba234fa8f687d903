//! `cargo xtask fuzz [--target NAME] [--seconds N]`: coverage-guided fuzzing of the node's
//! network-facing decoders with libFuzzer, on the stable toolchain.
//!
//! The targets are the binaries of the `meridian-fuzz` package (`fuzz/fuzz_targets/`). They
//! are built with the same flags `cargo fuzz build --sanitizer none` passes (SanitizerCoverage
//! through stable `-C passes` / `-C llvm-args` codegen options, no `-Z` flag), so no nightly
//! toolchain and no cargo-fuzz install is needed: libFuzzer itself comes from the
//! `libfuzzer-sys` crate. The build goes to `<target dir>/fuzz` for the host triple given
//! explicitly, so the flags reach neither build scripts and proc macros nor the workspace's
//! ordinary build. See docs/testing.md.
//!
//! Each target starts from the checked-in corpus (`fuzz/corpus/<target>`, only read) plus
//! the inputs earlier local runs found (`<target dir>/fuzz/corpus/<target>`, where new ones
//! are written). A crash fails the command with the path of the saved input.

use crate::util;
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Fuzz only this target (default: every target in turn; `--list` names them).
    #[arg(long)]
    pub target: Option<String>,
    /// How long each target runs.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// List the targets and exit.
    #[arg(long)]
    pub list: bool,
    /// Instead of fuzzing, fold the short inputs earlier runs found into the checked-in
    /// corpus, keeping only those that add coverage (libFuzzer's set-cover merge).
    #[arg(long)]
    pub merge: bool,
    /// Show libFuzzer's output as it runs (otherwise it goes to a log file and only a
    /// summary, or the end of the log on a crash, is printed).
    #[arg(long)]
    pub verbose: bool,
    /// Extra libFuzzer flags after `--`, e.g. `-- -jobs=2 -max_len=65536`.
    #[arg(last = true)]
    pub libfuzzer_args: Vec<String>,
}

/// SanitizerCoverage as `cargo fuzz build --sanitizer none` sets it up: inline 8-bit
/// counters and a PC table for coverage, comparison tracing for libFuzzer's value
/// profile and its dictionary of compared bytes, and stack depth, with branch folding
/// off so short-circuit conditions stay separate edges. All stable `-C` options.
const COVERAGE_FLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "-Cllvm-args=-sanitizer-coverage-stack-depth",
    "-Cllvm-args=-simplifycfg-branch-fold-threshold=0",
    "--cfg",
    "fuzzing",
];

/// The cargo profile the targets are built with (root Cargo.toml): release speed, with
/// overflow checks and debug assertions, so arithmetic bugs crash instead of wrapping.
const PROFILE: &str = "fuzz";

/// Per-input limits: an input running longer than this (seconds) counts as a hang, a
/// process growing past this (MB) as a memory blow-up; both are reported like crashes.
const INPUT_TIMEOUT_SECONDS: u32 = 10;
const RSS_LIMIT_MB: u32 = 2048;

/// Seconds each target runs in `cargo xtask test`: long enough to replay the corpus and
/// try a few hundred thousand mutations of the fast targets, short enough for CI.
pub const TEST_SECONDS: u64 = 15;

/// The short run `cargo xtask test` makes of every target.
pub fn smoke() -> Result<()> {
    run(FuzzArgs {
        target: None,
        seconds: TEST_SECONDS,
        list: false,
        merge: false,
        verbose: false,
        libfuzzer_args: Vec::new(),
    })
}

pub fn run(args: FuzzArgs) -> Result<()> {
    let targets = targets()?;
    if args.list {
        for target in &targets {
            println!("{target}");
        }
        return Ok(());
    }
    let chosen: Vec<String> = match &args.target {
        Some(name) if targets.contains(name) => vec![name.clone()],
        Some(name) => bail!(
            "no fuzz target '{name}': the targets are {}",
            targets.join(", ")
        ),
        None => targets,
    };
    build(&chosen)?;
    if args.merge {
        for target in &chosen {
            merge(target)?;
        }
        return Ok(());
    }
    let mut failures = Vec::new();
    for target in &chosen {
        if let Err(error) = fuzz(target, args.seconds, args.verbose, &args.libfuzzer_args) {
            eprintln!("error: {error:#}");
            failures.push(format!("{error:#}"));
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} fuzz targets failed:\n  {}",
            failures.len(),
            chosen.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

/// The target names: the files of `fuzz/fuzz_targets`.
pub fn targets() -> Result<Vec<String>> {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut names = Vec::new();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "rs")
            && let Some(stem) = path.file_stem()
        {
            names.push(stem.to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn fuzz_dir() -> PathBuf {
    util::workspace_root().join("fuzz")
}

/// Where the instrumented build, the found inputs, crash inputs and logs go.
fn work_dir() -> PathBuf {
    util::target_dir().join("fuzz")
}

fn host_triple() -> Result<String> {
    let version = util::output(Command::new("rustc").arg("-vV"))?;
    version
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_string)
        .context("`rustc -vV` names no host triple")
}

fn binary(target: &str) -> Result<PathBuf> {
    Ok(work_dir().join(host_triple()?).join(PROFILE).join(target))
}

/// Builds the chosen targets with coverage instrumentation.
fn build(targets: &[String]) -> Result<()> {
    eprintln!(
        "==> building fuzz targets (stable rustc, SanitizerCoverage, libFuzzer from libfuzzer-sys)"
    );
    // libfuzzer-sys compiles libFuzzer (C++) in its build script
    util::ensure_apt(&[("c++", "g++")])?;
    let mut flags: Vec<String> = COVERAGE_FLAGS.iter().map(|flag| flag.to_string()).collect();
    // like cargo fuzz: the caller's own flags come last
    if let Ok(extra) = std::env::var("RUSTFLAGS") {
        flags.extend(extra.split_whitespace().map(str::to_string));
    }
    let mut cmd = Command::new("cargo");
    cmd.current_dir(util::workspace_root())
        .args([
            "build",
            "--package",
            "meridian-fuzz",
            "--features",
            "libfuzzer",
        ])
        .args(["--profile", PROFILE, "--target", &host_triple()?])
        .arg("--target-dir")
        .arg(work_dir())
        // the unit separator form wins over RUSTFLAGS; it carries exactly our flags
        .env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"));
    for target in targets {
        cmd.args(["--bin", target]);
    }
    util::run(&mut cmd).context("building the fuzz targets failed")
}

/// Runs one target for `seconds`; fails with the crash input's path if it crashes.
fn fuzz(target: &str, seconds: u64, verbose: bool, extra: &[String]) -> Result<()> {
    let found = work_dir().join("corpus").join(target);
    let seeds = fuzz_dir().join("corpus").join(target);
    let artifacts = work_dir().join("artifacts").join(target);
    let logs = work_dir().join("logs");
    for dir in [&found, &artifacts, &logs] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let before = list(&artifacts);
    let mut cmd = Command::new(binary(target)?);
    cmd.arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg("-print_final_stats=1");
    let dict = fuzz_dir().join("dict").join(format!("{target}.dict"));
    if dict.is_file() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    cmd.args(extra)
        .arg(&found)
        .arg(&seeds)
        .env("RUST_BACKTRACE", "1");
    eprintln!("==> fuzzing {target} for {seconds}s");
    eprintln!("+ {}", util::display(&cmd));
    let log_path = logs.join(format!("{target}.log"));
    let (status, log) = if verbose {
        let status = cmd
            .status()
            .with_context(|| format!("cannot start {}", util::display(&cmd)))?;
        (status, String::new())
    } else {
        let mut log_file = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", util::display(&cmd)))?;
        let mut log = String::new();
        let stderr = child.stderr.take().context("no stderr pipe")?;
        for line in BufReader::new(stderr).split(b'\n') {
            let line = String::from_utf8_lossy(&line.context("cannot read libFuzzer output")?)
                .into_owned();
            let _ = writeln!(log_file, "{line}");
            log.push_str(&line);
            log.push('\n');
        }
        (child.wait().context("cannot wait for the fuzzer")?, log)
    };
    if status.success() {
        if !verbose {
            eprintln!("    {} (log: {})", summary(&log), log_path.display());
        }
        return Ok(());
    }
    if !verbose {
        let lines: Vec<&str> = log.lines().collect();
        for line in &lines[lines.len().saturating_sub(60)..] {
            eprintln!("    {line}");
        }
    }
    let new: Vec<PathBuf> = list(&artifacts)
        .into_iter()
        .filter(|path| !before.contains(path))
        .collect();
    match new.as_slice() {
        [] => bail!(
            "fuzz target {target} failed with {status} and saved no input (log: {})",
            log_path.display()
        ),
        inputs => {
            let shown: Vec<String> = inputs
                .iter()
                .map(|path| path.display().to_string())
                .collect();
            bail!(
                "fuzz target {target} crashed on {} (reproduce: {} {}; once fixed, copy it into \
                 fuzz/corpus/{target}/ as a regression input)",
                shown.join(", "),
                binary(target)?.display(),
                shown[0]
            )
        }
    }
}

/// Inputs longer than this are left out of a merge into the checked-in corpus: short
/// inputs cover nearly as much and keep the corpus a few KB per target.
const MERGE_MAX_BYTES: u64 = 256;

/// Folds what earlier runs found into the checked-in corpus: of the inputs up to
/// [`MERGE_MAX_BYTES`], a smallest set that covers every code edge the corpus does not
/// (libFuzzer's set-cover merge, hit counts ignored). Inputs already there stay.
fn merge(target: &str) -> Result<()> {
    let found = work_dir().join("corpus").join(target);
    let seeds = fuzz_dir().join("corpus").join(target);
    if !found.is_dir() {
        eprintln!(
            "==> {target}: nothing found yet (run `cargo xtask fuzz --target {target}` first)"
        );
        return Ok(());
    }
    let candidates = work_dir().join("merge").join(target);
    if candidates.exists() {
        std::fs::remove_dir_all(&candidates)
            .with_context(|| format!("cannot empty {}", candidates.display()))?;
    }
    std::fs::create_dir_all(&candidates)?;
    for path in list(&found) {
        if path
            .metadata()
            .is_ok_and(|meta| meta.is_file() && meta.len() <= MERGE_MAX_BYTES)
            && let Some(name) = path.file_name()
        {
            std::fs::copy(&path, candidates.join(name))?;
        }
    }
    let before = list(&seeds).len();
    eprintln!(
        "==> merging {} inputs of up to {MERGE_MAX_BYTES} bytes from {} into {}",
        list(&candidates).len(),
        found.display(),
        seeds.display()
    );
    let artifacts = work_dir().join("artifacts").join(target);
    std::fs::create_dir_all(&artifacts)?;
    util::run(
        Command::new(binary(target)?)
            .arg("-set_cover_merge=1")
            .arg("-use_counters=0")
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg(&seeds)
            .arg(&candidates)
            .stderr(Stdio::null()),
    )?;
    let inputs = list(&seeds);
    let bytes: u64 = inputs
        .iter()
        .filter_map(|path| path.metadata().ok())
        .map(|meta| meta.len())
        .sum();
    eprintln!(
        "    {target}: {} inputs added, {} in all, {bytes} bytes",
        inputs.len() - before,
        inputs.len()
    );
    Ok(())
}

fn list(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default()
}

/// One line from libFuzzer's final output: runs, speed, coverage, corpus size.
fn summary(log: &str) -> String {
    let stat = |name: &str| {
        log.lines()
            .find_map(|line| line.strip_prefix(&format!("stat::{name}:")))
            .map(str::trim)
            .unwrap_or("?")
            .to_string()
    };
    let coverage = log
        .lines()
        .rev()
        .find(|line| line.contains(" cov: "))
        .and_then(|line| line.split_once(" cov: "))
        .map(|(_, rest)| format!("cov: {rest}"))
        .unwrap_or_default();
    format!(
        "{} runs, {}/s, {} new inputs, peak {} MB; {coverage}",
        stat("number_of_executed_units"),
        stat("average_exec_per_sec"),
        stat("new_units_added"),
        stat("peak_rss_mb"),
    )
}
