//! A [`NotificationMessage`] rendered for each channel: an email's subject, plain-text and HTML
//! bodies; the generic webhook's JSON; the Slack (Block Kit with a `text` fallback), Teams
//! (MessageCard) and Discord (embed) payloads. Text that comes from agents (host names,
//! summaries) cannot mention anyone: Slack's `<!channel>`-style syntax is escaped, Discord's
//! `allowed_mentions` parses none. Pure functions, so every format is unit-tested without a
//! receiver.

use reap3r_store::Uuid;
use serde_json::{Value, json};

use super::IntegrationKind;
use crate::notify::{NotificationKind, NotificationMessage};

/// Discord refuses a `content` longer than this.
const DISCORD_CONTENT_MAX: usize = 2000;
/// Discord refuses an embed description longer than this.
const DISCORD_DESCRIPTION_MAX: usize = 4096;
/// Slack refuses a header block's text longer than this.
const SLACK_HEADER_MAX: usize = 150;
/// Slack refuses a section block's text longer than this.
const SLACK_SECTION_MAX: usize = 3000;

fn kind_str(kind: NotificationKind) -> &'static str {
    match kind {
        NotificationKind::Firing => "firing",
        NotificationKind::Resolved => "resolved",
        NotificationKind::Reminder => "reminder",
        NotificationKind::Escalation => "escalation",
        NotificationKind::Test => "test",
    }
}

/// One line per alert of the sample, then how many more the group holds.
fn lines(message: &NotificationMessage) -> Vec<String> {
    let mut out: Vec<String> = message
        .alerts
        .iter()
        .map(|a| {
            let host = a.hostname.as_deref().unwrap_or("-");
            let state = if a.resolved_at_ms.is_some() {
                "resolved"
            } else {
                "firing"
            };
            format!(
                "[{}] {} on {host}: {} ({state})",
                a.severity, a.rule_name, a.summary
            )
        })
        .collect();
    let listed = out.len() as u64;
    if message.total > listed {
        out.push(format!("… and {} more", message.total - listed));
    }
    out
}

/// Subject, plain text and HTML of an email.
pub fn render_email(message: &NotificationMessage, id: Uuid) -> (String, String, String) {
    let subject = message.title.replace(['\r', '\n'], " ");
    let body_lines = lines(message);
    let footer = format!(
        "{} alert(s), kind {}, group {}; notification {id}",
        message.total,
        kind_str(message.kind),
        message.group_key
    );
    let mut text = format!("{subject}\n\n");
    for line in &body_lines {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str("\n-- \n");
    text.push_str(&footer);
    text.push('\n');
    let items: String = body_lines
        .iter()
        .map(|l| format!("<li>{}</li>", escape_html(l)))
        .collect();
    let html = format!(
        "<!doctype html><html><body><h2>{}</h2><ul>{items}</ul><p style=\"color:#666\">{}</p>\
         </body></html>",
        escape_html(&subject),
        escape_html(&footer)
    );
    (subject, text, html)
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The generic webhook's JSON body.
pub fn render_webhook(message: &NotificationMessage, id: Uuid, now_ms: i64) -> Value {
    json!({
        "id": id,
        "kind": kind_str(message.kind),
        "org_id": message.org_id,
        "group_key": message.group_key,
        "title": message.title,
        "severity": message.severity,
        "total": message.total,
        "alerts": message.alerts,
        "sent_at_ms": now_ms,
    })
}

fn colour(severity: &str) -> u32 {
    match severity {
        "critical" => 0xd0_30_30,
        "warning" => 0xe0_a0_20,
        _ => 0x30_70_d0,
    }
}

fn cut(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max_chars.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Slack's mrkdwn escaping: `&`, `<` and `>` (so `<!channel>` or `<@U123>` in an agent's host
/// name is text, not a mention or a link).
fn escape_slack(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A Slack message: a header, the alert lines, and a context line; `text` is the fallback
/// shown in notifications and by clients without blocks.
fn render_slack(message: &NotificationMessage, body: &str) -> Value {
    let mut blocks = vec![json!({
        "type": "header",
        "text": { "type": "plain_text", "text": cut(&message.title, SLACK_HEADER_MAX) },
    })];
    // Slack refuses a section with empty text (a test message lists no alerts).
    if !body.is_empty() {
        blocks.push(json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": cut(&escape_slack(body), SLACK_SECTION_MAX) },
        }));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{
            "type": "mrkdwn",
            "text": escape_slack(&format!(
                "{} · {} alert(s) · {}",
                kind_str(message.kind),
                message.total,
                message.severity
            )),
        }],
    }));
    json!({
        "text": format!("*{}*\n{}", escape_slack(&message.title), escape_slack(body)),
        "blocks": blocks,
    })
}

/// The JSON an incoming webhook of Slack, Teams or Discord accepts.
pub fn render_chat(kind: IntegrationKind, message: &NotificationMessage) -> Value {
    let body = lines(message).join("\n");
    match kind {
        IntegrationKind::Teams => json!({
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": message.title,
            "themeColor": format!("{:06X}", colour(&message.severity)),
            "title": message.title,
            // MessageCard text is Markdown: two spaces before a newline break the line.
            "text": body.replace('\n', "  \n"),
        }),
        IntegrationKind::Discord => json!({
            "content": cut(&message.title, DISCORD_CONTENT_MAX),
            "embeds": [{
                "title": cut(&message.title, 256),
                "description": cut(&body, DISCORD_DESCRIPTION_MAX),
                "color": colour(&message.severity),
            }],
            "allowed_mentions": { "parse": [] },
        }),
        // Slack (and anything else that takes `text`).
        _ => render_slack(message, &body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::NotificationAlert;

    fn message(total: u64, sampled: usize) -> NotificationMessage {
        let alerts = (0..sampled)
            .map(|i| NotificationAlert {
                event_id: Uuid::from_u128(i as u128 + 1),
                rule_name: "High CPU".into(),
                severity: "critical".into(),
                agent_id: None,
                hostname: Some(format!("web-{i}")),
                summary: "cpu.percent 97 > 90".into(),
                fired_at_ms: 1_700_000_000_000,
                resolved_at_ms: None,
            })
            .collect();
        NotificationMessage {
            kind: NotificationKind::Firing,
            org_id: Uuid::from_u128(7),
            group_key: "rule=r,org=o".into(),
            title: "[critical] High CPU: <3> agents firing".into(),
            severity: "critical".into(),
            total,
            alerts,
        }
    }

    #[test]
    fn email_has_the_sample_the_count_and_escaped_html() {
        let id = Uuid::from_u128(42);
        let (subject, text, html) = render_email(&message(3, 2), id);
        assert_eq!(subject, "[critical] High CPU: <3> agents firing");
        assert!(text.contains("[critical] High CPU on web-0: cpu.percent 97 > 90 (firing)"));
        assert!(text.contains("web-1"));
        assert!(text.contains("… and 1 more"));
        assert!(text.contains(&id.to_string()));
        assert!(html.contains("<h2>[critical] High CPU: &lt;3&gt; agents firing</h2>"));
        assert!(
            html.contains("<li>[critical] High CPU on web-0: cpu.percent 97 &gt; 90 (firing)</li>")
        );
        assert!(!html.contains("<3>"));
    }

    #[test]
    fn subject_cannot_inject_headers() {
        let mut m = message(1, 1);
        m.title = "a\r\nBcc: evil@example.com".into();
        let (subject, _, _) = render_email(&m, Uuid::nil());
        assert!(!subject.contains('\n') && !subject.contains('\r'));
    }

    #[test]
    fn webhook_json_carries_id_kind_and_alerts() {
        let id = Uuid::from_u128(9);
        let v = render_webhook(&message(5, 1), id, 1234);
        assert_eq!(v["id"], json!(id));
        assert_eq!(v["kind"], "firing");
        assert_eq!(v["total"], 5);
        assert_eq!(v["alerts"][0]["hostname"], "web-0");
        assert_eq!(v["sent_at_ms"], 1234);
    }

    #[test]
    fn chat_formats_follow_each_service() {
        let m = message(2, 2);
        let slack = render_chat(IntegrationKind::Slack, &m);
        assert!(
            slack["text"]
                .as_str()
                .unwrap()
                .starts_with("*[critical] High CPU: &lt;3&gt; agents firing*\n")
        );
        assert_eq!(slack["blocks"][0]["type"], "header");
        assert_eq!(
            slack["blocks"][0]["text"]["text"],
            "[critical] High CPU: <3> agents firing"
        );
        assert_eq!(slack["blocks"][1]["text"]["type"], "mrkdwn");
        assert!(
            slack["blocks"][1]["text"]["text"]
                .as_str()
                .unwrap()
                .contains("web-1: cpu.percent 97 &gt; 90")
        );
        assert_eq!(
            slack["blocks"][2]["elements"][0]["text"],
            "firing · 2 alert(s) · critical"
        );
        let teams = render_chat(IntegrationKind::Teams, &m);
        assert_eq!(teams["@type"], "MessageCard");
        assert_eq!(teams["themeColor"], "D03030");
        assert!(teams["text"].as_str().unwrap().contains("web-1"));
        let discord = render_chat(IntegrationKind::Discord, &m);
        assert_eq!(discord["embeds"][0]["color"], 0xd0_30_30);
        assert_eq!(discord["allowed_mentions"]["parse"], json!([]));
        let mut long = message(1, 1);
        long.title = "x".repeat(5000);
        let discord = render_chat(IntegrationKind::Discord, &long);
        assert_eq!(
            discord["content"].as_str().unwrap().chars().count(),
            DISCORD_CONTENT_MAX
        );
        let slack = render_chat(IntegrationKind::Slack, &long);
        assert_eq!(
            slack["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            SLACK_HEADER_MAX
        );
    }

    #[test]
    fn agent_text_cannot_mention_anyone_on_slack() {
        let mut m = message(1, 1);
        m.alerts[0].hostname = Some("<!channel> & <@U123>".into());
        let slack = render_chat(IntegrationKind::Slack, &m);
        let text = slack.to_string();
        assert!(
            !text.contains("<!channel>") && !text.contains("<@U123>"),
            "{text}"
        );
        assert!(
            slack["blocks"][1]["text"]["text"]
                .as_str()
                .unwrap()
                .contains("&lt;!channel&gt; &amp; &lt;@U123&gt;")
        );
        // A test message lists no alerts: no empty section (Slack refuses those).
        let mut test = message(0, 0);
        test.kind = NotificationKind::Test;
        let slack = render_chat(IntegrationKind::Slack, &test);
        let blocks = slack["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 2, "{slack}");
        assert_eq!(blocks[1]["type"], "context");
    }
}
