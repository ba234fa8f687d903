//! Maps a container's image and command onto a program on this machine.
//!
//! There are no images here: the last path component of the image reference (without tag
//! or digest) names a binary in `--bin-dir`; an explicit `command` may instead name an
//! absolute path or a program on the host's PATH (so `busybox` / `alpine` test pods with
//! `sh -c ...` run the host's /bin/sh).

use std::path::{Path, PathBuf};

/// Images whose default entrypoint is a shell; without a command they run the host's /bin/sh.
const SHELL_IMAGES: &[&str] = &["busybox", "alpine", "debian", "ubuntu"];

/// `ghcr.io/meridian-dev/meridian-node:0.1.0` → `meridian-node`; `busybox@sha256:…` → `busybox`.
pub fn image_base_name(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    // A tag follows the last ':' of the final path component (registry ports live earlier).
    last.split(':').next().unwrap_or(last)
}

/// Where a container's program and leading arguments come from.
#[derive(Debug, PartialEq, Eq)]
pub struct Resolved {
    pub program: PathBuf,
    /// `command[1..]` (when a command was given) followed by `args`; before `$(VAR)` expansion.
    pub argv_tail: Vec<String>,
}

/// Resolves `image` + `command` + `args` to a program, or explains why no program matches
/// (reported as `ErrImagePull`, like a missing image in Kubernetes).
pub fn resolve(
    image: &str,
    command: &[String],
    args: &[String],
    bin_dir: &Path,
    path_var: Option<&std::ffi::OsStr>,
) -> Result<Resolved, String> {
    let base = image_base_name(image);
    if let Some((first, rest)) = command.split_first() {
        let program = resolve_command(first, bin_dir, path_var).ok_or_else(|| {
            format!(
                "image {image:?}: command {first:?} is neither {} nor an existing absolute path nor on PATH",
                bin_dir.join(file_name(first)).display()
            )
        })?;
        let mut argv_tail = rest.to_vec();
        argv_tail.extend_from_slice(args);
        return Ok(Resolved { program, argv_tail });
    }
    let candidate = bin_dir.join(base);
    if is_executable(&candidate) {
        return Ok(Resolved {
            program: candidate,
            argv_tail: args.to_vec(),
        });
    }
    if SHELL_IMAGES.contains(&base) {
        return Ok(Resolved {
            program: PathBuf::from("/bin/sh"),
            argv_tail: args.to_vec(),
        });
    }
    Err(format!(
        "image {image:?} has no local binary: expected an executable {} (build it, e.g. `cargo build -p {base}`), \
         or give the container a command that exists on this machine",
        candidate.display()
    ))
}

/// Resolves the first element of a command (also used for exec probes): the basename in
/// `bin_dir` first, then an existing absolute path, then a bare name on PATH.
pub fn resolve_command(
    first: &str,
    bin_dir: &Path,
    path_var: Option<&std::ffi::OsStr>,
) -> Option<PathBuf> {
    let name = file_name(first);
    if name.is_empty() {
        return None;
    }
    let in_bin_dir = bin_dir.join(name);
    if is_executable(&in_bin_dir) {
        return Some(in_bin_dir);
    }
    let as_path = Path::new(first);
    if as_path.is_absolute() {
        return is_executable(as_path).then(|| as_path.to_path_buf());
    }
    if first.contains('/') {
        return None;
    }
    let paths = path_var?;
    std::env::split_paths(paths)
        .map(|dir| dir.join(first))
        .find(|p| is_executable(p))
}

fn file_name(command: &str) -> &str {
    command.rsplit('/').next().unwrap_or(command)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn base_name_strips_registry_tag_and_digest() {
        assert_eq!(
            image_base_name("ghcr.io/meridian-dev/meridian-node:0.1.0"),
            "meridian-node"
        );
        assert_eq!(
            image_base_name("localhost:5000/meridian-operator"),
            "meridian-operator"
        );
        assert_eq!(image_base_name("busybox@sha256:abcdef"), "busybox");
        assert_eq!(image_base_name("library/alpine:3.20@sha256:ff"), "alpine");
        assert_eq!(image_base_name("redis"), "redis");
    }

    fn fake_bin_dir() -> tempdir::Dir {
        let dir = tempdir::Dir::new("image");
        let bin = dir.path().join("meridian-node");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    #[test]
    fn image_maps_to_binary_in_bin_dir() {
        let dir = fake_bin_dir();
        let r = resolve(
            "ghcr.io/meridian-dev/meridian-node:0.1.0",
            &[],
            &["--port".into(), "6379".into()],
            dir.path(),
            None,
        )
        .unwrap();
        assert_eq!(r.program, dir.path().join("meridian-node"));
        assert_eq!(r.argv_tail, vec!["--port", "6379"]);
    }

    #[test]
    fn command_basename_is_looked_up_in_bin_dir_first() {
        let dir = fake_bin_dir();
        let r = resolve(
            "anything:1",
            &["/usr/local/bin/meridian-node".into(), "serve".into()],
            &["-v".into()],
            dir.path(),
            None,
        )
        .unwrap();
        assert_eq!(r.program, dir.path().join("meridian-node"));
        assert_eq!(r.argv_tail, vec!["serve", "-v"]);
    }

    #[test]
    fn busybox_shell_command_uses_host_path() {
        let dir = fake_bin_dir();
        let r = resolve(
            "busybox:1.36",
            &["sh".into(), "-c".into(), "echo hi".into()],
            &[],
            dir.path(),
            Some(std::ffi::OsStr::new("/usr/bin:/bin")),
        )
        .unwrap();
        assert!(r.program.ends_with("sh"), "{:?}", r.program);
        assert_eq!(r.argv_tail, vec!["-c", "echo hi"]);
        let abs = resolve("alpine", &["/bin/sh".into()], &[], dir.path(), None).unwrap();
        assert_eq!(abs.program, PathBuf::from("/bin/sh"));
        let default = resolve("busybox", &[], &[], dir.path(), None).unwrap();
        assert_eq!(default.program, PathBuf::from("/bin/sh"));
    }

    #[test]
    fn unknown_image_is_an_error_naming_the_expected_binary() {
        let dir = fake_bin_dir();
        let err = resolve("nginx:1.27", &[], &[], dir.path(), None).unwrap_err();
        assert!(err.contains("nginx"), "{err}");
        assert!(
            err.contains(&dir.path().join("nginx").display().to_string()),
            "{err}"
        );
        let err = resolve("x", &["no-such-program-xyz".into()], &[], dir.path(), None);
        assert!(err.is_err());
    }

    /// Minimal self-cleaning temporary directory (avoids a dev-dependency for one use).
    mod tempdir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new(tag: &str) -> Self {
                let p = std::env::temp_dir().join(format!(
                    "meridian-agent-test-{tag}-{}-{:?}",
                    std::process::id(),
                    std::thread::current().id()
                ));
                let _ = std::fs::remove_dir_all(&p);
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
