//! ABCI's socket framing, read and written as raw frames: a message is its
//! length as an unsigned varint, then that many bytes of protobuf. The proxy
//! forwards frames without decoding them, so fields it does not know pass
//! through untouched; it decodes only the calls it answers itself.

use std::io::{self, Read, Write};

use prost::Message;
use tendermint_proto::v0_38::abci::{request, response, Request, Response};

/// The largest frame the proxy reads by default: CometBFT's largest block
/// (104,857,600 bytes) with room for the rest of a FinalizeBlock request.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 128 << 20;

/// The longest varint a length can take (u64).
const MAX_VARINT_BYTES: usize = 10;

/// Reads one frame; `Ok(None)` when the peer closed the connection between
/// frames. A length over `max` is refused before anything is allocated.
pub fn read_frame(from: &mut impl Read, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut len: u64 = 0;
    for i in 0..MAX_VARINT_BYTES {
        let mut byte = [0u8; 1];
        match from.read_exact(&mut byte) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && i == 0 => return Ok(None),
            Err(e) => return Err(e),
        }
        len |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            if len > max as u64 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("an ABCI message of {len} bytes is over the limit of {max} bytes"),
                ));
            }
            let mut body = vec![0u8; len as usize];
            from.read_exact(&mut body)?;
            return Ok(Some(body));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "an ABCI message length is not a valid varint",
    ))
}

/// Writes one frame and flushes it.
pub fn write_frame(to: &mut impl Write, body: &[u8]) -> io::Result<()> {
    let mut head = Vec::with_capacity(MAX_VARINT_BYTES);
    prost::encoding::encode_varint(body.len() as u64, &mut head);
    to.write_all(&head)?;
    to.write_all(body)?;
    to.flush()
}

/// Which call a request frame is: the field number of `Request.value`
/// (0 when the frame is empty or its first field is not a call).
pub fn request_kind(frame: &[u8]) -> u32 {
    let mut buf = frame;
    match prost::encoding::decode_key(&mut buf) {
        Ok((tag, _)) => tag,
        Err(_) => 0,
    }
}

/// `Request.value` field numbers of the calls the proxy looks at.
pub mod kind {
    pub const COMMIT: u32 = 11;
    pub const LIST_SNAPSHOTS: u32 = 12;
    pub const OFFER_SNAPSHOT: u32 = 13;
    pub const LOAD_SNAPSHOT_CHUNK: u32 = 14;
    pub const APPLY_SNAPSHOT_CHUNK: u32 = 15;
    pub const INFO: u32 = 3;
    pub const FINALIZE_BLOCK: u32 = 20;
}

/// A request decoded; an error says what was wrong with it.
pub fn decode_request(frame: &[u8]) -> Result<request::Value, String> {
    Request::decode(frame)
        .map_err(|e| format!("an undecodable ABCI request: {e}"))?
        .value
        .ok_or_else(|| "an ABCI request with no call in it".to_string())
}

/// A response decoded.
pub fn decode_response(frame: &[u8]) -> Result<response::Value, String> {
    Response::decode(frame)
        .map_err(|e| format!("an undecodable ABCI response: {e}"))?
        .value
        .ok_or_else(|| "an ABCI response with no answer in it".to_string())
}

/// The frame of a response.
pub fn encode_response(value: response::Value) -> Vec<u8> {
    Response { value: Some(value) }.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tendermint_proto::v0_38::abci::{RequestFlush, RequestListSnapshots};

    fn frame_of(req: request::Value) -> Vec<u8> {
        Request { value: Some(req) }.encode_to_vec()
    }

    #[test]
    fn frames_round_trip_and_lengths_are_varints() {
        let big = vec![7u8; 300];
        let mut out = Vec::new();
        write_frame(&mut out, &big).unwrap();
        assert_eq!(&out[..2], &[0xac, 0x02], "300 as an unsigned varint");
        write_frame(&mut out, &[]).unwrap();
        let mut r = out.as_slice();
        assert_eq!(read_frame(&mut r, 1000).unwrap().unwrap(), big);
        assert_eq!(read_frame(&mut r, 1000).unwrap().unwrap(), Vec::<u8>::new());
        assert!(read_frame(&mut r, 1000).unwrap().is_none(), "a clean end");
    }

    #[test]
    fn oversized_truncated_and_endless_lengths_are_refused() {
        let mut out = Vec::new();
        write_frame(&mut out, &[1u8; 100]).unwrap();
        let e = read_frame(&mut out.as_slice(), 99).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("100 bytes is over the limit of 99"), "{e}");
        let e = read_frame(&mut &out[..50], 1000).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "a frame cut short");
        let e = read_frame(&mut [0xffu8; 11].as_slice(), usize::MAX).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn kinds_are_the_request_field_numbers() {
        assert_eq!(
            request_kind(&frame_of(request::Value::ListSnapshots(RequestListSnapshots {}))),
            kind::LIST_SNAPSHOTS
        );
        assert_eq!(request_kind(&frame_of(request::Value::Flush(RequestFlush {}))), 2);
        assert_eq!(request_kind(&[]), 0);
        assert_eq!(request_kind(&[0xff]), 0);
    }
}
