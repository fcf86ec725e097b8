//! The header fields of a parsed head, in three allocations whatever their number: names
//! (lower-cased), values, and where each field ends. A head parsed
//! into one owned `(String, Vec<u8>)` per field cost two allocations per field, about half of
//! all allocations of a proxied request (measured with a uprobe on malloc: 43 per request).

/// Header fields in arrival order, duplicates kept. Names are lower-cased when pushed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// The names, one after another. A `String`, so reading a name back costs no UTF-8
    /// validation: a proxied request reads some 60 names, and validating them was 12% of its
    /// user-space instructions (callgrind).
    names: String,
    values: Vec<u8>,
    /// Per field: where its name ends in `names` and its value in `values` (each field starts
    /// where the previous one ended).
    ends: Vec<(usize, usize)>,
}

impl Headers {
    pub fn with_capacity(fields: usize, bytes: usize) -> Self {
        Self {
            names: String::with_capacity(fields * 16),
            values: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(fields),
        }
    }

    fn push_name(&mut self, name: &str) {
        let start = self.names.len();
        self.names.push_str(name);
        self.names[start..].make_ascii_lowercase();
    }

    pub fn push(&mut self, name: &str, value: &[u8]) {
        self.push_name(name);
        self.values.extend_from_slice(value);
        self.ends.push((self.names.len(), self.values.len()));
    }

    /// A field whose value `write` appends (formatted in place, without a `String` first).
    pub fn push_with(&mut self, name: &str, write: impl FnOnce(&mut Vec<u8>)) {
        self.push_name(name);
        write(&mut self.values);
        self.ends.push((self.names.len(), self.values.len()));
    }

    /// Bytes of names and values, for sizing what they are written into.
    pub fn byte_len(&self) -> usize {
        self.names.len() + self.values.len()
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Field `i` as (name, value).
    #[inline]
    pub fn field(&self, i: usize) -> (&str, &[u8]) {
        let (name_start, value_start) = if i == 0 { (0, 0) } else { self.ends[i - 1] };
        let (name_end, value_end) = self.ends[i];
        (
            &self.names[name_start..name_end],
            &self.values[value_start..value_end],
        )
    }

    #[inline]
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            headers: self,
            next: 0,
            name_start: 0,
            value_start: 0,
        }
    }

    /// Every value of `name` (ASCII case-insensitive), in arrival order. Compares names as
    /// bytes, length first, without making a `str` of each: a proxied request looks up some
    /// 50 names, and slicing every field for each was 9% of its instructions (callgrind).
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        let (mut name_start, mut value_start) = (0, 0);
        self.ends.iter().filter_map(move |&(name_end, value_end)| {
            let value = self
                .named(name, name_start..name_end)
                .then(|| &self.values[value_start..value_end]);
            (name_start, value_start) = (name_end, value_end);
            value
        })
    }

    /// The first value of `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let (mut name_start, mut value_start) = (0, 0);
        for &(name_end, value_end) in &self.ends {
            if self.named(name, name_start..name_end) {
                return Some(&self.values[value_start..value_end]);
            }
            (name_start, value_start) = (name_end, value_end);
        }
        None
    }

    #[inline]
    fn named(&self, name: &str, at: std::ops::Range<usize>) -> bool {
        at.len() == name.len() && self.names.as_bytes()[at].eq_ignore_ascii_case(name.as_bytes())
    }
}

pub struct Iter<'a> {
    headers: &'a Headers,
    next: usize,
    name_start: usize,
    value_start: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let &(name_end, value_end) = self.headers.ends.get(self.next)?;
        let field = (
            &self.headers.names[self.name_start..name_end],
            &self.headers.values[self.value_start..value_end],
        );
        self.next += 1;
        (self.name_start, self.value_start) = (name_end, value_end);
        Some(field)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.headers.len() - self.next;
        (left, Some(left))
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a str, &'a [u8]);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut h = Headers::default();
        for (n, v) in iter {
            h.push(n.as_ref(), v.as_ref());
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_duplicates_and_empty_values() {
        let h: Headers = [
            ("Host", "a"),
            ("X-Empty", ""),
            ("host", "b"),
            ("Accept", "*/*"),
        ]
        .into_iter()
        .collect();
        let all: Vec<(&str, &[u8])> = h.iter().collect();
        assert_eq!(
            all,
            vec![
                ("host", &b"a"[..]),
                ("x-empty", &b""[..]),
                ("host", &b"b"[..]),
                ("accept", &b"*/*"[..]),
            ]
        );
        assert_eq!(h.get("host"), Some(&b"a"[..]));
        assert_eq!(h.values("host").count(), 2);
        assert_eq!(h.get("x-empty"), Some(&b""[..]));
        assert_eq!(h.get("missing"), None);
        assert_eq!(h.len(), 4);
        assert!(Headers::default().is_empty());
    }
}
