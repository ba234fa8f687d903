//! `cargo xtask images`: the container images the local cluster's nodes run, built without a
//! registry or a Docker engine.
//!
//! Every image is an OCI archive made with umoci (Debian package) from a root filesystem
//! assembled here:
//! - the runtime base: a distroless-equivalent root (glibc, libgcc, CA certificates, time
//!   zones, `nonroot` user 65532) unpacked from Debian's own packages with `dpkg -x`;
//! - `meridian-node` and `meridian-operator`: that base plus the release binary, exactly the
//!   runtime stage of `docker/*.Dockerfile` (binary in /usr/local/bin, user 65532:65532,
//!   the binary as entrypoint);
//! - the pause image, compiled from the Kubernetes module's `build/pause/linux/pause.c`;
//! - CoreDNS, built from its Go module, for cluster DNS.
//!
//! The archives are imported into every node's containerd under the names the chart and the
//! operator use (`ctr images import --base-name`), so pods never pull.
//!
//! `--dockerfile` builds `docker/*.Dockerfile` themselves instead, with buildah (see
//! [`crate::dockerfile`]).

use crate::cluster::binaries;
use crate::util;
use anyhow::{Context, Result};
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Repository of the cache node image (the chart's `nodeImage.repository`).
pub const NODE_REPOSITORY: &str = "ghcr.io/meridian-dev/meridian-node";
/// Repository of the operator image (the chart's `image.repository`).
pub const OPERATOR_REPOSITORY: &str = "ghcr.io/meridian-dev/meridian-operator";
/// The sandbox image containerd pins by default (`pinned_images.sandbox`).
pub const PAUSE_REPOSITORY: &str = "registry.k8s.io/pause";
pub const PAUSE_TAG: &str = "3.10.1";
pub const COREDNS_REPOSITORY: &str = "registry.k8s.io/coredns/coredns";
/// Extra tags of the node image: the rolling-update scenario switches a cluster to this one.
pub const NODE_EXTRA_TAGS: [&str; 1] = ["e2e-rolled"];
/// The `nonroot` user of distroless images, which the chart and the operator run as.
pub(crate) const NONROOT: u32 = 65532;
/// Debian packages the runtime base is made of (what distroless `cc` holds).
const BASE_PACKAGES: [&str; 5] = ["libc6", "libgcc-s1", "ca-certificates", "tzdata", "netbase"];

#[derive(clap::Args)]
pub struct ImagesArgs {
    /// Build docker/node.Dockerfile and docker/operator.Dockerfile with buildah against local
    /// stand-ins of their base images, instead of the cluster's images (slow: not part of
    /// `cargo xtask test`).
    #[arg(long)]
    dockerfile: bool,
}

pub fn run(args: ImagesArgs) -> Result<()> {
    if args.dockerfile {
        return crate::dockerfile::run();
    }
    for image in build_all()? {
        println!(
            "{} {}",
            image.archive.display(),
            image.references().join(" ")
        );
    }
    Ok(())
}

/// An OCI archive and the names it is imported under.
#[derive(Debug, Clone)]
pub struct Image {
    pub repository: String,
    pub tags: Vec<String>,
    pub archive: PathBuf,
}

impl Image {
    pub fn references(&self) -> Vec<String> {
        self.tags
            .iter()
            .map(|tag| format!("{}:{tag}", self.repository))
            .collect()
    }
}

/// The chart's appVersion: the tag the chart and the operator default to.
pub fn app_version() -> Result<String> {
    let chart = util::workspace_root().join("charts/meridian/Chart.yaml");
    let text =
        fs::read_to_string(&chart).with_context(|| format!("cannot read {}", chart.display()))?;
    text.lines()
        .find_map(|line| line.strip_prefix("appVersion:"))
        .map(|v| v.trim().trim_matches('"').to_string())
        .with_context(|| format!("{} has no appVersion", chart.display()))
}

pub(crate) fn images_dir() -> PathBuf {
    util::target_dir().join("images")
}

/// Builds every image the cluster runs; the Meridian images from the current release
/// binaries (built here), the upstream ones once per machine (cached).
pub fn build_all() -> Result<Vec<Image>> {
    ensure_tools()?;
    let base = base_rootfs()?;
    let release = util::build_release_binaries()?;
    let tag = app_version()?;
    let mut node_tags = vec![tag.clone()];
    node_tags.extend(NODE_EXTRA_TAGS.map(String::from));
    Ok(vec![
        meridian_image(
            &base,
            &release.node,
            "meridian-node",
            NODE_REPOSITORY,
            node_tags,
        )?,
        meridian_image(
            &base,
            &release.operator,
            "meridian-operator",
            OPERATOR_REPOSITORY,
            vec![tag],
        )?,
        pause_image()?,
        coredns_image(&base)?,
    ])
}

fn ensure_tools() -> Result<()> {
    util::ensure_apt(&[("umoci", "umoci"), ("gcc", "gcc"), ("dpkg", "dpkg")])?;
    // pause is linked statically against glibc.
    util::ensure_apt_files(&[("/usr/include/stdio.h", "libc6-dev")])
}

/// The ports a Meridian image exposes (the `EXPOSE` of its Dockerfile's runtime stage).
pub(crate) fn meridian_ports(binary: &str) -> &'static [u16] {
    if binary == "meridian-node" {
        &[6379, 16379, 8080, 9090]
    } else {
        &[8081]
    }
}

/// The distroless-equivalent root filesystem, cached per set of package versions, in
/// `<images>/base-<hash of the package file names>`.
pub(crate) fn base_rootfs() -> Result<PathBuf> {
    let downloads = images_dir().join("debs");
    if downloads.exists() {
        fs::remove_dir_all(&downloads)?;
    }
    fs::create_dir_all(&downloads)?;
    // apt-get download writes into the current directory; the _apt sandbox user cannot
    // write there when it is root's, which apt only warns about.
    let download = || {
        util::run(
            Command::new("apt-get")
                .current_dir(&downloads)
                .arg("download")
                .args(BASE_PACKAGES),
        )
    };
    if download().is_err() {
        // A fresh machine has no package lists yet, an old one stale lists.
        util::run(Command::new("apt-get").args(["update", "-q"]))?;
        download().context("cannot download the runtime base's Debian packages")?;
    }
    let mut debs: Vec<String> = fs::read_dir(&downloads)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".deb"))
        .collect();
    debs.sort();
    let key = short_hash(&debs.join("\n"));
    let root = images_dir().join(format!("base-{key}"));
    if root.join(".complete").is_file() {
        return Ok(root);
    }
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    fs::create_dir_all(&root)?;
    for deb in &debs {
        util::run(
            Command::new("dpkg")
                .arg("-x")
                .arg(downloads.join(deb))
                .arg(&root),
        )?;
    }
    finish_base(&root)?;
    fs::write(root.join(".complete"), debs.join("\n"))?;
    Ok(root)
}

/// What a distroless base adds to its packages: users, a CA bundle, /tmp, no docs.
fn finish_base(root: &Path) -> Result<()> {
    for docs in [
        "usr/share/doc",
        "usr/share/man",
        "usr/share/lintian",
        "usr/share/locale",
    ] {
        let path = root.join(docs);
        if path.exists() {
            fs::remove_dir_all(&path)?;
        }
    }
    let etc = root.join("etc");
    fs::create_dir_all(&etc)?;
    fs::write(
        etc.join("passwd"),
        format!(
            "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
        ),
    )?;
    fs::write(
        etc.join("group"),
        format!("root:x:0:\nnogroup:x:65534:\nnonroot:x:{NONROOT}:\n"),
    )?;
    // update-ca-certificates would concatenate the same files into the bundle.
    let mozilla = root.join("usr/share/ca-certificates/mozilla");
    let mut certs: Vec<PathBuf> = fs::read_dir(&mozilla)
        .with_context(|| {
            format!(
                "{} missing: is ca-certificates unpacked?",
                mozilla.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    certs.sort();
    let mut bundle = String::new();
    for cert in certs {
        bundle.push_str(&fs::read_to_string(&cert)?);
        if !bundle.ends_with('\n') {
            bundle.push('\n');
        }
    }
    fs::create_dir_all(etc.join("ssl/certs"))?;
    fs::write(etc.join("ssl/certs/ca-certificates.crt"), bundle)?;
    for dir in ["tmp", "home/nonroot"] {
        fs::create_dir_all(root.join(dir))?;
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    std::os::unix::fs::chown(root.join("home/nonroot"), Some(NONROOT), Some(NONROOT))?;
    Ok(())
}

/// What goes into one image: files on top of an optional base root, and its config.
struct Recipe<'a> {
    name: &'a str,
    base: Option<&'a Path>,
    /// (source on this machine, absolute path in the image, mode)
    files: Vec<(PathBuf, &'a str, u32)>,
    entrypoint: &'a str,
    user: String,
    ports: &'a [u16],
}

/// A Meridian image: the runtime stage of docker/<binary minus prefix>.Dockerfile.
fn meridian_image(
    base: &Path,
    built: &Path,
    binary: &str,
    repository: &str,
    tags: Vec<String>,
) -> Result<Image> {
    let in_image = format!("/usr/local/bin/{binary}");
    let ports = meridian_ports(binary);
    let recipe = Recipe {
        name: binary,
        base: Some(base),
        files: vec![(built.to_path_buf(), in_image.as_str(), 0o755)],
        entrypoint: &in_image,
        user: format!("{NONROOT}:{NONROOT}"),
        ports,
    };
    let archive = oci_archive(&recipe, &tags)?;
    Ok(Image {
        repository: repository.into(),
        tags,
        archive,
    })
}

/// The pause image, compiled from the Kubernetes module's own source (a static binary).
fn pause_image() -> Result<Image> {
    let source = binaries::kube_module_dir()?
        .join("build")
        .join("pause")
        .join("linux")
        .join("pause.c");
    let dir = images_dir().join("pause");
    fs::create_dir_all(&dir)?;
    let binary = dir.join("pause");
    util::run(
        Command::new("gcc")
            .args(["-Os", "-Wall", "-Werror", "-static"])
            .arg(format!("-DVERSION=v{PAUSE_TAG}"))
            .arg("-o")
            .arg(&binary)
            .arg(&source),
    )
    .context("compiling pause.c failed (gcc and the static glibc of libc6-dev are needed)")?;
    util::run(Command::new("strip").arg(&binary))?;
    let recipe = Recipe {
        name: "pause",
        base: None,
        files: vec![(binary, "/pause", 0o755)],
        entrypoint: "/pause",
        user: "65535:65535".into(),
        ports: &[],
    };
    let tags = vec![PAUSE_TAG.to_string()];
    let archive = oci_archive(&recipe, &tags)?;
    Ok(Image {
        repository: PAUSE_REPOSITORY.into(),
        tags,
        archive,
    })
}

fn coredns_image(base: &Path) -> Result<Image> {
    let binary = binaries::ensure_coredns()?;
    let recipe = Recipe {
        name: "coredns",
        base: Some(base),
        files: vec![(binary, "/coredns", 0o755)],
        entrypoint: "/coredns",
        user: format!("{NONROOT}:{NONROOT}"),
        ports: &[53],
    };
    let tags = vec![binaries::COREDNS_VERSION.to_string()];
    let archive = oci_archive(&recipe, &tags)?;
    Ok(Image {
        repository: COREDNS_REPOSITORY.into(),
        tags,
        archive,
    })
}

/// Builds `recipe` into `<images>/<name>.tar` (an OCI image layout in a tar, one layer).
/// Skipped when the inputs are unchanged since the last build.
fn oci_archive(recipe: &Recipe<'_>, tags: &[String]) -> Result<PathBuf> {
    let dir = images_dir();
    let archive = dir.join(format!("{}.tar", recipe.name));
    let fingerprint = fingerprint(recipe, tags)?;
    let stamp = dir.join(format!("{}.stamp", recipe.name));
    if archive.is_file() && fs::read_to_string(&stamp).is_ok_and(|s| s == fingerprint) {
        return Ok(archive);
    }
    eprintln!("building image {} ({})", recipe.name, tags.join(", "));
    let layout = dir.join(format!("{}.layout", recipe.name));
    let bundle = dir.join(format!("{}.bundle", recipe.name));
    for stale in [&layout, &bundle] {
        if stale.exists() {
            fs::remove_dir_all(stale)?;
        }
    }
    let first = tags.first().context("an image needs a tag")?;
    let image = format!("{}:{first}", layout.display());
    umoci(&["init", "--layout", &path(&layout)])?;
    umoci(&["new", "--image", &image])?;
    umoci(&["unpack", "--image", &image, &path(&bundle)])?;
    let rootfs = bundle.join("rootfs");
    if let Some(base) = recipe.base {
        // cp -a keeps owners, modes and symlinks (the base has absolute lib symlinks).
        util::run(
            Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", base.display()))
                .arg(&rootfs),
        )?;
        let _ = fs::remove_file(rootfs.join(".complete"));
    }
    for (source, target, mode) in &recipe.files {
        let target = rootfs.join(target.trim_start_matches('/'));
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(source, &target)
            .with_context(|| format!("cannot copy {} into the image", source.display()))?;
        fs::set_permissions(&target, fs::Permissions::from_mode(*mode))?;
    }
    umoci(&["repack", "--image", &image, &path(&bundle)])?;
    let mut config = vec![
        "config".to_string(),
        "--image".into(),
        image.clone(),
        "--config.entrypoint".into(),
        recipe.entrypoint.into(),
        "--config.user".into(),
        recipe.user.clone(),
        "--config.workingdir".into(),
        "/".into(),
        "--config.env".into(),
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        "--config.env".into(),
        "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt".into(),
    ];
    for port in recipe.ports {
        config.push("--config.exposedports".into());
        config.push(format!("{port}/tcp"));
    }
    let config: Vec<&str> = config.iter().map(String::as_str).collect();
    umoci(&config)?;
    for tag in &tags[1..] {
        umoci(&["tag", "--image", &image, tag])?;
    }
    umoci(&["gc", "--layout", &path(&layout)])?;
    let partial = dir.join(format!("{}.tar.partial", recipe.name));
    util::run(
        Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&partial)
            .arg("."),
    )?;
    fs::rename(&partial, &archive)?;
    fs::remove_dir_all(&bundle)?;
    fs::remove_dir_all(&layout)?;
    fs::write(&stamp, fingerprint)?;
    Ok(archive)
}

/// Identifies the inputs of an image build: its files' sizes and modification times, its
/// config, and its base.
fn fingerprint(recipe: &Recipe<'_>, tags: &[String]) -> Result<String> {
    let mut text = format!(
        "{} {} {} {:?} {:?} {:?}\n",
        recipe.name, recipe.entrypoint, recipe.user, recipe.ports, tags, recipe.base
    );
    for (source, target, mode) in &recipe.files {
        let meta =
            fs::metadata(source).with_context(|| format!("{} does not exist", source.display()))?;
        let modified = meta
            .modified()?
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        text.push_str(&format!(
            "{} {target} {mode:o} {} {}\n",
            source.display(),
            meta.len(),
            modified.as_nanos()
        ));
    }
    Ok(text)
}

fn umoci(args: &[&str]) -> Result<()> {
    util::run(Command::new("umoci").args(args))
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// FNV-1a of `text`, in hex: a short, stable cache key (not a security boundary).
fn short_hash(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_version_is_the_charts() -> Result<()> {
        let version = app_version()?;
        assert!(!version.is_empty() && !version.contains('"'), "{version}");
        Ok(())
    }

    /// The images the e2e suite runs must be what the Dockerfiles' runtime stage makes:
    /// same path, user and entrypoint.
    #[test]
    fn meridian_images_match_the_dockerfiles_runtime_stage() -> Result<()> {
        for binary in ["meridian-node", "meridian-operator"] {
            let dockerfile = util::workspace_root().join(format!(
                "docker/{}.Dockerfile",
                binary.trim_start_matches("meridian-")
            ));
            let text = fs::read_to_string(&dockerfile)?;
            let runtime = text
                .rsplit_once("\nFROM ")
                .map(|(_, stage)| stage)
                .context("no runtime stage")?;
            let in_image = format!("/usr/local/bin/{binary}");
            assert!(
                runtime.contains(&format!("COPY --from=builder /out/{binary} {in_image}")),
                "{}: runtime stage does not copy the binary to {in_image}",
                dockerfile.display()
            );
            assert!(
                runtime.contains(&format!("USER {NONROOT}:{NONROOT}")),
                "{}",
                dockerfile.display()
            );
            assert!(
                runtime.contains(&format!("ENTRYPOINT [\"{in_image}\"]")),
                "{}",
                dockerfile.display()
            );
        }
        Ok(())
    }

    #[test]
    fn short_hash_is_stable() {
        assert_eq!(short_hash(""), "cbf29ce484222325");
        assert_ne!(short_hash("a"), short_hash("b"));
    }
}
