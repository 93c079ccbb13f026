//! Command-line actions of the server container (spec 4.6): `create-invite`.

use crate::error::ServerError;
use crate::init;
use clap::Args;
use snikket_config::Config;
use snikket_store::{InviteKind, NewInvite, Role};

/// Default lifetime of an account invite: one week.
const ACCOUNT_TTL: i64 = 7 * 86_400;
/// Default lifetime of a password reset invite: one day.
const RESET_TTL: i64 = 86_400;

/// Options of `create-invite`.
#[derive(Args, Debug, Default, Clone)]
pub struct InviteArgs {
    /// Also print a QR code of the link for scanning with a phone.
    #[arg(long)]
    pub qr: bool,
    /// The new account becomes an administrator.
    #[arg(long, conflicts_with = "reset")]
    pub admin: bool,
    /// Add the new account to this circle (id or name); may be repeated.
    #[arg(long = "group", value_name = "CIRCLE", conflicts_with = "reset")]
    pub groups: Vec<String>,
    /// Role of the new account: limited, normal or admin (or prosody:restricted, prosody:registered,
    /// prosody:admin); may be repeated, the first is used.
    #[arg(long = "role", value_name = "ROLE", conflicts_with = "reset")]
    pub roles: Vec<String>,
    /// How long the link works, e.g. 12h, 3d, 2w (default 1w; 1d for --reset).
    #[arg(long, value_name = "DURATION")]
    pub expires_after: Option<String>,
    /// Create a password reset link for this user (name or user@DOMAIN) instead.
    #[arg(long, value_name = "USER")]
    pub reset: Option<String>,
}

/// Parses a human duration like Prosody does: `90`, `30m`, `12h`, `3d`, `2w`, `1mo`, `1y`, `1d12h`.
pub fn parse_duration(text: &str) -> Result<i64, ServerError> {
    let err = || ServerError::Usage(format!("Unable to parse duration: {text}"));
    let s = text.trim();
    if s.is_empty() {
        return Err(err());
    }
    let mut total: i64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| err())?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let secs = match unit {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "wk" | "week" | "weeks" => 7 * 86_400,
            "mo" | "month" | "months" => 30 * 86_400,
            "y" | "yr" | "year" | "years" => 365 * 86_400,
            _ => return Err(err()),
        };
        total = n
            .checked_mul(secs)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
    }
    if total <= 0 || total > 10 * 365 * 86_400 {
        return Err(ServerError::Usage(format!(
            "Unable to parse duration: {text} (must be between 1 second and 10 years)"
        )));
    }
    Ok(total)
}

/// Renders `text` as a QR code made of Unicode half blocks, dark on light, with a quiet zone.
pub fn terminal_qr(text: &str) -> Result<String, ServerError> {
    let code = qrcode::QrCode::new(text.as_bytes())
        .map_err(|e| ServerError::Usage(format!("cannot make a QR code: {e}")))?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// Creates the invitation described by `args` and returns exactly what the command prints.
pub async fn create_invite(config: &Config, args: &InviteArgs) -> Result<String, ServerError> {
    let data = init::prepare(config).await?;
    let store = &data.store;
    let new = if let Some(user) = &args.reset {
        let username = match user.split_once('@') {
            Some((local, domain)) => {
                let domain = domain.to_lowercase();
                if domain != config.domain.ascii && domain != config.domain.unicode {
                    return Err(ServerError::Usage(format!(
                        "{user} is not an account on this server ({})",
                        config.domain.unicode
                    )));
                }
                local.to_string()
            }
            None => user.clone(),
        };
        let username = username.to_lowercase();
        if store.account(&username).await?.is_none() {
            return Err(ServerError::Usage(format!("No such user: {username}")));
        }
        let ttl = match &args.expires_after {
            Some(d) => parse_duration(d)?,
            None => RESET_TTL,
        };
        NewInvite {
            kind: InviteKind::Reset,
            inviter: None,
            username: Some(username),
            role: Role::Normal,
            circles: Vec::new(),
            note: None,
            source: "cli".into(),
            ttl_secs: ttl,
        }
    } else {
        let mut role = None;
        if args.admin {
            role = Some(Role::Admin);
        }
        for r in &args.roles {
            let parsed = Role::parse(r).ok_or_else(|| {
                ServerError::Usage(format!("Unknown role: {r} (use limited, normal or admin)"))
            })?;
            role.get_or_insert(parsed);
        }
        let mut circles = Vec::new();
        for g in &args.groups {
            let circle = store
                .find_circle(g)
                .await?
                .ok_or_else(|| ServerError::Usage(format!("No such circle: {g}")))?;
            if !circles.contains(&circle.circle_id) {
                circles.push(circle.circle_id);
            }
        }
        let ttl = match &args.expires_after {
            Some(d) => parse_duration(d)?,
            None => ACCOUNT_TTL,
        };
        NewInvite {
            kind: InviteKind::Account,
            inviter: None,
            username: None,
            role: role.unwrap_or(Role::Normal),
            circles,
            note: None,
            source: "cli".into(),
            ttl_secs: ttl,
        }
    };
    let invite = store.create_invite(new).await?;
    store.close().await;
    let url = config.invite_landing_url(&invite.token);
    let mut out = format!("\nYour invite link: {url}\n\n");
    if args.qr {
        out.push_str("QR code for scanning:\n\n");
        out.push_str(&terminal_qr(&url)?);
        out.push_str("\n\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert_eq!(parse_duration("30m").unwrap(), 1800);
        assert_eq!(parse_duration("12h").unwrap(), 43_200);
        assert_eq!(parse_duration("3d").unwrap(), 259_200);
        assert_eq!(parse_duration("2w").unwrap(), 1_209_600);
        assert_eq!(parse_duration("1d12h").unwrap(), 129_600);
        assert_eq!(parse_duration("1 week").unwrap(), 604_800);
        for bad in [
            "",
            "soon",
            "3x",
            "-1d",
            "0",
            "d",
            "99999999999999999999",
            "20y",
        ] {
            let e = parse_duration(bad).unwrap_err().to_string();
            assert!(e.starts_with("Unable to parse duration: "), "{bad}: {e}");
        }
    }

    #[test]
    fn qr_code_renders() {
        let qr = terminal_qr("https://chat.example.com/invite/abc/").unwrap();
        assert!(qr.lines().count() > 10);
        assert!(qr.contains('█') || qr.contains('▀') || qr.contains('▄'));
    }
}
