//! `GET /metrics`: the server's counters in Prometheus' text format (prometheus-client).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RequestLabels {
    pub route: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ErrorLabels {
    /// The project's error class (`ImageDecodeError`, ...), or `QueueFull` for a 503.
    pub class: String,
}

pub(super) struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub images: Counter,
    pub errors: Family<ErrorLabels, Counter>,
    pub batch_size: Histogram,
    pub queue_depth: Gauge,
    pub in_flight: Gauge,
    pub latency: Histogram,
}

impl Metrics {
    pub fn new(max_batch: usize) -> Self {
        let mut registry = Registry::with_prefix("butterfly");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "HTTP requests answered, by route and status code", requests.clone());
        let images = Counter::default();
        registry.register("images", "Images classified", images.clone());
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register("errors", "Failed requests by error class", errors.clone());
        // Powers of two up to max_batch: 1, 2, 4, ...
        let steps = (usize::BITS - max_batch.max(1).leading_zeros()) as u16;
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, steps));
        registry.register("batch_size", "Images per model run of the batcher", batch_size.clone());
        let queue_depth = Gauge::default();
        registry.register("queue_depth", "Images decoded and waiting for the model", queue_depth.clone());
        let in_flight = Gauge::default();
        registry.register("requests_in_flight", "Requests admitted and not yet answered", in_flight.clone());
        // 1 ms to about 16 s.
        let latency = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register("request_duration_seconds", "Time from admission to response", latency.clone());
        Metrics { registry, requests, images, errors, batch_size, queue_depth, in_flight, latency }
    }

    pub fn count_request(&self, route: &str, code: u16) {
        self.requests.get_or_create(&RequestLabels { route: route.into(), code: code.to_string() }).inc();
    }

    pub fn count_error(&self, class: &str) {
        self.errors.get_or_create(&ErrorLabels { class: class.into() }).inc();
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
