//! Distributed tracing: W3C `traceparent`/`tracestate` read from the client
//! (or a trace started), a server span per request and a client span per
//! upstream attempt, each attempt's context sent upstream, and the spans
//! exported in batches over OTLP/HTTP through the OpenTelemetry SDK.
//!
//! Exporting happens on the SDK's own thread: a slow or absent collector
//! never holds up a request, and a full queue drops spans rather than memory.

use crate::config::model::TracingConfig;
use http::{HeaderMap, Method};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

/// The tracer of one `tracing:` block. Kept across reloads that leave the
/// block unchanged; shut down (flushing what is queued) when replaced.
pub struct Traces {
    pub config: TracingConfig,
    tracer: SdkTracer,
    provider: Option<SdkTracerProvider>,
    propagator: TraceContextPropagator,
}

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traces").field("config", &self.config).finish()
    }
}

/// `endpoint` as the collector's traces URL: a bare `http://host:4318`
/// gets the standard `/v1/traces` path.
pub fn traces_url(endpoint: &str) -> Result<String, String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|_| format!("{endpoint:?} is not a URL: write it like http://127.0.0.1:4318"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{endpoint:?}: this build exports over plain HTTP; run a local collector (or an agent) on http://"
            ))
        }
        _ => {
            return Err(format!(
                "{endpoint:?} needs a scheme: write it like http://127.0.0.1:4318"
            ))
        }
    }
    if uri.authority().is_none() {
        return Err(format!("{endpoint:?} has no host"));
    }
    let trimmed = endpoint.trim_end_matches('/');
    Ok(if matches!(uri.path(), "" | "/") {
        format!("{trimmed}/v1/traces")
    } else {
        trimmed.to_string()
    })
}

impl Traces {
    pub fn new(config: &TracingConfig) -> Result<Traces, String> {
        let url = traces_url(&config.otlp.endpoint)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .with_timeout(config.otlp.timeout.get())
            .build()
            .map_err(|e| format!("the OTLP exporter cannot be built: {e}"))?;
        let batch = BatchConfigBuilder::default()
            .with_scheduled_delay(config.otlp.export_interval.get())
            .build();
        let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch).build();
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio.fraction())));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler)
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("portico");
        Ok(Traces {
            config: config.clone(),
            tracer,
            provider: Some(provider),
            propagator: TraceContextPropagator::new(),
        })
    }

    /// Starts the server span of a request, as a child of the client's
    /// `traceparent` when it sent one.
    pub fn start_request(&self, headers: &HeaderMap, method: &Method, path: &str) -> RequestSpan {
        let parent = self.propagator.extract(&HeaderExtractor(headers));
        let span = self
            .tracer
            .span_builder(method.as_str().to_string())
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method.as_str().to_string()),
                KeyValue::new("url.path", path.to_string()),
            ])
            .start_with_context(&self.tracer, &parent);
        RequestSpan {
            cx: parent.with_span(span),
        }
    }

    /// Starts a client span for one upstream attempt and writes its context
    /// into the upstream request's `traceparent` (the client's `tracestate`
    /// travels on).
    pub fn start_attempt(
        &self,
        request: &RequestSpan,
        headers: &mut HeaderMap,
        method: &Method,
        upstream: &str,
        target: &str,
    ) -> AttemptSpan {
        let span = self
            .tracer
            .span_builder(method.as_str().to_string())
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("http.request.method", method.as_str().to_string()),
                KeyValue::new("server.address", target.to_string()),
                KeyValue::new("portico.upstream", upstream.to_string()),
            ])
            .start_with_context(&self.tracer, &request.cx);
        let cx = request.cx.with_span(span);
        self.propagator.inject_context(&cx, &mut HeaderInjector(headers));
        AttemptSpan { cx }
    }
}

impl Drop for Traces {
    fn drop(&mut self) {
        // Shutting down flushes the queue and waits for the exporter: never
        // on a thread that serves requests.
        if let Some(provider) = self.provider.take() {
            let _ = std::thread::Builder::new().name("otlp-shutdown".into()).spawn(move || {
                if let Err(error) = provider.shutdown() {
                    tracing::warn!(%error, "the trace exporter did not shut down cleanly");
                }
            });
        }
    }
}

/// A request's server span, ended when the response is done.
#[derive(Debug)]
pub struct RequestSpan {
    cx: Context,
}

impl RequestSpan {
    /// The trace id, for the access log; `None` when not sampled.
    pub fn trace_id(&self) -> Option<String> {
        let span = self.cx.span();
        let context = span.span_context();
        context.is_sampled().then(|| context.trace_id().to_string())
    }

    /// Names the span after its route (low cardinality, as the conventions ask).
    pub fn set_route(&self, method: &Method, route: &str) {
        let span = self.cx.span();
        span.update_name(format!("{method} {route}"));
        span.set_attribute(KeyValue::new("http.route", route.to_string()));
    }

    pub fn finish(&self, status: u16, error: Option<&str>) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        if status >= 500 {
            span.set_status(Status::error(error.unwrap_or("server error").to_string()));
        }
        span.end();
    }
}

/// One upstream attempt's client span.
pub struct AttemptSpan {
    cx: Context,
}

impl AttemptSpan {
    pub fn finish(self, result: Result<u16, &str>) {
        let span = self.cx.span();
        match result {
            Ok(status) => {
                span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
                if status >= 500 {
                    span.set_status(Status::error(format!("upstream answered {status}")));
                }
            }
            Err(error) => {
                span.set_attribute(KeyValue::new("error.type", error.to_string()));
                span.set_status(Status::error(error.to_string()));
            }
        }
        span.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_the_traces_path_unless_they_name_one() {
        assert_eq!(traces_url("http://c:4318").unwrap(), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/").unwrap(), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/custom").unwrap(), "http://c:4318/custom");
        assert!(traces_url("c:4318").unwrap_err().contains("scheme"));
        assert!(traces_url("https://c").unwrap_err().contains("plain HTTP"));
        assert!(traces_url("not a url").is_err());
    }
}
