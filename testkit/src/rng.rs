//! A small xorshift seeded from the clock or `FLEET_FAULT_SEED`; the seed
//! is printed so a failing run can be replayed.

/// A seeded pseudo-random source.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// Seeded from `FLEET_FAULT_SEED`, or the clock; prints the seed.
    pub fn from_env() -> Self {
        let seed = std::env::var("FLEET_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("the clock is after 1970")
                    .as_nanos() as u64
                    | 1
            });
        println!("fault seed: {seed} (FLEET_FAULT_SEED={seed} to replay)");
        XorShift(seed.max(1))
    }

    /// Seeded with `seed`, silently (not a fault run's replayable source).
    pub fn seeded(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Shuffles `items` in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}
