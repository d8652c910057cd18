//! A fixed-size latency histogram (1 ms buckets to 1 s, 10 ms to 60 s, one overflow bucket), so
//! percentiles over a million rows cost the same memory as over ten.

#[derive(Debug, Clone)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
}

const FINE: u64 = 1000;
const COARSE_STEP: u64 = 10;
const MAX: u64 = 60_000;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; (FINE + (MAX - FINE) / COARSE_STEP + 1) as usize],
            count: 0,
        }
    }
}

impl Histogram {
    fn bucket(ms: u64) -> usize {
        if ms < FINE {
            ms as usize
        } else if ms < MAX {
            (FINE + (ms - FINE) / COARSE_STEP) as usize
        } else {
            (FINE + (MAX - FINE) / COARSE_STEP) as usize
        }
    }

    fn value(bucket: usize) -> u64 {
        let b = bucket as u64;
        if b < FINE {
            b
        } else {
            FINE + (b - FINE) * COARSE_STEP
        }
    }

    pub fn record(&mut self, ms: u64) {
        self.buckets[Self::bucket(ms)] += 1;
        self.count += 1;
    }

    /// The value at quantile `q` (0.0..=1.0), or `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Self::value(i));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in 1..=100 {
            h.record(ms);
        }
        assert_eq!(h.quantile(0.5), Some(50));
        assert_eq!(h.quantile(0.99), Some(99));
        h.record(5_000);
        h.record(100_000);
        assert_eq!(h.quantile(1.0), Some(60_000));
    }
}
