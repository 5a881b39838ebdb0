//! The Confluent wire format: magic byte 0, the 4-byte big-endian schema id, then the Avro datum.
//!
//! Every value on the pipeline's topics uses it, so standard Avro deserializers and sink
//! connectors read them.

use crate::SchemaError;

/// The magic byte that opens every Confluent-framed value.
pub const MAGIC: u8 = 0;

/// Length of the header before the datum.
pub const HEADER_LEN: usize = 5;

/// Frames an Avro datum with the schema id it was written with.
pub fn encode(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + datum.len());
    write_header(schema_id, &mut out);
    out.extend_from_slice(datum);
    out
}

/// Appends the header of a value written with `schema_id`; the datum follows it.
pub fn write_header(schema_id: u32, out: &mut Vec<u8>) {
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
}

/// Splits a framed value into its schema id and datum.
///
/// # Errors
/// [`SchemaError::Wire`] when the value is shorter than the header or does not start with the
/// magic byte.
pub fn decode(value: &[u8]) -> Result<(u32, &[u8]), SchemaError> {
    match value {
        [MAGIC, a, b, c, d, datum @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), datum)),
        [] => Err(SchemaError::Wire("empty value")),
        [MAGIC, ..] => Err(SchemaError::Wire("value shorter than the 5-byte header")),
        _ => Err(SchemaError::Wire("first byte is not the magic byte 0")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let framed = encode(0x0102_0304, b"abc");
        assert_eq!(framed, [0, 1, 2, 3, 4, b'a', b'b', b'c']);
        assert_eq!(decode(&framed).unwrap(), (0x0102_0304, &b"abc"[..]));
    }

    #[test]
    fn rejects_bad_frames() {
        assert!(decode(b"").is_err());
        assert!(decode(&[0, 1, 2]).is_err());
        assert!(decode(b"{\"json\":1}").is_err());
    }
}
