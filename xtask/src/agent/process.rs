//! Starting container processes: own session / process group (so the whole group can be
//! signalled), a private mount namespace with every volume bind-mounted at its mountPath,
//! a private UTS namespace carrying the pod's hostname, and pid files for stray cleanup.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// One volume bind mount: `source` (in the pod's state dir, or a hostPath) at `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// Everything needed to start a process "inside" a pod (containers and exec probes).
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub env: Vec<(String, String)>,
    pub mounts: Vec<BindMount>,
    pub hostname: String,
    pub working_dir: PathBuf,
    /// False when this machine refuses mount namespaces: processes then see no volumes at their
    /// mountPath and rely on `KUBECONFIG` instead (see docs/local-node-agent.md).
    pub namespaces: bool,
}

/// Pre-built C strings for the child; nothing may allocate between fork and exec.
/// Mount sources are opened (O_PATH) in the child's new namespace before the first mount
/// and mounted via `/proc/self/fd/N`, so a mountPath that hides the agent's state dir (e.g.
/// an emptyDir at `/work`) cannot hide the sources mounted after it.
struct ChildSetup {
    namespaces: bool,
    /// The program's real path, opened onto PROGRAM_FD before any mount.
    program: CString,
    /// (source path, `/proc/self/fd/N` alias, fd number N, target, read-only)
    mounts: Vec<ChildMount>,
    hostname: CString,
    working_dir: CString,
}

struct ChildMount {
    source: CString,
    alias: CString,
    fd: libc::c_int,
    target: CString,
    read_only: bool,
}

/// Descriptor numbers for mount sources in the child; high enough to be free.
const FIRST_MOUNT_FD: libc::c_int = 900;
/// Descriptor number for the working directory in the child.
const WORKDIR_FD: libc::c_int = 899;
/// Descriptor number for the program in the child: a volume mounted over a parent
/// directory of the binary (e.g. an emptyDir at /tmp with the workspace under /tmp)
/// would otherwise hide it, so the child opens it before mounting and execs
/// `/proc/self/fd/PROGRAM_FD`. Left open across exec so `#!` scripts work too.
const PROGRAM_FD: libc::c_int = 898;

fn cstring(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// Creates the mount point for `m` on the host (a directory, or an empty file for file
/// sources) — bind mounts need an existing target of the same kind.
fn prepare_target(m: &BindMount) -> std::io::Result<()> {
    if m.source.is_dir() {
        std::fs::create_dir_all(&m.target)
    } else {
        if let Some(parent) = m.target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if !m.target.exists() {
            std::fs::write(&m.target, b"")?;
        }
        Ok(())
    }
}

/// Spawns `program argv` in the sandbox with stdout and stderr appended to `log` (or
/// discarded), in its own process group, killed if the agent dies.
pub fn spawn(
    program: &Path,
    argv: &[String],
    sandbox: &Sandbox,
    log: Option<&Path>,
) -> std::io::Result<Child> {
    let mut cmd = if sandbox.namespaces {
        let mut cmd = Command::new(format!("/proc/self/fd/{PROGRAM_FD}"));
        cmd.arg0(program);
        cmd
    } else {
        Command::new(program)
    };
    cmd.args(argv)
        .env_clear()
        .envs(sandbox.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(false);
    match log {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            cmd.stdout(file.try_clone()?).stderr(file);
        }
        None => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    std::fs::create_dir_all(&sandbox.working_dir).ok();
    let mut mounts = Vec::new();
    if sandbox.namespaces {
        for (i, m) in sandbox.mounts.iter().enumerate() {
            prepare_target(m)?;
            let fd = FIRST_MOUNT_FD + i as libc::c_int;
            mounts.push(ChildMount {
                source: cstring(&m.source)?,
                alias: CString::new(format!("/proc/self/fd/{fd}")).unwrap_or_default(),
                fd,
                target: cstring(&m.target)?,
                read_only: m.read_only,
            });
        }
    }
    let setup = ChildSetup {
        namespaces: sandbox.namespaces,
        program: cstring(program)?,
        mounts,
        hostname: CString::new(sandbox.hostname.as_bytes()).unwrap_or_default(),
        working_dir: cstring(&sandbox.working_dir)?,
    };
    // SAFETY: the closure only performs raw system calls on memory prepared before fork.
    unsafe {
        cmd.pre_exec(move || child_setup(&setup));
    }
    cmd.spawn()
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs in the forked child before exec: async-signal-safe system calls only.
fn child_setup(setup: &ChildSetup) -> std::io::Result<()> {
    use nix::libc;
    // SAFETY: plain system calls with valid, NUL-terminated pointers owned by `setup`.
    unsafe {
        check(libc::setsid())?;
        check(libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ))?;
        if setup.namespaces {
            check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS))?;
            let root = c"/";
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            let wd = libc::open(setup.working_dir.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
            if wd >= 0 && wd != WORKDIR_FD {
                check(libc::dup3(wd, WORKDIR_FD, libc::O_CLOEXEC))?;
                libc::close(wd);
            }
            let exe = libc::open(setup.program.as_ptr(), libc::O_RDONLY);
            check(exe)?;
            if exe != PROGRAM_FD {
                check(libc::dup2(exe, PROGRAM_FD))?;
                libc::close(exe);
            }
            // Open every source before mounting anything (see ChildSetup).
            for m in &setup.mounts {
                let fd = libc::open(m.source.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
                check(fd)?;
                if fd != m.fd {
                    check(libc::dup3(fd, m.fd, libc::O_CLOEXEC))?;
                    libc::close(fd);
                }
            }
            for m in &setup.mounts {
                check(libc::mount(
                    m.alias.as_ptr(),
                    m.target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                if m.read_only {
                    check(libc::mount(
                        std::ptr::null(),
                        m.target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ))?;
                }
                libc::close(m.fd);
            }
            let name = setup.hostname.as_bytes();
            if !name.is_empty() {
                check(libc::sethostname(name.as_ptr().cast(), name.len()))?;
            }
        }
        // A working dir inside a volume needs the path after mounting; one hidden by a
        // mount is still reachable through the handle opened before mounting.
        if libc::chdir(setup.working_dir.as_ptr()) != 0 {
            if !setup.namespaces {
                return Err(std::io::Error::last_os_error());
            }
            check(libc::fchdir(WORKDIR_FD))?;
        }
        if setup.namespaces {
            libc::close(WORKDIR_FD);
        }
    }
    Ok(())
}

/// True when this process may create mount namespaces (root, no seccomp/AppArmor denial).
pub async fn mount_namespaces_work() -> bool {
    let dir = std::env::temp_dir().join(format!("meridian-agent-nscheck-{}", std::process::id()));
    let source = dir.join("src");
    let target = dir.join("dst");
    let _ = std::fs::create_dir_all(&source);
    let _ = std::fs::write(source.join("probe"), b"ok");
    let sandbox = Sandbox {
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        mounts: vec![BindMount {
            source,
            target: target.clone(),
            read_only: true,
        }],
        hostname: "meridian-nscheck".into(),
        working_dir: dir.clone(),
        namespaces: true,
    };
    let probe_file = target.join("probe");
    let ok = match spawn(
        Path::new("/bin/cat"),
        &[probe_file.display().to_string()],
        &sandbox,
        None,
    ) {
        Ok(mut child) => child.wait().await.map(|s| s.success()).unwrap_or(false),
        Err(e) => {
            tracing::warn!("mount namespaces unavailable: {e}");
            false
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    ok
}

/// Sends `signal` to the process group led by `pid`; a vanished group is not an error.
pub fn signal_group(pid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if raw <= 1 {
        return;
    }
    let _ = killpg(Pid::from_raw(raw), signal);
}

/// SIGTERM to the group, up to `grace` for the leader to exit, then SIGKILL to the group.
/// Returns the leader's exit status when it could be collected.
pub async fn terminate(child: &mut Child, grace: Duration) -> Option<std::process::ExitStatus> {
    let Some(pid) = child.id() else {
        return child.wait().await.ok();
    };
    signal_group(pid, Signal::SIGTERM);
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            signal_group(pid, Signal::SIGKILL);
            child.wait().await.ok()
        }
    };
    // Whatever the leader left behind in its group goes too, as a container runtime would.
    signal_group(pid, Signal::SIGKILL);
    status
}

/// Pid file contents: `<pid> <start time in clock ticks>`; the start time guards against
/// killing an unrelated process that reused the pid.
pub fn write_pid_file(path: &Path, pid: u32) -> std::io::Result<()> {
    let start = process_start_time(pid).unwrap_or(0);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, format!("{pid} {start}\n"))
}

fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after the last ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Kills every process group recorded in pid files under `pods_dir` (left by a previous
/// agent run) and removes the files. Returns how many groups were signalled.
pub fn kill_strays(pods_dir: &Path) -> usize {
    let mut killed = 0;
    let mut stack = vec![pods_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "pid") {
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(&path) {
                let mut fields = text.split_whitespace();
                let pid: Option<u32> = fields.next().and_then(|p| p.parse().ok());
                let start: Option<u64> = fields.next().and_then(|s| s.parse().ok());
                if let (Some(pid), Some(start)) = (pid, start)
                    && process_start_time(pid) == Some(start)
                {
                    tracing::info!(pid, file = %path.display(), "killing process group left by a previous agent run");
                    signal_group(pid, Signal::SIGKILL);
                    killed += 1;
                }
            }
            let _ = std::fs::remove_file(&path);
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_readable() {
        assert!(process_start_time(std::process::id()).is_some());
    }

    #[tokio::test]
    async fn spawned_process_gets_env_workdir_and_log() {
        let dir = std::env::temp_dir().join(format!("meridian-agent-spawn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("c.log");
        let sandbox = Sandbox {
            env: vec![
                ("GREETING".into(), "hello".into()),
                ("PATH".into(), "/usr/bin:/bin".into()),
            ],
            mounts: vec![],
            hostname: String::new(),
            working_dir: dir.join("cwd"),
            namespaces: false,
        };
        let mut child = spawn(
            Path::new("/bin/sh"),
            &["-c".into(), "echo $GREETING; pwd; echo err >&2".into()],
            &sandbox,
            Some(&log),
        )
        .unwrap();
        assert!(child.wait().await.unwrap().success());
        let out = std::fs::read_to_string(&log).unwrap();
        assert!(out.contains("hello"), "{out}");
        assert!(out.contains("cwd"), "{out}");
        assert!(out.contains("err"), "{out}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A volume mounted over the directory holding the other volumes (and the working dir)
    /// must not hide them: e.g. an emptyDir at `/work` while the agent state is in /work/main.
    #[tokio::test]
    async fn mounts_survive_a_mount_that_hides_the_state_dir() {
        if !mount_namespaces_work().await {
            eprintln!("skipped: mount namespaces unavailable here");
            return;
        }
        let base =
            std::env::temp_dir().join(format!("meridian-agent-shadow-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let state = base.join("state");
        let (first, second) = (state.join("first"), state.join("second"));
        std::fs::create_dir_all(first.join("inner")).unwrap();
        std::fs::create_dir_all(&second).unwrap();
        std::fs::write(first.join("one"), "1").unwrap();
        std::fs::write(second.join("two"), "2").unwrap();
        let log = base.join("out.log");
        let sandbox = Sandbox {
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            mounts: vec![
                BindMount {
                    source: first,
                    target: base.clone(),
                    read_only: false,
                },
                BindMount {
                    source: second,
                    target: base.join("inner"),
                    read_only: true,
                },
            ],
            hostname: "shadow-test".into(),
            working_dir: state.join("cwd"),
            namespaces: true,
        };
        let script = format!(
            "cat {0}/one {0}/inner/two; hostname; touch {0}/inner/x || echo ro",
            base.display()
        );
        let mut child = spawn(
            Path::new("/bin/sh"),
            &["-c".into(), script],
            &sandbox,
            Some(&log),
        )
        .unwrap();
        let status = child.wait().await.unwrap();
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&base);
        assert!(status.success(), "{out}");
        assert!(out.starts_with("12shadow-test\n"), "{out}");
        assert!(out.contains("ro"), "read-only mount was writable: {out}");
    }

    /// CI clones the workspace under /tmp while node pods mount an emptyDir at /tmp: the
    /// binary must still start although the mount hides the directory it lives in.
    #[tokio::test]
    async fn program_hidden_by_a_mount_still_starts() {
        if !mount_namespaces_work().await {
            eprintln!("skipped: mount namespaces unavailable here");
            return;
        }
        let base =
            std::env::temp_dir().join(format!("meridian-agent-hidden-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (bin, empty) = (base.join("bin"), base.join("empty"));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&empty).unwrap();
        let program = bin.join("echo-copy");
        std::fs::copy("/bin/echo", &program).unwrap();
        let log = base.join("out.log");
        let sandbox = Sandbox {
            env: vec![],
            mounts: vec![BindMount {
                source: empty,
                target: bin,
                read_only: false,
            }],
            hostname: "hidden-test".into(),
            working_dir: base.clone(),
            namespaces: true,
        };
        let mut child = spawn(&program, &["still here".into()], &sandbox, Some(&log)).unwrap();
        let status = child.wait().await.unwrap();
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&base);
        assert!(status.success(), "{out}");
        assert_eq!(out, "still here\n");
    }

    #[tokio::test]
    async fn terminate_escalates_to_sigkill() {
        let sandbox = Sandbox {
            env: vec![],
            mounts: vec![],
            hostname: String::new(),
            working_dir: std::env::temp_dir(),
            namespaces: false,
        };
        let mut child = spawn(
            Path::new("/bin/sh"),
            &[
                "-c".into(),
                "trap '' TERM; while :; do sleep 1; done".into(),
            ],
            &sandbox,
            None,
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let status = terminate(&mut child, Duration::from_millis(300))
            .await
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}
