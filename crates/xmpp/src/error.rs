//! Error types of the wire layer, one enum per layer, each mapping to exactly one wire condition.

use thiserror::Error;

/// Why a SCRAM exchange failed (RFC 5802, RFC 6120 §6.5).
///
/// [`ScramError::condition`] is the single mapping to the SASL `<failure/>` condition.
/// The `Display` text is for logs; it never contains a password, key or proof.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScramError {
    /// The client asked for a mechanism we do not offer (including PLAIN and OAUTHBEARER).
    #[error("mechanism not offered")]
    InvalidMechanism,
    /// The SASL payload was not valid base64.
    #[error("sasl payload is not valid base64")]
    IncorrectEncoding,
    /// A SCRAM message did not follow the RFC 5802 grammar; the text names what was wrong.
    #[error("malformed scram message: {0}")]
    Malformed(&'static str),
    /// Methods were called in the wrong order (client-final before server-first, or twice).
    #[error("scram exchange step out of order")]
    OutOfOrder,
    /// The client sent the `y` flag although we advertised -PLUS: a man in the middle stripped it.
    #[error("channel binding downgrade detected")]
    ChannelBindingDowngrade,
    /// The client chose a channel-binding type this connection cannot provide.
    #[error("unsupported channel binding type")]
    UnsupportedChannelBinding,
    /// A -PLUS mechanism was selected without the `p=` flag, or a plain one with it.
    #[error("gs2 flag does not match the mechanism")]
    ChannelBindingFlagMismatch,
    /// The `c=` attribute differs from the GS2 header plus our channel-binding data.
    #[error("channel binding data mismatch")]
    ChannelBindingMismatch,
    /// The nonce in client-final is not the combined nonce from server-first.
    #[error("nonce mismatch")]
    NonceMismatch,
    /// Wrong password, or unknown user (indistinguishable on purpose).
    #[error("authentication failed")]
    NotAuthorized,
    /// Iteration count of zero, or one beyond [`crate::scram::MAX_ITERATIONS`].
    #[error("invalid iteration count")]
    InvalidIterations,
    /// The password is not allowed by SASLprep (RFC 4013), e.g. contains control characters.
    #[error("password rejected by saslprep")]
    InvalidPassword,
}

impl ScramError {
    /// The RFC 6120 §6.5 SASL failure condition element name for this error.
    pub fn condition(&self) -> &'static str {
        match self {
            ScramError::InvalidMechanism => "invalid-mechanism",
            ScramError::IncorrectEncoding => "incorrect-encoding",
            ScramError::Malformed(_)
            | ScramError::OutOfOrder
            | ScramError::UnsupportedChannelBinding
            | ScramError::ChannelBindingFlagMismatch
            | ScramError::NonceMismatch
            | ScramError::InvalidPassword
            | ScramError::InvalidIterations => "malformed-request",
            ScramError::ChannelBindingDowngrade
            | ScramError::ChannelBindingMismatch
            | ScramError::NotAuthorized => "not-authorized",
        }
    }
}

/// A fatal stream-level error (RFC 6120 §4.9.3); the connection gets `<stream:error/>` and closes.
///
/// [`StreamError::condition`] is the single mapping to the stream error condition.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum StreamError {
    /// XML that violates well-formedness or namespace well-formedness.
    #[error("not well-formed xml: {0}")]
    NotWellFormed(rxml::Error),
    /// A DTD, entity declaration or reference, processing instruction or comment.
    #[error("restricted xml: {0}")]
    RestrictedXml(&'static str),
    /// Bytes that are not UTF-8, or an XML declaration naming another encoding.
    #[error("stream is not utf-8")]
    UnsupportedEncoding,
    /// A stanza (or the stream header, or a single token) exceeded the byte limit.
    #[error("stanza larger than {limit} bytes")]
    StanzaTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// Elements nested deeper than allowed.
    #[error("elements nested deeper than {limit}")]
    TooDeep {
        /// The configured limit.
        limit: usize,
    },
    /// An element carried more attributes than allowed.
    #[error("more than {limit} attributes on one element")]
    TooManyAttributes {
        /// The configured limit.
        limit: usize,
    },
    /// A stanza contained more elements than allowed.
    #[error("more than {limit} elements in one stanza")]
    TooManyElements {
        /// The configured limit.
        limit: usize,
    },
    /// The caller fed more unparsed bytes than allowed without pulling events.
    #[error("more than {limit} unparsed bytes buffered")]
    BufferFull {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// Wrong stream namespace, or a top-level element outside the content namespace.
    #[error("invalid namespace")]
    InvalidNamespace,
    /// Well-formed XML that is not an XMPP stream (e.g. wrong root element, text between stanzas).
    #[error("bad format: {0}")]
    BadFormat(&'static str),
    /// The stream header lacks `version` or its major version is not 1.
    #[error("unsupported stream version")]
    UnsupportedVersion,
}

impl StreamError {
    /// The RFC 6120 §4.9.3 stream error condition element name for this error.
    pub fn condition(&self) -> &'static str {
        match self {
            StreamError::NotWellFormed(_) => "not-well-formed",
            StreamError::RestrictedXml(_) => "restricted-xml",
            StreamError::UnsupportedEncoding => "unsupported-encoding",
            StreamError::StanzaTooLarge { .. }
            | StreamError::TooDeep { .. }
            | StreamError::TooManyAttributes { .. }
            | StreamError::TooManyElements { .. }
            | StreamError::BufferFull { .. } => "policy-violation",
            StreamError::InvalidNamespace => "invalid-namespace",
            StreamError::BadFormat(_) => "bad-format",
            StreamError::UnsupportedVersion => "unsupported-version",
        }
    }
}

impl From<rxml::Error> for StreamError {
    /// Classifies rxml's lexer/parser errors into stream conditions.
    fn from(e: rxml::Error) -> StreamError {
        match e {
            rxml::Error::InvalidUtf8Byte(_) => StreamError::UnsupportedEncoding,
            rxml::Error::RestrictedXml("only utf-8 encoding is allowed") => {
                StreamError::UnsupportedEncoding
            }
            // rxml's own token limit is set to our stanza limit, so hitting it is a size problem.
            rxml::Error::RestrictedXml("event too long" | "long name or reference") => {
                StreamError::StanzaTooLarge { limit: 0 }
            }
            rxml::Error::RestrictedXml(what) => StreamError::RestrictedXml(what),
            // `<!DOCTYPE`, `<!ENTITY`, `<!ELEMENT`: anything after `<!` that is not a comment or CDATA.
            rxml::Error::InvalidSyntax("malformed cdata or comment section start") => {
                StreamError::RestrictedXml("dtd or markup declaration")
            }
            rxml::Error::UndeclaredEntity => StreamError::RestrictedXml("entity reference"),
            other => StreamError::NotWellFormed(other),
        }
    }
}

/// Why a username or password was refused (XEP-0077 registration and password change).
///
/// [`AccountError::text`] is the user-facing text from the Snikket spec §3.3; the stanza error
/// condition is always [`AccountError::condition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AccountError {
    /// Empty, too long, or rejected by nodeprep (RFC 7622 / RFC 3920 Appendix A).
    #[error("invalid username")]
    InvalidUsername,
    /// Fewer than [`crate::account::MIN_PASSWORD_CHARS`] characters.
    #[error("password too short")]
    PasswordTooShort,
    /// The password contains the username (case-insensitive).
    #[error("password contains the username")]
    PasswordContainsUsername,
}

impl AccountError {
    /// The text shown to the user in the stanza error.
    pub fn text(&self) -> &'static str {
        match self {
            AccountError::InvalidUsername => "The requested username is invalid.",
            AccountError::PasswordTooShort => "Password is too short (minimum 10 characters)",
            AccountError::PasswordContainsUsername => "Password must not include your username",
        }
    }

    /// The RFC 6120 stanza error condition (type `modify`).
    pub fn condition(&self) -> &'static str {
        "not-acceptable"
    }
}
