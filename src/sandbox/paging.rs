//! Page arithmetic shared by the three providers' list endpoints (their envelopes differ and
//! live in each provider's module; only the clamping of page numbers and sizes is common).

/// A clamped page request over `total` items: 1-based `page`, `size` items per page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub page: usize,
    pub size: usize,
    pub total: usize,
}

impl Page {
    /// emnify's rules (and Telnyx's, which documents no behaviour past the end): a size below 1
    /// means the default, above the maximum means the maximum; a page below 1 is the first,
    /// past the last is the last.
    pub fn clamp(
        page: Option<i64>,
        size: Option<i64>,
        default: usize,
        max: usize,
        total: usize,
    ) -> Page {
        let size = match size {
            Some(s) if s >= 1 => (s as usize).min(max),
            _ => default,
        };
        let pages = total.div_ceil(size).max(1);
        let page = match page {
            Some(p) if p >= 1 => (p as usize).min(pages),
            _ => 1,
        };
        Page { page, size, total }
    }

    pub fn pages(&self) -> usize {
        self.total.div_ceil(self.size).max(1)
    }

    /// The index range of this page.
    pub fn range(&self) -> std::ops::Range<usize> {
        let start = (self.page - 1) * self.size;
        start.min(self.total)..(start + self.size).min(self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamping() {
        let p = Page::clamp(Some(0), Some(0), 100, 2500, 250);
        assert_eq!((p.page, p.size, p.pages()), (1, 100, 3));
        let p = Page::clamp(Some(9), Some(100), 100, 2500, 250);
        assert_eq!((p.page, p.range()), (3, 200..250));
        let p = Page::clamp(Some(1), Some(99_999), 100, 2500, 10);
        assert_eq!(p.size, 2500);
        let empty = Page::clamp(Some(1), None, 20, 250, 0);
        assert_eq!((empty.pages(), empty.range()), (1, 0..0));
    }
}
