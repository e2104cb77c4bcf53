//! One compaction pass over a segment log (see `compact.rs` for the swap protocol).

use super::*;
use crate::storage::txn_index::AbortedTxn;
use crate::storage::Log;

/// Bytes of cleaned output written between two syncs.
const SYNC_EVERY: u64 = 8 << 20;

/// The aborted transactions of a pass: is the data batch of `pid` at `base` aborted?
struct Aborted(HashMap<i64, Vec<AbortedTxn>>);

impl Aborted {
    fn holds(&self, b: &[u8], base: i64) -> bool {
        let Some(info) = batch::info(b) else {
            return false;
        };
        info.transactional
            && !info.control
            && self.0.get(&info.producer_id).is_some_and(|list| {
                list.iter()
                    .any(|a| a.first_offset <= base && base <= a.last_offset)
            })
    }
}

impl SegmentLog {
    /// The closed segments below `until`, as they are now.
    fn snapshot(&self, until: i64) -> Vec<Snap> {
        let segments = self.segments.read().unwrap_or_else(|e| e.into_inner());
        let count = segments.len();
        segments
            .iter()
            .enumerate()
            .take(count.saturating_sub(1))
            .map(|(i, s)| Snap {
                base: s.base,
                next: segments[i + 1].base,
                bytes: s.end,
                file: s.file.clone(),
                path: s.path.clone(),
            })
            .filter(|s| s.next <= until)
            .collect()
    }

    /// Maps the keys from `from` on; returns the map and the first offset it does not cover.
    fn build_map(
        &self,
        snaps: &[Snap],
        from: i64,
        until: i64,
        (job, aborted): (&CompactJob, &Aborted),
    ) -> Result<(OffsetMap, i64), StorageError> {
        let mut builder = MapBuilder::new(OffsetMap::with_budget(job.map_budget));
        for s in snaps.iter().filter(|s| s.next > from) {
            let mut more = true;
            each_batch(s, |base, b| {
                let last = batch::info(b).map_or(base, |i| base + i64::from(i.last_offset_delta));
                if last < from {
                    return Ok(true);
                }
                let limits = (aborted.holds(b, base), job.decode_limit);
                more = builder.add(b, base, from, limits).unwrap_or_else(|e| {
                    tracing::warn!(log = %self.name, offset = base, "compaction keeps a batch it cannot read whole: {e}");
                    true
                });
                Ok(more)
            })?;
            if !more {
                break;
            }
        }
        let end = builder.full_at.unwrap_or(until);
        Ok((builder.map, end))
    }

    /// One pass, if the planner finds the log dirty enough (or a delete horizon due).
    pub(in crate::storage::segments) fn compact_pass(
        &self,
        job: &CompactJob,
    ) -> Result<Option<CompactReport>, StorageError> {
        let mut state = self.cleaning.lock().unwrap_or_else(|e| e.into_inner());
        let infos = self.segments();
        let stable = self
            .txns
            .first_unstable()
            .map_or(job.high_watermark, |u| u.min(job.high_watermark));
        let view = View {
            segments: &infos,
            first_dirty: state.first_dirty.max(self.log_start_offset()),
            stable,
            horizon: state.horizon,
        };
        let Some(range) = cleaner::plan(view, job.policy, job.now_ms) else {
            return Ok(None);
        };
        let snaps = self.snapshot(range.until);
        let start = snaps.first().map_or(range.until, |s| s.base);
        let mut by_pid: HashMap<i64, Vec<AbortedTxn>> = HashMap::new();
        for a in self.txns.aborted(start, range.until) {
            by_pid.entry(a.producer_id).or_default().push(a);
        }
        let aborted = Aborted(by_pid);
        let (map, mapped_to) =
            self.build_map(&snaps, range.dirty_from, range.until, (job, &aborted))?;
        let last_data: HashMap<i64, i64> = self
            .producers()
            .into_iter()
            .filter_map(|(pid, e)| Some((pid, e.batches.back()?.base_offset)))
            .collect();
        let settings = Settings {
            now_ms: job.now_ms,
            delete_retention_ms: job.policy.delete_retention_ms,
            decode_limit: job.decode_limit,
        };
        let mut filter = Filter::new(&map, mapped_to, settings);
        let mut report = CompactReport {
            mapped_to,
            map_keys: map.len(),
            map_bytes: map.allocated_bytes(),
            ..CompactReport::default()
        };
        let limit = self.segment_bytes.load(Ordering::Acquire);
        for group in groups(snaps, limit) {
            let ctx = (&mut filter, &aborted, &last_data);
            self.rewrite_group(&group, ctx, &mut report)?;
        }
        report.stats = filter.stats;
        *state = Checkpoint {
            first_dirty: mapped_to,
            horizon: filter.earliest_horizon,
        };
        state.write(&self.dir)?;
        Ok(Some(report))
    }

    /// Writes the kept batches of `group` to a new segment and swaps it in.
    fn rewrite_group(
        &self,
        group: &[Snap],
        (filter, aborted, last_data): (&mut Filter, &Aborted, &HashMap<i64, i64>),
        report: &mut CompactReport,
    ) -> Result<(), StorageError> {
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            return Ok(());
        };
        let tmp = self.dir.join(format!("{:020}{CLEANED}", first.base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        let mut out = BufWriter::with_capacity(1 << 20, &file);
        let mut seg = Segment {
            base: first.base,
            file: Arc::new(file.try_clone().map_err(io_err(&tmp))?),
            path: self.dir.join(segment_name(first.base)),
            end: 0,
            index: Vec::new(),
            since_index: 0,
        };
        let mut changed = group.len() > 1;
        // Written back as it goes (a sync per 8 MiB), so the final fsync does not hold the
        // disk, and the producers' fsyncs behind it, for a whole segment.
        let mut unsynced = 0u64;
        for s in group {
            report.bytes_read += s.bytes;
            each_batch(s, |base, b| {
                let info = batch::info(b);
                let last = info.is_some_and(|i| last_data.get(&i.producer_id) == Some(&base));
                let kept = match filter.batch(b, base, aborted.holds(b, base), last) {
                    Verdict::Keep => std::borrow::Cow::Borrowed(b),
                    Verdict::Drop => {
                        changed = true;
                        return Ok(true);
                    }
                    Verdict::Rewrite(nb) => {
                        changed = true;
                        std::borrow::Cow::Owned(nb)
                    }
                };
                out.write_all(&kept).map_err(io_err(&tmp))?;
                unsynced += kept.len() as u64;
                if unsynced >= SYNC_EVERY {
                    unsynced = 0;
                    out.flush()
                        .and_then(|()| out.get_ref().sync_data())
                        .map_err(io_err(&tmp))?;
                }
                let max_ts = batch::info(&kept).map_or(-1, |i| i.max_timestamp);
                seg.index_batch(base, seg.end, kept.len() as u64, max_ts);
                Ok(true)
            })?;
        }
        out.flush().map_err(io_err(&tmp))?;
        drop(out);
        if !changed {
            fs::remove_file(&tmp).map_err(io_err(&tmp))?;
            report.bytes_written += first.bytes;
            return Ok(());
        }
        file.sync_all().map_err(io_err(&tmp))?;
        report.bytes_written += seg.end;
        report.segments += group.len();
        self.swap_in(seg, &tmp, (first.base, last.next))
    }

    /// Steps 2 and 3 of the swap, and the same change in memory. A group that trim removed
    /// meanwhile (the log start moved past it) is not swapped in: its output is deleted.
    fn swap_in(
        &self,
        seg: Segment,
        tmp: &Path,
        (base, end): (i64, i64),
    ) -> Result<(), StorageError> {
        let _files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let still_there = {
            let segments = self.segments.read().unwrap_or_else(|e| e.into_inner());
            segments.iter().any(|s| s.base == base)
        };
        if !still_there {
            return fs::remove_file(tmp).map_err(io_err(tmp));
        }
        // The summaries of the group go before the new segment becomes the truth.
        for s in self
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if s.base >= base && s.base < end {
                super::super::summary::remove(&self.dir, s.base)?;
            }
        }
        let swap = self.dir.join(format!("{base:020}.{end:020}{SWAP}"));
        fs::rename(tmp, &swap).map_err(io_err(&swap))?;
        sync_dir(&self.dir)?;
        {
            let mut segments = self.segments.write().unwrap_or_else(|e| e.into_inner());
            let from = segments.partition_point(|s| s.base < base);
            let to = segments.partition_point(|s| s.base < end);
            segments.splice(from..to, [seg]);
        }
        crate::failpoint::hit("compaction-mid-swap");
        finish_swap(&self.dir, base, end, &swap)?;
        sync_dir(&self.dir)
    }
}
