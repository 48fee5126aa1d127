//! Container logs: kubelet's `/containerLogs` (query options, CRI log lines, tail, follow).

use kubeedge_kube_serve::time;

use super::*;

/// Which streams a log request wants (`stream`, kubelet's PodLogsQuerySplitStreams).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Streams {
    #[default]
    All,
    Stdout,
    Stderr,
}

/// The query of a log request, as kubelet decodes `PodLogOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct LogOptions {
    pub(super) follow: bool,
    pub(super) previous: bool,
    pub(super) timestamps: bool,
    pub(super) tail_lines: Option<u64>,
    pub(super) limit_bytes: Option<u64>,
    /// Lines older than this (Unix nanoseconds) are skipped: the later of `sinceSeconds` before
    /// now and `sinceTime`.
    pub(super) since: Option<i128>,
    pub(super) streams: Streams,
}

/// Apimachinery's query bool: absent is false; `false`/`0` (any case) is false; anything else,
/// even an empty value, is true.
pub(super) fn query_bool(v: Option<&str>) -> bool {
    v.is_some_and(|v| !v.eq_ignore_ascii_case("false") && v != "0")
}

pub(super) fn now_nanos() -> i128 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos()
}

impl LogOptions {
    /// Decodes the query (the first value of each key counts, unknown keys are ignored) and
    /// validates it as kubelet does: 400 when a value does not decode, 422 when it is invalid.
    pub(super) fn parse(query: &str, now: i128) -> Result<Self, HttpError> {
        let mut first: HashMap<String, String> = HashMap::new();
        for (k, v) in query_pairs(query) {
            first.entry(k).or_insert(v);
        }
        // `tail` is the old spelling of `tailLines`; `tail=all` means no limit.
        if let Some(tail) = first.get("tail").filter(|t| !t.is_empty()).cloned() {
            if tail == "all" {
                first.remove("tailLines");
            } else {
                first.insert("tailLines".into(), tail);
            }
        }
        let undecodable = || HttpError::bad_request(r#"{"message": "Unable to decode query."}"#);
        let invalid = || HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, r#"{"message": "Invalid request."}"#);
        let int = |key: &str| -> Result<Option<i64>, HttpError> {
            match first.get(key).map(String::as_str) {
                None | Some("") => Ok(None),
                Some(v) => v.parse::<i64>().map(Some).map_err(|_| undecodable()),
            }
        };
        let flag = |key: &str| query_bool(first.get(key).map(String::as_str));
        let tail_lines = int("tailLines")?;
        let limit_bytes = int("limitBytes")?;
        let since_seconds = int("sinceSeconds")?;
        let since_time = match first.get("sinceTime").map(String::as_str) {
            None | Some("") | Some("null") => None,
            Some(v) => Some(Timestamp::parse(v).ok_or_else(undecodable)?.unix_nanos),
        };
        let streams = match first.get("stream").map(String::as_str) {
            None | Some("") | Some("All") => Streams::All,
            Some("Stdout") => Streams::Stdout,
            Some("Stderr") => Streams::Stderr,
            Some(_) => return Err(invalid()),
        };
        // ValidatePodLogOptions.
        if tail_lines.is_some_and(|n| n < 0)
            || limit_bytes.is_some_and(|n| n < 1)
            || since_seconds.is_some_and(|n| n < 1)
            || (since_seconds.is_some() && since_time.is_some())
            || (streams != Streams::All && tail_lines.is_some())
        {
            return Err(invalid());
        }
        let since = since_seconds.map(|s| now - i128::from(s) * 1_000_000_000).into_iter().chain(since_time).max();
        Ok(Self {
            follow: flag("follow"),
            previous: flag("previous"),
            timestamps: flag("timestamps"),
            tail_lines: tail_lines.and_then(|n| u64::try_from(n).ok()),
            limit_bytes: limit_bytes.and_then(|n| u64::try_from(n).ok()),
            since,
            streams,
        })
    }
}

pub(super) async fn container_logs(shared: &Shared, target: &Target, query: &str) -> Result<Response<Body>, HttpError> {
    let opts = LogOptions::parse(query, now_nanos())?;
    let runs = container_runs(&shared.cri, target).await?;
    let run = if opts.previous { runs.len().checked_sub(2).and_then(|i| runs.get(i)) } else { runs.last() };
    let Some(run) = run else {
        return Err(HttpError::bad_request(format!(
            "previous terminated container {:?} in pod {:?} not found",
            target.container, target.pod
        )));
    };
    // From here on, failures are 400s, as kubelet answers errors of GetContainerLogs.
    let status = shared.cri.container_status(&run.id).await.map_err(|e| HttpError::bad_request(e.to_string()))?;
    if status.log_path.is_empty() {
        return Err(HttpError::bad_request(format!(
            "container {:?} in pod {:?} has no log file",
            target.container, target.pod
        )));
    }
    let follow = opts.follow;
    let reader =
        LogReader::open(PathBuf::from(&status.log_path), opts, shared.cri.clone(), run.id.clone(), shared.stop.clone())
            .await
            .map_err(|e| HttpError::bad_request(format!("failed to open log file {:?}: {e}", status.log_path)))?;
    debug!(container.id = %run.id, follow, "Streaming container log.");
    let chunks = futures::stream::unfold(reader, |mut r| async move {
        r.next_chunk().await.map(|chunk| (Ok::<_, std::io::Error>(Frame::data(chunk)), r))
    });
    let mut resp = Response::new(StreamBody::new(chunks).boxed_unsync());
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}

/// A CRI log timestamp (RFC 3339 with optional fraction and a `Z` or `±hh:mm` zone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Timestamp {
    pub(super) unix_nanos: i128,
    /// Kubelet's output form: nine fraction digits, the zone kept (`Z` for UTC).
    pub(super) fixed: String,
}

impl Timestamp {
    pub(super) fn parse(s: &str) -> Option<Self> {
        let t = time::parse(s)?;
        Some(Self { unix_nanos: t.unix_timestamp_nanos(), fixed: time::format_nano_fixed(t) })
    }
}

/// The stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LogStream {
    Stdout,
    Stderr,
}

/// One line of a CRI log file: `<timestamp> <stream> <tag>[:<more tags>] <content>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record<'a> {
    pub(super) timestamp: Timestamp,
    pub(super) stream: LogStream,
    /// The content, with its newline for a full (`F`) line, without one for a partial (`P`).
    pub(super) content: &'a [u8],
}

pub(super) fn parse_cri_line(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let timestamp = Timestamp::parse(std::str::from_utf8(parts.next()?).ok()?)?;
    let stream = match parts.next()? {
        b"stdout" => LogStream::Stdout,
        b"stderr" => LogStream::Stderr,
        _ => return None,
    };
    let tags = parts.next()?;
    let mut content = parts.next()?;
    let partial = tags.split(|b| *b == b':').next() == Some(&b"P"[..]);
    if partial {
        content = content.strip_suffix(b"\n").unwrap_or(content);
    }
    Some(Record { timestamp, stream, content })
}

/// Turns CRI log lines into the response bytes as kubelet's log writer does: filters by time
/// and stream, prefixes timestamps at the start of each logical line, and counts lines
/// (`tailLines` without `follow`) and bytes (`limitBytes`).
#[derive(Debug)]
pub(super) struct LineWriter {
    pub(super) timestamps: bool,
    pub(super) since: Option<i128>,
    pub(super) streams: Streams,
    pub(super) remaining_bytes: u64,
    pub(super) remaining_lines: Option<u64>,
    pub(super) at_line_start: bool,
}

impl LineWriter {
    pub(super) fn new(opts: &LogOptions) -> Self {
        Self {
            timestamps: opts.timestamps,
            since: opts.since,
            streams: opts.streams,
            remaining_bytes: opts.limit_bytes.unwrap_or(u64::MAX),
            // With follow, tailLines only picks the starting point.
            remaining_lines: if opts.follow { None } else { opts.tail_lines },
            at_line_start: true,
        }
    }

    /// Whether more output may follow.
    pub(super) fn open(&self) -> bool {
        self.remaining_bytes > 0 && self.remaining_lines != Some(0)
    }

    /// Writes one file line (with its newline, if it has one) to `out`; false once the limits
    /// are reached.
    pub(super) fn write(&mut self, line: &[u8], out: &mut Vec<u8>) -> bool {
        if !self.open() {
            return false;
        }
        let Some(rec) = parse_cri_line(line) else {
            debug!(line = %String::from_utf8_lossy(line), "Skipped a log line not in the CRI format.");
            return true;
        };
        let prefix = self.timestamps && self.at_line_start;
        self.at_line_start = rec.content.last().is_none_or(|b| *b == b'\n');
        if let Some(n) = self.remaining_lines.as_mut() {
            *n -= 1;
        }
        let wanted = matches!(
            (self.streams, rec.stream),
            (Streams::All, _) | (Streams::Stdout, LogStream::Stdout) | (Streams::Stderr, LogStream::Stderr)
        );
        if self.since.is_some_and(|since| rec.timestamp.unix_nanos < since) || !wanted {
            return self.open();
        }
        let start = out.len();
        if prefix {
            out.extend_from_slice(rec.timestamp.fixed.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(rec.content);
        let written = u64::try_from(out.len() - start).unwrap_or(u64::MAX);
        if written > self.remaining_bytes {
            out.truncate(start + usize::try_from(self.remaining_bytes).unwrap_or(usize::MAX));
            self.remaining_bytes = 0;
        } else {
            self.remaining_bytes -= written;
        }
        self.open()
    }
}

/// Where the last `lines` lines of a file start (kubelet's `findTailLineStartIndex`): just
/// after the `lines + 1`-th newline from the end, or 0.
pub(super) fn tail_start<F: Read + Seek>(f: &mut F, lines: u64) -> std::io::Result<u64> {
    let mut end = f.seek(SeekFrom::End(0))?;
    let mut seen = 0u64;
    let mut buf = vec![0u8; TAIL_BLOCK];
    while end > 0 {
        let start = end.saturating_sub(TAIL_BLOCK as u64);
        let len = usize::try_from(end - start).unwrap_or(TAIL_BLOCK);
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf[..len])?;
        for (i, b) in buf[..len].iter().enumerate().rev() {
            if *b == b'\n' {
                seen += 1;
                if seen == lines + 1 {
                    return Ok(start + i as u64 + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

/// A file's identity, to notice rotation (the path now names another file).
pub(super) fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

/// Opens the log (symlinks resolved, as kubelet does) positioned at the `tail` start; blocking,
/// for `spawn_blocking`.
pub(super) fn open_at_tail(
    path: &std::path::Path,
    tail: Option<u64>,
) -> std::io::Result<(std::fs::File, (u64, u64), u64)> {
    let path = std::fs::canonicalize(path)?;
    let mut f = std::fs::File::open(path)?;
    let id = identity(&f.metadata()?);
    let offset = match tail {
        Some(n) => tail_start(&mut f, n)?,
        None => 0,
    };
    f.seek(SeekFrom::Start(offset))?;
    Ok((f, id, offset))
}

/// Reads a container's log file as response chunks, following it if asked.
pub(super) struct LogReader {
    pub(super) path: PathBuf,
    pub(super) file: tokio::fs::File,
    pub(super) id: (u64, u64),
    pub(super) offset: u64,
    /// Read bytes not yet ending in a newline.
    pub(super) pending: Vec<u8>,
    pub(super) writer: LineWriter,
    pub(super) follow: bool,
    pub(super) cri: Cri,
    pub(super) container_id: String,
    /// The container was seen not running: drain to the end, then finish.
    pub(super) exited: bool,
    pub(super) last_running_check: Option<Instant>,
    pub(super) done: bool,
    pub(super) stop: CancellationToken,
}

impl LogReader {
    pub(super) async fn open(
        path: PathBuf,
        opts: LogOptions,
        cri: Cri,
        container_id: String,
        stop: CancellationToken,
    ) -> std::io::Result<Self> {
        let (p, tail) = (path.clone(), opts.tail_lines);
        let (file, id, offset) = tokio::task::spawn_blocking(move || open_at_tail(&p, tail))
            .await
            .map_err(|e| std::io::Error::other(format!("log open task: {e}")))??;
        Ok(Self {
            path,
            file: tokio::fs::File::from_std(file),
            id,
            offset,
            pending: Vec::new(),
            writer: LineWriter::new(&opts),
            follow: opts.follow,
            cri,
            container_id,
            exited: false,
            last_running_check: None,
            done: false,
            stop,
        })
    }

    /// The next non-empty chunk of output, or `None` at the end (limits reached, end of file
    /// without `follow`, container gone and file drained, read error, or shutdown).
    pub(super) async fn next_chunk(&mut self) -> Option<Bytes> {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            if self.done || self.stop.is_cancelled() {
                return None;
            }
            let n = match self.file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    warn!(path = %self.path.display(), error = %e, "Reading a container log failed.");
                    self.done = true;
                    return None;
                }
            };
            if n > 0 {
                self.offset += n as u64;
                self.pending.extend_from_slice(&buf[..n]);
                let out = self.drain(false);
                if !out.is_empty() {
                    return Some(Bytes::from(out));
                }
                continue;
            }
            // End of file.
            if !self.follow {
                self.done = true;
                let out = self.drain(true);
                return (!out.is_empty()).then(|| Bytes::from(out));
            }
            if self.exited {
                self.done = true;
                return None;
            }
            if self.reopen_if_rotated().await {
                let out = self.drain(false);
                if !out.is_empty() {
                    return Some(Bytes::from(out));
                }
                continue;
            }
            if self.last_running_check.is_none_or(|t| t.elapsed() >= RUNNING_CHECK) {
                self.last_running_check = Some(Instant::now());
                if !self.running().await {
                    // One more pass drains what was written before it stopped.
                    self.exited = true;
                    continue;
                }
            }
            tokio::select! {
                _ = self.stop.cancelled() => return None,
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
            }
        }
    }

    /// Writes the complete lines of `pending` (and, at the very end, an incomplete last one).
    pub(super) fn drain(&mut self, flush_incomplete: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(nl) = self.pending[start..].iter().position(|b| *b == b'\n') {
            let end = start + nl + 1;
            let more = self.writer.write(&self.pending[start..end], &mut out);
            start = end;
            if !more {
                self.done = true;
                break;
            }
        }
        self.pending.drain(..start);
        if flush_incomplete && !self.done && !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.writer.write(&line, &mut out);
        }
        if self.pending.len() > MAX_LINE {
            warn!(path = %self.path.display(), "Dropped an overlong line of a container log.");
            self.pending.clear();
        }
        out
    }

    /// At end of file while following: when the path now names a new file (rotated, as
    /// kubelet's log manager does: rename, then CRI `ReopenContainerLog`), the rest of the old
    /// file is read and then the new one from its start; when the file shrank (truncated in
    /// place) reading restarts at 0. True when reading should go on at once (`pending` may
    /// have grown).
    pub(super) async fn reopen_if_rotated(&mut self) -> bool {
        let Ok(meta) = tokio::fs::metadata(&self.path).await else {
            // Renamed away and not yet recreated: keep waiting.
            return false;
        };
        if identity(&meta) != self.id {
            // Lines the runtime wrote to the old file before it switched come first.
            let mut rest = Vec::new();
            if let Ok(n) = (&mut self.file).take(MAX_LINE as u64).read_to_end(&mut rest).await
                && n > 0
            {
                self.offset += n as u64;
                self.pending.extend_from_slice(&rest);
                return true;
            }
            match tokio::fs::File::open(&self.path).await {
                Ok(f) => {
                    debug!(path = %self.path.display(), "Container log rotated; following the new file.");
                    self.file = f;
                    self.id = identity(&meta);
                    self.offset = 0;
                    self.pending.clear();
                    return true;
                }
                Err(_) => return false,
            }
        }
        if meta.len() < self.offset && self.file.seek(SeekFrom::Start(0)).await.is_ok() {
            debug!(path = %self.path.display(), "Container log truncated; reading it from the start.");
            self.offset = 0;
            self.pending.clear();
            return true;
        }
        false
    }

    /// Whether the container still runs; an unreachable runtime counts as running (as in
    /// kubelet: containers outlive their runtime's API).
    pub(super) async fn running(&self) -> bool {
        match self.cri.container_status(&self.container_id).await {
            Ok(st) => ContainerState::try_from(st.state) == Ok(ContainerState::ContainerRunning),
            Err(e) if e.code().map(i32::from) == Some(GRPC_UNAVAILABLE) => true,
            Err(_) => false,
        }
    }
}
