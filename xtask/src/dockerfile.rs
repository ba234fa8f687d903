//! `cargo xtask images --dockerfile`: builds `docker/node.Dockerfile` and
//! `docker/operator.Dockerfile` for real, with buildah, without a Docker engine or a registry.
//!
//! The Dockerfiles take their bases as build arguments (`RUST_IMAGE`, `RUNTIME_IMAGE`, whose
//! defaults are the public images). Here they get local stand-ins, committed into a buildah
//! storage of our own (`~/.cache/meridian/buildah`, vfs driver):
//! - `localhost/meridian-rust-builder:<rustc version>`: Debian bookworm (mmdebstrap minbase
//!   plus gcc, libc6-dev, ca-certificates) with this machine's Rust toolchain as plain
//!   directories in `/usr/local/rust` and `CARGO_HOME=/usr/local/cargo`, as in the `rust:`
//!   images. Made once per Rust version.
//! - `localhost/meridian-runtime-base:<hash>`: the distroless-equivalent root that
//!   `cargo xtask images` uses ([`images::base_rootfs`]), with distroless `nonroot`'s config.
//!
//! Each Dockerfile is then built unchanged by `buildah bud` (its builder stage runs
//! `cargo build --locked`, the node with `--profile node` and the operator with `--release`,
//! fetching crates from crates.io), pushed to an OCI archive
//! `target/images/<binary>-dockerfile.tar` (what `ctr images import` takes), and checked: the
//! archive's image config (entrypoint, user 65532:65532, exposed ports), no shell or Rust
//! toolchain in it, and the binary's `--version` run as 65532 in the archive's own root.
//!
//! Slow (two release builds inside containers): not part of `cargo xtask test`.

use crate::images;
use crate::util;
use anyhow::{Context, Result, bail, ensure};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Tag of the images built from the Dockerfiles (and the reference name in their archives).
const TAG: &str = "dockerfile";
const RUST_BUILDER: &str = "localhost/meridian-rust-builder";
const RUNTIME_BASE: &str = "localhost/meridian-runtime-base";
/// The build arguments the Dockerfiles declare for their bases.
const RUST_IMAGE_ARG: &str = "RUST_IMAGE";
const RUNTIME_IMAGE_ARG: &str = "RUNTIME_IMAGE";
/// buildah's storage driver: vfs works everywhere (no overlay mounts inside this machine).
const STORAGE_DRIVER: &str = "vfs";
const DEBIAN_SUITE: &str = "bookworm";
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";
/// What the builder stage needs besides minbase: the C compiler and headers the `cc` crate
/// uses (ring, mimalloc), CA certificates for crates.io, zlib for rustc's LLVM.
const BUILDER_PACKAGES: [&str; 4] = ["gcc", "libc6-dev", "ca-certificates", "zlib1g"];
/// Where the builder stand-in holds the toolchain, and cargo's home (as in `rust:` images,
/// which the Dockerfiles' registry cache mount assumes).
const RUST_DIR: &str = "/usr/local/rust";
const CARGO_HOME: &str = "/usr/local/cargo";
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The CA bundle of Debian (host and builder alike).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// One Dockerfile and the binary its image runs.
struct Target {
    binary: &'static str,
    dockerfile: &'static str,
}

const TARGETS: [Target; 2] = [
    Target {
        binary: "meridian-node",
        dockerfile: "docker/node.Dockerfile",
    },
    Target {
        binary: "meridian-operator",
        dockerfile: "docker/operator.Dockerfile",
    },
];

pub fn run() -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "`cargo xtask images --dockerfile` needs root (buildah's storage, mmdebstrap, chroot)"
    );
    let mut steps = Steps::default();
    steps.time("install buildah, runc, mmdebstrap, umoci", || {
        util::ensure_apt(&[
            ("buildah", "buildah"),
            // Only recommended by buildah (crun | runc), which apt here does not install;
            // without it every RUN fails with "exec: no command".
            ("runc", "runc"),
            ("mmdebstrap", "mmdebstrap"),
            ("umoci", "umoci"),
            ("dpkg", "dpkg"),
        ])
    })?;
    let buildah = Buildah::new();
    let root = util::workspace_root();

    // The Dockerfiles must take the bases we substitute, and the builder stand-in must be the
    // Rust version the Dockerfiles name.
    let rustc = RustToolchain::of_this_machine()?;
    for target in &TARGETS {
        let text = fs::read_to_string(root.join(target.dockerfile))
            .with_context(|| format!("cannot read {}", target.dockerfile))?;
        let args = global_args(&text);
        for name in [RUST_IMAGE_ARG, RUNTIME_IMAGE_ARG] {
            ensure!(
                args.iter().any(|(arg, _)| arg == name),
                "{} declares no `ARG {name}` before its first FROM: its base cannot be substituted",
                target.dockerfile
            );
        }
        if let Some((_, Some(default))) = args.iter().find(|(arg, _)| arg == RUST_IMAGE_ARG)
            && !rust_image_matches(default, &rustc.version)
        {
            eprintln!(
                "warning: {} defaults to {default}, the stand-in has this machine's rustc {}",
                target.dockerfile, rustc.version
            );
        }
    }

    let builder = steps.time("builder base (Debian bookworm + Rust toolchain)", || {
        rust_builder(&buildah, &rustc)
    })?;
    let runtime = steps.time("runtime base (distroless-equivalent root)", || {
        runtime_base(&buildah)
    })?;
    let build_args = [
        (RUST_IMAGE_ARG, builder.as_str()),
        (RUNTIME_IMAGE_ARG, runtime.as_str()),
    ];
    // The builder's RUN trusts what this machine trusts: behind a TLS-inspecting egress
    // (a local CA in /usr/local/share/ca-certificates) crates.io is otherwise "self-signed".
    // A bind mount, so nothing of the host ends up in a layer.
    let volumes: Vec<String> = if Path::new(CA_BUNDLE).is_file() {
        vec![format!("{CA_BUNDLE}:{CA_BUNDLE}:ro")]
    } else {
        Vec::new()
    };
    let mut built = Vec::new();
    for target in &TARGETS {
        let image = format!("localhost/{}:{TAG}", target.binary);
        steps.time(&format!("buildah bud {}", target.dockerfile), || {
            let mut cmd = buildah.command();
            cmd.current_dir(&root)
                .args(bud_args(target.dockerfile, &image, &build_args, &volumes));
            util::run(&mut cmd)
                .with_context(|| format!("building {} with buildah failed", target.dockerfile))
        })?;
        let file = format!("{}-{TAG}.tar", target.binary);
        let archive = images::images_dir().join(&file);
        steps.time(&format!("push {file}"), || {
            push_archive(&buildah, &image, &archive)
        })?;
        let version = steps.time(&format!("check {file}"), || {
            check_archive(&archive, target.binary)
        })?;
        built.push((image, archive, version));
    }

    println!("\n{:<70} {:>8}", "step", "duration");
    for (name, took) in &steps.0 {
        println!("{name:<70} {:>8}", minutes(*took));
    }
    println!();
    for (image, archive, version) in &built {
        let size = fs::metadata(archive).map(|m| m.len()).unwrap_or_default();
        println!(
            "{image}: {} ({} MB), runs: {version}",
            archive.display(),
            size / 1_000_000
        );
    }
    println!(
        "\nbases: {builder}, {runtime}\nlist them: buildah {} images",
        buildah.global_args().join(" ")
    );
    Ok(())
}

/// Steps and how long each took.
#[derive(Default)]
struct Steps(Vec<(String, Duration)>);

impl Steps {
    fn time<T>(&mut self, name: &str, step: impl FnOnce() -> Result<T>) -> Result<T> {
        eprintln!("==> {name}");
        let start = Instant::now();
        let result = step().with_context(|| format!("step `{name}` failed"));
        let took = start.elapsed();
        eprintln!(
            "<== {name}: {} ({})",
            minutes(took),
            if result.is_ok() { "done" } else { "failed" }
        );
        self.0.push((name.to_string(), took));
        result
    }
}

fn minutes(d: Duration) -> String {
    let secs = d.as_secs();
    format!("{}m{:02}s", secs / 60, secs % 60)
}

/// buildah with a storage of its own, so neither the host's containers configuration (whose
/// default driver is overlay) nor other users of buildah interfere.
struct Buildah {
    root: PathBuf,
    runroot: PathBuf,
}

impl Buildah {
    fn new() -> Self {
        let dir = util::cache_dir().join("buildah");
        Self {
            root: dir.join("storage"),
            runroot: dir.join("run"),
        }
    }

    fn global_args(&self) -> Vec<String> {
        storage_args(&self.root, &self.runroot)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("buildah");
        cmd.args(self.global_args());
        cmd
    }

    fn run(&self, args: &[&str]) -> Result<()> {
        util::run(self.command().args(args))
    }

    fn output(&self, args: &[&str]) -> Result<String> {
        util::output(self.command().args(args)).map(|out| out.trim().to_string())
    }

    fn has_image(&self, image: &str) -> bool {
        self.output(&["inspect", "--type", "image", image]).is_ok()
    }

    /// Commits `image` from scratch: `fill` writes the root filesystem into the mounted
    /// working container, `config` are `buildah config` flags.
    fn commit_from_scratch(
        &self,
        image: &str,
        config: &[String],
        fill: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        let container = self.output(&["from", "scratch"])?;
        let result = (|| {
            let mount = PathBuf::from(self.output(&["mount", &container])?);
            fill(&mount)?;
            self.run(&["unmount", &container])?;
            let mut args = vec!["config"];
            args.extend(config.iter().map(String::as_str));
            args.push(&container);
            self.run(&args)?;
            self.run(&["commit", "--rm", &container, image])
        })();
        if result.is_err() {
            let _ = self.output(&["rm", &container]);
        }
        result.with_context(|| format!("making the base image {image} failed"))
    }
}

fn storage_args(root: &Path, runroot: &Path) -> Vec<String> {
    vec![
        "--root".into(),
        root.display().to_string(),
        "--runroot".into(),
        runroot.display().to_string(),
        "--storage-driver".into(),
        STORAGE_DRIVER.into(),
    ]
}

/// The Rust toolchain cargo runs this xtask with.
struct RustToolchain {
    /// e.g. `1.95.0`
    version: String,
    /// The toolchain's directory (bin/, lib/).
    sysroot: PathBuf,
}

impl RustToolchain {
    fn of_this_machine() -> Result<Self> {
        let version = rust_version(&util::output(Command::new("rustc").arg("--version"))?)?;
        let sysroot =
            PathBuf::from(util::output(Command::new("rustc").args(["--print", "sysroot"]))?.trim());
        for tool in ["cargo", "rustc"] {
            ensure!(
                sysroot.join("bin").join(tool).is_file(),
                "{} has no bin/{tool}: the builder base needs the toolchain's {tool} component",
                sysroot.display()
            );
        }
        Ok(Self { version, sysroot })
    }
}

/// `1.95.0` from `rustc 1.95.0 (59807616e 2026-04-14)`.
fn rust_version(rustc_version: &str) -> Result<String> {
    rustc_version
        .split_whitespace()
        .nth(1)
        .filter(|v| v.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(str::to_string)
        .with_context(|| format!("cannot read a version from `{}`", rustc_version.trim()))
}

/// Whether a `rust:<version>[-<variant>]` image is that Rust version (`rust:1.95-bookworm`
/// is any 1.95.x).
fn rust_image_matches(image: &str, version: &str) -> bool {
    let Some(tag) = image.rsplit_once(':').map(|(_, tag)| tag) else {
        return false;
    };
    let wanted = tag.split('-').next().unwrap_or_default();
    !wanted.is_empty() && (version == wanted || version.starts_with(&format!("{wanted}.")))
}

/// Build arguments declared before the first `FROM` (the ones a `FROM` may use), with their
/// defaults.
fn global_args(dockerfile: &str) -> Vec<(String, Option<String>)> {
    let mut args = Vec::new();
    for line in dockerfile.lines().map(str::trim) {
        let Some((keyword, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        if keyword.eq_ignore_ascii_case("FROM") {
            break;
        }
        if !keyword.eq_ignore_ascii_case("ARG") {
            continue;
        }
        let rest = rest.trim();
        args.push(match rest.split_once('=') {
            Some((name, default)) => (
                name.to_string(),
                Some(default.trim_matches('"').to_string()),
            ),
            None => (rest.to_string(), None),
        });
    }
    args
}

/// `buildah bud` arguments (after the storage flags) that build `dockerfile` from the
/// workspace root into `image`, with `build_args` substituted, `volumes` bind-mounted into
/// every RUN, and no registry contacted.
fn bud_args(
    dockerfile: &str,
    image: &str,
    build_args: &[(&str, &str)],
    volumes: &[String],
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "bud".into(),
        // cargo fetches crates from crates.io in the builder stage.
        "--network".into(),
        "host".into(),
        // Cache every step: an unchanged context rebuilds nothing.
        "--layers".into(),
        // The bases are local; a missing one is an error, not a pull.
        "--pull=never".into(),
        // A failed step's container is removed too (buildah 1.28 keeps it otherwise: with
        // vfs, a full copy of the builder root per failure).
        "--force-rm".into(),
    ];
    for (name, value) in build_args {
        args.push("--build-arg".into());
        args.push(format!("{name}={value}"));
    }
    for volume in volumes {
        args.push("--volume".into());
        args.push(volume.clone());
    }
    args.extend([
        "-f".into(),
        dockerfile.into(),
        "-t".into(),
        image.into(),
        ".".into(),
    ]);
    args
}

/// Debian bookworm with this machine's Rust toolchain: the stand-in for `rust:<v>-bookworm`.
fn rust_builder(buildah: &Buildah, rust: &RustToolchain) -> Result<String> {
    let image = format!("{RUST_BUILDER}:{}", rust.version);
    if buildah.has_image(&image) {
        eprintln!("{image} exists");
        return Ok(image);
    }
    let config = [
        format!("--env=PATH={CARGO_HOME}/bin:{RUST_DIR}/bin:{SYSTEM_PATH}"),
        format!("--env=CARGO_HOME={CARGO_HOME}"),
        format!("--env=RUST_VERSION={}", rust.version),
        "--workingdir=/".into(),
        "--cmd=/bin/bash".into(),
    ];
    buildah.commit_from_scratch(&image, &config, |root| {
        eprintln!(
            "mmdebstrap of Debian {DEBIAN_SUITE} with {} (a few minutes on first run)",
            BUILDER_PACKAGES.join(", ")
        );
        util::run(
            Command::new("mmdebstrap")
                .arg("--variant=minbase")
                .arg(format!("--include={}", BUILDER_PACKAGES.join(",")))
                .arg(DEBIAN_SUITE)
                .arg(root)
                .arg(DEBIAN_MIRROR),
        )
        .context("mmdebstrap of the builder's Debian root failed")?;
        install_toolchain(&rust.sysroot, &root.join(RUST_DIR.trim_start_matches('/')))?;
        fs::create_dir_all(root.join(CARGO_HOME.trim_start_matches('/')))?;
        Ok(())
    })?;
    Ok(image)
}

/// Copies what `cargo build` needs of a rustup toolchain (cargo, rustc, rustdoc, the
/// compiler's libraries and the standard library; no docs) into `dest`.
fn install_toolchain(sysroot: &Path, dest: &Path) -> Result<()> {
    eprintln!(
        "copying the Rust toolchain {} into the image",
        sysroot.display()
    );
    fs::create_dir_all(dest.join("bin"))?;
    for tool in ["cargo", "rustc", "rustdoc"] {
        let source = sysroot.join("bin").join(tool);
        if source.is_file() {
            util::run(
                Command::new("cp")
                    .arg("-a")
                    .arg(&source)
                    .arg(dest.join("bin")),
            )?;
        }
    }
    util::run(
        Command::new("cp")
            .arg("-a")
            .arg(sysroot.join("lib"))
            .arg(dest),
    )
    .context("copying the Rust toolchain failed")
}

/// The distroless-equivalent root of `cargo xtask images`, with the config of distroless
/// `cc-debian12:nonroot`: the stand-in for `RUNTIME_IMAGE`.
fn runtime_base(buildah: &Buildah) -> Result<String> {
    let root = images::base_rootfs()?;
    let key = root
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(|name| name.strip_prefix("base-"))
        .with_context(|| format!("unexpected base root {}", root.display()))?
        .to_string();
    let image = format!("{RUNTIME_BASE}:{key}");
    if buildah.has_image(&image) {
        eprintln!("{image} exists");
        return Ok(image);
    }
    let nonroot = images::NONROOT;
    let config = [
        format!("--user={nonroot}"),
        "--workingdir=/home/nonroot".into(),
        format!("--env=PATH={SYSTEM_PATH}"),
        "--env=SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt".into(),
    ];
    buildah.commit_from_scratch(&image, &config, |mount| {
        // cp -a keeps owners, modes and the base's absolute symlinks.
        util::run(
            Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", root.display()))
                .arg(mount),
        )?;
        let _ = fs::remove_file(mount.join(".complete"));
        Ok(())
    })?;
    Ok(image)
}

/// `buildah push` to an OCI archive whose reference name is [`TAG`] (as the umoci archives
/// have theirs), for `ctr images import --base-name`.
fn push_archive(buildah: &Buildah, image: &str, archive: &Path) -> Result<()> {
    if let Some(dir) = archive.parent() {
        fs::create_dir_all(dir)?;
    }
    if archive.exists() {
        fs::remove_file(archive)?;
    }
    let destination = format!("oci-archive:{}:{TAG}", archive.display());
    buildah
        .run(&["push", image, &destination])
        .with_context(|| format!("pushing {image} to {} failed", archive.display()))
}

/// Proves the archive is the runtime stage of the Dockerfile: its config, its contents, and
/// the binary running as 65532 in the archive's own root. Returns the `--version` line.
fn check_archive(archive: &Path, binary: &str) -> Result<String> {
    let work = archive.with_extension("check");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    let layout = work.join("layout");
    let bundle = work.join("bundle");
    fs::create_dir_all(&layout)?;
    util::run(
        Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-xf")
            .arg(archive),
    )?;
    let config = layout_config(&layout)?;
    check_config(&config, binary, images::meridian_ports(binary))
        .with_context(|| format!("{}: unexpected image config", archive.display()))?;
    util::run_quiet(
        Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:{TAG}", layout.display()))
            .arg(&bundle),
    )
    .with_context(|| format!("cannot unpack {}", archive.display()))?;
    let rootfs = bundle.join("rootfs");
    for absent in ["bin/sh", "usr/local/rust", "usr/bin/apt-get"] {
        ensure!(
            fs::symlink_metadata(rootfs.join(absent)).is_err(),
            "{}: the image holds /{absent}: its runtime stage is not the distroless base",
            archive.display()
        );
    }
    let nonroot = images::NONROOT;
    let in_image = format!("/usr/local/bin/{binary}");
    let version = util::output(
        Command::new("chroot")
            .arg(format!("--userspec={nonroot}:{nonroot}"))
            .arg(&rootfs)
            .arg(&in_image)
            .arg("--version"),
    )
    .with_context(|| {
        format!(
            "{in_image} --version failed in the root of {} (as {nonroot})",
            archive.display()
        )
    })?;
    let version = version.trim().to_string();
    ensure!(
        version.starts_with(binary),
        "{in_image} --version printed `{version}`"
    );
    eprintln!(
        "{}: entrypoint {in_image}, user {nonroot}:{nonroot}, ports {:?}; `{version}` as {nonroot}",
        archive.display(),
        images::meridian_ports(binary)
    );
    fs::remove_dir_all(&work)?;
    Ok(version)
}

/// The image config of the one image in an OCI layout.
fn layout_config(layout: &Path) -> Result<serde_json::Value> {
    let blob = |digest: &str| -> Result<serde_json::Value> {
        let (algorithm, hex) = digest
            .split_once(':')
            .with_context(|| format!("bad digest {digest}"))?;
        let path = layout.join("blobs").join(algorithm).join(hex);
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    };
    let index_path = layout.join("index.json");
    let index: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(&index_path)
            .with_context(|| format!("cannot read {}", index_path.display()))?,
    )?;
    let manifest = index["manifests"][0]["digest"]
        .as_str()
        .context("index.json lists no manifest")?;
    let manifest = blob(manifest)?;
    let config = manifest["config"]["digest"]
        .as_str()
        .context("the manifest has no config")?;
    blob(config)
}

/// The runtime stage's config: the binary as entrypoint, user 65532:65532, `ports` exposed.
fn check_config(config: &serde_json::Value, binary: &str, ports: &[u16]) -> Result<()> {
    let config = &config["config"];
    let entrypoint = format!("/usr/local/bin/{binary}");
    if config["Entrypoint"] != serde_json::json!([entrypoint]) {
        bail!(
            "entrypoint is {}, expected [\"{entrypoint}\"]",
            config["Entrypoint"]
        );
    }
    let user = format!("{0}:{0}", images::NONROOT);
    if config["User"] != serde_json::json!(user) {
        bail!("user is {}, expected {user}", config["User"]);
    }
    let mut exposed: Vec<String> = config["ExposedPorts"]
        .as_object()
        .map(|ports| ports.keys().cloned().collect())
        .unwrap_or_default();
    exposed.sort();
    let mut expected: Vec<String> = ports.iter().map(|p| format!("{p}/tcp")).collect();
    expected.sort();
    ensure!(
        exposed == expected,
        "exposed ports are {exposed:?}, expected {expected:?}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerfiles_take_both_bases_as_build_arguments() -> Result<()> {
        for target in &TARGETS {
            let text = fs::read_to_string(util::workspace_root().join(target.dockerfile))?;
            let args = global_args(&text);
            let default = |name: &str| {
                args.iter()
                    .find(|(arg, _)| arg == name)
                    .and_then(|(_, default)| default.clone())
            };
            let rust = default(RUST_IMAGE_ARG).context("no RUST_IMAGE default")?;
            assert!(rust.starts_with("rust:"), "{}: {rust}", target.dockerfile);
            assert_eq!(
                default(RUNTIME_IMAGE_ARG).as_deref(),
                Some("gcr.io/distroless/cc-debian12:nonroot"),
                "{}",
                target.dockerfile
            );
            assert!(text.contains("FROM ${RUST_IMAGE} AS builder"));
            assert!(text.contains("FROM ${RUNTIME_IMAGE}\n"));
        }
        Ok(())
    }

    #[test]
    fn global_args_stop_at_the_first_from() {
        let text = "# c\nARG A=x:1\narg B\nARG C=\"q\"\nFROM ${A} AS b\nARG D=1\n";
        assert_eq!(
            global_args(text),
            vec![
                ("A".to_string(), Some("x:1".to_string())),
                ("B".to_string(), None),
                ("C".to_string(), Some("q".to_string())),
            ]
        );
    }

    #[test]
    fn rust_versions() -> Result<()> {
        assert_eq!(
            rust_version("rustc 1.95.0 (59807616e 2026-04-14)\n")?,
            "1.95.0"
        );
        assert!(rust_version("rustc").is_err());
        assert!(rust_image_matches("rust:1.95-bookworm", "1.95.0"));
        assert!(rust_image_matches("rust:1.95.0-bookworm", "1.95.0"));
        assert!(rust_image_matches("rust:1.95", "1.95.1"));
        assert!(!rust_image_matches("rust:1.9-bookworm", "1.95.0"));
        assert!(!rust_image_matches("rust:1.94-bookworm", "1.95.0"));
        assert!(!rust_image_matches("rust", "1.95.0"));
        Ok(())
    }

    #[test]
    fn bud_substitutes_the_bases_and_never_pulls() {
        let args = bud_args(
            "docker/node.Dockerfile",
            "localhost/meridian-node:dockerfile",
            &[
                ("RUST_IMAGE", "localhost/b:1"),
                ("RUNTIME_IMAGE", "localhost/r:2"),
            ],
            &["/c:/c:ro".to_string()],
        );
        assert_eq!(
            args.join(" "),
            "bud --network host --layers --pull=never --force-rm \
             --build-arg RUST_IMAGE=localhost/b:1 --build-arg RUNTIME_IMAGE=localhost/r:2 \
             --volume /c:/c:ro -f docker/node.Dockerfile -t localhost/meridian-node:dockerfile ."
        );
        let storage = storage_args(Path::new("/s"), Path::new("/r"));
        assert_eq!(
            storage.join(" "),
            "--root /s --runroot /r --storage-driver vfs"
        );
    }

    #[test]
    fn config_check_names_what_differs() {
        let good = serde_json::json!({"config": {
            "Entrypoint": ["/usr/local/bin/meridian-operator"],
            "User": "65532:65532",
            "ExposedPorts": {"8081/tcp": {}},
        }});
        check_config(&good, "meridian-operator", &[8081]).unwrap();
        let err = check_config(&good, "meridian-node", &[8081]).unwrap_err();
        assert!(err.to_string().contains("entrypoint"), "{err}");
        let err = check_config(&good, "meridian-operator", &[8081, 9090]).unwrap_err();
        assert!(err.to_string().contains("exposed ports"), "{err}");
        let mut root = good.clone();
        root["config"]["User"] = serde_json::json!("0");
        let err = check_config(&root, "meridian-operator", &[8081]).unwrap_err();
        assert!(err.to_string().contains("user"), "{err}");
    }
}
