//! The archive on an object store (`[upload]`): committed bytes of each output file go up as
//! objects, exactly once, after the commit and never in the consumer's way.
//!
//! - [`backlog`]: what is committed and not yet uploaded, shared with the writer and the
//!   consumer; it owns the [`ledger`] (`upload.json`): what of each file is in the store.
//! - [`cut`]: where an object ends (whole zstd frames, whole lines).
//! - [`key`]: the object key, a pure function of the file and the range's first offset.
//! - [`store`]: the S3 client.
//! - [`outage`]: a failing store, said once, counted, retried with a short backoff.
//! - [`remote`]: `logship-collector audit --remote`.
//!
//! Invariants:
//! - An object is a contiguous byte range of one output file starting where the file's previous
//!   object ended; only committed bytes go up, and of a compressed file only sealed frames
//!   (before the record's `tail_start`), which are never recompressed. So a re-upload after a
//!   crash puts the same key with the same bytes.
//! - An object's range is recorded before it is sent and kept until the store confirmed it: a
//!   re-upload after a crash puts the same key with the same bytes, never a longer object.
//! - A range is recorded uploaded only after the store confirmed its object, and the record is
//!   durable before the next object of the file is cut.
//! - A failing store is retried with a backoff of at most [`outage::MAX_BACKOFF`], said once
//!   per outage with its cause, every failed attempt counted; the local disk is the buffer
//!   meanwhile.

pub mod backlog;
pub mod cut;
pub mod error;
pub mod key;
pub mod ledger;
pub mod outage;
pub mod remote;
pub mod store;

use std::fs::File;
use std::os::unix::fs::{FileExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use logship_config::upload::Upload;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Counters, Metrics};
use crate::upload::backlog::{Backlog, Committed};
pub use crate::upload::error::UploadError;
use crate::upload::ledger::{Entry, LocalFile, OpenMultipart};
use crate::upload::outage::StoreOutage;
use crate::upload::store::{Store, StoreError};

/// An object larger than this goes up in parts of this size (S3's smallest part is 5 MiB): no
/// more than one part is held in memory.
pub const PART_BYTES: u64 = 8 << 20;

/// The uploader looks at the backlog at least this often.
const TICK: Duration = Duration::from_secs(1);

/// The uploading task's state.
pub struct Uploader {
    store: Store,
    backlog: Arc<Backlog>,
    settings: Upload,
    output_dir: PathBuf,
    compressed: bool,
    metrics: Arc<Metrics>,
    /// Whether the store is failing, since when and why.
    outage: StoreOutage,
}

impl Uploader {
    /// Checks the bucket (a refusal, such as wrong credentials or a missing bucket, is an
    /// error; a store that does not answer is not: uploads retry) and aborts the multipart
    /// uploads a crash left open.
    pub async fn start(
        settings: Upload,
        output_dir: PathBuf,
        compressed: bool,
        backlog: Arc<Backlog>,
        metrics: Arc<Metrics>,
    ) -> Result<Uploader, StoreError> {
        let store = Store::new(&settings)?;
        match store.check(&settings.prefix).await {
            Ok(()) => {}
            Err(err) if err.is_refusal() => return Err(err),
            Err(err) => {
                tracing::warn!(error = %logship_runtime::error_chain(&err),
                    "object store not reachable at start; uploads retry, the local disk keeps the archive meanwhile")
            }
        }
        let uploader = Uploader {
            store,
            backlog,
            settings,
            output_dir,
            compressed,
            metrics,
            outage: StoreOutage::default(),
        };
        for open in uploader.backlog.ledger().multipart {
            match uploader
                .store
                .abort_multipart(&open.key, &open.upload_id)
                .await
            {
                Ok(()) => {
                    tracing::info!(key = %open.key, bucket = %uploader.store.bucket(),
                        "aborted a multipart upload left unfinished by a crash");
                    if let Err(err) = uploader.backlog.multipart(&open, false) {
                        tracing::warn!(error = %logship_runtime::error_chain(&err), "cannot record an aborted multipart upload");
                    }
                }
                Err(err) => tracing::warn!(error = %logship_runtime::error_chain(&err),
                    "cannot abort a multipart upload left unfinished by a crash; tried again at the next start"),
            }
        }
        tracing::info!(bucket = %uploader.store.bucket(), endpoint = %uploader.store.endpoint(),
            prefix = %uploader.settings.prefix, "uploading the archive");
        Ok(uploader)
    }

    /// Uploads until `shutdown`, at once: an object in flight then is abandoned (it goes up
    /// again, to the same key with the same bytes, after the next start).
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let passed = tokio::select! {
                // cancel-safe: only observes the token
                _ = shutdown.cancelled() => return,
                // not cancel-safe, and need not be: an object cut short goes up again whole,
                // under the same key (its range is in the ledger); a multipart upload cut short
                // is aborted at the next start
                passed = self.pass() => passed,
            };
            let delay = match passed {
                Ok(()) => {
                    self.outage.healed(self.store.bucket());
                    TICK
                }
                Err(err) => self.outage.failed(&err, &self.metrics),
            };
            self.metrics.set_upload_failing(self.outage.is_failing());
            tokio::select! {
                // cancel-safe: only observes the token
                _ = shutdown.cancelled() => return,
                // cancel-safe: a sleep
                _ = tokio::time::sleep(delay) => {}
                // cancel-safe: a Notify permit is kept until taken
                _ = self.backlog.woken(), if !self.outage.is_failing() => {}
            }
        }
    }

    /// One look at every waiting file: uploads what is due, asks for quiet tails to be sealed.
    /// A file that cannot be read does not hold up the others; a failing store or ledger ends
    /// the pass (every other file would fail the same way).
    async fn pass(&mut self) -> Result<(), UploadError> {
        let mut unreadable = None;
        for (relative, committed) in self.backlog.waiting() {
            match self.file(&relative, &committed).await {
                Ok(()) => {}
                Err(err @ UploadError::Read { .. }) => unreadable = unreadable.or(Some(err)),
                Err(err) => return Err(err),
            }
        }
        unreadable.map_or(Ok(()), Err)
    }

    /// Uploads the due objects of one file, and asks for its tail to be sealed once it is
    /// quiet.
    async fn file(&mut self, relative: &Path, committed: &Committed) -> Result<(), UploadError> {
        let record = committed.record;
        let interval = self.settings.interval;
        // A quiet compressed file: its unsealed tail is sealed by the writer, then goes up.
        if self.compressed
            && record.tail_start < record.len
            && committed.changed.elapsed() >= interval / 2
        {
            self.backlog.request_seal(relative, record.len);
        }
        let sealed = if self.compressed {
            record.tail_start
        } else {
            record.len
        };
        let waited = committed
            .waiting_since
            .is_some_and(|since| since.elapsed() >= interval);
        // Most looks find nothing due: they neither open nor read the file.
        let known = self.backlog.entry(relative);
        let due = match known {
            Some(entry) if entry.local.is_some() && record.len >= entry.done => {
                let pending = sealed.saturating_sub(entry.done);
                entry.next_end.is_some()
                    || pending >= self.settings.object_bytes
                    || (pending > 0 && waited)
            }
            _ => sealed > 0 && (sealed >= self.settings.object_bytes || waited),
        };
        if due {
            self.upload_due(relative, sealed, waited).await?;
        }
        Ok(())
    }

    /// Uploads the objects of `relative` that are due, up to `sealed` (its committed bytes that
    /// will never change): every full one, and the rest too if it has `waited` long enough.
    async fn upload_due(
        &mut self,
        relative: &Path,
        sealed: u64,
        waited: bool,
    ) -> Result<(), UploadError> {
        let path = self.output_dir.join(relative);
        let file = match File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(file) => Arc::new(file),
            // Deleted (retention) or not there yet: nothing to upload from it.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(UploadError::Read { path, source }),
        };
        let meta = file.metadata().map_err(|source| UploadError::Read {
            path: path.clone(),
            source,
        })?;
        let local = LocalFile {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        let Some(mut entry) = self.entry_for(relative, local, &meta, sealed) else {
            return Ok(());
        };
        let uploadable = sealed.min(meta.len());
        while entry.done < uploadable {
            let end = match entry.next_end {
                // An object begun before a crash goes up again as it was.
                Some(end) if end > entry.done && end <= uploadable => end,
                _ => {
                    let end = self.cut(&file, &path, entry.done, uploadable).await?;
                    if end - entry.done < self.settings.object_bytes && !waited {
                        break;
                    }
                    entry.next_end = Some(end);
                    self.backlog.intend(relative, entry)?;
                    end
                }
            };
            entry = self.put(relative, &path, &file, entry, end).await?;
        }
        Ok(())
    }

    /// The ledger's entry for the local file now at `relative`; a new file at the path (after a
    /// deletion, or replaced by an operator) continues where the path's objects end. `None`: the
    /// file is one whose deletion was interrupted (its bytes are all uploaded).
    fn entry_for(
        &self,
        relative: &Path,
        local: LocalFile,
        meta: &std::fs::Metadata,
        committed_len: u64,
    ) -> Option<Entry> {
        let Some(entry) = self.backlog.entry(relative) else {
            return Some(Entry::new(local));
        };
        match entry.local {
            Some(known) if known == local && committed_len >= entry.done => Some(entry),
            Some(_) => {
                tracing::warn!(file = %self.output_dir.join(relative).display(), uploaded = entry.done,
                    "output file replaced: the new one's objects follow the old one's; bytes of the old one not uploaded by then are not in the store");
                Some(entry.succeeded_by(local))
            }
            None => {
                let mtime_ms = meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000;
                if entry.retired_ms.is_some_and(|retired| mtime_ms <= retired) {
                    return None;
                }
                Some(entry.succeeded_by(local))
            }
        }
    }

    /// Where the object starting at `start` ends (see [`cut`]).
    async fn cut(
        &self,
        file: &Arc<File>,
        path: &Path,
        start: u64,
        end: u64,
    ) -> Result<u64, UploadError> {
        let (file, object_bytes, compressed) =
            (file.clone(), self.settings.object_bytes, self.compressed);
        let found = tokio::task::spawn_blocking(move || {
            if compressed {
                cut::zstd_end(&file, start, end, object_bytes)
            } else {
                cut::plain_end(&file, start, end, object_bytes)
            }
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|found| found);
        found.map_err(|source| UploadError::Read {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Uploads the local bytes `[entry.done, end)` as one object and records it; returns the
    /// advanced entry.
    async fn put(
        &mut self,
        relative: &Path,
        path: &Path,
        file: &Arc<File>,
        entry: Entry,
        end: u64,
    ) -> Result<Entry, UploadError> {
        let name = relative.to_string_lossy();
        let object_key = key::key(
            &self.settings.prefix,
            &name,
            entry.base + entry.done,
            self.compressed,
        );
        let size = end - entry.done;
        let finished = if size <= PART_BYTES {
            let bytes = read(file, path, entry.done, size).await?;
            self.store.put(&object_key, bytes).await?;
            None
        } else {
            Some(
                self.put_parts(&object_key, path, file, entry.done, end)
                    .await?,
            )
        };
        let advanced = Entry {
            done: end,
            objects: entry.objects + 1,
            next_end: None,
            ..entry
        };
        self.backlog
            .uploaded(relative, advanced, finished.as_ref())?;
        Counters::add(&self.metrics.counters.uploaded_bytes, size);
        Counters::add(&self.metrics.counters.uploaded_objects, 1);
        tracing::debug!(key = %object_key, bytes = size, "uploaded");
        Ok(advanced)
    }

    /// A multipart upload of `[start, end)`, noted in the ledger before its first part so that
    /// a start after a crash aborts it; returns it, to be struck from the ledger with the
    /// record of the object.
    async fn put_parts(
        &self,
        object_key: &str,
        path: &Path,
        file: &Arc<File>,
        start: u64,
        end: u64,
    ) -> Result<OpenMultipart, UploadError> {
        let upload_id = self.store.begin_multipart(object_key).await?;
        let open = OpenMultipart {
            key: object_key.to_string(),
            upload_id,
        };
        self.backlog.multipart(&open, true)?;
        let result = async {
            let mut parts = Vec::new();
            let mut at = start;
            while at < end {
                let size = PART_BYTES.min(end - at);
                let bytes = read(file, path, at, size).await?;
                parts.push(
                    self.store
                        .put_part(object_key, &open.upload_id, parts.len(), bytes)
                        .await?,
                );
                at += size;
            }
            self.store
                .complete_multipart(object_key, &open.upload_id, parts)
                .await?;
            Ok::<(), UploadError>(())
        }
        .await;
        if let Err(err) = result {
            // Best effort: one left open is aborted at the next start.
            if self
                .store
                .abort_multipart(object_key, &open.upload_id)
                .await
                .is_ok()
            {
                let _ = self.backlog.multipart(&open, false);
            }
            return Err(err);
        }
        Ok(open)
    }
}

/// Reads `size` bytes of `file` at `at` on a blocking thread.
async fn read(file: &Arc<File>, path: &Path, at: u64, size: u64) -> Result<Vec<u8>, UploadError> {
    let file = file.clone();
    let read = tokio::task::spawn_blocking(move || {
        let mut bytes = vec![0; usize::try_from(size).map_err(std::io::Error::other)?];
        file.read_exact_at(&mut bytes, at)?;
        Ok::<_, std::io::Error>(bytes)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|read| read);
    read.map_err(|source| UploadError::Read {
        path: path.to_path_buf(),
        source,
    })
}
