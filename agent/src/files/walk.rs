//! The directory a push writes into, resolved to a file descriptor once.
//!
//! A path is looked up again by every system call that is given it: a user who owns a
//! directory on the way could swap it for a symbolic link to /etc between the checks and the
//! rename, and the root agent would rename a file over /etc/passwd. So the destination's parent
//! is walked one component at a time from `/`, each opened relative to the one before and never
//! through a link (`O_NOFOLLOW`), and everything after works relative to the last descriptor:
//! what anyone changes on the path once it was walked no longer matters.
//!
//! A symbolic link on the way is followed only if root owns it, as the kernel's
//! protected_symlinks does: merged-/usr systems have links such as /lib → usr/lib that
//! operators push under, and only root can have put a root-owned link anywhere. A link owned
//! by anyone else is refused: whoever owns it chooses where the file goes.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{CWD, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::disk::kind_of;

/// Symbolic links followed in one walk at most: the kernel's own limit (MAXSYMLINKS), which
/// also ends a loop of links.
const MAX_LINKS_FOLLOWED: usize = 40;

/// How a directory on the way is opened: readable (the last one is synced after the rename, and
/// an `O_PATH` descriptor cannot be), never through a link (a link fails the open and is then
/// looked at), and not inherited by the processes the agent's jobs start.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// How something on the way that is not a directory is opened to be looked at: `O_PATH` opens a
/// link itself (and a device without opening the device), so that what is checked is what is
/// read, whatever its name points to a moment later.
const LOOK_FLAGS: OFlags = OFlags::PATH.union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// Opens the directory `dir`, which must be absolute, walking it from `/` (see the module's
/// doc). `dest`, the destination in it, is what a refusal names.
pub(super) fn open_dir(dir: &Path, dest: &str) -> Result<OwnedFd, String> {
    let cannot = |err: Errno| format!("cannot write {dest}: {}", io::Error::from(err));
    let root = || rustix::fs::openat(CWD, "/", DIR_FLAGS, Mode::empty()).map_err(cannot);
    let mut at = root()?;
    // Where the walk stands, links resolved: what a refusal names.
    let mut walked = PathBuf::from("/");
    let mut ahead = components(dir);
    let mut followed = 0;
    while let Some(name) = ahead.pop_front() {
        let failed = match rustix::fs::openat(&at, name.as_os_str(), DIR_FLAGS, Mode::empty()) {
            Ok(next) => {
                at = next;
                if name.as_os_str() == ".." {
                    walked.pop();
                } else {
                    walked.push(&name);
                }
                continue;
            }
            Err(err) => err,
        };
        let here = walked.join(&name);
        let found = match rustix::fs::openat(&at, name.as_os_str(), LOOK_FLAGS, Mode::empty()) {
            Ok(found) => found,
            Err(Errno::NOENT) => return Err(format!("{} does not exist", here.display())),
            Err(err) => return Err(cannot(err)),
        };
        let stat = rustix::fs::fstat(&found).map_err(cannot)?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Symlink => {}
            // A directory that cannot be opened (not searchable, or it was just put there).
            FileType::Directory => return Err(cannot(failed)),
            other => {
                return Err(format!(
                    "{} is {}, not a directory",
                    here.display(),
                    kind_of(other)
                ));
            }
        }
        if stat.st_uid != 0 {
            return Err(format!(
                "{dest}: {} is a symbolic link owned by uid {}",
                here.display(),
                stat.st_uid
            ));
        }
        followed += 1;
        if followed > MAX_LINKS_FOLLOWED {
            return Err(format!(
                "{dest}: more than {MAX_LINKS_FOLLOWED} symbolic links on the way"
            ));
        }
        // Read from the link that was looked at (an empty path reads the `O_PATH` descriptor's
        // own link), not by its name again: the name may be another link by now.
        let target = rustix::fs::readlinkat(&found, "", Vec::new()).map_err(cannot)?;
        let target = PathBuf::from(OsString::from_vec(target.into_bytes()));
        if target.is_absolute() {
            at = root()?;
            walked = PathBuf::from("/");
        }
        // The link's target goes on from the directory that holds the link.
        for name in components(&target).into_iter().rev() {
            ahead.push_front(name);
        }
    }
    Ok(at)
}

/// The names to walk through, in order: `..` stays (it goes up from where the walk really is,
/// as the kernel's does), `/` and `.` go (the walk starts at `/`; `.` is where it stands).
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|component| match component {
            Component::Normal(name) => Some(name.to_owned()),
            Component::ParentDir => Some("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::target::tests::give_link;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, symlink};

    /// The inode `fd` is open on, to tell which directory a walk ended in.
    fn inode(fd: &OwnedFd) -> u64 {
        rustix::fs::fstat(fd).unwrap().st_ino
    }

    #[test]
    fn a_link_on_the_way_is_followed_only_if_root_owns_it() {
        if !crate::files::runs_as_root(module_path!()) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let victim = d.join("victim");
        fs::create_dir(&victim).unwrap();
        let victim_inode = fs::metadata(&victim).unwrap().ino();
        // A user's link, even to where root's own links go, is refused.
        let theirs = d.join("theirs");
        symlink(&victim, &theirs).unwrap();
        give_link(&theirs, 65534);
        let dest = theirs.join("passwd");
        assert_eq!(
            open_dir(&theirs, dest.to_str().unwrap()).unwrap_err(),
            format!(
                "{}: {} is a symbolic link owned by uid 65534",
                dest.display(),
                theirs.display()
            )
        );
        // Also when it is on the way rather than the directory itself.
        let below = theirs.join("sub");
        assert!(
            open_dir(&below, "x")
                .unwrap_err()
                .contains("owned by uid 65534")
        );
        // Root's links: absolute, relative, going up, a chain of them.
        fs::create_dir(d.join("deep")).unwrap();
        let links = [
            ("absolute", victim.clone()),
            ("relative", PathBuf::from("victim")),
            ("deep/up", PathBuf::from("../victim")),
            ("chain", PathBuf::from("./deep/up/")),
        ];
        for (name, target) in links {
            symlink(&target, d.join(name)).unwrap();
            let fd = open_dir(&d.join(name), "x").unwrap();
            assert_eq!(inode(&fd), victim_inode, "{name}");
        }
        // Through one to a directory further on.
        fs::create_dir(victim.join("inner")).unwrap();
        let fd = open_dir(&d.join("chain").join("inner"), "x").unwrap();
        assert_eq!(
            inode(&fd),
            fs::metadata(victim.join("inner")).unwrap().ino()
        );
        // A link to nothing names what is missing, as it really is.
        symlink(d.join("nowhere"), d.join("dangling")).unwrap();
        assert_eq!(
            open_dir(&d.join("dangling"), "x").unwrap_err(),
            format!("{} does not exist", d.join("nowhere").display())
        );
    }

    #[test]
    fn a_loop_of_links_ends_at_the_limit() {
        if !crate::files::runs_as_root(module_path!()) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let looped = dir.path().join("loop");
        symlink("loop", &looped).unwrap();
        assert_eq!(
            open_dir(&looped, "/x").unwrap_err(),
            format!("/x: more than {MAX_LINKS_FOLLOWED} symbolic links on the way")
        );
    }

    #[test]
    fn a_plain_walk_opens_the_directory_itself() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a").join("b");
        fs::create_dir_all(&sub).unwrap();
        let fd = open_dir(&sub, "x").unwrap();
        assert_eq!(inode(&fd), fs::metadata(&sub).unwrap().ino());
        assert_eq!(inode(&open_dir(Path::new("/"), "x").unwrap()), {
            fs::metadata("/").unwrap().ino()
        });
    }
}
