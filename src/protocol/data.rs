//! The shape rule for a message's `data`: any JSON, but not nested deeper than
//! [`MAX_DATA_DEPTH`] nor with a number longer than [`MAX_NUMBER_CHARS`]. roomcast relays `data`
//! byte for byte, so it never needs the limit itself; its recipients do: browsers, mobile JSON
//! parsers and serde_json (128 levels) refuse or overflow on very deep documents, and 60,000
//! digit numbers make some parsers spend seconds. One sender must not be able to hand every
//! member of a room a message their client cannot read.

/// Deepest nesting of arrays and objects accepted in `data`.
pub const MAX_DATA_DEPTH: usize = 64;
/// Longest number (digits, sign, point and exponent) accepted in `data`.
pub const MAX_NUMBER_CHARS: usize = 64;

/// Why `data` was refused; the message is the one clients and API callers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("data nests arrays and objects deeper than 64 levels")]
    TooDeep,
    #[error("data has a number longer than 64 characters")]
    NumberTooLong,
}

/// Checks already parsed (so well-formed) JSON against the shape rule, in one pass over its
/// bytes.
pub fn check_data(json: &str) -> Result<(), DataError> {
    let (mut depth, mut number) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in json.as_bytes() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E' => {
                number += 1;
                if number > MAX_NUMBER_CHARS {
                    return Err(DataError::NumberTooLong);
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DATA_DEPTH {
                    return Err(DataError::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'"' => in_string = true,
            _ => {}
        }
        number = 0;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> String {
        "[".repeat(levels) + &"]".repeat(levels)
    }

    #[test]
    fn depth_and_number_length_are_bounded_and_strings_do_not_count() {
        assert_eq!(check_data(&nested(64)), Ok(()));
        assert_eq!(check_data(&nested(65)), Err(DataError::TooDeep));
        assert_eq!(check_data(&nested(30_000)), Err(DataError::TooDeep));
        let object = r#"{"a":"#.repeat(65) + "1" + &"}".repeat(65);
        assert_eq!(check_data(&object), Err(DataError::TooDeep));
        assert_eq!(check_data(&"9".repeat(64)), Ok(()));
        assert_eq!(check_data(&"9".repeat(65)), Err(DataError::NumberTooLong));
        assert_eq!(
            check_data(&format!("[1,{},2]", "1".repeat(60_000))),
            Err(DataError::NumberTooLong)
        );
        // Brackets, digits and escaped quotes inside strings are text, not structure.
        let text = format!(r#"{{"t":"{}\"{}"}}"#, "[".repeat(100), "7".repeat(100));
        assert_eq!(check_data(&text), Ok(()));
        assert_eq!(
            check_data(r#"[1e308, -0.5, 12345678901234567890, true, null]"#),
            Ok(())
        );
        // Short numbers next to each other never add up.
        assert_eq!(
            check_data(&format!("[{}]", ["12345"; 100].join(","))),
            Ok(())
        );
    }
}
