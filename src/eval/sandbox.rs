//! The limited child process that runs generated Python: generated code never runs in
//! the orchestra's process. Owns the limits, the isolation and the verdict of one run;
//! it knows nothing of benchmarks (the suites build the program, this runs it).
//!
//! One run: a fresh empty temporary folder as the working folder and `HOME`, a cleared
//! environment (a short `PATH`, `LANG`), `python3 -I` (no user site, no `PYTHON*`
//! variables) reading the program from stdin, its own session and process group, and
//! `setrlimit` limits on CPU time, address space, file size and processes. Where the
//! kernel lets it, the child also leaves the network (`unshare(CLONE_NEWNET)`, or a new
//! user namespace with it for an unprivileged user), and a child of root runs as
//! `nobody`, so the file system's own permissions protect everything outside its folder
//! (and the process limit binds: it never binds for root). Python's destructive
//! functions are switched off before the program runs ([`Sandbox::guard`]). A wall-clock
//! deadline kills the whole process group.
//!
//! ```no_run
//! use orchestra::eval::Sandbox;
//! let outcome = Sandbox::default().run_python("assert 1 + 1 == 2").unwrap();
//! assert!(outcome.passed);
//! ```

use std::io::{Read, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Bytes of stdout and stderr kept (the last ones).
const TAIL: usize = 2048;

/// The uid and gid a child of root runs as (`nobody`).
const NOBODY: u32 = 65534;

/// Limits of one run. `Default` suits HumanEval-sized programs.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// Wall-clock limit; past it the process group is killed ([`Status::Timeout`]).
    pub timeout: Duration,
    /// CPU-time limit (`RLIMIT_CPU`, whole seconds, at least 1).
    pub cpu: Duration,
    /// Address-space limit in bytes (`RLIMIT_AS`).
    pub memory: u64,
    /// Largest file the program may write, in bytes (`RLIMIT_FSIZE`).
    pub file_size: u64,
    /// Processes (`RLIMIT_NPROC`). Counted per user: it binds for a child that runs as
    /// `nobody` (orchestra started as root) or as an ordinary user, where it counts that
    /// user's other processes too.
    pub processes: u64,
    /// The interpreter; `None` finds one (`$ORCHESTRA_PYTHON`, `python3` on `PATH`,
    /// `/usr/bin/python3`).
    pub python: Option<PathBuf>,
    /// Switch off Python's destructive functions (deleting, renaming, killing, spawning,
    /// `ctypes`) before the program runs. Off only to test the operating system's limits.
    pub guard: bool,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            timeout: Duration::from_secs(10),
            cpu: Duration::from_secs(10),
            memory: 1 << 30,
            file_size: 16 << 20,
            processes: 32,
            python: None,
            guard: true,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Exit status 0 and the harness's end marker printed: every statement ran.
    Passed,
    /// It ended on its own without passing (an assertion, an exception, a bad exit).
    Failed,
    /// Killed at the wall-clock deadline.
    Timeout,
    /// Stopped by the CPU-time limit (`SIGXCPU`).
    CpuLimit,
    /// Ran out of the address space it was given (`MemoryError`).
    MemoryLimit,
    /// Wrote past the file-size limit (`SIGXFSZ`, or `EFBIG` where the signal is ignored).
    FileSizeLimit,
    /// Ended by another signal.
    Killed,
    /// Stopped because the caller gave up ([`Sandbox::run_python_until`]).
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::Timeout => "timeout",
            Status::CpuLimit => "cpu_limit",
            Status::MemoryLimit => "memory_limit",
            Status::FileSizeLimit => "file_size_limit",
            Status::Killed => "killed",
            Status::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the kernel granted a run, beyond the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Isolation {
    /// The child left the network (a network namespace of its own: loopback only).
    pub network_dropped: bool,
    /// The uid the child ran as, when it was switched away from root.
    pub ran_as: Option<u32>,
}

/// The result of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub passed: bool,
    pub status: Status,
    /// The exit status, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    pub elapsed_ms: f64,
    /// The last bytes of stderr (a traceback's last lines).
    pub stderr_tail: String,
    pub stdout_tail: String,
    pub isolation: Isolation,
}

/// Why a program could not be run at all (its own failures are an [`Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "no Python interpreter found for the sandbox: install `python3`, or point `ORCHESTRA_PYTHON` at one"
    )]
    NoPython,
    #[error("cannot create the sandbox's temporary folder: {0}")]
    TempDir(#[source] std::io::Error),
    #[error("cannot start `{python}` in the sandbox: {source}")]
    Spawn {
        python: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Sandbox {
    /// Runs `source` as a Python program under the limits and waits for it (blocking;
    /// call it from `spawn_blocking` in async code).
    pub fn run_python(&self, source: &str) -> Result<Outcome, SandboxError> {
        self.run_python_until(source, &AtomicBool::new(false))
    }

    /// [`Sandbox::run_python`] that also ends (the whole process group killed,
    /// [`Status::Stopped`]) as soon as `stop` is set: a caller that gives up (Ctrl-C)
    /// leaves nothing running.
    pub fn run_python_until(
        &self,
        source: &str,
        stop: &AtomicBool,
    ) -> Result<Outcome, SandboxError> {
        let as_root = unsafe { libc::geteuid() } == 0;
        let (python, ran_as) = match &self.python {
            Some(p) => (
                p.clone(),
                (as_root && usable_by_others(p)).then_some(NOBODY),
            ),
            None => match (as_root, find_python(true), find_python(false)) {
                (true, Some(p), _) => (p, Some(NOBODY)),
                (_, _, Some(p)) => (p, None),
                _ => return Err(SandboxError::NoPython),
            },
        };
        let dir = tempfile::Builder::new()
            .prefix("orchestra-sandbox-")
            .tempdir()
            .map_err(SandboxError::TempDir)?;
        if ran_as.is_some() {
            let c = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes())
                .map_err(|e| SandboxError::TempDir(std::io::Error::other(e)))?;
            // SAFETY: a valid NUL-terminated path.
            if unsafe { libc::chown(c.as_ptr(), NOBODY, NOBODY) } != 0 {
                return Err(SandboxError::TempDir(std::io::Error::last_os_error()));
            }
            let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700));
        }
        let marker = end_marker();
        let program = self.program(source, &marker);

        // The child reports whether it left the network through this pipe; the write
        // end is close-on-exec, so the read ends once Python starts (or fails to).
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(SandboxError::TempDir(std::io::Error::last_os_error()));
        }
        let (report_r, report_w) = (fds[0], fds[1]);

        let mut cmd = Command::new(&python);
        cmd.arg("-I")
            .arg("-")
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", dir.path())
            .env("TMPDIR", dir.path())
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let limits = Limits {
            cpu: self.cpu.as_secs().max(1),
            memory: self.memory,
            file_size: self.file_size,
            processes: self.processes,
        };
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe system calls (no allocation, no locks).
        unsafe {
            cmd.pre_exec(move || limits.enter(ran_as, report_w));
        }
        let started = Instant::now();
        let spawned = cmd.spawn();
        // SAFETY: our copy of the write end; the child has its own until exec.
        unsafe { libc::close(report_w) };
        let mut child = match spawned {
            Ok(c) => c,
            Err(source) => {
                unsafe { libc::close(report_r) };
                return Err(SandboxError::Spawn { python, source });
            }
        };
        let mut report = [0u8; 1];
        // SAFETY: reading one byte into a one-byte buffer from our pipe.
        let got = unsafe { libc::read(report_r, report.as_mut_ptr().cast(), 1) };
        unsafe { libc::close(report_r) };
        let network_dropped = got == 1 && report[0] == b'n';
        let pid = child.id() as i32;

        let mut stdin = child.stdin.take().expect("piped stdin");
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(program.as_bytes());
        });
        let out_tail = tail_reader(child.stdout.take().expect("piped stdout"));
        let err_tail = tail_reader(child.stderr.take().expect("piped stderr"));

        let deadline = started + self.timeout;
        let mut timed_out = false;
        let mut stopped = false;
        loop {
            if exited_unreaped(pid) {
                break;
            }
            if stop.load(Ordering::Relaxed) {
                stopped = true;
                break;
            }
            if Instant::now() >= deadline {
                timed_out = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // The whole group goes, whether the leader ended or not: no child it started
        // outlives the run.
        // SAFETY: the child leads its own process group (setsid), and is not reaped yet,
        // so its id cannot have been reused.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let status = child.wait().map_err(|source| SandboxError::Spawn {
            python: python.clone(),
            source,
        })?;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        let _ = writer.join();
        let stdout_tail = out_tail.finish();
        let stderr_tail = err_tail.finish();

        let finished = stdout_tail.trim_end().ends_with(&marker);
        let signal = status.signal();
        let exit_code = status.code();
        let status = if stopped {
            Status::Stopped
        } else if timed_out {
            Status::Timeout
        } else if exit_code == Some(0) && finished {
            Status::Passed
        } else if signal == Some(libc::SIGXCPU) {
            Status::CpuLimit
        } else if signal == Some(libc::SIGXFSZ) || stderr_tail.contains("[Errno 27]") {
            // Python ignores SIGXFSZ: the write fails with EFBIG instead.
            Status::FileSizeLimit
        } else if stderr_tail.contains("MemoryError") {
            Status::MemoryLimit
        } else if signal.is_some() {
            Status::Killed
        } else {
            Status::Failed
        };
        let stdout_tail = stdout_tail.replace(&marker, "");
        Ok(Outcome {
            passed: status == Status::Passed,
            status,
            exit_code,
            signal,
            elapsed_ms,
            stderr_tail,
            stdout_tail,
            isolation: Isolation {
                network_dropped,
                ran_as,
            },
        })
    }

    /// Whether the process limit binds for a child started from this process (not for
    /// a child running as root).
    pub fn limits_processes(&self) -> bool {
        let as_root = unsafe { libc::geteuid() } == 0;
        !as_root
            || match &self.python {
                Some(p) => usable_by_others(p),
                None => find_python(true).is_some(),
            }
    }

    /// The program Python runs: the guard (when on), `source`, then the end marker
    /// (printed only if every statement before it ran).
    fn program(&self, source: &str, marker: &str) -> String {
        let mut p = String::new();
        if self.guard {
            p.push_str(GUARD);
        }
        p.push_str(source);
        p.push_str(&format!(
            "\n\n__import__('sys').stdout.write('\\n{marker}\\n')\n"
        ));
        p
    }
}

/// Runs before the program: makes the functions that delete, rename, kill or spawn
/// unusable (they become `None`), and `ctypes` unimportable. Limits and the user
/// switch are the real walls; this stops honest mistakes and the obvious attempts.
const GUARD: &str = r#"def _orchestra_guard():
    import builtins, os, shutil, subprocess, sys
    try:
        import posix
    except ImportError:
        posix = None
    names = (
        "kill", "killpg", "fork", "forkpty", "system", "popen", "putenv", "unsetenv",
        "remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace",
        "truncate", "ftruncate", "chmod", "fchmod", "lchmod", "chown", "fchown", "lchown",
        "chroot", "chdir", "fchdir", "link", "symlink", "setuid", "setgid", "setsid",
        "execv", "execve", "execl", "execle", "execlp", "execvp", "execvpe",
        "spawnv", "spawnve", "spawnl", "spawnle", "spawnlp", "spawnvp", "posix_spawn",
        "posix_spawnp", "_exit", "abort", "register_at_fork",
    )
    for module in (os, posix):
        if module is None:
            continue
        for name in names:
            if hasattr(module, name):
                setattr(module, name, None)
    for name in ("rmtree", "move", "chown"):
        setattr(shutil, name, None)
    subprocess.Popen = None
    subprocess.run = subprocess.call = subprocess.check_call = subprocess.check_output = None
    for name in ("ctypes", "_ctypes", "_posixsubprocess", "multiprocessing", "resource"):
        sys.modules[name] = None
    builtins.exit = builtins.quit = None
_orchestra_guard()
del _orchestra_guard

"#;

/// A line the program prints last; a program that ends early (even with status 0)
/// never prints it. Random per run, so a program cannot print it itself.
fn end_marker() -> String {
    use rand::Rng as _;
    let n: u128 = rand::rng().random();
    format!("orchestra-sandbox-end-{n:032x}")
}

/// Whether the process `pid` has ended, without reaping it (so its process group
/// id stays ours to kill).
fn exited_unreaped(pid: i32) -> bool {
    // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if r != 0 {
        // Not our child any more (or never was): nothing to wait for.
        return true;
    }
    // SAFETY: waitid filled `info` (si_pid stays 0 when nothing changed).
    unsafe { info.si_pid() != 0 }
}

#[derive(Clone, Copy)]
struct Limits {
    cpu: u64,
    memory: u64,
    file_size: u64,
    processes: u64,
}

impl Limits {
    /// In the forked child: a session of its own, the limits, the network namespace,
    /// the user switch; reports `n` (network dropped) or `k` (kept) on `report`.
    /// Async-signal-safe calls only.
    fn enter(self, ran_as: Option<u32>, report: i32) -> std::io::Result<()> {
        let err = std::io::Error::last_os_error;
        unsafe {
            if libc::setsid() < 0 {
                return Err(err());
            }
            let set = |what, n: u64| {
                let lim = libc::rlimit {
                    rlim_cur: n as libc::rlim_t,
                    rlim_max: n as libc::rlim_t,
                };
                libc::setrlimit(what, &lim)
            };
            // The hard CPU limit one second past the soft one: SIGXCPU first, which
            // tells a CPU stop from any other kill.
            let cpu = libc::rlimit {
                rlim_cur: self.cpu as libc::rlim_t,
                rlim_max: (self.cpu + 1) as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_CPU, &cpu) != 0
                || set(libc::RLIMIT_AS, self.memory) != 0
                || set(libc::RLIMIT_FSIZE, self.file_size) != 0
                || set(libc::RLIMIT_CORE, 0) != 0
            {
                return Err(err());
            }
            // Root may leave the network directly; anyone else needs a user namespace
            // of its own first (refused on some kernels: then the network stays).
            let dropped = libc::unshare(libc::CLONE_NEWNET) == 0
                || (ran_as.is_none()
                    && libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) == 0);
            if let Some(id) = ran_as
                && (libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(id) != 0
                    || libc::setuid(id) != 0)
            {
                return Err(err());
            }
            // After the switch: as root it would not bind anyway.
            if set(libc::RLIMIT_NPROC, self.processes) != 0 {
                return Err(err());
            }
            let byte = if dropped { b'n' } else { b'k' };
            libc::write(report, (&byte as *const u8).cast(), 1);
        }
        Ok(())
    }
}

/// Reads a pipe to its end on a thread, keeping the last [`TAIL`] bytes.
struct TailReader {
    kept: Arc<Mutex<Vec<u8>>>,
    done: std::sync::mpsc::Receiver<()>,
}

fn tail_reader(mut pipe: impl Read + Send + 'static) -> TailReader {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let (tx, done) = std::sync::mpsc::channel();
    let shared = kept.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            let mut k = shared.lock().unwrap();
            k.extend_from_slice(&buf[..n]);
            if k.len() > 4 * TAIL {
                let cut = k.len() - TAIL;
                k.drain(..cut);
            }
        }
        let _ = tx.send(());
    });
    TailReader { kept, done }
}

impl TailReader {
    /// What was kept; waits a moment for the pipe to close (a process that escaped the
    /// group may hold it open: then what arrived so far).
    fn finish(self) -> String {
        let _ = self.done.recv_timeout(Duration::from_secs(1));
        let k = self.kept.lock().unwrap();
        let start = k.len().saturating_sub(TAIL);
        String::from_utf8_lossy(&k[start..]).into_owned()
    }
}

/// A Python interpreter; with `for_others`, one that `nobody` may run (every folder
/// above it searchable by others).
fn find_python(for_others: bool) -> Option<PathBuf> {
    static FOUND: OnceLock<[Option<PathBuf>; 2]> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let candidates = python_candidates();
        [
            candidates.iter().find(|p| usable_by_others(p)).cloned(),
            candidates.first().cloned(),
        ]
    });
    found[if for_others { 0 } else { 1 }].clone()
}

fn python_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("ORCHESTRA_PYTHON") {
        out.push(PathBuf::from(p));
    }
    // `python3` on PATH may be a shim (pyenv): ask it for the real interpreter, which
    // runs with a cleared environment.
    if let Ok(o) = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .stderr(Stdio::null())
        .output()
        && o.status.success()
    {
        let p = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if !p.is_empty() {
            out.push(PathBuf::from(p));
        }
    }
    for p in ["/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"] {
        out.push(PathBuf::from(p));
    }
    out.into_iter()
        .filter_map(|p| std::fs::canonicalize(&p).ok())
        .filter(|p| p.is_file())
        .collect()
}

/// Whether others may execute `path`: the file and every folder above it.
fn usable_by_others(path: &Path) -> bool {
    let Ok(path) = std::fs::canonicalize(path) else {
        return false;
    };
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode());
    if !mode(&path).is_ok_and(|m| m & 0o001 != 0) {
        return false;
    }
    path.ancestors()
        .skip(1)
        .all(|d| mode(d).is_ok_and(|m| m & 0o001 != 0))
}
