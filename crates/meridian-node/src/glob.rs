//! Redis's glob matcher (stringmatchlen): `*`, `?`, `[abc]`, `[^a-z]`, `\x`.

pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative matching with backtracking to the last '*' only: O(len(p) * len(t)),
    // so hostile patterns like "*a*a*a*...b" cannot blow up.
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            while p < pattern.len() && pattern[p] == b'*' {
                p += 1;
            }
            if p == pattern.len() {
                return true;
            }
            star = Some((p, t));
            continue;
        }
        if p < pattern.len()
            && let Some(next) = match_single(pattern, p, text[t])
        {
            p = next;
            t += 1;
            continue;
        }
        match star {
            Some((star_p, star_t)) => {
                p = star_p;
                t = star_t + 1;
                star = Some((star_p, star_t + 1));
            }
            None => return false,
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

/// Matches one non-'*' pattern token at `p` against `current`; returns the
/// position after the token on success.
fn match_single(pattern: &[u8], p: usize, current: u8) -> Option<usize> {
    match pattern[p] {
        b'?' => Some(p + 1),
        b'[' => {
            let mut rest = &pattern[p + 1..];
            let negate = rest.first() == Some(&b'^');
            if negate {
                rest = &rest[1..];
            }
            let mut matched = false;
            loop {
                match rest {
                    [] => break,
                    [b']', tail @ ..] => {
                        rest = tail;
                        break;
                    }
                    [b'\\', escaped, tail @ ..] => {
                        matched |= *escaped == current;
                        rest = tail;
                    }
                    [low, b'-', high, tail @ ..] if *high != b']' => {
                        let (low, high) = if low <= high {
                            (*low, *high)
                        } else {
                            (*high, *low)
                        };
                        matched |= (low..=high).contains(&current);
                        rest = tail;
                    }
                    [single, tail @ ..] => {
                        matched |= *single == current;
                        rest = tail;
                    }
                }
            }
            (matched != negate).then(|| pattern.len() - rest.len())
        }
        b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == current).then_some(p + 2),
        literal => (literal == current).then_some(p + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn redis_glob_semantics() {
        assert!(matches(b"*", b""));
        assert!(matches(b"h?llo", b"hello"));
        assert!(matches(b"h*llo", b"heeeello"));
        assert!(matches(b"h[ae]llo", b"hallo"));
        assert!(!matches(b"h[^e]llo", b"hello"));
        assert!(matches(b"h[a-b]llo", b"hbllo"));
        assert!(matches(b"user:\\*", b"user:*"));
        assert!(!matches(b"user:\\*", b"user:1"));
        assert!(matches(b"news.*", b"news.tech"));
        assert!(!matches(b"news.*", b"new"));
        assert!(!matches(&b"*a".repeat(2000), b"aaaaaaaaab"));
    }
}
