//! Small helpers shared by every xtask command: locating the workspace and the cache,
//! running commands loudly, and installing Debian packages on demand.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Root of the cargo workspace (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Cache for expensive, version-pinned artefacts (built Kubernetes binaries, helm, etcd).
/// Lives outside the work tree so a fresh clone on the same machine reuses it.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MERIDIAN_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("meridian")
}

/// Runs a command, echoing it first, and fails with its exit status.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {}", display(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", display(cmd)))?;
    if !status.success() {
        bail!("{} failed with {status}", display(cmd));
    }
    Ok(())
}

/// Runs a command and returns its standard output as text.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {}", display(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed with {}: {}",
            display(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes `contents` to `path`, creating its directory.
pub fn write_file(path: &Path, contents: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}

/// Runs a command without echoing it; fails with its exit status and standard error.
pub fn run_quiet(cmd: &mut Command) -> Result<()> {
    output(cmd).map(drop)
}

pub fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// True when `name` resolves on PATH.
pub fn have(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(name).is_file()))
        .unwrap_or(false)
}

/// Installs Debian packages whose marker binary is missing. `wanted` pairs a binary with its package.
pub fn ensure_apt(wanted: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(bin, _)| !have(bin))
        .map(|(_, pkg)| *pkg)
        .collect();
    apt_install(&missing)
}

/// Installs Debian packages whose marker file (a header, a library) is missing.
pub fn ensure_apt_files(wanted: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(file, _)| !Path::new(file).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
    apt_install(&missing)
}

fn apt_install(packages: &[&str]) -> Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    let sudo = !nix::unistd::geteuid().is_root();
    let apt = |args: &[&str]| -> Result<()> {
        let mut cmd = if sudo {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        } else {
            Command::new("apt-get")
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut cmd)
    };
    apt(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(packages.iter().copied());
    apt(&args)
}

/// Cargo's target directory for this workspace (honours CARGO_TARGET_DIR).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                workspace_root().join(p)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Builds the debug binaries that the operator's process tests start (`tests/common`).
pub fn build_binaries() -> Result<()> {
    run(Command::new("cargo").current_dir(workspace_root()).args([
        "build",
        "-p",
        "meridian-node",
        "-p",
        "meridian-operator",
    ]))
}

/// The two binaries the Meridian images hold, as [`build_release_binaries`] built them.
pub struct ReleaseBinaries {
    /// `meridian-node`, built with the workspace's `node` profile (fat LTO).
    pub node: PathBuf,
    /// `meridian-operator`, built with the release profile.
    pub operator: PathBuf,
}

/// Builds the two binaries the Meridian images hold; the benchmarks and the demo use the
/// same builds: the node with the `node` profile (Cargo.toml says why), the operator with
/// `--release`.
pub fn build_release_binaries() -> Result<ReleaseBinaries> {
    let cargo = |profile: &str, package: &str| {
        run(Command::new("cargo").current_dir(workspace_root()).args([
            "build",
            "--profile",
            profile,
            "--locked",
            "-p",
            package,
        ]))
        .with_context(|| format!("building {package} ({profile} profile) failed"))
    };
    cargo("node", "meridian-node")?;
    cargo("release", "meridian-operator")?;
    Ok(ReleaseBinaries {
        node: target_dir().join("node").join("meridian-node"),
        operator: target_dir().join("release").join("meridian-operator"),
    })
}

/// System tools the tests and the demo use, installed from Debian when missing.
/// `faketime` brings libfaketime, which the node's clock-skew region tests
/// preload to run a node with a skewed wall clock.
pub fn ensure_tools() -> Result<()> {
    ensure_apt(&[
        ("redis-cli", "redis-tools"),
        ("redis-server", "redis-server"),
        ("curl", "curl"),
        ("faketime", "faketime"),
    ])
}

/// On failure, shows the end of every control-plane and pod log so CI output explains itself.
pub fn print_cluster_logs_tail() {
    let state = crate::cluster::kubeconfig_path()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut logs = Vec::new();
    collect_logs(&state, &mut logs, 0);
    for log in logs {
        let Ok(text) = std::fs::read_to_string(&log) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        eprintln!("\n---- {} (last {} lines) ----", log.display(), tail.len());
        for l in tail {
            eprintln!("{l}");
        }
    }
}

fn collect_logs(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if depth > 5 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_logs(&p, out, depth + 1);
        } else if p.extension().is_some_and(|x| x == "log") {
            out.push(p);
        }
    }
}
