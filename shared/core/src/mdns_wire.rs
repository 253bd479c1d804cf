//! The few mDNS messages offload writes itself (RFC 6762 / RFC 1035): it
//! reads the questions of a query and writes PTR answers. Everything else
//! mDNS is left to mdns-sd; this exists because mdns-sd registers one
//! DNS-SD subtype per service instance and agents advertise one per system.
//!
//! ```text
//! message  := header(12) question{qdcount} answer…   ; only questions are read
//! header   := id u16, flags u16, qdcount u16, ancount u16, nscount u16, arcount u16
//! question := name, qtype u16, qclass u16            ; qclass bit 15 = unicast response wanted
//! name     := label* 0 | label* pointer              ; label = len(1..=63) bytes; pointer = 0b11 + 14-bit offset
//! ```
//!
//! Limits: at most [`MAX_QUESTIONS`] questions, names of at most 255 bytes,
//! at most [`MAX_POINTERS`] compression pointers per name (no loops).
//! Names are returned lowercased, dot-separated, with a final dot.

/// PTR record type.
pub const TYPE_PTR: u16 = 12;
/// The `ANY` query type.
pub const TYPE_ANY: u16 = 255;
/// Questions read from one query.
pub const MAX_QUESTIONS: usize = 64;
/// Compression pointers followed in one name.
pub const MAX_POINTERS: usize = 16;

/// One question of a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    /// The name asked about, lowercased, with a final dot.
    pub name: String,
    /// The record type.
    pub qtype: u16,
    /// Whether a unicast response was requested (the QU bit).
    pub unicast: bool,
}

/// A malformed message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed mDNS message: {0}")]
pub struct WireError(&'static str);

fn u16_at(packet: &[u8], at: usize) -> Result<u16, WireError> {
    let bytes = packet.get(at..at + 2).ok_or(WireError("truncated"))?;
    Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// Read a name at `at`; returns it and the offset after it in the message.
fn read_name(packet: &[u8], mut at: usize) -> Result<(String, usize), WireError> {
    let mut name = String::new();
    let mut end = None;
    let mut pointers = 0;
    loop {
        let len = *packet.get(at).ok_or(WireError("truncated name"))?;
        match len {
            0 => {
                if name.is_empty() {
                    name.push('.');
                }
                return Ok((name, end.unwrap_or(at + 1)));
            }
            l if l & 0xc0 == 0xc0 => {
                let target = usize::from(u16_at(packet, at)? & 0x3fff);
                pointers += 1;
                if pointers > MAX_POINTERS {
                    return Err(WireError("too many compression pointers"));
                }
                end.get_or_insert(at + 2);
                at = target;
            }
            l if l & 0xc0 != 0 => return Err(WireError("unknown label type")),
            l => {
                let label = packet
                    .get(at + 1..at + 1 + usize::from(l))
                    .ok_or(WireError("truncated label"))?;
                name.push_str(&String::from_utf8_lossy(label).to_lowercase());
                name.push('.');
                if name.len() > 255 {
                    return Err(WireError("name longer than 255 bytes"));
                }
                at += 1 + usize::from(l);
            }
        }
    }
}

/// The questions of a query; `Ok(vec![])` for a response.
pub fn questions(packet: &[u8]) -> Result<Vec<Question>, WireError> {
    let flags = u16_at(packet, 2)?;
    if flags & 0x8000 != 0 {
        return Ok(Vec::new());
    }
    let count = usize::from(u16_at(packet, 4)?);
    if count > MAX_QUESTIONS {
        return Err(WireError("too many questions"));
    }
    let mut at = 12;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let (name, next) = read_name(packet, at)?;
        let qtype = u16_at(packet, next)?;
        let qclass = u16_at(packet, next + 2)?;
        out.push(Question {
            name,
            qtype,
            unicast: qclass & 0x8000 != 0,
        });
        at = next + 4;
    }
    Ok(out)
}

fn write_name(out: &mut Vec<u8>, name: &str) -> Result<(), WireError> {
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l))
            .ok_or(WireError("label empty or longer than 63 bytes"))?;
        out.push(len);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    Ok(())
}

/// An mDNS response (QR, AA) holding one PTR answer `name → target` per
/// pair, with `ttl` seconds (0 for a goodbye).
pub fn ptr_response(records: &[(String, String)], ttl: u32) -> Result<Vec<u8>, WireError> {
    let count = u16::try_from(records.len()).map_err(|_| WireError("too many records"))?;
    let mut out = vec![0, 0, 0x84, 0x00, 0, 0];
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    for (name, target) in records {
        write_name(&mut out, name)?;
        out.extend_from_slice(&TYPE_PTR.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes()); // class IN, shared record (no cache-flush bit)
        out.extend_from_slice(&ttl.to_be_bytes());
        let mut rdata = Vec::new();
        write_name(&mut rdata, target)?;
        out.extend_from_slice(
            &u16::try_from(rdata.len())
                .map_err(|_| WireError("name too long"))?
                .to_be_bytes(),
        );
        out.extend_from_slice(&rdata);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(names: &[(&str, u16, bool)]) -> Vec<u8> {
        let mut out = vec![0, 0, 0, 0];
        out.extend_from_slice(&u16::try_from(names.len()).unwrap().to_be_bytes());
        out.extend_from_slice(&[0; 6]);
        for (name, qtype, unicast) in names {
            write_name(&mut out, name).unwrap();
            out.extend_from_slice(&qtype.to_be_bytes());
            out.extend_from_slice(&(if *unicast { 0x8001u16 } else { 1 }).to_be_bytes());
        }
        out
    }

    #[test]
    fn reads_questions_with_and_without_compression() {
        let mut q = query(&[(
            "_i686-linux._sub._guix-offload._udp.local.",
            TYPE_PTR,
            false,
        )]);
        // A second question pointing back at the first name's `_guix-offload` label.
        q[5] = 2;
        let offset = 12 + 1 + "_i686-linux".len() + 1 + "_sub".len();
        q.extend_from_slice(&[0xc0 | (offset >> 8) as u8, offset as u8, 0, 255, 0x80, 1]);
        let qs = questions(&q).unwrap();
        assert_eq!(
            qs[0],
            Question {
                name: "_i686-linux._sub._guix-offload._udp.local.".into(),
                qtype: TYPE_PTR,
                unicast: false
            }
        );
        assert_eq!(
            qs[1],
            Question {
                name: "_guix-offload._udp.local.".into(),
                qtype: TYPE_ANY,
                unicast: true
            }
        );
    }

    #[test]
    fn rejects_hostile_messages() {
        // A pointer to itself.
        let looped = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 12, 0, 1];
        assert!(questions(&looped).is_err());
        let truncated = query(&[("a.local.", TYPE_PTR, false)]);
        for cut in 0..truncated.len() {
            assert!(questions(&truncated[..cut]).is_err(), "cut at {cut}");
        }
        let mut many = vec![0u8; 12];
        many[4] = 0xff;
        assert!(questions(&many).is_err());
        // Responses carry no questions for us.
        let mut response = query(&[("a.local.", TYPE_PTR, false)]);
        response[2] = 0x84;
        assert_eq!(questions(&response).unwrap(), vec![]);
    }

    #[test]
    fn writes_ptr_answers() {
        let r = ptr_response(
            &[(
                "_i686-linux._sub._guix-offload._udp.local.".into(),
                "agent0._guix-offload._udp.local.".into(),
            )],
            4500,
        )
        .unwrap();
        assert_eq!(&r[2..8], &[0x84, 0, 0, 0, 0, 1]);
        assert!(ptr_response(&[("a.".into(), format!("{}.local.", "x".repeat(64)))], 1).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = questions(&bytes);
        }
    }
}
