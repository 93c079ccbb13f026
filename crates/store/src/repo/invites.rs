//! Invitations (spec 4.4): tokens, kinds, lifetimes and use.
//!
//! A token is 24 base64url characters (18 random bytes, 144 bits). Its first 8 characters are the
//! lookup key (`invite_id`); the whole token is then compared in constant time, so a guessed token
//! learns nothing from timing. The full token is kept so the admin panel can show the link again.

use crate::pool::{with_pool, with_writer};
use crate::{now, Role, Store, StoreError};
use base64::Engine;
use rand::RngCore;
use sqlx::Connection;
use subtle::ConstantTimeEq;

const ID_LEN: usize = 8;

/// What an invite is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteKind {
    /// Single-use account invite.
    Account,
    /// Reusable account invite until expiry.
    Group,
    /// Password reset for one account.
    Reset,
    /// Contact (roster) invite from a user.
    Contact,
}

impl InviteKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            InviteKind::Account => "account",
            InviteKind::Group => "group",
            InviteKind::Reset => "reset",
            InviteKind::Contact => "contact",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "account" => Some(InviteKind::Account),
            "group" => Some(InviteKind::Group),
            "reset" => Some(InviteKind::Reset),
            "contact" => Some(InviteKind::Contact),
            _ => None,
        }
    }
}

/// A stored invitation.
#[derive(Clone, PartialEq, Eq)]
pub struct Invite {
    /// Public lookup key (prefix of the token).
    pub invite_id: String,
    /// The secret token carried in links.
    pub token: String,
    /// Kind.
    pub kind: InviteKind,
    /// Username of the creator (`None`: the command line or an API key).
    pub inviter: Option<String>,
    /// Fixed username (password resets, or an invite for one name).
    pub username: Option<String>,
    /// Role given to the new account.
    pub role: Role,
    /// Can be used more than once.
    pub reusable: bool,
    /// Admin's note.
    pub note: Option<String>,
    /// Where it came from (`cli`, `portal`, `api/token/…`).
    pub source: String,
    /// Creation time.
    pub created_at: i64,
    /// Expiry time.
    pub expires_at: i64,
    /// Successful uses.
    pub use_count: i64,
    /// When a single-use invite was used up.
    pub consumed_at: Option<i64>,
    /// Circles the new account joins.
    pub circles: Vec<String>,
}

impl std::fmt::Debug for Invite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invite")
            .field("invite_id", &self.invite_id)
            .field("token", &"***")
            .field("kind", &self.kind)
            .field("role", &self.role)
            .field("expires_at", &self.expires_at)
            .field("circles", &self.circles)
            .finish_non_exhaustive()
    }
}

/// Parameters of a new invitation.
#[derive(Debug, Clone)]
pub struct NewInvite {
    /// Kind.
    pub kind: InviteKind,
    /// Creator.
    pub inviter: Option<String>,
    /// Fixed username.
    pub username: Option<String>,
    /// Role for the new account.
    pub role: Role,
    /// Circle ids; each must exist.
    pub circles: Vec<String>,
    /// Note.
    pub note: Option<String>,
    /// Origin.
    pub source: String,
    /// Lifetime in seconds.
    pub ttl_secs: i64,
}

/// Why a token cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InviteProblem {
    /// Unknown token (Prosody: `token-invalid`).
    #[error("this invite link is not valid")]
    Invalid,
    /// Past its expiry (Prosody: `token-expired`).
    #[error("this invite link has expired")]
    Expired,
    /// A single-use invite that was already used.
    #[error("this invite link has already been used")]
    Used,
}

/// Makes a fresh token: 18 random bytes, base64url, 24 characters.
pub fn new_token() -> String {
    let mut b = [0u8; 18];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

type InviteRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    bool,
    Option<String>,
    String,
    i64,
    i64,
    i64,
    Option<i64>,
);

const INVITE_COLUMNS: &str = "invite_id, token, kind, inviter, username, role, reusable, note, source, created_at, expires_at, use_count, consumed_at";

fn invite_from_row(r: InviteRow, circles: Vec<String>) -> Result<Invite, StoreError> {
    Ok(Invite {
        kind: InviteKind::parse(&r.2)
            .ok_or_else(|| StoreError::Corrupt(format!("invite kind {:?}", r.2)))?,
        role: Role::parse(&r.5).ok_or_else(|| StoreError::Corrupt(format!("role {:?}", r.5)))?,
        invite_id: r.0,
        token: r.1,
        inviter: r.3,
        username: r.4,
        reusable: r.6,
        note: r.7,
        source: r.8,
        created_at: r.9,
        expires_at: r.10,
        use_count: r.11,
        consumed_at: r.12,
        circles,
    })
}

impl Store {
    /// Stores a new invitation. Every circle must exist (`NotFound { what: "circle" }` otherwise).
    pub async fn create_invite(&self, new: NewInvite) -> Result<Invite, StoreError> {
        let created_at = now();
        let reusable = new.kind == InviteKind::Group;
        for attempt in 0..4 {
            let token = new_token();
            let invite_id = token[..ID_LEN].to_string();
            let result: Result<(), StoreError> = with_pool!(self, p => {
                let mut conn = p.acquire().await?;
                let mut tx = conn.begin().await?;
                for c in &new.circles {
                    let found: Option<(String,)> = sqlx::query_as("SELECT circle_id FROM circles WHERE circle_id = $1")
                        .bind(c)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if found.is_none() {
                        return Err(StoreError::NotFound { what: "circle" });
                    }
                }
                let inserted = sqlx::query(
                    "INSERT INTO invites (invite_id, token, kind, inviter, username, role, reusable, note, source, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (invite_id) DO NOTHING",
                )
                .bind(&invite_id)
                .bind(&token)
                .bind(new.kind.as_str())
                .bind(&new.inviter)
                .bind(&new.username)
                .bind(new.role.as_str())
                .bind(reusable)
                .bind(&new.note)
                .bind(&new.source)
                .bind(created_at)
                .bind(created_at.saturating_add(new.ttl_secs))
                .execute(&mut *tx)
                .await?;
                if inserted.rows_affected() == 0 {
                    return Err(StoreError::Conflict("invite id collision".into()));
                }
                for c in &new.circles {
                    sqlx::query("INSERT INTO invite_circles (invite_id, circle_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                        .bind(&invite_id)
                        .bind(c)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            });
            match result {
                Ok(()) => {
                    return Ok(Invite {
                        invite_id,
                        token,
                        kind: new.kind,
                        inviter: new.inviter,
                        username: new.username,
                        role: new.role,
                        reusable,
                        note: new.note,
                        source: new.source,
                        created_at,
                        expires_at: created_at.saturating_add(new.ttl_secs),
                        use_count: 0,
                        consumed_at: None,
                        circles: new.circles,
                    })
                }
                Err(StoreError::Conflict(_)) if attempt < 3 => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict(
            "could not allocate an invite id".into(),
        ))
    }

    /// Looks an invitation up by id (no validity checks).
    pub async fn invite(&self, invite_id: &str) -> Result<Option<Invite>, StoreError> {
        let sql = format!("SELECT {INVITE_COLUMNS} FROM invites WHERE invite_id = $1");
        let row: Option<InviteRow> =
            with_pool!(self, p => sqlx::query_as(&sql).bind(invite_id).fetch_optional(p).await)?;
        let Some(row) = row else { return Ok(None) };
        let circles: Vec<(String,)> = with_pool!(self, p => sqlx::query_as(
            "SELECT circle_id FROM invite_circles WHERE invite_id = $1 ORDER BY circle_id",
        )
        .bind(invite_id)
        .fetch_all(p)
        .await)?;
        invite_from_row(row, circles.into_iter().map(|(c,)| c).collect()).map(Some)
    }

    /// Finds the invitation for `token` and checks it can be used now.
    pub async fn check_invite(
        &self,
        token: &str,
    ) -> Result<Result<Invite, InviteProblem>, StoreError> {
        let Some(id) = token.get(..ID_LEN) else {
            return Ok(Err(InviteProblem::Invalid));
        };
        let Some(invite) = self.invite(id).await? else {
            return Ok(Err(InviteProblem::Invalid));
        };
        if invite.token.len() != token.len()
            || !bool::from(invite.token.as_bytes().ct_eq(token.as_bytes()))
        {
            return Ok(Err(InviteProblem::Invalid));
        }
        if now() > invite.expires_at {
            return Ok(Err(InviteProblem::Expired));
        }
        if !invite.reusable && invite.consumed_at.is_some() {
            return Ok(Err(InviteProblem::Used));
        }
        Ok(Ok(invite))
    }

    /// Records one use; a single-use invite is consumed. Fails with `Conflict` if it was consumed
    /// concurrently.
    pub async fn use_invite(&self, invite_id: &str) -> Result<(), StoreError> {
        let r = with_writer!(self, p => sqlx::query(
            "UPDATE invites SET use_count = use_count + 1, \
             consumed_at = CASE WHEN reusable THEN consumed_at ELSE $1 END \
             WHERE invite_id = $2 AND (reusable OR consumed_at IS NULL)",
        )
        .bind(now())
        .bind(invite_id)
        .execute(p)
        .await.map(|r| r.rows_affected()))?;
        if r == 0 {
            return Err(StoreError::Conflict("invite already used".into()));
        }
        Ok(())
    }

    /// Invitations that can still be used, newest first.
    pub async fn pending_invites(&self) -> Result<Vec<Invite>, StoreError> {
        let sql = format!(
            "SELECT {INVITE_COLUMNS} FROM invites WHERE expires_at >= $1 AND (reusable OR consumed_at IS NULL) ORDER BY created_at DESC"
        );
        let rows: Vec<InviteRow> =
            with_pool!(self, p => sqlx::query_as(&sql).bind(now()).fetch_all(p).await)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let circles: Vec<(String,)> = with_pool!(self, p => sqlx::query_as(
                "SELECT circle_id FROM invite_circles WHERE invite_id = $1 ORDER BY circle_id",
            )
            .bind(&row.0)
            .fetch_all(p)
            .await)?;
            out.push(invite_from_row(
                row,
                circles.into_iter().map(|(c,)| c).collect(),
            )?);
        }
        Ok(out)
    }

    /// Deletes an invitation. Returns whether it existed.
    pub async fn delete_invite(&self, invite_id: &str) -> Result<bool, StoreError> {
        let r = with_pool!(self, p => sqlx::query("DELETE FROM invites WHERE invite_id = $1").bind(invite_id).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(r > 0)
    }

    /// Removes invitations that expired more than `grace_secs` ago or were used up; returns how many.
    pub async fn cleanup_invites(&self, grace_secs: i64) -> Result<u64, StoreError> {
        let cutoff = now() - grace_secs;
        let r = with_pool!(self, p => sqlx::query(
            "DELETE FROM invites WHERE expires_at < $1 OR (NOT reusable AND consumed_at IS NOT NULL AND consumed_at < $1)",
        )
        .bind(cutoff)
        .execute(p)
        .await.map(|r| r.rows_affected()))?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_support::each_backend;

    fn account_invite(circles: Vec<String>, ttl: i64) -> NewInvite {
        NewInvite {
            kind: InviteKind::Account,
            inviter: None,
            username: None,
            role: Role::Admin,
            circles,
            note: None,
            source: "cli".into(),
            ttl_secs: ttl,
        }
    }

    #[tokio::test]
    async fn invites_are_checked_used_and_cleaned() {
        each_backend(|store| async move {
            store.ensure_default_circle("Home").await.unwrap();
            let inv = store
                .create_invite(account_invite(vec!["default".into()], 3600))
                .await
                .unwrap();
            assert_eq!(inv.token.len(), 24);
            assert!(inv
                .token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            let checked = store.check_invite(&inv.token).await.unwrap().unwrap();
            assert_eq!(checked, inv);
            assert_eq!(checked.circles, vec!["default".to_string()]);
            // Same prefix, wrong rest; too short; unknown.
            let mut guessed = inv.token.clone();
            guessed.replace_range(20.., "AAAA");
            assert_eq!(
                store.check_invite(&guessed).await.unwrap(),
                Err(InviteProblem::Invalid)
            );
            assert_eq!(
                store.check_invite("abc").await.unwrap(),
                Err(InviteProblem::Invalid)
            );
            assert_eq!(
                store.check_invite(&new_token()).await.unwrap(),
                Err(InviteProblem::Invalid)
            );
            assert_eq!(store.pending_invites().await.unwrap().len(), 1);
            store.use_invite(&inv.invite_id).await.unwrap();
            assert_eq!(
                store.check_invite(&inv.token).await.unwrap(),
                Err(InviteProblem::Used)
            );
            assert!(matches!(
                store.use_invite(&inv.invite_id).await,
                Err(StoreError::Conflict(_))
            ));
            assert!(store.pending_invites().await.unwrap().is_empty());

            let expired = store
                .create_invite(account_invite(vec![], -10))
                .await
                .unwrap();
            assert_eq!(
                store.check_invite(&expired.token).await.unwrap(),
                Err(InviteProblem::Expired)
            );

            let mut group = account_invite(vec![], 3600);
            group.kind = InviteKind::Group;
            let group = store.create_invite(group).await.unwrap();
            assert!(group.reusable);
            store.use_invite(&group.invite_id).await.unwrap();
            store.use_invite(&group.invite_id).await.unwrap();
            assert_eq!(
                store
                    .check_invite(&group.token)
                    .await
                    .unwrap()
                    .unwrap()
                    .use_count,
                2
            );

            assert!(matches!(
                store
                    .create_invite(account_invite(vec!["nope".into()], 60))
                    .await,
                Err(StoreError::NotFound { what: "circle" })
            ));
            // Times are in whole seconds: with no grace, the invite used above would go too
            // whenever the clock ticked over since, so give the used one a few seconds' grace
            // (the expired one ended ten seconds before it was made).
            assert_eq!(
                store.cleanup_invites(5).await.unwrap(),
                1,
                "the expired invite goes, the one used just now stays"
            );
            assert!(store.delete_invite(&group.invite_id).await.unwrap());
            assert!(!store.delete_invite(&group.invite_id).await.unwrap());
            assert!(!format!("{group:?}").contains(&group.token));
        })
        .await;
    }
}
