//! SMTP delivery of the mail outbox.
//!
//! Routes never talk to a mail server: they write a [`Mail`] row to the outbox and
//! signal [`AppState::mail_queued`]. When the node has SMTP configured it starts one
//! [`MailRelay`], a background task that takes unsent mails oldest first, sends each,
//! and marks it sent only after the server accepted it. Without SMTP the mails stay in
//! the outbox, where the operator reads them (`streamcore admin mail`; `GET /api/v1/admin/mail`
//! lists them redacted).
//!
//! Failures never lose a mail; it stays unsent and is tried again:
//! - Trouble with the server as a whole (refused or dropped connection, timeout, TLS,
//!   a 4xx answer, storage errors) pauses the relay with exponential backoff
//!   ([`RelayTiming::retry_min`] doubling up to [`RelayTiming::retry_max`]).
//! - A 5xx answer to one mail (say, an unknown recipient) backs off that mail alone, on
//!   the same schedule, so it does not hold up the mails behind it.
//! - A mail that cannot even be written as a message (an address the mail library
//!   refuses) is logged once and left in the outbox until the next start.
//!
//! Delivery is at least once: if the node stops between the server's acceptance and the
//! mark, the mail is sent again after the restart (with the same `Message-ID`, derived
//! from the mail's id, so the duplicate is recognisable). Several nodes sharing one
//! database should not all have SMTP configured, or a mail may go out once per node.
//!
//! A mail's body holds a reset token: it is never logged, nor is the recipient's
//! address; log lines name the mail's id.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::sync::{Notify, watch};
use tracing::{debug, error, info, warn};

use crate::auth::now_millis;
use crate::state::AppState;
use crate::store::{Db, Mail, Store};

/// Writes a mail to the outbox and wakes the relay (if one runs; without SMTP the mail
/// waits for the operator). The one way routes send mail.
pub async fn queue(
    st: &AppState,
    to: &str,
    subject: impl Into<String>,
    body: String,
) -> Result<(), crate::store::StoreError> {
    st.db
        .insert_mail(Mail {
            id: uuid::Uuid::new_v4().to_string(),
            to_addr: to.to_owned(),
            subject: subject.into(),
            body,
            created_at: now_millis(),
            sent_at: None,
        })
        .await?;
    st.mail_queued.notify_one();
    Ok(())
}

/// The token of a link to `path` (`/sign-up`, `/reset-password`, `/verify-email`) in
/// a mail's body: what a person clicks, read by tests and benches from the outbox.
pub fn link_token<'a>(body: &'a str, path: &str) -> Option<&'a str> {
    let marker = format!("{path}?token=");
    let rest = &body[body.find(&marker)? + marker.len()..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '&')
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmtpTls {
    /// Plain text. Only for a relay on the same host or a trusted network.
    None,
    /// Plain connect, then `STARTTLS`, which is required: a server that does not offer
    /// it is an error, never a silent fallback to plain text. Usually port 587.
    #[default]
    Starttls,
    /// TLS from the first byte ("SMTPS", implicit TLS). Usually port 465.
    Tls,
}

impl SmtpTls {
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpTls::None => "none",
            SmtpTls::Starttls => "starttls",
            SmtpTls::Tls => "tls",
        }
    }
}

/// Where and how to send mail. `Debug` hides the password.
#[derive(Clone)]
pub struct SmtpConfig {
    /// Server name; with TLS also the name its certificate must carry.
    pub host: String,
    pub port: u16,
    /// The sender, `name@example.com` or `StreamCore <name@example.com>`.
    pub from: String,
    /// Log in with these when both are set (`AUTH PLAIN` or `LOGIN`).
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: SmtpTls,
    /// PEM file of extra CA certificates to trust (a private CA or a self-signed
    /// server), in addition to the built-in Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// Limit for connecting and for each SMTP command.
    pub timeout: Duration,
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("from", &self.from)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl SmtpConfig {
    /// Settings with the defaults: STARTTLS, no login, 30 s timeout.
    pub fn new(host: impl Into<String>, port: u16, from: impl Into<String>) -> SmtpConfig {
        SmtpConfig {
            host: host.into(),
            port,
            from: from.into(),
            username: None,
            password: None,
            tls: SmtpTls::Starttls,
            ca_file: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// When the relay looks at the outbox.
#[derive(Debug, Clone, Copy)]
pub struct RelayTiming {
    /// Looks for unsent mail this often even when not woken (mails queued by another
    /// node or process, per-mail retries).
    pub poll: Duration,
    /// First wait after a failure; each further failure doubles it…
    pub retry_min: Duration,
    /// …up to this.
    pub retry_max: Duration,
}

impl Default for RelayTiming {
    fn default() -> Self {
        RelayTiming {
            poll: Duration::from_secs(30),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }
}

impl RelayTiming {
    /// The wait after `failures` consecutive failures (at least 1).
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(20);
        self.retry_min.saturating_mul(factor).min(self.retry_max)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("smtp.from '{0}' is not a mail address like StreamCore <noreply@example.com>")]
    From(String),
    #[error("smtp.username and smtp.password must be set together")]
    Credentials,
    #[error("reading smtp.ca_file {path}: {source}")]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("smtp.ca_file {0} holds no PEM certificate")]
    CaPem(PathBuf),
    #[error("setting up SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
}

/// The running relay. Stop it with [`MailRelay::shutdown`]; dropping the handle stops
/// it too, at its next wait (without waiting for it).
#[derive(Debug)]
pub struct MailRelay {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl MailRelay {
    /// Checks the settings and starts the relay on the current tokio runtime.
    pub fn start(state: &AppState, smtp: SmtpConfig) -> Result<MailRelay, MailError> {
        MailRelay::start_with(state, smtp, RelayTiming::default())
    }

    pub fn start_with(
        state: &AppState,
        smtp: SmtpConfig,
        timing: RelayTiming,
    ) -> Result<MailRelay, MailError> {
        let sender = Sender::new(&smtp)?;
        if smtp.tls == SmtpTls::None && smtp.username.is_some() {
            warn!(
                host = %smtp.host,
                "smtp.tls = none: the SMTP password goes over the network unencrypted"
            );
        }
        info!(
            host = %smtp.host,
            port = smtp.port,
            tls = smtp.tls.as_str(),
            "mail relay started: reset mails are sent over SMTP"
        );
        let (stop, stop_rx) = watch::channel(false);
        let relay = Relay {
            db: state.db.clone(),
            queued: state.mail_queued.clone(),
            sender,
            timing,
            stop: stop_rx,
            retry: HashMap::new(),
            unsendable: HashSet::new(),
        };
        Ok(MailRelay {
            stop,
            task: tokio::spawn(relay.run()),
        })
    }

    /// Stops the relay. A mail being sent gets up to `grace` to finish; one cut off
    /// stays unsent (and goes out after the next start).
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
            let _ = task.await;
        }
        info!("mail relay stopped");
    }
}

/// Builds messages and talks SMTP.
struct Sender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The part after `@` of `from`, for Message-IDs.
    domain: String,
    timeout: Duration,
}

impl Sender {
    fn new(smtp: &SmtpConfig) -> Result<Sender, MailError> {
        let from: Mailbox = smtp
            .from
            .parse()
            .map_err(|_| MailError::From(smtp.from.clone()))?;
        let domain = from.email.domain().to_owned();
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
            .port(smtp.port)
            .timeout(Some(smtp.timeout));
        builder = match smtp.tls {
            SmtpTls::None => builder.tls(Tls::None),
            SmtpTls::Starttls => builder.tls(Tls::Required(tls_parameters(smtp)?)),
            SmtpTls::Tls => builder.tls(Tls::Wrapper(tls_parameters(smtp)?)),
        };
        match (&smtp.username, &smtp.password) {
            (Some(u), Some(p)) => {
                builder = builder.credentials(Credentials::new(u.clone(), p.clone()));
            }
            (None, None) => {}
            _ => return Err(MailError::Credentials),
        }
        Ok(Sender {
            transport: builder.build(),
            from,
            domain,
            timeout: smtp.timeout,
        })
    }

    fn message(&self, mail: &Mail) -> Result<Message, String> {
        let to: Mailbox = mail
            .to_addr
            .parse()
            .map_err(|e| format!("the recipient address is not usable: {e}"))?;
        let date = UNIX_EPOCH + Duration::from_millis(mail.created_at.max(0) as u64);
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .date(date)
            .message_id(Some(format!("<{}@{}>", mail.id, self.domain)))
            .header(ContentType::TEXT_PLAIN)
            .body(mail.body.clone())
            .map_err(|e| format!("the message cannot be built: {e}"))
    }

    /// Sends one message; `Ok` once the server accepted it.
    async fn send(&self, message: Message) -> Result<(), SendError> {
        // lettre times out each command; this bounds the whole conversation.
        let whole = self.timeout.saturating_mul(10);
        match tokio::time::timeout(whole, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.is_permanent() => Err(SendError::Rejected(e.to_string())),
            Ok(Err(e)) => Err(SendError::Server(e.to_string())),
            Err(_) => Err(SendError::Server(format!(
                "no answer within {} s",
                whole.as_secs()
            ))),
        }
    }
}

fn tls_parameters(smtp: &SmtpConfig) -> Result<TlsParameters, MailError> {
    let mut b = TlsParameters::builder(smtp.host.clone());
    if let Some(path) = &smtp.ca_file {
        let pem = std::fs::read(path).map_err(|source| MailError::CaFile {
            path: path.clone(),
            source,
        })?;
        if !pem
            .windows(b"-----BEGIN CERTIFICATE-----".len())
            .any(|w| w == b"-----BEGIN CERTIFICATE-----")
        {
            return Err(MailError::CaPem(path.clone()));
        }
        b = b.add_root_certificate(Certificate::from_pem(&pem)?);
    }
    Ok(b.build_rustls()?)
}

enum SendError {
    /// A 5xx answer about this mail: back it off alone.
    Rejected(String),
    /// Anything else: the server as a whole is unavailable for now.
    Server(String),
}

/// What one pass over the outbox did.
enum Pass {
    /// At least one mail went out: look again at once.
    Progress,
    /// Nothing was due (or only mails the server rejected, which wait for their own
    /// retry time).
    Idle,
    /// The server or the outbox is unavailable: back off.
    Failed,
}

/// A mail that failed alone, and when to try it again.
struct Retry {
    failures: u32,
    next: Instant,
}

/// Mails looked at per pass (plus the ones waiting for a retry, which are skipped).
const BATCH: usize = 50;
/// A pass gives up after this many rejected mails in a row with none delivered: a
/// server rejecting everything (a wrong password, say) is a server problem.
const MAX_REJECTS_PER_PASS: usize = 3;

struct Relay {
    db: Db,
    queued: Arc<Notify>,
    sender: Sender,
    timing: RelayTiming,
    stop: watch::Receiver<bool>,
    retry: HashMap<String, Retry>,
    unsendable: HashSet<String>,
}

impl Relay {
    async fn run(mut self) {
        let mut failures = 0u32;
        while !*self.stop.borrow() {
            match self.pass().await {
                Pass::Progress => failures = 0,
                Pass::Idle => {
                    failures = 0;
                    let now = Instant::now();
                    let wait = self
                        .retry
                        .values()
                        .map(|r| r.next.saturating_duration_since(now))
                        .fold(self.timing.poll, Duration::min);
                    let queued = self.queued.clone();
                    tokio::select! {
                        _ = queued.notified() => {}
                        _ = tokio::time::sleep(wait) => {}
                        r = self.stop.changed() => if r.is_err() { return },
                    }
                }
                Pass::Failed => {
                    failures = failures.saturating_add(1);
                    let wait = self.timing.backoff(failures);
                    debug!(
                        retry_in_ms = wait.as_millis() as u64,
                        failures, "mail relay backing off"
                    );
                    // New mail does not cut the backoff short; it is sent after it.
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        r = self.stop.changed() => if r.is_err() { return },
                    }
                }
            }
        }
    }

    async fn pass(&mut self) -> Pass {
        let limit = BATCH + self.retry.len() + self.unsendable.len();
        let mails = match self.db.unsent_mail(limit as i64).await {
            Ok(m) => m,
            Err(e) => {
                error!(error = %e, "mail relay cannot read the outbox");
                return Pass::Failed;
            }
        };
        if mails.len() < limit {
            // Every unsent mail is in view: forget the state of mails sent meanwhile
            // (by another node, say).
            self.retry.retain(|id, _| mails.iter().any(|m| &m.id == id));
        }
        let now = Instant::now();
        let (mut sent, mut rejects_in_a_row) = (0usize, 0usize);
        for mail in mails {
            if *self.stop.borrow() {
                break;
            }
            if self.unsendable.contains(&mail.id)
                || self.retry.get(&mail.id).is_some_and(|r| r.next > now)
            {
                continue;
            }
            let message = match self.sender.message(&mail) {
                Ok(m) => m,
                Err(why) => {
                    error!(mail = %mail.id, "{why}; the mail stays in the outbox unsent");
                    self.unsendable.insert(mail.id);
                    continue;
                }
            };
            match self.sender.send(message).await {
                Ok(()) => {
                    self.retry.remove(&mail.id);
                    if let Err(e) = self.db.mark_mail_sent(&mail.id, now_millis()).await {
                        // It went out; it may go out again once storage is back.
                        error!(mail = %mail.id, error = %e, "mail sent but not marked sent");
                        return Pass::Failed;
                    }
                    info!(mail = %mail.id, "mail sent");
                    sent += 1;
                    rejects_in_a_row = 0;
                }
                Err(SendError::Rejected(why)) => {
                    let r = self.retry.entry(mail.id.clone()).or_insert(Retry {
                        failures: 0,
                        next: now,
                    });
                    r.failures = r.failures.saturating_add(1);
                    let wait = self.timing.backoff(r.failures);
                    r.next = Instant::now() + wait;
                    warn!(
                        mail = %mail.id,
                        error = %why,
                        retry_in_ms = wait.as_millis() as u64,
                        "SMTP server rejected the mail; it stays unsent"
                    );
                    rejects_in_a_row += 1;
                    if sent == 0 && rejects_in_a_row >= MAX_REJECTS_PER_PASS {
                        return Pass::Failed;
                    }
                }
                Err(SendError::Server(why)) => {
                    warn!(
                        mail = %mail.id,
                        error = %why,
                        "SMTP delivery failed; the mail stays unsent and is retried"
                    );
                    return if sent > 0 {
                        Pass::Progress
                    } else {
                        Pass::Failed
                    };
                }
            }
        }
        // Rejected mails wait for their own retry time, which bounds the idle wait.
        if sent > 0 { Pass::Progress } else { Pass::Idle }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_tokens_are_read_from_the_path_they_follow() {
        let body = "Link: https://x.test/sign-up?token=abc-1_2\nOther: https://x.test/reset-password?token=zz&x=1";
        assert_eq!(link_token(body, "/sign-up"), Some("abc-1_2"));
        assert_eq!(link_token(body, "/reset-password"), Some("zz"));
        assert_eq!(link_token(body, "/verify-email"), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let t = RelayTiming::default();
        let secs: Vec<u64> = (1..=9).map(|n| t.backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(t.backoff(0), Duration::from_secs(1));
        assert_eq!(t.backoff(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn debug_hides_the_password() {
        let mut c = SmtpConfig::new("mail.example.com", 587, "noreply@example.com");
        c.username = Some("user".into());
        c.password = Some("hunter2-secret".into());
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***"));
    }

    #[test]
    fn settings_are_checked() {
        let c = SmtpConfig::new("mail.example.com", 587, "not an address");
        assert!(matches!(Sender::new(&c), Err(MailError::From(_))));
        let mut c = SmtpConfig::new("mail.example.com", 587, "StreamCore <noreply@example.com>");
        c.username = Some("user".into());
        assert!(matches!(Sender::new(&c), Err(MailError::Credentials)));
        c.password = Some("pw".into());
        assert!(Sender::new(&c).is_ok());
        c.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(Sender::new(&c), Err(MailError::CaFile { .. })));
        c.tls = SmtpTls::None;
        assert!(Sender::new(&c).is_ok(), "no TLS, so no CA file is read");
    }

    #[test]
    fn messages_carry_the_mail() {
        let c = SmtpConfig::new("mail.example.com", 587, "StreamCore <noreply@example.com>");
        let s = Sender::new(&c).unwrap();
        let mail = Mail {
            id: "m-1".into(),
            to_addr: "ann@example.com".into(),
            subject: "Reset your StreamCore password".into(),
            body: "Reset token: abc\n".into(),
            created_at: 1_700_000_000_000,
            sent_at: None,
        };
        let raw = String::from_utf8(s.message(&mail).unwrap().formatted()).unwrap();
        assert!(raw.contains("To: ann@example.com"), "{raw}");
        assert!(raw.contains("Message-ID: <m-1@example.com>"), "{raw}");
        assert!(raw.contains("Reset token: abc"), "{raw}");
        assert!(
            raw.contains("Date: Tue, 14 Nov 2023 22:13:20 +0000"),
            "{raw}"
        );
        let bad = Mail {
            to_addr: "not an address".into(),
            ..mail
        };
        assert!(s.message(&bad).is_err());
    }
}
