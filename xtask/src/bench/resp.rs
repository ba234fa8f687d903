//! Minimal blocking RESP2 client for the benchmarks (pipelined).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use anyhow::{Context, Result, bail};

#[derive(Debug, PartialEq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    pending: Vec<u8>,
    queued: usize,
}

impl Client {
    pub fn connect(port: u16) -> Result<Client> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .with_context(|| format!("connect to 127.0.0.1:{port}"))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::with_capacity(1 << 20, stream.try_clone()?),
            writer: stream,
            pending: Vec::new(),
            queued: 0,
        })
    }

    /// Queues a command; `flush` sends the batch and returns the replies.
    pub fn queue(&mut self, args: &[&[u8]]) {
        encode_command(&mut self.pending, args);
        self.queued += 1;
    }

    pub fn flush(&mut self) -> Result<Vec<Reply>> {
        self.writer.write_all(&self.pending)?;
        self.pending.clear();
        let replies = (0..self.queued)
            .map(|_| self.read())
            .collect::<Result<Vec<_>>>()?;
        self.queued = 0;
        Ok(replies)
    }

    pub fn command(&mut self, args: &[&[u8]]) -> Result<Reply> {
        self.queue(args);
        self.flush()?.pop().context("no reply")
    }

    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        if !line.ends_with("\r\n") {
            bail!("connection closed mid-reply");
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }

    fn read(&mut self) -> Result<Reply> {
        let line = self.line()?;
        let (kind, rest) = line.split_at(1.min(line.len()));
        Ok(match kind {
            "+" => Reply::Status(rest.into()),
            "-" => Reply::Error(rest.into()),
            ":" => Reply::Int(rest.parse()?),
            "$" => {
                let len: i64 = rest.parse()?;
                if len < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut data = vec![0u8; len as usize + 2];
                    self.reader.read_exact(&mut data)?;
                    data.truncate(len as usize);
                    Reply::Bulk(Some(data))
                }
            }
            "*" => {
                let len: i64 = rest.parse()?;
                Reply::Array(
                    (0..len.max(0))
                        .map(|_| self.read())
                        .collect::<Result<_>>()?,
                )
            }
            other => bail!("unexpected reply type {other:?}"),
        })
    }

    /// A numeric field from INFO.
    pub fn info_field(&mut self, section: &str, field: &str) -> Result<u64> {
        let Reply::Bulk(Some(text)) = self.command(&[b"INFO", section.as_bytes()])? else {
            bail!("INFO failed")
        };
        let text = String::from_utf8_lossy(&text).into_owned();
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{field}:")))
            .and_then(|value| value.trim().parse().ok())
            .with_context(|| format!("INFO {section} has no {field}"))
    }
}

/// Appends `args` as a RESP array of bulk strings.
pub fn encode_command(buf: &mut Vec<u8>, args: &[&[u8]]) {
    buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        buf.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        buf.extend_from_slice(arg);
        buf.extend_from_slice(b"\r\n");
    }
}
