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

/// Fixed-width lower-case hex (at most 16 digits), for ids that should all look alike.
#[inline]
pub fn push_hex_fixed(out: &mut Vec<u8>, n: u64, digits: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = digits.min(16);
    let mut tmp = [0u8; 16];
    for (k, slot) in tmp[..digits].iter_mut().enumerate() {
        *slot = HEX[((n >> ((digits - 1 - k) * 4)) & 15) as usize];
    }
    out.extend_from_slice(&tmp[..digits]);
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
        push_hex_fixed(&mut v, 0xabc, 6);
        assert_eq!(v, b"0 18446744073709551615 ff 000abc");
    }
}
