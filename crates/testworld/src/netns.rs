//! A named network namespace that exists exactly as long as its guard: created
//! with a unique name, deleted on drop with the namespaces named after it
//! (`<name>-…`, such as an agent's routers), also while a test unwinds from a
//! panic (a failed delete is logged, never a second panic). Code runs inside
//! it either as a closure on a scoped thread that `setns`es first, or as a
//! command under `ip netns exec`.

use std::fs::File;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

/// Where `ip netns add` pins namespaces by name.
const NETNS_RUN_DIR: &str = "/run/netns";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A command that did not run or did not succeed, with what it said.
#[derive(Debug)]
pub struct CmdError {
    pub command: String,
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for CmdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited with {:?}\nstdout: {}\nstderr: {}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

impl std::error::Error for CmdError {}

/// Runs `program args…` and returns its stdout, or what went wrong.
pub fn run_cmd(program: &str, args: &[&str]) -> Result<String, CmdError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| CmdError {
            command: command.clone(),
            status: None,
            stdout: String::new(),
            stderr: e.to_string(),
        })?;
    check(command, out)
}

fn check(command: String, out: Output) -> Result<String, CmdError> {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(CmdError {
            command,
            status: out.status.code(),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// A network namespace owned by this guard.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `<prefix><pid>-<n>` (unique across test
    /// processes and within one), with `lo` up. Keep `prefix` short.
    pub fn new(prefix: &str) -> Result<Self, CmdError> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}{}-{n}", std::process::id());
        run_cmd("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves the calling thread into this namespace. Only for threads the
    /// caller owns and does not hand back to a pool (see [`Netns::run`]).
    pub fn enter(&self) -> std::io::Result<()> {
        let file = File::open(format!("{NETNS_RUN_DIR}/{}", self.name))?;
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
    }

    /// Runs `f` on a fresh thread inside this namespace and returns its result.
    /// A panic in `f` is re-raised on the caller's thread.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        std::thread::scope(|s| {
            let handle = s.spawn(|| {
                if let Err(e) = self.enter() {
                    panic!("setns into {}: {e}", self.name);
                }
                f()
            });
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Runs `program args…` inside the namespace (`ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String, CmdError> {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        run_cmd("ip", &all)
    }

    /// Runs `ip -n <ns> args…`.
    pub fn ip(&self, args: &[&str]) -> Result<String, CmdError> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run_cmd("ip", &all)
    }

    /// Runs a shell script inside the namespace.
    pub fn sh(&self, script: &str) -> Result<String, CmdError> {
        self.exec("sh", &["-c", script])
    }

    /// Writes a sysctl of this namespace (`net.…` keys are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), CmdError> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")])
            .map(drop)
    }

    /// A command builder that will run inside the namespace (for long-running
    /// processes such as captures or agents).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Namespaces made on its behalf, named after it (a host's agent
        // names its routers `<host>-vnr-…`), go with it.
        let dependent = format!("{}-", self.name);
        for entry in std::fs::read_dir(NETNS_RUN_DIR)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&dependent)
                && let Err(e) = run_cmd("ip", &["netns", "del", &name])
            {
                eprintln!("testworld: could not delete netns {name}: {e}");
            }
        }
        if let Err(e) = run_cmd("ip", &["netns", "del", &self.name]) {
            eprintln!("testworld: could not delete netns {}: {e}", self.name);
        }
    }
}

/// Creates a veth pair with one end (`name_a`) in `a` and the other
/// (`name_b`) in `b`, both down. Names only need to be unique inside their
/// own namespace.
pub fn veth(a: &Netns, name_a: &str, b: &Netns, name_b: &str) -> Result<(), CmdError> {
    run_cmd(
        "ip",
        &[
            "link", "add", name_a, "netns", &a.name, "type", "veth", "peer", "name", name_b,
            "netns", &b.name,
        ],
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(name: &str) -> bool {
        run_cmd("ip", &["netns", "list"])
            .map(|out| {
                out.lines()
                    .any(|l| l.split_whitespace().next() == Some(name))
            })
            .unwrap_or(false)
    }

    #[test]
    fn a_namespace_lives_as_long_as_its_guard_even_through_a_panic() {
        let ns = Netns::new("twt").expect("create netns");
        let name = ns.name().to_string();
        assert!(listed(&name));
        drop(ns);
        assert!(!listed(&name));

        let name = std::sync::Mutex::new(String::new());
        let result = std::panic::catch_unwind(|| {
            let ns = Netns::new("twt").expect("create netns");
            if let Ok(mut n) = name.lock() {
                *n = ns.name().to_string();
            }
            panic!("on purpose");
        });
        assert!(result.is_err());
        let name = name.lock().map(|n| n.clone()).unwrap_or_default();
        assert!(!name.is_empty() && !listed(&name), "{name} left behind");
    }

    #[test]
    fn closures_and_commands_run_inside() {
        let a = Netns::new("twt").expect("create netns");
        let b = Netns::new("twt").expect("create netns");
        veth(&a, "va", &b, "vb").expect("veth");
        // A closure on a setns thread (and what it spawns) sees the namespace.
        let inside = a.run(|| run_cmd("ip", &["-o", "link"]).expect("ip link"));
        assert!(inside.contains("va@"), "{inside}");
        assert!(!inside.contains("vb@"), "{inside}");
        let out = b.ip(&["-o", "link"]).expect("ip link");
        assert!(out.contains("vb@"), "{out}");
        assert_eq!(a.sh("echo hi").expect("sh"), "hi\n");
    }
}
