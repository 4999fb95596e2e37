//! A real SMTP receiver on a loopback port, for tests of anything that sends mail: it speaks
//! EHLO/HELO, AUTH PLAIN and LOGIN (when credentials are set, then required before MAIL),
//! MAIL, RCPT, DATA, RSET, NOOP and QUIT, and records every accepted message. With
//! [`SmtpReceiver::start_tls`] it also speaks TLS with a certificate the test chose (see
//! `tls.rs`): STARTTLS (then required before AUTH and MAIL, as real submission servers do) or
//! TLS from the first byte (implicit TLS, "SMTPS"); each mail records whether it came over TLS.
//!
//! ```text
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
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::tls::ServerCert;

/// Longest command line accepted (RFC 5321 says 512; generous).
const MAX_LINE: usize = 4096;
/// Largest message accepted.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Default)]
pub struct SmtpOptions {
    /// Require AUTH (PLAIN or LOGIN) with this user name and password.
    pub credentials: Option<(String, String)>,
}

/// How a TLS receiver ([`SmtpReceiver::start_tls`]) offers TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTlsMode {
    /// Plain at first; STARTTLS is offered and required before AUTH and MAIL.
    Starttls,
    /// TLS from the first byte.
    Implicit,
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
    /// Whether the message came over TLS (after STARTTLS, or implicit TLS).
    pub tls: bool,
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

/// What a session offers: its options and, for a TLS receiver, how and with what certificate.
#[derive(Clone)]
struct Offer {
    options: SmtpOptions,
    tls: Option<(SmtpTlsMode, TlsAcceptor)>,
}

impl SmtpReceiver {
    /// Listens on a free port of 127.0.0.1, plain SMTP only.
    pub async fn start(options: SmtpOptions) -> std::io::Result<SmtpReceiver> {
        Self::listen(Offer { options, tls: None }).await
    }

    /// Listens on a free port of 127.0.0.1 with TLS (`mode`), presenting `cert`.
    pub async fn start_tls(
        options: SmtpOptions,
        mode: SmtpTlsMode,
        cert: &ServerCert,
    ) -> std::io::Result<SmtpReceiver> {
        let config = cert.server_config().map_err(std::io::Error::other)?;
        Self::listen(Offer {
            options,
            tls: Some((mode, TlsAcceptor::from(config))),
        })
        .await
    }

    async fn listen(offer: Offer) -> std::io::Result<SmtpReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accept_shared = shared.clone();
        let task = tokio::spawn(async move {
            let mut sessions = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let shared = accept_shared.clone();
                let offer = offer.clone();
                sessions.spawn(async move {
                    let _ = session(stream, &offer, &shared).await;
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

/// How a conversation ended.
enum End {
    /// The client quit or hung up.
    Closed,
    /// The client asked for STARTTLS and was told to go ahead: the stream is to be upgraded.
    StartTls,
}

async fn session(mut stream: TcpStream, offer: &Offer, shared: &Shared) -> std::io::Result<()> {
    let greeting = b"220 reap3r-testkit ESMTP ready\r\n";
    match &offer.tls {
        None => {
            stream.write_all(greeting).await?;
            converse(stream, &offer.options, Phase::Plain, shared).await?;
        }
        Some((SmtpTlsMode::Implicit, acceptor)) => {
            let mut stream = acceptor.accept(stream).await?;
            stream.write_all(greeting).await?;
            stream.flush().await?;
            converse(stream, &offer.options, Phase::Tls, shared).await?;
        }
        Some((SmtpTlsMode::Starttls, acceptor)) => {
            stream.write_all(greeting).await?;
            if let (End::StartTls, stream) =
                converse(stream, &offer.options, Phase::BeforeStartTls, shared).await?
            {
                // RFC 3207: the client starts over with EHLO; nothing said before counts.
                let stream = acceptor.accept(stream).await?;
                converse(stream, &offer.options, Phase::Tls, shared).await?;
            }
        }
    }
    Ok(())
}

/// Where a conversation is, as to TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A plain-only receiver.
    Plain,
    /// A STARTTLS receiver before the upgrade: STARTTLS offered, AUTH and MAIL refused.
    BeforeStartTls,
    /// Over TLS.
    Tls,
}

/// One SMTP conversation on `stream`, until the client quits, hangs up, or starts TLS (then
/// the stream is handed back to be upgraded).
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    options: &SmtpOptions,
    phase: Phase,
    shared: &Shared,
) -> std::io::Result<(End, S)> {
    // A BufReader passes writes through to the stream, so one value both reads and writes.
    let mut io = BufReader::new(stream);
    let mut line = String::new();
    let mut envelope = Envelope::default();
    let mut user: Option<String> = None;
    macro_rules! read_line {
        () => {{
            line.clear();
            let n = (&mut io).take(MAX_LINE as u64).read_line(&mut line).await?;
            if n == 0 {
                return Ok((End::Closed, io.into_inner()));
            }
            line.trim_end_matches(['\r', '\n']).to_owned()
        }};
    }
    // Flushed at once: a TLS stream holds what is written until it is flushed.
    macro_rules! send {
        ($bytes:expr) => {{
            io.write_all($bytes).await?;
            io.flush().await?;
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
                let extension = if phase == Phase::BeforeStartTls {
                    "250-STARTTLS\r\n"
                } else if options.credentials.is_some() {
                    "250-AUTH PLAIN LOGIN\r\n"
                } else {
                    ""
                };
                format!(
                    "250-reap3r-testkit greets {arg}\r\n250-8BITMIME\r\n{extension}250 SMTPUTF8\r\n"
                )
            }
            "HELO" => "250 reap3r-testkit\r\n".into(),
            "STARTTLS" if phase == Phase::BeforeStartTls => {
                send!(b"220 2.0.0 Ready to start TLS\r\n");
                return Ok((End::StartTls, io.into_inner()));
            }
            "AUTH" | "MAIL" if phase == Phase::BeforeStartTls => {
                "530 5.7.0 Must issue a STARTTLS command first\r\n".into()
            }
            "AUTH" => {
                let (mechanism, initial) = arg.split_once(' ').unwrap_or((arg, ""));
                let creds = match mechanism.to_ascii_uppercase().as_str() {
                    "PLAIN" => {
                        let data = if initial.is_empty() {
                            send!(b"334 \r\n");
                            read_line!()
                        } else {
                            initial.to_owned()
                        };
                        decode_plain(&data)
                    }
                    "LOGIN" => {
                        send!(b"334 VXNlcm5hbWU6\r\n");
                        let u = read_line!();
                        send!(b"334 UGFzc3dvcmQ6\r\n");
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
                send!(b"354 End data with <CR><LF>.<CR><LF>\r\n");
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
                            tls: phase == Phase::Tls,
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
                send!(b"221 2.0.0 Bye\r\n");
                return Ok((End::Closed, io.into_inner()));
            }
            _ => "502 5.5.2 Command not recognised\r\n".into(),
        };
        send!(reply.as_bytes());
    }
}
