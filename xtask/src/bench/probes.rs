//! Small load generators the benchmark runs inside test hosts (as hidden `cargo xtask`
//! subcommands), for what iperf3 and wrk do not measure.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::{Arc, RwLock},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

/// Median time of `count` sequential `connect()` calls, in microseconds. `target` is an
/// address, or `loopback` for a listener of the probe's own on 127.0.0.1 (a connect that
/// no hook touches, to compare with).
pub fn connect_latency(target: &str, count: usize) -> Result<()> {
    let target: SocketAddr = if target == "loopback" {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        thread::spawn(move || {
            for connection in listener.incoming() {
                drop(connection);
            }
        });
        addr
    } else {
        target
            .parse()
            .with_context(|| format!("{target:?} is not ip:port or loopback"))?
    };
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let stream = TcpStream::connect(target).with_context(|| format!("connect {target}"))?;
        samples.push(started.elapsed());
        drop(stream);
    }
    samples.sort();
    println!("median_us={:.2}", quantile_us(&samples, 0.5));
    Ok(())
}

/// New connections per second with `connections` concurrent loops of: connect, send one
/// HTTP/1.1 request with `Connection: close`, read the first byte (the latency sample:
/// connect to first byte), read to EOF.
pub fn connect_to_first_byte(target: SocketAddr, connections: usize, seconds: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            thread::spawn(move || {
                let mut samples = Vec::new();
                let mut errors = 0usize;
                while Instant::now() < deadline {
                    let started = Instant::now();
                    match one_request(target) {
                        Ok(first_byte) => samples.push(first_byte.duration_since(started)),
                        Err(_) => errors += 1,
                    }
                }
                (samples, errors)
            })
        })
        .collect();
    let mut samples = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (mut s, e) = worker.join().expect("worker thread");
        samples.append(&mut s);
        errors += e;
    }
    samples.sort();
    println!(
        "rate={:.1} p50_us={:.1} p99_us={:.1} errors={errors}",
        samples.len() as f64 / seconds as f64,
        quantile_us(&samples, 0.5),
        quantile_us(&samples, 0.99)
    );
    Ok(())
}

/// `count` calls one after another (connect, one HTTP/1.1 request with `Connection: close`,
/// first byte): the first is what a caller of a daemon that just started waits (its pool
/// still has to dial and handshake), the rest what a caller of a warm daemon waits.
pub fn first_calls(target: SocketAddr, count: usize) -> Result<()> {
    anyhow::ensure!(
        count >= 2,
        "first calls: need at least 2 calls, got {count}"
    );
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let started = Instant::now();
        let first_byte = one_request(target).with_context(|| format!("call {i} to {target}"))?;
        samples.push(first_byte.duration_since(started));
    }
    let first = samples[0];
    let mut warm = samples[1..].to_vec();
    warm.sort();
    println!(
        "first_us={:.1} warm_p50_us={:.1}",
        first.as_secs_f64() * 1e6,
        quantile_us(&warm, 0.5)
    );
    Ok(())
}

/// `count` connections opened at once: as many threads, released together, each connecting
/// and sending one HTTP/1.1 request with `Connection: close`. Each sample is the time from
/// the release to that connection's first byte: every connection was asked for at that
/// instant, so what it waited for (the load generator's own threads to run, a queue in a
/// proxy) counts the same way on every path. A connection that failed is counted in
/// `errors`, not sampled.
pub fn burst(target: SocketAddr, count: usize) -> Result<()> {
    // Held while the threads start; each waits to read it. Dropping it releases them all,
    // after the release instant is taken, so no sample can start before it.
    let gate = Arc::new(RwLock::new(()));
    let closed = gate.write().expect("burst gate");
    let workers = (0..count)
        .map(|_| {
            let gate = gate.clone();
            thread::Builder::new()
                // Thousands of threads that each hold a socket and a few buffers.
                .stack_size(64 * 1024)
                .spawn(move || {
                    drop(gate.read().expect("burst gate"));
                    one_request(target)
                })
        })
        .collect::<std::io::Result<Vec<_>>>()
        .context("start the burst's threads")?;
    // Let every thread reach the gate.
    thread::sleep(Duration::from_millis(200));
    let released = Instant::now();
    drop(closed);
    let mut samples = Vec::with_capacity(count);
    let mut errors = 0usize;
    for worker in workers {
        match worker.join().expect("burst thread") {
            Ok(first_byte) => samples.push(first_byte.duration_since(released)),
            Err(_) => errors += 1,
        }
    }
    samples.sort();
    println!(
        "p50_us={:.1} p99_us={:.1} errors={errors}",
        quantile_us(&samples, 0.5),
        quantile_us(&samples, 0.99)
    );
    Ok(())
}

fn one_request(target: SocketAddr) -> std::io::Result<Instant> {
    let mut stream = TcpStream::connect(target)?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut first = [0u8; 1];
    stream.read_exact(&mut first)?;
    let at = Instant::now();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest)?;
    Ok(at)
}

/// Opens `count` connections, prints `holding=<n>`, keeps them open for `seconds`.
pub fn hold(target: SocketAddr, count: usize, seconds: u64) -> Result<()> {
    let mut held = Vec::with_capacity(count);
    for i in 0..count {
        held.push(
            TcpStream::connect(target).with_context(|| format!("connection {i} to {target}"))?,
        );
    }
    println!("holding={}", held.len());
    std::io::stdout().flush()?;
    thread::sleep(Duration::from_secs(seconds));
    Ok(())
}

/// Latency of keep-alive HTTP/1.1 requests on one connection, one at a time, paced at
/// `rate` per second for `seconds`: the added latency of a path when nothing is saturated.
pub fn fixed_rate(target: SocketAddr, rate: u32, seconds: u64) -> Result<()> {
    let mut stream = TcpStream::connect(target).with_context(|| format!("connect {target}"))?;
    stream.set_nodelay(true)?;
    let interval = Duration::from_secs(1) / rate;
    let total = rate as usize * seconds as usize;
    let mut samples = Vec::with_capacity(total);
    let mut response = Vec::with_capacity(4096);
    let mut next = Instant::now();
    for _ in 0..total {
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        }
        next += interval;
        let started = Instant::now();
        stream.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")?;
        read_response(&mut stream, &mut response)?;
        samples.push(started.elapsed());
    }
    samples.sort();
    println!(
        "p50_us={:.1} p90_us={:.1} p99_us={:.1}",
        quantile_us(&samples, 0.5),
        quantile_us(&samples, 0.9),
        quantile_us(&samples, 0.99)
    );
    Ok(())
}

/// Reads one HTTP/1.1 response with a Content-Length body.
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        anyhow::ensure!(n > 0, "the server closed the connection mid-response");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .context("a response without Content-Length")?
            .trim()
            .parse()?;
        if buf.len() >= end + 4 + length {
            return Ok(());
        }
    }
}

/// The `q` quantile of sorted samples in microseconds (0 when there are none).
fn quantile_us(sorted: &[Duration], q: f64) -> f64 {
    let index = ((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}
