//! Test support shared by the crates' randomized parser tests (feature `testing`).

/// A xorshift64 generator: deterministic, so a failure reproduces on every run.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// `seed` must not be zero.
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// One byte of `alphabet`, chosen at random.
    pub fn pick(&mut self, alphabet: &[u8]) -> u8 {
        alphabet[self.below(alphabet.len())]
    }
}
