//! The request side of one connection as a state machine: heads, bodies, chunks, trailers,
//! request after request, however the bytes are split.
//!
//! A unit that must be seen whole (a head, a chunk-size line, a trailer section) is parsed
//! straight from the input when it is all there, the common case, and only otherwise
//! gathered in `pending`. Line endings are checked as the bytes arrive, so a bare CR or LF is
//! refused at once instead of leaving the rewriter waiting for a CRLF that never comes.

use crate::{
    Error, Unit, chunked,
    head::{self, Body, Framing},
    text::hex,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A request head, or empty lines before one.
    Head,
    /// This many more bytes of a `Content-Length` body.
    Body(u64),
    ChunkLine,
    /// This many more bytes of a chunk's data.
    ChunkData(u64),
    /// The CRLF after a chunk's data; `true` once its CR came.
    ChunkDataEnd(bool),
    /// The trailer section after the last chunk.
    Trailers,
    /// After a request that may switch protocols: the next bytes decide.
    MaySwitch,
    /// Switched: the rest passes unread.
    PassThrough,
}

/// Where a unit that must be seen whole was found.
enum Found {
    /// The first this many bytes of the input.
    Input(usize),
    /// All of `pending`.
    Pending,
}

/// Rewrites the request side of one connection (see the crate's documentation). After an
/// error the connection is to be reset: nothing more should be fed.
pub struct RequestRewriter {
    /// The field line added to each request (with its CRLF), or nothing.
    added: Box<[u8]>,
    state: State,
    /// After the current request: whether the connection may switch protocols.
    may_switch: bool,
    /// A unit not complete yet (or the byte that may begin a request after a switch).
    pending: Vec<u8>,
    /// How far `pending` has been checked for its end.
    scanned: usize,
}

impl RequestRewriter {
    /// For an unauthenticated caller: its XFCC is removed, none is added.
    pub fn stripping() -> Self {
        Self::with_added(Box::default())
    }

    /// Adds `X-Forwarded-Client-Cert: By=<our_identity>;URI=<caller>` to every request. Both
    /// are SPIFFE IDs (no whitespace, no control characters).
    pub fn new(our_identity: &str, caller: &str) -> Self {
        let line = format!("X-Forwarded-Client-Cert: By={our_identity};URI={caller}\r\n");
        debug_assert!(
            !line[..line.len() - 2].bytes().any(|b| b.is_ascii_control()),
            "{line:?}"
        );
        Self::with_added(line.into_bytes().into_boxed_slice())
    }

    fn with_added(added: Box<[u8]>) -> Self {
        Self {
            added,
            state: State::Head,
            may_switch: false,
            pending: Vec::new(),
            scanned: 0,
        }
    }

    /// Takes what the caller sent next and appends what the workload should get to `out`.
    /// On an error, what was appended before it is complete (whole heads, whole chunk lines,
    /// body bytes); the call sites forward none of it.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        while !input.is_empty() {
            match self.state {
                State::PassThrough => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                State::Body(left) | State::ChunkData(left) => {
                    let n = usize::try_from(left).map_or(input.len(), |l| l.min(input.len()));
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    let left = left - n as u64;
                    self.state = match (self.state, left) {
                        (State::Body(_), 0) => self.end_of_message(),
                        (State::Body(_), _) => State::Body(left),
                        (_, 0) => State::ChunkDataEnd(false),
                        _ => State::ChunkData(left),
                    };
                }
                State::ChunkDataEnd(cr) => {
                    self.state = match (cr, input[0]) {
                        (false, b'\r') => State::ChunkDataEnd(true),
                        (true, b'\n') => {
                            out.extend_from_slice(b"\r\n");
                            State::ChunkLine
                        }
                        _ => return Err(Error::ChunkDataEnd),
                    };
                    input = &input[1..];
                }
                State::Head => {
                    if !self.skip_empty_lines(&mut input)? {
                        return Ok(());
                    }
                    let rewritten = self.next_unit(&mut input, Unit::Head, |head, added| {
                        head::rewrite(head, added, out)
                    })?;
                    let Some(framing) = rewritten else {
                        return Ok(());
                    };
                    self.state = self.start(framing);
                }
                State::ChunkLine => {
                    let size = self.next_unit(&mut input, Unit::ChunkLine, |line, _| {
                        chunked::size(&line[..line.len() - 2])
                    })?;
                    let Some(size) = size else {
                        return Ok(());
                    };
                    hex(size, out);
                    out.extend_from_slice(b"\r\n");
                    self.state = match size {
                        0 => State::Trailers,
                        n => State::ChunkData(n),
                    };
                }
                State::Trailers => {
                    let rewritten = self.next_unit(&mut input, Unit::Trailers, |trailers, _| {
                        chunked::rewrite_trailers(trailers, out)
                    })?;
                    if rewritten.is_none() {
                        return Ok(());
                    }
                    self.state = self.end_of_message();
                }
                State::MaySwitch => {
                    // At most one byte waits in `pending`.
                    let first = self.pending.first().copied();
                    let (b0, b1) = match first {
                        Some(b0) => (b0, input.first().copied()),
                        None => (input[0], input.get(1).copied()),
                    };
                    match could_be_http(b0, b1) {
                        Some(false) => {
                            out.append(&mut self.pending);
                            self.release();
                            self.state = State::PassThrough;
                        }
                        // Parsed as the next head, with the byte that waited.
                        Some(true) => self.state = State::Head,
                        None => {
                            self.pending.push(input[0]);
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The state after a head.
    fn start(&mut self, framing: Framing) -> State {
        self.may_switch = framing.may_switch;
        match framing.body {
            Body::None | Body::Length(0) => self.end_of_message(),
            Body::Length(n) => State::Body(n),
            Body::Chunked => State::ChunkLine,
        }
    }

    fn end_of_message(&self) -> State {
        if self.may_switch {
            State::MaySwitch
        } else {
            State::Head
        }
    }

    /// Drops the empty lines that may come before a request line (RFC 9112 §2.2 asks a
    /// server to ignore at least one; any number are, without being kept). Returns whether
    /// input is left for the head; a CR that may begin one more empty line waits in
    /// `pending`.
    fn skip_empty_lines(&mut self, input: &mut &[u8]) -> Result<bool, Error> {
        if !(self.pending.is_empty() || self.pending == b"\r") {
            return Ok(true);
        }
        let mut cr = !self.pending.is_empty();
        loop {
            match (cr, *input) {
                (true, [b'\n', rest @ ..]) => (cr, *input) = (false, rest),
                (true, []) => return Ok(false),
                (true, _) => return Err(Error::BareCr(Unit::Head)),
                (false, [b'\r', rest @ ..]) => {
                    (cr, *input) = (true, rest);
                    if rest.is_empty() {
                        self.pending.clear();
                        self.pending.push(b'\r');
                        return Ok(false);
                    }
                }
                (false, _) => {
                    self.pending.clear();
                    return Ok(!input.is_empty());
                }
            }
        }
    }

    /// Finds the end of the unit that starts at `pending` followed by `input`. `None`: all
    /// of the input went to `pending`, more is needed. Otherwise the input is left after the
    /// unit if the unit was in `pending`, and untouched if it was in the input.
    fn gather(&mut self, input: &mut &[u8], unit: Unit) -> Result<Option<Found>, Error> {
        let max = unit.max();
        if self.pending.is_empty() {
            let window = &input[..input.len().min(max)];
            return match scan(window, 0, unit)? {
                Scan::End(end) => Ok(Some(Found::Input(end))),
                Scan::More(_) if window.len() == max => Err(Error::TooLong(unit)),
                Scan::More(from) => {
                    self.pending.extend_from_slice(input);
                    self.scanned = from;
                    *input = &[];
                    Ok(None)
                }
            };
        }
        let take = input.len().min(max - self.pending.len());
        self.pending.extend_from_slice(&input[..take]);
        match scan(&self.pending, self.scanned, unit)? {
            Scan::End(end) => {
                *input = &input[take - (self.pending.len() - end)..];
                self.pending.truncate(end);
                Ok(Some(Found::Pending))
            }
            Scan::More(_) if self.pending.len() == max => Err(Error::TooLong(unit)),
            Scan::More(from) => {
                self.scanned = from;
                *input = &input[take..];
                Ok(None)
            }
        }
    }

    /// Empties `pending`, keeping a small buffer for the next time.
    /// Gathers the next `unit` and hands it whole to `use_unit`, with the line this rewriter
    /// adds (straight from the input when the unit is all there, else from what was kept
    /// of it); `None` while it is incomplete.
    fn next_unit<T>(
        &mut self,
        input: &mut &[u8],
        unit: Unit,
        use_unit: impl FnOnce(&[u8], &[u8]) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        match self.gather(input, unit)? {
            None => Ok(None),
            Some(Found::Input(end)) => {
                let whole: &[u8] = input;
                let (bytes, rest) = whole.split_at(end);
                *input = rest;
                use_unit(bytes, &self.added).map(Some)
            }
            Some(Found::Pending) => {
                let used = use_unit(&self.pending, &self.added);
                self.release();
                used.map(Some)
            }
        }
    }

    fn release(&mut self) {
        if self.pending.capacity() > 4096 {
            self.pending = Vec::new();
        } else {
            self.pending.clear();
        }
        self.scanned = 0;
    }
}

enum Scan {
    /// The unit ends here (after its last CRLF).
    End(usize),
    /// Not yet; scanning goes on from here.
    More(usize),
}

/// Looks for the end of a unit in `buf` from `from` on: a chunk-size line ends at its CRLF,
/// a head or trailer section at an empty line (a section that starts with one is empty).
/// Every LF must follow a CR and every CR precede an LF.
fn scan(buf: &[u8], from: usize, unit: Unit) -> Result<Scan, Error> {
    let mut i = from;
    loop {
        let Some(at) = buf[i..].iter().position(|b| *b == b'\r' || *b == b'\n') else {
            return Ok(Scan::More(buf.len()));
        };
        let at = i + at;
        if buf[at] == b'\n' {
            return Err(Error::BareLf(unit));
        }
        match buf.get(at + 1) {
            None => return Ok(Scan::More(at)),
            Some(b'\n') => {}
            Some(_) => return Err(Error::BareCr(unit)),
        }
        if unit == Unit::ChunkLine || at == 0 || buf[..at].ends_with(b"\r\n") {
            return Ok(Scan::End(at + 2));
        }
        i = at + 2;
    }
}

/// After a request that may switch protocols, whether the next bytes could begin an HTTP/1
/// request for some parser (`None`: the second byte is needed). If they could, they are
/// parsed as one (and refused if they are no valid request): the workload may have ignored
/// the upgrade, and would take them as a request the rewriter did not see. If they cannot,
/// the connection has switched and the rest passes unread.
///
/// An HTTP/1 request begins with ASCII text (or whitespace, for lenient parsers) and its
/// second byte is ASCII too. A WebSocket frame from a client cannot: its first byte is 0x80
/// or more with FIN set, or a data opcode 0x00 to 0x02 without (control frames need FIN),
/// unless an RSV bit makes it text; and its second byte always has the mask bit (0x80) every
/// client frame must set. A TLS record begins with 0x16. An HTTP/2 preface is ASCII and is
/// refused: after an h2c upgrade the rewriter could not rewrite HTTP/2 requests.
fn could_be_http(b0: u8, b1: Option<u8>) -> Option<bool> {
    if !matches!(b0, b'\t'..=b'\r' | b' '..=b'~') {
        return Some(false);
    }
    b1.map(|b1| b1 < 0x80)
}
