//! The cluster scenario as Markdown tables and as a chart; every figure is
//! the median over rounds.

use std::fmt::Write;
use std::time::Duration;

use super::chart::{svg, Bar, Panel, COLOURS};
use super::{
    Class, Latencies, Outcome, Setup, CONCURRENCY, EDGES, OBJECTS, PROBES, REQUESTS, SHIELDS,
    ZIPF_EXPONENT,
};
use crate::origin::DISTANT_LATENCY;
use crate::report::med;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Each setup's outcomes over the rounds, in [`Setup::ALL`] order.
fn by_setup(rounds: &[Vec<Outcome>]) -> Vec<(Setup, Vec<&Outcome>)> {
    Setup::ALL
        .iter()
        .map(|&setup| {
            let runs = rounds
                .iter()
                .flat_map(|round| round.iter().filter(move |o| o.setup == setup))
                .collect();
            (setup, runs)
        })
        .collect()
}

/// `p50 / p99` of the latencies `field` picks, in ms, median over runs.
fn p50_p99(runs: &[&Outcome], field: impl Fn(&Outcome) -> Latencies) -> String {
    let at = |q: f64| med(runs, |o| ms(field(o).at(q)));
    if runs.iter().all(|o| field(o).0.is_empty()) {
        return "–".into();
    }
    format!("{:.2} / {:.2}", at(0.5), at(0.99))
}

/// The tables.
pub fn markdown(rounds: &[Vec<Outcome>]) -> String {
    let setups = by_setup(rounds);
    let mut out = format!(
        "## Several nodes (cluster)\n\n{REQUESTS} requests spread over {EDGES} edges, {CONCURRENCY} at a time, for {OBJECTS} objects of 4–16 KiB with Zipf popularity (exponent {ZIPF_EXPONENT:.1}), the same mix for every setup: {:.0} distinct objects asked for, the fewest origin requests that can serve it. The origin answers after {} ms; {SHIELDS} shields; every node is a release build with one proxy thread, all of them and Redis pinned to the server CPU. Shares are of client requests; medians over {} round(s).\n\n",
        med(&setups[0].1, |o| o.distinct as f64),
        DISTANT_LATENCY.as_millis(),
        rounds.len()
    );
    out += "| setup | origin requests | origin MiB | edge local hits | shared-tier hits | shield hits | collapsed | from the origin | mix (s) |\n|---|---|---|---|---|---|---|---|---|\n";
    for (setup, runs) in &setups {
        let share = |n: &dyn Fn(&Outcome) -> f64| {
            format!(
                "{:.1}%",
                med(runs, |o| n(o) / o.requests.max(1) as f64 * 100.0)
            )
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.1} | {} | {} | {} | {} | {} | {:.1} |",
            setup.as_str(),
            med(runs, |o| o.origin_requests as f64),
            med(runs, |o| o.origin_bytes as f64 / (1 << 20) as f64),
            share(&|o| o.count(Class::EdgeHit) as f64 - o.shared_hits as f64),
            share(&|o| o.shared_hits as f64),
            share(&|o| o.count(Class::ShieldHit) as f64),
            share(&|o| o.count(Class::Collapsed) as f64),
            share(&|o| o.count(Class::Origin) as f64),
            med(runs, |o| o.seconds),
        );
    }
    let names: Vec<&str> = Class::ALL.iter().map(|c| c.as_str()).collect();
    let _ = write!(
        out,
        "\nClient latency under that load, by what answered (`Cache-Status`; an edge hit includes shared-tier hits, which it does not tell apart), p50 / p99 in ms:\n\n| setup | {} |\n|---|{}\n",
        names.join(" | "),
        "---|".repeat(names.len())
    );
    for (setup, runs) in &setups {
        let cells: Vec<String> = Class::ALL
            .iter()
            .map(|&class| p50_p99(runs, |o| o.latencies(class)))
            .collect();
        let _ = writeln!(out, "| {} | {} |", setup.as_str(), cells.join(" | "));
    }
    let _ = write!(
        out,
        "\nUnloaded, one request at a time: {PROBES} objects of 8 KiB filled through edge 1 (misses), then read through edge 2 (a shared-tier hit with the shared tier, else a shield hit behind shields, else a miss) and again through edge 2 (local hits), p50 / p99 in ms:\n\n| setup | local hit | read through edge 2 | what answered it | added over a local hit (p50 / p99) | miss |\n|---|---|---|---|---|---|\n"
    );
    for (setup, runs) in &setups {
        let added = |q: f64| {
            med(runs, |o| {
                ms(o.probe.second_edge.at(q)) - ms(o.probe.local.at(q))
            })
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:+.2} / {:+.2} | {} |",
            setup.as_str(),
            p50_p99(runs, |o| o.probe.local.clone()),
            p50_p99(runs, |o| o.probe.second_edge.clone()),
            runs.last()
                .map_or("", |o| o.probe.second_edge_class.as_str()),
            added(0.5),
            added(0.99),
            p50_p99(runs, |o| o.probe.miss.clone()),
        );
    }
    out
}

/// The chart: origin requests per setup, and the unloaded latency of a
/// local hit, a shared-tier hit and a shield hit.
pub fn chart(rounds: &[Vec<Outcome>]) -> String {
    let setups = by_setup(rounds);
    let origin = Panel {
        title: format!(
            "Origin requests for {REQUESTS} client requests ({OBJECTS} objects, Zipf {ZIPF_EXPONENT:.1})"
        ),
        bars: setups
            .iter()
            .zip(COLOURS)
            .map(|((setup, runs), colour)| {
                let n = med(runs, |o| o.origin_requests as f64);
                Bar {
                    colour,
                    label: setup.as_str().into(),
                    value: n,
                    text: format!(
                        "{n:.0} ({:.1} MiB)",
                        med(runs, |o| o.origin_bytes as f64 / (1 << 20) as f64)
                    ),
                }
            })
            .collect(),
    };
    let runs_of = |setup: Setup| {
        setups
            .iter()
            .find(|(s, _)| *s == setup)
            .map(|(_, r)| r.clone())
            .unwrap_or_default()
    };
    let tiers = [
        ("local hit (memory)", Setup::Independent, true),
        ("shared-tier hit (Redis)", Setup::Shared, false),
        ("shield hit", Setup::Shielded, false),
    ];
    let mut bars = Vec::new();
    for ((label, setup, local), colour) in tiers.into_iter().zip(COLOURS) {
        let runs = runs_of(setup);
        let pick = |o: &Outcome| {
            if local {
                o.probe.local.clone()
            } else {
                o.probe.second_edge.clone()
            }
        };
        for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
            let v = med(&runs, |o| ms(pick(o).at(q)));
            bars.push(Bar {
                label: format!("{label}, {name}"),
                value: v,
                colour,
                text: format!("{v:.2} ms"),
            });
        }
    }
    let latency = Panel {
        title: "Client latency, unloaded, one request at a time".into(),
        bars,
    };
    let miss = med(&runs_of(Setup::Independent), |o| ms(o.probe.miss.at(0.5)));
    svg(
        "stavka: three edges on loopback (./x bench --scenarios cluster)",
        &[origin, latency],
        &format!(
            "A miss to the origin ({} ms away): p50 {miss:.1} ms. Medians over {} round(s); see docs/benchmarks.md.",
            DISTANT_LATENCY.as_millis(),
            rounds.len()
        ),
    )
}
