//! Invitation mails, when `smtp_url` is set: the link to accept an invitation, sent through
//! the operator's mail server (lettre over tokio, TLS by rustls). Sending is best effort: a
//! failure is logged and reported to whoever invited (who has the link in their answer too),
//! never an error of the invitation itself. Neither the server's URL (it may hold a password)
//! nor the link (it holds the token) is ever logged.

use std::time::Duration;

use glimpse_core::config::QueryConfig;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::accounts::invitations::INVITATION_LIFETIME;

/// Longest wait for the mail server (connect, and each command).
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// What became of an invitation's mail, as the answer says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MailOutcome {
    Sent,
    Failed,
    /// No `smtp_url`.
    Off,
}

impl MailOutcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Off => "off",
        }
    }
}

/// One invitation to mail.
pub(crate) struct InvitationMail<'a> {
    pub to: &'a str,
    pub site: &'a str,
    /// Plausible's word: `viewer` or `editor`.
    pub role: &'a str,
    /// Who invited (an e-mail, or a key's description).
    pub inviter: &'a str,
    pub url: &'a str,
}

/// The sender: `smtp_from`, else `glimpse@<host>` with the host this service is known by.
fn sender(config: &QueryConfig, host: Option<&str>) -> String {
    config.smtp_from.clone().unwrap_or_else(|| {
        let host = host.filter(|h| !h.is_empty()).unwrap_or("localhost");
        format!("glimpse@{host}")
    })
}

fn subject(mail: &InvitationMail<'_>) -> String {
    format!("Invitation to the statistics of {}", mail.site)
}

fn text(mail: &InvitationMail<'_>) -> String {
    let days = INVITATION_LIFETIME.as_secs() / 86_400;
    format!(
        "{inviter} invites you to the statistics of {site} on Glimpse, as {article} {role}.\n\n\
         To accept, open this link within {days} days and choose a password:\n\n{url}\n\n\
         If you did not expect this invitation, ignore this mail: nothing happens without you.\n",
        inviter = mail.inviter,
        site = mail.site,
        article = if mail.role.starts_with('e') {
            "an"
        } else {
            "a"
        },
        role = mail.role,
        url = mail.url,
    )
}

/// Sends the invitation when mail is configured; `host` names this service for the default
/// sender.
pub(crate) async fn send_invitation(
    config: &QueryConfig,
    host: Option<&str>,
    mail: &InvitationMail<'_>,
) -> MailOutcome {
    let Some(url) = &config.smtp_url else {
        return MailOutcome::Off;
    };
    match send(url.expose(), &sender(config, host), mail).await {
        Ok(()) => {
            tracing::info!(site = mail.site, "invitation mail sent");
            MailOutcome::Sent
        }
        Err(error) => {
            tracing::warn!(site = mail.site, %error, "invitation mail not sent");
            MailOutcome::Failed
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum MailError {
    #[error("invalid address {0:?}")]
    Address(String),
    #[error("cannot build the message: {0}")]
    Message(#[from] lettre::error::Error),
    // lettre's SMTP errors name the server's answer, never the URL it was given.
    #[error("mail server: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
}

async fn send(smtp_url: &str, from: &str, mail: &InvitationMail<'_>) -> Result<(), MailError> {
    let mailbox = |text: &str| -> Result<Mailbox, MailError> {
        text.parse()
            .map_err(|_| MailError::Address(text.to_string()))
    };
    let message = Message::builder()
        .from(mailbox(from)?)
        .to(mailbox(mail.to)?)
        .subject(subject(mail))
        .header(ContentType::TEXT_PLAIN)
        .body(text(mail))?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)?
        .timeout(Some(SMTP_TIMEOUT))
        .build();
    transport.send(message).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail() -> InvitationMail<'static> {
        InvitationMail {
            to: "guest@example.com",
            site: "a.example",
            role: "editor",
            inviter: "owner@example.com",
            url: "https://stats.example.net/?invitation=ab12",
        }
    }

    #[test]
    fn the_mail_says_who_invites_to_what_and_holds_the_link() {
        let body = text(&mail());
        assert!(body.contains("owner@example.com invites you"), "{body}");
        assert!(body.contains("a.example"), "{body}");
        assert!(body.contains("an editor"), "{body}");
        assert!(body.contains("\nhttps://stats.example.net/?invitation=ab12\n"));
        assert!(body.contains("within 7 days"), "{body}");
        assert_eq!(
            subject(&mail()),
            "Invitation to the statistics of a.example"
        );
    }

    #[test]
    fn the_sender_defaults_to_glimpse_at_this_host() {
        let mut config = QueryConfig::default();
        assert_eq!(
            sender(&config, Some("stats.example.net")),
            "glimpse@stats.example.net"
        );
        assert_eq!(sender(&config, None), "glimpse@localhost");
        config.smtp_from = Some("noreply@example.com".into());
        assert_eq!(sender(&config, Some("x")), "noreply@example.com");
    }

    #[tokio::test]
    async fn without_a_server_there_is_no_mail_and_a_dead_one_fails_softly() {
        let mut config = QueryConfig::default();
        assert_eq!(
            send_invitation(&config, None, &mail()).await,
            MailOutcome::Off
        );
        config.smtp_url = Some("smtp://127.0.0.1:1".into());
        assert_eq!(
            send_invitation(&config, Some("stats.example.net"), &mail()).await,
            MailOutcome::Failed
        );
    }
}
