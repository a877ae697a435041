//! One Redis command over a fresh loopback connection, for the campaign's own control of its
//! Redis processes (readiness, `CONFIG SET`, `CLIENT KILL`, cluster set-up). Blocking, bounded
//! by a timeout; the reply's first line is enough for every command the campaign sends.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(2);

/// Sends `args` to the Redis on `port` and returns the reply's first line without its type
/// byte, or the error reply (`-ERR …`, `-LOADING …`) as `Err`.
pub fn command(port: u16, args: &[&str]) -> Result<String, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream
        .write_all(out.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    let line = line.trim_end();
    match line.as_bytes().first() {
        Some(b'-') => Err(line[1..].to_string()),
        Some(b'$') => {
            // A bulk string: its text is on the next line(s); read up to its length.
            let len: i64 = line[1..].parse().map_err(|_| format!("bad reply {line}"))?;
            if len < 0 {
                return Ok(String::new());
            }
            let mut body = vec![0; len as usize + 2];
            std::io::Read::read_exact(&mut reader, &mut body).map_err(|e| e.to_string())?;
            body.truncate(len as usize);
            Ok(String::from_utf8_lossy(&body).into_owned())
        }
        Some(_) => Ok(line[1..].to_string()),
        None => Err("connection closed without a reply".into()),
    }
}
