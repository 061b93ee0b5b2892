//! Named network namespaces, as `ip netns` keeps them (a bind mount of the
//! namespace at `/run/netns/NAME`), so that an operator can `ip netns exec`
//! into a router and a namespace outlives the agent that made it (a restart
//! keeps routing). Created from a short-lived thread that `unshare`s, so the
//! agent itself never leaves its own namespace. Deletes only what it is
//! named; it never enumerates or touches namespaces by other prefixes.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// The named namespaces whose names start with `prefix`.
pub fn list(prefix: &str) -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Creates the namespace `name` (a fresh one; an existing one is kept).
pub fn create(name: &str) -> io::Result<()> {
    if is_namespace(name) {
        return Ok(());
    }
    share_netns_dir()?;
    let target = path(name);
    // A file left by a namespace whose mount is gone is reused.
    File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&target)?;
    let result = std::thread::scope(|s| {
        s.spawn(|| -> io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&target);
    }
    result
}

/// Deletes the namespace `name`: its devices go with it (a veth's peer too).
pub fn delete(name: &str) -> io::Result<()> {
    let target = path(name);
    match umount2(&target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match std::fs::remove_file(&target) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Runs `f` on a thread inside the namespace `name`; what `f` opens
/// (netlink sockets) stays bound to it.
pub fn run_in<T: Send>(name: &str, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let file = File::open(path(name))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(&file, CloneFlags::CLONE_NEWNET)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    })
}

/// Whether `name` is a mounted namespace (not a stale file).
fn is_namespace(name: &str) -> bool {
    nix::sys::statfs::statfs(&path(name))
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Makes `/run/netns` a shared mount point, as `ip netns add` does, so that
/// the namespaces mounted in it are seen from every mount namespace that
/// copies it.
fn share_netns_dir() -> io::Result<()> {
    std::fs::create_dir_all(NETNS_DIR)?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    if mount(None::<&str>, NETNS_DIR, None::<&str>, shared, None::<&str>).is_ok() {
        return Ok(());
    }
    // Not a mount point yet: make it one, then share it.
    mount(
        Some(NETNS_DIR),
        NETNS_DIR,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )?;
    mount(None::<&str>, NETNS_DIR, None::<&str>, shared, None::<&str>)?;
    Ok(())
}
