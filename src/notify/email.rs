//! Delivering a notice by email over real SMTP (lettre): STARTTLS or implicit TLS, optional
//! AUTH, plain text plus HTML with the link as a button, Message-ID from the idempotency key.

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncTransport, Message, Tokio1Executor};

use super::DeliveryError;
use super::config::{Email, SmtpTls};
use super::payload::Notice;

/// The Message-ID of a notice: the same on every attempt, so a mail system (or a person's
/// filter) can drop a repeat.
pub fn message_id(notice: &Notice) -> String {
    format!("<{}@sforg-operator.orgtokens.dev>", notice.idempotency_key)
}

fn build(mail: &Email, notice: &Notice, to: &[String]) -> Result<Message, DeliveryError> {
    let from: Mailbox = mail
        .from
        .parse()
        .map_err(|e| DeliveryError::permanent(format!("from {:?}: {e}", mail.from)))?;
    let mut builder = Message::builder()
        .from(from)
        .subject(notice.subject())
        .message_id(Some(message_id(notice)));
    for address in to {
        let mailbox: Mailbox = address
            .parse()
            .map_err(|e| DeliveryError::permanent(format!("recipient {address:?}: {e}")))?;
        builder = builder.to(mailbox);
    }
    builder
        .multipart(MultiPart::alternative_plain_html(
            notice.text(),
            notice.html(),
        ))
        .map_err(|e| DeliveryError::permanent(format!("cannot build the message: {e}")))
}

fn transport(mail: &Email) -> Result<AsyncSmtpTransport<Tokio1Executor>, DeliveryError> {
    let mut params = TlsParameters::builder(mail.host.clone());
    if let Some(pem) = &mail.ca_pem {
        let cert = Certificate::from_pem(pem.as_bytes()).map_err(|e| {
            DeliveryError::permanent(format!("the channel's ca does not parse: {e}"))
        })?;
        params = params.add_root_certificate(cert);
    }
    let params = params
        .build_rustls()
        .map_err(|e| DeliveryError::permanent(format!("TLS settings: {e}")))?;
    let tls = match mail.tls {
        SmtpTls::StartTls => Tls::Required(params),
        SmtpTls::Implicit => Tls::Wrapper(params),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(mail.host.clone())
        .port(mail.port)
        .tls(tls)
        .timeout(Some(mail.timeout));
    if let (Some(user), Some(password)) = (&mail.username, &mail.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
    }
    Ok(builder.build())
}

/// Sends `notice` to `to` through `mail`.
pub async fn send(mail: &Email, notice: &Notice, to: &[String]) -> Result<(), DeliveryError> {
    if to.is_empty() {
        return Err(DeliveryError::permanent(
            "no allowed recipient: set spec.notifications.recipients to addresses in an allowed domain",
        ));
    }
    let message = build(mail, notice, to)?;
    let smtp = transport(mail)?;
    let sent = tokio::time::timeout(mail.timeout * 3, smtp.send(message)).await;
    match sent {
        Err(_) => Err(DeliveryError::transient(format!(
            "SMTP {}:{}: no answer within {:?}",
            mail.host,
            mail.port,
            mail.timeout * 3
        ))),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            let text = format!(
                "SMTP {}:{}: {}",
                mail.host,
                mail.port,
                super::error_chain(&e)
            );
            if e.is_permanent() {
                Err(DeliveryError::permanent(text))
            } else {
                Err(DeliveryError::transient(text))
            }
        }
    }
}
