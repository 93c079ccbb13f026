//! STUN wire codec (RFC 8489) with the TURN attributes (RFC 8656) and ChannelData framing.
//!
//! Pure and allocation-light: decoding borrows the input, never panics, and rejects anything that
//! does not add up (length not a multiple of 4, attribute running past the end, wrong magic cookie,
//! bad FINGERPRINT). Encoding goes through [`Builder`], which keeps the header length right.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The fixed magic cookie of RFC 5389/8489 messages.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// STUN header length.
pub const HEADER_LEN: usize = 20;
/// Largest message we accept. Media packets fit in a few hundred bytes; a Send indication
/// carrying a full-size UDP datagram needs a little over 1500. Anything bigger is refused.
pub const MAX_MESSAGE_LEN: usize = 16 * 1024;
/// XOR constant of the FINGERPRINT attribute.
const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// STUN methods used by TURN.
pub mod method {
    /// Binding (RFC 8489).
    pub const BINDING: u16 = 0x001;
    /// Allocate (RFC 8656 §7).
    pub const ALLOCATE: u16 = 0x003;
    /// Refresh (RFC 8656 §8).
    pub const REFRESH: u16 = 0x004;
    /// Send indication (RFC 8656 §11).
    pub const SEND: u16 = 0x006;
    /// Data indication (RFC 8656 §11).
    pub const DATA: u16 = 0x007;
    /// CreatePermission (RFC 8656 §10).
    pub const CREATE_PERMISSION: u16 = 0x008;
    /// ChannelBind (RFC 8656 §12).
    pub const CHANNEL_BIND: u16 = 0x009;
}

/// Attribute types.
pub mod attr {
    /// MAPPED-ADDRESS.
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// USERNAME.
    pub const USERNAME: u16 = 0x0006;
    /// MESSAGE-INTEGRITY (HMAC-SHA1).
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// ERROR-CODE.
    pub const ERROR_CODE: u16 = 0x0009;
    /// UNKNOWN-ATTRIBUTES.
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// CHANNEL-NUMBER.
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    /// LIFETIME.
    pub const LIFETIME: u16 = 0x000D;
    /// XOR-PEER-ADDRESS.
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    /// DATA.
    pub const DATA: u16 = 0x0013;
    /// REALM.
    pub const REALM: u16 = 0x0014;
    /// NONCE.
    pub const NONCE: u16 = 0x0015;
    /// XOR-RELAYED-ADDRESS.
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    /// REQUESTED-ADDRESS-FAMILY.
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    /// EVEN-PORT.
    pub const EVEN_PORT: u16 = 0x0018;
    /// REQUESTED-TRANSPORT.
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    /// DONT-FRAGMENT.
    pub const DONT_FRAGMENT: u16 = 0x001A;
    /// MESSAGE-INTEGRITY-SHA256.
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    /// PASSWORD-ALGORITHM.
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    /// USERHASH.
    pub const USERHASH: u16 = 0x001E;
    /// XOR-MAPPED-ADDRESS.
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// RESERVATION-TOKEN.
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    /// PRIORITY (ICE).
    pub const PRIORITY: u16 = 0x0024;
    /// USE-CANDIDATE (ICE).
    pub const USE_CANDIDATE: u16 = 0x0025;
    /// PADDING (RFC 5780).
    pub const PADDING: u16 = 0x0026;
    /// RESPONSE-PORT (RFC 5780).
    pub const RESPONSE_PORT: u16 = 0x0027;
    /// PASSWORD-ALGORITHMS.
    pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
    /// ALTERNATE-DOMAIN.
    pub const ALTERNATE_DOMAIN: u16 = 0x8003;
    /// SOFTWARE.
    pub const SOFTWARE: u16 = 0x8022;
    /// ALTERNATE-SERVER.
    pub const ALTERNATE_SERVER: u16 = 0x8023;
    /// FINGERPRINT.
    pub const FINGERPRINT: u16 = 0x8028;
    /// ICE-CONTROLLED.
    pub const ICE_CONTROLLED: u16 = 0x8029;
    /// ICE-CONTROLLING.
    pub const ICE_CONTROLLING: u16 = 0x802A;
    /// RESPONSE-ORIGIN (RFC 5780).
    pub const RESPONSE_ORIGIN: u16 = 0x802B;
    /// OTHER-ADDRESS (RFC 5780).
    pub const OTHER_ADDRESS: u16 = 0x802C;
    /// CHANGE-REQUEST (RFC 5780), comprehension-required.
    pub const CHANGE_REQUEST: u16 = 0x0003;
}

/// Message class (the C1/C0 bits of the type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A request expecting a response.
    Request,
    /// A fire-and-forget indication.
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0x000,
            Class::Indication => 0x010,
            Class::Success => 0x100,
            Class::Error => 0x110,
        }
    }

    fn from_type(t: u16) -> Class {
        match t & 0x0110 {
            0x000 => Class::Request,
            0x010 => Class::Indication,
            0x100 => Class::Success,
            _ => Class::Error,
        }
    }
}

fn method_of(t: u16) -> u16 {
    (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2)
}

fn message_type(method: u16, class: Class) -> u16 {
    let m = method & 0x0FFF;
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | class.bits()
}

/// Why bytes are not a STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer than 20 bytes.
    #[error("shorter than a stun header")]
    TooShort,
    /// First two bits are not zero.
    #[error("not a stun message")]
    NotStun,
    /// Magic cookie missing (RFC 3489 clients are not served).
    #[error("wrong magic cookie")]
    BadCookie,
    /// Header length is not a multiple of 4 or does not match the input.
    #[error("message length does not match")]
    BadLength,
    /// Larger than [`MAX_MESSAGE_LEN`].
    #[error("message too large")]
    TooLarge,
    /// An attribute's length runs past the end of the message.
    #[error("attribute runs past the end of the message")]
    AttributeOverflow,
    /// FINGERPRINT is not the last attribute or its CRC is wrong.
    #[error("bad fingerprint")]
    BadFingerprint,
}

/// Why an attribute value is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AttrError {
    /// Wrong value length for the type.
    #[error("attribute {0:#06x} has a bad length")]
    BadLength(u16),
    /// Unknown address family.
    #[error("attribute {0:#06x} has an unknown address family")]
    BadFamily(u16),
    /// Text that is not UTF-8 or too long.
    #[error("attribute {0:#06x} is not valid text")]
    BadText(u16),
}

/// The parts of a header, readable even when the body is broken (to answer 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Method.
    pub method: u16,
    /// Class.
    pub class: Class,
    /// Transaction id.
    pub tid: [u8; 12],
}

/// Reads the header if the first 20 bytes look like STUN with the magic cookie.
pub fn header(raw: &[u8]) -> Option<Header> {
    let h = raw.get(..HEADER_LEN)?;
    let t = u16::from_be_bytes([h[0], h[1]]);
    if t & 0xC000 != 0 || u32::from_be_bytes([h[4], h[5], h[6], h[7]]) != MAGIC_COOKIE {
        return None;
    }
    let mut tid = [0u8; 12];
    tid.copy_from_slice(&h[8..20]);
    Some(Header {
        method: method_of(t),
        class: Class::from_type(t),
        tid,
    })
}

#[derive(Debug, Clone, Copy)]
struct RawAttr {
    typ: u16,
    start: usize,
    len: usize,
}

/// A decoded message borrowing its bytes.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    raw: &'a [u8],
    /// Method.
    pub method: u16,
    /// Class.
    pub class: Class,
    /// Transaction id.
    pub tid: [u8; 12],
    attrs: Vec<RawAttr>,
    /// Offset of the MESSAGE-INTEGRITY attribute header.
    integrity: Option<usize>,
    /// Offset of the MESSAGE-INTEGRITY-SHA256 attribute header.
    integrity256: Option<usize>,
}

/// Outcome of checking MESSAGE-INTEGRITY(-SHA256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    /// Neither attribute is present.
    Missing,
    /// Correct HMAC-SHA1.
    Sha1,
    /// Correct HMAC-SHA256.
    Sha256,
    /// Present but wrong.
    Invalid,
}

impl<'a> Message<'a> {
    /// Decodes exactly one message occupying all of `raw`.
    pub fn decode(raw: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        if raw.len() < HEADER_LEN {
            return Err(DecodeError::TooShort);
        }
        if raw[0] & 0xC0 != 0 {
            return Err(DecodeError::NotStun);
        }
        let h = header(raw).ok_or(DecodeError::BadCookie)?;
        if raw.len() > MAX_MESSAGE_LEN {
            return Err(DecodeError::TooLarge);
        }
        let len = usize::from(u16::from_be_bytes([raw[2], raw[3]]));
        if len % 4 != 0 || HEADER_LEN + len != raw.len() {
            return Err(DecodeError::BadLength);
        }
        let mut attrs = Vec::new();
        let mut integrity = None;
        let mut integrity256 = None;
        let mut pos = HEADER_LEN;
        while pos < raw.len() {
            let hdr = raw
                .get(pos..pos + 4)
                .ok_or(DecodeError::AttributeOverflow)?;
            let typ = u16::from_be_bytes([hdr[0], hdr[1]]);
            let alen = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
            let padded = (alen + 3) & !3;
            if pos + 4 + padded > raw.len() {
                return Err(DecodeError::AttributeOverflow);
            }
            if typ == attr::FINGERPRINT {
                if alen != 4 || pos + 8 != raw.len() {
                    return Err(DecodeError::BadFingerprint);
                }
                let want =
                    u32::from_be_bytes([raw[pos + 4], raw[pos + 5], raw[pos + 6], raw[pos + 7]]);
                if crc32fast::hash(&raw[..pos]) ^ FINGERPRINT_XOR != want {
                    return Err(DecodeError::BadFingerprint);
                }
            } else if typ == attr::MESSAGE_INTEGRITY_SHA256 {
                if integrity256.is_none() {
                    integrity256 = Some(pos);
                }
            } else if typ == attr::MESSAGE_INTEGRITY {
                if integrity.is_none() && integrity256.is_none() {
                    integrity = Some(pos);
                }
            } else if integrity.is_none() && integrity256.is_none() {
                // RFC 8489 §14.5: attributes after MESSAGE-INTEGRITY are ignored.
                attrs.push(RawAttr {
                    typ,
                    start: pos + 4,
                    len: alen,
                });
            }
            pos += 4 + padded;
        }
        Ok(Message {
            raw,
            method: h.method,
            class: h.class,
            tid: h.tid,
            attrs,
            integrity,
            integrity256,
        })
    }

    /// The raw bytes.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The first value of attribute `typ`.
    pub fn get(&self, typ: u16) -> Option<&'a [u8]> {
        self.attrs
            .iter()
            .find(|a| a.typ == typ)
            .and_then(|a| self.raw.get(a.start..a.start + a.len))
    }

    /// Whether attribute `typ` is present.
    pub fn has(&self, typ: u16) -> bool {
        self.attrs.iter().any(|a| a.typ == typ)
    }

    /// Every value of attribute `typ`, in order.
    pub fn all(&self, typ: u16) -> impl Iterator<Item = &'a [u8]> + '_ {
        let raw = self.raw;
        self.attrs
            .iter()
            .filter(move |a| a.typ == typ)
            .filter_map(move |a| raw.get(a.start..a.start + a.len))
    }

    /// Comprehension-required attribute types (below 0x8000) that are not in `known`.
    pub fn unknown_required(&self, known: &[u16]) -> Vec<u16> {
        let mut out: Vec<u16> = self
            .attrs
            .iter()
            .map(|a| a.typ)
            .filter(|t| *t < 0x8000 && !known.contains(t))
            .collect();
        out.dedup();
        out
    }

    /// Whether MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 is present.
    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some() || self.integrity256.is_some()
    }

    /// Checks the integrity attribute with `key` (the SHA-256 one wins when both are present).
    pub fn check_integrity(&self, key: &[u8]) -> Integrity {
        if let Some(off) = self.integrity256 {
            let Some(len) = self.attr_len_at(off) else {
                return Integrity::Invalid;
            };
            if !(16..=32).contains(&len) || len % 4 != 0 {
                return Integrity::Invalid;
            }
            let mac = hmac_sha256(key, &self.signed_prefix(off, 4 + len));
            let given = &self.raw[off + 4..off + 4 + len];
            return if ct_eq(&mac[..len], given) {
                Integrity::Sha256
            } else {
                Integrity::Invalid
            };
        }
        if let Some(off) = self.integrity {
            if self.attr_len_at(off) != Some(20) {
                return Integrity::Invalid;
            }
            let mac = hmac_sha1(key, &self.signed_prefix(off, 24));
            return if ct_eq(&mac, &self.raw[off + 4..off + 24]) {
                Integrity::Sha1
            } else {
                Integrity::Invalid
            };
        }
        Integrity::Missing
    }

    fn attr_len_at(&self, off: usize) -> Option<usize> {
        let h = self.raw.get(off..off + 4)?;
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        (off + 4 + len <= self.raw.len()).then_some(len)
    }

    /// The bytes covered by an integrity attribute at `off` of total size `attr_size`, with the
    /// header length adjusted to end right after that attribute.
    fn signed_prefix(&self, off: usize, attr_size: usize) -> Vec<u8> {
        let mut v = self.raw[..off].to_vec();
        let len = (off + attr_size - HEADER_LEN) as u16;
        v[2..4].copy_from_slice(&len.to_be_bytes());
        v
    }

    /// A text attribute (USERNAME, REALM, NONCE, SOFTWARE), at most 763 bytes of UTF-8.
    pub fn text(&self, typ: u16) -> Result<Option<&'a str>, AttrError> {
        match self.get(typ) {
            None => Ok(None),
            Some(v) if v.len() > 763 => Err(AttrError::BadText(typ)),
            Some(v) => std::str::from_utf8(v)
                .map(Some)
                .map_err(|_| AttrError::BadText(typ)),
        }
    }

    /// A 32-bit attribute (LIFETIME).
    pub fn u32(&self, typ: u16) -> Result<Option<u32>, AttrError> {
        match self.get(typ) {
            None => Ok(None),
            Some(v) => {
                let b: [u8; 4] = v.try_into().map_err(|_| AttrError::BadLength(typ))?;
                Ok(Some(u32::from_be_bytes(b)))
            }
        }
    }

    /// REQUESTED-TRANSPORT's protocol number.
    pub fn requested_transport(&self) -> Result<Option<u8>, AttrError> {
        match self.get(attr::REQUESTED_TRANSPORT) {
            None => Ok(None),
            Some(v) if v.len() == 4 => Ok(Some(v[0])),
            Some(_) => Err(AttrError::BadLength(attr::REQUESTED_TRANSPORT)),
        }
    }

    /// REQUESTED-ADDRESS-FAMILY (1 = IPv4, 2 = IPv6).
    pub fn requested_family(&self) -> Result<Option<u8>, AttrError> {
        match self.get(attr::REQUESTED_ADDRESS_FAMILY) {
            None => Ok(None),
            Some(v) if v.len() == 4 => Ok(Some(v[0])),
            Some(_) => Err(AttrError::BadLength(attr::REQUESTED_ADDRESS_FAMILY)),
        }
    }

    /// CHANNEL-NUMBER.
    pub fn channel_number(&self) -> Result<Option<u16>, AttrError> {
        match self.get(attr::CHANNEL_NUMBER) {
            None => Ok(None),
            Some(v) if v.len() == 4 => Ok(Some(u16::from_be_bytes([v[0], v[1]]))),
            Some(_) => Err(AttrError::BadLength(attr::CHANNEL_NUMBER)),
        }
    }

    /// An XOR-encoded address attribute.
    pub fn xor_addr(&self, typ: u16) -> Result<Option<SocketAddr>, AttrError> {
        self.get(typ)
            .map(|v| decode_xor_addr(typ, v, &self.tid))
            .transpose()
    }

    /// Every XOR-PEER-ADDRESS (CreatePermission may carry several).
    pub fn xor_addrs(&self, typ: u16) -> Result<Vec<SocketAddr>, AttrError> {
        self.all(typ)
            .map(|v| decode_xor_addr(typ, v, &self.tid))
            .collect()
    }

    /// ERROR-CODE as (code, reason).
    pub fn error_code(&self) -> Result<Option<(u16, &'a str)>, AttrError> {
        match self.get(attr::ERROR_CODE) {
            None => Ok(None),
            Some(v) if v.len() >= 4 => {
                let code = u16::from(v[2] & 0x07) * 100 + u16::from(v[3]);
                let reason = std::str::from_utf8(&v[4..])
                    .map_err(|_| AttrError::BadText(attr::ERROR_CODE))?;
                Ok(Some((code, reason)))
            }
            Some(_) => Err(AttrError::BadLength(attr::ERROR_CODE)),
        }
    }
}

fn decode_xor_addr(typ: u16, v: &[u8], tid: &[u8; 12]) -> Result<SocketAddr, AttrError> {
    if v.len() < 4 {
        return Err(AttrError::BadLength(typ));
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    match v[1] {
        0x01 => {
            let b: [u8; 4] = v[4..].try_into().map_err(|_| AttrError::BadLength(typ))?;
            let ip = u32::from_be_bytes(b) ^ MAGIC_COOKIE;
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        0x02 => {
            let mut b: [u8; 16] = v[4..].try_into().map_err(|_| AttrError::BadLength(typ))?;
            let mask = xor_mask(tid);
            for (x, m) in b.iter_mut().zip(mask.iter()) {
                *x ^= m;
            }
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(b)), port))
        }
        _ => Err(AttrError::BadFamily(typ)),
    }
}

fn xor_mask(tid: &[u8; 12]) -> [u8; 16] {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(tid);
    mask
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("invariant: hmac takes any key");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("invariant: hmac takes any key");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The long-term credential key: MD5(username ":" realm ":" password) (RFC 8489 §9.2.2).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// Builds one message; the header length always matches the attributes written so far.
#[derive(Debug, Clone)]
pub struct Builder {
    buf: Vec<u8>,
    tid: [u8; 12],
}

impl Builder {
    /// Starts a message.
    pub fn new(method: u16, class: Class, tid: [u8; 12]) -> Builder {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&message_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&tid);
        Builder { buf, tid }
    }

    fn set_len(&mut self) {
        let len = (self.buf.len() - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// Adds an attribute with zero padding. Values longer than 65535 bytes are truncated.
    pub fn add(&mut self, typ: u16, value: &[u8]) -> &mut Self {
        let value = &value[..value.len().min(usize::from(u16::MAX))];
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        let pad = (4 - value.len() % 4) % 4;
        self.buf.extend_from_slice(&[0u8; 3][..pad]);
        self.set_len();
        self
    }

    /// Adds a 32-bit attribute.
    pub fn add_u32(&mut self, typ: u16, v: u32) -> &mut Self {
        self.add(typ, &v.to_be_bytes())
    }

    /// Adds an XOR-encoded address.
    pub fn add_xor_addr(&mut self, typ: u16, addr: SocketAddr) -> &mut Self {
        let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
        let mut v = Vec::with_capacity(20);
        match addr.ip() {
            IpAddr::V4(ip) => {
                v.extend_from_slice(&[0, 1]);
                v.extend_from_slice(&port.to_be_bytes());
                v.extend_from_slice(&(u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes());
            }
            IpAddr::V6(ip) => {
                v.extend_from_slice(&[0, 2]);
                v.extend_from_slice(&port.to_be_bytes());
                let mask = xor_mask(&self.tid);
                v.extend(ip.octets().iter().zip(mask.iter()).map(|(a, m)| a ^ m));
            }
        }
        self.add(typ, &v)
    }

    /// Adds a plain (non-XOR) address attribute such as MAPPED-ADDRESS.
    pub fn add_addr(&mut self, typ: u16, addr: SocketAddr) -> &mut Self {
        let mut v = Vec::with_capacity(20);
        match addr.ip() {
            IpAddr::V4(ip) => {
                v.extend_from_slice(&[0, 1]);
                v.extend_from_slice(&addr.port().to_be_bytes());
                v.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                v.extend_from_slice(&[0, 2]);
                v.extend_from_slice(&addr.port().to_be_bytes());
                v.extend_from_slice(&ip.octets());
            }
        }
        self.add(typ, &v)
    }

    /// Adds ERROR-CODE.
    pub fn add_error(&mut self, code: u16, reason: &str) -> &mut Self {
        let mut v = vec![0, 0, ((code / 100) & 0x07) as u8, (code % 100) as u8];
        v.extend_from_slice(reason.as_bytes());
        self.add(attr::ERROR_CODE, &v)
    }

    /// Adds MESSAGE-INTEGRITY (HMAC-SHA1 with `key`).
    pub fn add_integrity(&mut self, key: &[u8]) -> &mut Self {
        let off = self.buf.len();
        let len = (off + 24 - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        let mac = hmac_sha1(key, &self.buf);
        self.add(attr::MESSAGE_INTEGRITY, &mac)
    }

    /// Adds MESSAGE-INTEGRITY-SHA256 (full 32 bytes).
    pub fn add_integrity_sha256(&mut self, key: &[u8]) -> &mut Self {
        let off = self.buf.len();
        let len = (off + 36 - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        let mac = hmac_sha256(key, &self.buf);
        self.add(attr::MESSAGE_INTEGRITY_SHA256, &mac)
    }

    /// Adds FINGERPRINT; must be the last attribute.
    pub fn add_fingerprint(&mut self) -> &mut Self {
        let len = (self.buf.len() + 8 - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        let crc = crc32fast::hash(&self.buf) ^ FINGERPRINT_XOR;
        self.add_u32(attr::FINGERPRINT, crc)
    }

    /// The encoded message.
    pub fn finish(&self) -> Vec<u8> {
        self.buf.clone()
    }

    /// The encoded message, consuming the builder.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Whether `n` is a valid channel number (RFC 8656 §12: 0x4000–0x4FFF; RFC 5766 clients may use
/// up to 0x7FFF, which we accept too).
pub fn valid_channel(n: u16) -> bool {
    (0x4000..=0x7FFF).contains(&n)
}

/// Why bytes are not a ChannelData message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelDataError {
    /// Fewer than 4 bytes.
    #[error("channel data shorter than its header")]
    TooShort,
    /// Channel number outside 0x4000..=0x7FFF.
    #[error("invalid channel number")]
    BadChannel,
    /// Length field larger than the data.
    #[error("channel data length past the end")]
    BadLength,
}

/// Decodes a ChannelData message: (channel, application data). Trailing padding is ignored.
pub fn decode_channel_data(raw: &[u8]) -> Result<(u16, &[u8]), ChannelDataError> {
    let h = raw.get(..4).ok_or(ChannelDataError::TooShort)?;
    let ch = u16::from_be_bytes([h[0], h[1]]);
    if !valid_channel(ch) {
        return Err(ChannelDataError::BadChannel);
    }
    let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let data = raw.get(4..4 + len).ok_or(ChannelDataError::BadLength)?;
    Ok((ch, data))
}

/// Encodes ChannelData; `pad` adds the zero padding to a multiple of 4 required over TCP.
pub fn encode_channel_data(channel: u16, data: &[u8], pad: bool, out: &mut Vec<u8>) {
    let data = &data[..data.len().min(usize::from(u16::MAX))];
    out.clear();
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    if pad {
        let p = (4 - data.len() % 4) % 4;
        out.extend_from_slice(&[0u8; 3][..p]);
    }
}

/// Framing over a byte stream (TCP/TLS): the size of the frame starting at `buf`.
///
/// `None` means more bytes are needed to tell; `Some(Err(()))` means the stream is not STUN or
/// ChannelData and must be closed.
pub fn frame_len(buf: &[u8]) -> Option<Result<usize, ()>> {
    let h = buf.get(..4)?;
    let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    Some(match h[0] >> 6 {
        0 => Ok(HEADER_LEN + len),
        1 => Ok(4 + ((len + 3) & !3)),
        _ => Err(()),
    })
}

#[cfg(test)]
mod tests;
