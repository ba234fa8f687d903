//! Detached background processes with pid files and log files, and the polling helper that
//! waits for them with a clear error pointing at the log.

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Lines of a component's log shown when it fails.
const LOG_TAIL_LINES: usize = 30;

/// One cluster process: its name (pid and log file stem) and the program it runs.
pub struct Component {
    pub name: String,
    pub program: PathBuf,
    pub pid_file: PathBuf,
    pub log_file: PathBuf,
    /// A network namespace (a file under /run/netns) the process runs in.
    netns: Option<PathBuf>,
    envs: Vec<(String, String)>,
}

impl Component {
    pub fn new(state: &Path, name: impl Into<String>, program: PathBuf) -> Self {
        let name = name.into();
        Component {
            pid_file: state.join("pids").join(format!("{name}.pid")),
            log_file: state.join("logs").join(format!("{name}.log")),
            name,
            program,
            netns: None,
            envs: Vec::new(),
        }
    }

    /// Runs the process in the network namespace at `netns` (and only that namespace: it
    /// shares the host's mounts, which kubelet and containerd must both see).
    pub fn in_netns(mut self, netns: PathBuf) -> Self {
        self.netns = Some(netns);
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.envs.push((key.to_string(), value.into()));
        self
    }

    /// Starts `args` in a new session (so terminal signals and the xtask's exit leave it
    /// running), stdout and stderr appended to the log, and records the pid.
    pub fn start(&self, args: &[String]) -> Result<u32> {
        for dir in [self.pid_file.parent(), self.log_file.parent()]
            .into_iter()
            .flatten()
        {
            fs::create_dir_all(dir)?;
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .with_context(|| format!("cannot open {}", self.log_file.display()))?;
        let mut cmd = Command::new(&self.program);
        cmd.args(args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Opened here, entered in the child: kept open until the child has exec'd.
        let netns = self
            .netns
            .as_ref()
            .map(|path| {
                fs::File::open(path)
                    .with_context(|| format!("cannot open network namespace {}", path.display()))
            })
            .transpose()?;
        let netns_fd = netns.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        // SAFETY: setsid and setns are async-signal-safe and touch no memory of the parent.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if let Some(fd) = netns_fd {
                    let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                    nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(std::io::Error::from)?;
                }
                Ok(())
            });
        }
        eprintln!("starting {} (log: {})", self.name, self.log_file.display());
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.program.display()))?;
        let pid = child.id();
        fs::write(&self.pid_file, format!("{pid}\n"))?;
        // Not waited for: the process outlives this command. While xtask runs, an exited
        // child is a zombie, which `running_pid` treats as dead.
        drop(child);
        drop(netns);
        Ok(pid)
    }

    /// The pid when the recorded process is alive and still runs our program
    /// (guards against a recycled pid).
    pub fn running_pid(&self) -> Option<i32> {
        let pid: i32 = fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The state letter follows the parenthesised command name, which may contain spaces.
        let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
        if state == "Z" || state == "X" {
            return None;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let argv0 = cmdline.split(|b| *b == 0).next()?;
        let argv0 = Path::new(std::str::from_utf8(argv0).ok()?);
        (argv0.file_name()? == self.program.file_name()?).then_some(pid)
    }

    /// SIGTERM, then SIGKILL to the whole process group after `grace`. Removes the pid file.
    pub fn stop(&self, grace: Duration) -> Result<()> {
        let Some(pid) = self.running_pid() else {
            let _ = fs::remove_file(&self.pid_file);
            return Ok(());
        };
        eprintln!("stopping {} (pid {pid})", self.name);
        let pid = Pid::from_raw(pid);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.running_pid().is_none() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if self.running_pid().is_some() {
            eprintln!(
                "{} did not exit within {}s; sending SIGKILL",
                self.name,
                grace.as_secs()
            );
            let _ = kill(pid, Signal::SIGKILL);
        }
        // The process led its own session and group: whatever it left behind goes too.
        let _ = killpg(pid, Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.running_pid().is_some() {
            if Instant::now() > deadline {
                bail!("{} (pid {pid}) survived SIGKILL", self.name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = fs::remove_file(&self.pid_file);
        Ok(())
    }

    /// The last lines of the log, formatted for an error message.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_file, LOG_TAIL_LINES)
    }

    /// Polls `ready` every `interval` until it returns true, failing early when the process
    /// exits and with the log's tail on timeout.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<()> {
        let started = Instant::now();
        let mut announced = false;
        loop {
            if ready() {
                if announced {
                    eprintln!("{what}: ready after {}s", started.elapsed().as_secs());
                }
                return Ok(());
            }
            if self.running_pid().is_none() {
                bail!(
                    "{} exited while waiting for {what}; see {}\n{}",
                    self.name,
                    self.log_file.display(),
                    self.log_tail()
                );
            }
            if started.elapsed() > timeout {
                bail!(
                    "timed out after {}s waiting for {what}; see {}\n{}",
                    timeout.as_secs(),
                    self.log_file.display(),
                    self.log_tail()
                );
            }
            if !announced && started.elapsed() > Duration::from_secs(5) {
                eprintln!("waiting for {what} (up to {}s)...", timeout.as_secs());
                announced = true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(text) = fs::read_to_string(path) else {
        return format!("({} is empty or missing)", path.display());
    };
    let all: Vec<&str> = text.lines().collect();
    let tail = &all[all.len().saturating_sub(lines)..];
    format!(
        "---- last {} lines of {} ----\n{}",
        tail.len(),
        path.display(),
        tail.join("\n")
    )
}

/// True when nothing listens on 127.0.0.1:`port`.
pub fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// `preferred` when free, otherwise a port the kernel picks on loopback.
pub fn pick_port(preferred: u16) -> Result<u16> {
    if port_is_free(preferred) {
        return Ok(preferred);
    }
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detached_process_is_tracked_and_stopped() -> Result<()> {
        let state = std::env::temp_dir().join(format!("meridian-proc-{}", std::process::id()));
        let _ = fs::remove_dir_all(&state);
        let sleeper = Component::new(&state, "sleeper", PathBuf::from("/bin/sleep"));
        sleeper.start(&["30".to_string()])?;
        assert!(sleeper.running_pid().is_some());
        sleeper.stop(Duration::from_secs(5))?;
        assert!(sleeper.running_pid().is_none());
        assert!(!sleeper.pid_file.exists());

        let failing = Component::new(&state, "failing", PathBuf::from("/bin/sh"));
        failing.start(&["-c".to_string(), "echo boom; exit 3".to_string()])?;
        let err = failing
            .wait_until("never", Duration::from_secs(20), || false)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("exited") && err.contains("boom"), "{err}");
        fs::remove_dir_all(&state)?;
        Ok(())
    }

    #[test]
    fn pick_port_avoids_busy_ports() -> Result<()> {
        let busy = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        let port = busy.local_addr()?.port();
        assert!(!port_is_free(port));
        assert_ne!(pick_port(port)?, port);
        Ok(())
    }
}
