//! FUNCTION DUMP / RESTORE payloads in Redis's own format, so libraries move between
//! redis-server and the node both ways: per library the RDB function opcode (0xf5)
//! and its code as an RDB string, then the RDB version (2 bytes, little-endian) and a
//! CRC-64 (Jones, little-endian) of everything before it. Codes are written plain;
//! Redis's LZF-compressed strings are read too.

/// RDB's opcode for a function library (`RDB_OPCODE_FUNCTION2`).
const FUNCTION_OPCODE: u8 = 0xf5;
/// The RDB version the payload claims (Redis 7.0's), and the newest it accepts.
const RDB_VERSION: u16 = 10;

/// The payload of every library's code, in order.
pub fn dump<'c>(codes: impl IntoIterator<Item = &'c [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for code in codes {
        out.push(FUNCTION_OPCODE);
        put_length(&mut out, code.len() as u64);
        out.extend_from_slice(code);
    }
    out.extend_from_slice(&RDB_VERSION.to_le_bytes());
    let crc = crc64(0, &out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A payload that fails its version, checksum or structure check.
#[derive(Debug, PartialEq, Eq)]
pub struct BadPayload;

/// The libraries' codes in a payload.
pub fn restore(payload: &[u8]) -> Result<Vec<Vec<u8>>, BadPayload> {
    if payload.len() < 10 {
        return Err(BadPayload);
    }
    let (body, footer) = payload.split_at(payload.len() - 10);
    let version = u16::from_le_bytes([footer[0], footer[1]]);
    let crc = u64::from_le_bytes(footer[2..].try_into().map_err(|_| BadPayload)?);
    if version > RDB_VERSION || crc64(0, &payload[..payload.len() - 8]) != crc {
        return Err(BadPayload);
    }
    let mut reader = Reader { data: body, pos: 0 };
    let mut codes = Vec::new();
    while reader.pos < body.len() {
        if reader.byte()? != FUNCTION_OPCODE {
            return Err(BadPayload);
        }
        codes.push(reader.string()?);
    }
    Ok(codes)
}

fn put_length(out: &mut Vec<u8>, len: u64) {
    if len < 1 << 6 {
        out.push(len as u8);
    } else if len < 1 << 14 {
        out.extend_from_slice(&((len as u16) | 0x4000).to_be_bytes());
    } else if len <= u64::from(u32::MAX) {
        out.push(0x80);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

struct Reader<'d> {
    data: &'d [u8],
    pos: usize,
}

/// An RDB length, or the kind of specially encoded string that follows.
enum Length {
    Plain(usize),
    Int(usize),
    Lzf,
}

impl<'d> Reader<'d> {
    fn take(&mut self, len: usize) -> Result<&'d [u8], BadPayload> {
        let end = self.pos.checked_add(len).ok_or(BadPayload)?;
        let bytes = self.data.get(self.pos..end).ok_or(BadPayload)?;
        self.pos = end;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, BadPayload> {
        Ok(self.take(1)?[0])
    }

    fn length(&mut self) -> Result<Length, BadPayload> {
        let first = self.byte()?;
        let plain = |len: u64| {
            usize::try_from(len)
                .map(Length::Plain)
                .map_err(|_| BadPayload)
        };
        match first >> 6 {
            0 => plain(u64::from(first & 0x3f)),
            1 => plain(u64::from(first & 0x3f) << 8 | u64::from(self.byte()?)),
            2 if first == 0x80 => plain(u64::from(u32::from_be_bytes(
                self.take(4)?.try_into().map_err(|_| BadPayload)?,
            ))),
            2 if first == 0x81 => plain(u64::from_be_bytes(
                self.take(8)?.try_into().map_err(|_| BadPayload)?,
            )),
            3 => match first & 0x3f {
                0 => Ok(Length::Int(1)),
                1 => Ok(Length::Int(2)),
                2 => Ok(Length::Int(4)),
                3 => Ok(Length::Lzf),
                _ => Err(BadPayload),
            },
            _ => Err(BadPayload),
        }
    }

    fn plain_length(&mut self) -> Result<usize, BadPayload> {
        match self.length()? {
            Length::Plain(len) => Ok(len),
            _ => Err(BadPayload),
        }
    }

    fn string(&mut self) -> Result<Vec<u8>, BadPayload> {
        match self.length()? {
            Length::Plain(len) => Ok(self.take(len)?.to_vec()),
            Length::Int(width) => {
                let bytes = self.take(width)?;
                let value = match width {
                    1 => i64::from(bytes[0] as i8),
                    2 => i64::from(i16::from_le_bytes([bytes[0], bytes[1]])),
                    _ => i64::from(i32::from_le_bytes(
                        bytes.try_into().map_err(|_| BadPayload)?,
                    )),
                };
                Ok(value.to_string().into_bytes())
            }
            Length::Lzf => {
                let compressed_len = self.plain_length()?;
                let len = self.plain_length()?;
                lzf_decompress(self.take(compressed_len)?, len)
            }
        }
    }
}

/// LZF as Redis compresses RDB strings: literal runs and back references; the output
/// must come to exactly `len` bytes.
fn lzf_decompress(input: &[u8], len: usize) -> Result<Vec<u8>, BadPayload> {
    let mut out: Vec<u8> = Vec::with_capacity(len.min(input.len().saturating_mul(64)));
    let mut i = 0;
    while i < input.len() {
        let control = usize::from(input[i]);
        i += 1;
        if control < 32 {
            let run = input.get(i..i + control + 1).ok_or(BadPayload)?;
            out.extend_from_slice(run);
            i += control + 1;
        } else {
            let mut run = control >> 5;
            if run == 7 {
                run += usize::from(*input.get(i).ok_or(BadPayload)?);
                i += 1;
            }
            let low = usize::from(*input.get(i).ok_or(BadPayload)?);
            i += 1;
            let back = ((control & 0x1f) << 8) + low + 1;
            let start = out.len().checked_sub(back).ok_or(BadPayload)?;
            for offset in 0..run + 2 {
                let byte = out[start + offset];
                out.push(byte);
            }
        }
        if out.len() > len {
            return Err(BadPayload);
        }
    }
    if out.len() != len {
        return Err(BadPayload);
    }
    Ok(out)
}

/// CRC-64 as Redis computes RDB and DUMP checksums (Jones polynomial, reflected).
fn crc64(mut crc: u64, data: &[u8]) -> u64 {
    const POLY: u64 = 0x95ac_9329_ac4b_c9b5;
    for &byte in data {
        crc ^= u64::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (POLY & mask);
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_is_redis_crc64() {
        // redis/src/crc64.c's test vector
        assert_eq!(crc64(0, b"123456789"), 0xe9c6_d914_c4b8_d9ca);
    }

    #[test]
    fn payloads_round_trip_and_refuse_damage() {
        let codes: Vec<&[u8]> = vec![b"#!lua name=a\nx", &[b'y'; 20_000]];
        let payload = dump(codes.iter().copied());
        assert_eq!(restore(&payload).unwrap(), codes);
        assert_eq!(restore(&dump([])).unwrap(), Vec::<Vec<u8>>::new());
        for at in 0..payload.len().min(64) {
            let mut bad = payload.clone();
            bad[at] ^= 0x10;
            assert_eq!(restore(&bad), Err(BadPayload), "byte {at}");
        }
        assert_eq!(restore(&payload[..payload.len() - 1]), Err(BadPayload));
        assert_eq!(restore(b""), Err(BadPayload));
    }

    #[test]
    fn lzf_reads_runs_and_back_references() {
        // "abcabcabc": a literal run of 3, then a reference 3 back, 6 long
        let compressed = [2, b'a', b'b', b'c', (4 << 5), 2];
        assert_eq!(lzf_decompress(&compressed, 9).unwrap(), b"abcabcabc");
        assert_eq!(lzf_decompress(&compressed, 8), Err(BadPayload));
        assert_eq!(lzf_decompress(&[(1 << 5), 0], 3), Err(BadPayload));
    }
}
