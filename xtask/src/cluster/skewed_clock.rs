//! A second container runtime on every node, `skewed-clock`: the same runc, with a base OCI
//! spec that preloads libfaketime (Debian's `faketime`) into every container and points it at
//! one file of offsets on the host. A pod that names the RuntimeClass `skewed-clock` (a
//! CacheRegion's `placement.runtimeClassName`) reads its wall clock through that offset; the
//! monotonic clock stays real. The e2e suite writes the file (`+3`, `+30`, ...) to skew a
//! whole region's clock while it runs: Linux has no per-namespace wall clock, and this is how
//! a machine with a wrong clock looks to the programs on it.
//!
//! libfaketime re-reads the file at most once a second, so a new offset takes effect within a
//! second, without restarting anything.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util;

/// The containerd runtime handler and the RuntimeClass that selects it.
pub const HANDLER: &str = "skewed-clock";

/// Below the cluster's state directory; the e2e suite's `ClockSkew` writes `skew` there.
const DIR: &str = "skewed-clock";

/// Where libfaketime and the offset file appear inside the containers.
const LIBRARY_IN_CONTAINER: &str = "/faketime/lib";
const CLOCK_IN_CONTAINER: &str = "/faketime/clock";

pub fn dir(state: &Path) -> PathBuf {
    state.join(DIR)
}

/// The base OCI spec containerd starts every `skewed-clock` container from.
pub fn base_spec(state: &Path) -> PathBuf {
    dir(state).join("base-spec.json")
}

/// Installs libfaketime when missing, writes the base spec from containerd's own default
/// (`ctr oci spec`) and resets the offset to none.
pub fn prepare(state: &Path, ctr: &Path) -> Result<()> {
    util::ensure_apt(&[("faketime", "faketime")])?;
    let library = libfaketime().context(
        "libfaketimeMT.so.1 not found below /usr/lib after installing Debian's faketime",
    )?;
    let output = Command::new(ctr)
        .args(["oci", "spec"])
        .output()
        .with_context(|| format!("cannot run {} oci spec", ctr.display()))?;
    if !output.status.success() {
        bail!(
            "{} oci spec failed: {}",
            ctr.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let default: Value =
        serde_json::from_slice(&output.stdout).context("ctr oci spec printed no JSON")?;
    let clock = dir(state).join("clock");
    std::fs::create_dir_all(&clock)
        .with_context(|| format!("cannot create {}", clock.display()))?;
    let library_dir = library.parent().context("libfaketime has no directory")?;
    let spec = with_faketime(default, library_dir, &clock)?;
    util::write_file(&base_spec(state), &serde_json::to_string_pretty(&spec)?)?;
    set_offset(state, "+0")
}

/// Writes the offset every `skewed-clock` container reads (libfaketime's FAKETIME syntax:
/// `+3`, `-1.5`, `+30`), readable by the containers' non-root users.
fn set_offset(state: &Path, offset: &str) -> Result<()> {
    let file = dir(state).join("clock").join("skew");
    util::write_file(&file, &format!("{offset}\n"))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("cannot make {} readable", file.display()))
}

/// `spec` with libfaketime preloaded from `library_dir` and its offset read from the file
/// in `clock` (both mounted read-only).
fn with_faketime(mut spec: Value, library_dir: &Path, clock: &Path) -> Result<Value> {
    let process = spec
        .get_mut("process")
        .and_then(Value::as_object_mut)
        .context("the default spec has no process")?;
    // containerd's default has no environment; CRI adds the image's and the pod's to this.
    let env = process
        .entry("env")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .context("process.env of the default spec is not a list")?;
    env.extend(
        [
            format!("LD_PRELOAD={LIBRARY_IN_CONTAINER}/libfaketimeMT.so.1"),
            format!("FAKETIME_TIMESTAMP_FILE={CLOCK_IN_CONTAINER}/skew"),
            "FAKETIME_CACHE_DURATION=1".to_string(),
            // Timeouts and intervals stay real: only the wall clock is wrong.
            "DONT_FAKE_MONOTONIC=1".to_string(),
        ]
        .map(Value::String),
    );
    let mounts = spec
        .pointer_mut("/mounts")
        .and_then(Value::as_array_mut)
        .context("the default spec has no mounts")?;
    for (source, destination) in [
        (library_dir, LIBRARY_IN_CONTAINER),
        (clock, CLOCK_IN_CONTAINER),
    ] {
        mounts.push(json!({
            "destination": destination,
            "type": "bind",
            "source": source.display().to_string(),
            "options": ["rbind", "ro", "nosuid", "nodev"],
        }));
    }
    Ok(spec)
}

/// libfaketime's preload library for multi-threaded programs, wherever the architecture
/// puts it.
fn libfaketime() -> Option<PathBuf> {
    let multiarch = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("faketime/libfaketimeMT.so.1"));
    multiarch
        .chain([PathBuf::from("/usr/lib/faketime/libfaketimeMT.so.1")])
        .find(|path| path.is_file())
}

/// The containerd (config version 3) runtime entry of the handler.
pub fn containerd_runtime(state: &Path, runc: &Path) -> String {
    format!(
        r#"  # runc with libfaketime preloaded (RuntimeClass {HANDLER}): see skewed_clock.rs.
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.{HANDLER}]
    runtime_type = "io.containerd.runc.v2"
    base_runtime_spec = "{spec}"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.{HANDLER}.options]
      BinaryName = "{runc}"
"#,
        spec = base_spec(state).display(),
        runc = runc.display(),
    )
}

/// The RuntimeClass pods name to get the handler.
pub fn runtime_class_manifest() -> String {
    format!(
        "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata:\n  name: {HANDLER}\nhandler: {HANDLER}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_spec_preloads_libfaketime_and_mounts_it_read_only() {
        let default = json!({
            "process": {"env": ["PATH=/usr/bin"]},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        });
        let spec = with_faketime(
            default,
            Path::new("/usr/lib/x86_64-linux-gnu/faketime"),
            Path::new("/state/skewed-clock/clock"),
        )
        .unwrap();
        let env: Vec<&str> = spec["process"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(env[0], "PATH=/usr/bin", "the default environment is kept");
        assert!(env.contains(&"LD_PRELOAD=/faketime/lib/libfaketimeMT.so.1"));
        assert!(env.contains(&"FAKETIME_TIMESTAMP_FILE=/faketime/clock/skew"));
        assert!(env.contains(&"DONT_FAKE_MONOTONIC=1"));
        let mounts = spec["mounts"].as_array().unwrap();
        assert_eq!(mounts.len(), 3, "the default mounts are kept");
        assert_eq!(mounts[1]["source"], "/usr/lib/x86_64-linux-gnu/faketime");
        assert_eq!(mounts[2]["destination"], "/faketime/clock");
        assert!(
            mounts[1..]
                .iter()
                .all(|m| m["options"].as_array().unwrap().contains(&json!("ro")))
        );
    }

    #[test]
    fn a_default_spec_without_environment_gets_one() {
        let spec = with_faketime(
            json!({"process": {"cwd": "/"}, "mounts": []}),
            Path::new("/lib"),
            Path::new("/clock"),
        )
        .unwrap();
        assert_eq!(spec["process"]["env"].as_array().unwrap().len(), 4);
        assert_eq!(spec["process"]["cwd"], "/");
    }

    #[test]
    fn no_default_spec_shape_no_base_spec() {
        assert!(
            with_faketime(
                json!({"mounts": []}),
                Path::new("/lib"),
                Path::new("/clock")
            )
            .is_err()
        );
    }
}
