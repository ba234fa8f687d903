//! Packaging as users consume it: the Dockerfiles, the Helm chart, `manifests/install.yaml`
//! and `examples/`.
//!
//! - The Dockerfiles build packages and binaries that exist and run as a non-root user
//!   (no Docker engine needed: their instructions are checked).
//! - `helm lint` / `helm template` pass, and the values schema refuses unknown keys
//!   (needs `HELM`, the path of a helm v3 binary; skipped with a reason otherwise).
//! - With `KUBECONFIG`: re-applying `manifests/install.yaml` changes nothing (what GitOps tools
//!   rely on), the chart rendered for another release and namespace is accepted by the API
//!   server (server-side dry run, so nothing cluster-wide changes), and every example is
//!   accepted by the API server.

use anyhow::{Context, Result, bail, ensure};
use meridian_e2e::*;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The field manager install.yaml is applied with: kubectl's default for
/// `apply --server-side`.
const INSTALL_FIELD_MANAGER: &str = "kubectl";

// ---------------------------------------------------------------------------------------
// Dockerfiles
// ---------------------------------------------------------------------------------------

/// One Dockerfile instruction with its arguments, continuation lines joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(continued) = trimmed.strip_suffix('\\') {
            pending.push_str(continued);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let (keyword, rest) = pending
            .split_once(char::is_whitespace)
            .unwrap_or((&pending, ""));
        out.push((keyword.to_ascii_uppercase(), rest.trim().to_string()));
        pending.clear();
    }
    out
}

/// Package names and the binaries each builds, from the workspace's Cargo.toml files
/// (a `[[bin]] name`, or the package name for the default binary at src/main.rs).
fn workspace_binaries(root: &Path) -> Result<Vec<(String, BTreeSet<String>)>> {
    let mut manifests = vec![root.join("Cargo.toml")];
    for entry in std::fs::read_dir(root.join("crates"))? {
        let manifest = entry?.path().join("Cargo.toml");
        if manifest.exists() {
            manifests.push(manifest);
        }
    }
    let mut packages = Vec::new();
    for manifest in manifests {
        let text = std::fs::read_to_string(&manifest)
            .with_context(|| format!("read {}", manifest.display()))?;
        let mut section = String::new();
        let mut package = None;
        let mut bins = BTreeSet::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line.to_string();
                continue;
            }
            let Some(value) = line
                .strip_prefix("name")
                .map(str::trim_start)
                .and_then(|rest| rest.strip_prefix('='))
            else {
                continue;
            };
            let value = value.trim().trim_matches('"').to_string();
            match section.as_str() {
                "[package]" => package = Some(value),
                "[[bin]]" => {
                    bins.insert(value);
                }
                _ => {}
            }
        }
        let Some(package) = package else { continue };
        let dir = manifest.parent().context("manifest has a parent")?;
        if bins.is_empty() && dir.join("src/main.rs").exists() {
            bins.insert(package.clone());
        }
        packages.push((package, bins));
    }
    Ok(packages)
}

/// Whether the workspace's Cargo.toml has a `[profile.<profile>]` that inherits `release`.
fn profile_inherits_release(root: &Path, profile: &str) -> Result<bool> {
    let text = std::fs::read_to_string(root.join("Cargo.toml")).context("read Cargo.toml")?;
    let header = format!("[profile.{profile}]");
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == header;
        } else if inside && line.replace(' ', "") == "inherits=\"release\"" {
            return Ok(true);
        }
    }
    Ok(false)
}

fn check_dockerfile(path: &Path, expected_ports: &[i32]) -> Result<()> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("read {name}"))?;
    let steps = instructions(&text);
    let root = workspace_root();
    let packages = workspace_binaries(&root)?;

    let froms: Vec<usize> = steps
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| k == "FROM")
        .map(|(i, _)| i)
        .collect();
    ensure!(
        froms.len() >= 2,
        "{name}: expected a multi-stage build (builder + runtime), found {} FROM",
        froms.len()
    );
    let runtime_start = *froms.last().context("at least one FROM")?;
    let runtime = &steps[runtime_start..];
    let builder = &steps[..runtime_start];

    // Bases: build arguments declared before the first FROM (so `cargo xtask images
    // --dockerfile` can substitute local stand-ins), defaulting to the public images (so a
    // plain `docker build` needs no arguments).
    let global_args: Vec<(&str, &str)> = steps[..froms[0]]
        .iter()
        .filter(|(k, _)| k == "ARG")
        .filter_map(|(_, args)| args.split_once('='))
        .collect();
    let base = |from: usize| -> Result<String> {
        let image = steps[from].1.split_whitespace().next().unwrap_or_default();
        let Some(arg) = image
            .strip_prefix("${")
            .and_then(|rest| rest.strip_suffix('}'))
        else {
            return Ok(image.to_string());
        };
        global_args
            .iter()
            .find(|(name, _)| *name == arg)
            .map(|(_, default)| default.trim_matches('"').to_string())
            .filter(|default| !default.is_empty())
            .with_context(|| {
                format!(
                    "{name}: FROM {image} without an `ARG {arg}=<default>` before the first FROM"
                )
            })
    };
    let builder_base = base(froms[0])?;
    ensure!(
        steps[froms[0]].1.starts_with("${") && builder_base.starts_with("rust:"),
        "{name}: the builder's base must be a build argument defaulting to a rust: image, is {}",
        steps[froms[0]].1
    );
    let runtime_base = base(runtime_start)?;
    ensure!(
        steps[runtime_start].1.starts_with("${")
            && runtime_base.starts_with("gcr.io/distroless/cc-")
            && runtime_base.ends_with(":nonroot"),
        "{name}: the runtime base must be a build argument defaulting to distroless cc :nonroot, is {}",
        steps[runtime_start].1
    );

    // Builder: `cargo build --release -p <pkg> --locked` of a workspace package.
    let build = builder
        .iter()
        .filter(|(k, _)| k == "RUN")
        .find_map(|(_, args)| {
            let words: Vec<&str> = args.split_whitespace().collect();
            let at = words.windows(2).position(|w| w == ["cargo", "build"])?;
            Some(
                words[at..]
                    .iter()
                    .map(|w| w.to_string())
                    .collect::<Vec<_>>(),
            )
        })
        .with_context(|| format!("{name}: no `cargo build` in the builder stage"))?;
    ensure!(
        build.iter().any(|w| w == "--locked"),
        "{name}: cargo build without --locked"
    );
    // `--release`, or `--profile <p>` of a profile the workspace defines on top of release
    // (the node's `node` profile): the binary is then in target/<p>
    let profile = match build.windows(2).find(|w| w[0] == "--profile") {
        Some(words) => {
            let profile = words[1].clone();
            ensure!(
                profile_inherits_release(&root, &profile)?,
                "{name}: cargo build --profile {profile}, which Cargo.toml does not define \
                 with inherits = \"release\""
            );
            profile
        }
        None => {
            ensure!(
                build.iter().any(|w| w == "--release"),
                "{name}: cargo build without --release or --profile"
            );
            "release".to_string()
        }
    };
    let package = build
        .windows(2)
        .find(|w| w[0] == "-p" || w[0] == "--package")
        .map(|w| w[1].clone())
        .with_context(|| format!("{name}: cargo build without -p <package>"))?;
    let bins = packages
        .iter()
        .find(|(p, _)| *p == package)
        .map(|(_, bins)| bins.clone())
        .with_context(|| format!("{name}: package {package} is not in the workspace"))?;
    ensure!(
        builder.iter().any(|(_, args)| bins
            .iter()
            .any(|b| args.contains(&format!("target/{profile}/{b}")))),
        "{name}: the builder never takes a binary of {package} ({bins:?}) from target/{profile}"
    );

    // Runtime: copies that binary, runs it, as 65532, exposing the documented ports.
    let entrypoint = runtime
        .iter()
        .rfind(|(k, _)| k == "ENTRYPOINT")
        .map(|(_, args)| args.clone())
        .with_context(|| format!("{name}: no ENTRYPOINT in the runtime stage"))?;
    let entry_binary: Vec<String> = serde_json::from_str(&entrypoint)
        .with_context(|| format!("{name}: ENTRYPOINT must be the exec (JSON) form"))?;
    let program = entry_binary
        .first()
        .with_context(|| format!("{name}: empty ENTRYPOINT"))?;
    let program_name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    ensure!(
        bins.contains(&program_name),
        "{name}: ENTRYPOINT runs {program}, not a binary of {package} ({bins:?})"
    );
    ensure!(
        runtime
            .iter()
            .any(|(k, args)| k == "COPY" && args.contains("--from=") && args.ends_with(program)),
        "{name}: the runtime stage does not COPY {program} from the builder"
    );
    let user = runtime
        .iter()
        .rfind(|(k, _)| k == "USER")
        .map(|(_, args)| args.clone())
        .with_context(|| format!("{name}: the runtime stage sets no USER (would run as root)"))?;
    let uid = user.split(':').next().unwrap_or_default();
    ensure!(
        uid == "65532",
        "{name}: runtime USER is {user}, expected 65532 (what the chart and the operator's pods set)"
    );
    let exposed: BTreeSet<i32> = runtime
        .iter()
        .filter(|(k, _)| k == "EXPOSE")
        .flat_map(|(_, args)| {
            args.split_whitespace()
                .filter_map(|p| p.split('/').next()?.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    let expected: BTreeSet<i32> = expected_ports.iter().copied().collect();
    ensure!(
        exposed == expected,
        "{name}: EXPOSE {exposed:?}, expected {expected:?}"
    );
    Ok(())
}

#[test]
fn dockerfiles_build_workspace_binaries_and_run_as_non_root() -> Result<()> {
    let docker = workspace_root().join("docker");
    use meridian_api::ports;
    check_dockerfile(
        &docker.join("node.Dockerfile"),
        &[ports::RESP, ports::REGION_LINK, ports::HTTP, ports::METRICS],
    )?;
    // The operator's /metrics, /healthz and /readyz (its --metrics-addr default).
    check_dockerfile(&docker.join("operator.Dockerfile"), &[8081])?;
    Ok(())
}

#[test]
fn dockerfile_parser_joins_continuations_and_skips_comments() {
    let steps = instructions("# c\nFROM a AS b\nRUN x \\\n    y\nuser 1\n");
    assert_eq!(
        steps,
        vec![
            ("FROM".to_string(), "a AS b".to_string()),
            ("RUN".to_string(), "x  y".to_string()),
            ("USER".to_string(), "1".to_string()),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Helm chart
// ---------------------------------------------------------------------------------------

/// `$HELM`, or `None` after saying why the caller skips.
fn helm_or_skip(test: &str) -> Option<PathBuf> {
    match std::env::var_os("HELM") {
        Some(path) => Some(PathBuf::from(path)),
        None => {
            eprintln!(
                "SKIP {test}: HELM is not set. `cargo xtask test` exports it (the helm it builds \
                 into ~/.cache/meridian/bin/helm-v3.22.0/helm); by hand: HELM=$(which helm)."
            );
            None
        }
    }
}

/// Runs helm and returns stdout, or fails with stdout and stderr.
fn helm(bin: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(bin)
        .args(args)
        .output()
        .with_context(|| format!("run {} {args:?}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "helm {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn chart_dir() -> String {
    workspace_root()
        .join("charts/meridian")
        .to_string_lossy()
        .into_owned()
}

/// `helm template` of the chart for a cluster of the version we test against.
fn render(bin: &Path, release: &str, namespace: &str, extra: &[&str]) -> Result<String> {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        release,
        chart.as_str(),
        "--namespace",
        namespace,
        "--kube-version",
        "1.35.0",
    ];
    args.extend_from_slice(extra);
    helm(bin, &args)
}

/// `(kind, name)` of every document of a multi-document YAML stream.
fn kinds(yaml: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value = <serde_yaml::Value as serde::Deserialize>::deserialize(document)
            .context("rendered chart is not valid YAML")?;
        if value.is_null() {
            continue;
        }
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        let name = value["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        out.push((kind, name));
    }
    Ok(out)
}

fn has_kind(objects: &[(String, String)], kind: &str) -> bool {
    objects.iter().any(|(k, _)| k == kind)
}

#[test]
fn chart_lints_renders_and_its_schema_refuses_bad_values() -> Result<()> {
    let Some(bin) = helm_or_skip("chart_lints_renders_and_its_schema_refuses_bad_values") else {
        return Ok(());
    };
    let chart = chart_dir();
    helm(&bin, &["lint", "--strict", &chart])?;
    helm(
        &bin,
        &[
            "lint",
            "--strict",
            &chart,
            "--set",
            "replicaCount=1,monitoring.enabled=true,networkPolicy.enabled=true",
        ],
    )?;

    // Defaults: two replicas, so a PodDisruptionBudget; no optional objects.
    let defaults = kinds(&render(&bin, "meridian", "meridian-system", &[])?)?;
    for kind in [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ServiceAccount",
        "ClusterRole",
    ] {
        ensure!(
            has_kind(&defaults, kind),
            "default render lacks a {kind}: {defaults:?}"
        );
    }
    for kind in ["ServiceMonitor", "PodMonitor", "NetworkPolicy"] {
        ensure!(
            !has_kind(&defaults, kind),
            "{kind} rendered although disabled by default"
        );
    }

    // One replica: no budget (it would block drains); the optional objects when enabled.
    let optional = kinds(&render(
        &bin,
        "meridian",
        "meridian-system",
        &[
            "--set",
            "replicaCount=1,monitoring.enabled=true,networkPolicy.enabled=true",
        ],
    )?)?;
    ensure!(
        !has_kind(&optional, "PodDisruptionBudget"),
        "a PodDisruptionBudget was rendered for a single replica"
    );
    for kind in ["ServiceMonitor", "PodMonitor", "NetworkPolicy"] {
        ensure!(
            has_kind(&optional, kind),
            "{kind} missing although enabled: {optional:?}"
        );
    }

    // Watching one namespace: the operator's rules are bound there only.
    let scoped = render(
        &bin,
        "meridian",
        "meridian-system",
        &["--set", "watchNamespace=shop"],
    )?;
    let scoped_kinds = kinds(&scoped)?;
    ensure!(
        !has_kind(&scoped_kinds, "ClusterRoleBinding"),
        "a ClusterRoleBinding was rendered for a single watched namespace"
    );
    ensure!(
        scoped.contains(
            "kind: RoleBinding\nmetadata:\n  name: meridian-operator\n  namespace: \"shop\""
        ),
        "no RoleBinding of the operator's rules in the watched namespace:\n{scoped}"
    );
    ensure!(
        has_kind(&defaults, "ClusterRoleBinding"),
        "watching every namespace needs the ClusterRoleBinding"
    );

    // image.tag defaults to the chart's appVersion.
    let chart_yaml = std::fs::read_to_string(workspace_root().join("charts/meridian/Chart.yaml"))?;
    let app_version = chart_yaml
        .lines()
        .find_map(|l| l.strip_prefix("appVersion:"))
        .map(|v| v.trim().trim_matches('"').to_string())
        .context("Chart.yaml has no appVersion")?;
    let rendered = render(&bin, "meridian", "meridian-system", &[])?;
    ensure!(
        rendered.contains(&format!(
            "image: ghcr.io/meridian-dev/meridian-operator:{app_version}"
        )),
        "operator image does not default to appVersion {app_version}"
    );

    // The schema refuses unknown keys and wrong types with a message naming them.
    for (set, expect) in [
        ("replicaCont=2", "replicaCont"),
        ("image.tga=x", "tga"),
        ("replicaCount=zero", "replicaCount"),
        ("logFormat=xml", "logFormat"),
    ] {
        match render(&bin, "meridian", "meridian-system", &["--set", set]) {
            Ok(_) => bail!("helm template accepted --set {set}"),
            Err(e) => ensure!(
                format!("{e:#}").contains(expect),
                "--set {set} was refused, but the message does not name {expect}: {e:#}"
            ),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Against the cluster
// ---------------------------------------------------------------------------------------

/// Runs kubectl and returns (exit code, stdout, stderr) without judging the exit code.
fn kubectl_status(args: &[&str], stdin: Option<&str>) -> Result<(i32, String, String)> {
    let mut cmd = kubectl();
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run kubectl {args:?} (set KUBECTL to its path)"))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("kubectl stdin")?;
        pipe.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn reapplying_install_yaml_changes_nothing() -> Result<()> {
    let Some(_client) = client_or_skip("reapplying_install_yaml_changes_nothing").await else {
        return Ok(());
    };
    if std::env::var_os("MERIDIAN_E2E_SKIP_INSTALL").is_some() {
        eprintln!(
            "SKIP reapplying_install_yaml_changes_nothing: MERIDIAN_E2E_SKIP_INSTALL is set, so \
             the operator was installed some other way (e.g. helm with other image tags) and \
             manifests/install.yaml is not what runs."
        );
        return Ok(());
    }
    ensure_operator_installed()?;
    let install = workspace_root().join("manifests/install.yaml");
    let install = install.to_string_lossy();
    let manager = format!("--field-manager={INSTALL_FIELD_MANAGER}");
    let server_side = |verb: &str| {
        kubectl_status(
            &[
                verb,
                "--server-side",
                "--force-conflicts",
                &manager,
                "-f",
                &install,
            ],
            None,
        )
    };
    // Applied once as a GitOps tool would (over the helm release when the suite installed
    // with helm: same objects, plus the Namespace's labels), then it must be a fixed point.
    let (code, stdout, stderr) = server_side("apply")?;
    if code != 0 {
        bail!("kubectl apply of install.yaml failed (exit {code}): {stdout}{stderr}");
    }
    // `kubectl diff` exits 0 without differences, 1 with differences, >1 on errors.
    let (code, stdout, stderr) = server_side("diff")?;
    match code {
        0 => Ok(()),
        1 => bail!(
            "re-applying manifests/install.yaml would change live objects; GitOps tools would \
             never settle:\n{stdout}{stderr}"
        ),
        _ => bail!("kubectl diff failed (exit {code}): {stdout}{stderr}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn chart_for_another_release_and_namespace_is_accepted_by_the_api_server() -> Result<()> {
    let test = "chart_for_another_release_and_namespace_is_accepted_by_the_api_server";
    let Some(client) = client_or_skip(test).await else {
        return Ok(());
    };
    let Some(bin) = helm_or_skip(test) else {
        return Ok(());
    };
    let ns = TestNamespace::create(&client, "e2e-chart").await?;
    // Every optional object the cluster can take. The ServiceMonitor needs the Prometheus
    // Operator's CRDs, which a test cluster need not have.
    let monitoring = kubectl_run(&[
        "api-resources",
        "--api-group=monitoring.coreos.com",
        "-o",
        "name",
    ])
    .map(|out| out.contains("servicemonitors"))
    .unwrap_or(false);
    let set = format!(
        "replicaCount=3,networkPolicy.enabled=true,monitoring.enabled={monitoring},\
         image.tag=check,nodeImage.tag=check,watchNamespace={}",
        ns.name
    );
    let rendered = render(&bin, "meridian-check", &ns.name, &["--set", &set])?;
    ensure!(
        has_kind(&kinds(&rendered)?, "NetworkPolicy"),
        "the render lacks the NetworkPolicy"
    );
    // Server-side dry run: admission, schema and conflicts are checked, nothing is stored,
    // so the cluster-wide ClusterRole of the running operator is left alone.
    let (code, stdout, stderr) = kubectl_status(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=meridian-e2e-chart-check",
            "--dry-run=server",
            "-n",
            &ns.name,
            "-f",
            "-",
        ],
        Some(&rendered),
    )?;
    ensure!(
        code == 0,
        "the API server refused the rendered chart: {stdout}{stderr}"
    );
    for (kind, name) in kinds(&rendered)? {
        ensure!(
            stdout.contains(&format!("/{name} serverside-applied")),
            "{kind}/{name} missing from kubectl's answer:\n{stdout}"
        );
    }
    Ok(())
}

fn example_files() -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut dirs = vec![workspace_root().join("examples")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    ensure!(!files.is_empty(), "no examples found");
    Ok(files)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_example_is_accepted_by_the_api_server() -> Result<()> {
    let Some(client) = client_or_skip("every_example_is_accepted_by_the_api_server").await else {
        return Ok(());
    };
    let crds = workspace_root().join("crds");
    kubectl_run(&["apply", "--server-side", "-f", &crds.to_string_lossy()])?;
    for crd in [
        "cacheclusters.cache.meridian.dev",
        "cacheregions.cache.meridian.dev",
    ] {
        kubectl_run(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            &format!("crd/{crd}"),
        ])?;
    }
    let ns = TestNamespace::create(&client, "e2e-examples").await?;
    let mut refused = Vec::new();
    let files = example_files()?;
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        let objects = kinds(&text)?;
        ensure!(!objects.is_empty(), "{} holds no objects", file.display());
        let path = file.to_string_lossy();
        let (code, stdout, stderr) = kubectl_status(
            &["apply", "--dry-run=server", "-n", &ns.name, "-f", &path],
            None,
        )?;
        if code != 0 {
            refused.push(format!("{path}: {stdout}{stderr}"));
            continue;
        }
        for (kind, name) in objects {
            if !stdout.contains(&format!("/{name} ")) {
                refused.push(format!(
                    "{path}: {kind}/{name} not in kubectl's answer: {stdout}"
                ));
            }
        }
    }
    ensure!(
        refused.is_empty(),
        "examples refused by the API server:\n{}",
        refused.join("\n")
    );
    eprintln!("{} example files accepted", files.len());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Monitoring
// ---------------------------------------------------------------------------------------

/// Every `meridian_…` identifier in a text (letters, digits and `_`).
fn metric_identifiers(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("meridian_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // Skip identifiers that merely contain the prefix (e.g. `x_meridian_y`).
        let preceded = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !preceded {
            out.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

/// Quoted string literals of a Rust source file (no escapes needed for metric names).
fn string_literals(source: &str) -> Vec<String> {
    source
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn grafana_dashboard_uses_only_exported_metrics() -> Result<()> {
    let root = workspace_root();
    let mut exported = BTreeSet::new();
    // Operator: names registered under the `meridian_operator` prefix.
    let operator = std::fs::read_to_string(root.join("src/metrics.rs"))?;
    for literal in string_literals(&operator) {
        if !literal.is_empty() && literal.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            exported.insert(format!("meridian_operator_{literal}"));
        }
    }
    // Node: full names written by its collector.
    let node = std::fs::read_to_string(root.join("crates/meridian-node/src/metrics.rs"))?;
    exported.extend(
        string_literals(&node)
            .into_iter()
            .filter(|l| l.starts_with("meridian_")),
    );

    let dashboard_path = root.join("docs/monitoring/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard_path)?)
            .context("the dashboard is not valid JSON")?;
    let mut exprs = Vec::new();
    let mut stack = vec![&dashboard];
    while let Some(value) = stack.pop() {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(expr)) = map.get("expr") {
                    exprs.push(expr.clone());
                }
                stack.extend(map.values());
            }
            serde_json::Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    ensure!(!exprs.is_empty(), "the dashboard has no queries");
    let mut unknown = BTreeSet::new();
    let mut used = BTreeSet::new();
    for name in exprs.iter().flat_map(|e| metric_identifiers(e)) {
        // Counters gain `_total`; histograms are queried through `_bucket` / `_sum` / `_count`.
        let base = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|b| exported.contains(*b)))
            .unwrap_or(&name)
            .to_string();
        if exported.contains(&base) {
            used.insert(base);
        } else {
            unknown.insert(name);
        }
    }
    ensure!(
        unknown.is_empty(),
        "{} queries metrics nobody exports: {unknown:?} (exported: {exported:?})",
        dashboard_path.display()
    );
    for must in [
        "meridian_operator_reconciles",
        "meridian_operator_reconcile_errors",
        "meridian_keyspace_hits",
        "meridian_memory_used_bytes",
    ] {
        ensure!(used.contains(must), "the dashboard does not show {must}");
    }
    Ok(())
}
