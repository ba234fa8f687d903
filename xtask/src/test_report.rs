//! Which tests failed, and why, in a few lines at the very end of `cargo xtask test`.
//!
//! CI shows only the tail of a run's output. Without this, a red run ends with the
//! control plane's logs and the teardown, and the failing test's name and panic message
//! are thousands of lines further up.

use std::collections::BTreeMap;

/// Lines kept from each failing test's own output, starting at its panic.
const LINES_PER_FAILURE: usize = 12;
/// Lines kept of the output's end when no failing test could be named (a build error).
const TAIL_LINES: usize = 30;

#[derive(Debug, PartialEq)]
pub struct Failure {
    /// The test binary, as cargo names it: `tests/handover.rs`, `unittests src/lib.rs`.
    pub binary: String,
    pub test: String,
    /// From the panic line on, at most `LINES_PER_FAILURE` lines.
    pub excerpt: Vec<String>,
    /// What cargo says selects the binary again: `-p meridian-operator --test handover`.
    pub selector: String,
}

/// What a `cargo test --no-fail-fast` run says failed.
#[derive(Debug, Default, PartialEq)]
pub struct Failed {
    /// Tests that failed by name, in binaries that ran to their end.
    pub tests: Vec<Failure>,
    /// Binaries that failed without naming a failed test: a crash, a signal, a test
    /// harness error. Running single tests again cannot clear these.
    pub unexplained: Vec<String>,
}

/// Reads `cargo test` output (stdout and stderr merged, in order).
pub fn failures(output: &str) -> Failed {
    let mut binary = String::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    // binary -> cargo's selector for it, for every binary that failed.
    let mut failed_binaries: Vec<(String, String)> = Vec::new();
    // (binary, test) -> that test's captured output.
    let mut sections: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut open_section: Option<(String, String)> = None;

    for line in output.lines() {
        let trimmed = line.trim();
        // `Running tests/x.rs (target/debug/deps/x-0123)`; a test's own log line
        // starting with "Running" has no such path in parentheses.
        if let Some((name, _)) = trimmed
            .strip_prefix("Running ")
            .filter(|r| r.ends_with(')'))
            .and_then(|r| r.split_once(" ("))
        {
            binary = name.to_string();
            open_section = None;
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix("Doc-tests ") {
            binary = format!("doc-tests {rest}");
            open_section = None;
            continue;
        }
        if let Some(name) = trimmed
            .strip_prefix("---- ")
            .and_then(|r| r.strip_suffix(" stdout ----"))
        {
            let key = (binary.clone(), name.to_string());
            sections.entry(key.clone()).or_default();
            open_section = Some(key);
            continue;
        }
        if trimmed == "failures:" || trimmed.starts_with("test result:") {
            open_section = None;
        }
        if let Some(name) = trimmed
            .strip_prefix("test ")
            .and_then(|r| r.strip_suffix(" ... FAILED"))
        {
            failed.push((binary.clone(), name.to_string()));
            continue;
        }
        if let Some(selector) = trimmed
            .strip_prefix("error: test failed, to rerun pass `")
            .and_then(|r| r.strip_suffix('`'))
        {
            failed_binaries.push((binary.clone(), selector.to_string()));
            open_section = None;
            continue;
        }
        if let Some(key) = &open_section {
            sections
                .get_mut(key)
                .expect("section opened above")
                .push(line.to_string());
        }
    }

    let mut result = Failed::default();
    for (binary, selector) in failed_binaries {
        let named: Vec<&(String, String)> = failed.iter().filter(|(b, _)| *b == binary).collect();
        if named.is_empty() {
            result.unexplained.push(binary);
            continue;
        }
        for (_, test) in named {
            let section = sections
                .remove(&(binary.clone(), test.clone()))
                .unwrap_or_default();
            result.tests.push(Failure {
                binary: binary.clone(),
                test: test.clone(),
                excerpt: excerpt(&section),
                selector: selector.clone(),
            });
        }
    }
    result
}

/// The panic and what follows it; without a panic line, the section's end.
fn excerpt(section: &[String]) -> Vec<String> {
    let start = section
        .iter()
        .position(|l| l.contains("panicked at"))
        .unwrap_or_else(|| section.len().saturating_sub(LINES_PER_FAILURE));
    section[start..]
        .iter()
        .take_while(|l| !l.trim_start().starts_with("stack backtrace:"))
        .take(LINES_PER_FAILURE)
        .cloned()
        .collect()
}

impl Failure {
    /// `cargo test` arguments that run this test alone again.
    pub fn rerun_args(&self) -> Vec<String> {
        let mut args = vec!["test".to_string()];
        args.extend(self.selector.split_whitespace().map(String::from));
        args.extend(["--", "--exact", &self.test, "--nocapture"].map(String::from));
        args
    }

    /// `<label> <binary> :: <test>`, then the excerpt indented.
    fn render_into(&self, text: &mut String, label: &str) {
        text.push_str(&format!("{label} {} :: {}\n", self.binary, self.test));
        for line in &self.excerpt {
            text.push_str("    ");
            text.push_str(line);
            text.push('\n');
        }
    }
}

/// Tests that failed, then passed when run again alone: printed last, loudly, so a
/// green run still shows them.
pub fn render_flaky(flaky: &[Failure]) -> String {
    let mut text = String::from("\n==> FLAKY: failed once, passed when run again alone\n");
    for f in flaky {
        f.render_into(&mut text, "FLAKY");
    }
    text
}

/// The text printed last: each failure with its excerpt, the binaries that failed
/// without naming a test, or, when neither is known (a build error), the output's tail.
pub fn render_failures(found: &[Failure], unexplained: &[String], output: &str) -> String {
    let mut text = String::from("\n==> summary of the failed tests\n");
    for binary in unexplained {
        text.push_str(&format!(
            "FAILED {binary}: the binary failed without naming a test (crash or signal); see its output\n"
        ));
    }
    if found.is_empty() && unexplained.is_empty() {
        text.push_str("no failing test named in the output; its last lines:\n");
        let lines: Vec<&str> = output.lines().collect();
        for l in &lines[lines.len().saturating_sub(TAIL_LINES)..] {
            text.push_str(l);
            text.push('\n');
        }
        return text;
    }
    for f in found {
        f.render_into(&mut text, "FAILED");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "\
     Running tests/handover.rs (target/debug/deps/handover-0123)

running 2 tests
test aborts_without_replica ... ok
test handover_under_writes ... FAILED

failures:

---- handover_under_writes stdout ----
2026-11-23T10:00:00Z INFO noise from the node
thread 'handover_under_writes' panicked at tests/handover.rs:120:9:
writer saw 1 failed write: MOVED 12 127.0.0.1:7001
stack backtrace:
   0: rust_begin_unwind

failures:
    handover_under_writes

test result: FAILED. 1 passed; 1 failed; 0 ignored
error: test failed, to rerun pass `-p meridian-operator --test handover`
     Running tests/status.rs (target/debug/deps/status-4567)

running 1 test
test ready_when_all_pods_serve ... ok
";

    const CRASH: &str = "\
     Running tests/two.rs (target/debug/deps/two-5606)

running 1 test
error: test failed, to rerun pass `-p meridian-node --test two`

Caused by:
  process didn't exit successfully: `target/debug/deps/two-5606` (signal: 6, SIGABRT)
";

    fn handover_failure() -> Failure {
        Failure {
            binary: "tests/handover.rs".into(),
            test: "handover_under_writes".into(),
            excerpt: vec![
                "thread 'handover_under_writes' panicked at tests/handover.rs:120:9:".into(),
                "writer saw 1 failed write: MOVED 12 127.0.0.1:7001".into(),
            ],
            selector: "-p meridian-operator --test handover".into(),
        }
    }

    #[test]
    fn names_the_binary_the_test_and_the_panic() {
        assert_eq!(
            failures(RUN),
            Failed {
                tests: vec![handover_failure()],
                unexplained: Vec::new(),
            }
        );
    }

    #[test]
    fn same_test_name_in_two_binaries_is_told_apart() {
        let two = format!(
            "{RUN}{}",
            RUN.replace("tests/handover.rs (", "tests/other.rs (")
                .replace("--test handover", "--test other")
        );
        let found = failures(&two);
        let binaries: Vec<&str> = found.tests.iter().map(|f| f.binary.as_str()).collect();
        assert_eq!(binaries, ["tests/handover.rs", "tests/other.rs"]);
    }

    #[test]
    fn a_crashed_binary_is_unexplained_not_retried() {
        let found = failures(&format!("{RUN}{CRASH}"));
        assert_eq!(found.tests, vec![handover_failure()]);
        assert_eq!(found.unexplained, ["tests/two.rs"]);
        let text = render_failures(&found.tests, &found.unexplained, CRASH);
        assert!(text.contains("FAILED tests/two.rs"), "{text}");
    }

    #[test]
    fn a_failure_reruns_alone_with_cargos_selector() {
        assert_eq!(
            handover_failure().rerun_args(),
            [
                "test",
                "-p",
                "meridian-operator",
                "--test",
                "handover",
                "--",
                "--exact",
                "handover_under_writes",
                "--nocapture"
            ]
        );
    }

    #[test]
    fn build_error_falls_back_to_the_tail() {
        let out = "   Compiling meridian v0.1.0\nerror[E0425]: cannot find value `x`\n";
        assert_eq!(failures(out), Failed::default());
        let text = render_failures(&[], &[], out);
        assert!(text.contains("no failing test named"), "{text}");
        assert!(text.contains("error[E0425]"), "{text}");
    }

    #[test]
    fn passing_run_names_no_failure() {
        let passing = RUN
            .replace("... FAILED", "... ok")
            .replace("error: test failed", "");
        assert_eq!(failures(&passing), Failed::default());
    }
}
