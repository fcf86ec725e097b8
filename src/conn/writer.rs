//! The shard's writer: one task per shard writes every stream session that has output, in
//! passes over the list of dirty sessions, one non-blocking `sendmsg` per session with
//! everything queued for it, handed to the kernel 64 sessions at a time through an io_uring
//! (`socket::Batch`; `runtime.batched_sends`), so the clients a batch reaches are woken once
//! per batch rather than once per send. Connections do not get a task wake-up per event: a
//! stream has no task at all (`conn/stream.rs`).
//!
//! Idle, a pass starts as soon as one session has output, so an event goes out at once. Busy,
//! the writer steps aside every `SLICE` of a pass so the runtime polls its sockets and applies
//! what arrived (a publish, a fetch's batch); the sessions later in the pass (and all in the
//! next) then find several events queued, and one write carries them all, so the cost per
//! delivery falls as load rises. A full socket never blocks the pass: the session is marked
//! stalled and the shard's epoll set reports when it has room again.

use super::socket::{send_now, Batch, Parts, SendNow};
use crate::proto::{http1, ws, Transport};
use crate::runtime::shard::Shard;
use crate::session::{CloseReason, Frame, Output, Sent, Slot};
use futures_lite::future;
use std::rc::Rc;
use std::time::Instant;

/// Sessions written between two looks at the clock.
const CHECK_EVERY: usize = 32;
/// Up to this many bytes a write is copied into one buffer and sent as one iovec instead of
/// three (chunk line, event, CRLF): copying a 250 B event is a few dozen instructions, and
/// kafka-latency measured 1-3% less server CPU per delivery (within noise, never more).
const COPY_MAX: usize = 2048;
/// How long the writer runs before it steps aside for the reactor: the runtime polls its
/// sockets only between tasks, so without this a pass over thousands of sockets would keep a
/// publish (or a fetch) waiting until it ends, and nothing would pile up to be coalesced.
const SLICE: std::time::Duration = std::time::Duration::from_millis(1);

/// A pass with fewer sessions than this sends with `sendmsg`: one send through the ring costs
/// a little more than the syscall (targeted-10k, one event for one user at a time: 84-90.5 µs
/// per event against 82.5-86.5), and batching pays only when sends follow each other.
const MIN_BATCH: usize = 4;

pub async fn run(shard: Rc<Shard>) {
    let mut batch: Vec<Slot> = Vec::new();
    let mut frames: Vec<Frame> = Vec::new();
    let mut scratch: Vec<u8> = Vec::new();
    let mut tail: Vec<u8> = Vec::new();
    let mut ring = batch_sends(&shard);
    loop {
        future::poll_fn(|cx| shard.sessions.borrow_mut().poll_dirty(cx, &mut batch)).await;
        shard.writing(true);
        let started = Instant::now();
        let mut slice = started;
        let batched = batch.len() >= MIN_BATCH;
        for (n, &slot) in batch.iter().enumerate() {
            match &mut ring {
                // TLS writes are sealed one by one anyway: they keep their own `sendmsg`.
                Some(r) if batched && !shard.sessions.borrow().is_tls(slot) => {
                    queue_one(&shard, slot, r);
                    if r.is_full() {
                        flush(&shard, &mut ring);
                    }
                }
                _ => write_one(&shard, slot, &mut frames, &mut scratch, &mut tail),
            }
            if n % CHECK_EVERY == CHECK_EVERY - 1 && slice.elapsed() >= SLICE {
                flush(&shard, &mut ring);
                // The runtime polls its sockets and runs what came in (a publish, a fetch's
                // batch) before the pass goes on.
                crate::runtime::rt::yield_now().await;
                slice = Instant::now();
            }
        }
        flush(&shard, &mut ring);
        let m = &shard.metrics;
        m.writer_passes.inc();
        m.writer_pass_us.add(started.elapsed().as_micros() as u64);
        batch.clear();
        if shard.sessions.borrow().nothing_dirty() {
            shard.writing(false);
        }
        // A burst's lists are not kept by a quiet shard.
        if batch.capacity() > 4096 {
            batch = Vec::new();
        }
        if frames.capacity() > 1024 {
            frames = Vec::new();
        }
    }
}

/// The bytes that end a stream: SSE's last chunk, WebSocket's close frame.
fn closing_bytes(t: Transport, why: CloseReason) -> Vec<u8> {
    match (t, why) {
        (Transport::Ws, CloseReason::Killed) => ws::close_frame(1000, "Session killed."),
        (Transport::Ws, _) => ws::close_frame(1001, "Server shutting down."),
        _ => http1::LAST_CHUNK.to_vec(),
    }
}

/// One write's bytes, appended to the empty `head` and `tail` around `frames`: `lead` (what a
/// full socket left, a response head), then SSE's chunk line; the chunk's CRLF and any closing
/// bytes in `tail`. A small write (or any, with `copy_all`) is copied into `head` whole, to
/// go out as one iovec.
fn lay_out(
    lead: &[u8],
    transport: Transport,
    closing: Option<CloseReason>,
    copy_all: bool,
    head: &mut Vec<u8>,
    frames: &mut Vec<Frame>,
    tail: &mut Vec<u8>,
) {
    head.extend_from_slice(lead);
    let len: usize = frames.iter().map(|f| f.len()).sum();
    // SSE frames travel in one chunk: its size line after the lead, its CRLF in the tail.
    if transport == Transport::Sse && len > 0 {
        http1::chunk_line(head, len);
        tail.extend_from_slice(b"\r\n");
    }
    if let Some(why) = closing {
        tail.extend_from_slice(&closing_bytes(transport, why));
    }
    if copy_all || head.len() + len + tail.len() <= COPY_MAX {
        for f in frames.iter() {
            head.extend_from_slice(f);
        }
        head.extend_from_slice(tail);
        frames.clear();
        tail.clear();
    }
}

/// `write_one` for a plain (not TLS) stream, queued in the batch instead of sent.
fn queue_one(shard: &Shard, slot: Slot, batch: &mut Batch) {
    let mut sessions = shard.sessions.borrow_mut();
    let Some(p) = batch.next() else { return };
    let Some(Output {
        fd,
        token,
        transport,
        lead,
        closing,
    }) = sessions.take_output(slot, &mut p.frames)
    else {
        return;
    };
    // A lead (a response head, what a full socket left) is taken over, not copied.
    if !lead.is_empty() {
        p.lead = lead;
    }
    lay_out(
        &[],
        transport,
        closing,
        false,
        &mut p.lead,
        &mut p.frames,
        &mut p.tail,
    );
    p.slot = slot;
    p.token = token;
    p.fd = fd;
    p.closing = closing.is_some();
    shard.metrics.stream_writes.inc();
    batch.push();
}

/// The shard's io_uring for batched sends, unless turned off or not to be had (then each
/// write is its own `sendmsg`).
fn batch_sends(shard: &Shard) -> Option<Batch> {
    if !shard.cfg().tuning.runtime.batched_sends {
        return None;
    }
    let batch = Batch::new()
        .map_err(|e| {
            tracing::info!(shard = shard.id, error = %e,
                "io_uring unavailable for batched sends; each write is its own sendmsg");
        })
        .ok()?;
    shard.metrics.batched_writer.inc();
    Some(batch)
}

/// Sends what `queue_one` queued and books each outcome; a ring that failed is given up.
fn flush(shard: &Shard, ring: &mut Option<Batch>) {
    let Some(batch) = ring else { return };
    let mut sessions = shard.sessions.borrow_mut();
    let ok = batch.flush(|p, outcome| {
        p.frames.clear();
        book(
            shard,
            &mut sessions,
            p.slot,
            &p.token,
            p.fd,
            p.closing,
            outcome,
        );
    });
    if !ok {
        tracing::warn!(
            shard = shard.id,
            "io_uring failed; each write is its own sendmsg from now on"
        );
        *ring = None;
        shard.metrics.batched_writer.sub(1);
    }
}

/// Tells the session how its write went; a full socket is watched for room.
fn book(
    shard: &Shard,
    sessions: &mut crate::session::Sessions,
    slot: Slot,
    token: &crate::proto::token::Token,
    fd: std::os::fd::RawFd,
    closing: bool,
    outcome: SendNow,
) {
    let sent = match outcome {
        SendNow::All => Sent::All,
        SendNow::Partly(rest) => Sent::Partly(rest),
        SendNow::Failed => Sent::Failed,
    };
    if sessions.wrote(slot, token, sent, closing) {
        shard.streams.wait_for_room(fd, token);
    }
}

fn write_one(
    shard: &Shard,
    slot: Slot,
    frames: &mut Vec<Frame>,
    scratch: &mut Vec<u8>,
    tail: &mut Vec<u8>,
) {
    let mut sessions = shard.sessions.borrow_mut();
    let Some(Output {
        fd,
        token,
        transport,
        lead,
        closing,
    }) = sessions.take_output(slot, frames)
    else {
        return;
    };
    let tls = sessions.is_tls(slot);
    scratch.clear();
    tail.clear();
    // Over TLS everything new is sealed into one run of records after what a full socket
    // left (already sealed): frames are copied, as encryption copies them anyway.
    let kept: &[u8] = if tls { &[] } else { &lead };
    lay_out(kept, transport, closing, tls, scratch, frames, tail);
    let mut wire = Vec::new();
    if tls {
        wire = lead;
        sessions.seal(slot, scratch, &mut wire);
        scratch.clear();
    }
    let parts = Parts {
        lead: if tls { &wire } else { scratch },
        frames,
        tail,
    };
    // The socket write is a plain non-blocking syscall: no await while the registry is held.
    shard.metrics.stream_writes.inc();
    let outcome = send_now(fd, &parts);
    frames.clear();
    book(
        shard,
        &mut sessions,
        slot,
        &token,
        fd,
        closing.is_some(),
        outcome,
    );
}
