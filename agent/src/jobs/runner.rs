//! Runs one child process for a job: its own process group, stdin null, stdout and stderr read
//! concurrently into capped captures (streamed as chunks while it runs), killed as a whole group
//! at the deadline or when stopped. The job's secret values are masked in both streams
//! ([`Masker`]) before anything is kept, counted or sent.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use reap3r_wire::{MAX_OUTPUT_CHUNK, OutputStream};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::mask::Masker;

/// Longest pause before buffered output is sent as a chunk.
pub(crate) const FLUSH_AFTER: Duration = Duration::from_millis(100);
/// After the main process exits, how long its pipes may stay open (held by children it left
/// behind) before the agent stops reading them.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for a killed process to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a job is being stopped before it ends by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The server cancelled it.
    Cancel,
    /// The agent is shutting down.
    Shutdown,
}

pub(crate) type StopRx = watch::Receiver<Option<Stop>>;

/// Resolves when the job is told to stop; never if the sender is gone.
pub(crate) async fn stopped(stop: &mut StopRx) -> Stop {
    let reason = match stop.wait_for(Option::is_some).await {
        Ok(reason) => *reason,
        Err(_) => None,
    };
    match reason {
        Some(reason) => reason,
        None => std::future::pending().await,
    }
}

/// What a running job reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobEvent {
    Started {
        started_at_ms: u64,
    },
    Output {
        stream: OutputStream,
        offset: u64,
        data: Vec<u8>,
    },
}

pub(crate) type Events = mpsc::UnboundedSender<JobEvent>;

/// The kept part of one output stream: at most `cap` bytes of the masked output; the rest is
/// counted and dropped.
#[derive(Debug)]
pub(crate) struct Capture {
    stream: OutputStream,
    cap: usize,
    /// Masks the job's secret values before anything is kept or counted.
    masker: Masker,
    kept: Vec<u8>,
    total: u64,
    /// Index in `kept` of the first byte not yet sent as a chunk.
    flushed: usize,
    pending_since: Option<Instant>,
}

impl Capture {
    pub(crate) fn new(stream: OutputStream, cap: usize, secrets: &[Zeroizing<Vec<u8>>]) -> Self {
        Self {
            stream,
            cap,
            masker: Masker::new(secrets.iter().map(|s| s.as_slice())),
            kept: Vec::new(),
            total: 0,
            flushed: 0,
            pending_since: None,
        }
    }

    pub(crate) fn truncated(&self) -> bool {
        self.total > self.kept.len() as u64
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.kept
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.kept
    }

    /// Takes the stream's next bytes, masked; a possible start of a secret is held back.
    fn push(&mut self, bytes: &[u8]) {
        if self.masker.is_empty() {
            self.keep(bytes);
        } else {
            let masked = self.masker.push(bytes);
            self.keep(&masked);
        }
    }

    /// The stream ended: what the masker held back is kept too.
    fn end(&mut self) {
        let rest = self.masker.finish();
        self.keep(&rest);
    }

    fn keep(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = self.cap.saturating_sub(self.kept.len());
        let take = room.min(bytes.len());
        if take > 0 {
            self.kept.extend_from_slice(&bytes[..take]);
            self.pending_since.get_or_insert_with(Instant::now);
        }
    }

    fn pending(&self) -> usize {
        self.kept.len() - self.flushed
    }

    fn flush_deadline(&self) -> Option<Instant> {
        self.pending_since.map(|t| t + FLUSH_AFTER)
    }

    /// Sends everything not yet sent, in chunks of at most [`MAX_OUTPUT_CHUNK`] bytes.
    fn flush(&mut self, events: Option<&Events>) {
        if let Some(events) = events {
            while self.flushed < self.kept.len() {
                let end = (self.flushed + MAX_OUTPUT_CHUNK).min(self.kept.len());
                let _ = events.send(JobEvent::Output {
                    stream: self.stream,
                    offset: self.flushed as u64,
                    data: self.kept[self.flushed..end].to_vec(),
                });
                self.flushed = end;
            }
        }
        self.flushed = self.kept.len();
        self.pending_since = None;
    }
}

/// Reads `reader` to its end into `capture`, sending chunks when 16 KiB are pending or the
/// oldest pending byte is 100 ms old.
async fn pump<R: AsyncRead + Unpin>(
    reader: Option<R>,
    capture: &mut Capture,
    events: Option<&Events>,
) {
    let Some(mut reader) = reader else {
        return;
    };
    // Raw output may hold a secret: the read buffer is zeroized when dropped.
    let mut buf = Zeroizing::new(vec![0u8; 8192]);
    loop {
        let deadline = if events.is_some() {
            capture.flush_deadline()
        } else {
            None
        };
        let read = match deadline {
            Some(deadline) => {
                match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
                    Ok(read) => read,
                    Err(_) => {
                        capture.flush(events);
                        continue;
                    }
                }
            }
            None => reader.read(&mut buf).await,
        };
        match read {
            Ok(0) | Err(_) => {
                capture.end();
                break;
            }
            Ok(n) => {
                capture.push(&buf[..n]);
                if capture.pending() >= MAX_OUTPUT_CHUNK {
                    capture.flush(events);
                }
            }
        }
    }
    capture.flush(events);
}

/// How the process ended.
#[derive(Debug)]
pub(crate) enum Ending {
    Exited(ExitStatus),
    TimedOut,
    Stopped(Stop),
    SpawnFailed(String),
}

#[derive(Debug)]
pub(crate) struct ProcessRun {
    pub ending: Ending,
    pub stdout: Capture,
    pub stderr: Capture,
}

/// Limits of one process run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunLimits<'a> {
    pub deadline: Instant,
    pub stdout_cap: usize,
    pub stderr_cap: usize,
    /// Whether output is streamed as [`JobEvent::Output`] while it runs.
    pub stream: bool,
    /// Values masked as `***` in both streams (the job's opened secrets).
    pub secrets: &'a [Zeroizing<Vec<u8>>],
}

/// Runs `cmd` in its own process group. `on_spawn` gets the pid (= pgid) as soon as the process
/// exists; it is where the caller records it.
pub(crate) async fn run_process(
    cmd: &mut Command,
    limits: RunLimits<'_>,
    stop: &mut StopRx,
    events: Option<&Events>,
    on_spawn: &mut (dyn FnMut(u32) + Send),
) -> ProcessRun {
    let mut stdout = Capture::new(OutputStream::Stdout, limits.stdout_cap, limits.secrets);
    let mut stderr = Capture::new(OutputStream::Stderr, limits.stderr_cap, limits.secrets);
    let stream_to = if limits.stream { events } else { None };
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(reason) = *stop.borrow() {
        return ProcessRun {
            ending: Ending::Stopped(reason),
            stdout,
            stderr,
        };
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(err) => {
            let program = cmd.as_std().get_program().to_string_lossy().into_owned();
            return ProcessRun {
                ending: Ending::SpawnFailed(format!("cannot start {program}: {err}")),
                stdout,
                stderr,
            };
        }
    };
    let pid = child.id();
    if let Some(pid) = pid {
        on_spawn(pid);
    }
    let out_pipe = child.stdout.take();
    let err_pipe = child.stderr.take();
    let ending = {
        let readers = async {
            tokio::join!(
                pump(out_pipe, &mut stdout, stream_to),
                pump(err_pipe, &mut stderr, stream_to)
            )
        };
        tokio::pin!(readers);
        let mut readers_done = false;
        let ending = loop {
            tokio::select! {
                _ = &mut readers, if !readers_done => readers_done = true,
                status = child.wait() => break match status {
                    Ok(status) => Ending::Exited(status),
                    Err(err) => Ending::SpawnFailed(format!("cannot wait for the process: {err}")),
                },
                _ = tokio::time::sleep_until(limits.deadline) => break Ending::TimedOut,
                reason = stopped(stop) => break Ending::Stopped(reason),
            }
        };
        if matches!(ending, Ending::TimedOut | Ending::Stopped(_)) {
            if let Some(pid) = pid {
                kill_group(pid);
            }
            let _ = child.start_kill();
            let _ = tokio::time::timeout(REAP_TIMEOUT, child.wait()).await;
        }
        if !readers_done {
            let _ = tokio::time::timeout(DRAIN_GRACE, &mut readers).await;
        }
        ending
    };
    // Whatever the readers had not sent yet (if they were cut off by the grace), with what the
    // maskers still held (nothing if the streams ended).
    stdout.end();
    stderr.end();
    stdout.flush(stream_to);
    stderr.flush(stream_to);
    ProcessRun {
        ending,
        stdout,
        stderr,
    }
}

/// SIGKILLs the process group `pgid`; refuses 0 and 1 (ourselves, init), which are never a job.
pub(crate) fn kill_group(pgid: u32) -> bool {
    let Ok(raw) = i32::try_from(pgid) else {
        return false;
    };
    if raw <= 1 {
        return false;
    }
    killpg(Pid::from_raw(raw), Signal::SIGKILL).is_ok()
}

/// Whether any process of group `pgid` exists.
pub(crate) fn group_exists(pgid: u32) -> bool {
    match i32::try_from(pgid) {
        Ok(raw) if raw > 1 => killpg(Pid::from_raw(raw), None).is_ok(),
        _ => false,
    }
}

/// Whether process `pid` exists and is not a zombie.
pub(crate) fn process_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if kill(Pid::from_raw(raw), None).is_err() {
        return false;
    }
    !matches!(proc_stat(pid), Some((state, _)) if state == "Z" || state == "X")
}

/// State letter and start time (clock ticks since boot) of `pid`, from `/proc/<pid>/stat`.
pub(crate) fn proc_stat(pid: u32) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces; fields follow the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; field 22 (starttime) is fields[19].
    let state = fields.first()?.to_string();
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// The kernel's boot id (changes at every boot); empty if unknown.
pub(crate) fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// How an exit status reads in a result: exit code, and an error when a signal ended it.
pub(crate) fn describe_exit(status: ExitStatus) -> (Option<i32>, Option<String>) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (Some(code), None),
        (None, Some(sig)) => {
            let name = Signal::try_from(sig)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| format!("signal {sig}"));
            (None, Some(format!("killed by {name}")))
        }
        (None, None) => (None, Some("ended without an exit code".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(timeout: Duration, stream: bool) -> RunLimits<'static> {
        RunLimits {
            deadline: Instant::now() + timeout,
            stdout_cap: reap3r_wire::MAX_STDOUT_BYTES as usize,
            stderr_cap: reap3r_wire::MAX_STDERR_BYTES as usize,
            stream,
            secrets: &[],
        }
    }

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script);
        cmd
    }

    async fn run(script: &str, timeout: Duration) -> (ProcessRun, Vec<JobEvent>, Vec<u32>) {
        let (_stop_tx, mut stop) = watch::channel(None);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut pids = Vec::new();
        let run = run_process(
            &mut sh(script),
            limits(timeout, true),
            &mut stop,
            Some(&tx),
            &mut |pid| pids.push(pid),
        )
        .await;
        drop(tx);
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        (run, events, pids)
    }

    fn joined(events: &[JobEvent], which: OutputStream) -> Vec<u8> {
        let mut out = Vec::new();
        for e in events {
            if let JobEvent::Output {
                stream,
                offset,
                data,
            } = e
                && *stream == which
            {
                assert_eq!(*offset, out.len() as u64, "chunks are contiguous");
                assert!(data.len() <= MAX_OUTPUT_CHUNK);
                assert!(!data.is_empty());
                out.extend_from_slice(data);
            }
        }
        out
    }

    #[tokio::test]
    async fn exit_codes_and_capture() {
        let (run, events, pids) =
            run("echo out; echo err >&2; exit 3", Duration::from_secs(10)).await;
        let Ending::Exited(status) = run.ending else {
            panic!("{:?}", run.ending)
        };
        assert_eq!(describe_exit(status), (Some(3), None));
        assert_eq!(run.stdout.bytes(), b"out\n");
        assert_eq!(run.stderr.bytes(), b"err\n");
        assert!(!run.stdout.truncated() && !run.stderr.truncated());
        assert_eq!(joined(&events, OutputStream::Stdout), b"out\n");
        assert_eq!(joined(&events, OutputStream::Stderr), b"err\n");
        assert_eq!(pids.len(), 1);

        let (run, _, _) = run_ok("true").await;
        let Ending::Exited(status) = run.ending else {
            panic!()
        };
        assert_eq!(describe_exit(status), (Some(0), None));
    }

    async fn run_ok(script: &str) -> (ProcessRun, Vec<JobEvent>, Vec<u32>) {
        run(script, Duration::from_secs(10)).await
    }

    #[tokio::test]
    async fn output_past_the_caps_is_dropped_and_flagged() {
        // 100 000 bytes on stdout, 40 000 on stderr.
        let (run, events, _) = run_ok(
            "head -c 100000 /dev/zero | tr '\\0' a; head -c 40000 /dev/zero | tr '\\0' b >&2",
        )
        .await;
        assert!(matches!(run.ending, Ending::Exited(s) if s.success()));
        assert!(run.stdout.truncated());
        assert!(run.stderr.truncated());
        assert_eq!(run.stdout.bytes().len(), 64 * 1024);
        assert_eq!(run.stderr.bytes().len(), 32 * 1024);
        assert!(run.stdout.bytes().iter().all(|b| *b == b'a'));
        // The live chunks are exactly the kept bytes.
        assert_eq!(joined(&events, OutputStream::Stdout), run.stdout.bytes());
        assert_eq!(joined(&events, OutputStream::Stderr), run.stderr.bytes());
    }

    #[tokio::test]
    async fn secrets_are_masked_in_the_chunks_and_the_capture_before_the_caps() {
        let secrets = [
            Zeroizing::new(b"s3cr3t-value".to_vec()),
            Zeroizing::new(vec![b'k'; 1000]),
        ];
        let (_stop_tx, mut stop) = watch::channel(None);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let limits = RunLimits {
            secrets: &secrets,
            ..limits(Duration::from_secs(10), true)
        };
        // The value is cut across two writes 300 ms apart (a flush goes out in between); the
        // second secret fills 100 KB of stderr, more than its cap, and masks to one run.
        let script = "printf 'pw=s3cr'; sleep 0.3; printf '3t-value\n'; \
                      head -c 100000 /dev/zero | tr '\\0' k >&2";
        let run = run_process(&mut sh(script), limits, &mut stop, Some(&tx), &mut |_| {}).await;
        drop(tx);
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        assert_eq!(run.stdout.bytes(), b"pw=***\n");
        assert_eq!(joined(&events, OutputStream::Stdout), b"pw=***\n");
        assert!(
            events
                .iter()
                .filter(|e| matches!(
                    e,
                    JobEvent::Output {
                        stream: OutputStream::Stdout,
                        ..
                    }
                ))
                .count()
                >= 2,
            "streamed in more than one chunk: {events:?}"
        );
        assert_eq!(run.stderr.bytes(), b"***");
        assert!(!run.stderr.truncated(), "masked before the cap counts");
        assert_eq!(joined(&events, OutputStream::Stderr), b"***");
    }

    #[tokio::test]
    async fn slow_output_is_sent_in_timely_chunks() {
        let (run, events, _) = run_ok("echo a; sleep 0.4; echo b").await;
        assert_eq!(run.stdout.bytes(), b"a\nb\n");
        let chunks = events
            .iter()
            .filter(|e| matches!(e, JobEvent::Output { .. }))
            .count();
        assert_eq!(chunks, 2, "{events:?}");
    }

    #[tokio::test]
    async fn a_signal_leaves_no_exit_code_and_names_the_signal() {
        let (run, _, _) = run_ok("kill -TERM $$").await;
        let Ending::Exited(status) = run.ending else {
            panic!()
        };
        assert_eq!(
            describe_exit(status),
            (None, Some("killed by SIGTERM".into()))
        );
    }

    fn grandchild_of(pid: u32) -> Option<u32> {
        // The script records its background child's pid in a file named after itself.
        let text = std::fs::read_to_string(format!("/tmp/reap3r-test-grandchild-{pid}")).ok()?;
        text.trim().parse().ok()
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let started = std::time::Instant::now();
        let (run, _, pids) = run(
            "sleep 300 & echo $! > /tmp/reap3r-test-grandchild-$$; sleep 300",
            Duration::from_millis(1500),
        )
        .await;
        assert!(matches!(run.ending, Ending::TimedOut), "{:?}", run.ending);
        assert!(started.elapsed() < Duration::from_secs(10));
        let leader = pids[0];
        let grandchild = grandchild_of(leader).expect("grandchild pid recorded");
        let _ = std::fs::remove_file(format!("/tmp/reap3r-test-grandchild-{leader}"));
        // Orphans are reaped by init; give it a moment.
        for _ in 0..50 {
            if !process_alive(grandchild) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !process_alive(grandchild),
            "grandchild {grandchild} survived"
        );
        assert!(!process_alive(leader));
        assert!(live_members(leader).is_empty());
    }

    /// Live (non-zombie) processes whose process group is `pgid`. (Killed orphans may stay
    /// zombies for a while: init in some sandboxes does not reap them.)
    fn live_members(pgid: u32) -> Vec<u32> {
        let mut live = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(close) = text.rfind(')') else {
                continue;
            };
            let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
            if fields.get(2) == Some(&pgid.to_string().as_str()) && fields[0] != "Z" {
                live.push(pid);
            }
        }
        live
    }

    #[tokio::test]
    async fn stop_kills_the_group() {
        let (stop_tx, mut stop) = watch::channel(None);
        let mut pids = Vec::new();
        let stopper = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = stop_tx.send(Some(Stop::Cancel));
        };
        let mut cmd = sh("sleep 300 & echo $! > /tmp/reap3r-test-grandchild-$$; sleep 300");
        let mut on_spawn = |pid| pids.push(pid);
        let (run, ()) = tokio::join!(
            run_process(
                &mut cmd,
                limits(Duration::from_secs(60), false),
                &mut stop,
                None,
                &mut on_spawn,
            ),
            stopper
        );
        assert!(matches!(run.ending, Ending::Stopped(Stop::Cancel)));
        let leader = pids[0];
        let grandchild = grandchild_of(leader);
        let _ = std::fs::remove_file(format!("/tmp/reap3r-test-grandchild-{leader}"));
        for _ in 0..50 {
            if live_members(leader).is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(live_members(leader).is_empty());
        if let Some(g) = grandchild {
            assert!(!process_alive(g));
        }
    }

    #[tokio::test]
    async fn spawn_failure_is_reported() {
        let (_tx, mut stop) = watch::channel(None);
        let run = run_process(
            &mut Command::new("/nonexistent/reap3r-nothing"),
            limits(Duration::from_secs(5), false),
            &mut stop,
            None,
            &mut |_| {},
        )
        .await;
        assert!(matches!(run.ending, Ending::SpawnFailed(ref e) if e.contains("cannot start")));
    }

    #[test]
    fn proc_stat_reads_our_own_process() {
        let (state, start) = proc_stat(std::process::id()).unwrap();
        assert!(!state.is_empty());
        assert!(start > 0);
        assert!(process_alive(std::process::id()));
        assert!(!kill_group(0) && !kill_group(1));
    }
}
