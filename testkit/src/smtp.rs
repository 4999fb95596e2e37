//! A real SMTP receiver on a loopback port, for tests of anything that sends mail: it speaks
//! EHLO/HELO, AUTH PLAIN and LOGIN (when credentials are set, then required before MAIL),
//! MAIL, RCPT, DATA, RSET, NOOP and QUIT, and records every accepted message. No STARTTLS:
//! clients must be allowed plain SMTP to loopback.
//!
//! ```ignore
//! let smtp = SmtpReceiver::start(SmtpOptions::default()).await?;
//! // ... configure the sender with smtp.host() and smtp.port() ...
//! let mails = smtp.wait_for(1, Duration::from_secs(10)).await?;
//! assert!(mails[0].has_part("text/html"));
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Longest command line accepted (RFC 5321 says 512; generous).
const MAX_LINE: usize = 4096;
/// Largest message accepted.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Default)]
pub struct SmtpOptions {
    /// Require AUTH (PLAIN or LOGIN) with this user name and password.
    pub credentials: Option<(String, String)>,
}

/// One message the receiver accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    pub from: String,
    pub to: Vec<String>,
    /// The DATA as sent, dot-unstuffed, lines joined with CRLF.
    pub data: String,
    /// Who authenticated, if anyone.
    pub user: Option<String>,
}

impl ReceivedMail {
    /// The first header `name` (case-insensitive) of the message, unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let mut found: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(value) = found.as_mut() {
                if line.starts_with([' ', '\t']) {
                    value.push_str(line.trim_start());
                    continue;
                }
                break;
            }
            if let Some((n, v)) = line.split_once(':')
                && n.eq_ignore_ascii_case(name)
            {
                found = Some(v.trim().to_owned());
            }
        }
        found
    }

    /// Whether a MIME part of this content type (e.g. `text/html`) is in the message.
    pub fn has_part(&self, content_type: &str) -> bool {
        let needle = format!("content-type: {}", content_type.to_ascii_lowercase());
        self.data.to_ascii_lowercase().contains(&needle)
    }
}

#[derive(Debug, Default)]
struct Shared {
    mails: Mutex<Vec<ReceivedMail>>,
    arrived: Notify,
}

/// The receiver; stops when dropped.
#[derive(Debug)]
pub struct SmtpReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for SmtpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpReceiver {
    /// Listens on a free port of 127.0.0.1.
    pub async fn start(options: SmtpOptions) -> std::io::Result<SmtpReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accept_shared = shared.clone();
        let task = tokio::spawn(async move {
            let mut sessions = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let shared = accept_shared.clone();
                let options = options.clone();
                sessions.spawn(async move {
                    let _ = session(stream, &options, &shared).await;
                });
            }
        });
        Ok(SmtpReceiver { addr, shared, task })
    }

    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every message accepted so far, in order.
    pub fn mails(&self) -> Vec<ReceivedMail> {
        self.shared
            .mails
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Waits until at least `n` messages arrived (or `timeout` passed: an error).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Result<Vec<ReceivedMail>, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            let mails = self.mails();
            if mails.len() >= n {
                return Ok(mails);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Err(format!(
                    "{} of {n} mails within {timeout:?}",
                    self.mails().len()
                ));
            }
        }
    }
}

#[derive(Default)]
struct Envelope {
    from: Option<String>,
    to: Vec<String>,
}

fn address(arg: &str) -> String {
    let arg = arg.trim();
    let inner = arg
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map_or(arg, |(a, _)| a);
    inner.to_owned()
}

fn decode_plain(b64: &str) -> Option<(String, String)> {
    let raw = B64.decode(b64.trim()).ok()?;
    let mut parts = raw.split(|b| *b == 0);
    let _authzid = parts.next()?;
    let user = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let pass = String::from_utf8(parts.next()?.to_vec()).ok()?;
    Some((user, pass))
}

fn decode_text(b64: &str) -> Option<String> {
    String::from_utf8(B64.decode(b64.trim()).ok()?).ok()
}

async fn session(stream: TcpStream, options: &SmtpOptions, shared: &Shared) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = String::new();
    let mut envelope = Envelope::default();
    let mut user: Option<String> = None;
    write
        .write_all(b"220 reap3r-testkit ESMTP ready\r\n")
        .await?;
    macro_rules! read_line {
        () => {{
            line.clear();
            let n = (&mut lines)
                .take(MAX_LINE as u64)
                .read_line(&mut line)
                .await?;
            if n == 0 {
                return Ok(());
            }
            line.trim_end_matches(['\r', '\n']).to_owned()
        }};
    }
    let check = |u: &str, p: &str| {
        options
            .credentials
            .as_ref()
            .is_some_and(|(cu, cp)| cu == u && cp == p)
    };
    loop {
        let command = read_line!();
        let (verb, arg) = command.split_once(' ').unwrap_or((command.as_str(), ""));
        let reply: String = match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                let auth = if options.credentials.is_some() {
                    "250-AUTH PLAIN LOGIN\r\n"
                } else {
                    ""
                };
                format!("250-reap3r-testkit greets {arg}\r\n250-8BITMIME\r\n{auth}250 SMTPUTF8\r\n")
            }
            "HELO" => "250 reap3r-testkit\r\n".into(),
            "AUTH" => {
                let (mechanism, initial) = arg.split_once(' ').unwrap_or((arg, ""));
                let creds = match mechanism.to_ascii_uppercase().as_str() {
                    "PLAIN" => {
                        let data = if initial.is_empty() {
                            write.write_all(b"334 \r\n").await?;
                            read_line!()
                        } else {
                            initial.to_owned()
                        };
                        decode_plain(&data)
                    }
                    "LOGIN" => {
                        write.write_all(b"334 VXNlcm5hbWU6\r\n").await?;
                        let u = read_line!();
                        write.write_all(b"334 UGFzc3dvcmQ6\r\n").await?;
                        let p = read_line!();
                        decode_text(&u).zip(decode_text(&p))
                    }
                    _ => None,
                };
                match creds {
                    Some((u, p)) if check(&u, &p) => {
                        user = Some(u);
                        "235 2.7.0 Authentication successful\r\n".into()
                    }
                    _ => "535 5.7.8 Authentication credentials invalid\r\n".into(),
                }
            }
            "MAIL" if options.credentials.is_some() && user.is_none() => {
                "530 5.7.0 Authentication required\r\n".into()
            }
            "MAIL" => {
                envelope = Envelope {
                    from: Some(address(
                        arg.trim_start_matches(|c| c != ':').trim_start_matches(':'),
                    )),
                    to: Vec::new(),
                };
                "250 2.1.0 Ok\r\n".into()
            }
            "RCPT" if envelope.from.is_none() => "503 5.5.1 MAIL first\r\n".into(),
            "RCPT" => {
                envelope.to.push(address(
                    arg.trim_start_matches(|c| c != ':').trim_start_matches(':'),
                ));
                "250 2.1.5 Ok\r\n".into()
            }
            "DATA" if envelope.to.is_empty() => "503 5.5.1 RCPT first\r\n".into(),
            "DATA" => {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut data: Vec<String> = Vec::new();
                let mut size = 0;
                loop {
                    let l = read_line!();
                    if l == "." {
                        break;
                    }
                    size += l.len() + 2;
                    if size <= MAX_MESSAGE {
                        data.push(l.strip_prefix('.').map_or(l.clone(), str::to_owned));
                    }
                }
                if size > MAX_MESSAGE {
                    "552 5.3.4 Message too big\r\n".into()
                } else {
                    let env = std::mem::take(&mut envelope);
                    let n = {
                        let mut mails = shared
                            .mails
                            .lock()
                            .map_err(|_| std::io::Error::other("receiver state poisoned"))?;
                        mails.push(ReceivedMail {
                            from: env.from.unwrap_or_default(),
                            to: env.to,
                            data: data.join("\r\n"),
                            user: user.clone(),
                        });
                        mails.len()
                    };
                    shared.arrived.notify_waiters();
                    format!("250 2.0.0 Ok: queued as {n}\r\n")
                }
            }
            "RSET" => {
                envelope = Envelope::default();
                "250 2.0.0 Ok\r\n".into()
            }
            "NOOP" => "250 2.0.0 Ok\r\n".into(),
            "QUIT" => {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => "502 5.5.2 Command not recognised\r\n".into(),
        };
        write.write_all(reply.as_bytes()).await?;
    }
}
