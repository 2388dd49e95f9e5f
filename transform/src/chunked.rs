//! A vector kept in fixed chunks, for state that is indexed by id and grows with the open groups: growing
//! adds a chunk instead of copying every element into room twice as large, so its memory stays within a
//! chunk of its length, even while it grows, and no insert copies work that grows with the groups.

use std::ops::{Index, IndexMut};

/// Elements per chunk: small, as the last chunk's unused room is state too.
pub const CHUNK: usize = 32;

pub struct Chunked<T> {
    /// Arrays, not slices: an index within a chunk needs no check, and a chunk is one pointer.
    chunks: Vec<Box<[T; CHUNK]>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked { chunks: Vec::new(), len: 0 }
    }
}

impl<T: Default> Chunked<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, value: T) {
        let (chunk, at) = (self.len / CHUNK, self.len % CHUNK);
        if chunk == self.chunks.len() {
            let new: Box<[T]> = (0..CHUNK).map(|_| T::default()).collect();
            self.chunks.push(new.try_into().unwrap_or_else(|_| unreachable!("CHUNK elements")));
        }
        self.chunks[chunk][at] = value;
        self.len += 1;
    }

    /// Grows to `len` elements, the new ones as their default.
    pub fn grow_to(&mut self, len: usize) {
        while self.len < len {
            self.push(T::default());
        }
    }

    /// Keeps the first `len` elements, and gives back the chunks past them.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        self.chunks.truncate(self.len.div_ceil(CHUNK));
        self.chunks.shrink_to_fit();
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + ExactSizeIterator {
        (0..self.len).map(|at| &self[at])
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.chunks.iter_mut().flat_map(|chunk| chunk.iter_mut()).take(self.len)
    }
}

impl<T> Index<usize> for Chunked<T> {
    type Output = T;

    fn index(&self, at: usize) -> &T {
        debug_assert!(at < self.len, "index {at} of {}", self.len);
        &self.chunks[at / CHUNK][at % CHUNK]
    }
}

impl<T> IndexMut<usize> for Chunked<T> {
    fn index_mut(&mut self, at: usize) -> &mut T {
        debug_assert!(at < self.len, "index {at} of {}", self.len);
        &mut self.chunks[at / CHUNK][at % CHUNK]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_a_vector_holds_across_chunks() {
        let mut chunked = Chunked::default();
        let mut plain = Vec::new();
        for i in 0..3 * CHUNK + 5 {
            chunked.push(i);
            plain.push(i);
        }
        chunked[CHUNK] = 7;
        plain[CHUNK] = 7;
        assert!(chunked.iter().eq(&plain));
        chunked.truncate(CHUNK + 1);
        plain.truncate(CHUNK + 1);
        assert!(chunked.iter().eq(&plain));
        assert_eq!(chunked.chunks.len(), 2, "the chunks past the length are given back");
        chunked.grow_to(CHUNK + 3);
        plain.resize(CHUNK + 3, 0);
        assert!(chunked.iter().rev().eq(plain.iter().rev()), "the old elements past the length are not seen again");
    }
}
