//! Builds the pinned upstream binaries (Kubernetes, etcd, helm) from their Go modules into
//! the cache. Every build is skipped when the binaries exist and a stamp file records the
//! exact version and recipe, so the 15-25 minute first build happens once per machine.

use crate::util;
use anyhow::{Context, Result, bail};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Kubernetes release the control plane runs (k8s.io/kubernetes module version).
pub const KUBERNETES_VERSION: &str = "v1.35.4";
/// etcd version that Kubernetes v1.35 declares in build/dependencies.yaml.
pub const ETCD_VERSION: &str = "v3.6.6";
/// Helm v3 release used by the chart tests.
pub const HELM_VERSION: &str = "v3.22.0";

/// The Kubernetes commands built from k8s.io/kubernetes.
pub const KUBE_COMMANDS: [&str; 4] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
];

/// Node components built from the same module and recipe as the control plane.
pub const KUBE_NODE_COMMANDS: [&str; 2] = ["kubelet", "kube-proxy"];
/// A containerd release the containerd project supports for Kubernetes 1.35 (RELEASES.md).
pub const CONTAINERD_VERSION: &str = "v2.2.9";
/// The runc that containerd v2.2.9 pins in script/setup/runc-version.
pub const RUNC_VERSION: &str = "v1.3.6";
pub const COREDNS_VERSION: &str = "v1.14.7";
/// The NetworkPolicy agent of the local cluster: kube-router's firewall alone (iptables and
/// ipsets). kube-network-policies, SIG Network's agent, needs the kernel's nft_queue, which
/// these machines' kernels lack; v2.1.0 is the only kube-router the Go module proxy serves.
pub const KUBE_ROUTER_VERSION: &str = "v2.1.0";

/// Bumped whenever the build recipe changes, so stale caches are rebuilt.
const RECIPE: &str = "recipe-1";
const STAMP: &str = ".meridian-stamp";

/// Directory holding kube-apiserver, kube-controller-manager, kube-scheduler and kubectl.
pub fn kube_bin_dir() -> PathBuf {
    util::cache_dir().join("bin").join(KUBERNETES_VERSION)
}

pub fn etcd_path() -> PathBuf {
    util::cache_dir()
        .join("bin")
        .join(format!("etcd-{ETCD_VERSION}"))
        .join("etcd")
}

pub fn kube_node_bin_dir() -> PathBuf {
    util::cache_dir()
        .join("bin")
        .join(format!("{KUBERNETES_VERSION}-node"))
}

fn helm_bin_dir() -> PathBuf {
    util::cache_dir()
        .join("bin")
        .join(format!("helm-{HELM_VERSION}"))
}

/// Builds whatever is missing or stale.
pub fn ensure_all() -> Result<()> {
    ensure_kubernetes()?;
    ensure_etcd()
}

fn stamp_matches(dir: &Path, expected: &str, files: &[&str]) -> bool {
    files.iter().all(|f| dir.join(f).is_file())
        && fs::read_to_string(dir.join(STAMP)).is_ok_and(|s| s.trim() == expected)
}

fn write_stamp(dir: &Path, content: &str) -> Result<()> {
    fs::write(dir.join(STAMP), format!("{content}\n"))
        .with_context(|| format!("cannot write stamp in {}", dir.display()))
}

fn ensure_kubernetes() -> Result<()> {
    build_kube_commands(&kube_bin_dir(), &KUBE_COMMANDS, "~15-25 minutes on 2 cores")
}

/// Builds kubelet and kube-proxy (with the control plane's recipe, in its scratch module)
/// and returns their directory.
pub fn ensure_kube_node() -> Result<PathBuf> {
    let dir = kube_node_bin_dir();
    build_kube_commands(&dir, &KUBE_NODE_COMMANDS, "a few minutes")?;
    Ok(dir)
}

/// The kubernetes module's source (for build/pause/linux/pause.c).
pub fn kube_module_dir() -> Result<PathBuf> {
    let go = go_binary()?;
    Ok(download_module(&go, "k8s.io/kubernetes", KUBERNETES_VERSION)?.dir)
}

fn build_kube_commands(out: &Path, commands: &[&str], how_long: &str) -> Result<()> {
    let stamp = format!("kubernetes {KUBERNETES_VERSION} {RECIPE}");
    if stamp_matches(out, &stamp, commands) {
        return Ok(());
    }
    eprintln!(
        "building {} {KUBERNETES_VERSION} from source into {} (first time only; {how_long})",
        commands.join(", "),
        out.display()
    );
    let started = Instant::now();
    let go = go_binary()?;
    let scratch = kube_scratch_module(&go)?;
    fs::create_dir_all(out)?;

    let mut cmd = go_command(&go);
    cmd.current_dir(&scratch)
        .args(["build", "-mod=mod", "-trimpath"])
        .arg(format!("-ldflags={}", kube_ldflags()))
        .arg("-o")
        .arg(format!("{}/", out.display()));
    cmd.args(
        commands
            .iter()
            .map(|c| format!("k8s.io/kubernetes/cmd/{c}")),
    );
    util::run(&mut cmd).context("building Kubernetes failed")?;

    let first = commands.first().context("no command to build")?;
    let version = util::output(Command::new(out.join(first)).arg("--version"))?;
    if !version.contains(KUBERNETES_VERSION) {
        bail!("built {first} reports {version:?}, expected {KUBERNETES_VERSION}");
    }
    write_stamp(out, &stamp)?;
    eprintln!(
        "built {} in {:.1} minutes",
        commands.join(", "),
        started.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}

/// A module that requires k8s.io/kubernetes and points its staging modules at their
/// released versions (what the repository's own replace directives do in-tree).
fn kube_scratch_module(go: &Path) -> Result<PathBuf> {
    let module = download_module(go, "k8s.io/kubernetes", KUBERNETES_VERSION)?;
    check_etcd_pin(&module.dir)?;

    let staging_version = staging_version(KUBERNETES_VERSION)?;
    let upstream_go_mod = fs::read_to_string(&module.go_mod)
        .with_context(|| format!("cannot read {}", module.go_mod.display()))?;
    let staging = staging_modules(&upstream_go_mod);
    if staging.is_empty() {
        bail!(
            "found no k8s.io/* requirements at v0.0.0 in {}; the build recipe needs updating",
            module.go_mod.display()
        );
    }
    let mut go_mod = format!(
        "module meridian.dev/k8s-build\n\ngo 1.25.0\n\nrequire k8s.io/kubernetes {KUBERNETES_VERSION}\n\n"
    );
    for m in &staging {
        go_mod.push_str(&format!("replace {m} => {m} {staging_version}\n"));
    }
    let scratch = util::cache_dir().join("k8s-build").join(KUBERNETES_VERSION);
    fs::create_dir_all(&scratch)?;
    // `go build -mod=mod` adds the resolved requirements; keep them when nothing changed.
    let go_mod_path = scratch.join("go.mod");
    let current = fs::read_to_string(&go_mod_path).unwrap_or_default();
    if !current.starts_with(&go_mod) {
        fs::write(&go_mod_path, go_mod)?;
    }
    Ok(scratch)
}

/// Builds `packages` of `module@version` in a scratch module into `out` (skipped when the
/// stamp says they are there). `cgo` builds need a C toolchain and the named dev headers.
struct GoBuild<'a> {
    name: &'a str,
    module: &'a str,
    version: &'a str,
    packages: &'a [&'a str],
    tags: &'a str,
    ldflags: String,
    cgo: bool,
}

impl GoBuild<'_> {
    fn ensure(&self, out: &Path) -> Result<()> {
        let files: Vec<&str> = self
            .packages
            .iter()
            .map(|p| p.rsplit('/').next().unwrap_or(p))
            .collect();
        let stamp = format!(
            "{} {} {RECIPE} tags={} ldflags={}",
            self.module, self.version, self.tags, self.ldflags
        );
        if stamp_matches(out, &stamp, &files) {
            return Ok(());
        }
        eprintln!(
            "building {} {} from its Go module into {} (first time only; a few minutes)",
            self.name,
            self.version,
            out.display()
        );
        let started = Instant::now();
        let go = go_binary()?;
        let scratch = util::cache_dir()
            .join(format!("{}-build", self.name))
            .join(self.version);
        fs::create_dir_all(&scratch)?;
        fs::create_dir_all(out)?;
        fs::write(
            scratch.join("go.mod"),
            format!(
                "module meridian.dev/{}-build\n\ngo 1.25.0\n\nrequire {} {}\n",
                self.name, self.module, self.version
            ),
        )?;
        let mut cmd = go_command(&go);
        cmd.current_dir(&scratch)
            .env("CGO_ENABLED", if self.cgo { "1" } else { "0" })
            .args(["build", "-mod=mod", "-trimpath"])
            .arg(format!("-tags={}", self.tags))
            .arg(format!("-ldflags={}", self.ldflags))
            .arg("-o")
            .arg(format!("{}/", out.display()))
            .args(self.packages);
        util::run(&mut cmd).with_context(|| format!("building {} failed", self.name))?;
        write_stamp(out, &stamp)?;
        eprintln!(
            "built {} in {:.1} minutes",
            self.name,
            started.elapsed().as_secs_f64() / 60.0
        );
        Ok(())
    }
}

pub fn containerd_dir() -> PathBuf {
    util::cache_dir()
        .join("bin")
        .join(format!("containerd-{CONTAINERD_VERSION}"))
}

pub fn runc_dir() -> PathBuf {
    util::cache_dir()
        .join("bin")
        .join(format!("runc-{RUNC_VERSION}"))
}

/// containerd, its runc shim and ctr; returns their directory.
pub fn ensure_containerd() -> Result<PathBuf> {
    let out = containerd_dir();
    GoBuild {
        name: "containerd",
        module: "github.com/containerd/containerd/v2",
        version: CONTAINERD_VERSION,
        packages: &[
            "github.com/containerd/containerd/v2/cmd/containerd",
            "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
            "github.com/containerd/containerd/v2/cmd/ctr",
        ],
        // What containerd's Makefile sets, less btrfs (no headers needed, no btrfs here).
        tags: "urfave_cli_no_docs,no_btrfs",
        ldflags: format!(
            "-s -w -X github.com/containerd/containerd/v2/version.Version={CONTAINERD_VERSION}"
        ),
        cgo: false,
    }
    .ensure(&out)?;
    Ok(out)
}

/// runc (cgo, with seccomp); returns the binary.
pub fn ensure_runc() -> Result<PathBuf> {
    util::ensure_apt(&[("gcc", "gcc"), ("pkg-config", "pkg-config")])?;
    util::ensure_apt_files(&[("/usr/include/seccomp.h", "libseccomp-dev")])?;
    let out = runc_dir();
    GoBuild {
        name: "runc",
        module: "github.com/opencontainers/runc",
        version: RUNC_VERSION,
        packages: &["github.com/opencontainers/runc"],
        tags: "seccomp,urfave_cli_no_docs",
        ldflags: format!(
            "-s -w -X main.version={}",
            RUNC_VERSION.trim_start_matches('v')
        ),
        cgo: true,
    }
    .ensure(&out)?;
    Ok(out.join("runc"))
}

/// CoreDNS for cluster DNS; returns the binary.
pub fn ensure_coredns() -> Result<PathBuf> {
    let out = util::cache_dir()
        .join("bin")
        .join(format!("coredns-{COREDNS_VERSION}"));
    GoBuild {
        name: "coredns",
        module: "github.com/coredns/coredns",
        version: COREDNS_VERSION,
        packages: &["github.com/coredns/coredns"],
        tags: "",
        ldflags: "-s -w".into(),
        cgo: false,
    }
    .ensure(&out)?;
    Ok(out.join("coredns"))
}

pub fn kube_router_dir() -> PathBuf {
    util::cache_dir()
        .join("bin")
        .join(format!("kube-router-{KUBE_ROUTER_VERSION}"))
}

/// kube-router, the NetworkPolicy agent every node runs; returns the binary.
pub fn ensure_kube_router() -> Result<PathBuf> {
    let out = kube_router_dir();
    GoBuild {
        name: "kube-router",
        module: "github.com/cloudnativelabs/kube-router/v2",
        version: KUBE_ROUTER_VERSION,
        packages: &["github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"],
        tags: "",
        ldflags: "-s -w".into(),
        cgo: false,
    }
    .ensure(&out)?;
    Ok(out.join("kube-router"))
}

fn ensure_etcd() -> Result<()> {
    let bin = etcd_path();
    let out = bin.parent().map(Path::to_path_buf).unwrap_or_default();
    let stamp = format!("etcd {ETCD_VERSION} {RECIPE}");
    if stamp_matches(&out, &stamp, &["etcd"]) {
        return Ok(());
    }
    eprintln!("building etcd {ETCD_VERSION} into {}", out.display());
    let go = go_binary()?;
    let scratch = util::cache_dir().join("etcd-build").join(ETCD_VERSION);
    fs::create_dir_all(&scratch)?;
    fs::create_dir_all(&out)?;
    // The server module's root package is etcd's main package.
    fs::write(
        scratch.join("go.mod"),
        format!(
            "module meridian.dev/etcd-build\n\ngo 1.25.0\n\nrequire go.etcd.io/etcd/server/v3 {ETCD_VERSION}\n"
        ),
    )?;
    util::run(
        go_command(&go)
            .current_dir(&scratch)
            .args(["build", "-mod=mod", "-trimpath", "-ldflags=-s -w", "-o"])
            .arg(&bin)
            .arg("go.etcd.io/etcd/server/v3"),
    )
    .context("building etcd failed")?;
    let version = util::output(Command::new(&bin).arg("--version"))?;
    let plain = ETCD_VERSION.trim_start_matches('v');
    if !version.contains(&format!("etcd Version: {plain}")) {
        bail!("built etcd reports {version:?}, expected {plain}");
    }
    write_stamp(&out, &stamp)
}

/// Builds helm v3 with `go install` into the cache and returns the binary's path.
pub fn go_install_helm() -> Result<PathBuf> {
    let dir = helm_bin_dir();
    let stamp = format!("helm {HELM_VERSION} {RECIPE}");
    if stamp_matches(&dir, &stamp, &["helm"]) {
        return Ok(dir.join("helm"));
    }
    let go = go_binary()?;
    fs::create_dir_all(&dir)?;
    util::run(
        go_command(&go)
            .current_dir(util::cache_dir())
            .env("GOBIN", &dir)
            .args(["install", "-trimpath"])
            .arg(format!(
                "-ldflags=-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}"
            ))
            .arg(format!("helm.sh/helm/v3/cmd/helm@{HELM_VERSION}")),
    )
    .context("building helm failed")?;
    write_stamp(&dir, &stamp)?;
    Ok(dir.join("helm"))
}

/// Version variables the upstream release build sets (hack/lib/version.sh); without them the
/// binaries report v0.0.0-master, which breaks clients that check the server version
/// (helm's `kubeVersion` constraints, kubectl's skew warning).
fn kube_ldflags() -> String {
    let trimmed = KUBERNETES_VERSION.trim_start_matches('v');
    let mut parts = trimmed.split('.');
    let major = parts.next().unwrap_or("1");
    let minor = parts.next().unwrap_or("0");
    let mut flags = String::from("-s -w");
    for pkg in [
        "k8s.io/client-go/pkg/version",
        "k8s.io/component-base/version",
    ] {
        for (key, value) in [
            ("gitVersion", KUBERNETES_VERSION),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
        ] {
            flags.push_str(&format!(" -X {pkg}.{key}={value}"));
        }
    }
    flags
}

/// v1.35.4 → v0.35.4: the staging modules are tagged with major version 0.
fn staging_version(kube: &str) -> Result<String> {
    match kube.strip_prefix("v1.") {
        Some(rest) => Ok(format!("v0.{rest}")),
        None => bail!("unexpected Kubernetes version {kube}"),
    }
}

/// Modules `k8s.io/*` that k8s.io/kubernetes requires at the placeholder version v0.0.0
/// (the staging repositories, resolved by `replace` directives inside the kubernetes repo).
fn staging_modules(go_mod: &str) -> Vec<String> {
    let mut modules = Vec::new();
    for line in go_mod.lines() {
        let line = line.split("//").next().unwrap_or("").trim();
        let line = line.strip_prefix("require").map(str::trim).unwrap_or(line);
        let mut fields = line.split_whitespace();
        if let (Some(path), Some("v0.0.0"), None) = (fields.next(), fields.next(), fields.next())
            && path.starts_with("k8s.io/")
            && !modules.iter().any(|m| m == path)
        {
            modules.push(path.to_string());
        }
    }
    modules
}

/// Fails when the pinned etcd differs from what this Kubernetes release was tested with.
fn check_etcd_pin(kube_source: &Path) -> Result<()> {
    let deps = kube_source.join("build").join("dependencies.yaml");
    let Ok(text) = fs::read_to_string(&deps) else {
        eprintln!(
            "warning: {} not found; cannot check the etcd pin",
            deps.display()
        );
        return Ok(());
    };
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "- name: \"etcd\"" {
            let wanted = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version:"))
                .map(|v| v.trim().trim_matches('"').to_string());
            if let Some(wanted) = wanted
                && wanted != ETCD_VERSION.trim_start_matches('v')
            {
                bail!(
                    "Kubernetes {KUBERNETES_VERSION} expects etcd {wanted} but ETCD_VERSION is {ETCD_VERSION}; update the pin in {}",
                    file!()
                );
            }
            return Ok(());
        }
    }
    Ok(())
}

struct DownloadedModule {
    go_mod: PathBuf,
    dir: PathBuf,
}

fn download_module(go: &Path, path: &str, version: &str) -> Result<DownloadedModule> {
    let json = util::output(
        go_command(go)
            .current_dir(std::env::temp_dir())
            .args(["mod", "download", "-json"])
            .arg(format!("{path}@{version}")),
    )?;
    let info: serde_json::Value =
        serde_json::from_str(&json).context("cannot parse `go mod download -json` output")?;
    let field = |name: &str| -> Result<PathBuf> {
        info.get(name)
            .and_then(|v| v.as_str())
            .map(PathBuf::from)
            .with_context(|| {
                format!("`go mod download -json {path}@{version}` has no {name}: {json}")
            })
    };
    Ok(DownloadedModule {
        go_mod: field("GoMod")?,
        dir: field("Dir")?,
    })
}

/// Locates `go`, installing Debian's when none exists; Debian's may be older than the
/// modules need, which `GOTOOLCHAIN=auto` fixes by fetching the right toolchain.
fn go_binary() -> Result<PathBuf> {
    let preinstalled = PathBuf::from("/usr/local/go/bin/go");
    if preinstalled.is_file() {
        return Ok(preinstalled);
    }
    if !util::have("go") {
        util::ensure_apt(&[("go", "golang-go")])?;
    }
    Ok(PathBuf::from("go"))
}

fn go_command(go: &Path) -> Command {
    let mut cmd = Command::new(go);
    let mut path = OsString::from("/usr/local/go/bin");
    if let Some(existing) = std::env::var_os("PATH") {
        path.push(":");
        path.push(existing);
    }
    cmd.env("PATH", path)
        .env("GO111MODULE", "on")
        .env("GOTOOLCHAIN", "auto")
        // The scratch modules live outside any VCS checkout.
        .env("GOFLAGS", "-buildvcs=false");
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_modules_are_the_v0_0_0_k8s_requirements() {
        let go_mod = "module k8s.io/kubernetes\n\nrequire (\n\tk8s.io/api v0.0.0\n\tk8s.io/kube-openapi v0.0.0-20250910181357-589584f1c912\n\tsigs.k8s.io/json v0.0.0-2025\n\tk8s.io/client-go v0.0.0 // indirect\n)\nrequire k8s.io/kms v0.0.0\nreplace k8s.io/api => ./staging/src/k8s.io/api\n";
        assert_eq!(
            staging_modules(go_mod),
            ["k8s.io/api", "k8s.io/client-go", "k8s.io/kms"]
        );
    }

    #[test]
    fn staging_version_maps_major_one_to_zero() {
        assert_eq!(staging_version("v1.35.4").unwrap_or_default(), "v0.35.4");
        assert!(staging_version("v2.0.0").is_err());
    }

    #[test]
    fn ldflags_set_version_for_both_version_packages() {
        let flags = kube_ldflags();
        assert!(flags.contains("-X k8s.io/component-base/version.gitVersion=v1.35.4"));
        assert!(flags.contains("-X k8s.io/client-go/pkg/version.gitMinor=35"));
    }
}
