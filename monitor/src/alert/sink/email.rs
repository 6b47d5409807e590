//! Email over SMTP with lettre: plain (loopback relays), STARTTLS or
//! implicit TLS; a multipart/alternative message with a plain-text body and
//! an HTML body carrying an inline PNG chart.
//!
//! Owns the building and sending of one email. The Message-ID comes from the
//! outbox message id, so a retry after a crash carries the same Message-ID
//! and mail clients and servers can tell it is not a new alert. Credentials
//! are read at send time and never logged.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{SmtpTransport, Transport};

use super::{SendContext, SinkError, chart, render, resolve_secret, resolve_value};
use crate::alert::outbox::Message;
use crate::config::model::{EmailReceiver, SmtpTls};

/// The Message-ID header value of an outbox message id.
pub fn message_id(id: &str) -> String {
    format!("<{id}@dqmon>")
}

/// Build the email (without sending it).
pub fn build(
    r: &EmailReceiver,
    id: &str,
    batch: &[Message],
    ctx: &SendContext<'_>,
) -> Result<lettre::Message, SinkError> {
    let bad = |e: String| SinkError::Email(e);
    let from: Mailbox = r.from.parse().map_err(|e| bad(format!("from: {e}")))?;
    let mut b = lettre::Message::builder()
        .message_id(Some(message_id(id)))
        .from(from)
        .subject(render::subject(batch))
        .user_agent(format!("dqmon {}", env!("CARGO_PKG_VERSION")));
    for to in &r.to {
        b = b.to(to.parse().map_err(|e| bad(format!("to: {e}")))?);
    }
    let head = batch[0].notice.head();
    let values = chart::series(ctx.history, &batch[0].notice.recent_batches, head);
    let png = chart::png(&values, chart::band(head));
    let cid = format!("chart-{}", &id[..16.min(id.len())]);
    let html_part = SinglePart::html(render::html(batch, png.as_ref().ok().map(|_| cid.as_str())));
    let alternative = MultiPart::alternative().singlepart(SinglePart::plain(render::plain(batch)));
    let body = match png {
        Ok(bytes) => alternative.multipart(MultiPart::related().singlepart(html_part).singlepart(
            Attachment::new_inline(cid).body(
                bytes,
                ContentType::parse("image/png").expect("valid content type"),
            ),
        )),
        Err(e) => {
            tracing::warn!(receiver = %ctx.receiver, error = %e, "chart could not be drawn; sending the email without it");
            alternative.singlepart(html_part)
        }
    };
    b.multipart(body).map_err(|e| bad(e.to_string()))
}

/// TLS parameters for the server: its certificate must be valid for `host`
/// and chain to a web PKI root or to a certificate of `ca_file`.
fn tls_parameters(r: &EmailReceiver) -> Result<TlsParameters, SinkError> {
    let mut b = TlsParameters::builder(r.host.clone());
    if let Some(path) = &r.ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            SinkError::Smtp(format!(
                "could not read the CA certificates in {} (`ca_file`): {e}",
                path.display()
            ))
        })?;
        let cert = Certificate::from_pem(&pem).map_err(|e| {
            SinkError::Smtp(format!(
                "{} (`ca_file`) holds no valid PEM certificate: {e}",
                path.display()
            ))
        })?;
        b = b.add_root_certificate(cert);
    }
    b.build().map_err(|e| SinkError::Smtp(e.to_string()))
}

/// Send one email.
pub fn send(
    r: &EmailReceiver,
    id: &str,
    batch: &[Message],
    ctx: &SendContext<'_>,
) -> Result<(), SinkError> {
    let email = build(r, id, batch, ctx)?;
    let tls = match r.tls {
        SmtpTls::None => Tls::None,
        SmtpTls::Starttls => Tls::Required(tls_parameters(r)?),
        SmtpTls::Tls => Tls::Wrapper(tls_parameters(r)?),
    };
    let mut t = SmtpTransport::builder_dangerous(&r.host)
        .port(r.port)
        .tls(tls)
        .timeout(Some(Duration::from_secs(r.timeout_secs)));
    if let Some(user) = &r.username {
        let user = resolve_value(
            user,
            &format!("the SMTP user of receiver `{}`", ctx.receiver),
        )?;
        let pass = match &r.password {
            Some(p) => resolve_secret(
                p,
                &format!("the SMTP password of receiver `{}`", ctx.receiver),
            )?,
            None => String::new(),
        };
        t = t.credentials(Credentials::new(user, pass));
    }
    t.build()
        .send(&email)
        .map(|_| ())
        .map_err(|e| SinkError::Smtp(e.to_string()))
}
