//! The protobuf wire format: reading (field number, value) pairs and writing them.

use crate::status::ApiError;

/// One field's value as it is on the wire.
pub enum Wire<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Fixed64(u64),
    Fixed32,
}

/// Iterates over the (field number, value) pairs of a message; stops after the first error.
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub fn varint(&mut self) -> Result<u64, ApiError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first().ok_or_else(truncated)?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ApiError::bad_request("protobuf varint is too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ApiError> {
        let data = self.0.get(..n).ok_or_else(truncated)?;
        self.0 = &self.0[n..];
        Ok(data)
    }

    fn item(&mut self) -> Result<(u64, Wire<'a>), ApiError> {
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| truncated())?)),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| truncated())?;
                Wire::Len(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed32
            }
            t => return Err(ApiError::bad_request(format!("protobuf wire type {t} is not supported"))),
        };
        Ok((key >> 3, wire))
    }
}

pub fn truncated() -> ApiError {
    ApiError::bad_request("protobuf body is truncated")
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<(u64, Wire<'a>), ApiError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let item = self.item();
        if item.is_err() {
            self.0 = &[];
        }
        Some(item)
    }
}

/// Appends fields to a message being built.
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn raw_varint(&mut self, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                return;
            }
            self.0.push(b | 0x80);
        }
    }

    pub fn varint(&mut self, num: u64, v: u64) {
        self.raw_varint(num << 3);
        self.raw_varint(v);
    }

    pub fn bytes(&mut self, num: u64, data: &[u8]) {
        self.raw_varint(num << 3 | 2);
        self.raw_varint(data.len() as u64);
        self.0.extend_from_slice(data);
    }

    pub fn fixed64(&mut self, num: u64, v: u64) {
        self.raw_varint(num << 3 | 1);
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    /// A nested message written by `f`.
    pub fn message(&mut self, num: u64, f: impl FnOnce(&mut Writer)) {
        let mut inner = Writer::default();
        f(&mut inner);
        self.bytes(num, &inner.0);
    }
}
