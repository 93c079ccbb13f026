//! Username and password policy for registration and password change (XEP-0077, spec §3.3).

pub use crate::error::AccountError;

/// Minimum password length in characters (`password_policy = { length = 10 }`).
pub const MIN_PASSWORD_CHARS: usize = 10;

/// Validates a requested username and returns its canonical (nodeprep'd) form, which is the
/// one to store and compare: `Alice` and `alice` are the same account.
pub fn validate_localpart(username: &str) -> Result<String, AccountError> {
    match jid::NodePart::new(username) {
        Ok(node) => Ok(node.as_str().to_owned()),
        Err(_) => Err(AccountError::InvalidUsername),
    }
}

/// Checks a new password against the policy.
///
/// Pass `Some(username)` to also refuse passwords containing the username (case-insensitive);
/// spec §3.3 applies that check to authenticated password changes.
pub fn check_password(password: &str, username: Option<&str>) -> Result<(), AccountError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AccountError::PasswordTooShort);
    }
    if let Some(username) = username.filter(|u| !u.is_empty()) {
        if password.to_lowercase().contains(&username.to_lowercase()) {
            return Err(AccountError::PasswordContainsUsername);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localpart_is_nodeprepped() {
        assert_eq!(validate_localpart("Alice").unwrap(), "alice");
        assert_eq!(validate_localpart("ÄRGER").unwrap(), "ärger");
        assert_eq!(validate_localpart("bob.smith-1").unwrap(), "bob.smith-1");
    }

    #[test]
    fn localpart_rejections() {
        for bad in [
            "", "a@b", "a/b", "a b", "a:b", "a'b", "a\"b", "a&b", "a<b", "a>b", "\u{7}",
        ] {
            let err = validate_localpart(bad).unwrap_err();
            assert_eq!(err, AccountError::InvalidUsername, "{bad:?}");
        }
        assert_eq!(
            validate_localpart(&"a".repeat(1024)).unwrap_err(),
            AccountError::InvalidUsername
        );
        assert!(validate_localpart(&"a".repeat(1023)).is_ok());
        assert_eq!(
            AccountError::InvalidUsername.text(),
            "The requested username is invalid."
        );
    }

    #[test]
    fn password_length() {
        let err = check_password("123456789", None).unwrap_err();
        assert_eq!(err, AccountError::PasswordTooShort);
        assert_eq!(err.text(), "Password is too short (minimum 10 characters)");
        assert_eq!(err.condition(), "not-acceptable");
        assert!(check_password("1234567890", None).is_ok());
        // Characters, not bytes: nine umlauts are 18 bytes but still too short.
        assert_eq!(
            check_password(&"ü".repeat(9), None).unwrap_err(),
            AccountError::PasswordTooShort
        );
        assert!(check_password(&"ü".repeat(10), None).is_ok());
    }

    #[test]
    fn password_must_not_contain_username() {
        let err = check_password("my-ALICE-password", Some("alice")).unwrap_err();
        assert_eq!(err, AccountError::PasswordContainsUsername);
        assert_eq!(err.text(), "Password must not include your username");
        assert!(check_password("my-ALICE-password", None).is_ok());
        assert!(check_password("correct horse battery", Some("alice")).is_ok());
        assert!(check_password("correct horse battery", Some("")).is_ok());
    }
}
