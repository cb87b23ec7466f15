//! The results of every run, reduced to medians and written as Markdown
//! tables with ratios against nginx and Varnish.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use crate::hit;
use crate::hit::Hits;
use crate::hls::{self, Viewing};
use crate::memory::{Memory, OBJECT_SIZE};
use crate::miss::{Collapse, FirstByte, COLLAPSE_DELAY_MS};
use crate::server::Contender;
use crate::slice::{self, Cost, Slices};
use crate::tls::{self, Tls};

/// Every run's figures, by contender and scenario parameter.
#[derive(Default)]
pub struct Results {
    /// Hit load by object size.
    pub hits: BTreeMap<(Contender, usize), Vec<Hits>>,
    /// Slow-object misses by number of clients.
    pub first_byte: BTreeMap<(Contender, usize), Vec<FirstByte>>,
    /// Collapsing, by number of clients.
    pub collapse: BTreeMap<(Contender, usize), Vec<Collapse>>,
    /// Memory fills, by number of objects.
    pub memory: BTreeMap<(Contender, usize), Vec<Memory>>,
    /// Range requests into sliced objects.
    pub slices: BTreeMap<Contender, Vec<Slices>>,
    /// Hits and handshakes over TLS.
    pub tls: BTreeMap<Contender, Vec<Tls>>,
    /// Video viewers.
    pub hls: BTreeMap<Contender, Vec<Viewing>>,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The median of one field over runs.
pub fn med<T>(runs: &[T], field: impl Fn(&T) -> f64) -> f64 {
    median(runs.iter().map(field).collect())
}

/// The time at quantile `q` (nearest rank) of `sorted`.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    match sorted.len() {
        0 => Duration::ZERO,
        n => sorted[((n - 1) as f64 * q).round() as usize],
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn size_name(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b % 1024 == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

fn yes_no(yes: bool) -> &'static str {
    if yes {
        "yes"
    } else {
        "**no**"
    }
}

fn ratio(value: f64, against: Option<f64>) -> String {
    match against {
        Some(base) if base > 0.0 => format!("{:.2}", value / base),
        _ => "–".into(),
    }
}

impl Results {
    fn hit_rps(&self, contender: Contender, size: usize) -> Option<f64> {
        self.hits
            .get(&(contender, size))
            .map(|runs| med(runs, |h| h.load.rps))
    }

    fn hit_cpu(&self, contender: Contender, size: usize) -> Option<f64> {
        self.hits
            .get(&(contender, size))
            .map(|runs| med(runs, |h| h.cpu_each().as_secs_f64() * 1e6))
    }

    /// All tables, in the order docs/benchmarks.md presents them.
    pub fn markdown(&self, connections: usize, seconds: u64) -> String {
        let mut out = String::new();
        self.hit_table(&mut out, connections, seconds);
        self.overhead_table(&mut out);
        self.first_byte_table(&mut out);
        self.collapse_table(&mut out);
        self.memory_table(&mut out);
        self.slice_tables(&mut out);
        self.tls_tables(&mut out, connections, seconds);
        self.hls_table(&mut out);
        out
    }

    fn hit_table(&self, out: &mut String, connections: usize, seconds: u64) {
        let mut sizes: Vec<usize> = self.hits.keys().map(|k| k.1).collect();
        sizes.sort_unstable();
        sizes.dedup();
        if sizes.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "### Cache hits\n\nOne object, {connections} keep-alive connections, {seconds} s per run after {} s of warm-up; req/s and the ratio to nginx and Varnish (higher is better), latency in ms; the server's CPU time (user and system) per request, and \"busy\" its share of one core (a server short of 100% was waiting on the client or lost its core to something else).\n",
            hit::WARMUP.as_secs()
        );
        let mut header = "| server |".to_owned();
        let mut rule = "|---|".to_owned();
        for size in &sizes {
            let s = size_name(*size);
            let _ = write!(
                header,
                " {s} req/s | ÷ nginx | ÷ Varnish | p50 | p99 | CPU per request (µs) | busy |"
            );
            rule.push_str("---:|---:|---:|---:|---:|---:|---:|");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        for contender in self.contenders(|c| self.hits.contains_key(&(c, sizes[0]))) {
            let mut row = format!("| {} |", contender.as_str());
            for size in &sizes {
                match self.hits.get(&(contender, *size)) {
                    Some(runs) => {
                        let rps = med(runs, |h| h.load.rps);
                        let _ = write!(
                            row,
                            " {rps:.0} | {} | {} | {:.2} | {:.2} | {:.1} | {:.0}% |",
                            ratio(rps, self.hit_rps(Contender::Nginx, *size)),
                            ratio(rps, self.hit_rps(Contender::Varnish, *size)),
                            med(runs, |h| ms(h.load.p50)),
                            med(runs, |h| ms(h.load.p99)),
                            med(runs, |h| h.cpu_each().as_secs_f64() * 1e6),
                            med(runs, |h| h.cost.busy() * 100.0),
                        );
                    }
                    None => row.push_str(" – | – | – | – | – | – | – |"),
                }
            }
            let _ = writeln!(out, "{row}");
        }
        out.push('\n');
    }

    fn overhead_table(&self, out: &mut String) {
        let modes = [Contender::StavkaPerRequest, Contender::StavkaLongLived];
        let sizes: Vec<usize> = self
            .hits
            .keys()
            .filter(|k| k.0 == Contender::Stavka)
            .map(|k| k.1)
            .collect();
        if sizes.is_empty() || !modes.iter().any(|m| self.hit_rps(*m, sizes[0]).is_some()) {
            return;
        }
        let _ = writeln!(
            out,
            "### Policy overhead\n\nHit throughput with the ttl-rules policy as a share of stavka's without a policy, the throughput lost, and the server's CPU time per request as a share of stavka's without a policy (the steadier figure on a shared machine).\n"
        );
        let mut header = "| policy |".to_owned();
        let mut rule = "|---|".to_owned();
        for size in &sizes {
            let s = size_name(*size);
            let _ = write!(header, " {s} ratio | lost | {s} CPU per request ratio |");
            rule.push_str("---:|---:|---:|");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        for mode in modes {
            let mut row = format!("| {} |", mode.as_str());
            for size in &sizes {
                match (
                    self.hit_rps(mode, *size),
                    self.hit_rps(Contender::Stavka, *size),
                ) {
                    (Some(with), Some(without)) => {
                        let _ = write!(
                            row,
                            " {:.3} | {:.1}% |",
                            with / without,
                            (1.0 - with / without) * 100.0
                        );
                    }
                    _ => row.push_str(" – | – |"),
                }
                match (
                    self.hit_cpu(mode, *size),
                    self.hit_cpu(Contender::Stavka, *size),
                ) {
                    (Some(with), Some(without)) => {
                        let _ = write!(row, " {:.3} |", with / without);
                    }
                    _ => row.push_str(" – |"),
                }
            }
            let _ = writeln!(out, "{row}");
        }
        out.push('\n');
    }

    fn first_byte_table(&self, out: &mut String) {
        if self.first_byte.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "### Miss, time to first byte\n\nCold requests for a {} object the origin starts sending after 20 ms and paces at about 25 MiB/s. \"Added\" is a client's first body byte minus the origin's first byte (ms); \"done\" is when the last client had the whole body.\n\n| server | clients | origin fetches | origin first byte | added, median client | added, slowest client | last done |\n|---|---:|---:|---:|---:|---:|---:|",
            size_name(crate::origin::SLOW_SIZE)
        );
        for ((contender, clients), runs) in &self.first_byte {
            let _ = writeln!(
                out,
                "| {} | {clients} | {:.0} | {:.1} | {:.1} | {:.1} | {:.0} |",
                contender.as_str(),
                med(runs, |r| r.origin_requests as f64),
                med(runs, |r| ms(r.origin)),
                med(runs, |r| ms(r.added_p50)),
                med(runs, |r| ms(r.added_max)),
                med(runs, |r| ms(r.last_done)),
            );
        }
        out.push('\n');
    }

    fn collapse_table(&self, out: &mut String) {
        if self.collapse.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "### Collapsing\n\nConcurrent cold requests for one 1 KiB object the origin takes {COLLAPSE_DELAY_MS} ms to produce.\n\n| server | clients | origin requests | last client done (ms) |\n|---|---:|---:|---:|"
        );
        for ((contender, clients), runs) in &self.collapse {
            let _ = writeln!(
                out,
                "| {} | {clients} | {:.0} | {:.0} |",
                contender.as_str(),
                med(runs, |r| r.origin_requests as f64),
                med(runs, |r| ms(r.last_done)),
            );
        }
        out.push('\n');
    }

    fn memory_table(&self, out: &mut String) {
        if self.memory.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "### Memory\n\n{} objects filled through the proxy; PSS of the whole process tree (shared pages counted once). Bodies held in memory count: stavka's memory tier and Varnish's malloc storage hold them, nginx keeps them in files (the page cache is not in PSS). \"Pass\" is the rate of {} misses the origin marks `no-store` (up to {} after the fill): the proxy's forwarding alone, which its fill rate cannot exceed.\n\n| server | objects | PSS (MiB) | bytes per object | fill (misses/s) | pass (misses/s) | fill ÷ pass |\n|---|---:|---:|---:|---:|---:|---:|",
            size_name(OBJECT_SIZE),
            size_name(OBJECT_SIZE),
            crate::memory::PASS_REQUESTS,
        );
        for ((contender, objects), runs) in &self.memory {
            let _ = writeln!(
                out,
                "| {} | {objects} | {:.1} | {:.0} | {:.0} | {:.0} | {:.2} |",
                contender.as_str(),
                med(runs, |r| r.pss as f64 / (1 << 20) as f64),
                med(runs, |r| r.bytes_per_object),
                med(runs, |r| r.fill_rps),
                med(runs, |r| r.pass_rps),
                med(runs, |r| r.fill_rps / r.pass_rps),
            );
        }
        out.push('\n');
    }

    fn slice_tables(&self, out: &mut String) {
        if self.slices.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "### Large objects: slices\n\nRange requests of {} each into a cold {} object (a fresh name per measurement), every byte checked. Both servers cache {} blocks; stavka also reads {} blocks ahead of a miss. The goal (issue 13): origin bytes at most the bytes requested plus one block and the read-ahead per separate run of ranges. Ratios are to nginx. Varnish has no slicing (a range miss fetches the whole object) and does not take part.\n",
            size_name(slice::RANGE_LEN as usize),
            size_name(crate::origin::BIG_SIZE as usize),
            size_name(slice::BLOCK as usize),
            slice::READ_AHEAD,
        );
        let nginx = self.slices.get(&Contender::Nginx);
        // A row's median of `field` of `part`, as a ratio to nginx's.
        let ratio_of = |runs: &[Slices], part: fn(&Slices) -> &Cost, field: fn(&Cost) -> f64| {
            let against = nginx.map(|b| med(b, |r| field(part(r))));
            ratio(med(runs, |r| field(part(r))), against)
        };
        let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
        let within = |c: &Cost| c.origin_bytes <= c.goal;

        let _ = writeln!(
            out,
            "**One cold range** at a random offset. The issue's goal for its first byte: within one block's transfer time of the origin's first byte. \"After origin\" is the client's first body byte minus the origin's first body byte (one clock, the origin runs in the driver); \"one block\" is, in the same round, a client reading one {} block straight from the origin, from the origin's first body byte to the client's last.\n\n| server | origin requests | origin MiB | goal MiB | within goal | first byte (ms) | after origin (ms) | one block (ms) | rounds within a block | origin MiB ÷ nginx | first byte ÷ nginx |\n|---|---:|---:|---:|---|---:|---:|---:|---|---:|---:|",
            size_name(slice::BLOCK as usize)
        );
        for (contender, runs) in &self.slices {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.1} | {:.1} | {} | {:.2} | {:.2} | {:.2} | {}/{} | {} | {} |",
                contender.as_str(),
                med(runs, |r| r.cold.origin_requests as f64),
                med(runs, |r| mib(r.cold.origin_bytes)),
                med(runs, |r| mib(r.cold.goal)),
                yes_no(runs.iter().all(|r| within(&r.cold))),
                med(runs, |r| ms(r.cold.first_byte(0.5))),
                med(runs, |r| ms(r.cold.after_origin)),
                med(runs, |r| ms(r.block_transfer)),
                runs.iter()
                    .filter(|r| r.cold.after_origin <= r.block_transfer)
                    .count(),
                runs.len(),
                ratio_of(runs, |r| &r.cold, |c| c.origin_bytes as f64),
                ratio_of(runs, |r| &r.cold, |c| c.first_byte(0.5).as_secs_f64()),
            );
        }

        let _ = writeln!(
            out,
            "\n**A player** reading {} consecutive ranges from the start, one after another. Hits as each server says them: stavka's `Cache-Status` (`hit` only when every block was stored), nginx's `$upstream_cache_status` (the range's first slice; here each range is one slice), out of the responses that said; \"collapsed\": misses that asked the origin for nothing, their blocks still arriving for another request (a read-ahead), as stavka's `Cache-Status` says; \"not forwarded\": the ranges after the first that were either, against issue 13's goal of 90%.\n\n| server | origin requests | origin MiB | goal MiB | within goal | hits | collapsed | not forwarded after the first | ≥ 90% | first byte p50 (ms) | p99 (ms) | origin MiB ÷ nginx | p50 ÷ nginx |\n|---|---:|---:|---:|---|---:|---:|---:|---|---:|---:|---:|---:|",
            slice::PLAYER_RANGES
        );
        for (contender, runs) in &self.slices {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.1} | {:.1} | {} | {:.0}/{:.0} | {:.0} | {:.0}/{} | {} | {:.2} | {:.2} | {} | {} |",
                contender.as_str(),
                med(runs, |r| r.player.origin_requests as f64),
                med(runs, |r| mib(r.player.origin_bytes)),
                med(runs, |r| mib(r.player.goal)),
                yes_no(runs.iter().all(|r| within(&r.player))),
                med(runs, |r| r.player.hits as f64),
                med(runs, |r| r.player.told as f64),
                med(runs, |r| r.player.collapsed as f64),
                med(runs, |r| r.player.served_after_first as f64),
                slice::PLAYER_RANGES - 1,
                yes_no(runs.iter().all(|r| {
                    r.player.served_after_first * 10 >= (slice::PLAYER_RANGES - 1) * 9
                })),
                med(runs, |r| ms(r.player.first_byte(0.5))),
                med(runs, |r| ms(r.player.first_byte(0.99))),
                ratio_of(runs, |r| &r.player, |c| c.origin_bytes as f64),
                ratio_of(runs, |r| &r.player, |c| c.first_byte(0.5).as_secs_f64()),
            );
        }

        let _ = writeln!(
            out,
            "\n**A seeking player**: {} ranges at random offsets, one after another.\n\n| server | origin requests | delivered MiB | origin MiB | origin ÷ delivered | goal MiB | within goal | origin MiB ÷ nginx |\n|---|---:|---:|---:|---:|---:|---|---:|",
            slice::PLAYER_RANGES
        );
        for (contender, runs) in &self.slices {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.1} | {:.1} | {:.2} | {:.1} | {} | {} |",
                contender.as_str(),
                med(runs, |r| r.seeking.origin_requests as f64),
                med(runs, |r| mib(r.seeking.delivered)),
                med(runs, |r| mib(r.seeking.origin_bytes)),
                med(runs, |r| r.seeking.origin_bytes as f64
                    / r.seeking.delivered as f64),
                med(runs, |r| mib(r.seeking.goal)),
                yes_no(runs.iter().all(|r| within(&r.seeking))),
                ratio_of(runs, |r| &r.seeking, |c| c.origin_bytes as f64),
            );
        }

        let _ = writeln!(
            out,
            "\n**Collapsing**: {} clients at once on one cold range at a random offset.\n\n| server | origin requests | origin MiB | goal MiB | within goal | first byte p50 (ms) | last done (ms) | origin MiB ÷ nginx |\n|---|---:|---:|---:|---|---:|---:|---:|",
            slice::COLLAPSING
        );
        for (contender, runs) in &self.slices {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.1} | {:.1} | {} | {:.2} | {:.0} | {} |",
                contender.as_str(),
                med(runs, |r| r.collapse.origin_requests as f64),
                med(runs, |r| mib(r.collapse.origin_bytes)),
                med(runs, |r| mib(r.collapse.goal)),
                yes_no(runs.iter().all(|r| within(&r.collapse))),
                med(runs, |r| ms(r.collapse.first_byte(0.5))),
                med(runs, |r| ms(r.collapse.last_done)),
                ratio_of(runs, |r| &r.collapse, |c| c.origin_bytes as f64),
            );
        }
        out.push('\n');
    }

    fn tls_tables(&self, out: &mut String, connections: usize, seconds: u64) {
        if self.tls.is_empty() {
            return;
        }
        // What each client negotiated with each server, all rounds.
        let negotiated = |client: &str, of: fn(&Tls) -> Vec<&str>| {
            let servers: Vec<String> = self
                .tls
                .iter()
                .map(|(contender, runs)| {
                    let mut seen: Vec<&str> = runs.iter().flat_map(of).collect();
                    seen.sort_unstable();
                    seen.dedup();
                    format!("{} with {}", seen.join(" / "), contender.as_str())
                })
                .collect();
            format!("{client} negotiated {}", servers.join(", "))
        };
        let _ = writeln!(
            out,
            "### TLS termination\n\nstavka and nginx present the same self-signed ECDSA P-256 certificate, generated for the run, and offer TLS 1.2 and 1.3, and h2 then http/1.1 by ALPN. Varnish does not terminate TLS (it needs a TLS proxy in front, such as hitch) and takes no part. {}; {}.\n",
            negotiated("h2load", |r| r.loads.iter().map(|l| l.load.tls.as_str()).collect()),
            negotiated("the handshake client", |r| vec![
                r.full.tls.as_str(),
                r.resumed.tls.as_str()
            ]),
        );
        let shapes = tls::shapes(connections);
        let _ = writeln!(
            out,
            "**Hits over HTTPS.** One {} object stored before the load; h2load (one thread) for {seconds} s per run after {} s of warm-up; req/s and the ratio to nginx (higher is better); the server's CPU time (user and system) per request; \"busy\" its share of one core. A server short of 100% busy was waiting on the client or had its core taken by something else on the machine: that round's req/s is not the server's.\n\n| server | load | req/s | ÷ nginx | server CPU per request (µs) | server busy |\n|---|---|---:|---:|---:|---:|",
            size_name(tls::SIZE),
            hit::WARMUP.as_secs()
        );
        let nginx = self.tls.get(&Contender::Nginx);
        for (contender, runs) in &self.tls {
            for (i, shape) in shapes.iter().enumerate() {
                let rps = med(runs, |r| r.loads[i].load.rps);
                let _ = writeln!(
                    out,
                    "| {} | {} | {rps:.0} | {} | {:.1} | {:.0}% |",
                    contender.as_str(),
                    shape.label(),
                    ratio(rps, nginx.map(|n| med(n, |r| r.loads[i].load.rps))),
                    med(runs, |r| r.loads[i].cpu_each().as_secs_f64() * 1e6),
                    med(runs, |r| r.loads[i].cost.busy() * 100.0),
                );
            }
        }
        let _ = writeln!(
            out,
            "\n**TLS 1.3 handshakes** (the client offers TLS 1.3 only): {} clients, each a thread with its own tickets making one connection at a time for {} s: connect, handshake, close_notify, read until the server closes (which takes in the session tickets). Full: the client keeps no tickets. Resumed: each client starts with the tickets of one earlier connection and offers one (a PSK with an X25519 exchange, `psk_dhe_ke`, the only mode rustls offers: no certificate, no signature); \"resumed\" counts the handshakes the client saw resumed, over all rounds. The client (rustls with ring) accepts the run's certificate byte for byte without verifying the handshake signature, so its one core goes to the key exchange. Server CPU is the server's user and system time per handshake; \"busy\" its share of one core (near 100%: the server was the limit; lower: the client was).\n\n| server | handshake | per second | ÷ nginx | resumed | server CPU per handshake (µs) | server busy |\n|---|---|---:|---:|---:|---:|---:|",
            tls::HANDSHAKE_CLIENTS,
            tls::HANDSHAKE_TIME.as_secs()
        );
        for (contender, runs) in &self.tls {
            for (name, resumed) in [("full", false), ("resumed", true)] {
                let per_second = med(runs, |r| r.handshakes(resumed).per_second());
                let _ = writeln!(
                    out,
                    "| {} | {name} | {per_second:.0} | {} | {} of {} | {:.0} | {:.0}% |",
                    contender.as_str(),
                    ratio(
                        per_second,
                        nginx.map(|n| med(n, |r| r.handshakes(resumed).per_second()))
                    ),
                    runs.iter()
                        .map(|r| r.handshakes(resumed).resumed)
                        .sum::<u64>(),
                    runs.iter()
                        .map(|r| r.handshakes(resumed).count)
                        .sum::<u64>(),
                    med(runs, |r| r.handshakes(resumed).cpu_each().as_secs_f64()
                        * 1e6),
                    med(runs, |r| r.handshakes(resumed).cost.busy() * 100.0),
                );
            }
        }
        let _ = writeln!(
            out,
            "\n**A crowd coming back:** {} clients, each with its own tickets, connect one after another; then each comes back once, in the same order. How many came back to a resumed handshake shows what the server's session cache or tickets hold, which the few clients above do not.\n\n| server | returning clients resumed |\n|---|---:|",
            tls::RETURNING_CLIENTS
        );
        for (contender, runs) in &self.tls {
            let resumed: Vec<String> = runs
                .iter()
                .map(|r| r.returned_resumed.to_string())
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} of {} |",
                contender.as_str(),
                resumed.join(", "),
                tls::RETURNING_CLIENTS
            );
        }
        out.push('\n');
    }

    fn hls_table(&self, out: &mut String) {
        if self.hls.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "### Video viewers: prefetching HLS segments\n\n{} viewers start {} ms apart, round-robin over {} video-on-demand HLS streams of {} segments of {:.1} MB (4 s at 2 Mbit/s) behind {} ms of origin latency; each reads its stream's playlist, then every segment in order, one every {} ms: time scaled down {}×, so 4 s of video every {} ms. Every viewer watches to the end but those of one stream, who all leave after {} segments. stavka + hls-prefetch prefetches the first {} segments when it reads a playlist and {} ahead of each segment requested. Hits as each server says them (stavka's `Cache-Status`, nginx's `X-Cache-Status`), of the segment requests after each viewer's first; \"collapsed\": misses that waited for a fetch already on its way; \"prefetched\": hits on an object the policy prefetched (`detail=prefetched`). Time to first byte over those requests; \"local hit\": {} hits on a stored segment, one after another, after the viewers. \"Server CPU\": the server's user and system time while the viewers watched. \"Wasted\": origin bytes of what no viewer asked for. The goals (issue 18): ≥ 95% hits after the first segment, p50 within {} ms of a local hit's (a miss costs the origin's 50 ms), wasted ≤ 10% of origin bytes. stavka's slices do not take part: read-ahead runs inside one object, and a segment is one small object.\n\n| server | hits after the first segment | ≥ 95% | collapsed | prefetched | first byte p50 (ms) | p99 (ms) | local hit p50 (ms) | p50 at a local hit's | first segment p50 (ms) | origin requests | origin MB | wasted MB | wasted share | ≤ 10% | server CPU (s) |\n|---|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---:|",
            hls::VIEWERS,
            hls::STAGGER.as_millis(),
            hls::STREAMS,
            crate::origin::HLS_SEGMENTS,
            crate::origin::HLS_SEGMENT_BYTES as f64 / 1e6,
            crate::origin::HLS_LATENCY.as_millis(),
            hls::PACE.as_millis(),
            hls::TIME_SCALE,
            hls::PACE.as_millis(),
            hls::ABANDONED_AFTER,
            hls::AHEAD,
            hls::AHEAD,
            hls::LOCAL_HITS,
            hls::HIT_TOLERANCE.as_millis(),
        );
        let mb = |bytes: u64| bytes as f64 / 1e6;
        for (contender, runs) in &self.hls {
            let p50 = med(runs, |r| ms(quantile(&r.first_bytes, 0.5)));
            let local = med(runs, |r| ms(quantile(&r.local_hits, 0.5)));
            let _ = writeln!(
                out,
                "| {} | {:.1}% ({:.0}/{:.0}) | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.2} | {:.0} | {:.1} | {:.2} | {:.1}% | {} | {:.2} |",
                contender.as_str(),
                med(runs, |r| r.hit_ratio() * 100.0),
                med(runs, |r| r.hits as f64),
                med(runs, |r| r.after_first as f64),
                yes_no(runs.iter().all(|r| r.hit_ratio() >= 0.95)),
                med(runs, |r| r.collapsed as f64),
                med(runs, |r| r.prefetched as f64),
                p50,
                med(runs, |r| ms(quantile(&r.first_bytes, 0.99))),
                local,
                yes_no(hls::at_a_local_hit(
                    Duration::from_secs_f64(p50 / 1e3),
                    Duration::from_secs_f64(local / 1e3)
                )),
                med(runs, |r| ms(quantile(&r.first_segment, 0.5))),
                med(runs, |r| r.origin_requests as f64),
                med(runs, |r| mb(r.origin_bytes)),
                med(runs, |r| mb(r.wasted_bytes)),
                med(runs, |r| r.wasted_share() * 100.0),
                yes_no(runs.iter().all(|r| r.wasted_share() <= 0.10)),
                med(runs, |r| r.server_cpu.as_secs_f64()),
            );
        }
        for (contender, runs) in &self.hls {
            let mut outcomes: Vec<&String> = runs.iter().flat_map(|r| r.prefetch.keys()).collect();
            outcomes.sort_unstable();
            outcomes.dedup();
            if outcomes.is_empty() {
                continue;
            }
            let counts: Vec<String> = outcomes
                .iter()
                .map(|o| {
                    let n = med(runs, |r| r.prefetch.get(*o).copied().unwrap_or(0) as f64);
                    format!("{o} {n:.0}")
                })
                .collect();
            let _ = writeln!(
                out,
                "\n{}: `stavka_prefetch_total` by outcome (median over rounds): {}; origin requests for paths no viewer asked for (prefetched and never watched, or past the end): {:.0}.",
                contender.as_str(),
                counts.join(", "),
                med(runs, |r| r.unrequested as f64),
            );
        }
        out.push('\n');
    }

    /// Contenders with results, in declaration order.
    fn contenders(&self, has: impl Fn(Contender) -> bool) -> Vec<Contender> {
        <Contender as clap::ValueEnum>::value_variants()
            .iter()
            .copied()
            .filter(|c| has(*c))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::ServerCost;
    use crate::wrk::Load;

    #[test]
    fn nearest_rank_quantiles() {
        let ms = |n| Duration::from_millis(n);
        let sorted: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(quantile(&sorted, 0.5), ms(51));
        assert_eq!(quantile(&sorted, 0.99), ms(99));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn hit_table_has_ratios_against_both_peers() {
        // Five seconds of load; the server's CPU time per request is
        // `cpu_us` µs.
        let load = |rps: f64, cpu_us: f64| {
            let requests = (rps * 5.0) as u64;
            Hits {
                load: Load {
                    requests,
                    rps,
                    p50: Duration::from_micros(500),
                    p99: Duration::from_millis(2),
                },
                cost: ServerCost {
                    cpu: Duration::from_secs_f64(cpu_us * 1e-6 * requests as f64),
                    elapsed: Duration::from_secs(5),
                },
            }
        };
        let mut results = Results::default();
        results.hits.insert(
            (Contender::Stavka, 1024),
            vec![
                load(60_000.0, 14.0),
                load(80_000.0, 12.0),
                load(70_000.0, 13.0),
            ],
        );
        results.hits.insert(
            (Contender::StavkaPerRequest, 1024),
            vec![load(63_000.0, 13.65)],
        );
        results
            .hits
            .insert((Contender::Nginx, 1024), vec![load(35_000.0, 25.0)]);
        results
            .hits
            .insert((Contender::Varnish, 1024), vec![load(70_000.0, 14.0)]);
        let table = results.markdown(64, 5);
        assert!(
            table.contains("| stavka | 70000 | 2.00 | 1.00 | 0.50 | 2.00 | 13.0 | 91% |"),
            "{table}"
        );
        assert!(
            table.contains("| stavka + per-request policy | 0.900 | 10.0% | 1.050 |"),
            "{table}"
        );
    }
}
