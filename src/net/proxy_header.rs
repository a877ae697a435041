//! The PROXY protocol header (haproxy's `send-proxy`, v1 text, and `send-proxy-v2`, binary) a
//! trusted proxy opens its connection with, naming the client it relays. No I/O: [`parse`]
//! looks at the bytes read so far and says either what the header holds and its length, or how
//! many more bytes certainly belong to it, so the reader never takes a byte of the request
//! that follows. Spec: <https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt>.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature: 12 bytes no HTTP request (or v1 line) can start with.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// v2's fixed part: signature, version and command, family, and the big-endian length.
const V2_FIXED: usize = 16;
/// The longest v1 line, CRLF included (spec, 2.1).
pub const V1_MAX: usize = 107;
/// The longest header read, as haproxy bounds it: a v2 header with a few TLVs fits, and a
/// proxy cannot make the node buffer more before a request.
pub const MAX_LEN: usize = 536;
/// The shortest header of either version (`PROXY UNKNOWN\r\n`; v2 needs 16), so the first read
/// can take this many bytes at once.
const MIN_LEN: usize = 15;

/// Whom the connection speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The proxy's own connection (v2 `LOCAL`, as in health checks; v1 `UNKNOWN`; a family
    /// other than TCP over IPv4 or IPv6): the peer's address stands.
    Local,
    /// A relayed client: its source address and port.
    Client(SocketAddr),
}

/// What the bytes read so far amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The whole header, `len` bytes long; what follows is the proxied stream.
    Done { header: Header, len: usize },
    /// The header goes on for at least this many more bytes (never past [`MAX_LEN`]).
    Need(usize),
}

/// Why the bytes are no PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("no PROXY protocol signature")]
    Signature,
    #[error("PROXY header longer than its limit")]
    TooLong,
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
}

/// Reads `buf` (the connection's first bytes, and nothing past the header if [`Progress::Need`]
/// was followed exactly): v2 if it starts with the v2 signature, v1 if with `PROXY `.
pub fn parse(buf: &[u8]) -> Result<Progress, ProxyHeaderError> {
    let shared = buf.len().min(V2_SIGNATURE.len());
    if buf[..shared] == V2_SIGNATURE[..shared] {
        return if buf.len() < MIN_LEN {
            Ok(Progress::Need(MIN_LEN - buf.len()))
        } else {
            parse_v2(buf)
        };
    }
    let shared = buf.len().min(6);
    if buf[..shared] != b"PROXY "[..shared] {
        return Err(ProxyHeaderError::Signature);
    }
    if buf.len() < MIN_LEN {
        return Ok(Progress::Need(MIN_LEN - buf.len()));
    }
    parse_v1(buf)
}

fn parse_v2(buf: &[u8]) -> Result<Progress, ProxyHeaderError> {
    if buf.len() < V2_FIXED {
        return Ok(Progress::Need(V2_FIXED - buf.len()));
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(ProxyHeaderError::Malformed("version is not 2"));
    }
    let len = V2_FIXED + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > MAX_LEN {
        return Err(ProxyHeaderError::TooLong);
    }
    if buf.len() < len {
        return Ok(Progress::Need(len - buf.len()));
    }
    let addresses = &buf[V2_FIXED..len];
    let header = match command {
        0 => Header::Local,
        1 => v2_source(buf[13], addresses)?,
        _ => {
            return Err(ProxyHeaderError::Malformed(
                "command is neither LOCAL nor PROXY",
            ));
        }
    };
    Ok(Progress::Done { header, len })
}

/// The source of a v2 `PROXY` address block; TLVs after the addresses are skipped.
fn v2_source(family: u8, block: &[u8]) -> Result<Header, ProxyHeaderError> {
    const SHORT: ProxyHeaderError = ProxyHeaderError::Malformed("address block too short");
    let (ip, port_at) = match family {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            let octets: [u8; 4] = block.get(..4).ok_or(SHORT)?.try_into().expect("4 bytes");
            (IpAddr::V4(Ipv4Addr::from(octets)), 8)
        }
        0x21 => {
            let octets: [u8; 16] = block.get(..16).ok_or(SHORT)?.try_into().expect("16 bytes");
            (IpAddr::V6(Ipv6Addr::from(octets)), 32)
        }
        _ => return Ok(Header::Local),
    };
    let port = block.get(port_at..port_at + 2).ok_or(SHORT)?;
    let port = u16::from_be_bytes([port[0], port[1]]);
    Ok(Header::Client(SocketAddr::new(ip, port)))
}

fn parse_v1(buf: &[u8]) -> Result<Progress, ProxyHeaderError> {
    let Some(end) = buf.windows(2).position(|pair| pair == b"\r\n") else {
        return v1_need(buf).map(Progress::Need);
    };
    let line = std::str::from_utf8(&buf[..end])
        .map_err(|_| ProxyHeaderError::Malformed("v1 line is not text"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let header = match fields[..] {
        ["PROXY", "UNKNOWN", ..] => Header::Local,
        ["PROXY", "TCP4", source, _, port, _] => v1_client::<Ipv4Addr>(source, port)?,
        ["PROXY", "TCP6", source, _, port, _] => v1_client::<Ipv6Addr>(source, port)?,
        _ => return Err(ProxyHeaderError::Malformed("v1 line has the wrong fields")),
    };
    Ok(Progress::Done {
        header,
        len: end + 2,
    })
}

/// How many more bytes an unfinished v1 line certainly has: one after a trailing CR, else at
/// least the CRLF, or as many as the shortest line of its protocol still needs.
fn v1_need(buf: &[u8]) -> Result<usize, ProxyHeaderError> {
    if buf.contains(&b'\n') {
        return Err(ProxyHeaderError::Malformed("v1 line has a bare LF"));
    }
    let need = if buf.ends_with(b"\r") {
        1
    } else {
        // `PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n` and `PROXY TCP6 :: :: 0 0\r\n`.
        let shortest: usize = match &buf[6..10] {
            b"TCP4" => 32,
            b"TCP6" => 22,
            _ => 0,
        };
        shortest.saturating_sub(buf.len()).max(2)
    };
    if buf.len() + need > V1_MAX {
        return Err(ProxyHeaderError::TooLong);
    }
    Ok(need)
}

fn v1_client<Ip>(source: &str, port: &str) -> Result<Header, ProxyHeaderError>
where
    Ip: std::str::FromStr + Into<IpAddr>,
{
    let ip: Ip = source
        .parse()
        .map_err(|_| ProxyHeaderError::Malformed("v1 source address"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| ProxyHeaderError::Malformed("v1 source port"))?;
    Ok(Header::Client(SocketAddr::new(ip.into(), port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` as a reader would: exactly what `Need` asks for, never more; then checks
    /// nothing past the header was asked for.
    fn read(bytes: &[u8]) -> Result<(Header, usize), ProxyHeaderError> {
        let mut have = 0;
        loop {
            match parse(&bytes[..have])? {
                Progress::Done { header, len } => {
                    assert_eq!(len, have, "the header is exactly what was read");
                    return Ok((header, len));
                }
                Progress::Need(more) => {
                    assert!(have + more <= MAX_LEN);
                    if have + more > bytes.len() {
                        return Err(ProxyHeaderError::Malformed("truncated (test)"));
                    }
                    have += more;
                }
            }
        }
    }

    fn client(text: &str) -> Header {
        Header::Client(text.parse().unwrap())
    }

    fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    const V4_BLOCK: [u8; 12] = [198, 51, 100, 7, 10, 0, 0, 1, 0x1f, 0x90, 0, 80];

    #[test]
    fn v1_lines_name_the_client_and_leave_the_request_alone() {
        let request = b"GET /ws HTTP/1.1\r\n\r\n";
        for (line, header) in [
            (
                "PROXY TCP4 198.51.100.7 10.0.0.1 8080 80\r\n",
                client("198.51.100.7:8080"),
            ),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", client("1.2.3.4:1")),
            (
                "PROXY TCP6 2001:db8::5 2001:db8::1 4711 443\r\n",
                client("[2001:db8::5]:4711"),
            ),
            ("PROXY TCP6 :: :: 0 0\r\n", client("[::]:0")),
            ("PROXY UNKNOWN\r\n", Header::Local),
            ("PROXY UNKNOWN ffff:f...f:ffff 0 0\r\n", Header::Local),
        ] {
            let bytes = [line.as_bytes(), request].concat();
            assert_eq!(read(&bytes), Ok((header, line.len())), "{line:?}");
        }
    }

    #[test]
    fn v2_headers_name_the_client_or_the_proxy_itself() {
        let bytes = v2(1, 0x11, &V4_BLOCK);
        assert_eq!(read(&bytes), Ok((client("198.51.100.7:8080"), 28)));
        let mut block = [0u8; 36];
        block[..16].copy_from_slice(&"2001:db8::5".parse::<Ipv6Addr>().unwrap().octets());
        block[32..34].copy_from_slice(&4711u16.to_be_bytes());
        let bytes = v2(1, 0x21, &block);
        assert_eq!(read(&bytes), Ok((client("[2001:db8::5]:4711"), 52)));
        // LOCAL (health checks): no addresses, or addresses to ignore.
        assert_eq!(read(&v2(0, 0x00, &[])), Ok((Header::Local, 16)));
        assert_eq!(read(&v2(0, 0x11, &V4_BLOCK)), Ok((Header::Local, 28)));
        // PROXY over a family with no IP source (UNSPEC, UNIX): the peer stands.
        assert_eq!(read(&v2(1, 0x00, &[])), Ok((Header::Local, 16)));
        assert_eq!(read(&v2(1, 0x31, &[0; 216])), Ok((Header::Local, 232)));
    }

    #[test]
    fn v2_tlvs_are_skipped() {
        // PP2_TYPE_ALPN "h2" and a NOOP with padding after the addresses.
        let mut block = V4_BLOCK.to_vec();
        block.extend_from_slice(&[0x01, 0, 2, b'h', b'2', 0x04, 0, 3, 0, 0, 0]);
        let mut bytes = v2(1, 0x11, &block);
        let len = bytes.len();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(read(&bytes), Ok((client("198.51.100.7:8080"), len)));
    }

    #[test]
    fn truncated_headers_ask_for_more_and_never_past_the_limit() {
        let line = b"PROXY TCP4 198.51.100.7 10.0.0.1 8080 80\r\n";
        for cut in 0..line.len() {
            assert!(
                matches!(parse(&line[..cut]), Ok(Progress::Need(n)) if cut + n <= line.len()),
                "v1 cut at {cut}"
            );
        }
        let bytes = v2(1, 0x11, &V4_BLOCK);
        for cut in 0..bytes.len() {
            assert!(
                matches!(parse(&bytes[..cut]), Ok(Progress::Need(n)) if cut + n <= bytes.len()),
                "v2 cut at {cut}"
            );
        }
        let short = v2(1, 0x11, &V4_BLOCK[..6]);
        assert_eq!(
            read(&short),
            Err(ProxyHeaderError::Malformed("address block too short"))
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            &b"GET /ws HTTP/1.1\r\n"[..],
            b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"\r\n\r\n\0\r\nQUIT\r",
            b"",
        ] {
            if bad.is_empty() {
                assert_eq!(parse(bad), Ok(Progress::Need(MIN_LEN)));
            } else {
                assert_eq!(parse(bad), Err(ProxyHeaderError::Signature), "{bad:?}");
            }
        }
        for bad in [
            "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            "PROXY TCP4 ::1 ::1 1 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 70000 2\r\n",
            "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY TCP4 1.2.3.4\n5.6.7.8 1 2\r\n",
        ] {
            // Followed by a request, as a proxy would send it: refused, not read past.
            let bytes = [bad.as_bytes(), b"GET / HTTP/1.1\r\n\r\n"].concat();
            assert!(
                matches!(read(&bytes), Err(ProxyHeaderError::Malformed(m)) if !m.contains("test")),
                "{bad:?}"
            );
        }
        let endless = format!("PROXY UNKNOWN {}", "x".repeat(200));
        assert_eq!(read(endless.as_bytes()), Err(ProxyHeaderError::TooLong));
        let mut huge = v2(1, 0x11, &V4_BLOCK);
        huge[14..16].copy_from_slice(&600u16.to_be_bytes());
        assert_eq!(parse(&huge), Err(ProxyHeaderError::TooLong));
        let mut v3 = v2(1, 0x11, &V4_BLOCK);
        v3[12] = 0x31;
        assert!(matches!(parse(&v3), Err(ProxyHeaderError::Malformed(_))));
        let mut command = v2(1, 0x11, &V4_BLOCK);
        command[12] = 0x22;
        assert!(matches!(
            parse(&command),
            Err(ProxyHeaderError::Malformed(_))
        ));
    }
}
