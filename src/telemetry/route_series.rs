//! The series every request adds to (its route's durations, its upstream's
//! latency, the bytes either way), kept in one slot per recording thread
//! and summed when scraped.
//!
//! A prometheus `Histogram::observe` runs four locked instructions and a
//! counter one, some twenty cycles each where the request's other
//! instructions cost a fraction of one: ten a proxied request
//! (bench/instructions.py --locked). A worker adds to its own slot with a
//! plain load and store, which no other thread writes; threads past the
//! slots share the last one, atomically. Slots sit on cache lines of their
//! own, so workers adding to one busy route do not contend for a line as
//! they do for prometheus's.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Counter, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

/// The upper bounds of both histograms' buckets.
pub(super) type Bounds = Arc<[f64]>;

/// Most buckets a histogram has: the latency buckets' 17.
const MAX_BUCKETS: usize = 17;

/// Slots a series has: one for each thread that may run a worker, up to
/// eight, and the last shared by any other. A slot is 320 bytes, and a
/// route has its series from its first request: with nine, 10,000 busy
/// routes hold 29 MB.
static SLOTS: LazyLock<usize> =
    LazyLock::new(|| std::thread::available_parallelism().map_or(4, |n| n.get()).min(8) + 1);

/// Threads given a slot so far.
static THREADS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SLOT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// This thread's slot, and whether it is its own (no other thread writes it).
fn slot() -> (usize, bool) {
    let shared = *SLOTS - 1;
    let index = SLOT.with(|slot| match slot.get() {
        Some(index) => index,
        None => {
            let index = THREADS.fetch_add(1, Ordering::Relaxed).min(shared);
            slot.set(Some(index));
            index
        }
    });
    (index, index < shared)
}

/// Adds `n` to `cell`: without a locked instruction in a slot of one's own.
fn add(cell: &AtomicU64, n: u64, own: bool) {
    if own {
        cell.store(cell.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    } else {
        cell.fetch_add(n, Ordering::Relaxed);
    }
}

/// Adds `value` to the float whose bits `cell` holds.
fn add_float(cell: &AtomicU64, value: f64, own: bool) {
    let sum = |bits: u64| (f64::from_bits(bits) + value).to_bits();
    if own {
        cell.store(sum(cell.load(Ordering::Relaxed)), Ordering::Relaxed);
    } else {
        let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| Some(sum(bits)));
    }
}

/// One histogram's counts in one slot.
#[derive(Default)]
struct HistogramCells {
    /// Observations at or under each bound (not cumulative).
    buckets: [AtomicU64; MAX_BUCKETS],
    sum: AtomicU64,
    count: AtomicU64,
}

impl HistogramCells {
    fn observe(&self, bounds: &[f64], value: f64, own: bool) {
        // The count first, and the bucket last with `Release`: a scrape that
        // reads the bucket (with `Acquire`) before the count never sees more
        // in the buckets than in the count.
        add(&self.count, 1, own);
        add_float(&self.sum, value, own);
        if let Some(bucket) = bounds.iter().position(|bound| value <= *bound) {
            let cell = &self.buckets[bucket];
            if own {
                cell.store(cell.load(Ordering::Relaxed) + 1, Ordering::Release);
            } else {
                cell.fetch_add(1, Ordering::Release);
            }
        }
    }
}

/// What one slot holds of a route's series.
#[derive(Default)]
#[repr(align(64))]
struct Slot {
    duration: HistogramCells,
    upstream: HistogramCells,
    received: AtomicU64,
    sent: AtomicU64,
}

/// One route's series (and its upstream's, when it has one).
pub(super) struct RouteCells {
    bounds: Bounds,
    slots: Box<[Slot]>,
}

impl RouteCells {
    fn new(bounds: Bounds) -> RouteCells {
        RouteCells {
            bounds,
            slots: (0..*SLOTS).map(|_| Slot::default()).collect(),
        }
    }

    fn own_slot(&self) -> (&Slot, bool) {
        let (index, own) = slot();
        (&self.slots[index], own)
    }

    /// A finished request: its duration and the body bytes either way.
    pub(super) fn request(&self, seconds: f64, bytes_in: u64, bytes_out: u64) {
        let (slot, own) = self.own_slot();
        slot.duration.observe(&self.bounds, seconds, own);
        if bytes_in > 0 {
            add(&slot.received, bytes_in, own);
        }
        add(&slot.sent, bytes_out, own);
    }

    /// One attempt's time to the upstream's answer.
    pub(super) fn upstream_latency(&self, seconds: f64) {
        let (slot, own) = self.own_slot();
        slot.upstream.observe(&self.bounds, seconds, own);
    }

    fn histogram(&self, cells: impl Fn(&Slot) -> &HistogramCells) -> Histogram {
        let mut counts = vec![0u64; self.bounds.len()];
        let (mut sum, mut count) = (0.0, 0u64);
        for slot in self.slots.iter() {
            let cells = cells(slot);
            for (total, bucket) in counts.iter_mut().zip(&cells.buckets) {
                *total += bucket.load(Ordering::Acquire);
            }
            sum += f64::from_bits(cells.sum.load(Ordering::Relaxed));
            count += cells.count.load(Ordering::Relaxed);
        }
        let mut cumulative = 0;
        let buckets = counts
            .iter()
            .zip(self.bounds.iter())
            .map(|(n, bound)| {
                cumulative += n;
                let mut bucket = Bucket::default();
                bucket.set_cumulative_count(cumulative);
                bucket.set_upper_bound(*bound);
                bucket
            })
            .collect();
        let mut histogram = Histogram::default();
        histogram.set_sample_count(count);
        histogram.set_sample_sum(sum);
        histogram.set_bucket(buckets);
        histogram
    }

    fn total(&self, cell: impl Fn(&Slot) -> &AtomicU64) -> u64 {
        self.slots.iter().map(|slot| cell(slot).load(Ordering::Relaxed)).sum()
    }
}

/// A route's name and its upstream's, the series' labels.
type Labels = (String, Option<String>);

/// Every route's series, kept across reloads (a route of the same name and
/// upstream counts on), exported as four families.
pub(super) struct RouteSeries {
    bounds: Bounds,
    routes: Mutex<BTreeMap<Labels, Arc<RouteCells>>>,
    descs: [Desc; 4],
}

const DURATION: (&str, &str) = (
    "request_duration_seconds",
    "Time from the request head to the end of the response body.",
);
const UPSTREAM: (&str, &str) = (
    "upstream_duration_seconds",
    "Time from sending to an upstream to its response head, per attempt.",
);
const RECEIVED: (&str, &str) = ("received_bytes_total", "Request body bytes read from clients.");
const SENT: (&str, &str) = ("sent_bytes_total", "Response body bytes sent to clients.");

impl RouteSeries {
    pub(super) fn new(bounds: Vec<f64>) -> prometheus::Result<RouteSeries> {
        let desc = |(name, help): (&str, &str), labels: &[&str]| {
            Desc::new(
                name.to_string(),
                help.to_string(),
                labels.iter().map(|l| l.to_string()).collect(),
                HashMap::new(),
            )
        };
        Ok(RouteSeries {
            // A slot has room for this many; more would be a bug in the
            // metric's definition, cut rather than a panic on the request path.
            bounds: bounds.into_iter().take(MAX_BUCKETS).collect(),
            routes: Mutex::default(),
            descs: [
                desc(DURATION, &["route"])?,
                desc(UPSTREAM, &["route", "upstream"])?,
                desc(RECEIVED, &["route"])?,
                desc(SENT, &["route"])?,
            ],
        })
    }

    /// The series of `route` (and `upstream`), made at its first request.
    pub(super) fn of(&self, route: &str, upstream: Option<&str>) -> Arc<RouteCells> {
        let mut routes = self.routes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        routes
            .entry((route.to_string(), upstream.map(str::to_string)))
            .or_insert_with(|| Arc::new(RouteCells::new(self.bounds.clone())))
            .clone()
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name(name.to_string());
            pair.set_value(value.to_string());
            pair
        })
        .collect()
}

fn family((name, help): (&str, &str), kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(help.to_string());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

fn counter(pairs: &[(&str, &str)], value: u64) -> Metric {
    let mut counter = Counter::default();
    counter.set_value(value as f64);
    let mut metric = Metric::from_label(labels(pairs));
    metric.set_counter(counter);
    metric
}

impl Collector for RouteSeries {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let routes: Vec<(Labels, Arc<RouteCells>)> = {
            let routes = self.routes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            routes
                .iter()
                .map(|(labels, cells)| (labels.clone(), cells.clone()))
                .collect()
        };
        let (mut durations, mut upstreams, mut received, mut sent) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // A route's own series once, whichever upstreams it has had.
        let mut by_route: BTreeMap<&str, Vec<&RouteCells>> = BTreeMap::new();
        for ((route, upstream), cells) in &routes {
            by_route.entry(route).or_default().push(cells);
            if let Some(upstream) = upstream {
                let mut metric = Metric::from_label(labels(&[("route", route), ("upstream", upstream)]));
                metric.set_histogram(cells.histogram(|slot| &slot.upstream));
                upstreams.push(metric);
            }
        }
        for (route, cells) in by_route {
            let pairs = [("route", route)];
            let mut metric = Metric::from_label(labels(&pairs));
            let mut merged = cells[0].histogram(|slot| &slot.duration);
            for more in &cells[1..] {
                merged = merge(merged, more.histogram(|slot| &slot.duration));
            }
            metric.set_histogram(merged);
            durations.push(metric);
            received.push(counter(
                &pairs,
                cells.iter().map(|c| c.total(|slot| &slot.received)).sum(),
            ));
            sent.push(counter(&pairs, cells.iter().map(|c| c.total(|slot| &slot.sent)).sum()));
        }
        vec![
            family(DURATION, MetricType::HISTOGRAM, durations),
            family(UPSTREAM, MetricType::HISTOGRAM, upstreams),
            family(RECEIVED, MetricType::COUNTER, received),
            family(SENT, MetricType::COUNTER, sent),
        ]
        .into_iter()
        .filter(|family| !family.get_metric().is_empty())
        .collect()
    }
}

/// The series as the registry takes them (it owns its collectors; every
/// route's handles keep the series too).
pub(super) struct Exported(pub(super) Arc<RouteSeries>);

impl Collector for Exported {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

/// Two snapshots of histograms with the same buckets, added.
fn merge(mut a: Histogram, b: Histogram) -> Histogram {
    a.set_sample_count(a.get_sample_count() + b.get_sample_count());
    a.set_sample_sum(a.get_sample_sum() + b.get_sample_sum());
    let buckets = a
        .get_bucket()
        .iter()
        .zip(b.get_bucket())
        .map(|(x, y)| {
            let mut bucket = x.clone();
            bucket.set_cumulative_count(x.cumulative_count() + y.cumulative_count());
            bucket
        })
        .collect();
    a.set_bucket(buckets);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

    fn bounds() -> Vec<f64> {
        prometheus::exponential_buckets(0.0005, 2.0, 17).unwrap()
    }

    fn text(registry: &Registry) -> String {
        TextEncoder::new().encode_to_string(&registry.gather()).unwrap()
    }

    #[test]
    fn the_exposition_is_prometheus_s_own() {
        // The same observations through prometheus's types and through the slots.
        let theirs = Registry::new_custom(Some("portico".into()), None).unwrap();
        let histogram = |(name, help): (&str, &str), labels: &[&str]| {
            let vec = HistogramVec::new(HistogramOpts::new(name, help).buckets(bounds()), labels).unwrap();
            theirs.register(Box::new(vec.clone())).unwrap();
            vec
        };
        let counter = |(name, help): (&str, &str)| {
            let vec = IntCounterVec::new(Opts::new(name, help), &["route"]).unwrap();
            theirs.register(Box::new(vec.clone())).unwrap();
            vec
        };
        let (durations, upstreams) = (
            histogram(DURATION, &["route"]),
            histogram(UPSTREAM, &["route", "upstream"]),
        );
        let (received, sent) = (counter(RECEIVED), counter(SENT));
        let ours = Registry::new_custom(Some("portico".into()), None).unwrap();
        let series = Arc::new(RouteSeries::new(bounds()).unwrap());
        ours.register(Box::new(Exported(series.clone()))).unwrap();

        let api = series.of("api", Some("backend"));
        let tea = series.of("teapot", None);
        for (seconds, bytes_in, bytes_out) in [(0.0004, 0, 5), (0.003, 10, 20), (2.5, 0, 7), (100.0, 1, 1)] {
            api.request(seconds, bytes_in, bytes_out);
            durations.with_label_values(&["api"]).observe(seconds);
            received.with_label_values(&["api"]).inc_by(bytes_in);
            sent.with_label_values(&["api"]).inc_by(bytes_out);
            api.upstream_latency(seconds / 2.0);
            upstreams.with_label_values(&["api", "backend"]).observe(seconds / 2.0);
        }
        tea.request(0.001, 0, 5);
        durations.with_label_values(&["teapot"]).observe(0.001);
        received.with_label_values(&["teapot"]).inc_by(0);
        sent.with_label_values(&["teapot"]).inc_by(5);
        assert_eq!(text(&ours), text(&theirs));
    }

    #[test]
    fn threads_past_the_slots_count_too() {
        let series = RouteSeries::new(bounds()).unwrap();
        let cells = series.of("api", None);
        let threads = *SLOTS * 2;
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        cells.request(0.001, 1, 2);
                    }
                });
            }
        });
        let n = (threads * 1000) as u64;
        assert_eq!(cells.histogram(|slot| &slot.duration).get_sample_count(), n);
        assert_eq!(cells.total(|slot| &slot.received), n);
        assert_eq!(cells.total(|slot| &slot.sent), 2 * n);
    }

    #[test]
    fn a_slot_is_five_cache_lines() {
        assert_eq!(std::mem::size_of::<Slot>(), 320);
    }

    #[test]
    fn a_route_keeps_counting_under_the_same_name() {
        let series = RouteSeries::new(bounds()).unwrap();
        series.of("api", Some("a")).request(0.1, 0, 1);
        series.of("api", Some("a")).request(0.1, 0, 1);
        assert_eq!(series.of("api", Some("a")).total(|slot| &slot.sent), 2);
    }
}
