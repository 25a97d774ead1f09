-- report.lua - wrk done() hook shared by the HTTP benchmarks (bench/http.sh).
-- Prints one machine-readable line the script turns into its table:
--   RESULT requests=N rps=X p50_ms=X p99_ms=X max_ms=X non2xx=N socket_errors=N
-- non2xx is wrk's errors.status (responses with status >= 400; none of the
-- benchmarked endpoints redirects). Latencies come from wrk in microseconds.

function done(summary, latency, requests)
   local secs = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d rps=%.1f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f non2xx=%d socket_errors=%d\n",
      summary.requests, summary.requests / secs,
      latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
      e.status, e.connect + e.read + e.write + e.timeout))
end
