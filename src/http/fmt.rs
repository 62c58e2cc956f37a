//! Number formatting straight into output buffers (decimal and hex) without going through
//! `fmt::Write`, which costs more than the whole header serialisation on the hot path.

#[inline]
pub fn push_dec(out: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

#[inline]
pub fn push_hex(out: &mut Vec<u8>, mut n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut tmp = [0u8; 16];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = HEX[(n & 15) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// `n` as 16 lower-case hex digits, computed a word at a time (request ids are made for every
/// request that arrives without one).
#[inline]
pub fn hex16(n: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&hex8(n >> 32));
    out[8..].copy_from_slice(&hex8(n & 0xffff_ffff));
    out
}

/// The low 32 bits of `v` as 8 hex digits: each nibble is spread into a byte of its own, then
/// all eight bytes are mapped to ASCII at once ('0'..'9' and, 39 further on, 'a'..'f').
#[inline]
fn hex8(v: u64) -> [u8; 8] {
    let mut x = v & 0xffff_ffff;
    x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (x + 0x3030_3030_3030_3030 + letters * 39).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        let mut v = Vec::new();
        push_dec(&mut v, 0);
        v.push(b' ');
        push_dec(&mut v, 18446744073709551615);
        v.push(b' ');
        push_hex(&mut v, 255);
        v.push(b' ');
        v.extend_from_slice(&hex16(0x0123_4567_89ab_cdef));
        assert_eq!(v, b"0 18446744073709551615 ff 0123456789abcdef");
        for n in [
            0,
            9,
            10,
            15,
            0xa0,
            0xffff_ffff_ffff_ffff,
            0x9fa0_0000_1234_5678,
        ] {
            assert_eq!(hex16(n), format!("{n:016x}").as_bytes(), "{n:x}");
        }
    }
}
