//! A push's files on disk: the destination and its directory, checked before anything is
//! written; the temporary file the bytes go to; and putting that file in place.
//!
//! The destination must be absent or a regular file (never a directory, a symbolic link, a
//! device, a FIFO or a socket: writing one of those is not replacing a file), in a directory
//! reached without following a link that anyone but root could have put on the way
//! ([`super::walk`]). Every later operation is relative to that directory's descriptor, so the
//! file lands where it was checked whatever happens to the path meanwhile. The bytes go to a
//! temporary file next to the destination, created only by this agent (`O_EXCL`, `O_NOFOLLOW`,
//! mode 0600: nobody reads a half-written file), which is renamed over the destination once
//! the whole file verified, so the destination is either the old file or the new one, never a
//! mix. A cut transfer leaves its temporary file for the resume, which keeps its whole chunks.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use reap3r_wire::{FileGrant, FileReceiver};
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Uid};
use rustix::io::Errno;
use tracing::warn;

use super::disk::{self, kind_of};
use super::walk;

/// Bytes of the destination's name kept in its temporary file's name: a name is at most 255
/// bytes, and the rest of the temporary file's name (`.`, `.reap3r-`, 32 hex digits, `.part`)
/// takes 46.
const TEMP_NAME_PREFIX_BYTES: usize = 160;
/// Mode of the temporary file while it is written.
const TEMP_MODE: u32 = 0o600;
/// Mode of a destination that did not exist before.
const NEW_FILE_MODE: u32 = 0o644;
/// Permission bits a replaced file keeps (setuid, setgid and sticky included).
const MODE_BITS: u32 = 0o7777;
/// A fresh attempt's temporary file: created here and now (`O_EXCL` fails on anything already
/// under the name, a link included), not inherited by the processes jobs start.
const CREATE_FLAGS: OFlags = OFlags::RDWR
    .union(OFlags::CREATE)
    .union(OFlags::EXCL)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
/// A cut attempt's temporary file, opened again: never through a link planted under its name;
/// `O_NONBLOCK` and `O_NOCTTY`: a FIFO or a terminal put there is opened without waiting or
/// becoming the agent's, then refused for what it is.
const RESUME_FLAGS: OFlags = OFlags::RDWR
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY)
    .union(OFlags::CLOEXEC);

/// Where a push writes: its directory, walked once, and the names in it.
#[derive(Debug)]
pub(crate) struct PushTarget {
    /// The destination, as the grant names it.
    pub(crate) path: PathBuf,
    /// The temporary file by path: for messages (and tests) only, never opened by it.
    pub(crate) temp: PathBuf,
    /// The directory: everything below is relative to it.
    dir: OwnedFd,
    name: OsString,
    temp_name: OsString,
}

/// The temporary file, opened, with what it kept of a cut attempt (whole chunks, hashed).
pub(crate) struct TempFile {
    pub(crate) file: File,
    pub(crate) kept: u64,
    pub(crate) hasher: blake3::Hasher,
}

fn cannot_write(path: &Path, err: impl Into<io::Error>) -> String {
    format!("cannot write {}: {}", path.display(), err.into())
}

/// The checks before anything is written (see the module's doc). The grant's path was checked
/// already ([`reap3r_wire::check_path`]: absolute, no `.` or `..`).
pub(crate) fn prepare_push(grant: &FileGrant) -> Result<PushTarget, String> {
    let path = Path::new(&grant.path);
    let (Some(parent), Some(name)) = (path.parent(), path.file_name().and_then(OsStr::to_str))
    else {
        return Err(format!("{} names no file", grant.path));
    };
    let dir = walk::open_dir(parent, &grant.path)?;
    // Not followed if it is a symbolic link: a link is not the file it names.
    match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => {}
            other => return Err(format!("{} is {}", grant.path, kind_of(other))),
        },
        Err(Errno::NOENT) => {}
        Err(err) => return Err(cannot_write(path, err)),
    }
    let mut end = name.len().min(TEMP_NAME_PREFIX_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let temp_name = format!(
        ".{}.reap3r-{}.part",
        &name[..end],
        hex::encode(grant.transfer_id)
    );
    Ok(PushTarget {
        path: path.to_path_buf(),
        temp: parent.join(&temp_name),
        dir,
        name: name.into(),
        temp_name: temp_name.into(),
    })
}

/// Opens (or creates) the temporary file. One that exists is a cut attempt's: it keeps whole
/// chunks only, within the cap and the promised `size`, hashed again (in pieces, as long as
/// `go_on` says so: a newer channel taking the transfer over does not wait for a read through
/// gigabytes) so that the end's check covers the whole file, and it is cut back to them. An
/// abandoned hash leaves the file as it was, for the one that took over.
pub(crate) fn open_temp(
    target: &PushTarget,
    cap: u64,
    size: u64,
    go_on: impl FnMut() -> bool,
) -> Result<TempFile, String> {
    let temp = target.temp.display();
    let cannot = |err: Errno| cannot_write(&target.path, err);
    let mode = Mode::from_raw_mode(TEMP_MODE);
    let fd = match rustix::fs::openat(&target.dir, &target.temp_name, CREATE_FLAGS, mode) {
        Ok(fd) => fd,
        Err(Errno::EXIST) => {
            rustix::fs::openat(&target.dir, &target.temp_name, RESUME_FLAGS, Mode::empty())
                .map_err(cannot)?
        }
        Err(err) => return Err(cannot(err)),
    };
    // What was opened is what counts, whatever the name is by now.
    let stat = rustix::fs::fstat(&fd).map_err(cannot)?;
    let file_type = FileType::from_raw_mode(stat.st_mode);
    if file_type != FileType::RegularFile {
        return Err(format!("{temp} is {}", kind_of(file_type)));
    }
    // Another name for the file (a hard link someone made, to it or to a file of root's) would
    // be cut and written through: only the name is removed, the file itself is not touched.
    if stat.st_nlink != 1 {
        if stat.st_nlink > 1 {
            discard(target);
        }
        return Err(format!(
            "{temp} has {} links (a hard link was made to it); it is removed, not written",
            stat.st_nlink
        ));
    }
    // Another user's file under this name could be changed after it verified.
    if stat.st_uid != rustix::process::geteuid().as_raw() {
        return Err(format!("{temp} belongs to another user"));
    }
    let file = File::from(fd);
    let held = u64::try_from(stat.st_size).unwrap_or(0);
    let kept = FileReceiver::resumable(cap, held).min(size);
    let hasher =
        disk::hash_prefix(&file, kept, go_on).map_err(|err| cannot_write(&target.path, err))?;
    file.set_len(kept)
        .map_err(|err| cannot_write(&target.path, err))?;
    Ok(TempFile { file, kept, hasher })
}

/// Puts a verified temporary file in place: on disk first, with the destination's mode and
/// owner if it existed (else [`NEW_FILE_MODE`]), renamed over it, and the directory synced so
/// that the rename survives a crash. Once renamed the push is done: a directory that cannot be
/// synced is logged, not a failure (the new file is in place; answering `Failed` would be
/// false, and the server would push again over it).
pub(crate) fn finish_push(target: &PushTarget, temp: &File) -> Result<(), String> {
    let path = target.path.display();
    let cannot = |err: Errno| cannot_write(&target.path, err);
    temp.sync_all()
        .map_err(|err| cannot_write(&target.path, err))?;
    let ours = rustix::fs::fstat(temp).map_err(cannot)?;
    // A name made for it since it was opened would keep the new file under someone else's name.
    if ours.st_nlink != 1 {
        return Err(format!(
            "{} has {} links (a hard link was made to it); it is removed, not put in place",
            target.temp.display(),
            ours.st_nlink
        ));
    }
    // Looked at again: what the destination is now is what the file replaces.
    let stat = rustix::fs::statat(&target.dir, &target.name, AtFlags::SYMLINK_NOFOLLOW);
    let (mode, owner) = match stat {
        Ok(stat) => match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => (stat.st_mode & MODE_BITS, Some((stat.st_uid, stat.st_gid))),
            other => return Err(format!("{path} is {}", kind_of(other))),
        },
        Err(Errno::NOENT) => (NEW_FILE_MODE, None),
        Err(err) => return Err(cannot(err)),
    };
    if let Some((uid, gid)) = owner {
        // Only when it differs: an agent that is not root may own the file and cannot chown.
        if (ours.st_uid, ours.st_gid) != (uid, gid) {
            let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
            rustix::fs::fchown(temp, Some(uid), Some(gid)).map_err(cannot)?;
        }
    }
    // After the owner: a chown clears the setuid and setgid bits.
    rustix::fs::fchmod(temp, Mode::from_raw_mode(mode)).map_err(cannot)?;
    rustix::fs::renameat(&target.dir, &target.temp_name, &target.dir, &target.name)
        .map_err(cannot)?;
    if let Err(err) = rustix::fs::fsync(&target.dir) {
        let err = io::Error::from(err);
        warn!(%err, %path, "the file is in place, but its directory could not be synced");
    }
    Ok(())
}

/// Removes the temporary file's name (a transfer that failed: no resume comes for it). Only
/// the name: whatever else links to the file keeps it.
pub(crate) fn discard(target: &PushTarget) {
    match rustix::fs::unlinkat(&target.dir, &target.temp_name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(err) => {
            let err = io::Error::from(err);
            warn!(%err, temp = %target.temp.display(), "cannot remove a temporary file");
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::files::tests::AGENT;
    use reap3r_wire::{FILE_CHUNK_BYTES, FileDirection};
    use std::fs::{self, Permissions};
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    pub(crate) fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 13 % 251) as u8).collect()
    }

    pub(crate) fn grant(path: &Path, data: &[u8]) -> FileGrant {
        FileGrant {
            transfer_id: [0xab; 16],
            agent_id: AGENT,
            direction: FileDirection::Push,
            path: path.to_str().unwrap().into(),
            size: Some(data.len() as u64),
            blake3: Some(*blake3::hash(data).as_bytes()),
            max_bytes: 1 << 30,
            rate_limit: 0,
            issued_at_ms: 0,
            expires_at_ms: u64::MAX,
        }
    }

    /// Gives a symbolic link itself (not what it points to) to `uid`.
    pub(crate) fn give_link(link: &Path, uid: u32) {
        let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(uid));
        let flags = AtFlags::SYMLINK_NOFOLLOW;
        rustix::fs::chownat(rustix::fs::CWD, link, Some(uid), Some(gid), flags).unwrap();
    }

    fn refusal(path: &Path) -> String {
        prepare_push(&grant(path, b"x")).unwrap_err()
    }

    #[test]
    fn destinations_that_are_not_regular_files_are_refused_with_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let sub = d.join("sub");
        fs::create_dir(&sub).unwrap();
        assert_eq!(refusal(&sub), format!("{} is a directory", sub.display()));
        // A link is refused even to a regular file: it is not followed.
        let real = d.join("real");
        fs::write(&real, b"real").unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(
            refusal(&link),
            format!("{} is a symbolic link", link.display())
        );
        assert_eq!(
            refusal(Path::new("/dev/null")),
            "/dev/null is a character device"
        );
        let fifo = d.join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        assert_eq!(refusal(&fifo), format!("{} is a FIFO", fifo.display()));
        let socket = d.join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert_eq!(
            refusal(&socket),
            format!("{} is a socket", socket.display())
        );
        let orphan = d.join("missing").join("file");
        assert_eq!(
            refusal(&orphan),
            format!("{} does not exist", d.join("missing").display())
        );
        let under_file = real.join("file");
        assert_eq!(
            refusal(&under_file),
            format!("{} is a regular file, not a directory", real.display())
        );
        // Nothing was written anywhere.
        assert_eq!(fs::read_dir(d).unwrap().count(), 5);
        // A regular file, or none: accepted, with the temporary file next to it.
        let target = prepare_push(&grant(&real, b"x")).unwrap();
        assert_eq!(
            target.temp,
            d.join(format!(".real.reap3r-{}.part", "ab".repeat(16)))
        );
        assert!(prepare_push(&grant(&d.join("new"), b"x")).is_ok());
    }

    #[test]
    fn a_long_name_keeps_its_temporary_name_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let name = "é".repeat(120); // 240 bytes, two per character
        let target = prepare_push(&grant(&dir.path().join(&name), b"x")).unwrap();
        let temp = target.temp.file_name().unwrap().len();
        assert!(temp <= 255, "{temp}");
        let temp = open_temp(&target, 1 << 30, 1, || true).unwrap();
        assert_eq!(temp.kept, 0);
    }

    #[test]
    fn a_resume_keeps_whole_chunks_only_and_cuts_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let all = data(5 * FILE_CHUNK_BYTES);
        let g = grant(&dir.path().join("f"), &all);
        let target = prepare_push(&g).unwrap();
        let held = 2 * FILE_CHUNK_BYTES + FILE_CHUNK_BYTES / 2;
        fs::write(&target.temp, &all[..held]).unwrap();
        let temp = open_temp(&target, g.max_bytes, all.len() as u64, || true).unwrap();
        let two = 2 * FILE_CHUNK_BYTES;
        assert_eq!(temp.kept, two as u64);
        assert_eq!(temp.hasher.finalize(), blake3::hash(&all[..two]));
        assert_eq!(fs::metadata(&target.temp).unwrap().len(), two as u64);
        // Within the cap too.
        let temp = open_temp(
            &target,
            FILE_CHUNK_BYTES as u64 + 1,
            all.len() as u64,
            || true,
        )
        .unwrap();
        assert_eq!(temp.kept, FILE_CHUNK_BYTES as u64);
        // A fresh temporary file is only ours to read.
        fs::remove_file(&target.temp).unwrap();
        let temp = open_temp(&target, g.max_bytes, all.len() as u64, || true).unwrap();
        assert_eq!(temp.kept, 0);
        let mode = fs::metadata(&target.temp).unwrap().mode() & MODE_BITS;
        assert_eq!(mode, TEMP_MODE);
    }

    #[test]
    fn a_link_planted_as_the_temporary_file_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let target = prepare_push(&grant(&dir.path().join("f"), b"x")).unwrap();
        std::os::unix::fs::symlink(&victim, &target.temp).unwrap();
        let why = open_temp(&target, 1 << 30, 1, || true).err().unwrap();
        assert!(why.starts_with("cannot write"), "{why}");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn a_verified_push_replaces_the_file_keeping_its_mode_and_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        let root = rustix::process::geteuid().is_root();
        if root {
            std::os::unix::fs::chown(&path, Some(1234), Some(4321)).unwrap();
        }
        let target = prepare_push(&grant(&path, b"new")).unwrap();
        let mut temp = open_temp(&target, 1 << 30, 3, || true).unwrap();
        temp.file.write_all(b"new").unwrap();
        finish_push(&target, &temp.file).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & MODE_BITS, 0o640);
        if root {
            assert_eq!((meta.uid(), meta.gid()), (1234, 4321));
        }
        assert!(!target.temp.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // A file that did not exist gets the usual mode.
        let fresh = dir.path().join("fresh");
        let target = prepare_push(&grant(&fresh, b"")).unwrap();
        let temp = open_temp(&target, 1 << 30, 0, || true).unwrap();
        finish_push(&target, &temp.file).unwrap();
        assert_eq!(
            fs::metadata(&fresh).unwrap().mode() & MODE_BITS,
            NEW_FILE_MODE
        );
    }

    #[test]
    fn a_directory_swapped_for_a_link_after_its_walk_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (sub, victim) = (d.join("sub"), d.join("victim"));
        fs::create_dir(&sub).unwrap();
        fs::create_dir(&victim).unwrap();
        fs::write(victim.join("passwd"), b"precious").unwrap();
        let target = prepare_push(&grant(&sub.join("passwd"), b"new")).unwrap();
        // Between the checks and the writes, the directory becomes a link to another one.
        fs::rename(&sub, d.join("moved")).unwrap();
        std::os::unix::fs::symlink(&victim, &sub).unwrap();
        let mut temp = open_temp(&target, 1 << 30, 3, || true).unwrap();
        temp.file.write_all(b"new").unwrap();
        finish_push(&target, &temp.file).unwrap();
        // The file went where the walk ended: the directory that was checked.
        assert_eq!(fs::read(d.join("moved").join("passwd")).unwrap(), b"new");
        assert_eq!(fs::read(victim.join("passwd")).unwrap(), b"precious");
        assert_eq!(fs::read_dir(&victim).unwrap().count(), 1);
    }

    #[test]
    fn a_hard_linked_temporary_file_is_refused_and_never_cut() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let victim = d.join("victim");
        let precious = data(FILE_CHUNK_BYTES + 100);
        fs::write(&victim, &precious).unwrap();
        let all = data(3 * FILE_CHUNK_BYTES);
        let target = prepare_push(&grant(&d.join("f"), &all)).unwrap();
        // A resume finds another name of a file of root's under the temporary file's name.
        fs::hard_link(&victim, &target.temp).unwrap();
        let why = open_temp(&target, 1 << 30, all.len() as u64, || true)
            .err()
            .unwrap();
        assert!(why.contains("has 2 links"), "{why}");
        // Only the name went: the file was neither cut back to a whole chunk nor written.
        assert!(fs::symlink_metadata(&target.temp).is_err());
        assert_eq!(fs::read(&victim).unwrap(), precious);
        assert_eq!(fs::metadata(&victim).unwrap().nlink(), 1);
        // A name made for the temporary file while it is written keeps it from its place.
        let temp = open_temp(&target, 1 << 30, all.len() as u64, || true).unwrap();
        fs::hard_link(&target.temp, d.join("grabbed")).unwrap();
        let why = finish_push(&target, &temp.file).unwrap_err();
        assert!(why.contains("has 2 links"), "{why}");
        assert!(!d.join("f").exists());
    }

    #[test]
    fn an_abandoned_resume_hash_leaves_the_temporary_file_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let all = data(5 * FILE_CHUNK_BYTES);
        let g = grant(&dir.path().join("f"), &all);
        let target = prepare_push(&g).unwrap();
        let held = 2 * FILE_CHUNK_BYTES + FILE_CHUNK_BYTES / 2;
        fs::write(&target.temp, &all[..held]).unwrap();
        let mut asked = 0;
        let abandoned = open_temp(&target, g.max_bytes, all.len() as u64, || {
            asked += 1;
            false
        });
        assert!(abandoned.is_err());
        assert_eq!(asked, 1, "asked before the first piece");
        // Not cut back: the channel that took over keeps what it finds.
        assert_eq!(fs::metadata(&target.temp).unwrap().len(), held as u64);
    }

    #[test]
    fn a_directory_that_cannot_be_synced_after_the_rename_still_completes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut target = prepare_push(&grant(&path, b"new")).unwrap();
        let mut temp = open_temp(&target, 1 << 30, 3, || true).unwrap();
        temp.file.write_all(b"new").unwrap();
        // The same directory by an `O_PATH` descriptor: everything relative to it works, but
        // it cannot be synced.
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        target.dir = rustix::fs::openat(rustix::fs::CWD, dir.path(), flags, Mode::empty()).unwrap();
        assert!(rustix::fs::fsync(&target.dir).is_err());
        assert_eq!(finish_push(&target, &temp.file), Ok(()));
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert!(!target.temp.exists());
    }
}
