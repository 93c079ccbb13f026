//! SASL SCRAM server side: SCRAM-SHA-1/-256 and -PLUS (RFC 5802, RFC 7677, XEP-0440, RFC 9266).
//!
//! Flow, one [`ScramServer`] per `<auth/>` attempt:
//!
//! ```
//! use snikket_xmpp::scram::{ScramServer, Mechanism, ScramHash, StoredCredentials};
//! # fn main() -> Result<(), snikket_xmpp::ScramError> {
//! let creds = StoredCredentials::new_random(ScramHash::Sha256, "pencil")?; // at registration
//! let mut server = ScramServer::new(Mechanism::from_name("SCRAM-SHA-256")?, Vec::new(), false);
//! let first = server.client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")?;
//! assert_eq!(first.username, "user");
//! let challenge = server.server_first(Some(&creds))?; // send in <challenge/>
//! # let _ = challenge;
//! // let success_data = server.client_final(&response)?; // send in <success/>
//! # Ok(()) }
//! ```
//!
//! Unknown users get a fake salt that is stable for the process lifetime, so the server-first
//! message does not reveal whether an account exists; the proof check then fails as for a
//! wrong password.

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use crate::error::ScramError;

/// Iteration count used by [`StoredCredentials::new_random`] and for fake salts of unknown users.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Highest iteration count [`StoredCredentials::derive`] accepts (keeps a login cheap enough).
pub const MAX_ITERATIONS: u32 = 1_000_000;

/// Length of the random salt made by [`StoredCredentials::new_random`].
pub const SALT_LEN: usize = 16;

/// RFC 9266 exporter label for `tls-exporter` channel binding (empty context, 32 bytes).
pub const TLS_EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

/// Number of exporter bytes RFC 9266 asks for.
pub const TLS_EXPORTER_LEN: usize = 32;

/// Upper bound for one SCRAM message; real ones are well under 1 KiB.
const MAX_MESSAGE_LEN: usize = 4096;

/// Random bytes in our part of the nonce (base64-encoded to 32 printable characters).
const SERVER_NONCE_BYTES: usize = 24;

/// The hash function of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    /// SHA-1 (RFC 5802); Prosody's default, needed for imported accounts.
    Sha1,
    /// SHA-256 (RFC 7677).
    Sha256,
}

impl ScramHash {
    /// Output length of the hash in bytes, also the length of every SCRAM key.
    pub fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
        match self {
            ScramHash::Sha1 => match Hmac::<Sha1>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => vec![0; 20],
            },
            ScramHash::Sha256 => match Hmac::<Sha256>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => vec![0; 32],
            },
        }
    }

    fn pbkdf2(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.output_len()];
        match self {
            ScramHash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out)
            }
        }
        out
    }
}

/// A SASL mechanism we implement. PLAIN and OAUTHBEARER deliberately do not exist here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// `SCRAM-SHA-1`
    ScramSha1,
    /// `SCRAM-SHA-1-PLUS`
    ScramSha1Plus,
    /// `SCRAM-SHA-256`
    ScramSha256,
    /// `SCRAM-SHA-256-PLUS`
    ScramSha256Plus,
}

impl Mechanism {
    /// Every mechanism, strongest first.
    pub const ALL: [Mechanism; 4] = [
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
    ];

    /// Parses the `mechanism` attribute of `<auth/>`; anything unknown is `InvalidMechanism`.
    pub fn from_name(name: &str) -> Result<Mechanism, ScramError> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or(ScramError::InvalidMechanism)
    }

    /// The IANA mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
        }
    }

    /// The hash of this mechanism, i.e. which [`StoredCredentials`] to look up.
    pub fn hash(self) -> ScramHash {
        match self {
            Mechanism::ScramSha1 | Mechanism::ScramSha1Plus => ScramHash::Sha1,
            Mechanism::ScramSha256 | Mechanism::ScramSha256Plus => ScramHash::Sha256,
        }
    }

    /// Whether this is a channel-binding (-PLUS) variant.
    pub fn is_plus(self) -> bool {
        matches!(self, Mechanism::ScramSha1Plus | Mechanism::ScramSha256Plus)
    }
}

/// Mechanism names to advertise, strongest first. Never contains PLAIN.
///
/// Pass `true` when the connection is TLS and at least one [`ChannelBinding`] can be built; the
/// -PLUS names are then included, and every [`ScramServer`] on this connection must be created
/// with `plus_advertised = true`.
/// SHA-256 is only usable for accounts that have SHA-256 credentials stored; filter it out
/// otherwise.
pub fn mechanisms(has_channel_binding: bool) -> Vec<&'static str> {
    Mechanism::ALL
        .into_iter()
        .filter(|m| has_channel_binding || !m.is_plus())
        .map(Mechanism::name)
        .collect()
}

/// Decodes the text content of `<auth/>` or `<response/>`: base64, with `=` meaning empty.
pub fn decode_payload(text: &str) -> Result<Vec<u8>, ScramError> {
    let text = text.trim();
    if text == "=" {
        return Ok(Vec::new());
    }
    B64.decode(text).map_err(|_| ScramError::IncorrectEncoding)
}

/// Encodes bytes for `<challenge/>` or `<success/>` (empty becomes `=`).
pub fn encode_payload(data: &[u8]) -> String {
    if data.is_empty() {
        "=".to_owned()
    } else {
        B64.encode(data)
    }
}

/// A channel-binding type of RFC 5929 / RFC 9266, as advertised by XEP-0440.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelBindingType {
    /// `tls-exporter` (RFC 9266): [`TLS_EXPORTER_LEN`] bytes exported with [`TLS_EXPORTER_LABEL`].
    TlsExporter,
    /// `tls-server-end-point` (RFC 5929 §4): the hash of our certificate (SHA-256 for SHA-1/MD5
    /// signatures, else the signature's hash).
    TlsServerEndPoint,
}

impl ChannelBindingType {
    /// The name used in `p=` and in XEP-0440 `<channel-binding type='…'/>`.
    pub fn name(self) -> &'static str {
        match self {
            ChannelBindingType::TlsExporter => "tls-exporter",
            ChannelBindingType::TlsServerEndPoint => "tls-server-end-point",
        }
    }

    /// Parses a `p=` value; `None` for `tls-unique` and anything else we do not support.
    pub fn from_name(name: &str) -> Option<ChannelBindingType> {
        match name {
            "tls-exporter" => Some(ChannelBindingType::TlsExporter),
            "tls-server-end-point" => Some(ChannelBindingType::TlsServerEndPoint),
            _ => None,
        }
    }
}

/// Channel-binding data of the current TLS connection.
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelBinding {
    /// Which binding this is.
    pub kind: ChannelBindingType,
    /// The binding bytes (exporter output or certificate hash).
    pub data: Vec<u8>,
}

impl std::fmt::Debug for ChannelBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelBinding")
            .field("kind", &self.kind)
            .field("data", &"***")
            .finish()
    }
}

impl ChannelBinding {
    /// `tls-exporter` binding from the [`TLS_EXPORTER_LEN`] bytes the TLS library exported
    /// with [`TLS_EXPORTER_LABEL`] and no context.
    pub fn tls_exporter(exported: Vec<u8>) -> ChannelBinding {
        ChannelBinding {
            kind: ChannelBindingType::TlsExporter,
            data: exported,
        }
    }

    /// `tls-server-end-point` binding (RFC 5929 §4.1) for our leaf certificate in DER.
    ///
    /// The hash follows the certificate's signature algorithm (SHA-256 for MD5/SHA-1/SHA-256,
    /// else SHA-384 or SHA-512). `None` when the algorithm names no single hash (Ed25519,
    /// RSA-PSS) or the DER cannot be read; then do not offer this type.
    pub fn tls_server_end_point(cert_der: &[u8]) -> Option<ChannelBinding> {
        let data = match signature_hash(cert_der)? {
            CertHash::Sha256 => Sha256::digest(cert_der).to_vec(),
            CertHash::Sha384 => sha2::Sha384::digest(cert_der).to_vec(),
            CertHash::Sha512 => sha2::Sha512::digest(cert_der).to_vec(),
        };
        Some(ChannelBinding {
            kind: ChannelBindingType::TlsServerEndPoint,
            data,
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
enum CertHash {
    Sha256,
    Sha384,
    Sha512,
}

/// Reads `Certificate.signatureAlgorithm.algorithm` and maps it to the RFC 5929 hash.
fn signature_hash(der: &[u8]) -> Option<CertHash> {
    let (tag, cert, _) = der_item(der)?;
    if tag != 0x30 {
        return None;
    }
    let (_tbs_tag, _tbs, after_tbs) = der_item(cert)?;
    let (alg_tag, alg, _) = der_item(after_tbs)?;
    let (oid_tag, oid, _) = der_item(alg)?;
    if alg_tag != 0x30 || oid_tag != 0x06 {
        return None;
    }
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    match oid {
        // md5WithRSA, sha1WithRSA, sha256WithRSA
        [p @ .., 0x04 | 0x05 | 0x0b] if p == RSA => Some(CertHash::Sha256),
        [p @ .., 0x0c] if p == RSA => Some(CertHash::Sha384),
        [p @ .., 0x0d] if p == RSA => Some(CertHash::Sha512),
        // ecdsa-with-SHA1, ecdsa-with-SHA256/384/512
        [p @ .., 0x01] if p == ECDSA => Some(CertHash::Sha256),
        [p @ .., 0x03, 0x02] if p == ECDSA => Some(CertHash::Sha256),
        [p @ .., 0x03, 0x03] if p == ECDSA => Some(CertHash::Sha384),
        [p @ .., 0x03, 0x04] if p == ECDSA => Some(CertHash::Sha512),
        _ => None,
    }
}

/// Splits one DER TLV off `input`: (tag, contents, rest). Definite lengths up to 4 bytes.
fn der_item(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, tail) = rest.split_at(n);
        rest = tail;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if rest.len() < len {
        return None;
    }
    let (contents, tail) = rest.split_at(len);
    Some((tag, contents, tail))
}

/// Salted, iterated SCRAM credentials as stored at rest (never the password).
///
/// The keys are `hash.output_len()` bytes long; the hash itself is stored by the caller (one
/// record per [`ScramHash`]).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCredentials {
    /// PBKDF2 salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for StoredCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredentials")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl StoredCredentials {
    /// Derives credentials from a password (SASLprep-normalised first, as clients do).
    pub fn derive(
        hash: ScramHash,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<StoredCredentials, ScramError> {
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(ScramError::InvalidIterations);
        }
        let password = stringprep::saslprep(password).map_err(|_| ScramError::InvalidPassword)?;
        let salted = hash.pbkdf2(password.as_bytes(), salt, iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        Ok(StoredCredentials {
            salt: salt.to_vec(),
            iterations,
            stored_key: hash.digest(&client_key),
            server_key: hash.hmac(&salted, b"Server Key"),
        })
    }

    /// Derives credentials with a fresh random [`SALT_LEN`]-byte salt and [`DEFAULT_ITERATIONS`].
    pub fn new_random(hash: ScramHash, password: &str) -> Result<StoredCredentials, ScramError> {
        let mut salt = [0u8; SALT_LEN];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        StoredCredentials::derive(hash, password, &salt, DEFAULT_ITERATIONS)
    }

    /// Fake credentials for an unknown user: salt stable per (process, hash, username), random
    /// keys so that no proof can match.
    fn fake(hash: ScramHash, username: &str) -> StoredCredentials {
        static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
        let secret = SECRET.get_or_init(|| {
            let mut s = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut s);
            s
        });
        let mut input = Vec::with_capacity(username.len() + 1);
        input.push(hash.output_len() as u8);
        input.extend_from_slice(username.as_bytes());
        let mut salt = ScramHash::Sha256.hmac(secret, &input);
        salt.truncate(SALT_LEN);
        let mut stored_key = vec![0u8; hash.output_len()];
        let mut server_key = vec![0u8; hash.output_len()];
        rand::rngs::OsRng.fill_bytes(&mut stored_key);
        rand::rngs::OsRng.fill_bytes(&mut server_key);
        StoredCredentials {
            salt,
            iterations: DEFAULT_ITERATIONS,
            stored_key,
            server_key,
        }
    }
}

/// What the client-first message told us; look the user up with `username`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The SASL username, unescaped (`=2C` → `,`, `=3D` → `=`), not yet nodeprep'd.
    pub username: String,
    /// The optional authorization identity (`a=`); the caller must reject one that is not the
    /// user's own JID.
    pub authzid: Option<String>,
}

/// Where the exchange stands.
enum State {
    Start,
    ClientFirstReceived {
        gs2_header: Vec<u8>,
        client_first_bare: Vec<u8>,
        client_nonce: String,
        username: String,
    },
    ServerFirstSent {
        gs2_header: Vec<u8>,
        auth_message_prefix: Vec<u8>,
        nonce: String,
        creds: StoredCredentials,
        known_user: bool,
    },
    Done,
}

/// Server side of one SCRAM exchange.
pub struct ScramServer {
    mechanism: Mechanism,
    channel_bindings: Vec<ChannelBinding>,
    plus_advertised: bool,
    server_nonce: String,
    state: State,
}

impl std::fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramServer")
            .field("mechanism", &self.mechanism)
            .field("plus_advertised", &self.plus_advertised)
            .finish_non_exhaustive()
    }
}

impl ScramServer {
    /// Starts an exchange for `mechanism`.
    ///
    /// `channel_bindings` lists the bindings this TLS connection can provide (empty without TLS);
    /// the client picks one with `p=`. `plus_advertised` must be true when -PLUS mechanisms were
    /// offered on this stream, so that a client sending `y` is detected as downgraded.
    pub fn new(
        mechanism: Mechanism,
        channel_bindings: Vec<ChannelBinding>,
        plus_advertised: bool,
    ) -> ScramServer {
        let mut nonce = [0u8; SERVER_NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        ScramServer::with_server_nonce(
            mechanism,
            channel_bindings,
            plus_advertised,
            B64.encode(nonce),
        )
    }

    fn with_server_nonce(
        mechanism: Mechanism,
        channel_bindings: Vec<ChannelBinding>,
        plus_advertised: bool,
        server_nonce: String,
    ) -> ScramServer {
        ScramServer {
            mechanism,
            channel_bindings,
            plus_advertised,
            server_nonce,
            state: State::Start,
        }
    }

    /// The mechanism of this exchange.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Parses client-first (the decoded `<auth/>` payload) and checks the GS2 flags.
    ///
    /// Normalise `username` with [`crate::account::validate_localpart`] before looking up the
    /// credentials; an invalid one is looked up as unknown (pass `None` to `server_first`).
    pub fn client_first(&mut self, message: &[u8]) -> Result<ClientFirst, ScramError> {
        if !matches!(self.state, State::Start) {
            self.state = State::Done;
            return Err(ScramError::OutOfOrder);
        }
        self.state = State::Done;
        // A -PLUS mechanism that was never offered on this stream.
        if self.mechanism.is_plus() && (!self.plus_advertised || self.channel_bindings.is_empty()) {
            return Err(ScramError::InvalidMechanism);
        }
        if message.len() > MAX_MESSAGE_LEN {
            return Err(ScramError::Malformed("message too long"));
        }
        let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not utf-8"))?;
        if text.contains('\0') {
            return Err(ScramError::Malformed("nul byte"));
        }
        // gs2-header = gs2-cbind-flag "," [ authzid ] ","
        let (flag, rest) = text
            .split_once(',')
            .ok_or(ScramError::Malformed("missing gs2 header"))?;
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("missing gs2 header"))?;
        let gs2_len = flag.len() + authzid.len() + 2;
        self.check_flag(flag)?;
        let authzid = match authzid {
            "" => None,
            a => Some(parse_saslname(
                a.strip_prefix("a=")
                    .ok_or(ScramError::Malformed("bad authzid"))?,
            )?),
        };
        // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
        let mut attrs = bare.split(',');
        let username = match attrs.next().and_then(|a| a.strip_prefix("n=")) {
            Some(u) => parse_saslname(u)?,
            None if bare.starts_with("m=") => {
                return Err(ScramError::Malformed("mandatory extension not supported"))
            }
            None => return Err(ScramError::Malformed("missing username")),
        };
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("missing nonce"))?;
        check_nonce(client_nonce)?;
        for ext in attrs {
            check_extension(ext)?;
        }
        self.state = State::ClientFirstReceived {
            gs2_header: message[..gs2_len].to_vec(),
            client_first_bare: bare.as_bytes().to_vec(),
            client_nonce: client_nonce.to_owned(),
            username: username.clone(),
        };
        Ok(ClientFirst { username, authzid })
    }

    /// Checks the gs2-cbind-flag against the mechanism, the advertisement and our bindings.
    fn check_flag(&self, flag: &str) -> Result<(), ScramError> {
        match flag {
            "n" | "y" if self.mechanism.is_plus() => Err(ScramError::ChannelBindingFlagMismatch),
            "n" => Ok(()),
            // RFC 5802 §6: the client supports binding but thinks we do not; if we did offer
            // -PLUS, someone removed it from our feature list.
            "y" if self.plus_advertised => Err(ScramError::ChannelBindingDowngrade),
            "y" => Ok(()),
            _ => {
                let name = flag
                    .strip_prefix("p=")
                    .ok_or(ScramError::Malformed("bad gs2 flag"))?;
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                {
                    return Err(ScramError::Malformed("bad channel binding name"));
                }
                if !self.mechanism.is_plus() {
                    return Err(ScramError::ChannelBindingFlagMismatch);
                }
                match ChannelBindingType::from_name(name) {
                    Some(kind) if self.binding(kind).is_some() => Ok(()),
                    _ => Err(ScramError::UnsupportedChannelBinding),
                }
            }
        }
    }

    fn binding(&self, kind: ChannelBindingType) -> Option<&ChannelBinding> {
        self.channel_bindings.iter().find(|b| b.kind == kind)
    }

    /// Builds server-first (send it in `<challenge/>`). Pass `None` for an unknown user: the
    /// reply looks the same and [`ScramServer::client_final`] will fail with `NotAuthorized`.
    ///
    /// Credentials whose key length does not fit the mechanism's hash are treated as unknown.
    pub fn server_first(
        &mut self,
        creds: Option<&StoredCredentials>,
    ) -> Result<Vec<u8>, ScramError> {
        let State::ClientFirstReceived {
            gs2_header,
            client_first_bare,
            client_nonce,
            username,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let hash = self.mechanism.hash();
        let usable = creds.filter(|c| {
            c.stored_key.len() == hash.output_len()
                && c.server_key.len() == hash.output_len()
                && c.iterations > 0
        });
        let (creds, known_user) = match usable {
            Some(c) => (c.clone(), true),
            None => (StoredCredentials::fake(hash, &username), false),
        };
        let nonce = format!("{client_nonce}{}", self.server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&creds.salt),
            creds.iterations
        )
        .into_bytes();
        let mut auth_message_prefix = client_first_bare;
        auth_message_prefix.push(b',');
        auth_message_prefix.extend_from_slice(&server_first);
        auth_message_prefix.push(b',');
        self.state = State::ServerFirstSent {
            gs2_header,
            auth_message_prefix,
            nonce,
            creds,
            known_user,
        };
        Ok(server_first)
    }

    /// Verifies client-final (the decoded `<response/>` payload): channel binding, nonce and
    /// proof (constant time). On success returns server-final (`v=…`) for `<success/>`.
    pub fn client_final(&mut self, message: &[u8]) -> Result<Vec<u8>, ScramError> {
        let State::ServerFirstSent {
            gs2_header,
            auth_message_prefix,
            nonce,
            creds,
            known_user,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramError::OutOfOrder);
        };
        if message.len() > MAX_MESSAGE_LEN {
            return Err(ScramError::Malformed("message too long"));
        }
        let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not utf-8"))?;
        // client-final-message = channel-binding "," nonce ["," extensions] "," proof
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("missing proof"))?;
        let mut attrs = without_proof.split(',');
        let cb = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("missing channel binding"))?;
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("missing nonce"))?;
        for ext in attrs {
            check_extension(ext)?;
        }
        let cb = B64
            .decode(cb)
            .map_err(|_| ScramError::Malformed("channel binding is not base64"))?;
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;

        let mut expected_cb = gs2_header.clone();
        if let Some(name) = gs2_header
            .strip_prefix(b"p=")
            .and_then(|r| r.split(|&b| b == b',').next())
        {
            let binding = std::str::from_utf8(name)
                .ok()
                .and_then(ChannelBindingType::from_name)
                .and_then(|k| self.binding(k))
                .ok_or(ScramError::UnsupportedChannelBinding)?;
            expected_cb.extend_from_slice(&binding.data);
        }
        if !bool::from(cb.ct_eq(&expected_cb)) {
            return Err(ScramError::ChannelBindingMismatch);
        }
        if client_nonce != nonce {
            return Err(ScramError::NonceMismatch);
        }
        let hash = self.mechanism.hash();
        if proof.len() != hash.output_len() {
            return Err(ScramError::Malformed("proof has the wrong length"));
        }

        let mut auth_message = auth_message_prefix;
        auth_message.extend_from_slice(without_proof.as_bytes());
        let client_signature = hash.hmac(&creds.stored_key, &auth_message);
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let matches = hash.digest(&client_key).ct_eq(&creds.stored_key);
        if !bool::from(matches & subtle::Choice::from(u8::from(known_user))) {
            return Err(ScramError::NotAuthorized);
        }
        let server_signature = hash.hmac(&creds.server_key, &auth_message);
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

/// Unescapes a saslname (RFC 5802 §5.1): only `=2C` and `=3D` may follow `=`.
fn parse_saslname(s: &str) -> Result<String, ScramError> {
    if s.is_empty() {
        return Err(ScramError::Malformed("empty name"));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('=') {
        out.push_str(&rest[..pos]);
        let esc = rest.get(pos..pos + 3);
        match esc {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in name")),
        }
        rest = &rest[pos + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A nonce is one or more printable ASCII characters other than `,`.
fn check_nonce(nonce: &str) -> Result<(), ScramError> {
    if nonce.is_empty()
        || !nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
    {
        return Err(ScramError::Malformed("bad nonce"));
    }
    Ok(())
}

/// An extension is `attr=value` with a one-letter attribute; `m=` is mandatory and unsupported.
fn check_extension(ext: &str) -> Result<(), ScramError> {
    let b = ext.as_bytes();
    if b.len() < 2 || !b[0].is_ascii_alphabetic() || b[1] != b'=' {
        return Err(ScramError::Malformed("bad attribute"));
    }
    if b[0] == b'm' {
        return Err(ScramError::Malformed("mandatory extension not supported"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> Vec<u8> {
        B64.decode(s).unwrap()
    }

    /// RFC 5802 §5 credentials: user "user", password "pencil".
    fn rfc5802_creds() -> StoredCredentials {
        StoredCredentials::derive(ScramHash::Sha1, "pencil", &b64("QSXCR+Q6sek8bf92"), 4096)
            .unwrap()
    }

    fn rfc7677_creds() -> StoredCredentials {
        StoredCredentials::derive(
            ScramHash::Sha256,
            "pencil",
            &b64("W22ZaJ0SNY7soEsUEjb6gQ=="),
            4096,
        )
        .unwrap()
    }

    fn rfc5802_server() -> ScramServer {
        ScramServer::with_server_nonce(
            Mechanism::ScramSha1,
            Vec::new(),
            false,
            "3rfcNHYJY1ZVvWVs7j".into(),
        )
    }

    const RFC5802_FINAL: &[u8] =
        b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=";

    #[test]
    fn rfc5802_sha1_vector() {
        let mut s = rfc5802_server();
        let first = s
            .client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
            .unwrap();
        assert_eq!(
            first,
            ClientFirst {
                username: "user".into(),
                authzid: None
            }
        );
        let sf = s.server_first(Some(&rfc5802_creds())).unwrap();
        assert_eq!(
            sf,
            b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
        );
        let fin = s.client_final(RFC5802_FINAL).unwrap();
        assert_eq!(fin, b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
    }

    #[test]
    fn rfc7677_sha256_vector() {
        let mut s = ScramServer::with_server_nonce(
            Mechanism::ScramSha256,
            Vec::new(),
            false,
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
        );
        s.client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        let sf = s.server_first(Some(&rfc7677_creds())).unwrap();
        assert_eq!(
            sf,
            &b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"[..]
        );
        let fin = s
            .client_final(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(fin, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn wrong_proof_is_not_authorized() {
        let mut s = rfc5802_server();
        s.client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
            .unwrap();
        let wrong =
            StoredCredentials::derive(ScramHash::Sha1, "pencil2", &b64("QSXCR+Q6sek8bf92"), 4096)
                .unwrap();
        s.server_first(Some(&wrong)).unwrap();
        let err = s.client_final(RFC5802_FINAL).unwrap_err();
        assert_eq!(err, ScramError::NotAuthorized);
        assert_eq!(err.condition(), "not-authorized");
    }

    #[test]
    fn unknown_user_gets_stable_fake_salt_and_fails() {
        let mut a = rfc5802_server();
        a.client_first(b"n,,n=ghost,r=abc").unwrap();
        let sa = a.server_first(None).unwrap();
        let mut b = rfc5802_server();
        b.client_first(b"n,,n=ghost,r=abc").unwrap();
        let sb = b.server_first(None).unwrap();
        assert_eq!(sa, sb, "same user, same salt");
        let mut c = rfc5802_server();
        c.client_first(b"n,,n=other,r=abc").unwrap();
        assert_ne!(sa, c.server_first(None).unwrap());
        let text = String::from_utf8(sa).unwrap();
        assert!(text.starts_with("r=abc3rfcNHYJY1ZVvWVs7j,s="));
        assert!(text.ends_with(",i=4096"));
        let err = a
            .client_final(b"c=biws,r=abc3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
            .unwrap_err();
        assert_eq!(err, ScramError::NotAuthorized);
    }

    #[test]
    fn nonce_mismatch() {
        let mut s = rfc5802_server();
        s.client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
            .unwrap();
        s.server_first(Some(&rfc5802_creds())).unwrap();
        let err = s
            .client_final(b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
            .unwrap_err();
        assert_eq!(err, ScramError::NonceMismatch);
    }

    #[test]
    fn authzid_and_escapes() {
        let mut s = rfc5802_server();
        let first = s
            .client_first(b"n,a=admin=3Dx,n=us=2Cer=3D,r=abc,x=ignored")
            .unwrap();
        assert_eq!(first.username, "us,er=");
        assert_eq!(first.authzid.as_deref(), Some("admin=x"));
    }

    #[test]
    fn malformed_client_first() {
        let cases: &[&[u8]] = &[
            b"",
            b"n",
            b"n,",
            b"x,,n=user,r=abc",
            b"n,,r=abc",
            b"n,,n=user",
            b"n,,n=,r=abc",
            b"n,,n=us=2Xer,r=abc",
            b"n,,n=user=,r=abc",
            b"n,,n=user,r=",
            b"n,,n=user,r=a b",
            b"n,,m=ext,n=user,r=abc",
            b"n,,n=user,r=abc,m=must",
            b"n,,n=user,r=abc,bogus",
            b"n,b=x,n=user,r=abc",
            b"n,,n=u\0ser,r=abc",
            b"n,,n=\xff,r=abc",
            b"p=,,n=user,r=abc",
        ];
        for case in cases {
            let err = rfc5802_server().client_first(case).unwrap_err();
            assert!(
                matches!(err, ScramError::Malformed(_)),
                "{:?}: {err:?}",
                String::from_utf8_lossy(case)
            );
            assert_eq!(err.condition(), "malformed-request");
        }
    }

    fn exporter() -> ChannelBinding {
        ChannelBinding {
            kind: ChannelBindingType::TlsExporter,
            data: vec![7; 32],
        }
    }

    fn plus_server(m: Mechanism) -> ScramServer {
        ScramServer::with_server_nonce(m, vec![exporter()], true, "SRV".into())
    }

    /// Builds a valid client-final for the given GS2 header, cb data and password.
    fn client_final(
        hash: ScramHash,
        password: &str,
        gs2: &[u8],
        cb_data: &[u8],
        client_first_bare: &str,
        server_first: &[u8],
        nonce: &str,
    ) -> Vec<u8> {
        let sf = std::str::from_utf8(server_first).unwrap();
        let salt = b64(sf.split(",s=").nth(1).unwrap().split(',').next().unwrap());
        let salted = hash.pbkdf2(password.as_bytes(), &salt, 4096);
        let client_key = hash.hmac(&salted, b"Client Key");
        let stored = hash.digest(&client_key);
        let mut c = gs2.to_vec();
        c.extend_from_slice(cb_data);
        let without_proof = format!("c={},r={nonce}", B64.encode(c));
        let auth = format!("{client_first_bare},{sf},{without_proof}");
        let sig = hash.hmac(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(sig).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", B64.encode(proof)).into_bytes()
    }

    #[test]
    fn plus_with_tls_exporter_succeeds() {
        for m in [Mechanism::ScramSha1Plus, Mechanism::ScramSha256Plus] {
            let hash = m.hash();
            let creds = StoredCredentials::new_random(hash, "correct horse").unwrap();
            let mut s = plus_server(m);
            s.client_first(b"p=tls-exporter,,n=user,r=cn").unwrap();
            let sf = s.server_first(Some(&creds)).unwrap();
            let fin = client_final(
                hash,
                "correct horse",
                b"p=tls-exporter,,",
                &[7; 32],
                "n=user,r=cn",
                &sf,
                "cnSRV",
            );
            let v = s.client_final(&fin).unwrap();
            assert!(v.starts_with(b"v="), "{m:?}");
        }
    }

    #[test]
    fn plus_with_tls_server_end_point_succeeds() {
        let m = Mechanism::ScramSha1Plus;
        let creds = StoredCredentials::new_random(m.hash(), "correct horse").unwrap();
        let end_point = ChannelBinding {
            kind: ChannelBindingType::TlsServerEndPoint,
            data: vec![9; 48],
        };
        let mut s =
            ScramServer::with_server_nonce(m, vec![exporter(), end_point], true, "SRV".into());
        s.client_first(b"p=tls-server-end-point,a=user@example.org,n=user,r=cn")
            .unwrap();
        let sf = s.server_first(Some(&creds)).unwrap();
        let fin = client_final(
            m.hash(),
            "correct horse",
            b"p=tls-server-end-point,a=user@example.org,",
            &[9; 48],
            "n=user,r=cn",
            &sf,
            "cnSRV",
        );
        assert!(s.client_final(&fin).unwrap().starts_with(b"v="));
    }

    #[test]
    fn plus_cb_data_mismatch() {
        let m = Mechanism::ScramSha256Plus;
        let creds = StoredCredentials::new_random(m.hash(), "correct horse").unwrap();
        let mut s = plus_server(m);
        s.client_first(b"p=tls-exporter,,n=user,r=cn").unwrap();
        let sf = s.server_first(Some(&creds)).unwrap();
        let fin = client_final(
            m.hash(),
            "correct horse",
            b"p=tls-exporter,,",
            &[8; 32],
            "n=user,r=cn",
            &sf,
            "cnSRV",
        );
        assert_eq!(
            s.client_final(&fin).unwrap_err(),
            ScramError::ChannelBindingMismatch
        );
    }

    #[test]
    fn non_plus_cb_must_be_gs2_header() {
        // "n,," encodes to "biws"; a client sending "eSws" (y,,) after n,, is rejected.
        let mut s = rfc5802_server();
        s.client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
            .unwrap();
        s.server_first(Some(&rfc5802_creds())).unwrap();
        let err = s
            .client_final(
                b"c=eSws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            )
            .unwrap_err();
        assert_eq!(err, ScramError::ChannelBindingMismatch);
    }

    #[test]
    fn y_flag_cases() {
        // y while -PLUS was advertised: downgrade.
        let mut s = ScramServer::new(Mechanism::ScramSha256, vec![exporter()], true);
        let err = s.client_first(b"y,,n=user,r=abc").unwrap_err();
        assert_eq!(err, ScramError::ChannelBindingDowngrade);
        assert_eq!(err.condition(), "not-authorized");
        // y without -PLUS advertised: fine, and c= must then be base64("y,,").
        let mut s = ScramServer::with_server_nonce(
            Mechanism::ScramSha1,
            Vec::new(),
            false,
            "3rfcNHYJY1ZVvWVs7j".into(),
        );
        s.client_first(b"y,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
            .unwrap();
        let sf = s.server_first(Some(&rfc5802_creds())).unwrap();
        let fin = client_final(
            ScramHash::Sha1,
            "pencil",
            b"y,,",
            b"",
            "n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            &sf,
            "fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j",
        );
        s.client_final(&fin).unwrap();
    }

    #[test]
    fn gs2_flag_mechanism_mismatch() {
        let err = plus_server(Mechanism::ScramSha1Plus)
            .client_first(b"n,,n=user,r=abc")
            .unwrap_err();
        assert_eq!(err, ScramError::ChannelBindingFlagMismatch);
        let err = ScramServer::new(Mechanism::ScramSha1, vec![exporter()], true)
            .client_first(b"p=tls-exporter,,n=user,r=abc")
            .unwrap_err();
        assert_eq!(err, ScramError::ChannelBindingFlagMismatch);
        let err = plus_server(Mechanism::ScramSha1Plus)
            .client_first(b"p=tls-unique,,n=user,r=abc")
            .unwrap_err();
        assert_eq!(err, ScramError::UnsupportedChannelBinding);
        let err = plus_server(Mechanism::ScramSha1Plus)
            .client_first(b"p=tls-server-end-point,,n=user,r=abc")
            .unwrap_err();
        assert_eq!(err, ScramError::UnsupportedChannelBinding);
        let err = ScramServer::new(Mechanism::ScramSha1Plus, Vec::new(), false)
            .client_first(b"p=tls-exporter,,n=user,r=abc")
            .unwrap_err();
        assert_eq!(err, ScramError::InvalidMechanism);
        // Bindings available but -PLUS not advertised: the mechanism was not offered.
        let err = ScramServer::new(Mechanism::ScramSha1Plus, vec![exporter()], false)
            .client_first(b"p=tls-exporter,,n=user,r=abc")
            .unwrap_err();
        assert_eq!(err, ScramError::InvalidMechanism);
    }

    #[test]
    fn out_of_order_calls() {
        let mut s = rfc5802_server();
        assert_eq!(s.server_first(None).unwrap_err(), ScramError::OutOfOrder);
        let mut s = rfc5802_server();
        assert_eq!(
            s.client_final(RFC5802_FINAL).unwrap_err(),
            ScramError::OutOfOrder
        );
        let mut s = rfc5802_server();
        s.client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
            .unwrap();
        assert_eq!(
            s.client_first(b"n,,n=user,r=abc").unwrap_err(),
            ScramError::OutOfOrder
        );
        // A finished exchange cannot be replayed.
        let mut s = rfc5802_server();
        s.client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
            .unwrap();
        s.server_first(Some(&rfc5802_creds())).unwrap();
        s.client_final(RFC5802_FINAL).unwrap();
        assert_eq!(
            s.client_final(RFC5802_FINAL).unwrap_err(),
            ScramError::OutOfOrder
        );
    }

    #[test]
    fn malformed_client_final() {
        let cases: &[&[u8]] = &[
            b"",
            b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j",
            b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            b"c=biws,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=!!!",
            b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=AAAA",
            b"c=b!ws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,m=x,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        ];
        for case in cases {
            let mut s = rfc5802_server();
            s.client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
                .unwrap();
            s.server_first(Some(&rfc5802_creds())).unwrap();
            let err = s.client_final(case).unwrap_err();
            assert!(
                matches!(err, ScramError::Malformed(_)),
                "{:?}: {err:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn mechanisms_never_offer_plain() {
        assert_eq!(mechanisms(false), ["SCRAM-SHA-256", "SCRAM-SHA-1"]);
        assert_eq!(
            mechanisms(true),
            [
                "SCRAM-SHA-256-PLUS",
                "SCRAM-SHA-1-PLUS",
                "SCRAM-SHA-256",
                "SCRAM-SHA-1"
            ]
        );
        assert_eq!(
            Mechanism::from_name("PLAIN").unwrap_err(),
            ScramError::InvalidMechanism
        );
        assert_eq!(
            Mechanism::from_name("OAUTHBEARER").unwrap_err().condition(),
            "invalid-mechanism"
        );
        assert_eq!(
            Mechanism::from_name("SCRAM-SHA-1-PLUS").unwrap(),
            Mechanism::ScramSha1Plus
        );
    }

    #[test]
    fn derive_rejects_bad_input() {
        assert_eq!(
            StoredCredentials::derive(ScramHash::Sha1, "pencil", b"salt", 0).unwrap_err(),
            ScramError::InvalidIterations
        );
        assert_eq!(
            StoredCredentials::derive(ScramHash::Sha1, "pen\u{7}cil", b"salt", 1).unwrap_err(),
            ScramError::InvalidPassword
        );
        let c = StoredCredentials::new_random(ScramHash::Sha256, "pencil").unwrap();
        assert_eq!(c.salt.len(), SALT_LEN);
        assert_eq!(c.iterations, DEFAULT_ITERATIONS);
        assert_eq!(c.stored_key.len(), 32);
        assert!(!format!("{c:?}").contains("stored_key"));
    }

    #[test]
    fn creds_of_wrong_hash_are_treated_as_unknown() {
        let mut s = rfc5802_server();
        s.client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
            .unwrap();
        let sha256 = rfc7677_creds();
        s.server_first(Some(&sha256)).unwrap();
        assert_eq!(
            s.client_final(RFC5802_FINAL).unwrap_err(),
            ScramError::NotAuthorized
        );
    }

    /// A skeleton certificate: SEQUENCE { tbs, AlgorithmIdentifier { oid }, BIT STRING }.
    fn cert_with_oid(oid: &[u8]) -> Vec<u8> {
        let mut alg = vec![0x06, oid.len() as u8];
        alg.extend_from_slice(oid);
        let mut body = vec![0x30, 0x03, 0x02, 0x01, 0x02]; // tbs stand-in
        body.extend_from_slice(&[0x30, alg.len() as u8]);
        body.extend_from_slice(&alg);
        body.extend_from_slice(&[0x03, 0x02, 0x00, 0xff]);
        // Long-form outer length to exercise that path.
        let mut der = vec![0x30, 0x81, body.len() as u8];
        der.extend_from_slice(&body);
        der
    }

    #[test]
    fn tls_server_end_point_hash_follows_signature() {
        let ecdsa_sha384 = cert_with_oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03]);
        let cb = ChannelBinding::tls_server_end_point(&ecdsa_sha384).unwrap();
        assert_eq!(cb.kind, ChannelBindingType::TlsServerEndPoint);
        assert_eq!(cb.data, sha2::Sha384::digest(&ecdsa_sha384).to_vec());
        let rsa_sha1 = cert_with_oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05]);
        let cb = ChannelBinding::tls_server_end_point(&rsa_sha1).unwrap();
        assert_eq!(cb.data, Sha256::digest(&rsa_sha1).to_vec());
        let rsa_sha512 = cert_with_oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d]);
        assert_eq!(signature_hash(&rsa_sha512), Some(CertHash::Sha512));
        let ed25519 = cert_with_oid(&[0x2b, 0x65, 0x70]);
        assert_eq!(ChannelBinding::tls_server_end_point(&ed25519), None);
        assert_eq!(ChannelBinding::tls_server_end_point(b""), None);
        assert_eq!(
            ChannelBinding::tls_server_end_point(&ecdsa_sha384[..10]),
            None
        );
        assert_eq!(
            ChannelBinding::tls_server_end_point(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
    }

    /// Real certificates (public ISRG roots), hashes from `sha384sum`/`sha256sum` of the DER.
    #[test]
    fn tls_server_end_point_real_certificates() {
        let x2 = include_bytes!("../testdata/isrg-root-x2.der");
        assert_eq!(
            ChannelBinding::tls_server_end_point(x2).unwrap().data,
            hex("52f930bf39fe798dfd994e4f0acd63dd1751f82b4fb8a8e18b3a7f3a342e97f3ff3d323bfcc60097a66afb34088025ca")
        );
        let x1 = include_bytes!("../testdata/isrg-root-x1.der");
        assert_eq!(
            ChannelBinding::tls_server_end_point(x1).unwrap().data,
            hex("96bcec06264976f37460779acf28c5a7cfe8a3c0aae11a8ffcee05c0bddf08c6")
        );
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn payload_encoding() {
        assert_eq!(decode_payload("=").unwrap(), b"");
        assert_eq!(decode_payload("biws").unwrap(), b"n,,");
        assert_eq!(
            decode_payload("b!ws").unwrap_err().condition(),
            "incorrect-encoding"
        );
        assert_eq!(encode_payload(b""), "=");
        assert_eq!(encode_payload(b"n,,"), "biws");
    }
}
