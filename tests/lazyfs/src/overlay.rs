//! One file's writes not yet covered by fsync, kept in memory over the durable file on the
//! backing filesystem (no I/O here: the durable bytes are read through a closure).
//!
//! The file a process sees is the durable file with these changes applied: dirty pages
//! over it, cut to the last size set (a truncation hides the durable bytes past it until
//! they are written again). `fsync` turns the overlay into the durable file; a power cut
//! drops it, or persists a random subset of its pages as the kernel's background writeback
//! might have done before the cut.

use std::collections::BTreeMap;

/// Size of a page: the unit in which dirty data is kept and written back.
pub const PAGE: u64 = 4096;

/// Reads durable bytes at an offset into a buffer; returns how many were read (short at
/// the end of the durable file).
pub type ReadDurable<'a> = &'a mut dyn FnMut(u64, &mut [u8]) -> std::io::Result<usize>;

/// The writes to one file since its last fsync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// Page index -> the page's bytes as written (whole pages; past `size` they are zeros).
    pages: BTreeMap<u64, Vec<u8>>,
    /// The file's size as the process sees it.
    size: u64,
    /// Durable bytes at and past this offset are hidden (an earlier truncation).
    hidden_from: u64,
}

impl Overlay {
    /// No changes yet over a durable file of `durable_size` bytes.
    pub fn new(durable_size: u64) -> Overlay {
        Overlay {
            pages: BTreeMap::new(),
            size: durable_size,
            hidden_from: durable_size,
        }
    }

    /// The size the process sees.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes held in memory that a power cut would lose.
    pub fn dirty_bytes(&self) -> u64 {
        self.pages.len() as u64 * PAGE
    }

    /// Writes `data` at `offset`.
    pub fn write(
        &mut self,
        offset: u64,
        data: &[u8],
        durable: ReadDurable<'_>,
    ) -> std::io::Result<()> {
        let end = offset + data.len() as u64;
        let mut at = offset;
        while at < end {
            let index = at / PAGE;
            let in_page = (at % PAGE) as usize;
            let n = ((PAGE as usize) - in_page).min((end - at) as usize);
            let page = self.page_mut(index, durable)?;
            let from = (at - offset) as usize;
            page[in_page..in_page + n].copy_from_slice(&data[from..from + n]);
            at += n as u64;
        }
        self.size = self.size.max(end);
        Ok(())
    }

    /// Sets the size (truncate or extend with zeros).
    pub fn set_size(&mut self, size: u64, durable: ReadDurable<'_>) -> std::io::Result<()> {
        if size < self.size {
            // Zero the tail of the page the new end falls in, drop the pages past it, and
            // hide the durable bytes past it.
            if !size.is_multiple_of(PAGE) {
                let index = size / PAGE;
                let page = self.page_mut(index, durable)?;
                page[(size % PAGE) as usize..].fill(0);
            }
            let first_gone = size.div_ceil(PAGE);
            self.pages.retain(|i, _| *i < first_gone);
            self.hidden_from = self.hidden_from.min(size);
        }
        self.size = size;
        Ok(())
    }

    /// Reads up to `buf.len()` bytes at `offset` as the process sees them.
    pub fn read(
        &self,
        offset: u64,
        buf: &mut [u8],
        durable: ReadDurable<'_>,
    ) -> std::io::Result<usize> {
        let end = (offset + buf.len() as u64).min(self.size);
        let mut at = offset;
        while at < end {
            let index = at / PAGE;
            let in_page = (at % PAGE) as usize;
            let n = ((PAGE as usize) - in_page).min((end - at) as usize);
            let out = &mut buf[(at - offset) as usize..(at - offset) as usize + n];
            match self.pages.get(&index) {
                Some(page) => out.copy_from_slice(&page[in_page..in_page + n]),
                None => self.read_durable(at, out, durable)?,
            }
            at += n as u64;
        }
        Ok(end.saturating_sub(offset) as usize)
    }

    /// The page, loaded from the durable bytes the first time it is touched.
    fn page_mut(&mut self, index: u64, durable: ReadDurable<'_>) -> std::io::Result<&mut Vec<u8>> {
        if !self.pages.contains_key(&index) {
            let mut page = vec![0u8; PAGE as usize];
            let start = index * PAGE;
            let visible = self.size.min(start + PAGE).saturating_sub(start) as usize;
            self.read_durable(start, &mut page[..visible], durable)?;
            self.pages.insert(index, page);
        }
        self.pages
            .get_mut(&index)
            .ok_or_else(|| std::io::Error::other("page vanished"))
    }

    /// Durable bytes at `offset`: zeros where hidden or past the durable end.
    fn read_durable(
        &self,
        offset: u64,
        out: &mut [u8],
        durable: ReadDurable<'_>,
    ) -> std::io::Result<()> {
        out.fill(0);
        let visible = self
            .hidden_from
            .saturating_sub(offset)
            .min(out.len() as u64) as usize;
        let mut got = 0;
        while got < visible {
            let n = durable(offset + got as u64, &mut out[got..visible])?;
            if n == 0 {
                break;
            }
            got += n;
        }
        Ok(())
    }

    /// What to do to the durable file to make it equal to what the process sees, or (with
    /// `keep` choosing pages) what the kernel might have written back before a power cut.
    pub fn writeback(&self, keep: &mut dyn FnMut(u64) -> bool, all: bool) -> Writeback {
        let pages = self
            .pages
            .iter()
            .filter(|(i, _)| all || keep(**i))
            .map(|(i, p)| {
                let start = i * PAGE;
                let len = self.size.saturating_sub(start).min(PAGE) as usize;
                (start, p[..len].to_vec())
            })
            .filter(|(_, p)| !p.is_empty())
            .collect();
        Writeback {
            truncate_to: all.then_some(self.hidden_from.min(self.size)),
            pages,
            size: all.then_some(self.size),
        }
    }
}

/// Changes to apply to a durable file, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writeback {
    /// First cut the file to this size (an earlier truncation).
    pub truncate_to: Option<u64>,
    /// Then write these bytes at these offsets.
    pub pages: Vec<(u64, Vec<u8>)>,
    /// Then set the size to this.
    pub size: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A durable file in memory.
    fn apply(durable: &mut Vec<u8>, w: &Writeback) {
        if let Some(t) = w.truncate_to {
            durable.truncate(t as usize);
        }
        for (at, bytes) in &w.pages {
            let end = *at as usize + bytes.len();
            if durable.len() < end {
                durable.resize(end, 0);
            }
            durable[*at as usize..end].copy_from_slice(bytes);
        }
        if let Some(s) = w.size {
            durable.resize(s as usize, 0);
        }
    }

    fn reader(durable: &[u8]) -> impl FnMut(u64, &mut [u8]) -> std::io::Result<usize> + '_ {
        move |at, out| {
            let at = (at as usize).min(durable.len());
            let n = out.len().min(durable.len() - at);
            out[..n].copy_from_slice(&durable[at..at + n]);
            Ok(n)
        }
    }

    /// Random operations against a plain `Vec<u8>` model of what the process sees: reads
    /// always agree, and after fsync the durable file equals the model, while a power cut
    /// leaves the durable file exactly as it was at the last fsync.
    #[test]
    fn overlay_matches_a_plain_file_model() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n.max(1)
        };
        for _round in 0..200 {
            let mut durable: Vec<u8> = (0..rand(20_000)).map(|i| i as u8).collect();
            let mut synced = durable.clone();
            let mut model = durable.clone();
            let mut ov = Overlay::new(durable.len() as u64);
            for step in 0..40 {
                match rand(10) {
                    0..=4 => {
                        let at = rand(model.len() as u64 + 9000);
                        let data: Vec<u8> = (0..rand(9000) + 1).map(|_| rand(256) as u8).collect();
                        ov.write(at, &data, &mut reader(&durable)).unwrap();
                        let end = at as usize + data.len();
                        if model.len() < end {
                            model.resize(end, 0);
                        }
                        model[at as usize..end].copy_from_slice(&data);
                    }
                    5 | 6 => {
                        let size = rand(model.len() as u64 + 5000);
                        ov.set_size(size, &mut reader(&durable)).unwrap();
                        model.resize(size as usize, 0);
                    }
                    7 => {
                        apply(&mut durable, &ov.writeback(&mut |_| true, true));
                        assert_eq!(durable, model, "fsync at step {step}");
                        synced = durable.clone();
                        ov = Overlay::new(durable.len() as u64);
                    }
                    _ => {
                        let at = rand(model.len() as u64 + 10);
                        let mut buf = vec![0xAA; rand(12_000) as usize];
                        let n = ov.read(at, &mut buf, &mut reader(&durable)).unwrap();
                        let want = &model[(at as usize).min(model.len())..]
                            [..n.min(model.len().saturating_sub(at as usize))];
                        assert_eq!(&buf[..n], want, "read at {at}, step {step}");
                        assert_eq!(ov.size() as usize, model.len());
                    }
                }
            }
            // Power cut, nothing written back: the durable file is as last synced.
            assert_eq!(durable, synced);
            // A partial writeback changes only pages that were written since.
            let mut partial = durable.clone();
            apply(&mut partial, &ov.writeback(&mut |i| i % 2 == 0, false));
            for (i, (a, b)) in partial.iter().zip(&synced).enumerate() {
                if a != b {
                    assert!(ov.pages.contains_key(&(i as u64 / PAGE)), "byte {i}");
                }
            }
        }
    }
}
