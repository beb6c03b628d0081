//! Message and page rendering with minijinja. Templates are built into the binary;
//! `.html` templates auto-escape everything interpolated.

use std::collections::BTreeMap;

use minijinja::{Environment, context};
use restock_core::values::Currency;

use crate::storage::outbox::MessageContext;

pub struct Renderer {
    env: Environment<'static>,
}

/// What a rendered restock message needs besides the stored context.
pub struct Links<'a> {
    pub click: &'a str,
    pub unsubscribe: &'a str,
    /// The one follow-up after an alert, not the alert itself.
    pub reminder: bool,
}

pub struct RenderedEmail {
    pub subject: String,
    pub html: String,
    pub text: String,
}

/// A URL for an HTML attribute: escapes what could end or break the attribute
/// (`&`, `<`, `>`, `"`, `'`) but not `/` or `:`, which the default HTML escaping turns
/// into entities (`http:&#x2f;&#x2f;…`) that some mail clients and link scanners do
/// not decode. Every URL reaching a template is ours or a parsed http(s) URL.
fn url_attr(value: &str) -> minijinja::Value {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    minijinja::Value::from_safe_string(out)
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

impl Renderer {
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.add_filter("url_attr", url_attr);
        // Auto-escaping follows the template name: .html escapes, .txt does not.
        for (name, src) in [
            (
                "restock_email.html",
                include_str!("../templates/restock_email.html"),
            ),
            (
                "restock_email.txt",
                include_str!("../templates/restock_email.txt"),
            ),
            (
                "unsubscribe.html",
                include_str!("../templates/unsubscribe.html"),
            ),
            (
                "unsubscribed.html",
                include_str!("../templates/unsubscribed.html"),
            ),
            ("cancel.html", include_str!("../templates/cancel.html")),
        ] {
            // The templates are part of the binary; a syntax error is a build defect
            // caught by the render tests, and leaves that template absent.
            if let Err(e) = env.add_template(name, src) {
                tracing::error!(template = name, error = %e, "built-in template does not parse");
            }
        }
        Renderer { env }
    }

    pub fn restock_email(
        &self,
        c: &MessageContext,
        links: Links<'_>,
    ) -> Result<RenderedEmail, minijinja::Error> {
        let currency = Currency::parse(&c.currency).ok();
        let price_minor = c.variant_price_minor.unwrap_or(c.product_price_minor);
        let price = currency
            .map(|cur| cur.format(price_minor))
            .unwrap_or_else(|| format!("{} {}", c.currency, price_minor));
        let options: BTreeMap<String, String> =
            serde_json::from_str(&c.variant_options).unwrap_or_default();
        let options: Vec<minijinja::Value> = options
            .into_iter()
            .map(|(name, value)| {
                minijinja::Value::from_pairs([
                    ("name", minijinja::Value::from(name)),
                    ("value", minijinja::Value::from(value)),
                ])
            })
            .collect();
        let available_until = c
            .available_until
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.format("%-d %B %Y, %H:%M UTC").to_string());
        let name = if c.variant_title.is_empty() {
            c.product_title.clone()
        } else {
            format!("{} ({})", c.product_title, c.variant_title)
        };
        let subject = if links.reminder {
            format!("Still in stock: {name}")
        } else {
            format!("{name} is back in stock")
        };
        let ctx = context! {
            subject => &subject,
            store_name => &c.store_name,
            product_title => &c.product_title,
            variant_title => &c.variant_title,
            description => &c.product_description,
            image_url => c.variant_image_url.as_ref().or(c.product_image_url.as_ref()),
            options => options,
            price => price,
            available_until => available_until,
            link => links.click,
            unsubscribe_url => links.unsubscribe,
        };
        let html = self.env.get_template("restock_email.html")?.render(&ctx)?;
        let text = self.env.get_template("restock_email.txt")?.render(&ctx)?;
        Ok(RenderedEmail {
            subject,
            html,
            text,
        })
    }

    pub fn page(&self, name: &str, ctx: minijinja::Value) -> Result<String, minijinja::Error> {
        self.env.get_template(name)?.render(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> MessageContext {
        MessageContext {
            store_name: "Acme & Sons".into(),
            product_title: "Trail <Runner>".into(),
            product_description: "Light shoes \"for\" mud.".into(),
            product_image_url: Some("https://cdn.example/shoe.jpg".into()),
            product_url: "https://shop.example/p/trail".into(),
            product_price_minor: 12900,
            currency: "EUR".into(),
            sku: "TR-42".into(),
            variant_title: "42 / Red".into(),
            variant_options: r#"{"colour":"Red","size":"42"}"#.into(),
            variant_price_minor: Some(11900),
            variant_image_url: None,
            variant_url: Some("https://shop.example/p/trail?v=42".into()),
            in_stock: true,
            available: 5,
            available_until: Some(1_767_225_600_000),
        }
    }

    #[test]
    fn email_renders_every_part_and_escapes_html() {
        let r = Renderer::new();
        let m = r
            .restock_email(
                &ctx(),
                Links {
                    click: "https://r.example/t/c/1.x?a=1&b=2",
                    unsubscribe: "https://r.example/t/u/1.y",
                    reminder: false,
                },
            )
            .expect("renders");
        assert_eq!(m.subject, "Trail <Runner> (42 / Red) is back in stock");
        // Snapshot of the plain-text part: what a shopper reads.
        assert_eq!(
            m.text,
            "Acme & Sons\n\nGood news: Trail <Runner> is back in stock.\n\nTrail <Runner> - 42 / Red\n\
             colour: Red\nsize: 42\n\nLight shoes \"for\" mud.\n\nPrice: EUR 119.00\n\
             Available until 1 January 2026, 00:00 UTC while stock lasts.\n\n\
             Buy it now: https://r.example/t/c/1.x?a=1&b=2\n\n\
             You asked Acme & Sons to tell you when this came back. We will not email you about it again.\n\
             Unsubscribe: https://r.example/t/u/1.y"
        );
        assert!(m.html.contains("Trail &lt;Runner&gt;"), "{}", m.html);
        assert!(!m.html.contains("<Runner>"));
        assert!(m.html.contains("Acme &amp; Sons"));
        // URLs in attributes keep their slashes; only attribute-breaking characters
        // are escaped.
        assert!(
            m.html.contains("src=\"https://cdn.example/shoe.jpg\""),
            "{}",
            m.html
        );
        assert!(
            m.html
                .contains("href=\"https://r.example/t/c/1.x?a=1&amp;b=2\""),
            "{}",
            m.html
        );
        assert!(m.html.contains("href=\"https://r.example/t/u/1.y\""));
        assert!(!m.html.contains(":&#x2f;&#x2f;"), "{}", m.html);
        assert!(m.html.contains("EUR 119.00"));
        assert!(m.html.contains("Available until 1 January 2026"));
    }

    #[test]
    fn no_expiry_line_for_permanent_stock() {
        let r = Renderer::new();
        let c = MessageContext {
            available_until: None,
            ..ctx()
        };
        let m = r
            .restock_email(
                &c,
                Links {
                    click: "c",
                    unsubscribe: "u",
                    reminder: true,
                },
            )
            .expect("renders");
        assert!(!m.text.contains("Available until"));
        assert!(!m.html.contains("Available until"));
        assert_eq!(m.subject, "Still in stock: Trail <Runner> (42 / Red)");
    }
}
