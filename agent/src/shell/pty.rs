//! A pseudo-terminal with a shell on it: the shell is a session leader whose controlling
//! terminal is the PTY, so window-size changes reach its foreground job as SIGWINCH and a
//! hang-up ends it; [`ShellProcess::end_session`] ends every process of the session, background jobs
//! (which job control puts in process groups of their own) included.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};

/// How long the session's processes get between SIGHUP and SIGKILL.
const HANGUP_GRACE: Duration = Duration::from_millis(500);

/// The master side of a PTY: what the shell writes, and its window size. Keystrokes go through
/// a [`Keyboard`] of their own (another descriptor of the same master; tokio's pipe ends take any
/// pollable descriptor), so a write that waits for the shell to read never holds up output.
pub(crate) struct Master {
    fd: OwnedFd,
    reader: pipe::Receiver,
}

/// Where keystrokes are written to the PTY.
pub(crate) struct Keyboard(pipe::Sender);

/// The shell on the slave side of a PTY.
pub(crate) struct ShellProcess {
    child: Child,
    pid: u32,
}

impl std::fmt::Debug for ShellProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShellProcess")
            .field("pid", &self.pid)
            .finish()
    }
}

fn winsize(cols: u16, rows: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Opens a PTY of `cols` × `rows` and starts `shell -i` on it, as the leader of a new session
/// whose controlling terminal is the PTY.
pub(crate) fn spawn(
    shell: &Path,
    cols: u16,
    rows: u16,
) -> io::Result<(Master, Keyboard, ShellProcess)> {
    {
        let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY)?;
        rustix::pty::grantpt(&master)?;
        rustix::pty::unlockpt(&master)?;
        rustix::termios::tcsetwinsize(&master, winsize(cols, rows))?;
        let name = rustix::pty::ptsname(&master, Vec::new())?;
        let slave: OwnedFd = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc_o_noctty())
            .open(Path::new(std::ffi::OsStr::from_bytes(name.as_bytes())))?
            .into();
        let ctty = slave.try_clone()?;
        let mut command = Command::new(shell);
        command
            .arg("-i")
            .env("TERM", "xterm-256color")
            .stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave))
            .kill_on_drop(true);
        #[expect(
            unsafe_code,
            reason = "a shell needs its own session with the PTY as controlling terminal; std \
                      has no safe way to make one (Command::setsid is unstable), so the child \
                      calls setsid and TIOCSCTTY between fork and exec: two syscalls, no \
                      allocation, no locks"
        )]
        unsafe {
            use std::os::unix::process::CommandExt;
            command.as_std_mut().pre_exec(move || {
                rustix::process::setsid()?;
                rustix::process::ioctl_tiocsctty(&ctty)?;
                Ok(())
            });
        }
        let child = command.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("the shell exited at once"))?;
        rustix::io::ioctl_fionbio(&master, true)?;
        let reader = pipe::Receiver::from_owned_fd_unchecked(master.try_clone()?)?;
        let writer = pipe::Sender::from_owned_fd_unchecked(master.try_clone()?)?;
        Ok((
            Master { fd: master, reader },
            Keyboard(writer),
            ShellProcess { child, pid },
        ))
    }
}

impl Master {
    /// Sets the window size; the kernel signals SIGWINCH to the foreground process group.
    pub(crate) fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        rustix::termios::tcsetwinsize(&self.fd, winsize(cols, rows))?;
        Ok(())
    }

    /// Reads output; `Ok(0)` once no process holds the terminal any more (the kernel reports
    /// that as EIO on Linux).
    pub(crate) async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.reader.readable().await?;
            match self.reader.try_read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => {
                    return Ok(0);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Keyboard {
    /// Writes all of `data` (keystrokes) to the terminal; waits while its input is full (the
    /// program in front does not read).
    pub(crate) async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            self.0.writable().await?;
            match self.0.try_write(data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl ShellProcess {
    /// The shell's process id, which is also its session and process group id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the shell to exit; its exit code, `None` when a signal ended it.
    pub(crate) async fn wait(&mut self) -> io::Result<Option<i32>> {
        Ok(self.child.wait().await?.code())
    }

    /// Ends every process of the shell's session: SIGHUP (a terminal hang-up) to each, then,
    /// after [`HANGUP_GRACE`], SIGKILL to what is left.
    pub(crate) async fn end_session(&mut self) {
        let members = session_members(self.pid);
        let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGHUP);
        for pid in &members {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGHUP);
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGCONT);
        }
        tokio::time::sleep(HANGUP_GRACE).await;
        for pid in session_members(self.pid).into_iter().chain(members) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

fn libc_o_noctty() -> i32 {
    rustix::fs::OFlags::NOCTTY.bits() as i32
}

/// The processes whose session id is `sid` (from /proc; empty where there is none).
pub(crate) fn session_members(sid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| session_of(&stat))
                == Some(sid)
        })
        .collect()
}

/// The session id in a `/proc/<pid>/stat` line: the sixth field, counted after the command
/// name (which may hold spaces and parentheses, so the count starts at its last `)`).
fn session_of(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_id_is_read_after_the_command_name() {
        let stat = "4242 (my (odd) sh) S 1 4242 4242 34816 4242 4194560 0";
        assert_eq!(session_of(stat), Some(4242));
        assert_eq!(session_of("1 (init"), None);
        assert_eq!(session_of("1 (init) S 0"), None);
    }

    #[tokio::test]
    async fn a_shell_on_a_pty_sees_its_size_and_runs_what_it_is_sent() {
        let (pty, keys, mut shell) = spawn(Path::new("/bin/sh"), 100, 40).unwrap();
        keys.write_all(b"stty size; echo mark$((6*7)); exit 3\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match tokio::time::timeout_at(deadline, pty.read(&mut buf)).await {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => panic!("read: {e}"),
            }
        }
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("40 100"), "{text}");
        assert!(text.contains("mark42"), "{text}");
        assert_eq!(shell.wait().await.unwrap(), Some(3));
    }

    #[tokio::test]
    async fn ending_the_session_kills_background_jobs_too() {
        let (pty, keys, mut shell) = spawn(Path::new("/bin/sh"), 80, 24).unwrap();
        keys.write_all(b"sleep 300 & echo bg=$!\n").await.unwrap();
        let mut out = String::new();
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let pid = loop {
            let n = tokio::time::timeout_at(deadline, pty.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            out.push_str(&String::from_utf8_lossy(&buf[..n]));
            // The terminal echoes the command line ("bg=$!") before the shell prints the pid.
            if let Some(pid) = number_after(&out, "bg=") {
                break pid;
            }
        };
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        assert!(session_members(shell.pid()).contains(&pid));
        shell.end_session().await;
        let gone = tokio::time::Instant::now() + Duration::from_secs(10);
        while is_running(pid) {
            assert!(tokio::time::Instant::now() < gone, "sleep {pid} survived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The first `<marker><digits>` followed by a line end in `text`.
    pub(crate) fn number_after(text: &str, marker: &str) -> Option<u32> {
        text.match_indices(marker).find_map(|(i, _)| {
            let rest = &text[i + marker.len()..];
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let after = rest[digits..].chars().next();
            (digits > 0 && matches!(after, Some('\r' | '\n')))
                .then(|| rest[..digits].parse().ok())
                .flatten()
        })
    }

    /// Whether `pid` is alive (not gone, not a zombie waiting for its parent).
    fn is_running(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().chars().next())
            })
            .flatten()
            .is_some_and(|state| state != 'Z')
    }
}
